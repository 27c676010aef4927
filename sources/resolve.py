"""Resolution: turn the configured ``data.dataset`` into pool and test shard sets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow.fs as pafs

from activestream.config import Config
from activestream.errors import DataError
from activestream.sources.digits import write_digits_shards
from activestream.sources.fs import invalidate_cache, is_s3, join_path, resolve_uri
from activestream.sources.imagefolder import (
    IMAGE_SUFFIXES,
    folder_fingerprint,
    image_files,
    image_folder_to_shards,
)
from activestream.sources.shards import ShardSet, open_shards
from activestream.sources.writing import read_manifest, write_manifest


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
        classes, files = image_files(path)
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        out = Path(cache_dir) / f"images-{key}"
        manifest_path = out / "_SUCCESS.json"
        fingerprint = folder_fingerprint(path, files)
        manifest = read_manifest(manifest_path)
        if manifest is not None and manifest.get("fingerprint") == fingerprint:
            try:
                return open_shards(str(out))
            except DataError:
                pass  # damaged cache: convert again
        manifest_path.unlink(missing_ok=True)
        shards = image_folder_to_shards(str(path), str(out))
        write_manifest(manifest_path, {"source": str(path.resolve()), "fingerprint": fingerprint})
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
    if is_s3(uri):
        fs, base = resolve_uri(uri, cfg.storage)
        invalidate_cache(fs)
        infos = fs.get_file_info([join_path(base, "pool"), join_path(base, "test")])
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
