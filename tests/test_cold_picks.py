"""Cold-start picks on the pool's embedding: every registered strategy, the same invariants."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.config import Config
from activestream.pipelines.scoring import cold_start_on_embedding
from activestream.samplers import COLD_STARTS, cold_order, cold_picks
from activestream.samplers.maxherding import maxherding
from activestream.samplers.typiclust import typiclust

embeddings = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 40), st.integers(1, 4)),
    elements=st.floats(-10, 10, allow_nan=False, width=32),
)


def blobs(centres: int, per: int, *, seed: int = 0, outliers: int = 0) -> tuple[np.ndarray, ...]:
    """Well-separated Gaussian blobs in 8-D (and far outliers), with each point's blob."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 20, (centres, 8))
    blob = np.repeat(np.arange(centres), per)
    x = means[blob] + rng.normal(0, 1, (len(blob), 8))
    if outliers:
        x = np.concatenate([x, rng.normal(0, 200, (outliers, 8))])
        blob = np.concatenate([blob, np.full(outliers, -1)])
    return x, blob


@pytest.mark.parametrize("name", COLD_STARTS)
@settings(max_examples=25, deadline=None)
@given(x=embeddings, k=st.integers(0, 50), seed=st.integers(0, 3))
def test_every_cold_start_picks_distinct_rows_as_many_as_asked(name, x, k, seed):
    picks = cold_picks(name, x, k, rng=np.random.default_rng(seed))
    assert picks.dtype == np.int64
    assert len(picks) == min(k, len(x))
    assert len(set(picks.tolist())) == len(picks)
    assert ((picks >= 0) & (picks < len(x))).all()


@pytest.mark.parametrize("name", COLD_STARTS)
def test_every_cold_start_is_reproducible_from_its_seed(name):
    x, _ = blobs(5, 30)
    first = cold_picks(name, x, 7, rng=np.random.default_rng(3))
    again = cold_picks(name, x, 7, rng=np.random.default_rng(3))
    assert first.tolist() == again.tolist()


@pytest.mark.parametrize("name", ["typiclust", "maxherding"])
def test_embedding_cold_starts_ask_one_item_of_every_group_before_a_second(name):
    x, blob = blobs(6, 40)
    picks = cold_picks(name, x, 6, rng=np.random.default_rng(0))
    assert sorted(blob[picks].tolist()) == list(range(6))


@pytest.mark.parametrize("name", ["typiclust", "maxherding"])
def test_embedding_cold_starts_never_ask_outliers_first(name):
    x, blob = blobs(4, 50, outliers=4)
    picks = cold_picks(name, x, 6, rng=np.random.default_rng(0))
    assert (blob[picks] >= 0).all()


@pytest.mark.parametrize("name", ["typiclust", "maxherding"])
def test_labeled_groups_count_as_covered(name):
    x, blob = blobs(5, 40)
    labeled = x[blob < 3][::20]  # two labeled items in each of groups 0, 1, 2
    picks = cold_picks(name, x, 2, rng=np.random.default_rng(0), already=labeled)
    assert sorted(blob[picks].tolist()) == [3, 4]


@pytest.mark.parametrize("name", ["typiclust", "maxherding"])
def test_a_fresh_sample_puts_first_the_groups_not_asked_in_earlier_rounds(name):
    x, blob = blobs(5, 40)
    asked_before = x[blob < 3][::20]  # the service's earlier cold picks, asked since
    order = cold_order(name, x, 2, rng=np.random.default_rng(0), already=asked_before)
    assert sorted(blob[order[:2]].tolist()) == [3, 4]
    assert sorted(order.tolist()) == list(range(len(x)))  # still the whole sample


def test_typiclust_asks_the_most_typical_member_of_a_group():
    x, _ = blobs(1, 200)
    (pick,) = typiclust(x, 1, rng=np.random.default_rng(0))
    centre_distance = np.linalg.norm(x - x.mean(0), axis=1)
    assert centre_distance[pick] <= np.quantile(centre_distance, 0.2)


def test_clustering_a_large_pool_works_on_a_bounded_sample():
    x, blob = blobs(10, 3_000, seed=1)  # 30,000 points, clustered on a 2,000-point sample
    picks = typiclust(x, 10, rng=np.random.default_rng(0), max_points=2_000)
    assert sorted(blob[picks].tolist()) == list(range(10))
    picks = maxherding(x, 10, rng=np.random.default_rng(0), max_points=2_000)
    assert sorted(blob[picks].tolist()) == list(range(10))


def test_an_unknown_cold_start_names_the_choices():
    with pytest.raises(ValueError, match="typiclust"):
        cold_picks("farthest", np.zeros((3, 2)), 1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("overrides", "on_embedding"),
    [
        ({}, False),  # a CNN from scratch: its untrained layer steers picks wrong
        ({"sampling.cold_start_embedding": "any"}, True),
        ({"model.train": "head"}, True),  # frozen pretrained features
        ({"model.init_weights": "weights.pt"}, True),
        ({"model.factory": "efficientnet_lite0"}, True),
        ({"sampling.embedding_model": {"factory": "efficientnet_lite0"}}, True),
        ({"model.train": "head", "sampling.cold_start_strategy": "random"}, False),
        ({"model.train": "head", "sampling.cold_start": False}, False),
    ],
)
def test_cold_starts_use_the_embedding_only_where_it_was_trained(overrides, on_embedding):
    assert cold_start_on_embedding(Config().with_overrides(overrides)) is on_embedding
