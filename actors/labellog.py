"""An append-only label log: the durable source of truth for every accepted label.

Records are JSON lines in segment files named by the offset of their first record
(``seg-000000000042.jsonl``), on local disk or ``s3://``. Locally the open segment is appended to,
flushed and ``fsync``-ed before :meth:`LabelLog.append` returns, and a new segment starts every
``segment_records`` records; on S3, where objects cannot be appended to, each append writes one
new segment object, which S3 makes visible atomically. A torn last line (a crash mid-write) is
dropped when the log is reopened, so a record is either wholly in the log or not at all.

Example:
    >>> import tempfile
    >>> log = LabelLog(tempfile.mkdtemp())
    >>> log.append([{"id": "a", "label": 1}, {"id": "b", "label": 0}])
    2
    >>> [(r["id"], r["label"]) for r in log.read(from_offset=1)]
    [('b', 0)]
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow.fs as pafs

from activestream.config import StorageConfig
from activestream.sources.fs import filesystem_for

_PREFIX, _SUFFIX = "seg-", ".jsonl"


def numbered_files(
    fs: pafs.FileSystem, root: str, prefix: str, suffix: str
) -> list[tuple[int, str]]:
    """``(number, path)`` of the files named ``<prefix><number><suffix>`` under ``root``, sorted."""
    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        name = info.base_name
        if info.type == pafs.FileType.File and name.startswith(prefix) and name.endswith(suffix):
            found.append((int(name[len(prefix) : -len(suffix)]), info.path))
    return sorted(found)


def _entry(record: Mapping[str, Any], now: float, annotator: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": record["id"]}
    if "boxes" in record:  # a detection label: the image's boxes, checked before logging
        entry["boxes"] = [
            {"bbox": list(b["bbox"]), "label": int(b["label"])} for b in record["boxes"]
        ]
    else:
        entry["label"] = int(record["label"])
    entry["time"] = record.get("time", now)
    entry["annotator"] = record.get("annotator", annotator)
    if record.get("relabel"):
        entry["relabel"] = True  # replaces an earlier label of the same id
    if record.get("retract"):
        entry["retract"] = True  # withdraws the id's label (its annotation was deleted)
    return entry


class LabelLog:
    """Durable, ordered label records addressed by offset (0 = first record ever).

    Args:
        uri: Local directory or ``s3://bucket/prefix`` holding the segments.
        storage: Credentials and endpoint for ``s3://``.
        segment_records: Records per local segment before a new one starts.
    """

    def __init__(
        self, uri: str, storage: StorageConfig | None = None, *, segment_records: int = 10_000
    ) -> None:
        self.uri = uri
        self.segment_records = segment_records
        self._fs, self._root = filesystem_for(uri, storage or StorageConfig())
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._lock = threading.Lock()
        self._fs.create_dir(self._root, recursive=True)
        self._segments = self._list_segments()
        self.offset = self._recover()
        self._handle: Any = None
        self._segment_count = 0

    # -- layout ---------------------------------------------------------------------------
    def _list_segments(self) -> list[tuple[int, str]]:
        return numbered_files(self._fs, self._root, _PREFIX, _SUFFIX)

    def _segment_path(self, first: int) -> str:
        return f"{self._root}/{_PREFIX}{first:012d}{_SUFFIX}"

    def _read_segment(self, path: str) -> tuple[list[dict[str, Any]], int]:
        """Records of one segment and the byte length of its complete lines."""
        with self._fs.open_input_stream(path) as stream:
            data = stream.read()
        records, good = [], 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn write: the record never made it
            records.append(json.loads(line))
            good += len(line)
        return records, good

    def _recover(self) -> int:
        if not self._segments:
            return 0
        first, path = self._segments[-1]
        records, good = self._read_segment(path)
        if self._local and good != os.path.getsize(path):
            with open(path, "r+b") as fh:  # drop the torn tail so appends continue cleanly
                fh.truncate(good)
                os.fsync(fh.fileno())
        return first + len(records)

    # -- writing --------------------------------------------------------------------------
    def append(self, records: Iterable[Mapping[str, Any]], annotator: str | None = None) -> int:
        """Write records durably; returns the log's new offset (records in the log)."""
        now = time.time()
        lines = [
            json.dumps(_entry(r, now, annotator), separators=(",", ":")) + "\n" for r in records
        ]
        if not lines:
            return self.offset
        payload = "".join(lines).encode()
        with self._lock:
            if self._local:
                self._append_local(payload, len(lines))
            else:
                path = self._segment_path(self.offset)
                with self._fs.open_output_stream(path) as out:
                    out.write(payload)
                self._segments.append((self.offset, path))
            self.offset += len(lines)
            return self.offset

    def _append_local(self, payload: bytes, count: int) -> None:
        if self._handle is None or self._segment_count >= self.segment_records:
            self._open_segment()
        end = self._handle.tell()
        try:
            self._handle.write(payload)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError:
            self._rewind(end)
            raise
        self._segment_count += count

    def _rewind(self, end: int) -> None:
        """Cut a failed write (a full or failing disk) back to the last whole record.

        Otherwise its partial line would sit in the middle of the segment once a later append
        succeeds, and that segment would no longer parse. The handle is reopened on the next
        append; if even the cut fails, reopening the log drops the torn tail as after a crash.
        """
        handle, self._handle = self._handle, None
        path = self._segments[-1][1]
        try:
            handle.close()
        except OSError:
            pass  # its buffer could not be written either: the cut below removes any part of it
        try:
            os.truncate(path, end)
        except OSError:
            pass

    def _open_segment(self) -> None:
        if self._handle is not None:
            self._handle.close()
        if self._segments and self._handle is None:
            first, path = self._segments[-1]
            existing = self.offset - first
            if existing < self.segment_records:  # reopen the last segment after a restart
                self._handle = open(path, "ab")  # noqa: SIM115 - kept open across appends
                self._segment_count = existing
                return
        path = self._segment_path(self.offset)
        self._handle = open(path, "ab")  # noqa: SIM115 - kept open across appends
        self._segments.append((self.offset, path))
        self._segment_count = 0
        fd = os.open(self._root, os.O_RDONLY)  # make the new file's name durable too
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the open local segment (appends reopen it)."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    # -- reading --------------------------------------------------------------------------
    def read(self, from_offset: int = 0) -> Iterator[dict[str, Any]]:
        """Records from ``from_offset`` on, in order."""
        with self._lock:
            segments = list(self._segments)
            end = self.offset
        for i, (first, path) in enumerate(segments):
            last = segments[i + 1][0] if i + 1 < len(segments) else end
            if last <= from_offset:
                continue
            records, _ = self._read_segment(path)
            for j, record in enumerate(records[: last - first]):
                if first + j >= from_offset:
                    yield record
