"""activestream as the ML backend of a real Label Studio 1.23.2 server, for boxes.

A ``<RectangleLabels>`` project gets canvases of real digits uploaded, some at another size
than the rest (real data mixes sizes); activestream serves a detection pool and is connected at
``/api/ml``. Annotations go in through Label Studio's REST API, each on the task its uncertainty
sampling hands out next: the same bridge as for classes, with an image's boxes as the label,
the detector's boxes as the suggestions and the image's box uncertainty as its place in line.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import ray
import requests
from PIL import Image
from test_label_studio_e2e import until

from activestream.config import Config
from activestream.pipelines.loop import LOOP_ACTOR
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import open_image, read_coco
from activestream.sources.detection_pool import serve_pool
from activestream.tasks.boxes import Box
from activestream.tasks.rectangles import to_results

pytestmark = pytest.mark.slow
TOKEN = "ls-boxes-token"
CLASSES = tuple(str(d) for d in range(10))
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)
TASKS, ANNOTATIONS, GROWN = 24, 12, 1.5  # every other upload is 1.5x the canvas size


def upload(item: Any, grow: bool) -> tuple[bytes, tuple[Box, ...]]:
    """An item's PNG (enlarged by ``GROWN`` when ``grow``) and its true boxes at that size."""
    data = open_image(item)
    if not grow:
        return data, item.boxes
    with Image.open(io.BytesIO(data)) as image:
        size = (round(item.width * GROWN), round(item.height * GROWN))
        buf = io.BytesIO()
        image.resize(size, Image.Resampling.NEAREST).save(buf, format="PNG")
    boxes = tuple(Box(tuple(v * GROWN for v in b.bbox), b.label) for b in item.boxes)
    return buf.getvalue(), boxes


@pytest.fixture(scope="module")
def session(label_studio, run_service, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ls-canvases")
    make_canvases(data_dir, CanvasSpec(source="digits", pool=TASKS, test=2, size=64, seed=5))
    cache = tmp_path_factory.mktemp("ls-cache")
    cfg = Config(task="detection").with_overrides(
        {
            "data.dataset": serve_pool(str(data_dir), str(cache)),
            "data.cache_dir": str(cache),
            "durability.dir": str(tmp_path_factory.mktemp("ls-state")),
            "training.buffer_size": 4,
            "training.steps_per_update": 2,
            "training.batch_size": 4,
            "sampling.candidates": 16,
            "scoring.num_scorers": 1,
            "label_studio.url": label_studio.url,
            "label_studio.api_key": label_studio.token,
            "label_studio.sync_seconds": 0.5,
            "label_studio.reconcile_seconds": 5.0,
        }
    )
    items = read_coco(str(data_dir / "pool")).items
    files, truth = [], {}
    for k, item in enumerate(items):
        data, boxes = upload(item, grow=k % 2 == 1)
        files.append((f"{item.id}.png", data))
        truth[item.id] = (boxes, Image.open(io.BytesIO(data)).size)
    ls = label_studio.client()
    project = ls.create_project("activestream boxes", CONFIG)["id"]
    assert ls.import_files(project, files) == TASKS
    with run_service(cfg, token=TOKEN) as base:
        handles = ray.get(ray.get_actor(LOOP_ACTOR).handles.remote())
        bridge, ledger, trainer = handles["label_studio"], handles["ledger"], handles["trainer"]

        def status() -> dict[str, Any]:
            return ray.get(bridge.status.remote())

        backend = ls.connect_ml(
            project,
            f"{base}/label-studio",
            auth_method="BASIC_AUTH",
            basic_auth_user="label-studio",
            basic_auth_pass=TOKEN,
        )
        until(lambda: status()["projects"].get(project) == TASKS, 180, "the tasks to join")
        until(
            lambda: ls.project(project)["model_version"].startswith("activestream-v"),
            120,
            "scores in Label Studio",
        )
        answered: list[tuple[int, tuple[Box, ...], Any, int]] = []  # task, boxes, size, id
        for _ in range(ANNOTATIONS):
            task = ls.next_task(project)
            boxes, size = truth_of(task, truth)
            result = to_results(boxes, size=size, classes=CLASSES)
            body = {"result": result, "lead_time": 1.0}
            made = ls.request("POST", f"/api/tasks/{task['id']}/annotations/", json=body)
            answered.append((task["id"], boxes, size, int(made["id"])))
        until(lambda: status()["labels_logged"] >= ANNOTATIONS, 120, "the box labels logged")
        yield {
            "ls": ls,
            "base": base,
            "project": project,
            "backend": backend,
            "bridge": bridge,
            "ledger": ledger,
            "trainer": trainer,
            "status": status,
            "truth": truth,
            "answered": answered,
        }


def truth_of(task: dict[str, Any], truth: dict[str, Any]) -> tuple[tuple[Box, ...], Any]:
    """The true boxes and size of an uploaded task, from its file name."""
    name = re.search(r"-([^/-]+-\d+)\.png$", task["data"]["image"]).group(1)
    return truth[name]


def item_of(session: dict[str, Any], task: int) -> str:
    return f"ls-{session['project']}-{task}"


def held(session: dict[str, Any], item: str) -> Any:
    return ray.get(session["ledger"].labels_of.remote([item])).get(item)


def same_boxes(got: Any, want: Any) -> bool:
    got, want = sorted(got, key=lambda b: b.label), sorted(want, key=lambda b: b.label)
    return len(got) == len(want) and all(
        a.label == b.label and a.bbox == pytest.approx(b.bbox, abs=1e-6)
        for a, b in zip(got, want, strict=True)
    )


def annotate(session: dict[str, Any], task: int, result: list[dict[str, Any]]) -> int:
    path = f"/api/tasks/{task}/annotations/"
    return int(session["ls"].request("POST", path, json={"result": result})["id"])


def open_task(session: dict[str, Any], skip: int = 0) -> int:
    """A task nobody annotated yet (the ``skip``-th such), by Label Studio's own listing."""
    done = {answer[0] for answer in session["answered"]}
    free = [t["id"] for t in session["ls"].tasks(session["project"]) if t["id"] not in done]
    return free[skip]


def test_every_box_annotation_is_in_the_label_log_exactly_once_with_its_boxes(session):
    prefix = f"ls-{session['project']}-"
    records = [r for r in ray.get(session["ledger"].read.remote(0)) if r["id"].startswith(prefix)]
    assert len(records) == ANNOTATIONS == len({r["id"] for r in records})
    for task, boxes, _, _ in session["answered"]:
        assert same_boxes(held(session, item_of(session, task)), boxes)


def test_uploaded_images_join_the_pool_at_their_own_size(session):
    """A task's boxes are checked against its own image: enlarged uploads keep their size."""
    grown = [(task, boxes) for task, boxes, size, _ in session["answered"] if size != (64, 64)]
    assert grown, "no enlarged upload among the annotated tasks"
    task, boxes = grown[0]
    assert same_boxes(held(session, item_of(session, task)), boxes)


def test_the_detector_trains_on_the_boxes_from_label_studio(session):
    until(
        lambda: ray.get(session["trainer"].model_info.remote())["version"] >= 2,
        180,
        "detector versions trained on Label Studio's boxes",
    )
    info = ray.get(session["trainer"].model_info.remote())
    assert info["labels_seen"] >= ANNOTATIONS


def test_label_studio_ranks_every_task_by_one_box_prediction_of_the_current_model(session):
    ls, project = session["ls"], session["project"]

    def settled() -> bool:
        info = ray.get(session["trainer"].model_info.remote())
        return info["buffered"] == 0 and session["status"]()["pushed_version"] == info["version"]

    until(settled, 180, "training and scores to settle")
    version = ls.project(project)["model_version"]
    current = [p for p in ls.predictions(project) if p["model_version"] == version]
    assert sorted(p["task"] for p in current) == sorted(t["id"] for t in ls.tasks(project))
    assert all(0.0 <= p["score"] <= 1.0 for p in current)
    regions = [r for p in current for r in p["result"]]
    for region in regions:  # suggestions: the detector's boxes, each with its score
        assert region["type"] == "rectanglelabels" and region["from_name"] == "label"
        assert region["value"]["rectanglelabels"][0] in CLASSES
        assert 0.05 <= region["score"] <= 1.0
        assert 0.0 <= region["value"]["x"] <= 100.0 and 0.0 < region["value"]["width"] <= 100.0
    print(f"\n{len(regions)} suggested boxes over {len(current)} tasks at {version}")
    labeled = {answer[0] for answer in session["answered"]}
    ranking = ray.get(session["bridge"].ranking.remote(project))
    most_uncertain = next(task for task, _ in ranking if task not in labeled)
    assert ls.next_task(project)["id"] == most_uncertain


def test_an_annotation_with_no_box_is_the_label_nothing_here(session):
    task = open_task(session)
    annotate(session, task, [])
    until(lambda: held(session, item_of(session, task)) == (), 60, "the empty label")


def relabeled(session: dict[str, Any]) -> tuple[int, tuple[Box, ...], Any, int]:
    """The annotation the update test changes: the first with two boxes or more."""
    return next(a for a in session["answered"] if len(a[1]) >= 2)


def test_an_updated_annotation_replaces_the_boxes(session):
    task, boxes, size, annotation = relabeled(session)
    fewer = boxes[:1]
    result = to_results(fewer, size=size, classes=CLASSES)
    session["ls"].request("PATCH", f"/api/annotations/{annotation}/", json={"result": result})
    item = item_of(session, task)
    until(lambda: same_boxes(held(session, item) or (), fewer), 60, "the relabel")
    until(
        lambda: len(ray.get(session["trainer"].held_labels.remote()).get(item) or []) == 1,
        60,
        "the trainer to hold the new boxes",
    )


def test_a_deleted_annotation_withdraws_the_boxes(session):
    task, _, _, annotation = next(
        a for a in reversed(session["answered"]) if a != relabeled(session)
    )
    session["ls"].delete_annotation(annotation)
    item = item_of(session, task)
    until(lambda: held(session, item) is None, 60, "the label to be withdrawn")


def test_a_box_of_a_class_the_project_lacks_is_refused_and_the_rest_still_flows(session):
    bad_task, good_task = open_task(session, 1), open_task(session, 2)
    wrong = to_results([Box((1, 1, 10, 10), 0)], size=(64, 64), classes=("cat",))
    annotate(session, bad_task, wrong)
    annotate(session, good_task, [])
    until(lambda: held(session, item_of(session, good_task)) == (), 60, "the good label")
    until(
        lambda: any("unknown class 'cat'" in e for e in session["status"]()["errors"]),
        30,
        "the refusal noted",
    )
    assert held(session, item_of(session, bad_task)) is None


def test_label_studio_predict_answers_boxes_for_a_task_it_sends(session):
    """Label Studio's own /predict call (what its "Retrieve predictions" action makes)."""
    ls, project = session["ls"], session["project"]
    task = ls.tasks(project)[0]
    answer = requests.post(
        f"{session['base']}/label-studio/predict",
        json={"tasks": [task], "project": f"{project}.0"},
        auth=("label-studio", TOKEN),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["results"]
    assert prediction["model_version"].startswith("activestream-v")
    assert 0.0 <= prediction["score"] <= 1.0
    assert all(r["type"] == "rectanglelabels" for r in prediction["result"])


def test_a_choices_project_is_refused_with_the_reason(session):
    choices = CONFIG.replace("RectangleLabels", "Choices").replace("<Label ", "<Choice ")
    answer = requests.post(
        f"{session['base']}/label-studio/setup",
        json={"project": "999.1", "schema": choices},
        auth=("label-studio", TOKEN),
        timeout=30,
    )
    assert answer.status_code in (400, 422), answer.text
    assert "RectangleLabels" in answer.text
