"""Specification of explore_mix: exploit the best scores with probability p, else explore."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.samplers import ExploreResult, explore_mix

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores with many ties (few distinct values) and an optional eligibility mask."""
    n = draw(st.integers(0, 40))
    scores = draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])))
    eligible = draw(st.none() | hnp.arrays(np.bool_, n))
    return scores, eligible


def eligible_indices(n: int, eligible: np.ndarray | None) -> np.ndarray:
    return np.arange(n) if eligible is None else np.flatnonzero(eligible)


def top_k_by_score_then_index(scores: np.ndarray, eligible: np.ndarray | None, k: int) -> list[int]:
    pool = eligible_indices(len(scores), eligible).tolist()
    return sorted(pool, key=lambda i: (-scores[i], i))[:k]


@SETTINGS
@given(
    problem=problems(),
    k=st.integers(0, 50),
    p=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_picks_are_distinct_eligible_and_exactly_min_k_n_eligible(
    problem: tuple[np.ndarray, np.ndarray | None], k: int, p: float, seed: int
) -> None:
    scores, eligible = problem
    result = explore_mix(scores, k, p, np.random.default_rng(seed), eligible)
    n_eligible = len(eligible_indices(len(scores), eligible))
    assert isinstance(result, ExploreResult)
    assert result.indices.dtype == np.int64
    assert result.explored.dtype == np.bool_
    assert len(result.indices) == len(result.explored) == min(k, n_eligible)
    assert len(set(result.indices.tolist())) == len(result.indices)
    assert set(result.indices.tolist()) <= set(eligible_indices(len(scores), eligible).tolist())


@SETTINGS
@given(problem=problems(), k=st.integers(0, 50), seed=st.integers(0, 2**32 - 1))
def test_p_one_is_exactly_the_top_k_by_score_with_ties_by_lower_index(
    problem: tuple[np.ndarray, np.ndarray | None], k: int, seed: int
) -> None:
    scores, eligible = problem
    result = explore_mix(scores, k, 1.0, np.random.default_rng(seed), eligible)
    assert result.indices.tolist() == top_k_by_score_then_index(scores, eligible, k)
    assert not result.explored.any()


@SETTINGS
@given(problem=problems(), k=st.integers(0, 50), seed=st.integers(0, 2**32 - 1))
def test_p_zero_makes_every_slot_an_exploration_pick(
    problem: tuple[np.ndarray, np.ndarray | None], k: int, seed: int
) -> None:
    scores, eligible = problem
    result = explore_mix(scores, k, 0.0, np.random.default_rng(seed), eligible)
    assert result.explored.all()


@SETTINGS
@given(problem=problems(), k=st.integers(0, 50), p=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_the_same_seed_gives_the_same_picks(
    problem: tuple[np.ndarray, np.ndarray | None], k: int, p: float, seed: int
) -> None:
    scores, eligible = problem
    first = explore_mix(scores, k, p, np.random.default_rng(seed), eligible)
    second = explore_mix(scores, k, p, np.random.default_rng(seed), eligible)
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.explored, second.explored)


@SETTINGS
@given(problem=problems(), k=st.integers(0, 50), p=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_exploit_slots_take_the_best_item_not_yet_taken(
    problem: tuple[np.ndarray, np.ndarray | None], k: int, p: float, seed: int
) -> None:
    scores, eligible = problem
    result = explore_mix(scores, k, p, np.random.default_rng(seed), eligible)
    taken: set[int] = set()
    for idx, explored in zip(result.indices.tolist(), result.explored.tolist(), strict=True):
        if not explored:
            remaining = [i for i in eligible_indices(len(scores), eligible) if i not in taken]
            assert idx == min(remaining, key=lambda i: (-scores[i], i))
        taken.add(idx)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_share_of_exploration_slots_is_one_minus_p(p: float) -> None:
    rng = np.random.default_rng(2024)
    scores = rng.random(100)
    explored = np.concatenate([explore_mix(scores, 20, p, rng).explored for _ in range(100)])
    assert explored.size == 2000
    expected = explored.size * (1 - p)
    sigma = np.sqrt(explored.size * p * (1 - p))
    assert abs(explored.sum() - expected) <= 4 * sigma


def test_exploration_picks_are_uniform_over_eligible_items() -> None:
    rng = np.random.default_rng(11)
    scores = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    eligible = np.array([True, True, False, True, True, True])
    draws = 5000
    counts = np.bincount(
        [explore_mix(scores, 1, 0.0, rng, eligible).indices[0] for _ in range(draws)],
        minlength=6,
    )
    assert counts[2] == 0
    expected, sigma = draws / 5, np.sqrt(draws * 0.2 * 0.8)
    assert np.all(np.abs(counts[eligible] - expected) <= 4 * sigma)


def test_no_eligible_items_gives_no_picks() -> None:
    result = explore_mix([0.3, 0.2], 5, 0.5, np.random.default_rng(0), np.zeros(2, dtype=bool))
    assert result.indices.shape == result.explored.shape == (0,)


def test_k_zero_gives_no_picks() -> None:
    assert explore_mix([0.3, 0.2], 0, 0.5, np.random.default_rng(0)).indices.shape == (0,)


def test_explore_mix_does_not_touch_the_global_numpy_state() -> None:
    before = np.random.get_state()[1].copy()
    explore_mix(np.arange(10.0), 5, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": -0.1}, r"p must be a probability in \[0, 1\]"),
        ({"p": 1.5}, r"p must be a probability in \[0, 1\]"),
        ({"p": float("nan")}, r"p must be a probability in \[0, 1\]"),
        ({"k": -1}, "k must be an integer >= 0"),
        ({"k": 2.5}, "k must be an integer >= 0"),
        ({"scores": [0.1, float("nan"), 0.3]}, "NaN"),
        ({"scores": [[0.1, 0.2, 0.3]]}, "1-D"),
        ({"eligible": [True, False]}, "eligible must be a bool mask of shape"),
        ({"eligible": [1, 0, 1]}, "eligible must be a bool mask of shape"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    args = {"scores": [0.1, 0.2, 0.3], "k": 2, "p": 0.5, "eligible": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        explore_mix(
            args["scores"], args["k"], args["p"], np.random.default_rng(0), args["eligible"]
        )


def test_rng_must_be_a_generator() -> None:
    with pytest.raises(TypeError, match="Generator"):
        explore_mix([0.1, 0.2], 1, 0.5, 0)  # type: ignore[arg-type]
