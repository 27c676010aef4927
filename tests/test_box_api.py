"""The HTTP shapes of box labels and box predictions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from activestream.deploy.boxes import (
    MAX_BOXES,
    BoxLabelBatch,
    box_predictions,
    decode_native,
)


def batch(*labels) -> dict:
    return {"labels": list(labels)}


def test_a_box_label_batch_becomes_label_records_with_pixels_as_floats():
    parsed = BoxLabelBatch.model_validate(
        batch(
            {"id": "a", "boxes": [{"bbox": [1, 2, 3, 4], "label": 0, "score": 0.7}]},
            {"id": "b", "boxes": []},
        )
    )
    assert parsed.records() == [
        {"id": "a", "boxes": [{"bbox": [1.0, 2.0, 3.0, 4.0], "label": 0}]},
        {"id": "b", "boxes": []},
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (batch({"id": "a", "boxes": [{"bbox": [1, 2, 3], "label": 0}]}), "bbox"),
        (batch({"id": "a", "boxes": [{"bbox": ["x", 2, 3, 4], "label": 0}]}), "bbox"),
        (batch({"id": "a", "boxes": [{"bbox": [1, 2, 3, 4]}]}), "label"),
        (batch({"id": "a", "boxes": [{"bbox": [1, 2, 3, 4], "label": 0, "z": 1}]}), "z"),
        (batch({"id": "a"}), "boxes"),
        (batch({"id": "a", "label": 3}), "label"),
        (
            batch({"id": "a", "boxes": [{"bbox": [0, 0, 1, 1], "label": 0}] * (MAX_BOXES + 1)}),
            "boxes",
        ),
        ({"labels": []}, "labels"),
    ],
)
def test_a_malformed_box_label_names_the_field(body, field):
    with pytest.raises(ValidationError) as err:
        BoxLabelBatch.model_validate(body)
    assert any(field in [str(p) for p in e["loc"]] for e in err.value.errors())


def test_predictions_are_surest_first_in_pixels_with_class_names_above_the_floor():
    found = [
        {"boxes": [[0, 0, 2, 2], [10, 20, 40, 60]], "scores": [0.4, 0.9], "labels": [0, 1]},
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)},
    ]
    first, empty = box_predictions(found, ["cat", "dog"], floor=0.3)
    assert [(b.name, b.score, b.bbox) for b in first.boxes] == [
        ("dog", 0.9, [10.0, 20.0, 30.0, 40.0]),
        ("cat", 0.4, [0.0, 0.0, 2.0, 2.0]),
    ]
    assert empty.boxes == []
    assert len(box_predictions(found, ["cat", "dog"], floor=0.5)[0].boxes) == 1


def test_uploads_decode_at_their_own_sizes_and_a_bad_file_is_named():
    def png(w: int, h: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (9, 8, 7)).save(buf, format="PNG")
        return buf.getvalue()

    images = decode_native([png(30, 20), png(8, 50)])
    assert [x.shape for x in images] == [(3, 20, 30), (3, 50, 8)]
    with pytest.raises(ValueError, match="file 1: not a decodable image"):
        decode_native([png(4, 4), b"text"])
