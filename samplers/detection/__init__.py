"""Samplers for object detectors: one score per image from the boxes a detector found.

A detector's output for N images is ragged (image i has n_i boxes), so it travels flat, as
:class:`Detections`: the M = sum n_i boxes image by image, and ``counts`` (N,) saying how many
rows belong to each image. Every sampler maps it to (N,) float64 scores, higher = ask a human
first, as the classification samplers do for (N, C) probabilities; it is pure numpy like them.

* :mod:`.uncertainty`: per-box class entropy or margin, aggregated per image by max, mean or
  sum over the boxes scoring at least a floor (``box_entropy_max``, ... ``box_margin_sum``).
* :mod:`.presence`: is there an object, and what is it: the entropy of each box's detection
  score plus its class entropy weighted by that score, from a low floor, summed per image
  (``box_presence_sum``).
* :mod:`.diverse`: the presence score, with each batch spread over clusters of the images'
  embeddings, one pick per cluster (``box_presence_clusters``).
* :mod:`.consistency`: localization-aware; how well the boxes found on the horizontally
  flipped image match those found on the image itself (``flip_consistency``).
* ``random``: the baseline, one uniform score per image from an injected generator.

Pick one by name with :func:`get`; :func:`names` lists them and :func:`spec` says what each
one takes (``("detections",)``, or ``("detections", "flipped")`` for the flip pass).
"""

from activestream.samplers.detection import (  # noqa: F401 - register
    consistency,
    diverse,
    presence,
    uncertainty,
)
from activestream.samplers.detection.boxes import Detections, aggregate, check_detections, iou
from activestream.samplers.detection.registry import (
    DetectionSamplerSpec,
    get,
    names,
    spec,
)

__all__ = [
    "DetectionSamplerSpec",
    "Detections",
    "aggregate",
    "check_detections",
    "get",
    "iou",
    "names",
    "spec",
]
