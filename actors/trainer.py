"""The online trainer: keeps model and optimizer in memory and learns as labels arrive.

:class:`Trainer` is a plain class (tests drive it directly); :func:`trainer_actor` wraps it as a
threaded Ray actor whose background thread trains whenever ``buffer_size`` labels wait, so
``add_labels`` always returns at once.

Training policies answer the seed's open question "train on everything or only on new data?":

* ``new_only``: every minibatch comes from the newly buffered labels (fast, forgets).
* ``replay``: each minibatch mixes new labels with a reservoir sample of older ones
  (``replay_ratio`` of it old; reservoir of ``replay_capacity``; with ``recency_half_life``
  newer old labels are drawn more often, so recent data counts more).
* ``full``: every minibatch is drawn from all labels so far (slow to grow, never forgets).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from actors.items import ItemStore
from actors.models import build_model, pick_device
from actors.weights import WeightsVersion, state_to_numpy
from pipelines.config import ModelConfig, TrainingConfig


class LabelError(ValueError):
    """A label batch was rejected as a whole; nothing from it was accepted."""


class UnknownId(LabelError):
    """A label names an id that is not in the pool."""


class LabelConflict(LabelError):
    """An id already labeled got a different label; the first answer stands."""


@dataclass(frozen=True)
class AddResult:
    """Outcome of one ``add_labels`` call."""

    accepted: int
    duplicates: int


class _Reservoir:
    """Uniform reservoir sample (Algorithm R) of older labels, each with its arrival index."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self._rng = rng
        self.rows: list[int] = []  # indices into the trainer's label arrays
        self.seen = 0

    def add(self, rows: Iterable[int]) -> None:
        for row in rows:
            self.seen += 1
            if len(self.rows) < self.capacity:
                self.rows.append(row)
            else:
                slot = int(self._rng.integers(self.seen))
                if slot < self.capacity:
                    self.rows[slot] = row

    def sample(self, n: int, half_life: float | None, now: int) -> np.ndarray:
        rows = np.asarray(self.rows, dtype=np.int64)
        weights = None
        if half_life is not None:
            w = 0.5 ** ((now - rows) / half_life)
            weights = w / w.sum()
        return self._rng.choice(rows, size=n, replace=True, p=weights)


class Trainer:
    """Online classifier trainer over a pool of items addressed by id.

    Args:
        training: Buffer size, policy and optimizer knobs.
        model: Architecture.
        items: Looks up the pixels of a labeled id; rejects unknown ids.
        seed: Seeds the initial weights and every sampling draw.
    """

    def __init__(
        self, *, training: TrainingConfig, model: ModelConfig, items: ItemStore, seed: int = 0
    ) -> None:
        self.training = training
        self.model_cfg = model
        self.items = items
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._torch_state = torch.Generator().manual_seed(seed).get_state()  # dropout draws
        self.device = pick_device()
        self.model = build_model(
            model.arch,
            shape=items.shape,
            num_classes=len(items.classes),
            dropout=model.dropout,
            seed=seed,
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=training.lr, weight_decay=training.weight_decay
        )
        self._loss = nn.CrossEntropyLoss()
        self._x: list[np.ndarray] = []  # (C, H, W) float32 per label, in arrival order
        self._y: list[int] = []
        self._ids: dict[str, int] = {}  # id -> row in _x/_y
        self._trained = 0  # rows [0, _trained) have been trained on; the rest is the buffer
        self._reservoir = _Reservoir(training.replay_capacity, self._rng)
        self.recent_hits: deque[bool] = deque(maxlen=100)
        self.version = 0
        self.train_steps = 0
        self.train_seconds = 0.0
        self._lock = threading.RLock()  # labels: _x, _y, _ids, _trained, reservoir
        self._model_lock = threading.RLock()  # model and optimizer

    # -- labels ---------------------------------------------------------------------------
    def add_labels(
        self, records: Iterable[Mapping[str, Any]], *, relabel: bool = False
    ) -> AddResult:
        """Validate a batch of ``{"id", "label"}`` records, then buffer the new ones.

        The batch is checked as a whole before anything is kept, so a bad record rejects the
        batch and leaves the trainer exactly as it was. A repeated (id, label) is a duplicate
        (idempotent). The same id with another label raises :class:`LabelConflict` (the first
        answer stands) unless ``relabel`` is set, which replaces the stored label: an
        annotator's undo. Before new labels are kept, the current model predicts them, which
        gives a running (prequential) accuracy on exactly the items people label.
        """
        records = list(records)
        num_classes = len(self.items.classes)
        fresh: dict[str, int] = {}
        changed: dict[str, int] = {}
        duplicates = 0
        with self._lock:
            for i, rec in enumerate(records):
                if not isinstance(rec, Mapping) or "id" not in rec or "label" not in rec:
                    raise LabelError(f"record {i}: expected an object with 'id' and 'label'")
                item_id, label = rec["id"], rec["label"]
                if not isinstance(item_id, str):
                    raise LabelError(f"record {i}: id must be a string, got {item_id!r}")
                if isinstance(label, bool) or not isinstance(label, int | np.integer):
                    raise LabelError(f"record {i}: label must be an integer, got {label!r}")
                if not 0 <= int(label) < num_classes:
                    raise LabelError(
                        f"record {i}: label {label} outside the class range 0..{num_classes - 1}"
                    )
                known = self._label_of(item_id, fresh)
                if known is not None and known != int(label) and relabel and item_id not in fresh:
                    changed[item_id] = int(label)
                    continue
                if known is not None:
                    if known != int(label):
                        raise LabelConflict(
                            f"record {i}: id {item_id!r} is already labeled {known}, got {label}"
                        )
                    duplicates += 1
                    continue
                fresh[item_id] = int(label)
            unknown = self.items.missing(list(fresh))
            if unknown:
                raise UnknownId(f"unknown id {unknown[0]!r}: not in the pool")
            pixels = self.items.get(list(fresh))
            for (item_id, label), x in zip(fresh.items(), pixels, strict=True):
                self._ids[item_id] = len(self._y)
                self._x.append(x)
                self._y.append(label)
            for item_id, label in changed.items():
                self._y[self._ids[item_id]] = label
        return AddResult(accepted=len(fresh) + len(changed), duplicates=duplicates)

    def _label_of(self, item_id: str, fresh: Mapping[str, int]) -> int | None:
        if item_id in fresh:
            return fresh[item_id]
        row = self._ids.get(item_id)
        return None if row is None else self._y[row]

    @property
    def labels_seen(self) -> int:
        """Labels held: trained on or still waiting in the buffer."""
        return len(self._y)

    @property
    def buffered(self) -> int:
        """Labels waiting for the next training step."""
        return len(self._y) - self._trained

    # -- training -------------------------------------------------------------------------
    def ready(self) -> bool:
        """Whether a full buffer waits."""
        return self.buffered >= self.training.buffer_size

    def step_if_ready(self) -> bool:
        """Train on the buffer when it is full; return whether a new version exists."""
        if not self.ready():
            return False
        self.partial_fit()
        return True

    def partial_fit(self) -> None:
        """One update on the buffered labels under the policy; continues from current state.

        Labels are snapshotted under the label lock and training runs under the model lock
        only, so ``add_labels`` never waits for a training step.
        """
        with self._lock:
            start, end = self._trained, len(self._y)
            if end == start:
                return
            x = torch.from_numpy(np.stack(self._x[:end]))
            y = torch.as_tensor(self._y[:end], dtype=torch.long)
        with self._model_lock, torch.random.fork_rng(devices=[]):
            # Dropout draws from torch's global generator: give it this trainer's own stream.
            torch.set_rng_state(self._torch_state)
            began = time.perf_counter()
            self._record_hits(x[start:end], y[start:end])
            self.model.train()
            cfg = self.training
            for _ in range(cfg.steps_per_update):
                rows = self._minibatch(start, end)
                xb = x[rows].to(self.device, non_blocking=True)
                yb = y[rows].to(self.device, non_blocking=True)
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._loss(self.model(xb), yb)
                loss.backward()
                self.optimizer.step()
                self.train_steps += 1
            self.model.eval()
            with self._lock:
                self._reservoir.add(range(start, end))
                self._trained = end
            self.version += 1
            self.train_seconds += time.perf_counter() - began
            self._torch_state = torch.get_rng_state()

    @torch.inference_mode()
    def _record_hits(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Prequential accuracy: the model's answer on new labels before it learns them."""
        self.model.eval()
        pred = self.model(x.to(self.device)).argmax(dim=1).cpu()
        self.recent_hits.extend((pred == y).tolist())

    def _minibatch(self, start: int, end: int) -> np.ndarray:
        cfg, rng = self.training, self._rng
        if cfg.policy == "full":
            return rng.integers(0, end, size=cfg.batch_size)
        new = rng.integers(start, end, size=cfg.batch_size)
        if cfg.policy == "new_only" or not self._reservoir.rows:
            return new
        n_old = int(round(cfg.batch_size * cfg.replay_ratio))
        old = self._reservoir.sample(n_old, cfg.recency_half_life, now=start)
        return np.concatenate([new[: cfg.batch_size - n_old], old])

    # -- inference and state --------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, classes) probabilities from the current model."""
        with self._model_lock:
            self.model.eval()
            logits = self.model(torch.as_tensor(x, dtype=torch.float32).to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
        """Accuracy on a held-out split."""
        correct = 0
        for i in range(0, len(y), batch_size):
            pred = self.predict_proba(x[i : i + batch_size]).argmax(axis=1)
            correct += int((pred == y[i : i + batch_size]).sum())
        return correct / max(len(y), 1)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The model's state dict as numpy arrays (what gets broadcast)."""
        with self._model_lock:
            return state_to_numpy(self.model)

    def checkpoint(self) -> bytes:
        """Everything needed to continue exactly here: weights, optimizer, labels, RNG streams.

        Pixels are not stored: they are looked up again by id from the pool on restore.
        """
        import io

        with self._model_lock, self._lock:
            state = {
                "format": 1,
                "version": self.version,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ids": list(self._ids),
                "labels": list(self._y),
                "trained": self._trained,
                "reservoir": list(self._reservoir.rows),
                "reservoir_seen": self._reservoir.seen,
                "rng": self._rng.bit_generator.state,
                "torch_rng": self._torch_state,
                "train_steps": self.train_steps,
            }
            buf = io.BytesIO()
            torch.save(state, buf)
            return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Continue from :meth:`checkpoint` bytes (same architecture and pool)."""
        import io

        state = torch.load(io.BytesIO(blob), map_location=self.device, weights_only=False)
        with self._model_lock, self._lock:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            ids = state["ids"]
            self._x = list(self.items.get(ids)) if ids else []
            self._y = list(state["labels"])
            self._ids = {item: row for row, item in enumerate(ids)}
            self._trained = state["trained"]
            self._reservoir.rows = list(state["reservoir"])
            self._reservoir.seen = state["reservoir_seen"]
            self._rng.bit_generator.state = state["rng"]
            self._torch_state = state["torch_rng"]
            self.version = state["version"]
            self.train_steps = state["train_steps"]
            self.model.eval()

    def model_info(self) -> dict[str, Any]:
        """Version, label count, architecture and class names (the ``GET /model`` answer)."""
        return {
            "version": self.version,
            "labels_seen": self.labels_seen,
            "arch": self.model_cfg.arch,
            "classes": list(self.items.classes),
            "train_steps": self.train_steps,
            "recent_accuracy": float(np.mean(self.recent_hits)) if self.recent_hits else None,
        }


def _lower_priority(nice: int) -> None:
    """Renice the calling thread (Linux: priorities are per thread) so serving comes first."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


class TrainerService(Trainer):
    """The trainer as a long-lived service: a background thread trains and publishes.

    Run under Ray as a threaded actor (see :func:`trainer_actor`) so ``add_labels`` and reads
    are served while the loop trains.

    Args:
        publish: Called with every new :class:`WeightsVersion` (e.g. a board's ``publish``).
        put: Stores the state dict and returns a reference (``ray.put`` under Ray).
        **kwargs: Passed to :class:`Trainer`.
    """

    def __init__(
        self,
        *,
        publish: Callable[[WeightsVersion], Any],
        put: Callable[[Any], Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._publish = publish
        self._put = put
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def publish_current(self) -> WeightsVersion:
        """Put the current weights once and announce them."""
        with self._model_lock:
            weights = WeightsVersion(
                version=self.version,
                labels_seen=self._trained,
                refs=[self._put(self.state_arrays())],
                published_at=time.time(),
            )
        self._publish(weights)
        return weights

    def start(self) -> int:
        """Publish version 0 and start the training thread; returns the version published."""
        if self._thread is None:
            self.publish_current()
            self._thread = threading.Thread(target=self._run, name="trainer", daemon=True)
            self._thread.start()
        return self.version

    def stop(self) -> None:
        """Stop the training thread after its current step."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def add_labels(  # noqa: D102
        self, records: Iterable[Mapping[str, Any]], *, relabel: bool = False
    ) -> AddResult:
        result = super().add_labels(records, relabel=relabel)
        if self.ready():
            self._wake.set()
        return result

    def flush(self) -> int:
        """Train on a partial buffer now; returns the version afterwards."""
        with self._model_lock:
            if self.buffered:
                self.partial_fit()
                self.publish_current()
            return self.version

    def _run(self) -> None:
        _lower_priority(self.training.nice)  # this thread only: requests keep their priority
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.step_if_ready():
                    self.publish_current()
            except Exception as err:  # noqa: BLE001 - keep serving; report through info()
                self.errors.append(f"{type(err).__name__}: {err}")

    def model_info(self) -> dict[str, Any]:  # noqa: D102
        info = super().model_info()
        info["buffered"] = self.buffered
        info["errors"] = self.errors[-5:]
        return info
