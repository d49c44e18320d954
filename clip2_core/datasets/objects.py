"""Object-level benchmarks in their official layouts: ScanObjectNN and ModelNet40.

* **ScanObjectNN** (Uy et al., ICCV 2019), the ``h5_files`` folder of the official release::

      h5_files/main_split/{training,test}_objectdataset.h5                         OBJ_BG
      h5_files/main_split_nobg/{training,test}_objectdataset.h5                    OBJ_ONLY
      h5_files/main_split/{training,test}_objectdataset_augmentedrot_scale75.h5    PB_T50_RS

  each with ``data`` (N, 2048, 3) float and ``label`` (N,) int over the 15 classes of
  :data:`SCANOBJECTNN_CLASSES`.
* **ModelNet40**, either the ``modelnet40_ply_hdf5_2048`` folder (``ply_data_{train,test}*.h5``
  with ``data`` (N, 2048, 3) and ``label`` (N, 1), ``shape_names.txt``), or the mesh layout
  ``ModelNet40/<class>/{train,test}/*.off``, whose surfaces are sampled (area-weighted, seeded).

``root`` may be the folder named above or one that contains it. Both datasets are y-up; clip2's
frame is z-up (LiDAR), so points are turned ``(x, y, z) -> (x, -z, y)`` unless ``up="z"``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
                        "pillow", "sink", "sofa", "toilet")
# what CLIP is given for each ScanObjectNN class (the names most zero-shot papers prompt with)
SCANOBJECTNN_TEXTS = {"bin": "trash bin", "display": "monitor"}
SCANOBJECTNN_VARIANTS = {
    "OBJ_BG": ("main_split", "objectdataset.h5"),
    "OBJ_ONLY": ("main_split_nobg", "objectdataset.h5"),
    "PB_T50_RS": ("main_split", "objectdataset_augmentedrot_scale75.h5"),
}
MAX_OBJECTS = 1_000_000  # a file claiming more is refused, not allocated
MAX_POINTS = 1 << 16


class ObjectDatasetError(ValueError):
    """A dataset file or folder that is missing, malformed or inconsistent (the message names it)."""


@dataclass
class ObjectDataset:
    name: str  # "scanobjectnn/PB_T50_RS", "modelnet40"
    split: str  # "train" | "test"
    points: List[np.ndarray]  # (N,) arrays (K, 3) float32, z-up
    labels: np.ndarray  # (N,) int64 index into classes
    classes: List[str]  # ground-truth labels (dataset spelling)
    texts: List[str]  # what CLIP is given per class
    source: List[str]  # the files read

    def __len__(self) -> int:
        return len(self.points)


def _to_z_up(p: np.ndarray, up: str) -> np.ndarray:
    if up == "z":
        return p
    if up != "y":
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    return np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1)


def _find(root: Path, rel: str) -> Optional[Path]:
    for base in (root, root / "h5_files", root / "ScanObjectNN" / "h5_files", root / "modelnet40_ply_hdf5_2048",
                 root / "ModelNet40"):
        if (base / rel).exists():
            return base / rel
    return None


def _read_h5(path: Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "label" not in f:
                raise ObjectDatasetError(f"{path}: expected datasets 'data' and 'label', found {sorted(f.keys())}")
            data, label = f["data"], f["label"]
            if data.ndim != 3 or data.shape[2] < 3 or not 1 <= data.shape[1] <= MAX_POINTS or data.shape[0] > MAX_OBJECTS:
                raise ObjectDatasetError(f"{path}: 'data' must be (N, P <= {MAX_POINTS}, >= 3), got {data.shape}")
            lab = np.asarray(label[()]).reshape(-1)
            if lab.shape[0] != data.shape[0]:
                raise ObjectDatasetError(f"{path}: {lab.shape[0]} labels for {data.shape[0]} objects")
            pts = np.asarray(data[()][:, :, :3], dtype=np.float32)
    except OSError as exc:  # h5py's error for a truncated or non-HDF5 file
        raise ObjectDatasetError(f"{path}: not a readable HDF5 file ({exc})") from None
    if not np.issubdtype(lab.dtype, np.integer) and not np.all(lab == np.round(lab)):
        raise ObjectDatasetError(f"{path}: labels must be integers")
    lab = lab.astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ObjectDatasetError(f"{path}: labels must be in [0, {num_classes}), got {lab.min()}..{lab.max()}")
    if not np.isfinite(pts).all():
        raise ObjectDatasetError(f"{path}: 'data' has non-finite coordinates")
    return pts, lab


def read_scanobjectnn(root, variant: str = "PB_T50_RS", split: str = "test", up: str = "y") -> ObjectDataset:
    if variant not in SCANOBJECTNN_VARIANTS:
        raise ValueError(f"ScanObjectNN variant must be one of {list(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder, suffix = SCANOBJECTNN_VARIANTS[variant]
    rel = f"{folder}/{'training' if split == 'train' else 'test'}_{suffix}"
    path = _find(Path(root), rel)
    if path is None:
        raise ObjectDatasetError(f"{root}: no {rel} (the ScanObjectNN h5_files layout, variant {variant})")
    pts, lab = _read_h5(path, len(SCANOBJECTNN_CLASSES))
    return ObjectDataset(f"scanobjectnn/{variant}", split, [_to_z_up(p, up) for p in pts], lab, list(SCANOBJECTNN_CLASSES),
                         [SCANOBJECTNN_TEXTS.get(c, c) for c in SCANOBJECTNN_CLASSES], [str(path)])


def read_modelnet40(root, split: str = "test", up: str = "y", points_per_mesh: int = 2048, seed: int = 0) -> ObjectDataset:
    """The h5 layout when present, else the .off mesh layout (``points_per_mesh`` surface samples)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    names_file = _find(root, "shape_names.txt")
    if names_file is not None:
        classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        files = sorted(names_file.parent.glob(f"ply_data_{split}*.h5"), key=lambda p: [int(t) if t.isdigit() else t
                                                                                      for t in re.split(r"(\d+)", p.name)])
        if not files:
            raise ObjectDatasetError(f"{names_file.parent}: no ply_data_{split}*.h5 files")
        pts, lab = zip(*[_read_h5(f, len(classes)) for f in files])
        points = [_to_z_up(p, up) for block in pts for p in block]
        return ObjectDataset("modelnet40", split, points, np.concatenate(lab), classes,
                             [c.replace("_", " ") for c in classes], [str(f) for f in files])
    mesh_root = root / "ModelNet40" if (root / "ModelNet40").is_dir() else root
    classes = sorted(d.name for d in mesh_root.iterdir() if d.is_dir() and (d / split).is_dir()) if mesh_root.is_dir() else []
    if not classes:
        raise ObjectDatasetError(f"{root}: neither modelnet40_ply_hdf5_2048 (shape_names.txt) nor ModelNet40/<class>/{split}/*.off")
    rng = np.random.default_rng(seed)
    points, labels, files = [], [], []
    for ci, c in enumerate(classes):
        for f in sorted((mesh_root / c / split).glob("*.off")):
            v, faces = read_off(f)
            points.append(_to_z_up(sample_surface(v, faces, points_per_mesh, rng), up))
            labels.append(ci)
            files.append(str(f))
    if not points:
        raise ObjectDatasetError(f"{mesh_root}: no .off files under <class>/{split}/")
    return ObjectDataset("modelnet40", split, points, np.array(labels, dtype=np.int64), classes,
                         [c.replace("_", " ") for c in classes], files)


def read_off(path) -> Tuple[np.ndarray, np.ndarray]:
    """An OFF mesh -> vertices (V, 3) float64 and triangles (F, 3) int64 (polygons fanned).

    Accepts ModelNet's known header defect (``OFF490 518 0`` on one line)."""
    path = Path(path)
    try:
        tokens = path.read_text(errors="strict").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ObjectDatasetError(f"{path}: unreadable OFF file ({exc})") from None
    if not tokens or not tokens[0].startswith("OFF"):
        raise ObjectDatasetError(f"{path}: not an OFF file (no OFF header)")
    rest = tokens[1:] if tokens[0] == "OFF" else [tokens[0][3:], *tokens[1:]]
    try:
        nv, nf = int(rest[0]), int(rest[1])
        if not (1 <= nv <= 10_000_000 and 0 <= nf <= 20_000_000):
            raise ValueError("implausible counts")
        v = np.asarray(rest[3:3 + 3 * nv], dtype=np.float64).reshape(nv, 3)
        tris, i = [], 3 + 3 * nv
        for _ in range(nf):
            n = int(rest[i])
            idx = [int(t) for t in rest[i + 1:i + 1 + n]]
            if n < 3 or len(idx) != n or min(idx) < 0 or max(idx) >= nv:
                raise ValueError(f"bad face {rest[i:i + 1 + n]}")
            tris += [(idx[0], idx[k], idx[k + 1]) for k in range(1, n - 1)]
            i += 1 + n
    except (ValueError, IndexError) as exc:
        raise ObjectDatasetError(f"{path}: malformed OFF ({exc})") from None
    if not np.isfinite(v).all():
        raise ObjectDatasetError(f"{path}: non-finite vertices")
    return v, np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly on the mesh surface (area-weighted triangles, uniform barycentrics),
    float32; a mesh with no area gives its vertices, resampled."""
    if len(triangles):
        a, b, c = (vertices[triangles[:, k]] for k in range(3))
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        if area.sum() > 0:
            t = rng.choice(len(triangles), size=n, p=area / area.sum())
            u, w = rng.random(n), rng.random(n)
            flip = u + w > 1
            u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
            return (a[t] + u[:, None] * (b[t] - a[t]) + w[:, None] * (c[t] - a[t])).astype(np.float32)
    return vertices[rng.integers(0, len(vertices), n)].astype(np.float32)


def write_object_h5(path, points: np.ndarray, labels: Sequence[int], label_column: bool = False) -> Path:
    """Write ``points`` (N, P, 3) and ``labels`` as one file of the official layouts (tests, tools):
    ScanObjectNN's ``label`` (N,) int64, or with ``label_column`` ModelNet40's (N, 1) uint8."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.asarray(points, dtype=np.float32))
        lab = np.asarray(labels)
        f.create_dataset("label", data=lab.reshape(-1, 1).astype(np.uint8) if label_column else lab.astype(np.int64))
        f.create_dataset("mask", data=np.zeros(np.asarray(points).shape[:2], dtype=np.int8))
    return path
