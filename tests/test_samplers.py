"""Specification of the samplers, shared by every registered sampler.

Samplers taking (N, C) probabilities and samplers taking (T, N, C) MC-dropout passes each get
the invariants that make sense for their input; samplers with a batch selector
(``spec(name).batch``) also get the batch invariants. A guard test makes sure no registered
sampler falls outside every family.
"""

from __future__ import annotations

import math
import subprocess
import sys

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from probability_rows import draw_rows

from activestream import samplers
from activestream.samplers.checks import SamplerCheckError, check_sampler

SETTINGS = settings(max_examples=150, deadline=None)

PROB_SAMPLERS = [n for n in samplers.names() if samplers.spec(n).inputs == ("probs",)]
SAMPLE_SAMPLERS = [n for n in samplers.names() if samplers.spec(n).inputs == ("samples",)]
DETERMINISTIC = [n for n in PROB_SAMPLERS if samplers.spec(n).deterministic]
UNCERTAINTY = [n for n in DETERMINISTIC if samplers.spec(n).uncertainty]
DETERMINISTIC_SAMPLES = [n for n in SAMPLE_SAMPLERS if samplers.spec(n).deterministic]
BATCH_SAMPLERS = [n for n in samplers.names() if samplers.spec(n).batch is not None]


def score(name: str, probs: object, seed: int = 0) -> np.ndarray:
    return samplers.get(name, rng=np.random.default_rng(seed))(probs)


@st.composite
def prob_arrays(draw: st.DrawFn, max_rows: int = 8, max_classes: int = 10) -> np.ndarray:
    """(N, C) rows of positive weights normalized per row, with exact zeros and one-hot rows."""
    n = draw(st.integers(0, max_rows))
    c = draw(st.integers(2, max_classes))
    return draw_rows(draw, (n, c))


@st.composite
def sample_arrays(
    draw: st.DrawFn, max_passes: int = 5, max_rows: int = 6, max_classes: int = 6
) -> np.ndarray:
    """(T, N, C) MC-dropout passes; some items get T identical passes (a certain model)."""
    t = draw(st.integers(1, max_passes))
    n = draw(st.integers(0, max_rows))
    c = draw(st.integers(2, max_classes))
    samples = draw_rows(draw, (t, n, c))
    for item in range(n):
        if draw(st.integers(0, 3)) == 0:
            samples[:, item] = samples[0, item]
    return samples


# -- registry ---------------------------------------------------------------------------------


def test_names_are_sorted_and_include_the_core_samplers() -> None:
    names = samplers.names()
    assert names == sorted(names)
    core = {"bald", "cluster_margin", "entropy", "kcenter", "least_confidence", "margin"}
    assert core | {"random", "ratio"} <= set(names)


def test_every_registered_sampler_is_covered_by_an_input_family() -> None:
    # A sampler with a new kind of input would otherwise silently skip this whole suite.
    assert sorted(PROB_SAMPLERS + SAMPLE_SAMPLERS) == samplers.names()
    assert SAMPLE_SAMPLERS == ["bald"]
    assert {"kcenter", "cluster_margin"} <= set(BATCH_SAMPLERS)


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
    assert samplers.get("bald") is samplers.bald
    # Batch samplers rank the candidate pool by margin and bring their own batch selector.
    assert samplers.get("kcenter") is samplers.margin
    assert samplers.get("cluster_margin") is samplers.margin
    assert samplers.spec("cluster_margin").batch is samplers.cluster_margin_select


def test_registering_a_taken_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):
        samplers.register("margin")(lambda probs: probs[:, 0])


def test_samplers_import_neither_ray_nor_torch_nor_other_project_packages() -> None:
    others = ("actors", "pipelines", "deploy", "sources", "models", "config", "benchmarks")
    code = (
        "import sys; from activestream import samplers; "
        f"bad = [m for m in ('ray', 'torch', *{['activestream.' + o for o in others]!r}) "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the contract check users run on their own samplers --------------------------------------


@pytest.mark.parametrize("name", samplers.names())
def test_every_registered_sampler_passes_the_contract_check(name: str) -> None:
    check_sampler(name)


def test_the_contract_check_catches_the_seeds_ascending_margin() -> None:
    def ascending_margin(probs: object) -> np.ndarray:
        samplers.margin(probs)  # the same input validation
        p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)  # the seed's bug: ascending
        return 1.0 - (p[:, 1] - p[:, 0])

    with pytest.raises(SamplerCheckError, match="one-hot row over 3 classes scored 1.0, not 0"):
        check_sampler(ascending_margin, uncertainty=True)


def test_the_contract_check_catches_a_sampler_that_accepts_nan() -> None:
    def lenient(probs: object) -> np.ndarray:
        p = np.nan_to_num(np.asarray(probs, dtype=np.float64))
        if p.ndim != 2:
            raise ValueError("2-D please")
        return np.clip(1.0 - p.max(axis=1, initial=0.0), 0.0, 1.0)

    with pytest.raises(SamplerCheckError, match="input with NaN was accepted"):
        check_sampler(lenient)


def test_the_contract_check_catches_scores_that_depend_on_the_batch() -> None:
    def batch_normalized(probs: object) -> np.ndarray:
        s = samplers.entropy(probs)
        return s / s.max() if s.size and s.max() > 0 else s

    with pytest.raises(SamplerCheckError, match="alone than inside a batch"):
        check_sampler(batch_normalized)


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


# -- samplers of (T, N, C) MC-dropout passes --------------------------------------------------


def score_samples(name: str, samples: object, seed: int = 0) -> np.ndarray:
    return samplers.get(name, rng=np.random.default_rng(seed))(samples)


@pytest.mark.parametrize("name", SAMPLE_SAMPLERS)
@SETTINGS
@given(samples=sample_arrays())
def test_samples_give_one_float64_per_item_in_the_unit_interval(
    name: str, samples: np.ndarray
) -> None:
    scores = score_samples(name, samples)
    assert scores.shape == (samples.shape[1],)
    assert scores.dtype == np.float64
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@pytest.mark.parametrize("name", SAMPLE_SAMPLERS)
@pytest.mark.parametrize("n_passes", [1, 3])
def test_samples_of_an_empty_batch_give_empty_scores(name: str, n_passes: int) -> None:
    scores = score_samples(name, np.zeros((n_passes, 0, 4)))
    assert scores.shape == (0,)
    assert scores.dtype == np.float64


@pytest.mark.parametrize("name", SAMPLE_SAMPLERS)
def test_nested_lists_of_samples_are_accepted(name: str) -> None:
    assert score_samples(name, [[[0.5, 0.5], [0.9, 0.1]], [[0.6, 0.4], [0.8, 0.2]]]).shape == (2,)


@pytest.mark.parametrize("name", DETERMINISTIC_SAMPLES)
@SETTINGS
@given(samples=sample_arrays(), data=st.data())
def test_sample_scores_depend_on_neither_class_nor_pass_order(
    name: str, samples: np.ndarray, data: st.DataObject
) -> None:
    classes = data.draw(st.permutations(range(samples.shape[2])))
    passes = data.draw(st.permutations(range(samples.shape[0])))
    reordered = samples[passes][:, :, classes]
    np.testing.assert_allclose(
        score_samples(name, reordered), score_samples(name, samples), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name", DETERMINISTIC_SAMPLES)
@SETTINGS
@given(samples=sample_arrays().filter(lambda s: s.shape[1] > 0), data=st.data())
def test_an_item_scores_the_same_alone_and_in_a_batch(
    name: str, samples: np.ndarray, data: st.DataObject
) -> None:
    item = data.draw(st.integers(0, samples.shape[1] - 1))
    alone = score_samples(name, samples[:, item : item + 1])
    batch = score_samples(name, samples)[item : item + 1]
    np.testing.assert_allclose(alone, batch, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", DETERMINISTIC + DETERMINISTIC_SAMPLES)
@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_the_uncertainty_flag_says_whether_uniform_scores_one_and_one_hot_zero(
    name: str, n_classes: int
) -> None:
    # For samplers of passes, "a distribution" means T = 3 identical passes of it.
    uniform = np.full((1, n_classes), 1.0 / n_classes)
    one_hot = np.eye(n_classes)
    if name in SAMPLE_SAMPLERS:
        uniform, one_hot = np.stack([uniform] * 3), np.stack([one_hot] * 3)
    s = samplers.get(name)
    holds = s(uniform)[0] == pytest.approx(1.0, abs=1e-12) and np.all(s(one_hot) == 0.0)
    assert holds == samplers.spec(name).uncertainty


SAMPLE_INVALID = {
    "nan": ([[[0.5, np.nan]]], "NaN or inf"),
    "inf": ([[[np.inf, 0.0]]], "NaN or inf"),
    "negative": ([[[1.2, -0.2]]], "negative"),
    "row_sum_low": ([[[0.5, 0.5]], [[0.5, 0.4]]], r"sum to 1.*row \(1, 0\)"),
    "row_sum_high": ([[[0.7, 0.3], [0.6, 0.6]]], r"sum to 1.*row \(0, 1\)"),
    "two_dimensional": ([[0.5, 0.5]], "3-D"),
    "four_dimensional": ([[[[0.5, 0.5]]]], "3-D"),
    "scalar": (1.0, "3-D"),
    "no_passes": (np.zeros((0, 3, 2)), "at least 1 stochastic pass"),
    "one_class": ([[[1.0]]], "at least 2 classes"),
    "empty_class_axis": (np.zeros((2, 3, 0)), "empty class axis"),
    "not_numeric": ([[["a", "b"]]], "numeric"),
}


@pytest.mark.parametrize("name", SAMPLE_SAMPLERS)
@pytest.mark.parametrize("case", sorted(SAMPLE_INVALID))
def test_invalid_samples_raise_value_error_naming_the_problem(name: str, case: str) -> None:
    samples, message = SAMPLE_INVALID[case]
    with pytest.raises(ValueError, match=message):
        score_samples(name, samples)


@pytest.mark.parametrize("name", SAMPLE_SAMPLERS)
def test_sample_rows_within_the_tolerance_of_one_are_accepted(name: str) -> None:
    scores = score_samples(name, [[[0.7, 0.2, 0.0995]], [[0.5, 0.5005, 0.0]]])
    assert np.all((scores >= 0.0) & (scores <= 1.0))


# -- batch selectors --------------------------------------------------------------------------


@st.composite
def batch_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """(N,) scores with ties and infinities, (N, D) embeddings with duplicates, k around N."""
    n = draw(st.integers(0, 12))
    d = draw(st.integers(1, 4))
    score = st.one_of(st.sampled_from([0.0, 0.5, 1.0, -np.inf, np.inf]), st.floats(-1e3, 1e3))
    scores = draw(hnp.arrays(np.float64, (n,), elements=score))
    coord = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e3, 1e3))
    embeddings = draw(hnp.arrays(np.float64, (n, d), elements=coord))
    k = draw(st.integers(0, n + 3))
    return scores, embeddings, k


def select(name: str, scores: object, embeddings: object, k: object, seed: int = 0) -> np.ndarray:
    batch = samplers.spec(name).batch
    assert batch is not None
    return batch(scores, embeddings, k, np.random.default_rng(seed))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BATCH_SAMPLERS)
@SETTINGS
@given(inputs=batch_inputs(), seed=st.integers(0, 2**32 - 1))
def test_a_batch_is_min_k_n_distinct_int64_indices(
    name: str, inputs: tuple[np.ndarray, np.ndarray, int], seed: int
) -> None:
    scores, embeddings, k = inputs
    picks = select(name, scores, embeddings, k, seed)
    assert picks.dtype == np.int64
    assert picks.shape == (min(k, scores.shape[0]),)
    assert np.unique(picks).shape == picks.shape
    assert np.all((picks >= 0) & (picks < scores.shape[0]))
    np.testing.assert_array_equal(select(name, scores, embeddings, k, seed), picks)


@pytest.mark.parametrize("name", BATCH_SAMPLERS)
def test_a_batch_accepts_array_likes(name: str) -> None:
    assert select(name, [0.1, 0.9, 0.5], [[0.0], [1.0], [5.0]], 2).shape == (2,)


BATCH_INVALID = {
    "length_mismatch": ([0.1, 0.2], [[0.0]], 1, "same length"),
    "negative_k": ([0.1], [[0.0]], -1, "k must be an integer"),
    "fractional_k": ([0.1], [[0.0]], 1.5, "k must be an integer"),
    "nan_score": ([np.nan], [[0.0]], 1, "scores contains NaN"),
    "nan_embedding": ([0.1], [[np.nan]], 1, "embeddings contains NaN or inf"),
    "one_dimensional_embeddings": ([0.1], [0.0], 1, "2-D"),
    "no_features": ([0.1], np.zeros((1, 0)), 1, "empty feature axis"),
}


@pytest.mark.parametrize("name", BATCH_SAMPLERS)
@pytest.mark.parametrize("case", sorted(BATCH_INVALID))
def test_invalid_batch_input_raises_value_error_naming_the_problem(name: str, case: str) -> None:
    scores, embeddings, k, message = BATCH_INVALID[case]
    with pytest.raises(ValueError, match=message):
        select(name, scores, embeddings, k)
