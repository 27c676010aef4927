"""Scoring rounds in the running loop: a fresh Ray Data pass per round vs one warm stream.

The before/after of the loop's main optimisation. Labels arrive one buffer at a time, as an
annotator would send them; for each buffer the benchmark measures how long until the trainer
published the new version and until the first score row computed with it reached the loop,
plus the mean duration of a round. ``stream_rounds=1`` is the old behaviour (every round pays
actor start, model build and executor start); the default streams rounds through warm scorers.

    python -m activestream.benchmarks.rounds --quick --out results/bench
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream.benchmarks.entry import bench_main
from activestream.benchmarks.freshness import SERVICE
from activestream.config import Config
from activestream.pipelines.loop import ActiveLoop
from activestream.pipelines.runtime import init_ray
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/rounds.py",
    *SERVICE,
    "samplers/",
)


def measure(stream_rounds: int, batches: int) -> dict[str, Any]:
    """Label-to-version and label-to-scorer seconds over ``batches`` buffers."""
    cfg = Config().with_overrides(
        {
            "scoring.stream_rounds": stream_rounds,
            "durability.dir": tempfile.mkdtemp(prefix="activestream-bench-"),
        }
    )
    init_ray(cfg.ray)
    pool, _ = resolve_dataset(cfg)
    truth = ground_truth(pool)
    loop = ActiveLoop(cfg, pool)
    loop.start()
    to_version, to_scorer = [], []
    try:
        loop.wait_for(lambda: loop.rounds, 300, "first round")
        for _ in range(batches):
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
    return {
        "label_to_version_p50_s": round(float(np.percentile(to_version, 50)), 3),
        "label_to_scorer_p50_s": round(float(np.percentile(to_scorer, 50)), 3),
        "label_to_scorer_p99_s": round(float(np.percentile(to_scorer, 99)), 3),
        "round_seconds_mean": round(float(np.mean([r.seconds for r in loop.rounds[1:]])), 3),
        "rounds": len(loop.rounds),
    }


def run(quick: bool, out: Path) -> list[dict[str, Any]]:
    """Both modes, same labels, same cores."""
    batches = 6 if quick else 20
    before = measure(1, batches)
    print(f"  rounds, fresh pass per round: {before}", flush=True)
    after = measure(Config().scoring.stream_rounds, batches)
    print(f"  rounds, warm stream:          {after}", flush=True)
    return [
        {
            "name": "loop_label_to_scorer",
            "fresh_pass_p50_s": before["label_to_scorer_p50_s"],
            "stream_p50_s": after["label_to_scorer_p50_s"],
            "fresh_pass_round_s": before["round_seconds_mean"],
            "stream_round_s": after["round_seconds_mean"],
            "ratio": round(before["label_to_scorer_p50_s"] / after["label_to_scorer_p50_s"], 2),
        }
    ]


def main() -> None:  # noqa: D103
    bench_main(run, "rounds", __doc__)


if __name__ == "__main__":
    main()
