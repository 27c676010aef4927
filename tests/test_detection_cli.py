"""Detection from the command line: ``make-detection`` and ``simulate --task detection``.

Real processes, as a user runs them: canvases of real images written in COCO layout, then the
detection simulator on them, with the classification simulator's outputs (results.json with
mAP in place of accuracy, learning curves, a table) and one-line errors.
"""

from __future__ import annotations

import json

import pytest
from clirun import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.compute]


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    """Digits canvases written by the command: 30 to label, 6 to measure mAP on, 64 px."""
    where = tmp_path_factory.mktemp("det")
    proc = run_cli(
        "make-detection", "--source", "digits", "--pool", "30", "--test", "6", "--size", "64",
        "--out", "canvases", cwd=where,
    )  # fmt: skip
    return where, proc


@pytest.fixture(scope="module")
def simulated(canvases):
    where, _ = canvases
    proc = run_cli(
        "simulate", "--task", "detection", "--dataset", "canvases", "--samplers",
        "box_entropy_max", "--seeds", "1", "--budget", "20", "--buffer-size", "4",
        "--out", "sim", cwd=where,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return where, proc


def test_make_detection_writes_coco_pool_and_test_and_says_what_they_hold(canvases):
    where, proc = canvases
    assert proc.returncode == 0, proc.stderr
    for split, n in (("pool", 30), ("test", 6)):
        coco = json.loads((where / "canvases" / split / "annotations.json").read_text())
        assert len(coco["images"]) == n == len(list((where / "canvases" / split).rglob("*.png")))
        assert len(coco["annotations"]) >= n  # at least one object per canvas
        assert [c["name"] for c in coco["categories"]] == [str(d) for d in range(10)]
    assert proc.stdout.startswith("canvases: 30 pool and 6 test canvases of 64 px")


def test_make_detection_refuses_a_canvas_smaller_than_its_largest_object(tmp_path):
    proc = run_cli("make-detection", "--size", "32", "--out", "c", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "activestream: error: --size 32 is smaller than the largest object (64 px)"
    )
    assert not (tmp_path / "c").exists()


def test_simulate_detection_writes_map_per_strategy_as_the_results_contract_says(simulated):
    where, _ = simulated
    results = json.loads((where / "sim" / "results.json").read_text())
    assert results["task"] == "detection"
    assert set(results["strategies"]) == {"box_entropy_max", "random"}
    for row in results["strategies"].values():
        assert 0 <= row["map50_mean"] <= 1 and 0 <= row["map_mean"] <= row["map50_mean"]
        assert set(row["labels_to_reach_random_final"]) == {"images", "boxes"}
        assert row["curves"][0]["images"] == [16, 20]  # 16 seed images, one round of 4


def test_simulate_detection_plots_the_curves_and_prints_the_table(simulated):
    where, proc = simulated
    assert (where / "sim" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| strategy | mAP@0.5 | mAP@[.5:.95] | images to random's final | boxes |" in proc.stdout
    assert "| box_entropy_max | " in proc.stdout and "| random | " in proc.stdout


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--mode", "stream"], "--task detection does not take --mode stream"),
        (["--policy", "replay", "--answer-delay", "2"], "does not take --policy, --answer-delay"),
        (["--budget", "16"], "--budget above the 16 random seed images"),
        (["--samplers", "entropy"], "unknown detection sampler 'entropy'; choose from"),
        (["--seeds", "0"], "seeds must be at least 1, not 0"),
    ],
)
def test_simulate_detection_refuses_what_it_cannot_run_in_one_line(canvases, flags, says):
    where, _ = canvases
    proc = run_cli(
        "simulate", "--task", "detection", "--dataset", "canvases", *flags, "--out", "no",
        cwd=where,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("activestream: error: ") and says in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not (where / "no" / "results.json").exists()


def test_simulate_detection_without_a_dataset_says_how_to_make_one(tmp_path):
    proc = run_cli("simulate", "--task", "detection", cwd=tmp_path)
    assert proc.returncode == 2
    assert "needs --dataset DIR with pool/ and test/" in proc.stderr
    assert "activestream make-detection" in proc.stderr


def test_annotate_detection_without_a_dataset_says_what_it_needs_in_one_line(tmp_path):
    proc = run_cli("annotate", "--task", "detection", "--budget", "4", cwd=tmp_path)
    assert proc.returncode == 2
    assert "needs --dataset DIR" in proc.stderr and "pool/ and test/" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_demo_detection_on_data_that_is_not_there_is_one_line(tmp_path):
    proc = run_cli("demo", "--task", "detection", "--dataset", "nowhere", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("activestream: error: ") and "nowhere" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def refused_in_one_line(proc, says: str) -> None:
    """Exit code 2 and one line on stderr saying ``says``, before Ray or any traceback."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("activestream: error: ") and says in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Ray" not in proc.stderr


def test_simulate_takes_the_detection_task_from_the_config(tmp_path):
    (tmp_path / "boxes.yaml").write_text("task: detection\n")
    proc = run_cli("simulate", "--config", "boxes.yaml", cwd=tmp_path)
    refused_in_one_line(proc, "--task detection needs --dataset DIR with pool/ and test/")


def test_simulate_detection_names_the_config_keys_it_would_not_use(canvases):
    where, _ = canvases
    (where / "mine.yaml").write_text("task: detection\ntraining:\n  lr: 0.01\n")
    proc = run_cli(
        "simulate", "--config", "mine.yaml", "--dataset", "canvases", "--out", "no", cwd=where
    )
    refused_in_one_line(proc, "not take config keys other than task and data.dataset (training.lr)")
    assert not (where / "no").exists()


def test_serve_refuses_boxes_under_a_classification_config_before_ray(canvases):
    where, _ = canvases
    proc = run_cli("serve", "--data", "canvases", "--data-dir", "state", "--port", "1", cwd=where)
    refused_in_one_line(proc, "the data holds boxes (a detection pool): set task: detection")
    assert "or pass --task detection" in proc.stderr
    assert not (where / "state").exists()  # nothing written: the data was only listed


def test_serve_refuses_class_data_under_task_detection_before_ray(tmp_path):
    proc = run_cli(
        "serve", "--task", "detection", "--data-dir", "state", "--port", "1", cwd=tmp_path
    )
    refused_in_one_line(proc, "task detection serves images with boxes: --data DIR")


def test_serve_names_the_detection_samplers_for_a_name_neither_task_knows(canvases):
    where, _ = canvases
    (where / "bad.yaml").write_text("task: detection\nsampling:\n  sampler: boxes\n")
    proc = run_cli(
        "serve", "--config", "bad.yaml", "--data", "canvases", "--data-dir", "state",
        "--port", "1", cwd=where,
    )  # fmt: skip
    refused_in_one_line(proc, "'boxes' is no sampler; task: detection takes box_entropy_max")


def test_score_sends_a_detection_config_to_serve(tmp_path):
    (tmp_path / "boxes.yaml").write_text("task: detection\n")
    proc = run_cli("score", "--config", "boxes.yaml", cwd=tmp_path)
    refused_in_one_line(proc, "a detection pool is scored by its service (activestream serve")
