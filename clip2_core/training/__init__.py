"""CLIP2 training: typed config, streaming proxy data, the loop (DDP/AMP), resumable checkpoints."""
