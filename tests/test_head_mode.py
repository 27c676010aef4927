"""``model.train: head``: frozen backbone features computed once, a final layer that learns."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from activestream.actors.items import ItemStore
from activestream.actors.scorer import Scorer
from activestream.actors.trainer import Trainer
from activestream.config import Config
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path_factory.mktemp("cache"))})
    pool, test = resolve_dataset(cfg)
    return cfg, pool, test


def head_cfg(cfg: Config) -> Config:
    return cfg.with_overrides({"model.train": "head", "training.buffer_size": 8})


def test_the_trainer_keeps_features_and_trains_only_the_final_layer(digits):
    cfg, pool, _ = digits
    cfg = head_cfg(cfg)
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    truth = ground_truth(pool)
    trainer.add_labels([{"id": i, "label": truth[i]} for i in list(truth)[:8]])
    trainer.fetch_pending()  # what the training thread does before it trains
    assert trainer._x[0].shape == (trainer._head.in_features,)
    assert trainer.step_if_ready()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.5.weight", "head.5.bias"}


def test_scoring_features_gives_the_same_scores_as_scoring_images(digits):
    cfg, pool, _ = digits
    cfg = head_cfg(cfg)
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    scorer = Scorer(model=cfg.model, shape=pool.shape, num_classes=10, sampler="margin")
    x = ItemStore(pool).get(list(ground_truth(pool))[:32])
    from_images = scorer.outputs(x)
    from_features = scorer.feature_outputs(trainer.features(x))
    np.testing.assert_allclose(from_features[0], from_images[0], atol=1e-5)
    np.testing.assert_allclose(from_features[1], from_images[1], atol=1e-5)


def test_the_simulator_runs_head_mode_on_features_and_learns(digits):
    from activestream.pipelines.simulate import run_once

    cfg, pool, test = digits
    curve = run_once(head_cfg(cfg), pool, test, strategy="margin", seed=0, budget=48)
    assert curve.labels[-1] == 48
    assert curve.accuracy[-1] > curve.accuracy[0]


@pytest.mark.slow
def test_the_loop_scores_rounds_over_feature_files_written_once(ray_session, tmp_path):
    from activestream.pipelines.loop import ActiveLoop

    cfg = Config().with_overrides(
        {
            "data.cache_dir": str(tmp_path / "cache"),
            "model.train": "head",
            "training.buffer_size": 4,
            "training.steps_per_update": 3,
            "sampling.candidates": 64,
        }
    )
    pool, _ = resolve_dataset(cfg)
    loop = ActiveLoop(cfg, pool)
    loop.start()
    try:
        loop.wait_for(lambda: loop.rounds, 180, "the first round over features")
        files = sorted((tmp_path / "cache" / "state" / "features").rglob("*.parquet"))
        assert len(files) == len(pool.paths)
        written = [f.stat().st_mtime_ns for f in files]
        assert pq.read_table(files[0]).column_names == ["id", "feature"]
        truth = ground_truth(pool)
        leased = loop.lease(4)
        loop.add_labels([{"id": q.id, "label": truth[q.id]} for q in leased])
        loop.wait_for(lambda: len(loop.rounds) >= 2, 120, "a round after the new version")
        assert [f.stat().st_mtime_ns for f in files] == written  # computed once
    finally:
        loop.stop()
