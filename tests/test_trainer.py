import os
import threading
import time

import numpy as np
import pytest

from activestream.actors.items import ItemStore
from activestream.actors.labels import LabelConflict, LabelError
from activestream.actors.trainer import (
    Trainer,
    TrainerService,
    _lower_priority,
    _Reservoir,
    update_steps,
)
from activestream.actors.weights import WeightsBoard
from activestream.config import ModelConfig, TrainingConfig
from activestream.sources.shards import load_arrays


def make_trainer(pool, **training) -> Trainer:
    cfg = TrainingConfig(**{"buffer_size": 4, "steps_per_update": 3, **training})
    return Trainer(training=cfg, model=ModelConfig(), items=ItemStore(pool), seed=0)


def first_labels(truth, n, start=0):
    return [{"id": i, "label": truth[i]} for i in list(truth)[start : start + n]]


def test_a_full_buffer_trains_and_bumps_the_version(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    trainer.add_labels(first_labels(truth, 3))
    assert not trainer.step_if_ready()
    assert trainer.version == 0
    trainer.add_labels(first_labels(truth, 1, start=3))
    assert trainer.step_if_ready()
    assert trainer.version == 1
    assert trainer.train_steps == 3
    assert trainer.buffered == 0


def test_labels_seen_counts_trained_and_buffered_labels(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    trainer.add_labels(first_labels(truth, 6))
    trainer.step_if_ready()
    assert (trainer.labels_seen, trainer.buffered) == (6, 0)
    trainer.add_labels(first_labels(truth, 2, start=6))
    assert (trainer.labels_seen, trainer.buffered) == (8, 2)
    assert trainer.model_info()["labels_seen"] == 8


def test_repeating_a_label_is_idempotent(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    assert trainer.add_labels(first_labels(truth, 2)).accepted == 2
    again = trainer.add_labels(first_labels(truth, 2))
    assert (again.accepted, again.duplicates) == (0, 2)
    assert trainer.labels_seen == 2


def test_a_different_label_for_a_labeled_id_is_a_conflict_and_keeps_the_first(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    rec = first_labels(truth, 1)[0]
    trainer.add_labels([rec])
    with pytest.raises(LabelConflict, match="already labeled"):
        trainer.add_labels([{"id": rec["id"], "label": (rec["label"] + 1) % 10}])
    assert trainer.labels_seen == 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "nope", "label": 1}, "unknown id 'nope'"),
        ({"id": "digits-00000", "label": 10}, "outside the class range"),
        ({"id": "digits-00000", "label": -1}, "outside the class range"),
        ({"id": "digits-00000", "label": "3"}, "label must be an integer"),
        ({"id": "digits-00000", "label": 2.5}, "label must be an integer"),
        ({"id": 7, "label": 1}, "id must be a string"),
        ({"label": 1}, "expected an object"),
    ],
)
def test_bad_records_reject_the_whole_batch_and_leave_state_alone(digits, record, message):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    good = first_labels(truth, 2)
    with pytest.raises(LabelError, match=message):
        trainer.add_labels([*good, record])
    assert trainer.labels_seen == 0
    assert trainer.add_labels(good).accepted == 2


@pytest.mark.parametrize("policy", ["new_only", "replay", "full"])
def test_every_policy_learns_digits_above_chance(digits, policy):
    _, pool, test, truth = digits
    trainer = make_trainer(pool, policy=policy, buffer_size=32, steps_per_update=20)
    for start in range(0, 160, 32):
        trainer.add_labels(first_labels(truth, 32, start=start))
        trainer.step_if_ready()
    _, x, y = load_arrays(test)
    assert trainer.evaluate(x, y) > 0.5


def test_a_burst_of_labels_trains_as_many_steps_per_label_as_single_buffers(digits):
    _, pool, _, truth = digits
    steady = make_trainer(pool, buffer_size=8, steps_per_update=5)
    for start in range(0, 48, 8):
        steady.add_labels(first_labels(truth, 8, start=start))
        steady.partial_fit()
    burst = make_trainer(pool, buffer_size=8, steps_per_update=5)
    burst.add_labels(first_labels(truth, 48))  # arrived while an earlier update trained
    burst.partial_fit()
    assert (steady.version, burst.version) == (6, 1)
    assert burst.train_steps == steady.train_steps == 30


def test_recency_weighted_replay_draws_newer_labels_more_often(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool, replay_ratio=1.0, recency_half_life=8.0)
    trainer.add_labels(first_labels(truth, 64))
    trainer.partial_fit()
    draws = trainer._reservoir.sample(4000, 8.0, now=64)
    assert np.mean(draws >= 32) > 0.9


def test_service_publishes_each_version_once(digits):
    _, pool, _, truth = digits
    published, puts = [], []
    service = TrainerService(
        training=TrainingConfig(buffer_size=4, steps_per_update=2),
        model=ModelConfig(),
        items=ItemStore(pool),
        publish=published.append,
        put=lambda state: puts.append(state) or len(puts),
    )
    service.start()
    service.add_labels(first_labels(truth, 4))
    deadline = time.monotonic() + 30
    while len(published) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    service.stop()
    assert [w.version for w in published] == [0, 1]
    assert len(puts) == 2
    assert published[1].labels_seen == 4


def test_service_publishes_a_partial_buffer_once_labels_waited_publish_seconds(digits):
    _, pool, _, truth = digits
    published = []
    service = TrainerService(
        training=TrainingConfig(buffer_size=16, steps_per_update=2, publish_seconds=0.3),
        model=ModelConfig(),
        items=ItemStore(pool),
        publish=published.append,
        put=lambda state: state,
    )
    service.start()
    began = time.monotonic()
    service.add_labels(first_labels(truth, 3))  # far from a full buffer of 16
    while len(published) < 2 and time.monotonic() - began < 30:
        time.sleep(0.02)
    waited = time.monotonic() - began
    service.stop()
    assert [w.version for w in published] == [0, 1] and published[1].labels_seen == 3
    assert 0.3 <= waited < 5.0


def test_a_time_boxed_update_takes_fewer_steps_and_still_trains_every_label(digits):
    _, pool, _, truth = digits
    trainer = Trainer(
        training=TrainingConfig(buffer_size=16, steps_per_update=100),
        model=ModelConfig(),
        items=ItemStore(pool),
    )
    trainer.add_labels(first_labels(truth, 64))  # a backlog: 4 buffers, 400 steps untimed
    trainer.partial_fit(seconds=0.05)
    assert 1 <= trainer.train_steps < update_steps(64, 16, 100)
    assert trainer.cut_updates == 1
    assert trainer.labels_seen == 64 and trainer.buffered == 0 and trainer.version == 1
    # Once no label waits, the owed steps are taken, time-boxed too, each a version.
    taken = trainer.train_steps
    while trainer.catch_up(seconds=0.05):
        assert trainer.train_steps > taken
        taken = trainer.train_steps
    assert trainer.train_steps == update_steps(64, 16, 100)
    assert trainer.labels_seen == 64 and trainer.version > 2


def test_service_republishes_to_a_board_that_restarted_empty(digits):
    _, pool, _, truth = digits
    boards = [WeightsBoard()]
    service = TrainerService(
        training=TrainingConfig(buffer_size=4, steps_per_update=2),
        model=ModelConfig(),
        items=ItemStore(pool),
        publish=lambda weights: boards[-1].publish(weights),
        put=lambda state: state,
        version_floor=lambda: boards[-1].latest_version(),
    )
    service.start()
    service.add_labels(first_labels(truth, 4))
    deadline = time.monotonic() + 30
    while boards[-1].latest_version() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    boards.append(WeightsBoard())  # what a restarted board actor holds: nothing
    while boards[-1].latest_version() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    service.stop()
    assert boards[-1].latest_version() == service.version == 1


def test_relabel_replaces_the_stored_label_without_adding_a_row(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    rec = first_labels(truth, 1)[0]
    trainer.add_labels([rec])
    other = (rec["label"] + 1) % 10
    result = trainer.add_labels([{"id": rec["id"], "label": other}], relabel=True)
    assert (result.accepted, trainer.labels_seen) == (1, 1)
    with pytest.raises(LabelConflict):
        trainer.add_labels([rec])


def test_recent_accuracy_measures_the_model_on_labels_before_it_sees_them(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    assert trainer.model_info()["recent_accuracy"] is None
    trainer.add_labels(first_labels(truth, 20))
    trainer.partial_fit()
    assert 0.0 <= trainer.model_info()["recent_accuracy"] <= 1.0
    assert len(trainer.recent_hits) == 20


def test_the_same_seed_trains_to_the_same_weights(digits):
    _, pool, _, truth = digits
    states = []
    for _ in range(2):
        trainer = make_trainer(pool)
        trainer.add_labels(first_labels(truth, 8))
        trainer.partial_fit()
        states.append(trainer.state_arrays())
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])


def test_a_restored_checkpoint_continues_exactly_where_it_stopped(digits):
    _, pool, _, truth = digits
    original = make_trainer(pool)
    original.add_labels(first_labels(truth, 8))
    original.partial_fit()
    original.add_labels(first_labels(truth, 2, start=8))  # still buffered
    blob = original.checkpoint()

    restored = make_trainer(pool)
    restored.restore(blob)
    assert (restored.version, restored.labels_seen, restored.buffered) == (1, 10, 2)
    for trainer in (original, restored):
        trainer.add_labels(first_labels(truth, 6, start=10))
        trainer.partial_fit()
    a, b = original.state_arrays(), restored.state_arrays()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    first = first_labels(truth, 1)[0]
    with pytest.raises(LabelConflict):
        restored.add_labels([{"id": first["id"], "label": (first["label"] + 1) % 10}])


@pytest.mark.parametrize(
    ("policy", "most"),
    [("new_only", 0), ("replay", 4), ("full", 24)],
)
def test_the_trainer_holds_only_the_pixels_its_policy_can_still_draw(digits, policy, most):
    _, pool, _, truth = digits
    trainer = make_trainer(pool, policy=policy, buffer_size=8, replay_capacity=4)
    for start in (0, 8, 16):
        trainer.add_labels(first_labels(truth, 8, start))
        trainer.partial_fit()
    assert trainer.labels_seen == 24
    assert trainer.held_rows == most


def test_replay_draws_come_from_the_reservoir_as_it_is_now():
    reservoir = _Reservoir(4, np.random.default_rng(0))
    reservoir.add(range(4))
    assert set(reservoir.sample(200, None, now=4).tolist()) == {0, 1, 2, 3}
    reservoir.add(range(4, 400))  # replaces rows in place: no draw may come from a stale copy
    assert set(reservoir.sample(200, None, now=400).tolist()) == set(reservoir.rows)
    newest = max(reservoir.rows)
    assert np.mean(reservoir.sample(400, 1.0, now=400) == newest) > 0.5
    reservoir.load([7, 8], seen=10)  # a checkpoint's
    assert set(reservoir.sample(200, None, now=400).tolist()) == {7, 8}


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priorities (Linux)")
@pytest.mark.parametrize(
    ("start", "nice", "expected"),
    [(0, 10, 10), (15, 10, 16), (19, 10, 19), (15, 0, 15)],
)
def test_the_training_thread_lands_below_requests_but_not_on_the_floor(start, nice, expected):
    # Ray starts its workers at nice 15: training must not fall to 19, the scorers' level.
    seen = []

    def body():
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) > start:
            seen.append(None)  # already lower than the case needs (raising needs privilege)
            return
        os.setpriority(os.PRIO_PROCESS, tid, start)
        _lower_priority(nice)
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if seen == [None]:
        pytest.skip("this process already runs at a lower priority")
    assert seen == [expected]


def test_the_service_reports_what_its_last_update_spent_training_and_publishing(digits):
    _, pool, _, truth = digits
    published = []

    def publish(weights):
        time.sleep(0.05)  # a slow board
        published.append(weights.version)

    service = TrainerService(
        training=TrainingConfig(buffer_size=4, steps_per_update=2),
        model=ModelConfig(),
        items=ItemStore(pool),
        publish=publish,
        put=lambda state: state,
    )
    assert service.model_info()["last_update_version"] == -1
    service.start()
    service.add_labels(first_labels(truth, 4))
    deadline = time.monotonic() + 30
    while service.model_info()["last_update_version"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    info = service.model_info()
    service.stop()
    assert published == [0, 1]
    assert info["last_update_version"] == info["version"] == 1
    assert 0 < info["last_train_seconds"] < info["last_update_seconds"]
    assert 0 < info["last_train_cpu_seconds"]
    assert info["last_publish_seconds"] >= 0.05
    assert info["last_update_seconds"] == pytest.approx(
        info["last_train_seconds"] + info["last_publish_seconds"]
    )


def test_a_board_listener_gets_the_trainers_next_version_as_soon_as_it_is_out(digits):
    _, pool, _, truth = digits
    board = WeightsBoard()
    service = TrainerService(
        training=TrainingConfig(buffer_size=4, steps_per_update=2),
        model=ModelConfig(),
        items=ItemStore(pool),
        publish=board.publish,
        put=lambda state: state,
    )
    assert board.listen(-1, timeout=0.01) is None  # nothing published yet
    service.start()
    assert board.listen(-1, timeout=5).version == 0  # already out: no wait
    began = time.monotonic()
    assert board.listen(0, timeout=0.2) is None  # nothing new: the timeout
    assert time.monotonic() - began >= 0.2
    threading.Timer(0.2, service.add_labels, [first_labels(truth, 4)]).start()
    began = time.monotonic()
    latest = board.listen(0, timeout=30)
    waited = time.monotonic() - began
    service.stop()
    assert latest.version == 1 and latest.labels_seen == 4 and latest.refs
    assert 0.2 <= waited < 30


def test_ingest_records_labels_and_offset_at_once_and_reads_pixels_only_to_train(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    assert trainer.ingest(0, first_labels(truth, 4)) == 4
    assert (trainer.labels_seen, trainer.unfetched, trainer.held_rows) == (4, 4, 0)
    assert trainer.held_labels() == {r["id"]: r["label"] for r in first_labels(truth, 4)}
    assert trainer.step_if_ready()
    assert (trainer.version, trainer.unfetched, trainer.labels_seen) == (1, 0, 4)


def test_a_checkpoint_of_labels_whose_pixels_were_not_fetched_restores_them(digits):
    _, pool, _, truth = digits
    original = make_trainer(pool)
    original.ingest(0, first_labels(truth, 8))
    original.partial_fit()
    original.ingest(8, first_labels(truth, 3, start=8))  # held and counted, pixels not read
    restored = make_trainer(pool)
    restored.restore(original.checkpoint())
    assert restored.applied == original.applied == 11
    assert restored.held_labels() == original.held_labels()
    assert (restored.unfetched, restored.buffered) == (3, 3)
    for trainer in (original, restored):
        trainer.ingest(11, first_labels(truth, 5, start=11))
        trainer.partial_fit()
    a, b = original.state_arrays(), restored.state_arrays()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_relabel_that_arrives_before_the_pixels_are_fetched_is_the_label_trained_on(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    rec = first_labels(truth, 1)[0]
    other = (rec["label"] + 1) % 10
    trainer.ingest(0, [rec])
    trainer.ingest(1, [{"id": rec["id"], "label": other}])  # the log's relabel record
    assert trainer.fetch_pending() == 1
    assert (trainer.labels_seen, trainer.held_labels()) == (1, {rec["id"]: other})


def test_an_ingested_id_that_left_the_pool_is_dropped_when_pixels_are_fetched(digits):
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    assert trainer.ingest(0, [*first_labels(truth, 2), {"id": "gone", "label": 1}]) == 3
    assert trainer.fetch_pending() == 2
    assert set(trainer.held_labels()) == {r["id"] for r in first_labels(truth, 2)}
    assert trainer.applied == 3  # the record is consumed: a resend does not bring it back


def test_fetching_pixels_under_a_steady_stream_ends_after_what_was_pending(digits):
    """Labels arriving during every read must not keep the training thread fetching for ever."""
    _, pool, _, truth = digits
    trainer = make_trainer(pool)
    trainer.add_labels(first_labels(truth, 4))
    arriving = iter(first_labels(truth, 100, start=4))
    read = trainer._pixels

    def read_while_labels_arrive(ids):
        trainer.add_labels([next(arriving)])  # one more label lands during each read
        return read(ids)

    trainer._pixels = read_while_labels_arrive
    assert trainer.fetch_pending(chunk=1) == 4
    assert trainer.unfetched == 4  # the four that arrived meanwhile wait for the next call
    assert trainer.step_if_ready()  # and the update trains on what was fetched
