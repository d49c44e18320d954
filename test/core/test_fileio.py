"""Atomic writes (clip2_core.fileio): whole files or nothing, no temporaries left behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clip2_core import fileio
from clip2_core.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, replace_durably


def test_writes_bytes_text_and_json(tmp_path):
    p = atomic_write_bytes(tmp_path / "a" / "b" / "x.bin", b"\x00\x01")  # parents are created
    assert p == tmp_path / "a" / "b" / "x.bin" and p.read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "größe\nzwei")
    assert (tmp_path / "t.txt").read_bytes() == "größe\nzwei".encode("utf-8")  # no newline translation
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "c.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    atomic_write_json(tmp_path / "s.json", {"b": 1, "a": 2}, indent=1, sort_keys=True)
    assert (tmp_path / "s.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert sorted(q.name for q in tmp_path.rglob("*")) == ["a", "b", "c.json", "s.json", "t.txt", "x.bin"]


def test_replaces_an_existing_file_whole(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})
    atomic_write_json(p, {"v": 2})
    assert json.loads(p.read_text()) == {"v": 2}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    p = tmp_path / "x.txt"
    atomic_write_text(p, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.txt"]


def test_unserialisable_json_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "x.json", {"v": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="umask semantics are POSIX")
def test_permissions_follow_the_umask_like_a_plain_open(tmp_path):
    atomic_write_bytes(tmp_path / "atomic", b"x")
    (tmp_path / "plain").write_bytes(b"x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_replace_durably_renames_a_streamed_file(tmp_path):
    tmp = tmp_path / "shard.tar.tmp"
    with open(tmp, "wb") as f:
        f.write(b"payload")
    out = replace_durably(tmp, tmp_path / "shard.tar")
    assert out.read_bytes() == b"payload" and not tmp.exists()


def test_imports_nothing_heavy():
    code = "import sys, clip2_core.fileio; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert {m for m in loaded if m.startswith("clip2_core")} == {"clip2_core", "clip2_core.fileio"}
    assert "torch" not in loaded and "numpy" not in loaded


def test_read_json_object_names_what_is_wrong(tmp_path):
    import pytest

    from clip2_core.fileio import read_json_object

    ok = tmp_path / "ok.json"
    ok.write_text('{"a": 1}')
    assert read_json_object(ok, "label map") == {"a": 1}
    with pytest.raises(FileNotFoundError, match="label map .* is not a file"):
        read_json_object(tmp_path / "missing.json", "label map")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_json_object(tmp_path / "list.json", "label map")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json_object(tmp_path / "bad.json", "label map")
