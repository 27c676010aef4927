"""Serve under annotator traffic: lease and label at fixed rates, p50/p99/max and errors.

An open-loop generator (:mod:`activestream.benchmarks.loadgen`, its own process) leases
queries and labels them with fresh, true labels, so every 2xx label goes through the durable
log, and the model trains as it would with people. Each figure is at least 2,000 requests.
Five services take the same load on the same machine:

* ``plain``: the baseline, a plain FastAPI app doing the same work per request without Ray
  (in-memory lease queue, validation, an ``fsync``-ed label log; :mod:`.plain_app`);
* ``idle``: ``activestream serve`` whose loop does not rescore after its first round
  (``scoring.rescore_every`` huge): the trainer trains on the labels, no scoring pass runs;
* ``live``: ``activestream serve`` with its defaults: new versions start scoring rounds that
  refill the queue while the load runs (one core kept for serving, requests straight to the
  replica);
* ``shared``: ``live`` with ``serve.reserved_cpus: 0``: training and scoring may take every
  core, the trade-off that setting makes;
* ``proxy``: ``live`` with ``serve.direct_ingress: false``: every request through Serve's
  proxy, the hop that direct ingress removes.

Admission control answers past what the machine holds with ``503`` and ``Retry-After``: such
answers are counted as ``refused`` (with the slowest of them, which should come within
100 ms), not as errors, and a rate with refusals is not "held". After each figure every label
the service acknowledged is posted again, and each must come back a duplicate: no label answered
2xx is lost, however hard the load (``lost_labels``).

Each service is warmed up with 200 requests first. Every service is ``activestream serve`` as
a user starts it (a child process), on a synthetic pool of 20,000 rows so the load never runs
out of fresh items, with 4,096 candidates per round so a round's queries outlast a figure.
The ratio of each figure is its p99 over the plain app's p99 at the same rate; for each
service the largest rate held with p99 under 50 ms, no errors and no refusals is reported.

    python -m activestream.benchmarks.serve_latency --quick --out results/bench
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import SERVICE
from activestream.config import Config
from activestream.pipelines.runtime import free_port
from activestream.sources.shards import ShardSet, ground_truth

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/serve_latency.py",
    *SERVICE,
    "benchmarks/loadgen.py",
    "benchmarks/plain_app.py",
)

GOAL_MS = 50.0
POOL_ROWS = 20_000
CANDIDATES = 4_096
QUICK_RATES = (25.0, 50.0, 100.0, 200.0, 400.0)
FULL_RATES = (10.0, 25.0, 50.0, 100.0, 200.0, 400.0)
WARMUP = {"rate": 20.0, "requests": 200}
VARIANTS = ("idle", "live", "shared", "proxy")


def _pool(root: Path, rows: int = POOL_ROWS) -> ShardSet:
    from activestream.sources.shards import open_shards
    from activestream.sources.synthetic import make_synthetic_shards

    home = root / f"serve-pool-{rows}"
    if (home / "pool").exists():
        shards = open_shards(str(home / "pool"))
        if shards.num_rows == rows:
            return shards
    return make_synthetic_shards(
        str(home), rows, rows_per_shard=2_000, test_rows=500, progress=False
    )


def load(url: str, rate: float, requests_: int, truth: dict[str, int], seed: int) -> dict:
    """One figure: the generator in its own process; its JSON result."""
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(
            json.dumps(
                {"url": url, "rate": rate, "requests": requests_, "truth": truth, "seed": seed}
            )
        )
        subprocess.run(
            [sys.executable, "-m", "activestream.benchmarks.loadgen", str(spec), str(out)],
            check=True,
            timeout=requests_ / rate * 4 + 120,
        )
        return json.loads(out.read_text())


def lost_labels(url: str, acknowledged: list[str], truth: dict[str, int]) -> int:
    """Labels answered 2xx that the service no longer has: each is posted again, once.

    A kept label comes back a duplicate; one the service lost is accepted anew (and counted).
    """
    from activestream.pipelines.annotate import polite_session

    session, lost = polite_session(retries=30), 0
    for i in range(0, len(acknowledged), 256):
        chunk = acknowledged[i : i + 256]
        body = {"labels": [{"id": item, "label": truth[item]} for item in chunk]}
        answer = session.post(f"{url}/labels", json=body, timeout=60)
        answer.raise_for_status()
        lost += len(chunk) - int(answer.json()["duplicates"])
    return lost


def held_rate(rows: list[dict[str, Any]], goal_ms: float = GOAL_MS) -> float | None:
    """The largest rate whose p99 stayed under ``goal_ms``, nothing refused or failed (nor below).

    >>> held_rate([{"rate": 25, "p99_ms": 9, "errors": 0}, {"rate": 50, "p99_ms": 9,
    ...            "errors": 0, "refused": 0}, {"rate": 100, "p99_ms": 9, "errors": 0,
    ...            "refused": 3}, {"rate": 200, "p99_ms": 9, "errors": 0}])
    50
    """
    best = None
    for r in sorted(rows, key=lambda r: r["rate"]):
        if r["p99_ms"] is None or r["p99_ms"] >= goal_ms or r["errors"] or r.get("refused"):
            break
        best = r["rate"]
    return best


def sweep(
    url: str,
    variant: str,
    rates: tuple[float, ...],
    n: int,
    truth: dict[str, int],
    warmup: int = WARMUP["requests"],
) -> list[dict[str, Any]]:
    """Warm up, then one figure per rate: every rate, unless most requests fail outright.

    Admission control keeps waits bounded however hard the load, so the overload rates are
    measured too (their refusals and slowest answers are the point).
    """
    load(url, WARMUP["rate"], warmup, truth, seed=999)
    rows = []
    for i, rate in enumerate(rates):
        r = load(url, rate, n, truth, seed=i)
        acknowledged = r.pop("acknowledged")
        r["acknowledged_labels"] = len(acknowledged)
        r["lost_labels"] = lost_labels(url, acknowledged, truth)
        q, lab = r["queries"], r["labels"]
        print(
            f"  serve {variant:>5} {rate:>4.0f} rps: p50/p99/max {r['p50_ms']}/{r['p99_ms']}/"
            f"{r['max_ms']} ms (GET p99 {q['p99_ms']}, POST p99 {lab['p99_ms']}), errors "
            f"{r['errors']}, refused {r['refused']} (slowest {r['refused_max_ms']} ms), "
            f"leased {r['leased_items']}, {r['lost_labels']} of {len(acknowledged)} "
            f"acknowledged labels lost, generator {r['generator_cpu_per_wall_s']:.0%} of a core",
            flush=True,
        )
        rows.append({"variant": variant, **r})
        if r["errors"] > n // 2:
            break  # failing, not refusing: higher rates only fail more
    return rows


@contextlib.contextmanager
def plain_app(pool: ShardSet, port: int) -> Iterator[str]:
    """The baseline app in a uvicorn process of its own."""
    with tempfile.TemporaryDirectory(prefix="plain-") as tmp:
        spec = Path(tmp) / "pool.json"
        spec.write_text(
            json.dumps(
                {
                    "ids": list(ground_truth(pool)),
                    "classes": len(pool.classes),
                    "log": str(Path(tmp) / "labels.jsonl"),
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "activestream.benchmarks.plain_app:app"]
            + ["--port", str(port), "--log-level", "warning"],
            env={**os.environ, "ACTIVESTREAM_PLAIN_POOL": str(spec)},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    requests.get(f"{base}/queries?n=0", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def service_config(pool_dir: str, variant: str) -> Config:
    """``activestream serve``'s defaults on the benchmark pool, changed as ``variant`` says."""
    overrides: dict[str, Any] = {
        "data.dataset": pool_dir,
        "sampling.candidates": CANDIDATES,
    }
    if variant == "idle":
        overrides["scoring.rescore_every"] = 10**9
    elif variant == "shared":
        overrides["serve.reserved_cpus"] = 0
    elif variant == "proxy":
        overrides["serve.direct_ingress"] = False
    return Config().with_overrides(overrides)


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """Plain FastAPI, then each activestream variant (module docstring); the same load."""
    from activestream.pipelines.realloop import Service

    rates = pick(size, tiny=QUICK_RATES[:1], quick=QUICK_RATES, full=FULL_RATES)
    n = pick(size, tiny=100, quick=2_000, full=4_000)
    variants = pick(size, tiny=VARIANTS[:1], quick=VARIANTS, full=VARIANTS)
    warmup = pick(size, tiny=20, quick=WARMUP["requests"], full=WARMUP["requests"])
    pool = _pool(out / "data", pick(size, tiny=2_000, quick=POOL_ROWS, full=POOL_ROWS))
    truth = ground_truth(pool)
    pool_dir = str(Path(pool.paths[0]).parent.parent)
    figures: list[dict[str, Any]] = []
    with plain_app(pool, free_port()) as base:
        figures += sweep(base, "plain", rates, n, truth, warmup)
    for variant in variants:
        with Service(service_config(pool_dir, variant)) as svc:
            figures += sweep(svc.url, variant, rates, n, truth, warmup)
    plain = {r["rate"]: r for r in figures if r["variant"] == "plain"}
    rows = []
    for r in figures:
        base_p99 = plain.get(r["rate"], {}).get("p99_ms")
        ratio = None
        if r["variant"] != "plain" and base_p99 and r["p99_ms"] is not None:
            ratio = round(r["p99_ms"] / base_p99, 2)
        rows.append({"name": f"serve_{r['variant']}_{r['rate']:.0f}rps", **r, "ratio": ratio})
    for variant in ("plain", *variants):
        mine = [r for r in figures if r["variant"] == variant]
        rows.append(
            {
                "name": f"serve_{variant}_held_rate",
                "variant": variant,
                "goal_p99_ms": GOAL_MS,
                "rates_tried": [r["rate"] for r in mine],
                "held_rps": held_rate(mine),
                "ratio": None,
            }
        )
    return rows


def main() -> None:  # noqa: D103
    bench_main(run, "serve_latency", __doc__)


if __name__ == "__main__":
    main()
