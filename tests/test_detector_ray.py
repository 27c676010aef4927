"""The detector's trainer and scorer pool as the service runs them: Ray actors and a Ray Data pass.

The trainer is a restartable actor publishing through a weights board; the scorer pool follows
the board; killing the trainer brings it back from its newest checkpoint with every label.
"""

from __future__ import annotations

import time
from functools import partial

import pyarrow as pa
import pytest
import ray

from activestream.actors.checkpoints import CheckpointStore
from activestream.actors.detector import DetectorTrainerService
from activestream.actors.items import ItemStore
from activestream.actors.weights import WeightsBoard
from activestream.config import ScoringConfig, TrainingConfig
from activestream.models.detection import fcos_detector
from activestream.pipelines.detection_scoring import detector_scored_dataset
from activestream.pipelines.loop import _floor, _publisher
from activestream.sources.canvases import CanvasSpec, make_canvases
from activestream.sources.detection import read_coco
from activestream.sources.detection_pool import write_detection_pool

pytestmark = pytest.mark.slow

DETECTOR = partial(fcos_detector, image_size=64)
TRAINING = TrainingConfig(buffer_size=4, steps_per_update=2, batch_size=4, update_seconds=None)


def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, CanvasSpec(source="digits", pool=24, test=2, size=64, scale=(16, 32)))
    data = read_coco(str(out / "pool"))
    return data, write_detection_pool(data, str(out / "shards"), rows_per_shard=8)


def test_the_scorer_pool_follows_the_board_and_a_killed_trainer_returns_with_its_labels(
    ray_session, pool, tmp_path
):
    data, shards = pool
    board = ray.remote(WeightsBoard).options(num_cpus=0, max_concurrency=16).remote()
    trainer = (
        ray.remote(DetectorTrainerService)
        .options(num_cpus=0.5, max_restarts=1, max_concurrency=8)
        .remote(
            training=TRAINING,
            items=ItemStore(shards),
            classes=data.classes,
            detector=DETECTOR,
            publish=_publisher(board),
            put=ray.put,
            checkpoints=CheckpointStore(str(tmp_path / "checkpoints"), keep=2),
            checkpoint_every=1,
            version_floor=_floor(board),
            autostart=True,
        )
    )
    labels = [{"id": i.id, "boxes": [b.to_json() for b in i.boxes]} for i in data.items[:4]]
    assert ray.get(trainer.add_labels.remote(labels)).accepted == 4
    until(lambda: ray.get(board.latest_version.remote()) >= 1, 120, "version 1 on the board")

    scoring = ScoringConfig(num_scorers=1, cpus_per_scorer=0.25, nice=0)
    ds = detector_scored_dataset(
        scoring, shards, sampler="box_entropy_max", board=board, seed=1, embed=True
    )
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    assert sorted(table.column("id").to_pylist()) == sorted(i.id for i in data.items)
    assert set(table.column("model_version").to_pylist()) == {1}  # the board's, not 0
    assert all(table.column("ok").to_pylist())
    assert table.column("embedding").type.list_size == 320  # the pretrained backbone's width

    before = ray.get(trainer.model_info.remote())
    ray.kill(trainer, no_restart=False)
    after = until(lambda: _recovered(trainer), 180, "the trainer to come back")
    assert after["recovered_from"] == before["version"] == 1
    assert after["labels_trained"] == 4 and after["task"] == "detection"
    assert ray.get(trainer.held_labels.remote()) == {
        r["id"]: sorted(r["boxes"], key=lambda b: (b["label"], b["bbox"])) for r in labels
    }
    until(lambda: ray.get(board.latest_version.remote()) == 2, 60, "a new version number")


def _recovered(trainer):
    """The restarted trainer's model info once it has loaded a checkpoint, else None."""
    try:
        info = ray.get(trainer.model_info.remote(), timeout=10)
    except ray.exceptions.RayError:  # still restarting
        return None
    return info if info["recovered_from"] is not None else None
