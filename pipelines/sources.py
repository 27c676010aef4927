"""Data sources: every pool, bundled or user-supplied, becomes one Parquet shard format.

One format means one zero-copy path into the scorer: each shard is a Parquet file with

* ``id: string``: stable and unique, so a label given today still names the same row tomorrow;
* ``pixels: list<uint8>``: the flattened ``C*H*W`` image in row-major order;
* ``label: int64`` (nullable, optional): present for bundled, synthetic and image-folder data.

The schema metadata keys ``activestream.shape`` (JSON ``[C, H, W]``) and ``activestream.classes``
(JSON list of class names) travel with every file, so a reader needs nothing but the file.

Opening a source reads only Parquet footers (cheap even on S3 with thousands of shards) and turns
every problem a user can fix (unreadable file, missing column, inconsistent shape, no rows) into a
:class:`~pipelines.errors.DataError` naming the file. Pixels are decoded lazily, batch by batch,
either by Ray Data (:func:`read_ray_dataset`, streaming, for the scorer pool) or by plain PyArrow
(:func:`iter_batches`, :func:`load_arrays`, for baselines and small splits).

Example:
    >>> import numpy as np, tempfile
    >>> out = tempfile.mkdtemp()
    >>> px = np.arange(2 * 4, dtype=np.uint8).reshape(2, 1, 2, 2)
    >>> shards = write_shards(out, ["a", "b"], px, [0, 1], ["no", "yes"], rows_per_shard=1)
    >>> len(shards.paths), shards.shape, shards.classes, shards.num_rows
    (2, (1, 2, 2), ('no', 'yes'), 2)
    >>> ids, x, y = load_arrays(open_shards(out))
    >>> list(ids), x.shape, y.tolist()
    (['a', 'b'], (2, 1, 2, 2), [0, 1])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.config import Config, StorageConfig
from pipelines.errors import DataError

if TYPE_CHECKING:
    import ray.data

SHAPE_KEY = b"activestream.shape"
CLASSES_KEY = b"activestream.classes"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_FORMAT_VERSION = 1
_COLUMNS = ("id", "pixels", "label")
DEFAULT_STORAGE = StorageConfig()  # frozen, so one shared default is safe


@dataclass(frozen=True)
class ShardSet:
    """A validated set of Parquet shards plus what a reader needs to decode them.

    It is small and picklable on purpose: it travels to Ray read tasks, so it holds paths and a
    filesystem object, never data.

    Attributes:
        paths: File paths as ``filesystem`` expects them (absolute locally, ``bucket/key`` on S3).
        filesystem: PyArrow filesystem that opens ``paths``.
        shape: ``(C, H, W)`` of every image.
        classes: Class names; a label is an index into this tuple. Empty when unknown.
        num_rows: Rows over all files.
        has_labels: Whether every file has a ``label`` column.
        uri: What the user gave, for messages and logs.
        file_rows: Rows per file, aligned with ``paths`` (lets callers rotate over a subset).
    """

    paths: tuple[str, ...]
    filesystem: pafs.FileSystem = field(compare=False)
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    num_rows: int
    has_labels: bool
    uri: str
    file_rows: tuple[int, ...] = ()

    def subset(self, indices: Sequence[int]) -> ShardSet:
        """Return the shards at ``indices`` only (e.g. to score a few shards per round).

        Raises:
            ValueError: If ``indices`` is empty or ``file_rows`` is unknown.
        """
        if not indices:
            raise ValueError("subset needs at least one shard index")
        if len(self.file_rows) != len(self.paths):
            raise ValueError("subset needs file_rows; open the shards with open_shards")
        return replace(
            self,
            paths=tuple(self.paths[i] for i in indices),
            file_rows=tuple(self.file_rows[i] for i in indices),
            num_rows=sum(self.file_rows[i] for i in indices),
        )


# --------------------------------------------------------------------------------------------
# Filesystems and paths
# --------------------------------------------------------------------------------------------


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_filesystem(storage: StorageConfig) -> pafs.FileSystem:
    """Build the PyArrow view of an s3fs filesystem from the storage config.

    s3fs (not PyArrow's native S3 client) is used so that custom endpoints, anonymous access and
    the usual AWS credential chain behave exactly as in every other fsspec tool.
    """
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            # Custom endpoints (MinIO, moto, Ceph) need some region to sign requests.
            client_kwargs["region_name"] = "us-east-1"
    fs = s3fs.S3FileSystem(
        anon=storage.anon, key=storage.key, secret=storage.secret, client_kwargs=client_kwargs
    )
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _resolve(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """Map a user URI to (filesystem, path as that filesystem expects it)."""
    if _is_s3(uri):
        base = uri[len("s3://") :].strip("/")
        if not base:
            raise DataError(f"s3 uri {uri!r} names no bucket")
        return s3_filesystem(storage), base
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def filesystem_for(
    uri: str, storage: StorageConfig = DEFAULT_STORAGE
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path for a local path or ``s3://`` URI."""
    return _resolve(uri, storage)


def _invalidate(fs: pafs.FileSystem) -> None:
    """Drop s3fs's listing cache so files written by other processes are seen."""
    handler = getattr(fs, "handler", None)
    inner = getattr(handler, "fs", None)
    if inner is not None and hasattr(inner, "invalidate_cache"):
        inner.invalidate_cache()


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if base else "/".join(parts)


def _visible(path: str) -> bool:
    """Skip hidden and bookkeeping files (``.tmp`` writes, ``_SUCCESS``)."""
    return not path.rsplit("/", 1)[-1].startswith((".", "_"))


def _list_parquet(fs: pafs.FileSystem, base: str, uri: str) -> list[str]:
    _invalidate(fs)
    try:
        info = fs.get_file_info(base)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"cannot reach data set {uri}: {err}") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"data set not found: {uri} (no such file or prefix)")
    if info.type == pafs.FileType.File:
        return [base]
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    try:
        infos = fs.get_file_info(selector)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"cannot list data set {uri}: {err}") from None
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(".parquet") and _visible(i.path)
    )


# --------------------------------------------------------------------------------------------
# Schema and metadata
# --------------------------------------------------------------------------------------------


def shard_schema(shape: Sequence[int], classes: Sequence[str], *, labels: bool = True) -> pa.Schema:
    """Build the Arrow schema (with metadata) that every writer in the project uses.

    Args:
        shape: ``(C, H, W)`` of the images.
        classes: Class names, index = label.
        labels: Whether to include the ``label`` column.
    """
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("pixels", pa.list_(pa.uint8()))]
    if labels:
        fields.append(pa.field("label", pa.int64()))
    meta = {
        SHAPE_KEY: json.dumps([int(v) for v in shape]).encode(),
        CLASSES_KEY: json.dumps([str(c) for c in classes]).encode(),
    }
    return pa.schema(fields, metadata=meta)


def _parse_shape(raw: Any, where: str) -> tuple[int, int, int]:
    try:
        values = json.loads(raw) if isinstance(raw, (bytes, str)) else list(raw)
        shape = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise DataError(f"{where}: shape {raw!r} is not a list of three integers") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise DataError(f"{where}: shape {list(shape)} must be three positive integers [C, H, W]")
    return shape  # type: ignore[return-value]


def _parse_classes(raw: bytes, where: str) -> tuple[str, ...]:
    try:
        values = json.loads(raw)
    except ValueError:
        raise DataError(f"{where}: 'activestream.classes' metadata is not valid JSON") from None
    if not isinstance(values, list):
        raise DataError(f"{where}: 'activestream.classes' metadata must be a JSON list")
    return tuple(str(v) for v in values)


@dataclass(frozen=True)
class _Footer:
    path: str
    num_rows: int
    names: tuple[str, ...]
    shape: tuple[int, int, int] | None
    classes: tuple[str, ...] | None
    label_max: int | None
    label_min: int | None
    label_stats: bool


def _is_list_of(t: pa.DataType, value: pa.DataType) -> bool:
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    ) and t.value_type == value


def _read_footer(fs: pafs.FileSystem, path: str) -> _Footer:
    """Read and check one file's footer; every failure names the file."""
    try:
        with fs.open_input_file(path) as handle:
            meta = pq.ParquetFile(handle).metadata
            schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"cannot read Parquet file {path}: {err}") from None
    names = tuple(schema.names)
    for column in ("id", "pixels"):
        if column not in names:
            raise DataError(f"Parquet file {path} has no {column!r} column (has {list(names)})")
    if not _is_list_of(schema.field("pixels").type, pa.uint8()):
        raise DataError(
            f"Parquet file {path}: column 'pixels' is {schema.field('pixels').type}, "
            "expected list<uint8> (flattened C*H*W bytes)"
        )
    label_min = label_max = None
    label_stats = "label" in names
    if "label" in names:
        if not pa.types.is_integer(schema.field("label").type):
            raise DataError(f"Parquet file {path}: column 'label' must be an integer column")
        col = names.index("label")
        for rg in range(meta.num_row_groups):
            stats = meta.row_group(rg).column(col).statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == meta.row_group(rg).num_rows:
                    continue  # an all-null row group says nothing about the classes
                label_stats = False
                break
            label_min = stats.min if label_min is None else min(label_min, stats.min)
            label_max = stats.max if label_max is None else max(label_max, stats.max)
    kv = schema.metadata or {}
    shape = _parse_shape(kv[SHAPE_KEY], f"Parquet file {path}") if SHAPE_KEY in kv else None
    classes = _parse_classes(kv[CLASSES_KEY], f"Parquet file {path}") if CLASSES_KEY in kv else None
    return _Footer(path, meta.num_rows, names, shape, classes, label_max, label_min, label_stats)


def _label_range(fs: pafs.FileSystem, footers: Sequence[_Footer]) -> tuple[int, int] | None:
    """(min, max) label over all files, from footer statistics when written, else the column."""
    lo: int | None = None
    hi: int | None = None
    for f in footers:
        if "label" not in f.names:
            continue
        if f.label_stats:
            fmin, fmax = f.label_min, f.label_max
        else:
            with fs.open_input_file(f.path) as handle:
                col = pq.ParquetFile(handle).read(columns=["label"]).column("label")
            mm = pc.min_max(col)
            fmin, fmax = mm["min"].as_py(), mm["max"].as_py()
        if fmin is not None:
            lo = fmin if lo is None else min(lo, fmin)
            hi = fmax if hi is None else max(hi, fmax)
    return None if lo is None or hi is None else (int(lo), int(hi))


def open_shards(
    uri: str,
    storage: StorageConfig = DEFAULT_STORAGE,
    *,
    shape: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> ShardSet:
    """Find and validate the Parquet shards behind ``uri`` by reading footers only.

    Args:
        uri: A local directory (every ``*.parquet`` below it, sorted), one local Parquet file,
            or ``s3://bucket/prefix``.
        storage: How to reach ``s3://`` URIs.
        shape: ``(C, H, W)`` for shards written without ``activestream.shape`` metadata.
        classes: Class names for shards written without ``activestream.classes`` metadata.

    Returns:
        The validated :class:`ShardSet`.

    Raises:
        DataError: The path does not exist, holds no rows, a file is unreadable or misses the
            ``id``/``pixels`` column, the files disagree on the shape, or the shape is unknown.
    """
    fs, base = _resolve(uri, storage)
    paths = _list_parquet(fs, base, uri)
    if not paths:
        raise DataError(f"empty data set: no .parquet files under {uri}")
    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        # Footers are tiny but each is a round trip on S3: read them concurrently.
        futures = [pool.submit(_read_footer, fs, p) for p in paths]
        footers = [f.result() for f in futures]
    num_rows = sum(f.num_rows for f in footers)
    if num_rows == 0:
        raise DataError(f"empty data set: {uri} has {len(paths)} Parquet file(s) but no rows")

    shapes = {f.shape for f in footers if f.shape is not None}
    if len(shapes) > 1:
        first = next(f for f in footers if f.shape is not None)
        other = next(f for f in footers if f.shape not in (None, first.shape))
        raise DataError(
            f"inconsistent image shapes in {uri}: {first.path} has {list(first.shape or ())}, "
            f"{other.path} has {list(other.shape or ())}"
        )
    if shapes:
        found = shapes.pop()
        if shape is not None and tuple(shape) != found:
            raise DataError(f"{uri}: shards have shape {list(found)}, but shape={list(shape)}")
        final_shape = found
    elif shape is not None:
        final_shape = _parse_shape(shape, f"shape for {uri}")
    else:
        raise DataError(
            f"{uri}: Parquet metadata 'activestream.shape' is missing; pass the image shape "
            "(C, H, W) explicitly, or rewrite the shards with pipelines.sources.write_shards"
        )

    class_sets = {f.classes for f in footers if f.classes is not None}
    if len(class_sets) > 1:
        raise DataError(f"inconsistent 'activestream.classes' metadata across the files of {uri}")
    has_labels = all("label" in f.names for f in footers)
    if classes is not None:
        final_classes = tuple(str(c) for c in classes)
    elif class_sets:
        final_classes = class_sets.pop()
    else:
        # No metadata: labels are class indices, so name classes 0..max(label).
        span = _label_range(fs, footers)
        if span is not None and span[0] < 0:
            raise DataError(f"{uri}: labels must be class indices >= 0, found {span[0]}")
        final_classes = tuple(str(i) for i in range(span[1] + 1)) if span else ()

    return ShardSet(
        paths=tuple(paths),
        filesystem=fs,
        shape=final_shape,
        classes=final_classes,
        num_rows=num_rows,
        has_labels=has_labels,
        uri=uri,
        file_rows=tuple(f.num_rows for f in footers),
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def pixels_to_array(pixels: pa.ListArray | pa.ChunkedArray, shape: Sequence[int]) -> np.ndarray:
    """Decode a ``pixels`` column into float32 ``(N, C, H, W)`` in ``[0, 1]``.

    The Arrow value buffer is viewed, not copied; the only allocation is the final float
    conversion, which the model needs anyway.

    Args:
        pixels: The ``list<uint8>`` column (an array or a chunked column of a table/batch).
        shape: ``(C, H, W)``.

    Raises:
        DataError: A row is null or does not hold exactly ``C*H*W`` values.

    Example:
        >>> col = pa.array([[0, 255, 51, 102]], pa.list_(pa.uint8()))
        >>> x = pixels_to_array(col, (1, 2, 2))
        >>> x.shape, x.dtype, x[0, 0, 0].tolist()
        ((1, 1, 2, 2), dtype('float32'), [0.0, 1.0])
    """
    c, h, w = (int(v) for v in shape)
    size = c * h * w
    arr = pixels.combine_chunks() if isinstance(pixels, pa.ChunkedArray) else pixels
    n = len(arr)
    if arr.null_count:
        raise DataError(f"'pixels' column has {arr.null_count} null row(s)")
    if n and not pa.types.is_fixed_size_list(arr.type):
        lengths = pc.list_value_length(arr)
        if not pc.all(pc.equal(lengths, size)).as_py():
            bad = pc.index(pc.equal(lengths, size), False).as_py()
            raise DataError(
                f"'pixels' row {bad} has {lengths[bad].as_py()} values, expected "
                f"{size} for shape [{c}, {h}, {w}]"
            )
    elif n and arr.type.list_size != size:
        raise DataError(f"'pixels' rows have {arr.type.list_size} values, expected {size}")
    values = arr.flatten()
    if values.type != pa.uint8():
        raise DataError(f"'pixels' values are {values.type}, expected uint8")
    flat = values.to_numpy(zero_copy_only=False)
    return np.divide(flat.reshape(n, c, h, w), 255, dtype=np.float32)


def _existing(shards: ShardSet, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c != "label" or shards.has_labels]


def read_ray_dataset(
    shards: ShardSet,
    *,
    read_cpus: float = 0.25,
    read_concurrency: int | None = None,
    columns: Sequence[str] = ("id", "pixels"),
    use_datasource_v2: bool = False,
) -> ray.data.Dataset:
    """Open a lazy, streaming Ray Dataset; nothing is read until it is iterated.

    Ray 2.60's default Parquet path (datasource V2) starts 32 footer-reader actors, i.e. 32 new
    worker processes, every time a dataset executes, to re-read footers that
    :func:`open_shards` has already validated. On a laptop that costs 7-20 s per scoring pass,
    so the V1 reader (one read task per file, reused workers) is chosen unless asked otherwise.

    Args:
        shards: What to read.
        read_cpus: Logical CPUs each read task reserves (small, so readers never starve actors).
        read_concurrency: Read tasks at once; each is a worker process holding a decoded shard,
            so this, not the pool size, bounds the memory of a pass. None: as many as fit.
        columns: Columns to read; ``label`` is dropped when the shards have none.
        use_datasource_v2: Use Ray's V2 reader (worth it for thousands of files on a cluster).
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    previous = ctx.use_datasource_v2
    ctx.use_datasource_v2 = use_datasource_v2  # read at call time only, so restore right after
    try:
        ds = ray.data.read_parquet(
            list(shards.paths),
            filesystem=shards.filesystem,
            num_cpus=read_cpus,
            concurrency=read_concurrency,
            # Paths are already explicit and validated: no extension filter, no hive columns.
            file_extensions=None,
            partitioning=None,
        )
    finally:
        ctx.use_datasource_v2 = previous
    # Ray 2.60 deprecates ``columns=``; ``select_columns`` is pushed down into the scan.
    return ds.select_columns(_existing(shards, columns))


def iter_batches(
    shards: ShardSet,
    batch_size: int,
    columns: Sequence[str] = ("id", "pixels", "label"),
) -> Iterator[pa.RecordBatch]:
    """Stream record batches of at most ``batch_size`` rows, file by file, without Ray.

    Only columns present in a file are requested, so unlabeled shards simply yield no ``label``.
    """
    for path in shards.paths:
        with shards.filesystem.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle)
            wanted = [c for c in columns if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=batch_size, columns=wanted)


def load_arrays(shards: ShardSet) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Load a small shard set fully into memory (held-out test split, simulator).

    Returns:
        ``(ids, x, labels)``: ids as an object array of ``str``, ``x`` float32 ``(N, C, H, W)``
        in ``[0, 1]``, labels int64 (``-1`` where null) or ``None`` when unlabeled.
    """
    tables = []
    for path in shards.paths:
        with shards.filesystem.open_input_file(path) as handle:
            tables.append(pq.ParquetFile(handle).read(columns=_existing(shards, _COLUMNS)))
    table = pa.concat_tables(tables, promote_options="default")
    ids = table.column("id").to_numpy(zero_copy_only=False).astype(object)
    x = pixels_to_array(table.column("pixels"), shards.shape)
    labels = None
    if shards.has_labels:
        labels = table.column("label").fill_null(-1).to_numpy().astype(np.int64, copy=False)
    return ids, x, labels


def ground_truth(shards: ShardSet) -> dict[str, int]:
    """Id -> label of a labeled set: the oracle of simulations, benchmarks and tests."""
    ids, _, labels = load_arrays(shards)
    if labels is None:
        raise DataError(f"{shards.uri}: no label column, so no ground truth")
    return dict(zip(ids.tolist(), labels.tolist(), strict=True))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


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
        self.fs, self.base = _resolve(out, storage)
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
        path = _join(self.base, f"{self.prefix}-{len(self.paths):05d}.parquet")
        if self.local:
            tmp = _join(self.base, f".{Path(path).name}.tmp-{os.getpid()}")
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
        _invalidate(self.fs)
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


def _bounds(n: int, rows_per_shard: int) -> list[tuple[int, int]]:
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
    for lo, hi in _bounds(n, rows_per_shard):
        writer.write(
            ids_arr[lo:hi], pixels_uint8[lo:hi], None if labels_arr is None else labels_arr[lo:hi]
        )
    return writer.finish()


# --------------------------------------------------------------------------------------------
# Bundled digits
# --------------------------------------------------------------------------------------------


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, path)


def write_digits_shards(
    out_dir: str, *, shards: int = 4, test_fraction: float = 0.25, seed: int = 0
) -> tuple[ShardSet, ShardSet]:
    """Write scikit-learn's 1797 real 8x8 digits as a stratified pool and test split.

    The split is fixed by ``seed`` so every run and every machine evaluates on the same test
    rows. A ``_SUCCESS.json`` manifest written last makes the call idempotent: when it matches
    the parameters, the existing shards are opened and nothing is rewritten.

    Args:
        out_dir: Local directory receiving ``pool/`` and ``test/``.
        shards: Number of pool files.
        test_fraction: Share of rows held out for testing.
        seed: Seed of the split.

    Returns:
        ``(pool, test)`` shard sets.
    """
    root = Path(out_dir)
    manifest_path = root / "_SUCCESS.json"
    params = {
        "dataset": "digits",
        "format": _FORMAT_VERSION,
        "shards": int(shards),
        "test_fraction": float(test_fraction),
        "seed": int(seed),
    }
    manifest = _read_manifest(manifest_path)
    if manifest is not None and manifest.get("params") == params:
        try:
            pool, test = open_shards(str(root / "pool")), open_shards(str(root / "test"))
        except DataError:
            pass  # damaged since it was written: rewrite below
        else:
            if (pool.num_rows, test.num_rows) == (manifest["pool_rows"], manifest["test_rows"]):
                return pool, test

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    pool_idx, test_idx = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=labels
    )
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    ids = np.array([f"digits-{i:05d}" for i in index], dtype=object)
    classes = [str(i) for i in range(10)]

    manifest_path.unlink(missing_ok=True)
    writer = ShardWriter(str(root / "pool"), StorageConfig(), (1, 8, 8), classes, labels=True)
    for part in np.array_split(pool_idx, min(shards, len(pool_idx))):
        writer.write(ids[part], images[part], labels[part])
    pool = writer.finish()
    test = write_shards(
        str(root / "test"),
        ids[test_idx],
        images[test_idx],
        labels[test_idx],
        classes,
        rows_per_shard=len(test_idx),
    )
    _write_manifest(
        manifest_path,
        {"params": params, "pool_rows": pool.num_rows, "test_rows": test.num_rows},
    )
    return pool, test


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def _image_files(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted class names and (relative POSIX path, label) of every image below them."""
    classes = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    files: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append((path.relative_to(root).as_posix(), label))
    return classes, files


def _folder_fingerprint(root: Path, files: Sequence[tuple[str, int]]) -> str:
    digest = hashlib.sha256()
    for rel, label in files:
        st = (root / rel).stat()
        digest.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def image_folder_to_shards(
    root: str,
    out: str,
    *,
    rows_per_shard: int = 4096,
    mode: Literal["L", "RGB"] | None = None,
    storage: StorageConfig = DEFAULT_STORAGE,
) -> ShardSet:
    """Convert ``root/<class_name>/<file>.png`` images into labeled shards.

    Ids are the POSIX paths relative to ``root`` (``"cat/001.png"``), so they stay the same
    across runs and machines and a labeler can find the original file.

    Args:
        root: Folder with one sub-folder per class (png, jpg, jpeg, bmp; any case).
        out: Output directory or ``s3://`` prefix.
        rows_per_shard: Images per file; only this many are decoded at a time.
        mode: ``"L"`` (1 channel) or ``"RGB"`` (3 channels); None picks ``"L"`` only when
            every image is grayscale.
        storage: How to reach an ``s3://`` output.

    Raises:
        DataError: No images, an unreadable image, or images of different sizes (the message
            names the first offending file).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L', 'RGB' or None, got {mode!r}")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes, files = _image_files(base)
    if not files:
        raise DataError(
            f"empty data set: no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders "
            f"of {root}"
        )

    size: tuple[int, int] | None = None
    gray = True
    for rel, _ in files:  # headers only: cheap, and fails before anything is written
        try:
            with Image.open(base / rel) as img:
                img_size, img_mode = img.size, img.mode
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"cannot read image {base / rel}: {err}") from None
        if size is None:
            size = img_size
        elif img_size != size:
            raise DataError(
                f"image {base / rel} is {img_size[0]}x{img_size[1]}, but earlier images are "
                f"{size[0]}x{size[1]}; all images must have the same size"
            )
        gray = gray and img_mode in _GRAYSCALE_MODES
    assert size is not None
    mode = mode or ("L" if gray else "RGB")
    channels = 1 if mode == "L" else 3
    shape = (channels, size[1], size[0])

    writer = ShardWriter(out, storage, shape, classes, labels=True)
    for lo, hi in _bounds(len(files), rows_per_shard):
        chunk = files[lo:hi]
        pixels = np.empty((len(chunk), *shape), dtype=np.uint8)
        for i, (rel, _) in enumerate(chunk):
            try:
                with Image.open(base / rel) as img:
                    arr = np.asarray(img.convert(mode), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                raise DataError(f"cannot decode image {base / rel}: {err}") from None
            pixels[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        writer.write([rel for rel, _ in chunk], pixels, [label for _, label in chunk])
    return writer.finish()


# --------------------------------------------------------------------------------------------
# Resolving the configured data set
# --------------------------------------------------------------------------------------------


def _has_images(root: Path) -> bool:
    return any(
        p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        for d in root.iterdir()
        if d.is_dir()
        for p in d.rglob("*")
    )


def _open_local_or_images(path: Path, cache_dir: str) -> ShardSet:
    """Open Parquet shards, or convert an image folder once into the cache and open that."""
    if path.is_dir() and not any(path.rglob("*.parquet")) and _has_images(path):
        classes, files = _image_files(path)
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        out = Path(cache_dir) / f"images-{key}"
        manifest_path = out / "_SUCCESS.json"
        fingerprint = _folder_fingerprint(path, files)
        manifest = _read_manifest(manifest_path)
        if manifest is not None and manifest.get("fingerprint") == fingerprint:
            try:
                return open_shards(str(out))
            except DataError:
                pass  # damaged cache: convert again
        manifest_path.unlink(missing_ok=True)
        shards = image_folder_to_shards(str(path), str(out))
        _write_manifest(manifest_path, {"source": str(path.resolve()), "fingerprint": fingerprint})
        return shards
    return open_shards(str(path))


def resolve_dataset(cfg: Config) -> tuple[ShardSet, ShardSet | None]:
    """Turn ``cfg.data.dataset`` into ``(pool, test)`` shard sets.

    ``"digits"`` writes (once) and opens the bundled digits. Any other value is a local path or
    ``s3://`` prefix: when it holds ``pool/`` and ``test/`` (the layout :func:`write_digits_shards`
    and the synthetic generator write) both are returned, otherwise the whole source is the pool
    and there is no test split. A local folder of class sub-folders with images is converted to
    shards under ``cfg.data.cache_dir`` first (reused while the images are unchanged).

    Raises:
        DataError: The source is missing, empty or malformed.
    """
    data = cfg.data
    if data.dataset == "digits":
        return write_digits_shards(
            os.path.join(data.cache_dir, "digits"),
            shards=data.shards,
            test_fraction=data.test_fraction,
            seed=0,
        )
    uri = data.dataset
    if _is_s3(uri):
        fs, base = _resolve(uri, cfg.storage)
        _invalidate(fs)
        infos = fs.get_file_info([_join(base, "pool"), _join(base, "test")])
        if all(i.type == pafs.FileType.Directory for i in infos):
            pool_uri, test_uri = uri.rstrip("/") + "/pool", uri.rstrip("/") + "/test"
            return open_shards(pool_uri, cfg.storage), open_shards(test_uri, cfg.storage)
        return open_shards(uri, cfg.storage), None
    path = Path(uri).expanduser()
    if not path.exists():
        raise DataError(f"data set not found: {uri} (no such file or directory)")
    if (path / "pool").is_dir() and (path / "test").is_dir():
        return (
            _open_local_or_images(path / "pool", data.cache_dir),
            _open_local_or_images(path / "test", data.cache_dir),
        )
    return _open_local_or_images(path, data.cache_dir), None
