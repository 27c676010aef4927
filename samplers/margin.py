"""Margin: how close the runner-up class is to the top class."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_probs, clip_unit
from activestream.samplers.registry import register


def top_two(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the largest and second-largest value of each row of a (N, C) array, C >= 2.

    ``np.partition`` at C - 2 puts the second largest at C - 2 and the largest after it, in
    O(C) per row. The seed project sorted ascending and took the first two columns, i.e. the
    two *smallest* probabilities; pin the right ones here, once, for margin and ratio.

    >>> p1, p2 = top_two(np.array([[0.1, 0.7, 0.2]]))
    >>> p1.tolist(), p2.tolist()
    ([0.7], [0.2])
    """
    n_classes = p.shape[1]
    part = np.partition(p, n_classes - 2, axis=1)  # (N, C), [:, -2] <= [:, -1] = max
    return part[:, -1], part[:, -2]  # (N,), (N,)


@register("margin")
def margin(probs: ArrayLike) -> np.ndarray:
    """Score = 1 - (p1 - p2), with p1 >= p2 the two largest probabilities of the row.

    Margin sampling (Settles 2009, "Active Learning Literature Survey", section 3.1; Munro
    2021, "Human-in-the-Loop Machine Learning", chapter 3): a small gap between the two best
    classes means the model cannot decide between them, which a label resolves directly.
    Unlike least confidence it ignores how the remaining mass is spread over other classes.

    Args:
        probs: (N, C) class probabilities, rows summing to 1.

    Returns:
        (N,) float64 scores in [0, 1]; 0 for a one-hot row, 1 when p1 == p2.

    By hand, p = [0.7, 0.2, 0.1]: 1 - (0.7 - 0.2) = 0.5 (not 1 - (0.2 - 0.1), the two
    smallest, which was the seed project's bug).

    >>> margin([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.5, 0.5, 0.0]]).round(4).tolist()
    [0.5, 0.5, 1.0]
    """
    p = check_probs(probs)  # (N, C)
    p1, p2 = top_two(p)  # (N,), (N,)
    return clip_unit(1.0 - (p1 - p2))  # (N,)
