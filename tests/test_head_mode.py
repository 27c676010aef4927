"""``model.train: head``: frozen backbone features computed once, a final layer that learns."""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from activestream.actors.items import ItemStore
from activestream.actors.scorer import Scorer
from activestream.actors.trainer import Trainer
from activestream.config import Config
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth, load_arrays


def head_cfg(cfg: Config) -> Config:
    return cfg.with_overrides({"model.train": "head", "training.buffer_size": 8})


def test_the_trainer_keeps_features_and_trains_only_the_final_layer(digits):
    cfg, pool, _, _ = digits
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
    cfg, pool, _, _ = digits
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

    cfg, pool, test, _ = digits
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
            "training.pseudo_threshold": 0.15,  # this untrained CNN's features are weak
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
        # pseudo-labels (the fitted head's default) come from a sample of those files
        import ray

        leased = loop.lease(4)
        loop.add_labels([{"id": q.id, "label": truth[q.id]} for q in leased])

        def info() -> dict:
            return ray.get(loop.trainer.model_info.remote())

        loop.wait_for(
            lambda: info()["labels_seen"] == 8 and info()["pseudo_labels"] > 0,
            120,
            "a version trained on the 8 labels and on pseudo-labels",
        )
        time.sleep(1)  # pseudo-labels never become labels, however long it runs
        assert info()["labels_seen"] == 8 and info()["version"] >= 2
    finally:
        loop.stop()


@pytest.mark.parametrize("class_weight", ["none", "balanced"])
def test_the_head_fit_solves_scikit_learns_logistic_regression(class_weight):
    from sklearn.linear_model import LogisticRegression
    from torch import nn

    from activestream.models.head_fit import fit_linear_head

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.5, (4, 16))
    y = np.array([0] * 25 + [1] * 10 + [2] * 5 + [3] * 3)
    x = (centres[y] + rng.normal(0, 1, (len(y), 16))).astype(np.float32)
    head = nn.Linear(16, 4)
    fit_linear_head(head, torch.from_numpy(x), torch.from_numpy(y), l2=0.5,
                    class_weight=class_weight)  # fmt: skip
    ref = LogisticRegression(
        C=2.0, class_weight=None if class_weight == "none" else "balanced", tol=1e-10,
        max_iter=10_000,
    ).fit(x, y)  # fmt: skip
    np.testing.assert_allclose(head.weight.detach().numpy(), ref.coef_, atol=2e-3)
    # softmax is invariant to a shift shared by every class's intercept; float32 L-BFGS
    # leaves about 3e-3 on intercepts of about 1 (measured)
    shift = head.bias.detach().numpy() - ref.intercept_
    np.testing.assert_allclose(shift - shift.mean(), 0, atol=1e-2)


def test_the_trainers_head_is_the_refit_logistic_regression_at_each_version(digits):
    # train: head is logistic regression on frozen features; the trainer solves it at every
    # version, so a scikit-learn model refit on the same labels is what it must equal.
    from sklearn.linear_model import LogisticRegression

    cfg, pool, test, _ = digits
    cfg = head_cfg(cfg).with_overrides(
        {"training.head_l2": 2.0, "training.semi_supervised": "none"}  # labels only
    )
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    truth = ground_truth(pool)
    ids = list(truth)
    _, x_test, _ = load_arrays(test)
    f_test = trainer.features(x_test)
    for count in (64, 200):
        new = ids[len(trainer.held_labels()) : count]
        trainer.add_labels([{"id": i, "label": truth[i]} for i in new])
        trainer.partial_fit()
        f = trainer.features(ItemStore(pool).get(ids[:count]))
        y = np.array([truth[i] for i in ids[:count]])
        ref = LogisticRegression(C=1 / 2.0, max_iter=5000, tol=1e-8).fit(f, y)
        ours = trainer._head(torch.from_numpy(f_test)).detach().numpy()
        agree = (ours.argmax(1) == ref.classes_[ref.decision_function(f_test).argmax(1)]).mean()
        # Measured: 98.9-100% of the test split classified alike at 64 and 200 labels,
        # depending on torch's thread count (the rest are near-ties of this untrained CNN's
        # tiny features, where float32 rounding decides).
        assert agree >= 0.98, (count, agree)


def test_a_fitted_head_refits_on_every_label_it_holds(digits):
    # Five updates of 8, warm started each time, end where one fit on all 40 labels ends.
    from torch import nn

    from activestream.models.head_fit import fit_linear_head

    cfg, pool, _, _ = digits
    cfg = head_cfg(cfg).with_overrides({"training.semi_supervised": "none"})
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    truth = ground_truth(pool)
    ids = list(truth)[:40]
    for start in range(0, 40, 8):
        trainer.add_labels([{"id": i, "label": truth[i]} for i in ids[start : start + 8]])
        trainer.partial_fit()
    assert trainer.held_rows == 40  # the replay policy would keep only the reservoir
    f = torch.from_numpy(trainer.features(ItemStore(pool).get(ids)))
    fresh = nn.Linear(f.shape[1], 10)
    fit_linear_head(fresh, f, torch.tensor([truth[i] for i in ids]), l2=cfg.training.head_l2)
    with torch.no_grad():  # softmax ignores a shift shared by every class: compare centred
        ours, theirs = trainer._head(f).numpy(), fresh(f).numpy()
    np.testing.assert_allclose(
        ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=2e-3
    )


@pytest.mark.parametrize("method", ["pseudo_label", "label_propagation"])
def test_semi_supervised_fits_train_on_pool_items_but_never_report_them_as_labels(digits, method):
    cfg, pool, test, _ = digits
    cfg = head_cfg(cfg).with_overrides(
        {
            "training.semi_supervised": method,
            "training.unlabeled_sample": 300,
            "training.pseudo_threshold": 0.15,  # this untrained CNN's features are weak
        }
    )
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    truth = ground_truth(pool)
    ids = list(truth)[:40]
    trainer.add_labels([{"id": i, "label": truth[i]} for i in ids])
    trainer.partial_fit()
    assert trainer.pseudo_labels > 0
    assert trainer.labels_seen == 40 and len(trainer.held_labels()) == 40
    assert trainer.model_info()["pseudo_labels"] == trainer.pseudo_labels
    assert trainer.held_rows == 40  # pseudo-labeled items are not training rows


def test_pseudo_labels_leave_out_items_labeled_since_the_sample_was_drawn(digits):
    cfg, pool, _, _ = digits
    cfg = head_cfg(cfg).with_overrides(
        {"training.semi_supervised": "pseudo_label", "training.unlabeled_sample": 10_000}
    )
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    truth = ground_truth(pool)
    trainer.add_labels([{"id": i, "label": truth[i]} for i in list(truth)[:16]])
    trainer.partial_fit()
    assert len(trainer._unlabeled_features()) == pool.num_rows - 16


def test_semi_supervised_training_needs_the_fitted_head():
    from activestream.errors import ConfigError

    with pytest.raises(ConfigError, match="model.train: head"):
        Config().with_overrides({"training.semi_supervised": "pseudo_label"})
