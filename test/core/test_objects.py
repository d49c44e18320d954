"""ScanObjectNN / ModelNet40 readers (official layouts, files written here), the object protocol
and the few-shot probes (clip2_core.datasets.objects, clip2_core.eval.objects).

The trained tiny model and CLIP have RANDOM weights: numbers check the machinery only."""
import json

import numpy as np
import pytest

from clip2_core.datasets.objects import (
    SCANOBJECTNN_CLASSES,
    ObjectDatasetError,
    read_modelnet40,
    read_off,
    read_scanobjectnn,
    sample_surface,
    write_object_h5,
)


def test_scanobjectnn_layout_variants_and_axes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "h5_files"
    data = {}
    for variant, rel in (("OBJ_BG", "main_split/test_objectdataset.h5"),
                         ("OBJ_ONLY", "main_split_nobg/test_objectdataset.h5"),
                         ("PB_T50_RS", "main_split/test_objectdataset_augmentedrot_scale75.h5")):
        pts = rng.normal(size=(4, 64, 3)).astype(np.float32)
        data[variant] = pts
        write_object_h5(root / rel, pts, [0, 3, 14, 3])
    for variant, pts in data.items():
        for given in (root, tmp_path):  # the h5_files folder or its parent
            ds = read_scanobjectnn(given, variant, "test")
            assert ds.name == f"scanobjectnn/{variant}" and len(ds) == 4 and ds.labels.tolist() == [0, 3, 14, 3]
            # y-up -> z-up: (x, y, z) -> (x, -z, y)
            np.testing.assert_allclose(ds.points[1], np.stack([pts[1, :, 0], -pts[1, :, 2], pts[1, :, 1]], 1))
    assert read_scanobjectnn(root, "OBJ_BG", up="z").points[0].tolist() == data["OBJ_BG"][0].tolist()
    ds = read_scanobjectnn(root, "OBJ_BG")
    assert ds.classes == list(SCANOBJECTNN_CLASSES) and len(ds.classes) == 15
    assert ds.texts[ds.classes.index("display")] == "monitor"
    with pytest.raises(ObjectDatasetError, match="training_objectdataset.h5"):
        read_scanobjectnn(root, "OBJ_BG", "train")
    with pytest.raises(ValueError, match="variant"):
        read_scanobjectnn(root, "PB_T25")


@pytest.mark.parametrize("damage", ["label_range", "label_count", "keys", "truncated", "nan", "shape"])
def test_bad_h5_files_are_errors_naming_the_file(tmp_path, damage):
    import h5py

    path = tmp_path / "main_split" / "test_objectdataset.h5"
    pts, lab = np.zeros((3, 16, 3), np.float32), [0, 1, 2]
    if damage == "label_range":
        lab = [0, 1, 15]
    elif damage == "label_count":
        lab = [0, 1]
    elif damage == "nan":
        pts[1, 2, 0] = np.nan
    if damage == "shape":
        path.parent.mkdir(parents=True)
        with h5py.File(path, "w") as f:
            f["data"], f["label"] = np.zeros((3, 16)), np.zeros(3, int)
    elif damage == "keys":
        path.parent.mkdir(parents=True)
        with h5py.File(path, "w") as f:
            f["points"] = pts
    else:
        write_object_h5(path, pts, lab)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ObjectDatasetError) as info:
        read_scanobjectnn(tmp_path, "OBJ_BG")
    assert str(path) in str(info.value)


def _cube_off(path, size=1.0, header="OFF\n"):
    v = (np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) - 0.5) * size
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    text = header + ("" if header.strip() != "OFF" else "8 6 0\n") + "".join(f"{a} {b} {c}\n" for a, b, c in v)
    text += "".join("4 " + " ".join(map(str, q)) + "\n" for q in quads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_off_reader_and_surface_sampling(tmp_path):
    v, t = read_off(_cube_off(tmp_path / "a.off", 2.0))
    assert v.shape == (8, 3) and t.shape == (12, 3)  # quads fanned into triangles
    v2, t2 = read_off(_cube_off(tmp_path / "b.off", 2.0, header="OFF8 6 0\n"))  # ModelNet's glued header
    assert np.array_equal(v, v2) and np.array_equal(t, t2)
    p = sample_surface(v, t, 5000, np.random.default_rng(0))
    assert p.shape == (5000, 3) and np.all(np.abs(p) <= 1.0 + 1e-6)
    assert np.allclose(np.abs(p).max(axis=1), 1.0, atol=1e-6)  # every sample on a face of the cube
    counts = [(np.isclose(p[:, a], s)).sum() for a in range(3) for s in (-1.0, 1.0)]
    assert min(counts) > 700  # area-weighted: each face ~1/6 of 5000
    for bad in ("PLY\n", "OFF\n8 6 0\n1 2\n", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n"):
        (tmp_path / "bad.off").write_text(bad)
        with pytest.raises(ObjectDatasetError, match="bad.off"):
            read_off(tmp_path / "bad.off")


def test_modelnet40_h5_and_mesh_layouts(tmp_path):
    h5 = tmp_path / "modelnet40_ply_hdf5_2048"
    h5.mkdir()
    (h5 / "shape_names.txt").write_text("airplane\nbathtub\nflower_pot\n")
    rng = np.random.default_rng(1)
    write_object_h5(h5 / "ply_data_test0.h5", rng.normal(size=(2, 32, 3)), [2, 0], label_column=True)
    write_object_h5(h5 / "ply_data_test1.h5", rng.normal(size=(1, 32, 3)), [1], label_column=True)
    ds = read_modelnet40(tmp_path, "test")
    assert len(ds) == 3 and ds.labels.tolist() == [2, 0, 1] and ds.texts == ["airplane", "bathtub", "flower pot"]
    meshes = tmp_path / "meshes" / "ModelNet40"
    for c in ("chair", "lamp"):
        for i in range(2):
            _cube_off(meshes / c / "test" / f"{c}_{i:04d}.off", 1.0 + i)
    ds = read_modelnet40(tmp_path / "meshes", "test", points_per_mesh=256)
    assert ds.classes == ["chair", "lamp"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert all(p.shape == (256, 3) for p in ds.points)
    with pytest.raises(ObjectDatasetError, match="neither"):
        read_modelnet40(tmp_path / "meshes" / "ModelNet40" / "chair" / "test", "test")


def _synthetic_objects(root, seed, per_class, classes):
    """Objects of the tiny model's synthetic classes in the ScanObjectNN layout (z-up, metric):
    GT crops of synthetic sweeps, resampled to 256 points."""
    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_core.geometry import points_in_boxes

    rng = np.random.default_rng(seed)
    found = {c: [] for c in classes}
    s = seed
    while min(len(v) for v in found.values()) < per_class and s < seed + 40:
        sc = make_sweep(seed=s)
        inside = points_in_boxes(sc.points[:, :3], sc.boxes)
        for j, name in enumerate(sc.names):
            pts = sc.points[inside[:, j], :3]
            if name in found and len(found[name]) < per_class and len(pts) >= 30:
                found[name].append(pts[rng.integers(0, len(pts), 256)])
        s += 1
    pts = [p for c in classes for p in found[c]]
    lab = [SCANOBJECTNN_CLASSES.index(m) for c, m in zip(classes, MAPPED) for _ in found[c]]
    return np.stack(pts), lab


# the tiny model's synthetic classes stand in for ScanObjectNN classes of the same index order
SYNTH = ["car", "pedestrian", "traffic_cone"]
MAPPED = ["bag", "bin", "box"]


def test_object_protocol_with_pointclip_and_few_shot(trained_tiny_model, tmp_path):
    """clip2 eval objects on files of the official layout: zero-shot for three methods, the
    few-shot probes with their listed draws, and the report files."""
    import subprocess
    import sys

    assert all(c.replace("_", " ") in trained_tiny_model.vocabulary for c in SYNTH)
    root = tmp_path / "h5_files"
    for split, seed in (("training", 500), ("test", 700)):
        pts, lab = _synthetic_objects(root, seed, 6, SYNTH)
        write_object_h5(root / f"main_split/{split}_objectdataset.h5", pts, lab)
    # CLIP is given ScanObjectNN's class names, which the tiny model never learnt: its zero-shot numbers
    # mean nothing here, but its embeddings separate the three synthetic classes, which the probes use
    m = trained_tiny_model
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "clip2_core", "eval", "objects", "--dataset", "scanobjectnn", "--root", str(tmp_path),
           "--variant", "OBJ_BG", "--up", "z", "--checkpoint", str(m.checkpoint), "--clip-model", m.clip.name,
           "--clip-weights", str(m.clip.weights_file), "--clip-config", str(m.clip.config_file), "--allow-random-clip",
           "--method", "all", "--pointclip-size", "32", "--few-shot", "1", "4", "--out", str(out), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["classes"] == list(SCANOBJECTNN_CLASSES) and "RANDOM" in rep["meta"]["warning"]
    assert rep["meta"]["objects"] == 18 and rep["meta"]["dataset"] == "scanobjectnn/OBJ_BG"
    assert set(rep["baselines"]) == {"pointclip", "clip2+pointclip"}
    for sec in [rep["point"], *rep["baselines"].values()]:
        assert int(np.asarray(sec["confusion"]).sum()) == 18 and sec["top5_acc"] >= sec["overall_acc"]
    fs = rep["meta"]["few_shot"]
    assert [row["shots"] for row in fs] == [1, 4]
    assert [row["train_objects"] for row in fs] == [3, 12]
    for row in fs:
        assert set(row["samples"]) == set(MAPPED) and all(len(v) == row["shots"] for v in row["samples"].values())
        assert 0.0 <= row["overall_acc"] <= 1.0
    # the tiny encoder separates its own classes: a 4-shot probe on its embeddings does well
    assert fs[1]["overall_acc"] >= 0.7, fs
    md = (out / "report.md").read_text()
    assert "| 0 (zero-shot) | 0 |" in md and "| 4 | 12 |" in md and "ULIP 51.5%" in md
    # the draws are the seeded ones: the same seed gives the same objects
    from clip2_core.eval.objects import sample_shots

    train = read_scanobjectnn(tmp_path, "OBJ_BG", "train", up="z")
    rng = np.random.default_rng(0)
    expect = [sample_shots(train.labels, 15, k, rng) for k in (1, 4)]
    assert [row["samples"] for row in fs] == [{SCANOBJECTNN_CLASSES[c]: v for c, v in d.items()} for d in expect]


def test_missing_dataset_is_a_one_line_error(tiny_encoder_checkpoint, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "clip2_core", "eval", "objects", "--dataset", "modelnet40", "--root",
                        str(tmp_path), "--checkpoint", str(tiny_encoder_checkpoint), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("clip2 eval: error: ") and "ModelNet40" in r.stderr
