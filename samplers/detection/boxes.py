"""Detector output as flat arrays, and the two operations every detection sampler needs.

Boxes are ``[x1, y1, x2, y2]`` in pixels here (what torchvision detectors return); labels on
the wire are COCO's ``[x, y, w, h]`` and are converted where they are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_probs

Aggregate = Literal["max", "mean", "sum"]


@dataclass(frozen=True)
class Detections:
    """A detector's boxes for N images, flat: image i owns the next ``counts[i]`` rows.

    Build it with :func:`check_detections`, which validates and converts.

    Attributes:
        boxes: (M, 4) float64 ``[x1, y1, x2, y2]`` in pixels.
        probs: (M, C) float64 class probabilities of each box, rows summing to 1.
        scores: (M,) float64 detection confidence of each box, in [0, 1].
        counts: (N,) int64 boxes per image, summing to M.
    """

    boxes: np.ndarray
    probs: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    @property
    def image_of(self) -> np.ndarray:
        """(M,) int64: the image each box belongs to."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


def check_detections(
    boxes: ArrayLike, probs: ArrayLike, scores: ArrayLike, counts: ArrayLike
) -> Detections:
    """Validate a detector's flat output; ValueError naming the first problem.

    >>> d = check_detections([[0, 0, 2, 2]], [[0.5, 0.5]], [0.9], [0, 1])
    >>> d.counts.tolist(), d.image_of.tolist()
    ([0, 1], [1])
    >>> check_detections([[0, 0, 2, 2]], [[0.5, 0.5]], [0.9], [2])
    Traceback (most recent call last):
    ...
    ValueError: counts sum to 2 but there are 1 boxes
    """
    c = np.asarray(counts)
    if c.ndim != 1 or (c.size and (not np.issubdtype(c.dtype, np.integer) or (c < 0).any())):
        raise ValueError(f"counts must be a 1-D array of non-negative integers, got {c!r}")
    c = c.astype(np.int64)
    b = np.asarray(boxes, dtype=np.float64)
    b = b.reshape(0, 4) if b.size == 0 else b  # no box at all: [] is (0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be an (M, 4) array, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError("boxes must be finite")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError("boxes must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1")
    m = len(b)
    if int(c.sum()) != m:
        raise ValueError(f"counts sum to {int(c.sum())} but there are {m} boxes")
    raw = np.asarray(probs, dtype=np.float64)
    if m and raw.ndim == 2 and raw.shape[1] == 1:  # a one-class detector: every row is [1]
        if not np.allclose(raw, 1.0, atol=1e-3):
            raise ValueError("probs of a one-class detector must all be 1")
        p = raw
    elif m:
        p = check_probs(raw)  # (M, C)
    else:
        p = np.zeros((0, raw.shape[1] if raw.ndim == 2 else 0))
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(p) != m or len(s) != m:
        raise ValueError(f"{m} boxes need {m} probability rows and scores, got {len(p)}, {len(s)}")
    if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError("scores must lie in [0, 1]")
    return Detections(b, p, s, c)


def aggregate(values: ArrayLike, counts: ArrayLike, how: Aggregate) -> np.ndarray:
    """(M,) per-box values -> (N,) per image, by ``max``, ``mean`` or ``sum``; 0 with no box.

    By hand, values [0.2, 0.8 | - | 0.5] over counts [2, 0, 1]: max [0.8, 0, 0.5], mean
    [0.5, 0, 0.5], sum [1.0, 0, 0.5].

    >>> aggregate([0.2, 0.8, 0.5], [2, 0, 1], "max").tolist()
    [0.8, 0.0, 0.5]
    >>> aggregate([0.2, 0.8, 0.5], [2, 0, 1], "mean").tolist()
    [0.5, 0.0, 0.5]
    >>> aggregate([0.2, 0.8, 0.5], [2, 0, 1], "sum").tolist()
    [1.0, 0.0, 0.5]
    """
    v = np.asarray(values, dtype=np.float64)  # (M,)
    c = np.asarray(counts, dtype=np.int64)  # (N,)
    image = np.repeat(np.arange(len(c)), c)  # (M,)
    total = np.bincount(image, weights=v, minlength=len(c)).astype(np.float64)  # (N,)
    if how == "sum":
        return total
    if how == "mean":
        return np.divide(total, c, out=np.zeros(len(c)), where=c > 0)
    if how == "max":
        top = np.zeros(len(c))  # values are >= 0: an image with no box stays 0
        np.maximum.at(top, image, v)
        return top
    raise ValueError(f"unknown aggregate {how!r}; choose from max, mean, sum")


def iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """(K, 4) x (L, 4) ``[x1, y1, x2, y2]`` boxes -> (K, L) intersection over union.

    By hand: [0, 0, 2, 2] and [1, 0, 3, 2] overlap in a 1 x 2 strip, area 2, over a union of
    4 + 4 - 2 = 6, so 1/3. Two empty boxes have IoU 0, not NaN.

    >>> iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [0, 0, 2, 2]]).round(4).tolist()
    [[0.3333, 1.0]]
    """
    p = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]  # (K, 1, 4)
    q = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]  # (1, L, 4)
    w = np.clip(np.minimum(p[..., 2], q[..., 2]) - np.maximum(p[..., 0], q[..., 0]), 0, None)
    h = np.clip(np.minimum(p[..., 3], q[..., 3]) - np.maximum(p[..., 1], q[..., 1]), 0, None)
    inter = w * h  # (K, L)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    union = area(p) + area(q) - inter  # (K, L)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
