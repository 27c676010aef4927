"""Entropy: uncertainty over all classes at once."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_probs, clip_unit
from activestream.samplers.registry import register


def shannon_nats(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each distribution along the last axis, with 0 log 0 = 0.

    Works on any leading shape: (N, C) -> (N,), (T, N, C) -> (T, N). Unnormalised, unchecked:
    callers validate first.

    >>> shannon_nats(np.array([[0.5, 0.5], [1.0, 0.0]])).round(4).tolist()
    [0.6931, 0.0]
    """
    log_p = np.zeros_like(p)  # (..., C), stays 0 where p == 0
    np.log(p, out=log_p, where=p > 0)
    return 0.0 - (p * log_p).sum(axis=-1)  # (...,), 0 - 0 = +0.0 (not -0.0) for one-hot rows


@register("entropy")
def entropy(probs: ArrayLike) -> np.ndarray:
    """Score = -sum_c p_c log p_c / log C, with 0 log 0 = 0.

    Entropy sampling (Settles 2009, "Active Learning Literature Survey", section 3.1): the
    Shannon entropy of the predicted distribution, using the whole row rather than the top one
    or two classes. Dividing by log C (the entropy of the uniform row) keeps scores in [0, 1]
    whatever the number of classes. Zero probabilities contribute nothing (the limit of
    p log p as p -> 0), so one-hot rows score exactly 0 instead of NaN.

    Args:
        probs: (N, C) class probabilities, rows summing to 1.

    Returns:
        (N,) float64 scores in [0, 1]; 0 for a one-hot row, 1 for the uniform row.

    By hand, p = [0.5, 0.5, 0]: (0.5 log 2 + 0.5 log 2 + 0) / log 3 = log 2 / log 3 = 0.6309.

    >>> entropy([[0.5, 0.5, 0.0], [1/3, 1/3, 1/3], [1.0, 0.0, 0.0]]).round(4).tolist()
    [0.6309, 1.0, 0.0]
    """
    p = check_probs(probs)  # (N, C)
    h = shannon_nats(p)  # (N,)
    return clip_unit(h / np.log(p.shape[1]))  # (N,)
