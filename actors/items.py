"""Look up an item's pixels by id, so labels can arrive as bare ``{"id", "label"}`` pairs.

The store reads only the ``id`` column of every shard up front into a compact
:class:`~activestream.sources.idindex.IdIndex` (about 30 bytes per item, not a Python dict) and
fetches pixels of labeled items on demand, keeping a couple of decoded shards cached. The
trainer uses it to turn labels into training rows; the Serve app uses it to render images.

An image folder read in place (``ShardSet.kind == "images"``) has one file per item: its index is
built from the relative paths alone (no image is opened), in parts of a million ids, and
:meth:`ItemStore.get` reads just the requested files.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from activestream.config import StorageConfig
from activestream.sources.fs import DEFAULT_STORAGE
from activestream.sources.idindex import IdIndex
from activestream.sources.pool import grow_shards
from activestream.sources.shards import ShardSet

#: Ids of an image folder per index part: one Arrow array each, far below the 2 GiB that int32
#: string offsets allow, and a million parts' overhead never arises for a million files.
_INDEX_PART = 1 << 20


class UnknownItem(KeyError):
    """An id that is not in the pool."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


class ItemStore:
    """Pixels by id over a :class:`ShardSet`.

    Args:
        shards: The pool.
        cache_bytes: Pixel columns kept in memory, by row group, least recently used out. Labels
            arrive for items scattered over the pool: a cache smaller than the files they touch
            would read each file again for every handful of labels.
    """

    def __init__(
        self,
        shards: ShardSet,
        cache_bytes: int = 256 << 20,
        *,
        storage: StorageConfig = DEFAULT_STORAGE,
        grow_every: float = 2.0,
    ) -> None:
        self.shards = shards
        self.cache_bytes = cache_bytes
        self.storage = storage
        self.grow_every = grow_every
        self._grown_at = time.monotonic()
        self._index: IdIndex | None = None
        # Image folders: the first image (file) of each index part; part p, row r is image
        # _part_starts[p] + r. Parquet sets index one part per file, so no table is needed.
        self._part_starts: list[int] = []
        self._cache: OrderedDict[tuple[int, int], pa.ChunkedArray] = OrderedDict()
        self._cached_bytes = 0
        self._group_starts: dict[int, np.ndarray] = {}  # file -> first row of each row group

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every item."""
        return tuple(self.shards.shape)  # type: ignore[return-value]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label."""
        return tuple(self.shards.classes)

    @property
    def index(self) -> IdIndex:
        """Id -> (file, row), about 30 bytes per item (built on first use)."""
        if self._index is None:
            if self.shards.images:
                parts = self._image_parts(self.shards, 0)
                self._index = IdIndex.build(
                    (ids for _, ids in parts), names=[self.shards.uri] * len(parts)
                )
                self._part_starts = [lo for lo, _ in parts]
            else:
                self._index = IdIndex.build(
                    (self._file_ids(f) for f in range(len(self.shards.paths))),
                    names=list(self.shards.paths),
                )
        return self._index

    @staticmethod
    def _image_parts(shards: ShardSet, start: int) -> list[tuple[int, pa.Array]]:
        """(first image, ids) of an image folder's files from ``start`` on, from paths only."""
        return [
            (lo, pa.array(shards.image_ids(shards.paths[lo : lo + _INDEX_PART]), pa.string()))
            for lo in range(start, len(shards.paths), _INDEX_PART)
        ]

    def _file_ids(self, f: int, shards: ShardSet | None = None) -> pa.ChunkedArray | pa.Array:
        shards = shards or self.shards
        if not shards.has_ids:
            return shards.generated_ids(f)
        with shards.filesystem.open_input_file(shards.paths[f]) as fh:
            return pq.read_table(fh, columns=["id"]).column("id")

    def grow(self) -> int:
        """Take in files that appeared under the pool's URI; returns how many rows came in."""
        self._grown_at = time.monotonic()
        bigger = grow_shards(self.shards, self.storage)
        if bigger is None:
            return 0
        index = self.index
        if bigger.images:
            for lo, ids in self._image_parts(bigger, len(self.shards.paths)):
                index.add_file(ids, name=bigger.uri)
                self._part_starts.append(lo)
        else:
            for f in range(len(self.shards.paths), len(bigger.paths)):
                index.add_file(self._file_ids(f, bigger), name=bigger.paths[f])
        added = bigger.num_rows - self.shards.num_rows
        self.shards = bigger
        return added

    def _locate(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Locate ids as (file, row); on a miss, look for new files first.

        New files are looked for at most every ``grow_every`` seconds, so a stream of unknown
        ids cannot turn into a stream of listings.
        """
        files, rows, found = self.index.locate(list(ids))
        if not found.all() and time.monotonic() - self._grown_at >= self.grow_every:
            if self.grow():
                files, rows, found = self.index.locate(list(ids))
        if self.shards.images:  # (index part, row) -> (image file, row 0)
            starts = np.asarray(self._part_starts, dtype=np.int64)
            parts = np.where(found, files, 0)
            files = np.where(found, starts[parts] + rows, -1)
            rows = np.where(found, 0, -1)
        return files, rows, found

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and bool(self._locate([item_id])[2][0])

    def __len__(self) -> int:
        return len(self.index)

    def ids(self) -> np.ndarray:
        """Every id of the pool, shard by shard."""
        return self.index.ids().to_numpy(zero_copy_only=False).astype(object)

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` that are not in the pool."""
        found = self._locate(list(ids))[2]
        return [i for i, ok in zip(ids, found.tolist(), strict=True) if not ok]

    def _row_group(self, f: int, group: int, fh: Any | None = None) -> pa.ChunkedArray:
        """One row group's pixel column of file ``f``, from the cache or read once."""
        key = (f, group)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        column = self.shards.image_column
        pixels = pq.ParquetFile(fh).read_row_group(group, columns=[column]).column(column)
        self._cache[key] = pixels
        self._cached_bytes += pixels.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= dropped.nbytes
        return pixels

    def _take(self, f: int, rows: np.ndarray) -> pa.ChunkedArray:
        """The pixel column's ``rows`` of file ``f``, reading only the row groups they fall in."""
        starts = self._group_starts.get(f)
        fh = None
        try:
            if starts is None:
                fh = self.shards.filesystem.open_input_file(self.shards.paths[f])
                meta = pq.ParquetFile(fh).metadata
                sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
                starts = self._group_starts[f] = np.cumsum([0, *sizes])[:-1]
            groups = np.searchsorted(starts, rows, side="right") - 1
            parts = []
            for group in np.unique(groups).tolist():
                if (f, group) not in self._cache and fh is None:
                    fh = self.shards.filesystem.open_input_file(self.shards.paths[f])
                pixels = self._row_group(f, group, fh)
                mine = np.flatnonzero(groups == group)
                parts.append((mine, pixels.take(pa.array(rows[mine] - starts[group]))))
        finally:
            if fh is not None:
                fh.close()
        if len(parts) == 1:
            return parts[0][1]
        order = np.argsort(np.concatenate([mine for mine, _ in parts]), kind="stable")
        joined = pa.chunked_array([c for _, taken in parts for c in taken.chunks])
        return joined.take(pa.array(order))

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids), C, H, W) float32 in [0, 1]; raises :class:`UnknownItem` naming an id."""
        out = np.empty((len(ids), *self.shape), dtype=np.float32)
        files, rows, found = self._locate(list(ids))
        if not found.all():
            missing = list(ids)[int(np.argmin(found))]
            raise UnknownItem(f"unknown id {missing!r}: not in the pool")
        if self.shards.images:
            # One file per item: read just those files (concurrently), each once.
            unique, inverse = np.unique(files, return_inverse=True)
            raw = self.shards.read_image_bytes([self.shards.paths[f] for f in unique.tolist()])
            out[:] = self.shards.decode(raw)[0][inverse.reshape(-1)]
            return out
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for i, (f, row) in enumerate(zip(files.tolist(), rows.tolist(), strict=True)):
            by_shard.setdefault(f, []).append((i, row))
        for f, pairs in by_shard.items():
            taken = self._take(f, np.array([row for _, row in pairs], dtype=np.int64))
            out[[i for i, _ in pairs]] = self.shards.decode(taken)[0]
        return out

    def original(self, item_id: str) -> tuple[bytes, str] | None:
        """The stored bytes and media type of an encoded image; None for decoded pixels.

        For an image folder these are the file's bytes (empty if it vanished).

        Raises:
            UnknownItem: ``item_id`` is not in the pool.
        """
        files, rows, found = self._locate([item_id])
        if not found[0]:
            raise UnknownItem(f"unknown id {item_id!r}: not in the pool")
        if not self.shards.encoded:
            return None
        from activestream.sources.images import encoded_bytes, image_info

        f, row = int(files[0]), int(rows[0])
        if self.shards.images:  # the image file itself, byte for byte
            data = self.shards.read_image_bytes([self.shards.paths[f]]).to_pylist()
        else:
            taken = self._take(f, np.array([row], dtype=np.int64))
            data = encoded_bytes(taken).to_pylist()
        raw = data[0] or b""
        try:
            media = image_info(raw)[3]
        except Exception:  # noqa: BLE001 - undecodable bytes are still the original bytes
            media = "application/octet-stream"
        return raw, media
