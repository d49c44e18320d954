"""nuscenes-devkit DetectionEval through clip2_core.eval.devkit, on a clip2 synth dataroot."""
import json

import numpy as np
import pytest

from clip2_core.eval.detection import ScoredFrame, nuscenes_submission
from clip2_core.eval.devkit import REPLAY_SPLIT, devkit_view, lidar_to_global, load_nusc_view, run_detection_eval

VERSION = "v1.0-synth"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from clip2_core.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("devkit_world") / "synth"
    generate(SynthConfig(out=root, scenes=2, seconds=1.5, seed=11, cameras=(), workers=1, detections=False),
             progress=False)
    return root


def gt_frames(nusc, root, scenes, shift=0.0):
    """The ground truth as detections (optionally shifted along x in the LiDAR frame)."""
    from clip2_core.datasets.nuscenes import NuScenesReader

    reader = NuScenesReader(root, VERSION, scenes=scenes, class_map="detection", cameras=(), load_images=False, nusc=nusc)
    frames, T = [], {}
    for tok in reader.sample_tokens:
        sd = nusc.get("sample", tok)["data"]["LIDAR_TOP"]
        gt = reader.gt_boxes(sd)
        b = np.array([[*g.center, *g.size, g.yaw] for g in gt]).reshape(-1, 7)
        d = b.copy()
        d[:, 0] += shift
        labels = [g.label for g in gt]
        frames.append(ScoredFrame(0.0, b, labels, [g.attributes["num_lidar_pts"] for g in gt], d,
                                  [lbl.replace("_", " ") for lbl in labels], np.linspace(1, 0.5, len(gt)),
                                  sample_token=tok))
        T[tok] = lidar_to_global(nusc, sd)
    return frames, T


def test_view_leaves_the_dataroot_alone_and_names_the_scenes(world, tmp_path):
    before = sorted(p.name for p in (world / VERSION).iterdir())
    view = devkit_view(world, VERSION, ["scene-0001"], tmp_path / "view")
    assert sorted(p.name for p in (world / VERSION).iterdir()) == before
    assert json.loads((view / VERSION / "splits.json").read_text()) == {REPLAY_SPLIT: ["scene-0001"]}
    assert (view / "maps").is_dir()
    with pytest.raises(FileNotFoundError, match="no table folder"):
        devkit_view(world, "v9.9", ["scene-0001"], tmp_path / "v2")


def test_ground_truth_as_detections_scores_near_one_and_a_shift_costs_what_it_should(world, tmp_path):
    scenes = ["scene-0001"]
    nusc = load_nusc_view(world, VERSION, scenes, tmp_path / "view")
    frames, T = gt_frames(nusc, world, scenes)
    (tmp_path / "perfect.json").write_text(json.dumps(nuscenes_submission(frames, T)))
    m = run_detection_eval(nusc, tmp_path / "perfect.json", tmp_path / "perfect")
    present = [c for c, ap in m["mean_dist_aps"].items() if ap > 0]
    assert {"car", "pedestrian"} <= set(present)
    for c in present:  # exact boxes: no translation, scale or orientation error
        err = m["label_tp_errors"][c]
        assert err["trans_err"] < 1e-6 and err["scale_err"] < 1e-6, (c, err)
        assert c == "traffic_cone" or err["orient_err"] < 1e-6, (c, err)  # the devkit ignores cone yaw
    # not 1: boxes the devkit filters out of the GT (no points) stay in the submission
    assert min(m["mean_dist_aps"][c] for c in present) > 0.8
    assert (tmp_path / "perfect" / "metrics_summary.json").is_file()
    # every box 1.5 m off along x: matched at the 2 and 4 m thresholds only
    frames, T = gt_frames(nusc, world, scenes, shift=1.5)
    (tmp_path / "shifted.json").write_text(json.dumps(nuscenes_submission(frames, T)))
    s = run_detection_eval(nusc, tmp_path / "shifted.json", tmp_path / "shifted")
    car = s["label_aps"]["car"]
    assert car["0.5"] == 0.0 and car["1.0"] == 0.0 and car["2.0"] > 0.8 and car["4.0"] > 0.8
    assert s["label_tp_errors"]["car"]["trans_err"] == pytest.approx(1.5, abs=1e-3)
