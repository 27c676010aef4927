"""The label ledger: the one writer of the label log, and the trainer's source of labels.

Every label batch goes through :meth:`LabelLedger.add`: it is validated as a whole against the
labels already in the log, appended durably (``fsync`` locally, a finished upload on S3), and
only then answered. After that the ledger hands the records to the trainer, tagged with their
log offsets (in the service from a background thread, so an answer never waits on the trainer,
and batches that arrive together are handed on together). If the trainer is restarting, the
answer still goes out (the log is the source of truth) and the ledger reports itself degraded;
a background thread keeps asking the trainer how far it got and resends the log from there, so
a restarted trainer catches up on its own and holds every label exactly once.

Plain class: :class:`Downstream` is how it reaches the trainer and the query queue, so tests
drive it with in-process objects and the loop plugs in Ray actor handles.

Example:
    >>> import tempfile
    >>> from activestream.actors.items import ItemStore
    >>> from activestream.sources.digits import write_digits_shards
    >>> pool, _ = write_digits_shards(tempfile.mkdtemp(), shards=1)
    >>> ledger = LabelLedger(tempfile.mkdtemp(), items=ItemStore(pool))
    >>> ledger.start()
    >>> first = ItemStore(pool).ids()[0]
    >>> ledger.add([{"id": first, "label": 3}, {"id": first, "label": 3}])
    AddResult(accepted=1, duplicates=1, trainer_ok=True)
    >>> ledger.status()["log_offset"]
    1
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from activestream.actors.items import ItemStore
from activestream.actors.labellog import LabelLog
from activestream.actors.labels import AddResult, ClassLabels
from activestream.config import StorageConfig
from activestream.errors import StorageError
from activestream.sources.fs import check_storage


class Downstream(Protocol):
    """Where accepted labels go after they are durable."""

    def forward(self, start: int, records: list[dict[str, Any]]) -> int:
        """Give the trainer log records from offset ``start``; return its applied offset."""

    def trainer_offset(self) -> int:
        """Log records the trainer holds."""

    def retire(self, ids: Sequence[str], labels: Sequence[int] | None = None) -> None:
        """Tell the query queue never to hand these ids out again.

        ``labels``, when given, score the sampler that chose each id (``sampler: auto``).
        """

    def retired(self) -> int:
        """How many labeled ids the query queue knows."""


class LabelKind(Protocol):
    """What a label is for one task: how a batch is judged and how an answer is logged.

    :class:`~activestream.actors.labels.ClassLabels` for classes; the detection task's box
    labels have the same shape.
    """

    def check(self, records: Iterable[Any], *, known: Any, relabel: bool = False) -> Any:
        """``fresh``, ``changed`` (id -> answer) and ``duplicates`` of a batch, or raise."""

    def to_log(self, item_id: str, answer: Any, **fields: Any) -> dict[str, Any]:
        """The label-log record of an answer."""

    def from_log(self, record: Mapping[str, Any]) -> Any:
        """The answer a label-log record holds."""

    def queue_label(self, answer: Any) -> int | None:
        """The class the query queue is told of (None: the task has none)."""


class LabelLedger:
    """Validates, logs and forwards labels; rebuilds everything from the log on start.

    Args:
        uri: Local directory or ``s3://`` prefix of the label log.
        items: The pool, to reject unknown ids.
        storage: Credentials and endpoint for ``s3://``.
        downstream: Trainer and queue; None keeps labels in the log only.
        sync_seconds: How often the background thread checks the trainer's offset.
        resend_chunk: Records per resend call while a trainer catches up.
        background: Answer once a batch is durable and let the sync thread hand it to the
            trainer and the queue (in order, many batches per call under load), so a request
            never waits on the trainer; False forwards inside :meth:`add` (plain-class use).
        autostart: Call :meth:`start` at the end of construction (a restarted actor).
        probe_uris: Other locations the service writes (the checkpoint store): the sync thread
            writes a probe there every ``probe_seconds``, so ``status`` names a storage problem
            before a checkpoint is lost to it.
        probe_seconds: How often those locations are probed.
        kind: What a label is (checks, log records): :class:`~activestream.actors.labels.
            ClassLabels` of ``items`` by default; the detection task passes its box labels.
    """

    def __init__(
        self,
        uri: str,
        *,
        items: ItemStore,
        storage: StorageConfig | None = None,
        downstream: Downstream | None = None,
        sync_seconds: float = 1.0,
        resend_chunk: int = 5000,
        background: bool = False,
        autostart: bool = False,
        probe_uris: Sequence[str] = (),
        probe_seconds: float = 30.0,
        kind: LabelKind | None = None,
    ) -> None:
        self.uri = uri
        self.items = items
        self.kind = kind if kind is not None else ClassLabels(items)
        self.storage = storage
        self.downstream = downstream
        self.sync_seconds = sync_seconds
        self.resend_chunk = resend_chunk
        self.background = background and downstream is not None
        self._lock = threading.Lock()
        self._pending: list[tuple[int, list[dict[str, Any]]]] = []  # logged, not yet forwarded
        self._wake = threading.Event()
        self._drained = threading.Condition()
        self._handed = 0  # log offset up to which batches were handed on (background mode)
        self._labels: dict[str, Any] = {}  # id -> answer (a class, or boxes)
        self._log: LabelLog | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Not known until the first catch-up: a starting service says degraded until then.
        self.trainer_ok = downstream is None
        self.degraded_since: float | None = None
        self.resent = 0
        self.probe_uris = tuple(probe_uris)
        self.probe_seconds = probe_seconds
        self._problems: dict[str, str] = {}  # location -> why it cannot be written now
        if autostart:
            self.start()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Open the log (dropping a torn tail), rebuild the labels, start the sync thread."""
        if self._log is not None:
            return
        self._log = LabelLog(self.uri, self.storage)
        for record in self._log.read(0):
            if record.get("retract"):
                self._labels.pop(record["id"], None)
            else:
                self._labels[record["id"]] = self.kind.from_log(record)
        self._handed = self._log.offset  # the sync thread's catch-up covers what came before
        if self.downstream is not None:
            self._retire_all()
            self._thread = threading.Thread(target=self._sync, name="ledger-sync", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Hand on what is pending, stop the sync thread and close the log."""
        if self._thread is not None:
            self.flush(timeout=10)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._log is not None:
            self._log.close()

    @property
    def log(self) -> LabelLog:
        """The open label log."""
        if self._log is None:
            raise RuntimeError("LabelLedger.start() was not called")
        return self._log

    # -- writes ---------------------------------------------------------------------------
    def add(
        self,
        records: Iterable[Mapping[str, Any]],
        *,
        relabel: bool = False,
        annotator: str | None = None,
    ) -> AddResult:
        """Validate a batch, make it durable, then forward it; see the module docstring.

        Raises:
            LabelError: The batch was rejected as a whole; the log is unchanged.
        """
        records = list(records)
        with self._lock:
            checked = self.kind.check(records, known=self._labels.get, relabel=relabel)
            now = time.time()
            to_log = self.kind.to_log
            logged = [
                to_log(i, y, time=now, annotator=annotator) for i, y in checked.fresh.items()
            ] + [
                to_log(i, y, time=now, annotator=annotator, relabel=True)
                for i, y in checked.changed.items()
            ]
            answers = {**checked.fresh, **checked.changed}
            start = self.log.offset
            try:
                self.log.append(logged)  # durable from here on: the answer may leave
            except (StorageError, OSError) as err:  # nothing was added: the caller may retry
                raise self._storage_failed(self.uri, err) from None
            self._problems.pop(self.uri, None)
            self._labels.update(answers)
            if self.background and logged:
                self._pending.append((start, logged))
        if self.background:
            self._wake.set()
            return AddResult(
                accepted=len(logged), duplicates=checked.duplicates, trainer_ok=self.trainer_ok
            )
        ok = True
        if self.downstream is not None and logged:  # repeats were retired when first logged
            ok = self._forward(start, logged)
            self._call(self.downstream.retire, *self._retiring(logged))
        return AddResult(
            accepted=len(logged), duplicates=checked.duplicates, trainer_ok=ok and self.trainer_ok
        )

    def retract(self, ids: Iterable[str], *, annotator: str | None = None) -> int:
        """Withdraw the labels of ``ids`` (their annotations were deleted); returns how many.

        Logged like labels (``"retract": true`` records, durable before the answer), so the
        trainer stops training on them in log order and a rebuilt ledger forgets them too. Ids
        without a label are ignored, so a repeated delete changes nothing.
        """
        with self._lock:
            held = list(dict.fromkeys(i for i in ids if i in self._labels))
            if not held:
                return 0
            now = time.time()
            logged = [
                {"id": i, "label": -1, "time": now, "annotator": annotator, "retract": True}
                for i in held
            ]
            start = self.log.offset
            try:
                self.log.append(logged)
            except (StorageError, OSError) as err:
                raise self._storage_failed(self.uri, err) from None
            for item in held:
                del self._labels[item]
            if self.background:
                self._pending.append((start, logged))
        if self.background:
            self._wake.set()
        elif self.downstream is not None:
            self._forward(start, logged)
        return len(held)

    def _storage_failed(self, uri: str, err: BaseException) -> StorageError:
        """Remember why ``uri`` cannot be written (for ``status``) and say so in one line."""
        if isinstance(err, StorageError):
            why = str(err)
        else:
            why = f"{uri}: cannot write ({getattr(err, 'strerror', None) or err})"
        self._problems[uri] = why
        return StorageError(f"{why}; the labels were not logged, send them again")

    def probe_storage(self, uris: Sequence[str] | None = None) -> dict[str, str]:
        """Write a probe to each location (default: those with a problem); returns the problems.

        A location that takes a probe again is cleared, so ``status`` recovers on its own once
        the bucket, credentials or endpoint are fixed.
        """
        for uri in list(self._problems) if uris is None else uris:
            try:
                check_storage(uri, self.storage or StorageConfig(), write=True)
            except (StorageError, OSError) as err:
                self._storage_failed(uri, err)
            else:
                self._problems.pop(uri, None)
        return dict(self._problems)

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - a dead or restarting actor: the sync thread retries
            return None

    def _forward(self, start: int, logged: list[dict[str, Any]]) -> bool:
        if not logged:
            return True
        applied = self._call(self.downstream.forward, start, logged)  # type: ignore[union-attr]
        if applied is None:
            self._mark(ok=False)
            return False
        if applied < start + len(logged):
            return self.catch_up(applied)
        self._mark(ok=True)
        return True

    def catch_up(self, applied: int | None = None) -> bool:
        """Resend the log from the trainer's offset until it holds everything."""
        if self.downstream is None:
            return True
        if applied is None:
            applied = self._call(self.downstream.trainer_offset)
        while applied is not None and applied < self.log.offset:
            chunk = []
            for record in self.log.read(applied):
                chunk.append(record)
                if len(chunk) == self.resend_chunk:
                    break
            before = applied
            applied = self._call(self.downstream.forward, before, chunk)
            if applied is not None:
                self.resent += max(0, applied - before)
                if applied <= before:  # no progress: the trainer refuses; try again later
                    applied = None
        self._mark(ok=applied is not None)
        return applied is not None

    def _mark(self, *, ok: bool) -> None:
        if ok:
            self.degraded_since = None
        elif self.degraded_since is None:
            self.degraded_since = time.time()
        self.trainer_ok = ok

    def _retire_all(self) -> None:
        ids = list(self._labels)
        for i in range(0, len(ids), 10_000):
            self._call(self.downstream.retire, ids[i : i + 10_000])  # type: ignore[union-attr]

    def _drain(self) -> None:
        """Hand every batch logged since the last call to the trainer and the queue, in order."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        records = [r for _, batch in pending for r in batch]
        self._forward(pending[0][0], records)
        labeled = [r for r in records if not r.get("retract")]
        self._call(self.downstream.retire, *self._retiring(labeled))  # type: ignore[union-attr]
        with self._drained:
            self._handed = max(self._handed, pending[0][0] + len(records))
            self._drained.notify_all()

    def _retiring(self, logged: list[dict[str, Any]]) -> tuple[list[str], list[int] | None]:
        """The ids the queue must never ask again, and their classes where the task has them."""
        ids = [str(r["id"]) for r in logged]
        classes = [self.kind.queue_label(self.kind.from_log(r)) for r in logged]
        return ids, None if None in classes else classes  # type: ignore[return-value]

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every batch logged so far has been handed on (background mode).

        Handed on means offered to the trainer and the queue: a trainer that is down gets the
        records later from the sync thread's catch-up, as after any restart.
        """
        if not self.background:
            return True
        target = self.log.offset
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._handed < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._drained.wait(min(left, 0.1))
        return True

    def _sync(self) -> None:
        last = time.monotonic()
        probed = float("-inf")
        while not self._stop.is_set():
            self._wake.wait(self.sync_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            self._drain()
            if time.monotonic() - last < self.sync_seconds:
                continue
            last = time.monotonic()
            if self._problems:
                self.probe_storage()
            if self.probe_uris and last - probed >= self.probe_seconds:
                probed = last
                self.probe_storage(self.probe_uris)
            self.catch_up()
            retired = self._call(self.downstream.retired)  # type: ignore[union-attr]
            if retired is not None and retired < len(self._labels):  # the queue restarted
                self._retire_all()

    # -- reads ----------------------------------------------------------------------------
    def labels(self) -> dict[str, Any]:
        """Every label in the log, by id (the latest answer for relabeled ids)."""
        with self._lock:
            return dict(self._labels)

    def labels_of(self, ids: Iterable[str]) -> dict[str, Any]:
        """The label of each of ``ids`` that has one (a cheap subset of :meth:`labels`)."""
        with self._lock:
            return {i: self._labels[i] for i in ids if i in self._labels}

    def read(self, from_offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Log records from ``from_offset`` on (at most ``limit``)."""
        out = []
        for record in self.log.read(from_offset):
            if limit is not None and len(out) >= limit:
                break
            out.append(record)
        return out

    def status(self) -> dict[str, Any]:
        """Log size, label count, whether the trainer keeps up and what storage cannot take.

        ``storage_problem`` is None, or one line naming the location and the cause (label log
        first: it refuses labels, a checkpoint store only risks a longer replay).
        """
        problems = dict(self._problems)
        first = problems.pop(self.uri, None) or next(iter(problems.values()), None)
        return {
            "log_offset": self.log.offset,
            "labels": len(self._labels),
            "trainer_ok": self.trainer_ok,
            "degraded_since": self.degraded_since,
            "resent": self.resent,
            "storage_problem": first,
        }
