"""Cluster-margin: the most uncertain candidates, spread round-robin over embedding clusters.

Citovsky et al. 2021, "Batch Active Learning at Scale" (cluster-margin): take a pool of
low-margin candidates, cluster their embeddings, sort the clusters by size ascending and pick
round-robin, one item per cluster per round, until the batch is full. Small clusters go first,
so rare kinds of confusing items are not crowded out by one large blob of near-duplicates.

Differences from the paper, which clusters the whole pool once with average-linkage
agglomerative clustering and picks a random member per cluster: here the caller passes the
candidate pool (e.g. the top candidates by margin), it is clustered on each call with a small
seeded k-means (k-means++ initialisation, at most :data:`MAX_ITER` Lloyd iterations), and each
cluster yields its highest-scored remaining member, so the rng only drives the clustering.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_batch_inputs, check_count, sq_dists
from activestream.samplers.margin import margin
from activestream.samplers.registry import register

#: Most Lloyd iterations of :func:`kmeans`; it stops earlier once the labels stop changing.
MAX_ITER = 20


def kmeans(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, *, max_iter: int = MAX_ITER
) -> np.ndarray:
    """Label (N, D) points with one of ``n_clusters`` k-means clusters -> (N,) int64.

    k-means++ seeding (Arthur & Vassilvitskii 2007): the first center is a uniform point, each
    next one a point drawn with probability proportional to its squared distance to the
    nearest center so far. Then Lloyd iterations: assign each point to its nearest center (ties
    to the lower cluster), move each center to its members' mean (an empty cluster keeps its
    center). Some clusters can end up empty when points coincide. Unchecked input: callers
    validate; needs 1 <= n_clusters <= N.

    >>> a, b, c, d = kmeans(np.array([[0.0], [1.0], [10.0], [11.0]]), 2, np.random.default_rng(0))
    >>> bool(a == b != c == d)
    True
    """
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    nearest = sq_dists(x, x[chosen[0] : chosen[0] + 1])[:, 0]  # (N, 1) -> (N,)
    for _ in range(1, n_clusters):
        total = nearest.sum()
        if np.isfinite(total) and total > 0:
            idx = int(rng.choice(n, p=nearest / total))
        elif total > 0:  # overflow: fall back to the farthest point
            idx = int(np.argmax(nearest))
        else:  # every point sits on a center: any unused point
            idx = int(rng.choice(np.setdiff1d(np.arange(n), chosen)))
        chosen.append(idx)
        nearest = np.minimum(nearest, sq_dists(x, x[idx : idx + 1])[:, 0])  # (N,)
    centers = x[chosen].copy()  # (K, D)
    labels = np.full(n, -1, dtype=np.int64)  # (N,)
    for _ in range(max_iter):
        new = sq_dists(x, centers).argmin(axis=1).astype(np.int64)  # (N, K) -> (N,)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=n_clusters)  # (K,)
        sums = np.zeros_like(centers)  # (K, D)
        np.add.at(sums, labels, x)
        full = counts > 0
        centers[full] = sums[full] / counts[full, None]
    return labels


def cluster_margin_select(
    scores: ArrayLike,
    embeddings: ArrayLike,
    k: int,
    rng: np.random.Generator,
    *,
    clusters: int | None = None,
) -> np.ndarray:
    """Pick min(k, N) candidates round-robin over k-means clusters, smallest cluster first.

    Also the :data:`~activestream.samplers.registry.BatchFn` of ``"cluster_margin"`` (default
    ``clusters``). Clusters are visited by size ascending (ties: higher best score first, then
    lower index); each visit takes the cluster's highest-scored member not yet taken (ties to the
    lower index), skipping clusters that ran out, until the batch is full.

    Args:
        scores: (N,) scores of the candidates, higher = ask first (e.g. margin scores).
        embeddings: (N, D) embeddings of the same candidates.
        k: Batch size, >= 0.
        rng: Seeds the k-means initialisation (never numpy's global state).
        clusters: Number of k-means clusters, >= 1, capped at N. None means
            ``min(N, max(2, k))``.

    Returns:
        (min(k, N),) distinct int64 indices into the candidates, in pick order.

    Raises:
        ValueError: Bad scores, embeddings or k, different lengths, or ``clusters`` < 1.
        TypeError: ``rng`` is not a ``np.random.Generator``.

    By hand, points 0, 1, 10, 11 form two clusters. The top 2 by score (0.9, 0.8) are both
    near 0; cluster-margin takes the best of each cluster instead. With points 0, 1, 2, 10 the
    lone 10 is the smaller cluster, so it goes first despite its low score.

    >>> rng = np.random.default_rng(0)
    >>> cluster_margin_select([0.9, 0.8, 0.1, 0.2], [[0.0], [1.0], [10.0], [11.0]], 2,
    ...                       rng).tolist()
    [0, 3]
    >>> cluster_margin_select([0.9, 0.8, 0.7, 0.1], [[0.0], [1.0], [2.0], [10.0]], 2,
    ...                       rng).tolist()
    [3, 0]
    """
    s, x, k = check_batch_inputs(scores, embeddings, k)  # (N,), (N, D), int
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if clusters is not None and check_count(clusters, name="clusters") < 1:
        raise ValueError(f"clusters must be an integer >= 1, got {clusters!r}")
    n = s.shape[0]
    m = min(k, n)
    if m == 0:
        return np.empty(0, dtype=np.int64)
    n_clusters = min(n, max(2, k) if clusters is None else int(clusters))
    labels = kmeans(x, n_clusters, rng)  # (N,)
    by_score = np.lexsort((np.arange(n), -s))  # (N,), score descending, index ascending
    grouped = by_score[np.argsort(labels[by_score], kind="stable")]  # (N,), by cluster, then score
    lab = labels[grouped]  # (N,), ascending
    start = np.searchsorted(lab, lab)  # (N,), where each member's cluster starts in grouped
    rank = np.arange(n) - start  # (N,), 0 = the cluster's best member
    present, first = np.unique(lab, return_index=True)  # (P,), (P,)
    best = grouped[first]  # (P,), each nonempty cluster's best member
    size = np.bincount(labels, minlength=n_clusters)[present]  # (P,)
    visit = np.empty(n_clusters, dtype=np.int64)  # (K,), position in the visiting order
    visit[present[np.lexsort((best, -s[best], size))]] = np.arange(present.shape[0])
    order = np.lexsort((visit[lab], rank))  # (N,), round by round, clusters in visiting order
    return grouped[order[:m]].astype(np.int64)  # (m,)


register("cluster_margin", batch=cluster_margin_select)(margin)
