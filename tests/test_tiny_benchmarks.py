"""Every benchmark and study part runs at tiny size: the same code, on sizes of seconds.

A renamed function or a changed return value then breaks CI the day it happens, not the next
time somebody regenerates the figures. Tiny numbers mean nothing; these tests check that each
run finishes, writes what its page renders, and that tiny figures can never reach ``docs/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from activestream.benchmarks import freshness, headline, study
from activestream.benchmarks.suite import BENCHMARKS, run_all

#: The first test to ask for ``tiny_suite`` runs all nine suite benchmarks in its setup (about
#: ten minutes on a loaded 2-core machine), past the suite's 600 s default for one test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: Suite benchmarks whose own tests run the code ``suite()`` wraps (a whole service, killed or
#: cold-started, takes a minute; twice would cost CI another three): test file, call it makes.
ELSEWHERE = {
    "kill_each": ("test_kill_each.py", "kill_each.run("),
    "startup": ("test_startup.py", "startup.measure("),
    "fault_recovery": ("test_faults.py", "fault_recovery.run("),
}
#: Run apart from the others: it takes the session's Label Studio server.
APART = ("label_studio_push",)
IN_SUITE = [name for name in BENCHMARKS if name not in ELSEWHERE and name not in APART]
#: The study parts tests/test_study.py runs already (with more seeds, for its curve checks).
STUDY_ELSEWHERE = ("digits", "stream", "digits_parts", "cold_scale")


@pytest.fixture(scope="module")
def tiny_suite(ray_session: None, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench")
    return run_all("tiny", out, IN_SUITE), out


def test_every_suite_benchmark_runs_tiny_here_or_in_its_own_test() -> None:
    assert set(IN_SUITE) | set(ELSEWHERE) | set(APART) == set(BENCHMARKS)
    for test_file, call in ELSEWHERE.values():
        assert call in (TESTS / test_file).read_text()


@pytest.mark.parametrize("name", IN_SUITE)
def test_each_suite_benchmark_gives_named_rows_with_a_ratio_at_tiny_size(tiny_suite, name) -> None:
    report, _ = tiny_suite
    rows = [r for r in report["results"] if r["benchmark"] == name]
    assert rows, f"{name} gave no rows"
    assert all(isinstance(r["name"], str) and "ratio" in r for r in rows)
    assert len({r["name"] for r in rows}) == len(rows)


def test_the_tiny_suite_records_its_size_and_renders_every_row(tiny_suite) -> None:
    report, out = tiny_suite
    saved = json.loads((out / "bench.json").read_text())
    assert saved["size"] == "tiny" and not saved["quick"]
    table = (out / "bench.md").read_text()
    assert table == headline.full(report)
    assert all(r["name"] in table for r in report["results"])


def test_the_suite_records_how_long_each_benchmark_took(tiny_suite) -> None:
    report, out = tiny_suite
    took = json.loads((out / "bench.json").read_text())["benchmark_seconds"]
    assert set(took) == set(IN_SUITE)
    assert all(0 <= s <= report["seconds"] for s in took.values())


def test_the_label_studio_push_benchmark_runs_tiny_against_a_real_server(
    label_studio, tmp_path
) -> None:
    from activestream.benchmarks import label_studio_push

    rows = label_studio_push.run("tiny", tmp_path, server=label_studio)
    assert [r["name"] for r in rows] == ["label_studio_push_50"]
    assert rows[0]["tasks"] == 50 and rows[0]["versions"] == 2


#: Each page benchmark's extra arguments (paths inside the test's folder), its command line
#: otherwise: ``python -m activestream.benchmarks.<module> --tiny --out <tmp>/<slug>``.
def _page_args(name: str, tmp: Path) -> list[str]:
    return {
        "head_rescore": ["--data", str(tmp / "fashion")],
        "encoded_throughput": ["--src", str(tmp / "fashion"), "--data", str(tmp / "jpeg")],
        "pool_scale": ["--data", str(tmp / "scale"), "--doc", str(tmp / "pool-scale.md")],
        "detection": ["--data", str(tmp / "canvases")],
        "detector_speed": ["--data", str(tmp / "detector-speed")],
    }.get(name, [])


PAGES = [name for name in freshness.PAGES if name != "study"]


@pytest.mark.parametrize("name", PAGES)
def test_each_page_benchmark_runs_tiny_and_renders_its_page(
    ray_session: None, tmp_path: Path, name: str
) -> None:
    module, (pattern, *_) = freshness.PAGES[name]
    out = tmp_path / Path(pattern).parent.name
    argv = ["--tiny", "--out", str(out), *_page_args(name, tmp_path)]
    if name == "allocator":  # starts and stops Ray sessions of its own: a process of its own
        subprocess.run([sys.executable, "-m", module, *argv], check=True, timeout=600)
    else:
        __import__(module, fromlist=["main"]).main(argv)
    written = sorted(out.glob(Path(pattern).name))
    assert written, f"{name} wrote no {pattern}"
    pages = sorted(tmp_path.glob("*.md"))
    assert pages, f"{name} rendered no page"
    assert all(":begin -->" in page.read_text() for page in pages)


def test_the_index_memory_benchmark_runs_tiny(tmp_path: Path) -> None:
    from activestream.benchmarks import index_memory

    index_memory.main(["--tiny", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "index_memory.json").read_text())
    assert [r["rows"] for r in report["results"]] == [10_000, 10_000]


@pytest.mark.compute
def test_every_study_part_runs_tiny_and_is_rendered(tmp_path: Path) -> None:
    parts = [p for p in study.PARTS if p not in STUDY_ELSEWHERE]
    out = tmp_path / "study"
    study.main(["--tiny", "--out", str(out), "--only", ",".join(parts)])
    page = (tmp_path / "study.md").read_text()
    for part in parts:
        results = json.loads((out / f"{part}.json").read_text())
        assert results["seeds"] == 1 and "machine" in results
        if part in study.SETUPS or part in study.VARIANTS:  # the learning-curve parts
            assert f"![{part}](study/{part}.png)" in page
    for heading in ("How much to buffer", "How much to explore", "Training policy"):
        assert f"## {heading}" in page


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "activestream.cli", "bench", "--tiny", "--only", "rounds", "--out", "docs/bench"],
        ["-m", "activestream.benchmarks.study", "--tiny", "--only", "digits", "--out", "docs/x"],
        ["-m", "activestream.benchmarks.knobs", "--tiny", "--out", "docs/knobs"],
    ],
)
def test_tiny_figures_are_refused_for_the_docs_before_any_work(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "refusing to write tiny figures" in done.stderr
