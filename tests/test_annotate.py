"""The oracle annotator drives a real service over HTTP and measures its learning curve."""

import pytest
import requests
from clirun import run_cli

from activestream.config import Config
from activestream.pipelines.annotate import Oracle
from activestream.pipelines.realloop import ground_truth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(run_service, tmp_path_factory):
    cfg = Config().with_overrides(
        {
            "data.cache_dir": str(tmp_path_factory.mktemp("cache")),
            "training.buffer_size": 8,
            "training.steps_per_update": 20,  # a clear margin over the 0.4 floor below
            "sampling.warmup_labels": 16,
            "sampling.warmup_accuracy": 0.3,
            "sampling.sampler": "auto",  # the whole bandit path, through real actors
        }
    )
    truth, held_out = ground_truth(cfg)
    with run_service(cfg) as base:
        oracle = Oracle(base, truth, held_out, annotators=3, rate=20.0, budget=48)
        report = oracle.run(progress=False, settle=120)
        metrics = requests.get(f"{base}/metrics", timeout=10).text
    return report, metrics


def test_every_label_the_oracle_posts_is_accepted_once(session):
    report, _ = session
    assert report["posted"] == report["accepted"] == 48
    assert report["duplicates"] == 0
    assert report["errors"] == []


def test_the_service_counts_exactly_the_labels_posted(session):
    _, metrics = session
    assert "activestream_labels_total 48.0" in metrics.splitlines()


def test_the_curve_follows_the_versions_up_to_the_whole_budget(session):
    report, _ = session
    versions = [p["version"] for p in report["curve"]]
    assert versions == sorted(set(versions))
    # The trainer trains whatever is buffered once a buffer (8) is full, so the last version
    # holds all 48 labels or leaves fewer than a buffer waiting.
    assert 48 - 8 < report["curve"][-1]["labels"] <= 48


def test_the_model_learns_from_the_oracles_labels(session):
    report, _ = session
    first, last = report["curve"][0], report["curve"][-1]
    assert first["labels"] == 0
    assert last["accuracy"] > first["accuracy"] + 0.4


def test_the_cold_start_asks_random_items_marked_as_exploration(session):
    report, _ = session
    assert report["explored"] >= 16


def test_auto_reports_each_arms_odds_in_the_metrics(session):
    _, metrics = session
    odds = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("activestream_sampler_arm_probability{")
    ]
    assert len(odds) == 5
    assert sum(odds) == pytest.approx(1.0, abs=1e-3)
    judged = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("activestream_sampler_arm_error_auc{")
    }
    assert judged["random"] == 0.5 and all(0.0 <= v <= 1.0 for v in judged.values())


def test_annotate_against_a_service_that_is_not_there_is_one_line(tmp_path):
    proc = run_cli(
        "annotate", "--url", "http://127.0.0.1:9", "--budget", "4", cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2
    assert "does not answer" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
