"""The continuous loop on the session's real Ray cluster: actors, board, Ray Data rounds."""

import pytest

from activestream.actors.labels import LabelError
from activestream.config import Config
from activestream.pipelines.loop import ActiveLoop
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loop(ray_session, tmp_path_factory):
    cfg = Config().with_overrides(
        {
            "data.cache_dir": str(tmp_path_factory.mktemp("cache")),
            "training.buffer_size": 8,
            "training.steps_per_update": 5,
            "sampling.candidates": 64,
        }
    )
    pool, _ = resolve_dataset(cfg)
    active = ActiveLoop(cfg, pool)
    active.start()
    active.truth = ground_truth(pool)
    yield active
    active.stop()


def label(loop, queries):
    return loop.add_labels([{"id": q.id, "label": loop.truth[q.id]} for q in queries])


def test_labels_in_raise_the_version_and_new_rounds_carry_it(loop):
    loop.wait_for(lambda: loop.rounds, 180, "the first scoring round")
    assert loop.rounds[0].started_version == 0
    queries = loop.lease(8)
    assert len(queries) == 8
    assert label(loop, queries).accepted == 8
    loop.wait_for(lambda: loop.version() >= 1, 60, "version 1")
    loop.wait_for(
        lambda: any(max(r.versions) >= 1 for r in loop.rounds), 180, "a round scored by v1"
    )
    assert loop.errors == []


def test_no_query_repeats_a_labeled_or_leased_id(loop):
    loop.wait_for(lambda: loop.rounds, 180, "the first scoring round")
    seen = set()
    for _ in range(3):
        queries = loop.lease(8)
        ids = {q.id for q in queries}
        assert not ids & seen
        seen |= ids
        label(loop, queries[:4])  # half answered, half still leased


def test_bad_labels_raise_a_clear_error_and_the_trainer_keeps_going(loop):
    before = loop.version()
    with pytest.raises(LabelError, match="unknown id"):
        loop.add_labels([{"id": "not-an-item", "label": 1}])
    with pytest.raises(LabelError, match="class range"):
        loop.add_labels([{"id": "digits-00001", "label": 99}])
    with pytest.raises(LabelError, match="integer"):
        loop.add_labels([{"id": "digits-00001", "label": "x"}])
    queries = loop.lease(8)
    label(loop, queries)
    loop.wait_for(lambda: loop.version() > before, 60, "a newer version after bad input")
