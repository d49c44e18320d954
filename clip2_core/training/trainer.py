"""The CLIP2 training loop: semantic (point-text) + instance (point-image) InfoNCE.

One function, :func:`train`, runs on one CPU process, under ``torchrun`` with DDP (gloo on CPU,
NCCL on GPU), with AMP on GPU. Checkpoints are safetensors + JSON (model) plus a training state
(optimiser moments, logit scales, torch RNG, step, data position) in safetensors + JSON, written
atomically every ``checkpoint.every`` steps and at the end; ``resume`` continues exactly.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from clip2_core.fileio import atomic_write_bytes, atomic_write_json
from clip2_core.training.config import TrainConfig

log = logging.getLogger(__name__)

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


def lr_at(step: int, cfg) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    o = cfg.optim
    if o.warmup_steps > 0 and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, o.steps - o.warmup_steps)
    t = min(1.0, (step - o.warmup_steps) / span)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _train_module(encoder, loss_cfg):
    from torch import nn

    from clip2_core.losses import CLIP2Loss

    class TrainModule(nn.Module):
        """Encoder + losses in one module, so DDP all-reduces the logit scales too."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.loss = CLIP2Loss(loss_cfg.semantic_weight, loss_cfg.instance_weight, loss_cfg.symmetric_semantic)

        def forward(self, points, labels, text_bank, image_emb, has_image):
            emb = self.encoder(points)
            sem = self.loss.semantic(emb, text_bank, labels)
            zero = emb.new_zeros(())
            inst_loss = zero
            if self.loss.instance_weight > 0 and int(has_image.sum()) >= 2:
                m = has_image
                inst_loss = self.loss.instance(emb[m], image_emb[m])["loss"]
            else:
                inst_loss = inst_loss + 0.0 * self.loss.instance.logit_scale()  # keep the param in the graph (DDP)
            total = self.loss.semantic_weight * sem["loss"] + self.loss.instance_weight * inst_loss
            return {
                "loss": total,
                "semantic_loss": sem["loss"].detach(),
                "instance_loss": inst_loss.detach(),
                "semantic_scale": sem["logit_scale"],
                "instance_scale": self.loss.instance.logit_scale().detach(),
            }

    return TrainModule()


# ------------------------------------------------------------------ training state I/O
def save_train_state(path: Path, module, optimizer, step: int, epoch: int, batch_in_epoch: int,
                     best: Optional[float], best_step: Optional[int] = None) -> None:
    import torch
    from safetensors.torch import save as st_save

    tensors: Dict[str, Any] = {}
    for k, v in module.loss.state_dict().items():
        tensors[f"loss/{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"opt/{pid}/{k}"] = t.detach().cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    atomic_write_bytes(path / STATE_TENSORS, st_save(tensors))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    atomic_write_json(path / STATE_JSON, {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                                          "best_val": best, "best_step": best_step, "param_groups": groups})


def load_train_state(path: Path, module, optimizer) -> Dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    meta = json.loads((path / STATE_JSON).read_text())
    tensors = load_file(str(path / STATE_TENSORS))
    module.loss.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("loss/")})
    state: Dict[int, Dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng/torch"])
    return meta


def _install_best(run_dir: Path, ck: Path) -> None:
    """Make ``run_dir/best`` a copy of checkpoint ``ck``: copied aside, then swapped in by renames."""
    tmp, old, best = run_dir / "best.tmp", run_dir / "best.old", run_dir / "best"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ck, tmp)
    shutil.rmtree(old, ignore_errors=True)
    if best.exists():
        os.replace(best, old)
    os.replace(tmp, best)
    shutil.rmtree(old, ignore_errors=True)


def _mend_best(run_dir: Path, ck: Path, best_step: Optional[int]) -> None:
    """On resume: when the training state says ``ck`` is the best step but ``best/`` does not hold
    it (the run was killed between the two writes), install it now."""
    best = run_dir / "best"
    for stale in ("best.tmp", "best.old"):
        if (run_dir / stale).exists() and best.exists():
            shutil.rmtree(run_dir / stale, ignore_errors=True)
    if best_step is None or ck.name != f"step-{best_step:07d}":
        return
    try:
        have = json.loads((best / STATE_JSON).read_text()).get("step")
    except (OSError, ValueError):
        have = None
    if have != best_step:
        log.warning("resume: best/ does not hold step %d, the best so far (interrupted while copying); "
                    "installing it from %s", best_step, ck)
        _install_best(run_dir, ck)


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    pointer = run_dir / "last.json"
    if pointer.is_file():
        p = run_dir / json.loads(pointer.read_text())["checkpoint"]
        if (p / STATE_JSON).is_file():
            return p
    steps = sorted(run_dir.glob("step-*"), key=lambda q: int(q.name.split("-")[1]))
    steps = [s for s in steps if (s / STATE_JSON).is_file()]
    return steps[-1] if steps else None


# ------------------------------------------------------------------ evaluation
def evaluate_stream(encoder, stream, text_bank, device, batch_size: int = 256) -> Dict[str, Any]:
    """Zero-shot top-1 of ``encoder`` on a (non-augmented) proxy stream vs ``text_bank`` (V, D)."""
    import torch

    preds: List[int] = []
    labels: List[int] = []
    was_training = encoder.training
    encoder.eval()
    batch: List[np.ndarray] = []

    def flush():
        if not batch:
            return
        x = torch.from_numpy(np.stack(batch)).to(device)
        with torch.no_grad():
            e = encoder(x).float()
        preds.extend((e @ text_bank.T).argmax(dim=1).cpu().tolist())
        batch.clear()

    for s in stream.samples(0):
        batch.append(s.points)
        labels.append(s.label)
        if len(batch) >= batch_size:
            flush()
    flush()
    encoder.train(was_training)
    p, y = np.array(preds), np.array(labels)
    if y.size == 0:
        return {"n": 0, "top1": float("nan"), "mean_class_acc": float("nan")}
    per = {int(c): float((p[y == c] == c).mean()) for c in np.unique(y)}
    return {"n": int(y.size), "top1": float((p == y).mean()), "mean_class_acc": float(np.mean(list(per.values()))),
            "per_class": per}


# ------------------------------------------------------------------ main loop
def train(cfg: TrainConfig, resume: bool = False, stop_at: Optional[int] = None) -> Dict[str, Any]:
    """Train; returns a summary dict (final step, last validation, run folder, throughput).

    ``stop_at``: leave after this step with a checkpoint (the schedule still spans
    ``optim.steps``), e.g. for time-boxed or preemptible jobs; ``resume`` continues.
    """
    import torch
    from torch.utils.data import DataLoader

    from clip2_core.checkpoint import save_checkpoint
    from clip2_core.encoders import create_point_encoder
    from clip2_core.training.data import ProxyStream, labels_in, make_torch_dataset
    from clip2_core.vlm import DEFAULT_TEMPLATES, FrozenCLIP, VLMConfig, build_text_bank

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist_info = init_distributed(device)
    if device == "cuda":
        torch.cuda.set_device(dist_info.local_rank)
    run_dir = Path(cfg.checkpoint.out)
    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
    torch.manual_seed(cfg.seed + dist_info.rank)

    clip = FrozenCLIP(VLMConfig(model=cfg.clip.model, pretrained=cfg.clip.weights, model_config_file=cfg.clip.model_config_file,
                                seed=cfg.seed))
    if clip.is_random and dist_info.main:
        log.warning("training against RANDOM CLIP weights (%s): a check that the machinery learns, not a zero-shot "
                    "model; the checkpoint and summary say random_clip: true", clip.random_reason)
    vocab = list(cfg.data.vocabulary or sorted(labels_in(cfg.data.train)))
    if len(vocab) < 2:
        raise ValueError(f"need at least 2 labels to train, found {vocab}")
    templates = tuple(cfg.clip.templates or DEFAULT_TEMPLATES)
    bank = build_text_bank(clip, vocab, templates, cache_dir=run_dir / "textbank")
    text_bank = torch.from_numpy(bank.embeddings).to(device)

    encoder = create_point_encoder(cfg.model.name, embed_dim=clip.embed_dim).to(device)
    model_cfg = encoder.config
    module = _train_module(encoder, cfg.loss).to(device).train()
    decay, no_decay = [], []
    for n, p in module.named_parameters():
        (no_decay if p.ndim <= 1 or "logit_scale" in n else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.optim.lr)
    step, epoch, batch_in_epoch, best = 0, 0, 0, None
    best_step: Optional[int] = None
    if resume:
        ck = latest_checkpoint(run_dir)
        if ck is None:
            log.warning("--resume: no checkpoint in %s, starting fresh", run_dir)
        else:
            from clip2_core.checkpoint import load_checkpoint

            loaded = load_checkpoint(ck)
            encoder.load_state_dict(loaded.state_dict)
            meta = load_train_state(ck, module, optimizer)
            step, epoch, batch_in_epoch, best = meta["step"], meta["epoch"], meta["batch_in_epoch"], meta["best_val"]
            best_step = meta.get("best_step")
            _mend_best(run_dir, ck, best_step)
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ck, step, epoch, batch_in_epoch)
    ddp = module
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(module, device_ids=[dist_info.local_rank] if device == "cuda" else None)

    stream = ProxyStream(cfg.data.train, vocab, model_cfg.normalization, clip.embed_dim, cfg.augment, cfg.seed,
                         cfg.data.shuffle_buffer, cfg.data.min_points, cfg.data.repeat_threshold)
    dataset = make_torch_dataset(stream, dist_info.rank, dist_info.world)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, num_workers=cfg.data.workers, drop_last=True,
                        persistent_workers=False)
    val_stream = None
    if cfg.data.val:
        val_stream = ProxyStream(cfg.data.val, vocab, model_cfg.normalization, clip.embed_dim, None, cfg.seed,
                                 min_points=cfg.data.min_points)

    use_amp = cfg.optim.amp and device == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    csv_path = run_dir / "scalars.csv"
    writer = None
    if dist_info.main and cfg.log.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            log.warning("tensorboard not installed: scalars go to %s only", csv_path)
    csv_file = open(csv_path, "a", newline="") if dist_info.main else None
    csv_writer = csv.writer(csv_file) if csv_file else None
    if csv_file is not None and csv_file.tell() == 0:
        csv_writer.writerow(["step", "loss", "semantic_loss", "instance_loss", "semantic_scale", "instance_scale", "lr",
                             "proxies_per_s", "val_top1", "val_mean_class_acc"])

    bar = None
    if dist_info.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.optim.steps, initial=step, desc=f"train {cfg.name}", unit="step", dynamic_ncols=True)
    last_val: Dict[str, Any] = {}
    t_window, n_window = time.perf_counter(), 0
    throughput: List[float] = []

    def save(tag_step: int) -> None:
        """Checkpoint ``tag_step``; a kill at any point leaves a state ``--resume`` completes.

        Order: the step's weights and training state (which already hold the new best score and
        step), then ``last.json``, then ``best/``. A kill before the training state is complete
        leaves the step without ``train_state.json``, so resume takes the previous step; a kill
        after it but before ``best/`` is swapped is mended on resume (:func:`_mend_best`).
        """
        nonlocal best, best_step
        if not dist_info.main:
            return
        ck = run_dir / f"step-{tag_step:07d}"
        score = last_val.get("mean_class_acc")
        improved = score is not None and not math.isnan(score) and (best is None or score > best)
        new_best, new_best_step = (float(score), tag_step) if improved else (best, best_step)
        save_checkpoint(ck, encoder, model_cfg, clip=clip.identity, vocabulary=vocab,
                        extra={"step": tag_step, "val": last_val, "templates": list(templates), "run": cfg.name,
                               # the learned point-text temperature: recognition's logit scale
                               "logit_scale": float(module.loss.semantic.logit_scale().detach())})
        save_train_state(ck, module, optimizer, tag_step, epoch, batch_in_epoch, new_best, new_best_step)
        best, best_step = new_best, new_best_step
        atomic_write_json(run_dir / "last.json", {"checkpoint": ck.name, "step": tag_step})
        if improved:
            _install_best(run_dir, ck)
        steps = sorted(run_dir.glob("step-*"), key=lambda q: int(q.name.split("-")[1]))
        for old in steps[: max(0, len(steps) - cfg.checkpoint.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def validate_now() -> None:
        nonlocal last_val
        if val_stream is None or not dist_info.main:
            return
        last_val = evaluate_stream(encoder, val_stream, text_bank, device)
        log.info("step %d: val top1 %.3f mean class acc %.3f (n=%d)", step, last_val["top1"],
                 last_val["mean_class_acc"], last_val["n"])
        if writer:
            writer.add_scalar("val/top1", last_val["top1"], step)
            writer.add_scalar("val/mean_class_acc", last_val["mean_class_acc"], step)

    try:
        while step < cfg.optim.steps:
            dataset.epoch = epoch
            it = iter(loader)
            skipped, to_skip = 0, batch_in_epoch  # resume: replay the consumed part of the epoch
            got_any = False
            for batch in it:
                if skipped < to_skip:
                    skipped += 1
                    continue
                got_any = True
                points, labels, img, has = (t.to(device, non_blocking=True) for t in batch)
                lr = lr_at(step, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=use_amp):
                    out = ddp(points, labels, text_bank, img, has)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out["loss"]).backward()
                if cfg.optim.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                batch_in_epoch += 1
                n_window += points.shape[0] * dist_info.world
                if bar:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(out['loss'].detach()):.3f}", lr=f"{lr:.2e}")
                if step % cfg.log.every == 0 or step == cfg.optim.steps:
                    dt = time.perf_counter() - t_window
                    pps = n_window / dt if dt > 0 else 0.0
                    throughput.append(pps)
                    t_window, n_window = time.perf_counter(), 0
                    if csv_writer:
                        csv_writer.writerow([step, float(out["loss"].detach()), float(out["semantic_loss"]), float(out["instance_loss"]),
                                             float(out["semantic_scale"]), float(out["instance_scale"]), lr, round(pps, 1), "", ""])
                        csv_file.flush()
                    if writer:
                        for k in ("loss", "semantic_loss", "instance_loss", "semantic_scale", "instance_scale"):
                            writer.add_scalar(f"train/{k}", float(out[k].detach()), step)
                        writer.add_scalar("train/lr", lr, step)
                        writer.add_scalar("train/proxies_per_s", pps, step)
                if val_stream is not None and (step % cfg.log.val_every == 0 or step == cfg.optim.steps):
                    validate_now()
                    if csv_writer:
                        csv_writer.writerow([step, "", "", "", "", "", "", "", last_val["top1"], last_val["mean_class_acc"]])
                        csv_file.flush()
                stopping = stop_at is not None and step >= stop_at
                if step % cfg.checkpoint.every == 0 or step == cfg.optim.steps or stopping:
                    save(step)
                if step >= cfg.optim.steps or stopping:
                    break
            if step >= cfg.optim.steps or (stop_at is not None and step >= stop_at):
                break
            if not got_any and skipped == 0:
                raise ValueError(
                    f"the training data yields no full batch of {cfg.data.batch_size} (check data.train, the labels "
                    f"and data.min_points; {stream.skipped_unknown_label} proxies had labels outside the vocabulary)"
                )
            epoch += 1
            batch_in_epoch = 0
    except KeyboardInterrupt:
        log.warning("interrupted at step %d: saving a checkpoint so --resume continues from here", step)
        save(step)
        raise
    finally:
        if bar:
            bar.close()
        if writer:
            writer.close()
        if csv_file:
            csv_file.close()
    if stream.stats.corrupt_shards or stream.stats.corrupt_records:
        log.warning("skipped %d corrupt shards and %d corrupt records", len(stream.stats.corrupt_shards),
                    stream.stats.corrupt_records)
    summary = {
        "run": str(run_dir),
        "step": step,
        "vocabulary": vocab,
        "val": last_val,
        "best_val_mean_class_acc": best,
        "proxies_per_s_median": float(np.median(throughput)) if throughput else None,
        "world_size": dist_info.world,
        "checkpoint": str(run_dir / f"step-{step:07d}"),
        "clip": clip.identity,
        "random_clip": clip.is_random,
    }
    if clip.is_random:
        summary["warning"] = "trained against RANDOM CLIP weights: a check that the machinery learns, not a zero-shot model"
    if dist_info.main:
        atomic_write_json(run_dir / "summary.json", summary)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return summary
