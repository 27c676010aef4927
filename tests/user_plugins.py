"""A user's own model factory and sampler, outside the package, used by import string.

It lives beside the tests because Ray workers inherit the driver's ``sys.path`` at ``ray.init``,
which is how a user's own module reaches the scorer actors too.
"""

from __future__ import annotations

import numpy as np
from torch import nn

BUILT: list[int] = []


def tiny_mlp(num_classes: int, *, shape: tuple[int, int, int], hidden: int = 16) -> nn.Module:
    """An MLP classifier; ``hidden`` comes from ``model.kwargs``."""
    c, h, w = shape
    BUILT.append(hidden)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def lazy_cnn(num_classes: int, *, dropout: float = 0.25) -> nn.Module:
    """A CNN written with lazy layers: no input shape anywhere in the user's code."""
    return nn.Sequential(
        nn.LazyConv2d(8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.LazyLinear(num_classes),
    )


def not_a_model(num_classes: int) -> str:
    """Returns the wrong thing, to check the error users get."""
    return f"{num_classes} classes"


def first_class_doubt(probs: np.ndarray) -> np.ndarray:
    """Ask first about items the model thinks are unlikely to be class 0."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError("probs must be 2-D")
    return 1.0 - p[:, 0]
