"""Detection data: canvases of real images, read back from COCO, YOLO and Hugging Face Parquet."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from activestream.errors import DataError
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import (
    DetectionSet,
    open_image,
    read_coco,
    read_detection,
    read_hf_parquet,
    read_yolo,
)
from activestream.tasks.boxes import Box, BoxError, parse_label
from activestream.tasks.metrics import mean_average_precision

SPEC = CanvasSpec(source="digits", pool=30, test=10, size=96, scale=(20, 48), seed=3)


@pytest.fixture(scope="module")
def canvases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, SPEC)
    return out


def _boxes(data: DetectionSet) -> dict[str, list[tuple[tuple[float, ...], int]]]:
    return {i.id: [(tuple(round(v, 4) for v in b.bbox), b.label) for b in i.boxes]
            for i in data.items}  # fmt: skip


def test_canvases_hold_the_objects_their_manifest_counts_inside_each_image(canvases):
    manifest = json.loads((canvases / "_SUCCESS.json").read_text())
    pool = read_coco(str(canvases / "pool"))
    assert len(pool.items) == SPEC.pool and pool.boxes == manifest["boxes"]["pool"]
    assert pool.classes == tuple(str(d) for d in range(10))
    for item in pool.items:
        assert 1 <= len(item.boxes) <= SPEC.objects[1]
        for box in item.boxes:
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 < x2 <= item.width and 0 <= y1 < y2 <= item.height


def test_each_canvas_box_frames_visible_pixels_of_its_object(canvases):
    item = read_coco(str(canvases / "pool")).items[0]
    pixels = np.asarray(Image.open(io.BytesIO(open_image(item))))
    for box in item.boxes:
        x1, y1, x2, y2 = (int(v) for v in box.xyxy)
        inside = pixels[y1:y2, x1:x2]
        assert inside[0].max() > 0 and inside[-1].max() > 0  # tight: ink on top and bottom rows
        assert inside[:, 0].max() > 0 and inside[:, -1].max() > 0


def test_asking_for_the_same_canvases_again_writes_nothing_and_other_ones_rewrite(tmp_path):
    spec = CanvasSpec(source="digits", pool=4, test=2, size=64, scale=(16, 32))
    make_canvases(tmp_path, spec)
    stamp = (tmp_path / "pool" / "annotations.json").stat().st_mtime_ns
    make_canvases(tmp_path, spec)
    assert (tmp_path / "pool" / "annotations.json").stat().st_mtime_ns == stamp
    make_canvases(tmp_path, CanvasSpec(source="digits", pool=5, test=2, size=64, scale=(16, 32)))
    assert len(read_coco(str(tmp_path / "pool")).items) == 5


def test_fashion_mnist_canvases_use_its_class_names(tmp_path):
    spec = CanvasSpec(source="fashion-mnist", pool=3, test=2, size=96, scale=(24, 48))
    make_canvases(tmp_path, spec)
    assert "Sneaker" in read_coco(str(tmp_path / "test")).classes


def _to_yolo(coco_dir: Path, out: Path) -> Path:
    data = read_coco(str(coco_dir))
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    (out / "classes.txt").write_text("\n".join(data.classes) + "\n")
    for item in data.items:
        shutil.copy(item.source, out / "images" / Path(item.source).name)
        lines = []
        for b in item.boxes:
            x, y, w, h = b.bbox
            cx, cy = (x + w / 2) / item.width, (y + h / 2) / item.height
            lines.append(f"{b.label} {cx:.8f} {cy:.8f} {w / item.width:.8f} {h / item.height:.8f}")
        (out / "labels" / f"{item.id}.txt").write_text("\n".join(lines))
    return out


def test_a_yolo_folder_reads_back_the_same_boxes(canvases, tmp_path):
    yolo = read_yolo(str(_to_yolo(canvases / "pool", tmp_path / "yolo")))
    assert yolo.layout == "yolo" and _boxes(yolo) == _boxes(read_coco(str(canvases / "pool")))


def test_yolo_images_of_mixed_sizes_get_their_own_pixel_boxes(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    for name, size in (("small", (40, 20)), ("large", (200, 100))):
        Image.new("RGB", size).save(tmp_path / "images" / f"{name}.jpg")
        (tmp_path / "labels" / f"{name}.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    found = {i.id: (i.width, i.height, i.boxes) for i in read_detection(str(tmp_path)).items}
    assert found["small"] == (40, 20, (Box((10.0, 5.0, 20.0, 10.0), 1),))
    assert found["large"] == (200, 100, (Box((50.0, 25.0, 100.0, 50.0), 1),))


def _to_hf_parquet(coco_dir: Path, out: Path) -> Path:
    """What ``datasets`` writes for an object-detection set: image struct, objects, metadata."""
    data = read_coco(str(coco_dir))
    out.mkdir()
    features = {
        "image_id": {"dtype": "int64", "_type": "Value"},
        "image": {"_type": "Image"},
        "objects": {
            "bbox": {"feature": {"feature": {"dtype": "float32", "_type": "Value"},
                                 "length": 4, "_type": "Sequence"}, "_type": "Sequence"},
            "category": {"feature": {"names": list(data.classes), "_type": "ClassLabel"},
                         "_type": "Sequence"},
        },
    }  # fmt: skip
    table = pa.table(
        {
            "image_id": [int(i.id.rsplit("-", 1)[1]) for i in data.items],
            "image": [{"bytes": open_image(i), "path": None} for i in data.items],
            "objects": [
                {"bbox": [list(b.bbox) for b in i.boxes], "category": [b.label for b in i.boxes]}
                for i in data.items
            ],
        }
    )
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    # Row groups of 8: an image is read from its own group, not the whole file.
    path = out / "train-00000-of-00001.parquet"
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=8)
    return out


def test_hugging_face_parquet_reads_back_the_same_boxes_and_class_names(canvases, tmp_path):
    coco = read_coco(str(canvases / "pool"))
    hf = read_hf_parquet(str(_to_hf_parquet(canvases / "pool", tmp_path / "hf")))
    assert hf.classes == coco.classes
    renamed = {f"canvas-{int(k):06d}": v for k, v in _boxes(hf).items()}
    assert renamed == _boxes(coco)
    assert all(open_image(hf.items[k]) == open_image(coco.items[k]) for k in (2, 8, 29))


def test_a_coco_set_on_s3_reads_as_it_does_locally(canvases, s3_server, s3_client, s3_bucket):
    for path in (canvases / "test").rglob("*"):
        if path.is_file():
            key = f"sets/canvases/{path.relative_to(canvases / 'test').as_posix()}"
            s3_client.upload_file(str(path), s3_bucket, key)
    remote = read_detection(f"s3://{s3_bucket}/sets/canvases", s3_server)
    local = read_coco(str(canvases / "test"))
    assert remote.layout == "coco" and _boxes(remote) == _boxes(local)
    assert remote.items[0].source.startswith("s3://")
    assert open_image(remote.items[0], s3_server) == open_image(local.items[0])


def _coco_with(tmp_path: Path, annotation: dict) -> Path:
    (tmp_path / "images").mkdir()
    Image.new("L", (50, 40)).save(tmp_path / "images" / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
        "annotations": [{"id": 7, "image_id": 1, **annotation}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    return tmp_path


@pytest.mark.parametrize(
    ("annotation", "says"),
    [
        ({"bbox": [40, 0, 20, 10], "category_id": 1}, "past the image's width 50"),
        ({"bbox": [0, 0, -5, 10], "category_id": 1}, "both must be > 0"),
        ({"bbox": [0, 0, 5, 5], "category_id": 9}, "'category id 9'"),
    ],
)
def test_a_bad_box_in_a_data_set_is_refused_naming_the_annotation(tmp_path, annotation, says):
    with pytest.raises(DataError, match="annotation 7") as err:
        read_detection(str(_coco_with(tmp_path, annotation)))
    assert says in str(err.value)


def test_a_folder_with_no_detection_data_says_which_layouts_it_takes(tmp_path):
    with pytest.raises(DataError, match="annotations.json \\+ images/ for COCO"):
        read_detection(str(tmp_path))


def test_a_box_label_names_classes_by_index_or_name_and_may_be_empty():
    record = {"id": "a", "boxes": [{"bbox": [1, 1, 2, 2], "label": "dog"}]}
    assert parse_label(record, size=(10, 10), classes=["cat", "dog"]) == (
        "a",
        [Box((1.0, 1.0, 2.0, 2.0), 1)],
    )
    assert parse_label({"id": "b", "boxes": []}, size=(10, 10), classes=["cat"]) == ("b", [])


def test_a_box_reaching_a_pixel_past_the_edge_is_clipped_not_refused():
    _, (box,) = parse_label({"id": "a", "boxes": [{"bbox": [5, 5, 5.6, 5], "label": 0}]},
                            size=(10, 10), classes=["cat"])  # fmt: skip
    assert box.bbox == (5.0, 5.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"id": "a"}, "no boxes"),
        ({"id": "a", "boxes": {}}, "boxes must be a list"),
        ({"boxes": []}, 'a box label is {"id": str'),
        ({"id": "a", "boxes": [{"bbox": [1, 1, 2, 2]}]}, "a, box 0: no label"),
        ({"id": "a", "boxes": [{"bbox": [1, 1, 2], "label": 0}]}, "four finite numbers"),
        ({"id": "a", "boxes": [{"bbox": [1, 1, 2, 2], "label": True}]}, "class index or name"),
        ({"id": "a", "boxes": [{"bbox": [1, 1, 2, 2], "label": 3}]}, "outside 0..0"),
        ({"id": "a", "boxes": [{"bbox": [-3, 1, 2, 2], "label": 0}]}, "starts outside"),
        ({"id": "a", "boxes": [{"bbox": [1, 9, 2, 3], "label": 0}]}, "past the image's height"),
    ],
)
def test_a_bad_box_label_is_refused_with_the_reason(record, says):
    with pytest.raises(BoxError) as err:
        parse_label(record, size=(10, 10), classes=["cat"])
    assert says in str(err.value)


def test_perfect_boxes_score_a_mean_average_precision_of_one(canvases):
    data = read_coco(str(canvases / "test"))
    truth = [{"boxes": [b.xyxy for b in i.boxes], "labels": [b.label for b in i.boxes]}
             for i in data.items]  # fmt: skip
    found = [{**t, "scores": [1.0] * len(t["labels"])} for t in truth]
    assert mean_average_precision(found, truth) == {"map": 1.0, "map_50": 1.0}
    wrong = [{**f, "labels": [(y + 1) % 10 for y in f["labels"]]} for f in found]
    assert mean_average_precision(wrong, truth) == {"map": 0.0, "map_50": 0.0}


def test_boxes_go_to_label_studio_rectangles_and_come_back_the_same(canvases):
    from activestream.tasks.rectangles import from_results, to_results

    data = read_coco(str(canvases / "pool"))
    for item in data.items[:10]:
        size = (item.width, item.height)
        results = to_results(item.boxes, size=size, classes=data.classes, scores=[0.5] * 9)
        assert all(r["score"] == 0.5 and r["type"] == "rectanglelabels" for r in results)
        back_size, back = from_results(results, classes=data.classes)
        assert back_size == size
        for a, b in zip(back, item.boxes, strict=True):
            assert a.label == b.label and np.allclose(a.bbox, b.bbox)


def test_an_annotation_without_rectangles_means_nothing_here():
    from activestream.tasks.rectangles import from_results

    choices = [{"type": "choices", "value": {"choices": ["x"]}}]
    assert from_results(choices, classes=["cat"]) == (None, [])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"rotation": 30}, "rotated by 30 degrees"),
        ({"rectanglelabels": ["wolf"]}, "unknown class 'wolf'"),
        ({"rectanglelabels": []}, "exactly one class"),
        ({"x": 90.0}, "past the image's width"),
    ],
)
def test_a_rectangle_that_is_no_box_refuses_the_annotation(change, says):
    from activestream.tasks.rectangles import from_results, to_results

    (result,) = to_results([Box((10, 10, 20, 20), 0)], size=(100, 100), classes=["cat"])
    result["value"].update(change)
    with pytest.raises(BoxError) as err:
        from_results([result], classes=["cat"], item="task 3")
    assert "task 3, " in str(err.value) and says in str(err.value)
