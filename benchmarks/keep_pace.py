"""Does the model keep pace? Versions per minute and empty leases at a steady label rate.

A new user's first stress test, kept: ``activestream serve`` on 20,000 synthetic 32x32 images
(a pool far larger than the labels), people leasing 4 queries at a time and posting their true
classes at a fixed rate in all, for a fixed time, at 5, 20 and 100 labels per second (one person
per 10 labels/s, so the rate is reached however long a request takes). Each row says how many
versions the model published per minute, how many lease calls came back empty although most of
the pool is unlabeled, the largest training backlog seen in ``/metrics`` (labels held but not
trained on yet), the requests' p50 and p99, and how long the service took to stop afterwards.

One more row runs 20 labels/s with ``serve.reserved_cpus: 1``: the core kept for Serve and the
actors answering requests, off limits to training and scoring. Its trade-off is the row's
request latency against its versions per minute, beside the shared-cores row.

Before time-boxed updates, at about 14 labels/s a version came every 20-30 s and then none at
all while the backlog grew, and a quarter of the leases came back empty. The aims: a version
at least every 10 s at any rate (6 per minute), no empty lease while the pool has unlabeled
items.

    python -m activestream.benchmarks.keep_pace --quick --out results/bench
"""

from __future__ import annotations

import math
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import SERVICE
from activestream.config import Config
from activestream.pipelines.runtime import free_port, init_ray
from activestream.sources.shards import ground_truth

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/keep_pace.py",
    *SERVICE,
    "benchmarks/loadgen.py",
)

RATES = (5.0, 20.0, 100.0)
POOL_ROWS = 20_000


def _metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text page (0 when absent)."""
    found = re.search(rf"^{name}(?:_total)? ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _client(
    base: str,
    truth: dict[str, int],
    rate: float,
    stop: threading.Event,
    tally: dict[str, Any],
    lock: threading.Lock,
) -> None:
    """One person: lease 4, label them at ``rate`` labels/s with the true class, until ``stop``."""
    session = requests.Session()
    due = time.monotonic()

    def count(key: str, seconds: float | None = None) -> None:
        with lock:
            tally[key] += 1
            if seconds is not None:
                tally["latencies"].append(seconds)

    while not stop.is_set():
        sent = time.perf_counter()
        r = session.get(f"{base}/queries", params={"n": 4}, timeout=30)
        count("leases", time.perf_counter() - sent)
        if r.status_code != 200:
            count("refused" if r.status_code == 503 else "errors")
            time.sleep(0.2)
            continue
        queries = r.json()["queries"]
        if not queries:
            count("empty")
            time.sleep(0.1)
            continue
        for query in queries:
            due = max(due + 1.0 / rate, time.monotonic() - 1.0)  # at most 1 s of catch-up
            time.sleep(max(0.0, due - time.monotonic()))
            body = {"labels": [{"id": query["id"], "label": truth[query["id"]]}]}
            sent = time.perf_counter()
            answer = session.post(f"{base}/labels", json=body, timeout=30)
            seconds = time.perf_counter() - sent
            if answer.status_code == 200:
                count("labels", seconds)
            else:
                count("refused" if answer.status_code == 503 else "errors", seconds)
            if stop.is_set():
                break


def run_rate(pool_dir: str, rate: float, seconds: float, reserved: int = 0) -> dict[str, Any]:
    """One fresh service labeled at ``rate`` for ``seconds``; what the row reports."""
    from activestream.deploy import serve_app

    cfg = Config().with_overrides(
        {
            "data.dataset": pool_dir,
            "durability.dir": tempfile.mkdtemp(prefix="activestream-pace-"),
            "serve.reserved_cpus": reserved,
        }
    )
    init_ray(cfg.ray)
    from activestream.sources.resolve import resolve_dataset

    pool, _ = resolve_dataset(cfg)
    truth = ground_truth(pool)
    tally: dict[str, Any] = {
        "leases": 0, "empty": 0, "labels": 0, "errors": 0, "refused": 0, "latencies": []
    }  # fmt: skip
    lock = threading.Lock()
    people = max(1, math.ceil(rate / 10.0))
    versions: list[tuple[float, int]] = []
    backlog = 0.0
    with serve_app.running(cfg, port=free_port()) as base:
        stop = threading.Event()
        clients = [
            threading.Thread(
                target=_client, args=(base, truth, rate / people, stop, tally, lock), daemon=True
            )
            for _ in range(people)
        ]
        began = time.monotonic()
        first = requests.get(f"{base}/model", timeout=30).json()["version"]
        for client in clients:
            client.start()
        while time.monotonic() - began < seconds:
            time.sleep(0.5)
            version = requests.get(f"{base}/model", timeout=30).json()["version"]
            if not versions or version != versions[-1][1]:
                versions.append((time.monotonic() - began, version))
            page = requests.get(f"{base}/metrics", timeout=30).text
            backlog = max(backlog, _metric(page, "activestream_training_backlog"))
        stop.set()
        for client in clients:
            client.join(timeout=60)
        last = requests.get(f"{base}/model", timeout=30).json()
        stop_began = time.monotonic()
    stopped_s = time.monotonic() - stop_began
    gaps = [b[0] - a[0] for a, b in zip(versions, versions[1:], strict=False)]
    published = last["version"] - first
    ms = np.asarray(tally["latencies"]) * 1000.0
    row = {
        "name": f"keep_pace_{rate:g}_labels_per_s" + (f"_reserved_{reserved}" if reserved else ""),
        "rate_labels_per_s": rate,
        "people": people,
        "reserved_cpus": reserved,
        "pool_rows": len(truth),
        "seconds": seconds,
        "labels_posted": tally["labels"],
        "labels_trained": last.get("labels_seen"),
        "versions": published,
        "versions_per_min": round(60.0 * published / seconds, 1),
        "longest_gap_s": round(max(gaps), 1) if gaps else None,
        "lease_calls": tally["leases"],
        "empty_leases": tally["empty"],
        "errors": tally["errors"],
        "refused": tally["refused"],
        "request_p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "request_p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "max_backlog": int(backlog),
        "stop_s": round(stopped_s, 1),
        "ratio": None,
    }
    print(
        f"  {rate:g} labels/s, {reserved} reserved: {row['versions_per_min']} versions/min "
        f"(longest gap {row['longest_gap_s']} s), {tally['empty']} of {tally['leases']} "
        f"leases empty, {tally['labels']} labels posted, {row['labels_trained']} trained, "
        f"backlog <= {row['max_backlog']}, request p99 {row['request_p99_ms']} ms, "
        f"stop {row['stop_s']} s",
        flush=True,
    )
    return row


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """Every rate on one synthetic pool (written once under ``out``)."""
    from activestream.sources.synthetic import make_synthetic_shards

    rows_in_pool = pick(size, tiny=2_000, quick=POOL_ROWS, full=POOL_ROWS)
    folder = out / f"keep-pace-pool-{rows_in_pool}"
    if not (folder / "pool").exists():
        make_synthetic_shards(str(folder), rows_in_pool, rows_per_shard=5_000, test_rows=500,
                              progress=False)  # fmt: skip
    seconds = pick(size, tiny=4.0, quick=60.0, full=120.0)
    rates = pick(size, tiny=RATES[1:2], quick=RATES, full=RATES)
    rows = [run_rate(str(folder), rate, seconds) for rate in rates]
    if size == "tiny":  # one service start is the code path; a second costs CI half a minute
        return rows
    return [*rows, run_rate(str(folder), 20.0, seconds, reserved=1)]


def main() -> None:  # noqa: D103
    bench_main(run, "keep_pace", __doc__)


if __name__ == "__main__":
    main()
