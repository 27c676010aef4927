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

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from activestream.actors.checkpoints import CheckpointStore
from activestream.actors.cpus import keep_off_reserved
from activestream.actors.items import ItemStore
from activestream.actors.labels import AddResult, UnknownId, check_batch
from activestream.actors.net import build_net, head_features, load_init_weights
from activestream.actors.scorer import features_to_array
from activestream.actors.weights import WeightsVersion, state_to_numpy
from activestream.config import ModelConfig, StorageConfig, TrainingConfig
from activestream.models.head_fit import fit_linear_head
from activestream.models.parts import last_linear, pick_device
from activestream.sources.fs import DEFAULT_STORAGE
from activestream.sources.shards import ShardSet

RETRACTED = -100  # the label of a withdrawn row; the loss's ignore_index, so no step learns it


def update_steps(labels: int, buffer_size: int, steps_per_update: int) -> int:
    """Optimizer steps for one update on ``labels`` new labels: the same per label, bursts or not.

    ``max(steps_per_update, ceil(steps_per_update * labels / buffer_size))``

    >>> [update_steps(n, buffer_size=8, steps_per_update=20) for n in (3, 8, 12, 48)]
    [20, 20, 30, 120]
    """
    return max(steps_per_update, -(-steps_per_update * labels // buffer_size))


def _adamw(params: list[nn.Parameter], **kwargs: Any) -> torch.optim.Optimizer:
    """AdamW, with the fused kernel where the parameters' device has one.

    The same update rule as the default implementation (which loops over parameter tensors),
    in one kernel: on CPU it takes about a sixth off the digits CNN's training steps.
    """
    if params and params[0].device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a dtype or build without the fused kernel
            pass
    return torch.optim.AdamW(params, **kwargs)


class _Reservoir:
    """Uniform reservoir sample (Algorithm R) of older labels, each with its arrival index."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self._rng = rng
        self.rows: list[int] = []  # indices into the trainer's label arrays
        self.seen = 0
        # rows as an array and their draw weights: built once per update, not once per step
        self._array: np.ndarray | None = None
        self._weights: tuple[float | None, int, np.ndarray | None] | None = None

    def load(self, rows: list[int], seen: int) -> None:
        """Replace the sample (a checkpoint's)."""
        self.rows, self.seen = list(rows), seen
        self._array = self._weights = None

    def add(self, rows: Iterable[int]) -> None:
        self._array = self._weights = None
        for row in rows:
            self.seen += 1
            if len(self.rows) < self.capacity:
                self.rows.append(row)
            else:
                slot = int(self._rng.integers(self.seen))
                if slot < self.capacity:
                    self.rows[slot] = row

    def sample(self, n: int, half_life: float | None, now: int) -> np.ndarray:
        if self._array is None:
            self._array = np.asarray(self.rows, dtype=np.int64)
        rows = self._array
        if self._weights is None or self._weights[:2] != (half_life, now):
            weights = None
            if half_life is not None:
                w = 0.5 ** ((now - rows) / half_life)
                weights = w / w.sum()
            self._weights = (half_life, now, weights)
        return self._rng.choice(rows, size=n, replace=True, p=self._weights[2])


class Trainer:
    """Online classifier trainer over a pool of items addressed by id.

    Args:
        training: Buffer size, policy and optimizer knobs.
        model: Architecture.
        items: Looks up the pixels of a labeled id; rejects unknown ids.
        seed: Seeds the initial weights and every sampling draw.
    """

    def __init__(
        self,
        *,
        training: TrainingConfig,
        model: ModelConfig,
        items: ItemStore,
        seed: int = 0,
        storage: StorageConfig = DEFAULT_STORAGE,
    ) -> None:
        self.training = training
        self.model_cfg = model
        self.items = items
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._torch_state = torch.Generator().manual_seed(seed).get_state()  # dropout draws
        self.device = pick_device()
        net = build_net(model, stored_shape=items.shape, num_classes=len(items.classes), seed=seed)
        if model.init_weights:
            load_init_weights(net, model.init_weights, storage)
        self.model = net.to(self.device).eval()
        self.transform = model.transform()
        self.optimizer = _adamw(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=training.lr,
            weight_decay=training.weight_decay,
        )
        self._loss = nn.CrossEntropyLoss(ignore_index=RETRACTED)
        # Row -> what a training step needs of that label: the stored pixels as uint8
        # (C, H, W) (4x smaller than floats; the transform runs per minibatch), or with
        # ``train: head`` the frozen backbone's features, computed once. Only rows the policy
        # can still draw are held (the buffer and the replay reservoir; every row for
        # ``full``): the rest are fetched again by id from the pool if ever needed.
        self._x: dict[int, np.ndarray] = {}
        self._head = last_linear(self.model)
        self._y: list[int] = []
        self._ids: dict[str, int] = {}  # id -> row in _x/_y
        # Labels recorded but whose pixels are not fetched yet, id -> label in arrival order:
        # recording a label never reads storage (see ingest); fetch_pending turns the oldest
        # into rows, always after every existing row, so rows keep arrival order.
        self._pending: dict[str, int] = {}
        self._retracted: dict[int, str] = {}  # withdrawn rows (label RETRACTED) -> their id
        self._trained = 0  # rows [0, _trained) have been trained on; the rest is the buffer
        self.applied = 0  # label-log records [0, applied) are held (see ingest)
        self._reservoir = _Reservoir(training.replay_capacity, self._rng)
        self.recent_hits: deque[bool] = deque(maxlen=100)
        self.version = 0
        self.train_steps = 0
        self.cut_updates = 0  # updates the service's time box ended early
        self._owed: tuple[int, int, int] | None = None  # (start, end, steps) cut short
        self.pseudo_labels = 0  # unlabeled items the newest fit trained on (never labels)
        # (ids, features) of an unlabeled pool sample, for semi-supervised fits; drawn once
        self._unlabeled: tuple[list[str], np.ndarray] | None = None
        self.compute_unlabeled = True  # else wait for use_unlabeled (see TrainerService)
        self.train_seconds = 0.0
        self.last_train_seconds: float | None = None  # the newest update's prequential + steps
        self.last_train_cpu_seconds: float | None = None  # of which the training thread's CPU
        self._lock = threading.RLock()  # labels: _x, _y, _ids, _pending, _trained, reservoir
        self._model_lock = threading.RLock()  # model and optimizer
        # The item store (its id index and shard cache are not thread-safe). Whoever holds it
        # takes no other lock meanwhile, and nobody reads storage under the label lock, so a
        # slow read never holds up ingest.
        self._items_lock = threading.Lock()

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

        The pool is asked about the new ids outside the label lock, so that a slow store holds
        up this call only, never :meth:`ingest`; the batch is then checked again under the lock
        against whatever arrived meanwhile.
        """
        records = list(records)
        with self._lock:
            checked = check_batch(
                records, num_classes=len(self.items.classes), known=self._held, relabel=relabel
            )
        with self._items_lock:
            unknown = self.items.missing(list(checked.fresh))
        if unknown:
            raise UnknownId(f"unknown id {unknown[0]!r}: not in the pool")
        with self._lock:
            checked = check_batch(
                records, num_classes=len(self.items.classes), known=self._held, relabel=relabel
            )
            self._record(checked.fresh, checked.changed)
        return AddResult(
            accepted=len(checked.fresh) + len(checked.changed), duplicates=checked.duplicates
        )

    def ingest(self, start: int, records: list[Mapping[str, Any]]) -> int:
        """Apply label-log records ``start, start + 1, ...`` (already validated by the ledger).

        Records before :attr:`applied` are skipped (a resend after a restart), so nothing is
        held twice. A ``start`` past :attr:`applied` leaves a gap: nothing is applied and the
        caller resends from the returned offset.

        Nothing here reads storage: the labels and the offset are recorded at once and the
        pixels are fetched later by :meth:`fetch_pending` (the service's training thread), so
        a slow store cannot make the ledger's time-limited call time out. An id that has left
        the pool is dropped then, when it cannot be fetched.

        Returns:
            The log offset up to which this trainer holds every record.
        """
        with self._lock:
            if start > self.applied:
                return self.applied
            fresh: dict[str, int] = {}
            changed: dict[str, int] = {}
            for record in records[self.applied - start :]:
                item_id = str(record["id"])
                if record.get("retract"):  # in log order: what came before applies first
                    self._record(fresh, changed)
                    fresh, changed = {}, {}
                    self._retract(item_id)
                    continue
                label = int(record["label"])
                held = fresh.get(item_id, self._held(item_id))
                if held is None:
                    fresh[item_id] = label
                elif item_id in fresh:
                    fresh[item_id] = label
                elif held != label:
                    changed[item_id] = label
            self._record(fresh, changed)
            self.applied = max(self.applied, start + len(records))
            return self.applied

    def _pixels(self, ids: list[str]) -> np.ndarray:
        """Stored pixels of pool items ``ids``: a read of the item store, maybe from S3."""
        if not ids:
            return np.zeros((0, *self.items.shape), dtype=np.float32)
        with self._items_lock:
            return self.items.get(ids)

    def _kept(self, pixels: np.ndarray) -> list[np.ndarray]:
        """What the trainer keeps per label (see ``_x``) for stored ``pixels``."""
        if not len(pixels):
            return []
        if self.model_cfg.train == "head":
            with self._model_lock:
                x = torch.from_numpy(self.transform(pixels)).to(self.device)
                return list(head_features(self.model, x).float().cpu().numpy())
        return list(np.rint(pixels * 255).astype(np.uint8))

    def _inputs(self, rows: np.ndarray) -> torch.Tensor:
        """Kept rows -> what the model (or, with ``train: head``, the final layer) takes."""
        if self.model_cfg.train == "head":
            return torch.from_numpy(rows).to(self.device, non_blocking=True)
        x = self.transform(np.divide(rows, 255, dtype=np.float32))
        return torch.from_numpy(x).to(self.device, non_blocking=True)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.model_cfg.train == "head":
            if self._head.training and self.model_cfg.dropout > 0:
                x = nn.functional.dropout(x, self.model_cfg.dropout, training=True)
            return self._head(x)
        return self.model(x)

    def _record(self, fresh: Mapping[str, int], changed: Mapping[str, int]) -> None:
        """Hold new and changed labels, reading no storage (called under the label lock)."""
        for item_id, label in fresh.items():
            self._pending[item_id] = label
        for item_id, label in changed.items():
            if item_id in self._pending:  # not fetched yet: it becomes a row with this label
                self._pending[item_id] = label
            else:
                self._y[self._ids[item_id]] = label

    def fetch_pending(self, chunk: int = 4096) -> int:
        """Fetch the pixels of recorded labels and make them training rows, oldest first.

        Storage is read with the label lock released, so :meth:`ingest` and the reads go on
        meanwhile; labels recorded or relabeled during a read are taken as they are at the end
        of it. Ids no longer in the pool are dropped: they cannot be trained on. Safe to call
        from several threads: each installs only the oldest pending labels it fetched, so rows
        keep arrival order and no label becomes two rows.

        Only the labels pending when it is called are fetched: under a steady stream new ones
        arrive during every read, and chasing them would keep the caller from ever training.

        Returns:
            How many labels became rows.
        """
        made, handled = 0, 0
        with self._lock:
            todo = len(self._pending)
        while handled < todo:
            with self._lock:
                ids = list(itertools.islice(self._pending, min(chunk, todo - handled)))
            if not ids:
                return made
            with self._items_lock:
                missing = set(self.items.missing(ids))
            present = [item_id for item_id in ids if item_id not in missing]
            fetched = dict(zip(present, self._kept(self._pixels(present)), strict=True))
            progress = False
            with self._lock:
                for item_id in list(itertools.islice(self._pending, len(ids))):
                    if item_id in fetched:
                        row = len(self._y)
                        self._ids[item_id] = row
                        self._x[row] = fetched[item_id]
                        self._y.append(self._pending.pop(item_id))
                        made += 1
                    elif item_id in missing:  # the pool shrank: cannot train on it
                        del self._pending[item_id]
                    else:  # newer than this fetch (another thread took the older ones)
                        break
                    progress = True
                    handled += 1
            if not progress:
                return made
        return made

    def _retract(self, item_id: str) -> None:
        """Forget a label (its annotation was deleted): no step trains on it from now on.

        Its row stays (rows are positions) with the label :data:`RETRACTED`, which the loss
        ignores; a later label for the id becomes a new row.
        """
        if self._pending.pop(item_id, None) is not None:
            return
        row = self._ids.pop(item_id, None)
        if row is not None:
            self._y[row] = RETRACTED
            self._retracted[row] = item_id

    def _held(self, item_id: str) -> int | None:
        if item_id in self._pending:
            return self._pending[item_id]
        row = self._ids.get(item_id)
        return None if row is None else self._y[row]

    def held_labels(self) -> dict[str, int]:
        """Every label this trainer holds, by id (what it has seen, trained or buffered)."""
        with self._lock:
            held = {item_id: self._y[row] for item_id, row in self._ids.items()}
            held.update(self._pending)
            return held

    @property
    def labels_seen(self) -> int:
        """Labels held: trained on, still waiting in the buffer, or waiting for their pixels."""
        return len(self._y) - len(self._retracted) + len(self._pending)

    @property
    def buffered(self) -> int:
        """Labels waiting for the next training step (pixels fetched or not)."""
        return len(self._y) - self._trained + len(self._pending)

    @property
    def unfetched(self) -> int:
        """Labels held whose pixels are not fetched yet."""
        return len(self._pending)

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

    def partial_fit(self, *, seconds: float | None = None) -> None:
        """One update on the buffered labels under the policy; continues from current state.

        With ``seconds``, the optimizer steps stop once that much time has passed (after the
        first): the service's time box, so a backlog shortens each label's training instead of
        delaying the version. The head's convex fit is never cut short.

        Pixels of recorded labels are fetched first (see :meth:`fetch_pending`). Labels are
        snapshotted under the label lock and training runs under the model lock only, so
        ``add_labels`` never waits for a training step.

        The update takes every waiting label, with ``steps_per_update`` steps per
        ``buffer_size`` of them (never fewer than ``steps_per_update``): labels that arrive in a
        burst, while an earlier update trains, get as much training as labels that arrive one
        buffer at a time, and still cost one publication.
        """
        self.fetch_pending()
        with self._lock:
            start, end = self._trained, len(self._y)
            if end == start:
                return
            held = dict(self._x)  # a shallow snapshot: arrays are never modified in place
            y = torch.as_tensor(self._y[:end], dtype=torch.long)
        with self._model_lock, torch.random.fork_rng(devices=[]):
            # Dropout draws from torch's global generator: give it this trainer's own stream.
            torch.set_rng_state(self._torch_state)
            began, cpu_began = time.perf_counter(), time.thread_time()
            hits = self._prequential_hits(
                self._inputs(np.stack([held[r] for r in range(start, end)])), y[start:end]
            )
            hits = [h for h, label in zip(hits, y[start:end].tolist(), strict=True) if label >= 0]
            cfg = self.training
            if self._fits_head:
                self._fit_head(held, y)
                steps = 0
            else:
                self._train_mode()
                steps = update_steps(end - start, cfg.buffer_size, cfg.steps_per_update)
            deadline = None if seconds is None else began + seconds
            done = self._sgd_steps(start, end, steps, held, y, deadline)
            # Steps the time box cut are owed: an idle trainer takes them later (catch_up).
            self._owed = (start, end, steps - done) if done < steps else None
            self.model.eval()
            with self._lock:
                self.recent_hits.extend(hits)
                self._reservoir.add(range(start, end))
                self._trained = end
                self._forget()
                self.version += 1  # with _trained, under one lock: model_info reads both
            self.last_train_seconds = time.perf_counter() - began
            self.last_train_cpu_seconds = time.thread_time() - cpu_began
            self.train_seconds += self.last_train_seconds
            self._torch_state = torch.get_rng_state()

    def _sgd_steps(
        self,
        start: int,
        end: int,
        steps: int,
        held: Mapping[int, np.ndarray],
        y: torch.Tensor,
        deadline: float | None,
    ) -> int:
        """Up to ``steps`` minibatch steps on rows ``[start, end)`` (and replay); steps taken.

        With ``deadline`` (``time.perf_counter()``), stops once it has passed, after the first.
        """
        for step in range(steps):
            if deadline is not None and step and time.perf_counter() > deadline:
                self.cut_updates += 1  # the time box ended this update early
                return step
            rows = self._minibatch(start, end)
            xb = self._inputs(np.stack([held[r] for r in rows.tolist()]))
            yb = y[rows].to(self.device, non_blocking=True)
            if not bool((y[rows] != RETRACTED).any()):
                continue  # every row withdrawn: a loss over nothing is NaN
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(self._logits(xb), yb)
            loss.backward()
            self.optimizer.step()
            self.train_steps += 1
        return steps

    def catch_up(self, *, seconds: float | None = None) -> bool:
        """Take the steps a time-boxed update was cut short of; True when a version came of it.

        Run while no label waits: under load each label got fewer steps so versions kept
        coming; once the load drops, the last cut update's labels get the rest of theirs.
        """
        owed = self._owed
        if owed is None:
            return False
        start, end, steps = owed
        with self._lock:
            held = dict(self._x)
            y = torch.as_tensor(self._y[:end], dtype=torch.long)
        with self._model_lock, torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_state)
            began = time.perf_counter()
            self._train_mode()
            deadline = None if seconds is None else began + seconds
            done = self._sgd_steps(start, end, steps, held, y, deadline)
            self._owed = (start, end, steps - done) if done < steps else None
            self.model.eval()
            with self._lock:
                self.version += 1
            self._torch_state = torch.get_rng_state()
        return True

    @property
    def _semi_supervised(self) -> str:
        return self.training.semi_supervised_for(self.model_cfg)

    @property
    def _fits_head(self) -> bool:
        """Whether updates solve the head's convex problem on every label (``head_fit``)."""
        return self.model_cfg.train == "head" and self.training.head_fit == "lbfgs"

    def _fit_head(self, held: Mapping[int, np.ndarray], y: torch.Tensor) -> None:
        """Refit the final layer on the features of every label held (under the model lock).

        Warm started from the current weights, so a few new labels cost few iterations. With
        ``semi_supervised`` a second fit adds the confident pseudo-labels of an unlabeled
        sample of the pool at ``pseudo_weight``; they live only in this fit, never in the
        label log or in :meth:`held_labels`.
        """
        cfg = self.training
        x = torch.from_numpy(np.stack([held[r] for r in range(len(y))])).to(self.device)
        y = y.to(self.device)

        def fit(xs: torch.Tensor, ys: torch.Tensor, w: torch.Tensor | None = None) -> None:
            self.train_steps += fit_linear_head(
                self._head,
                xs,
                ys,
                l2=cfg.head_l2,
                class_weight=cfg.head_class_weight,
                sample_weight=w,
                max_iter=cfg.head_max_iter,
            )

        fit(x, y)
        unlabeled = self._unlabeled_features()
        if unlabeled is None or not len(unlabeled):
            self.pseudo_labels = 0
            return
        u = torch.from_numpy(unlabeled).to(self.device)
        pseudo, confidence = self._pseudo_labels(x, y, u)
        keep = confidence >= cfg.pseudo_threshold
        self.pseudo_labels = int(keep.sum())
        if self.pseudo_labels:
            weights = torch.cat(
                [torch.ones(len(y)), torch.full((self.pseudo_labels,), cfg.pseudo_weight)]
            ).to(self.device)
            fit(torch.cat([x, u[keep]]), torch.cat([y, pseudo[keep]]), weights)

    def _pseudo_labels(
        self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) class and confidence for each unlabeled row ``u``, by the configured method."""
        if self._semi_supervised == "pseudo_label":
            with torch.no_grad():
                probs = torch.softmax(self._head(u).float(), dim=1)
            confidence, pseudo = probs.max(dim=1)
            return pseudo, confidence
        from sklearn.semi_supervised import LabelSpreading

        keep = y >= 0
        xs = torch.cat([x[keep], u]).cpu().numpy()
        ys = np.concatenate([y[keep].cpu().numpy(), np.full(len(u), -1)])
        if len(np.unique(ys[ys >= 0])) < 2:
            return torch.zeros(len(u), dtype=torch.long), torch.zeros(len(u))
        spread = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=50).fit(xs, ys)
        dist = spread.label_distributions_[int(keep.sum()) :]
        pseudo = torch.as_tensor(spread.classes_[dist.argmax(1)], dtype=torch.long)
        return pseudo.to(u.device), torch.as_tensor(dist.max(1), dtype=torch.float32)

    def use_unlabeled(self, ids: Sequence[str], features: np.ndarray) -> None:
        """Take ``features`` (N, D) of pool items ``ids`` as the unlabeled sample.

        Where the pool's frozen features exist already (the simulator's cache, the service's
        feature files), the sample is drawn from them instead of running the backbone again.
        """
        rows = self._sample_rows(len(ids))
        sample = np.asarray(features[rows], dtype=np.float32)
        self._unlabeled = ([str(ids[r]) for r in rows], sample)

    def _sample_rows(self, n: int) -> np.ndarray:
        """Sorted rows of the unlabeled sample among ``n`` pool items (the same draw always)."""
        rng = np.random.default_rng([self.seed, 3])
        return np.sort(rng.choice(n, min(self.training.unlabeled_sample, n), replace=False))

    def _unlabeled_features(self) -> np.ndarray | None:
        """Features of the unlabeled pool sample (semi-supervised fits), labeled ones left out.

        The sample is drawn and its features computed once; items labeled since are skipped.
        """
        if self._semi_supervised == "none":
            return None
        if self._unlabeled is None and not self.compute_unlabeled:
            return None  # the service hands over a sample of the feature files instead
        if self._unlabeled is None:
            with self._items_lock:
                ids = self.items.ids()
            chosen = [str(i) for i in ids[self._sample_rows(len(ids))]]
            self._unlabeled = (chosen, np.stack(self._kept(self._pixels(chosen))))
        chosen, features = self._unlabeled
        with self._lock:
            free = [j for j, item in enumerate(chosen) if self._held(item) is None]
        return features[free]

    def _needed_rows(self) -> set[int]:
        """Rows the policy may still draw: the buffer, plus the reservoir, or every row.

        Every row for ``full`` and for the ``lbfgs`` head fit, which refits on every label.
        """
        if self.training.policy == "full" or self._fits_head:
            return set(range(len(self._y)))
        buffer = set(range(self._trained, len(self._y)))
        if self._owed is not None:  # a cut update's labels, until their steps are caught up
            buffer |= set(range(self._owed[0], self._owed[1]))
        return buffer | set(self._reservoir.rows) if self.training.policy == "replay" else buffer

    def _forget(self) -> None:
        """Drop what no future step can draw (called under the label lock)."""
        needed = self._needed_rows()
        for row in [r for r in self._x if r not in needed]:
            del self._x[row]

    @property
    def held_rows(self) -> int:
        """Labels whose pixels or features are in memory now."""
        return len(self._x)

    def _train_mode(self) -> None:
        """Training mode; with ``train: head`` only dropout switches to it.

        The frozen backbone stays in eval mode, so its batch-norm statistics never drift from
        the pretrained ones.
        """
        if self.model_cfg.train == "all":
            self.model.train()
            return
        self.model.eval()
        self._head.train()  # only the final layer learns; dropout on features in _logits

    @torch.inference_mode()
    def _prequential_hits(self, x: torch.Tensor, y: torch.Tensor) -> list[bool]:
        """Prequential accuracy: the model's answer on new labels before it learns them."""
        self.model.eval()
        pred = self._logits(x).argmax(dim=1).cpu()
        return (pred == y).tolist()

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
        """(N, C, H, W) stored pixels in [0, 1] -> (N, classes) probabilities, transform applied."""
        x = self.transform(np.asarray(x, dtype=np.float32))
        with self._model_lock:
            self.model.eval()
            logits = self.model(torch.from_numpy(x).to(self.device))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def features(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Stored pixels (N, C, H, W) -> the frozen backbone's features (N, D), batch by batch."""
        out = []
        with self._model_lock:
            for i in range(0, len(x), batch_size):
                xb = torch.from_numpy(self.transform(x[i : i + batch_size])).to(self.device)
                out.append(head_features(self.model, xb).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self._head.in_features), np.float32)

    @torch.inference_mode()
    def evaluate_features(self, f: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of the final layer on precomputed features (``train: head``)."""
        with self._model_lock:
            logits = self._head(torch.from_numpy(np.asarray(f, np.float32)).to(self.device))
            pred = logits.argmax(dim=1).cpu().numpy()
        return float((pred == np.asarray(y)).mean()) if len(y) else 0.0

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

    def _ids_by_row(self) -> list[str]:
        """The id of every row, withdrawn ones included (their pixels are fetched on restore)."""
        ids = [""] * len(self._y)
        for item, row in self._ids.items():
            ids[row] = item
        for row, item in self._retracted.items():
            ids[row] = item
        return ids

    def checkpoint(self) -> bytes:
        """Everything needed to continue exactly here: weights, optimizer, labels, RNG streams.

        Pixels are not stored: they are looked up again by id from the pool on restore. Labels
        whose pixels were not fetched yet are stored as such (``pending``): the log offset
        counts them, so they must come back with it.
        """
        import io

        with self._model_lock, self._lock:
            state = {
                "format": 2,  # 2: adds "pending"
                "version": self.version,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ids": self._ids_by_row(),
                "labels": list(self._y),
                "pending": list(self._pending.items()),
                "trained": self._trained,
                "reservoir": list(self._reservoir.rows),
                "reservoir_seen": self._reservoir.seen,
                "rng": self._rng.bit_generator.state,
                "torch_rng": self._torch_state,
                "train_steps": self.train_steps,
                "log_offset": self.applied,
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
            self._y = list(state["labels"])
            self._ids, self._retracted = {}, {}
            for row, item in enumerate(ids):
                if self._y[row] == RETRACTED:
                    self._retracted[row] = item
                else:
                    self._ids[item] = row
            self._trained = state["trained"]
            self._reservoir.load(state["reservoir"], state["reservoir_seen"])
            self._pending = dict(state.get("pending", []))  # format 1 had none
            rows = sorted(self._needed_rows())
            pixels = self._kept(self._pixels([ids[r] for r in rows]))
            self._x = dict(zip(rows, pixels, strict=True))
            self._rng.bit_generator.state = state["rng"]
            self._torch_state = state["torch_rng"]
            self.version = state["version"]
            self.train_steps = state["train_steps"]
            self.applied = state.get("log_offset", 0)
            self.model.eval()

    def prequential(self) -> tuple[int, list[bool]]:
        """Labels trained on so far and the newest (up to 100) prequential outcomes."""
        with self._lock:
            return self._trained, list(self.recent_hits)

    def model_info(self) -> dict[str, Any]:
        """Version, label count, architecture and class names (the ``GET /model`` answer)."""
        with self._lock:
            version, trained = self.version, self._trained
        return {
            "version": version,
            "labels_seen": self.labels_seen,
            "labels_trained": trained,
            "arch": self.model_cfg.factory,
            "classes": list(self.items.classes),
            "train_steps": self.train_steps,
            "pseudo_labels": self.pseudo_labels,
            "recent_accuracy": float(np.mean(self.recent_hits)) if self.recent_hits else None,
        }


def _lower_priority(nice: int) -> None:
    """Run the calling thread at nice ``nice`` (Linux: priorities are per thread), below serving.

    ``nice`` is where the thread ends up, not an increment: Ray starts every worker process at
    nice 15 already (``RAY_worker_niceness``), and adding 10 to that put training at 19, the
    floor, level with the scorers that are meant to yield to it and behind every other thread
    (on 2 cores, 0.3 s of training steps took 1 s of wall time). A thread at or past ``nice``
    already goes one step lower, so requests keep coming first; priority is never raised.
    """
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, max(nice, current + 1)))
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def training_nice(configured: int | None, *, serving_core_kept: bool) -> int:
    """The training thread's nice value: ``training.nice``, or the default for this machine.

    With cores kept for serving (``serve.reserved_cpus``) the thread shares its cores with the
    scorers and with whatever serving work lands there (the ledger and the queue may run on
    any core). At nice 10 it got 60% of its core against two nice-15 scorers: label -> version
    took 0.42 s at buffer 16 for 0.15 s of CPU. At nice 5 (scorers at 19) it took 0.18 s, as
    at normal priority (0.21 s), where under a label flood it took 0.8 of a core from the
    ledger and the queue. Sharing every core with serving, it stays at 10.

    >>> training_nice(None, serving_core_kept=True), training_nice(None, serving_core_kept=False)
    (5, 10)
    >>> training_nice(0, serving_core_kept=True)
    0
    """
    if configured is not None:
        return configured
    return 5 if serving_core_kept else 10


class TrainerService(Trainer):
    """The trainer as a long-lived service: a background thread trains and publishes.

    Run under Ray as a threaded actor so label calls and reads are served while it trains.
    With a checkpoint store it survives its own death: Ray restarts the actor (``max_restarts``),
    the constructor runs again with ``autostart`` and :meth:`start` loads the newest checkpoint;
    the label ledger then resends the log after the checkpoint's offset (see :meth:`ingest`).

    Args:
        publish: Called with every new :class:`WeightsVersion` (e.g. a board's ``publish``).
        put: Stores the state dict and returns a reference (``ray.put`` under Ray).
        checkpoints: Where checkpoints go; None keeps everything in memory only.
        checkpoint_every: Save a checkpoint every this many versions (and on :meth:`stop`).
        version_floor: The newest version already published (the board's), so a restarted
            trainer never announces a version number twice.
        autostart: Call :meth:`start` at the end of construction (how a restarted actor
            comes back on its own).
        **kwargs: Passed to :class:`Trainer`.
    """

    def __init__(
        self,
        *,
        publish: Callable[[WeightsVersion], Any],
        put: Callable[[Any], Any],
        checkpoints: CheckpointStore | None = None,
        checkpoint_every: int = 10,
        version_floor: Callable[[], int] | None = None,
        autostart: bool = False,
        reserved_cpus: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reserved_cpus = reserved_cpus  # cores the training thread stays off (serving's)
        self.compute_unlabeled = False  # the loop hands over its feature files' sample
        self._publish = publish
        self._put = put
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self._version_floor = version_floor
        self._wake = threading.Event()
        self._waiting_since: float | None = None  # when the oldest untrained label arrived
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.last_publish_seconds: float | None = None  # the newest update's put and publish
        self.last_update_version = -1  # the version those timings belong to
        self.published_version = -1  # the newest version handed to ``publish``
        self._published = threading.Lock()
        self.last_published: WeightsVersion | None = None
        self.recovered_from: int | None = None
        self.started_at = time.time()
        if autostart:
            self.start()

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
        with self._published:
            self.published_version = max(self.published_version, weights.version)
            self.last_published = weights
        return weights

    def latest_published(self) -> WeightsVersion | None:
        """The newest version this trainer published (a restarted weights board asks)."""
        with self._published:
            return self.last_published

    def recover(self) -> int | None:
        """Load the newest readable checkpoint; returns its version, or None without one.

        The version then moves past anything already published, so versions only grow.
        """
        if self.checkpoints is not None:
            self.recovered_from = self.checkpoints.latest(accept=self._restore_version)
        floor = self._version_floor() if self._version_floor is not None else -1
        if floor >= self.version:
            self.version = floor + 1
        return self.recovered_from

    def _restore_version(self, blob: bytes) -> int:
        self.restore(blob)
        return self.version

    def save_checkpoint(self) -> int | None:
        """Write a checkpoint of the current state now; returns its version."""
        if self.checkpoints is None:
            return None
        with self._model_lock:
            version, blob = self.version, self.checkpoint()
        self.checkpoints.save(version, blob)
        return version

    def start(self) -> int:
        """Recover, publish the current version and start training; returns that version."""
        if self._thread is None:
            self.recover()
            self.publish_current()
            self._thread = threading.Thread(target=self._run, name="trainer", daemon=True)
            self._thread.start()
        return self.version

    def stop(self) -> None:
        """Stop the training thread after its current step, then checkpoint."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.save_checkpoint()

    def add_labels(  # noqa: D102
        self, records: Iterable[Mapping[str, Any]], *, relabel: bool = False
    ) -> AddResult:
        result = super().add_labels(records, relabel=relabel)
        self._wake_if_ready()
        return result

    def ingest(self, start: int, records: list[Mapping[str, Any]]) -> int:  # noqa: D102
        applied = super().ingest(start, records)
        self._wake_if_ready()
        return applied

    def applied_offset(self) -> int:
        """Label-log records held (the ledger resends anything after this)."""
        return self.applied

    def _wake_if_ready(self) -> None:
        """Wake the training thread to fetch new labels' pixels, and to train on a full buffer."""
        if self._waiting_since is None and self.buffered:
            self._waiting_since = time.monotonic()
        if self._pending or self.ready():
            self._wake.set()

    def _due(self) -> bool:
        """A full buffer waits, or labels have waited ``publish_seconds`` for a version."""
        if self.ready():
            return True
        since = self._waiting_since
        return (
            since is not None
            and self.buffered > 0
            and time.monotonic() - since >= self.training.publish_seconds
        )

    def _catch_up(self) -> None:
        """With no label waiting, train what the time box owes and publish it."""
        if (
            self._owed is not None
            and self.buffered == 0
            and self.catch_up(seconds=self.training.update_seconds)
        ):
            began = time.perf_counter()
            self.publish_current()
            self.last_publish_seconds = time.perf_counter() - began

    def flush(self) -> int:
        """Train on a partial buffer now; returns the version afterwards."""
        with self._model_lock:
            if self.buffered:
                self._update()
            return self.version

    def _update(self) -> None:
        """Train on the buffer and publish the new version, timing both (see model_info).

        The steps are time-boxed (``training.update_seconds``); labels that arrive meanwhile
        start the next wait for ``publish_seconds``.
        """
        self._waiting_since = None
        self.partial_fit(seconds=self.training.update_seconds)
        if self.buffered:
            self._waiting_since = time.monotonic()
        began = time.perf_counter()
        self.publish_current()
        self.last_publish_seconds = time.perf_counter() - began
        self.last_update_version = self.version

    def _run(self) -> None:
        kept = keep_off_reserved(self.reserved_cpus) is not None  # this thread only
        _lower_priority(training_nice(self.training.nice, serving_core_kept=kept))
        while not self._stop.is_set():
            self._wake.wait(timeout=min(0.5, self.training.publish_seconds / 4))
            self._wake.clear()
            try:
                self.fetch_pending()  # storage is read here, never in ingest
                updated = False
                while not self._stop.is_set() and self._due():
                    self._update()
                    updated = True
                    if self.version % self.checkpoint_every == 0:
                        self.save_checkpoint()
                if not updated:  # an update publishes anyway: ask the board only when idle
                    self._catch_up()
                    self._ensure_published()
            except Exception as err:  # noqa: BLE001 - keep serving; report through info()
                self.errors.append(f"{type(err).__name__}: {err}")

    def _ensure_published(self) -> None:
        """Publish again when the board lacks the current version.

        A publication fails while the board's actor restarts, and a restarted board comes back
        empty; without this, scorers would follow nothing until the next label batch.
        """
        if self._version_floor is not None and self._version_floor() < self.version:
            self.publish_current()

    def use_unlabeled_files(self, features: ShardSet, max_files: int = 4) -> bool:
        """Draw the unlabeled sample from the pool's feature files (``train: head``), once.

        Reads the id and feature columns of at most ``max_files`` files, drawn by row count;
        until then semi-supervised fits train on labels only. Returns whether it read any.
        """
        if self._semi_supervised == "none" or self._unlabeled is not None:
            return False
        rng = np.random.default_rng([self.seed, 4])
        rows = np.asarray(features.file_rows or [1] * len(features.paths), dtype=np.float64)
        take = min(max_files, len(features.paths))
        files = rng.choice(len(features.paths), size=take, replace=False, p=rows / rows.sum())
        tables = [features.read_file(int(f), columns=("id", "image")) for f in sorted(files)]
        ids = [i for t in tables for i in t.column("id").to_pylist()]
        column = features.image_column
        values = np.concatenate([features_to_array(t.column(column)) for t in tables])
        self.use_unlabeled(ids, values)
        return True

    def model_info(self) -> dict[str, Any]:  # noqa: D102
        info = super().model_info()
        info["buffered"] = self.buffered  # the backlog: labels held, not trained on yet
        info["cut_updates"] = self.cut_updates
        info["unfetched"] = self.unfetched  # recorded; pixels still to be read from the pool
        info["errors"] = self.errors[-5:]
        info["log_offset"] = self.applied
        info["recovered_from"] = self.recovered_from
        # The newest update, trainer side: what of the label-to-model time is training.
        info["last_update_version"] = self.last_update_version
        info["last_train_seconds"] = self.last_train_seconds
        info["last_train_cpu_seconds"] = self.last_train_cpu_seconds  # less: waiting for a core
        info["last_publish_seconds"] = self.last_publish_seconds
        info["last_update_seconds"] = (
            None
            if self.last_train_seconds is None or self.last_publish_seconds is None
            else self.last_train_seconds + self.last_publish_seconds
        )
        info["pid"] = os.getpid()
        info["node"] = _node_id()
        return info


def _node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray): where the trainer was placed."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - diagnostics only
        return None
