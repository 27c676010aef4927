"""Scores into a real Label Studio 1.23.2 server: a few rewritten scores per version, in order.

The bridge runs as a plain class with a real trainer and ledger in this process; the project's
tasks name pool items (``data.id``), so no image is fetched.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_label_studio import CONFIG

from activestream.actors.items import ItemStore
from activestream.actors.label_studio import (
    VERSION_PREFIX,
    LabelStudioBridge,
    LocalService,
    confidence,
)
from activestream.actors.ledger import LabelLedger
from activestream.actors.trainer import Trainer
from activestream.config import LabelStudioConfig, ModelConfig, TrainingConfig

pytestmark = pytest.mark.slow
TASKS = 300


@pytest.fixture()
def pushed(label_studio, digits, tmp_path):
    """A project of 300 pool items whose scores the bridge wrote once (version 0)."""
    _, pool, _, truth = digits
    ls = label_studio.client()
    project = ls.create_project("push", CONFIG)["id"]
    ids = list(truth)[:TASKS]
    ls.import_tasks(project, [{"image": f"/x/{i}.png", "id": i} for i in ids])
    trainer = Trainer(
        training=TrainingConfig(buffer_size=8), model=ModelConfig(), items=ItemStore(pool)
    )
    ledger = LabelLedger(str(tmp_path / "labels"), items=ItemStore(pool))
    ledger.start()
    bridge = LabelStudioBridge(
        items=ItemStore(pool),
        service=LocalService(ledger, trainer),
        # the first 5 exact, any other score may lag by up to 0.3
        config=LabelStudioConfig(
            url=label_studio.url,
            api_key=label_studio.token,
            batch=100,
            exact_top=5,
            score_tolerance=0.3,
        ),
    )
    bridge.setup({"project": project, "schema": CONFIG})
    bridge.step()  # lists the tasks (the first reconcile), then writes every score
    bridge.step()
    assert bridge.status()["pushed_version"] == 0, bridge.status()["errors"]
    return {"ls": ls, "project": project, "bridge": bridge, "trainer": trainer, "truth": truth}


def held(ls, project) -> dict[int, float]:
    """task -> score of the project's ranking prediction; exactly one per task."""
    version = ls.project(project)["model_version"]
    mine = [p for p in ls.predictions(project) if p["model_version"] == version]
    assert len({p["task"] for p in mine}) == len(mine)
    return {p["task"]: p["score"] for p in mine}


def test_the_first_push_writes_every_task_in_batches(pushed):
    ls, project, bridge = pushed["ls"], pushed["project"], pushed["bridge"]
    assert ls.project(project)["model_version"] == f"{VERSION_PREFIX}0"
    assert len(held(ls, project)) == TASKS
    assert bridge.status()["push_requests"] == TASKS // 100 + 1  # the imports, rank by


def test_after_a_new_version_label_studio_keeps_the_models_order(pushed):
    ls, project, bridge, trainer = (pushed[k] for k in ("ls", "project", "bridge", "trainer"))
    truth = list(pushed["truth"].items())
    trainer.add_labels([{"id": i, "label": y} for i, y in truth[TASKS : TASKS + 8]])
    trainer.partial_fit()
    assert trainer.version == 1
    bridge.step()
    status = bridge.status()
    assert status["pushed_version"] == 1, status["errors"]
    scores = held(ls, project)
    tasks = bridge._projects[project].tasks
    order = list(scores)
    model = np.round(
        confidence(trainer.predict_proba(bridge.items.get([tasks[t] for t in order])), "margin"),
        6,
    )
    now = np.array([scores[t] for t in order])
    assert np.all(np.abs(now - model) <= 0.3 + 1e-6)  # no score lags more than the tolerance
    assert np.sort(now)[:5].tolist() == np.sort(model)[:5].tolist()  # the front is exact
    assert ls.next_task(project)["id"] == bridge.ranking(project)[0][0]


def test_a_version_that_moves_no_score_rewrites_nothing(pushed):
    bridge, trainer = pushed["bridge"], pushed["trainer"]
    trainer.version += 1  # published again, same weights (a restarted trainer does this)
    bridge.step()
    status = bridge.status()
    assert status["pushed_version"] == 1 and status["push_requests"] == 0, status["errors"]


def test_a_project_of_exactly_one_full_page_of_tasks_joins_whole(label_studio, digits, tmp_path):
    _, pool, _, truth = digits
    ls = label_studio.client()
    project = ls.create_project("a full page", CONFIG)["id"]
    ls.import_tasks(project, [{"image": f"/x/{i}.png", "id": i} for i in list(truth)[:500]])
    trainer = Trainer(training=TrainingConfig(), model=ModelConfig(), items=ItemStore(pool))
    ledger = LabelLedger(str(tmp_path / "labels"), items=ItemStore(pool))
    ledger.start()
    bridge = LabelStudioBridge(
        items=ItemStore(pool),
        service=LocalService(ledger, trainer),
        config=LabelStudioConfig(url=label_studio.url, api_key=label_studio.token),
    )
    bridge.setup({"project": project, "schema": CONFIG})
    bridge.step()  # the listing asks for pages of 500
    status = bridge.status()
    assert status["projects"][project] == 500 and not status["errors"], status["errors"]


def test_a_full_write_switches_the_project_and_deletes_the_old_set_in_the_background(pushed):
    ls, project, bridge, trainer = (pushed[k] for k in ("ls", "project", "bridge", "trainer"))
    # every score must be exact now, so writing them all anew is the cheaper way
    bridge.config = bridge.config.model_copy(update={"score_tolerance": 0.0, "exact_top": TASKS})
    truth = list(pushed["truth"].items())
    trainer.add_labels([{"id": i, "label": y} for i, y in truth[TASKS : TASKS + 8]])
    trainer.partial_fit()
    bridge.step()
    status = bridge.status()
    assert status["pushed_version"] == 1, status["errors"]
    assert ls.project(project)["model_version"] == f"{VERSION_PREFIX}1"
    assert len(held(ls, project)) == TASKS
    bridge.settle(timeout=120)  # the deletion runs in the housekeeping thread
    assert {p["model_version"] for p in ls.predictions(project)} == {f"{VERSION_PREFIX}1"}
    assert not bridge.status()["errors"]
