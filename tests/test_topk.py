"""Specification of TopK: merging partial top-ks equals one global sort."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.samplers import TopK, TopKResult

SETTINGS = settings(max_examples=150, deadline=None)

ID = st.text(alphabet="abcxyz", min_size=1, max_size=4)
SCORE = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, -np.inf, np.inf]) | st.floats(
    -10, 10, allow_nan=False
)


@st.composite
def rows(draw: st.DrawFn) -> list[tuple[str, float, int]]:
    """Distinct ids with scores drawn from few values, so ties are common."""
    ids = draw(st.lists(ID, unique=True, max_size=40))
    return [(i, draw(SCORE), draw(st.integers(0, 5))) for i in ids]


def global_top(data: list[tuple[str, float, int]], k: int) -> list[tuple[str, float, int]]:
    return sorted(data, key=lambda row: (-row[1], row[0]))[:k]


def as_rows(result: TopKResult) -> list[tuple[str, float, int]]:
    return list(
        zip(result.ids.tolist(), result.scores.tolist(), result.versions.tolist(), strict=True)
    )


def push_rows(top: TopK, data: list[tuple[str, float, int]]) -> None:
    top.push(
        np.array([r[0] for r in data], dtype=object),
        np.array([r[1] for r in data], dtype=np.float64),
        np.array([r[2] for r in data], dtype=np.int64),
    )


@SETTINGS
@given(data=rows(), k=st.integers(0, 50), split=st.data())
def test_chunks_pushed_in_any_order_give_the_global_top_k(
    data: list[tuple[str, float, int]], k: int, split: st.DataObject
) -> None:
    cuts = sorted(split.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    top = TopK(k)
    for chunk in split.draw(st.permutations(chunks)):
        push_rows(top, chunk)
    assert as_rows(top.result()) == global_top(data, k)


@SETTINGS
@given(data=rows(), k=st.integers(0, 50), cut=st.data())
def test_merging_two_accumulators_equals_pushing_everything_into_one(
    data: list[tuple[str, float, int]], k: int, cut: st.DataObject
) -> None:
    at = cut.draw(st.integers(0, len(data)))
    left, right, whole = TopK(k), TopK(k), TopK(k)
    push_rows(left, data[:at])
    push_rows(right, data[at:])
    push_rows(whole, data)
    assert as_rows(left.merge(right).result()) == as_rows(whole.result())
    assert as_rows(right.merge(left).result()) == as_rows(whole.result())


def test_merge_leaves_both_inputs_unchanged() -> None:
    left, right = TopK(2), TopK(2)
    left.push(["a"], [0.5])
    right.push(["b", "c"], [0.9, 0.7])
    left.merge(right)
    assert left.result().ids.tolist() == ["a"]
    assert right.result().ids.tolist() == ["b", "c"]


def test_result_is_ordered_by_score_descending() -> None:
    top = TopK(3)
    top.push(["a", "b", "c", "d"], [0.2, 0.9, 0.5, 0.7])
    assert top.result().ids.tolist() == ["b", "d", "c"]
    assert top.result().scores.tolist() == [0.9, 0.7, 0.5]


def test_ties_are_broken_by_id_ascending() -> None:
    top = TopK(3)
    top.push(["d", "b"], [0.5, 0.5])
    top.push(["c", "a"], [0.5, 0.5])
    assert top.result().ids.tolist() == ["a", "b", "c"]


def test_a_duplicate_id_keeps_the_row_pushed_later() -> None:
    top = TopK(3)
    top.push(["a", "b"], [0.9, 0.5], [1, 1])
    top.push(["a"], [0.1], [2])
    assert as_rows(top.result()) == [("b", 0.5, 1), ("a", 0.1, 2)]


def test_a_duplicate_id_within_one_push_keeps_the_last_occurrence() -> None:
    top = TopK(3)
    top.push(["a", "b", "a"], [0.9, 0.5, 0.2], [1, 1, 2])
    assert as_rows(top.result()) == [("b", 0.5, 1), ("a", 0.2, 2)]


def test_merge_treats_the_other_accumulators_rows_as_later() -> None:
    old, new = TopK(2), TopK(2)
    old.push(["a"], [0.9], [1])
    new.push(["a"], [0.3], [2])
    assert as_rows(old.merge(new).result()) == [("a", 0.3, 2)]


def test_k_larger_than_the_data_returns_every_row() -> None:
    top = TopK(100)
    top.push(["a", "b", "c"], [0.1, 0.3, 0.2])
    assert top.result().ids.tolist() == ["b", "c", "a"]
    assert len(top) == 3


def test_len_is_the_number_of_rows_held_capped_at_k() -> None:
    top = TopK(2)
    assert len(top) == 0
    top.push(["a"], [0.1])
    assert len(top) == 1
    top.push(["b", "c", "d"], [0.1, 0.2, 0.3])
    assert len(top) == 2


def test_k_zero_keeps_nothing() -> None:
    top = TopK(0)
    top.push(["a"], [1.0])
    assert len(top) == 0
    assert top.result().ids.shape == (0,)


def test_versions_default_to_minus_one() -> None:
    top = TopK(2)
    top.push(["a"], [0.5])
    assert top.result().versions.tolist() == [-1]
    assert top.result().versions.dtype == np.int64


def test_empty_pushes_are_harmless() -> None:
    top = TopK(2)
    top.push([], [])
    top.push(np.array([], dtype=object), np.array([]), np.array([], dtype=np.int64))
    top.push(["a"], [0.5])
    assert as_rows(top.result()) == [("a", 0.5, -1)]


def test_result_arrays_are_copies() -> None:
    top = TopK(2)
    top.push(["a"], [0.5])
    result = top.result()
    result.scores[0] = 99.0
    assert top.result().scores.tolist() == [0.5]


def test_result_types() -> None:
    top = TopK(2)
    top.push(np.array(["a", "b"], dtype=object), [0.5, 0.4], np.array([1, 2], dtype=np.int32))
    result = top.result()
    assert isinstance(result, TopKResult)
    assert result.ids.dtype.kind == "U"
    assert result.scores.dtype == np.float64
    assert result.versions.dtype == np.int64


def test_nan_scores_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        TopK(2).push(["a", "b"], [0.5, float("nan")])


@pytest.mark.parametrize(
    ("ids", "scores", "versions", "message"),
    [
        (["a", "b"], [0.5], None, "one per score"),
        (["a"], [0.5], [1, 2], "versions must be"),
        (["a"], [0.5], [1.5], "versions must be integers"),
        ([1, 2], [0.5, 0.4], None, "ids must be strings"),
        (np.array(["a", None], dtype=object), [0.5, 0.4], None, "ids must be strings"),
        (["a"], [[0.5]], None, "1-D"),
    ],
)
def test_malformed_pushes_raise_value_error(
    ids: object, scores: object, versions: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TopK(2).push(ids, scores, versions)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_k_must_be_a_non_negative_integer(k: object) -> None:
    with pytest.raises(ValueError, match="k must be an integer >= 0"):
        TopK(k)  # type: ignore[arg-type]


def test_merging_accumulators_of_different_k_raises() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        TopK(2).merge(TopK(3))


@SETTINGS
@given(
    data=st.lists(st.tuples(ID, SCORE, st.integers(0, 5)), max_size=40),
    chunk=st.integers(1, 10),
)
def test_with_room_for_every_id_the_latest_row_of_each_id_is_kept(
    data: list[tuple[str, float, int]], chunk: int
) -> None:
    top = TopK(len(data))
    for start in range(0, len(data), chunk):
        push_rows(top, data[start : start + chunk])
    latest = {row[0]: row for row in data}  # later rows overwrite earlier ones
    assert as_rows(top.result()) == global_top(list(latest.values()), len(data))
