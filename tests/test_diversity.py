"""Properties of BALD, the batch-diversity selectors and the stream sampler."""

from __future__ import annotations

import itertools
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from probability_rows import prob_rows

from activestream import samplers
from activestream.samplers import (
    VariableUncertainty,
    badge_select,
    bald,
    cluster_margin_select,
    gradient_embedding,
    kcenter_greedy,
)
from activestream.samplers.cluster_margin import kmeans

SETTINGS = settings(max_examples=100, deadline=None)


@st.composite
def samples_tnc(draw: st.DrawFn) -> np.ndarray:
    t, n, c = draw(st.integers(1, 6)), draw(st.integers(0, 6)), draw(st.integers(2, 6))
    return draw(prob_rows((t, n, c)))


def blobs(
    rng: np.random.Generator, sizes: list[int], dim: int, spread: float = 100.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs (sigma 1) around the vertices of a regular polygon of radius ``spread``.

    Returns (N, dim) points and (N,) blob labels; adjacent centers are 2 * spread * sin(pi / B)
    apart, at least spread for B <= 6 blobs, far beyond any blob's diameter.
    """
    angles = 2 * np.pi * np.arange(len(sizes)) / len(sizes)  # (B,)
    centers = np.zeros((len(sizes), dim))  # (B, dim)
    centers[:, 0], centers[:, 1] = spread * np.cos(angles), spread * np.sin(angles)
    labels = np.repeat(np.arange(len(sizes)), sizes)  # (N,)
    points = centers[labels] + rng.normal(size=(labels.shape[0], dim))  # (N, dim)
    return points, labels


def min_pairwise(points: np.ndarray) -> float:
    diff = points[:, None, :] - points[None, :, :]  # (k, k, D)
    dist = np.sqrt((diff**2).sum(axis=-1))  # (k, k)
    return float(dist[np.triu_indices(points.shape[0], 1)].min())


# -- BALD -------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), t=st.integers(1, 8))
def test_bald_is_zero_when_all_passes_agree(data: st.DataObject, t: int) -> None:
    n, c = data.draw(st.integers(0, 6)), data.draw(st.integers(2, 8))
    probs = data.draw(prob_rows((n, c)))  # (N, C)
    scores = bald(np.broadcast_to(probs, (t, n, c)))  # (N,)
    np.testing.assert_allclose(scores, np.zeros(n), rtol=0, atol=1e-12)


@SETTINGS
@given(samples=samples_tnc())
def test_bald_lies_in_the_unit_interval_and_below_the_entropy_of_the_mean(
    samples: np.ndarray,
) -> None:
    scores = bald(samples)
    assert scores.shape == (samples.shape[1],)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    # Mutual information never exceeds the total uncertainty H(mean prediction).
    assert np.all(scores <= samples_entropy_of_mean(samples) + 1e-12)


def samples_entropy_of_mean(samples: np.ndarray) -> np.ndarray:
    if samples.shape[1] == 0:
        return np.zeros(0)
    return samplers.entropy(samples.mean(axis=0))


@SETTINGS
@given(samples=samples_tnc().filter(lambda s: s.shape[1] > 0))
def test_a_single_pass_carries_no_disagreement(samples: np.ndarray) -> None:
    np.testing.assert_array_equal(bald(samples[:1]), np.zeros(samples.shape[1]))


@SETTINGS
@given(c=st.integers(2, 8), reps=st.integers(1, 3), data=st.data())
def test_confident_passes_that_disagree_evenly_score_one(
    c: int, reps: int, data: st.DataObject
) -> None:
    # T = reps * C one-hot passes, each class equally often, in any order.
    order = data.draw(st.permutations(list(np.tile(np.arange(c), reps))))
    samples = np.eye(c)[order][:, None, :]  # (T, 1, C)
    assert bald(samples)[0] == pytest.approx(1.0, abs=1e-12)


@SETTINGS
@given(c=st.integers(2, 8), t=st.integers(2, 8), sharp=st.floats(0.9, 1.0))
def test_confident_disagreement_beats_agreed_ambiguity(c: int, t: int, sharp: float) -> None:
    # Item 0: each pass puts `sharp` on a different class (cycling); item 1: every pass uniform.
    confident = np.full((t, c), (1 - sharp) / (c - 1))  # (T, C)
    confident[np.arange(t), np.arange(t) % c] = sharp
    uniform = np.full((t, c), 1.0 / c)  # (T, C)
    scores = bald(np.stack([confident, uniform], axis=1))  # (T, 2, C) -> (2,)
    assert scores[1] == pytest.approx(0.0, abs=1e-12)
    # At least half of what one-hot passes would score: H(class shares of the passes) / log C.
    shares = np.bincount(np.arange(t) % c, minlength=c) / t  # (C,)
    one_hot = -(shares[shares > 0] * np.log(shares[shares > 0])).sum() / np.log(c)
    assert scores[0] >= 0.5 * one_hot > 0


def test_bald_matches_the_hand_computed_value() -> None:
    # Passes [.5, .5] and [1, 0]: H([.75, .25]) - (1 + 0) / 2 in bits.
    h_mean = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert bald([[[0.5, 0.5]], [[1.0, 0.0]]])[0] == pytest.approx(h_mean - 0.5)


# -- k-center ---------------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(3, 30), min_size=5, max_size=5),
    dim=st.integers(2, 6),
    data=st.data(),
)
def test_kcenter_spreads_a_batch_over_clusters_wider_than_random_batches(
    seed: int, sizes: list[int], dim: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    points, labels = blobs(rng, sizes, dim)
    first = data.draw(st.integers(0, points.shape[0] - 1))
    picks = kcenter_greedy(points, 5, first=first)
    assert sorted(labels[picks]) == [0, 1, 2, 3, 4]  # one per blob
    ours = min_pairwise(points[picks])
    randoms = [
        min_pairwise(points[rng.choice(points.shape[0], 5, replace=False)]) for _ in range(200)
    ]
    # A random batch only ties when it also hits every blob: at most 5!/5^5 ~ 4% of the time.
    assert np.mean([ours >= r for r in randoms]) >= 0.9


@st.composite
def points_and_k(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    n, d = draw(st.integers(0, 15)), draw(st.integers(1, 4))
    coord = st.one_of(st.integers(-2, 2).map(float), st.floats(-1e3, 1e3))
    return draw(hnp.arrays(np.float64, (n, d), elements=coord)), draw(st.integers(0, n + 3))


@SETTINGS
@given(inputs=points_and_k(), data=st.data())
def test_kcenter_returns_min_k_n_distinct_indices(
    inputs: tuple[np.ndarray, int], data: st.DataObject
) -> None:
    points, k = inputs
    n, d = points.shape
    m = data.draw(st.integers(0, 3))
    already = data.draw(hnp.arrays(np.float64, (m, d), elements=st.floats(-1e3, 1e3)))
    first = data.draw(st.none() | st.integers(0, n - 1)) if n else None
    picks = kcenter_greedy(points, k, already=already, first=first)
    assert picks.dtype == np.int64
    assert picks.shape == (min(k, n),)
    assert np.unique(picks).shape == picks.shape
    if first is not None and k > 0:
        assert picks[0] == first


def covering_radius(points: np.ndarray, centers: np.ndarray) -> float:
    diff = points[:, None, :] - points[centers][None, :, :]  # (N, k, D)
    return float(np.sqrt((diff**2).sum(axis=-1)).min(axis=1).max())


@SETTINGS
@given(
    points=st.integers(2, 8).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 2), elements=st.floats(-100, 100))
    ),
    data=st.data(),
)
def test_kcenter_covers_within_twice_the_optimal_radius(
    points: np.ndarray, data: st.DataObject
) -> None:
    # Gonzalez 1985: farthest-first traversal is a 2-approximation, from any first point.
    n = points.shape[0]
    k = data.draw(st.integers(1, n))
    first = data.draw(st.integers(0, n - 1))
    greedy = covering_radius(points, kcenter_greedy(points, k, first=first))
    best = min(covering_radius(points, np.array(c)) for c in itertools.combinations(range(n), k))
    assert greedy <= 2 * best + 1e-9


def test_kcenter_first_pick_is_the_point_farthest_from_the_labeled_ones() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [50.0, 0.0], [51.0, 0.0]])
    assert kcenter_greedy(points, 1, already=[[0.5, 0.0]]).tolist() == [3]
    assert kcenter_greedy(points, 2, already=np.zeros((0, 2))).tolist() == [0, 3]


def test_kcenter_batch_starts_from_the_best_score() -> None:
    batch = samplers.spec("kcenter").batch
    assert batch is not None
    points = np.array([[0.0], [1.0], [10.0], [11.0]])
    picks = batch(np.array([0.1, 0.2, 0.9, 0.3]), points, 2, np.random.default_rng(0))
    assert picks.tolist() == [2, 0]


def test_kcenter_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="D=2 columns"):
        kcenter_greedy(np.zeros((3, 2)), 1, already=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="first must index the 3 candidates"):
        kcenter_greedy(np.zeros((3, 2)), 1, first=3)
    with pytest.raises(ValueError, match="already contains NaN"):
        kcenter_greedy(np.zeros((3, 2)), 1, already=[[np.nan, 0.0]])


# -- cluster-margin ---------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(6, 20), min_size=3, max_size=6),
    dim=st.integers(2, 5),
    data=st.data(),
)
def test_cluster_margin_covers_more_clusters_than_top_k_when_top_scores_share_one(
    seed: int, sizes: list[int], dim: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    points, labels = blobs(rng, sizes, dim)
    # Every member of blob 0 outscores every other candidate.
    noise = rng.random(labels.shape)  # (N,)
    scores = np.where(labels == 0, 0.9 + 0.1 * noise, 0.5 * noise)  # (N,)
    k = data.draw(st.integers(2, sizes[0]))
    top = np.argsort(-scores, kind="stable")[:k]
    assert set(labels[top]) == {0}
    # As many k-means clusters as blobs: with fewer, k-means may split blob 0 between two
    # clusters (three equidistant blobs, two centers), and both picks may then come from it.
    # With as many, k-means (restarts, greedy k-means++) finds the blobs, one pick each.
    picks = cluster_margin_select(
        scores, points, k, np.random.default_rng(seed), clusters=len(sizes)
    )
    assert picks.dtype == np.int64
    assert np.unique(picks).shape == (k,)
    assert len(set(labels[picks])) == min(k, len(sizes)) > len(set(labels[top]))


def separated_blobs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-8 blobs of 3-59 points (blob 0: 10-59) in 2-64 dims; blob 0 holds every top score.

    Returns (N, D) points, (N,) blob labels and (N,) scores. Adjacent centers are at least
    2 * 100 * sin(pi / 8) ~ 76 apart; a sigma-1 blob in D <= 64 dims has a radius of about
    sqrt(D) <= 8. A single plain k-means++ run still misses a blob for 3 of these 20 seeds.
    """
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(10, 60)), *rng.integers(3, 60, size=int(rng.integers(1, 8)))]
    points, labels = blobs(rng, sizes, int(rng.integers(2, 65)))
    noise = rng.random(labels.shape)  # (N,)
    return points, labels, np.where(labels == 0, 0.9 + 0.1 * noise, 0.5 * noise)


@pytest.mark.parametrize("seed", range(20))
def test_cluster_margin_picks_from_every_well_separated_blob(seed: int) -> None:
    points, labels, scores = separated_blobs(seed)
    n_blobs = int(labels.max()) + 1
    k = n_blobs + seed % 3
    top = np.argsort(-scores, kind="stable")[:k]
    assert set(labels[top].tolist()) == {0}  # top-k alone asks about one blob only
    picks = cluster_margin_select(scores, points, k, np.random.default_rng(seed), clusters=n_blobs)
    assert np.unique(picks).shape == (k,)
    assert set(labels[picks].tolist()) == set(range(n_blobs))


@pytest.mark.parametrize("seed", range(20))
def test_kmeans_recovers_well_separated_blobs_exactly(seed: int) -> None:
    points, labels, _ = separated_blobs(seed)
    n_blobs = int(labels.max()) + 1
    found = kmeans(points, n_blobs, np.random.default_rng(seed))  # (N,)
    assert found.dtype == np.int64 and found.shape == labels.shape
    # The same partition up to renaming: n_blobs distinct (cluster, blob) pairs, n_blobs
    # clusters, so each cluster is exactly one blob.
    pairs = set(zip(found.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == len(set(found.tolist())) == n_blobs
    # Every draw comes from the rng passed in: the same seed gives the same labels.
    np.testing.assert_array_equal(kmeans(points, n_blobs, np.random.default_rng(seed)), found)


@SETTINGS
@given(
    inputs=points_and_k(),
    clusters=st.none() | st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_cluster_margin_returns_min_k_n_distinct_indices(
    inputs: tuple[np.ndarray, int], clusters: int | None, seed: int, data: st.DataObject
) -> None:
    points, k = inputs
    n = points.shape[0]
    scores = data.draw(hnp.arrays(np.float64, (n,), elements=st.floats(0, 1)))
    picks = cluster_margin_select(scores, points, k, np.random.default_rng(seed), clusters=clusters)
    assert picks.dtype == np.int64
    assert picks.shape == (min(k, n),)
    assert np.unique(picks).shape == picks.shape


def test_cluster_margin_with_one_cluster_is_top_k() -> None:
    scores = np.array([0.3, 0.9, 0.1, 0.9, 0.5])
    points = np.arange(5.0)[:, None]
    picks = cluster_margin_select(scores, points, 3, np.random.default_rng(0), clusters=1)
    assert picks.tolist() == [1, 3, 4]


def test_cluster_margin_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="clusters must be an integer >= 1"):
        cluster_margin_select([0.1], [[0.0]], 1, np.random.default_rng(0), clusters=0)
    with pytest.raises(TypeError, match="Generator"):
        cluster_margin_select([0.1], [[0.0]], 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_init must be >= 1"):
        kmeans(np.zeros((2, 1)), 1, np.random.default_rng(0), n_init=0)


# -- BADGE -----------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), n=st.integers(0, 6), c=st.integers(2, 5), d=st.integers(1, 6))
def test_the_gradient_embedding_is_the_outer_product_of_the_logit_gradient_and_the_features(
    data: st.DataObject, n: int, c: int, d: int
) -> None:
    probs = data.draw(prob_rows((n, c)))
    features = data.draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-10, 10)))
    g = gradient_embedding(probs, features).reshape(n, c, d)  # (N, C, D)
    for row in range(n):
        a = probs[row] - np.eye(c)[probs[row].argmax()]  # (C,)
        np.testing.assert_allclose(g[row], np.outer(a, features[row]), rtol=1e-6, atol=1e-5)


def test_a_wide_gradient_embedding_is_sketched_keeping_its_inner_products() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=40)  # (40, 10)
    features = rng.normal(size=(40, 1280))  # (40, 1280): 12,800 exact dimensions
    exact = gradient_embedding(probs, features, max_dim=10**6).astype(np.float64)
    sketched = gradient_embedding(probs, features).astype(np.float64)  # (40, 10 * 204)
    assert exact.shape == (40, 12800) and sketched.shape == (40, 2040)
    # Same projection in every call (scorer processes must agree), inner products kept.
    np.testing.assert_array_equal(gradient_embedding(probs, features), sketched)
    gram, approx = exact @ exact.T, sketched @ sketched.T  # (40, 40)
    scale = np.sqrt(np.outer(np.diag(gram), np.diag(gram)))  # |g_i| |g_j|
    assert np.abs(approx - gram).max() / scale.max() < 0.25
    assert np.corrcoef(gram.ravel(), approx.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("seed", range(10))
def test_badge_picks_from_every_well_separated_blob(seed: int) -> None:
    points, labels, scores = separated_blobs(seed)
    n_blobs = int(labels.max()) + 1
    top = np.argsort(-scores, kind="stable")[:n_blobs]
    assert set(labels[top].tolist()) == {0}
    # k-means++ draws by squared distance: a blob far from every pick (distance ~76 or more
    # against a blob radius ~8) is all but certain to be drawn before a second point of a
    # blob already picked.
    picks = badge_select(scores, points, n_blobs, np.random.default_rng(seed))
    assert set(labels[picks].tolist()) == set(range(n_blobs))


def test_badge_prefers_uncertain_items_whose_gradients_are_long() -> None:
    rng = np.random.default_rng(0)
    confident = rng.dirichlet(np.ones(4) * 0.05, size=500)  # (500, 4), nearly one-hot
    unsure = rng.dirichlet(np.ones(4) * 20.0, size=50)  # (50, 4), nearly uniform
    probs = np.concatenate([confident, unsure])  # (550, 4)
    features = rng.normal(size=(550, 16))  # (550, 16), the same spread for both
    g = gradient_embedding(probs, features)
    picks = badge_select(np.zeros(550), g, 20, np.random.default_rng(1))
    # A eleventh of the candidates are unsure; more than three times that share of the picks
    # are (8 of 20 here; uniform draws would give about 2).
    assert (picks >= 500).mean() >= 3 * 50 / 550


def test_badge_rejects_features_of_another_length() -> None:
    with pytest.raises(ValueError, match="probs has 2 rows but features has 1"):
        gradient_embedding([[0.5, 0.5], [1.0, 0.0]], [[1.0]])
    with pytest.raises(TypeError, match="Generator"):
        badge_select([0.1], [[0.0]], 1, 0)  # type: ignore[arg-type]


# -- variable uncertainty (stream) ------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn, max_len: int = 300) -> np.ndarray:
    n, c = draw(st.integers(0, max_len)), draw(st.integers(2, 5))
    return draw(prob_rows((n, c)))


@SETTINGS
@given(
    stream=streams(),
    budget=st.floats(0.01, 1.0),
    step=st.floats(0.0, 0.5),
    threshold=st.floats(0.05, 1.0),
)
def test_variable_uncertainty_never_asks_more_than_the_budget(
    stream: np.ndarray, budget: float, step: float, threshold: float
) -> None:
    vu = VariableUncertainty(budget, step=step, threshold=threshold)
    for seen, probs in enumerate(stream, start=1):
        before = vu.asked
        asked = vu.ask(probs)
        assert vu.seen == seen
        assert vu.asked == before + asked
        assert vu.asked <= budget * vu.seen
        assert 0.0 < vu.threshold <= 1.0


@SETTINGS
@given(budget=st.floats(0.01, 1.0), data=st.data())
def test_variable_uncertainty_asks_on_a_long_uncertain_stream(
    budget: float, data: st.DataObject
) -> None:
    n = math.ceil(1 / budget) + 5
    c = data.draw(st.integers(2, 5))
    # Every row has its top class below 1: uncertain for the starting threshold of 1.
    weights = hnp.arrays(np.float64, (n, c), elements=st.floats(0.01, 1.0))
    stream = data.draw(weights)
    stream /= stream.sum(axis=1, keepdims=True)
    vu = VariableUncertainty(budget)
    asked = [vu.ask(p) for p in stream]
    assert any(asked)
    assert vu.asked <= budget * vu.seen


def test_variable_uncertainty_with_the_whole_budget_asks_every_uncertain_record() -> None:
    vu = VariableUncertainty(1.0, step=0.0)
    assert all(vu.ask([0.6, 0.4]) for _ in range(10))
    assert not vu.ask([1.0, 0.0])
    assert (vu.seen, vu.asked) == (11, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0.0}, r"budget must lie in \(0, 1\]"),
        ({"budget": 1.5}, r"budget must lie in \(0, 1\]"),
        ({"budget": 0.5, "step": 1.0}, r"step must lie in \[0, 1\)"),
        ({"budget": 0.5, "threshold": 0.0}, r"threshold must lie in \(0, 1\]"),
        ({"budget": True}, "budget must be a number"),
    ],
)
def test_variable_uncertainty_rejects_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VariableUncertainty(**kwargs)


def test_variable_uncertainty_rejects_a_bad_row_without_counting_it() -> None:
    vu = VariableUncertainty(0.5)
    with pytest.raises(ValueError, match="1-D"):
        vu.ask([[0.5, 0.5]])
    with pytest.raises(ValueError, match="sum to 1"):
        vu.ask([0.5, 0.6])
    assert vu.seen == 0
