"""Every actor of the running service killed in turn (SIGKILL) under a steady label stream."""

from __future__ import annotations

import numpy as np
import pytest

from activestream.benchmarks import kill_each
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth

pytestmark = pytest.mark.slow
TOKEN = "kill-token"
# Measured by the kill_each benchmark on 2 cores, the worst of its two latest runs (c5cb859 and
# 31467b8; docs/bench/bench.json holds the newest): queries served again within 6.5 s of any
# kill (the replica's), every role healthy again within 12 s (the trainer restoring its
# checkpoint; 3.9 s in the newer run), a killed scorer replaced by a new process in 2.0 s. The
# bounds allow three times that, for a CI machine that runs the suite's other services too.
QUERIES_BACK_S = 3 * 6.5
HEALTHY_S = 3 * 12.0


@pytest.fixture(scope="module")
def outcome(run_service, durable_config, tmp_path_factory):
    cfg = durable_config(tmp_path_factory.mktemp("kill_each"))
    pool, _ = resolve_dataset(cfg)
    items = list(ground_truth(pool).items())
    np.random.default_rng(1).shuffle(items)
    with run_service(cfg, token=TOKEN) as base:
        result = kill_each.run(
            base, dict(items), headers={"Authorization": f"Bearer {TOKEN}"}, settle=2.0
        )
    print(f"\nkill each actor: {result}")
    return result


def test_every_role_was_killed_and_came_back_healthy(outcome):
    assert [k["role"] for k in outcome["kills"]] == list(kill_each.ROLES)
    never = {k["role"] for k in outcome["kills"] if k["healthy_s"] is None}
    assert not never, f"never healthy again after killing {never}"
    slow = {k["role"]: k["healthy_s"] for k in outcome["kills"] if k["healthy_s"] > HEALTHY_S}
    assert not slow, f"healthy again only after {slow} s"


def test_a_killed_scorer_is_replaced_by_a_new_process(outcome):
    (scorer,) = [k for k in outcome["kills"] if k["role"] == "scorer"]
    assert scorer["back_s"] is not None and scorer["back_s"] < HEALTHY_S


def test_queries_are_served_again_after_every_kill(outcome):
    late = {k["role"]: k["queries_s"] for k in outcome["kills"] if k["queries_s"] is None}
    assert not late, f"no query served after killing {late}"
    slow = {k["role"]: k["queries_s"] for k in outcome["kills"] if k["queries_s"] > QUERIES_BACK_S}
    assert not slow, f"queries served again only after {slow} s"


def test_no_acknowledged_label_is_lost(outcome):
    assert outcome["labels_acked"] > 100
    assert outcome["labels_lost"] == 0


def test_no_label_is_logged_or_held_twice(outcome):
    assert outcome["log_ids_twice"] == 0
    assert outcome["labels_seen"] == outcome["labels_held"] == outcome["log_records"]


def test_the_model_version_never_goes_down(outcome):
    assert outcome["version_drops"] == 0
    assert outcome["last_version"] > outcome["first_version"]
