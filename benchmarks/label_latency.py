"""Label to model: from ``POST /labels`` answered to the new version visible at ``/model``.

What an annotator feels: how long until the labels just sent have changed the model. Measured
through the real app (Serve, ledger, trainer actor) on loopback, once per buffer size: each
sample posts exactly one full buffer of fresh labels and polls ``GET /model`` every 20 ms until
the version moves (polling faster would itself load the 2 cores the app runs on). The goal for
the digits CNN is p50 < 1 s.

    python -m activestream.benchmarks.label_latency --quick --out results/bench
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from activestream.config import Config
from activestream.pipelines.runtime import free_port, init_ray
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth


def _sample(base: str, labels: list[dict[str, Any]], timeout: float = 60.0) -> float:
    before = requests.get(f"{base}/model", timeout=10).json()["version"]
    response = requests.post(f"{base}/labels", json={"labels": labels}, timeout=30)
    response.raise_for_status()
    answered = time.perf_counter()
    deadline = answered + timeout
    while requests.get(f"{base}/model", timeout=10).json()["version"] <= before:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no new version {timeout:.0f} s after a full buffer")
        time.sleep(0.02)
    return time.perf_counter() - answered


def run(quick: bool, out: Path, buffers: tuple[int, ...] = (1, 16, 64)) -> list[dict[str, Any]]:
    """One app per buffer size; p50/p99 of label-to-version seconds."""
    from activestream.deploy import serve_app

    samples = 5 if quick else 20
    results = []
    for buffer in buffers:
        cfg = Config().with_overrides(
            {
                "training.buffer_size": buffer,
                "durability.dir": tempfile.mkdtemp(prefix="activestream-bench-"),
            }
        )
        init_ray(cfg.ray)
        pool, _ = resolve_dataset(cfg)
        items = list(ground_truth(pool).items())
        np.random.default_rng(buffer).shuffle(items)
        with serve_app.running(cfg, port=free_port()) as base:
            seconds = []
            for i in range(samples):
                chunk = items[i * buffer : (i + 1) * buffer]
                seconds.append(_sample(base, [{"id": k, "label": y} for k, y in chunk]))
        p50, p99 = np.percentile(seconds, 50), np.percentile(seconds, 99)
        print(f"  label->model buffer {buffer:>3}: p50 {p50:.3f} s, p99 {p99:.3f} s", flush=True)
        results.append(
            {
                "name": f"label_to_model_buffer_{buffer}",
                "buffer_size": buffer,
                "samples": samples,
                "p50_s": round(float(p50), 3),
                "p99_s": round(float(p99), 3),
                "ratio": None,
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_latency.json").write_text(json.dumps(run(args.quick, out), indent=2))


if __name__ == "__main__":
    main()
