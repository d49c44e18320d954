"""The learning check: synthetic world -> mine -> train -> evaluate on held-out scenes.

Random CLIP weights: this checks that the machinery learns (chance is 0.1 over the 10 classes),
not zero-shot recognition. Figures and the loss ablation: BENCHMARKS.md, "Issue 6".
"""
import subprocess
import sys

import pytest

from clip2_core.eval.learning_check import mine_split, train_and_eval

# The target: >= 0.8 mean class accuracy over the 10 detection classes (chance 0.1).
# Measured (BENCHMARKS.md, "Issue 6"): 0.827 / 0.828 on this world (training seeds 0 / 1) and
# 0.837 on another (world seed 5), pointnet2-xs-v1 trained for 3,000 steps on the mined proxies.
# Issue 13 (the world with the hard cases, the default mining recipe with 16 background proxies
# per frame): 0.837 (0.850 with object proxies only).
TARGET = 0.8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc_world") / "synth"
    # 10 scenes: 8 train, 2 held out (every fifth scene is val)
    r = subprocess.run([sys.executable, "-m", "clip2_core", "synth", "--out", str(root), "--scenes", "10", "--seconds", "8",
                        "--seed", "11", "--no-progress", "--workers", "2"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def test_mine_train_eval_learns(world, wide_text_clip_files, tmp_path):
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    c = wide_text_clip_files
    clip = FrozenCLIP(VLMConfig(model=c.name, pretrained=str(c.weights_file), model_config_file=str(c.config_file)))
    mined = mine_split(world, tmp_path / "proxies", clip)
    assert mined["proxies"] > 1500 and {"car", "pedestrian", "truck"} <= set(mined["labels"])
    result = train_and_eval(world, tmp_path / "proxies", tmp_path / "run", {"model": c.name, "weights": str(c.weights_file),
                            "config": str(c.config_file)}, "pointnet2-xs-v1", steps=3000)
    print("learning check:", {k: v for k, v in result.items() if k != "report"})
    per_class = result["report"].point["per_class_acc"]
    assert result["objects"] > 500
    assert result["mean_class_acc"] >= TARGET, (result["mean_class_acc"], per_class)
