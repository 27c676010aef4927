"""Serve latency at fixed request rates: GET /queries and POST /labels, p50/p99 and errors.

Open-loop load on loopback (requests leave on schedule whether or not earlier ones finished),
bounded in time, three ways on the same machine: a plain FastAPI app returning the same payloads
(the baseline: what Serve and the loop add), the real app idle, and the real app while a scoring
pass runs (scoring must leave headroom for serving). The ratio is p99 over the plain app's p99
at the same rate.

    python -m activestream.benchmarks.serve_latency --quick --out results/bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import requests

from activestream.config import Config
from activestream.pipelines.runtime import free_port, init_ray
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth


async def _one(session, method, url, body, out, kind):
    began = time.perf_counter()
    try:
        async with session.request(method, url, json=body) as response:
            await response.read()
            ok = response.status < 500 and response.status != 429
    except (aiohttp.ClientError, asyncio.TimeoutError):
        ok = False
    out.append((kind, time.perf_counter() - began, ok))


async def _run_rate(
    base: str, rate: float, seconds: float, labels: list[dict[str, Any]]
) -> dict[str, Any]:
    """Open-loop load: half ``GET /queries?n=1``, half ``POST /labels`` of one known label."""
    out: list[tuple[str, float, bool]] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i % 2:
                body = {"labels": [labels[i % len(labels)]]}
                task = _one(session, "POST", f"{base}/labels", body, out, "labels")
            else:
                task = _one(session, "GET", f"{base}/queries?n=1", None, out, "queries")
            tasks.append(asyncio.create_task(task))
        sending = time.perf_counter() - start
        await asyncio.gather(*tasks)
    result: dict[str, Any] = {"rate": rate, "sent": len(out), "achieved_rps": len(out) / sending}
    for kind in ("queries", "labels"):
        lat = np.array([t for k, t, _ in out if k == kind]) * 1000
        result[kind] = {
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "errors": sum(1 for k, _, ok in out if k == kind and not ok),
        }
    return result


@contextlib.contextmanager
def _plain_app(port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "activestream.benchmarks.plain_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(f"{base}/queries", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _score_until(cfg: Config, pool: Any, until: float) -> int:
    from activestream.pipelines.scoring import score_pass

    passes = 0
    while time.time() < until:
        score_pass(cfg, pool)
        passes += 1
    return passes


@contextlib.contextmanager
def _scoring(cfg: Config, pool: Any, seconds: float) -> Iterator[None]:
    """Scoring passes over the pool, back to back, driven from a Ray task (not this process,
    whose event loop generates the load)."""
    import ray

    task = ray.remote(num_cpus=0)(_score_until).remote(cfg, pool, time.time() + seconds)
    time.sleep(3)  # the first pass is under way
    try:
        yield
    finally:
        ray.get(task)


def _row(variant: str, r: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    p99 = max(r["queries"]["p99_ms"], r["labels"]["p99_ms"])
    base_p99 = (
        max(baseline["queries"]["p99_ms"], baseline["labels"]["p99_ms"]) if baseline else None
    )
    return {
        "name": f"serve_{variant}_{r['rate']:.0f}rps",
        "variant": variant,
        **r,
        "p99_ms": p99,
        "ratio": round(p99 / base_p99, 2) if base_p99 else None,
    }


def run(quick: bool, out: Path) -> list[dict[str, Any]]:
    """Plain FastAPI, activestream idle, activestream while scoring; same load each."""
    from activestream.deploy import serve_app

    rates = (50.0, 200.0) if quick else (25.0, 50.0, 100.0, 200.0)
    seconds = 5.0 if quick else 10.0
    cfg = Config().with_overrides(
        {"durability.dir": tempfile.mkdtemp(prefix="activestream-bench-")}
    )
    init_ray(cfg.ray)
    pool, _ = resolve_dataset(cfg)
    truth = ground_truth(pool)
    labels = [{"id": k, "label": y} for k, y in list(truth.items())[:8]]
    plain: dict[float, dict[str, Any]] = {}
    rows = []
    with _plain_app(free_port()) as base:
        for rate in rates:
            plain[rate] = asyncio.run(_run_rate(base, rate, seconds, labels))
            rows.append(_row("plain_fastapi", plain[rate], None))
    with serve_app.running(cfg, port=free_port()) as base:
        requests.post(f"{base}/labels", json={"labels": labels}, timeout=30).raise_for_status()
        time.sleep(2)  # later posts repeat these labels: no training, no rounds (idle)
        for rate in rates:
            rows.append(
                _row("idle", asyncio.run(_run_rate(base, rate, seconds, labels)), plain[rate])
            )
        with _scoring(cfg, pool, seconds * len(rates) + 5):
            for rate in rates:
                r = asyncio.run(_run_rate(base, rate, seconds, labels))
                rows.append(_row("scoring", r, plain[rate]))
    for r in rows:
        q, lab = r["queries"], r["labels"]
        print(
            f"  serve {r['variant']:>13} {r['rate']:>4.0f} rps (sent {r['achieved_rps']:.0f}): "
            f"GET p50/p99 {q['p50_ms']}/{q['p99_ms']} ms, POST p50/p99 {lab['p50_ms']}/"
            f"{lab['p99_ms']} ms, errors {q['errors'] + lab['errors']}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_latency.json").write_text(json.dumps(run(args.quick, out), indent=2))


if __name__ == "__main__":
    main()
