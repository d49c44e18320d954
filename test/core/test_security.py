"""Untrusted files: what loads them, hostile shards, hostile model configs.

* Every loader in the code is safe by construction: a scan of the source (AST, not grep) finds no
  pickle-family import, no ``torch.load`` without ``weights_only=True``, no ``np.load`` without
  ``allow_pickle=False``, no unsafe YAML, no ``eval``/``exec``, no archive extraction.
* Shard members named to escape their folder (``../``, absolute, nested), links and oversized
  members are skipped and counted; nothing is written anywhere.
* A checkpoint config with absurd sizes is a clear error before any tensor is allocated.
"""
import ast
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("clip2_core", "clip2_ros", "training", "bench", "launch") for p in (ROOT / d).rglob("*.py")]
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def loader_problems(source: str, where: str):
    problems = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [f"{where}:{node.lineno}: import {a.name}" for a in node.names
                         if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            problems.append(f"{where}:{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in ("eval", "exec"):
                problems.append(f"{where}:{node.lineno}: {name}()")
            elif name.endswith("torch.load"):
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                ap = _kw(node, "allow_pickle")
                if not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where}:{node.lineno}: np.load without allow_pickle=False")
            elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.full_load_all"):
                loader = _kw(node, "Loader")
                if name.startswith("yaml.unsafe") or name.startswith("yaml.full") or not (
                        loader is not None and "Safe" in _dotted(loader)):
                    problems.append(f"{where}:{node.lineno}: {name} (use yaml.safe_load)")
            elif last == "extractall" or last == "extract" and "tar" in name.lower():
                problems.append(f"{where}:{node.lineno}: archive {last}()")
            elif last in ("read_pickle", "from_pickle"):
                problems.append(f"{where}:{node.lineno}: {name}()")
    return problems


def test_the_scan_finds_each_unsafe_loader():
    """The scanner itself: each unsafe pattern is reported, the safe spelling is not."""
    bad = """
import pickle
from joblib import load
import numpy as np, torch, yaml, tarfile
np.load("a.npy")
np.load("a.npy", allow_pickle=True)
torch.load("w.pt")
torch.load("w.pt", weights_only=False)
yaml.load(open("c.yaml"))
yaml.unsafe_load("x")
eval("1 + 1")
tarfile.open("s.tar").extractall("out")
"""
    good = """
import numpy as np, torch, yaml
np.load("a.npy", allow_pickle=False)
torch.load("w.pt", weights_only=True)
yaml.safe_load("x: 1")
yaml.load("x: 1", Loader=yaml.SafeLoader)
model.eval()
"""
    assert len(loader_problems(bad, "bad.py")) == 10, loader_problems(bad, "bad.py")
    assert loader_problems(good, "good.py") == []


def test_no_unsafe_loader_in_the_code():
    assert len(SOURCES) > 50
    problems = [p for f in SOURCES for p in loader_problems(f.read_text(), str(f.relative_to(ROOT)))]
    assert problems == [], "\n".join(problems)


# ---------------------------------------------------------------------------------------------- shards
def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, np.float32), allow_pickle=False)
    return buf.getvalue()


def _member(tar, name, data: bytes, **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


def test_hostile_shard_members_are_skipped_and_nothing_is_written(tmp_path):
    from clip2_core.mining.shards import ShardStats, iter_proxies

    shard = tmp_path / "shards" / "shard-000000.tar"
    shard.parent.mkdir()
    pts = _npy(np.ones((20, 4)))
    with tarfile.open(shard, "w") as tar:
        for name in ("../escape", "/tmp/clip2_absolute", "sub/dir/nested", ".hidden"):
            _member(tar, f"{name}.points.npy", pts)
            _member(tar, f"{name}.txt", b"car")
            _member(tar, f"{name}.json", b"{}")
        link = tarfile.TarInfo("linked.points.npy")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("hard.points.npy")
        hard.type, hard.linkname = tarfile.LNKTYPE, "good_000.points.npy"
        tar.addfile(hard)
        _member(tar, "good_000.points.npy", pts)
        _member(tar, "good_000.txt", b"pedestrian")
        _member(tar, "good_000.json", b'{"score": 0.9}')
    before = sorted(p.name for p in tmp_path.rglob("*"))
    stats = ShardStats()
    got = list(iter_proxies([shard], stats))
    assert [p.text for p in got] == ["pedestrian"]
    assert stats.corrupt_records == 12 and stats.read == 1  # 4 hostile names x 3 members
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escape.points.npy").exists() and not Path("/tmp/clip2_absolute.points.npy").exists()


def test_an_oversized_shard_member_is_skipped(tmp_path, monkeypatch):
    from clip2_core.mining import shards

    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 1000)
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        _member(tar, "big_000.points.npy", _npy(np.zeros((500, 4))))  # 8 KB > the (lowered) limit
        _member(tar, "big_000.txt", b"car")
        _member(tar, "big_000.json", b"{}")
    stats = shards.ShardStats()
    assert list(shards.iter_proxies([shard], stats)) == []
    assert stats.corrupt_records == 2  # the oversized member, then its record without points


# ---------------------------------------------------------------------------------------------- model configs
@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(embed_dim=10**9), "embed_dim must be in"),
    (lambda m: m["backbone"]["global_mlp"].__setitem__(-1, 2**40), "global_mlp width must be in"),
    (lambda m: m["backbone"].update(head_hidden=-3), "head_hidden must be in"),
    (lambda m: m["normalization"].update(num_points=2**31), "num_points must be in"),
    (lambda m: m["backbone"]["set_abstraction"][0].update(num_neighbors=10**7), "num_neighbors must be in"),
    (lambda m: m["backbone"].update(global_mlp=[16384] * 6), "weights"),
    (lambda m: m.update(embed_dim="lots"), "must be an integer"),
])
def test_a_checkpoint_with_absurd_sizes_is_a_clear_error(edit, match, tiny_encoder_checkpoint, tmp_path):
    import shutil

    from clip2_core.checkpoint import CONFIG_NAME, load_checkpoint

    d = tmp_path / "ckpt"
    shutil.copytree(tiny_encoder_checkpoint, d)
    cfg = json.loads((d / CONFIG_NAME).read_text())
    edit(cfg["model"])
    (d / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match) as err:  # from the config check, before any layer is built
        load_checkpoint(d)
    assert str(d / CONFIG_NAME) in str(err.value)


def test_a_shard_index_naming_files_elsewhere_is_refused(tmp_path):
    from clip2_core.mining.shards import shard_paths

    for name in ("../other/shard-r00-00000.tar", "/etc/passwd", "shard.json"):
        (tmp_path / "index.json").write_text(json.dumps({"shards": [{"name": name, "count": 1}]}))
        with pytest.raises(ValueError, match="outside its folder"):
            shard_paths(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"shards": [{"name": "shard-r00-00000.tar", "count": 1}]}))
    assert shard_paths(tmp_path) == [tmp_path / "shard-r00-00000.tar"]
