"""Proxy shards: WebDataset-style tar files, written atomically, resumable, streamable.

Layout of an output folder::

    shard-r00-00000.tar        # proxies; members grouped by key: KEY.points.npy, KEY.txt,
    shard-r00-00000.json       #   KEY.emb.npy (optional), KEY.json (provenance), KEY.jpg (optional)
    ...                        # sidecar: the shard's proxy count, labels and the samples it completes
    index.json                 # merged view of all sidecars (rebuilt by ``write_index``)

Atomicity: a shard is written as ``*.tar.tmp``, renamed to ``*.tar`` when complete, and only
then is its sidecar written (atomically, :mod:`clip2_core.fileio`). A shard holds whole samples only, so a sample is
either finished (listed in a sidecar whose tar exists) or redone on resume; an interrupted run
loses at most the shard in progress, never duplicates a proxy. One writer per rank
(``shard-r{rank}``) lets ``torchrun`` ranks mine in parallel into one folder.
"""
from __future__ import annotations

import io
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import numpy as np

from clip2_core.fileio import atomic_write_json, is_plain_name, replace_durably
from clip2_core.types import Proxy

log = logging.getLogger(__name__)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic bytes for identical content
    tar.addfile(info, io.BytesIO(data))


def _jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def finished_samples(out_dir: Path) -> Set[str]:
    """Sample ids completed in earlier runs (sidecars whose tar exists)."""
    done: Set[str] = set()
    for side in sorted(Path(out_dir).glob("shard-*.json")):
        tar = side.with_suffix(".tar")
        if not tar.is_file():
            continue
        try:
            done.update(json.loads(side.read_text())["samples"])
        except (ValueError, KeyError) as exc:
            log.warning("ignoring unreadable sidecar %s (%s)", side, exc)
    return done


class ShardWriter:
    """Write proxies sample by sample into rolling tar shards (one writer per rank)."""

    def __init__(self, out_dir: str | Path, rank: int = 0, shard_size: int = 512, save_jpeg: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.shard_size = shard_size
        self.save_jpeg = save_jpeg
        self._tar: Optional[tarfile.TarFile] = None
        self._tmp: Optional[Path] = None
        self._count = 0
        self._samples: List[str] = []
        self._labels: Dict[str, int] = {}
        self.cleanup_partial()  # first: a removed leftover's number is free again
        self._next = self._first_free_number()

    def _first_free_number(self) -> int:
        used = [int(p.name.split("-")[2][:5]) for p in self.out_dir.glob(f"shard-r{self.rank:02d}-*.tar*")]
        return max(used, default=-1) + 1

    def cleanup_partial(self) -> None:
        """Remove this rank's leftovers of an interrupted run: tmp files and tars without sidecar."""
        # shard-r00-00000.tar.tmp (tar in progress), .shard-r00-00000.json.<random>.tmp (sidecar, fileio)
        for pattern in (f"shard-r{self.rank:02d}-*.tmp", f".shard-r{self.rank:02d}-*.tmp"):
            for p in self.out_dir.glob(pattern):
                p.unlink(missing_ok=True)
        for tar in self.out_dir.glob(f"shard-r{self.rank:02d}-*.tar"):
            if not tar.with_suffix(".json").is_file():
                log.warning("removing shard %s without sidecar (interrupted run); its samples are redone", tar.name)
                tar.unlink()

    def _open(self) -> None:
        name = f"shard-r{self.rank:02d}-{self._next:05d}.tar"
        self._next += 1
        self._tmp = self.out_dir / (name + ".tmp")
        self._tar = tarfile.open(self._tmp, "w")
        self._count = 0
        self._samples = []
        self._labels = {}

    def write_sample(self, sample_id: str, proxies: List[Proxy]) -> None:
        """Append all proxies of one finished sample (possibly none: the sample still counts as done)."""
        if self._tar is None:
            self._open()
        assert self._tar is not None
        for j, p in enumerate(proxies):
            key = f"{sample_id}_{j:03d}".replace("/", "_").replace(".", "_")
            _add(self._tar, f"{key}.points.npy", _npy_bytes(np.asarray(p.points, dtype=np.float32)))
            _add(self._tar, f"{key}.txt", p.text.encode("utf-8"))
            if p.image_embedding is not None:
                _add(self._tar, f"{key}.emb.npy", _npy_bytes(np.asarray(p.image_embedding, dtype=np.float32)))
            meta = {"sample": sample_id, "score": float(p.score), **p.provenance}
            if p.box_2d is not None:
                meta["box_2d"] = [round(float(v), 2) for v in p.box_2d]
            _add(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
            if self.save_jpeg and p.image_crop is not None and p.image_crop.size:
                _add(self._tar, f"{key}.jpg", _jpeg_bytes(p.image_crop))
            self._labels[p.text] = self._labels.get(p.text, 0) + 1
        self._count += len(proxies)
        self._samples.append(sample_id)
        if self._count >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Finish the current shard (atomically) if it holds anything."""
        if self._tar is None:
            return
        self._tar.close()
        assert self._tmp is not None
        tar_path = self._tmp.with_name(self._tmp.name[: -len(".tmp")])
        replace_durably(self._tmp, tar_path)
        side = {"shard": tar_path.name, "rank": self.rank, "count": self._count, "samples": self._samples, "labels": self._labels}
        atomic_write_json(tar_path.with_suffix(".json"), side, indent=1, sort_keys=True)
        self._tar = None
        self._tmp = None

    def close(self) -> None:
        self.flush()

    def abort(self) -> None:
        """Drop the shard in progress (its samples will be redone on resume)."""
        if self._tar is not None:
            self._tar.close()
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()
            self._tar = None


def write_index(out_dir: str | Path) -> dict:
    """Merge all sidecars into ``index.json`` (atomic) and return it."""
    out_dir = Path(out_dir)
    shards, labels, samples, total = [], {}, [], 0
    for side in sorted(out_dir.glob("shard-*.json")):
        if not side.with_suffix(".tar").is_file():
            continue
        d = json.loads(side.read_text())
        shards.append({"name": d["shard"], "count": d["count"], "rank": d.get("rank", 0)})
        total += d["count"]
        samples.extend(d["samples"])
        for k, v in d["labels"].items():
            labels[k] = labels.get(k, 0) + v
    index = {"num_proxies": total, "num_samples": len(samples), "shards": shards, "labels": dict(sorted(labels.items()))}
    atomic_write_json(out_dir / "index.json", index, indent=1)
    return index


MAX_MEMBER_BYTES = 64 << 20  # one record file; a proxy's points are ~10 KB, its image crop ~50 KB


@dataclass
class ShardStats:
    read: int = 0
    corrupt_shards: List[str] = field(default_factory=list)
    corrupt_records: int = 0


def iter_proxies(shard_paths, stats: Optional[ShardStats] = None, load_jpeg: bool = False) -> Iterator[Proxy]:
    """Stream proxies from tar shards. A corrupt shard or record is logged, counted, skipped."""
    stats = stats if stats is not None else ShardStats()
    for path in shard_paths:
        path = Path(path)
        try:
            with tarfile.open(path, "r") as tar:
                group: Dict[str, Dict[str, bytes]] = {}
                order: List[str] = []
                for member in tar:
                    if not member.isfile():  # links, devices, folders: never followed
                        continue
                    # members are read into memory, never extracted; a name with a folder part is still refused
                    if not is_plain_name(member.name):
                        log.warning("skipping member %r of %s: not a plain record name", member.name, path)
                        stats.corrupt_records += 1
                        continue
                    if member.size > MAX_MEMBER_BYTES:
                        log.warning("skipping member %r of %s: %d bytes", member.name, path, member.size)
                        stats.corrupt_records += 1
                        continue
                    key, _, ext = member.name.partition(".")
                    f = tar.extractfile(member)
                    if f is None:
                        continue
                    if key not in group:
                        group[key] = {}
                        order.append(key)
                    group[key][ext] = f.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            log.warning("skipping corrupt shard %s: %s", path, exc)
            stats.corrupt_shards.append(str(path))
            continue
        for key in order:
            rec = group[key]
            try:
                points = np.load(io.BytesIO(rec["points.npy"]), allow_pickle=False)
                meta = json.loads(rec["json"])
                emb = np.load(io.BytesIO(rec["emb.npy"]), allow_pickle=False) if "emb.npy" in rec else None
                crop = None
                if load_jpeg and "jpg" in rec:
                    from PIL import Image

                    crop = np.asarray(Image.open(io.BytesIO(rec["jpg"])).convert("RGB"))
                proxy = Proxy(
                    text=rec["txt"].decode("utf-8"),
                    points=points,
                    image_embedding=emb,
                    box_2d=np.asarray(meta.pop("box_2d")) if "box_2d" in meta else None,
                    score=float(meta.pop("score", 1.0)),
                    provenance=meta,
                    image_crop=crop,
                )
            except (KeyError, ValueError, OSError, UnicodeDecodeError) as exc:
                log.warning("skipping corrupt record %s in %s: %s", key, path, exc)
                stats.corrupt_records += 1
                continue
            stats.read += 1
            yield proxy


def shard_paths(out_dir: str | Path) -> List[Path]:
    """Complete shards of a proxy folder, in index order (falls back to the sidecars)."""
    out_dir = Path(out_dir)
    index = out_dir / "index.json"
    if index.is_file():
        names = [str(s["name"]) for s in json.loads(index.read_text())["shards"]]
        bad = [n for n in names if not is_plain_name(n) or not n.endswith(".tar")]
        if bad:  # an index naming files elsewhere (../, absolute): refused, not followed
            raise ValueError(f"{index} names shards outside its folder or not .tar files: {bad[:3]}")
        return [out_dir / n for n in names]
    return [side.with_suffix(".tar") for side in sorted(out_dir.glob("shard-*.json")) if side.with_suffix(".tar").is_file()]
