"""The label ledger without Ray: durable before answered, and a trainer that always catches up."""

import pytest

from activestream.actors.checkpoints import CheckpointStore
from activestream.actors.items import ItemStore
from activestream.actors.labels import LabelConflict, LabelError, UnknownId
from activestream.actors.ledger import LabelLedger
from activestream.actors.queue import QueryQueue
from activestream.actors.trainer import Trainer, TrainerService
from activestream.config import ModelConfig, TrainingConfig


class LocalDownstream:
    """The trainer and queue in this process; ``down`` makes every call fail like a dead actor."""

    def __init__(self, trainer, queue):
        self.trainer, self.queue, self.down = trainer, queue, False

    def _check(self):
        if self.down:
            raise ConnectionError("actor unreachable")

    def forward(self, start, records):
        self._check()
        return self.trainer.ingest(start, records)

    def trainer_offset(self):
        self._check()
        return self.trainer.applied

    def retire(self, ids, labels=None):
        self._check()
        self.queue.mark_labeled(ids, labels)

    def retired(self):
        self._check()
        return self.queue.stats()["labeled"]


def make_trainer(pool, **kwargs):
    training = TrainingConfig(buffer_size=4, steps_per_update=2)
    return Trainer(training=training, model=ModelConfig(), items=ItemStore(pool), **kwargs)


def make_ledger(path, pool, downstream=None):
    ledger = LabelLedger(str(path), items=ItemStore(pool), downstream=downstream, sync_seconds=60)
    ledger.start()
    return ledger


def labels(truth, n, start=0):
    return [{"id": i, "label": truth[i]} for i in list(truth)[start : start + n]]


def test_accepted_labels_are_in_the_log_when_add_returns(tmp_path, digits):
    _, pool, _, truth = digits
    ledger = make_ledger(tmp_path, pool)
    ledger.add(labels(truth, 5), annotator="ann")
    reopened = make_ledger(tmp_path, pool)  # a new process would see exactly this
    assert reopened.labels() == {r["id"]: r["label"] for r in labels(truth, 5)}
    assert {r["annotator"] for r in reopened.read()} == {"ann"}


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"id": "nope", "label": 1}, UnknownId),
        ({"id": "x", "label": 99}, LabelError),
        ({"id": "x", "label": "one"}, LabelError),
    ],
)
def test_a_rejected_batch_leaves_the_log_unchanged(tmp_path, digits, bad, error):
    _, pool, _, truth = digits
    ledger = make_ledger(tmp_path, pool)
    ledger.add(labels(truth, 2))
    with pytest.raises(error):
        ledger.add([*labels(truth, 3, start=2), bad])
    assert ledger.status()["log_offset"] == 2


def test_a_different_label_conflicts_unless_relabeled(tmp_path, digits):
    _, pool, _, truth = digits
    ledger = make_ledger(tmp_path, pool)
    (first,) = labels(truth, 1)
    ledger.add([first])
    other = {"id": first["id"], "label": (first["label"] + 1) % 10}
    with pytest.raises(LabelConflict):
        ledger.add([other])
    assert ledger.add([other], relabel=True).accepted == 1
    assert make_ledger(tmp_path, pool).labels()[first["id"]] == other["label"]
    assert ledger.read()[-1]["relabel"] is True


def test_duplicates_are_counted_and_not_logged_again(tmp_path, digits):
    _, pool, _, truth = digits
    ledger = make_ledger(tmp_path, pool)
    ledger.add(labels(truth, 3))
    result = ledger.add(labels(truth, 4))
    assert (result.accepted, result.duplicates) == (1, 3)
    assert ledger.status()["log_offset"] == 4


def test_labels_reach_the_trainer_and_retire_from_the_queue(tmp_path, digits):
    _, pool, _, truth = digits
    trainer, queue = make_trainer(pool), QueryQueue()
    ledger = make_ledger(tmp_path, pool, LocalDownstream(trainer, queue))
    assert ledger.add(labels(truth, 6)).trainer_ok
    assert trainer.held_labels() == ledger.labels()
    assert queue.stats()["labeled"] == 6


def test_in_background_mode_batches_reach_trainer_and_queue_in_order_exactly_once(tmp_path, digits):
    import threading

    _, pool, _, truth = digits
    trainer, queue = make_trainer(pool), QueryQueue()
    ledger = LabelLedger(
        str(tmp_path),
        items=ItemStore(pool),
        downstream=LocalDownstream(trainer, queue),
        sync_seconds=60,
        background=True,
    )
    ledger.start()
    try:
        writers = [
            threading.Thread(
                target=lambda w=w: [
                    ledger.add(labels(truth, 2, start=20 * w + 2 * i)) for i in range(10)
                ]
            )
            for w in range(6)
        ]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        assert ledger.flush(timeout=30)
        assert trainer.held_labels() == ledger.labels()
        assert trainer.labels_seen == 120 == trainer.applied  # none twice, none skipped
        assert queue.stats()["labeled"] == 120
    finally:
        ledger.stop()


def test_in_background_mode_a_down_trainer_still_gets_every_label_from_the_catch_up(
    tmp_path, digits
):
    _, pool, _, truth = digits
    trainer, queue = make_trainer(pool), QueryQueue()
    downstream = LocalDownstream(trainer, queue)
    ledger = LabelLedger(
        str(tmp_path),
        items=ItemStore(pool),
        downstream=downstream,
        sync_seconds=60,
        background=True,
    )
    ledger.start()
    try:
        downstream.down = True
        assert ledger.add(labels(truth, 5)).accepted == 5  # durable: answered while down
        assert ledger.flush(timeout=30)
        assert ledger.status()["trainer_ok"] is False and trainer.labels_seen == 0
        downstream.down = False
        assert ledger.catch_up()
        assert trainer.held_labels() == ledger.labels()
    finally:
        ledger.stop()


def test_labels_are_accepted_while_the_trainer_is_down_and_reach_it_later(tmp_path, digits):
    _, pool, _, truth = digits
    trainer, queue = make_trainer(pool), QueryQueue()
    downstream = LocalDownstream(trainer, queue)
    ledger = make_ledger(tmp_path, pool, downstream)
    ledger.add(labels(truth, 3))
    downstream.down = True
    result = ledger.add(labels(truth, 5, start=3))
    assert result.accepted == 5 and not result.trainer_ok
    assert ledger.status()["trainer_ok"] is False
    assert trainer.labels_seen == 3
    downstream.down = False
    assert ledger.catch_up()
    assert trainer.held_labels() == ledger.labels()
    assert trainer.labels_seen == 8  # nothing twice
    assert ledger.status()["trainer_ok"] is True


def test_a_started_ledger_says_the_trainer_is_not_ok_until_its_first_catch_up(tmp_path, digits):
    # The service answers while the trainer builds: /healthz says degraded until it holds the log.
    _, pool, _, truth = digits
    make_ledger(tmp_path, pool).add(labels(truth, 3))  # logged before this start
    trainer = make_trainer(pool)
    ledger = make_ledger(tmp_path, pool, LocalDownstream(trainer, QueryQueue()))
    assert ledger.status()["trainer_ok"] is False
    assert ledger.catch_up() and trainer.labels_seen == 3
    assert ledger.status()["trainer_ok"] is True


def test_a_trainer_restored_from_a_checkpoint_catches_up_on_the_rest_of_the_log(tmp_path, digits):
    _, pool, _, truth = digits
    first, queue = make_trainer(pool), QueryQueue()
    ledger = make_ledger(tmp_path / "log", pool, LocalDownstream(first, queue))
    ledger.add(labels(truth, 8))
    first.step_if_ready()
    blob = first.checkpoint()
    ledger.add(labels(truth, 6, start=8))  # after the checkpoint: only in the log
    second = make_trainer(pool)
    second.restore(blob)
    assert (second.applied, second.version) == (8, first.version)
    ledger.downstream = LocalDownstream(second, queue)
    assert ledger.catch_up()
    assert second.held_labels() == ledger.labels()
    assert second.labels_seen == 14


def test_a_restarted_ledger_retires_every_logged_id_from_a_fresh_queue(tmp_path, digits):
    _, pool, _, truth = digits
    make_ledger(tmp_path, pool).add(labels(truth, 7))
    queue = QueryQueue()
    make_ledger(tmp_path, pool, LocalDownstream(make_trainer(pool), queue))
    assert queue.stats()["labeled"] == 7


def test_a_gap_in_the_offsets_is_refused_so_nothing_is_skipped(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    assert trainer.ingest(0, labels(truth, 2)) == 2
    assert trainer.ingest(5, labels(truth, 2, start=5)) == 2  # offsets 2..4 missing
    assert trainer.ingest(0, labels(truth, 4)) == 4  # overlap: only offsets 2, 3 are new
    assert trainer.labels_seen == 4


def test_a_restarted_service_resumes_from_its_checkpoint_above_the_published_version(
    tmp_path, digits
):
    _, pool, _, truth = digits
    store = CheckpointStore(str(tmp_path / "ckpt"))
    published = []

    def service(**kwargs):
        training = TrainingConfig(buffer_size=4, steps_per_update=2)
        return TrainerService(
            training=training,
            model=ModelConfig(),
            items=ItemStore(pool),
            publish=published.append,
            put=lambda state: state,
            checkpoints=store,
            **kwargs,
        )

    first = service()
    first.start()
    first.ingest(0, labels(truth, 8))
    first.flush()
    first.stop()  # a clean stop writes a checkpoint
    assert store.versions() == [first.version]
    second = service(version_floor=lambda: first.version + 5, autostart=True)
    assert second.recovered_from == first.version
    assert second.version == first.version + 6  # never announces a number twice
    assert second.held_labels() == first.held_labels() and second.applied == 8
    assert published[-1].version == second.version
    second.stop()


def test_a_retracted_label_leaves_the_ledger_and_the_trainer(tmp_path, digits):
    _, pool, _, truth = digits
    trainer, queue = make_trainer(pool), QueryQueue()
    ledger = make_ledger(tmp_path, pool, LocalDownstream(trainer, queue))
    ledger.add(labels(truth, 6))
    gone = list(truth)[2]
    assert ledger.retract([gone, "never-labeled"]) == 1
    assert gone not in ledger.labels() and gone not in trainer.held_labels()
    assert trainer.labels_seen == 5 and trainer.held_labels() == ledger.labels()


def test_a_retract_is_durable_and_a_rebuilt_ledger_forgets_the_label(tmp_path, digits):
    _, pool, _, truth = digits
    ledger = make_ledger(tmp_path, pool)
    ledger.add(labels(truth, 3))
    ledger.retract([list(truth)[0]])
    ledger.stop()
    again = make_ledger(tmp_path, pool)
    assert set(again.labels()) == set(list(truth)[1:3])


def test_a_retracted_id_can_be_labeled_again_as_a_fresh_label(tmp_path, digits):
    _, pool, _, truth = digits
    trainer, queue = make_trainer(pool), QueryQueue()
    ledger = make_ledger(tmp_path, pool, LocalDownstream(trainer, queue))
    first = list(truth)[0]
    ledger.add([{"id": first, "label": 1}])
    ledger.retract([first])
    assert ledger.add([{"id": first, "label": 2}]).accepted == 1
    assert trainer.held_labels() == {first: 2}


def test_a_trainer_replaying_the_log_from_scratch_ends_without_retracted_labels(tmp_path, digits):
    _, pool, _, truth = digits
    ledger = make_ledger(tmp_path, pool)
    ledger.add(labels(truth, 5))
    ledger.retract(list(truth)[:2])
    trainer = make_trainer(pool)
    assert trainer.ingest(0, ledger.read(0)) == ledger.log.offset
    assert set(trainer.held_labels()) == set(list(truth)[2:5])


def test_training_over_retracted_rows_stays_finite(tmp_path, digits):
    import numpy as np

    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    ledger = make_ledger(tmp_path, pool, LocalDownstream(trainer, QueryQueue()))
    ledger.add(labels(truth, 4))
    trainer.fetch_pending()
    ledger.retract(list(truth)[:4])  # a whole buffer withdrawn after its pixels arrived
    ledger.add(labels(truth, 4, start=4))
    assert trainer.step_if_ready()
    weights = np.concatenate([p.detach().numpy().ravel() for p in trainer.model.parameters()])
    assert np.isfinite(weights).all()
