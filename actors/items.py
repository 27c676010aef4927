"""Look up an item's pixels by id, so labels can arrive as bare ``{"id", "label"}`` pairs.

The store reads only the ``id`` column of every shard up front (a few bytes per row) and
fetches pixels of labeled items on demand, keeping a couple of decoded shards cached. The
trainer uses it to turn labels into training rows; the Serve app uses it to render images.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from activestream.sources.shards import ShardSet, pixels_to_array


class UnknownItem(KeyError):
    """An id that is not in the pool."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


class ItemStore:
    """Pixels by id over a :class:`ShardSet`.

    Args:
        shards: The pool.
        cache_shards: Decoded shards to keep in memory.
    """

    def __init__(self, shards: ShardSet, cache_shards: int = 2) -> None:
        self.shards = shards
        self.cache_shards = cache_shards
        self._where: dict[str, tuple[int, int]] | None = None
        self._ids: list[np.ndarray] = []
        self._cache: OrderedDict[int, pa.ChunkedArray] = OrderedDict()

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every item."""
        return tuple(self.shards.shape)  # type: ignore[return-value]

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label."""
        return tuple(self.shards.classes)

    def _index(self) -> dict[str, tuple[int, int]]:
        if self._where is None:
            where: dict[str, tuple[int, int]] = {}
            for f, path in enumerate(self.shards.paths):
                with self.shards.filesystem.open_input_file(path) as fh:
                    ids = pq.read_table(fh, columns=["id"]).column("id").to_pylist()
                self._ids.append(np.asarray(ids, dtype=object))
                where.update((item, (f, row)) for row, item in enumerate(ids))
            self._where = where
        return self._where

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def ids(self) -> np.ndarray:
        """Every id of the pool, shard by shard."""
        self._index()
        return np.concatenate(self._ids) if self._ids else np.empty(0, dtype=object)

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` that are not in the pool."""
        index = self._index()
        return [i for i in ids if i not in index]

    def _shard_pixels(self, f: int) -> pa.ChunkedArray:
        if f in self._cache:
            self._cache.move_to_end(f)
            return self._cache[f]
        with self.shards.filesystem.open_input_file(self.shards.paths[f]) as fh:
            pixels = pq.read_table(fh, columns=["pixels"]).column("pixels")
        self._cache[f] = pixels
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return pixels

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """(len(ids), C, H, W) float32 in [0, 1]; raises :class:`UnknownItem` naming an id."""
        index = self._index()
        out = np.empty((len(ids), *self.shape), dtype=np.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for i, item in enumerate(ids):
            if item not in index:
                raise UnknownItem(f"unknown id {item!r}: not in the pool")
            f, row = index[item]
            by_shard.setdefault(f, []).append((i, row))
        for f, pairs in by_shard.items():
            rows = pa.array([row for _, row in pairs], pa.int64())
            taken = self._shard_pixels(f).take(rows)
            out[[i for i, _ in pairs]] = pixels_to_array(taken, self.shape)
        return out
