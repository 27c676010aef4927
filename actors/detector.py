"""The online detector trainer: box labels in, a detector trained as they arrive, versions out.

Detection plugs into the trainer the classification task uses, not beside it:
:class:`DetectorTrainer` keeps :class:`~activestream.actors.trainer.Trainer`'s label
bookkeeping (the buffer, replay reservoir, log offset, retractions, relabels, checkpoints) and
replaces what a label is and how a model learns from it. A label is the image's boxes, checked
against the image they belong to (:mod:`activestream.tasks.boxes`); an empty list is a valid
"nothing here". :class:`DetectorTrainerService` is the same long-lived service
(:class:`~activestream.actors.trainer.TrainerService`: a training thread, time-boxed updates,
publication, checkpoints) around it.

A label travels, in the label log and to :meth:`DetectorTrainer.ingest`, as
``{"id": str, "boxes": [{"bbox": [x, y, w, h], "label": int}]}``, already checked.
"""

from __future__ import annotations

import copy
import io
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from activestream.actors.items import ItemStore
from activestream.actors.labels import AddResult, LabelConflict, LabelError, UnknownId
from activestream.actors.trainer import RETRACTED, Trainer, TrainerService, _Reservoir, update_steps
from activestream.config import ModelConfig, StorageConfig, TrainingConfig
from activestream.errors import ConfigError
from activestream.models.detection import check_detector, fcos_detector, parameter_groups
from activestream.models.parts import pick_device
from activestream.models.registry import model_names
from activestream.samplers.detection import iou
from activestream.sources.fs import DEFAULT_STORAGE
from activestream.tasks.boxes import Box, BoxError, parse_boxes
from activestream.tasks.metrics import mean_average_precision

#: A held box label: the image's boxes in a canonical order, so equal answers compare equal.
Boxes = tuple[Box, ...]


def box_answer(boxes: Iterable[Box]) -> Boxes:
    """Boxes in a canonical order (class, then position): the same boxes, the same answer.

    >>> a, b = Box((5, 5, 2, 2), 1), Box((0, 0, 3, 3), 1)
    >>> box_answer([a, b]) == box_answer([b, a])
    True
    """
    return tuple(sorted(boxes, key=lambda box: (box.label, box.bbox)))


def boxes_to_json(answer: Sequence[Box]) -> list[dict[str, Any]]:
    """An answer as the label JSON carries it (what the label log stores)."""
    return [box.to_json() for box in answer]


def boxes_from_log(raw: Sequence[Mapping[str, Any]]) -> Boxes:
    """Boxes of a label-log record (checked when they were logged) back into an answer."""
    return box_answer(Box(tuple(float(v) for v in b["bbox"]), int(b["label"])) for b in raw)


@dataclass(frozen=True)
class CheckedAnswers:
    """A batch that passed :func:`check_answers`: new answers, changed ones, repeats."""

    fresh: dict[str, Hashable]
    changed: dict[str, Hashable]
    duplicates: int


def check_answers(
    answers: Iterable[tuple[str, Hashable]],
    *,
    known: Callable[[str], Hashable | None],
    relabel: bool = False,
    describe: Callable[[Hashable], str] = repr,
) -> CheckedAnswers:
    """Sort a batch of ``(id, answer)`` into fresh, changed and repeated, as for classes.

    A repeated (id, answer) is a duplicate (an idempotent retry). The same id with another
    answer raises :class:`LabelConflict` (the first answer stands) unless ``relabel`` is set,
    which replaces it. Answers are anything hashable that compares by value.

    >>> check_answers([("a", (1,)), ("b", ())], known={"a": (1,)}.get)
    CheckedAnswers(fresh={'b': ()}, changed={}, duplicates=1)
    >>> check_answers([("a", (2,))], known={"a": (1,)}.get)
    Traceback (most recent call last):
    ...
    activestream.actors.labels.LabelConflict: record 0: id 'a' is already labeled (1,), got (2,)
    """
    fresh: dict[str, Hashable] = {}
    changed: dict[str, Hashable] = {}
    duplicates = 0
    for i, (item_id, answer) in enumerate(answers):
        held = fresh.get(item_id, changed.get(item_id))
        if held is None:
            held = known(item_id)
        if held is not None and held != answer and relabel and item_id not in fresh:
            changed[item_id] = answer
            continue
        if held is not None:
            if held != answer:
                raise LabelConflict(
                    f"record {i}: id {item_id!r} is already labeled {describe(held)}, "
                    f"got {describe(answer)}"
                )
            duplicates += 1
            continue
        fresh[item_id] = answer
    return CheckedAnswers(fresh, changed, duplicates)


def _describe(answer: Hashable) -> str:
    boxes = answer if isinstance(answer, tuple) else ()
    return f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}"


def image_hit(
    found: Mapping[str, Any], truth: Boxes, *, score_floor: float = 0.5, min_iou: float = 0.5
) -> bool:
    """Whether a detector got an image right before learning it: the prequential outcome.

    Right means every true box is found (a detection of its class at ``min_iou`` or more,
    each detection used once) and nothing else is claimed, counting detections scoring at
    least ``score_floor``. For an empty label: no detection at that score.

    >>> truth = (Box((0, 0, 10, 10), 0),)
    >>> hit = {"boxes": [[0, 0, 10, 8]], "labels": [0], "scores": [0.9]}
    >>> image_hit(hit, truth), image_hit(hit, ()), image_hit({**hit, "labels": [1]}, truth)
    (True, False, False)
    """
    scores = np.asarray(found["scores"], dtype=np.float64).reshape(-1)
    sure = scores >= score_floor
    boxes = np.asarray(found["boxes"], dtype=np.float64).reshape(-1, 4)[sure]
    labels = np.asarray(found["labels"], dtype=np.int64).reshape(-1)[sure]
    if len(boxes) != len(truth):
        return False
    if not truth:
        return True
    overlap = iou(np.array([b.xyxy for b in truth]), boxes)  # (T, K)
    overlap[np.array([b.label for b in truth])[:, None] != labels[None, :]] = 0.0
    used: set[int] = set()
    for row in overlap:
        free = [k for k in np.argsort(-row).tolist() if k not in used]
        if not free or row[free[0]] < min_iou:
            return False
        used.add(free[0])
    return True


def _live(label: Any) -> bool:
    """Whether a row's label still stands (not withdrawn: :data:`RETRACTED`)."""
    return not (isinstance(label, int) and label == RETRACTED)


def detector_factory(model: ModelConfig) -> Callable[[int], nn.Module]:
    """What builds a detection deployment's detector: ``detector(num_classes)``.

    ``model.factory`` names the detector where it is an import path (``"package.module:
    function"``, called with the number of classes and ``model.kwargs``); to put FCOS on a
    backbone of your own, such a function returns
    ``fcos_detector(num_classes, backbone=your_backbone)``. A registered name is a classifier
    (the config's default is one), so a detection pool builds FCOS on the pretrained
    EfficientNet-Lite0 instead, with ``model.kwargs`` (``image_size``, ``score_thresh``).

    >>> detector_factory(ModelConfig()).func.__name__
    'fcos_detector'
    >>> detector_factory(ModelConfig(factory="torch.nn:Identity")).func.__name__
    'Identity'
    """
    from activestream.models.registry import resolve

    if model.factory in model_names():
        return partial(fcos_detector, **model.kwargs)
    return partial(resolve(model.factory), **model.kwargs)


def checked_detector_factory(
    model: ModelConfig, num_classes: int
) -> tuple[Callable[[int], nn.Module], bool]:
    """:func:`detector_factory`, its detector built once and held to the contract first.

    Run where a deployment starts, so that a detector the trainer and the scorers cannot use
    is one line naming ``model.factory`` and the broken part
    (:func:`~activestream.models.detection.check_detector`), not an actor's traceback later.
    The built-in FCOS with no ``model.kwargs`` is trusted as it is.

    Returns:
        The factory, and whether its detector gives images an embedding: a torchvision-style
        ``backbone`` and ``transform`` that the scorers pool for cold starts.

    Raises:
        ConfigError: The factory does not build, or builds something that breaks the contract.
    """
    factory = detector_factory(model)
    if factory.func is fcos_detector and not model.kwargs:
        return factory, True
    what = f"model.factory {model.factory!r}" + (
        f" with model.kwargs {model.kwargs}" if model.kwargs else ""
    )
    try:
        with torch.random.fork_rng(devices=[]):
            net = factory(num_classes)
        if not isinstance(net, nn.Module):
            raise ValueError(f"it returned {type(net).__name__}, not a torch.nn.Module")
        check_detector(net, num_classes)
    except Exception as err:  # a user's code: whatever it raises, the answer is one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{what} does not build a detector for this pool: {reason}") from None
    return factory, hasattr(net, "backbone") and hasattr(net, "transform")


def load_detector_weights(net: nn.Module, uri: str, storage: StorageConfig) -> None:
    """Load a state dict of this very detector (same architecture and classes) from ``uri``.

    Unlike a classifier's, nothing is left at its fresh initialisation: a detector's class
    layer is a convolution whose shape mixes classes and anchors, so a file for other classes
    is refused, not half loaded.

    Raises:
        ConfigError: The file cannot be read or does not fit the detector, with the first key.
    """
    import pickle

    from activestream.errors import ConfigError
    from activestream.sources.fs import filesystem_for

    fs, path = filesystem_for(uri, storage)
    try:
        with fs.open_input_stream(path) as fh:
            state = torch.load(io.BytesIO(fh.read()), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"model.init_weights {uri}: cannot load a state dict: {first}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"model.init_weights {uri}: holds a {type(state).__name__}, not a dict")
    own = net.state_dict()
    wrong = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    wrong += [k for k in state if k not in own]
    if wrong:
        raise ConfigError(
            f"model.init_weights {uri} does not fit the detector: {len(wrong)} keys missing, "
            f"unexpected or of another shape (e.g. {wrong[0]})"
        )
    net.load_state_dict(state)


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (3, H, W) at the image's own size."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, H, W) in [0, 1], as torchvision detectors take images."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0)


def targets_of(answer: Boxes) -> dict[str, torch.Tensor]:
    """An answer as a torchvision detection target (``boxes`` xyxy, ``labels``)."""
    return {
        "boxes": torch.tensor([b.xyxy for b in answer], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([b.label for b in answer], dtype=torch.int64),
    }


class BoxLabels:
    """What a box label is for one pool: checked against its own image, logged as JSON.

    The ledger checks a batch with it before anything is logged, the trainer before anything
    is buffered; both judge the same way, so a label the ledger took is one the trainer takes.

    Args:
        items: The pool (its encoded images give each image's size).
        classes: The object classes, in label-index order.
        lock: Held around every read of ``items`` (the store is not thread-safe); a
            :class:`contextlib.nullcontext` where the caller holds its own lock already.
    """

    def __init__(
        self,
        items: ItemStore,
        classes: Sequence[str],
        *,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.items = items
        self.classes = tuple(classes)
        self._lock = lock if lock is not None else threading.Lock()

    def sizes(self, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(width, height) of each image, from its header (no pixels decoded)."""
        from activestream.sources.images import image_info

        sizes = {}
        with self._lock:
            for item_id in dict.fromkeys(ids):
                original = self.items.original(item_id)
                if original is None:
                    raise LabelError(f"{item_id}: the pool holds no encoded image for it")
                try:
                    _, height, width, _ = image_info(original[0])
                except Exception:  # noqa: BLE001 - PIL raises several kinds for corrupt data
                    raise LabelError(f"{item_id}: its image does not decode") from None
                sizes[item_id] = (width, height)
        return sizes

    def parse(self, records: Iterable[Any]) -> list[tuple[str, Boxes]]:
        """``{"id", "boxes"}`` records -> (id, answer), every box checked against its image.

        Raises:
            UnknownId: An id not in the pool.
            LabelError: Naming the first bad record or box; nothing is to be kept.
        """
        records = list(records)
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping) or not isinstance(rec.get("id"), str):
                raise LabelError(f'record {i}: a box label is {{"id": str, "boxes": [...]}}')
            if "boxes" not in rec:
                raise LabelError(f"record {i}: no boxes (send [] when there is nothing to find)")
        ids = [rec["id"] for rec in records]
        with self._lock:
            unknown = self.items.missing(list(dict.fromkeys(ids)))
        if unknown:
            raise UnknownId(f"unknown id {unknown[0]!r}: not in the pool")
        sizes = self.sizes(ids)
        parsed = []
        for i, rec in enumerate(records):
            width, height = sizes[rec["id"]]
            try:
                boxes = parse_boxes(
                    rec["boxes"], width=width, height=height, classes=self.classes,
                    item=f"record {i} ({rec['id']})",
                )  # fmt: skip
            except BoxError as err:
                raise LabelError(str(err)) from None
            parsed.append((rec["id"], box_answer(boxes)))
        return parsed

    def check(
        self, records: Iterable[Any], *, known: Callable[[str], Any], relabel: bool = False
    ) -> CheckedAnswers:
        """Judge a batch as a whole: every box against its image, then against held answers.

        The ledger's label-kind interface (as :class:`~activestream.actors.labels.
        ClassLabels`).

        Raises:
            UnknownId: An id the pool does not hold.
            LabelError: Naming the first bad record or box, or a conflict; nothing is kept.
        """
        return check_answers(self.parse(records), known=known, relabel=relabel, describe=_describe)

    @staticmethod
    def queue_label(answer: Boxes) -> int | None:
        """Nothing: the queue's class bookkeeping (``auto``'s judge) is for class labels."""
        return None

    @staticmethod
    def to_log(item_id: str, answer: Boxes, **fields: Any) -> dict[str, Any]:
        """The label-log record of an answer: ``{"id", "boxes", ...fields}``.

        >>> BoxLabels.to_log("img-1", (Box((1.0, 2.0, 3.0, 4.0), 0),), time=5)
        {'id': 'img-1', 'boxes': [{'bbox': [1.0, 2.0, 3.0, 4.0], 'label': 0}], 'time': 5}
        """
        return {"id": item_id, "boxes": boxes_to_json(answer), **fields}

    @staticmethod
    def from_log(record: Mapping[str, Any]) -> Boxes:
        """The answer a label-log record holds (checked when it was logged).

        >>> BoxLabels.from_log(BoxLabels.to_log("img-1", (Box((1, 2, 3, 4), 0),)))
        (Box(bbox=(1.0, 2.0, 3.0, 4.0), label=0),)
        """
        return boxes_from_log(record["boxes"])


class DetectorTrainer(Trainer):
    """Online detector trainer over a pool of encoded images addressed by id.

    What a label is (boxes, checked against the image), how a minibatch trains (the
    detector's summed losses on images of their own sizes) and what the model answers (boxes)
    differ from the classifier; buffer, replay, relabels, retractions, the log offset and
    checkpoints are the :class:`~activestream.actors.trainer.Trainer`'s.

    Args:
        training: Buffer size, policy, steps per update, learning rate; ``batch_size`` is
            capped at ``minibatch`` images (a detector step costs far more than a classifier's).
        items: The pool: encoded images looked up by id (:meth:`ItemStore.original`).
        classes: The object classes, in label-index order; None takes the pool's (a detection
            pool's shards name them), so the service builds it with the classifier trainer's
            arguments.
        detector: ``detector(num_classes)`` -> a torchvision-style detector (see
            :func:`~activestream.models.detection.check_detector`); None builds what
            ``model`` names (:func:`detector_factory`: FCOS on the pretrained
            EfficientNet-Lite0 unless ``model.factory`` is an import path).
        seed: Seeds the initial weights and every draw.
        minibatch: Images per optimizer step at most.
        pretrained_lr: Learning rate of a pretrained backbone's own weights; a tenth of
            ``training.lr`` by default (see
            :func:`~activestream.models.detection.parameter_groups`).
        model: ``init_weights`` (a state dict of this detector, local or ``s3://``) is loaded
            before training; without ``detector``, ``model.factory`` and ``model.kwargs``
            name the architecture.
        storage: How to reach an ``s3://`` ``init_weights``.
    """

    def __init__(
        self,
        *,
        training: TrainingConfig,
        items: ItemStore,
        classes: Sequence[str] | None = None,
        detector: Callable[[int], nn.Module] | None = None,
        seed: int = 0,
        minibatch: int = 8,
        pretrained_lr: float | None = None,
        model: ModelConfig | None = None,
        storage: StorageConfig = DEFAULT_STORAGE,
    ) -> None:
        # The label bookkeeping of Trainer.__init__, without building a classifier.
        self.training = training
        self.model_cfg = model or ModelConfig()
        self.items = items
        self.classes = tuple(items.classes if classes is None else classes)
        self.seed = seed
        self.minibatch = minibatch
        self._rng = np.random.default_rng(seed)
        self._torch_state = torch.Generator().manual_seed(seed).get_state()
        self.device = pick_device()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = (detector or detector_factory(self.model_cfg))(len(self.classes))
        if self.model_cfg.init_weights:
            load_detector_weights(net, self.model_cfg.init_weights, storage)
        self.model = net.to(self.device).eval()
        lr = training.lr
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, lr, lr / 10 if pretrained_lr is None else pretrained_lr),
            weight_decay=training.weight_decay,
        )
        self._x: dict[int, np.ndarray] = {}  # row -> uint8 (3, H, W) pixels, own size
        self._head = None
        self._y: list[Any] = []  # row -> Boxes, or RETRACTED
        self._ids: dict[str, int] = {}
        self._pending: dict[str, Any] = {}
        self._retracted: dict[int, str] = {}
        self._trained = 0
        self.applied = 0
        self._reservoir = _Reservoir(training.replay_capacity, self._rng)
        self.recent_hits: deque[bool] = deque(maxlen=100)
        self.version = 0
        self.train_steps = 0
        self.cut_updates = 0
        self._owed: tuple[int, int, int] | None = None
        self.pseudo_labels = 0
        self._unlabeled = None
        self.compute_unlabeled = False  # no semi-supervised fit for detectors
        self.train_seconds = 0.0
        self.last_train_seconds: float | None = None
        self.last_train_cpu_seconds: float | None = None
        self._lock = threading.RLock()
        self._model_lock = threading.RLock()
        self._items_lock = threading.Lock()
        self.labels = BoxLabels(items, self.classes, lock=self._items_lock)
        # Predictions come from a copy of the trained model: an update holds the model for
        # all its steps (seconds on CPUs), and boxes for the page or the held-out split must
        # not wait for it. Each update leaves its weights staged for the copy to take.
        self._serving_lock = threading.Lock()
        self._serving = copy.deepcopy(self.model).eval()
        self._serving_version = self.version
        self._staged_lock = threading.Lock()
        self._staged: tuple[int, dict[str, torch.Tensor]] | None = None

    # -- labels ---------------------------------------------------------------------------
    def parse(self, records: Iterable[Any]) -> list[tuple[str, Boxes]]:
        """Box label records -> (id, answer); see :meth:`BoxLabels.parse`."""
        return self.labels.parse(records)

    def add_labels(
        self, records: Iterable[Mapping[str, Any]], *, relabel: bool = False
    ) -> AddResult:
        """Check a batch of box labels as a whole, then buffer the new ones.

        Images are read (headers only) before the label lock is taken; the batch is then
        judged against what is held at that moment, as the classifier's trainer does.
        """
        parsed = self.parse(records)
        with self._lock:
            checked = check_answers(parsed, known=self._held, relabel=relabel, describe=_describe)
            self._record(checked.fresh, checked.changed)
        return AddResult(
            accepted=len(checked.fresh) + len(checked.changed), duplicates=checked.duplicates
        )

    def ingest(self, start: int, records: list[Mapping[str, Any]]) -> int:
        """Apply label-log records from ``start`` (checked when logged), as the classifier does."""
        with self._lock:
            if start > self.applied:
                return self.applied
            fresh: dict[str, Boxes] = {}
            changed: dict[str, Boxes] = {}
            for record in records[self.applied - start :]:
                item_id = str(record["id"])
                if record.get("retract"):
                    self._record(fresh, changed)
                    fresh, changed = {}, {}
                    self._retract(item_id)
                    continue
                answer = BoxLabels.from_log(record)
                held = fresh.get(item_id, self._held(item_id))
                if held is None or item_id in fresh:
                    fresh[item_id] = answer
                elif held != answer:
                    changed[item_id] = answer
            self._record(fresh, changed)
            self.applied = max(self.applied, start + len(records))
            return self.applied

    def _pixels(self, ids: list[str]) -> list[np.ndarray]:
        """Each image at its own size, uint8 (3, H, W): a read of the pool, maybe from S3."""
        out = []
        with self._items_lock:
            for item_id in ids:
                original = self.items.original(item_id)
                out.append(decode_rgb(original[0] if original else b""))
        return out

    def _kept(self, pixels: Any) -> list[np.ndarray]:
        return list(pixels)

    # -- training -------------------------------------------------------------------------
    def _snapshot(self, end: int) -> tuple[dict[int, np.ndarray], list[Any]]:
        with self._lock:
            return dict(self._x), list(self._y[:end])

    def partial_fit(self, *, seconds: float | None = None) -> None:
        """One update on the buffered labels (time-boxed by ``seconds``), as the classifier's."""
        self.fetch_pending()
        with self._lock:
            start, end = self._trained, len(self._y)
            if end == start:
                return
        held, y = self._snapshot(end)
        with self._model_lock, torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_state)
            began, cpu_began = time.perf_counter(), time.thread_time()
            hits = self._hits(held, y, start, end)
            cfg = self.training
            steps = update_steps(end - start, cfg.buffer_size, cfg.steps_per_update)
            deadline = None if seconds is None else began + seconds
            done = self._detector_steps(start, end, steps, held, y, deadline)
            self._owed = (start, end, steps - done) if done < steps else None
            self.model.eval()
            with self._lock:
                self.recent_hits.extend(hits)
                self._reservoir.add(range(start, end))
                self._trained = end
                self._forget()
                self.version += 1
            self._stage_serving()
            self.last_train_seconds = time.perf_counter() - began
            self.last_train_cpu_seconds = time.thread_time() - cpu_began
            self.train_seconds += self.last_train_seconds
            self._torch_state = torch.get_rng_state()

    def catch_up(self, *, seconds: float | None = None) -> bool:
        """Take the steps a time-boxed update was cut short of (see the classifier's)."""
        owed = self._owed
        if owed is None:
            return False
        start, end, steps = owed
        held, y = self._snapshot(end)
        with self._model_lock, torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._torch_state)
            deadline = None if seconds is None else time.perf_counter() + seconds
            done = self._detector_steps(start, end, steps, held, y, deadline)
            self._owed = (start, end, steps - done) if done < steps else None
            self.model.eval()
            with self._lock:
                self.version += 1
            self._stage_serving()
            self._torch_state = torch.get_rng_state()
        return True

    @torch.inference_mode()
    def _hits(
        self, held: Mapping[int, np.ndarray], y: list[Any], start: int, end: int
    ) -> list[bool]:
        """Prequential outcomes (:func:`image_hit`) of the new labels, before training on them."""
        rows = [r for r in range(start, end) if _live(y[r]) and r in held]
        if not rows:
            return []
        self.model.eval()
        found = self.model([to_tensor(held[r]).to(self.device) for r in rows])
        return [image_hit(f, y[r]) for f, r in zip(found, rows, strict=True)]

    def _rows(self, start: int, end: int) -> np.ndarray:
        """Rows of one minibatch: new labels, and replayed older ones under ``replay``."""
        cfg, rng = self.training, self._rng
        size = min(cfg.batch_size, self.minibatch)
        if cfg.policy == "full":
            return rng.integers(0, end, size=size)
        new = rng.integers(start, end, size=size)
        if cfg.policy == "new_only" or not self._reservoir.rows:
            return new
        n_old = int(round(size * cfg.replay_ratio))
        old = self._reservoir.sample(n_old, cfg.recency_half_life, now=start)
        return np.concatenate([new[: size - n_old], old])

    def _detector_steps(
        self,
        start: int,
        end: int,
        steps: int,
        held: Mapping[int, np.ndarray],
        y: list[Any],
        deadline: float | None,
    ) -> int:
        """Up to ``steps`` optimizer steps on rows ``[start, end)`` (and replay); steps taken."""
        self.model.train()
        for step in range(steps):
            if deadline is not None and step and time.perf_counter() > deadline:
                self.cut_updates += 1
                return step
            rows = [r for r in self._rows(start, end).tolist() if _live(y[r])]
            if not rows:
                continue  # every drawn label withdrawn
            images = [to_tensor(held[r]).to(self.device) for r in rows]
            targets = [{k: v.to(self.device) for k, v in targets_of(y[r]).items()} for r in rows]
            loss = sum(self.model(images, targets).values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.train_steps += 1
        return steps

    # -- inference and state --------------------------------------------------------------
    def _stage_serving(self) -> None:
        """Leave the new version's weights for predictions (an update calls it, holding the model).

        A copy, taken in milliseconds: the update never waits for a prediction under way.
        """
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        with self._staged_lock:
            self._staged = (self.version, state)

    def _refresh_serving(self) -> None:
        """Bring the serving copy to the newest weights it can have without waiting.

        The weights the last update staged; else (a restored checkpoint comes with its own
        version) the trained model itself, when no update holds it.
        """
        with self._staged_lock:
            staged, self._staged = self._staged, None
        if staged is not None and staged[0] > self._serving_version:
            self._serving.load_state_dict(staged[1])
            self._serving_version = staged[0]
        if self._serving_version == self.version:
            return
        if not self._model_lock.acquire(blocking=False):
            return  # an update holds the model: it stages its weights when done
        try:
            self._serving.load_state_dict(self.model.state_dict())
            self._serving_version = self.version
        finally:
            self._model_lock.release()

    @torch.inference_mode()
    def predict_versioned(
        self, images: Sequence[np.ndarray]
    ) -> tuple[int, list[dict[str, np.ndarray]]]:
        """The model version that answers, and per image its ``boxes``, ``scores``...

        The newest version unless an update is training right now (then the one before),
        so the answer never waits for training.
        """
        with self._serving_lock:
            self._refresh_serving()
            if not images:
                return self._serving_version, []
            found = self._serving([to_tensor(x).to(self.device) for x in images])
            version = self._serving_version
        return version, [{k: v.cpu().numpy() for k, v in f.items()} for f in found]

    def predict(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """uint8 (3, H, W) images -> per image ``boxes`` (K, 4) xyxy, ``scores``, ``labels``.

        Also ``class_scores`` (K, C). See :meth:`predict_versioned`.
        """
        return self.predict_versioned(images)[1]

    def evaluate_map(
        self, images: Sequence[np.ndarray], truth: Sequence[Boxes], batch: int = 16
    ) -> dict[str, float]:
        """mAP@[.5:.95] (``map``) and mAP@0.5 (``map_50``) on held-out images and their boxes."""
        found = [
            f for i in range(0, len(images), batch) for f in self.predict(images[i : i + batch])
        ]
        targets = [{"boxes": [b.xyxy for b in t], "labels": [b.label for b in t]} for t in truth]
        return mean_average_precision(found, targets)

    def held_labels(self) -> dict[str, Any]:
        """Every box label held, by id, as the label JSON carries it."""
        return {k: boxes_to_json(v) for k, v in super().held_labels().items()}

    def model_info(self) -> dict[str, Any]:
        """The ``GET /model`` answer: the classifier's, for a detector over these classes."""
        info = super().model_info()
        info["classes"] = list(self.classes)
        # A user's detector is named as they named it (as a classifier's factory is); the
        # built-in one by its class.
        own = self.model_cfg.factory not in model_names()
        info["arch"] = self.model_cfg.factory if own else type(self.model).__name__
        info["task"] = "detection"
        return info


class DetectorTrainerService(TrainerService, DetectorTrainer):
    """:class:`DetectorTrainer` as the long-lived trainer service (thread, publication, restarts).

    Takes :class:`~activestream.actors.trainer.TrainerService`'s arguments and
    :class:`DetectorTrainer`'s.
    """
