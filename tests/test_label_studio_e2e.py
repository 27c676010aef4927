"""activestream as the ML backend of a real Label Studio 1.23.2 server, end to end.

A project with a ``<Choices>`` config gets 100 digit images uploaded, activestream is connected
at ``/api/ml`` (Basic auth carrying the service's token), and 24 annotations are made through
Label Studio's REST API, each on the task Label Studio's uncertainty sampling hands out next.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from browser import CHROMIUM, CHROMIUM_ARGS
from PIL import Image

from activestream.actors.items import ItemStore
from activestream.pipelines.loop import LOOP_ACTOR
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth

pytestmark = pytest.mark.slow
TOKEN = "ls-bridge-token"
CHOICES = "".join(f'<Choice value="{i}"/>' for i in range(10))
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    f'<Choices name="label" toName="image" choice="single">{CHOICES}</Choices></View>'
)
TASKS, ANNOTATIONS = 100, 24


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.1)
    return value


def png(pixels: np.ndarray) -> bytes:
    """An 8x8 digit as a 64x64 PNG (nearest neighbour: resizing back gives the same pixels)."""
    image = Image.fromarray(np.clip(np.rint(pixels[0] * 255), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    image.resize((64, 64), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def truth_of(task: dict[str, Any], truth: dict[str, int]) -> int:
    """The digit of an uploaded task, from its file name (``/data/upload/1/ab12-<id>.png``)."""
    name = re.search(r"-([^/-]+-\d+)\.png$", task["data"]["image"]).group(1)
    return truth[name]


@pytest.fixture(scope="module")
def session(label_studio, run_service, durable_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ls-e2e")
    cfg = durable_config(
        tmp,
        **{
            "label_studio.url": label_studio.url,
            "label_studio.api_key": label_studio.token,
            "label_studio.sync_seconds": 0.5,
            "label_studio.reconcile_seconds": 5.0,
        },
    )
    _, test = resolve_dataset(cfg)
    truth = ground_truth(test)
    ids = list(truth)[:TASKS]
    files = [(f"{i}.png", png(x)) for i, x in zip(ids, ItemStore(test).get(ids), strict=True)]
    ls = label_studio.client()
    project = ls.create_project("activestream digits", CONFIG)["id"]
    # Django takes at most 100 files per request (DATA_UPLOAD_MAX_NUMBER_FILES)
    assert sum(ls.import_files(project, files[i : i + 50]) for i in range(0, TASKS, 50)) == TASKS
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
        assert ls.project(project)["sampling"] == "Uncertainty sampling"  # set by activestream
        version_at_start = ray.get(trainer.model_info.remote())["version"]
        answered: list[tuple[int, int, int]] = []  # task, label, annotation id

        def annotate_next() -> None:
            task = ls.next_task(project)
            label = truth_of(task, truth)
            answered.append(
                (task["id"], label, ls.annotate(task["id"], "label", "image", str(label)))
            )

        for _ in range(ANNOTATIONS - 4):
            annotate_next()
        until(
            lambda: status()["labels_logged"] >= ANNOTATIONS - 4,
            120,
            f"{ANNOTATIONS - 4} labels logged",
        )

        def settled() -> bool:
            version = ray.get(trainer.model_info.remote())["version"]
            return ray.get(trainer.model_info.remote())["buffered"] == 0 and (
                status()["pushed_version"] == version
            )

        until(settled, 120, "training and scores to settle")
        before = ray.get(trainer.model_info.remote())["version"]
        for _ in range(4):  # one full buffer: exactly one new version
            annotate_next()
        saved = time.monotonic()
        until(lambda: ray.get(trainer.model_info.remote())["version"] > before, 120, "a version")
        to_version = time.monotonic() - saved
        until(lambda: status()["pushed_version"] > before, 120, "re-ranked tasks in Label Studio")
        to_ranking = time.monotonic() - saved
        until(settled, 120, "scores of the last version")
        print(
            f"\nannotation saved in Label Studio -> new model version {to_version:.2f} s, "
            f"-> re-ranked tasks in Label Studio {to_ranking:.2f} s "
            f"(the last write of every task's score took {status()['push_seconds']:.2f} s)"
        )
        yield {
            "ls": ls,
            "project": project,
            "backend": backend,
            "bridge": bridge,
            "ledger": ledger,
            "trainer": trainer,
            "status": status,
            "truth": truth,
            "answered": answered,
            "version_at_start": version_at_start,
            "to_version": to_version,
            "to_ranking": to_ranking,
        }


def ls_records(s: dict[str, Any]) -> list[dict[str, Any]]:
    prefix = f"ls-{s['project']}-"
    return [r for r in ray.get(s["ledger"].read.remote(0)) if r["id"].startswith(prefix)]


def test_label_studio_connects_to_the_backend_with_basic_auth(session):
    assert session["backend"]["state"] == "CO"


def test_every_annotation_is_in_the_label_log_exactly_once_with_its_label(session):
    records = ls_records(session)
    assert len(records) == ANNOTATIONS
    assert len({r["id"] for r in records}) == ANNOTATIONS
    expected = {f"ls-{session['project']}-{task}": label for task, label, _ in session["answered"]}
    assert {r["id"]: r["label"] for r in records} == expected


def test_the_model_version_moved_with_the_annotations(session):
    info = ray.get(session["trainer"].model_info.remote())
    assert info["version"] >= session["version_at_start"] + ANNOTATIONS // 4 - 2
    assert session["to_version"] < 60 and session["to_ranking"] < 60


def test_label_studio_ranks_every_task_by_one_scored_prediction_of_the_current_model(session):
    ls, project = session["ls"], session["project"]
    version = ls.project(project)["model_version"]
    current = [p for p in ls.predictions(project) if p["model_version"] == version]
    assert sorted(p["task"] for p in current) == sorted(t["id"] for t in ls.tasks(project))
    assert all(0.0 <= p["score"] <= 1.0 for p in current)
    trained = ray.get(session["trainer"].model_info.remote())["version"]
    assert session["status"]()["pushed_version"] == trained
    assert int(version.removeprefix("activestream-v")) <= trained


def test_the_next_task_label_studio_hands_out_is_the_one_activestream_ranks_most_uncertain(
    session,
):
    ls, project = session["ls"], session["project"]
    labeled = {task for task, _, _ in session["answered"]}
    ranking = ray.get(session["bridge"].ranking.remote(project))
    most_uncertain = next(task for task, _ in ranking if task not in labeled)
    assert ls.next_task(project)["id"] == most_uncertain


def test_an_updated_annotation_relabels_the_item(session):
    task, label, annotation = session["answered"][0]
    new = (label + 1) % 10
    session["ls"].update_annotation(annotation, str(new))
    item = f"ls-{session['project']}-{task}"
    until(
        lambda: ray.get(session["ledger"].labels_of.remote([item])).get(item) == new,
        30,
        "the relabel",
    )
    until(
        lambda: ray.get(session["trainer"].held_labels.remote()).get(item) == new,
        30,
        "the trainer to hold the new label",
    )


def test_a_deleted_annotation_withdraws_the_label(session):
    task, _, annotation = session["answered"][1]
    session["ls"].delete_annotation(annotation)
    item = f"ls-{session['project']}-{task}"
    until(
        lambda: item not in ray.get(session["ledger"].labels_of.remote([item])),
        30,
        "the label to be withdrawn",
    )
    until(
        lambda: item not in ray.get(session["trainer"].held_labels.remote()),
        30,
        "the trainer to let go of it",
    )


DOCS = Path(__file__).resolve().parents[1] / "docs" / "label-studio"
# Data Manager columns left out of the screenshot, so the score column fits beside the image
HIDDEN_COLUMNS = [
    f"tasks:{column}"
    for column in (
        "inner_id",
        "cancelled_annotations",
        "annotators",
        "annotations_results",
        "annotations_ids",
        "predictions_model_versions",
        "predictions_results",
        "file_upload",
        "storage_filename",
        "created_at",
        "updated_at",
        "updated_by",
        "avg_lead_time",
        "draft_exists",
    )
]


def settle(page: Any, selector: str | None = None, text: str | None = None) -> None:
    """Wait for a Label Studio page to finish loading: network idle, content shown, then paint."""
    page.wait_for_load_state("networkidle")
    if selector:
        page.wait_for_selector(selector, state="visible", timeout=30_000)
    if text:
        page.get_by_text(text).first.wait_for(state="visible", timeout=30_000)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)


def shoot(page: Any, folder: Path, name: str) -> None:
    """Save the viewport as ``folder/name``, re-encoded smaller by PIL."""
    path = folder / name
    page.screenshot(path=str(path))
    with Image.open(path) as image:
        image.load()
    image.save(path, optimize=True)


# Last in the module: it needs the annotations the tests above made (and leaves them alone).
def test_label_studio_shows_the_project_ranked_and_the_models_guess_preselected(
    session, label_studio, tmp_path
):
    """In headless Chromium; with ACTIVESTREAM_UPDATE_DOCS set, the screenshots go to the docs."""
    from playwright import sync_api as playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: scripts/test.sh installs Debian's chromium")
    folder = DOCS if os.environ.get("ACTIVESTREAM_UPDATE_DOCS") else tmp_path
    ls, project = session["ls"], session["project"]
    # A Data Manager tab sorted by prediction score, ascending: the order Label Studio's
    # uncertainty sampling hands tasks out in (the score column is hidden by default).
    view = ls.request(
        "POST",
        "/api/dm/views/",
        json={
            "project": project,
            "data": {
                "title": "Most uncertain first",
                "ordering": ["tasks:predictions_score"],
                "hiddenColumns": {"explore": HIDDEN_COLUMNS, "labeling": HIDDEN_COLUMNS},
            },
        },
    )["id"]
    folder.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.goto(f"{label_studio.url}/user/login/")
        page.fill("#email", label_studio.username)
        page.fill("#password", label_studio.password)
        page.click("button.login-button")
        page.wait_for_url(lambda url: "/user/login" not in url, timeout=30_000)

        page.goto(f"{label_studio.url}/projects/{project}/data?tab={view}")
        settle(page, text="Most uncertain first")
        shoot(page, folder, "data-manager.png")

        page.goto(f"{label_studio.url}/projects/{project}/settings/ml")
        settle(page, text="activestream")
        shoot(page, folder, "model-settings.png")

        page.goto(f"{label_studio.url}/projects/{project}/data?tab={view}&labeling=1")
        settle(page, selector="img")
        # The image fills the view's height: scroll the choices (the prediction) into view.
        choices = page.locator("input[type=checkbox]")
        choices.last.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        checked = page.locator("input[type=checkbox]:checked").count()
        choices_shown = choices.count()
        print(f"\nlabeling view: {choices.count()} choices, {checked} checked")
        shoot(page, folder, "labeling.png")
        browser.close()
    assert choices_shown == 10 and checked == 1  # the model's class, preselected
    for name in ("data-manager.png", "model-settings.png", "labeling.png"):
        with Image.open(folder / name) as image:
            assert image.size == (1400, 900)
