"""Image-level uncertainty from per-box class uncertainty: entropy or margin, by max/mean/sum.

A detector is unsure of an image when it is unsure what the objects it found are. Each box
above a score floor gets the classification sampler's score of its class distribution
(:func:`~activestream.samplers.entropy.entropy` or :func:`~activestream.samplers.margin.margin`,
both in [0, 1]); the image's score aggregates them (Haussmann et al. 2020, "Scalable Active
Learning for Object Detection", section 3: max and sum/average over the boxes of an image;
Brust et al. 2019, "Active Learning for Deep Object Detection", for the sum and average).

* ``max``: the single most confusing object; does not grow with clutter.
* ``mean``: the typical object; an image with one confusing object among many sure ones
  scores low.
* ``sum``: total confusion; favours crowded images (scores in [0, n_i], not [0, 1]).

Boxes scoring below ``SCORE_FLOOR`` are background the detector already rejects; counting
them would make every image's score a measure of its low-confidence clutter. An image with no
box above the floor scores 0: it looks empty to the model, and ``random`` exploration (the
queue's share of random picks) is what finds the objects a cold model misses.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activestream.samplers.detection.boxes import Aggregate, Detections, aggregate
from activestream.samplers.detection.registry import DetectionSamplerSpec, add
from activestream.samplers.entropy import entropy
from activestream.samplers.margin import margin

#: Detection confidence below which a box is not counted (torchvision's FCOS and RetinaNet
#: keep boxes from 0.05 for mAP; 0.3 is where most kept boxes are still real objects).
SCORE_FLOOR = 0.3
PER_BOX: dict[str, Callable[[np.ndarray], np.ndarray]] = {"entropy": entropy, "margin": margin}


def box_uncertainty(
    det: Detections, per_box: str = "entropy", how: Aggregate = "max", floor: float = SCORE_FLOOR
) -> np.ndarray:
    """Score_i = agg over image i's boxes with score >= floor of u(class probabilities).

    Args:
        det: The detector's boxes (:func:`~.boxes.check_detections`).
        per_box: ``entropy`` or ``margin``: the per-box uncertainty u, in [0, 1].
        how: ``max``, ``mean`` or ``sum`` over an image's counted boxes.
        floor: Boxes with a detection score below it do not count.

    Returns:
        (N,) float64; in [0, 1] for max and mean, [0, n_i] for sum; 0 with no counted box.

    By hand, two images; image 0 has a sure box (p = [1, 0]) and an unsure one
    (p = [0.5, 0.5]), image 1 one box at score 0.1, under the floor. Entropy per box: 0 and 1.
    Image 0: max 1, mean 0.5, sum 1; image 1: 0 whatever the aggregate.

    >>> from activestream.samplers.detection.boxes import check_detections
    >>> d = check_detections(
    ...     [[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 2, 2]],
    ...     [[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]],
    ...     [0.9, 0.8, 0.1],
    ...     [2, 1],
    ... )
    >>> [box_uncertainty(d, "entropy", how).tolist() for how in ("max", "mean", "sum")]
    [[1.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    """
    if per_box not in PER_BOX:
        raise ValueError(f"unknown per-box uncertainty {per_box!r}; choose from entropy, margin")
    kept = det.scores >= floor  # (M,)
    n_classes = det.probs.shape[1]
    u = PER_BOX[per_box](det.probs[kept]) if kept.any() else np.zeros(0)  # (K,)
    if n_classes < 2 and kept.any():  # one class: no class confusion to measure
        u = np.zeros(int(kept.sum()))
    counted = np.bincount(det.image_of[kept], minlength=len(det.counts))  # (N,)
    return aggregate(u, counted, how)  # (N,)


def _register(per_box: str, how: Aggregate) -> None:
    def factory(_rng: np.random.Generator) -> Callable[[Detections], np.ndarray]:
        def score(det: Detections) -> np.ndarray:
            return box_uncertainty(det, per_box, how)

        return score

    add(DetectionSamplerSpec(f"box_{per_box}_{how}", factory, bounded=how != "sum"))


for _per_box in PER_BOX:
    for _how in ("max", "mean", "sum"):
        _register(_per_box, _how)  # type: ignore[arg-type]
