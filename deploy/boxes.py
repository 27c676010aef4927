"""The HTTP shapes of the detection task: box labels in, boxes out.

``POST /labels`` for a detection pool takes ``{"labels": [{"id": str, "boxes": [{"bbox": [x, y,
w, h], "label": index or class name}]}]}`` (COCO pixels; an empty list is "nothing here");
``POST /predict`` answers, per image, the boxes the model is sure enough of, each with its class
index, class name and score. The models check the shape of a request (FastAPI answers 422 with
the field); whether a box fits its image is the label check's business
(:class:`~activestream.actors.detector.BoxLabels`), which knows the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: Boxes one label may hold: far above any real image, low enough to bound a request.
MAX_BOXES = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BoxIn(_Strict):
    """One labeled object: ``bbox`` ``[x, y, w, h]`` in the image's pixels, class index or name."""

    bbox: Annotated[list[float], Field(min_length=4, max_length=4)]
    label: int | str
    score: float | None = None  # a suggestion accepted as it was may carry its score; ignored

    model_config = ConfigDict(extra="forbid", strict=False)  # ints are pixels too


class BoxLabel(_Strict):
    """The boxes of one image; an empty list says there is nothing to find."""

    id: str = Field(min_length=1, max_length=512)
    boxes: list[BoxIn] = Field(max_length=MAX_BOXES)


class BoxLabelBatch(_Strict):
    """A batch of box labels; validated as a whole. ``annotator`` goes into the label log."""

    labels: list[BoxLabel] = Field(min_length=1, max_length=10_000)
    relabel: bool = False
    annotator: str | None = Field(None, max_length=256)

    def records(self) -> list[dict[str, Any]]:
        """The batch as label records (``{"id", "boxes"}``), scores dropped.

        >>> BoxLabelBatch.model_validate(
        ...     {"labels": [{"id": "a", "boxes": [{"bbox": [1, 2, 3, 4], "label": "cat"}]}]}
        ... ).records()
        [{'id': 'a', 'boxes': [{'bbox': [1.0, 2.0, 3.0, 4.0], 'label': 'cat'}]}]
        """
        return [
            {"id": label.id, "boxes": [{"bbox": b.bbox, "label": b.label} for b in label.boxes]}
            for label in self.labels
        ]


class BoxOut(BaseModel):
    """A box the model found: ``bbox`` ``[x, y, w, h]`` pixels, class, and how sure it is."""

    bbox: list[float]
    label: int
    name: str
    score: float


class BoxPrediction(BaseModel):
    """The boxes found in one image, surest first."""

    boxes: list[BoxOut]


class BoxPredictions(BaseModel):
    """Box predictions of one model version."""

    model_version: int
    predictions: list[BoxPrediction]


def box_predictions(
    found: Sequence[Mapping[str, Any]], classes: Sequence[str], *, floor: float = 0.3
) -> list[BoxPrediction]:
    """A detector's outputs (``boxes`` xyxy, ``scores``, ``labels``) -> the ``/predict`` answer.

    Boxes scoring under ``floor`` are left out: a suggestion nobody should accept.

    >>> out = box_predictions([{"boxes": [[1, 2, 4, 6], [0, 0, 1, 1]], "scores": [0.8, 0.1],
    ...                         "labels": [1, 0]}], ["cat", "dog"])
    >>> out[0].boxes[0].model_dump()
    {'bbox': [1.0, 2.0, 3.0, 4.0], 'label': 1, 'name': 'dog', 'score': 0.8}
    >>> len(out[0].boxes)
    1
    """
    answers = []
    for f in found:
        boxes = np.asarray(f["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(f["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(f["labels"], dtype=np.int64).reshape(-1)
        order = [k for k in np.argsort(-scores, kind="stable").tolist() if scores[k] >= floor]
        answers.append(
            BoxPrediction(
                boxes=[
                    BoxOut(
                        bbox=[round(float(v), 2) for v in _xywh(boxes[k])],
                        label=int(labels[k]),
                        name=str(classes[int(labels[k])]),
                        score=round(float(scores[k]), 4),
                    )
                    for k in order
                ]
            )
        )
    return answers


def _xywh(xyxy: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return (x1, y1, x2 - x1, y2 - y1)


def decode_native(files: Sequence[bytes]) -> list[np.ndarray]:
    """Uploaded image files -> uint8 (3, H, W) each at its own size (a detector takes any size).

    Raises:
        ValueError: Naming the first file that is not a decodable image.
    """
    from activestream.actors.detector import decode_rgb

    out = []
    for i, data in enumerate(files):
        try:
            out.append(decode_rgb(data))
        except Exception:  # noqa: BLE001 - PIL raises several kinds for corrupt data
            raise ValueError(f"file {i}: not a decodable image ({len(data)} bytes)") from None
    return out
