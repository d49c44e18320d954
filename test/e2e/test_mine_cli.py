"""`clip2 mine` end to end on a synthetic world: quality, resume after a kill, bad files, 2 ranks."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clip2_core.datasets.nuscenes import NuScenesReader
from clip2_core.mining.detectors import DetectionsFile
from clip2_core.mining.quality import proxy_quality
from clip2_core.mining.shards import iter_proxies, shard_paths

VERSION = "v1.0-synth"


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "synth"
    r = subprocess.run([sys.executable, "-m", "clip2_core", "synth", "--out", str(root), "--scenes", "2", "--seconds", "3",
                        "--seed", "5", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def _mine(world, out, tiny_clip_files, *extra, env=None, wait=True):
    cmd = [sys.executable, "-m", "clip2_core", "mine", "--dataroot", str(world), "--version", VERSION,
           "--detections", str(world / VERSION / "detections_2d.json"), "--clip-model", tiny_clip_files.name,
           "--clip-weights", str(tiny_clip_files.weights_file), "--clip-config", str(tiny_clip_files.config_file),
           "--allow-random-clip", "--out", str(out), "--no-progress", *extra]  # the tiny CLIP is random
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _keyframes(world):
    return len(json.loads((world / VERSION / "sample.json").read_text()))


def _mined_line(stdout):
    """(proxies, samples, already done) from the command's 'mined ...' summary line."""
    m = re.search(r"^mined (\d+) proxies from (\d+) samples \((\d+) already done\)", stdout, re.M)
    assert m, stdout
    return tuple(int(g) for g in m.groups())


def _fingerprint(out):
    rows = []
    for p in iter_proxies(shard_paths(out)):
        h = hashlib.sha1(np.ascontiguousarray(p.points).tobytes()).hexdigest()[:12]
        rows.append((p.provenance["sample"], p.provenance["camera"], p.text, h,
                     None if p.image_embedding is None else float(p.image_embedding.sum())))
    return sorted(rows)


def _same_proxies(a, b, atol=1e-3):
    """Equal fingerprints; embedding sums within ``atol`` (CLIP on other thread counts differs at 1e-5)."""
    assert [r[:4] for r in a] == [r[:4] for r in b]
    for x, y in zip(a, b):
        assert (x[4] is None) == (y[4] is None) and (x[4] is None or abs(x[4] - y[4]) <= atol), (x, y)


@pytest.fixture(scope="session")
def mined(world, tiny_clip_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("mined") / "proxies"
    r = _mine(world, out, tiny_clip_files, "--shard-size", "40")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def test_quality_purity_and_recall(world, mined):
    out, stdout = mined
    assert (out / "points_per_proxy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proxies, samples, done = _mined_line(stdout)
    assert (samples, done) == (_keyframes(world), 0)  # every keyframe of the world, none skipped
    assert "NOTE: CLIP weights are RANDOM" in stdout
    summary = json.loads((out / "summary-r00.json").read_text())
    assert summary["random_clip"] is True and summary["proxies"] == proxies
    reader = NuScenesReader(world, VERSION, class_map="long_tail", load_images=False)
    q = proxy_quality(out, reader, min_points=20, detections=DetectionsFile(world / VERSION / "detections_2d.json"))
    print("mining quality:", json.dumps(q))
    assert q["purity_mean"] >= 0.9, q
    assert q["recall"] >= 0.8, q
    index = json.loads((out / "index.json").read_text())
    assert index["num_proxies"] == len(_fingerprint(out)) == proxies > 50
    assert sum(index["labels"].values()) == proxies
    one = next(iter_proxies(shard_paths(out)))
    assert one.image_embedding is not None and one.image_embedding.shape == (32,)
    assert {"scene", "sample", "camera", "detector_label", "score"} <= set(one.provenance) | {"score"}


def test_kill_and_resume_gives_the_same_proxies(world, mined, tiny_clip_files, tmp_path):
    out = tmp_path / "resumed"
    proc = _mine(world, out, tiny_clip_files, "--shard-size", "40", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("shard-*.json")):
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.wait()
    assert list(out.glob("shard-*.json"))
    r = _mine(world, out, tiny_clip_files, "--shard-size", "40", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    _, samples, done = _mined_line(r.stdout)
    assert done > 0 and samples + done == _keyframes(world)  # the finished shard's samples were not redone
    _same_proxies(_fingerprint(out), _fingerprint(mined[0]))


def test_two_kills_one_inside_a_shard_write_lose_and_duplicate_nothing(world, mined, tiny_clip_files, tmp_path):
    """Killed after the first shard, resumed and killed again while the next shard's tar is being
    written; then, as if a third kill had landed between a tar's rename and its sidecar, a tar without
    sidecar is planted. The final resume gives exactly the uninterrupted run's proxies."""
    out = tmp_path / "twice"

    def run_until(pred):
        proc = _mine(world, out, tiny_clip_files, "--shard-size", "40", *(("--resume",) if out.exists() else ()),
                     wait=False)
        deadline = time.time() + 300
        while time.time() < deadline and not pred():
            time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    run_until(lambda: len(list(out.glob("shard-*.json"))) >= 1)
    n_done = len(list(out.glob("shard-*.json")))
    run_until(lambda: len(list(out.glob("shard-*.json"))) > n_done
              and any(p.stat().st_size > 0 for p in out.glob("shard-*.tar.tmp")))
    tars = sorted(out.glob("shard-*.tar"))
    orphan = tars[-1].with_name("shard-r00-00099.tar")  # a finished tar whose sidecar was never written
    orphan.write_bytes(tars[-1].read_bytes())
    r = _mine(world, out, tiny_clip_files, "--shard-size", "40", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not orphan.exists() and not list(out.glob("*.tmp"))
    _same_proxies(_fingerprint(out), _fingerprint(mined[0]))


def test_refuses_to_mix_runs_without_resume(world, mined, tiny_clip_files):
    out = mined[0]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = _mine(world, out, tiny_clip_files)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and " WARNING " not in ln]  # the random-CLIP warning
    assert lines == [f"clip2 mine: error: {out} already holds shards: pass --resume to continue, or choose a new --out"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing written or removed


def test_corrupt_image_and_points_are_skipped_and_counted(world, tiny_clip_files, tmp_path):
    bad = tmp_path / "bad_world"
    shutil.copytree(world, bad)
    sd = json.loads((bad / VERSION / "sample_data.json").read_text())
    pcd = next(s for s in sd if s["is_key_frame"] and s["filename"].endswith(".pcd.bin"))
    jpg = next(s for s in sd if s["is_key_frame"] and s["filename"].endswith(".jpg") and s["sample_token"] != pcd["sample_token"])
    (bad / jpg["filename"]).write_bytes(b"not a jpeg at all")
    data = (bad / pcd["filename"]).read_bytes()
    (bad / pcd["filename"]).write_bytes(data[:-6])  # not a whole number of points
    out = tmp_path / "p"
    r = _mine(bad, out, tiny_clip_files)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary-r00.json").read_text())
    assert summary["corrupt_images"] >= 1 and summary["corrupt_points"] == 1, summary
    assert summary["proxies"] > 20


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_torchrun(world, mined, tiny_clip_files, tmp_path):
    out = tmp_path / "ranks"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "clip2_core", "mine", "--dataroot", str(world), "--version", VERSION,
           "--detections", str(world / VERSION / "detections_2d.json"), "--clip-model", tiny_clip_files.name,
           "--clip-weights", str(tiny_clip_files.weights_file), "--clip-config", str(tiny_clip_files.config_file),
           "--allow-random-clip", "--out", str(out), "--no-progress", "--shard-size", "40"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert list(out.glob("shard-r00-*.tar")) and list(out.glob("shard-r01-*.tar"))
    s0 = json.loads((out / "summary-r00.json").read_text())
    s1 = json.loads((out / "summary-r01.json").read_text())
    assert set(s0["scenes"]).isdisjoint(s1["scenes"])
    _same_proxies(_fingerprint(out), _fingerprint(mined[0]))
