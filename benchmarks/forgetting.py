"""Forgetting under a class-incremental stream: new_only vs replay vs full.

Labels arrive in class order (0 and 1 first, 8 and 9 last) in batches of ``buffer_size``; after
the stream, each policy's model is scored on the held-out examples of the first classes (what
it may have forgotten) and on all classes, with its total training time.

    python -m activestream.benchmarks.forgetting --out results/forgetting
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream.actors.items import ItemStore
from activestream.actors.trainer import Trainer
from activestream.benchmarks.entry import Size, pick
from activestream.config import Config
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import load_arrays

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/forgetting.py",
    "actors/trainer.py",
    "models/",
    "config.py",
)


def run_policy(cfg: Config, policy: str, seed: int, rows: int | None = None) -> dict[str, float]:
    """One class-incremental stream under ``policy``: accuracies and training seconds.

    ``rows`` streams a random subset of the pool (a tiny run), in class order all the same.
    """
    pool, test = resolve_dataset(cfg)
    ids, _, y = load_arrays(pool)
    _, x_test, y_test = load_arrays(test)
    subset = np.arange(len(y))
    if rows is not None:
        subset = np.sort(np.random.default_rng(seed).permutation(len(y))[:rows])
    order = subset[np.argsort(y[subset], kind="stable")]  # class-incremental: 0s, then 1s, ...
    training = cfg.training.model_copy(update={"policy": policy})
    trainer = Trainer(training=training, model=cfg.model, items=ItemStore(pool), seed=seed)
    began = time.perf_counter()
    size = training.buffer_size
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        trainer.add_labels([{"id": ids[i], "label": int(y[i])} for i in rows])
        trainer.partial_fit()
    seconds = time.perf_counter() - began
    first, last = y_test < 2, y_test >= y_test.max() - 1
    return {
        "first_classes_accuracy": trainer.evaluate(x_test[first], y_test[first]),
        "last_classes_accuracy": trainer.evaluate(x_test[last], y_test[last]),
        "all_classes_accuracy": trainer.evaluate(x_test, y_test),
        "train_seconds": seconds,
    }


POLICIES = ("new_only", "replay", "full")


def policies(seeds: int, rows: int | None = None) -> dict[str, dict[str, float]]:
    """Every policy, mean over ``seeds`` seeds (on ``rows`` of the pool, all by default)."""
    cfg = Config()
    table = {}
    for policy in POLICIES:
        runs = [run_policy(cfg, policy, seed, rows) for seed in range(seeds)]
        table[policy] = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
    return table


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """The suite's entry: one row per policy (3 seeds); the ratio is replay's cost vs new_only."""
    seeds = pick(size, tiny=1, quick=3, full=3)
    table = policies(seeds, pick(size, tiny=200, quick=None, full=None))
    base = table["new_only"]["train_seconds"]
    return [
        {
            "name": f"forgetting_{policy}",
            "policy": policy,
            "seeds": seeds,
            **r,
            "ratio": round(r["train_seconds"] / base, 3) if base else None,
        }
        for policy, r in table.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="results/forgetting")
    args = parser.parse_args()
    table = policies(args.seeds)
    print(f"{'policy':<10} {'acc classes 0-1':>16} {'acc all':>8} {'train s':>8}")
    for policy, r in table.items():
        print(
            f"{policy:<10} {r['first_classes_accuracy']:>16.3f} "
            f"{r['all_classes_accuracy']:>8.3f} {r['train_seconds']:>8.1f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "forgetting.json").write_text(
        json.dumps({"seeds": args.seeds, "policies": table}, indent=2)
    )


if __name__ == "__main__":
    main()
