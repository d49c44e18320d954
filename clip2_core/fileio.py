"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Every write goes to a temporary file in the destination's directory (so the rename stays on
one file system), is flushed and fsync'ed, and is then renamed over the destination with
``os.replace``; the directory is fsync'ed afterwards so the rename itself survives a power
cut (POSIX; skipped where directories cannot be opened, e.g. Windows). A write that fails
removes its temporary file and leaves the destination untouched.

Temporary files are named ``.<name>.<random>.tmp`` next to the destination and are created
with the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask).

Pure standard library: no torch, no clip2 imports, so any module may use it.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Union

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "file_sha256", "is_plain_name",
           "replace_durably"]

PathLike = Union[str, "os.PathLike[str]"]


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it is durable; a no-op where that is unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open directories; nothing to do there
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and platforms) refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _open_temporary(path: Path) -> "tuple[int, Path]":
    """Create ``.<name>.<random>.tmp`` beside ``path`` exclusively; returns (fd, tmp path)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")  # pragma: no cover


def replace_durably(tmp: PathLike, path: PathLike) -> Path:
    """fsync the finished file ``tmp``, rename it over ``path`` and fsync the directory.

    For files that are streamed to a temporary name (e.g. a tar archive) rather than written
    in one call; ``tmp`` must be in the same directory as ``path``. Returns ``Path(path)``.
    """
    tmp, path = Path(tmp), Path(path)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created). Returns ``Path(path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation). Returns ``Path(path)``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented UTF-8 JSON plus a final newline to ``path`` atomically.

    Serialised before anything is written, so an object JSON cannot encode raises
    ``TypeError`` and leaves no file behind. Returns ``Path(path)``.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return atomic_write_text(path, text)


def read_json_object(path: PathLike, what: str) -> dict:
    """The JSON object in ``path``; FileNotFoundError / ValueError naming ``what`` (e.g. "label map")."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {path} is not a file")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return data


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_plain_name(name: str) -> bool:
    """Whether ``name`` (from a dataset table, an archive, an index file) is safe as one file or folder
    name inside an output folder: not empty, no path separator, no NUL, not hidden, ``.`` or ``..``."""
    return (isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and "\x00" not in name
            and not name.startswith("."))
