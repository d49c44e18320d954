"""SUN RGB-D (Song et al., CVPR 2015) in the official toolbox layout, as clip2 frames.

The release (``SUNRGBD.zip``) holds one folder per RGB-D frame, under a sensor folder::

    SUNRGBD/<sensor>/<subset>/.../<frame>/
        image/<name>.jpg              colour image
        depth/<name>.png              16-bit depth: millimetres rotated left by 3 bits (toolbox read3dPoints)
        depth_bfx/<name>.png          the same, holes filled (used with ``depth="depth_bfx"``)
        intrinsics.txt                3 x 3 camera matrix K, row-major
        extrinsics/<stamp>.txt        3 x 4 [R | t]: camera -> gravity-aligned frame (the last file is used)
        annotation3Dfinal/index.json  3D boxes: objects[i] = {"name", "polygon": [{"X": [..], "Z": [..],
                                      "Ymin", "Ymax"}]}: the box's floor polygon and its height range in the
                                      gravity-aligned camera frame (x right, y down, z forward)

Points follow the toolbox (``read3dPoints``): pixel ``(u, v)`` (1-based, as in MATLAB) with depth
``d`` -> ``((u - cx) d / fx, d, -(v - cy) d / fy)``, turned by ``Rtilt`` into the upright frame:
x right, y forward, z up, gravity aligned, origin at the camera -- the frame of the converted real
frame in ``shared/data/real/sunrgbd_000017`` and of every published SUN RGB-D box. Depth beyond
``max_depth`` (the toolbox clamps at 8 m) and zero (no return) are dropped; ``max_points`` subsamples
like VoteNet's 50k-point clouds (seeded by the frame's name).

Boxes: the annotated polygon at ``Ymin`` and ``Ymax`` in the upright frame, fitted with
:func:`clip2_core.geometry.fit_box`. Labels are the annotated names, lower case; the paper's protocol
keeps the 10 classes of :data:`SUNRGBD_CLASSES`.

Splits: ``SUNRGBDtoolbox/traintestsplit/allsplit.mat`` (``alltrain`` / ``alltest``, absolute paths
ending in ``SUNRGBD/<sensor>/...``; ``alltest`` is the 5,050-frame set that VoteNet and mmdetection3d
call *val*), or a text file with one frame folder per line.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from clip2_core.types import Box3D, CameraView, Frame

SUNRGBD_CLASSES = ("bed", "table", "sofa", "chair", "toilet", "desk", "dresser", "night_stand", "bookshelf", "bathtub")
CAMERA = "CAM0"
# the upright frame from the camera's optical axes: (x, y, z)_optical -> (x, z, -y)
_OPT_TO_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
MAX_DEPTH_PIXELS = 1 << 24  # a depth image larger than this (16.7 MP) is refused, not decoded


class SunRGBDError(ValueError):
    """A SUN RGB-D file that cannot be read; the message names it."""


def rtilt_from_extrinsics(extrinsics: np.ndarray) -> np.ndarray:
    """The toolbox's ``Rtilt`` (3 x 3, upright-from-camera rotation in upright axes) of an
    ``extrinsics/*.txt`` matrix (3 x 3 or 3 x 4, camera -> gravity-aligned, optical axes)."""
    E = np.asarray(extrinsics, dtype=np.float64)[:3, :3]
    return _OPT_TO_UP @ E @ _OPT_TO_UP.T


def camera_transform(rtilt: np.ndarray) -> np.ndarray:
    """(4, 4) upright points -> camera optical frame (the ``T_lidar_to_cam`` of the frame's camera)."""
    T = np.eye(4)
    T[:3, :3] = _OPT_TO_UP.T @ np.asarray(rtilt, dtype=np.float64).T
    return T


def decode_depth(raw: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres from the stored 16-bit values (rotated left by 3 bits, millimetres)."""
    v = np.asarray(raw).astype(np.uint16)
    return (((v >> 3) | (v << 13)).astype(np.float32)) / 1000.0


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_depth`: (H, W) uint16 as the release stores it (0 = no return)."""
    mm = np.clip(np.round(np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0) * 1000.0), 0, 8191)
    v = mm.astype(np.uint16)
    return (v << 3) | (v >> 13)


def read_depth_png(path: Union[str, Path]) -> np.ndarray:
    """(H, W) float32 depth [m] of a release depth PNG; :class:`SunRGBDError` naming the file otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_DEPTH_PIXELS:
                raise SunRGBDError(f"{path}: depth image of {im.width}x{im.height} px is larger than clip2 accepts")
            if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                raise SunRGBDError(f"{path}: expected a 16-bit depth PNG, got mode {im.mode}")
            raw = np.asarray(im)
    except SunRGBDError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise SunRGBDError(f"{path}: unreadable depth image ({exc})") from exc
    return decode_depth(raw)


def depth_to_points(depth_m: np.ndarray, K: np.ndarray, rtilt: np.ndarray, max_depth: float = 8.0) -> Tuple[np.ndarray, np.ndarray]:
    """``(points (N, 3) float32 upright frame, pixels (N, 2) int64 (row, col))`` of the valid depth pixels."""
    d = np.asarray(depth_m, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    rows, cols = np.nonzero(np.isfinite(d) & (d > 0) & (d <= max_depth))
    z = d[rows, cols]
    x = (cols + 1 - K[0, 2]) * z / K[0, 0]  # the toolbox's 1-based pixel grid
    y = (rows + 1 - K[1, 2]) * z / K[1, 1]
    up = np.stack([x, z, -y], axis=1) @ np.asarray(rtilt, dtype=np.float64).T
    return up.astype(np.float32), np.stack([rows, cols], axis=1).astype(np.int64)


def camera_matrix(K: np.ndarray) -> np.ndarray:
    """The 0-based ``K`` that projects :func:`depth_to_points` back onto the pixels they came from."""
    K0 = np.array(K, dtype=np.float64).reshape(3, 3)
    K0[0, 2] -= 1.0
    K0[1, 2] -= 1.0
    return K0


def polygon_box(polygon: Dict, label: str) -> Optional[Box3D]:
    """The :class:`Box3D` (upright frame) of one ``annotation3Dfinal`` polygon, None when malformed."""
    try:
        X = np.asarray(polygon["X"], dtype=np.float64).ravel()
        Z = np.asarray(polygon["Z"], dtype=np.float64).ravel()
        y0, y1 = float(polygon["Ymin"]), float(polygon["Ymax"])
    except (KeyError, TypeError, ValueError):
        return None
    if X.size < 3 or X.size != Z.size or not (np.isfinite(X).all() and np.isfinite(Z).all() and np.isfinite([y0, y1]).all()):
        return None
    from clip2_core.geometry import fit_box

    zs = sorted((-y0, -y1))  # y points down: the upright height range is [-Ymax, -Ymin]
    corners = np.concatenate([np.stack([X, Z, np.full_like(X, zs[0])], 1), np.stack([X, Z, np.full_like(X, zs[1])], 1)])
    b = fit_box(corners, min_size=0.01)
    return Box3D(center=b[:3], size=b[3:6], yaw=float(b[6]), label=label)


def read_boxes(path: Union[str, Path]) -> List[Box3D]:
    """Every annotated object of an ``annotation3Dfinal/index.json`` (null entries and malformed
    polygons skipped, counted in ``attributes['skipped']`` of none: see :func:`read_boxes_counted`)."""
    return read_boxes_counted(path)[0]


def read_boxes_counted(path: Union[str, Path]) -> Tuple[List[Box3D], int]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SunRGBDError(f"{path}: unreadable 3D annotation ({exc})") from exc
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(objects, list):
        raise SunRGBDError(f"{path}: no 'objects' list")
    boxes, skipped = [], 0
    for obj in objects:
        if not isinstance(obj, dict) or not obj.get("polygon") or not isinstance(obj.get("name"), str):
            skipped += obj is not None
            continue
        box = polygon_box(obj["polygon"][0], obj["name"].strip().lower())
        if box is None:
            skipped += 1
            continue
        boxes.append(box)
    return boxes, skipped


def _one_file(folder: Path, sub: str, suffixes: Sequence[str]) -> Optional[Path]:
    d = folder / sub
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in suffixes) if d.is_dir() else []
    return files[-1] if files else None


def find_frames(root: Union[str, Path]) -> List[Path]:
    """Every frame folder (one holding ``intrinsics.txt`` and ``image/``) under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SUN RGB-D root {root} is not a folder")
    return sorted(p.parent for p in root.rglob("intrinsics.txt") if (p.parent / "image").is_dir())


def _relative_name(folder: Path, root: Path) -> str:
    parts = folder.resolve().parts
    if "SUNRGBD" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("SUNRGBD") + 1:])
    return folder.resolve().relative_to(root.resolve()).as_posix()


def read_split(path: Union[str, Path], split: str) -> List[str]:
    """Frame names (``<sensor>/.../<frame>``) of ``split`` in ``allsplit.mat`` (train / test; val =
    test) or in a text file (one folder per line; ``split`` ignored)."""
    path = Path(path)
    if path.suffix == ".mat":
        from scipy.io import loadmat

        key = {"train": "alltrain", "test": "alltest", "val": "alltest"}.get(split)
        if key is None:
            raise ValueError(f"split {split!r}: allsplit.mat has train and test (val = test)")
        try:
            mat = loadmat(str(path))
        except (OSError, ValueError, NotImplementedError) as exc:  # NotImplementedError: a MATLAB v7.3 (HDF5) file
            raise SunRGBDError(f"{path}: unreadable split file ({exc}); give the toolbox's allsplit.mat or a text file") from exc
        if key not in mat:
            raise SunRGBDError(f"{path}: no {key!r} (has {sorted(k for k in mat if not k.startswith('__'))})")
        entries = [str(np.asarray(e).ravel()[0]) for e in np.asarray(mat[key], dtype=object).ravel()]
    else:
        entries = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = []
    for e in entries:
        e = e.replace("\\", "/").rstrip("/")
        names.append(e.split("SUNRGBD/", 1)[1] if "SUNRGBD/" in e else e)
    return names


class SunRGBDReader:
    """SUN RGB-D frames as :class:`clip2_core.types.Frame` (points in the upright frame, one camera
    ``CAM0``, ``gt_boxes`` from ``annotation3Dfinal``).

    Args:
        root: the ``SUNRGBD`` folder (or one that contains it, or any folder of frame folders).
        split: None (every frame), or train / test / val (val = test) of ``split_file`` (default:
            ``SUNRGBDtoolbox/traintestsplit/allsplit.mat`` beside or under ``root``).
        depth: ``depth`` (raw) or ``depth_bfx`` (holes filled).
        max_points: random subsample per frame (seeded by its name; None: every valid pixel).
        load_images: decode the colour image (else only its path is set; the miner decodes on use).
    """

    def __init__(self, root: Union[str, Path], split: Optional[str] = None, split_file: Optional[Union[str, Path]] = None,
                 depth: str = "depth", max_points: Optional[int] = 50000, max_depth: float = 8.0,
                 load_images: bool = False, frames: Optional[Sequence[str]] = None) -> None:
        if depth not in ("depth", "depth_bfx"):
            raise ValueError(f"depth must be 'depth' or 'depth_bfx', got {depth!r}")
        self.root = Path(root)
        self.depth, self.max_points, self.max_depth, self.load_images = depth, max_points, float(max_depth), load_images
        folders = find_frames(self.root)
        if not folders:
            raise FileNotFoundError(f"no SUN RGB-D frame folders (with intrinsics.txt and image/) under {self.root}")
        self._folders: Dict[str, Path] = {_relative_name(f, self.root): f for f in folders}
        names = list(self._folders)
        if split is not None:
            split_file = Path(split_file) if split_file else self._default_split_file()
            if split_file is None:
                raise FileNotFoundError(
                    f"split {split!r} needs SUNRGBDtoolbox/traintestsplit/allsplit.mat under or beside {self.root} "
                    "(or --split-file); use split 'all' for every frame")
            wanted = set(read_split(split_file, split))
            names = [n for n in names if n in wanted]
        if frames:
            missing = sorted(set(frames) - set(self._folders))
            if missing:
                raise ValueError(f"unknown frame(s) {missing[:5]} under {self.root}")
            names = [n for n in names if n in set(frames)]
        self.names = names

    def _default_split_file(self) -> Optional[Path]:
        for base in (self.root, self.root.parent, self.root.parent.parent):
            for cand in (base / "SUNRGBDtoolbox" / "traintestsplit" / "allsplit.mat", base / "traintestsplit" / "allsplit.mat"):
                if cand.is_file():
                    return cand
        return None

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return (self.frame(n) for n in self.names)

    def frame(self, name: str) -> Frame:
        folder = self._folders[name]
        image = _one_file(folder, "image", (".jpg", ".jpeg", ".png"))
        depth = _one_file(folder, self.depth, (".png",))
        if image is None or depth is None:
            raise SunRGBDError(f"{folder}: needs image/*.jpg and {self.depth}/*.png")
        try:
            K = np.loadtxt(folder / "intrinsics.txt", dtype=np.float64).reshape(3, 3)
            ext = _one_file(folder, "extrinsics", (".txt",))
            rtilt = rtilt_from_extrinsics(np.loadtxt(ext, dtype=np.float64).reshape(3, -1)) if ext else np.eye(3)
        except (OSError, ValueError) as exc:
            raise SunRGBDError(f"{folder}: unreadable intrinsics/extrinsics ({exc})") from exc
        if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 and np.isfinite(rtilt).all()):
            raise SunRGBDError(f"{folder}: intrinsics/extrinsics are not a camera")
        d = read_depth_png(depth)
        pts, _ = depth_to_points(d, K, rtilt, self.max_depth)
        if self.max_points and pts.shape[0] > self.max_points:
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            pts = pts[np.sort(rng.choice(pts.shape[0], self.max_points, replace=False))]
        h, w = d.shape
        cam = CameraView(CAMERA, camera_matrix(K), camera_transform(rtilt), (w, h), image_path=str(image), token=name)
        if self.load_images:
            from clip2_core.mining.miner import decode_image

            cam.image = decode_image(str(image))
        boxes: List[Box3D] = []
        ann = folder / "annotation3Dfinal" / "index.json"
        if ann.is_file():
            boxes = read_boxes(ann)
        return Frame(points=pts, point_fields=("x", "y", "z"), cameras={CAMERA: cam}, frame_id="upright_depth",
                     token=name, scene=name.split("/", 1)[0], gt_boxes=boxes)


def write_frame(folder: Union[str, Path], image: np.ndarray, depth_m: np.ndarray, K: np.ndarray,
                extrinsics: np.ndarray, boxes: Sequence[Box3D] = (), name: str = "000001", depth_bfx: bool = True) -> Path:
    """Write one frame folder in the release layout (synthetic frames, converted frames for tests).

    ``K``: the 1-based toolbox intrinsics; ``extrinsics``: (3, 3) or (3, 4) camera -> gravity-aligned
    (optical axes); ``boxes`` (upright frame) become ``annotation3Dfinal`` polygons (4 floor corners).
    """
    from PIL import Image

    from clip2_core.geometry import box_corners

    folder = Path(folder)
    for sub in ("image", "depth", "extrinsics", "annotation3Dfinal") + (("depth_bfx",) if depth_bfx else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(folder / "image" / f"{name}.jpg", quality=95)
    enc = encode_depth(depth_m)
    Image.fromarray(enc).save(folder / "depth" / f"{name}.png")
    if depth_bfx:
        Image.fromarray(enc).save(folder / "depth_bfx" / f"{name}.png")
    np.savetxt(folder / "intrinsics.txt", np.asarray(K, dtype=np.float64).reshape(3, 3), fmt="%.9f")
    E = np.zeros((3, 4))
    E[:, :3] = np.asarray(extrinsics, dtype=np.float64)[:3, :3]
    np.savetxt(folder / "extrinsics" / "20150101000000.txt", E, fmt="%.9f")
    objects = []
    for b in boxes:
        c = box_corners(np.array([[*b.center, *b.size, b.yaw]]))[0]
        bottom = c[np.argsort(c[:, 2])[:4]]
        order = np.argsort(np.arctan2(bottom[:, 1] - b.center[1], bottom[:, 0] - b.center[0]))
        bottom = bottom[order]
        top, low = float(b.center[2] + b.size[2] / 2), float(b.center[2] - b.size[2] / 2)
        objects.append({"name": b.label, "polygon": [{"X": bottom[:, 0].round(6).tolist(), "Z": bottom[:, 1].round(6).tolist(),
                                                      "Ymin": -top, "Ymax": -low, "rectangle": True}]})
    (folder / "annotation3Dfinal" / "index.json").write_text(json.dumps({"name": name, "objects": objects}))
    return folder
