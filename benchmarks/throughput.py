"""Scoring throughput against the strongest plain-torch baselines, and how it scales.

Distribution is only worth it if it costs almost nothing: the Ray Data scorer pool is run side by
side with the baselines of :mod:`activestream.benchmarks.baselines` over the same Parquet shards,
with the same scorer code, model, sampler and top-k, on the same device, in one process run:

* ``dataloader`` (the ratio's baseline): a ``torch.utils.data.DataLoader`` with worker processes
  reading and decoding, the best of every (workers, threads) setting on this machine;
* ``single_process``: read, decode and score in one process (a second, labelled baseline);
* ``pool_warm``: one streaming pass that cycles over the shards three times, timed from the end
  of the first cycle: what scorers that stay alive between rounds deliver (the continuous loop);
* ``pool_cold``: one :func:`~activestream.pipelines.scoring.score_pass`, actor start and model
  build included: what a fresh pass per round would pay.

Baselines are timed on a second pass after a discarded warm-up pass. Every method keeps its
top-k; the rows it reports must equal the pool's (same rows scored, same scores), or the row is
marked ``"same_top_k": false``.

The scale part scores 10k and 100k (and 1M in full mode) synthetic rows in shards of a fixed
size (:mod:`activestream.benchmarks.pool_scale`), with every process's memory sampled.

    python -m activestream.benchmarks.throughput --quick --out results/bench
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream.benchmarks import baselines
from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import SCORING
from activestream.config import Config
from activestream.pipelines.scoring import ScoreResult, _Round, scored_dataset
from activestream.sources.shards import ShardSet
from activestream.sources.synthetic import make_synthetic_shards

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/throughput.py",
    *SCORING,
    "samplers/",
    "benchmarks/baselines.py",
)

ROWS_PER_SHARD = 1_000  # throughput part: several shards per scorer, as a real pool has
SCALE_ROWS_PER_SHARD = 10_000


def ray_pass(cfg: Config, shards: ShardSet, cycles: int = 1) -> tuple[float, float, ScoreResult]:
    """(rows/s of the whole pass, rows/s after the first cycle, what the pass kept)."""
    looped = shards.subset([i for _ in range(cycles) for i in range(len(shards.paths))])
    round_ = _Round(cfg.sampling.candidates, np.random.default_rng(cfg.seed))
    began = time.perf_counter()
    first_cycle_end = None
    for batch in scored_dataset(cfg, looped).iter_batches(batch_format="pyarrow", batch_size=None):
        if batch.num_rows:
            round_.push(batch)
        if first_cycle_end is None and round_.rows >= shards.num_rows:
            first_cycle_end = (time.perf_counter(), round_.rows)
    total = time.perf_counter() - began
    warm = float("nan")
    if cycles > 1 and first_cycle_end is not None:
        t1, r1 = first_cycle_end
        warm = (round_.rows - r1) / (began + total - t1)
    return round_.rows / total, warm, round_.result()


def same_top_k(a: ScoreResult, b: ScoreResult, tol: float = 1e-6) -> bool:
    """Whether two passes kept the same rows with the same scores (to ``tol``)."""
    ids_a, ids_b = a.top.ids.tolist(), b.top.ids.tolist()
    if sorted(ids_a) != sorted(ids_b):
        return False
    by_id = dict(zip(ids_b, b.top.scores.tolist(), strict=True))
    return all(abs(s - by_id[i]) <= tol for i, s in zip(ids_a, a.top.scores.tolist(), strict=True))


def _cfg(arch: str, cache: str) -> Config:
    return Config().with_overrides(
        {
            "model.factory": arch,
            "data.cache_dir": cache,
            "scoring.num_scorers": 2,
            "scoring.threads_per_scorer": 1,
            "scoring.nice": 0,  # nothing else competes here; priorities would only skew
        }
    )


def _shards(root: Path, rows: int) -> ShardSet:
    from activestream.sources.shards import open_shards

    home = root / f"synthetic-{rows}-per-{ROWS_PER_SHARD}"
    if (home / "pool").exists():
        shards = open_shards(str(home / "pool"))
        if shards.num_rows == rows:
            return shards
    return make_synthetic_shards(str(home), rows, rows_per_shard=ROWS_PER_SHARD, progress=False)


def compare(cfg: Config, shards: ShardSet, cores: int | None = None) -> dict[str, Any]:
    """Every method on the same shards: rows/s each, and whether each kept the pool's top-k."""
    threads = cfg.scoring.num_scorers * cfg.scoring.threads_per_scorer
    single = baselines.single_process(cfg, shards, threads)
    best, loader, tried = baselines.best_dataloader(cfg, shards, cores)
    cold, _, cold_result = ray_pass(cfg, shards)
    _, warm, warm_result = ray_pass(cfg, shards, cycles=3)
    return {
        "rows": shards.num_rows,
        "rows_per_shard": ROWS_PER_SHARD,
        "pool": f"{cfg.scoring.num_scorers} scorers x {cfg.scoring.threads_per_scorer} thread",
        "single_process_threads": threads,
        "single_process_rows_s": round(single.rows_per_s, 1),
        "dataloader_rows_s": round(loader.rows_per_s, 1),
        "dataloader_best_setting": best,
        "dataloader_all_settings": tried,
        "pool_cold_rows_s": round(cold, 1),
        "pool_warm_rows_s": round(warm, 1),
        "rows_scored": {
            "single_process": single.result.rows,
            "dataloader": loader.result.rows,
            "pool_cold": cold_result.rows,
        },
        "same_top_k": same_top_k(single.result, cold_result)
        and same_top_k(loader.result, cold_result)
        and same_top_k(warm_result, cold_result),
        "cold_ratio": round(cold / loader.rows_per_s, 3),
        "single_process_ratio": round(warm / single.rows_per_s, 3),
        "ratio": round(warm / loader.rows_per_s, 3),
    }


def run_throughput(size: Size, root: Path) -> list[dict[str, Any]]:
    """Baselines vs the scorer pool (cold and warm) for the digits CNN and resnet18."""
    results = []
    models = [
        ("digits_cnn", pick(size, tiny=1_000, quick=8_000, full=64_000)),
        ("resnet18", pick(size, tiny=0, quick=1_000, full=8_000)),  # tiny: one model will do
    ]
    cores = pick(size, tiny=1, quick=None, full=None)  # tiny: one DataLoader setting
    for arch, rows in models:
        if not rows:
            continue
        row = compare(_cfg(arch, str(root)), _shards(root, rows), cores)
        print(
            f"  throughput {arch}: DataLoader {row['dataloader_rows_s']:,.0f} rows/s "
            f"({row['dataloader_best_setting']}), one process {row['single_process_rows_s']:,.0f}"
            f", pool cold {row['pool_cold_rows_s']:,.0f}, warm {row['pool_warm_rows_s']:,.0f}"
            f"; same top-k: {row['same_top_k']}",
            flush=True,
        )
        results.append({"name": f"scoring_{arch}", "model": arch, **row})
    return results


def run_scale(size: Size, root: Path, out: Path) -> list[dict[str, Any]]:
    """One round over 10k, 100k (and 1M) rows in shards of a fixed size, memory sampled."""
    from activestream.benchmarks import pool_scale

    sizes = pick(
        size,
        tiny=[1_000, 2_000],
        quick=[10_000, 100_000],
        full=[10_000, 100_000, 1_000_000],
    )
    per_shard = pick(size, tiny=500, quick=SCALE_ROWS_PER_SHARD, full=SCALE_ROWS_PER_SHARD)
    report = pool_scale.run_sizes(sizes, per_shard, root)
    pool_scale.plot(report, out / "scale.png")
    r = pool_scale.ratios(report["results"], reference=sizes[0])
    return [
        {
            "name": "scale_digits_cnn",
            "points": report["results"],
            "settings": report["settings"],
            "largest_rows": r["largest_rows"],
            "reference_rows": r["reference_rows"],
            "peak_pss_ratio": round(r["peak_pss"], 2),
            "ratio": round(r["time_per_row"], 3),  # time per row, largest / smallest pool
        }
    ]


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """Both parts, on synthetic shards written under ``out/data``."""
    from activestream.pipelines.runtime import init_ray

    init_ray(Config().ray)
    root = out / "data"
    return run_throughput(size, root) + run_scale(size, root, out)


def main() -> None:  # noqa: D103
    bench_main(run, "throughput", __doc__)


if __name__ == "__main__":
    main()
