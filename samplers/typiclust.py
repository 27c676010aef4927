"""TypiClust: cold-start picks that are typical and cover the embedding space.

A cold model's uncertainty is noise, and at small budgets random picks waste labels on
outliers and on near-duplicates of what is known. Hacohen, Dekel & Weinshall 2022 ("Active
learning on a budget", ICML) cluster the pool into ``K = labeled + k`` clusters and ask, in each
of the k largest clusters that hold no labeled point, its most *typical* point::

    typicality(x) = 1 / mean_{x' in kNN(x)} ||x - x'||        (kNN within x's cluster)

Large uncovered clusters are where most of the pool is and nothing is known; the typical point
is the one whose label says most about its neighbours.

Clustering scales by working on a uniform sample of at most ``max_points`` unlabeled points
(plus the labeled ones): picks come from the sample, which a large pool represents well.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_count, sample_embeddings


def typicality(points: np.ndarray, neighbors: int = 20) -> np.ndarray:
    """(N, D) -> (N,) inverse mean distance to each point's ``neighbors`` nearest others.

    A single point has nothing to compare with: its typicality is 1.

    By hand: points 0, 1, 2, 10 on a line with 2 neighbours: 1 is at mean distance 1, 0 and 2
    at 1.5, 10 at 8.5.

    >>> typicality(np.array([[0.0], [1.0], [2.0], [10.0]]), neighbors=2).round(3).tolist()
    [0.667, 1.0, 0.667, 0.118]
    """
    n = len(points)
    if n < 2:
        return np.ones(n)
    from sklearn.neighbors import NearestNeighbors

    m = min(neighbors, n - 1)
    dist, _ = NearestNeighbors(n_neighbors=m + 1).fit(points).kneighbors(points)
    return 1.0 / np.maximum(dist[:, 1:].mean(axis=1), 1e-12)


def typiclust(
    embeddings: ArrayLike,
    k: int,
    *,
    rng: np.random.Generator,
    already: ArrayLike | None = None,
    neighbors: int = 20,
    max_points: int = 20_000,
    min_cluster_size: int = 5,
) -> np.ndarray:
    """Pick min(k, N) distinct points: the most typical point of each large uncovered cluster.

    Args:
        embeddings: (N, D) embeddings of the unlabeled candidates.
        k: Points to pick.
        rng: Draws the sample and seeds k-means.
        already: (M, D) embeddings of labeled points; clusters holding one are covered.
        neighbors: Neighbours in the typicality estimate (the paper's 20).
        max_points: Cluster a uniform sample of this many candidates at most.
        min_cluster_size: Clusters with fewer candidates (outliers) come after all others, as
            in the paper's code: a typical point of a handful says little about the pool.

    Returns:
        (min(k, N),) int64 indices into ``embeddings``; largest uncovered cluster first. When
        there are fewer uncovered clusters than picks, covered clusters give their next most
        typical point, largest first, round after round; clusters under ``min_cluster_size``
        come only once every other cluster has run out.

    Two groups of three and an outlier, nothing labeled: each group's centre, then the next
    point of the first group; the outlier only once the groups run out. With the right group
    labeled, the left centre comes first.

    >>> x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2], [40.0]])
    >>> rng = np.random.default_rng
    >>> typiclust(x, 3, rng=rng(0), neighbors=2, min_cluster_size=2).tolist()
    [1, 4, 0]
    >>> typiclust(x, 2, rng=rng(0), already=[[5.1]], neighbors=2, min_cluster_size=2).tolist()
    [1, 4]
    """
    k = check_count(k)
    sample, cand = sample_embeddings(embeddings, max_points, rng)  # (M,), (M, D)
    n = len(np.asarray(embeddings))
    dim = cand.shape[1]
    known = np.zeros((0, dim)) if already is None else np.asarray(already, np.float64)
    known = known.reshape(-1, dim)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    points = np.concatenate([cand, known])
    clusters = min(len(known) + k, len(points))
    labels = _kmeans(points, clusters, rng)
    cand_labels, known_labels = labels[: len(sample)], labels[len(sample) :]
    covered = np.zeros(clusters, dtype=bool)
    covered[known_labels] = True
    sizes = np.bincount(cand_labels, minlength=clusters)
    # Outliers last; uncovered before covered; largest first; ties by index (deterministic).
    small = sizes < min_cluster_size
    order = sorted(range(clusters), key=lambda c: (small[c], covered[c], -sizes[c], c))
    ranked: dict[int, list[int]] = {}
    for c in order:
        members = np.flatnonzero(cand_labels == c)
        if len(members):
            typ = typicality(cand[members], neighbors)
            ranked[c] = members[np.argsort(-typ, kind="stable")].tolist()
    picks: list[int] = []
    # One per cluster in order, again and again; outlier clusters only once the rest run out.
    for group in ([c for c in order if not small[c]], [c for c in order if small[c]]):
        while len(picks) < k and any(ranked.get(c) for c in group):
            for c in group:
                if ranked.get(c) and len(picks) < k:
                    picks.append(int(sample[ranked[c].pop(0)]))
    return np.asarray(picks, dtype=np.int64)


def _kmeans(points: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster labels of ``points``: k-means (mini-batch on large inputs), seeded from ``rng``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    seed = int(rng.integers(2**31 - 1))
    if clusters <= 1:
        return np.zeros(len(points), dtype=np.int64)
    if len(points) > 10_000:
        model = MiniBatchKMeans(clusters, random_state=seed, n_init=3, batch_size=4096)
    else:
        model = KMeans(clusters, random_state=seed, n_init=1)
    with warnings.catch_warnings():  # duplicates give fewer distinct clusters: that is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit_predict(points.astype(np.float32)).astype(np.int64)
