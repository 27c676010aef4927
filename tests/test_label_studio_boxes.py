"""Label Studio's RectangleLabels both ways, checked against a real Label Studio server."""

from __future__ import annotations

import pytest

from activestream.actors.label_studio_boxes import RectangleSchema
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import open_image, read_coco
from activestream.tasks.boxes import Box, BoxError

CLASSES = ("cat", "dog", "fox")
LABELS = "".join(f'<Label value="{c}"/>' for c in CLASSES)
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    f'<RectangleLabels name="label" toName="image">{LABELS}</RectangleLabels></View>'
)
FOUND = {
    "boxes": [[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 5.0, 5.0], [50.0, 50.0, 90.0, 70.0]],
    "scores": [0.9, 0.01, 0.6],
    "labels": [1, 0, 2],
}


def test_a_prediction_read_back_as_an_annotation_gives_the_boxes_above_the_floor():
    schema = RectangleSchema.parse(CONFIG, CLASSES)
    made = schema.prediction(FOUND, size=(100, 80), version="v1", score=0.3)
    assert [r["score"] for r in made["result"]] == [0.9, 0.6]
    size, boxes = schema.boxes_of(made["result"])
    assert size == (100, 80)
    assert [(b.label, b.bbox) for b in boxes] == [
        (1, pytest.approx((10.0, 20.0, 30.0, 40.0))),
        (2, pytest.approx((50.0, 50.0, 40.0, 20.0))),
    ]


def test_labels_named_otherwise_map_to_classes_by_position():
    config = CONFIG.replace('"cat"', '"Katze"').replace('"dog"', '"Hund"').replace('"fox"', '"F"')
    schema = RectangleSchema.parse(config, CLASSES)
    assert not schema.by_name and schema.labels == ("Katze", "Hund", "F")
    made = schema.prediction(FOUND, size=(100, 80), version="v1", score=0.3)
    assert [r["value"]["rectanglelabels"] for r in made["result"]] == [["Hund"], ["F"]]
    assert [b.label for b in schema.boxes_of(made["result"])[1]] == [1, 2]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("<View>", "not XML"),
        ('<View><Image name="image" value="$image"/></View>', "no <RectangleLabels>"),
        (CONFIG.replace('toName="image"', 'toName="other"'), "names no <Image"),
        (CONFIG.replace('<Label value="fox"/>', ""), "2 labels, the pool 3 classes"),
    ],
)
def test_a_config_that_cannot_label_the_pool_says_why(config, reason):
    with pytest.raises(ValueError, match=reason):
        RectangleSchema.parse(config, CLASSES)


def test_an_annotation_with_an_unknown_label_or_a_rotated_box_is_refused_whole():
    schema = RectangleSchema.parse(CONFIG, CLASSES)
    result = schema.prediction(FOUND, size=(100, 80), version="v1", score=0.3)["result"]
    result[1]["value"]["rectanglelabels"] = ["wolf"]
    with pytest.raises(BoxError, match="unknown class 'wolf'"):
        schema.boxes_of(result)
    result[1]["value"].update(rectanglelabels=["fox"], rotation=30)
    with pytest.raises(BoxError, match="rotated"):
        schema.boxes_of(result)


def test_other_controls_and_an_empty_annotation_mean_nothing_here():
    schema = RectangleSchema.parse(CONFIG, CLASSES)
    other = [{"from_name": "quality", "to_name": "image", "type": "choices", "value": {}}]
    assert schema.boxes_of(other) == (None, [])


@pytest.mark.slow
def test_a_real_label_studio_takes_the_predictions_and_gives_back_annotated_boxes(
    label_studio, tmp_path
):
    make_canvases(tmp_path, CanvasSpec(source="digits", pool=2, test=1, size=96, seed=3))
    data = read_coco(str(tmp_path / "pool"))
    item = data.items[0]
    digits = tuple(data.classes)
    config = CONFIG.replace(LABELS, "".join(f'<Label value="{c}"/>' for c in digits))
    schema = RectangleSchema.parse(config, digits)
    ls = label_studio.client()
    project = ls.create_project("activestream boxes", config)["id"]
    assert ls.import_files(project, [(f"{item.id}.png", open_image(item))]) == 1
    (task,) = ls.tasks(project)
    found = {
        "boxes": [b.xyxy for b in item.boxes],
        "scores": [0.8] * len(item.boxes),
        "labels": [b.label for b in item.boxes],
    }
    made = schema.prediction(found, size=(item.width, item.height), version="v7", score=0.4)
    assert ls.import_predictions(project, [{"task": task["id"], **made}]) == 1
    (stored,) = ls.predictions(project)
    assert stored["model_version"] == "v7" and stored["score"] == pytest.approx(0.4)
    assert schema.boxes_of(stored["result"])[1] == schema.boxes_of(made["result"])[1]
    # An annotator accepts the suggestions as they are: the annotation Label Studio stores
    # reads back as the true boxes.
    accepted = [{k: v for k, v in r.items() if k != "score"} for r in stored["result"]]
    ls.request("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": accepted})
    (annotation,) = ls.annotations(task["id"])
    size, boxes = schema.boxes_of(annotation["result"], item=item.id)
    assert size == (item.width, item.height)
    want = sorted((b.label, b.bbox) for b in item.boxes)
    got = sorted((b.label, b.bbox) for b in boxes)
    assert [label for label, _ in got] == [label for label, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert all(isinstance(b, Box) for b in boxes)
