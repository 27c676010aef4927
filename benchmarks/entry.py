"""One command line for every suite benchmark run on its own, and the sizes they run at.

``python -m activestream.benchmarks.<name> [--tiny | --quick] [--out DIR]`` runs the same
``run(size, out)`` that ``activestream bench --only <name>`` runs and writes its rows to
``<out>/<name>.json``, so a single benchmark can be repeated without the suite's report.

Sizes: ``full`` is what the docs publish from a clean commit; ``quick`` is laptop-sized (the
committed quick-mode run); ``tiny`` runs the same code on sizes of seconds, so CI notices a
renamed function or a changed return the day it happens, not at the next rerun. Tiny figures
mean nothing and are never written into ``docs/``.

    >>> pick("tiny", tiny=2, quick=60, full=300)
    2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

Size = Literal["tiny", "quick", "full"]
SIZES: tuple[str, ...] = get_args(Size)
Run = Callable[[Size, Path], list[dict[str, Any]]]
T = TypeVar("T")


def pick(size: Size, *, tiny: T, quick: T, full: T) -> T:
    """The value for ``size``: one line per knob keeps the three sizes side by side."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    return {"tiny": tiny, "quick": quick, "full": full}[size]


def add_tiny_argument(parser: argparse.ArgumentParser | argparse._ActionsContainer) -> None:
    """``--tiny``: sizes of seconds, the same code (CI runs it; never for docs)."""
    parser.add_argument(
        "--tiny", action="store_true", help="seconds, same code (a smoke run; never for docs)"
    )


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tiny`` and ``--quick`` (exclusive); neither means full size."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="laptop-sized")
    add_tiny_argument(group)


def size_of(args: argparse.Namespace) -> Size:
    """The size the parsed ``--tiny``/``--quick`` flags ask for."""
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def bench_main(run: Run, name: str, doc: str | None, argv: list[str] | None = None) -> None:
    """Parse the size and ``--out``, run, and write ``<out>/<name>.json``.

    Args:
        run: The benchmark's ``run(size, out)``, as the suite calls it.
        name: The benchmark's name in the suite (and of the JSON file).
        doc: The module docstring; its first line describes the command.
        argv: Arguments (the process's by default).
    """
    parser = argparse.ArgumentParser(description=(doc or name).splitlines()[0])
    add_size_arguments(parser)
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)
    from activestream.benchmarks.suite import require_publishable

    out, size = Path(args.out), size_of(args)
    require_publishable(out, size)
    out.mkdir(parents=True, exist_ok=True)
    rows = run(size, out)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    print(f"{name}: {len(rows)} rows -> {out / f'{name}.json'}")
