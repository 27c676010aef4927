"""Least confidence: how far the top class is from certain."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_probs, clip_unit
from activestream.samplers.registry import register


@register("least_confidence")
def least_confidence(probs: ArrayLike) -> np.ndarray:
    """Score = (1 - p1) * C / (C - 1), with p1 the largest probability of the row.

    The classic uncertainty sampler (Settles 2009, "Active Learning Literature Survey",
    section 3.1): ask about the items whose best guess is least likely to be right. The
    C / (C - 1) factor rescales so the uniform row (p1 = 1/C) scores exactly 1 whatever C,
    which keeps scores comparable across tasks and in [0, 1].

    Args:
        probs: (N, C) class probabilities, rows summing to 1.

    Returns:
        (N,) float64 scores in [0, 1]; 0 for a one-hot row, 1 for the uniform row.

    By hand, p1 = 0.7 and C = 3: (1 - 0.7) * 3 / 2 = 0.45.

    >>> least_confidence([[0.7, 0.2, 0.1], [1/3, 1/3, 1/3], [0.0, 1.0, 0.0]]).round(4).tolist()
    [0.45, 1.0, 0.0]
    """
    p = check_probs(probs)  # (N, C)
    n_classes = p.shape[1]
    top = p.max(axis=1)  # (N,)
    return clip_unit((1.0 - top) * (n_classes / (n_classes - 1)))  # (N,)
