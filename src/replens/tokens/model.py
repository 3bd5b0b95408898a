"""Image-side encoders and the dual (image, text) model trained CLIP-style (paper sections 6.4.2, 6.5.1).

One :class:`DualEncoder` pairs a VL model's text tower ``g(.)`` (fine-tuned
alongside, as the paper fine-tunes CLIP's text encoder) with one of four image
sides, all trained by the same loop (:mod:`replens.tokens.train`):

* ``tokens``: the Visual Token Encoder with ranked additive attention;
* ``tokens-no-attn``: the same without the rank biases (the paper's ablation);
* ``vit``: a patch ViT of the same width, depth and heads trained from scratch
  (the paper's ViT-s/16 baseline; timm's ``VisionTransformer``);
* ``vl-image``: the VL model's own image tower, fine-tuned (the paper's CLIP FT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from replens.models.weights import WeightsError, read_checkpoint, save_checkpoint
from replens.tokens.cache import TokenBatch
from replens.tokens.encoder import TokenEncoderConfig, VisualTokenEncoder
from replens.vl import VLModel, load_vl_model

__all__ = [
    "ENCODERS",
    "DualEncoder",
    "PatchViTEncoder",
    "build_dual_encoder",
    "load_token_model",
    "save_token_model",
]

#: Image sides the trainer knows.
ENCODERS: dict[str, str] = {
    "tokens": "Visual Token Encoder with ranked additive attention (section 6.4.2)",
    "tokens-no-attn": "Visual Token Encoder without additive attention (the paper's ablation)",
    "vit": "patch ViT of matched width/depth/heads, from scratch (the paper's ViT-s/16)",
    "vl-image": "the VL model's own image tower, fine-tuned (the paper's CLIP FT)",
}
MODEL_FORMAT = "replens-token-model-1"


class PatchViTEncoder(nn.Module):
    """A patch ViT (timm ``VisionTransformer``) with a linear projection to the joint space.

    Args:
        config: Width, layers, heads, mlp_ratio and dropout are taken from here
            (matching the Visual Token Encoder); ``embed_dim`` is the output size.
        image_size: Input side (images of another size are resized).
        patch_size: Patch side.
        mean: Input normalisation mean (RGB).
        std: Input normalisation std.
    """

    def __init__(
        self,
        config: TokenEncoderConfig,
        image_size: int,
        patch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=config.width,
            depth=config.layers,
            num_heads=config.heads,
            mlp_ratio=config.mlp_ratio,
            num_classes=0,
            global_pool="token",
            drop_rate=config.dropout,
            attn_drop_rate=config.dropout,
        )
        self.projection = nn.Linear(config.width, config.embed_dim, bias=False)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (not normalised).

        Shape:
            - Input: (B, 3, H, W) uint8, or float in [0, 1]
            - Output: (B, embed_dim)
        """
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        x = (x - self.pixel_mean) / self.pixel_std
        return self.projection(self.vit(x))


class DualEncoder(nn.Module):
    """An image side and a VL model's text tower, aligned by a CLIP loss.

    Args:
        kind: One of :data:`ENCODERS`.
        vl: The :class:`~replens.vl.VLModel` whose text tower (and, for
            ``vl-image``, image tower) is fine-tuned; its ``logit_scale`` is the temperature.
        image_encoder: The image side (None for ``vl-image``).
    """

    def __init__(self, kind: str, vl: Any, image_encoder: nn.Module | None) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise KeyError(f"unknown encoder {kind!r}; choose from {sorted(ENCODERS)}")
        if (image_encoder is None) != (kind == "vl-image"):
            raise ValueError(f"encoder {kind!r} {'needs' if kind != 'vl-image' else 'takes no'} image_encoder")
        self.kind = kind
        self.vl = vl
        self.image_encoder = image_encoder

    @property
    def uses_tokens(self) -> bool:
        """Whether the image side reads visual tokens (else images)."""
        return self.kind in ("tokens", "tokens-no-attn")

    @property
    def logit_scale(self) -> torch.Tensor:
        """The learned log inverse temperature (the VL model's)."""
        return self.vl.model.logit_scale

    def encode_image(
        self, tokens: TokenBatch | None = None, images: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Image embeddings from tokens (token encoders) or uint8 images (the others).

        Shape:
            - tokens: a :class:`TokenBatch` of B samples; images: (B, 3, H, W) uint8
            - Output: (B, embed_dim)
        """
        if self.uses_tokens:
            if tokens is None:
                raise ValueError(f"encoder {self.kind!r} needs visual tokens")
            out = self.image_encoder(tokens)
        else:
            if images is None:
                raise ValueError(f"encoder {self.kind!r} needs images")
            if self.kind == "vit":
                out = self.image_encoder(images)
            else:
                out = self.vl.encode_image(images, normalize=False)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, text_tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings ``t`` of token ids (B, context_length)."""
        return self.vl.encode_text(text_tokens, normalize=normalize)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """What the CLIP loss trains: the image side, the text tower and the temperature.

        The VL model's image tower is left out unless it is the image side.
        """
        params = []
        for name, p in self.vl.model.named_parameters():
            if self.kind == "vl-image" or not name.startswith("visual."):
                params.append((f"vl.model.{name}", p))
        if self.image_encoder is not None:
            params += [(f"image_encoder.{n}", p) for n, p in self.image_encoder.named_parameters()]
        return params


def build_dual_encoder(
    kind: str,
    vl: Any,
    config: TokenEncoderConfig,
    *,
    dims: dict[str, int] | None = None,
    image_size: int | None = None,
    patch_size: int = 4,
) -> DualEncoder:
    """Build one of the four setups of section 6.5.1 around ``vl``.

    Args:
        kind: One of :data:`ENCODERS`.
        vl: The VL model (its ``embed_dim`` sets the output size).
        config: Architecture of the token encoder / ViT (``embed_dim`` and
            ``additive_attention`` are set from ``vl`` and ``kind``).
        dims: Token feature sizes (token encoders): ``{"image", "tangible", "intangible"}``.
        image_size: ViT input side.
        patch_size: ViT patch side.
    """
    from dataclasses import replace

    config = replace(config, embed_dim=int(vl.embed_dim))
    if kind in ("tokens", "tokens-no-attn"):
        if not dims:
            raise ValueError(f"encoder {kind!r} needs the token feature sizes (dims)")
        config = replace(config, additive_attention=kind == "tokens")
        image_encoder: nn.Module | None = VisualTokenEncoder(
            config, dims["image"], dims["tangible"], dims["intangible"]
        )
    elif kind == "vit":
        if not image_size:
            raise ValueError("encoder 'vit' needs image_size")
        image_encoder = PatchViTEncoder(config, image_size, patch_size, vl.mean, vl.std)
    elif kind == "vl-image":
        image_encoder = None
    else:
        raise KeyError(f"unknown encoder {kind!r}; choose from {sorted(ENCODERS)}")
    return DualEncoder(kind, vl, image_encoder)


def _vl_meta(vl: Any, spec: str | None) -> dict[str, Any]:
    return {
        "name": vl.name,
        "spec": spec,
        "open_clip_config": vl.config,
        "image_size": vl.image_size,
        "mean": list(vl.mean),
        "std": list(vl.std),
        "context_length": vl.context_length,
    }


def save_token_model(
    path: str | Path,
    model: DualEncoder,
    config: TokenEncoderConfig,
    *,
    dims: dict[str, int] | None = None,
    image_size: int | None = None,
    patch_size: int = 4,
    vl_spec: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a trained :class:`DualEncoder` (safetensors, with what rebuilds it in the header)."""
    meta = {
        "format": MODEL_FORMAT,
        "kind": model.kind,
        "encoder_config": config.to_dict(),
        "dims": dims,
        "image_size": image_size,
        "patch_size": patch_size,
        "vl": _vl_meta(model.vl, vl_spec),
        **(extra or {}),
    }
    return save_checkpoint(path, model.state_dict(), meta)


def _rebuild_vl(meta: dict[str, Any], path: Path) -> Any:
    config = meta.get("open_clip_config")
    if config is not None:
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer

        model = open_clip.CLIP(**config)
        return VLModel(
            model,
            SimpleTokenizer(context_length=int(meta["context_length"])),
            image_size=int(meta["image_size"]),
            mean=meta["mean"],
            std=meta["std"],
            name=str(meta["name"]),
            config=config,
        )
    if not meta.get("spec"):
        raise WeightsError(f"{path}: the VL model has neither an open_clip config nor a spec to rebuild it from")
    return load_vl_model(meta["spec"], train_if_missing=False, progress=False)


def load_token_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[DualEncoder, dict[str, Any]]:
    """Rebuild a model written by :func:`save_token_model` (safetensors, no pickles).

    Returns:
        ``(model, meta)`` with the model in eval mode on ``device``.

    Raises:
        WeightsError: Missing file, not a token model, or weights that do not match.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    state, meta = read_checkpoint(path)
    if meta.get("format") != MODEL_FORMAT:
        raise WeightsError(f"{path} is not a token model (format {meta.get('format')!r}, expected {MODEL_FORMAT!r})")
    vl = _rebuild_vl(meta["vl"], path)
    config = TokenEncoderConfig(**meta["encoder_config"])
    model = build_dual_encoder(
        meta["kind"],
        vl,
        config,
        dims=meta.get("dims"),
        image_size=meta.get("image_size"),
        patch_size=int(meta.get("patch_size") or 4),
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not match the saved architecture: {exc}") from None
    return model.to(device).eval(), meta
