"""Every registered detection sampler holds the same invariants; the math checks by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.samplers import detection
from activestream.samplers.detection import Detections, check_detections
from activestream.samplers.detection.consistency import flip_boxes, flip_consistency
from activestream.samplers.detection.presence import box_presence
from activestream.samplers.detection.uncertainty import box_uncertainty

CLASSES = 3


@st.composite
def detections(draw: st.DrawFn, n: int | None = None) -> Detections:
    """N images (0-5), each with 0-4 boxes: valid boxes, class rows summing to 1, scores."""
    n = draw(st.integers(0, 5)) if n is None else n
    counts = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    m = sum(counts)
    unit = st.floats(0, 1, allow_nan=False)
    corners = draw(st.lists(st.tuples(unit, unit, unit, unit), min_size=m, max_size=m))
    boxes = [[100 * min(a, c), 100 * min(b, d), 100 * max(a, c), 100 * max(b, d)]
             for a, b, c, d in corners]  # fmt: skip
    weights = draw(
        st.lists(st.lists(st.floats(0.01, 1), min_size=CLASSES, max_size=CLASSES), min_size=m,
                 max_size=m)
    )  # fmt: skip
    probs = [list(np.asarray(w) / sum(w)) for w in weights]
    scores = draw(st.lists(unit, min_size=m, max_size=m))
    return check_detections(boxes if m else [], probs, scores, counts)


def _score(name: str, det: Detections, flipped: Detections) -> np.ndarray:
    spec = detection.spec(name)
    fn = detection.get(name, np.random.default_rng(0))
    return fn(det, flipped) if spec.inputs == ("detections", "flipped") else fn(det)


def _pair(draw: st.DrawFn) -> tuple[Detections, Detections]:
    det = draw(detections())
    return det, draw(detections(len(det.counts)))


pairs = st.composite(_pair)


def _subset(det: Detections, order: list[int]) -> Detections:
    """The images ``order`` of ``det``, in that order."""
    starts = np.concatenate([[0], np.cumsum(det.counts)[:-1]]) if len(det.counts) else []
    rows = [np.arange(starts[i], starts[i] + det.counts[i]) for i in order]
    rows = np.concatenate(rows).astype(int) if rows else np.zeros(0, int)
    counts = det.counts[order] if order else np.zeros(0, np.int64)
    return check_detections(det.boxes[rows], det.probs[rows], det.scores[rows], counts)


def test_the_registry_holds_the_box_aggregates_presence_flip_consistency_and_random():
    expected = {f"box_{u}_{a}" for u in ("entropy", "margin") for a in ("max", "mean", "sum")}
    others = {"box_presence_sum", "box_presence_clusters", "flip_consistency", "random"}
    assert set(detection.names()) == expected | others


def test_an_unknown_name_fails_naming_the_choices():
    with pytest.raises(ValueError, match="choose from box_entropy_max"):
        detection.spec("entropy")


@pytest.mark.parametrize("name", detection.names())
@settings(max_examples=60, deadline=None)
@given(pair=pairs())
def test_every_sampler_gives_one_finite_non_negative_score_per_image(name, pair):
    det, flipped = pair
    scores = _score(name, det, flipped)
    assert scores.shape == (len(det.counts),) and scores.dtype == np.float64
    assert np.isfinite(scores).all() and (scores >= 0).all()
    if detection.spec(name).bounded:
        assert (scores <= 1).all()
    else:
        assert (scores <= det.counts + 1e-9).all()


@pytest.mark.parametrize("name", [n for n in detection.names() if detection.spec(n).deterministic])
@settings(max_examples=40, deadline=None)
@given(pair=pairs(), data=st.data())
def test_deterministic_samplers_score_an_image_the_same_alone_and_in_any_order(name, pair, data):
    det, flipped = pair
    scores = _score(name, det, flipped)
    order = data.draw(st.permutations(list(range(len(det.counts)))))
    permuted = _score(name, _subset(det, order), _subset(flipped, order))
    np.testing.assert_allclose(permuted, scores[order])
    for i in range(len(det.counts)):
        alone = _score(name, _subset(det, [i]), _subset(flipped, [i]))
        np.testing.assert_allclose(alone, scores[i : i + 1])


@pytest.mark.parametrize("name", [n for n in detection.names() if detection.spec(n).deterministic])
def test_an_image_with_no_box_in_any_pass_scores_zero(name):
    empty = check_detections([], np.zeros((0, CLASSES)), [], [0, 0])
    assert _score(name, empty, empty).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("name", [n for n in detection.names() if detection.spec(n).batch])
@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), k=st.integers(0, 15), seed=st.integers(0, 2**16), data=st.data())
def test_every_batch_sampler_picks_min_k_n_distinct_candidates(name, n, k, seed, data):
    unit = st.floats(0, 1, allow_nan=False)
    scores = np.array(data.draw(st.lists(unit, min_size=n, max_size=n)))
    embeddings = np.array(data.draw(st.lists(st.lists(unit, min_size=3, max_size=3),
                                             min_size=n, max_size=n))).reshape(n, 3)  # fmt: skip
    picks = detection.spec(name).batch(scores, embeddings, k, np.random.default_rng(seed))
    assert picks.dtype == np.int64 and len(picks) == min(k, n)
    assert len(set(picks.tolist())) == len(picks) and all(0 <= i < n for i in picks)


def test_presence_clusters_ranks_as_presence_and_spreads_a_batch_over_clusters():
    det = check_detections([[0, 0, 1, 1]] * 4, [[0.5, 0.5]] * 4, [0.5, 0.55, 0.9, 0.95], [1] * 4)
    spec = detection.spec("box_presence_clusters")
    scores = detection.get("box_presence_clusters")(det)
    np.testing.assert_array_equal(scores, box_presence(det))
    # Images 0 and 1 (the most uncertain) look alike, and so do 2 and 3: top-2 by score asks
    # 0 and 1; one per cluster asks the better of 0 and 1 and the better of 2 and 3.
    near_copies = np.array([[0.0, 0.0], [0.0, 0.1], [9.0, 9.0], [9.0, 9.1]])
    assert sorted(np.argsort(-scores)[:2].tolist()) == [0, 1]
    picks = spec.batch(scores, near_copies, 2, np.random.default_rng(0))
    assert sorted(picks.tolist()) == [1, 2]


def test_random_gives_fresh_scores_each_call_from_its_seed():
    det = check_detections([], np.zeros((0, CLASSES)), [], [0, 0, 0])
    first = detection.get("random", np.random.default_rng(3))
    again = detection.get("random", np.random.default_rng(3))
    a, b = first(det), first(det)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, again(det))


def test_boxes_under_the_score_floor_do_not_count():
    unsure = check_detections([[0, 0, 1, 1]], [[0.5, 0.5]], [0.29], [1])
    assert box_uncertainty(unsure, "entropy", "max").tolist() == [0.0]
    assert box_uncertainty(unsure, "entropy", "max", floor=0.2).tolist() == [1.0]


def test_a_half_believed_box_outranks_a_sure_one_of_the_same_class_mix():
    # Same class confusion, detection scores 0.5 and 0.99: the class samplers rank the sure
    # box higher (both count, same entropy); presence asks about the box that may not exist.
    det = check_detections([[0, 0, 1, 1], [0, 0, 1, 1]], [[0.5, 0.5]] * 2, [0.5, 0.99], [1, 1])
    half, sure = box_presence(det).tolist()
    assert half > sure
    assert half == pytest.approx(0.75)


def test_presence_counts_boxes_from_its_own_low_floor():
    faint = check_detections([[0, 0, 1, 1]], [[1.0, 0.0]], [0.1], [1])
    assert box_uncertainty(faint, "entropy", "sum").tolist() == [0.0]  # under 0.3
    assert box_presence(faint)[0] > 0.2  # H2(0.1) / log 2 / 2 = 0.234
    assert box_presence(faint, floor=0.2).tolist() == [0.0]


def test_margin_per_box_is_one_minus_the_gap_between_the_top_two_classes():
    det = check_detections([[0, 0, 1, 1], [0, 0, 2, 2]], [[0.7, 0.3], [0.6, 0.4]], [1, 1], [2])
    # margins 1 - 0.4 = 0.6 and 1 - 0.2 = 0.8
    assert box_uncertainty(det, "margin", "sum").round(6).tolist() == [1.4]
    assert box_uncertainty(det, "margin", "mean").round(6).tolist() == [0.7]


def test_boxes_of_another_class_do_not_match_under_the_flip():
    a = check_detections([[0, 0, 2, 2]], [[1.0, 0.0]], [0.9], [1])
    same_place_other_class = check_detections([[0, 0, 2, 2]], [[0.0, 1.0]], [0.9], [1])
    assert flip_consistency(a, same_place_other_class).tolist() == [1.0]
    assert flip_consistency(a, a).tolist() == [0.0]


def test_flipping_boxes_twice_gives_them_back():
    boxes = np.array([[1.0, 2.0, 5.0, 9.0], [0.0, 0.0, 10.0, 3.0]])
    np.testing.assert_array_equal(flip_boxes(flip_boxes(boxes, 10), 10), boxes)


@pytest.mark.parametrize(
    ("boxes", "probs", "scores", "counts", "says"),
    [
        ([[2, 0, 1, 1]], [[1, 0]], [0.5], [1], "x2 >= x1"),
        ([[0, 0, 1, float("nan")]], [[1, 0]], [0.5], [1], "finite"),
        ([[0, 0, 1, 1]], [[0.7, 0.7]], [0.5], [1], "sum to 1"),
        ([[0, 0, 1, 1]], [[1, 0]], [1.5], [1], r"scores must lie in \[0, 1\]"),
        ([[0, 0, 1, 1]], [[1, 0]], [0.5], [-1, 2], "non-negative integers"),
        ([[0, 0, 1]], [[1, 0]], [0.5], [1], r"\(M, 4\)"),
        ([[0, 0, 1, 1]], [[1, 0], [1, 0]], [0.5], [1], "need 1 probability rows"),
    ],
)
def test_bad_detector_output_is_refused_naming_the_problem(boxes, probs, scores, counts, says):
    with pytest.raises(ValueError, match=says):
        check_detections(boxes, probs, scores, counts)
