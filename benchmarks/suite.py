"""``activestream bench``: every benchmark, each beside its baseline, in one run.

Each benchmark module exposes ``run(size, out) -> list[dict]`` (sizes: :mod:`.entry`); a row is
``{"name": str, ...figures, "ratio": float | None}`` where the ratio compares with the baseline
measured in the same run on the same cores (see each module for its direction). The suite writes
``<out>/bench.json`` (``{"machine": {...}, "results": [...]}``, machine including commit and
package versions), ``<out>/bench.md`` (every row) and the modules' plots, and prints the
headline table. ``activestream bench report`` renders the README's and docs' tables from the
committed ``docs/bench/bench.json`` (:mod:`activestream.benchmarks.report`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from activestream.benchmarks import headline

BENCHMARKS = {
    "throughput": "activestream.benchmarks.throughput",
    "rounds": "activestream.benchmarks.rounds",
    "broadcast": "activestream.benchmarks.broadcast",
    "label_latency": "activestream.benchmarks.label_latency",
    "keep_pace": "activestream.benchmarks.keep_pace",
    "new_data": "activestream.benchmarks.new_data",
    "serve_latency": "activestream.benchmarks.serve_latency",
    "label_studio_push": "activestream.benchmarks.label_studio_push",
    "peer": "activestream.benchmarks.peer",
    "forgetting": "activestream.benchmarks.forgetting",
    "fault_recovery": "activestream.benchmarks.fault_recovery:suite",
    "kill_each": "activestream.benchmarks.kill_each:suite",
    "startup": "activestream.benchmarks.startup:suite",
}
PACKAGES = (
    "torch",
    "torchvision",
    "ray",
    "pyarrow",
    "numpy",
    "fastapi",
    "scikit-learn",
    "modAL-python",
    "skorch",
)


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


#: What figures never measure: the pages and JSON they are written to (a study writes its parts
#: one by one, and the first part's JSON must not make the second look measured off a commit).
OUTPUTS = ("docs", "README.md")


def commit() -> str | None:
    """The checkout's commit (``+dirty`` when code differs from it), or None outside git.

    Files git does not know (and does not ignore) count: a new benchmark module is measured
    code that no commit holds yet.
    """
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        excluded = [f":(exclude){path}" for path in OUTPUTS]
        dirty = _git("status", "--porcelain", "--", ".", *excluded)  # new files count too
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def require_clean(out: Path | str) -> None:
    """Refuse to write figures into the docs from code that is in no commit.

    Published figures name the commit they measured (``bench report --stale`` compares it
    with ``HEAD``); a dirty or unknown one cannot be checked, so it is refused up front.
    Writing anywhere else (``--out results/...``) is always allowed.

    Raises:
        SystemExit: ``out`` is inside the checkout's ``docs/`` and the code is not committed.
    """
    docs = (Path(__file__).resolve().parents[1] / "docs").resolve()
    target = Path(out).resolve()
    if target != docs and docs not in target.parents:
        return
    found = commit()
    if found is None or found.endswith("+dirty"):
        raise SystemExit(
            f"refusing to write figures to {out}: the docs take figures from a clean commit "
            f"only (this checkout: {found or 'not a git checkout'}); commit first, or write "
            "them elsewhere with --out"
        )


def require_publishable(out: Path | str, size: str) -> None:
    """:func:`require_clean`, and no tiny figures in the docs at all.

    Raises:
        SystemExit: ``out`` is inside ``docs/`` and the code is dirty or the size is tiny.
    """
    docs = (Path(__file__).resolve().parents[1] / "docs").resolve()
    target = Path(out).resolve()
    if size == "tiny" and (target == docs or docs in target.parents):
        raise SystemExit(
            f"refusing to write tiny figures to {out}: tiny runs check that the code runs, "
            "their numbers mean nothing; write them elsewhere with --out"
        )
    require_clean(out)


def versions() -> dict[str, str | None]:
    """Installed versions of the packages the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict[str, Any]:
    """What the numbers were measured on, when, from which commit, with which packages."""
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
        "commit": commit(),
        "packages": versions(),
    }


def size_of_report(report: dict[str, Any]) -> str:
    """The size a bench.json was measured at (older files record only ``quick``)."""
    return str(report.get("size") or ("quick" if report.get("quick") else "full"))


def run_all(
    size: str, out: Path, only: list[str] | None = None, *, merge: bool = False
) -> dict[str, Any]:
    """Run the chosen benchmarks (all by default) at ``size`` and write bench.json and bench.md.

    ``size`` is one of :data:`activestream.benchmarks.entry.SIZES` (``entry`` imports this
    module, so the type is named there, not imported here).

    With ``merge``, rows of the other benchmarks already in ``out/bench.json`` are kept and
    the record lists each run's machine, date and commit (``runs``), so a table never hides
    that its rows came from two runs.
    """
    from activestream.config import Config
    from activestream.pipelines.runtime import init_ray

    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    previous, spent = out / "bench.json", 0
    old = json.loads(previous.read_text()) if merge and previous.exists() else None
    if old is not None:  # one table, one size: quick rows beside full ones mislead
        held = size_of_report(old)
        if held != size:
            flag = "no size flag" if held == "full" else f"--{held}"
            raise ValueError(f"{previous} holds {held} figures: merge a {held} run ({flag})")
    out.mkdir(parents=True, exist_ok=True)
    init_ray(Config().ray)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the suite prints its own progress
    report: dict[str, Any] = {
        "machine": machine(),
        "quick": size == "quick",
        "size": size,
        "results": [],
    }
    if old is not None:
        kept = [r for r in old["results"] if r.get("benchmark") not in names]
        runs = old.get("runs") or [
            {"benchmarks": sorted({r["benchmark"] for r in kept}), "machine": old["machine"]}
        ]
        report = {
            **old,
            "results": kept,
            "runs": [*runs, {"benchmarks": names, "machine": report["machine"]}],
        }
        spent = old.get("seconds", 0)
    began_all = time.perf_counter()
    for i, name in enumerate(names, 1):
        began = time.perf_counter()
        print(f"[{i}/{len(names)}] {name}", flush=True)
        module_name, _, function = BENCHMARKS[name].partition(":")
        run = getattr(importlib.import_module(module_name), function or "run")
        report["results"].extend({"benchmark": name, **row} for row in run(size, out))
        print(f"[{i}/{len(names)}] {name} done in {time.perf_counter() - began:.0f} s", flush=True)
        report["seconds"] = spent + round(time.perf_counter() - began_all)
        # Per benchmark too (merged runs keep the others'): what a rerun of one will cost.
        took = report.setdefault("benchmark_seconds", {})
        took[name] = round(time.perf_counter() - began)
        (out / "bench.json").write_text(json.dumps(report, indent=1))  # partial results survive
    (out / "bench.md").write_text(headline.full(report))
    print(headline.headline(report))
    return report
