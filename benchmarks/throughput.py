"""Scoring throughput against a bare torch loop, and how scoring scales with the pool.

Distribution is only worth it if it costs almost nothing: the Ray Data scorer pool is run side by
side with a bare PyTorch loop over the same Parquet shards, the same model and sampler, and the
same total number of torch threads (scorers x threads per scorer), in one process run.

Three figures per model:

* ``bare``: read each shard with pyarrow, decode, forward, softmax, sampler, top-k, on the
  device the scorers pick (the GPU where there is one).
* ``cold``: one :func:`activestream.pipelines.scoring.score_pass`, fixed costs included (actor
start,
  model build, executor start): what a fresh pass per round pays.
* ``warm``: one streaming pass that cycles over the shards several times, timed from the end of
  the first cycle: what scorers that stay alive between rounds deliver.

The scale part scores 10k, 100k (and 1M in full mode) synthetic rows and samples the resident
memory of every process of the Ray session while it runs: time should grow linearly and memory
stay flat, because nothing is materialized.

    python -m activestream.benchmarks.throughput --quick --out results/bench
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from activestream import samplers
from activestream.config import Config
from activestream.models import build_model
from activestream.models.parts import pick_device
from activestream.pipelines.scoring import scored_dataset
from activestream.sources.shards import ShardSet, pixels_to_array
from activestream.sources.synthetic import make_synthetic_shards


def bare_loop(cfg: Config, shards: ShardSet, threads: int) -> float:
    """Rows/s of a hand-written torch loop doing the scorer's work in this process."""
    torch.set_num_threads(threads)
    device = pick_device()  # the scorers' choice: the GPU where there is one
    model = (
        build_model(
            cfg.model.factory, shape=shards.shape, num_classes=len(shards.classes), seed=cfg.seed
        )
        .to(device)
        .eval()
    )
    score = samplers.get(cfg.sampling.sampler, np.random.default_rng(cfg.seed))
    top = samplers.TopK(cfg.sampling.candidates)
    began, rows = time.perf_counter(), 0
    with torch.inference_mode():
        for path in shards.paths:
            with shards.filesystem.open_input_file(path) as fh:
                table = pq.read_table(fh, columns=["id", "pixels"])
            for batch in table.to_batches(max_chunksize=cfg.scoring.batch_size):
                x = torch.from_numpy(pixels_to_array(batch.column("pixels"), shards.shape))
                logits = model(x.to(device, non_blocking=True))
                probs = torch.softmax(logits.float(), dim=1).double().cpu().numpy()
                ids = batch.column("id").to_numpy(zero_copy_only=False)
                top.push(ids, score(probs), np.zeros(len(ids), np.int64))
                rows += batch.num_rows
    return rows / (time.perf_counter() - began)


def ray_pass(cfg: Config, shards: ShardSet, cycles: int = 1) -> tuple[float, float]:
    """(rows/s of the whole pass, rows/s after the first cycle) through the scorer pool."""
    looped = shards.subset([i for _ in range(cycles) for i in range(len(shards.paths))])
    began = time.perf_counter()
    rows, first_cycle_end = 0, None
    for batch in scored_dataset(cfg, looped).iter_batches(batch_format="pyarrow", batch_size=None):
        rows += batch.num_rows
        if first_cycle_end is None and rows >= shards.num_rows:
            first_cycle_end = (time.perf_counter(), rows)
    total = time.perf_counter() - began
    warm = float("nan")
    if cycles > 1 and first_cycle_end is not None:
        t1, r1 = first_cycle_end
        warm = (rows - r1) / (began + total - t1)
    return rows / total, warm


class MemorySampler:
    """Peak total memory (PSS) of this process and every Ray worker, sampled in a thread."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        """Proportional set size: shared pages (the object store) are counted once overall."""
        import psutil

        total = 0
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["pid"] == os.getpid() or "ray::" in cmd or "raylet" in cmd:
                try:
                    total += proc.memory_full_info().pss
                except (psutil.Error, AttributeError):
                    continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self._total())

    @property
    def added(self) -> int:
        """Peak above what the session held when sampling began (idle workers, the driver)."""
        return max(0, self.peak - self.start)

    def __enter__(self) -> MemorySampler:
        self.start = self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
    out = root / f"synthetic-{rows}"
    # Fixed-size shards, as a real pool has: memory in flight depends on the shard (block) size
    # and the number of tasks at once, never on the pool size.
    return make_synthetic_shards(
        str(out), rows, rows_per_shard=min(rows // 4, 10_000), progress=False
    )


def run_throughput(quick: bool, root: Path) -> list[dict[str, Any]]:
    """Bare loop vs scorer pool (cold and warm) for the digits CNN and resnet18."""
    results = []
    for arch, rows in (
        ("digits_cnn", 8_000 if quick else 64_000),
        ("resnet18", 1_000 if quick else 8_000),
    ):
        cfg = _cfg(arch, str(root))
        shards = _shards(root, rows)
        threads = cfg.scoring.num_scorers * cfg.scoring.threads_per_scorer
        bare = bare_loop(cfg, shards, threads)
        cold, _ = ray_pass(cfg, shards)
        _, warm = ray_pass(cfg, shards, cycles=3)
        print(
            f"  throughput {arch}: bare {bare:,.0f} rows/s, pool cold {cold:,.0f}, "
            f"warm {warm:,.0f}",
            flush=True,
        )
        results.append(
            {
                "name": f"scoring_{arch}",
                "rows": rows,
                "threads": threads,
                "bare_rows_s": round(bare, 1),
                "pool_cold_rows_s": round(cold, 1),
                "pool_warm_rows_s": round(warm, 1),
                "cold_ratio": round(cold / bare, 3),
                "ratio": round(warm / bare, 3),
            }
        )
    return results


def run_scale(quick: bool, root: Path, out: Path) -> list[dict[str, Any]]:
    """Scoring time and peak memory as the pool grows 10x at a time."""
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    cfg = _cfg("digits_cnn", str(root))
    points = []
    for rows in sizes:
        shards = _shards(root, rows)
        with MemorySampler() as mem:
            began = time.perf_counter()
            rate, _ = ray_pass(cfg, shards)
            seconds = time.perf_counter() - began
        points.append(
            {
                "rows": rows,
                "seconds": round(seconds, 2),
                "peak_pss_mb": round(mem.peak / 2**20),
                "added_pss_mb": round(mem.added / 2**20),
            }
        )
        print(
            f"  scale {rows:>9,} rows: {seconds:.1f} s, peak PSS {mem.peak / 2**20:,.0f} MB, "
            f"{mem.added / 2**20:,.0f} MB above the start",
            flush=True,
        )
    first, last = points[0], points[-1]
    growth = last["rows"] / first["rows"]
    _plot_scale(points, out / "scale.png")
    return [
        {
            "name": "scale_digits_cnn",
            "points": points,
            "time_growth_per_10x_rows": round(
                (last["seconds"] / first["seconds"]) ** (1 / np.log10(growth)), 2
            ),
            "memory_growth": round(last["peak_pss_mb"] / first["peak_pss_mb"], 2),
            "added_mb_smallest_largest": [first["added_pss_mb"], last["added_pss_mb"]],
            "ratio": round((last["seconds"] / first["seconds"]) / growth, 3),
        }
    ]


def _plot_scale(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p["rows"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.loglog(rows, [p["seconds"] for p in points], "o-", label="measured")
    ax1.loglog(rows, [points[0]["seconds"] * r / rows[0] for r in rows], "--", label="linear")
    ax1.set(xlabel="rows", ylabel="seconds", title="scoring time")
    ax1.legend()
    ax2.semilogx(rows, [p["peak_pss_mb"] for p in points], "o-", label="peak")
    ax2.semilogx(rows, [p["added_pss_mb"] for p in points], "s--", label="added by the pass")
    ax2.legend()
    ax2.set(xlabel="rows", ylabel="MB", title="peak memory, PSS (Ray session)", ylim=(0, None))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(quick: bool, out: Path) -> list[dict[str, Any]]:
    """Both parts, on synthetic shards written under ``out/data``."""
    root = out / "data"
    return run_throughput(quick, root) + run_scale(quick, root, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args()
    from activestream.pipelines.runtime import init_ray

    init_ray(Config().ray)
    out = Path(args.out)
    results = run(args.quick, out)
    (out / "throughput.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
