"""The oracle annotator: people at a set pace, answering from the ground truth, over HTTP.

The in-process simulator runs the loop's classes in lockstep: score, lease, answer, train.
A running service is asynchronous: annotators lease from the last finished round while the
trainer is a version or more ahead, and several people label at once. This client measures what
that costs. It drives a running ``activestream serve`` exactly as people do: each of
``annotators`` threads leases one query (``GET /queries``), spends ``1 / rate`` seconds on it
and posts the true label (``POST /labels``): a class, or an image's boxes. A watcher thread
follows ``GET /model`` and, for every new version, scores the held-out split through ``POST
/predict`` (:class:`ClassHeldOut`: accuracy; for boxes, ``BoxHeldOut`` of
``pipelines/box_oracle.py``: mAP@0.5), so the learning curve is measured on what the service
serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from activestream.errors import ActivestreamError


def polite_session(retries: int = 8) -> requests.Session:
    """A session that waits out ``503`` answers as ``Retry-After`` asks, as people's pages do.

    The service answers 503 with ``Retry-After`` instead of queueing when the ledger or the
    queue is busy or restarting (overload is an answer, not a wait). Retrying a ``POST /labels``
    is safe: a label already logged comes back as a duplicate.

    Args:
        retries: 503 answers to wait out per request before the last one is returned.
    """
    retry = Retry(
        total=retries,
        connect=0,
        read=0,
        status_forcelist=(503,),
        allowed_methods=None,  # every method: labels are idempotent (duplicates)
        respect_retry_after_header=True,
        backoff_factor=0.2,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class HeldOut(Protocol):
    """A held-out split the watcher scores every model version on, through ``POST /predict``."""

    #: The name of what :meth:`score` measures, as the curve's points and the report say it.
    metric: str

    def score(
        self, session: requests.Session, url: str, headers: dict[str, str], timeout: float
    ) -> tuple[int, float]:
        """The metric on the split; the version that answered every request (or -1)."""


@dataclass(frozen=True)
class ClassHeldOut:
    """Held-out images and their classes: accuracy of the served classifier.

    Attributes:
        x: (N, C, H, W) images in [0, 1], as the pool stores them.
        y: (N,) their classes.
        chunk: Images per request.
    """

    x: np.ndarray
    y: np.ndarray
    chunk: int = 1024
    metric: str = "accuracy"

    def score(  # noqa: D102
        self, session: requests.Session, url: str, headers: dict[str, str], timeout: float
    ) -> tuple[int, float]:
        versions, right = set(), 0
        flat = self.x.reshape(len(self.x), -1)
        for i in range(0, len(flat), self.chunk):
            inputs = np.round(flat[i : i + self.chunk], 4).tolist()
            r = session.post(
                f"{url}/predict", json={"inputs": inputs}, headers=headers, timeout=timeout
            )
            r.raise_for_status()
            answer = r.json()
            versions.add(answer["model_version"])
            pred = np.array([p["label"] for p in answer["predictions"]])
            right += int((pred == self.y[i : i + self.chunk]).sum())
        return (versions.pop() if len(versions) == 1 else -1), right / len(flat)


@dataclass
class Point:
    """The held-out metric of one model version."""

    version: int
    labels: int  # labels this version was trained on
    held: int  # labels the trainer held then (trained or waiting for a full buffer)
    value: float  # the held-out split's metric (accuracy, mAP@0.5)
    seconds: float  # since the first label was asked for


@dataclass
class Tally:
    """Counters of one session, shared by the annotator threads (under ``lock``)."""

    reserved: int = 0
    posted: int = 0
    accepted: int = 0
    duplicates: int = 0
    explored: int = 0
    empty_leases: int = 0
    unscored: int = 0  # held-out scorings the service did not answer (busy: 503, timeout)
    staleness: list[int] = field(default_factory=list)  # versions behind, per exploited pick
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Oracle:
    """Label a running service from ground truth; measure its learning curve on the way.

    Args:
        url: Base URL of the service, e.g. ``http://127.0.0.1:8000``.
        truth: The answer for every pool id: its class, or its boxes (a list of ``{"bbox",
            "label"}``, empty for an image with nothing to find).
        held_out: What every model version is scored on (:class:`ClassHeldOut`, or
            ``BoxHeldOut`` of ``pipelines/box_oracle.py`` for boxes).
        annotators: People labeling at once.
        rate: Labels per second each person manages.
        budget: Labels to post in all.
        token: Bearer token when the service asks for one.
        timeout: Seconds one HTTP request may take.
    """

    def __init__(
        self,
        url: str,
        truth: Mapping[str, Any],
        held_out: HeldOut,
        *,
        annotators: int = 4,
        rate: float = 2.0,
        budget: int = 320,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.truth = truth
        self.held_out = held_out
        self.annotators = annotators
        self.rate = rate
        self.budget = budget
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.tally = Tally()
        self.points: list[Point] = []
        self.held = 0  # labels the trainer holds, as last read from GET /model
        self.newest = (-1, 0.0)  # the newest version GET /model said, and since when
        self.longest_gap = 0.0  # the longest wait for a new version seen so far, in seconds
        self._done = threading.Event()
        self._began = 0.0

    # -- one person -------------------------------------------------------------------------
    def _annotate(self, who: int) -> None:
        session = polite_session()
        due = time.monotonic()  # when this person may post the next label
        while not self._done.is_set():
            with self.tally.lock:
                if self.tally.reserved >= self.budget:
                    return
                self.tally.reserved += 1
            try:
                query = self._lease(session)
                if query is None:  # nothing to ask yet (first round still scoring)
                    with self.tally.lock:
                        self.tally.reserved -= 1
                        self.tally.empty_leases += 1
                    time.sleep(0.1)
                    continue
                # Looking at the image: the pace includes the time the requests took.
                due = max(due + 1.0 / self.rate, time.monotonic())
                time.sleep(max(0.0, due - time.monotonic()))
                self._post(session, query, who)
            except requests.RequestException as err:
                with self.tally.lock:
                    self.tally.reserved -= 1
                    self.tally.errors.append(f"{type(err).__name__}: {err}")
                time.sleep(0.5)

    def _lease(self, session: requests.Session) -> dict[str, Any] | None:
        r = session.get(
            f"{self.url}/queries", params={"n": 1}, headers=self.headers, timeout=self.timeout
        )
        r.raise_for_status()
        answer = r.json()
        if not answer["queries"]:
            return None
        query = answer["queries"][0]
        query["behind"] = answer["model_version"] - query["model_version"]
        return query

    def _post(self, session: requests.Session, query: dict[str, Any], who: int) -> None:
        answer = self.truth[query["id"]]
        key = "boxes" if isinstance(answer, list) else "label"
        body = {"labels": [{"id": query["id"], key: answer}], "annotator": f"oracle-{who}"}
        r = session.post(f"{self.url}/labels", json=body, headers=self.headers, timeout=30)
        r.raise_for_status()
        answer = r.json()
        with self.tally.lock:
            self.tally.posted += 1
            self.tally.accepted += answer["accepted"]
            self.tally.duplicates += answer["duplicates"]
            self.tally.explored += bool(query.get("explored"))
            if not query.get("explored"):
                self.tally.staleness.append(int(query["behind"]))

    # -- the learning curve -----------------------------------------------------------------
    def _model(self, session: requests.Session) -> dict[str, Any]:
        r = session.get(f"{self.url}/model", timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def _watch(self) -> None:
        """Score every model version on the held-out split as it lands.

        A score counts for the version that answered every request of it, with the label
        counts ``GET /model`` gave for that version. A detector answers from the version
        before while an update trains, so that is the one it counts for, once it was seen.
        """
        session = polite_session()
        scoring = requests.Session()  # no retries: a busy service skips to the next version
        seen = -1
        known: dict[int, dict[str, Any]] = {}  # version -> GET /model as it was then
        while True:
            stopping = self._done.is_set()
            try:
                info = self._model(session)
                self.held = int(info["labels_seen"])
                if info["version"] != self.newest[0]:
                    now = time.monotonic()
                    if self.newest[0] >= 0:
                        self.longest_gap = max(self.longest_gap, now - self.newest[1])
                    self.newest = (info["version"], now)
                known.setdefault(info["version"], info)
                if info["version"] != seen:
                    try:
                        version, value = self.held_out.score(
                            scoring, self.url, self.headers, self.timeout
                        )
                    except requests.RequestException:
                        with self.tally.lock:
                            self.tally.unscored += 1
                        version, value = -1, 0.0
                    if version > seen and version in known:  # one version answered all
                        seen, then = version, known[version]
                        self.points.append(
                            Point(
                                version,
                                then["labels_trained"],
                                then["labels_seen"],
                                value,
                                self._elapsed(),
                            )
                        )
            except Exception as err:  # noqa: BLE001 - the watcher must outlive one bad read
                with self.tally.lock:
                    self.tally.errors.append(f"watch: {type(err).__name__}: {err}")
            if stopping:
                return
            self._done.wait(0.2)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._began

    # -- the session ------------------------------------------------------------------------
    def run(self, *, settle: float = 60.0, progress: bool = True) -> dict[str, Any]:
        """Post ``budget`` labels, wait for the model to train on them, return the report.

        ``settle`` bounds the wait after the last label for the trainer to take in the whole
        budget (a buffer that is not full yet is never trained, so the wait ends early when
        only a partial buffer is left).
        """
        from tqdm.auto import tqdm

        self._began = time.perf_counter()
        self._check_service()
        watcher = threading.Thread(target=self._watch, name="oracle-watch", daemon=True)
        watcher.start()
        people = [
            threading.Thread(target=self._annotate, args=(i,), name=f"oracle-{i}", daemon=True)
            for i in range(self.annotators)
        ]
        for t in people:
            t.start()
        bar = tqdm(
            total=self.budget, unit="label", desc="labeling", mininterval=1.0, disable=not progress
        )
        while any(t.is_alive() for t in people):
            time.sleep(0.25)
            last = self.points[-1] if self.points else None
            if last is not None:
                shown = {self.held_out.metric: f"{last.value:.3f}"}
                bar.set_postfix(version=last.version, **shown, refresh=False)
            bar.update(self.tally.posted - bar.n)
        bar.update(self.tally.posted - bar.n)
        bar.close()
        labeled_at = self._elapsed()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:  # the last full buffer trains and is evaluated
            last = self.points[-1] if self.points else None
            if last is not None and last.labels >= self.tally.accepted:
                break
            # A partial buffer never trains: done once the trainer holds every label, no new
            # version came for a while (twice the longest wait for one: a detector's updates
            # take seconds), and the newest one is scored.
            newest, since = self.newest
            held_all = self.held >= self.tally.accepted
            scored = last is not None and last.version == newest
            quiet = max(5.0, 2 * self.longest_gap)
            if held_all and scored and time.monotonic() - since > quiet:
                break
            time.sleep(0.25)
        self._done.set()
        watcher.join(timeout=self.timeout * 2)
        return self.report(labeled_at)

    def _check_service(self) -> None:
        try:
            r = requests.get(f"{self.url}/healthz", timeout=self.timeout)
            r.raise_for_status()
        except requests.RequestException as err:
            raise ActivestreamError(f"{self.url}: the service does not answer ({err})") from None

    def report(self, labeled_at: float) -> dict[str, Any]:
        """What happened: counters, the curve, and time to post the budget.

        Each point of the curve names its value after the metric (``accuracy``, ``map50``).
        """
        t = self.tally
        metric = self.held_out.metric
        return {
            "annotators": self.annotators,
            "rate_per_annotator": self.rate,
            "budget": self.budget,
            "posted": t.posted,
            "accepted": t.accepted,
            "duplicates": t.duplicates,
            "explored": t.explored,
            "empty_leases": t.empty_leases,
            "unscored": t.unscored,
            "mean_versions_behind": (
                round(float(np.mean(t.staleness)), 2) if t.staleness else None
            ),
            "errors": t.errors[-10:],
            "seconds_to_post_budget": round(labeled_at, 2),
            "metric": metric,
            "curve": [
                {
                    "version": p.version,
                    "labels": p.labels,
                    "held": p.held,
                    metric: p.value,
                    "seconds": p.seconds,
                }
                for p in self.points
            ],  # fmt: skip
        }


def curve_on_grid(
    points: list[dict[str, Any]], grid: list[int], metric: str = "accuracy"
) -> list[float]:
    """``metric`` at each label count of ``grid``: the newest version trained on at most that many.

    A version read while the trainer held ``n`` labels stands for every count from ``n`` on,
    until the next version; before the first version, the first accuracy stands.

    >>> pts = [{"labels": 0, "accuracy": 0.1}, {"labels": 16, "accuracy": 0.5}]
    >>> curve_on_grid(pts, [0, 8, 16, 32])
    [0.1, 0.1, 0.5, 0.5]
    """
    labels = np.array([p["labels"] for p in points])
    acc = np.array([p[metric] for p in points])
    out = []
    for n in grid:
        i = np.flatnonzero(labels <= n)
        out.append(float(acc[i[-1]] if i.size else acc[0]))
    return out
