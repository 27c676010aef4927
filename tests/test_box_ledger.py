"""Box labels through the one label ledger, and detection data turned into the pool ``serve`` reads.

The ledger is the classifier's: only its label kind differs. What it logs, it rebuilds after a
restart; a rejected batch leaves the log as it was; the trainer it forwards to holds every label
exactly once.
"""

from __future__ import annotations

from contextlib import nullcontext

import pyarrow.parquet as pq
import pytest

from activestream.actors.detector import BoxLabels
from activestream.actors.items import ItemStore
from activestream.actors.labels import LabelConflict, LabelError, UnknownId
from activestream.actors.ledger import LabelLedger
from activestream.config import StorageConfig
from activestream.pipelines.task import pool_task
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import read_coco
from activestream.sources.detection_pool import TASK_KEY, serve_pool
from activestream.sources.digits import write_digits_shards
from activestream.sources.resolve import open_source


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, CanvasSpec(source="digits", pool=12, test=2, size=64, scale=(16, 32)))
    return out


@pytest.fixture(scope="module")
def pool(canvases, tmp_path_factory):
    uri = serve_pool(str(canvases), str(tmp_path_factory.mktemp("cache")))
    return open_source(uri, StorageConfig()), read_coco(str(canvases / "pool"))


def ledger_of(pool, uri):
    shards, _ = pool
    items = ItemStore(shards)
    kind = BoxLabels(items, shards.classes, lock=nullcontext())
    ledger = LabelLedger(uri, items=items, kind=kind)
    ledger.start()
    return ledger


def truth(pool, k):
    _, data = pool
    item = data.items[k]
    return {"id": item.id, "boxes": [box.to_json() for box in item.boxes]}


def test_box_labels_are_logged_and_a_restarted_ledger_knows_them(pool, tmp_path):
    ledger = ledger_of(pool, str(tmp_path / "log"))
    assert ledger.add([truth(pool, 0), {"id": truth(pool, 1)["id"], "boxes": []}]).accepted == 2
    ledger.stop()
    again = ledger_of(pool, str(tmp_path / "log"))
    assert again.add([truth(pool, 0)]).duplicates == 1
    with pytest.raises(LabelConflict, match="already labeled 0 boxes"):
        again.add([truth(pool, 1)])
    assert again.add([truth(pool, 1)], relabel=True).accepted == 1
    records = again.read()
    assert [len(r["boxes"]) for r in records] == [len(truth(pool, 0)["boxes"]), 0, len(
        truth(pool, 1)["boxes"])]  # fmt: skip
    assert all("label" not in r for r in records)


def test_a_bad_box_rejects_the_batch_and_the_log_is_unchanged(pool, tmp_path):
    ledger = ledger_of(pool, str(tmp_path / "log"))
    bad = {"id": truth(pool, 2)["id"], "boxes": [{"bbox": [60, 0, 10, 10], "label": 0}]}
    with pytest.raises(LabelError, match="width 64"):
        ledger.add([truth(pool, 3), bad])
    with pytest.raises(UnknownId, match="nope"):
        ledger.add([truth(pool, 3), {"id": "nope", "boxes": []}])
    assert ledger.status()["log_offset"] == 0


def test_the_ledger_hands_box_labels_on_without_classes(pool, tmp_path):
    seen = []

    class Downstream:
        def forward(self, start, records):
            seen.extend(records)
            return start + len(records)

        def trainer_offset(self):
            return len(seen)

        def retire(self, ids, labels=None):
            seen.append(("retired", list(ids), labels))

        def retired(self):
            return 0

    shards, _ = pool
    items = ItemStore(shards)
    kind = BoxLabels(items, shards.classes, lock=nullcontext())
    ledger = LabelLedger(str(tmp_path / "log"), items=items, kind=kind, downstream=Downstream())
    ledger.start()
    ledger.add([truth(pool, 4)])
    assert BoxLabels.from_log(seen[0]) == BoxLabels.from_log(truth(pool, 4))
    assert ("retired", [truth(pool, 4)["id"]], None) in seen


def test_detection_data_becomes_a_pool_once_and_says_its_task(canvases, tmp_path):
    uri = serve_pool(str(canvases), str(tmp_path))
    assert uri is not None and uri.startswith(str(tmp_path))
    assert serve_pool(str(canvases), str(tmp_path)) == uri  # written once
    assert serve_pool(uri, str(tmp_path)) == uri  # a pool is served where it lies
    shards = open_source(uri, StorageConfig())
    assert shards.num_rows == 12
    assert pool_task(shards) == "detection"
    assert pq.read_schema(shards.paths[0]).metadata[TASK_KEY] == b"detection"


def test_class_data_is_not_detection_data(tmp_path):
    pool, _ = write_digits_shards(str(tmp_path / "digits"), shards=1)
    assert serve_pool(str(tmp_path / "digits"), str(tmp_path / "cache")) is None
    assert pool_task(pool) == "classification"
    assert not (tmp_path / "cache").exists()


def test_a_detection_sampler_that_spreads_batches_gets_embeddings_and_the_queue_its_batch(pool):
    from activestream.config import Config
    from activestream.pipelines import task
    from activestream.samplers import detection

    shards, _ = pool
    cfg = Config(task="detection").with_overrides(
        {"sampling.cold_start": False, "sampling.sampler": "box_presence_clusters"}
    )
    parts = task.task_parts(cfg, shards)
    assert parts.queue_batch is detection.spec("box_presence_clusters").batch
    assert parts.rounds.keywords["embed"] is True
    assert parts.rounds.keywords["sampler"] == "box_presence_clusters"


def test_a_detection_sampler_without_a_batch_ranks_by_score_alone(pool):
    from activestream.config import Config
    from activestream.pipelines import task

    shards, _ = pool
    cfg = Config(task="detection").with_overrides(
        {"sampling.cold_start": False, "sampling.sampler": "box_presence_sum"}
    )
    parts = task.task_parts(cfg, shards)
    assert parts.queue_batch is None
    assert parts.rounds.keywords["embed"] is False
