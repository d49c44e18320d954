"""Streaming proxy data for training: shuffled, augmented, normalised, resumable.

Order is a pure function of ``(seed, epoch, rank, world, worker)``: shards are visited in a
seeded permutation, proxies pass through a seeded shuffle buffer, and proxy ``g`` (its global
position in the epoch's stream) belongs to reader ``g % (world * workers)``. Augmentation of a
proxy is seeded by ``(seed, epoch, g)``. So a resumed run that skips the batches it already
consumed sees exactly the data an uninterrupted run would.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from clip2_core.encoders.normalize import NormalizationConfig, normalize_cluster
from clip2_core.geometry import fit_box
from clip2_core.mining.shards import ShardStats, iter_proxies, shard_paths
from clip2_core.training.config import AugmentConfig

log = logging.getLogger(__name__)


def collect_shards(folders: Sequence[str | Path]) -> List[Path]:
    paths: List[Path] = []
    for f in folders:
        p = Path(f)
        if not p.is_dir():
            raise FileNotFoundError(f"proxy folder not found: {p}")
        found = shard_paths(p)
        if not found:
            raise FileNotFoundError(f"no proxy shards in {p} (run clip2 mine first)")
        paths.extend(found)
    return paths


def labels_in(folders: Sequence[str | Path]) -> Dict[str, int]:
    """Label -> proxy count over proxy folders (from their index/sidecars)."""
    import json

    counts: Dict[str, int] = {}
    for f in folders:
        p = Path(f)
        sidecars = [s for s in sorted(p.glob("shard-*.json")) if s.with_suffix(".tar").is_file()]
        for s in sidecars:
            for k, v in json.loads(s.read_text())["labels"].items():
                counts[k] = counts.get(k, 0) + int(v)
    return counts


def augment_points(points: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Rotation about z (around the crop centre), scaling, jitter and point dropout. (K, C) -> (K', C)."""
    pts = np.array(points, dtype=np.float64, copy=True)
    k = pts.shape[0]
    if cfg.dropout_max > 0 and k > 8:
        frac = rng.uniform(0, cfg.dropout_max)
        keep = rng.random(k) >= frac
        if keep.sum() >= 8:
            pts = pts[keep]
    centre = 0.5 * (pts[:, :3].min(axis=0) + pts[:, :3].max(axis=0))
    xyz = pts[:, :3] - centre
    if cfg.rotate_z:
        a = rng.uniform(-np.pi, np.pi)
        c, s = np.cos(a), np.sin(a)
        xyz[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]])
    xyz *= rng.uniform(cfg.scale_min, cfg.scale_max)
    if cfg.jitter_std > 0:
        xyz += rng.normal(0, cfg.jitter_std, xyz.shape)
    pts[:, :3] = xyz + centre
    return pts


def repeat_factors(counts: Dict[str, int], vocabulary: Sequence[str], threshold: float) -> Dict[str, float]:
    """Repeat-factor sampling (Gupta et al., LVIS, 2019): a proxy of label c is seen
    ``r_c = max(1, sqrt(threshold / f_c))`` times per epoch, ``f_c`` = c's share of the proxies.

    Rare labels are repeated (each copy augmented differently), common ones are not thinned, so
    no data is dropped. ``threshold`` 0 turns it off; 0.1 lifts every label rarer than 10 %.
    """
    known = {k: int(v) for k, v in counts.items() if k in set(vocabulary) and int(v) > 0}
    total = sum(known.values())
    if threshold <= 0 or total == 0:
        return {}
    return {k: max(1.0, float(np.sqrt(threshold / (v / total)))) for k, v in known.items()}


@dataclass
class Sample:
    points: np.ndarray  # (P, 4) float32 normalised encoder input
    label: int  # index into the vocabulary
    image_embedding: np.ndarray  # (D,) float32, zeros when missing
    has_image: bool


def encoder_input(points: np.ndarray, norm: NormalizationConfig, rng: np.random.Generator) -> np.ndarray:
    """Normalise a (K, C) crop exactly as the online pipeline does (centre = fitted box centre)."""
    return normalize_cluster(points, norm, rng=rng, box=fit_box(points[:, :3]))


class ProxyStream:
    """Iterate (augmented) samples of one epoch for one reader (rank x worker)."""

    def __init__(
        self,
        folders: Sequence[str | Path],
        vocabulary: Sequence[str],
        norm: NormalizationConfig,
        embed_dim: int,
        augment: Optional[AugmentConfig],
        seed: int = 0,
        shuffle_buffer: int = 2048,
        min_points: int = 8,
        repeat_threshold: float = 0.0,
    ):
        self.shards = collect_shards(folders)
        self.index = {name: i for i, name in enumerate(vocabulary)}
        self.norm = norm
        self.embed_dim = int(embed_dim)
        self.augment = augment
        self.seed = int(seed)
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.min_points = int(min_points)
        self.stats = ShardStats()
        self.skipped_unknown_label = 0
        self.repeat = repeat_factors(labels_in(folders), vocabulary, repeat_threshold) if repeat_threshold > 0 else {}

    def _ordered(self, epoch: int) -> Iterator:
        rng = np.random.default_rng([self.seed, epoch, 1])
        order = rng.permutation(len(self.shards)) if self.augment is not None else np.arange(len(self.shards))
        stream = iter_proxies([self.shards[i] for i in order], self.stats)
        if self.augment is None:  # evaluation: file order
            yield from stream
            return
        buf: list = []
        rep_rng = np.random.default_rng([self.seed, epoch, 3])
        for p in stream:
            copies = 1
            r = self.repeat.get(p.text, 1.0)
            if r > 1.0:  # stochastic rounding keeps the expected count at r
                copies = int(r) + int(rep_rng.random() < r - int(r))
            for _ in range(copies):
                buf.append(p)
                if len(buf) >= self.shuffle_buffer:
                    j = int(rng.integers(len(buf)))
                    buf[j], buf[-1] = buf[-1], buf[j]
                    yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    def samples(self, epoch: int, reader: int = 0, readers: int = 1) -> Iterator[Sample]:
        g = -1
        for proxy in self._ordered(epoch):
            if proxy.points.shape[0] < self.min_points or not np.isfinite(proxy.points[:, :3]).all():
                continue
            label = self.index.get(proxy.text)
            if label is None:
                self.skipped_unknown_label += 1
                continue
            g += 1
            if g % readers != reader:
                continue
            rng = np.random.default_rng([self.seed, epoch, g, 7])
            pts = proxy.points if self.augment is None else augment_points(proxy.points, self.augment, rng)
            x = encoder_input(pts, self.norm, rng)
            emb = proxy.image_embedding
            has = emb is not None and emb.shape == (self.embed_dim,)
            yield Sample(x, label, emb.astype(np.float32) if has else np.zeros(self.embed_dim, np.float32), bool(has))


def make_torch_dataset(stream: ProxyStream, rank: int, world: int):
    """A torch IterableDataset over ``stream`` for one process; epoch set via ``.epoch``."""
    import torch
    from torch.utils.data import IterableDataset, get_worker_info

    class _Dataset(IterableDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __iter__(self):
            info = get_worker_info()
            workers = info.num_workers if info else 1
            wid = info.id if info else 0
            for s in stream.samples(self.epoch, reader=rank * workers + wid, readers=world * workers):
                yield (
                    torch.from_numpy(s.points),
                    torch.tensor(s.label, dtype=torch.long),
                    torch.from_numpy(s.image_embedding),
                    torch.tensor(s.has_image),
                )

    return _Dataset()
