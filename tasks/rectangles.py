"""Boxes to and from Label Studio's ``RectangleLabels``, the way its editor stores them.

Label Studio keeps a rectangle in percent of the image (``x``, ``y``, ``width``, ``height`` in
0-100, top-left corner), with ``original_width`` and ``original_height`` in pixels beside it and
the class as a one-element ``rectanglelabels`` list. Boxes here are COCO pixels
(:class:`~activestream.tasks.boxes.Box`). Predictions carry a ``score`` per rectangle, so the
editor can show how sure the model was of each suggestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from activestream.tasks.boxes import Box, BoxError, parse_boxes


def to_results(
    boxes: Sequence[Box],
    *,
    size: tuple[int, int],
    classes: Sequence[str],
    from_name: str = "label",
    to_name: str = "image",
    scores: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Boxes of a ``size = (width, height)`` image as ``rectanglelabels`` results.

    >>> to_results([Box((10, 20, 30, 40), 1)], size=(100, 200), classes=["cat", "dog"],
    ...            scores=[0.9])[0]["value"]
    {'x': 10.0, 'y': 10.0, 'width': 30.0, 'height': 20.0, 'rotation': 0, 'rectanglelabels': ['dog']}
    """
    width, height = size
    results = []
    for k, box in enumerate(boxes):
        x, y, w, h = box.bbox
        result: dict[str, Any] = {
            "id": f"box-{k}",
            "from_name": from_name,
            "to_name": to_name,
            "type": "rectanglelabels",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": 100.0 * x / width,
                "y": 100.0 * y / height,
                "width": 100.0 * w / width,
                "height": 100.0 * h / height,
                "rotation": 0,
                "rectanglelabels": [classes[box.label]],
            },
        }
        if scores is not None:
            result["score"] = float(scores[k])
        results.append(result)
    return results


def from_results(
    results: Sequence[dict[str, Any]], *, classes: Sequence[str], item: str = "task"
) -> tuple[tuple[int, int] | None, list[Box]]:
    """An annotation's ``rectanglelabels`` results -> (image size, boxes); others are skipped.

    The size is None when there is no rectangle (an annotation saying "nothing here"). A
    rotated rectangle, one with no or several classes, or a class the project does not name
    is a :class:`~activestream.tasks.boxes.BoxError`: the whole annotation is refused.

    >>> r = to_results([Box((10, 20, 30, 40), 1)], size=(100, 200), classes=["cat", "dog"])
    >>> from_results(r, classes=["cat", "dog"])
    ((100, 200), [Box(bbox=(10.0, 20.0, 30.0, 40.0), label=1)])
    """
    raw, size = [], None
    for k, result in enumerate(results):
        if result.get("type") != "rectanglelabels":
            continue
        value = result.get("value") or {}
        where = f"{item}, rectangle {k}"
        if value.get("rotation"):
            raise BoxError(f"{where}: rotated by {value['rotation']} degrees; boxes are upright")
        names = value.get("rectanglelabels") or []
        if len(names) != 1:
            raise BoxError(f"{where}: needs exactly one class, got {names!r}")
        try:
            width, height = int(result["original_width"]), int(result["original_height"])
            x, y, w, h = (float(value[key]) for key in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            raise BoxError(f"{where}: no original size or percent box in {result!r}") from None
        if size not in (None, (width, height)):
            raise BoxError(f"{where}: image size {(width, height)} differs from {size}")
        size = (width, height)
        pixels = [x * width / 100, y * height / 100, w * width / 100, h * height / 100]
        raw.append({"bbox": pixels, "label": names[0]})
    if size is None:
        return None, []
    boxes = parse_boxes(raw, width=size[0], height=size[1], classes=classes, item=item)
    return size, boxes
