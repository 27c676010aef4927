"""The study command: each part writes its JSON, and the page is rendered from that JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from activestream import samplers
from activestream.benchmarks import study
from activestream.pipelines.curves import area_under_curve, labels_to_reach

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "study"
    subprocess.run(
        [sys.executable, "-m", "activestream.benchmarks.study", "--out", str(out)]
        + ["--only", "digits,stream", "--seeds", "2", "--budget", "48", "--workers", "2"],
        check=True,
        timeout=900,
    )
    return out


def test_each_part_writes_its_results_and_a_plot(tiny_study: Path) -> None:
    for part in ("digits", "stream"):
        assert json.loads((tiny_study / f"{part}.json").read_text())["seeds"] == 2
        assert (tiny_study / f"{part}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_sampler_auto_and_random_run_on_the_same_label_grid(tiny_study: Path) -> None:
    results = json.loads((tiny_study / "digits.json").read_text())
    assert set(results["strategies"]) == {*samplers.names(), "auto"}
    grids = {tuple(r["labels"]) for r in results["strategies"].values()}
    assert grids == {tuple(range(0, 49, 16))}


def test_the_reported_figures_are_those_of_the_curves(tiny_study: Path) -> None:
    results = json.loads((tiny_study / "digits.json").read_text())
    target = results["strategies"]["random"]["accuracy_mean"][-1]
    for name, curve in results["strategies"].items():
        row = results["compare"][name]
        assert row["auc"] == pytest.approx(
            area_under_curve(curve["labels"], curve["accuracy_mean"]), abs=1e-5
        )
        assert row["labels_to_random_final"] == labels_to_reach(
            curve["labels"], curve["accuracy_mean"], target
        )
        assert row["final"] == curve["accuracy_mean"][-1]


def test_random_and_the_cold_start_ask_the_same_first_labels(tiny_study: Path) -> None:
    # Random is a cold start that never hands over: same seed, same first buffer, same model.
    results = json.loads((tiny_study / "digits.json").read_text())
    first = {n: r["accuracy_mean"][1] for n, r in results["strategies"].items()}
    assert len(set(first.values())) == 1
    assert np.isfinite(list(first.values())).all()


def test_the_page_is_the_rendering_of_the_json(tiny_study: Path) -> None:
    page = (tiny_study.parent / "study.md").read_text()
    section = page.split(study.BEGIN, 1)[1].split(study.END, 1)[0]
    data, machine = study.load(tiny_study)
    assert section == "\n" + study.render_markdown(data, machine)
    for name in (*samplers.names(), "**auto**"):
        assert f"| {name} |" in section
