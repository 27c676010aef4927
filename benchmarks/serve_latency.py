"""Serve latency at fixed request rates: GET /queries and POST /labels, p50/p99 and errors.

Open-loop load on loopback (requests leave on schedule whether or not earlier ones finished),
bounded in time, against the real app: Ray, trainer actor, scoring rounds and Serve on this
machine. Each rate runs ``--seconds``; the summary names the largest rate
held: no errors and at least 90% of the scheduled requests sent.

    python -m benchmarks.serve_latency --rates 25,50,100,200 --seconds 10 --out results/serve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

from pipelines.config import Config
from pipelines.runtime import free_port, init_ray
from pipelines.sources import ground_truth, resolve_dataset


async def _one(session, method, url, body, out, kind):
    began = time.perf_counter()
    try:
        async with session.request(method, url, json=body) as response:
            await response.read()
            ok = response.status < 500 and response.status != 429
    except (aiohttp.ClientError, asyncio.TimeoutError):
        ok = False
    out.append((kind, time.perf_counter() - began, ok))


async def _run_rate(base: str, rate: float, seconds: float, truth: dict[str, int]) -> dict:
    out: list[tuple[str, float, bool]] = []
    ids = list(truth)
    rng = np.random.default_rng(int(rate))
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i % 2:
                item = ids[int(rng.integers(len(ids)))]
                body = {"labels": [{"id": item, "label": truth[item]}]}
                task = _one(session, "POST", f"{base}/labels", body, out, "labels")
            else:
                task = _one(session, "GET", f"{base}/queries?n=1", None, out, "queries")
            tasks.append(asyncio.create_task(task))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    result = {"rate": rate, "sent": len(out), "achieved_rps": len(out) / wall}
    for kind in ("queries", "labels"):
        lat = np.array([t for k, t, _ in out if k == kind]) * 1000
        result[kind] = {
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "errors": sum(1 for k, _, ok in out if k == kind and not ok),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="25,50,100,200")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="results/serve")
    args = parser.parse_args()
    from deploy import serve_app

    cfg = Config().with_overrides({"durability.dir": tempfile.mkdtemp(prefix="activestream-")})
    init_ray(cfg.ray)
    pool, _ = resolve_dataset(cfg)
    truth = ground_truth(pool)
    port = free_port()
    serve_app.start(cfg, port=port)
    base = f"http://127.0.0.1:{port}"
    time.sleep(5)
    results = []
    for rate in [float(r) for r in args.rates.split(",")]:
        r = asyncio.run(_run_rate(base, rate, args.seconds, truth))
        results.append(r)
        q, lab = r["queries"], r["labels"]
        print(
            f"{rate:>6.0f} rps (got {r['achieved_rps']:.0f}): GET /queries p50 {q['p50_ms']:.1f} ms"
            f" p99 {q['p99_ms']:.1f} ms err {q['errors']} | POST /labels p50 {lab['p50_ms']:.1f}"
            f" ms p99 {lab['p99_ms']:.1f} ms err {lab['errors']}",
            flush=True,
        )
    held = [
        r["rate"]
        for r in results
        if r["queries"]["errors"] + r["labels"]["errors"] == 0
        and r["achieved_rps"] >= 0.9 * r["rate"]
    ]
    summary = {"results": results, "largest_rate_held": max(held) if held else None}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_latency.json").write_text(json.dumps(summary, indent=2))
    print(f"largest rate held (no errors, >= 90% of target sent): {summary['largest_rate_held']}")


if __name__ == "__main__":
    main()
