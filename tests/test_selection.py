import numpy as np
import pytest

from activestream.samplers.selection import select_queries


def test_p_one_takes_the_ranked_ids_in_order():
    picks = select_queries(["a", "b", "c"], ["z"], k=2, p=1.0, rng=np.random.default_rng(0))
    assert [(q.id, q.explored) for q in picks] == [("a", False), ("b", False)]


def test_p_zero_takes_only_the_random_sample():
    picks = select_queries(["a", "b"], ["x", "y"], k=2, p=0.0, rng=np.random.default_rng(0))
    assert [(q.id, q.explored) for q in picks] == [("x", True), ("y", True)]


def test_no_id_is_picked_twice_even_when_both_lists_share_it():
    picks = select_queries(["a", "b"], ["b", "a", "c"], k=3, p=0.5, rng=np.random.default_rng(1))
    assert sorted(q.id for q in picks) == ["a", "b", "c"]


def test_excluded_ids_are_never_picked():
    picks = select_queries(
        ["a", "b", "c"], ["a", "d"], k=4, p=0.5, rng=np.random.default_rng(2), exclude={"a", "c"}
    )
    assert {q.id for q in picks} == {"b", "d"}


def test_an_exhausted_list_falls_back_to_the_other():
    picks = select_queries([], ["x", "y"], k=2, p=1.0, rng=np.random.default_rng(0))
    assert [q.id for q in picks] == ["x", "y"]


def test_exploration_share_is_close_to_one_minus_p():
    ranked = [f"r{i}" for i in range(5000)]
    rand = [f"x{i}" for i in range(5000)]
    picks = select_queries(ranked, rand, k=4000, p=0.7, rng=np.random.default_rng(3))
    share = np.mean([q.explored for q in picks])
    sigma = np.sqrt(0.3 * 0.7 / 4000)
    assert abs(share - 0.3) < 4 * sigma


def test_p_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="explore p"):
        select_queries(["a"], [], k=1, p=1.2, rng=np.random.default_rng(0))
