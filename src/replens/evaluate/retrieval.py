"""Image-text retrieval recall@K and the diagonal/off-diagonal similarity of paper section 6.5.2.

Text-to-image recall@K is the fraction of captions whose image is among the K
images most similar to it; image-to-text recall@K the fraction of images with
at least one of their captions among the K most similar captions (the COCO
convention for several captions per image). Similarities are cosines of
L2-normalised embeddings; a wrong item that ties with the best correct one
counts as ranked above it.

Identical caption strings of different images make retrieval ambiguous (two
scenes with the same description); :func:`caption_positives` counts any image
that carries the exact caption as a correct match.

Image-to-image retrieval (paper section 5.5.4, Figure 5.4): the top-K nearest
neighbours of a query in representation space by cosine similarity
(:func:`nearest_neighbours`), their label precision
(:func:`neighbour_precision`) and the retrieval grid figure, one row per query
and one panel per model (:func:`plot_retrieval_grid`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from replens.plotting import save_figure

__all__ = [
    "caption_positives",
    "nearest_neighbours",
    "neighbour_precision",
    "plot_retrieval_grid",
    "retrieval_recall",
    "similarity_contrast",
]


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


#: Cosine similarities closer than this count as a tie (a few float32 ulps around 1).
TIE_TOLERANCE = 1e-6


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
    # (ties count against the model, so collapsed embeddings score 0, not 100). Equal embeddings can
    # differ in the last bit of their dot products (blocked matmul), so a tie is within TIE_TOLERANCE.
    best_pos_t2i = sim.masked_fill(~pos_t, float("-inf")).max(dim=1).values
    rank_t2i = ((sim >= best_pos_t2i[:, None] - TIE_TOLERANCE) & ~pos_t).sum(dim=1)
    has_text = pos_t.any(dim=0)
    sim_i = sim.T[has_text]
    pos_i = pos_t.T[has_text]
    best_pos_i2t = sim_i.masked_fill(~pos_i, float("-inf")).max(dim=1).values
    rank_i2t = ((sim_i >= best_pos_i2t[:, None] - TIE_TOLERANCE) & ~pos_i).sum(dim=1)
    for k in ks:
        out[f"t2i_r{k}"] = float((rank_t2i < k).float().mean() * 100) if n_txt else float("nan")
        out[f"i2t_r{k}"] = float((rank_i2t < k).float().mean() * 100) if len(rank_i2t) else float("nan")
    return out


def similarity_contrast(
    image_embeddings: np.ndarray | torch.Tensor, text_embeddings: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """Mean cosine similarity of matched (diagonal) and unmatched (off-diagonal) image-text pairs.

    Row ``i`` of both inputs is a matched pair (Figure 6.4 of the paper plots
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


def nearest_neighbours(
    queries: np.ndarray | torch.Tensor,
    bank: np.ndarray | torch.Tensor,
    k: int = 4,
    *,
    exclude: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` bank rows by cosine similarity for each query (paper section 5.5.4).

    ``argmax_y x^T y / (||x|| ||y||)`` over the bank, best first; ties keep the
    lower bank index first.

    Args:
        queries: (M, D) query representations.
        bank: (N, D) representations searched.
        k: Neighbours per query (at most N, or N - 1 with ``exclude``).
        exclude: For each query a bank row it may not retrieve (e.g. itself when
            the queries are bank rows), or -1 for none.
        batch_size: Queries per matrix product.

    Returns:
        ``(indices, similarities)``, both (M, k).
    """
    q = F.normalize(_as_tensor(queries), dim=-1)
    b = F.normalize(_as_tensor(bank), dim=-1)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and bank {tuple(b.shape)} must be (M, D) and (N, D)")
    excl = None if exclude is None else torch.as_tensor(np.asarray(exclude), dtype=torch.long)
    if excl is not None and len(excl) != len(q):
        raise ValueError(f"exclude has {len(excl)} entries for {len(q)} queries")
    limit = len(b) - (1 if excl is not None and bool((excl >= 0).any()) else 0)
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} must be between 1 and {limit} for a bank of {len(b)}")
    idx_out, sim_out = [], []
    for start in range(0, len(q), batch_size):
        sim = q[start : start + batch_size] @ b.T
        if excl is not None:
            rows = torch.arange(len(sim))
            cols = excl[start : start + batch_size]
            keep = cols >= 0
            sim[rows[keep], cols[keep]] = float("-inf")
        # stable descending order: sort by (-sim, index)
        order = torch.from_numpy(np.lexsort((np.arange(sim.shape[1])[None].repeat(len(sim), 0), -sim.numpy()), axis=1))
        top = order[:, :k]
        idx_out.append(top.numpy())
        sim_out.append(torch.gather(sim, 1, top).numpy())
    if not idx_out:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    return np.concatenate(idx_out).astype(np.int64), np.concatenate(sim_out)


def neighbour_precision(neighbour_labels: np.ndarray, query_labels: np.ndarray) -> float:
    """Percent of retrieved neighbours sharing their query's label (precision@K).

    Shape:
        neighbour_labels: (M, K); query_labels: (M,) -> float in [0, 100].
    """
    neighbour_labels, query_labels = np.asarray(neighbour_labels), np.asarray(query_labels)
    if neighbour_labels.ndim != 2 or len(neighbour_labels) != len(query_labels):
        raise ValueError(f"neighbour labels {neighbour_labels.shape} do not match {len(query_labels)} queries")
    if neighbour_labels.size == 0:
        return float("nan")
    return float(100.0 * (neighbour_labels == query_labels[:, None]).mean())


def plot_retrieval_grid(
    query_images: np.ndarray | torch.Tensor,
    panels: Mapping[str, tuple[np.ndarray | torch.Tensor, np.ndarray | None]],
    path: str | Path,
    *,
    query_labels: np.ndarray | None = None,
    title: str = "",
) -> dict[str, Any]:
    """The retrieval grid of Figure 5.4: per query row, the query then each model's top-K neighbours.

    A green frame marks a neighbour with the query's label, a red one another
    label (when labels are given).

    Args:
        query_images: (M, 3, H, W) uint8 or [0, 1] float images.
        panels: ``{model name: (neighbour images (M, K, 3, H, W), neighbour labels (M, K) or None)}``.
        path: PNG to write (atomically).
        query_labels: (M,) labels of the queries.
        title: Figure title.

    Returns:
        ``{"path", "queries", "k", "models"}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def to_hwc(img: Any) -> np.ndarray:
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        return np.clip(np.transpose(arr, (1, 2, 0)), 0.0, 1.0)

    m = len(query_images)
    if not panels:
        raise ValueError("give at least one model panel")
    ks = {name: int(np.asarray(imgs.shape)[1]) for name, (imgs, _) in panels.items()}
    if len(set(ks.values())) != 1:
        raise ValueError(f"every panel needs the same K, got {ks}")
    k = next(iter(ks.values()))
    for name, (imgs, _) in panels.items():
        if len(imgs) != m:
            raise ValueError(f"panel {name!r} has {len(imgs)} rows for {m} queries")
    cols = 1 + len(panels) * (k + 1) - 1
    fig, axes = plt.subplots(m, cols, figsize=(1.3 * cols, 1.3 * m + 0.6), squeeze=False)
    for r in range(m):
        ax = axes[r][0]
        ax.imshow(to_hwc(query_images[r]), interpolation="nearest")
        if r == 0:
            ax.set_title("query", fontsize=8)
        c = 1
        for p, (name, (imgs, labels)) in enumerate(panels.items()):
            if p:
                axes[r][c].axis("off")  # a gap column between models
                c += 1
            for j in range(k):
                ax = axes[r][c]
                ax.imshow(to_hwc(imgs[r][j]), interpolation="nearest")
                if labels is not None and query_labels is not None:
                    ok = bool(np.asarray(labels)[r, j] == np.asarray(query_labels)[r])
                    for side in ax.spines.values():
                        side.set_edgecolor("tab:green" if ok else "tab:red")
                        side.set_linewidth(2.5)
                if r == 0 and j == 0:
                    ax.set_title(name, fontsize=8, loc="left")
                c += 1
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    out = save_figure(fig, path, dpi=100)
    return {"path": str(out), "queries": int(m), "k": int(k), "models": list(panels)}
