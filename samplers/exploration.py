"""Explore/exploit mixing: most query slots go to the best scores, a few to random items.

Pure uncertainty sampling only ever asks where the current model is unsure, so regions the
model is confidently wrong about are never labeled (sampling bias; Settles 2009, "Active
Learning Literature Survey", section 6; Munro 2021, "Human-in-the-Loop Machine Learning",
chapter 1 on mixing in random samples). Spending a share 1 - p of the slots on uniform random
items keeps the labeled set representative and gives an unbiased estimate of model accuracy.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_scores


class ExploreResult(NamedTuple):
    """The picks of :func:`explore_mix`, in slot order.

    Attributes:
        indices: (m,) int64 positions into ``scores``, all distinct and eligible.
        explored: (m,) bool, True where that slot was a uniform random (exploration) pick;
            ``explored.mean()`` is the realised random share.
    """

    indices: np.ndarray
    explored: np.ndarray


def explore_mix(
    scores: ArrayLike,
    k: int,
    p: float,
    rng: np.random.Generator,
    eligible: ArrayLike | None = None,
) -> ExploreResult:
    """Pick min(k, n_eligible) distinct items: each slot exploits with probability p.

    Each slot independently, with probability ``p``, takes the highest-scoring eligible item
    not yet taken (ties broken by lower index, so the result is reproducible); otherwise it
    takes a uniformly random eligible item not yet taken. ``p = 1`` is pure top-k, ``p = 0``
    a uniform sample without replacement.

    Random picks walk one random permutation of the eligible items, skipping those already
    taken: given the history, the next untaken item of a uniform permutation is uniform over
    the untaken items, so this equals redrawing at every slot, in O(n log n + k) overall.

    Args:
        scores: (N,) scores, higher = ask first. NaN is rejected.
        k: Number of slots, >= 0.
        p: Probability that a slot exploits, in [0, 1].
        rng: Source of randomness (never numpy's global state).
        eligible: Optional (N,) bool mask; False items are never picked (e.g. already
            labeled or leased). None means all items are eligible.

    Returns:
        :class:`ExploreResult` of (m,) ``indices`` and (m,) ``explored``, m = min(k, n_eligible).

    Raises:
        ValueError: Bad ``scores``, ``k`` < 0, ``p`` outside [0, 1], or an ``eligible`` mask
            that is not a bool array of the same length.

    With p = 1 it is the top-k by score, ties by index:

    >>> r = explore_mix([0.2, 0.9, 0.5, 0.9], k=3, p=1.0, rng=np.random.default_rng(0))
    >>> r.indices.tolist(), r.explored.tolist()
    ([1, 3, 2], [False, False, False])
    >>> explore_mix([0.2, 0.9], k=5, p=1.0, rng=np.random.default_rng(0),
    ...             eligible=[True, False]).indices.tolist()
    [0]
    """
    s = check_scores(scores)  # (N,)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if eligible is None:
        pool = np.arange(s.shape[0])  # (n,)
    else:
        mask = np.asarray(eligible)
        if mask.dtype != np.bool_ or mask.shape != s.shape:
            raise ValueError(
                f"eligible must be a bool mask of shape {s.shape}, "
                f"got {mask.dtype} of shape {mask.shape}"
            )
        pool = np.flatnonzero(mask)  # (n,)
    m = min(int(k), pool.shape[0])
    explored = rng.random(m) >= p  # (m,), u < p exploits, so p = 1 never explores
    # Greedy order: score descending, index ascending (stable sort keeps index order on ties).
    greedy = pool[np.argsort(-s[pool], kind="stable")]  # (n,)
    shuffled = rng.permutation(pool) if explored.any() else pool  # (n,)
    taken = np.zeros(s.shape[0], dtype=bool)  # (N,)
    picks = np.empty(m, dtype=np.int64)  # (m,)
    g = r = 0
    for slot in range(m):
        if explored[slot]:
            while taken[shuffled[r]]:
                r += 1
            idx = shuffled[r]
        else:
            while taken[greedy[g]]:
                g += 1
            idx = greedy[g]
        taken[idx] = True
        picks[slot] = idx
    return ExploreResult(picks, explored)
