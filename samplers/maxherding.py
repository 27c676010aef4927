"""MaxHerding: cold-start picks that maximize the pool's kernel coverage.

Coverage methods ask the points whose labels reach the most of the pool. Bae et al. 2024
("Generalized coverage for more robust low-budget active learning", ECCV) replace ProbCover's
hard ball of radius delta with a Gaussian kernel, which makes the choice robust to its scale,
and pick greedily::

    C(S) = sum_x max_{s in S} k(x, s),    k(x, s) = exp(-||x - s||^2 / (2 sigma^2))
    next = argmax_c  C(S + {c}) - C(S)

Labeled points start in S. ``sigma`` defaults to the median distance from a point to its
nearest neighbour times 2 on the sample (scale-free). Each pick costs O(M^2) on a uniform
sample of at most ``max_points`` candidates.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_count, sample_embeddings


def maxherding(
    embeddings: ArrayLike,
    k: int,
    *,
    rng: np.random.Generator,
    already: ArrayLike | None = None,
    sigma: float | None = None,
    max_points: int = 3_000,
) -> np.ndarray:
    """Pick min(k, N) distinct points greedily, each adding the most kernel coverage.

    Args:
        embeddings: (N, D) embeddings of the unlabeled candidates.
        k: Points to pick.
        rng: Draws the sample when N > ``max_points``.
        already: (M, D) embeddings of labeled points (already covering).
        sigma: Kernel width; None picks twice the median nearest-neighbour distance.
        max_points: Candidates (and covered points) considered at most.

    Returns:
        (min(k, N),) int64 indices into ``embeddings``, in pick order.

    A group of four, a group of three and an outlier: the larger group's centre covers most,
    then the other group's centre; the outlier covers least.

    >>> x = np.array([[0.0], [0.1], [0.2], [0.1], [5.0], [5.1], [5.2], [40.0]])
    >>> maxherding(x, 2, rng=np.random.default_rng(0), sigma=0.5).tolist()
    [1, 5]
    >>> maxherding(x, 1, rng=np.random.default_rng(0), sigma=0.5, already=[[0.1]]).tolist()
    [5]
    """
    n = len(np.asarray(embeddings))
    k = min(check_count(k), n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    sample, points = sample_embeddings(embeddings, max_points, rng)  # (M,), (M, D)
    d2 = _sq_dists(points, points)  # (M, M)
    if sigma is None:
        nearest = np.sqrt(np.partition(d2 + np.diag(np.full(len(points), np.inf)), 0, axis=1)[:, 0])
        sigma = 2.0 * float(np.median(nearest[np.isfinite(nearest)])) if len(points) > 1 else 1.0
        sigma = sigma if sigma > 0 else 1.0
    kern = np.exp(-d2 / (2.0 * sigma**2))  # (M, M): kern[j, c] how much c covers j
    covered = np.zeros(len(points))
    if already is not None and len(np.asarray(already)):
        known = np.asarray(already, np.float64).reshape(-1, points.shape[1])
        covered = np.exp(-_sq_dists(points, known) / (2.0 * sigma**2)).max(axis=1)
    picks: list[int] = []
    taken = np.zeros(len(points), dtype=bool)
    while len(picks) < min(k, len(points)):
        gain = np.maximum(kern, covered[:, None]).sum(axis=0) - covered.sum()  # (M,)
        gain[taken] = -np.inf
        best = int(np.argmax(gain))
        taken[best] = True
        picks.append(int(sample[best]))
        covered = np.maximum(covered, kern[:, best])
    return np.asarray(picks, dtype=np.int64)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D), (K, D) -> (N, K) squared distances by one matrix product (clipped at 0).

    The expansion loses exactness for identical points (a tiny positive instead of 0), which a
    kernel does not notice, and is far faster than differences for wide embeddings.
    """
    d2 = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.maximum(d2, 0.0)
