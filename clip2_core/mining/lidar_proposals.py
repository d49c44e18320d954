"""Detector-free proposals: LiDAR clusters projected into the images, named by CLIP on the crop.

For each frame, the sweep is segmented (ground removal + clustering); every cluster whose box
projects to a large enough 2D box in a camera becomes a proposal there, labelled by CLIP
zero-shot classification of the image crop over a large open vocabulary (default:
:data:`DEFAULT_VOCABULARY`). The score is CLIP's softmax probability of the label.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from clip2_core.geometry import box_to_2d
from clip2_core.mining.detectors import Proposal2D
from clip2_core.segmentation import SegmentationConfig, Segmenter
from clip2_core.types import CameraView, Frame

DEFAULT_VOCABULARY = (
    "car", "truck", "bus", "trailer", "construction vehicle", "pedestrian", "child", "motorcycle", "bicycle",
    "traffic cone", "barrier", "van", "pickup truck", "tram", "cyclist", "scooter", "stroller", "wheelchair",
    "dog", "traffic sign", "traffic light", "street light", "pole", "fire hydrant", "bench", "trash can",
    "mailbox", "bollard", "tree", "bush", "fence", "wall", "parked bicycle", "tire", "debris", "box",
    "shopping cart", "ambulance", "police car", "fire truck",
)


class LidarProposals:
    """``Detector2D`` whose boxes come from LiDAR clusters (call :meth:`prepare` once per frame)."""

    name = "lidar-proposals"

    def __init__(self, clip, vocabulary: Sequence[str] = DEFAULT_VOCABULARY, templates: Optional[Sequence[str]] = None,
                 segmentation: Optional[SegmentationConfig] = None, min_box_px: float = 12.0, crop_pad: float = 0.1,
                 cache_dir: Optional[str] = None):
        from clip2_core.vlm import DEFAULT_TEMPLATES, build_text_bank
        from clip2_core.zeroshot import ZeroShotClassifier

        self.clip = clip
        bank = build_text_bank(clip, list(vocabulary), tuple(templates or DEFAULT_TEMPLATES), cache_dir)
        self.classifier = ZeroShotClassifier(bank, top_k=1)
        self.segmenter = Segmenter(segmentation or SegmentationConfig())
        self.min_box_px = float(min_box_px)
        self.crop_pad = float(crop_pad)
        self._boxes = np.zeros((0, 7))

    def prepare(self, frame: Frame) -> None:
        clusters = self.segmenter.segment(frame.points).clusters
        self._boxes = np.array([c.box.as_array() for c in clusters]).reshape(-1, 7)

    def detect(self, camera: CameraView) -> List[Proposal2D]:
        if camera.image is None or len(self._boxes) == 0:
            return []
        boxes = []
        for b in self._boxes:
            bb = box_to_2d(b, camera.K, camera.T_lidar_to_cam, camera.size_wh)
            if bb is not None and min(bb[2] - bb[0], bb[3] - bb[1]) >= self.min_box_px:
                boxes.append(bb)
        if not boxes:
            return []
        arr = np.stack(boxes)
        res = self.classifier.classify(self.clip.encode_crops(camera.image, arr, pad_frac=self.crop_pad))
        return [Proposal2D(arr[i], res.labels[i], float(res.scores[i]), {}) for i in range(len(arr))]
