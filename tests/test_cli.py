"""The command line as a user runs it: a real process, one-line errors, exit code 2."""

import pyarrow.parquet as pq
import pytest
from clirun import run_cli


def test_unknown_flag_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("score", "--bogus", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "--bogus" in proc.stderr


def test_bad_config_key_is_one_line_naming_the_key(tmp_path):
    (tmp_path / "c.yaml").write_text("scoring:\n  batchsize: 3\n")
    proc = run_cli("score", "--config", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "activestream: error: config key 'scoring.batchsize' is not a known setting"
    )


def test_unreadable_data_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "part-0.parquet").write_bytes(b"not parquet at all")
    proc = run_cli("score", "--data", "pool", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "part-0.parquet" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_make_shards_writes_the_rows_asked_for(tmp_path):
    proc = run_cli(
        "make-shards", "--rows", "250", "--rows-per-shard", "100", "--out", "s", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted((tmp_path / "s" / "pool").glob("*.parquet"))
    assert len(files) == 3
    assert sum(pq.read_metadata(f).num_rows for f in files) == 250


def test_make_shards_rejects_a_non_positive_row_count(tmp_path):
    proc = run_cli("make-shards", "--rows", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "activestream: error: --rows must be at least 1, got 0"


@pytest.mark.slow
def test_score_on_the_bundled_digits_prints_queries_and_writes_all_scores(tmp_path):
    proc = run_cli("score", "--k", "5", "--out", "out/scores.parquet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    queries = [line for line in lines if line.startswith("digits-")]
    assert len(queries) == 5
    assert len({line.split()[0] for line in queries}) == 5
    assert pq.read_metadata(tmp_path / "out" / "scores.parquet").num_rows == 1347
