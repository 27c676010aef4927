"""``activestream bench``: every benchmark, each beside its baseline, in one run.

Each benchmark module exposes ``run(quick, out) -> list[dict]``; a row is
``{"name": str, ...figures, "ratio": float | None}`` where the ratio compares with the baseline
measured in the same run on the same cores (see each module for its direction). The suite writes
``<out>/bench.json`` (``{"machine": {...}, "results": [...]}``), ``<out>/bench.md`` (the table
the README shows) and the modules' plots, and prints the table.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

BENCHMARKS = {
    "throughput": "activestream.benchmarks.throughput",
    "rounds": "activestream.benchmarks.rounds",
    "broadcast": "activestream.benchmarks.broadcast",
    "label_latency": "activestream.benchmarks.label_latency",
    "serve_latency": "activestream.benchmarks.serve_latency",
    "peer": "activestream.benchmarks.peer",
}
_HIDDEN = {"name", "ratio", "points", "queries", "labels"}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import ray
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "gpus": gpus,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }


def _figures(row: dict[str, Any]) -> str:
    parts = []
    for key, value in row.items():
        if key in _HIDDEN:
            continue
        if isinstance(value, float):
            value = f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one line per result."""
    lines = ["| benchmark | figures | ratio |", "|---|---|---|"]
    for row in results:
        ratio = "" if row.get("ratio") is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['name']} | {_figures(row)} | {ratio} |")
    return "\n".join(lines)


def run_all(quick: bool, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen benchmarks (all by default) and write bench.json and bench.md."""
    from activestream.config import Config
    from activestream.pipelines.runtime import init_ray

    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    out.mkdir(parents=True, exist_ok=True)
    init_ray(Config().ray)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the suite prints its own progress
    report: dict[str, Any] = {"machine": machine(), "quick": quick, "results": []}
    for i, name in enumerate(names, 1):
        began = time.perf_counter()
        print(f"[{i}/{len(names)}] {name}", flush=True)
        module = importlib.import_module(BENCHMARKS[name])
        report["results"].extend(module.run(quick, out))
        print(f"[{i}/{len(names)}] {name} done in {time.perf_counter() - began:.0f} s", flush=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2))  # partial results survive
    header = (
        f"Measured {report['machine']['when']} on {report['machine']['cores']} cores "
        f"({report['machine']['cpu']}), GPUs: {', '.join(report['machine']['gpus']) or 'none'}"
        f"{', quick mode' if quick else ''}.\n\n"
    )
    (out / "bench.md").write_text(header + table(report["results"]) + "\n")
    print(header + table(report["results"]))
    return report
