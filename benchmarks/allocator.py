"""Arrow's allocator in Ray's read workers: what a Parquet read pass leaves them holding.

A pool shard is one Parquet row group of ``list<uint8>`` images; decoding it builds definition
and repetition levels for every value, and what Arrow frees goes back to its allocator, not
always to the system. Ray keeps the read workers alive as idle workers, so what the allocator
keeps stays for the session. This benchmark reads the same synthetic pool once per allocator
(``ARROW_DEFAULT_MEMORY_POOL``: ``mimalloc``, Arrow's default in the wheels; ``jemalloc``;
``system``), each in a fresh local Ray session, and measures every worker's unique memory
(USS) after the pass, with the pass's seconds.

    python -m activestream.benchmarks.allocator --out docs/allocator          # 100,000 rows
    python -m activestream.benchmarks.allocator --quick --out results/alloc  # 20,000 rows
    python -m activestream.benchmarks.allocator --render   # only re-render docs/allocator.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from activestream.benchmarks.entry import Size, add_size_arguments, pick, size_of
from activestream.benchmarks.pages import Page
from activestream.sources.shards import ShardSet, read_ray_dataset

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = ("benchmarks/allocator.py", "sources/shards.py", "pipelines/runtime.py")

PAGE = Page(
    "allocator",
    "Arrow's allocator in Ray's read workers",
    "allocator",
    "allocator.json",
    note="*Held after the pass*: unique memory (USS) of each Ray worker once a read-only pass "
    "over the pool has finished (the read workers stay alive, idle).",
)
ALLOCATORS = ("mimalloc", "jemalloc", "system")
ROWS_PER_SHARD = 10_000
READ_CONCURRENCY = 4


def _worker_uss() -> list[int]:
    """USS bytes of every Ray worker process this driver started (idle ones included)."""
    import psutil

    held = []
    for proc in psutil.Process().children(recursive=True):
        try:
            text = " ".join(proc.cmdline())
            if "default_worker.py" in text or text.startswith("ray::"):
                held.append(proc.memory_full_info().uss)
        except psutil.Error:
            continue
    return held


def measure(shards: ShardSet, allocator: str) -> dict[str, Any]:
    """One read-only pass over ``shards`` in a fresh Ray session using ``allocator``."""
    import ray

    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = allocator  # the local cluster inherits it
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        began = time.perf_counter()
        rows = 0
        ds = read_ray_dataset(shards, read_concurrency=READ_CONCURRENCY)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            rows += batch.num_rows
        seconds = time.perf_counter() - began
        time.sleep(2.0)  # the read tasks return; their workers stay, idle
        held = sorted(_worker_uss(), reverse=True)
    finally:
        ray.shutdown()
        os.environ.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    return {
        "allocator": allocator,
        "rows": rows,
        "seconds": round(seconds, 2),
        "workers": len(held),
        "held_mb": [round(b / 2**20) for b in held],
        "held_total_mb": round(sum(held) / 2**20),
    }


def run(size: Size) -> dict[str, Any]:
    """Every allocator over the same pool; the JSON's content."""
    from activestream.benchmarks.suite import machine
    from activestream.sources.synthetic import make_synthetic_shards

    rows = pick(size, tiny=2_000, quick=20_000, full=100_000)
    with tempfile.TemporaryDirectory(prefix="activestream-alloc-") as home:
        shards = make_synthetic_shards(
            home, rows, rows_per_shard=ROWS_PER_SHARD, shape=(3, 32, 32), test_rows=0,
            progress=False,
        )  # fmt: skip
        for path in Path(home).rglob("*.parquet"):
            path.read_bytes()  # the page cache warm for every pass, the first included
        passes = []
        # tiny: one Ray session (Arrow's default) runs every line; each costs ~10 s to start
        for allocator in pick(size, tiny=ALLOCATORS[:1], quick=ALLOCATORS, full=ALLOCATORS):
            passes.append(measure(shards, allocator))
            print(passes[-1], flush=True)
    return {
        "machine": machine(),
        "rows": rows,
        "rows_per_shard": ROWS_PER_SHARD,
        "read_concurrency": READ_CONCURRENCY,
        "passes": passes,
    }


def render_markdown(data: dict[str, Any]) -> str:
    """The table, one allocator per row, and which one holds least."""
    m = data["machine"]
    lines = [
        f"Measured {m['when']} on {m['cores']} cores ({m['cpu']}), commit {m.get('commit')}: "
        f"{data['rows']:,} rows of 3x32x32 `list<uint8>` images in shards of "
        f"{data['rows_per_shard']:,}, read concurrency {data['read_concurrency']}, a fresh "
        "local Ray session per allocator.",
        "",
        "| allocator | pass seconds | workers | held after the pass, MB each | in all, MB |",
        "|---|---:|---:|---|---:|",
    ]
    for p in data["passes"]:
        each = ", ".join(f"{mb:,}" for mb in p["held_mb"]) or "-"
        lines.append(
            f"| `{p['allocator']}` | {p['seconds']:.1f} | {p['workers']} | {each} | "
            f"{p['held_total_mb']:,} |"
        )
    best = min(data["passes"], key=lambda p: p["held_total_mb"])
    default = next(p for p in data["passes"] if p["allocator"] == "mimalloc")
    lines += [
        "",
        f"Least held: `{best['allocator']}`, {best['held_total_mb']:,} MB in all against "
        f"{default['held_total_mb']:,} MB with Arrow's default (`mimalloc`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/allocator")
    add_size_arguments(parser)
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(size_of(args)),
        render=render_markdown,
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
