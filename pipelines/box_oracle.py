"""The oracle's side of detection: true boxes to post, and mAP@0.5 of the served detector.

:class:`~activestream.pipelines.annotate.Oracle` is the same for both tasks: people leasing
queries and posting answers, a watcher scoring every model version on a held-out split. For
boxes the answers are each image's true boxes (:func:`box_truth`) and the held-out score is the
mAP@0.5 of the boxes ``POST /predict`` finds in the test images (:class:`BoxHeldOut`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests

from activestream.config import Config
from activestream.errors import ActivestreamError


def _xyxy(boxes: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``[{"bbox": [x, y, w, h], ...}]`` -> (K, 4) ``[x1, y1, x2, y2]``.

    >>> _xyxy([{"bbox": [1, 2, 3, 4], "label": 0}]).tolist()
    [[1.0, 2.0, 4.0, 6.0]]
    """
    xywh = np.array([b["bbox"] for b in boxes], np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


@dataclass(frozen=True)
class BoxHeldOut:
    """Held-out encoded images and their true boxes: mAP@0.5 of the served detector.

    The images go up as files, as the page and people's scripts send them, with every box
    the detector finds (``min_score=0``): mAP ranks all of them. One request holds up to
    ``chunk`` images: a detector trains new versions faster than it finds the boxes of a few
    hundred images on CPUs, and a split answered by two versions is thrown away.

    Attributes:
        images: Encoded image files (PNG, JPEG).
        boxes: Per image, its true boxes as the label JSON carries them (``bbox`` ``[x, y,
            w, h]`` pixels, ``label`` a class index).
        chunk: Images per request.
    """

    images: Sequence[bytes]
    boxes: Sequence[Sequence[Mapping[str, Any]]]
    chunk: int = 256
    metric: str = "map50"

    def __post_init__(self) -> None:
        # The first mAP loads torch and torchmetrics: 10 s on an idle machine, minutes beside
        # a starting service. Paid now, before any session, not in the watcher's first score.
        from activestream.tasks.metrics import mean_average_precision

        box = {"boxes": [[0.0, 0.0, 1.0, 1.0]], "labels": [0]}
        mean_average_precision([{**box, "scores": [1.0]}], [box])

    def score(  # noqa: D102
        self, session: requests.Session, url: str, headers: dict[str, str], timeout: float
    ) -> tuple[int, float]:
        from activestream.tasks.metrics import mean_average_precision

        versions, found = set(), []
        for i in range(0, len(self.images), self.chunk):
            files = [
                ("file", (f"held-out-{i + k}.png", data))
                for k, data in enumerate(self.images[i : i + self.chunk])
            ]
            r = session.post(
                f"{url}/predict",
                files=files,
                params={"min_score": 0},
                headers=headers,
                timeout=timeout,
            )
            r.raise_for_status()
            answer = r.json()
            versions.add(answer["model_version"])
            for image in answer["predictions"]:
                boxes = image["boxes"]
                found.append(
                    {
                        "boxes": _xyxy(boxes),
                        "scores": [b["score"] for b in boxes],
                        "labels": [b["label"] for b in boxes],
                    }
                )
        truth = [
            {"boxes": _xyxy(boxes), "labels": [b["label"] for b in boxes]} for boxes in self.boxes
        ]
        value = mean_average_precision(found, truth)["map_50"]
        return (versions.pop() if len(versions) == 1 else -1), float(value)


def box_truth(cfg: Config) -> tuple[dict[str, Any], BoxHeldOut]:
    """Every pool image's true boxes, and the test images, of ``data.dataset``'s detection data.

    The data set is a folder with ``pool/`` and ``test/`` in COCO, YOLO or Hugging Face
    Parquet layout, as ``serve`` reads it.
    """
    from activestream.sources.detection import open_image, read_detection

    base = cfg.data.dataset.rstrip("/")
    pool = read_detection(f"{base}/pool", cfg.storage)
    test = read_detection(f"{base}/test", cfg.storage)
    if pool.classes != test.classes:
        raise ActivestreamError(f"{base}: pool/ and test/ name different classes")
    truth = {item.id: [b.to_json() for b in item.boxes] for item in pool.items}
    held_out = BoxHeldOut(
        [open_image(item, cfg.storage) for item in test.items],
        [[b.to_json() for b in item.boxes] for item in test.items],
    )
    return truth, held_out
