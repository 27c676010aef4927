"""A detection data set as a pool the service scores: Parquet shards of ids and encoded images.

The scorer pool, the item store and the page read a pool as Parquet shards of encoded images
addressed by id, whatever the task. A detection set (COCO, YOLO or Hugging Face Parquet, see
:mod:`activestream.sources.detection`) becomes one: its images, byte for byte (no re-encoding,
each at its own size), under the ids its labels name, with the class names in the shards'
metadata. Its true boxes are not written: a pool is what people have not labeled yet (the
simulator and the demo's oracle read them from the set itself).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.detection import DetectionItem, DetectionSet, open_image
from activestream.sources.fs import DEFAULT_STORAGE, join_path, resolve_uri
from activestream.sources.shards import CLASSES_KEY, ShardSet, open_shards

#: Metadata key saying the shards hold a detection pool (its classes are object classes).
TASK_KEY = b"activestream.task"


def pool_schema(classes: Sequence[str]) -> pa.Schema:
    """``id`` (string) and ``image`` (binary, encoded), with the object classes as metadata."""
    return pa.schema(
        [pa.field("id", pa.string(), nullable=False), pa.field("image", pa.binary())],
        metadata={CLASSES_KEY: json.dumps(list(classes)).encode(), TASK_KEY: b"detection"},
    )


def write_detection_pool(
    data: DetectionSet,
    out: str,
    *,
    storage: StorageConfig = DEFAULT_STORAGE,
    rows_per_shard: int = 1024,
    prefix: str = "pool",
) -> ShardSet:
    """Write ``data``'s images as ``{out}/{prefix}-00000.parquet``, ...; the opened pool.

    Files are written whole (local ones under a hidden name, then renamed), so a reader never
    sees half a shard.

    Raises:
        DataError: Two images share an id (``a.png`` and ``a.jpg``, or the same name in two
            folders): a label naming it could not say which image it boxes.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, not {rows_per_shard}")
    seen: dict[str, str] = {}
    for item in data.items:
        if item.id in seen:
            raise DataError(
                f"two images have the id {item.id!r} ({seen[item.id]} and {item.source}): "
                "rename one, labels name images by id"
            )
        seen[item.id] = item.source
    fs, base = resolve_uri(out, storage)
    fs.create_dir(base, recursive=True)
    items: Sequence[DetectionItem] = data.items
    for n, start in enumerate(range(0, len(items), rows_per_shard)):
        chunk = items[start : start + rows_per_shard]
        write_images(
            out,
            f"{prefix}-{n:05d}.parquet",
            [item.id for item in chunk],
            [open_image(item, storage) for item in chunk],
            data.classes,
            storage=storage,
        )
    return open_shards(out, storage, classes=data.classes)


def write_images(
    out: str,
    name: str,
    ids: Sequence[str],
    images: Sequence[bytes],
    classes: Sequence[str],
    *,
    storage: StorageConfig = DEFAULT_STORAGE,
) -> None:
    """Encoded ``images`` under ``ids`` as the one shard ``{out}/{name}`` of a detection pool.

    Written whole (a local file under a hidden name, then renamed), so a reader listing the
    pool never sees half a shard: how a growing pool takes new images (Label Studio's tasks).
    """
    fs, base = resolve_uri(out, storage)
    fs.create_dir(base, recursive=True)
    table = pa.table(
        {"id": pa.array(list(ids), pa.string()), "image": pa.array(list(images), pa.binary())},
        schema=pool_schema(classes),
    )
    final = join_path(base, name)
    local = not out.startswith("s3://")
    target = join_path(base, f".{name}.tmp") if local else final
    with fs.open_output_stream(target) as handle:
        pq.write_table(table, handle, row_group_size=64)
    if local:
        fs.move(target, final)


def pool_task(shards: ShardSet) -> str:
    """``"detection"`` for a pool :func:`write_detection_pool` wrote, else ``"classification"``.

    Read from the first shard's footer (the metadata every shard carries), so the service
    can tell data from the other task before it builds any part for the configured one.
    """
    if shards.kind != "parquet" or not shards.paths:
        return "classification"
    metadata = pq.read_schema(shards.paths[0], filesystem=shards.filesystem).metadata or {}
    return "detection" if metadata.get(TASK_KEY) == b"detection" else "classification"


def detection_source(
    uri: str, *, storage: StorageConfig = DEFAULT_STORAGE
) -> tuple[str, bool] | None:
    """Where detection data at ``uri`` lies, and whether it is a pool already; None: classes.

    Reads listings and one Parquet footer, nothing more, so a command can tell what the data
    holds before it writes anything: ``uri`` or its ``pool/`` in COCO, YOLO or Hugging Face
    layout gives ``(that uri, False)``, a pool :func:`write_detection_pool` wrote ``(uri,
    True)``.
    """
    fs, base = resolve_uri(uri, storage)
    if fs.get_file_info(join_path(base, "pool")).type == pafs.FileType.Directory:
        uri, base = uri.rstrip("/") + "/pool", join_path(base, "pool")
    listing = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    names = {info.base_name for info in listing}
    shards = sorted(i.path for i in listing if i.path.endswith(".parquet"))
    schema = pq.read_schema(shards[0], filesystem=fs) if shards else None
    if schema is not None and (schema.metadata or {}).get(TASK_KEY) == b"detection":
        return uri, True
    coco_or_yolo = "annotations.json" in names or {"images", "labels"} <= names
    if not coco_or_yolo and (schema is None or "objects" not in schema.names):
        return None
    return uri, False


def serve_pool(uri: str, cache_dir: str, *, storage: StorageConfig = DEFAULT_STORAGE) -> str | None:
    """The pool ``serve`` reads for detection data at ``uri``, written once; None otherwise.

    ``uri`` (or its ``pool/``) in COCO, YOLO or Hugging Face layout becomes a pool under
    ``cache_dir``, named by a hash of the source, so a restarted service reads the same ids.
    A pool already in the service's layout (its shards say ``activestream.task``) is served
    where it lies; anything else (class data) gives None and is opened as before.
    """
    import hashlib

    from activestream.sources.detection import read_detection

    found = detection_source(uri, storage=storage)
    if found is None:
        return None  # class data: opened as before
    uri, ready = found
    if ready:
        return uri
    _, base = resolve_uri(uri, storage)
    out = join_path(cache_dir, f"detection-pool-{hashlib.sha256(base.encode()).hexdigest()[:12]}")
    out_fs, out_base = resolve_uri(out, storage)
    if out_fs.get_file_info(out_base).type == pafs.FileType.Directory:
        return out
    data = read_detection(uri, storage)
    if out.startswith("s3://"):  # shards land whole one by one; a rerun writes them again
        write_detection_pool(data, out, storage=storage)
        return out
    write_detection_pool(data, out + ".partial", storage=storage)
    out_fs.move(out_base + ".partial", out_base)  # a whole pool or none
    return out
