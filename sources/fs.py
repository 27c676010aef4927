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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyarrow.fs as pafs

from activestream.config import StorageConfig
from activestream.errors import DataError, StorageError

DEFAULT_STORAGE = StorageConfig()  # frozen, so one shared default is safe


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names S3 (``s3://bucket/key``) rather than a local path."""
    return uri.startswith("s3://")


_T = TypeVar("_T")

# S3 error codes that mean "these credentials may not do this" rather than "no such key".
_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "403",
}


def _error_code(err: BaseException) -> str | None:
    """The S3 error code of ``err`` or of the botocore error s3fs translated it from."""
    seen: BaseException | None = err
    for _ in range(4):  # s3fs chains at most one level; stay bounded whatever happens
        if seen is None:
            return None
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code") or "") or None
        seen = seen.__cause__ or seen.__context__
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (botocore hides aiohttp's in a context)."""
    out: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and len(out) < 6 and seen not in out:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def storage_cause(err: BaseException, endpoint: str | None = None) -> str | None:
    """Why storage failed, in words a user can act on; None for any other error.

    A missing key stays what it was (a FileNotFoundError the callers already handle): only a
    missing bucket, refused credentials and an unreachable endpoint are storage failures.

    Args:
        err: What s3fs, botocore or aiohttp raised.
        endpoint: The configured endpoint URL, named when it cannot be reached.
    """
    import aiohttp
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    code = _error_code(err)
    if code == "NoSuchBucket":
        return "bucket does not exist (NoSuchBucket)"
    if code in _DENIED or (code is None and isinstance(err, PermissionError)):
        why = code or "PermissionError"
        return f"access denied ({why}): check storage.key/secret or AWS credentials"
    chain = _chain(err)
    if any(isinstance(e, NoCredentialsError | PartialCredentialsError) for e in chain):
        return "no credentials found: set storage.key/secret or AWS credentials"
    unreachable = (
        BotoConnectionError | aiohttp.ClientConnectionError | ConnectionError | TimeoutError
    )
    if any(isinstance(e, unreachable) for e in chain):
        return f"cannot reach the S3 endpoint {endpoint or 'of AWS'}"
    return None


class S3Handler(pafs.FSSpecHandler):
    """The PyArrow handler of an s3fs filesystem that names the URI and cause of a failure.

    Every caller of :func:`filesystem_for` (shard readers, Ray Data tasks, the label log,
    checkpoints) goes through these methods, so translating here turns a 60-line botocore
    traceback into one :class:`~activestream.errors.StorageError` everywhere at once. A path
    that is not found is checked against its bucket once, because s3fs reports a missing
    bucket as a missing key.

    Args:
        fs: The s3fs filesystem.
        endpoint: The configured endpoint URL (None: AWS), named in connection errors.
    """

    def __init__(self, fs: Any, endpoint: str | None = None) -> None:
        super().__init__(fs)
        self.endpoint = endpoint
        self._buckets: set[str] = set()  # buckets seen to exist: checked once per handler

    def _guard(self, path: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except StorageError:
            raise
        except Exception as err:
            cause = storage_cause(err, self.endpoint)
            if cause is None:
                raise
            raise StorageError(f"s3://{path.strip('/')}: {cause}") from None

    def check_bucket(self, path: str) -> None:
        """Raise StorageError when the bucket of ``path`` is missing, denied or unreachable."""
        bucket = path.strip("/").split("/", 1)[0]
        if bucket in self._buckets:
            return
        try:
            self.fs.call_s3("head_bucket", Bucket=bucket)
        except Exception as err:
            code = _error_code(err)
            if code in ("404", "NoSuchBucket") or (
                code is None and isinstance(err, FileNotFoundError)
            ):
                raise StorageError(
                    f"s3://{path.strip('/')}: bucket does not exist (NoSuchBucket)"
                ) from None
            cause = storage_cause(err, self.endpoint)
            if cause is None or code == "403":  # HEAD needs ListBucket: a 403 proves nothing
                return
            raise StorageError(f"s3://{path.strip('/')}: {cause}") from None
        self._buckets.add(bucket)

    def _missing(self, infos: Sequence[pafs.FileInfo]) -> None:
        for info in infos:
            if info.type == pafs.FileType.NotFound:
                self.check_bucket(info.path)
                return

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:  # noqa: D102
        infos = self._guard(
            paths[0] if paths else "", lambda: super(S3Handler, self).get_file_info(paths)
        )
        self._missing(infos)
        return infos

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:  # noqa: D102
        infos = self._guard(
            selector.base_dir, lambda: super(S3Handler, self).get_file_info_selector(selector)
        )
        if not infos:
            self.check_bucket(selector.base_dir)
        return infos

    def create_dir(self, path: str, recursive: bool) -> None:
        """Never create a bucket: a missing one is a mistyped name or a missing setup step."""
        self.check_bucket(path)
        self._guard(path, lambda: super(S3Handler, self).create_dir(path, recursive))

    def delete_dir(self, path: str) -> None:  # noqa: D102
        self._guard(path, lambda: super(S3Handler, self).delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:  # noqa: D102
        self._guard(path, lambda: super(S3Handler, self).delete_dir_contents(path, missing_dir_ok))

    def delete_file(self, path: str) -> None:  # noqa: D102
        self._guard(path, lambda: super(S3Handler, self).delete_file(path))

    def move(self, src: str, dest: str) -> None:  # noqa: D102
        self._guard(src, lambda: super(S3Handler, self).move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:  # noqa: D102
        self._guard(src, lambda: super(S3Handler, self).copy_file(src, dest))

    def _open(self, path: str, mode: str) -> Any:
        """A PyArrow file over the s3fs one whose reads, writes and close are translated too.

        On S3 an upload happens at ``close``, so a refused write surfaces there, not at open.
        """
        from pyarrow import PythonFile

        def open_() -> Any:
            if mode == "rb" and not self.fs.isfile(path):
                raise FileNotFoundError(path)
            return self.fs.open(path, mode=mode)

        try:
            raw = self._guard(path, open_)
        except FileNotFoundError:
            self.check_bucket(path)
            raise
        return PythonFile(_GuardedFile(raw, self, path), mode="r" if mode == "rb" else "w")

    def open_input_stream(self, path: str) -> Any:  # noqa: D102
        return self._open(path, "rb")

    def open_input_file(self, path: str) -> Any:  # noqa: D102
        return self._open(path, "rb")

    def open_output_stream(self, path: str, metadata: Any) -> Any:  # noqa: D102
        return self._open(path, "wb")

    def open_append_stream(self, path: str, metadata: Any) -> Any:  # noqa: D102
        return self._open(path, "ab")


class _GuardedFile:
    """An s3fs file whose method calls raise :class:`StorageError` for storage failures."""

    def __init__(self, raw: Any, handler: S3Handler, path: str) -> None:
        self._raw, self._handler, self._path = raw, handler, path

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._raw, name)
        if not callable(attr):
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._handler._guard(self._path, lambda: attr(*args, **kwargs))

        return guarded


def s3_filesystem(storage: StorageConfig) -> pafs.FileSystem:
    """Build the PyArrow view of an s3fs filesystem from the storage config.

    s3fs (not PyArrow's native S3 client) is used so that custom endpoints, anonymous access and
    the usual AWS credential chain behave exactly as in every other fsspec tool. botocore's own
    retries are off and s3fs makes ``storage.retries`` attempts with a short backoff, each
    connection bounded by ``storage.connect_timeout``: left at their defaults the two retry
    loops multiply, and a stopped endpoint takes minutes to report.
    """
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            # Custom endpoints (MinIO, moto, Ceph) need some region to sign requests.
            client_kwargs["region_name"] = "us-east-1"
    fs = s3fs.S3FileSystem(
        anon=storage.anon,
        key=storage.key,
        secret=storage.secret,
        client_kwargs=client_kwargs,
        config_kwargs={
            "connect_timeout": storage.connect_timeout,
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
    )
    fs.retries = storage.retries  # an attribute, not a constructor argument, in s3fs
    return pafs.PyFileSystem(S3Handler(fs, storage.endpoint_url))


def check_storage(uri: str, storage: StorageConfig, *, write: bool = False) -> None:
    """Fail fast, in one line, when ``uri`` cannot be reached (or written, with ``write``).

    A service checks its data and state locations before it starts any actor, so a missing
    bucket or refused credentials stop it at once with a message instead of a dead actor.

    Raises:
        StorageError: Naming ``uri`` and the cause.
    """
    fs, path = resolve_uri(uri, storage)
    if not write:
        fs.get_file_info([path])
        return
    probe = join_path(path, ".probe")
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"ok\n")
        fs.delete_file(probe)
    except OSError as err:  # a local disk: read-only, full, not ours
        raise StorageError(f"{uri}: cannot write ({err.strerror or err})") from None


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
