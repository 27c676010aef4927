"""Cold start: random picks until the model's own prequential evidence says it is ready."""

import numpy as np
import pytest

from activestream.actors.queue import QueryQueue, cold_start_over
from activestream.config import Config
from activestream.samplers import warmed_up


def warming_queue() -> QueryQueue:
    queue = QueryQueue(explore_p=1.0, lease_seconds=60, seed=0, warmup=True)
    ranked = [f"r{i}" for i in range(20)]
    queue.update_round(ranked, np.linspace(1, 0, 20), [1] * 20, [f"x{i}" for i in range(20)], 1)
    return queue


def test_while_warming_every_slot_is_a_random_pick_even_with_p_1():
    queries = warming_queue().lease(8)
    assert [q.id[0] for q in queries] == ["x"] * 8
    assert all(q.explored for q in queries)


def test_after_the_hand_over_the_ranked_candidates_come_first():
    queue = warming_queue()
    queue.end_warmup()
    assert [q.id for q in queue.lease(3)] == ["r0", "r1", "r2"]
    assert queue.stats()["warming"] == 0


def test_no_hand_over_before_the_minimum_however_good_the_model():
    assert not warmed_up([True] * 19, min_labels=20, accuracy=0.5, max_labels=200)


def test_hand_over_once_the_recent_window_is_accurate_enough():
    hits = [False] * 40 + [True, False] * 10  # the last 20: half right
    assert warmed_up(hits, min_labels=20, accuracy=0.5, max_labels=200)
    assert not warmed_up(hits, min_labels=20, accuracy=0.55, max_labels=200)


def test_a_model_that_never_learns_still_hands_over_at_the_maximum():
    assert warmed_up([False] * 5, labels=200, min_labels=20, accuracy=0.5, max_labels=200)


def test_accuracy_above_one_is_a_fixed_warm_up():
    sampling = (
        Config()
        .with_overrides({"sampling.warmup_accuracy": 1.01, "sampling.warmup_max_labels": 32})
        .sampling
    )
    assert not cold_start_over(sampling, (31, [True] * 31))
    assert cold_start_over(sampling, (32, [False] * 32))


@pytest.mark.parametrize("key", ["sampling.warmup_labels", "sampling.warmup_max_labels"])
def test_warm_up_sizes_must_be_positive(key):
    from activestream.errors import ConfigError

    with pytest.raises(ConfigError, match=key.split(".")[1]):
        Config().with_overrides({key: 0})
