"""Label Studio's ML backend: tasks become pool items, annotations labels, our scores its order.

Label Studio (1.23) talks to an ML backend with four calls: ``GET /health``, ``POST /setup``
(the project's label config, before every prediction batch), ``POST /predict`` (tasks in, one
prediction per task out) and ``POST /webhook`` (every project event, with a 1 s timeout and no
credentials). :class:`LabelStudioBridge` answers them, and keeps Label Studio's own task order
in step with activestream's model:

* **Tasks are items.** A task whose image the pool does not hold is fetched once (Label Studio
  URLs with its API key, or plain http(s)), decoded to the pool's stored shape exactly as pool
  items are, and written as a new shard under the pool's URI, so scoring rounds, the trainer and
  the page see it like any other item. Its id is ``ls-<project>-<task>``; a task that names a
  pool id (``data.activestream_id`` or ``data.id``, or an image URL ``.../items/<id>/image``)
  maps to that item instead.
* **Annotations are labels**, through the same ledger (validation, durable log, exactly once).
  A webhook is only a hint: the bridge reads the task's annotations back from Label Studio with
  its key and makes the label log agree (the latest non-cancelled annotation; none left means
  the label is withdrawn), so a forged or lost webhook changes nothing and every
  ``reconcile_seconds`` the whole project is compared anyway.
* **Scores go back.** After every new model version the bridge predicts every task of the
  project. The first time it imports one prediction per task with ``model_version``
  ``activestream-v<N>`` and sets the project's ``model_version`` to it; later versions rewrite
  in place only the scores :func:`stale_tasks` names (moved more than a tolerance, or at the
  front of the ranking), unless a full import takes fewer requests. Label Studio's
  "Uncertainty sampling" hands out the task with the lowest score among predictions of the
  project's version, so the score is the model's confidence, ``1 - uncertainty`` under the
  configured sampler, and Label Studio's next task is the one activestream ranks most uncertain.

What differs by task is a :class:`LabelStudioTask`: :class:`ChoicesTask` labels classes
(``<Choices>``), ``RectanglesTask`` boxes (``<RectangleLabels>``: the detector's boxes as the
suggestions, an image's box uncertainty as its score, the annotation's rectangles as its label).

All of it runs in one background thread; the routes only hand it work (webhooks) or read from
it, so a slow Label Studio never holds up a label or a query.

Plain class: :class:`Service` is how it reaches the ledger, trainer and weights board, so tests
drive it in-process and the loop plugs in Ray actor handles.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlparse

import numpy as np

from activestream import samplers
from activestream.actors.items import ItemStore
from activestream.actors.labels import LabelError
from activestream.config import LabelStudioConfig, StorageConfig
from activestream.sources.images import decode_one
from activestream.sources.writing import write_shards

VERSION_PREFIX = "activestream-v"
DELETE_TIMEOUT_S = 600.0  # deleting a replaced set of 20,000 took 3 minutes on PostgreSQL
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


class Service(Protocol):
    """The parts of the running service the bridge needs."""

    def add(self, records: list[dict[str, Any]], *, annotator: str) -> None:
        """Log labels (relabels allowed: an updated annotation replaces the label)."""

    def retract(self, ids: list[str]) -> None:
        """Withdraw labels whose annotations were deleted."""

    def labels_of(self, ids: list[str]) -> dict[str, int]:
        """The logged label of each id that has one."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) stored pixels in [0, 1] -> (N, classes) probabilities."""

    def detect(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """uint8 (3, H, W) images -> each image's boxes (a detection service's trainer).

        Per image: ``boxes`` (K, 4) xyxy, ``scores`` (K,), ``labels`` (K,) and ``class_scores``
        (K, C), as the detector trainer's ``predict`` returns them.
        """

    def version(self) -> int:
        """The newest published model version."""

    def flush(self) -> None:
        """Train on a partial buffer now (Label Studio's "Start training")."""


@dataclass(frozen=True)
class Schema:
    """What a ``<Choices>`` label config says: where results go and what each choice means.

    Example:
        >>> xml = ('<View><Image name="img" value="$image"/><Choices name="digit" '
        ...        'toName="img"><Choice value="zero"/><Choice value="one"/></Choices></View>')
        >>> s = Schema.parse(xml, ("0", "1"))
        >>> s.from_name, s.to_name, s.data_key, s.choices, s.index("one")
        ('digit', 'img', 'image', ('zero', 'one'), 1)
    """

    from_name: str
    to_name: str
    data_key: str
    choices: tuple[str, ...]
    by_name: bool  # choice values are the pool's class names (else: by position)
    classes: tuple[str, ...]

    @classmethod
    def parse(cls, xml: str, classes: Sequence[str]) -> Schema:
        """Read a label config; raises ValueError when it cannot label this pool."""
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as err:
            raise ValueError(f"label config is not XML: {err}") from None
        choices = next(root.iter("Choices"), None)
        if choices is None:
            raise ValueError("label config has no <Choices> tag: activestream classifies")
        to_name = choices.get("toName", "")
        image = next((e for e in root.iter("Image") if e.get("name") == to_name), None)
        if image is None or not (image.get("value") or "").startswith("$"):
            raise ValueError(f"<Choices toName={to_name!r}> names no <Image value='$...'>")
        values = tuple(c.get("value") or c.get("alias") or "" for c in choices.iter("Choice"))
        classes = tuple(classes)
        by_name = set(values) == set(classes)
        if not by_name and len(values) != len(classes):
            raise ValueError(
                f"label config has {len(values)} choices, the pool {len(classes)} classes "
                f"({', '.join(classes)}): name the choices after the classes or list as many"
            )
        return cls(
            choices.get("name", ""),
            to_name,
            (image.get("value") or "$")[1:],
            values,
            by_name,
            classes,
        )

    def index(self, choice: str) -> int:
        """Class index of a choice value."""
        if self.by_name:
            return self.classes.index(choice)
        return self.choices.index(choice)

    def choice(self, index: int) -> str:
        """Choice value of a class index."""
        return self.classes[index] if self.by_name else self.choices[index]

    def label_of(self, result: Sequence[dict[str, Any]]) -> int | None:
        """The class an annotation's result picks, or None (no choice of this schema)."""
        for region in result or []:
            if region.get("from_name") == self.from_name and region.get("type") == "choices":
                picked = (region.get("value") or {}).get("choices") or []
                if picked and picked[0] in self.choices:
                    return self.index(picked[0])
        return None


class LocalService:
    """:class:`Service` from a label ledger and a trainer in this process (tests, benchmarks)."""

    def __init__(self, ledger: Any, trainer: Any) -> None:
        self.ledger, self.trainer = ledger, trainer

    def add(self, records: list[dict[str, Any]], *, annotator: str) -> None:  # noqa: D102
        self.ledger.add(records, relabel=True, annotator=annotator)

    def retract(self, ids: list[str]) -> None:  # noqa: D102
        self.ledger.retract(ids)

    def labels_of(self, ids: list[str]) -> dict[str, int]:  # noqa: D102
        return self.ledger.labels_of(ids)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.trainer.predict_proba(x)

    def detect(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:  # noqa: D102
        return self.trainer.predict(images)

    def version(self) -> int:  # noqa: D102
        return int(self.trainer.version)

    def flush(self) -> None:  # noqa: D102
        self.trainer.partial_fit()


def project_id(value: Any) -> int:
    """Label Studio's project reference (``"12.1795701708"``, ``12`` or a project dict) -> 12.

    Example:
        >>> project_id("12.1795701708"), project_id(7), project_id({"id": 3})
        (12, 7, 3)
    """
    if isinstance(value, dict):
        value = value.get("id")
    return int(str(value).split(".", 1)[0])


def confidence(probs: np.ndarray, sampler: str) -> np.ndarray:
    """(N, C) probabilities -> (N,) confidence ``1 - uncertainty``: Label Studio asks low first.

    The configured sampler's uncertainty when it scores probabilities deterministically;
    otherwise (BALD, auto, random) the margin.

    Example:
        >>> confidence(np.array([[0.5, 0.5], [1.0, 0.0]]), "margin").round(3).tolist()
        [0.0, 1.0]
    """
    spec = samplers.spec(sampler) if sampler in samplers.names() else None
    usable = (
        spec is not None
        and spec.inputs == ("probs",)
        and spec.uncertainty
        and spec.deterministic
        and spec.arms is None
    )
    score = samplers.get(sampler if usable else "margin")
    return np.clip(1.0 - np.asarray(score(probs), dtype=np.float64), 0.0, 1.0)


class LabelStudioTask(Protocol):
    """What labeling the pool's task in Label Studio means: the parts that differ by task.

    :class:`ChoicesTask` labels classes with a ``<Choices>`` config;
    ``RectanglesTask`` (``actors/label_studio_boxes.py``) labels boxes with a
    ``<RectangleLabels>`` one. The bridge around them (tasks, webhooks, reconciling, pushing
    scores) is the same for both.
    """

    def parse(self, xml: str, classes: Sequence[str]) -> Any:
        """A project's label config read for this pool; ValueError when it cannot label it."""

    def assess(
        self, service: Service, items: ItemStore, ids: list[str]
    ) -> tuple[list[Any], np.ndarray]:
        """The model's output for each id and (N,) confidence ``1 - uncertainty`` in [0, 1]."""

    def result(self, schema: Any, output: Any) -> list[dict[str, Any]]:
        """A prediction's ``result`` regions for one output of :meth:`assess`."""

    def answer(self, schema: Any, result: Sequence[dict[str, Any]], *, item: str) -> Any:
        """The label an annotation's ``result`` gives; None when it gives none.

        Raises:
            ValueError: The annotation cannot be a label; the message says why.
        """

    def record(self, item: str, answer: Any) -> dict[str, Any]:
        """The label record the ledger takes for ``answer``."""

    def decode(self, data: bytes, items: ItemStore) -> Any:
        """A fetched image as the pool keeps it; None when it does not decode."""

    def write(
        self,
        items: ItemStore,
        ids: list[str],
        images: list[Any],
        *,
        storage: StorageConfig,
        prefix: str,
    ) -> None:
        """New items (outputs of :meth:`decode`) as one shard under the pool's URI."""


@dataclass(frozen=True)
class ChoicesTask:
    """Classification in Label Studio: a ``<Choices>`` config, one class per annotation.

    Args:
        sampler: The configured sampler (what "uncertain" means, see :func:`confidence`).
        batch: Items per call to the model.
    """

    sampler: str = "margin"
    batch: int = 256

    def parse(self, xml: str, classes: Sequence[str]) -> Schema:  # noqa: D102
        return Schema.parse(xml, classes)

    def assess(  # noqa: D102
        self, service: Service, items: ItemStore, ids: list[str]
    ) -> tuple[list[Any], np.ndarray]:
        out = [
            service.predict_proba(items.get(ids[i : i + self.batch]))
            for i in range(0, len(ids), self.batch)
        ]
        if not out:
            return [], np.zeros(0)
        probs = np.concatenate(out)  # (N, C)
        return list(probs), confidence(probs, self.sampler)

    def result(self, schema: Schema, output: np.ndarray) -> list[dict[str, Any]]:  # noqa: D102
        return [
            {
                "from_name": schema.from_name,
                "to_name": schema.to_name,
                "type": "choices",
                "value": {"choices": [schema.choice(int(np.argmax(output)))]},
            }
        ]

    def answer(  # noqa: D102
        self, schema: Schema, result: Sequence[dict[str, Any]], *, item: str
    ) -> int | None:
        return schema.label_of(result)

    def record(self, item: str, answer: int) -> dict[str, Any]:  # noqa: D102
        return {"id": item, "label": int(answer)}

    def decode(self, data: bytes, items: ItemStore) -> np.ndarray | None:  # noqa: D102
        return decode_one(data, items.shape)

    def write(  # noqa: D102
        self,
        items: ItemStore,
        ids: list[str],
        images: list[Any],
        *,
        storage: StorageConfig,
        prefix: str,
    ) -> None:
        shards = items.shards
        if not shards.native:
            raise ValueError(
                f"{shards.uri}: Label Studio tasks can join only a pool in activestream's own "
                "Parquet layout (make it with `activestream make-shards`)"
            )
        write_shards(
            shards.uri,
            ids,
            np.stack(images),
            [-1] * len(ids) if shards.has_labels else None,
            shards.classes,
            rows_per_shard=len(ids),
            storage=storage,
            prefix=prefix,
        )


def stale_tasks(held: np.ndarray, new: np.ndarray, *, top: int, tolerance: float) -> np.ndarray:
    """Indices of the tasks whose score Label Studio must get again to keep activestream's order.

    Label Studio hands out the unlabeled task of lowest score. A task is rewritten when its
    score moved by more than ``tolerance`` (so every score Label Studio keeps is within
    ``tolerance`` of the model's), or when it is at the front and its score changed at all:
    among the ``top`` lowest new scores, or holding a score at or below the ``top``-th lowest
    new score (so nothing stale pushes in front). Label Studio's first ``top`` tasks are then
    exactly activestream's first ``top``, in order.

    Args:
        held: (N,) scores Label Studio holds now; NaN where it holds none.
        new: (N,) scores under the new model version.
        top: How many of the front tasks must be exact.
        tolerance: How far any other score may lag behind the model.

    Returns:
        (K,) sorted indices into ``new``.

    Example:
        Task 0 leads with an unchanged score; task 1 moved less than the tolerance and stays
        behind the front; task 2 moved far (and held a score in front); task 3 has none:

        >>> stale_tasks(np.array([.5, .9, .2, np.nan]), np.array([.5, .88, .6, .7]),
        ...             top=1, tolerance=.05).tolist()
        [2, 3]
    """
    held, new = np.asarray(held, dtype=np.float64), np.asarray(new, dtype=np.float64)  # (N,)
    if new.size == 0:
        return np.zeros(0, dtype=np.int64)
    missing = np.isnan(held)
    gap = np.abs(np.where(missing, np.inf, held - new))  # (N,)
    front_edge = np.partition(new, min(top, new.size) - 1)[min(top, new.size) - 1]
    in_front = (new <= front_edge) | (~missing & (held <= front_edge))
    return np.flatnonzero((gap > tolerance) | (in_front & (gap > 0)))


@dataclass
class _Project:
    id: int
    schema: Any  # the task's reading of the label config (Schema, RectangleSchema)
    tasks: dict[int, str] = field(default_factory=dict)  # task id -> item id
    pushed: int = -1  # the model version whose scores Label Studio holds for every task
    generation: str | None = None  # model_version of the prediction set Label Studio ranks by
    scores: dict[int, float] = field(default_factory=dict)  # task -> score of that set
    ids: dict[int, int] = field(default_factory=dict)  # task -> prediction id (once listed)


class LabelStudioBridge:
    """Answers Label Studio's ML-backend calls and keeps both sides in step (module docstring).

    Args:
        items: The pool; new tasks' images are written under its URI.
        service: Ledger, trainer and board (see :class:`Service`).
        config: Label Studio's address, key and sync periods.
        sampler: The configured sampler (what "uncertain" means) of the default task.
        task: What a label is in Label Studio; :class:`ChoicesTask` of ``sampler`` if None.
        storage: Credentials for an ``s3://`` pool.
        session: Makes the HTTP session (injected for tests); ``requests.Session`` by default.
        clock: Seconds, monotonic.
        autostart: Start the background thread at construction (a restarted actor).
    """

    def __init__(
        self,
        *,
        items: ItemStore,
        service: Service,
        config: LabelStudioConfig,
        sampler: str = "margin",
        task: LabelStudioTask | None = None,
        storage: StorageConfig | None = None,
        session: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        autostart: bool = False,
    ) -> None:
        self.items = items
        self.service = service
        self.config = config
        self.task: LabelStudioTask = task if task is not None else ChoicesTask(sampler)
        self.storage = storage or StorageConfig()
        self._session_factory = session
        self._clock = clock
        self._lock = threading.RLock()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=10_000)
        self._projects: dict[int, _Project] = {}
        self._setup: dict[str, str] = {}  # hostname and access_token from /setup
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._housekeeping = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ls-delete")
        self._http: Any = None
        self.pushed_version = -1
        self.pushed_at: float | None = None
        self.pushed_predictions = 0
        self.push_seconds: float | None = None  # the newest push: predict, import, set version
        self.push_requests: int | None = None  # Label Studio requests the newest push took
        self.items_added = 0
        self.labels_logged = 0
        self.labels_retracted = 0
        self.errors: list[str] = []
        self._reconciled_at = float("-inf")
        if autostart:
            self.start()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="label-studio", daemon=True)
            self._thread.start()

    def stop(self) -> None:  # noqa: D102
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._housekeeping.shutdown(wait=False, cancel_futures=True)

    # -- Label Studio's calls ---------------------------------------------------------------
    def model_version(self) -> str:
        """The version string Label Studio compares (predictions, the project's field)."""
        return f"{VERSION_PREFIX}{self.service.version()}"

    def health(self) -> dict[str, Any]:  # noqa: D102
        return {
            "status": "UP",
            "model_class": "activestream",
            "model_version": self.model_version(),
        }

    def setup(self, body: dict[str, Any]) -> dict[str, str]:
        """Learn a project's label config (Label Studio calls this often: keep it cheap)."""
        pid = project_id(body.get("project"))
        schema = self.task.parse(str(body.get("schema") or ""), self.items.classes)
        with self._lock:
            for key in ("hostname", "access_token"):
                if body.get(key):
                    self._setup[key] = str(body[key])
            known = self._projects.get(pid)
            if known is None or known.schema != schema:
                self._projects[pid] = _Project(pid, schema, known.tasks if known else {})
                self._reconciled_at = float("-inf")  # a new project: list its tasks now
        return {"model_version": self.model_version()}

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        """One prediction per task, in task order, with the confidence as ``score``."""
        tasks = body.get("tasks") or []
        if not isinstance(tasks, list) or not all(
            isinstance(t, dict) and isinstance(t.get("id"), int) and isinstance(t.get("data"), dict)
            for t in tasks
        ):
            raise ValueError("tasks: expected a list of {id: int, data: {...}} objects")
        project = self._project_for(body, tasks)
        ids = self._items_for(project, tasks)
        version = self.model_version()
        present = [i for i in ids if i is not None]
        outputs, scores = self.task.assess(self.service, self.items, present)  # (N,) scores
        by_id = dict(zip(present, range(len(present)), strict=True))
        results = []
        for item in ids:
            if item is None:  # the image did not load: an empty prediction keeps the order
                results.append({"result": [], "score": 0.0, "model_version": version})
                continue
            i = by_id[item]
            results.append(self._prediction(project.schema, outputs[i], version, scores[i]))
        return {"results": results, "model_version": version}

    def webhook(self, body: dict[str, Any]) -> dict[str, str]:
        """Queue an event for the background thread; answers at once (1 s budget)."""
        action = str(body.get("action") or "")
        handled = (*ANNOTATION_EVENTS, "ANNOTATIONS_DELETED", "TASKS_CREATED", "START_TRAINING")
        if action in handled:
            try:
                self._events.put_nowait(body)
            except queue.Full:  # the periodic reconcile catches up on annotations anyway
                self._note("webhook queue full: an event was dropped")
            self._wake.set()
        return {"status": "ok", "action": action}

    def status(self) -> dict[str, Any]:
        """What tests, metrics and the docs read."""
        with self._lock:
            return {
                "projects": {p.id: len(p.tasks) for p in self._projects.values()},
                "model_version": self.model_version(),
                "pushed_version": self.pushed_version,
                "pushed_at": self.pushed_at,
                "pushed_predictions": self.pushed_predictions,
                "push_seconds": self.push_seconds,
                "push_requests": self.push_requests,
                "items_added": self.items_added,
                "labels_logged": self.labels_logged,
                "labels_retracted": self.labels_retracted,
                "errors": self.errors[-5:],
            }

    def ranking(self, project: int) -> list[tuple[int, float]]:
        """(task, score) of the project's tasks under the current model, most uncertain first."""
        with self._lock:
            tasks = dict(self._projects[project].tasks)
        _, scores = self.task.assess(self.service, self.items, list(tasks.values()))
        pairs = sorted(zip(tasks, scores.tolist(), strict=True), key=lambda p: p[1])
        return [(int(t), float(s)) for t, s in pairs]

    # -- Label Studio's REST API ------------------------------------------------------------
    def _base(self) -> str:
        base = self.config.url or self._setup.get("hostname")
        if not base:
            raise RuntimeError("Label Studio's address is unknown: set LABEL_STUDIO_URL")
        return base.rstrip("/") + "/"

    def _session(self) -> Any:
        if self._http is None:
            import requests

            self._http = (self._session_factory or requests.Session)()
        key = self.config.api_key or self._setup.get("access_token")
        if key:
            self._http.headers["Authorization"] = f"Token {key}"
        return self._http

    def _api(
        self,
        method: str,
        path: str,
        retries: int = 3,
        timeout: float = 30.0,
        session: Any = None,
        **kwargs: Any,
    ) -> Any:
        """One REST call, retried with backoff on network errors and 5xx/429."""
        url = urljoin(self._base(), path.lstrip("/"))
        delay = 0.5
        for attempt in range(retries):
            try:
                answer = (session or self._session()).request(
                    method, url, timeout=timeout, **kwargs
                )
            except OSError as err:  # requests' errors are OSErrors
                problem: str = f"{type(err).__name__}: {err}"
            else:
                if answer.status_code < 300:
                    return answer.json() if answer.content else None
                problem = f"HTTP {answer.status_code}: {answer.text[:200]}"
                if answer.status_code < 500 and answer.status_code != 429:
                    break  # our request is wrong: repeating it will not help
            if attempt + 1 < retries:
                self._stop.wait(delay)
                delay *= 2
        raise RuntimeError(f"Label Studio {method} {path}: {problem}")

    def _image_bytes(self, url: str) -> bytes:
        """A task's image: a Label Studio URL (with its key) or a plain http(s) URL."""
        if not urlparse(url).scheme:  # /data/upload/..., /data/local-files/?d=...
            url = urljoin(self._base(), url.lstrip("/"))
        same_host = urlparse(url).netloc == urlparse(self._base()).netloc
        session = self._session()
        headers = None if same_host else {"Authorization": ""}  # our key stays with LS
        answer = session.get(url, timeout=30, headers=headers)
        answer.raise_for_status()
        return answer.content

    # -- tasks <-> items --------------------------------------------------------------------
    def _project_for(self, body: dict[str, Any], tasks: Sequence[dict[str, Any]]) -> _Project:
        ref = body.get("project") or (tasks[0].get("project") if tasks else None)
        if ref is None:
            raise ValueError("the request names no project")
        pid = project_id(ref)
        with self._lock:
            project = self._projects.get(pid)
        if project is None and body.get("label_config"):
            self.setup({"project": pid, "schema": body["label_config"]})
            project = self._projects[pid]
        if project is None:
            raise ValueError(f"project {pid} was never set up (POST /setup first)")
        return project

    def _item_id(self, project: _Project, task: dict[str, Any]) -> str:
        data = task.get("data") or {}
        for key in ("activestream_id", "id"):
            if isinstance(data.get(key), str) and data[key] in self.items:
                return data[key]
        match = re.search(r"/items/(.+)/image$", str(data.get(project.schema.data_key) or ""))
        if match and match.group(1) in self.items:
            return match.group(1)
        return f"ls-{project.id}-{task['id']}"

    def _items_for(self, project: _Project, tasks: Sequence[dict[str, Any]]) -> list[str | None]:
        """Item ids of tasks, fetching and writing the images the pool lacks; None: unreadable."""
        ids = [self._item_id(project, t) for t in tasks]
        missing = set(self.items.missing(ids))
        new_ids, images = [], []
        for task, item in zip(tasks, ids, strict=True):
            if item not in missing or item in new_ids:
                continue
            url = (task.get("data") or {}).get(project.schema.data_key)
            try:
                image = self.task.decode(self._image_bytes(str(url)), self.items)
            except Exception as err:  # noqa: BLE001 - one bad task must not stop the rest
                self._note(f"task {task.get('id')}: image {url!r} not fetched: {err}")
                image = None
            if image is None:
                continue
            new_ids.append(item)
            images.append(image)
        if new_ids:
            self._write(project, new_ids, images)
        with self._lock:
            for task, item in zip(tasks, ids, strict=True):
                if (item not in missing or item in new_ids) and int(
                    task["id"]
                ) not in project.tasks:
                    project.tasks[int(task["id"])] = item
                    project.pushed = -1  # a task without a score: write them all again
        return [i if (i not in missing or i in new_ids) else None for i in ids]

    def _write(self, project: _Project, ids: list[str], images: list[Any]) -> None:
        """New items as one shard under the pool's URI; every reader finds it by listing."""
        stamp = time.strftime("%Y%m%d%H%M%S") + f"{time.time_ns() % 1_000_000_000:09d}"
        self.task.write(
            self.items,
            ids,
            images,
            storage=self.storage,
            prefix=f"label-studio-{project.id}-{stamp}",
        )
        self.items.grow()
        with self._lock:
            self.items_added += len(ids)

    def _prediction(self, schema: Any, output: Any, version: str, score: float) -> dict[str, Any]:
        """One task's prediction: the model's answer, and its confidence as ``score``."""
        return {
            "result": self.task.result(schema, output),
            "score": round(float(score), 6),
            "model_version": version,
        }

    # -- annotations -> labels ---------------------------------------------------------------
    def _annotation_label(
        self, schema: Any, annotations: Sequence[dict[str, Any]], item: str
    ) -> tuple[Any, str | None]:
        """(label, annotator) of the newest kept annotation, or (None, None).

        Raises:
            ValueError: The newest annotation cannot be a label (a box outside its image, an
                unknown class): the label log keeps what it holds, the reason is noted.
        """
        kept = [a for a in annotations if not a.get("was_cancelled")]
        kept.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a["id"]))
        for annotation in reversed(kept):
            label = self.task.answer(schema, annotation.get("result") or [], item=item)
            if label is not None:
                return label, f"label-studio:{annotation.get('completed_by')}"
        return None, None

    def _settle(self, project: _Project, task: dict[str, Any], annotations: list[Any]) -> None:
        """Make the label log agree with a task's annotations in Label Studio."""
        (item,) = self._items_for(project, [task])
        if item is None:
            return
        held = self.service.labels_of([item]).get(item)
        self._agree(item, held, self._annotation_label(project.schema, annotations, item))

    def _agree(self, item: str, held: Any, annotated: tuple[Any, Any]) -> None:
        """Log, relabel or withdraw ``item``'s label so the log says what Label Studio says."""
        label, annotator = annotated
        if label is None and held is not None:
            self.service.retract([item])
            with self._lock:
                self.labels_retracted += 1
        elif label is not None and label != held:
            self._add_when_known(item, label, annotator)

    def _add_when_known(self, item: str, label: Any, annotator: str) -> None:
        """Log a label; a brand-new item may take a moment to be seen by the ledger's store."""
        deadline = self._clock() + 15
        while True:
            try:
                self.service.add([self.task.record(item, label)], annotator=annotator)
                with self._lock:
                    self.labels_logged += 1
                return
            except LabelError as err:  # UnknownId: the ledger lists the pool at most every 2 s
                if "unknown id" not in str(err) or self._clock() > deadline:
                    raise
                self._stop.wait(0.25)

    def _reconcile_task(self, project: _Project, task_id: int) -> None:
        task = self._api("GET", f"api/tasks/{task_id}")
        annotations = self._api("GET", f"api/tasks/{task_id}/annotations/")
        self._settle(project, task, annotations or [])

    def _reconcile(self, project: _Project) -> None:
        """List every task with its annotations; add new tasks, settle every label."""
        page, tasks = 1, []
        while True:
            body = self._api(
                "GET",
                "api/tasks",
                params={"project": project.id, "page": page, "page_size": 500, "fields": "all"},
            )
            batch = body.get("tasks", []) if isinstance(body, dict) else body or []
            total = body.get("total") if isinstance(body, dict) else None
            tasks += batch
            # Label Studio answers 404 for a page past the end: a project of exactly 500 * k
            # tasks must stop at its total, not ask for page k + 1.
            if len(batch) < 500 or (total is not None and len(tasks) >= total):
                break
            page += 1
        if not tasks:
            return
        self._items_for(project, tasks)
        with self._lock:
            mapping = dict(project.tasks)
        held = self.service.labels_of(
            [mapping[int(t["id"])] for t in tasks if int(t["id"]) in mapping]
        )
        for task in tasks:
            item = mapping.get(int(task["id"]))
            if item is None:
                continue
            annotations = task.get("annotations") or []
            try:  # one task's bad annotation must not hold up the others'
                answer = self._annotation_label(project.schema, annotations, item)
                self._agree(item, held.get(item), answer)
            except ValueError as err:  # LabelError too: a label the ledger refused
                self._note(f"task {task['id']}: annotation not logged: {err}"[:300])

    # -- scores -> Label Studio --------------------------------------------------------------
    def _push(self, project: _Project, version: int) -> None:
        """Bring Label Studio's task order to ``version``: a few rewritten scores, or all anew.

        A project Label Studio ranks by a prediction set of ours gets only the scores
        :func:`stale_tasks` names, each rewritten in place (one request per task; the first
        rewrite after a full write lists the set once for its prediction ids), among the
        unlabeled tasks (labeled ones are never handed out). When that would take more
        requests than writing every task's score again, or tasks hold no score of ours, every
        task gets a new prediction set named after ``version`` in batches, the project ranks by
        it, and the previous set is deleted.
        """
        with self._lock:
            tasks = dict(project.tasks)
        if not tasks:
            return
        task_ids = list(tasks)
        outputs, scores = self.task.assess(self.service, self.items, [tasks[t] for t in task_ids])
        scores = np.round(scores, 6)  # (N,) as Label Studio stores them
        full_cost = -(-len(task_ids) // self.config.batch) + 2  # imports, rank by, delete
        if project.generation is not None and all(t in project.scores for t in task_ids):
            labeled = self.service.labels_of([tasks[t] for t in task_ids])
            open_ = [i for i, t in enumerate(task_ids) if tasks[t] not in labeled]
            held = np.array([project.scores[task_ids[i]] for i in open_])
            stale = [
                open_[i]
                for i in stale_tasks(
                    held,
                    scores[open_],
                    top=self.config.exact_top,
                    tolerance=self.config.score_tolerance,
                )
            ]
            listing = 0 if not stale or project.ids else 1
            if len(stale) + listing <= full_cost and (not listing or self._list_ids(project)):
                for i in stale:
                    task = task_ids[i]
                    self._api(
                        "PATCH",
                        f"api/predictions/{project.ids[task]}",
                        json={
                            "result": self.task.result(project.schema, outputs[i]),
                            "score": float(scores[i]),
                        },
                    )
                    project.scores[task] = float(scores[i])
                with self._lock:
                    self.pushed_predictions += len(stale)
                    self.push_requests = len(stale) + listing
                return
        self._push_all(project, version, task_ids, outputs, scores)

    def _list_ids(self, project: _Project) -> bool:
        """Prediction ids of the project's ranking set, task by task (one request).

        False when they cannot be had (Label Studio on SQLite answers 500 to listing 20,000
        predictions; or some were deleted behind our back): then every score is written anew.
        """
        try:
            listed = self._api("GET", "api/predictions/", params={"project": project.id})
        except RuntimeError as err:
            self._note(f"prediction ids of {project.generation}: {err}"[:300])
            return False
        project.ids = {
            int(p["task"]): int(p["id"])
            for p in listed or []
            if p.get("model_version") == project.generation
        }
        return not set(project.scores) - set(project.ids)

    def _push_all(
        self,
        project: _Project,
        version: int,
        task_ids: list[int],
        outputs: list[Any],
        scores: np.ndarray,
    ) -> None:
        """Every task's prediction as a new set named after ``version``; the old set deleted."""
        name = f"{VERSION_PREFIX}{version}"
        rows = [
            {"task": t, **self._prediction(project.schema, p, name, float(score))}
            for t, p, score in zip(task_ids, outputs, scores, strict=True)
        ]
        size, requests = self.config.batch, 0
        for i in range(0, len(rows), size):
            path = f"api/projects/{project.id}/import/predictions"
            self._api("POST", path, json=rows[i : i + size])
            requests += 1
        fields = {"model_version": name}
        if self.config.sampling:  # what makes Label Studio's next task the most uncertain one
            fields["sampling"] = self.config.sampling
        self._api("PATCH", f"api/projects/{project.id}", json=fields)
        requests += 1
        previous, project.generation = project.generation, name
        project.scores = dict(zip(task_ids, scores.tolist(), strict=True))
        project.ids = {}  # listed when a rewrite first needs them
        with self._lock:
            self.pushed_predictions += len(rows)
            self.push_requests = requests
        if previous is not None and previous != name:
            with self._lock:
                self.push_requests = requests + 1
            self._housekeeping.submit(self._delete_set, project.id, previous)

    def _delete_set(self, project: int, name: str) -> None:
        """Delete a replaced score set, in the housekeeping thread, one set at a time.

        Housekeeping after the project ranks by the new set, so nobody waits for it: Label
        Studio on PostgreSQL takes about 3 minutes to delete a set of 20,000 (three queries
        per prediction), and waiting for it made each version's push twice as long. A failure
        (Label Studio on SQLite answers 500 for such a set) leaves the old set, never the order.
        """
        import requests

        path = f"api/projects/{project}/model-versions/"
        session = (self._session_factory or requests.Session)()  # not the pushing thread's
        session.headers.update(self._session().headers)
        try:
            self._api(
                "DELETE",
                path,
                json={"model_version": name},
                retries=1,
                timeout=DELETE_TIMEOUT_S,
                session=session,
            )
        except RuntimeError as err:
            self._note(f"old scores {name} may be left in Label Studio: {err}"[:300])
        finally:
            session.close()

    def settle(self, timeout: float | None = None) -> None:
        """Wait until every replaced score set queued for deletion is deleted (or failed)."""
        self._housekeeping.submit(lambda: None).result(timeout=timeout)

    # -- the background thread --------------------------------------------------------------
    def _note(self, message: str) -> None:
        with self._lock:
            if message not in self.errors[-5:]:
                self.errors.append(message)
            del self.errors[:-50]

    def _handle(self, event: dict[str, Any]) -> None:
        action = event.get("action")
        if action == "START_TRAINING":
            self.service.flush()
            return
        pid = project_id(event.get("project"))
        ref = event.get("project")
        if pid not in self._projects and isinstance(ref, dict) and ref.get("label_config"):
            # Never set up here (this bridge restarted, say): the event carries the config.
            self.setup({"project": pid, "schema": ref["label_config"]})
        project = self._projects.get(pid)
        if project is None:
            return  # set up later (POST /setup); the reconcile will see everything then
        if action in ANNOTATION_EVENTS:
            annotations = event.get("annotations") or [event.get("annotation") or {}]
            task = (event.get("task") or {}).get("id")
            for task_id in {int(a.get("task") or task) for a in annotations}:
                self._reconcile_task(project, task_id)
        elif action == "TASKS_CREATED":
            self._items_for(project, event.get("tasks") or [])
        else:  # ANNOTATIONS_DELETED carries annotation ids only: compare everything
            self._reconciled_at = float("-inf")

    def step(self) -> None:
        """One pass of the background work (the thread loops over it; tests call it)."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            try:
                self._handle(event)
            except Exception as err:  # noqa: BLE001 - the reconcile catches up later
                self._note(f"{event.get('action')}: {type(err).__name__}: {err}")
        with self._lock:
            projects = list(self._projects.values())
        if not projects:
            return
        version = self.service.version()
        for project in projects:
            if project.pushed == version or not project.tasks:
                continue
            began = time.perf_counter()
            try:
                self._push(project, version)
            except Exception as err:  # noqa: BLE001 - retried at the next period
                self._note(f"scores for version {version}: {type(err).__name__}: {err}")
                continue
            with self._lock:
                project.pushed = version
                self.pushed_version, self.pushed_at = version, time.time()
                self.push_seconds = time.perf_counter() - began
        # After the scores: annotators see a new order first, a missed webhook waits a moment.
        now = self._clock()
        if now - self._reconciled_at >= self.config.reconcile_seconds:
            self._reconciled_at = now
            for project in projects:
                try:
                    self._reconcile(project)
                except Exception as err:  # noqa: BLE001 - retried at the next period
                    self._note(f"reconcile project {project.id}: {type(err).__name__}: {err}")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as err:  # noqa: BLE001 - never let the thread die
                self._note(f"{type(err).__name__}: {err}")
            self._wake.wait(self.config.sync_seconds)  # an event wakes it early
            self._wake.clear()
