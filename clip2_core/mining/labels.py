"""Normalising detector labels before they become proxy texts.

An open-vocabulary detector answers in its own words ("sedan", "SUV", "lorry"). CLIP's text space
already relates them, so by default labels are kept as they are. A label map (JSON object
``{"detector label": "proxy text"}``, case-insensitive keys) folds them into a chosen vocabulary
when that is wanted: to train against a fixed class list, or when the CLIP weights are random
(tests, smoke runs) and text space relates nothing. ``synthetic`` is the built-in map for the
simulated detector of ``clip2 synth``: each synonym to its nuScenes detection class name.
Labels not in the map pass through unchanged (confusions stay label noise, as in real data).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

_SYNTH_CANONICAL = {"child": "pedestrian", "construction_vehicle": "construction vehicle", "traffic_cone": "traffic cone",
                    "traffic_sign": "traffic sign", "trash_can": "trash can"}


def synthetic_label_map() -> Dict[str, str]:
    from clip2_core.datasets.synth.detections import SYNONYMS

    out: Dict[str, str] = {}
    for kind, words in SYNONYMS.items():
        target = _SYNTH_CANONICAL.get(kind, kind.replace("_", " "))
        for w in words:
            out.setdefault(w.lower(), target)
    return out


def load_label_map(spec: Optional[str]) -> Dict[str, str]:
    """``None`` -> {}, ``"synthetic"`` -> the built-in map, else a JSON file path."""
    if spec is None:
        return {}
    if spec == "synthetic":
        return synthetic_label_map()
    p = Path(spec)
    if not p.is_file():
        raise FileNotFoundError(f"label map {spec!r} is neither 'synthetic' nor a JSON file")
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"label map {p} must be a JSON object of strings: detector label -> proxy text")
    return {k.lower(): v for k, v in data.items()}


def map_label(label: str, label_map: Dict[str, str]) -> str:
    return label_map.get(label.lower(), label) if label_map else label
