"""The benchmark suite: its baselines do the pool's work, its load is real, its tables render."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
from clirun import run_cli

from activestream.benchmarks import baselines, headline, loadgen, suite, throughput
from activestream.benchmarks.serve_latency import plain_app
from activestream.config import Config
from activestream.pipelines.runtime import free_port
from activestream.sources.shards import ground_truth
from activestream.sources.synthetic import make_synthetic_shards

BENCH = Path(__file__).resolve().parents[1] / "docs" / "bench" / "bench.json"


def test_an_unknown_benchmark_is_a_one_line_error(tmp_path):
    proc = run_cli("bench", "--only", "nope", "--out", "r", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "activestream: error: unknown benchmark 'nope'; choose from "
        "throughput, rounds, broadcast, label_latency, keep_pace, new_data, serve_latency, "
        "label_studio_push, peer, "
        "forgetting, "
        "fault_recovery, kill_each, startup"
    )


def test_the_pace_benchmark_reads_gauges_and_counters_from_the_metrics_page():
    from activestream.benchmarks.keep_pace import _metric

    page = (
        "# HELP activestream_training_backlog Labels held but not trained on yet\n"
        "activestream_training_backlog 37.0\n"
        "activestream_empty_leases_total 4.0\n"
    )
    assert _metric(page, "activestream_training_backlog") == 37.0
    assert _metric(page, "activestream_empty_leases") == 4.0
    assert _metric(page, "activestream_reserve_leases") == 0.0


def test_the_machine_record_names_the_commit_and_the_package_versions():
    record = suite.machine()
    assert record["cores"] >= 1
    assert record["packages"]["torch"].split("+")[0] == record["torch"].split("+")[0]
    assert record["packages"]["ray"] == record["ray"]
    assert record["commit"] is None or len(record["commit"].split("+")[0]) == 12


def test_dataloader_settings_cover_workers_and_threads_up_to_the_cores():
    assert baselines.settings(2) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(w <= 16 and t <= 16 for w, t in baselines.settings(16))


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shards")
    return make_synthetic_shards(str(root), 600, rows_per_shard=200, progress=False)


def _cfg() -> Config:
    return Config().with_overrides({"scoring.batch_size": 100, "sampling.candidates": 50})


def test_both_baselines_score_every_row_and_keep_the_same_top_k(small_shards):
    cfg = _cfg()
    single = baselines.single_process(cfg, small_shards, threads=1)
    loader = baselines.dataloader(cfg, small_shards, workers=2, threads=1)
    assert single.result.rows == loader.result.rows == 600
    assert len(single.result.top.ids) == 50
    assert throughput.same_top_k(single.result, loader.result)


def test_same_top_k_notices_a_different_score(small_shards):
    single = baselines.single_process(_cfg(), small_shards, threads=1)
    changed = copy.deepcopy(single.result)
    changed.top.scores[3] += 1e-3
    assert not throughput.same_top_k(single.result, changed)


@pytest.mark.slow
def test_the_scorer_pool_keeps_the_rows_and_scores_of_the_baseline(ray_session, small_shards):
    cfg = _cfg()
    single = baselines.single_process(cfg, small_shards, threads=1)
    whole, warm, result = throughput.ray_pass(cfg, small_shards, cycles=2)
    assert result.rows == 2 * 600
    assert throughput.same_top_k(single.result, result)
    assert whole > 0 and warm > 0


def test_the_load_labels_leased_items_once_each_through_the_baselines_log(small_shards):
    truth = ground_truth(small_shards)
    with plain_app(small_shards, free_port()) as base:
        result = asyncio.run(loadgen.drive(base, 100.0, 120, truth, seed=1))
    assert result["requests"] == 120 and result["errors"] == 0
    assert result["queries"]["requests"] == result["labels"]["requests"] == 60
    assert result["labels_for_leased"] + result["labels_for_unasked"] == 60
    assert result["labels_for_leased"] >= 50  # leases answer long before the next label leaves
    assert result["p99_ms"] >= result["p50_ms"] > 0


def test_held_rate_stops_at_the_first_rate_over_the_goal():
    rows = [
        {"rate": 50, "p99_ms": 10.0, "errors": 0},
        {"rate": 100, "p99_ms": 40.0, "errors": 1},
        {"rate": 200, "p99_ms": 20.0, "errors": 0},
    ]
    from activestream.benchmarks.serve_latency import held_rate

    assert held_rate(rows) == 50


def test_a_changed_number_in_the_committed_run_changes_the_readme_table():
    data = json.loads(BENCH.read_text())
    before = headline.headline(data)
    row = next(r for r in data["results"] if r["name"] == "scoring_digits_cnn")
    row["dataloader_rows_s"] += 1000.0
    assert headline.headline(data) != before


def test_a_merged_runs_total_says_it_adds_up_every_run_reruns_included():
    data = json.loads(BENCH.read_text())
    assert data["runs"]
    assert f", {data['seconds'] / 60:.0f} min of runs in all;" in headline.machine_line(data)
    single = {key: value for key, value in data.items() if key != "runs"}
    assert f", {data['seconds'] / 60:.0f} min in all;" in headline.machine_line(single)


def test_the_committed_run_kept_the_same_top_k_for_every_scoring_method():
    data = json.loads(BENCH.read_text())
    scoring = [r for r in data["results"] if r["name"].startswith("scoring_")]
    assert scoring and all(r["same_top_k"] for r in scoring)
    assert all(len(set(r["rows_scored"].values())) == 1 for r in scoring)


def test_every_serving_figure_of_the_committed_run_has_at_least_2000_requests():
    data = json.loads(BENCH.read_text())
    figures = [r for r in data["results"] if r["name"].endswith("rps")]
    assert figures and all(r["requests"] >= 2000 for r in figures)


def test_every_label_the_baseline_acknowledged_is_found_again_and_none_is_lost(small_shards):
    from activestream.benchmarks.serve_latency import lost_labels

    truth = ground_truth(small_shards)
    with plain_app(small_shards, free_port()) as base:
        result = asyncio.run(loadgen.drive(base, 100.0, 60, truth, seed=2))
        acknowledged = result["acknowledged"]
        assert len(acknowledged) == 30 and result["refused"] == 0
        assert lost_labels(base, acknowledged, truth) == 0


def test_labels_said_to_be_acknowledged_that_the_service_never_logged_count_as_lost(
    small_shards,
):
    from activestream.benchmarks.serve_latency import lost_labels

    truth = ground_truth(small_shards)
    never_posted = list(truth)[:5]
    with plain_app(small_shards, free_port()) as base:
        assert lost_labels(base, never_posted, truth) == 5


def test_a_benchmark_run_alone_writes_its_rows_as_name_json(tmp_path):
    from activestream.benchmarks.entry import bench_main

    seen = []

    def run(size, out):
        seen.append((size, out))
        return [{"name": "row", "ratio": 1.5}]

    bench_main(run, "demo", "Demo.\n\nMore.", ["--quick", "--out", str(tmp_path / "r")])
    bench_main(run, "demo", "Demo.\n\nMore.", ["--tiny", "--out", str(tmp_path / "r")])
    bench_main(run, "demo", "Demo.\n\nMore.", ["--out", str(tmp_path / "r")])
    assert seen == [("quick", tmp_path / "r"), ("tiny", tmp_path / "r"), ("full", tmp_path / "r")]
    assert json.loads((tmp_path / "r" / "demo.json").read_text()) == [{"name": "row", "ratio": 1.5}]


@pytest.mark.slow
def test_the_plain_loop_baseline_scores_with_each_new_version_after_training_it():
    from activestream.benchmarks.rounds import in_process

    r = in_process(2)
    assert r["rounds"] == 2
    assert 0 < r["label_to_version_p50_s"] <= r["label_to_scorer_p50_s"]
    assert r["round_seconds_mean"] > 0


@pytest.mark.parametrize(("held", "size"), [({"quick": True}, "full"), ({"size": "full"}, "quick")])
def test_merging_a_run_of_another_size_is_refused_before_any_work(tmp_path, held, size):
    (tmp_path / "bench.json").write_text(json.dumps({**held, "results": [], "machine": {}}))
    with pytest.raises(ValueError, match="bench.json holds .* figures: merge a"):
        suite.run_all(size, tmp_path, ["rounds"], merge=True)


def test_a_stale_suite_figure_is_rerun_at_the_size_the_docs_hold() -> None:
    from activestream.benchmarks import freshness

    published = {f.benchmark: f for f in freshness.published()}
    docs = json.loads((freshness.ROOT / freshness.BENCH).read_text())
    assert docs["quick"]  # the committed table: quick mode
    assert freshness.rerun(published["startup"]).startswith("activestream bench --quick --only")
