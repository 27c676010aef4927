"""Mean average precision of a detector, through torchmetrics (pycocotools underneath).

COCO's evaluation has details that hand-written mAP gets wrong (101-point interpolation, crowd
and area ranges, greedy matching by score): the figures here are the ones papers report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mean_average_precision(
    predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """mAP@[.5:.95] (``map``) and mAP@0.5 (``map_50``) over a set of images.

    Args:
        predictions: Per image, ``boxes`` (K, 4) ``[x1, y1, x2, y2]`` pixels, ``scores`` (K,),
            ``labels`` (K,) class indices.
        targets: Per image, in the same order, the true ``boxes`` (L, 4) and ``labels`` (L,).

    Returns:
        ``{"map": float, "map_50": float}``; -1 where no image has a true box (COCO's "no
        data").

    By hand: one true box [0, 0, 10, 10] found as [0, 0, 10, 6.4] (IoU 0.64): a hit at the
    thresholds 0.5, 0.55 and 0.6 of the ten, so mAP@0.5 = 1 and mAP@[.5:.95] = 3/10.

    >>> truth = [{"boxes": [[0, 0, 10, 10]], "labels": [0]}]
    >>> found = [{"boxes": [[0, 0, 10, 6.4]], "scores": [0.9], "labels": [0]}]
    >>> {k: round(v, 4) for k, v in mean_average_precision(found, truth).items()}
    {'map': 0.3, 'map_50': 1.0}
    """
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")

    def boxes(value: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.float32).reshape(-1, 4))

    def ints(value: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.int64).reshape(-1))

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update(
        [
            {
                "boxes": boxes(p["boxes"]),
                "scores": torch.as_tensor(np.asarray(p["scores"], dtype=np.float32).reshape(-1)),
                "labels": ints(p["labels"]),
            }
            for p in predictions
        ],
        [{"boxes": boxes(t["boxes"]), "labels": ints(t["labels"])} for t in targets],
    )
    result = metric.compute()
    return {"map": float(result["map"]), "map_50": float(result["map_50"])}
