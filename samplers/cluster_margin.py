"""Cluster-margin: the most uncertain candidates, spread round-robin over embedding clusters.

Citovsky et al. 2021, "Batch Active Learning at Scale" (cluster-margin): take a pool of
low-margin candidates, cluster their embeddings, sort the clusters by size ascending and pick
round-robin, one item per cluster per round, until the batch is full. Small clusters go first,
so rare kinds of confusing items are not crowded out by one large blob of near-duplicates.

Differences from the paper, which clusters the whole pool once with average-linkage
agglomerative clustering and picks a random member per cluster: here the caller passes the
candidate pool (e.g. the top candidates by margin), it is clustered on each call with a small
seeded k-means (greedy k-means++ initialisation, at most :data:`MAX_ITER` Lloyd iterations,
the lowest-inertia of :data:`N_INIT` restarts), and each cluster yields its highest-scored
remaining member, so the rng only drives the clustering. Like the paper's clustering, it
recovers well-separated groups of candidates, so each such group gets a pick.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_batch_inputs, check_count
from activestream.samplers.margin import margin
from activestream.samplers.registry import register

#: Most Lloyd iterations of :func:`kmeans`; it stops earlier once the labels stop changing.
MAX_ITER = 20
#: Default number of seeded restarts of :func:`kmeans`; the lowest-inertia one wins.
N_INIT = 4


def _normalise(x: np.ndarray) -> np.ndarray:
    """Scale (N, D) points into [-1, 1], then center them -> (N, D) with every |value| <= 2.

    k-means labels are invariant under translation and uniform scaling; this keeps the squares
    below from overflowing and their rounding relative to the data's own spread.
    """
    top = float(np.abs(x).max())
    z = x / top if top > 0 else x.copy()  # (N, D)
    return z - z.mean(axis=0)  # (N, D)


def _sq_dists(z: np.ndarray, z_sq: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances |z|^2 - 2 z.c + |c|^2 of (N, D) points to (M, D) centers -> (N, M).

    One BLAS product instead of an (N, M, D) difference array; clipped at 0 against rounding.
    """
    c_sq = np.einsum("md,md->m", c, c)  # (M,)
    return np.maximum(z_sq[:, None] - 2.0 * (z @ c.T) + c_sq[None, :], 0.0)  # (N, M)


def _seed(
    z: np.ndarray, z_sq: np.ndarray, n_clusters: int, n_init: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy k-means++ centers of (N, D) points for ``n_init`` runs at once -> (R, K, D).

    Per run: the first center is a uniform point. Each next one: draw ``2 + floor(ln K)``
    candidates with probability proportional to D(x)^2, the squared distance to the nearest
    center so far, and keep the candidate leaving the smallest potential sum_x D(x)^2 (the
    first on ties). The runs share one distance product per step.
    """
    n = z.shape[0]
    trials = 2 + int(math.log(n_clusters))
    runs = np.arange(n_init)  # (R,)
    chosen = np.empty((n_init, n_clusters), dtype=np.int64)  # (R, K)
    chosen[:, 0] = rng.integers(n, size=n_init)
    nearest = _sq_dists(z, z_sq, z[chosen[:, 0]]).T  # (R, N)
    for j in range(1, n_clusters):
        cum = np.cumsum(nearest, axis=1)  # (R, N)
        u = rng.random((n_init, trials)) * cum[:, -1:]  # (R, L), uniform in [0, total)
        # Inverse CDF: the first point whose cumulative D^2 exceeds u; a zero-D^2 point never
        # is unless every point sits on a center (total 0), and then any point will do.
        cand = np.minimum((cum[:, None, :] <= u[:, :, None]).sum(axis=2), n - 1)  # (R, L)
        d = _sq_dists(z, z_sq, z[cand.ravel()]).T.reshape(n_init, trials, n)  # (R, L, N)
        d = np.minimum(d, nearest[:, None, :])  # (R, L, N), D^2 with each candidate added
        best = d.sum(axis=2).argmin(axis=1)  # (R,)
        chosen[:, j] = cand[runs, best]
        nearest = d[runs, best]  # (R, N)
    return z[chosen]  # (R, K, D)


def _lloyd(z: np.ndarray, centers: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations of R runs from (R, K, D) centers -> (R, N) int64 labels, (R,) inertia.

    The runs share one distance product per iteration; all stop once no run's labels change
    (a converged run stays put meanwhile: its centers are its clusters' means already).
    """
    n_init, n_clusters, dim = centers.shape
    n = z.shape[0]
    flat_centers = centers.reshape(n_init * n_clusters, dim)  # (R*K, D), a view
    offset = (np.arange(n_init) * n_clusters)[:, None]  # (R, 1), run r's clusters in R*K
    labels = np.full((n_init, n), -1, dtype=np.int64)  # (R, N)
    for _ in range(max_iter):
        # Nearest center by |c|^2 - 2 z.c (|z|^2 is the same for every center of a point).
        c_sq = np.einsum("md,md->m", flat_centers, flat_centers)  # (R*K,)
        cost = (c_sq[None, :] - 2.0 * (z @ flat_centers.T)).reshape(n, n_init, n_clusters)
        new = cost.argmin(axis=2).T.astype(np.int64)  # (N, R, K) -> (R, N)
        if np.array_equal(new, labels):
            break
        labels = new
        flat = (labels + offset).ravel()  # (R*N,), cluster ids across runs
        counts = np.bincount(flat, minlength=n_init * n_clusters)  # (R*K,)
        full = counts > 0
        starts = (np.cumsum(counts) - counts)[full]  # (P,), each cluster's run in the sort
        members = z[np.argsort(flat, kind="stable") % n]  # (R*N, D), grouped by cluster
        flat_centers[full] = np.add.reduceat(members, starts, axis=0) / counts[full, None]
    # Each center is now its cluster's mean (or empty): the runs' sums of squared errors.
    diff = z[None, :, :] - np.take_along_axis(centers, labels[:, :, None], axis=1)  # (R, N, D)
    return labels, np.einsum("rnd,rnd->r", diff, diff)


def kmeans(
    x: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    max_iter: int = MAX_ITER,
    n_init: int = N_INIT,
) -> np.ndarray:
    """Label (N, D) points with one of ``n_clusters`` k-means clusters -> (N,) int64.

    Minimises the inertia sum_i |x_i - mu_{c(i)}|^2 (mu_j: the mean of cluster j) locally,
    ``n_init`` times, and returns the labels of the lowest-inertia run (the first on ties).
    Each run starts from greedy k-means++ seeding (Arthur & Vassilvitskii 2007, sec. 6; as in
    scikit-learn): the first center is a uniform point; for each next one, ``2 + floor(ln K)``
    candidates are drawn with probability proportional to their squared distance to the
    nearest center so far, and the one leaving the smallest total squared distance is kept.
    Then Lloyd iterations: assign each point to its nearest center (distances from the
    ``|x|^2 - 2 x.c + |c|^2`` expansion on centered, rescaled points, so near-ties may go
    either way), move each center to its members' mean (an empty cluster keeps its center),
    until the labels stop changing or after ``max_iter`` iterations. The runs go in lockstep,
    sharing one BLAS product per seeding step and per iteration. Restarts and greedy
    seeding make it recover well-separated blobs when ``n_clusters`` equals their number: a
    single plain k-means++ run that seeds two centers in one blob merges two others. Some
    clusters can end up empty when points coincide. Unchecked input: callers validate; needs
    1 <= n_clusters <= N.

    Args:
        x: (N, D) finite points.
        n_clusters: Number of clusters K, 1 <= K <= N.
        rng: Draws the seeding of every run (never numpy's global state).
        max_iter: Most Lloyd iterations per run.
        n_init: Number of runs, >= 1.

    Returns:
        (N,) int64 cluster labels in [0, n_clusters).

    Raises:
        ValueError: ``n_init`` < 1.

    By hand, the pairs {0, 1}, {10, 11}, {20, 21} give inertia 3 * 2 * 0.5^2 = 1.5. With two
    centers in the third pair, {0, 1, 10, 11}, {20}, {21} is a Lloyd fixed point too (11 is
    5.5 from the mean 5.5, 9 from 20), of inertia 2 * 5.5^2 + 2 * 4.5^2 = 101: a lone run can
    stop there; the lowest-inertia run does not.

    >>> a, b, c, d = kmeans(np.array([[0.0], [1.0], [10.0], [11.0]]), 2, np.random.default_rng(0))
    >>> bool(a == b != c == d)
    True
    >>> labels = kmeans(np.array([[0.0], [1.0], [10.0], [11.0], [20.0], [21.0]]), 3,
    ...                 np.random.default_rng(0))
    >>> len({(int(labels[i]), int(labels[i + 1])) for i in (0, 2, 4)}), len(set(labels.tolist()))
    (3, 3)
    >>> bool(all(labels[i] == labels[i + 1] for i in (0, 2, 4)))
    True
    """
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init!r}")
    z = _normalise(np.asarray(x, dtype=np.float64))  # (N, D)
    z_sq = np.einsum("nd,nd->n", z, z)  # (N,)
    labels, inertia = _lloyd(z, _seed(z, z_sq, n_clusters, n_init, rng), max_iter)  # (R, N), (R,)
    return labels[int(np.argmin(inertia))]  # (N,), the first lowest


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
