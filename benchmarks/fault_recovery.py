"""Kill the trainer under load: recovery time, lost labels, errors and tail latency.

Open-loop mixed load on loopback (POST /labels of fresh ids, GET /queries, GET /healthz,
GET /model) against the real app. Partway through, the trainer's worker process gets SIGKILL;
Ray restarts it, it loads its newest checkpoint and the ledger resends the label log after it.
Afterwards every label answered 2xx must be held by the trainer exactly once.

    python -m activestream.benchmarks.fault_recovery --rate 40 --seconds 20 --kill-at 6 \
        --out results/faults
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import SERVICE

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/fault_recovery.py",
    *SERVICE,
    "benchmarks/loadgen.py",
)

ROUTES = ("labels", "queries", "healthz", "model")


async def _request(session, method, url, body, out, kind, acked) -> None:
    began = time.perf_counter()
    status = 0
    try:
        async with session.request(method, url, json=body) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        status = 0  # no answer at all
    out.append((kind, time.perf_counter() - began, status))
    if kind == "labels" and 200 <= status < 300:
        acked.update((r["id"], r["label"]) for r in body["labels"])


async def _wait_recovered(session, base: str, since: float) -> float:
    """Seconds from ``since`` until /healthz says ok and /model answers again."""
    while True:
        try:
            async with session.get(f"{base}/healthz") as health:
                ok = (await health.json())["status"] == "ok"
            async with session.get(f"{base}/model") as model:
                ok = ok and model.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ok = False
        if ok:
            return time.perf_counter() - since
        await asyncio.sleep(0.1)


async def _load(
    base: str,
    items: list[tuple[str, int]],
    *,
    rate: float,
    seconds: float,
    kill_at: float | None,
    kill: Callable[[], None] | None,
    headers: dict[str, str],
) -> dict[str, Any]:
    out: list[tuple[str, float, int]] = []
    acked: set[tuple[str, int]] = set()
    fresh = iter(items)
    timeout = aiohttp.ClientTimeout(total=15)
    recovery: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        tasks = []
        start = time.perf_counter()
        killed = False
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if kill is not None and not killed and time.perf_counter() - start >= kill_at:
                killed = True
                await asyncio.get_running_loop().run_in_executor(None, kill)
                since = time.perf_counter()

                async def watch(since: float = since) -> None:
                    recovery["seconds"] = await _wait_recovered(session, base, since)

                tasks.append(asyncio.create_task(watch()))
            kind = ROUTES[i % 4]
            if kind == "labels":
                batch = [dict(zip(("id", "label"), pair, strict=True)) for pair in _take(fresh, 2)]
                if not batch:
                    kind = "queries"
                else:
                    task = _request(
                        session, "POST", f"{base}/labels", {"labels": batch}, out, kind, acked
                    )
            if kind == "queries":
                task = _request(session, "GET", f"{base}/queries?n=2", None, out, kind, acked)
            elif kind in ("healthz", "model"):
                task = _request(session, "GET", f"{base}/{kind}", None, out, kind, acked)
            tasks.append(asyncio.create_task(task))
        sending = time.perf_counter() - start
        await asyncio.gather(*tasks)
    latency = np.array([t for _, t, _ in out]) * 1000
    errors = {k: sum(1 for kind, _, s in out if kind == k and not 200 <= s < 300) for k in ROUTES}
    return {
        "rate": rate,
        "sent": len(out),
        "achieved_rps": len(out) / sending,
        "p50_ms": float(np.percentile(latency, 50)),
        "p99_ms": float(np.percentile(latency, 99)),
        "errors": errors,
        "errors_5xx": sum(1 for _, _, s in out if s >= 500 or s == 0),
        "acked": sorted(acked),
        "recovery_seconds": recovery.get("seconds"),
    }


def _take(it: Any, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def kill_trainer(trainer: Any) -> Callable[[], None]:
    """A function that SIGKILLs the trainer actor's worker process (same machine)."""
    import ray

    def kill() -> None:
        pid = ray.get(trainer.model_info.remote())["pid"]
        os.kill(pid, signal.SIGKILL)

    return kill


def wait_until_held(trainer: Any, acked: set[tuple[str, int]], timeout: float) -> dict[str, int]:
    """Poll the trainer until it holds every acknowledged label; return what it holds."""
    import ray

    want = dict(acked)
    deadline = time.monotonic() + timeout
    while True:
        try:
            held = ray.get(trainer.held_labels.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError):
            held = {}
        if all(held.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
            return held
        time.sleep(0.25)


def run(
    base: str,
    trainer: Any,
    items: list[tuple[str, int]],
    *,
    rate: float,
    seconds: float,
    kill_at: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Load the app, kill the trainer once, then count what the trainer holds."""
    import ray

    result = asyncio.run(
        _load(
            base,
            items,
            rate=rate,
            seconds=seconds,
            kill_at=kill_at,
            kill=kill_trainer(trainer),
            headers=headers or {},
        )
    )
    acked = set(map(tuple, result["acked"]))
    held = wait_until_held(trainer, acked, timeout=120)
    info = ray.get(trainer.model_info.remote())
    result["labels_acked"] = len(acked)
    result["labels_lost"] = sum(1 for k, v in acked if held.get(k) != v)
    result["labels_held"] = len(held)
    result["labels_seen"] = info["labels_seen"]
    result["recovered_from_checkpoint"] = info["recovered_from"]
    del result["acked"]
    return result


def measure(rate: float, seconds: float, kill_at: float) -> dict[str, Any]:
    """Start the app on the bundled digits, load it, kill the trainer once, count the labels."""
    import ray

    from activestream.config import Config
    from activestream.deploy import serve_app
    from activestream.pipelines.loop import LOOP_ACTOR
    from activestream.pipelines.runtime import free_port, init_ray
    from activestream.sources.resolve import resolve_dataset
    from activestream.sources.shards import ground_truth

    cfg = Config().with_overrides({"durability.dir": tempfile.mkdtemp(prefix="activestream-")})
    init_ray(cfg.ray)
    pool, _ = resolve_dataset(cfg)
    items = list(ground_truth(pool).items())
    np.random.default_rng(0).shuffle(items)
    with serve_app.running(cfg, port=free_port()) as base:
        trainer = ray.get(ray.get_actor(LOOP_ACTOR).handles.remote())["trainer"]
        return run(base, trainer, items, rate=rate, seconds=seconds, kill_at=kill_at)


def suite(size: Size, out: Path) -> list[dict[str, Any]]:
    """The suite's entry: 40 requests/s for 20 s, the trainer killed at 6 s (tiny: 6 s, at 2)."""
    r = measure(
        40.0, pick(size, tiny=6.0, quick=20.0, full=20.0), pick(size, tiny=2.0, quick=6.0, full=6.0)
    )
    return [{"name": "fault_trainer_killed", **r, "ratio": None}]


def main() -> None:  # noqa: D103
    bench_main(suite, "fault_recovery", __doc__)


if __name__ == "__main__":
    main()
