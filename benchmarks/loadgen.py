"""Open-loop HTTP load that behaves like annotators: lease a query, then label it.

Requests leave on a Poisson schedule at ``rate`` per second whether or not earlier ones have
answered (open loop: a slow server cannot slow the load down and hide its own latency).
Requests alternate: ``GET /queries?n=1`` leases an item, and the next ``POST /labels`` labels
the oldest leased item not yet labeled with its true class, so every answered label is fresh
and goes through the service's durable log. When no leased item is waiting (the lease has not
answered yet, or the queue is empty) the label goes to a pool item nobody was given, still
fresh. Latency runs from the scheduled send time to the last byte of the answer, so time spent
queued in this client counts too (no coordinated omission). A ``503`` is counted apart from the
errors (``refused``: admission control answering "come back later", not a failure), and the
ids of every label answered 2xx come back in ``acknowledged`` so the caller can check that the
service's log kept each one.

The generator runs in its own process (``python -m activestream.benchmarks.loadgen SPEC OUT``)
so neither the service nor the benchmark's driver competes with it for the GIL, and reports its
own cost: CPU seconds per wall second and how late requests left against their schedule.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np


def summary(latencies_s: list[float]) -> dict[str, float | None]:
    """p50, p99 and max in milliseconds.

    >>> summary([0.001, 0.002, 0.003])["max_ms"]
    3.0
    """
    if not latencies_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def _failed(status: int) -> bool:
    """Neither answered (2xx) nor refused by admission control (503 + Retry-After).

    >>> [_failed(s) for s in (200, 503, 500, 0)]
    [False, False, True, True]
    """
    return not (200 <= status < 300 or status == 503)


async def drive(
    url: str,
    rate: float,
    requests: int,
    truth: dict[str, int],
    *,
    token: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Send ``requests`` requests at ``rate`` per second; latencies and errors per kind."""
    import aiohttp

    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=requests)
    gaps[0] = 0.0
    schedule = np.cumsum(gaps)
    unasked = iter(rng.permutation(list(truth)).tolist())
    leased: deque[str] = deque()
    labeled: set[str] = set()
    acknowledged: list[str] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    records: list[tuple[str, float, float, int]] = []  # kind, latency s, lag s, status
    counts = {"leased_items": 0, "labels_for_leased": 0, "labels_for_unasked": 0}

    def next_unasked() -> str:
        for item in unasked:
            if item not in labeled:
                return item
        raise RuntimeError("the pool ran out of unlabeled items; use a larger pool")

    async def one(session: Any, kind: str, due: float, sent: float) -> None:
        status = 0
        try:
            if kind == "queries":
                async with session.get(f"{url}/queries?n=1", headers=headers) as resp:
                    body = await resp.read()
                    status = resp.status
                if status == 200:
                    for q in json.loads(body)["queries"]:
                        if q["id"] not in labeled:
                            leased.append(q["id"])
                            counts["leased_items"] += 1
            else:
                if leased:
                    item = leased.popleft()
                    counts["labels_for_leased"] += 1
                else:
                    item = next_unasked()
                    counts["labels_for_unasked"] += 1
                labeled.add(item)
                payload = {"labels": [{"id": item, "label": truth[item]}]}
                async with session.post(f"{url}/labels", json=payload, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                if 200 <= status < 300:
                    acknowledged.append(item)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0
        records.append((kind, time.perf_counter() - due, sent - due, status))

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.05
        tasks = []
        for i, offset in enumerate(schedule):
            due = start + float(offset)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = "queries" if i % 2 == 0 else "labels"
            tasks.append(asyncio.create_task(one(session, kind, due, time.perf_counter())))
        sending = time.perf_counter() - start
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    result: dict[str, Any] = {
        "rate": rate,
        "requests": len(records),
        "offered_rps": round(requests / float(schedule[-1]), 1) if requests > 1 else None,
        "sent_rps": round(requests / sending, 1) if sending > 0 else None,
        "seconds": round(wall, 2),
        "generator_cpu_per_wall_s": round(cpu / wall, 3),
        "send_lag": summary([lag for _, _, lag, _ in records]),
        **counts,
    }
    for kind in ("queries", "labels"):
        mine = [r for r in records if r[0] == kind]
        result[kind] = {
            **summary([lat for _, lat, _, _ in mine]),
            "requests": len(mine),
            "errors": sum(1 for *_, status in mine if _failed(status)),
            "refused": sum(1 for *_, status in mine if status == 503),
        }
    both = summary([lat for _, lat, _, _ in records])
    refused = summary([r[1] for r in records if r[3] == 503])
    result.update(
        p50_ms=both["p50_ms"],
        p99_ms=both["p99_ms"],
        max_ms=both["max_ms"],
        errors=result["queries"]["errors"] + result["labels"]["errors"],
        refused=result["queries"]["refused"] + result["labels"]["refused"],
        refused_max_ms=refused["max_ms"],
        acknowledged=acknowledged,
    )
    return result


def main() -> None:
    """``loadgen SPEC.json OUT.json``: SPEC holds url, rate, requests, truth, token, seed."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(
        drive(
            spec["url"],
            spec["rate"],
            spec["requests"],
            spec["truth"],
            token=spec.get("token"),
            seed=spec.get("seed", 0),
        )
    )
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
