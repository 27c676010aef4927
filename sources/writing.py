"""Writing shards: in-memory arrays or generated blocks become validated Parquet shards.

Example:
    >>> import numpy as np, tempfile
    >>> px = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    >>> shards = write_shards(tempfile.mkdtemp(), ["a", "b", "c"], px, [0, 1, 0], ["n", "y"],
    ...                       rows_per_shard=2)
    >>> shards.file_rows, row_bounds(3, 2)
    ((2, 1), [(0, 2), (2, 3)])
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import DEFAULT_STORAGE, invalidate_cache, join_path, resolve_uri
from activestream.sources.shards import ShardSet, shard_schema


def _pixels_list(flat: np.ndarray) -> pa.ListArray:
    """(n, D) uint8 -> list<uint8> that shares the NumPy buffer."""
    n, d = flat.shape
    if n * d >= 2**31:
        raise ValueError(f"{n} rows of {d} bytes overflow list<uint8>; lower rows_per_shard")
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)[: n + 1])
    values = pa.array(np.ascontiguousarray(flat).reshape(-1))
    return pa.ListArray.from_arrays(offsets, values)


class ShardWriter:
    """Write ``{prefix}-00000.parquet``, ... under one directory, local or S3, one call a shard.

    Generators that cannot hold every row at once (synthetic data, image folders) call
    :meth:`write` per shard and :meth:`finish` once. Local files are written under a hidden
    temporary name and renamed, so a concurrent reader or a second writer never sees a
    half-written shard.

    Args:
        out: Local directory or ``s3://bucket/prefix``.
        storage: How to reach ``s3://`` outputs.
        shape: ``(C, H, W)`` of the images.
        classes: Class names (metadata).
        labels: Whether shards carry a ``label`` column.
        prefix: File name prefix.
    """

    def __init__(
        self,
        out: str,
        storage: StorageConfig,
        shape: Sequence[int],
        classes: Sequence[str],
        *,
        labels: bool,
        prefix: str = "part",
    ) -> None:
        self.uri = out
        self.fs, self.base = resolve_uri(out, storage)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.schema = shard_schema(shape, classes, labels=labels)
        self.shape = tuple(int(v) for v in shape)
        self.classes = tuple(str(c) for c in classes)
        self.labels = labels
        self.prefix = prefix
        self.paths: list[str] = []
        self.rows: list[int] = []
        self.fs.create_dir(self.base, recursive=True)

    def write(self, ids: Any, pixels: np.ndarray, labels: Any | None) -> None:
        """Write one shard: ``n`` ids, ``(n, C, H, W)`` uint8 pixels, ``n`` labels or None."""
        n = len(pixels)
        columns: list[pa.Array] = [
            pa.array(np.asarray(ids) if not isinstance(ids, list) else ids, pa.string()),
            _pixels_list(np.asarray(pixels).reshape(n, -1)),
        ]
        if self.labels:
            columns.append(pa.array(np.asarray(labels, dtype=np.int64), pa.int64()))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        path = join_path(self.base, f"{self.prefix}-{len(self.paths):05d}.parquet")
        if self.local:
            tmp = join_path(self.base, f".{Path(path).name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp, filesystem=self.fs)
            os.replace(tmp, path)
        else:
            pq.write_table(table, path, filesystem=self.fs)
        self.paths.append(path)
        self.rows.append(n)

    def finish(self) -> ShardSet:
        """Delete stale parts from an earlier, larger write and describe what was written."""
        pattern = re.compile(rf"{re.escape(self.prefix)}-\d{{5,}}\.parquet$")
        written = set(self.paths)
        invalidate_cache(self.fs)
        for info in self.fs.get_file_info(pafs.FileSelector(self.base)):
            name = info.path.rsplit("/", 1)[-1]
            if pattern.match(name) and info.path not in written:
                self.fs.delete_file(info.path)
        if not self.paths or sum(self.rows) == 0:
            raise DataError(f"empty data set: nothing written to {self.uri}")
        return ShardSet(
            paths=tuple(self.paths),
            filesystem=self.fs,
            shape=self.shape,  # type: ignore[arg-type]
            classes=self.classes,
            num_rows=sum(self.rows),
            has_labels=self.labels,
            uri=self.uri,
            file_rows=tuple(self.rows),
        )


def row_bounds(n: int, rows_per_shard: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges of at most ``rows_per_shard`` rows covering ``n`` rows."""
    return [(i, min(i + rows_per_shard, n)) for i in range(0, n, rows_per_shard)]


def write_shards(
    out: str,
    ids: Sequence[str] | np.ndarray,
    pixels_uint8: np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
    classes: Sequence[str],
    *,
    rows_per_shard: int,
    storage: StorageConfig = DEFAULT_STORAGE,
    prefix: str = "part",
) -> ShardSet:
    """Write in-memory images as shards ``<out>/<prefix>-00000.parquet``, ...

    Args:
        out: Local directory or ``s3://bucket/prefix``.
        ids: One stable, unique string per row.
        pixels_uint8: ``(N, C, H, W)`` uint8 images.
        labels: Class indices per row, or None for unlabeled data.
        classes: Class names (stored as metadata).
        rows_per_shard: Rows per file (the last file may hold fewer).
        storage: How to reach ``s3://`` outputs.
        prefix: File name prefix; stale ``<prefix>-*.parquet`` files in ``out`` are removed.

    Raises:
        ValueError: Arrays of the wrong type or inconsistent lengths.
        DataError: Nothing to write.
    """
    pixels_uint8 = np.asarray(pixels_uint8)
    if pixels_uint8.dtype != np.uint8 or pixels_uint8.ndim != 4:
        raise ValueError(
            f"pixels must be uint8 (N, C, H, W), got {pixels_uint8.dtype} {pixels_uint8.shape}"
        )
    n = len(pixels_uint8)
    if len(ids) != n or (labels is not None and len(labels) != n):
        raise ValueError("ids, pixels and labels must have the same length")
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be >= 1")
    if n == 0:
        raise DataError(f"empty data set: no rows to write to {out}")
    ids_arr = np.asarray(ids, dtype=object)
    labels_arr = None if labels is None else np.asarray(labels, dtype=np.int64)
    writer = ShardWriter(
        out, storage, pixels_uint8.shape[1:], classes, labels=labels is not None, prefix=prefix
    )
    for lo, hi in row_bounds(n, rows_per_shard):
        writer.write(
            ids_arr[lo:hi], pixels_uint8[lo:hi], None if labels_arr is None else labels_arr[lo:hi]
        )
    return writer.finish()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The JSON manifest at ``path``, or None when missing or torn (then the caller rewrites)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write a manifest atomically (temp file + rename): it is written last, as the commit."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)
