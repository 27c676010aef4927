"""Label Studio's ``RectangleLabels`` for the detection task: the label config, both ways.

The classification bridge (:mod:`activestream.actors.label_studio`) reads a ``<Choices>``
config; a detection project has a ``<RectangleLabels>`` one instead. :class:`RectangleSchema`
reads it: which control results go to and from, which ``$key`` of a task's data holds the
image, and which label value is which object class (by name, or by position when the values
differ from the pool's class names). :meth:`RectangleSchema.prediction` writes a detector's
boxes as one Label Studio prediction (each rectangle with its score, the task's score being
the image's uncertainty); :meth:`RectangleSchema.boxes_of` reads an annotation back into box
labels, checked like any other (:mod:`activestream.tasks.boxes`).

:class:`RectanglesTask` is the detection task of the Label Studio bridge
(:class:`~activestream.actors.label_studio.LabelStudioBridge`): the same tasks, webhooks,
reconciling and score pushes as for classes, with boxes as the labels, the detector's boxes as
the suggestions and an image's box uncertainty as its place in Label Studio's queue.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activestream.actors.items import ItemStore
from activestream.actors.label_studio import Service
from activestream.config import StorageConfig
from activestream.samplers import detection as box_samplers
from activestream.tasks.boxes import Box
from activestream.tasks.rectangles import from_results, to_results

#: Suggested boxes scoring less than this are left out of Label Studio's predictions.
FLOOR = 0.05


@dataclass(frozen=True)
class RectangleSchema:
    """What a ``<RectangleLabels>`` label config says about where boxes go and what they mean.

    Example:
        >>> xml = ('<View><Image name="img" value="$photo"/><RectangleLabels name="box" '
        ...        'toName="img"><Label value="cat"/><Label value="dog"/></RectangleLabels></View>')
        >>> s = RectangleSchema.parse(xml, ("cat", "dog"))
        >>> s.from_name, s.to_name, s.data_key, s.labels, s.by_name
        ('box', 'img', 'photo', ('cat', 'dog'), True)
    """

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]  # label values in the pool's class order
    by_name: bool  # label values are the pool's class names (else: by position)

    @classmethod
    def parse(cls, xml: str, classes: Sequence[str]) -> RectangleSchema:
        """Read a label config; ValueError when it cannot label this pool's boxes.

        >>> RectangleSchema.parse('<View><Image name="i" value="$image"/></View>', ["cat"])
        Traceback (most recent call last):
        ...
        ValueError: label config has no <RectangleLabels> tag: this pool is labeled with boxes
        """
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as err:
            raise ValueError(f"label config is not XML: {err}") from None
        control = next(root.iter("RectangleLabels"), None)
        if control is None:
            raise ValueError(
                "label config has no <RectangleLabels> tag: this pool is labeled with boxes"
            )
        to_name = control.get("toName", "")
        image = next((e for e in root.iter("Image") if e.get("name") == to_name), None)
        if image is None or not (image.get("value") or "").startswith("$"):
            raise ValueError(f"<RectangleLabels toName={to_name!r}> names no <Image value='$...'>")
        values = tuple(e.get("value") or e.get("alias") or "" for e in control.iter("Label"))
        classes = tuple(classes)
        by_name = set(values) == set(classes)
        if not by_name and len(values) != len(classes):
            raise ValueError(
                f"label config has {len(values)} labels, the pool {len(classes)} classes "
                f"({', '.join(classes)}): name the labels after the classes or list as many"
            )
        return cls(
            control.get("name", ""),
            to_name,
            (image.get("value") or "$")[1:],
            classes if by_name else values,
            by_name,
        )

    def prediction(
        self,
        found: Mapping[str, Any],
        *,
        size: tuple[int, int],
        version: str,
        score: float,
        floor: float = FLOOR,
    ) -> dict[str, Any]:
        """A detector's boxes for one ``size = (width, height)`` image as a Label Studio prediction.

        Args:
            found: ``boxes`` (K, 4) ``[x1, y1, x2, y2]`` pixels, ``scores`` (K,), ``labels`` (K,).
            size: The image's width and height in pixels.
            version: The model version the prediction comes from.
            score: The task's score (the image's uncertainty: Label Studio's uncertainty
                sampling asks for the lowest first, so pass what ranks the image).
            floor: Boxes scoring less are left out of the suggestions.

        >>> s = RectangleSchema("box", "img", "image", ("cat", "dog"), True)
        >>> p = s.prediction({"boxes": [[10, 20, 40, 60]], "scores": [0.9], "labels": [1]},
        ...                  size=(100, 200), version="v3", score=0.25)
        >>> p["result"][0]["value"], p["result"][0]["score"], p["score"]
        ({'x': 10.0, 'y': 10.0, 'width': 30.0, 'height': 20.0, 'rotation': 0, \
'rectanglelabels': ['dog']}, 0.9, 0.25)
        """
        results = self.results(found, size=size, floor=floor)
        return {"result": results, "score": round(float(score), 6), "model_version": version}

    def results(
        self, found: Mapping[str, Any], *, size: tuple[int, int], floor: float = FLOOR
    ) -> list[dict[str, Any]]:
        """A detector's boxes scoring ``floor`` or more as ``rectanglelabels`` results."""
        boxes = np.asarray(found["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(found["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(found["labels"], dtype=np.int64).reshape(-1)
        keep = scores >= floor
        kept = [
            Box((x1, y1, x2 - x1, y2 - y1), int(c))
            for (x1, y1, x2, y2), c in zip(boxes[keep].tolist(), labels[keep].tolist(), strict=True)
        ]
        return to_results(
            kept,
            size=size,
            classes=self.labels,
            from_name=self.from_name,
            to_name=self.to_name,
            scores=scores[keep].tolist(),
        )

    def boxes_of(
        self, result: Sequence[Mapping[str, Any]], *, item: str = "task"
    ) -> tuple[tuple[int, int] | None, list[Box]]:
        """An annotation's rectangles of this control -> (image size, boxes).

        Other controls' results are ignored; a rectangle of an unknown label, rotated, or
        outside its image refuses the whole annotation
        (:class:`~activestream.tasks.boxes.BoxError`, with the reason).
        """
        mine = [r for r in result if r.get("from_name") == self.from_name]
        return from_results(mine, classes=self.labels, item=item)


def _flat(found: Sequence[Mapping[str, Any]], classes: int) -> box_samplers.Detections:
    """Per-image detector outputs (NumPy) -> the flat detections samplers take."""
    if not found:
        return box_samplers.check_detections(np.zeros((0, 4)), np.zeros((0, classes)), [], [])
    return box_samplers.check_detections(
        np.concatenate([np.reshape(f["boxes"], (-1, 4)) for f in found]),
        np.concatenate([np.reshape(f["class_scores"], (-1, classes)) for f in found]),
        np.concatenate([np.reshape(f["scores"], -1) for f in found]),
        [len(f["scores"]) for f in found],
    )


@dataclass(frozen=True)
class RectanglesTask:
    """Detection in Label Studio: a ``<RectangleLabels>`` config, an image's boxes per annotation.

    The bridge's task interface (:class:`~activestream.actors.label_studio.LabelStudioTask`).
    An annotation's rectangles are the image's label, none at all is a valid "nothing here"
    (a skipped task is no label), a bad rectangle refuses the annotation with the reason. The
    predictions are the current detector's boxes with their scores, and the task's score is
    ``1 - u`` with ``u`` the image's uncertainty under ``sampler`` (:meth:`uncertainty`):
    Label Studio hands out the lowest first, so its next task is the image activestream ranks
    most uncertain.

    Args:
        sampler: A deterministic single-pass detection sampler (two passes, as
            ``flip_consistency`` takes, would double every push's cost; random scores rank
            nothing): others fall back to ``box_entropy_max``. A sum over an image's boxes,
            in [0, n_i], is mapped to u / (1 + u) in [0, 1), which keeps its order.
        batch: Images per call to the detector.
        floor: Boxes scoring less are not suggested.
    """

    sampler: str = "box_entropy_max"
    batch: int = 16
    floor: float = FLOOR

    def parse(self, xml: str, classes: Sequence[str]) -> RectangleSchema:  # noqa: D102
        return RectangleSchema.parse(xml, classes)

    def uncertainty(self) -> Callable[[box_samplers.Detections], np.ndarray]:
        """Detections of N images -> (N,) uncertainty in [0, 1] under :attr:`sampler`.

        >>> det = box_samplers.check_detections([[0, 0, 1, 1]], [[0.5, 0.5]], [0.5], [1, 0])
        >>> RectanglesTask("box_presence_sum").uncertainty()(det).round(4).tolist()
        [0.4286, 0.0]
        """
        spec = box_samplers.spec(self.sampler) if self.sampler in box_samplers.names() else None
        if spec is None or spec.inputs != ("detections",) or not spec.deterministic:
            return box_samplers.get("box_entropy_max")
        score = box_samplers.get(self.sampler)
        if spec.bounded:
            return score
        return lambda det: (u := score(det)) / (1.0 + u)  # (N,), [0, n_i] -> [0, 1)

    def assess(
        self, service: Service, items: ItemStore, ids: list[str]
    ) -> tuple[list[Any], np.ndarray]:
        """Per id (the detector's boxes, the image's (width, height)) and (N,) confidence."""
        from activestream.actors.detector import decode_rgb

        outputs: list[Any] = []
        for start in range(0, len(ids), self.batch):
            images = []
            for item in ids[start : start + self.batch]:
                original = items.original(item)
                images.append(decode_rgb(original[0] if original else b""))
            found = service.detect(images)
            outputs += [(f, (x.shape[2], x.shape[1])) for f, x in zip(found, images, strict=True)]
        if not outputs:
            return [], np.zeros(0)
        score = self.uncertainty()(_flat([f for f, _ in outputs], len(items.classes)))  # (N,)
        return outputs, np.clip(1.0 - np.asarray(score, dtype=np.float64), 0.0, 1.0)

    def result(self, schema: RectangleSchema, output: Any) -> list[dict[str, Any]]:  # noqa: D102
        found, size = output
        return schema.results(found, size=size, floor=self.floor)

    def answer(  # noqa: D102
        self, schema: RectangleSchema, result: Sequence[dict[str, Any]], *, item: str
    ) -> tuple[Box, ...]:
        from activestream.actors.detector import box_answer

        return box_answer(schema.boxes_of(result, item=item)[1])

    def record(self, item: str, answer: Sequence[Box]) -> dict[str, Any]:  # noqa: D102
        from activestream.actors.detector import boxes_to_json

        return {"id": item, "boxes": boxes_to_json(answer)}

    def decode(self, data: bytes, items: ItemStore) -> bytes | None:
        """The image's own bytes, once they decode: a detection pool keeps images encoded."""
        from activestream.actors.detector import decode_rgb

        decode_rgb(data)  # raises for what is not an image
        return data

    def write(  # noqa: D102
        self,
        items: ItemStore,
        ids: list[str],
        images: list[Any],
        *,
        storage: StorageConfig,
        prefix: str,
    ) -> None:
        from activestream.sources.detection_pool import write_images

        name = f"{prefix}-00000.parquet"
        write_images(items.shards.uri, name, ids, images, items.classes, storage=storage)
