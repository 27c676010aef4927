"""K-center greedy: a batch that covers the candidates' embedding space (core-set selection).

Top-k by uncertainty alone tends to ask k near-copies of the same confusing item. Sener &
Savarese 2018, "Active Learning for Convolutional Neural Networks: A Core-Set Approach", pick
the batch as a k-center cover instead: greedily add the point farthest (Euclidean) from
everything chosen so far, including the already labeled points. Farthest-first traversal is a
2-approximation of the minimax k-center problem (Gonzalez 1985), in O(k N D).
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import (
    check_batch_inputs,
    check_count,
    check_embeddings,
    sq_dists,
)
from activestream.samplers.margin import margin
from activestream.samplers.registry import register


def kcenter_greedy(
    embeddings: ArrayLike,
    k: int,
    *,
    already: ArrayLike | None = None,
    first: int | None = None,
) -> np.ndarray:
    """Pick min(k, N) distinct points by farthest-first traversal.

    Each pick is the point whose distance to the nearest chosen point (or ``already`` point)
    is largest; ties go to the lowest index. Points already chosen are never picked again,
    even when every remaining point duplicates one of them.

    Args:
        embeddings: (N, D) candidate embeddings, finite.
        k: Batch size, >= 0.
        already: Optional (M, D) embeddings of points already covered (e.g. labeled items);
            the first pick is then the candidate farthest from them. None or M = 0: none.
        first: Index of the first pick. Default: 0 when ``already`` is empty, else the
            candidate farthest from ``already``. Given explicitly, it is always picked first.

    Returns:
        (min(k, N),) int64 indices into ``embeddings``, in pick order.

    Raises:
        ValueError: Bad embeddings, k < 0, ``already`` of another dimension or not finite, or
            ``first`` not an index into the N candidates.

    By hand, points 0, 2, 10, 11 on a line: start at 0; 11 is farthest; then 2 (2 from 0)
    beats 10 (1 from 11). With 11 already covered, 0 is the farthest from it.

    >>> x = [[0.0], [2.0], [10.0], [11.0]]
    >>> kcenter_greedy(x, 2).tolist(), kcenter_greedy(x, 3).tolist()
    ([0, 3], [0, 3, 1])
    >>> kcenter_greedy(x, 1, already=[[11.0]]).tolist()
    [0]
    """
    x = check_embeddings(embeddings)  # (N, D)
    m = min(check_count(k), x.shape[0])
    n, dim = x.shape
    # Squared distance to the nearest covered point; inf while nothing is covered.
    nearest = np.full(n, np.inf)  # (N,)
    if already is not None:
        a = check_embeddings(already, name="already")  # (M, D)
        if a.shape[1] != dim:
            raise ValueError(f"already must have D={dim} columns like embeddings, got {a.shape}")
        if a.shape[0]:
            nearest = sq_dists(x, a).min(axis=1)  # (N, M) -> (N,)
    if first is not None:
        if isinstance(first, bool) or not isinstance(first, numbers.Integral):
            raise ValueError(f"first must be an integer index, got {first!r}")
        if not 0 <= first < n:
            raise ValueError(f"first must index the {n} candidates, got {first}")
    picks = np.empty(m, dtype=np.int64)  # (m,)
    for slot in range(m):
        if slot == 0 and first is not None:
            idx = int(first)
        else:
            idx = int(np.argmax(nearest))  # first maximum = lowest index on ties; inf -> 0
        picks[slot] = idx
        nearest = np.minimum(nearest, sq_dists(x, x[idx : idx + 1])[:, 0])  # (N, 1) -> (N,)
        nearest[idx] = -1.0  # below any distance: never again, even among duplicates
    return picks


def kcenter_batch(
    scores: ArrayLike, embeddings: ArrayLike, k: int, rng: np.random.Generator
) -> np.ndarray:
    """The ``"kcenter"`` :data:`~activestream.samplers.registry.BatchFn`: best score, then cover.

    The scores only choose the first pick (the highest, ties to the lowest index); the rest is
    :func:`kcenter_greedy` over the candidates' embeddings. ``rng`` is unused: deterministic.

    Args:
        scores: (N,) scores of the candidates, higher = ask first.
        embeddings: (N, D) embeddings of the same candidates.
        k: Batch size, >= 0.
        rng: Ignored; part of the BatchFn signature.

    Returns:
        (min(k, N),) distinct int64 indices into the candidates.

    >>> kcenter_batch([0.1, 0.9, 0.8, 0.2], [[0.0], [1.0], [10.0], [11.0]], 2,
    ...               np.random.default_rng(0)).tolist()
    [1, 3]
    """
    s, x, m = check_batch_inputs(scores, embeddings, k)  # (N,), (N, D), int
    first = int(np.argmax(s)) if s.shape[0] else None
    return kcenter_greedy(x, m, first=first)  # (min(k, N),)


register("kcenter", batch=kcenter_batch)(margin)
