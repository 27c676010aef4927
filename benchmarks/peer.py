"""Peer benchmark: activestream's online loop against modAL's retrain-from-scratch loop.

activestream trains online: each buffer of ``buffer_size`` answers costs one short update of a
model that keeps its weights. The common single-process alternative, `modAL
<https://github.com/modAL-python/modAL>`_ with a `skorch <https://skorch.readthedocs.io>`_
network, refits the estimator from scratch on every label so far after each query batch. This
benchmark asks whether the online loop gives up label efficiency for its speed, on the bundled
digits, with both sides as equal as the libraries allow:

* the same network (``build_model("digits_cnn", ...)``, same dropout), AdamW with the
  configured learning rate and weight decay, minibatches of ``training.batch_size`` (32);
* the same query batch (``training.buffer_size`` = 16), budget, pool and held-out split, and
  entropy sampling on both sides;
* one torch thread on both sides, so the wall times compare work rather than parallelism;
* the same device: skorch runs where activestream's trainer runs (``pick_device``: the GPU
  where there is one).

Differences, on purpose or forced by the libraries:

* Epochs. activestream takes ``steps_per_update`` (30) minibatch steps per buffer of 16
  labels, so after ``n`` labels its model has taken ``30 * n / 16`` steps in all. A modAL refit
  on ``n`` labels takes ``epochs * ceil(n / 32)`` steps, so each refit gets
  ``round(30 * n / 16 / ceil(n / 32))`` epochs (30 to 60; 60 whenever ``n`` is a multiple of
  32): every refitted model takes as many gradient steps as the online model has taken in total
  by the same label count. Each modAL model is thus trained as much as the online one and the
  price of retraining from scratch shows up in wall time, which is what this benchmark is for.
* Start. modAL's learner needs a fitted estimator before its first query, so it starts from 16
  random labels (seeded); activestream uses its defaults: a cold start that asks random items
  until its prequential accuracy says the model is ready, then entropy with random exploration
  (``explore_p``).
* Scoring batch. skorch predicts the pool in batches of ``scoring.batch_size`` (256), not its
  default 32, so the baseline is not slowed down by an unlucky default.

A third side is what a skilled modAL user would write instead of refitting from scratch:
skorch's ``warm_start=True`` keeps the network and its optimizer between fits, and each query
batch trains on every label so far for ``round(steps_per_update / ceil(n / 32))`` epochs (at
least one), the online trainer's steps per buffer (:func:`warm_epochs`).

Rows: ``al_vs_modal_labels`` (labels each side needs to reach a fixed target
accuracy on its mean curve, and per seed; final accuracy mean and standard deviation over
seeds; ratio = activestream / modAL, below 1 means activestream needs fewer) and
``al_vs_modal_wall`` (seconds for the whole budget, mean over seeds; ratio = modAL /
activestream, the speedup), and the same two for the warm-started side
(``al_vs_modal_warm_labels``, ``al_vs_modal_warm_wall``). ``peer_learning_curves.png``
shows every side's curve, mean ± std.

It needs the ``bench`` extra (``pip install -e '.[bench]'``). Run it with::

    python -m activestream.benchmarks.peer --quick --out /tmp/peer  # 5 seeds, 160 labels
    python -m activestream.benchmarks.peer --out results/bench      # 5 seeds, 400 labels
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import LEARNING
from activestream.config import Config
from activestream.models import build_model
from activestream.models.parts import pick_device
from activestream.pipelines.simulate import Curve, labels_to_reach, run_once
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ShardSet, load_arrays

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/peer.py",
    *LEARNING,
)

TARGET_ACCURACY = 0.90
TINY = {"seeds": 1, "budget": 32}
QUICK = {"seeds": 5, "budget": 160}
FULL = {"seeds": 5, "budget": 400}
_MISSING = "the peer benchmark needs the bench extra: pip install -e '.[bench]'"


def _bench_libraries() -> tuple[Any, Any, Any]:
    """modAL's ActiveLearner and entropy sampling, and skorch's classifier, or a RuntimeError."""
    try:
        from modAL.models import ActiveLearner
        from modAL.uncertainty import entropy_sampling
        from skorch import NeuralNetClassifier
    except ImportError as exc:
        raise RuntimeError(_MISSING) from exc
    return ActiveLearner, entropy_sampling, NeuralNetClassifier


def _learner_class(active_learner: type) -> type:
    """ActiveLearner whose ``teach`` works with scikit-learn >= 1.8.

    modAL 0.4.x validates new labels with ``check_X_y(..., force_all_finite=...)``, a keyword
    scikit-learn 1.8 removed; this subclass stacks the data itself and leaves fitting to modAL.
    """
    from modAL.utils.data import data_vstack

    class _Learner(active_learner):  # type: ignore[misc, valid-type]
        def _add_training_data(self, X: np.ndarray, y: np.ndarray) -> None:
            if self.X_training is None:
                self.X_training, self.y_training = X, y
            else:
                self.X_training = data_vstack((self.X_training, X))
                self.y_training = data_vstack((self.y_training, y))

    return _Learner


def modal_epochs(cfg: Config, n: int) -> int:
    """Epochs for a refit on ``n`` labels: the online trainer's total steps after ``n`` labels.

    >>> [modal_epochs(Config(), n) for n in (16, 32, 48, 160)]
    [30, 60, 45, 60]
    """
    t = cfg.training
    steps = t.steps_per_update * n / t.buffer_size
    return max(1, round(steps / math.ceil(n / t.batch_size)))


def warm_epochs(cfg: Config, n: int) -> int:
    """Epochs for a warm-started fit on ``n`` labels: the online trainer's steps per buffer.

    >>> [warm_epochs(Config(), n) for n in (16, 32, 48, 160, 400)]
    [30, 30, 15, 6, 2]
    """
    t = cfg.training
    return max(1, round(t.steps_per_update / math.ceil(n / t.batch_size)))


def run_modal(
    cfg: Config, pool: ShardSet, test: ShardSet, *, seed: int, budget: int, warm: bool = False
) -> Curve:
    """One modAL session: 16 random labels, then entropy queries of 16 with a fit after each.

    ``warm=False`` refits a fresh network on every label so far (modAL's usual loop); ``True``
    keeps training the same network and optimizer (skorch ``warm_start``).
    """
    active_learner, entropy_sampling, classifier = _bench_libraries()
    learner_cls = _learner_class(active_learner)
    began = time.perf_counter()
    _, x_pool, y_pool = load_arrays(pool)
    _, x_test, y_test = load_arrays(test)
    if y_pool is None or y_test is None:
        raise ValueError("the peer benchmark needs labeled pool and test shards")
    batch = cfg.training.buffer_size
    num_classes = len(pool.classes)
    rng = np.random.default_rng(seed)
    unlabeled = np.ones(len(y_pool), dtype=bool)
    first = rng.choice(len(y_pool), size=min(batch, budget), replace=False)
    unlabeled[first] = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # shuffling and dropout; build_model seeds the initial weights
        net = classifier(
            module=build_model,  # a callable, so every fit builds a fresh network
            module__factory=cfg.model.factory,
            module__shape=tuple(pool.shape),
            module__num_classes=num_classes,
            module__dropout=cfg.model.dropout,
            module__seed=seed,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=cfg.training.weight_decay,
            lr=cfg.training.lr,
            batch_size=cfg.training.batch_size,
            max_epochs=modal_epochs(cfg, len(first)),  # the first fit
            warm_start=warm,
            iterator_train__shuffle=True,
            iterator_valid__batch_size=cfg.scoring.batch_size,
            train_split=None,
            classes=list(range(num_classes)),
            verbose=0,
            device=str(pick_device()),
        )
        learner = learner_cls(
            estimator=net,
            query_strategy=entropy_sampling,
            X_training=x_pool[first],
            y_training=y_pool[first],
        )
        labels, accuracy = [len(first)], [float(learner.score(x_test, y_test))]
        while labels[-1] < budget and unlabeled.any():
            rows = np.flatnonzero(unlabeled)
            n = min(batch, budget - labels[-1], len(rows))
            picked, _ = learner.query(x_pool[rows], n_instances=n)
            chosen = rows[np.asarray(picked)]
            unlabeled[chosen] = False
            # fits on every label so far: from scratch, or on from the last fit
            n_labels = labels[-1] + len(chosen)
            epochs = warm_epochs(cfg, n_labels) if warm else modal_epochs(cfg, n_labels)
            learner.teach(x_pool[chosen], y_pool[chosen], epochs=epochs)
            labels.append(labels[-1] + len(chosen))
            accuracy.append(float(learner.score(x_test, y_test)))
    return Curve(labels, accuracy, time.perf_counter() - began)


def _summary(curves: list[Curve]) -> dict[str, Any]:
    grid = curves[0].labels
    if any(c.labels != grid for c in curves):
        raise RuntimeError("runs of one side ended on different label grids")
    acc = np.array([c.accuracy for c in curves])
    return {
        "labels": grid,
        "mean": acc.mean(axis=0),
        "std": acc.std(axis=0),
        "seconds": float(np.mean([c.seconds for c in curves])),
    }


def _plot(sides: dict[str, dict[str, Any]], target: float, seeds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in sides.items():
        x = np.array(s["labels"])
        ax.plot(x, s["mean"], label=f"{name} ({s['seconds']:.1f} s/run)")
        ax.fill_between(x, s["mean"] - s["std"], s["mean"] + s["std"], alpha=0.2)
    ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"digits, entropy sampling: online vs retrain ({seeds} seeds, mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(size: Size, out: Path, target: float = TARGET_ACCURACY) -> list[dict[str, Any]]:
    """Run both loops for every seed; writes ``out/peer_learning_curves.png``.

    Args:
        size: 160 labels (quick) or 400 (full), 5 seeds either way; tiny: 1 seed, 32 labels.
        out: Folder for the plot; created when missing.
        target: Held-out accuracy whose label cost is compared.

    Returns:
        The ``al_vs_modal_labels`` and ``al_vs_modal_wall`` rows.

    Raises:
        RuntimeError: modAL or skorch is not installed.
    """
    _bench_libraries()  # fail before any work when the extra is missing
    plan = pick(size, tiny=TINY, quick=QUICK, full=FULL)
    seeds, budget = plan["seeds"], plan["budget"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="peer-") as cache:
            cfg = Config().with_overrides({"data.cache_dir": cache, "training.buffer_size": 16})
            pool, test = resolve_dataset(cfg)
            if test is None:
                raise RuntimeError("the bundled digits came without a test split")
            curves: dict[str, list[Curve]] = {"activestream": [], "modAL": [], "modAL warm": []}
            for i in range(seeds):
                seed = cfg.seed + i
                a = run_once(cfg, pool, test, strategy="entropy", seed=seed, budget=budget)
                curves["activestream"].append(a)
                print(
                    f"seed {seed}: activestream {a.accuracy[-1]:.3f} in {a.seconds:.1f} s",
                    flush=True,
                )
                for side, warm in (("modAL", False), ("modAL warm", True)):
                    m = run_modal(cfg, pool, test, seed=seed, budget=budget, warm=warm)
                    curves[side].append(m)
                    print(
                        f"seed {seed}: {side:12} {m.accuracy[-1]:.3f} in {m.seconds:.1f} s",
                        flush=True,
                    )
    finally:
        torch.set_num_threads(threads)
    sides = {name: _summary(c) for name, c in curves.items()}
    need = {
        name: labels_to_reach(s["labels"], s["mean"].tolist(), target) for name, s in sides.items()
    }
    per_seed = {
        name: [labels_to_reach(c.labels, c.accuracy, target) for c in runs]
        for name, runs in curves.items()
    }
    finals = {name: [c.accuracy[-1] for c in runs] for name, runs in curves.items()}
    out.mkdir(parents=True, exist_ok=True)
    _plot(sides, target, seeds, out / "peer_learning_curves.png")
    rows = []
    for side, suffix in (("modAL", ""), ("modAL warm", "_warm")):
        a_need, m_need = need["activestream"], need[side]
        a_sec, m_sec = sides["activestream"]["seconds"], sides[side]["seconds"]
        common = {"seeds": seeds, "budget": budget, "device": str(pick_device())}
        rows += [
            {
                "name": f"al_vs_modal{suffix}_labels",
                "target_accuracy": target,
                "activestream_labels": a_need,
                "modal_labels": m_need,
                "activestream_labels_per_seed": per_seed["activestream"],
                "modal_labels_per_seed": per_seed[side],
                "activestream_final_accuracy": round(float(np.mean(finals["activestream"])), 4),
                "activestream_final_accuracy_std": round(float(np.std(finals["activestream"])), 4),
                "modal_final_accuracy": round(float(np.mean(finals[side])), 4),
                "modal_final_accuracy_std": round(float(np.std(finals[side])), 4),
                **common,
                "ratio": a_need / m_need if a_need is not None and m_need else None,
            },
            {
                "name": f"al_vs_modal{suffix}_wall",
                "activestream_seconds": round(a_sec, 2),
                "modal_seconds": round(m_sec, 2),
                **common,
                "ratio": m_sec / a_sec if a_sec > 0 else None,
            },
        ]
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main() -> None:  # noqa: D103
    bench_main(run, "peer", __doc__)


if __name__ == "__main__":
    main()
