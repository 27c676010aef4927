"""A compact id -> (file, row) index for pools of millions of items.

A dict of Python strings costs 180 bytes or more per item in every process that holds it (the
str objects, the tuples and their ints, the dict slots). This index keeps 27 bytes per item for
ids like ``syn-0000001``:

* the ids themselves as one Arrow string array per file (4 bytes of offset plus the UTF-8 bytes),
  so a row's id can be read back to verify a match and :meth:`IdIndex.ids` costs nothing extra;
* a sorted ``uint64`` hash per id, searched with :func:`numpy.searchsorted`;
* a parallel ``uint32`` global position per hash (the row counted over all files in order),
  which the file and the row come back from through the files' start positions: half the size
  of an (int32 file, int32 row) pair.

A hash only narrows the search: every candidate is confirmed by comparing the stored id with the
query, and runs of equal hashes are walked to their end, so a collision can cost time but never
return the wrong item.

The hash is a polynomial over the UTF-8 bytes modulo 2**64, computed for whole arrays with
prefix sums over the Arrow data buffer, then mixed with MurmurHash3's 64-bit finalizer. It is
deterministic across processes, runs and machines (unlike Python's salted ``hash``), some 30
times faster than ``hashlib.blake2b`` called per id, and as fast as FNV-1a vectorised by byte
position for short ids but faster for long ones, whose cost grows with the longest id; see
``python -m activestream.benchmarks.index_memory`` for the measured figures.

Example:
    >>> import pyarrow as pa
    >>> index = IdIndex.build([pa.array(["a", "b"]), pa.array(["c"])])
    >>> index.add_file(pa.array(["d", "e"]))
    2
    >>> file, row, found = index.locate(["e", "zz", "c"])
    >>> file.tolist(), row.tolist(), found.tolist()
    ([2, -1, 1], [1, -1, 0], [True, False, True])
    >>> len(index), "b" in index, index.missing(["a", "x"])
    (5, True, ['x'])
    >>> IdIndex.build([pa.array(["a", "b"]), pa.array(["b"])])
    Traceback (most recent call last):
    ...
    activestream.errors.DataError: duplicate id 'b': file 0 row 1 and file 1 row 0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from activestream.errors import DataError

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
# An odd multiplier (the 64-bit golden ratio) is invertible modulo 2**64; its inverse lets one
# prefix sum over a whole data buffer give every string's hash (see _hash_ids).
_P = 0x9E3779B97F4A7C15
_Q = pow(_P, -1, 1 << 64)
_LEN_MIX = _U64(0xD6E8FEB86659FD93)
_FMIX1 = _U64(0xFF51AFD7ED558CCD)
_FMIX2 = _U64(0xC4CEB9FE1A85EC53)
# Bytes hashed at once: the temporaries of a chunk stay in cache and are reused, and the power
# tables for one chunk are computed once per process (1.5 MB).
_CHUNK_BYTES = 1 << 16
_TABLES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q**k, P**k and sum(Q**i for i < k) modulo 2**64 for k in [0, n].

    The chunk-sized tables are kept; larger ones (a single id longer than a chunk) are not.
    """
    size = max(n, _CHUNK_BYTES)
    if size in _TABLES:
        return _TABLES[size]
    powers = []
    for base in (_Q, _P):
        table = np.full(size + 1, base, dtype=_U64)
        table[0] = 1
        np.cumprod(table, out=table)  # unsigned arrays wrap modulo 2**64, which is the point
        powers.append(table)
    sums = np.zeros(size + 1, dtype=_U64)
    np.cumsum(powers[0][:size], out=sums[1:])
    tables = (powers[0], powers[1], sums)
    if size == _CHUNK_BYTES:
        _TABLES[size] = tables
    return tables


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer: a bijection that spreads every input bit over all output bits."""
    h ^= h >> _U64(33)
    h *= _FMIX1
    h ^= h >> _U64(33)
    h *= _FMIX2
    h ^= h >> _U64(33)
    return h


def _hash_ids(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A deterministic 64-bit hash of every string of an Arrow string array, vectorised.

    String ``i`` is ``data[offsets[i]:offsets[i + 1]]``. Its hash is
    ``fmix64(sum((b_j + 1) * Q**j) + len * C)`` with ``b_j`` its j-th byte (plus one, so
    trailing zero bytes still count) and ``Q`` the inverse of an odd ``P`` modulo 2**64. With a
    prefix sum ``S`` of ``b_k * Q**k`` over a chunk of the data buffer and ``T`` the prefix sum
    of ``Q**k``, ``(S[end] - S[start] + T[end] - T[start]) * P**start`` is that sum for every
    string of the chunk at once: two passes over the bytes, no Python loop per id or per byte
    position, and no dependence on how long the longest id is.

    Args:
        offsets: int32 or int64 offsets, ``len(ids) + 1`` of them, ascending.
        data: The uint8 data buffer the offsets point into.

    Returns:
        One uint64 hash per string.
    """
    n = len(offsets) - 1
    out = np.empty(n, dtype=_U64)
    offsets = offsets.astype(np.int64, copy=False)
    prefix = np.empty(_CHUNK_BYTES + 1, dtype=_U64)  # reused: fresh large arrays page-fault
    r0 = 0
    while r0 < n:
        base = int(offsets[r0])
        r1 = int(np.searchsorted(offsets, base + _CHUNK_BYTES, side="right")) - 1
        r1 = min(max(r1, r0 + 1), n)  # one string longer than a chunk is a chunk of its own
        starts = offsets[r0:r1] - base
        ends = offsets[r0 + 1 : r1 + 1] - base
        size = int(ends[-1])
        powq, powp, sumq = _power_tables(size)
        sums = prefix[: size + 1] if size <= _CHUNK_BYTES else np.empty(size + 1, dtype=_U64)
        sums[0] = 0
        np.multiply(data[base : base + size], powq[:size], out=sums[1:], dtype=_U64)
        np.cumsum(sums[1:], out=sums[1:])
        h = sums[ends] - sums[starts]
        h += sumq[ends]
        h -= sumq[starts]
        h *= powp[starts]
        h += (ends - starts).astype(_U64) * _LEN_MIX
        out[r0:r1] = _fmix64(h)
        r0 = r1
    return out


def _hash_one(raw: bytes) -> int:
    """:func:`_hash_ids` of one UTF-8 string in plain Python: a tenth of the time for one id.

    Single lookups (``in``, one-id :meth:`IdIndex.locate`) would otherwise pay a dozen numpy
    calls of fixed overhead for a hash of a dozen bytes.
    """
    h, power = 0, 1
    for byte in raw:
        h = (h + (byte + 1) * power) & _MASK64
        power = (power * _Q) & _MASK64
    h = (h + len(raw) * int(_LEN_MIX)) & _MASK64
    h ^= h >> 33
    h = (h * int(_FMIX1)) & _MASK64
    h ^= h >> 33
    h = (h * int(_FMIX2)) & _MASK64
    return h ^ (h >> 33)


def _as_string_array(ids: pa.Array | pa.ChunkedArray, what: str) -> pa.Array:
    """One compact ``pa.string()`` array: own buffers, no slack, no nulls.

    Copying into fresh buffers drops whatever the ids were sliced from (a Parquet column chunk,
    a larger batch), so :attr:`IdIndex.nbytes` counts only what is kept.
    """
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    elif not isinstance(ids, pa.Array):
        raise DataError(f"{what}: ids must be a pyarrow string array, not {type(ids).__name__}")
    kind = ids.type
    if pa.types.is_dictionary(kind):
        ids = ids.dictionary_decode()
        kind = ids.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind)):
        raise DataError(f"{what}: ids must be strings, not {kind}")
    if ids.null_count:
        row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{what}: id at row {row} is null")
    try:
        if not pa.types.is_string(kind):
            ids = ids.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowCapacityError) as err:
        raise DataError(f"{what}: over 2 GiB of id text in one file; split it ({err})") from err
    offsets, data = _buffers(ids)
    start, end = int(offsets[0]), int(offsets[-1])
    own_offsets = offsets - np.int32(start) if start else offsets.copy()
    own_data = data[start:end].copy()
    return pa.Array.from_buffers(
        pa.string(), len(ids), [None, pa.py_buffer(own_offsets), pa.py_buffer(own_data)]
    )


def _is_string_view(kind: pa.DataType) -> bool:
    check = getattr(pa.types, "is_string_view", None)  # pyarrow >= 16
    return bool(check and check(kind))


def _buffers(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy int32 offsets (``len + 1``, honouring a slice offset) and uint8 data."""
    _, offsets_buf, data_buf = ids.buffers()
    if offsets_buf is None:  # some empty arrays carry no buffers at all
        return np.zeros(1, dtype=np.int32), np.empty(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[ids.offset : ids.offset + len(ids) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, "u1")
    return offsets, data


def _positions_dtype(total: int) -> type[np.unsignedinteger] | type[np.signedinteger]:
    """uint32 while every global position fits (4 bytes per item), int64 beyond 4 G items."""
    return np.uint32 if total <= np.iinfo(np.uint32).max else np.int64


class IdIndex:
    """Where each id of a pool lives, as (file number, row), in about 27 bytes per item.

    Build it with :meth:`build` and grow it with :meth:`add_file` as new shards appear. Ids must
    be unique over all files: a duplicate raises :class:`~activestream.errors.DataError`.
    """

    def __init__(self) -> None:
        self._files: list[pa.Array] = []
        self._names: list[str | None] = []
        self._starts = np.zeros(1, dtype=np.int64)  # global position of each file's row 0, + end
        self._hashes = np.empty(0, dtype=_U64)
        self._positions: np.ndarray = np.empty(0, dtype=np.uint32)

    @classmethod
    def build(
        cls,
        per_file: Iterable[pa.Array | pa.ChunkedArray],
        names: Sequence[str] | None = None,
    ) -> IdIndex:
        """An index over files given in order; file ``i`` is the ``i``-th array.

        Sorting once over all files is cheaper than growing the index file by file.

        Args:
            per_file: Each file's ``id`` column, in file order.
            names: Optional label per file (a path), used in error messages instead of the
                bare file number.

        Returns:
            The index.

        Raises:
            DataError: An id is null, not a string, or appears twice.
        """
        index = cls()
        arrays: list[pa.Array] = []
        hashes: list[np.ndarray] = []
        labels: list[str | None] = []
        for f, ids in enumerate(per_file):
            name = names[f] if names is not None else None
            array = _as_string_array(ids, name or f"file {f}")
            arrays.append(array)
            labels.append(name)
            hashes.append(_hash_ids(*_buffers(array)))
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(starts[-1])
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=_U64)
        del hashes
        order = np.argsort(all_hashes, kind="stable")
        sorted_hashes = all_hashes[order]
        del all_hashes
        positions = order.astype(_positions_dtype(total))
        del order
        index._files, index._names, index._starts = arrays, labels, starts
        index._check_unique(sorted_hashes, positions, new_from=0)
        index._hashes, index._positions = sorted_hashes, positions
        return index

    def add_file(self, ids: pa.Array | pa.ChunkedArray, name: str | None = None) -> int:
        """Add one more file's ids (a shard that appeared while running).

        The new entries are merged into the sorted arrays in one pass (``np.insert`` at
        searched positions), so adding a file costs a copy of the index, not a re-sort. Nothing
        changes if the file is rejected.

        Args:
            ids: The new file's ``id`` column.
            name: Optional label for error messages (a path).

        Returns:
            The new file's number.

        Raises:
            DataError: An id is null, not a string, or already present (here or in this file).
        """
        f = len(self._files)
        array = _as_string_array(ids, name or f"file {f}")
        new_hashes = _hash_ids(*_buffers(array))
        first = int(self._starts[-1])
        total = first + len(array)
        order = np.argsort(new_hashes, kind="stable")
        new_hashes = new_hashes[order]
        dtype = _positions_dtype(total)
        new_positions = (order + first).astype(dtype)
        at = np.searchsorted(self._hashes, new_hashes, side="right")
        hashes = np.insert(self._hashes, at, new_hashes)
        positions = np.insert(self._positions.astype(dtype, copy=False), at, new_positions)
        files, names, starts = self._files, self._names, self._starts
        self._files = [*files, array]
        self._names = [*names, name]
        self._starts = np.append(starts, np.int64(total))
        try:
            self._check_unique(hashes, positions, new_from=first)
        except BaseException:  # a duplicate (or an interrupt): leave the index as it was
            self._files, self._names, self._starts = files, names, starts
            raise
        self._hashes, self._positions = hashes, positions
        return f

    def _where(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file, row) of global positions."""
        positions = positions.astype(np.int64, copy=False)
        files = np.searchsorted(self._starts, positions, side="right") - 1
        return files, positions - self._starts[files]

    def _where_one(self, position: int) -> tuple[int, int]:
        """(file, row) of one global position, without building arrays."""
        f = int(np.searchsorted(self._starts, position, side="right")) - 1
        return f, position - int(self._starts[f])

    def _label(self, position: int) -> str:
        f, row = self._where_one(position)
        return f"{self._names[f] or f'file {f}'} row {row}"

    def _id_at(self, position: int) -> str:
        f, row = self._where_one(position)
        return self._files[f][row].as_py()

    def _check_unique(self, hashes: np.ndarray, positions: np.ndarray, new_from: int) -> None:
        """Raise on an id stored twice, looking only at runs of equal hashes.

        Equal ids have equal hashes, so only runs of equal hashes can hold a duplicate; with
        64-bit hashes those are nearly always duplicates themselves and there are few, so they
        are compared one string at a time. Only runs holding a position ``>= new_from`` (an
        entry being added) are checked: older runs were checked when they were added. Within a
        run positions ascend, so the first location named is the earlier one.
        """
        if len(hashes) < 2:
            return
        same = hashes[1:] == hashes[:-1]
        if not same.any():
            return
        run_start = np.flatnonzero(same & ~np.concatenate([[False], same[:-1]]))
        run_end = np.flatnonzero(same & ~np.concatenate([same[1:], [False]])) + 2
        for a, b in zip(run_start.tolist(), run_end.tolist(), strict=True):
            members = positions[a:b].astype(np.int64)
            if members.max() < new_from:
                continue
            seen: dict[str, int] = {}
            for position in members.tolist():
                item = self._id_at(position)
                if item in seen:
                    raise DataError(
                        f"duplicate id {item!r}: {self._label(seen[item])} and "
                        f"{self._label(position)}"
                    )
                seen[item] = position

    def locate(
        self, ids: Sequence[str] | pa.Array | pa.ChunkedArray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each of ``ids`` is, in query order.

        The queries are hashed like the stored ids and searched in the sorted hashes; each
        candidate is then confirmed by comparing the stored id with the query (one Arrow
        ``take`` and ``equal`` over all queries). Queries whose candidate differs step to the
        next entry of the same hash until the run ends, so collisions never give a wrong row.

        Args:
            ids: The ids to find; repeats are allowed. A null id is never found.

        Returns:
            ``(file, row, found)``: int64 file numbers and rows (-1 where not found) and a bool
            mask, each ``len(ids)`` long.
        """
        if isinstance(ids, list | tuple) and len(ids) == 1 and isinstance(ids[0], str):
            position = self._find_one(ids[0])
            if position < 0:
                return np.array([-1]), np.array([-1]), np.array([False])
            file, row = self._where_one(position)
            return np.array([file]), np.array([row]), np.array([True])
        queries = self._queries(ids)
        m = len(queries)
        found_at = np.full(m, -1, dtype=np.int64)
        if m and len(self._hashes):
            query_hashes = _hash_ids(*_buffers(queries))
            cursor = np.searchsorted(self._hashes, query_hashes, side="left")
            pending = np.arange(m)
            # One pass per entry of the longest run of equal hashes met: nearly always one.
            while pending.size:
                at = cursor[pending]
                inside = at < len(self._hashes)
                pending, at = pending[inside], at[inside]
                same = self._hashes[at] == query_hashes[pending]
                pending, at = pending[same], at[same]
                if not pending.size:
                    break
                candidates = self._positions[at].astype(np.int64)
                equal = self._equal(candidates, queries.take(pa.array(pending)))
                found_at[pending[equal]] = candidates[equal]
                pending = pending[~equal]
                cursor[pending] += 1
        found = found_at >= 0
        files = np.full(m, -1, dtype=np.int64)
        rows = np.full(m, -1, dtype=np.int64)
        if found.any():
            files[found], rows[found] = self._where(found_at[found])
        return files, rows, found

    def _find_one(self, item: str) -> int:
        """The global position of one id, or -1: the bulk path's steps on scalars, ~10x faster."""
        try:
            raw = item.encode()
        except UnicodeEncodeError:  # a lone surrogate: no stored (UTF-8) id can equal it
            return -1
        h = _U64(_hash_one(raw))
        at = int(np.searchsorted(self._hashes, h, side="left"))
        while at < len(self._hashes) and self._hashes[at] == h:
            position = int(self._positions[at])
            if self._id_at(position) == item:
                return position
            at += 1
        return -1

    def _queries(self, ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
        """The queries as a ``pa.string()`` array (nulls kept; they never match)."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
        if not isinstance(ids, pa.Array):
            ids = pa.array(ids if isinstance(ids, list) else list(ids), type=pa.string())
        if pa.types.is_dictionary(ids.type):
            ids = ids.dictionary_decode()
        if not pa.types.is_string(ids.type):
            ids = ids.cast(pa.string())
        return ids

    def _equal(self, positions: np.ndarray, queries: pa.Array) -> np.ndarray:
        """Whether the stored id at each global position equals the matching query.

        Candidates are grouped by file and taken from each file's array: a ``take`` over the
        chunked array of all files costs time per file held, even for one query.
        """
        files, rows = self._where(positions)
        order = np.argsort(files, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(files[order])) + 1)
        stored = pa.concat_arrays(
            [self._files[int(files[g[0]])].take(pa.array(rows[g])) for g in groups]
        )
        equal = pc.equal(stored, queries.take(pa.array(order))).fill_null(False)
        out = np.empty(len(positions), dtype=bool)
        out[order] = equal.to_numpy(zero_copy_only=False)
        return out

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self._find_one(item) >= 0

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_files(self) -> int:
        """Files added so far; the next :meth:`add_file` gets this number."""
        return len(self._files)

    def missing(self, ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> list[str]:
        """The ids of ``ids`` that are not in the index, in query order (repeats kept)."""
        found = self.locate(ids)[2]
        where = np.flatnonzero(~found)
        if isinstance(ids, pa.Array | pa.ChunkedArray):
            return ids.take(pa.array(where)).to_pylist()
        items = ids if isinstance(ids, list) else list(ids)
        return [items[i] for i in where.tolist()]

    def ids(self) -> pa.ChunkedArray:
        """Every id, file by file, row by row (one chunk per file; no copy)."""
        return pa.chunked_array(self._files, type=pa.string())

    @property
    def nbytes(self) -> int:
        """Bytes held: the ids' Arrow buffers plus the hash, position and file-start arrays."""
        arrow = sum(a.get_total_buffer_size() for a in self._files)
        return int(arrow + self._hashes.nbytes + self._positions.nbytes + self._starts.nbytes)

    @property
    def bytes_per_item(self) -> float:
        """:attr:`nbytes` over the number of ids; 0.0 for an empty index."""
        return self.nbytes / len(self) if len(self) else 0.0

    def __repr__(self) -> str:
        return f"IdIndex({len(self)} ids in {self.num_files} files, {self.bytes_per_item:.1f} B/id)"
