"""The learning check: synthetic world -> mine -> train -> evaluate on held-out scenes.

Random CLIP weights: this checks that the machinery learns (chance is 0.1 over the 10 classes),
not zero-shot recognition. Figures and the loss ablation: BENCHMARKS.md, "Issue 6".
"""
import subprocess
import sys

import pytest

from clip2_core.benchmarks.learning_check import mine_split, train_and_eval

# Measured on this world: 0.72 mean class accuracy with pointnet2-xs-v1 (600 steps, 5 x 8 s
# scenes); the target is 0.8 (not reached yet, see BENCHMARKS.md). The floor below is
# what this smaller test world reaches with margin, 4x chance.
FLOOR = 0.4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc_world") / "synth"
    r = subprocess.run([sys.executable, "-m", "clip2_core", "synth", "--out", str(root), "--scenes", "5", "--seconds", "5",
                        "--seed", "11", "--no-progress", "--workers", "2"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def test_mine_train_eval_learns(world, wide_text_clip_files, tmp_path):
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    c = wide_text_clip_files
    clip = FrozenCLIP(VLMConfig(model=c.name, pretrained=str(c.weights_file), model_config_file=str(c.config_file)))
    mined = mine_split(world, tmp_path / "proxies", clip)
    assert mined["proxies"] > 300 and {"car", "pedestrian", "truck"} <= set(mined["labels"])
    result = train_and_eval(world, tmp_path / "proxies", tmp_path / "run", {"model": c.name, "weights": str(c.weights_file),
                            "config": str(c.config_file)}, "pointnet2-xs-v1", steps=300)
    print("learning check:", {k: v for k, v in result.items() if k != "report"})
    per_class = result["report"].point["per_class_acc"]
    assert result["objects"] > 100
    assert result["mean_class_acc"] >= FLOOR, (result["mean_class_acc"], per_class)
