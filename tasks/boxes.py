"""Box labels as people send them, checked against the image before anything is stored.

The wire format is COCO's: ``{"id": str, "boxes": [{"bbox": [x, y, w, h], "label": int | str}]}``
with ``x, y`` the top-left corner and ``w, h`` the size, in pixels; ``label`` is a class index or
a class name. An empty ``boxes`` list is a valid label: "nothing to find here".

A bad box is refused with the reason (the service answers 4xx with it) and the whole label with
it: storing the good boxes of a label and dropping one would teach the detector that the
dropped object is background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: How far (pixels) a box may reach past the image edge and be clipped instead of refused:
#: labeling tools convert percentages to pixels and round.
EDGE_TOLERANCE = 1.0


class BoxError(ValueError):
    """A box label that cannot be stored; the message says which box and why."""


@dataclass(frozen=True)
class Box:
    """One labeled object: ``bbox`` as ``(x, y, w, h)`` pixels inside the image, class index."""

    bbox: tuple[float, float, float, float]
    label: int

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)``, as torchvision detectors take boxes."""
        x, y, w, h = self.bbox
        return (x, y, x + w, y + h)

    def to_json(self) -> dict[str, Any]:
        """The box as the label JSON carries it."""
        return {"bbox": list(self.bbox), "label": self.label}


def _class_index(label: Any, classes: Sequence[str], where: str) -> int:
    if isinstance(label, bool) or not isinstance(label, int | str):
        raise BoxError(f"{where}: label must be a class index or name, got {label!r}")
    if isinstance(label, str):
        if label not in classes:
            raise BoxError(f"{where}: unknown class {label!r}; classes are {', '.join(classes)}")
        return list(classes).index(label)
    if not 0 <= label < len(classes):
        raise BoxError(f"{where}: class index {label} outside 0..{len(classes) - 1}")
    return label


def parse_box(raw: Any, *, width: float, height: float, classes: Sequence[str], where: str) -> Box:
    """One ``{"bbox": [x, y, w, h], "label": ...}`` checked against a ``width x height`` image.

    >>> parse_box({"bbox": [1, 2, 3, 4], "label": "cat"}, width=10, height=10,
    ...           classes=["dog", "cat"], where="box 0")
    Box(bbox=(1.0, 2.0, 3.0, 4.0), label=1)
    >>> parse_box({"bbox": [8, 0, 5, 4], "label": 0}, width=10, height=10,
    ...           classes=["dog"], where="box 0")
    Traceback (most recent call last):
    ...
    activestream.tasks.boxes.BoxError: box 0: bbox [8, 0, 5, 4] reaches x = 13, past the image's \
width 10
    """
    if not isinstance(raw, dict) or set(raw) - {"bbox", "label", "score"} or "bbox" not in raw:
        raise BoxError(f'{where}: a box is {{"bbox": [x, y, w, h], "label": class}}, got {raw!r}')
    if "label" not in raw:
        raise BoxError(f"{where}: no label")
    bbox = raw["bbox"]
    if (
        not isinstance(bbox, list | tuple)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        or not all(math.isfinite(v) for v in bbox)
    ):
        raise BoxError(f"{where}: bbox must be four finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise BoxError(f"{where}: bbox {list(bbox)} has size {w:g} x {h:g}; both must be > 0")
    tol = EDGE_TOLERANCE
    if x < -tol or y < -tol:
        raise BoxError(f"{where}: bbox {list(bbox)} starts outside the image at ({x:g}, {y:g})")
    if x + w > width + tol:
        raise BoxError(
            f"{where}: bbox {list(bbox)} reaches x = {x + w:g}, past the image's width {width:g}"
        )
    if y + h > height + tol:
        raise BoxError(
            f"{where}: bbox {list(bbox)} reaches y = {y + h:g}, past the image's height {height:g}"
        )
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:
        raise BoxError(f"{where}: bbox {list(bbox)} has no area inside the image")
    return Box((x1, y1, x2 - x1, y2 - y1), _class_index(raw["label"], classes, where))


def parse_boxes(
    raw: Any, *, width: float, height: float, classes: Sequence[str], item: str = "item"
) -> list[Box]:
    """The ``boxes`` of one label, all checked; the first bad one refuses them all.

    >>> parse_boxes([], width=10, height=10, classes=["dog"])
    []
    >>> parse_boxes([{"bbox": [0, 0, 2, 2], "label": 0}, {"bbox": [0, 0, -1, 2], "label": 0}],
    ...             width=10, height=10, classes=["dog"], item="img-7")
    Traceback (most recent call last):
    ...
    activestream.tasks.boxes.BoxError: img-7, box 1: bbox [0, 0, -1, 2] has size -1 x 2; both \
must be > 0
    """
    if not isinstance(raw, list):
        raise BoxError(f"{item}: boxes must be a list (empty for nothing here), got {raw!r}")
    return [
        parse_box(b, width=width, height=height, classes=classes, where=f"{item}, box {i}")
        for i, b in enumerate(raw)
    ]


def parse_label(
    record: Any, *, size: tuple[float, float], classes: Sequence[str]
) -> tuple[str, list[Box]]:
    """``{"id": str, "boxes": [...]}`` -> (id, boxes), the image being ``size = (w, h)``."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise BoxError(f'a box label is {{"id": str, "boxes": [...]}}, got {record!r}')
    if "boxes" not in record:
        raise BoxError(f"{record['id']}: no boxes (send [] when there is nothing to find)")
    width, height = size
    boxes = parse_boxes(
        record["boxes"], width=width, height=height, classes=classes, item=record["id"]
    )
    return record["id"], boxes
