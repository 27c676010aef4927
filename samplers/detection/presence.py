"""Is there an object here, and what is it: both uncertainties of each box, summed per image.

The class samplers of :mod:`.uncertainty` ask only the second question, and only of boxes the
detector already believes in (score >= 0.3). A detector that has seen few labels is mostly
unsure of the first: the boxes it half-believes (score near 0.5) are objects it may miss or
background it may report, and both cost mAP. Each box kept from a low floor counts

    u = (H2(s) / log 2 + s * H(p) / log C) / 2,    in [0, 1],

the mean of the binary entropy of its detection score s (object or background?) and the
entropy of its class distribution p (which of C classes?), weighted by the chance that there is
an object to classify at all. By the chain rule, H2(s) + s * H(p) is exactly the entropy of
the joint distribution ``[1 - s, s * p]`` over background and the C classes; each term is
normalized here by its own maximum so that a box's presence and its class weigh the same. The
image's score is the sum over its boxes (Brust et al. 2019, "Active Learning for Deep Object
Detection": the sum asks for the images with the most to learn, the crowded and confusing ones).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activestream.samplers.detection.boxes import Detections, aggregate
from activestream.samplers.detection.registry import DetectionSamplerSpec, add
from activestream.samplers.entropy import entropy

#: Detection confidence below which a box is not counted: torchvision's FCOS and RetinaNet
#: keep boxes from 0.05 (their ``score_thresh``), and the unsure ones are the point here.
PRESENCE_FLOOR = 0.05


def box_presence(det: Detections, floor: float = PRESENCE_FLOOR) -> np.ndarray:
    """Score_i = sum over image i's boxes with s >= floor of (H2(s)/log 2 + s H(p)/log C) / 2.

    Args:
        det: The detector's boxes (:func:`~.boxes.check_detections`).
        floor: Boxes with a detection score below it do not count.

    Returns:
        (N,) float64 in [0, n_i]; 0 for an image with no counted box.

    By hand, two images. Image 0: a box at s = 0.5 with p = [0.5, 0.5] (presence 1, class
    0.5 * 1, so (1 + 0.5) / 2) and a sure one at s = 1 with p = [1, 0] (0 and 0): 0.75.
    Image 1: a box at s = 0.01, under the floor: 0.

    >>> from activestream.samplers.detection.boxes import check_detections
    >>> d = check_detections(
    ...     [[0, 0, 1, 1], [0, 0, 2, 2], [1, 1, 2, 2]],
    ...     [[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]],
    ...     [0.5, 1.0, 0.01],
    ...     [2, 1],
    ... )
    >>> box_presence(d).tolist()
    [0.75, 0.0]
    """
    kept = det.scores >= floor  # (M,)
    s, p = det.scores[kept], det.probs[kept]  # (K,), (K, C)
    presence = entropy(np.stack([s, 1.0 - s], axis=-1))  # (K, 2) -> (K,), H2(s) / log 2
    what = s * entropy(p) if p.shape[1] > 1 else np.zeros_like(s)  # (K,), s H(p) / log C
    counted = np.bincount(det.image_of[kept], minlength=len(det.counts))  # (N,)
    return aggregate((presence + what) / 2, counted, "sum")  # (N,)


def _factory(_rng: np.random.Generator) -> Callable[[Detections], np.ndarray]:
    return box_presence


add(DetectionSamplerSpec("box_presence_sum", _factory, bounded=False))
