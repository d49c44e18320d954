"""Zero-shot classification and point+image fusion on worked examples."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clip2_core.zeroshot import UNKNOWN, ZeroShotClassifier, softmax

TEXT = np.eye(3, dtype=np.float32)  # "car", "pedestrian", "cyclist" along the axes
NAMES = ["car", "pedestrian", "cyclist"]


def test_logits_probs_topk_worked_example():
    zs = ZeroShotClassifier(TEXT, NAMES, logit_scale=2.0, top_k=2)
    # a point embedding at 60 degrees between car and pedestrian: cosines 0.5, 0.866, 0
    e = np.array([[0.5, math.sqrt(3) / 2, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(zs.logits(e), [[1.0, math.sqrt(3), 0.0]], atol=1e-6)
    res = zs.classify(e)
    z = np.exp([1.0, math.sqrt(3), 0.0])
    p = z / z.sum()
    assert res.labels == ["pedestrian"]
    assert res.scores[0] == pytest.approx(p[1], abs=1e-6)
    assert [n for n, _ in res.top_k[0]] == ["pedestrian", "car"]
    assert res.top_k[0][1][1] == pytest.approx(p[0], abs=1e-6)
    np.testing.assert_allclose(res.probs.sum(1), 1.0, atol=1e-6)


def test_unnormalised_input_is_normalised():
    zs = ZeroShotClassifier(TEXT * 3, NAMES, logit_scale=1.0)
    np.testing.assert_allclose(zs.logits(np.array([[0, 0, 5.0]])), [[0, 0, 1.0]], atol=1e-6)


def test_unknown_threshold():
    zs = ZeroShotClassifier(TEXT, NAMES, logit_scale=1.0, unknown_threshold=0.5)
    e = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    res = zs.classify(e)
    # row 0: uniform, p = 1/3 < 0.5 -> unknown; row 1: logits [1, 0, 0] -> p = e/(e+2) = 0.576 -> car
    assert res.labels == [UNKNOWN, "car"]
    assert res.scores[0] == pytest.approx(1 / 3, abs=1e-6)
    assert res.scores[1] == pytest.approx(math.e / (math.e + 2), abs=1e-6)
    assert res.top_k[0][0][0] in NAMES  # the ranking is still reported


def test_fusion_with_image_logits():
    zs = ZeroShotClassifier(TEXT, NAMES, logit_scale=10.0, image_weight=0.75)
    point = np.array([[1.0, 0.2, 0.0], [1.0, 0.2, 0.0]], dtype=np.float32)  # says car
    image = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)  # says pedestrian
    pl, il = zs.logits(point), zs.logits(image)
    res = zs.classify(point, image, image_valid=np.array([True, False]))
    np.testing.assert_allclose(res.probs[0], softmax(0.25 * pl[0] + 0.75 * il[0]), atol=1e-6)
    np.testing.assert_allclose(res.probs[1], softmax(pl[1]), atol=1e-6)  # no crop: points alone
    assert res.labels == ["pedestrian", "car"]
    # weight 0 ignores the camera entirely
    z0 = ZeroShotClassifier(TEXT, NAMES, logit_scale=10.0, image_weight=0.0)
    np.testing.assert_allclose(z0.classify(point, image).probs, softmax(pl), atol=1e-6)


def test_text_bank_object_and_errors(tiny_clip):
    from clip2_core.vlm import build_text_bank

    bank = build_text_bank(tiny_clip, ["car", "truck"])
    zs = ZeroShotClassifier(bank)
    assert zs.classnames == ["car", "truck"]
    res = zs.classify(bank.embeddings)  # a text embedding is closest to itself
    assert res.labels == ["car", "truck"]
    with pytest.raises(ValueError, match="one class name"):
        ZeroShotClassifier(TEXT, ["a", "b"])
    with pytest.raises(ValueError, match="unknown_threshold"):
        ZeroShotClassifier(TEXT, NAMES, unknown_threshold=1.5)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        ZeroShotClassifier(TEXT, NAMES).classify(np.zeros((2, 4)))


def test_empty_batch():
    res = ZeroShotClassifier(TEXT, NAMES).classify(np.zeros((0, 3), dtype=np.float32))
    assert res.labels == [] and res.probs.shape == (0, 3) and res.scores.shape == (0,)
