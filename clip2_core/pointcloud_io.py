"""Reading LiDAR sweeps from files: KITTI/nuScenes ``.bin``, ``.npy`` and PCD (ascii / binary).

Every reader returns ``(points, fields)``: ``points`` (N, C) float32 with x, y, z first, and the
column names. Errors name the file and what was wrong with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

NUSCENES_FIELDS = ("x", "y", "z", "intensity", "ring")
KITTI_FIELDS = ("x", "y", "z", "intensity")

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def load_point_cloud(path: str | Path, columns: Optional[int] = None) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """Load a sweep.

    Args:
        path: ``*.pcd.bin`` (nuScenes: 5 float32 per point), ``*.bin`` (KITTI: 4 float32),
            ``*.npy`` ((N, C>=3) array), ``*.pcd`` (PCL ascii or binary).
        columns: float32 values per point for ``.bin`` files, overriding the default by name.
    Returns:
        points (N, C) float32, field names (C,).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point cloud file not found: {path}")
    name = path.name.lower()
    if name.endswith(".bin"):
        c = columns or (5 if name.endswith(".pcd.bin") else 4)
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size % c:
            raise ValueError(f"{path}: {raw.size} float32 values is not a multiple of {c} columns; pass --columns")
        pts = raw.reshape(-1, c)
        fields = (NUSCENES_FIELDS if c == 5 else KITTI_FIELDS) if c in (4, 5) else _generic_fields(c)
        return pts, tuple(fields)
    if name.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a plain numpy array ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] < 3:
            raise ValueError(f"{path}: expected an (N, C>=3) array, got shape {arr.shape}")
        return arr.astype(np.float32, copy=False), _generic_fields(arr.shape[1])
    if name.endswith(".pcd"):
        return _load_pcd(path)
    raise ValueError(f"{path}: unknown point cloud format (use .bin, .pcd.bin, .npy or .pcd)")


def _generic_fields(c: int) -> Tuple[str, ...]:
    base = ("x", "y", "z", "intensity")
    return tuple(base[:c]) + tuple(f"f{i}" for i in range(4, c))


def _load_pcd(path: Path) -> Tuple[np.ndarray, Tuple[str, ...]]:
    blob = path.read_bytes()
    header = {}
    offset = 0
    while True:
        end = blob.find(b"\n", offset)
        if end < 0:
            raise ValueError(f"{path}: PCD header has no DATA line")
        line = blob[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        header[key.upper()] = value.split()
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(v) for v in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(fields))]
        n = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        data = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{path}: malformed PCD header ({exc})") from exc
    if not {"x", "y", "z"} <= set(fields):
        raise ValueError(f"{path}: PCD has fields {fields}, needs x, y and z")
    dtype_fields = []
    for f, s, t, c in zip(fields, sizes, types, counts):
        code = _PCD_TYPES.get((t.upper(), s))
        if code is None:
            raise ValueError(f"{path}: unsupported PCD field {f} TYPE {t} SIZE {s}")
        dtype_fields.append((f if f != "_" else f"_pad{len(dtype_fields)}", "<" + code, (c,) if c > 1 else ()))
    dtype = np.dtype(dtype_fields)
    if data == "ascii":
        values = np.loadtxt(blob[offset:].decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        flat_names = [f for f, c in zip(fields, counts) for _ in range(c)]
        if values.shape != (n, len(flat_names)):
            raise ValueError(f"{path}: expected {n} rows of {len(flat_names)} values, got {values.shape}")
        cols = {f: values[:, flat_names.index(f)] for f in fields if f != "_"}
    elif data == "binary":
        need = n * dtype.itemsize
        if len(blob) - offset < need:
            raise ValueError(f"{path}: truncated binary PCD ({len(blob) - offset} bytes, need {need})")
        rec = np.frombuffer(blob, dtype=dtype, count=n, offset=offset)
        cols = {f: rec[f].reshape(n, -1)[:, 0] for f in fields if f != "_"}
    else:
        raise ValueError(f"{path}: PCD DATA {data} not supported (save as ascii or binary)")
    order = ["x", "y", "z"] + [f for f in cols if f not in ("x", "y", "z")]
    pts = np.stack([np.asarray(cols[f], dtype=np.float32) for f in order], axis=1)
    return pts, tuple(order)


def save_pcd_binary(path: str | Path, points: np.ndarray, fields: Tuple[str, ...]) -> None:
    """Write (N, C) float32 points as a binary PCD (x, y, z first)."""
    pts = np.ascontiguousarray(points, dtype="<f4")
    n, c = pts.shape
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\nSIZE {' '.join(['4'] * c)}\nTYPE {' '.join(['F'] * c)}\n"
        f"COUNT {' '.join(['1'] * c)}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA binary\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(pts.tobytes())
