"""Label -> first score with the new model: the running loop's warm stream vs a plain loop.

Labels arrive one buffer at a time, as an annotator would send them; for each buffer the
benchmark measures how long until the new version exists and until the first score row computed
with it exists, plus the mean duration of a round. Three ways, same labels, same cores:

* the loop's default: rounds stream through warm Ray Data scorers (``stream_rounds``);
* the strongest fair baseline: a plain in-process loop (:func:`in_process`) with the same
  trainer and scorer classes, which trains on the buffer and then rescores the pool in the
  same process, in batches of ``scoring.batch_size``: no actors, no object store, nothing to
  wait on but the work itself (what one machine's script does);
* the loop's old mode, a fresh Ray Data pass per round (``stream_rounds=1``: every round pays
  actor start, model build and executor start), as "also measured".

    python -m activestream.benchmarks.rounds --quick --out results/bench
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream.benchmarks.entry import Size, bench_main, pick
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


def in_process(batches: int) -> dict[str, Any]:
    """The plain loop: train on each buffer, then rescore the pool, all in this process."""
    from activestream.actors.items import ItemStore
    from activestream.actors.scorer import Scorer
    from activestream.actors.trainer import Trainer
    from activestream.sources.shards import load_arrays

    cfg = Config()
    pool, _ = resolve_dataset(cfg)
    truth = ground_truth(pool)
    ids, x_pool, _ = load_arrays(pool)
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=cfg.seed)
    scorer = Scorer(model=cfg.model, shape=pool.shape, num_classes=len(pool.classes))
    size, buffer = cfg.scoring.batch_size, cfg.training.buffer_size
    order = np.random.default_rng(cfg.seed).permutation(len(ids))
    scorer.set_weights(trainer.state_arrays(), trainer.version)
    scorer.outputs(x_pool[:size])  # warmed up, as the loop's scorers are
    to_version, to_scorer, rounds = [], [], []
    for k in range(batches):
        rows = order[k * buffer : (k + 1) * buffer]
        accepted = time.perf_counter()
        trainer.add_labels([{"id": ids[r], "label": truth[ids[r]]} for r in rows])
        trainer.partial_fit()
        scorer.set_weights(trainer.state_arrays(), trainer.version)
        to_version.append(time.perf_counter() - accepted)
        for start in range(0, len(ids), size):
            scorer.outputs(x_pool[start : start + size])
            if start == 0:
                to_scorer.append(time.perf_counter() - accepted)
        rounds.append(time.perf_counter() - accepted - to_version[-1])
    return {
        "label_to_version_p50_s": round(float(np.percentile(to_version, 50)), 3),
        "label_to_scorer_p50_s": round(float(np.percentile(to_scorer, 50)), 3),
        "label_to_scorer_p99_s": round(float(np.percentile(to_scorer, 99)), 3),
        "round_seconds_mean": round(float(np.mean(rounds)), 3),
        "rounds": batches,
    }


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """Every way, same labels, same cores."""
    batches = pick(size, tiny=2, quick=6, full=20)
    plain = in_process(batches)
    print(f"  rounds, plain in-process loop: {plain}", flush=True)
    before = measure(1, batches)
    print(f"  rounds, fresh pass per round: {before}", flush=True)
    after = measure(Config().scoring.stream_rounds, batches)
    print(f"  rounds, warm stream:          {after}", flush=True)
    return [
        {
            "name": "loop_label_to_scorer",
            "in_process_p50_s": plain["label_to_scorer_p50_s"],
            "fresh_pass_p50_s": before["label_to_scorer_p50_s"],
            "stream_p50_s": after["label_to_scorer_p50_s"],
            "in_process_round_s": plain["round_seconds_mean"],
            "fresh_pass_round_s": before["round_seconds_mean"],
            "stream_round_s": after["round_seconds_mean"],
            # against the strongest baseline: above 1, the loop scores with a new model sooner
            "ratio": round(plain["label_to_scorer_p50_s"] / after["label_to_scorer_p50_s"], 2),
            "fresh_pass_ratio": round(
                before["label_to_scorer_p50_s"] / after["label_to_scorer_p50_s"], 2
            ),
        }
    ]


def main() -> None:  # noqa: D103
    bench_main(run, "rounds", __doc__)


if __name__ == "__main__":
    main()
