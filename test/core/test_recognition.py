"""The one recognition step (clip2_core.recognition) and the sensor-independent frame builder
(clip2_core.frames): worked examples, loud CLIP checks, one code path for pipeline and evaluator."""
import json

import numpy as np
import pytest

from clip2_core.frames import FrameDrops, frame_from_arrays, keep_range_for, pick_nearest_stamp
from clip2_core.recognition import (
    MIN_CROP_AREA_PX,
    ClipConfig,
    ClipConfigError,
    RecognitionConfig,
    Recognizer,
    best_camera_boxes,
    check_clip,
    resolve_templates,
)
from clip2_core.types import CameraView, Frame
from clip2_core.vlm import DEFAULT_TEMPLATES, FrozenCLIP, VLMConfig

# A camera looking along +x of the LiDAR frame (x forward, y left, z up -> optical x right, y down, z forward)
T_FRONT = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
K = np.array([[100.0, 0, 100], [0, 100.0, 50], [0, 0, 1]])


# ------------------------------------------------------------------------------------------ frames
def test_frame_from_arrays_worked_example():
    fields = ("x", "y", "z", "ring", "intensity")
    pts = np.array([
        [1.0, 2.0, 0.5, 3, 200.0],  # kept
        [np.nan, 0.0, 0.0, 0, 10.0],  # non-finite
        [0.0, np.inf, 0.0, 0, 10.0],  # non-finite
        [500.0, 0.0, 0.0, 1, 5.0],  # far (keep_range 160 m for an 80 m clustering range)
        [3.0, -1.0, -400.0, 2, 7.0],  # far below
        [-4.0, 5.0, 1.0, 4, 0.0],  # kept
    ], dtype=np.float64)
    frame, drops = frame_from_arrays(pts, fields, stamp=12.5, frame_id="LIDAR_TOP", intensity_max=255.0)
    assert keep_range_for(80.0) == 160.0 and keep_range_for(20.0) == 70.0
    assert drops == FrameDrops(nonfinite=2, out_of_range=2, intensity_missing=False)
    assert frame.point_fields == ("x", "y", "z", "intensity")
    np.testing.assert_array_equal(frame.points, np.array([[1, 2, 0.5, 200], [-4, 5, 1, 0]], np.float32))
    assert frame.points.dtype == np.float32 and frame.points.flags.c_contiguous
    assert (frame.stamp, frame.frame_id, frame.intensity_max) == (12.5, "LIDAR_TOP", 255.0)


def test_frame_from_arrays_intensity_choices():
    pts = np.ones((3, 4), np.float32)
    f, d = frame_from_arrays(pts, ("x", "y", "z", "reflectivity"), intensity_field="intensity")
    assert f.point_fields == ("x", "y", "z") and d.intensity_missing
    f, d = frame_from_arrays(pts, ("x", "y", "z", "reflectivity"), intensity_field="reflectivity", intensity_max=0)
    assert f.point_fields == ("x", "y", "z", "intensity") and not d.intensity_missing
    assert f.intensity_max is None  # 0 = the encoder's training scale
    f, _ = frame_from_arrays(pts, ("x", "y", "z", "reflectivity"), intensity_field="")
    assert f.points.shape == (3, 3)
    with pytest.raises(ValueError, match="no \\['z'\\]"):
        frame_from_arrays(pts[:, :3], ("x", "y", "intensity"))
    with pytest.raises(ValueError, match="must be \\(N, 3\\)"):
        frame_from_arrays(pts, ("x", "y", "z"))
    empty, d = frame_from_arrays(np.zeros((0, 4)), ("x", "y", "z", "intensity"))
    assert empty.points.shape == (0, 4) and d == FrameDrops()


def test_pick_nearest_stamp():
    stamps = [10.00, 10.05, 10.10]
    assert pick_nearest_stamp(stamps, 10.04, 0.1) == (1, pytest.approx(0.01))
    assert pick_nearest_stamp(stamps, 10.025, 0.1)[0] == 0  # a tie goes to the earlier image
    assert pick_nearest_stamp(stamps, 10.5, 0.1) == (None, pytest.approx(0.4))
    assert pick_nearest_stamp([], 10.0, 0.1) == (None, float("inf"))
    assert pick_nearest_stamp([10.0], 10.1, 0.1)[0] == 0  # the offset limit is inclusive


# ------------------------------------------------------------------------------------------ camera crops
def test_best_camera_boxes_worked_example():
    img = np.zeros((100, 200, 3), np.uint8)
    front = CameraView("CAM_FRONT", K, T_FRONT, (200, 100), image=img)
    # a second camera nearer to the object (shifted 5 m forward): the object looks larger there
    T_near = T_FRONT.copy()
    T_near[2, 3] = -5.0
    near = CameraView("CAM_NEAR", K, T_near, (200, 100), image=img)
    no_image = CameraView("CAM_OFF", K, T_near, (200, 100), image=None)
    boxes = np.array([
        [10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0],  # seen by both
        [-10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0],  # behind both
        [200.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.0],  # in view but tiny: (0.1 px)^2 < MIN_CROP_AREA_PX
    ])
    out = best_camera_boxes({"CAM_FRONT": front, "CAM_NEAR": near, "CAM_OFF": no_image}, boxes)
    name, b = out[0]
    assert name == "CAM_NEAR"
    # the box spans 1 m each side; its near face (x = 9 m) is 4 m from CAM_NEAR: u = 100 +- 100 * 1/4, v = 50 +- 25
    np.testing.assert_allclose(b, [75.0, 25.0, 125.0, 75.0])
    assert out[1] is None and out[2] is None
    only_front = best_camera_boxes({"CAM_FRONT": front}, boxes[:1])
    np.testing.assert_allclose(only_front[0][1], [100 - 100 / 9, 50 - 100 / 9, 100 + 100 / 9, 50 + 100 / 9])
    assert MIN_CROP_AREA_PX == 16.0


# ------------------------------------------------------------------------------------------ templates + CLIP checks
def test_resolve_templates_order():
    assert resolve_templates(["a {}."], ["b {}."]) == ("a {}.",)
    assert resolve_templates(None, ["b {}."]) == ("b {}.",)
    assert resolve_templates([], None) == tuple(DEFAULT_TEMPLATES)
    with pytest.raises(ValueError, match="has no '\\{\\}'"):
        resolve_templates(["no placeholder"], None)
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates(["{} and {}"], None)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_broken_clip_weights_file_is_an_error_naming_it(damage, tiny_clip_files, tmp_path):
    from clip2_core.vlm import WeightsUnreadableError

    c = tiny_clip_files
    raw = c.weights_file.read_bytes()
    bad = tmp_path / f"{damage}.safetensors"
    bad.write_bytes({"truncated": raw[: len(raw) // 3], "empty": b"", "garbage": b"\xff" * 64}[damage])
    with pytest.raises(WeightsUnreadableError, match=str(bad)):
        FrozenCLIP(VLMConfig(model=c.name, pretrained=str(bad), model_config_file=str(c.config_file)))


def test_random_clip_is_refused_unless_allowed(tiny_clip_files):
    c = tiny_clip_files
    # weights saved to a file are still random: they are flagged, and their logit_scale is untrained
    clip = FrozenCLIP(VLMConfig(model=c.name, pretrained=str(c.weights_file), model_config_file=str(c.config_file)))
    assert clip.is_random and clip.identity["random"] is True
    with pytest.raises(ClipConfigError, match="RANDOM weights.*allow_random"):
        check_clip(clip, None, ClipConfig())
    check_clip(clip, None, ClipConfig(allow_random=True))  # opted in: no error
    none = FrozenCLIP(VLMConfig(model=c.name, pretrained=None, model_config_file=str(c.config_file)))
    assert none.is_random and "no pretrained weights" in none.random_reason
    local = FrozenCLIP(VLMConfig(model=f"local-dir:{c.local_dir}"))
    assert local.is_random


def test_trained_looking_weights_are_not_random(tiny_clip_files, tmp_path):
    """A weights file without the flag whose logit_scale moved (as training does) counts as real."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    c = tiny_clip_files
    open_clip.add_model_config(c.config_file)
    model = open_clip.create_model(c.name, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(float(np.log(100.0)))
    f = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(f))
    clip = FrozenCLIP(VLMConfig(model=c.name, pretrained=str(f), model_config_file=str(c.config_file)))
    assert not clip.is_random and clip.logit_scale == pytest.approx(100.0, rel=1e-5)
    check_clip(clip, None, ClipConfig())  # real weights: allowed without opting in
    # ... but the same weights flagged as random in their metadata are random
    g = tmp_path / "flagged.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(g), metadata={"clip2.random_init": "true"})
    assert FrozenCLIP(VLMConfig(model=c.name, pretrained=str(g), model_config_file=str(c.config_file))).is_random


def test_mismatched_clip_is_refused_unless_allowed(tiny_clip):
    trained = {"model": "ViT-B-32", "pretrained": "openai", "weights_id": "tag:ViT-B-32/openai"}
    with pytest.raises(ClipConfigError, match="trained against CLIP weights tag:ViT-B-32/openai.*allow_mismatch"):
        check_clip(tiny_clip, trained, ClipConfig(allow_random=True))
    check_clip(tiny_clip, trained, ClipConfig(allow_random=True, allow_mismatch=True))
    check_clip(tiny_clip, {**trained, "weights_id": tiny_clip.weights_id}, ClipConfig(allow_random=True))


# ------------------------------------------------------------------------------------------ the recognizer
@pytest.fixture(scope="module")
def recognizer(trained_tiny_model):
    from clip2_core.recognition import trained_metadata
    from clip2_core.runtime.embedders import create_embedder

    m = trained_tiny_model
    emb = create_embedder(m.checkpoint, backend="torch")
    clip = ClipConfig(model=m.clip.name, weights=str(m.clip.weights_file), model_config_file=str(m.clip.config_file),
                      allow_random=True)
    return Recognizer(RecognitionConfig(vocabulary=list(m.vocabulary), clip=clip), emb, trained=trained_metadata(m.checkpoint))


def test_recognizer_refuses_random_clip_by_default(trained_tiny_model):
    from clip2_core.pipeline import Pipeline, PipelineConfig

    d = trained_tiny_model.pipeline_dict()
    d["clip"]["allow_random"] = False
    with pytest.raises(ClipConfigError, match="RANDOM"):
        Pipeline(PipelineConfig.from_dict(d))


def test_templates_survive_a_vocabulary_change(recognizer):
    trained = tuple(recognizer.trained["extra"]["templates"])
    assert recognizer.templates == trained == recognizer.default_templates
    old = recognizer.vocabulary
    recognizer.set_vocabulary(["sedan", "lorry"])
    assert recognizer.templates == trained  # not silently DEFAULT_TEMPLATES
    assert recognizer.state.bank.templates == trained
    recognizer.set_vocabulary(old, templates=["a {}."])
    assert recognizer.templates == ("a {}.",)
    recognizer.set_vocabulary(old)
    assert recognizer.templates == ("a {}.",)  # None keeps what is in effect
    recognizer.set_vocabulary(old, templates=list(trained))
    assert recognizer.templates == trained


def test_sensor_intensity_scale_reaches_the_encoder_input(recognizer):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(300, 3)) * 0.5 + [8.0, 0.0, 0.0]
    inten = rng.uniform(0, 1, size=(300, 1))
    box = np.array([[8.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    kitti = np.hstack([xyz, inten]).astype(np.float32)  # reflectance 0-1
    nusc = np.hstack([xyz, inten * 255.0]).astype(np.float32)  # the same returns on a 0-255 sensor
    a = recognizer.encoder_inputs([kitti], box, intensity_max=1.0)
    b = recognizer.encoder_inputs([nusc], box, intensity_max=255.0)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a[0, :, 3].max() > 0.9  # full scale, not 1/255 of it
    wrong = recognizer.encoder_inputs([kitti], box)  # the encoder's own scale (255): intensity nearly zero
    assert wrong[0, :, 3].max() < 0.01


def test_evaluator_runs_the_pipelines_recognition(recognizer, trained_tiny_model):
    """Crops the evaluator sees get exactly the labels the pipeline gives the same clusters."""
    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.eval.recognition import evaluate_recognition
    from clip2_core.pipeline import Pipeline, PipelineConfig
    from clip2_core.types import Box3D

    pipe = Pipeline(PipelineConfig.from_dict(trained_tiny_model.pipeline_dict()))
    scene = make_sweep(seed=301)
    frame = Frame(points=scene.points, point_fields=("x", "y", "z", "intensity", "ring"))
    res = pipe.process(frame)
    clusters = {c.cluster_id: c for c in res.segmentation.clusters}
    # ground truth = the clusters the pipeline found, labelled with what the pipeline said
    gt = []
    for d in res.detections:
        b = clusters[d.cluster_id].box
        gt.append(Box3D(center=b.center, size=b.size + 0.02, yaw=b.yaw, label=d.label))
    frame.gt_boxes = gt
    vocab = [(v, v) for v in pipe.vocabulary]
    report = evaluate_recognition([frame], pipe.recognizer, vocab, min_points=1, ground=pipe.config.segmentation.ground,
                                  progress=False)
    assert report.meta["objects"] >= 0.9 * len(gt)
    assert report.point["overall_acc"] >= 0.9, report.point["overall_acc"]
    assert report.meta["random_clip"] is True and "RANDOM" in report.meta["warning"]


def test_evaluator_ensemble_branch_worked_example(recognizer):
    """Two objects, one in front of a camera: the ensemble fuses exactly that one."""
    from clip2_core.eval.recognition import evaluate_recognition
    from clip2_core.types import Box3D

    rng = np.random.default_rng(3)

    def blob(cx, cy):
        return np.hstack([rng.normal(size=(200, 3)) * [1.5, 0.7, 0.5] + [cx, cy, 0.0], rng.uniform(0, 255, (200, 1))])

    pts = np.vstack([blob(10, 0), blob(-10, 0)]).astype(np.float32)
    names = recognizer.vocabulary[:2]
    frame = Frame(points=pts, gt_boxes=[Box3D([10, 0, 0], [6, 3, 3], 0.0, label=names[0]),
                                        Box3D([-10, 0, 0], [6, 3, 3], 0.0, label=names[1])])
    img = rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)
    frame.cameras["CAM_FRONT"] = CameraView("CAM_FRONT", K, T_FRONT, (200, 100), image=img)
    rep = evaluate_recognition([frame], recognizer, [(n, n) for n in names], min_points=5, ensemble=True,
                               remove_ground_points=False, progress=False)
    assert rep.meta["objects"] == 2 and rep.meta["objects_with_image_crop"] == 1
    assert rep.ensemble is not None and int(np.asarray(rep.ensemble["confusion"]).sum()) == 2
    assert rep.meta["ensemble_weight"] == recognizer.config.ensemble_weight
    json.dumps(rep.to_json())  # JSON-able
