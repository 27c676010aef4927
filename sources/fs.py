"""Filesystems: one PyArrow filesystem for a local path or an ``s3://`` URI.

Everything that touches storage (shards, the label log, checkpoints) goes through
:func:`filesystem_for`, so a local run and a cluster on S3 share one code path. This module depends
on nothing but the storage config, which lets the label log and checkpoints use it without pulling
in the shard reader.

Example:
    >>> fs, path = filesystem_for("/tmp/x/../pool")
    >>> type(fs).__name__, path
    ('LocalFileSystem', '/tmp/pool')
    >>> join_path("bucket/pool", "part-00000.parquet"), is_s3("s3://bucket/pool")
    ('bucket/pool/part-00000.parquet', True)
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow.fs as pafs

from activestream.config import StorageConfig
from activestream.errors import DataError

DEFAULT_STORAGE = StorageConfig()  # frozen, so one shared default is safe


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names S3 (``s3://bucket/key``) rather than a local path."""
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


def resolve_uri(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """Map a user URI to (filesystem, path as that filesystem expects it)."""
    if is_s3(uri):
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
    return resolve_uri(uri, storage)


def invalidate_cache(fs: pafs.FileSystem) -> None:
    """Drop s3fs's listing cache so files written by other processes are seen."""
    handler = getattr(fs, "handler", None)
    inner = getattr(handler, "fs", None)
    if inner is not None and hasattr(inner, "invalidate_cache"):
        inner.invalidate_cache()


def join_path(base: str, *parts: str) -> str:
    """Join with ``/`` whatever the OS: S3 keys and Arrow paths use forward slashes."""
    return "/".join([base.rstrip("/"), *parts]) if base else "/".join(parts)


def is_visible(path: str) -> bool:
    """Skip hidden and bookkeeping files (``.tmp`` writes, ``_SUCCESS``)."""
    return not path.rsplit("/", 1)[-1].startswith((".", "_"))
