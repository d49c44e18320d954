"""The frozen CLIP side: open_clip text and image towers, prompt ensembles, a text-bank cache.

Weights
-------
A CLIP model is named by ``VLMConfig.model`` (an open_clip architecture such as ``"ViT-B-32"``,
or ``"local-dir:/path"`` / ``"hf-hub:org/repo"``) and ``VLMConfig.pretrained``:

* a pretrained **tag** (``"openai"``, ``"laion2b_s34b_b79k"``, ...) — used only if its file is
  already in the local Hugging Face hub cache (or open_clip's URL cache), unless
  ``allow_download=True`` and ``HF_HUB_OFFLINE`` is not set;
* a **local file** (``.safetensors`` preferred; ``.pt``/``.bin`` are read with
  ``torch.load(weights_only=True)``);
* ``None`` with a plain architecture name: **random weights** — logged as a WARNING, for tests.

Random weights stay random when saved to a file: :attr:`FrozenCLIP.is_random` is also true for a
weights file whose safetensors metadata says ``clip2.random_init`` (what clip2 writes when it
saves random weights, see :func:`save_random_clip_weights`), and for any weights whose learned
``logit_scale`` still holds open_clip's initial value (``ln(1/0.07)``, or ``ln(10)`` for SigLIP):
training always moves it. Callers refuse random weights unless the user opts in
(:func:`clip2_core.recognition.check_clip`).

Availability is decided up front, without network access: when the weights are not on disk
the loader raises :class:`WeightsUnavailableError` immediately (well under a second) with the
ways to provide them, instead of letting the hub client retry for tens of seconds.

The model is frozen (``requires_grad_(False)``) and in eval mode. Text and image embeddings
are returned as L2-normalised float32 numpy arrays.

Prompt ensembles
----------------
A class name is embedded with every template of :data:`DEFAULT_TEMPLATES` (3D- and
driving-aware phrasings), each embedding L2-normalised, averaged over templates and normalised
again (the CLIP recipe). :class:`TextBank` holds the result for a vocabulary and is cached on disk
under a key that hashes the model name, the weights' identity, the templates and the vocabulary.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

# Prompt templates for a class name `{}` (ensemble averaged). Mix of point-cloud / LiDAR phrasings
# (the modality the point encoder sees) and driving-scene phrasings (where the objects occur).
DEFAULT_TEMPLATES: Tuple[str, ...] = (
    "a point cloud of a {}.",
    "a LiDAR scan of a {}.",
    "a 3D model of a {}.",
    "a sparse point cloud of a {}.",
    "a 3D scan of a {} in a street.",
    "a photo of a {}.",
    "a {} on the road.",
    "a {} in a driving scene.",
)


class WeightsUnavailableError(RuntimeError):
    """The requested CLIP weights are not on this machine (and downloading is not allowed)."""


class WeightsUnreadableError(ValueError):
    """A CLIP weights file that exists but cannot be loaded (truncated, corrupt, another model's)."""


RANDOM_INIT_METADATA_KEY = "clip2.random_init"  # safetensors metadata flag on files holding random weights
# open_clip's initial logit_scale values (CLIP: ln(1/0.07); SigLIP: ln(10)); a trained model has moved away from them
_INITIAL_LOGIT_SCALES = (float(np.log(1 / 0.07)), float(np.log(10.0)))


def safetensors_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``{}`` for other formats, no metadata or an unreadable file)."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return {}
    try:
        with safe_open(str(p), framework="np") as f:
            return dict(f.metadata() or {})
    except (OSError, ValueError, SafetensorError):
        return {}


def save_random_clip_weights(model: Any, path: Union[str, Path]) -> Path:
    """Save a randomly initialised open_clip model's weights as safetensors, flagged as random."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p),
              metadata={RANDOM_INIT_METADATA_KEY: "true"})
    return p


def logit_scale_at_init(model: Any) -> bool:
    """True when the model's ``logit_scale`` still equals one of open_clip's initial values."""
    ls = getattr(model, "logit_scale", None)
    if ls is None:
        return False
    try:
        v = float(ls.detach().float().reshape(-1)[0])
    except (AttributeError, TypeError, ValueError, IndexError):
        return False
    return any(abs(v - init) < 1e-6 for init in _INITIAL_LOGIT_SCALES)


@dataclass
class VLMConfig:
    """Which frozen CLIP model to load and how."""

    model: str = "ViT-B-32"  # open_clip architecture, or "local-dir:PATH" / "hf-hub:ORG/REPO"
    pretrained: Optional[str] = None  # tag, weights file, or None (random weights, a WARNING)
    model_config_file: Optional[str] = None  # extra open_clip architecture JSON (file or dir) to register
    device: str = "cpu"
    cache_dir: Optional[str] = None  # hub / URL download cache (None -> the libraries' defaults)
    allow_download: bool = False  # fetch a missing tag from the hub (never when HF_HUB_OFFLINE=1)
    seed: int = 0  # torch seed for random weights, so "random" is reproducible


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _how_to_provide(model: str, tag: str) -> str:
    return (
        f"Provide the CLIP weights for {model!r} in one of these ways: "
        f"(1) pass a local weights file: pretrained='/path/to/open_clip_model.safetensors' (or .pt/.bin); "
        f"(2) pass model='local-dir:/path/to/dir' holding open_clip_config.json + weights; "
        f"(3) populate the Hugging Face hub cache on a machine with internet, e.g. "
        f"python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{tag}')\" and copy "
        f"~/.cache/huggingface/hub; or (4) allow the download (allow_download=True, HF_HUB_OFFLINE unset)."
    )


def sha256_file(path: Union[str, Path], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@dataclass
class ResolvedWeights:
    """What open_clip is asked to load, decided without touching the network."""

    model_name: str  # passed to open_clip.create_model
    pretrained: Optional[str]  # a local file path, or None
    weights_id: str  # identity used in cache keys: "file:<sha256>", "random:<sha>", ...
    force_quick_gelu: bool = False
    force_preprocess_cfg: Optional[Dict[str, Any]] = None
    random: bool = False
    random_reason: str = ""  # why the weights count as random


def _cached_hub_file(repo_id: str, filenames: Sequence[str], cache_dir: Optional[str]) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache

    for fn in filenames:
        hit = try_to_load_from_cache(repo_id, fn, cache_dir=cache_dir)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def resolve_weights(cfg: VLMConfig) -> ResolvedWeights:
    """Decide which local file backs ``cfg`` or raise :class:`WeightsUnavailableError` at once."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if cfg.model_config_file:
        if not os.path.exists(cfg.model_config_file):
            raise FileNotFoundError(f"open_clip model config not found: {cfg.model_config_file}")
        open_clip.add_model_config(cfg.model_config_file)

    if cfg.model.startswith("local-dir:"):
        d = Path(cfg.model[len("local-dir:"):])
        if not (d / "open_clip_config.json").is_file():
            raise WeightsUnavailableError(
                f"{cfg.model}: expected {d / 'open_clip_config.json'} and a weights file in that directory"
            )
        from open_clip.factory import _find_checkpoint_in_dir

        ckpt = _find_checkpoint_in_dir(d)
        if ckpt is None:
            raise WeightsUnavailableError(f"{cfg.model}: no *.safetensors / *.bin / *.pth weights in {d}")
        if cfg.pretrained:
            log.warning("ignoring pretrained=%r: the weights come from %s", cfg.pretrained, cfg.model)
        flagged = safetensors_metadata(ckpt).get(RANDOM_INIT_METADATA_KEY) == "true"
        return ResolvedWeights(cfg.model, None, f"file:{sha256_file(ckpt)}", random=flagged,
                               random_reason=f"{Path(ckpt).name} is flagged as random weights" if flagged else "")

    if cfg.model.startswith("hf-hub:"):
        repo = cfg.model[len("hf-hub:"):]
        conf = _cached_hub_file(repo, ["open_clip_config.json"], cfg.cache_dir)
        weights = _cached_hub_file(repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"], cfg.cache_dir)
        if conf is not None and weights is not None and Path(conf).parent == Path(weights).parent:
            # load the cached snapshot as a local dir: same files, and open_clip never asks the hub
            return ResolvedWeights(f"local-dir:{Path(conf).parent}", None, f"hf-hub:{repo}@{Path(conf).parent.name}")
        if _hub_offline() or not cfg.allow_download:
            raise WeightsUnavailableError(f"{cfg.model} is not in the local hub cache. " + _how_to_provide(cfg.model, "..."))
        return ResolvedWeights(cfg.model, None, f"hf-hub:{repo}")  # open_clip downloads it

    arch = cfg.model.replace("/", "-")
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {cfg.model!r}; register a JSON config with model_config_file "
            f"or use local-dir:/hf-hub: (some known: {open_clip.list_models()[:8]} ...)"
        )
    p = cfg.pretrained
    if not p:
        return ResolvedWeights(cfg.model, None, f"random:seed{cfg.seed}", random=True,
                               random_reason="no pretrained weights were given")
    looks_like_path = os.sep in p or p.endswith((".safetensors", ".pt", ".pth", ".bin")) or os.path.exists(p)
    if looks_like_path:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"CLIP weights file not found: {p}")
        flagged = safetensors_metadata(p).get(RANDOM_INIT_METADATA_KEY) == "true"
        return ResolvedWeights(cfg.model, p, f"file:{sha256_file(p)}", random=flagged,
                               random_reason=f"{os.path.basename(p)} is flagged as random weights" if flagged else "")

    tag_cfg = get_pretrained_cfg(arch, p)
    if not tag_cfg:
        raise ValueError(
            f"{p!r} is neither a weights file nor a known pretrained tag of {arch} "
            f"(tags: {list_pretrained_tags_by_model(arch)})"
        )
    extra = dict(
        force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        force_preprocess_cfg={k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        or None,
    )
    local = None
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: "org/repo/" -> default file names, "org/repo/file.bin" -> that file
        repo, fn = (hub[:-1], "") if hub.endswith("/") else os.path.split(hub)
        names = [fn] if fn else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if fn.endswith((".bin", ".pth")):
            names = [fn[:-4] + ".safetensors", fn]
        local = _cached_hub_file(repo, names, cfg.cache_dir)
    if local is None and tag_cfg.get("url"):
        cand = os.path.join(cfg.cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(tag_cfg["url"]))
        local = cand if os.path.isfile(cand) else None
    if local is not None:
        return ResolvedWeights(cfg.model, local, f"tag:{arch}/{p}", **extra)
    if _hub_offline() or not cfg.allow_download:
        why = "HF_HUB_OFFLINE is set" if _hub_offline() else "downloading is off (allow_download=False)"
        raise WeightsUnavailableError(
            f"CLIP weights {arch}/{p} are not on this machine and {why}. " + _how_to_provide(arch, p)
        )
    return ResolvedWeights(cfg.model, p, f"tag:{arch}/{p}", **extra)  # open_clip downloads the tag


class FrozenCLIP:
    """Frozen open_clip towers: ``encode_text`` / ``encode_images`` -> unit float32 embeddings."""

    def __init__(self, config: VLMConfig) -> None:
        import open_clip
        import torch

        self.config = config
        self.resolved = resolve_weights(config)
        r = self.resolved
        kwargs: Dict[str, Any] = {}
        if r.force_quick_gelu:
            kwargs["force_quick_gelu"] = True
        if r.force_preprocess_cfg:
            kwargs["force_preprocess_cfg"] = r.force_preprocess_cfg
        with torch.random.fork_rng(devices=[]):  # seeded random init without touching the global RNG
            torch.manual_seed(config.seed)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    r.model_name, pretrained=r.pretrained, device=config.device, cache_dir=config.cache_dir, **kwargs
                )
            except Exception as exc:  # safetensors / torch errors on a cut or foreign file never say which file
                if r.pretrained is None or not Path(r.pretrained).is_file():
                    raise
                raise WeightsUnreadableError(
                    f"CLIP weights {r.pretrained} cannot be loaded into {r.model_name} "
                    f"({type(exc).__name__}: {exc}); the file is truncated, corrupt or of another model"
                ) from exc
        model.eval().requires_grad_(False)
        self.model = model
        self.preprocess = preprocess
        from clip2_core.image_preprocess import tensor_transform

        # the same transform on tensors (9x faster on camera crops; None: a custom one, PIL path kept)
        self._tensor_preprocess = tensor_transform(preprocess)
        self.tokenizer = open_clip.get_tokenizer(r.model_name)
        self.device = torch.device(config.device)
        if not r.random and logit_scale_at_init(model):
            r.random = True
            r.random_reason = "its logit_scale still has open_clip's initial value: the weights were never trained"
        if r.random and r.pretrained is None and r.weights_id.startswith("random:"):
            sd = model.state_dict()
            h = hashlib.sha256()
            for k in sorted(sd):
                h.update(k.encode())
                h.update(sd[k].detach().cpu().float().numpy().tobytes())
            r.weights_id = f"random:{h.hexdigest()}"
        if r.random:  # callers that label things refuse this unless allowed (recognition.check_clip), loudly
            log.info(
                "CLIP model %s has RANDOM weights (%s): its labels are NOT zero-shot "
                "results. Pass pretrained=<tag or file> or a local-dir: model for real CLIP.",
                config.model, r.random_reason,
            )
        with torch.no_grad():
            self.embed_dim = int(self._encode_tokens(self.tokenizer(["a"])).shape[1])

    @property
    def weights_id(self) -> str:
        return self.resolved.weights_id

    @property
    def is_random(self) -> bool:
        """True for random weights: none given, a file flagged as random, or an untrained logit_scale."""
        return bool(self.resolved.random)

    @property
    def random_reason(self) -> str:
        return self.resolved.random_reason

    @property
    def logit_scale(self) -> float:
        """CLIP's trained softmax temperature ``exp(logit_scale)`` (100 for OpenAI CLIP)."""
        ls = getattr(self.model, "logit_scale", None)
        return float(ls.detach().float().exp().reshape(-1)[0]) if ls is not None else 100.0

    @property
    def identity(self) -> Dict[str, Any]:
        """JSON-able description of the model and weights (stored in checkpoints and every output)."""
        return {"model": self.config.model, "pretrained": self.config.pretrained, "weights_id": self.weights_id,
                "embed_dim": self.embed_dim, "random": self.is_random}

    def _encode_tokens(self, tokens: Any) -> Any:
        import torch

        feats = self.model.encode_text(tokens.to(self.device))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """``(N, D)`` float32 unit embeddings of ``texts``."""
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                out.append(self._encode_tokens(self.tokenizer(texts[i : i + batch_size])).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_images(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """``(N, D)`` float32 unit embeddings of ``images`` (each ``(h, w, 3)`` uint8 RGB), batched."""
        import torch
        from PIL import Image

        if len(images) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                batch = []
                for im in images[i : i + batch_size]:
                    arr = np.asarray(im)
                    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
                        raise ValueError(f"images must be (h, w, 3) uint8 RGB, got shape {arr.shape}")
                    if self._tensor_preprocess is not None:
                        batch.append(self._tensor_preprocess(arr.astype(np.uint8, copy=False)))
                    else:
                        batch.append(self.preprocess(Image.fromarray(arr.astype(np.uint8), "RGB")))
                x = torch.stack(batch).to(self.device)
                feats = self.model.encode_image(x)
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode_crops(self, image: np.ndarray, boxes_xyxy: np.ndarray, pad_frac: float = 0.1,
                     batch_size: int = 64) -> np.ndarray:
        """Embed crops of one ``(H, W, 3)`` image at ``(M, 4)`` pixel boxes -> ``(M, D)``."""
        return self.encode_images(crop_boxes(image, boxes_xyxy, pad_frac), batch_size=batch_size)


def crop_boxes(image: np.ndarray, boxes_xyxy: np.ndarray, pad_frac: float = 0.1) -> List[np.ndarray]:
    """Crops of ``image`` ``(H, W, 3)`` at ``(M, 4)`` boxes ``[x0, y0, x1, y1]``, each grown by
    ``pad_frac`` of its size on every side (context helps CLIP) and clipped to the image."""
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"image must be (H, W, 3), got {img.shape}")
    h, w = img.shape[:2]
    crops = []
    for x0, y0, x1, y1 in np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4):
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"degenerate box {[x0, y0, x1, y1]}")
        px, py = pad_frac * (x1 - x0), pad_frac * (y1 - y0)
        a0, b0 = int(max(0, np.floor(x0 - px))), int(max(0, np.floor(y0 - py)))
        a1, b1 = int(min(w, np.ceil(x1 + px))), int(min(h, np.ceil(y1 + py)))
        if a1 <= a0 or b1 <= b0:
            raise ValueError(f"box {[x0, y0, x1, y1]} lies outside the {w}x{h} image")
        crops.append(img[b0:b1, a0:a1])
    return crops


@dataclass
class TextBank:
    """Text embeddings of a vocabulary under a prompt ensemble."""

    classnames: List[str]  # (V,) vocabulary, in row order
    embeddings: np.ndarray  # (V, D) float32, L2-normalised
    templates: Tuple[str, ...]
    model: str  # CLIP model name
    weights_id: str  # CLIP weights identity

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.shape[0] != len(self.classnames):
            raise ValueError(f"{len(self.classnames)} class names but {self.embeddings.shape[0]} embeddings")

    @property
    def key(self) -> str:
        return text_bank_key(self.model, self.weights_id, self.templates, self.classnames)

    def index(self, label: str) -> int:
        try:
            return self.classnames.index(label)
        except ValueError:
            raise KeyError(f"{label!r} is not in the vocabulary ({len(self.classnames)} names)") from None

    def save(self, path: Union[str, Path]) -> None:
        """Write ``<path>.npy`` (embeddings) and ``<path>.json`` (metadata), atomically."""
        from clip2_core.fileio import atomic_write_bytes, atomic_write_json
        import io

        base = Path(path)
        buf = io.BytesIO()
        np.save(buf, self.embeddings, allow_pickle=False)
        atomic_write_bytes(base.with_suffix(".npy"), buf.getvalue())
        atomic_write_json(base.with_suffix(".json"), {
            "classnames": self.classnames, "templates": list(self.templates), "model": self.model,
            "weights_id": self.weights_id, "key": self.key, "shape": list(self.embeddings.shape)})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TextBank":
        base = Path(path)
        meta = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
        emb = np.load(base.with_suffix(".npy"), allow_pickle=False)
        bank = cls(meta["classnames"], emb, tuple(meta["templates"]), meta["model"], meta["weights_id"])
        if bank.key != meta.get("key"):
            raise ValueError(f"text bank {base} does not match its recorded key (corrupt or edited)")
        return bank


def text_bank_key(model: str, weights_id: str, templates: Sequence[str], classnames: Sequence[str]) -> str:
    """sha256 over (model, weights identity, templates, vocabulary) — the cache key."""
    blob = json.dumps({"model": model, "weights": weights_id, "templates": list(templates),
                       "vocabulary": list(classnames)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def template_problem(template: str) -> Optional[str]:
    """Why ``template`` cannot make a prompt (``template.format(label)``), or None when it can.

    Exactly one ``{}`` for the label; any other brace must be doubled (``{{``); ``'{} and {}'``,
    ``'{0}'``, ``'{name}'`` and a lone ``'{'`` are refused here rather than when the text bank is built.
    """
    import string

    if not isinstance(template, str):
        return f"not a string ({type(template).__name__})"
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"not a format string ({exc}); write a literal brace as '{{{{' or '}}}}'"
    if fields != [""]:
        if not fields:
            return "has no '{}' for the label"
        return f"needs exactly one '{{}}' for the label and no other field, has {['{' + f + '}' for f in fields]}"
    try:
        template.format("label")
    except (ValueError, IndexError, KeyError) as exc:  # e.g. '{:d}'
        return f"cannot take a label ({type(exc).__name__}: {exc})"
    return None


def build_text_bank(
    clip: FrozenCLIP,
    vocabulary: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    cache_dir: Optional[Union[str, Path]] = None,
) -> TextBank:
    """Embed ``vocabulary`` with the prompt ensemble, reading/writing ``cache_dir`` when given."""
    names = [str(v).strip() for v in vocabulary]
    if not names or any(not n for n in names):
        raise ValueError("vocabulary must be a non-empty list of non-empty names")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"vocabulary has duplicates: {dup}")
    templates = tuple(templates)
    if not templates:
        raise ValueError("the prompt template list is empty")
    bad = [f"{t!r}: {why}" for t in templates if (why := template_problem(t))]
    if bad:
        raise ValueError(f"unusable prompt template(s): {'; '.join(bad)}")
    key = text_bank_key(clip.config.model, clip.weights_id, templates, names)
    path = Path(cache_dir) / f"textbank-{key[:24]}" if cache_dir is not None else None
    if path is not None and path.with_suffix(".npy").is_file() and path.with_suffix(".json").is_file():
        try:
            bank = TextBank.load(path)
            if bank.key == key:
                log.debug("text bank cache hit %s", path)
                return bank
        except (ValueError, KeyError, OSError) as exc:
            log.warning("ignoring unreadable text bank cache %s: %s", path, exc)
    prompts = [t.format(n) for n in names for t in templates]
    emb = clip.encode_text(prompts).reshape(len(names), len(templates), -1).mean(axis=1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    bank = TextBank(names, emb.astype(np.float32), templates, clip.config.model, clip.weights_id)
    if path is not None:
        bank.save(path)
    return bank
