"""Kill every actor of the running service in turn, under a steady label stream.

The operator's test: while an annotator labels steadily (lease two queries, answer them, about
eight labels a second), each process of the deployment gets SIGKILL in turn: the loop, the
label ledger, the query queue, the weights board, the trainer, a scorer and the Serve replica.
For each kill it measures how long until ``GET /queries`` hands out items again and until
``/healthz`` says ok with the actor answering from a new process. Afterwards every label the
service acknowledged must be in the label log once and held by the trainer once, and the model
version read from ``/healthz`` must never have gone down.

    python -m activestream.benchmarks.kill_each --out results/kill_each
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from activestream.benchmarks.entry import Size, bench_main
from activestream.benchmarks.freshness import SERVICE

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/kill_each.py",
    *SERVICE,
)

ROLES = ("loop", "ledger", "queue", "board", "trainer", "scorer", "replica")
SCORER_TITLE = b"MapBatches(Scorer)"  # Ray Data names its pool's worker processes so


def actor_pid(handle: Any, timeout: float = 10.0) -> int:
    """The worker process id of a live actor (asked of the actor itself)."""
    import ray

    return int(ray.get(handle.__ray_call__.remote(lambda _self: os.getpid()), timeout=timeout))


def _replica() -> Any:
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == "serve" and "REPLICA" in entry["name"].upper():
            return ray.get_actor(entry["name"], namespace="serve")
    raise LookupError("no Serve replica is running")


def role_handle(role: str) -> Any:
    """The actor handle of one role of the running service (not the scorer: a pool worker)."""
    import ray

    from activestream.pipelines.loop import LOOP_ACTOR

    if role == "replica":
        return _replica()
    return ray.get_actor(LOOP_ACTOR if role == "loop" else f"{LOOP_ACTOR}:{role}")


def scorer_pids() -> set[int]:
    """Processes of Ray Data's scorer pool on this machine, by their process title."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if SCORER_TITLE in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class Stream:
    """An annotator in a thread: lease two queries, answer them from the ground truth, repeat.

    When the queue hands out nothing (or fails), it answers two fresh pool items instead, so
    labels keep flowing whatever was killed.
    """

    base: str
    truth: dict[str, int]
    headers: dict[str, str]
    period: float = 0.25
    acked: dict[str, int] = field(default_factory=dict)
    leases: list[tuple[float, int]] = field(default_factory=list)  # (time, items leased)
    errors: dict[str, int] = field(default_factory=lambda: {"queries": 0, "labels": 0})
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._fresh: Iterator[str] = iter(list(self.truth))
        self._sent: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="label-stream", daemon=True)

    def start(self) -> None:  # noqa: D102
        self._thread.start()

    def stop(self) -> None:  # noqa: D102
        self._stop.set()
        self._thread.join(timeout=60)

    def _lease(self) -> list[str]:
        try:
            answer = requests.get(f"{self.base}/queries?n=2", headers=self.headers, timeout=10)
        except requests.RequestException:
            answer = None
        if answer is None or not answer.ok:
            self.errors["queries"] += 1
            self.leases.append((time.monotonic(), 0))
            return []
        ids = [q["id"] for q in answer.json()["queries"]]
        self.leases.append((time.monotonic(), len(ids)))
        return [i for i in ids if i not in self._sent]

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            ids = self._lease()
            while len(ids) < 2:
                item = next(self._fresh, None)
                if item is None:
                    return
                if item not in self._sent:
                    ids.append(item)
            batch = [{"id": i, "label": self.truth[i]} for i in ids]
            self._sent.update(ids)
            try:
                answer = requests.post(
                    f"{self.base}/labels", json={"labels": batch}, headers=self.headers, timeout=30
                )
                ok = answer.ok
            except requests.RequestException:
                ok = False
            if ok:
                self.acked.update((r["id"], r["label"]) for r in batch)
            else:  # not acknowledged: a later retry of these ids would count as fresh labels
                self.errors["labels"] += 1


@dataclass
class Watch:
    """Reads ``/healthz`` ten times a second: the versions it reports and when it said ok."""

    base: str
    samples: list[tuple[float, str, int]] = field(default_factory=list)  # (time, status, ver)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="healthz-watch", daemon=True)

    def start(self) -> None:  # noqa: D102
        self._thread.start()

    def stop(self) -> None:  # noqa: D102
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                answer = requests.get(f"{self.base}/healthz", timeout=5)
                body = answer.json() if answer.ok else {}
            except (requests.RequestException, ValueError):
                body = {}
            self.samples.append(
                (time.monotonic(), body.get("status", "down"), int(body.get("model_version", -1)))
            )

    def versions(self) -> list[int]:
        """Versions reported by answers that came (a down service reports none)."""
        return [v for _, status, v in self.samples if status != "down"]


def _kill(role: str, timeout: float = 60.0) -> tuple[set[int], float]:
    """SIGKILL the role's process; returns the role's pids at the kill and its moment.

    For the scorer, every scorer process alive at the kill (one is killed): a scorer counts
    as back when a process that was not among them scores.
    """
    if role == "scorer":  # pools come and go with scoring passes: wait for one
        deadline = time.monotonic() + timeout
        while not (pids := scorer_pids()):
            if time.monotonic() > deadline:
                raise TimeoutError("no scorer process appeared to kill")
            time.sleep(0.05)
        victim = min(pids)
    else:
        victim = actor_pid(role_handle(role))
        pids = {victim}
    os.kill(victim, signal.SIGKILL)
    return pids, time.monotonic()


def _back(role: str, old_pids: set[int]) -> bool:
    """Whether the role answers again from a process that was not alive at the kill."""
    if role == "scorer":
        return bool(scorer_pids() - old_pids)
    try:
        return actor_pid(role_handle(role), timeout=2) not in old_pids
    except Exception:  # noqa: BLE001 - still restarting
        return False


def recover_one(
    role: str, stream: Stream, watch: Watch, *, timeout: float = 180.0
) -> dict[str, Any]:
    """Kill one role; time queries served again, the actor back, and ``/healthz`` ok after it.

    ``back_s``: the role answers from a new process; ``healthy_s``: the first ok health answer
    sent after that; ``queries_s``: the first lease that handed out items after the kill.
    """
    pids, killed = _kill(role)
    result: dict[str, Any] = {"role": role, "queries_s": None, "back_s": None, "healthy_s": None}
    back_at: float | None = None
    deadline = killed + timeout
    while time.monotonic() < deadline and None in result.values():
        time.sleep(0.1)
        if result["queries_s"] is None:
            served = [t for t, n in list(stream.leases) if t > killed and n > 0]
            if served:
                result["queries_s"] = round(served[0] - killed, 2)
        if back_at is None and _back(role, pids):
            back_at = time.monotonic()
            result["back_s"] = round(back_at - killed, 2)
        if back_at is not None:
            ok = [t for t, status, _ in list(watch.samples) if t >= back_at and status == "ok"]
            if ok:
                result["healthy_s"] = round(ok[0] - killed, 2)
    return result


def run(
    base: str,
    truth: dict[str, int],
    *,
    roles: tuple[str, ...] = ROLES,
    headers: dict[str, str] | None = None,
    settle: float = 3.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Kill each role in turn under a label stream; then count what the trainer holds."""
    import ray

    from activestream.benchmarks.fault_recovery import wait_until_held

    stream = Stream(base, truth, headers or {})
    watch = Watch(base)
    stream.start()
    watch.start()
    time.sleep(settle)
    kills = []
    for role in roles:
        kills.append(recover_one(role, stream, watch))
        if progress:
            print(f"  killed {role}: {kills[-1]}", flush=True)
        time.sleep(settle)
    stream.stop()
    watch.stop()
    trainer = role_handle("trainer")
    held = wait_until_held(trainer, set(stream.acked.items()), timeout=180)
    info = ray.get(trainer.model_info.remote())
    log = ray.get(role_handle("ledger").read.remote(0))
    logged_ids = [r["id"] for r in log]
    versions = watch.versions()
    return {
        "kills": kills,
        "labels_acked": len(stream.acked),
        "labels_lost": sum(1 for k, v in stream.acked.items() if held.get(k) != v),
        "log_records": len(logged_ids),
        "log_ids_twice": len(logged_ids) - len(set(logged_ids)),
        "labels_held": len(held),
        "labels_seen": info["labels_seen"],
        "version_drops": sum(1 for a, b in zip(versions, versions[1:], strict=False) if b < a),
        "first_version": versions[0] if versions else None,
        "last_version": versions[-1] if versions else None,
        "errors": dict(stream.errors),
        "leases": len(stream.leases),
    }


def measure(*, durable_dir: str | None = None) -> dict[str, Any]:
    """The whole app on the bundled digits, every role killed once; see :func:`run`."""
    import numpy as np

    from activestream.config import Config
    from activestream.deploy import serve_app
    from activestream.pipelines.runtime import free_port, init_ray
    from activestream.sources.resolve import resolve_dataset
    from activestream.sources.shards import ground_truth

    cfg = Config().with_overrides(
        {
            "durability.dir": durable_dir or tempfile.mkdtemp(prefix="activestream-"),
            "durability.sync_seconds": 0.5,
        }
    )
    init_ray(cfg.ray)
    pool, _ = resolve_dataset(cfg)
    items = list(ground_truth(pool).items())
    np.random.default_rng(0).shuffle(items)
    with serve_app.running(cfg, port=free_port()) as base:
        return run(base, dict(items))


def suite(size: Size, out: Path) -> list[dict[str, Any]]:
    """The suite's entry: one row per killed role, plus the label accounting."""
    result = measure()
    rows = [{"name": f"kill_{k['role']}", **k, "ratio": None} for k in result.pop("kills")]
    return [*rows, {"name": "kill_each_labels", **result, "ratio": None}]


def main() -> None:  # noqa: D103
    bench_main(suite, "kill_each", __doc__)


if __name__ == "__main__":
    main()
