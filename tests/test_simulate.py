import json

import numpy as np
import pytest
from clirun import run_cli

from activestream.config import Config
from activestream.pipelines.simulate import simulate
from activestream.sources.resolve import resolve_dataset


@pytest.mark.slow
def test_entropy_beats_random_on_digits_at_equal_label_counts(tmp_path):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path)})
    pool, test = resolve_dataset(cfg)
    results = simulate(cfg, pool, test, strategies=["entropy"], seeds=3, budget=320, progress=False)
    entropy = np.array(results["strategies"]["entropy"]["accuracy_mean"])
    random = np.array(results["strategies"]["random"]["accuracy_mean"])
    labels = results["strategies"]["entropy"]["labels"]
    assert labels == results["strategies"]["random"]["labels"]
    # After the cold start, where uncertainty pays off. Measured with 5 seeds: entropy is
    # +0.023 above random on average over 240..320 labels; 3 seeds are noisier, hence 0.005.
    late = np.array(labels) >= 240
    assert (entropy[late] - random[late]).mean() > 0.005


@pytest.mark.slow
def test_simulate_cli_writes_results_matching_the_contract(tmp_path):
    proc = run_cli(
        "simulate",
        "--samplers",
        "margin",
        "--budget",
        "32",
        "--seeds",
        "2",
        "--out",
        "sim",
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "sim" / "results.json").read_text())
    assert results["dataset"] == "digits"
    assert isinstance(results["config"], dict)
    assert set(results["strategies"]) == {"margin", "random"}
    for curve in results["strategies"].values():
        assert len(curve["labels"]) == len(curve["accuracy_mean"]) == len(curve["accuracy_std"])
        assert curve["labels"][-1] == 32
    assert set(results["labels_to_reach_random_final"]) == {"margin", "random"}
    png = (tmp_path / "sim" / "learning_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "labels to random final" in proc.stdout


def test_simulate_rejects_an_unknown_sampler_in_one_line(tmp_path):
    proc = run_cli("simulate", "--samplers", "entropy,bogus", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "unknown sampler 'bogus'" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["bald", "kcenter", "cluster_margin"])
def test_each_new_sampler_runs_the_whole_simulation(tmp_path, sampler):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path), "sampling.mc_samples": 4})
    pool, test = resolve_dataset(cfg)
    results = simulate(cfg, pool, test, strategies=[sampler], seeds=1, budget=64, progress=False)
    curve = results["strategies"][sampler]
    assert curve["labels"][-1] == 64
    assert curve["accuracy_mean"][-1] > curve["accuracy_mean"][0]


@pytest.mark.slow
def test_stream_mode_spends_at_most_its_budget_and_learns(tmp_path):
    proc = run_cli(
        "simulate",
        "--mode",
        "stream",
        "--budget",
        "64",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["strategies"]) == {"variable_uncertainty", "random"}
    chosen = results["strategies"]["variable_uncertainty"]
    assert chosen["labels"][-1] == 64
    assert chosen["accuracy_mean"][-1] > chosen["accuracy_mean"][0]


def test_stream_mode_rejects_a_pool_sampler_in_one_line(tmp_path):
    proc = run_cli(
        "simulate", "--mode", "stream", "--samplers", "margin", cwd=tmp_path, timeout=300
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "activestream: error: --mode stream takes samplers variable_uncertainty, random, "
        "auto, got 'margin'"
    )


@pytest.mark.slow
def test_auto_runs_the_whole_simulation_and_says_which_arms_chose(tmp_path):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path)})
    pool, test = resolve_dataset(cfg)
    results = simulate(cfg, pool, test, strategies=["auto"], seeds=1, budget=128, progress=False)
    auto = results["strategies"]["auto"]
    assert auto["labels"][-1] == 128
    assert auto["accuracy_mean"][-1] > auto["accuracy_mean"][0]
    pulls = auto["arm_pulls"]
    assert set(pulls) == {"entropy", "margin", "least_confidence", "ratio", "random"}
    # One draw per leased batch of 16 after the cold start, which takes at least 20 labels.
    assert 1 <= sum(pulls.values()) <= (128 - 32) // 16


@pytest.mark.slow
def test_stream_mode_auto_spends_its_budget_and_learns(tmp_path):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path)})
    pool, test = resolve_dataset(cfg)
    results = simulate(
        cfg, pool, test, strategies=["auto"], seeds=1, budget=96, progress=False, mode="stream"
    )
    auto = results["strategies"]["auto"]
    assert auto["labels"][-1] == 96
    assert auto["accuracy_mean"][-1] > auto["accuracy_mean"][0] + 0.3
    assert sum(auto["arm_pulls"].values()) >= 1
