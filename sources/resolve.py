"""Resolution: turn the configured ``data.dataset`` into pool and test shard sets."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pyarrow.fs as pafs

from activestream.config import Config, StorageConfig
from activestream.errors import DataError
from activestream.sources.digits import write_digits_shards
from activestream.sources.fs import invalidate_cache, is_s3, join_path, resolve_uri
from activestream.sources.imagefolder import open_image_folder, scan_folder
from activestream.sources.shards import ShardSet, open_shards


def open_source(uri: str, storage: StorageConfig) -> ShardSet:
    """Open Parquet shards, or a folder of class sub-folders of images in place.

    One listing decides: a folder holding any Parquet file is a shard set (as before); one
    holding images in class sub-folders is opened where it lies
    (:func:`~activestream.sources.imagefolder.open_image_folder`), nothing converted or cached.
    Anything else goes to :func:`~activestream.sources.shards.open_shards`, whose errors say
    what is missing.
    """
    fs, base = resolve_uri(uri, storage)
    scan = scan_folder(fs, base, stop_at_parquet=True)
    if scan is not None and not scan.has_parquet and scan.files:
        return open_image_folder(uri, storage, scan=scan)
    return open_shards(uri, storage)


def resolve_dataset(cfg: Config) -> tuple[ShardSet, ShardSet | None]:
    """Turn ``cfg.data.dataset`` into ``(pool, test)`` shard sets.

    ``"digits"`` writes (once) and opens the bundled digits. Any other value is a local path or
    ``s3://`` prefix: when it holds ``pool/`` and ``test/`` (the layout :func:`write_digits_shards`
    and the synthetic generator write) both are returned, otherwise the whole source is the pool
    and there is no test split. A folder of class sub-folders with images (locally or on S3) is
    read in place, so opening it costs a listing, not a conversion; use
    :func:`~activestream.sources.imagefolder.image_folder_to_shards` to convert one explicitly.

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
    if is_s3(uri):
        fs, base = resolve_uri(uri, cfg.storage)
        invalidate_cache(fs)
        infos = fs.get_file_info([join_path(base, "pool"), join_path(base, "test")])
        if all(i.type == pafs.FileType.Directory for i in infos):
            pool_uri, test_uri = uri.rstrip("/") + "/pool", uri.rstrip("/") + "/test"
            return _same_classes(
                open_source(pool_uri, cfg.storage), open_source(test_uri, cfg.storage)
            )
        return open_source(uri, cfg.storage), None
    path = Path(uri).expanduser()
    if not path.exists():
        raise DataError(f"data set not found: {uri} (no such file or directory)")
    if (path / "pool").is_dir() and (path / "test").is_dir():
        return _same_classes(
            open_source(str(path / "pool"), cfg.storage),
            open_source(str(path / "test"), cfg.storage),
        )
    return open_source(str(path), cfg.storage), None


def _same_classes(pool: ShardSet, test: ShardSet) -> tuple[ShardSet, ShardSet]:
    """Give ``pool/`` and ``test/`` image folders one class list: the union of their folders.

    Each folder's classes are its own sub-folders, so a class missing from ``test/`` would
    otherwise shift every later label index there. The labels of an image set come from its
    paths and its class list alone, so widening the list re-labels nothing that was right.
    """
    if not (pool.images and test.images) or pool.classes == test.classes:
        return pool, test
    classes = tuple(sorted(set(pool.classes) | set(test.classes)))
    return replace(pool, classes=classes), replace(test, classes=classes)
