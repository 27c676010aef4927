"""Trainer checkpoints on local disk or ``s3://``: written whole or not at all.

Each checkpoint is one file named by the model version it holds (``ckpt-000000000042.pt``).
Locally it is written to a temporary name, ``fsync``-ed and renamed, so a crash leaves either
the old set or the new file complete; on S3 an object becomes visible only when its upload
finishes. :meth:`CheckpointStore.latest` falls back to an older checkpoint if the newest cannot
be read, and only the newest ``keep`` are kept.

Example:
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
    >>> for version in (1, 2, 3):
    ...     store.save(version, f"weights {version}".encode())
    >>> store.versions()
    [2, 3]
    >>> store.latest()
    b'weights 3'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs

from activestream.actors.labellog import numbered_files
from activestream.config import StorageConfig
from activestream.sources.fs import filesystem_for

_PREFIX, _SUFFIX = "ckpt-", ".pt"


class CheckpointStore:
    """Versioned checkpoint blobs under one directory or prefix.

    Only arguments are stored at construction; the filesystem is opened on first use, so the
    store can travel to an actor that restarts on another node.

    Args:
        uri: Local directory or ``s3://bucket/prefix``.
        storage: Credentials and endpoint for ``s3://``.
        keep: How many of the newest checkpoints survive a save.
    """

    def __init__(self, uri: str, storage: StorageConfig | None = None, *, keep: int = 3) -> None:
        self.uri = uri
        self.storage = storage or StorageConfig()
        self.keep = keep
        self._fs: Any = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "storage": self.storage, "keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["storage"], keep=state["keep"])  # type: ignore[misc]

    def _open(self) -> tuple[Any, str]:
        if self._fs is None:
            self._fs, self._root = filesystem_for(self.uri, self.storage)
            self._fs.create_dir(self._root, recursive=True)
        return self._fs, self._root

    def _listing(self) -> list[tuple[int, str]]:
        fs, root = self._open()
        return numbered_files(fs, root, _PREFIX, _SUFFIX)

    def versions(self) -> list[int]:
        """Versions with a checkpoint, oldest first."""
        return [version for version, _ in self._listing()]

    def save(self, version: int, blob: bytes) -> None:
        """Store ``blob`` as the checkpoint of ``version``, then drop all but the newest."""
        fs, root = self._open()
        path = f"{root}/{_PREFIX}{version:012d}{_SUFFIX}"
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = f"{path}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with fs.open_output_stream(path) as out:
                out.write(blob)
        for _, old in self._listing()[: -self.keep]:
            fs.delete_file(old)

    def latest(self, accept: Callable[[bytes], Any] | None = None) -> Any:
        """The newest checkpoint that can be read (and that ``accept`` does not reject).

        Args:
            accept: Called with each candidate's bytes, newest first; its return value is
                returned. An exception moves on to the next older checkpoint.

        Returns:
            ``accept(blob)`` (or the blob), or None when there is no usable checkpoint.
        """
        fs, _ = self._open()
        for _, path in reversed(self._listing()):
            try:
                with fs.open_input_stream(path) as stream:
                    blob = stream.read()
                return accept(blob) if accept is not None else blob
            except Exception:  # noqa: BLE001 - a damaged checkpoint: try the one before it
                continue
        return None
