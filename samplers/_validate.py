"""Input checks shared by every sampler, so all of them reject bad input the same way.

Samplers sit at the end of a model and at the start of a labeling budget: a NaN or an
unnormalised row silently turns into a confident-looking score and wastes human time. So every
public function checks its input here first and fails loudly with a message naming the problem.
"""

from __future__ import annotations

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
    try:
        arr = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric (N, C) array: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, C) array, got {arr.ndim}-D shape {arr.shape}")
    n_classes = arr.shape[1]
    if n_classes == 0:
        raise ValueError(f"{name} has an empty class axis (shape {arr.shape})")
    if n_classes < 2:
        raise ValueError(f"{name} needs at least 2 classes, got C={n_classes}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (arr < 0).any():
        raise ValueError(f"{name} contains negative values")
    sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_ATOL)
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"{name} rows must sum to 1 (within {ROW_SUM_ATOL}); row {row} sums to {sums[row]:.6g}"
        )
    return arr


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
