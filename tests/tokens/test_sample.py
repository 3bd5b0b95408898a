"""Eq. 6.1 (rank matrix), nearest neighbours by box centre, and context fitting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from replens.tokens import VisualTokens, nearest_neighbours, rank_matrix


def _eq61(n: int, m: int, triplets: list[tuple[int, int, int]], neighbours: np.ndarray) -> np.ndarray:
    """Eq. 6.1 written case by case over token indices (0 = I, 1..n = V, n+1..n+m = U)."""
    size = 1 + n + m
    node = {a: 1 + a for a in range(n)}
    edge = {c: 1 + n + c for c in range(m)}
    out = np.zeros((size, size), dtype=np.int64)
    for p, q in itertools.product(range(size), range(size)):
        if any(node.get(s) == p and node.get(o) == q for s, o, _ in triplets):
            out[p, q] = 7
        elif any((node.get(s) == p or node.get(o) == p) and edge[c] == q for s, o, c in triplets):
            out[p, q] = 6
        elif any((node.get(s) == q or node.get(o) == q) and edge[c] == p for s, o, c in triplets):
            out[p, q] = 5
        else:
            for a in range(n):
                for k in range(1, 5):
                    if p == node[a] and neighbours[a, k - 1] >= 0 and q == node[int(neighbours[a, k - 1])]:
                        out[p, q] = 5 - k
    return out


def test_rank_matrix_matches_eq_6_1_case_by_case() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n, m = int(rng.integers(1, 7)), int(rng.integers(0, 6))
        triplets = [(int(rng.integers(n)), int(rng.integers(n)), c) for c in range(m)]
        triplets = [(s, o, c) for s, o, c in triplets if s != o]
        boxes = rng.uniform(0, 50, size=(n, 2))
        boxes = np.concatenate([boxes, boxes + rng.uniform(1, 20, size=(n, 2))], axis=1)
        neighbours = nearest_neighbours(boxes)
        got = rank_matrix(n, m, triplets, neighbours)
        np.testing.assert_array_equal(got, _eq61(n, m, triplets, neighbours))


def test_rank_matrix_figure_example() -> None:
    # "person beside tree": nodes 0 (person), 1 (tree), relation 0 (beside)
    ranks = rank_matrix(2, 1, [(0, 1, 0)], np.array([[1, -1, -1, -1], [0, -1, -1, -1]]))
    person, tree, beside = 1, 2, 3
    assert ranks[person, tree] == 7  # directional node-to-node
    assert ranks[tree, person] == 4  # not a subject: its nearest neighbour
    assert ranks[person, beside] == ranks[tree, beside] == 6
    assert ranks[beside, person] == ranks[beside, tree] == 5
    assert ranks[0].sum() == 0 and ranks[:, 0].sum() == 0  # the image token has rank 0 everywhere


def test_nearest_neighbours_by_box_centre() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, size=(7, 2))
    boxes = np.concatenate([xy - 3, xy + 3], axis=1)  # centres are xy
    got = nearest_neighbours(boxes)
    for a in range(7):
        dist = [(float(np.linalg.norm(xy[a] - xy[b])), b) for b in range(7) if b != a]
        assert got[a].tolist() == [b for _, b in sorted(dist)[:4]]
    two = nearest_neighbours(boxes[:2])
    assert two.tolist() == [[1, -1, -1, -1], [0, -1, -1, -1]]


def _tokens(n: int, m: int, rng: np.random.Generator) -> VisualTokens:
    boxes = rng.uniform(0, 0.5, size=(n, 2))
    boxes = np.concatenate([boxes, boxes + 0.2], axis=1)
    triplets = [(int(rng.integers(n)), int(rng.integers(n)), c) for c in range(m)]
    return VisualTokens(
        image_features=rng.normal(size=5),
        tangible=rng.normal(size=(n, 4)),
        intangible=rng.normal(size=(m, 3)),
        triplets=triplets,
        neighbours=nearest_neighbours(boxes),
        boxes=boxes,
        object_names=[f"o{a}" for a in range(n)],
        relation_names=[f"r{c}" for c in range(m)],
    )


def test_fit_context_keeps_a_consistent_graph() -> None:
    rng = np.random.default_rng(2)
    tokens = _tokens(10, 30, rng)
    assert tokens.fit_context(77) is tokens
    cut = tokens.fit_context(20)
    assert cut.length <= 20
    assert cut.n_objects == 10 and cut.n_relations == 9
    # every kept relation keeps its triplet, with the same embedding and endpoints
    for s, o, c in cut.triplets:
        old = next(int(t[2]) for t in tokens.triplets if cut.relation_names[c] == f"r{int(t[2])}")
        np.testing.assert_array_equal(cut.intangible[c], tokens.intangible[old])
        assert (s, o) == tuple(int(v) for v in tokens.triplets[old][:2])
    small = tokens.fit_context(6)
    assert small.n_objects == 5 and small.n_relations == 0
    assert small.neighbours.max() < 5
    # the neighbours that survive are still the nearest among the kept objects, nearest first
    np.testing.assert_array_equal(small.neighbours, nearest_neighbours(small.boxes))


def test_validation_names_the_problem() -> None:
    rng = np.random.default_rng(3)
    good = _tokens(3, 2, rng)
    with pytest.raises(ValueError, match="predicate out of range"):
        VisualTokens(good.image_features, good.tangible, good.intangible, [[0, 1, 5]], good.neighbours, good.boxes)
    with pytest.raises(ValueError, match="boxes"):
        VisualTokens(good.image_features, good.tangible, good.intangible, good.triplets, good.neighbours,
                     good.boxes[:2])
