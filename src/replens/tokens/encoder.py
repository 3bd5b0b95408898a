"""The Visual Token Encoder with ranked additive attention (paper section 6.4.2).

Each sample ``T_i = {I} u V u U`` is embedded as

* ``I``: a 3-layer MLP with ReLU (the paper's projection of the concatenated
  segmenter features) plus the type embedding ``p_l``;
* ``v in V``: a linear projection of the mask embedding plus ``p_v`` (plus a
  linear embedding of the object's box, see below);
* ``u in U``: a linear projection of the relation text embedding plus ``p_u``;

and run through a standard pre-norm transformer (:class:`TransformerBlock`) whose self-attention logits
get, in every head, the learned bias of Eq. 6.1's ranks::

    bias = [0, cumsum(exp(w))]      (w in R^7, so bias in R^8, bias[0] = 0)
    logits[h] = q_h k_h^T / sqrt(d) + bias[A_i]        for every head h

PyTorch's ``nn.MultiheadAttention`` takes a 3-D float mask of shape
``(B * heads, L, L)`` whose row ``b * heads + h`` belongs to sample ``b``. The
authors' code builds it with ``mask.repeat(heads, 1, 1)``, which puts sample
``(b * heads + h) mod B`` there, i.e. other samples' masks whenever the batch
has more than one sample; :func:`per_head_mask` uses ``repeat_interleave``
so that every head of sample ``b`` sees ``A_b``. A key padding mask removes
padded positions, and the pooled output (mean over the sample's tokens, by
default) is projected to the joint embedding size.

Box embedding (our addition, on by default): SEEM's mask embeddings carry the
object's location; mask-pooled backbone features do not, so the normalised box
``(x0, y0, x1, y1, cx, cy, w, h)`` is embedded linearly and added to each
tangible token. ``box_embedding=False`` follows the text literally.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from replens.tokens.cache import TokenBatch
from replens.tokens.sample import CONTEXT_LENGTH, MAX_RANK

__all__ = [
    "PRESETS",
    "RankBias",
    "TokenEncoderConfig",
    "TransformerBlock",
    "VisualTokenEncoder",
    "box_features",
    "per_head_mask",
    "preset_config",
]

#: Width, layers and heads of the named presets. ``paper`` is the paper's
#: setting (section 6.5.1); the others are for CPUs.
PRESETS: dict[str, tuple[int, int, int]] = {
    "paper": (512, 8, 8),
    "small": (256, 6, 8),
    "cpu": (128, 4, 4),
    "tiny": (32, 2, 2),
}


@dataclass(frozen=True)
class TokenEncoderConfig:
    """Architecture of the Visual Token Encoder (and of the matched ViT baseline).

    Attributes:
        width: Transformer width (512 in the paper).
        layers: Transformer layers (8).
        heads: Attention heads (8).
        mlp_ratio: Feed-forward size over width.
        dropout: Dropout in the transformer layers.
        embed_dim: Output size (the text tower's joint embedding size).
        additive_attention: Add the learned rank biases of Eq. 6.1 to the
            attention logits (False: the paper's ablation).
        box_embedding: Add a linear embedding of each object's box to its token (see module docs).
        pool: ``"mean"`` over the sample's tokens (the authors' code averages
            over positions; here padding is left out) or ``"image"`` (the ``I`` token).
        context_length: Longest token sequence (77).
        image_mlp_layers: Layers of the MLP on ``I`` (3).
    """

    width: int = 512
    layers: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    embed_dim: int = 512
    additive_attention: bool = True
    box_embedding: bool = True
    pool: str = "mean"
    context_length: int = CONTEXT_LENGTH
    image_mlp_layers: int = 3

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.pool not in ("mean", "image"):
            raise ValueError(f"pool must be 'mean' or 'image', got {self.pool!r}")
        if self.image_mlp_layers < 1:
            raise ValueError("image_mlp_layers must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def preset_config(preset: str, **overrides: Any) -> TokenEncoderConfig:
    """A :class:`TokenEncoderConfig` from a preset name (``paper``, ``small``, ``cpu``, ``tiny``).

    ``overrides`` set any field; ``None`` values are ignored.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    width, layers, heads = PRESETS[preset]
    config = TokenEncoderConfig(width=width, layers=layers, heads=heads)
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


class RankBias(nn.Module):
    """The learned rank weights of section 6.4.2: ``bias = [0, cumsum(exp(w))]``.

    The first entry (rank 0: no relation) is fixed at 0 and each higher rank
    adds a positive step ``exp(w_r)``, so the biases grow with the rank. ``w``
    starts at 0, i.e. the bias of rank ``r`` starts at ``r``.

    Args:
        max_rank: Highest rank (7).
    """

    def __init__(self, max_rank: int = MAX_RANK) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_rank))

    def table(self) -> torch.Tensor:
        """(max_rank + 1,) biases, entry 0 equal to 0."""
        return torch.cat([self.weight.new_zeros(1), torch.cumsum(torch.exp(self.weight), dim=0)])

    def forward(self, ranks: torch.Tensor) -> torch.Tensor:
        """Biases of a rank matrix.

        Shape:
            - Input: (B, L, L) int64 ranks in ``0..max_rank``
            - Output: (B, L, L) float
        """
        return self.table()[ranks]


def per_head_mask(bias: torch.Tensor, heads: int) -> torch.Tensor:
    """Expand per-sample biases to ``nn.MultiheadAttention``'s (B * heads, L, L) layout.

    Row ``b * heads + h`` holds sample ``b``'s bias for head ``h`` (every head
    gets the same bias), the order ``nn.MultiheadAttention`` uses when it
    views the mask as ``(B, heads, L, L)``. ``bias.repeat(heads, 1, 1)`` (the
    authors' code) would put sample ``(b * heads + h) % B`` there.

    Shape:
        - Input: (B, L, L)
        - Output: (B * heads, L, L)
    """
    return bias.repeat_interleave(heads, dim=0)


def box_features(boxes: torch.Tensor) -> torch.Tensor:
    """``(x0, y0, x1, y1, cx, cy, w, h)`` of normalised boxes.

    Shape:
        - Input: (..., 4)
        - Output: (..., 8)
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([x0, y0, x1, y1, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


class TransformerBlock(nn.Module):
    """A pre-norm transformer block: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))`` (GELU).

    ``nn.TransformerEncoderLayer`` is not used because its inference fast path
    (eval mode without gradients) mishandles 3-D float attention masks in
    torch 2.x: its outputs differ from training mode's or are NaN (see
    ``tests/tokens/test_encoder.py``). ``nn.MultiheadAttention`` itself handles them.

    Args:
        width: Model width.
        heads: Attention heads.
        mlp_ratio: Feed-forward size over width.
        dropout: Dropout on attention weights, attention output and MLP.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(round(mlp_ratio * width))
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """One block.

        Shape:
            - x: (B, L, width); attn_mask: (B * heads, L, L) float or None;
              key_padding_mask: (B, L) float (``-inf`` at padding) or None
            - Output: (B, L, width)
        """
        h = self.norm1(x)
        att, _ = self.attn(h, h, h, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)
        x = x + self.dropout(att)
        return x + self.dropout(self.mlp(self.norm2(x)))


def _mlp(in_dim: int, width: int, layers: int) -> nn.Sequential:
    modules: list[nn.Module] = [nn.LayerNorm(in_dim)]
    dim = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(dim, width), nn.ReLU()]
        dim = width
    modules.append(nn.Linear(dim, width))
    return nn.Sequential(*modules)


class VisualTokenEncoder(nn.Module):
    """``f(.)`` of the paper's Figure 6.1: visual tokens in, one image embedding ``s`` out.

    Inputs of every type go through a LayerNorm first (our choice: the
    extractors' feature scales differ by orders of magnitude).

    Args:
        config: Architecture.
        image_dim: ``d_i``, size of ``I``.
        tangible_dim: ``d_v``, size of each ``v``.
        intangible_dim: ``d_u``, size of each ``u``.
    """

    def __init__(self, config: TokenEncoderConfig, image_dim: int, tangible_dim: int, intangible_dim: int) -> None:
        super().__init__()
        self.config = config
        self.dims = {"image": int(image_dim), "tangible": int(tangible_dim), "intangible": int(intangible_dim)}
        width = config.width
        self.image_mlp = _mlp(image_dim, width, config.image_mlp_layers)
        self.tangible_proj = nn.Sequential(nn.LayerNorm(tangible_dim), nn.Linear(tangible_dim, width))
        self.intangible_proj = nn.Sequential(nn.LayerNorm(intangible_dim), nn.Linear(intangible_dim, width))
        self.box_proj = nn.Linear(8, width) if config.box_embedding else None
        #: Type embeddings p_l, p_v, p_u (rows 0, 1, 2).
        self.type_embedding = nn.Parameter(torch.randn(3, width) * 0.02)
        self.rank_bias = RankBias() if config.additive_attention else None
        self.transformer = nn.ModuleList(
            [TransformerBlock(width, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.layers)]
        )
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, config.embed_dim, bias=False)

    def embed(self, batch: TokenBatch) -> torch.Tensor:
        """Token embeddings with type embeddings, in sequence order.

        Shape:
            - Output: (B, L, width)
        """
        image = self.image_mlp(batch.image_features) + self.type_embedding[0]
        tangible = self.tangible_proj(batch.tangible) + self.type_embedding[1]
        if self.box_proj is not None:
            tangible = tangible + self.box_proj(box_features(batch.boxes))
        intangible = self.intangible_proj(batch.intangible) + self.type_embedding[2]
        stacked = torch.cat([image[:, None], tangible, intangible], dim=1)
        index = batch.gather_index[..., None].expand(-1, -1, stacked.shape[-1])
        return stacked.gather(1, index)

    def attention_bias(self, batch: TokenBatch) -> torch.Tensor | None:
        """The additive attention mask (B * heads, L, L), or None without additive attention."""
        if self.rank_bias is None:
            return None
        return per_head_mask(self.rank_bias(batch.ranks), self.config.heads)

    def forward_tokens(self, batch: TokenBatch) -> torch.Tensor:
        """Transformer outputs after the final LayerNorm.

        Shape:
            - Output: (B, L, width)
        """
        x = self.embed(batch)
        mask = self.attention_bias(batch)
        if mask is not None:
            mask = mask.to(x.dtype)
        padding = torch.zeros(batch.padding.shape, dtype=x.dtype, device=x.device).masked_fill(
            batch.padding, float("-inf")
        )
        for block in self.transformer:
            x = block(x, mask, padding)
        return self.ln_final(x)

    def forward(self, batch: TokenBatch) -> torch.Tensor:
        """Image embeddings ``s`` (not normalised).

        Shape:
            - Output: (B, embed_dim)
        """
        x = self.forward_tokens(batch)
        if self.config.pool == "image":
            pooled = x[:, 0]
        else:
            valid = (~batch.padding).to(x.dtype)[..., None]
            pooled = (x * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        return self.projection(pooled)
