"""Delay from a label batch accepted to scorers using the version it produced (p50, p99).

Runs the real loop on Ray (trainer actor, board, Ray Data scoring rounds) on the bundled
digits: an oracle labels ``buffer_size`` leased queries, waits for the version they produce,
then for the first score row tagged with that version.

    python -m benchmarks.label_latency --batches 8 --out results/latency
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.config import Config
from pipelines.loop import ActiveLoop
from pipelines.runtime import init_ray
from pipelines.sources import ground_truth, resolve_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", default="results/latency")
    args = parser.parse_args()
    cfg = Config().with_overrides({"durability.dir": tempfile.mkdtemp(prefix="activestream-")})
    init_ray(cfg.ray)
    pool, _ = resolve_dataset(cfg)
    truth = ground_truth(pool)
    loop = ActiveLoop(cfg, pool)
    loop.start()
    to_version, to_scorer = [], []
    try:
        loop.wait_for(lambda: loop.rounds, 300, "first round")
        for _ in range(args.batches):
            queries = loop.lease(cfg.training.buffer_size)
            target = loop.version() + 1
            loop.add_labels([{"id": q.id, "label": truth[q.id]} for q in queries])
            accepted = time.time()
            loop.wait_for(lambda t=target: loop.version() >= t, 120, "new version")
            to_version.append(time.time() - accepted)

            def seen(t: int = target) -> float | None:
                times = [s for r in loop.rounds for v, s in r.first_seen.items() if v >= t]
                return min(times) if times else None

            loop.wait_for(lambda: seen() is not None, 300, "scores with the new version")
            to_scorer.append(seen() - accepted)
    finally:
        loop.stop()
    result = {
        "batches": args.batches,
        "label_to_version_s": {
            "p50": float(np.percentile(to_version, 50)),
            "p99": float(np.percentile(to_version, 99)),
        },
        "label_to_scorer_s": {
            "p50": float(np.percentile(to_scorer, 50)),
            "p99": float(np.percentile(to_scorer, 99)),
        },
        "round_seconds_mean": float(np.mean([r.seconds for r in loop.rounds])),
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_latency.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
