"""Localization-aware: how well the boxes survive a horizontal flip of the image.

Class uncertainty misses a detector that knows *what* it sees but not *where*. Flipping the
image and mapping the boxes found on it back is a cheap second opinion on the boxes themselves
(consistency under augmentation: Elezi et al. 2022, "Not All Labels Are Equal: Rationalizing
the Labeling Costs for Training Object Detection"; Kao et al. 2018, "Localization-Aware Active
Learning for Object Detection", measure the same stability under noise): where the two passes
agree the boxes are stable; where they disagree a person's boxes teach the most.

This module also registers ``random``, the baseline every detection sampler must beat.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activestream.samplers.detection.boxes import Detections, iou
from activestream.samplers.detection.registry import DetectionSamplerSpec, add
from activestream.samplers.detection.uncertainty import SCORE_FLOOR


def flip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """(M, 4) ``[x1, y1, x2, y2]`` boxes of an image ``width`` wide, mirrored left-right.

    Its own inverse: boxes found on the flipped image, flipped again, are in the image's frame.

    >>> flip_boxes(np.array([[1.0, 0.0, 3.0, 2.0]]), 10).tolist()
    [[7.0, 0.0, 9.0, 2.0]]
    """
    out = boxes.astype(np.float64, copy=True)  # (M, 4)
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def _best_match(a: np.ndarray, a_cls: np.ndarray, b: np.ndarray, b_cls: np.ndarray) -> np.ndarray:
    """(K,) best IoU of each box in ``a`` with a box of the same class in ``b`` (0 if none)."""
    if not len(a) or not len(b):
        return np.zeros(len(a))
    overlap = iou(a, b) * (a_cls[:, None] == b_cls[None, :])  # (K, L)
    return overlap.max(axis=1)  # (K,)


def flip_consistency(
    det: Detections, flipped: Detections, floor: float = SCORE_FLOOR
) -> np.ndarray:
    """Score_i = 1 - mean over both passes' boxes of the best same-class IoU in the other pass.

    Only boxes scoring at least ``floor`` count, in both passes. An image where neither pass
    finds a box scores 0 (nothing to disagree on); one where a single pass finds boxes scores 1.

    Args:
        det: Boxes found on the images.
        flipped: Boxes found on the mirrored images, mapped back with :func:`flip_boxes`.
        floor: Boxes with a detection score below it do not count.

    Returns:
        (N,) float64 scores in [0, 1].

    By hand: image 0 has [0, 0, 2, 2] in one pass and [1, 0, 3, 2] in the other, same class:
    IoU 1/3 both ways, score 1 - 1/3 = 0.6667. Image 1 has a box in the first pass only: 1.
    Image 2 has none: 0.

    >>> from activestream.samplers.detection.boxes import check_detections
    >>> a = check_detections([[0, 0, 2, 2], [5, 5, 6, 6]], [[1, 0], [1, 0]], [0.9, 0.9], [1, 1, 0])
    >>> b = check_detections([[1, 0, 3, 2]], [[0.9, 0.1]], [0.8], [1, 0, 0])
    >>> flip_consistency(a, b).round(4).tolist()
    [0.6667, 1.0, 0.0]
    """
    if len(det.counts) != len(flipped.counts):
        raise ValueError(
            f"both passes must cover the same images: {len(det.counts)} and {len(flipped.counts)}"
        )
    out = np.zeros(len(det.counts))  # (N,)
    passes = []
    for d in (det, flipped):
        kept = d.scores >= floor  # (M,)
        probs = d.probs[kept]  # (K, C); C may be 0 when a pass found nothing at all
        cls = probs.argmax(axis=1) if probs.size else np.zeros(len(probs), np.int64)
        image = d.image_of[kept]
        passes.append((d.boxes[kept], cls, image))
    (a, a_cls, a_img), (b, b_cls, b_img) = passes
    for i in np.union1d(a_img, b_img):
        ai, bi = a_img == i, b_img == i
        agree = np.concatenate(
            [
                _best_match(a[ai], a_cls[ai], b[bi], b_cls[bi]),
                _best_match(b[bi], b_cls[bi], a[ai], a_cls[ai]),
            ]
        )
        out[i] = 1.0 - agree.mean()
    return np.clip(out, 0.0, 1.0)


def _flip_factory(_rng: np.random.Generator) -> Callable[..., np.ndarray]:
    return flip_consistency


def _random_factory(rng: np.random.Generator) -> Callable[[Detections], np.ndarray]:
    def score(det: Detections) -> np.ndarray:
        return rng.random(len(det.counts))  # (N,), fresh with every call

    return score


add(DetectionSamplerSpec("flip_consistency", _flip_factory, inputs=("detections", "flipped")))
add(DetectionSamplerSpec("random", _random_factory, deterministic=False))
