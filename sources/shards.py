"""The shard format, and reading it: footers to validate, Arrow batches to decode.

One format means one zero-copy path into the scorer: each shard is a Parquet file with

* ``id: string``: stable and unique, so a label given today still names the same row tomorrow;
* ``pixels: list<uint8>``: the flattened ``C*H*W`` image in row-major order;
* ``label: int64`` (nullable, optional): present for bundled, synthetic and image-folder data.

The schema metadata keys ``activestream.shape`` (JSON ``[C, H, W]``) and ``activestream.classes``
(JSON list of class names) travel with every file, so a reader needs nothing but the file.

A folder of images (``root/<class_name>/<file>.png``) is a second kind of set, read in place:
its "files" are the images themselves, one row each (see
:func:`activestream.sources.imagefolder.open_image_folder`), so a million JPEGs need no
conversion before the first pass. Every reader below handles both kinds and yields the same
normalized layout (``id``, image column, ``label``).

Opening a source reads only Parquet footers (cheap even on S3 with thousands of shards) and turns
every problem a user can fix (unreadable file, missing column, inconsistent shape, no rows) into a
:class:`~activestream.errors.DataError` naming the file. Pixels are decoded lazily, batch by
batch, either by Ray Data (:func:`read_ray_dataset`, streaming, for the scorer pool) or by plain
PyArrow (:func:`iter_batches`, :func:`load_arrays`, for baselines and small splits).

Example:
    >>> import numpy as np, tempfile
    >>> from activestream.sources.writing import write_shards
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

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import DEFAULT_STORAGE, invalidate_cache, is_visible, resolve_uri

if TYPE_CHECKING:
    import ray.data

SHAPE_KEY = b"activestream.shape"
CLASSES_KEY = b"activestream.classes"
_COLUMNS = ("id", "image", "label")
#: Images one Ray read task of an image folder reads: enough that a million files make about a
#: thousand tasks and blocks, not a million.
IMAGES_PER_READ_TASK = 1024
#: Images per table a read task yields, so a task never holds more than this many files' bytes
#: in one piece.
_IMAGES_PER_YIELD = 256
#: Concurrent file reads when many images are fetched at once (hides S3 and NFS latency).
_READ_THREADS = 16


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
        image_column: The column holding the images: ``pixels`` (decoded ``list<uint8>``) or an
            encoded column (``binary`` or ``struct<bytes, path>``).
        encoded: Whether ``image_column`` holds encoded images (PNG, JPEG, ...).
        has_ids: Whether the files carry an ``id`` column; without one, ids are
            ``<file name>#<row>``, stable as long as the files are not rewritten.
        string_labels: Whether ``label`` holds class names (mapped to indices of ``classes``).
        kind: ``"parquet"`` (shards) or ``"images"``: an image folder read in place, where each
            entry of ``paths`` is one image file (``file_rows`` all 1), the id is its POSIX path
            relative to ``root`` and the label the index of its class sub-folder in ``classes``.
        root: The folder an image set's ids are relative to, as ``filesystem`` expects it.
    """

    paths: tuple[str, ...]
    filesystem: pafs.FileSystem = field(compare=False)
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    num_rows: int
    has_labels: bool
    uri: str
    file_rows: tuple[int, ...] = ()
    image_column: str = "pixels"
    encoded: bool = False
    has_ids: bool = True
    string_labels: bool = False
    kind: Literal["parquet", "images"] = "parquet"
    root: str = ""

    @property
    def native(self) -> bool:
        """Stored in the project's own layout (id, decoded pixels, integer labels)."""
        return (
            self.kind == "parquet" and self.has_ids and not self.encoded and not self.string_labels
        )

    @property
    def images(self) -> bool:
        """An image folder read in place: one file per image, ids from relative paths."""
        return self.kind == "images"

    def image_ids(self, paths: Sequence[str]) -> list[str]:
        """Ids of image files of an image set: their POSIX paths relative to ``root``.

        Computed from the path alone, so an index over a million images needs no file read.
        """
        prefix = self.root.rstrip("/") + "/"
        return [p[len(prefix) :] if p.startswith(prefix) else p for p in paths]

    def image_labels(self, ids: Sequence[str]) -> pa.Array:
        """Class indices of image ids: the first path component names the class (-1: unknown)."""
        lookup = {name: i for i, name in enumerate(self.classes)}
        return pa.array([lookup.get(i.split("/", 1)[0], -1) for i in ids], pa.int64())

    def read_image_bytes(self, paths: Sequence[str]) -> pa.Array:
        """The bytes of image files, concurrently; null where a file cannot be read.

        A file that vanished or cannot be opened becomes a null row, which :meth:`decode` flags
        as not ok: one bad file must not stop a pass over millions.
        """

        def read(path: str) -> bytes | None:
            try:
                with self.filesystem.open_input_stream(path) as handle:
                    return handle.read()
            except (OSError, pa.ArrowException):
                return None

        if len(paths) <= 1:
            return pa.array([read(p) for p in paths], pa.binary())
        with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(paths))) as pool:
            return pa.array(list(pool.map(read, paths)), pa.binary())

    def read_images(
        self, paths: Sequence[str], columns: Sequence[str] = ("id", "image", "label")
    ) -> pa.Table:
        """Image files of an image set as a normalized table: ``id``, then what ``columns`` asks.

        ``image`` (or the image column's name) reads the files' bytes; ``id`` and ``label`` come
        from the paths alone. Takes paths rather than indices so a Ray read task can be handed
        just its own chunk of a set whose ``paths`` it never sees (see :func:`read_ray_dataset`).
        """
        ids = self.image_ids(paths)
        out: dict[str, Any] = {"id": pa.array(ids, pa.string())}
        if "image" in columns or self.image_column in columns:
            out[self.image_column] = self.read_image_bytes(paths)
        if "label" in columns:
            out["label"] = self.image_labels(ids)
        return pa.table(out)

    def generated_ids(self, index: int, start: int = 0, stop: int | None = None) -> pa.Array:
        """Ids of rows ``[start, stop)`` of file ``index`` for files without an ``id`` column."""
        stop = self.file_rows[index] if stop is None else stop
        if self.images:
            return pa.array(self.image_ids([self.paths[index]])[start:stop], pa.string())
        name = self.paths[index].rsplit("/", 1)[-1]
        return pa.array([f"{name}#{row}" for row in range(start, stop)], pa.string())

    def normalize(self, table: pa.Table, index: int, start: int = 0) -> pa.Table:
        """Map a slice of file ``index`` (rows from ``start``) to ``id, <image>[, label]``.

        Ids are generated when the file has none (for an image set: the relative path), and
        string labels become class indices (``-1`` for a name outside ``classes``), so every
        consumer sees one layout.
        """
        columns: dict[str, Any] = {}
        if "id" in table.column_names:
            columns["id"] = table.column("id")
        else:
            columns["id"] = self.generated_ids(index, start, start + table.num_rows)
        if self.image_column in table.column_names:
            columns[self.image_column] = table.column(self.image_column)
        if "label" in table.column_names:
            label = table.column("label")
            if self.string_labels:
                positions = pc.index_in(label, value_set=pa.array(self.classes, pa.string()))
                label = pc.fill_null(positions, -1).cast(pa.int64())
            columns["label"] = label
        return pa.table(columns)

    def read_file(self, index: int, columns: Sequence[str] = ("id", "image", "label")) -> pa.Table:
        """File ``index`` normalized (see :meth:`normalize`); ``image`` means the image column."""
        if self.images:
            return self.read_images([self.paths[index]], columns)
        wanted = [self.image_column if c == "image" else c for c in columns]
        with self.filesystem.open_input_file(self.paths[index]) as handle:
            pf = pq.ParquetFile(handle)
            present = [c for c in wanted if c in pf.schema_arrow.names]
            table = pf.read(columns=present)
        return self.normalize(table, index)

    def decode(self, column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Image column -> float32 ``(N, C, H, W)`` in [0, 1] and a per-row ``ok`` mask."""
        if self.encoded:
            from activestream.sources.images import decode_images

            return decode_images(column, self.shape)
        x = pixels_to_array(column, self.shape)
        return x, np.ones(len(x), dtype=bool)

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


def _list_parquet(fs: pafs.FileSystem, base: str, uri: str) -> list[str]:
    invalidate_cache(fs)
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
        if i.type == pafs.FileType.File and i.path.endswith(".parquet") and is_visible(i.path)
    )


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
    image_column: str = "pixels"
    encoded: bool = False
    string_labels: bool = False


def _image_column(schema: pa.Schema, path: str) -> tuple[str, bool]:
    """The column holding images: ``pixels`` (decoded) or the first encoded-image column."""
    from activestream.sources.images import is_encoded_type

    if "pixels" in schema.names:
        if not _is_list_of(schema.field("pixels").type, pa.uint8()):
            raise DataError(
                f"Parquet file {path}: column 'pixels' is {schema.field('pixels').type}, "
                "expected list<uint8> (flattened C*H*W bytes)"
            )
        return "pixels", False
    encoded = [f.name for f in schema if is_encoded_type(f.type)]
    if not encoded:
        raise DataError(
            f"Parquet file {path} has no image column: expected 'pixels' (list<uint8>) or an "
            f"encoded-image column (binary, or struct<bytes, path>); has {schema.names}"
        )
    return ("image" if "image" in encoded else encoded[0]), True


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
    image_column, encoded = _image_column(schema, path)
    if "id" in names and not pa.types.is_string(schema.field("id").type):
        if not pa.types.is_large_string(schema.field("id").type):
            raise DataError(f"Parquet file {path}: column 'id' must be a string column")
    label_min = label_max = None
    label_stats = "label" in names
    string_labels = False
    if "label" in names:
        label_type = schema.field("label").type
        string_labels = pa.types.is_string(label_type) or pa.types.is_large_string(label_type)
        if not (pa.types.is_integer(label_type) or string_labels):
            raise DataError(
                f"Parquet file {path}: column 'label' must hold class indices or class names"
            )
    if "label" in names and not string_labels:
        # Statistics are per leaf column: a nested image column before ``label`` (a struct of
        # bytes and path, as Hugging Face writes it) shifts the leaf index past the field's.
        col = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == "label")
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
    return _Footer(
        path,
        meta.num_rows,
        names,
        shape,
        classes,
        label_max,
        label_min,
        label_stats,
        image_column,
        encoded,
        string_labels,
    )


def _sniff_shape(fs: pafs.FileSystem, footer: _Footer) -> tuple[int, int, int]:
    """``(C, H, W)`` of the first decodable image: the size every other image is resized to."""
    from activestream.sources.images import encoded_bytes, image_info

    with fs.open_input_file(footer.path) as handle:
        pf = pq.ParquetFile(handle)
        for rg in range(pf.num_row_groups):
            column = pf.read_row_group(rg, columns=[footer.image_column]).column(0)
            for data in encoded_bytes(column).to_pylist():
                if not data:
                    continue
                try:
                    mode, h, w, _ = image_info(data)
                except Exception:  # noqa: BLE001 - a bad first image: try the next one
                    continue
                return (1 if mode == "L" else 3, h, w)
    raise DataError(f"Parquet file {footer.path}: no decodable image to learn the image size from")


def _string_classes(fs: pafs.FileSystem, footers: Sequence[_Footer]) -> tuple[str, ...]:
    """Sorted distinct class names of string labels over every file."""
    names: set[str] = set()
    for f in footers:
        with fs.open_input_file(f.path) as handle:
            col = pq.ParquetFile(handle).read(columns=["label"]).column("label")
        names.update(v for v in pc.unique(col).to_pylist() if v is not None)
    return tuple(sorted(names))


def _label_range(fs: pafs.FileSystem, footers: Sequence[_Footer]) -> tuple[int, int] | None:
    """(min, max) label over all files, from footer statistics when written, else the column."""
    lo: int | None = None
    hi: int | None = None
    for f in footers:
        if "label" not in f.names or f.string_labels:
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
    fs, base = resolve_uri(uri, storage)
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
    for attr, what in (
        ("image_column", "image column"),
        ("string_labels", "label type"),
        ("encoded", "image encoding"),
    ):
        values = {getattr(f, attr) for f in footers}
        if len(values) > 1:
            odd = next(f for f in footers if getattr(f, attr) != getattr(footers[0], attr))
            raise DataError(f"{uri}: {footers[0].path} and {odd.path} disagree on the {what}")
    has_ids = {"id" in f.names for f in footers}
    if len(has_ids) > 1:
        raise DataError(f"{uri}: some files have an 'id' column and some do not")
    first = footers[0]

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
    elif first.encoded:
        nonempty = next(f for f in footers if f.num_rows)
        final_shape = _sniff_shape(fs, nonempty)
    else:
        raise DataError(
            f"{uri}: Parquet metadata 'activestream.shape' is missing; pass the image shape "
            "(C, H, W) explicitly, or rewrite the shards with "
            "activestream.sources.writing.write_shards"
        )

    class_sets = {f.classes for f in footers if f.classes is not None}
    if len(class_sets) > 1:
        raise DataError(f"inconsistent 'activestream.classes' metadata across the files of {uri}")
    has_labels = all("label" in f.names for f in footers)
    if classes is not None:
        final_classes = tuple(str(c) for c in classes)
    elif class_sets:
        final_classes = class_sets.pop()
    elif first.string_labels:
        final_classes = _string_classes(fs, footers)
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
        image_column=first.image_column,
        encoded=first.encoded,
        has_ids=has_ids.pop(),
        string_labels=first.string_labels,
    )


def grow_parquet_shards(
    shards: ShardSet, storage: StorageConfig = DEFAULT_STORAGE
) -> ShardSet | None:
    """The same Parquet set plus files that appeared under its URI since it was opened.

    None if none. :func:`activestream.sources.pool.grow_shards` calls this for Parquet sets
    and :func:`~activestream.sources.imagefolder.grow_image_folder` for image folders.

    Production pools keep growing: new shards land under the pool prefix while the service
    runs. Only the listing and the new files' footers are read, so calling this every round is
    cheap even with thousands of files on S3. Files that vanished are kept (their rows may be
    labeled already); new files must match the set's layout.

    Raises:
        DataError: A new file is unreadable or has another layout (image column, ids, labels).
    """
    if shards.images:
        raise ValueError("an image folder grows with grow_image_folder, not as Parquet")
    fs, base = resolve_uri(shards.uri, storage)
    known = set(shards.paths)
    try:
        fresh = [p for p in _list_parquet(fs, base, shards.uri) if p not in known]
    except DataError:
        return None  # the prefix is briefly unreachable: keep scoring what we have
    if not fresh:
        return None
    footers = [_read_footer(fs, p) for p in fresh]
    for f in footers:
        if (f.image_column, f.encoded, f.string_labels, "id" in f.names) != (
            shards.image_column,
            shards.encoded,
            shards.string_labels,
            shards.has_ids,
        ):
            raise DataError(f"new file {f.path} does not match the layout of {shards.uri}")
        if f.shape is not None and f.shape != shards.shape:
            raise DataError(
                f"new file {f.path} has shape {list(f.shape)}, not {list(shards.shape)}"
            )
    footers = [f for f in footers if f.num_rows]
    if not footers:
        return None
    return replace(
        shards,
        paths=shards.paths + tuple(f.path for f in footers),
        file_rows=shards.file_rows + tuple(f.num_rows for f in footers),
        num_rows=shards.num_rows + sum(f.num_rows for f in footers),
    )


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
    """Requested columns as stored: ``image``/``pixels`` name the image column."""
    out = []
    for c in columns:
        if c in ("image", "pixels"):
            out.append(shards.image_column)
        elif c == "label" and not shards.has_labels:
            continue
        elif c == "id" and not shards.has_ids:
            continue
        else:
            out.append(c)
    return out


def _read_image_chunks(
    batch: pa.Table, shards: ShardSet, files: Any, rows: Any, columns: Sequence[str]
) -> Iterator[pa.Table]:
    """Ray Data UDF: read the image files of each chunk a row names, as normalized tables.

    A row is ``{"start", "stop"}``: a range of ``rows``, the positions of the set's paths in
    ``files`` (its distinct paths). Both arrays come from the object store by reference and
    map without a copy, so a task never deserializes more than the range it reads.
    """
    import ray

    names: pa.Array = ray.get(files)
    positions: np.ndarray = ray.get(rows)
    for start, stop in zip(
        batch.column("start").to_pylist(), batch.column("stop").to_pylist(), strict=True
    ):
        paths = names.take(pa.array(positions[start:stop])).to_pylist()
        for lo in range(0, len(paths), _IMAGES_PER_YIELD):
            yield shards.read_images(paths[lo : lo + _IMAGES_PER_YIELD], columns)


def _distinct_paths(paths: Sequence[str]) -> tuple[pa.Array, np.ndarray]:
    """The distinct paths, and the position of each path among them.

    A set scored 20 rounds in one stream repeats every path 20 times: its distinct paths are
    held once, and each repeat costs 4 bytes.
    """
    distinct = dict.fromkeys(paths)
    lookup = {p: i for i, p in enumerate(distinct)}
    dtype = np.int32 if len(lookup) < 2**31 else np.int64
    positions = np.fromiter(map(lookup.__getitem__, paths), dtype=dtype, count=len(paths))
    return pa.array(list(distinct), pa.string()), positions


def _image_chunk_size(n: int) -> int:
    """Images per read task: up to :data:`IMAGES_PER_READ_TASK`, fewer for small folders.

    A small folder is still cut into about 16 chunks (of at least 64 images), so it is read by
    several tasks at once rather than one.
    """
    return max(1, min(IMAGES_PER_READ_TASK, max(64, -(-n // 16))))


def _read_normalized(batch: dict[str, np.ndarray], shards: ShardSet, columns: Sequence[str]):
    """Ray Data UDF: read whole files (one index per row) as normalized tables, batch by batch."""
    for index in batch["file"].tolist():
        with shards.filesystem.open_input_file(shards.paths[index]) as handle:
            pf = pq.ParquetFile(handle)
            start = 0
            for rb in pf.iter_batches(batch_size=4096, columns=_existing(shards, columns)):
                table = pa.Table.from_batches([rb])
                yield shards.normalize(table, index, start)
                start += table.num_rows


def read_ray_dataset(
    shards: ShardSet,
    *,
    read_cpus: float = 0.25,
    read_concurrency: int | None = None,
    columns: Sequence[str] = ("id", "image"),
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

    Files without an ``id`` column or with string labels are read by a Ray Data task per file
    that generates ids and maps labels (:meth:`ShardSet.normalize`); the project's own layout
    goes through ``read_parquet`` untouched.

    An image folder is read by the same kind of UDF, but each row fed to ``from_items`` names a
    range of consecutive image files (:data:`IMAGES_PER_READ_TASK` at most), so a million files
    make about a thousand read tasks and blocks. The paths themselves go to the object store
    once, deduplicated (a streamed set may repeat the pool for many rounds), and the UDF gets
    the set without its ``paths``: no task deserializes the whole folder's listing. Files are
    only read (concurrently) here; decoding happens in the scorers.
    """
    import ray.data

    if shards.images:
        files, rows = _distinct_paths(shards.paths)
        size = _image_chunk_size(len(rows))
        chunks = [
            {"start": lo, "stop": min(lo + size, len(rows))} for lo in range(0, len(rows), size)
        ]
        kwargs = {
            "shards": replace(shards, paths=(), file_rows=(), num_rows=0),
            "files": ray.put(files),
            "rows": ray.put(rows),
            "columns": tuple(columns),
        }
        return ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks))).map_batches(
            _read_image_chunks,
            fn_kwargs=kwargs,
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=read_cpus,
            concurrency=read_concurrency,
        )

    if not shards.has_ids or (shards.string_labels and "label" in columns):
        items = [{"file": i} for i in range(len(shards.paths))]
        return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
            _read_normalized,
            fn_kwargs={"shards": shards, "columns": tuple(columns)},
            batch_size=1,
            batch_format="numpy",
            num_cpus=read_cpus,
            concurrency=read_concurrency,
        )

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
    columns: Sequence[str] = ("id", "image", "label"),
) -> Iterator[pa.RecordBatch]:
    """Stream normalized record batches of at most ``batch_size`` rows, file by file, no Ray.

    Only columns present in a file are requested, so unlabeled shards simply yield no ``label``.
    An image folder is read ``batch_size`` files at a time.
    """
    if shards.images:
        for lo in range(0, len(shards.paths), batch_size):
            table = shards.read_images(shards.paths[lo : lo + batch_size], columns)
            yield from table.to_batches()
        return
    for index, path in enumerate(shards.paths):
        with shards.filesystem.open_input_file(path) as handle:
            pf = pq.ParquetFile(handle)
            start = 0
            for rb in pf.iter_batches(batch_size=batch_size, columns=_existing(shards, columns)):
                table = shards.normalize(pa.Table.from_batches([rb]), index, start)
                start += rb.num_rows
                yield from table.to_batches()


def load_arrays(shards: ShardSet) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Load a small shard set fully into memory (held-out test split, simulator).

    Returns:
        ``(ids, x, labels)``: ids as an object array of ``str``, ``x`` float32 ``(N, C, H, W)``
        in ``[0, 1]``, labels int64 (``-1`` where null) or ``None`` when unlabeled.
    """
    if shards.images:
        paths = shards.paths
        tables = [
            shards.read_images(paths[i : i + 4096], _COLUMNS) for i in range(0, len(paths), 4096)
        ]
    else:
        tables = [shards.read_file(i, _COLUMNS) for i in range(len(shards.paths))]
    table = pa.concat_tables(tables, promote_options="default")
    ids = table.column("id").to_numpy(zero_copy_only=False).astype(object)
    x, _ = shards.decode(table.column(shards.image_column))
    labels = None
    if shards.has_labels:
        labels = table.column("label").fill_null(-1).to_numpy().astype(np.int64, copy=False)
    return ids, x, labels


def ground_truth(shards: ShardSet) -> dict[str, int]:
    """Id -> label of a labeled set: the oracle of simulations, benchmarks and tests.

    An image folder's labels come from its paths, so no image is read.
    """
    if shards.images:
        ids = shards.image_ids(shards.paths)
        return dict(zip(ids, shards.image_labels(ids).to_pylist(), strict=True))
    ids, _, labels = load_arrays(shards)
    if labels is None:
        raise DataError(f"{shards.uri}: no label column, so no ground truth")
    return dict(zip(ids.tolist(), labels.tolist(), strict=True))


def sample_ids(shards: ShardSet, n: int, seed: int = 0, *, max_files: int = 4) -> list[str]:
    """About ``n`` ids drawn at random from the pool, reading at most ``max_files`` id columns.

    For the queries asked before the first scoring round: files are drawn with probability
    proportional to their rows, then ids uniformly within them, so a pool of a million items
    costs a few small column reads, not a scan. Image folders need no read at all (the id is
    the path).

    Example:
        >>> import tempfile
        >>> from activestream.sources.digits import write_digits_shards
        >>> pool, _ = write_digits_shards(tempfile.mkdtemp(), shards=3)
        >>> ids = sample_ids(pool, 10, seed=1)
        >>> len(ids), len(set(ids))
        (10, 10)
    """
    rng = np.random.default_rng(seed)
    files = len(shards.paths)
    if n <= 0 or files == 0:
        return []
    if shards.images:
        picks = rng.choice(files, size=min(n, files), replace=False)
        return shards.image_ids([shards.paths[i] for i in picks])
    rows = np.asarray(shards.file_rows or [1] * files, dtype=np.float64)
    chosen = rng.choice(files, size=min(max_files, files), replace=False, p=rows / rows.sum())
    ids = np.concatenate(
        [
            shards.read_file(int(f), columns=("id",)).column("id").to_numpy(zero_copy_only=False)
            for f in chosen
        ]
    )
    return [str(i) for i in rng.choice(ids, size=min(n, len(ids)), replace=False)]
