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
from activestream.config import Config
from activestream.pipelines.curves import area_under_curve, labels_to_reach, worst_gap_in_se
from activestream.pipelines.simulate import plot_curves, run_once, run_stream
from activestream.sources.resolve import resolve_dataset

pytestmark = [pytest.mark.slow, pytest.mark.compute]

PARTS = {"digits": "pool", "stream": "stream"}  # the parts the fixture runs, and their mode
BUDGET, SEEDS = 48, 2
GRID = list(range(0, BUDGET + 1, 16))  # one point per training buffer of 16 labels


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "study"
    subprocess.run(
        [sys.executable, "-m", "activestream.benchmarks.study", "--out", str(out)]
        + ["--only", ",".join([*PARTS, "digits_parts", "cold_scale"]), "--seeds", str(SEEDS)]
        + ["--budget", str(BUDGET), "--scale-rows", "2000,30000"]
        + ["--workers", "2"],
        check=True,
        timeout=900,
    )
    return out


def _results(tiny_study: Path, part: str) -> dict:
    return json.loads((tiny_study / f"{part}.json").read_text())


@pytest.mark.parametrize("part", PARTS)
def test_each_part_records_the_setup_it_ran(tiny_study: Path, part: str) -> None:
    results = _results(tiny_study, part)
    assert results["seeds"] == results["config"]["seeds"] == SEEDS
    assert results["config"]["budget"] == BUDGET
    assert results["config"]["mode"] == PARTS[part]
    assert (results["pool_rows"], results["test_rows"]) == (1347, 450)  # the bundled digits


@pytest.mark.parametrize("part", PARTS)
def test_each_strategy_has_a_two_seed_accuracy_curve_on_the_label_grid(
    tiny_study: Path, part: str
) -> None:
    for curve in _results(tiny_study, part)["strategies"].values():
        assert curve["labels"] == GRID
        mean, std = np.array(curve["accuracy_mean"]), np.array(curve["accuracy_std"])
        assert mean.shape == std.shape == (len(GRID),)
        assert ((mean >= 0) & (mean <= 1)).all()
        # Two accuracies a, b in [0, 1]: std |a - b| / 2 is at most min(mean, 1 - mean).
        assert ((std >= 0) & (std <= np.minimum(mean, 1 - mean) + 1e-5)).all()


def test_every_pool_run_spent_exactly_its_budget(tiny_study: Path) -> None:
    for curve in _results(tiny_study, "digits")["strategies"].values():
        assert curve["spent"] == [BUDGET] * SEEDS


def test_every_stream_run_spent_at_most_its_budget_and_skipped_records(tiny_study: Path) -> None:
    for curve in _results(tiny_study, "stream")["strategies"].values():
        assert len(curve["spent"]) == SEEDS
        for seen, spent, skipped in zip(
            curve["seen"], curve["spent"], curve["skipped"], strict=True
        ):
            assert 0 < spent <= BUDGET
            assert skipped > 0
            assert seen == spent + skipped <= 1347


@pytest.mark.parametrize("part", PARTS)
def test_every_strategy_learns_from_its_labels(tiny_study: Path, part: str) -> None:
    # Measured: 0.066 before any label and about 0.78 after 48, in both parts.
    for curve in _results(tiny_study, part)["strategies"].values():
        assert curve["accuracy_mean"][-1] > curve["accuracy_mean"][0] + 0.5


@pytest.mark.parametrize("part", PARTS)
def test_randoms_curve_is_the_mean_and_spread_of_its_seeds_runs(
    tiny_study: Path, part: str, tmp_path: Path
) -> None:
    # Random's runs, redone here: the study's mean and std must be theirs, seed for seed.
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path)})
    pool, test = resolve_dataset(cfg)
    run = run_once if PARTS[part] == "pool" else run_stream
    runs = [
        run(cfg, pool, test, strategy="random", seed=cfg.seed + i, budget=BUDGET)
        for i in range(SEEDS)
    ]
    acc = np.array([r.accuracy for r in runs])
    curve = _results(tiny_study, part)["strategies"]["random"]
    assert curve["accuracy_mean"] == pytest.approx(acc.mean(axis=0), abs=1e-5)
    assert curve["accuracy_std"] == pytest.approx(acc.std(axis=0), abs=1e-5)
    assert curve["spent"] == [len(r.asked) for r in runs]


@pytest.mark.parametrize("part", PARTS)
def test_each_parts_plot_is_the_drawing_of_its_results(
    tiny_study: Path, part: str, tmp_path: Path
) -> None:
    from matplotlib.image import imread

    png = imread(tiny_study / f"{part}.png")
    assert png.shape[:2] == (540, 840)  # 7 x 4.5 inches at 120 dpi
    assert len(np.unique(png.reshape(-1, png.shape[-1]), axis=0)) > 16  # curves, not a blank
    plot_curves(_results(tiny_study, part), tmp_path / "again.png")
    assert np.array_equal(png, imread(tmp_path / "again.png"))


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
        assert row["final_std"] == curve["accuracy_std"][-1]
        assert row["worst_gap_se"] == pytest.approx(
            worst_gap_in_se(curve, results["strategies"]["random"], results["config"]["seeds"]),
            abs=1e-3,
        )


def test_every_sampler_starts_from_the_same_cold_start_picks(tiny_study: Path) -> None:
    # The cold start does not depend on the sampler: same seed, same first buffer, same model
    # (uniform picks on digits, whose network starts untrained). Samplers that select on the
    # last layer's gradient (BADGE) are left out: with cold_start_embedding: any they cover
    # that embedding from the start.
    results = json.loads((tiny_study / "digits.json").read_text())
    first = {
        n: r["accuracy_mean"][1]
        for n, r in results["strategies"].items()
        if n != "random"
        and n in samplers.names()
        and samplers.spec(n).embedding != "gradient"
        or n == "auto"
    }
    assert len(set(first.values())) == 1
    assert np.isfinite(list(first.values())).all()


def test_a_variant_part_runs_every_row_on_the_same_seeds_against_its_baseline(
    tiny_study: Path,
) -> None:
    results = _results(tiny_study, "digits_parts")
    rows = [label for label, _, _ in study.VARIANTS["digits_parts"][5]]
    assert list(results["rows"]) == list(results["compare"]) == rows
    baseline = results["rows"][results["baseline"]]
    assert results["compare"][results["baseline"]]["worst_gap_se"] == 0.0
    for label, row in results["rows"].items():
        assert row["labels"] == GRID and row["spent"] == [BUDGET] * SEEDS
        assert results["compare"][label]["auc"] == pytest.approx(
            area_under_curve(row["labels"], row["accuracy_mean"]), abs=1e-5
        )
        assert results["compare"][label]["labels_to_random_final"] == labels_to_reach(
            row["labels"], row["accuracy_mean"], baseline["accuracy_mean"][-1]
        )
    # a uniform cold start asks what random asks: the first buffer is the same
    assert (
        results["rows"]["margin, random cold start"]["accuracy_mean"][1]
        == (baseline["accuracy_mean"][1])
    )


def test_a_variant_part_is_rendered_with_its_rows_and_plot(tiny_study: Path) -> None:
    page = (tiny_study.parent / "study.md").read_text()
    for label, _, _ in study.VARIANTS["digits_parts"][5]:
        assert f"| {label} |" in page
    assert "![digits_parts](study/digits_parts.png)" in page
    assert (tiny_study / "digits_parts.png").stat().st_size > 10_000


def test_the_page_is_the_rendering_of_the_json(tiny_study: Path) -> None:
    page = (tiny_study.parent / "study.md").read_text()
    section = page.split(study.BEGIN, 1)[1].split(study.END, 1)[0]
    data, machine = study.load(tiny_study)
    assert section == "\n" + study.render_markdown(data, machine)
    for name in (*samplers.names(), "**auto**"):
        assert f"| {name} |" in section


def test_the_cold_start_scale_part_times_both_strategies_on_each_pool(tiny_study: Path) -> None:
    rows = _results(tiny_study, "cold_scale")["results"]
    assert [(r["strategy"], r["rows"]) for r in rows] == [
        ("typiclust", 2000), ("maxherding", 2000), ("typiclust", 30000), ("maxherding", 30000)
    ]  # fmt: skip
    for row in rows:
        assert row["picks"] == row["k"] and row["seconds"] > 0 and row["peak_mb"] > 0
    # maxherding's kernel is over a sample of 3,000 at most: its memory stops growing
    herding = [r["peak_mb"] for r in rows if r["strategy"] == "maxherding"]
    assert herding[1] < 4 * herding[0]
