"""The recognition pipeline end to end on synthetic sweeps with a model trained by our trainer."""
import threading

import numpy as np
import pytest

from clip2_core.datasets.synth.sweep import make_sweep
from clip2_core.geometry import points_in_boxes
from clip2_core.pipeline import Pipeline, PipelineConfig
from clip2_core.types import Frame


def _frame(seed):
    scene = make_sweep(seed=seed)
    return Frame(points=scene.points, point_fields=("x", "y", "z", "intensity", "ring")), scene


def _match(dets, scene, min_points=20):
    """(GT name, predicted label) for each visible GT box with a detection within 1 m."""
    visible = points_in_boxes(scene.points, scene.boxes).sum(axis=0) >= min_points
    centres = np.array([d.box.center for d in dets]).reshape(-1, 3)
    pairs = []
    for j in np.flatnonzero(visible):
        if len(centres) == 0:
            continue
        d = np.linalg.norm(centres[:, :2] - scene.boxes[j, :2], axis=1)
        k = int(np.argmin(d))
        if d[k] <= 1.0:
            pairs.append((scene.names[j].replace("_", " "), dets[k].label))
    return pairs, int(visible.sum())


@pytest.fixture(scope="module")
def pipeline(trained_tiny_model):
    return Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict()))


def test_labels_match_ground_truth_on_held_out_sweeps(pipeline):
    pairs, visible = [], 0
    for seed in (300, 301, 302):
        frame, scene = _frame(seed)
        result = pipeline.process(frame)
        assert {"ground", "cluster", "encoder", "total"} <= set(result.timings_ms)
        p, v = _match(result.detections, scene)
        pairs += p
        visible += v
    recall = len(pairs) / visible
    accuracy = np.mean([gt == pred for gt, pred in pairs])
    assert recall >= 0.7, recall
    assert accuracy >= 0.7, (accuracy, pairs)


def test_vocabulary_swap_is_atomic_and_used(pipeline, trained_tiny_model, monkeypatch):
    """Force both interleavings with the real parts: a frame processed while the new text bank is
    being built, and a swap completed while a frame is inside the encoder."""
    frame, _ = _frame(303)
    rec = pipeline.recognizer
    old_vocab = list(trained_tiny_model.vocabulary)
    new_vocab = ["wheelie bin", "lamp post", "sofa"]
    before = pipeline.process(frame)
    assert before.vocabulary == old_vocab and {d.label for d in before.detections} <= set(old_vocab)

    # 1. a frame while the new bank is being built: it is labelled with the old vocabulary
    building, frame_done = threading.Event(), threading.Event()
    real_build = rec.build_vocabulary

    def slow_build(*a, **k):
        building.set()
        frame_done.wait(60)
        return real_build(*a, **k)

    monkeypatch.setattr(rec, "build_vocabulary", slow_build)
    swapper = threading.Thread(target=pipeline.set_vocabulary, args=(new_vocab,))
    swapper.start()
    assert building.wait(30)
    during = pipeline.process(frame)
    frame_done.set()
    swapper.join(60)
    assert not swapper.is_alive()
    monkeypatch.setattr(rec, "build_vocabulary", real_build)
    assert during.vocabulary == old_vocab
    assert {d.label for d in during.detections} <= set(old_vocab)
    assert pipeline.vocabulary == new_vocab

    # 2. the swap back completes while a frame is inside the encoder: that frame keeps the vocabulary it started with
    in_encoder, swapped = threading.Event(), threading.Event()
    real_embed = pipeline.embedder.embed

    def slow_embed(batch):
        in_encoder.set()
        swapped.wait(60)
        return real_embed(batch)

    monkeypatch.setattr(pipeline.embedder, "embed", slow_embed)
    results = []
    worker = threading.Thread(target=lambda: results.append(pipeline.process(frame)))
    worker.start()
    assert in_encoder.wait(30)
    pipeline.set_vocabulary(old_vocab)
    swapped.set()
    worker.join(60)
    monkeypatch.setattr(pipeline.embedder, "embed", real_embed)
    (inflight,) = results
    assert inflight.vocabulary == new_vocab
    assert inflight.detections and {d.label for d in inflight.detections} <= set(new_vocab)
    after = pipeline.process(frame)
    assert after.vocabulary == old_vocab and {d.label for d in after.detections} <= set(old_vocab)
    assert pipeline.vocabulary == old_vocab


def test_empty_and_nan_frames(pipeline):
    empty = pipeline.process(Frame(points=np.zeros((0, 4), np.float32)))
    assert empty.detections == [] and "total" in empty.timings_ms
    nan = pipeline.process(Frame(points=np.full((100, 4), np.nan, np.float32)))
    assert nan.detections == []


def test_config_validation(trained_tiny_model):
    d = trained_tiny_model.pipeline_dict()
    with pytest.raises(ValueError, match="pipeline: unknown key"):
        PipelineConfig.from_dict({**d, "vocab": ["a"]})
    with pytest.raises(ValueError, match="pipeline.model: unknown key"):
        PipelineConfig.from_dict({**d, "model": {"chekpoint": "x"}})
    with pytest.raises(ValueError, match="score_threshold"):
        PipelineConfig.from_dict({**d, "score_threshold": 2.0})
    with pytest.raises(ValueError, match="vocabulary"):
        PipelineConfig.from_dict({**d, "vocabulary": []})


def test_ensemble_with_camera_crop(trained_tiny_model):
    from clip2_core.types import CameraView

    pipe = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict(ensemble=True, ensemble_weight=0.5)))
    frame, _ = _frame(304)
    T = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    K = np.array([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    frame.cameras["CAM_FRONT"] = CameraView("CAM_FRONT", K, T, (640, 480), image=img)
    res = pipe.process(frame)
    assert any(res.image_used) and not all(res.image_used)  # front objects fused, the rest LiDAR-only
    frame.cameras["CAM_FRONT"].image = np.zeros((5,), np.uint8)  # undecodable / wrong shape
    res2 = pipe.process(frame)
    assert not any(res2.image_used) and len(res2.detections) == len(res.detections)
    # all cameras' crops go through CLIP in one batch, yet one bad camera costs only its own objects
    T_back = T @ np.diag([-1.0, -1.0, 1.0, 1.0])  # looking along -x
    frame.cameras["CAM_BACK"] = CameraView("CAM_BACK", K, T_back, (640, 480), image=img)
    frame.cameras["CAM_FRONT"].image = np.zeros((480, 640, 4), np.uint8)  # RGBA: not usable
    res3 = pipe.process(frame)
    assert any(res3.image_used) and not res3.lidar_only_fallback
    frame.cameras["CAM_FRONT"].image = img
    both = pipe.process(frame)
    assert sum(both.image_used) > sum(res3.image_used) > 0


def test_warm_up_runs_every_stage_and_changes_nothing(trained_tiny_model, monkeypatch):
    pipe = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict(ensemble=True)))
    frame, _ = _frame(305)
    before = pipe.process(frame)
    calls = {"points": 0, "images": 0}
    for name, key in (("_embed", "points"), ("embed_images", "images")):
        real = getattr(pipe.recognizer, name)

        def counted(*a, _real=real, _key=key, **kw):
            calls[_key] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(pipe.recognizer, name, counted)
    assert pipe.warm_up() > 0
    assert calls["points"] >= 1 and calls["images"] >= 1  # the point encoder and CLIP's image tower both ran
    after = pipe.process(frame)
    assert [d.label for d in after.detections] == [d.label for d in before.detections]
    assert np.allclose([d.score for d in after.detections], [d.score for d in before.detections])


def test_background_slot_rejects_what_it_wins_and_nothing_else(trained_tiny_model):
    """The no-object slot: with "pole" moved from the vocabulary into the background slot, exactly
    the clusters that were labelled "pole" become background (not published); the rest keep their labels."""
    vocab = list(trained_tiny_model.vocabulary)
    assert "pole" in vocab
    frame, _ = _frame(306)
    with_pole = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict(background=[]))).process(frame)
    rest = [v for v in vocab if v != "pole"]
    pipe = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict(vocabulary=rest, background=["pole"])))
    assert pipe.vocabulary == rest  # the slot is not a label
    res = pipe.process(frame)
    poles = {d.cluster_id for d in with_pole.detections if d.label == "pole"}
    assert poles and {d.cluster_id for d in res.background} == poles
    assert all(d.label == "pole" for d in res.background)
    kept = {d.cluster_id: d.label for d in res.detections}
    assert set(kept) == {d.cluster_id for d in with_pole.detections} - poles
    assert all(kept[d.cluster_id] == d.label for d in with_pole.detections if d.cluster_id in kept)


def test_background_slot_defaults_to_what_the_encoder_was_trained_with(trained_tiny_model):
    pipe = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict()))
    assert pipe.recognizer.background_texts == ()  # trained without background proxies: no slot
    frame, _ = _frame(306)
    assert pipe.process(frame).background == []


def test_the_learned_logit_scale_is_saved_and_used(trained_tiny_model):
    """The trainer records its learned temperature; recognition uses it unless told otherwise."""
    from clip2_core.checkpoint import read_checkpoint_config

    learned = read_checkpoint_config(trained_tiny_model.checkpoint)["extra"]["logit_scale"]
    assert 1.0 < learned <= 100.0 and abs(learned - 1 / 0.07) > 1e-3  # trained away from its initial value
    pipe = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict()))
    assert pipe.recognizer.logit_scale == pytest.approx(learned) and pipe.recognizer.identity["logit_scale"] == pytest.approx(learned)
    frame, _ = _frame(306)
    soft = pipe.process(frame).detections
    hard = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict(logit_scale=100.0))).process(frame).detections
    assert [d.label for d in soft] == [d.label for d in hard]  # the argmax does not depend on the temperature
    if learned < 100.0:  # a softer temperature: lower top probabilities
        assert np.mean([d.score for d in soft]) < np.mean([d.score for d in hard])
    with pytest.raises(ValueError, match="logit_scale"):
        Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict(logit_scale=-1.0)))


def test_shape_correction_replaces_the_boxes_of_classes_with_a_size_prior(pipeline, monkeypatch):
    from clip2_core import shape

    frame, scene = _frame(300)
    monkeypatch.setattr(pipeline.config, "shape_correction", False)
    off = pipeline.process(frame)
    monkeypatch.setattr(pipeline.config, "shape_correction", True)
    on = pipeline.process(frame)
    assert PipelineConfig().shape_correction is True and PipelineConfig.from_dict(
        {**pipeline.config.to_dict(), "shape_correction": False}).shape_correction is False
    # recognition is untouched: the same clusters, labels and scores, in the same order
    assert [(d.cluster_id, d.label, d.score, d.num_points) for d in on.detections] == \
        [(d.cluster_id, d.label, d.score, d.num_points) for d in off.detections]
    assert shape.field_of_view(frame.points) is None
    corrected = 0
    for a, b in zip(on.detections, off.detections):
        if shape.size_prior(a.label) is None:
            np.testing.assert_array_equal(a.box.as_array(), b.box.as_array())
            continue
        crop = frame.points[on.segmentation.clusters[a.cluster_id].indices]
        np.testing.assert_allclose(a.box.as_array(), shape.correct_box(shape.fit_l_shape(crop), a.label))
        assert (a.box.label, a.box.score) == (a.label, a.score)
        corrected += not np.allclose(a.box.as_array(), b.box.as_array())
    assert corrected >= 5
    # and the detections' centres get closer to the ground truth
    assert len(_match(on.detections, scene)[0]) >= len(_match(off.detections, scene)[0])
