"""Image-text retrieval recall@K and the diagonal/off-diagonal similarity of seed section 6.5.2.

Text-to-image recall@K is the fraction of captions whose image is among the K
images most similar to it; image-to-text recall@K the fraction of images with
at least one of their captions among the K most similar captions (the COCO
convention for several captions per image). Similarities are cosines of
L2-normalised embeddings; a wrong item that ties with the best correct one
counts as ranked above it.

Identical caption strings of different images make retrieval ambiguous (two
scenes with the same description); :func:`caption_positives` counts any image
that carries the exact caption as a correct match.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["caption_positives", "retrieval_recall", "similarity_contrast"]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()


def caption_positives(texts: Sequence[str], image_captions: Sequence[Sequence[str]]) -> np.ndarray:
    """(n_texts, n_images) bool: image ``j`` carries caption string ``texts[i]``.

    Args:
        texts: The query captions.
        image_captions: Every caption of every image.
    """
    where: dict[str, list[int]] = {}
    for j, caps in enumerate(image_captions):
        for c in set(caps):
            where.setdefault(c, []).append(j)
    out = np.zeros((len(texts), len(image_captions)), dtype=bool)
    for i, t in enumerate(texts):
        out[i, where.get(t, [])] = True
    return out


def retrieval_recall(
    image_embeddings: np.ndarray | torch.Tensor,
    text_embeddings: np.ndarray | torch.Tensor,
    positives: np.ndarray | Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K in both directions, in percent.

    Args:
        image_embeddings: (n_images, k) (normalised here).
        text_embeddings: (n_texts, k) (normalised here).
        positives: (n_texts, n_images) bool matrix of correct pairs, or for
            each text the index of its image.
        ks: The K values.

    Returns:
        ``{"t2i_r1": ..., "i2t_r1": ..., ...}`` plus ``"n_images"`` and ``"n_texts"``.
        Images without any caption are left out of image-to-text recall.

    Raises:
        ValueError: Shapes that do not match, or a text without a correct image.
    """
    img = F.normalize(_as_tensor(image_embeddings), dim=-1)
    txt = F.normalize(_as_tensor(text_embeddings), dim=-1)
    n_img, n_txt = img.shape[0], txt.shape[0]
    pos = np.asarray(positives)
    if pos.ndim == 1:
        if len(pos) != n_txt:
            raise ValueError(f"{len(pos)} image indices for {n_txt} texts")
        if len(pos) and (pos.min() < 0 or pos.max() >= n_img):
            raise ValueError(f"image index out of range for {n_img} images")
        matrix = np.zeros((n_txt, n_img), dtype=bool)
        matrix[np.arange(n_txt), pos] = True
        pos = matrix
    if pos.shape != (n_txt, n_img):
        raise ValueError(f"positives has shape {pos.shape}, expected {(n_txt, n_img)}")
    if not pos.any(axis=1).all():
        raise ValueError(f"texts {np.nonzero(~pos.any(axis=1))[0][:5].tolist()} have no correct image")
    pos_t = torch.from_numpy(pos)
    sim = txt @ img.T  # (n_txt, n_img)
    out: dict[str, float] = {"n_images": float(n_img), "n_texts": float(n_txt)}
    # rank of the best correct item = number of wrong items scoring at least as high
    # (ties count against the model, so collapsed embeddings score 0, not 100)
    best_pos_t2i = sim.masked_fill(~pos_t, float("-inf")).max(dim=1).values
    rank_t2i = ((sim >= best_pos_t2i[:, None]) & ~pos_t).sum(dim=1)
    has_text = pos_t.any(dim=0)
    sim_i = sim.T[has_text]
    pos_i = pos_t.T[has_text]
    best_pos_i2t = sim_i.masked_fill(~pos_i, float("-inf")).max(dim=1).values
    rank_i2t = ((sim_i >= best_pos_i2t[:, None]) & ~pos_i).sum(dim=1)
    for k in ks:
        out[f"t2i_r{k}"] = float((rank_t2i < k).float().mean() * 100) if n_txt else float("nan")
        out[f"i2t_r{k}"] = float((rank_i2t < k).float().mean() * 100) if len(rank_i2t) else float("nan")
    return out


def similarity_contrast(
    image_embeddings: np.ndarray | torch.Tensor, text_embeddings: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """Mean cosine similarity of matched (diagonal) and unmatched (off-diagonal) image-text pairs.

    Row ``i`` of both inputs is a matched pair (Figure 6.4 of the seed plots
    both over training; the authors' code averages the diagonal and the
    off-diagonal entries of the image-text cosine matrix).

    Returns:
        ``{"diag_sim", "off_diag_sim", "contrast"}`` with ``contrast = diag - off_diag``.
    """
    img = F.normalize(_as_tensor(image_embeddings), dim=-1)
    txt = F.normalize(_as_tensor(text_embeddings), dim=-1)
    if img.shape != txt.shape:
        raise ValueError(f"matched pairs need equal shapes, got {tuple(img.shape)} and {tuple(txt.shape)}")
    n = img.shape[0]
    if n < 2:
        raise ValueError("need at least two pairs for an off-diagonal")
    sim = img @ txt.T
    diag = float(sim.diagonal().mean())
    off = float((sim.sum() - sim.diagonal().sum()) / (n * n - n))
    return {"diag_sim": diag, "off_diag_sim": off, "contrast": diag - off}
