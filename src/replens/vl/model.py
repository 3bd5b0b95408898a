"""A vision-language model behind one small interface: :class:`VLModel`.

FALCON (paper section 4.2.1) needs a CLIP-like model with an image encoder
``g_im`` and a text encoder ``g_tx`` whose L2-normalised outputs are compared
by cosine similarity. :class:`VLModel` wraps any open_clip ``CLIP`` together
with its tokenizer and preprocessing, so callers never touch open_clip
directly::

    from replens.vl import load_vl_model

    vl = load_vl_model("ViT-B-32:openai")            # open_clip weights (downloaded on first use)
    vl = load_vl_model("hf-hub:org/repo")            # an open_clip model published on the Hugging Face hub
    vl = load_vl_model("runs/vl/model.safetensors")  # a checkpoint written by `replens vl train`
    vl = load_vl_model()                             # the embedded tiny CLIP (trained on demand)

    image_emb = vl.embed_images(uint8_images)        # (B, k) float32, L2-normalised
    text_emb = vl.embed_texts(["a red circle"])      # (1, k)

An open_clip tag's weights and an ``hf-hub:`` model (``open_clip_config.json``
plus ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``, the
layout open_clip publishes and :meth:`VLModel.save_open_clip` writes) are
read from the standard caches (the Hugging Face hub cache or ``~/.cache/clip``)
and downloaded there on first use by :mod:`replens.hub`; with
``REPLENS_OFFLINE=1`` a missing file raises one error naming where it was
looked for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from replens.hub import fetch_hf, fetch_hf_any
from replens.models.backbone import unit_images
from replens.models.open_clip_backbone import open_clip_pretrained, require_open_clip_model
from replens.models.weights import WeightsError, read_checkpoint, save_checkpoint
from replens.runs import atomic_write_json

__all__ = [
    "VL_FORMAT",
    "VLModel",
    "file_fingerprint",
    "load_hf_open_clip",
    "load_open_clip",
    "load_open_clip_folder",
    "load_vl_checkpoint",
]

#: File names of an open_clip model folder (its Hugging Face hub layout).
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

#: ``format`` value in the metadata of checkpoints written by :meth:`VLModel.save`.
VL_FORMAT = "replens-vl"


class VLModel(nn.Module):
    """An open_clip CLIP model with its tokenizer and image preprocessing.

    Args:
        model: An ``open_clip.CLIP`` (or any module with ``encode_image``,
            ``encode_text`` and ``logit_scale``).
        tokenizer: Callable mapping a list of strings to (B, L) token ids
            (open_clip's tokenizer).
        image_size: Square input side of the image tower.
        mean: Per-channel normalisation mean (RGB, images in [0, 1]).
        std: Per-channel normalisation std.
        name: A readable name (``"tiny-clip"``, ``"ViT-B-32:openai"``).
        config: The open_clip model configuration (``embed_dim``,
            ``vision_cfg``, ``text_cfg``) when known; saved with the weights.
        fingerprint: A string that identifies the weights (used as a cache key
            for caption banks).

    Attributes:
        embed_dim: Size ``k`` of the joint embedding space.
        context_length: Token context length of the text tower.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        name: str,
        config: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.name = name
        self.config = config
        self.fingerprint = fingerprint or name
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        proj = getattr(model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            self.embed_dim = int(proj.shape[-1])
        else:
            visual = getattr(model, "visual", None)
            self.embed_dim = int(getattr(visual, "output_dim", 0))
        self.context_length = int(getattr(model, "context_length", getattr(tokenizer, "context_length", 77)))

    # ----------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def logit_scale(self) -> float:
        """The model's learned inverse temperature ``exp(logit_scale)``."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else 100.0

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length) from open_clip's tokenizer (on CPU)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and normalise images for the image tower.

        The shorter side is resized to ``image_size`` (bilinear, antialiased)
        and the centre square kept, as open_clip's preprocessing does.

        Args:
            images: uint8 in [0, 255] or float in [0, 1].

        Returns:
            Normalised float tensor on the model's device.

        Shape:
            - Input: (B, 3, H, W) or (3, H, W)
            - Output: (B, 3, image_size, image_size)
        """
        x = unit_images(images, self.device)
        h, w = x.shape[-2:]
        size = self.image_size
        if (h, w) != (size, size):
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            top, left = (nh - size) // 2, (nw - size) // 2
            x = x[..., top : top + size, left : left + size]
        return (x - self.pixel_mean) / self.pixel_std

    # ----------------------------------------------------------------- encoders
    def encode_image(self, images: torch.Tensor, normalize: bool = True, preprocess: bool = True) -> torch.Tensor:
        """Image embeddings ``g_im(x)`` (gradients flow; wrap in ``no_grad`` for inference).

        Args:
            images: Raw images (see :meth:`preprocess`) or, with
                ``preprocess=False``, already normalised inputs.
            normalize: L2-normalise each row.
            preprocess: Apply :meth:`preprocess` first.

        Shape:
            - Input: (B, 3, H, W)
            - Output: (B, embed_dim)
        """
        x = self.preprocess(images) if preprocess else images
        out = self.model.encode_image(x)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, texts: Sequence[str] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings ``g_tx(s)`` of strings or token ids (gradients flow).

        Shape:
            - Input: B strings or (B, context_length) token ids
            - Output: (B, embed_dim)
        """
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        out = self.model.encode_text(tokens.to(self.device))
        return F.normalize(out, dim=-1) if normalize else out

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings, batched, without gradients, float32 on CPU.

        Shape:
            - Input: (B, 3, H, W) uint8 or float in [0, 1]
            - Output: (B, embed_dim)
        """
        was_training = self.training
        self.eval()
        try:
            parts = [
                self.encode_image(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 512, progress: bool = False) -> torch.Tensor:
        """L2-normalised text embeddings, batched, without gradients, float32 on CPU.

        Shape:
            - Input: B strings
            - Output: (B, embed_dim)
        """
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        parts = []
        try:
            starts = range(0, len(texts), batch_size)
            for i in tqdm(starts, desc="encode text", unit="batch", disable=not progress, leave=False):
                parts.append(self.encode_text(list(texts[i : i + batch_size])).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, self.embed_dim)

    def forward(self, images: torch.Tensor, texts: Sequence[str] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (image, text) embeddings of a batch of pairs."""
        return self.encode_image(images), self.encode_text(texts)

    # ----------------------------------------------------------------- I/O
    def save(self, path: str | Path, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write the weights and everything needed to rebuild the model (safetensors).

        Only models with a known open_clip ``config`` can be saved this way.
        """
        if self.config is None:
            raise ValueError(f"VL model {self.name!r} has no open_clip config to save with its weights")
        meta = {
            "format": VL_FORMAT,
            "name": self.name,
            "open_clip_config": self.config,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "context_length": self.context_length,
            **(extra_meta or {}),
        }
        return save_checkpoint(path, self.model, meta)

    def save_open_clip(self, folder: str | Path) -> Path:
        """Write the model in open_clip's hub layout (``open_clip_config.json``, ``open_clip_model.safetensors``).

        The folder can be uploaded to the Hugging Face hub and loaded with
        ``load_vl_model("hf-hub:org/repo")`` (or open_clip's ``create_model("hf-hub:org/repo")``).

        Returns:
            The folder.
        """
        if self.config is None:
            raise ValueError(f"VL model {self.name!r} has no open_clip config to save with its weights")
        folder = Path(folder)
        preprocess = {"size": self.image_size, "mean": list(self.mean), "std": list(self.std)}
        save_checkpoint(folder / OPEN_CLIP_WEIGHTS[0], self.model.state_dict())
        atomic_write_json(folder / OPEN_CLIP_CONFIG, {"model_cfg": self.config, "preprocess_cfg": preprocess})
        return folder

    def extra_repr(self) -> str:
        return f"name={self.name!r}, embed_dim={self.embed_dim}, image_size={self.image_size}"


def file_fingerprint(path: str | Path) -> str:
    """A short sha256 of a file's bytes (identifies weights for caches)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


@lru_cache(maxsize=8)
def _open_clip_tokenizer(context_length: int) -> Any:
    """open_clip's BPE tokenizer (built once per context length: reading its merges takes a second)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def load_vl_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> VLModel:
    """Rebuild a :class:`VLModel` saved by :meth:`VLModel.save`.

    Args:
        path: The ``.safetensors`` file, or a folder holding ``model.safetensors``.
        device: Where to put the model.

    Raises:
        WeightsError: Missing file, or a file without replens VL metadata
            (for a plain open_clip checkpoint use ``load_vl_model("open_clip:NAME", weights=PATH)``).
    """
    import open_clip

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    state, meta = read_checkpoint(path)
    if meta.get("format") != VL_FORMAT or "open_clip_config" not in meta:
        raise WeightsError(
            f"{path} is not a replens VL checkpoint (no '{VL_FORMAT}' metadata); for open_clip weights pass "
            "the architecture too: --vl open_clip:<model> --vl-weights PATH"
        )
    config = meta["open_clip_config"]
    try:
        model = open_clip.CLIP(**json.loads(json.dumps(config)))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot build the open_clip model from its saved config: {exc}") from None
    missing = [k for k in model.state_dict() if k not in state]
    unexpected = [k for k in state if k not in model.state_dict()]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not match their config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.load_state_dict(state)
    tokenizer = _open_clip_tokenizer(int(meta.get("context_length", config["text_cfg"]["context_length"])))
    vl = VLModel(
        model,
        tokenizer,
        image_size=int(meta["image_size"]),
        mean=meta["mean"],
        std=meta["std"],
        name=str(meta.get("name", path.stem)),
        config=config,
        fingerprint=file_fingerprint(path),
    )
    return vl.to(device).eval()


def load_open_clip(spec: str, *, weights: str | Path | None = None, device: str | torch.device = "cpu") -> VLModel:
    """An open_clip model by name with its tag's weights (cached, downloaded on first use) or a file.

    Args:
        spec: ``<model>[:<pretrained tag>]``, e.g. ``ViT-B-32:openai`` (an
            optional ``open_clip:`` prefix is accepted).
        weights: A local checkpoint of the full CLIP model (excludes a tag).
        device: Where to put the model.

    Raises:
        KeyError: Unknown open_clip model.
        WeightsError: Neither a tag nor a weights file.
        replens.hub.DownloadError: The tag's weights are not cached and cannot be downloaded.
    """
    import open_clip

    spec = spec.removeprefix("open_clip:")
    model_name, _, tag = spec.partition(":")
    require_open_clip_model(model_name)
    if tag and weights is not None:
        raise ValueError(f"pass a pretrained tag ({tag!r}) or a weights file, not both")
    if not tag and weights is None:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsError(
            f"open_clip {model_name} needs weights: a pretrained tag (one of {tags}, "
            f"e.g. {model_name}:{tags[0] if tags else 'TAG'}) or a checkpoint file (--vl-weights PATH)"
        )
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    kwargs: dict[str, Any] = {}
    if tag:
        mean, std, checkpoint, kwargs["force_quick_gelu"] = open_clip_pretrained(model_name, tag)
        fingerprint = f"open_clip:{model_name}:{tag}"
    else:
        checkpoint = str(weights)
        if not Path(checkpoint).is_file():
            raise WeightsError(f"open_clip weights file not found: {checkpoint}")
        fingerprint = f"open_clip:{model_name}:{file_fingerprint(checkpoint)}"
    try:
        model = open_clip.create_model(model_name, pretrained=checkpoint, device="cpu", **kwargs)
    except RuntimeError as exc:  # key/shape mismatches from open_clip's loader
        raise WeightsError(f"cannot load {checkpoint} into open_clip {model_name}: {exc}") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    size = size[-1] if isinstance(size, tuple | list) else size
    vl = VLModel(
        model, tokenizer, image_size=int(size), mean=mean, std=std, name=spec, config=None, fingerprint=fingerprint
    )
    return vl.to(device).eval()


def load_open_clip_folder(
    config_file: str | Path, weights_file: str | Path, *, name: str, fingerprint: str, device: str | torch.device = "cpu"
) -> VLModel:
    """A :class:`VLModel` from open_clip's folder layout: ``open_clip_config.json`` and a weights file.

    Args:
        config_file: JSON with ``model_cfg`` (``embed_dim``, ``vision_cfg``,
            ``text_cfg``) and optional ``preprocess_cfg`` (``mean``, ``std``).
        weights_file: The CLIP state dict (safetensors or torch file).
        name: Readable name of the model.
        fingerprint: Identifies the weights (cache key of caption banks).
        device: Where to put the model.

    Raises:
        WeightsError: A config without ``model_cfg`` or weights that do not fit it.
    """
    import open_clip

    config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    model_cfg = config.get("model_cfg")
    if not isinstance(model_cfg, dict):
        raise WeightsError(f"{config_file}: no 'model_cfg' (not an open_clip model config)")
    model_cfg = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    try:
        model = open_clip.CLIP(**model_cfg)
        open_clip.load_checkpoint(model, str(weights_file))
    except (TypeError, RuntimeError, KeyError) as exc:
        raise WeightsError(f"cannot build open_clip model {name} from {config_file} and {weights_file}: {exc}") from None
    if model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
        tokenizer = open_clip.get_tokenizer(f"local-dir:{Path(config_file).parent}")
    else:
        tokenizer = _open_clip_tokenizer(int(model_cfg.get("text_cfg", {}).get("context_length", 77)))
    preprocess = config.get("preprocess_cfg", {})
    size = model.visual.image_size
    size = size[-1] if isinstance(size, tuple | list) else size
    vl = VLModel(
        model,
        tokenizer,
        image_size=int(size),
        mean=preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN),
        std=preprocess.get("std", open_clip.OPENAI_DATASET_STD),
        name=name,
        config=model_cfg,
        fingerprint=fingerprint,
    )
    return vl.to(device).eval()


def load_hf_open_clip(spec: str, *, device: str | torch.device = "cpu") -> VLModel:
    """An open_clip model published on the Hugging Face hub (``hf-hub:org/repo[@revision]``).

    Its ``open_clip_config.json`` and weights (``open_clip_model.safetensors``,
    else ``open_clip_pytorch_model.bin``) come from the hub cache, downloaded
    there on first use (:func:`replens.hub.fetch_hf`).

    Raises:
        replens.hub.DownloadError: Not cached and not downloadable.
        WeightsError: Files that are not an open_clip model.
    """
    repo, _, revision = spec.removeprefix("hf-hub:").partition("@")
    hint = "or pass a local checkpoint: --vl PATH"
    config_file = fetch_hf(repo, OPEN_CLIP_CONFIG, revision=revision or None, what=f"hf-hub:{repo} config", hint=hint)
    weights = fetch_hf_any(repo, list(OPEN_CLIP_WEIGHTS), revision=revision or None, what=f"hf-hub:{repo} weights",
                           hint=hint)
    commit = Path(weights).parent.name  # the snapshot folder is named by the commit
    return load_open_clip_folder(config_file, weights, name=f"hf-hub:{repo}", fingerprint=f"hf-hub:{repo}@{commit}",
                                 device=device)
