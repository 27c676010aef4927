"""Ratio: the runner-up class relative to the top class."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_probs, clip_unit
from activestream.samplers.margin import top_two
from activestream.samplers.registry import register


@register("ratio")
def ratio(probs: ArrayLike) -> np.ndarray:
    """Score = p2 / p1, with p1 >= p2 the two largest probabilities of the row.

    Ratio of confidence (Munro 2021, "Human-in-the-Loop Machine Learning", chapter 3; a
    variant of margin sampling in Settles 2009, "Active Learning Literature Survey"): like
    margin, but relative, so a 0.2 vs 0.1 split counts as close as 0.6 vs 0.3. p1 >= 1/C > 0
    for a valid row, so the division is always defined.

    Args:
        probs: (N, C) class probabilities, rows summing to 1.

    Returns:
        (N,) float64 scores in [0, 1]; 0 for a one-hot row, 1 when p1 == p2.

    By hand, p = [0.7, 0.2, 0.1]: 0.2 / 0.7 = 2/7 = 0.2857.

    >>> ratio([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.0, 0.0, 1.0]]).round(4).tolist()
    [0.2857, 0.5, 0.0]
    """
    p = check_probs(probs)  # (N, C)
    p1, p2 = top_two(p)  # (N,), (N,)
    return clip_unit(p2 / p1)  # (N,)
