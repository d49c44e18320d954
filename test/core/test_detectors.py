"""2D proposal sources: detections files (ours, COCO) and a real OWLv2 code path with random weights."""
import json
import time

import numpy as np
import pytest

from clip2_core.mining.detectors import DetectionsFile, OwlDetector, pad_resize_normalise
from clip2_core.types import CameraView


def _cam(token=None, path=None, image=None):
    return CameraView(name="CAM_FRONT", K=np.eye(3), T_lidar_to_cam=np.eye(4), size_wh=(64, 48), image=image, token=token, image_path=path)


def test_clip2_format_by_token_and_filename(tmp_path):
    data = {
        "format": "clip2.detections_2d/v1",
        "images": {
            "sd1": {
                "sample_data_token": "sd1",
                "filename": "samples/CAM_FRONT/a.jpg",
                "detections": [
                    {"box_xyxy": [1, 2, 30, 40], "label": "sedan", "score": 0.9, "instance_token": "i1"},
                    {"box_xyxy": [5, 5, 4, 40], "label": "bad", "score": 0.9},  # x1 < x0: skipped
                    {"box_xyxy": [0, 0, 10, 10], "label": "cone", "score": 0.1, "instance_token": None},
                ],
            }
        },
    }
    f = tmp_path / "d.json"
    f.write_text(json.dumps(data))
    det = DetectionsFile(f, min_score=0.2)
    assert det.skipped == 1
    got = det.detect(_cam(token="sd1"))
    assert [p.label for p in got] == ["sedan"] and got[0].source["instance_token"] == "i1"
    assert [p.label for p in det.detect(_cam(path="/data/nuscenes/samples/CAM_FRONT/a.jpg"))] == ["sedan"]
    assert det.detect(_cam(token="other", path="x/b.jpg")) == []


def test_coco_format(tmp_path):
    data = {
        "images": [{"id": 7, "file_name": "000008.png"}],
        "categories": [{"id": 3, "name": "car"}],
        "annotations": [{"image_id": 7, "bbox": [10, 20, 30, 40], "category_id": 3, "score": 0.8}, {"image_id": 7, "bbox": [1], "category_id": 3}],
    }
    f = tmp_path / "coco.json"
    f.write_text(json.dumps(data))
    det = DetectionsFile(f)
    got = det.detect(_cam(path="kitti/image_2/000008.png"))
    assert len(got) == 1 and det.skipped == 1
    np.testing.assert_allclose(got[0].box, [10, 20, 40, 60])


def test_bad_detection_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        DetectionsFile(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        DetectionsFile(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="unknown detections format"):
        DetectionsFile(tmp_path / "y.json")


def test_pad_resize_maps_boxes_back():
    img = np.zeros((48, 64, 3), np.uint8)
    px, scale = pad_resize_normalise(img, 32)
    assert tuple(px.shape) == (1, 3, 32, 32) and scale == 64.0


@pytest.fixture(scope="module")
def tiny_owl(tmp_path_factory):
    from transformers import Owlv2Config, Owlv2ForObjectDetection

    cfg = Owlv2Config(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16),
        projection_dim=32,
    )
    d = tmp_path_factory.mktemp("owl")
    model = Owlv2ForObjectDetection(cfg)
    # random init saturates the box regressor (zero-size boxes); damp its last layer so boxes sit
    # near OWLv2's per-patch prior, as trained weights do. Still random weights, same code path.
    model.box_head.dense2.weight.data.mul_(1e-3)
    model.box_head.dense2.bias.data.zero_()
    model.save_pretrained(d)
    return d


def test_owl_detector_real_code_path_random_weights(tiny_owl):
    det = OwlDetector(tiny_owl, ["car", "traffic cone", "person"], score_threshold=0.0)
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    got = det.detect(_cam(image=img))
    # random weights find nothing meaningful, but every proposal must be well-formed
    assert len(got) >= 1
    for p in got:
        assert p.label in det.queries and 0.0 <= p.score <= 1.0
        assert 0 <= p.box[0] < p.box[2] <= 64 and 0 <= p.box[1] < p.box[3] <= 48
    assert det.detect(_cam(image=None)) == []
    import torch

    assert torch.is_grad_enabled()  # inference must not switch gradients off for the process


def test_owl_missing_weights_fail_fast(tmp_path):
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not found locally"):
        OwlDetector("someone/owlv2-that-is-not-cached", ["car"])
    assert time.perf_counter() - t < 5.0
