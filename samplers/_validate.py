"""Input checks shared by every sampler, so all of them reject bad input the same way.

Samplers sit at the end of a model and at the start of a labeling budget: a NaN or an
unnormalised row silently turns into a confident-looking score and wastes human time. So every
public function checks its input here first and fails loudly with a message naming the problem.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

#: How far a row may sum from 1. Loose enough for float32 softmax outputs, tight enough to
#: catch logits or unnormalised counts passed by mistake.
ROW_SUM_ATOL = 1e-3


def check_probs(probs: Any, *, name: str = "probs") -> np.ndarray:
    """Return ``probs`` as a float64 (N, C) array, or raise ValueError naming what is wrong.

    Args:
        probs: Array-like of class probabilities, one row per item.
        name: How the argument is called in error messages.

    Returns:
        The same values as a float64 ndarray (no copy when already float64).

    Raises:
        ValueError: Not numeric, not 2-D, an empty class axis, fewer than 2 classes, NaN or
            inf, negative values, or a row not summing to 1 within ``ROW_SUM_ATOL``.

    >>> check_probs([[0.25, 0.75]]).shape
    (1, 2)
    >>> check_probs([[0.5, 0.6]])
    Traceback (most recent call last):
    ...
    ValueError: probs rows must sum to 1 (within 0.001); row 0 sums to 1.1
    """
    return _distributions(probs, "(N, C)", name)


def _numeric(value: Any, dims: str, name: str) -> np.ndarray:
    """Float64 array with as many axes as ``dims`` names (e.g. "(N, D)"), or ValueError."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric {dims} array: {exc}") from exc
    ndim = len(dims.strip("(,)").split(","))
    if arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D {dims} array, got {arr.ndim}-D shape {arr.shape}"
        )
    return arr


def _distributions(value: Any, dims: str, name: str) -> np.ndarray:
    """Float64 array of shape ``dims`` (e.g. "(T, N, C)"), distributions along its last axis."""
    arr = _numeric(value, dims, name)
    if arr.ndim == 3 and arr.shape[0] == 0:
        raise ValueError(f"{name} needs at least 1 stochastic pass, got T=0 (shape {arr.shape})")
    n_classes = arr.shape[-1]
    if n_classes == 0:
        raise ValueError(f"{name} has an empty class axis (shape {arr.shape})")
    if n_classes < 2:
        raise ValueError(f"{name} needs at least 2 classes, got C={n_classes}")
    _check_rows(arr, name)
    return arr


def _check_rows(arr: np.ndarray, name: str) -> None:
    """Raise ValueError unless every row along the last axis is a probability distribution."""
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (arr < 0).any():
        raise ValueError(f"{name} contains negative values")
    sums = arr.sum(axis=-1)  # (...,)
    bad = np.argwhere(np.abs(sums - 1.0) > ROW_SUM_ATOL)  # (n_bad, arr.ndim - 1)
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        row = where[0] if len(where) == 1 else where
        total = sums[where]
        raise ValueError(
            f"{name} rows must sum to 1 (within {ROW_SUM_ATOL}); row {row} sums to {total:.6g}"
        )


def check_samples(samples: Any, *, name: str = "samples") -> np.ndarray:
    """Return ``samples`` as a float64 (T, N, C) array of T stochastic passes, or raise.

    The MC-dropout counterpart of :func:`check_probs`: every (t, n) row must be a probability
    distribution over the C classes.

    Raises:
        ValueError: Not numeric, not 3-D, no passes (T = 0), an empty class axis, fewer than 2
            classes, NaN or inf, negative values, or a (t, n) row not summing to 1 within
            ``ROW_SUM_ATOL``.

    >>> check_samples([[[0.25, 0.75]], [[0.5, 0.5]]]).shape
    (2, 1, 2)
    >>> check_samples([[[0.5, 0.5]], [[0.5, 0.6]]])
    Traceback (most recent call last):
    ...
    ValueError: samples rows must sum to 1 (within 0.001); row (1, 0) sums to 1.1
    """
    return _distributions(samples, "(T, N, C)", name)


def check_row(probs: Any, *, name: str = "probs") -> np.ndarray:
    """Return one record's class probabilities as a float64 (C,) array, or raise ValueError.

    >>> check_row([0.2, 0.8]).tolist()
    [0.2, 0.8]
    >>> check_row([[0.2, 0.8]])
    Traceback (most recent call last):
    ...
    ValueError: probs must be a 1-D (C,) array, got 2-D shape (1, 2)
    """
    arr = _numeric(probs, "(C,)", name)
    return check_probs(arr[None, :], name=name)[0]  # (1, C) -> (C,)


def check_embeddings(embeddings: Any, *, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a float64 (N, D) array of finite values, or raise ValueError.

    Raises:
        ValueError: Not numeric, not 2-D, an empty feature axis (D = 0), or NaN or inf.

    >>> check_embeddings([[0.0, 1.0], [2.0, 3.0]]).shape
    (2, 2)
    """
    arr = _numeric(embeddings, "(N, D)", name)
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has an empty feature axis (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def sample_embeddings(
    embeddings: Any, max_points: int, rng: np.random.Generator, *, name: str = "embeddings"
) -> tuple[np.ndarray, np.ndarray]:
    """A uniform sample of at most ``max_points`` rows: (indices (M,), rows as float64 (M, D)).

    Only the sample is copied and checked (see :func:`check_embeddings`), so a pool of a
    million float32 embeddings is never converted whole; a bad row outside the sample goes
    unnoticed, which costs nothing because it is never read.

    >>> idx, rows = sample_embeddings(np.ones((5, 2), np.float32), 3, np.random.default_rng(0))
    >>> idx.shape, rows.dtype
    ((3,), dtype('float64'))
    """
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        check_embeddings(arr, name=name)  # raises, naming the shape it got
    n = len(arr)
    sample = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else np.arange(n)
    return sample, check_embeddings(arr[sample], name=name)


def check_count(k: Any, *, name: str = "k") -> int:
    """Return ``k`` as an int >= 0, or raise ValueError (bools are not counts).

    >>> check_count(np.int64(3))
    3
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {k!r}")
    return int(k)


def check_batch_inputs(scores: Any, embeddings: Any, k: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate the arguments of a batch selector: (N,) scores, (N, D) embeddings, k >= 0.

    Raises:
        ValueError: Any of them invalid, or scores and embeddings of different lengths.

    >>> s, x, k = check_batch_inputs([0.1, 0.9], [[0.0], [1.0]], 1)
    >>> s.shape, x.shape, k
    ((2,), (2, 1), 1)
    """
    s = check_scores(scores)  # (N,)
    x = check_embeddings(embeddings)  # (N, D)
    if s.shape[0] != x.shape[0]:
        raise ValueError(
            f"scores and embeddings must have the same length, got {s.shape[0]} and {x.shape[0]}"
        )
    return s, x, check_count(k)


def sq_dists(x: np.ndarray, centers: np.ndarray, *, block: int = 1 << 20) -> np.ndarray:
    """Squared Euclidean distances between (N, D) points and (K, D) centers -> (N, K).

    Computed from the differences, not the ``|x|^2 - 2 x.c + |c|^2`` expansion, so identical
    points are exactly 0 apart; rows go in chunks of about ``block`` floats to bound memory.

    >>> sq_dists(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]])).tolist()
    [[0.0], [25.0]]
    """
    n, dim = x.shape
    k = centers.shape[0]
    out = np.empty((n, k), dtype=np.float64)  # (N, K)
    step = max(1, block // max(1, k * dim))
    for start in range(0, n, step):
        diff = x[start : start + step, None, :] - centers[None, :, :]  # (b, K, D)
        np.einsum("bkd,bkd->bk", diff, diff, out=out[start : start + step])
    return out


def check_scores(scores: Any, *, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a float64 (N,) array, or raise ValueError.

    NaN is rejected because it has no place in an ordering: ``argsort`` puts it last, a
    descending sort by negation puts it last too, and either way the error would go unnoticed.
    Infinities are allowed; they order fine.

    Raises:
        ValueError: Not numeric, not 1-D, or containing NaN.

    >>> check_scores([0.5, float("inf")]).tolist()
    [0.5, inf]
    """
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric 1-D array: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got {arr.ndim}-D shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def clip_unit(scores: np.ndarray) -> np.ndarray:
    """Clip float error (e.g. 1.0000000000000002) back into [0, 1], in place.

    Also turns -0.0 (from negating an all-zero sum) into 0.0, so one-hot rows print as 0.

    >>> clip_unit(np.array([-1e-17, 1.0000000000000002, -0.0])).tolist()
    [0.0, 1.0, 0.0]
    """
    np.clip(scores, 0.0, 1.0, out=scores)
    scores += 0.0  # -0.0 + 0.0 == +0.0
    return scores
