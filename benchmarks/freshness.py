"""Which published figures were measured on code that has changed since.

Every benchmark module declares ``MEASURES``: the project paths (files, or folders ending in
``/``) whose code its figures measure, its own module included. Each committed JSON records the
commit it was measured at (``machine.commit``; ``docs/bench/bench.json`` per run). A figure is
stale when any measured path differs between that commit and ``HEAD`` (paths no figure runs,
:data:`UNREACHED`, do not count), when the commit was dirty (``+dirty``: the measured code is
not in any commit), unknown to this clone, or not recorded at all. ``activestream bench report
--check`` lists them.

    >>> stale_reason(None, changed=[])
    'records no commit'
    >>> stale_reason("03bd80a0abf5+dirty", changed=[])
    'measured on a dirty tree (03bd80a0abf5+dirty)'
    >>> stale_reason("03bd80a0abf5", changed=["actors/trainer.py"])
    'actors/trainer.py changed since 03bd80a0abf5'
    >>> stale_reason("03bd80a0abf5", changed=[]) is None
    True
"""

from __future__ import annotations

import importlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# What many benchmarks measure (each module's MEASURES names its own file and these).
SERVICE = ("actors/", "deploy/", "pipelines/", "config.py", "models/", "sources/")
SCORING = ("actors/scorer.py", "pipelines/scoring.py", "sources/", "models/", "config.py")
LEARNING = (
    "actors/trainer.py",
    "actors/queue.py",
    "pipelines/simulate.py",
    "samplers/",
    "models/",
    "config.py",
)
#: Code no published figure runs: the detection task's own modules, which nothing else in the
#: package imports yet (tests/test_freshness.py reads every import and every module name in the
#: package to hold that). A change there leaves every figure fresh. The day other code imports
#: one of them, that test fails until the path leaves this list, and then every figure measuring
#: the importer goes stale, as it should. A benchmark that names such a path in its own
#: ``MEASURES`` (a detection benchmark) still sees its changes.
UNREACHED = (
    "samplers/detection/",
    "sources/canvases.py",
    "sources/detection.py",
    "sources/detection_pool.py",
    "models/detection.py",
    "pipelines/detection_sim.py",
    "tasks/",
    "actors/detector.py",
    "actors/detector_scorer.py",
    "pipelines/detection_scoring.py",
    "actors/label_studio_boxes.py",
    "deploy/boxes.py",
    "pipelines/box_oracle.py",
)
#: What no figure runs at all: the labeling page's HTML and scripts. The app serves them as
#: files and no benchmark loads the page (tests/test_freshness.py holds that), so a change
#: there leaves every figure fresh; the browser tests check the page.
UNMEASURED = ("deploy/static/",)
#: The modules outside :data:`UNREACHED` that may still import those paths, each only when a
#: detection task runs: the command line (``make-detection``, ``simulate --task detection``,
#: ``serve`` on detection data), the service's task parts (a detection pool's trainer, label
#: kind, scorers and Label Studio task), the HTTP app (box labels in, boxes out) and the real
#: loop's sessions (the oracle's true boxes for ``demo --task detection``). A figure measuring
#: a gate counts changes to every unreached path (it may run any of them): every service
#: figure does. Other figures still leave them out.
GATES = ("cli.py", "pipelines/task.py", "deploy/app.py", "pipelines/realloop.py")
BENCH = "docs/bench/bench.json"
# Pages measured by a benchmark of their own (module, JSON files or glob patterns; each of the
# study's parts is run on its own, so each part's JSON records its own machine and commit).
PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "study": ("activestream.benchmarks.study", ("docs/study/[!m]*.json",)),
    "real_loop": ("activestream.benchmarks.real_loop", ("docs/real-loop/real_loop.json",)),
    "head_rescore": (
        "activestream.benchmarks.head_rescore",
        ("docs/head-rescore/head_rescore.json",),
    ),
    "encoded_throughput": (
        "activestream.benchmarks.encoded_throughput",
        ("docs/encoded-throughput/encoded_throughput.json",),
    ),
    "pool_scale": ("activestream.benchmarks.pool_scale", ("docs/scale/pool_scale.json",)),
    "allocator": ("activestream.benchmarks.allocator", ("docs/allocator/allocator.json",)),
    "knobs": ("activestream.benchmarks.knobs", ("docs/knobs/knobs.json",)),
    "detection": ("activestream.benchmarks.detection", ("docs/detection/detection.json",)),
    "detector_speed": (
        "activestream.benchmarks.detector_speed",
        ("docs/detector-speed/detector_speed.json",),
    ),
}


@dataclass(frozen=True)
class Figures:
    """The figures one benchmark published in one JSON, and the commit they were measured at."""

    benchmark: str
    source: str
    commit: str | None
    measures: tuple[str, ...]
    when: str | None = None
    seconds: float | None = None  # how long the run that measured them took, where recorded
    size: str | None = None  # bench.json's size (a rerun merges at the same one)
    rows: int | None = None  # a study part's pool rows, where ``--rows`` chose them


def stale_reason(commit: str | None, changed: list[str]) -> str | None:
    """Why figures measured at ``commit`` no longer stand for ``HEAD``, or None if they do."""
    if not commit:
        return "records no commit"
    if commit.endswith("+dirty"):
        return f"measured on a dirty tree ({commit})"
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return f"{', '.join(changed[:3])}{more} changed since {commit}"
    return None


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode:
        raise LookupError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout


def measures(module: str) -> tuple[str, ...]:
    """The paths a benchmark module declares it measures (``MEASURES``)."""
    name, _, _ = module.partition(":")
    declared = getattr(importlib.import_module(name), "MEASURES", None)
    if not declared:
        raise AttributeError(f"{name} declares no MEASURES")
    return tuple(declared)


def pathspec(declared: tuple[str, ...]) -> list[str]:
    """Git pathspecs for ``declared`` less the :data:`UNREACHED` paths it does not name itself.

    Declaring a gate (:data:`GATES`) names them all: the gate may run any of them.

    >>> pathspec(("samplers/", "config.py"))[:3]
    ['samplers/', 'config.py', ':(exclude)samplers/detection/']
    >>> ":(exclude)samplers/detection/" in pathspec(("samplers/detection/",))
    False
    >>> pathspec(("cli.py",))[:3]
    ['cli.py', 'samplers/detection/', 'sources/canvases.py']
    >>> pathspec(("deploy/",))[-1]
    ':(exclude)deploy/static/'
    """
    never = [f":(exclude){p}" for p in UNMEASURED]
    if any(d == g or (d.endswith("/") and g.startswith(d)) for d in declared for g in GATES):
        return [*declared, *UNREACHED, *never]
    named = [p for p in UNREACHED if any(d.startswith(p) for d in declared)]
    return [*declared, *(f":(exclude){p}" for p in UNREACHED if p not in named), *never]


def _commit(machine: Any) -> str | None:
    return machine.get("commit") if isinstance(machine, dict) else None


def _when(machine: Any) -> str | None:
    return machine.get("when") if isinstance(machine, dict) else None


def published(root: Path = ROOT) -> list[Figures]:
    """Every benchmark's published figures: bench.json's newest run of each, and each page."""
    from activestream.benchmarks.suite import BENCHMARKS, size_of_report

    out: list[Figures] = []
    bench = json.loads((root / BENCH).read_text())
    newest: dict[str, Any] = {}
    for run in bench.get("runs") or [{"benchmarks": list(BENCHMARKS), **bench}]:
        for name in run["benchmarks"]:
            newest[name] = run.get("machine")  # later runs replace earlier ones
    shown = {r.get("benchmark") for r in bench["results"]}
    took = bench.get("benchmark_seconds") or {}
    size = size_of_report(bench)
    for name, module in BENCHMARKS.items():
        if name in shown:
            m = newest.get(name)
            commit, when = _commit(m), _when(m)
            out.append(Figures(name, BENCH, commit, measures(module), when, took.get(name), size))
    for name, (module, patterns) in PAGES.items():
        for pattern in patterns:
            for path in sorted(root.glob(pattern)):
                data = json.loads(path.read_text())
                commit = data.get("commit") if "machine" not in data else _commit(data["machine"])
                source = path.relative_to(root).as_posix()
                when = _when(data.get("machine"))
                took = data.get("seconds")
                rows = _study_rows(data) if name == "study" else None
                figures = Figures(name, source, commit, measures(module), when, took, rows=rows)
                out.append(figures)
    return out


def _study_rows(part: dict[str, Any]) -> int | None:
    """The ``--rows`` a study part was run with: its pool's size, unless the pool is digits.

    Digits is bundled at one size; the other pools are cut to ``--rows``.

    >>> _study_rows({"pool_rows": 60000, "config": {"data": {"dataset": "/tmp/s/fashion"}}})
    60000
    >>> _study_rows({"pool_rows": 1347, "config": {"data": {"dataset": "digits"}}}) is None
    True
    """
    data = (part.get("config") or {}).get("data") or {}
    return None if data.get("dataset") == "digits" else part.get("pool_rows")


def rerun(figures: Figures) -> str:
    """The command that measures ``figures`` again into the docs (from a clean commit).

    >>> rerun(Figures("startup", BENCH, None, ("cli.py",), size="quick"))
    'activestream bench --quick --only startup --merge --out docs/bench'
    >>> rerun(Figures("startup", BENCH, None, ("cli.py",), size="full"))
    'activestream bench --only startup --merge --out docs/bench'
    >>> rerun(Figures("study", "docs/study/buffer.json", None, ("samplers/",)))
    'python -m activestream.benchmarks.study --only buffer'
    >>> rerun(Figures("study", "docs/study/gratings.json", None, ("samplers/",), rows=2000))
    'python -m activestream.benchmarks.study --only gratings --rows 2000'
    """
    if figures.source == BENCH:
        size = " --quick" if figures.size == "quick" else ""
        return f"activestream bench{size} --only {figures.benchmark} --merge --out docs/bench"
    module = PAGES[figures.benchmark][0]
    if figures.benchmark == "study":
        rows = f" --rows {figures.rows}" if figures.rows else ""
        return f"python -m {module} --only {Path(figures.source).stem}{rows}"
    return f"python -m {module}"


def stale(root: Path = ROOT, only: list[Figures] | None = None) -> list[tuple[Figures, str]]:
    """Each benchmark's figures that no longer stand for ``HEAD``, with the reason.

    Args:
        root: The checkout.
        only: What to check; every published figure (:func:`published`) by default.
    """
    found = []
    for figures in published(root) if only is None else only:
        changed: list[str] = []
        commit = figures.commit
        if commit and not commit.endswith("+dirty"):
            try:
                changed = _git(
                    root, "diff", "--name-only", commit, "HEAD", "--", *pathspec(figures.measures)
                ).split()
            except LookupError:
                found.append((figures, f"commit {commit} is not in this clone"))
                continue
        reason = stale_reason(commit, changed)
        if reason:
            found.append((figures, reason))
    return found


def changes_since(figures: Figures, root: Path = ROOT) -> int | None:
    """How many commits after the figures' own changed the code they measure.

    Zero for fresh figures. Unrelated commits (docs, tests, other modules) do not count, so a
    page that shows this number changes only when the measured code does. None when the
    commit is unknown, dirty or not in this clone.
    """
    if not figures.commit or figures.commit.endswith("+dirty"):
        return None
    try:
        listed = _git(
            root, "rev-list", f"{figures.commit}..HEAD", "--", *pathspec(figures.measures)
        )
    except LookupError:
        return None
    return len(listed.split())


def commits_ago(commit: str, root: Path = ROOT) -> int | None:
    """How many commits ``HEAD`` is past ``commit`` (None when unknown here)."""
    try:
        return int(_git(root, "rev-list", "--count", f"{commit.removesuffix('+dirty')}..HEAD"))
    except (LookupError, ValueError):
        return None
