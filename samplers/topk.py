"""A mergeable top-k of (id, score, version) rows, for scoring a pool in many pieces.

A scoring pass sees the pool as a stream of small batches from many workers, in no fixed
order. ``TopK`` keeps only the k best rows seen so far, so memory is O(k) however large the
pool, and each push costs one sort of at most k + batch rows. Because the ordering is total
(score descending, then id ascending), the result does not depend on how the data was split
or in which order pieces arrived: it is exactly the top k of one global sort.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_scores

#: Version recorded for rows pushed without one.
UNKNOWN_VERSION = -1


class TopKResult(NamedTuple):
    """The k best rows, best first (score descending, ties by id ascending).

    Attributes:
        ids: (m,) str item ids.
        scores: (m,) float64 scores.
        versions: (m,) int64 model version that produced each score (-1 if not given).
    """

    ids: np.ndarray
    scores: np.ndarray
    versions: np.ndarray


def _check_ids(ids: Any, n: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"ids must be a 1-D array of {n} ids (one per score), got {arr.shape}")
    if arr.dtype.kind == "O":
        if not all(isinstance(x, str) for x in arr):
            raise ValueError("ids must be strings")
        arr = arr.astype(str) if n else np.empty(0, dtype="U1")
    elif arr.dtype.kind != "U":
        if n == 0:  # an empty list arrives as float64; nothing to check
            return np.empty(0, dtype="U1")
        raise ValueError(f"ids must be strings, got dtype {arr.dtype}")
    return arr


def _check_versions(versions: Any, n: int) -> np.ndarray:
    if versions is None:
        return np.full(n, UNKNOWN_VERSION, dtype=np.int64)
    arr = np.asarray(versions)
    if arr.shape != (n,):
        raise ValueError(f"versions must be a 1-D array of {n} ints, got shape {arr.shape}")
    if n and arr.dtype.kind not in "iu":
        raise ValueError(f"versions must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


class TopK:
    """Accumulates the k highest-scoring rows over any number of partial batches.

    Order is score descending, then id ascending, a total order on distinct ids, so pushing
    the data in any split and any order (or merging accumulators built from disjoint parts)
    gives exactly the top k of one global sort.

    Duplicate ids: the row pushed later replaces the one held (its score is the fresher one,
    e.g. from a newer model version); within one push the last occurrence wins, and for
    :meth:`merge` the other accumulator's rows count as later. Only rows still held can be
    replaced: if a fresher, lower score pushes an id out, rows evicted earlier do not come
    back, so with repeated ids the result is the top k of what was held, not of a global sort.

    Args:
        k: How many rows to keep, >= 0.

    >>> top = TopK(2)
    >>> top.push(["a", "b", "c"], [0.5, 0.9, 0.5])
    >>> top.push(["d"], [0.1], versions=[3])
    >>> r = top.result()
    >>> r.ids.tolist(), r.scores.tolist(), r.versions.tolist()
    (['b', 'a'], [0.9, 0.5], [-1, -1])
    >>> len(top)
    2
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"k must be an integer >= 0, got {k!r}")
        self.k = int(k)
        self._ids = np.empty(0, dtype="U1")  # (m,) m <= k, best first
        self._scores = np.empty(0, dtype=np.float64)  # (m,)
        self._versions = np.empty(0, dtype=np.int64)  # (m,)

    def __len__(self) -> int:
        """Rows currently held, at most k."""
        return self._ids.shape[0]

    def __repr__(self) -> str:
        return f"TopK(k={self.k}, held={len(self)})"

    def push(self, ids: ArrayLike, scores: ArrayLike, versions: ArrayLike | None = None) -> None:
        """Merge one partial batch of rows into the held top k.

        Args:
            ids: (n,) str ids.
            scores: (n,) float scores, higher = better. NaN is rejected.
            versions: (n,) int model version per row, or None for unknown (-1).

        Raises:
            ValueError: NaN scores, non-string ids, or arrays of different lengths.
        """
        s = check_scores(scores)  # (n,)
        n = s.shape[0]
        i = _check_ids(ids, n)  # (n,)
        v = _check_versions(versions, n)  # (n,)
        self._fold(i, s, v)

    def merge(self, other: TopK) -> TopK:
        """Return a new accumulator holding the top k of both; ``other``'s rows count as later.

        Both must have the same k: an accumulator with a smaller k may already have dropped
        rows the merged top k needs.

        Raises:
            ValueError: The two accumulators have different k.
        """
        if not isinstance(other, TopK):
            raise TypeError(f"can only merge another TopK, got {type(other).__name__}")
        if other.k != self.k:
            raise ValueError(f"cannot merge TopK(k={other.k}) into TopK(k={self.k})")
        out = TopK(self.k)
        out._ids, out._scores, out._versions = self._ids, self._scores, self._versions
        out._fold(other._ids, other._scores, other._versions)
        return out

    def result(self) -> TopKResult:
        """Return the held rows, best first, as copies (later pushes do not change them)."""
        return TopKResult(self._ids.copy(), self._scores.copy(), self._versions.copy())

    def _fold(self, ids: np.ndarray, scores: np.ndarray, versions: np.ndarray) -> None:
        all_ids = np.concatenate([self._ids, ids])  # (m + n,), held rows first = older
        all_scores = np.concatenate([self._scores, scores])  # (m + n,)
        all_versions = np.concatenate([self._versions, versions])  # (m + n,)
        # Last occurrence of each id wins: first occurrence in the reversed array.
        _, first_in_rev = np.unique(all_ids[::-1], return_index=True)
        keep = all_ids.shape[0] - 1 - first_in_rev  # (u,) positions of the freshest rows
        # lexsort sorts by the last key first: score descending, then id ascending.
        order = keep[np.lexsort((all_ids[keep], -all_scores[keep]))][: self.k]  # (<= k,)
        self._ids = all_ids[order]
        self._scores = all_scores[order]
        self._versions = all_versions[order]
