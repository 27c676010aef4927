"""Specification of the probability samplers, shared by every registered sampler."""

from __future__ import annotations

import math
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import samplers

SETTINGS = settings(max_examples=150, deadline=None)

PROB_SAMPLERS = [n for n in samplers.names() if samplers.spec(n).inputs == ("probs",)]
DETERMINISTIC = [n for n in PROB_SAMPLERS if samplers.spec(n).deterministic]
UNCERTAINTY = [n for n in DETERMINISTIC if samplers.spec(n).uncertainty]


def score(name: str, probs: object, seed: int = 0) -> np.ndarray:
    return samplers.get(name, rng=np.random.default_rng(seed))(probs)


@st.composite
def prob_arrays(draw: st.DrawFn, max_rows: int = 8, max_classes: int = 10) -> np.ndarray:
    """(N, C) rows of positive weights normalized per row, with exact zeros and one-hot rows."""
    n = draw(st.integers(0, max_rows))
    c = draw(st.integers(2, max_classes))
    weight = st.one_of(st.just(0.0), st.floats(1e-9, 1e6, allow_nan=False, allow_infinity=False))
    raw = draw(hnp.arrays(np.float64, (n, c), elements=weight))
    for row in range(n):
        # All-zero rows cannot be normalized; make them (and some others) one-hot.
        if raw[row].sum() == 0 or draw(st.integers(0, 4)) == 0:
            raw[row] = 0.0
            raw[row, draw(st.integers(0, c - 1))] = 1.0
    return raw / raw.sum(axis=1, keepdims=True)


# -- registry ---------------------------------------------------------------------------------


def test_names_are_sorted_and_include_the_core_samplers() -> None:
    names = samplers.names()
    assert names == sorted(names)
    assert {"entropy", "least_confidence", "margin", "random", "ratio"} <= set(names)


def test_unknown_name_raises_value_error_listing_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'nope'") as info:
        samplers.get("nope")
    for name in samplers.names():
        assert name in str(info.value)


def test_rng_that_is_not_a_generator_is_rejected() -> None:
    with pytest.raises(TypeError, match="Generator"):
        samplers.get("random", rng=42)  # type: ignore[arg-type]


def test_registered_functions_are_the_exported_ones() -> None:
    assert samplers.get("margin") is samplers.margin
    assert samplers.get("ratio") is samplers.ratio
    assert samplers.get("entropy") is samplers.entropy
    assert samplers.get("least_confidence") is samplers.least_confidence


def test_registering_a_taken_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        samplers.register("margin")(lambda probs: probs[:, 0])


def test_samplers_import_neither_ray_nor_torch_nor_other_project_packages() -> None:
    code = (
        "import sys, samplers; "
        "bad = [m for m in ('ray', 'torch', 'actors', 'pipelines', 'deploy') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- properties of every sampler --------------------------------------------------------------


@pytest.mark.parametrize("name", PROB_SAMPLERS)
@SETTINGS
@given(probs=prob_arrays())
def test_scores_are_one_float64_per_row_in_the_unit_interval(name: str, probs: np.ndarray) -> None:
    scores = score(name, probs)
    assert scores.shape == (probs.shape[0],)
    assert scores.dtype == np.float64
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@pytest.mark.parametrize("name", PROB_SAMPLERS)
def test_an_empty_batch_gives_empty_scores(name: str) -> None:
    scores = score(name, np.zeros((0, 4)))
    assert scores.shape == (0,)
    assert scores.dtype == np.float64


@pytest.mark.parametrize("name", PROB_SAMPLERS)
def test_array_likes_are_accepted(name: str) -> None:
    assert score(name, [[0.5, 0.5], [0.9, 0.1]]).shape == (2,)


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize("n_classes", [2, 3, 7, 10, 1000])
def test_the_uniform_distribution_scores_one(name: str, n_classes: int) -> None:
    probs = np.full((1, n_classes), 1.0 / n_classes)
    assert score(name, probs)[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_a_one_hot_row_scores_zero(name: str, n_classes: int) -> None:
    probs = np.eye(n_classes)
    np.testing.assert_array_equal(score(name, probs), np.zeros(n_classes))


@pytest.mark.parametrize("name", DETERMINISTIC)
@SETTINGS
@given(probs=prob_arrays(), data=st.data())
def test_scores_do_not_depend_on_class_order(
    name: str, probs: np.ndarray, data: st.DataObject
) -> None:
    perm = data.draw(st.permutations(range(probs.shape[1])))
    np.testing.assert_allclose(score(name, probs[:, perm]), score(name, probs), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", DETERMINISTIC)
@SETTINGS
@given(probs=prob_arrays().filter(lambda p: p.shape[0] > 0), data=st.data())
def test_a_row_scores_the_same_alone_and_in_a_batch(
    name: str, probs: np.ndarray, data: st.DataObject
) -> None:
    row = data.draw(st.integers(0, probs.shape[0] - 1))
    alone = score(name, probs[row : row + 1])
    np.testing.assert_allclose(alone, score(name, probs)[row : row + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_a_sharper_distribution_scores_lower_than_a_flatter_one(name: str) -> None:
    flat = [0.40, 0.35, 0.25]
    sharp = [0.80, 0.15, 0.05]
    flat_score, sharp_score = score(name, [flat, sharp])
    assert sharp_score < flat_score


@pytest.mark.parametrize("name", UNCERTAINTY)
@SETTINGS
@given(probs=prob_arrays(max_rows=1).filter(lambda p: p.shape[0] == 1), t=st.floats(0, 1))
def test_moving_mass_to_the_top_class_never_raises_the_score(
    name: str, probs: np.ndarray, t: float
) -> None:
    # Mixing with the one-hot of the argmax keeps the argmax and shrinks every other class.
    onehot = np.zeros_like(probs)
    onehot[0, probs[0].argmax()] = 1.0
    sharper = (1 - t) * probs + t * onehot
    assert score(name, sharper)[0] <= score(name, probs)[0] + 1e-12


# -- invalid input ----------------------------------------------------------------------------

INVALID = {
    "nan": ([[0.5, np.nan]], "NaN or inf"),
    "inf": ([[np.inf, 0.0]], "NaN or inf"),
    "negative": ([[1.2, -0.2]], "negative"),
    "row_sum_low": ([[0.5, 0.4]], "sum to 1"),
    "row_sum_high": ([[0.7, 0.2, 0.1], [0.6, 0.6, 0.0]], r"sum to 1.*row 1"),
    "one_dimensional": ([0.5, 0.5], "2-D"),
    "three_dimensional": ([[[0.5, 0.5]]], "2-D"),
    "scalar": (1.0, "2-D"),
    "one_class": ([[1.0]], "at least 2 classes"),
    "empty_class_axis": (np.zeros((3, 0)), "empty class axis"),
    "not_numeric": ([["a", "b"]], "numeric"),
}


@pytest.mark.parametrize("name", PROB_SAMPLERS)
@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_input_raises_value_error_naming_the_problem(name: str, case: str) -> None:
    probs, message = INVALID[case]
    with pytest.raises(ValueError, match=message):
        score(name, probs)


@pytest.mark.parametrize("name", PROB_SAMPLERS)
def test_rows_within_the_tolerance_of_one_are_accepted(name: str) -> None:
    scores = score(name, [[0.7, 0.2, 0.0995], [0.5, 0.5005, 0.0]])
    assert np.all((scores >= 0.0) & (scores <= 1.0))


# -- hand-checked values ----------------------------------------------------------------------

P = [[0.7, 0.2, 0.1]]


def test_margin_uses_the_two_largest_probabilities() -> None:
    assert samplers.margin(P)[0] == pytest.approx(0.5)  # 1 - (0.7 - 0.2)


def test_ratio_uses_the_two_largest_probabilities() -> None:
    assert samplers.ratio(P)[0] == pytest.approx(2 / 7)  # 0.2 / 0.7


def test_margin_and_ratio_ignore_where_the_top_classes_sit() -> None:
    shuffled = [[0.1, 0.7, 0.2]]
    assert samplers.margin(shuffled)[0] == pytest.approx(0.5)
    assert samplers.ratio(shuffled)[0] == pytest.approx(2 / 7)


def test_least_confidence_rescales_one_minus_top_probability() -> None:
    assert samplers.least_confidence(P)[0] == pytest.approx(0.45)  # (1 - 0.7) * 3 / 2


def test_entropy_is_normalized_shannon_entropy() -> None:
    by_hand = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    assert samplers.entropy(P)[0] == pytest.approx(by_hand)
    assert samplers.entropy(P)[0] == pytest.approx(0.72985, abs=1e-5)


def test_entropy_treats_zero_log_zero_as_zero() -> None:
    assert samplers.entropy([[0.5, 0.5, 0.0]])[0] == pytest.approx(math.log(2) / math.log(3))


# -- random -----------------------------------------------------------------------------------


def test_random_scores_repeat_with_the_same_seed() -> None:
    probs = np.full((50, 3), 1 / 3)
    np.testing.assert_array_equal(score("random", probs, seed=7), score("random", probs, seed=7))


def test_random_scores_differ_with_a_different_seed() -> None:
    probs = np.full((50, 3), 1 / 3)
    assert not np.array_equal(score("random", probs, seed=7), score("random", probs, seed=8))


def test_random_without_a_generator_is_still_reproducible() -> None:
    probs = np.full((20, 2), 0.5)
    np.testing.assert_array_equal(samplers.get("random")(probs), samplers.get("random")(probs))


def test_random_does_not_touch_the_global_numpy_state() -> None:
    before = np.random.get_state()[1].copy()
    score("random", np.full((20, 2), 0.5))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_random_gives_fresh_scores_on_each_call() -> None:
    fn = samplers.get("random", rng=np.random.default_rng(1))
    probs = np.full((20, 2), 0.5)
    assert not np.array_equal(fn(probs), fn(probs))
