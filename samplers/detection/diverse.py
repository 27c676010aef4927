"""Uncertain and unlike each other: presence scores, one pick per cluster of image embeddings.

The sum over an image's boxes (:mod:`.presence`) asks for crowded, confusing images, and a
round's top 16 by that score are often 16 of the same kind: canvases of the same two
classes the detector confuses, each teaching it what the first already did. Cluster-margin
(Citovsky et al. 2021, "Batch Active Learning at Scale") spreads the batch instead: cluster
the candidates' embeddings, visit the clusters smallest first, and take each one's most
uncertain image, round after round, until the batch is full. The embedding is the detector
backbone's deepest feature map averaged over the image (the ImageNet-pretrained
EfficientNet-Lite0's 320 channels for the built-in detector), taken from the same forward pass
that found the boxes, so diversity costs no second pass.

The score of each image is ``box_presence_sum``'s, so the sampler ranks exactly as that one
wherever no batch is drawn (Label Studio's task order, a single query); only the choice of a
batch differs. The selection is :func:`~activestream.samplers.cluster_margin.
cluster_margin_select`, the classification sampler's own, over the candidates the queue holds.

By hand: four images, two near-copies at embedding 0 and 0.1 scoring 2.0 and 1.9, two at 5
and 5.2 scoring 0.4 and 0.5. The top 2 by score are both copies at 0; one pick per cluster
takes the best of each group (equal sizes: the cluster with the higher best score first).

>>> from activestream.samplers.detection import spec
>>> pick = spec("box_presence_clusters").batch
>>> pick(np.array([2.0, 1.9, 0.4, 0.5]), np.array([[0.0], [0.1], [5.0], [5.2]]), 2,
...      np.random.default_rng(0)).tolist()
[0, 3]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activestream.samplers.cluster_margin import cluster_margin_select
from activestream.samplers.detection.boxes import Detections
from activestream.samplers.detection.presence import box_presence
from activestream.samplers.detection.registry import DetectionSamplerSpec, add


def _factory(_rng: np.random.Generator) -> Callable[[Detections], np.ndarray]:
    return box_presence


add(
    DetectionSamplerSpec(
        "box_presence_clusters", _factory, bounded=False, batch=cluster_margin_select
    )
)
