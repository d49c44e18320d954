"""Triplet proxy mining: 2D proposals -> frustums -> DBSCAN -> (text, image, point) proxies in shards."""
