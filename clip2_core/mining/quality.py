"""How good are mined proxies? Purity and recall against ground truth (synthetic or labelled data).

- **purity** of a proxy: the fraction of its points inside the GT box of the object its proposal
  came from (``src_annotation_token`` in the provenance; proposals without one are false
  positives of the detector and are counted separately).
- **recall**: of the visible GT objects (visibility >= 40 % and >= ``min_points`` LiDAR points),
  the fraction that yielded at least one proxy. ``recall_given_proposal`` divides instead by the
  objects the detector proposed at all, isolating the mining step from detector misses.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Dict

import numpy as np

from clip2_core.geometry import points_in_boxes
from clip2_core.mining.shards import iter_proxies, shard_paths

VISIBLE_LEVELS = ("v40-60", "v60-80", "v80-100")


def proxy_quality(proxy_dir: str | Path, reader, min_points: int = 20, detections=None) -> Dict[str, float]:
    """Purity / recall of a proxy folder mined from ``reader``'s dataroot (a NuScenesReader with
    the ``long_tail`` class map, so every annotated object counts). ``detections``: the
    DetectionsFile used for mining, to compute ``recall_given_proposal``."""
    by_sample = defaultdict(list)
    for p in iter_proxies(shard_paths(proxy_dir)):
        by_sample[p.provenance.get("sample")].append(p)
    purities, fp = [], 0
    visible_total, visible_hit, proposed_total, proposed_hit = 0, 0, 0, 0
    proposed_by_image = {}
    if detections is not None:
        for tok, props in detections._by_token.items():
            proposed_by_image[tok] = {p.source.get("annotation_token") for p in props}
    for tok in reader.sample_tokens:
        frame = reader.frame(tok)
        gt = {b.token: b for b in frame.gt_boxes}
        proxies = by_sample.get(tok, [])
        hit_tokens = set()
        for p in proxies:
            ann = p.provenance.get("src_annotation_token")
            if not ann or ann not in gt:
                fp += 1
                continue
            box = gt[ann].as_array()
            purities.append(float(points_in_boxes(p.points[:, :3], box[None])[:, 0].mean()))
            hit_tokens.add(ann)
        proposed = set()
        for cam in frame.cameras.values():
            proposed |= proposed_by_image.get(cam.token, set())
        for b in frame.gt_boxes:
            if b.attributes.get("visibility") not in VISIBLE_LEVELS or b.attributes.get("num_lidar_pts", 0) < min_points:
                continue
            visible_total += 1
            visible_hit += b.token in hit_tokens
            if b.token in proposed:
                proposed_total += 1
                proposed_hit += b.token in hit_tokens
    return {
        "proxies_matched": len(purities),
        "proxies_false_positive": fp,
        "purity_mean": float(np.mean(purities)) if purities else float("nan"),
        "purity_median": float(np.median(purities)) if purities else float("nan"),
        "frac_purity_ge_0.9": float(np.mean(np.array(purities) >= 0.9)) if purities else float("nan"),
        "visible_objects": visible_total,
        "recall": visible_hit / visible_total if visible_total else float("nan"),
        "proposed_objects": proposed_total,
        "recall_given_proposal": proposed_hit / proposed_total if proposed_total else float("nan"),
    }
