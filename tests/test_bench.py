"""The benchmark suite's plumbing, and its measurements on tiny inputs (so they do not rot)."""

import pytest
from clirun import run_cli

from activestream.benchmarks import suite, throughput
from activestream.config import Config
from activestream.sources.synthetic import make_synthetic_shards


def test_an_unknown_benchmark_is_a_one_line_error(tmp_path):
    proc = run_cli("bench", "--only", "nope", "--out", "r", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "activestream: error: unknown benchmark 'nope'; choose from "
        "throughput, rounds, broadcast, label_latency, serve_latency, peer"
    )


def test_the_table_shows_each_result_with_its_ratio():
    text = suite.table(
        [
            {"name": "scoring_x", "bare_rows_s": 1234.5, "pool_rows_s": 1100.0, "ratio": 0.891},
            {"name": "latency", "p50_s": 0.21, "ratio": None},
        ]
    )
    lines = text.splitlines()
    assert lines[2] == "| scoring_x | bare_rows_s=1,234, pool_rows_s=1,100 | 0.89 |"
    assert lines[3] == "| latency | p50_s=0.21 |  |"


def test_the_machine_record_names_cores_and_versions():
    record = suite.machine()
    assert record["cores"] >= 1
    assert {"cpu", "torch", "ray", "gpus"} <= record.keys()


@pytest.mark.slow
def test_the_scorer_pool_and_the_bare_loop_score_the_same_rows(ray_session, tmp_path):
    shards = make_synthetic_shards(str(tmp_path), 600, rows_per_shard=200, progress=False)
    cfg = Config().with_overrides({"scoring.batch_size": 100})
    bare = throughput.bare_loop(cfg, shards, threads=1)
    whole, warm = throughput.ray_pass(cfg, shards, cycles=2)
    assert bare > 0 and whole > 0 and warm > 0
