"""The detection simulator: seed images, query rounds, online steps, mAP after every round."""

from __future__ import annotations

import json

import numpy as np
import pytest

from activestream.pipelines.detection_sim import DetectionSimConfig, _diverse_first, main, simulate
from activestream.samplers import detection
from activestream.sources.canvases import CanvasSpec, make_canvases

pytestmark = [pytest.mark.slow, pytest.mark.compute]


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    out = tmp_path_factory.mktemp("canvases")
    make_canvases(out, CanvasSpec(source="digits", pool=30, test=6, size=64, scale=(20, 32)))
    return out


@pytest.fixture(scope="module")
def run(canvases, tmp_path_factory):
    """One tiny study from the command line: three samplers and random, one seed, two rounds."""
    out = tmp_path_factory.mktemp("sim")
    capture = pytest.MonkeyPatch()
    printed: list[str] = []
    capture.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    try:
        main(["--data", str(canvases), "--out", str(out),
              "--samplers", "box_entropy_max,flip_consistency,box_presence_clusters",
              "--seeds", "1",
              "--seed-images", "4", "--batch", "4", "--rounds", "2", "--candidates", "8",
              "--steps", "1", "--minibatch", "4"])  # fmt: skip
    finally:
        capture.undo()
    return json.loads((out / "results.json").read_text()), "\n".join(printed)


def test_every_strategy_and_random_get_a_curve_point_per_round(run):
    results, _ = run
    assert set(results["strategies"]) == {
        "box_entropy_max",
        "flip_consistency",
        "box_presence_clusters",
        "random",
    }
    for row in results["strategies"].values():
        (curve,) = row["curves"]
        assert curve["images"] == [4, 8, 12]
        assert curve["boxes"][0] >= 4 and curve["boxes"] == sorted(curve["boxes"])
        assert all(0 <= m <= 1 for m in curve["map50"] + curve["map"])


def test_a_batch_samplers_picks_rank_first_and_the_rest_keep_their_order():
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    # Two groups: 0-2 near 0, 3-4 near 10; one pick per cluster, the smaller cluster first,
    # takes 3 and then 0, ahead of 1 and 2 although they score higher than 3.
    embeddings = np.array([[0.0], [0.1], [0.2], [10.0], [10.1]])
    spec = detection.spec("box_presence_clusters")
    ranks = _diverse_first(scores, embeddings, spec, np.random.default_rng(0), k=2)
    assert np.argsort(-ranks).tolist() == [3, 0, 1, 2, 4]


def test_the_results_carry_final_map_and_labels_to_reach_randoms_final(run):
    results, _ = run
    assert results["task"] == "detection"
    for row in results["strategies"].values():
        assert row["map50_mean"] == row["curves"][0]["map50"][-1] and row["map50_std"] == 0.0
        assert row["map_mean"] == row["curves"][0]["map"][-1]
        assert set(row["labels_to_reach_random_final"]) == {"images", "boxes"}
    reach = results["strategies"]["random"]["labels_to_reach_random_final"]
    assert reach["images"] is not None and reach["images"] <= 12


def test_the_command_line_prints_each_strategys_final(run):
    _, printed = run
    for name in ("box_entropy_max", "flip_consistency", "random"):
        assert f"{name}: mAP@0.5" in printed


def test_an_unknown_sampler_fails_before_any_training(canvases, tmp_path):
    with pytest.raises(ValueError, match="unknown detection sampler 'entropy'"):
        simulate(canvases, DetectionSimConfig(samplers=("entropy",), seeds=1), tmp_path)


def test_the_command_line_says_what_is_wrong_in_one_line(canvases, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--data", str(canvases), "--out", str(tmp_path), "--samplers", "entropy"])
    assert str(done.value).startswith("activestream: unknown detection sampler 'entropy'")
    with pytest.raises(SystemExit, match="no detection data"):
        main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])


def test_runs_in_worker_processes_match_the_same_runs_in_one_thread_here(canvases, tmp_path):
    import torch

    cfg = DetectionSimConfig(
        samplers=("box_entropy_max",),
        seeds=2,
        seed_images=4,
        batch=4,
        rounds=1,
        candidates=8,
        steps=1,
        minibatch=4,
        image_size=64,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs: the same arithmetic, bit for bit
    try:
        here = simulate(canvases, cfg, tmp_path / "here")
    finally:
        torch.set_num_threads(threads)
    apart = simulate(canvases, cfg, tmp_path / "apart", workers=2)
    for name in ("box_entropy_max", "random"):
        assert [c["map50"] for c in apart["strategies"][name]["curves"]] == [
            c["map50"] for c in here["strategies"][name]["curves"]
        ], name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds": 0}, "seeds must be at least 1, not 0"),
        ({"rounds": 0}, "rounds must be at least 1, not 0"),
        ({"batch": -2}, "batch must be at least 1, not -2"),
        ({"explore_p": 1.5}, r"explore_p must lie in \[0, 1\], not 1.5"),
        ({"lr": 0.0}, "lr must be above 0, not 0.0"),
    ],
)
def test_a_study_that_cannot_run_is_refused_when_configured(change, message):
    with pytest.raises(ValueError, match=message):
        DetectionSimConfig(**change)


def test_the_command_line_refuses_zero_seeds_or_workers_in_one_line(canvases, tmp_path):
    with pytest.raises(SystemExit, match="activestream: seeds must be at least 1, not 0"):
        main(["--data", str(canvases), "--out", str(tmp_path), "--seeds", "0"])
    with pytest.raises(SystemExit) as done:  # argparse: usage and the reason, exit status 2
        main(["--data", str(canvases), "--out", str(tmp_path), "--workers", "0"])
    assert done.value.code == 2
    assert not (tmp_path / "results.json").exists()


def test_data_rewritten_in_place_is_read_anew_by_the_next_study(tmp_path):
    from activestream.pipelines import detection_sim

    data = tmp_path / "canvases"
    cfg = DetectionSimConfig(samplers=(), seeds=1, seed_images=2, batch=2, rounds=1,
                             candidates=4, steps=0, minibatch=2, image_size=64)  # fmt: skip
    make_canvases(data, CanvasSpec(source="digits", pool=8, test=4, size=64, seed=0))
    simulate(data, cfg, tmp_path / "first")
    first = detection_sim._DATA[str(data)][0][0][0].clone()
    make_canvases(data, CanvasSpec(source="digits", pool=8, test=4, size=64, seed=1))
    simulate(data, cfg, tmp_path / "second")
    assert not detection_sim._DATA[str(data)][0][0][0].equal(first)


def test_worker_runs_leave_the_decoded_data_to_the_workers(canvases, tmp_path):
    from activestream.pipelines import detection_sim

    cfg = DetectionSimConfig(samplers=(), seeds=2, seed_images=2, batch=2, rounds=1,
                             candidates=4, steps=0, minibatch=2, image_size=64)  # fmt: skip
    simulate(canvases, cfg, tmp_path, workers=2)
    assert detection_sim._DATA == {}
