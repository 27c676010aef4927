"""A detection pool through the real service: Serve on loopback, the loop's actors behind it.

The same ``serve`` and routes as for classes: the pool's shards say ``detection``, so the loop
builds the detector trainer, box labels in the ledger and the detector scorer pool, and the
app takes boxes in and answers boxes.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from activestream.config import Config
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import open_image, read_coco
from activestream.sources.detection_pool import serve_pool

pytestmark = pytest.mark.slow
TOKEN = "box-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(run_service, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("canvases")
    make_canvases(data_dir, CanvasSpec(source="digits", pool=32, test=2, size=64, scale=(16, 32)))
    cache = tmp_path_factory.mktemp("cache")
    pool = serve_pool(str(data_dir), str(cache))  # what `activestream serve --data DIR` serves
    cfg = Config(task="detection").with_overrides(
        {
            "data.dataset": pool,
            "data.cache_dir": str(cache),
            "training.buffer_size": 4,
            "training.steps_per_update": 2,
            "training.batch_size": 4,
            "sampling.candidates": 16,
            "scoring.num_scorers": 1,
        }
    )
    truth = {item.id: item for item in read_coco(str(data_dir / "pool")).items}
    with run_service(cfg, token=TOKEN) as base:
        yield {
            "base": base,
            "truth": truth,
            "test": read_coco(str(data_dir / "test")).items,
            "log": Path(cfg.state_dir) / "labels",
        }


def boxes_of(server, item_id):
    return [box.to_json() for box in server["truth"][item_id].boxes]


def post(server, labels, **extra):
    body = {"labels": labels, **extra}
    return requests.post(f"{server['base']}/labels", json=body, headers=AUTH, timeout=60)


def lease(server, n):
    url = f"{server['base']}/queries"
    return requests.get(url, params={"n": n}, headers=AUTH, timeout=30).json()["queries"]


def model(server):
    return requests.get(f"{server['base']}/model", timeout=30).json()


def until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.3)
    return value


def logged(server):
    records = []
    for path in sorted(server["log"].glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def test_the_model_says_it_detects_the_pools_classes(server):
    info = model(server)
    assert info["task"] == "detection"
    assert info["classes"] == [str(d) for d in range(10)]
    assert info["arch"] == "ClassAwareFCOS"


def test_queries_lease_pool_images_with_a_detection_score(server):
    queries = lease(server, 3)
    assert len(queries) == 3
    assert {q["id"] for q in queries} <= set(server["truth"])
    for q in queries:
        assert q["score"] >= 0.0 and isinstance(q["model_version"], int)
    release(server, {q["id"] for q in queries})


def test_box_labels_are_logged_trained_on_and_a_resend_is_a_duplicate(server):
    queries = lease(server, 4)
    labels = [{"id": q["id"], "boxes": boxes_of(server, q["id"])} for q in queries]
    first = post(server, labels, annotator="ann-1")
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 4, "duplicates": 0}
    assert post(server, labels).json() == {"accepted": 0, "duplicates": 4}
    until(lambda: model(server)["version"] >= 1, 180, "a detector version trained on them")
    assert model(server)["labels_seen"] >= 4
    records = {r["id"]: r for r in logged(server) if "boxes" in r}
    for label in labels:
        record = records[label["id"]]
        assert record["annotator"] == "ann-1"
        assert sorted((b["label"], b["bbox"]) for b in record["boxes"]) == sorted(
            (b["label"], [float(v) for v in b["bbox"]]) for b in label["boxes"]
        )


def test_a_labeled_image_is_never_asked_again(server):
    labeled = {r["id"] for r in logged(server) if "boxes" in r}
    assert labeled, "an earlier test labels images"
    asked = {q["id"] for q in lease(server, 16)}
    assert not asked & labeled
    release(server, asked)  # for the page's tests: a small pool


def release(server, ids):
    response = requests.post(
        f"{server['base']}/queries/release", json={"ids": sorted(ids)}, headers=AUTH, timeout=30
    )
    assert response.ok, response.text


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ({"bbox": [50, 50, 30, 30], "label": 1}, "past the image's width 64"),
        ({"bbox": [5, 5, -3, 4], "label": 1}, "size"),
        ({"bbox": [5, 5, 10, 10], "label": "giraffe"}, "giraffe"),
        ({"bbox": [5, 5, 10, 10], "label": 10}, "10"),
    ],
)
def test_a_bad_box_is_a_422_naming_it_and_nothing_of_the_batch_is_kept(server, box, reason):
    free = [i for i in server["truth"] if i not in {r["id"] for r in logged(server)}]
    good = {"id": free[0], "boxes": boxes_of(server, free[0])}
    before = len(logged(server))
    response = post(server, [good, {"id": free[1], "boxes": [box]}])
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"]
    assert len(logged(server)) == before


def test_a_malformed_label_is_a_422_naming_the_field(server):
    item = next(iter(server["truth"]))
    response = post(server, [{"id": item, "boxes": [{"bbox": [1, 2, 3], "label": 0}]}])
    assert response.status_code == 422
    assert "bbox" in response.json()["detail"]
    response = post(server, [{"id": item, "label": 3}])  # a class label, not boxes
    assert response.status_code == 422
    assert "boxes" in response.json()["detail"] or "label" in response.json()["detail"]


def test_an_unknown_image_is_a_404(server):
    response = post(server, [{"id": "no-such-image", "boxes": []}])
    assert response.status_code == 404
    assert "no-such-image" in response.json()["detail"]


def test_nothing_here_is_a_label_and_another_answer_conflicts_unless_relabeled(server):
    labeled = {r["id"] for r in logged(server)}
    item = next(i for i in server["truth"] if i not in labeled)
    assert post(server, [{"id": item, "boxes": []}]).json()["accepted"] == 1
    fix = [{"id": item, "boxes": boxes_of(server, item)}]
    conflict = post(server, fix)
    assert conflict.status_code == 409
    assert "0 boxes" in conflict.json()["detail"]
    assert post(server, fix, relabel=True).json()["accepted"] == 1
    records = [r for r in logged(server) if r["id"] == item]
    assert [len(r["boxes"]) for r in records] == [0, len(fix[0]["boxes"])]
    assert records[-1]["relabel"] is True


def test_predict_answers_boxes_for_an_uploaded_image(server):
    item = next(iter(server["truth"]))
    original = requests.get(f"{server['base']}/items/{item}/image", timeout=30)
    assert original.ok
    image = Image.open(io.BytesIO(original.content))
    response = requests.post(
        f"{server['base']}/predict",
        data=original.content,
        headers={**AUTH, "Content-Type": original.headers["content-type"]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] >= 0
    (prediction,) = body["predictions"]
    for box in prediction["boxes"]:
        x, y, w, h = box["bbox"]
        assert 0 <= x and 0 <= y and x + w <= image.width + 1 and y + h <= image.height + 1
        assert box["name"] == str(box["label"])
        assert 0.3 <= box["score"] <= 1.0
    scores = [b["score"] for b in prediction["boxes"]]
    assert scores == sorted(scores, reverse=True)


def test_predict_refuses_pixel_arrays_and_undecodable_files(server):
    arrays = requests.post(
        f"{server['base']}/predict", json={"inputs": [[0.0] * 16]}, headers=AUTH, timeout=30
    )
    assert arrays.status_code == 415
    assert "image files" in arrays.json()["detail"]
    junk = requests.post(
        f"{server['base']}/predict",
        data=b"not an image",
        headers={**AUTH, "Content-Type": "image/png"},
        timeout=30,
    )
    assert junk.status_code == 422
    assert "not a decodable image" in junk.json()["detail"]


def test_predict_with_min_score_zero_answers_every_box_and_a_bad_floor_is_a_422(server):
    item = next(iter(server["truth"]))
    image = requests.get(f"{server['base']}/items/{item}/image", timeout=30)

    def boxes(floor):
        response = requests.post(
            f"{server['base']}/predict",
            params={"min_score": floor},
            data=image.content,
            headers={**AUTH, "Content-Type": image.headers["content-type"]},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        return prediction["boxes"]

    every, sure = boxes(0), boxes(0.3)
    assert len(every) >= len(sure) and any(b["score"] < 0.3 for b in every)
    for floor in ("1.5", "many"):
        response = requests.post(
            f"{server['base']}/predict",
            params={"min_score": floor},
            data=image.content,
            headers={**AUTH, "Content-Type": "image/png"},
            timeout=30,
        )
        assert response.status_code == 422 and "min_score" in response.json()["detail"]


PHONE = {"width": 375, "height": 740}


@pytest.fixture()
def page(server):
    """The labeling page of the detection pool in headless Chromium, every /predict recorded."""
    from browser import CHROMIUM, CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: scripts/test.sh installs Debian's chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_context(viewport={"width": 900, "height": 900}).new_page()
        tab.predicted = []
        tab.on(
            "response",
            lambda r: tab.predicted.append(r.status) if r.url.endswith("/predict") else None,
        )
        tab.add_init_script(f"localStorage.setItem('activestream-token', '{TOKEN}')")
        tab.goto(server["base"] + "/")
        yield tab
        browser.close()


def shown(page):
    """The id of the item in the editor, once its image is loaded there."""
    page.wait_for_function("document.getElementById('meta').textContent.startsWith('canvas-')")
    page.wait_for_function("document.getElementById('editor').dataset.boxes !== undefined")
    return page.text_content("#meta").split(" ")[0]


def draw(page, bbox):
    """Drag a box over ``bbox`` ([x, y, w, h] image pixels) with the mouse."""
    x, y, w, h = bbox
    corners = page.evaluate(
        """([x, y, w, h]) => {
        const m = document.querySelector('#editor svg').getScreenCTM();
        const at = (px, py) => new DOMPoint(px, py).matrixTransform(m);
        return [at(x, y), at(x + w, y + h)].map(p => [p.x, p.y]);
        }""",
        [x, y, w, h],
    )
    (x1, y1), (x2, y2) = corners
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=6)
    page.mouse.up()


def test_the_page_boxes_an_image_with_mouse_and_keys_and_corrects_it(server, page):
    page.wait_for_selector("#editor svg")
    assert page.is_visible("#submit") and not page.is_visible("#item")
    assert page.locator("button.class").count() == 10
    item = shown(page)
    page.wait_for_function(
        "[...document.querySelectorAll('#classes button')].some(b => b.ariaPressed === 'true')"
    )
    truth = server["truth"][item].boxes[0]
    page.keyboard.press(str(truth.label))
    draw(page, truth.bbox)
    assert page.get_attribute("#editor", "data-boxes") == "1"
    # The README's screenshot is refreshed only on request, so tests leave the tree untouched.
    if os.environ.get("ACTIVESTREAM_UPDATE_DOCS"):
        page.screenshot(path=str(Path(__file__).resolve().parents[1] / "docs/labeling-boxes.png"))
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('status').textContent === '{item} → 1 box'")
    record = until(
        lambda: next((r for r in logged(server) if r["id"] == item), None), 30, "the label"
    )
    (box,) = record["boxes"]
    assert box["label"] == truth.label
    assert all(abs(a - b) <= 2.0 for a, b in zip(box["bbox"], truth.bbox, strict=True))
    # u brings it back with its box; removing the box and submitting says "nothing here".
    page.keyboard.press("u")
    assert shown(page) == item
    page.wait_for_function("document.getElementById('editor').dataset.boxes === '1'")
    page.click("#editor rect[data-box='0']")
    page.keyboard.press("Delete")
    assert page.get_attribute("#editor", "data-boxes") == "0"
    page.click("#submit")
    page.wait_for_function(
        f"document.getElementById('status').textContent === '{item} → nothing here'"
    )
    until(
        lambda: [len(r["boxes"]) for r in logged(server) if r["id"] == item] == [1, 0],
        30,
        "the correction, logged as a relabel",
    )
    assert page.predicted and set(page.predicted) == {200}  # suggestions asked for each item


def test_the_page_fits_a_phone_and_skips_with_a_key(server, page):
    page.set_viewport_size(PHONE)
    first = shown(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.keyboard.press("s")
    page.wait_for_function(f"document.getElementById('status').textContent === 'skipped {first}'")
    assert shown(page) != first


def test_oracle_annotators_box_images_over_http_and_measure_map50(server):
    """What ``activestream demo --task detection`` runs against each service it starts."""
    from activestream.pipelines.annotate import Oracle
    from activestream.pipelines.box_oracle import BoxHeldOut

    truth = {i: [b.to_json() for b in item.boxes] for i, item in server["truth"].items()}
    held_out = BoxHeldOut(
        [open_image(item) for item in server["test"]],
        [[b.to_json() for b in item.boxes] for item in server["test"]],
    )
    oracle = Oracle(server["base"], truth, held_out, annotators=2, rate=20.0, budget=8, token=TOKEN)
    report = oracle.run(progress=False, settle=120)
    assert report["posted"] == report["accepted"] == 8
    assert report["duplicates"] == 0 and report["errors"] == []
    assert report["metric"] == "map50"
    versions = [p["version"] for p in report["curve"]]
    assert versions and versions == sorted(set(versions))
    assert all(0.0 <= p["map50"] <= 1.0 for p in report["curve"])
    assert report["curve"][-1]["labels"] > report["curve"][0]["labels"]


def test_a_killed_detector_trainer_comes_back_with_every_label_and_keeps_learning(server):
    """Last in this module: the trainer process dies (SIGKILL) while box labels arrive."""
    import ray

    from activestream.benchmarks import fault_recovery
    from activestream.pipelines.loop import LOOP_ACTOR

    trainer = ray.get(ray.get_actor(LOOP_ACTOR).handles.remote())["trainer"]
    held = {r["id"] for r in logged(server)}
    before = model(server)
    fault_recovery.kill_trainer(trainer)()
    fresh = [i for i in server["truth"] if i not in held][:4]
    posted = post(server, [{"id": i, "boxes": boxes_of(server, i)} for i in fresh])
    assert posted.status_code == 200, posted.text  # durable in the log while the trainer is down
    labeled = len({r["id"] for r in logged(server)})

    def recovered():
        response = requests.get(f"{server['base']}/model", timeout=30)
        if not response.ok:
            return None
        info = response.json()
        return info if info["labels_seen"] == labeled else None

    info = until(recovered, 180, "the restarted trainer holding every label")
    assert info["task"] == "detection"
    assert info["version"] >= before["version"]
    more = [i for i in server["truth"] if i not in held and i not in fresh][:4]
    assert post(server, [{"id": i, "boxes": boxes_of(server, i)} for i in more]).ok
    until(lambda: model(server)["version"] > info["version"], 180, "a version after the restart")
