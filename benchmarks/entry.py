"""One command line for every suite benchmark run on its own.

``python -m activestream.benchmarks.<name> [--quick] [--out DIR]`` runs the same ``run(quick,
out)`` that ``activestream bench --only <name>`` runs and writes its rows to
``<out>/<name>.json``, so a single benchmark can be repeated without the suite's report.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = Callable[[bool, Path], list[dict[str, Any]]]


def bench_main(run: Run, name: str, doc: str | None, argv: list[str] | None = None) -> None:
    """Parse ``--quick`` and ``--out``, run, and write ``<out>/<name>.json``.

    Args:
        run: The benchmark's ``run(quick, out)``, as the suite calls it.
        name: The benchmark's name in the suite (and of the JSON file).
        doc: The module docstring; its first line describes the command.
        argv: Arguments (the process's by default).
    """
    parser = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="laptop-sized")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)
    from activestream.benchmarks.suite import require_clean

    out = Path(args.out)
    require_clean(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(run(args.quick, out), indent=2))
