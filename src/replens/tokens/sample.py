"""One image as visual tokens (paper section 6.4.1) and its attention rank matrix (Eq. 6.1).

An image ``x`` becomes

* ``I``: global image features (2-D average pooled backbone features);
* ``V = {v_1..v_n}``: tangible tokens, one mask embedding per object;
* ``U = {u_1..u_m}``: intangible tokens, one text embedding per relation;
* ``E = {(a, b, c)}``: (subject, object, predicate) triplets, ``a, b`` index
  ``V`` and ``c`` indexes ``U``;
* ``N``: the 4 nearest neighbours of every object by box-centre distance.

:class:`VisualTokens` holds these for one image, :func:`rank_matrix` turns
``E`` and ``N`` into the rank matrix ``A_i`` of Eq. 6.1 over the token sequence
``T_i = {I} u V u U`` (in that order: position 0 is ``I``, positions ``1..n``
are ``V``, positions ``n+1..n+m`` are ``U``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "CONTEXT_LENGTH",
    "MAX_RANK",
    "N_NEIGHBOURS",
    "RANK_EDGE_TO_NODE",
    "RANK_NODE_TO_EDGE",
    "RANK_SUBJECT_TO_OBJECT",
    "VisualTokens",
    "box_centres",
    "nearest_neighbours",
    "rank_matrix",
]

#: Token context length of the authors' code (paper section 6.5.1).
CONTEXT_LENGTH = 77
#: Neighbours per object (Eq. 6.1: ranks 4, 3, 2, 1 for the 1st..4th nearest).
N_NEIGHBOURS = 4
#: Rank of a subject node attending to its object node (Eq. 6.1, first case).
RANK_SUBJECT_TO_OBJECT = 7
#: Rank of a node attending to a relation it takes part in (second case).
RANK_NODE_TO_EDGE = 6
#: Rank of a relation attending to its subject or object (third case).
RANK_EDGE_TO_NODE = 5
#: Largest rank; the learned rank weights have ``MAX_RANK + 1`` entries (rank 0 included).
MAX_RANK = 7


@dataclass
class VisualTokens:
    """The visual tokens of one image (paper section 6.4.1).

    Attributes:
        image_features: ``I``, shape (d_i,).
        tangible: ``V``, shape (n, d_v): one mask embedding per object.
        intangible: ``U``, shape (m, d_u): one relation text embedding per triplet.
        triplets: ``E``, shape (k, 3) int64 rows ``(subject, object, predicate)``;
            subject and object index ``tangible``, predicate indexes ``intangible``.
        neighbours: ``N``, shape (n, 4) int64: the k-th nearest other object of
            each object by box-centre distance, -1 where there are fewer objects.
        boxes: (n, 4) float32 ``x0, y0, x1, y1`` boxes normalised by the image
            width and height (to [0, 1]).
        object_names: Name of each object (class or description), for people.
        relation_names: Predicate word of each intangible token.
    """

    image_features: np.ndarray
    tangible: np.ndarray
    intangible: np.ndarray
    triplets: np.ndarray
    neighbours: np.ndarray
    boxes: np.ndarray
    object_names: list[str] = field(default_factory=list)
    relation_names: list[str] = field(default_factory=list)
    _ranks: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.image_features = np.asarray(self.image_features, dtype=np.float32)
        self.tangible = np.asarray(self.tangible, dtype=np.float32)
        self.intangible = np.asarray(self.intangible, dtype=np.float32)
        self.triplets = np.asarray(self.triplets, dtype=np.int64).reshape(-1, 3)
        self.neighbours = np.asarray(self.neighbours, dtype=np.int64).reshape(-1, N_NEIGHBOURS)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.validate()

    @property
    def n_objects(self) -> int:
        """``|V|``."""
        return int(self.tangible.shape[0])

    @property
    def n_relations(self) -> int:
        """``|U|``."""
        return int(self.intangible.shape[0])

    @property
    def length(self) -> int:
        """``|T| = 1 + |V| + |U|`` (the image token included)."""
        return 1 + self.n_objects + self.n_relations

    def validate(self, where: str = "visual tokens") -> None:
        """Check shapes and index ranges.

        Raises:
            ValueError: Naming ``where`` and the offending field.
        """
        n, m = self.tangible.shape[0] if self.tangible.ndim == 2 else -1, (
            self.intangible.shape[0] if self.intangible.ndim == 2 else -1
        )
        if self.image_features.ndim != 1:
            raise ValueError(f"{where}: image_features must be 1-D, got shape {self.image_features.shape}")
        if n < 0 or m < 0:
            raise ValueError(
                f"{where}: tangible and intangible must be 2-D, got {self.tangible.shape} and {self.intangible.shape}"
            )
        if self.boxes.shape[0] != n or self.neighbours.shape[0] != n:
            raise ValueError(
                f"{where}: {n} tangible tokens but {self.boxes.shape[0]} boxes and {self.neighbours.shape[0]} "
                "neighbour rows"
            )
        if len(self.triplets):
            s, o, p = self.triplets.T
            if s.min() < 0 or o.min() < 0 or s.max() >= n or o.max() >= n:
                raise ValueError(f"{where}: triplet subject/object out of range for {n} objects: {self.triplets}")
            if p.min() < 0 or p.max() >= m:
                raise ValueError(f"{where}: triplet predicate out of range for {m} relations: {self.triplets}")
        if len(self.neighbours) and (self.neighbours.max() >= n or self.neighbours.min() < -1):
            raise ValueError(f"{where}: neighbour index out of range for {n} objects")
        if self.object_names and len(self.object_names) != n:
            raise ValueError(f"{where}: {len(self.object_names)} object names for {n} objects")
        if self.relation_names and len(self.relation_names) != m:
            raise ValueError(f"{where}: {len(self.relation_names)} relation names for {m} relations")

    def rank_matrix(self) -> np.ndarray:
        """``A_i`` of Eq. 6.1 over ``T_i`` (see :func:`rank_matrix`; computed once)."""
        if self._ranks is None:
            self._ranks = rank_matrix(self.n_objects, self.n_relations, self.triplets, self.neighbours)
        return self._ranks

    def fit_context(self, context_length: int = CONTEXT_LENGTH) -> VisualTokens:
        """Drop tokens so that ``1 + |V| + |U| <= context_length``.

        Relations are dropped first (the last ones: extractors list the most
        confident first), then objects (the last ones) together with every
        triplet and relation that names them. The authors' code instead cuts
        the padded sequence at 77 positions, which can keep a relation whose
        nodes were cut; this keeps ``E`` consistent with the kept tokens.

        Returns:
            ``self`` when it already fits, else a trimmed copy.
        """
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, got {context_length}")
        if self.length <= context_length:
            return self
        n_keep = min(self.n_objects, context_length - 1)
        keep_rel = [
            c
            for c in range(self.n_relations)
            if all(int(t[0]) < n_keep and int(t[1]) < n_keep for t in self.triplets if int(t[2]) == c)
        ][: max(0, context_length - 1 - n_keep)]
        rel_map = {old: new for new, old in enumerate(keep_rel)}
        triplets = np.array(
            [[int(s), int(o), rel_map[int(p)]] for s, o, p in self.triplets if int(p) in rel_map], dtype=np.int64
        ).reshape(-1, 3)
        # neighbours among the kept objects, as many per object as before
        k = int((self.neighbours >= 0).sum(axis=1).max()) if len(self.neighbours) else 0
        packed = np.full((n_keep, N_NEIGHBOURS), -1, dtype=np.int64)
        if k:
            packed[:, :k] = nearest_neighbours(self.boxes[:n_keep], k)
        return replace(
            self,
            tangible=self.tangible[:n_keep],
            intangible=self.intangible[keep_rel] if keep_rel else self.intangible[:0],
            triplets=triplets,
            neighbours=packed,
            boxes=self.boxes[:n_keep],
            object_names=self.object_names[:n_keep] if self.object_names else [],
            relation_names=[self.relation_names[c] for c in keep_rel] if self.relation_names else [],
        )


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(n, 2) centres ``((x0 + x1) / 2, (y0 + y1) / 2)`` of (n, 4) ``x0, y0, x1, y1`` boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def nearest_neighbours(boxes: np.ndarray, k: int = N_NEIGHBOURS) -> np.ndarray:
    """The ``k`` nearest other objects of every object by box-centre distance (section 6.4.1).

    Distances are Euclidean between box centres; ties go to the lower index
    (a stable sort), and an object is never its own neighbour.

    Args:
        boxes: (n, 4) boxes ``x0, y0, x1, y1``.
        k: Neighbours per object.

    Returns:
        (n, k) int64 neighbour indices, nearest first, -1 where ``n - 1 < k``.
    """
    centres = box_centres(boxes)
    n = len(centres)
    out = np.full((n, k), -1, dtype=np.int64)
    if n < 2:
        return out
    dist = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, : min(k, n - 1)]
    out[:, : order.shape[1]] = order
    return out


def rank_matrix(
    n_objects: int,
    n_relations: int,
    triplets: np.ndarray | Sequence[Sequence[int]],
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """The attention rank matrix ``A_i`` of Eq. 6.1.

    Over the sequence ``T_i = [I, v_1..v_n, u_1..u_m]`` (position 0 is the image
    token, object ``a`` is at ``1 + a`` and relation ``c`` at ``1 + n + c``),
    ``A[p, q]`` is the rank of query ``p`` attending to key ``q``:

    * 7 when ``(a, b, .) in E``: subject node ``a`` to its object node ``b``;
    * 6 when ``(a, ., b) in E`` or ``(., a, b) in E``: a node to a relation it takes part in;
    * 5 when ``(b, ., a) in E`` or ``(., b, a) in E``: a relation to its subject and object;
    * ``5 - k`` when ``b`` is the ``k``-th nearest neighbour of node ``a`` (k = 1..4);
    * 0 otherwise (the image token's row and column included).

    Where several cases hold, the first one in this list (the highest rank) wins,
    as in the case list of Eq. 6.1.

    Args:
        n_objects: ``|V|``.
        n_relations: ``|U|``.
        triplets: (k, 3) ``(subject, object, predicate)`` indices.
        neighbours: (n, K) neighbour indices (-1: none), nearest first; K <= 4.

    Returns:
        (1 + n + m, 1 + n + m) int64 ranks in ``0..7``.
    """
    n, m = int(n_objects), int(n_relations)
    size = 1 + n + m
    ranks = np.zeros((size, size), dtype=np.int64)
    if neighbours is not None:
        neighbours = np.asarray(neighbours, dtype=np.int64).reshape(n, -1)
        if neighbours.shape[1] > N_NEIGHBOURS:
            raise ValueError(f"Eq. 6.1 ranks at most {N_NEIGHBOURS} neighbours, got {neighbours.shape[1]}")
        for a in range(n):
            for k, b in enumerate(neighbours[a], start=1):
                if b >= 0:
                    ranks[1 + a, 1 + b] = max(ranks[1 + a, 1 + b], 5 - k)
    for s, o, p in np.asarray(triplets, dtype=np.int64).reshape(-1, 3):
        node_s, node_o, edge = 1 + s, 1 + o, 1 + n + p
        ranks[node_s, node_o] = max(ranks[node_s, node_o], RANK_SUBJECT_TO_OBJECT)
        for node in (node_s, node_o):
            ranks[node, edge] = max(ranks[node, edge], RANK_NODE_TO_EDGE)
            ranks[edge, node] = max(ranks[edge, node], RANK_EDGE_TO_NODE)
    return ranks
