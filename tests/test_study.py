"""The study command: one run writes the report, every section, its plots and their data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SECTIONS = [
    "samplers vs random",
    "How much to buffer",
    "Training policy on a shifting stream",
    "How much to explore",
    "Stream-based selection",
]
PLOTS = [
    "samplers-digits.png",
    "samplers-synthetic.png",
    "buffer.png",
    "policies.png",
    "explore.png",
    "stream.png",
]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    subprocess.run(
        [sys.executable, "-m", "activestream.benchmarks.study", "--out", str(out)]
        + ["--seeds", "1", "--budget", "32", "--pool-rows", "500"],
        check=True,
        timeout=900,
    )
    return out


@pytest.mark.slow
def test_the_study_writes_every_section_with_an_answer(tiny_study: Path) -> None:
    report = (tiny_study / "study.md").read_text()
    for section in SECTIONS:
        assert section in report
    assert report.count("Answer from this run:") == 6  # 2 sampler tables + 4 more questions


@pytest.mark.slow
def test_the_study_compares_every_sampler_with_random(tiny_study: Path) -> None:
    report = (tiny_study / "study.md").read_text()
    for name in ("bald", "kcenter", "cluster_margin", "entropy", "margin", "random"):
        assert f"| {name} |" in report


@pytest.mark.slow
def test_the_study_draws_a_plot_per_question(tiny_study: Path) -> None:
    for plot in PLOTS:
        assert (tiny_study / "study" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
