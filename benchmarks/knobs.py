"""Which knob costs what: the reference loop inside activestream, one knob at a time.

    python -m activestream.benchmarks.knobs            # 5 seeds, budget 400, ~15 min on 2 cores
    python -m activestream.benchmarks.knobs --render   # only re-render docs/knobs.md

The reference (a plain pool-based loop on the bundled digits: 20 random labels first, then
batches of 16 by margin, after each batch 30 steps of 64 drawn uniformly from all labels, no
exploration slots, a small max-pool CNN without dropout) is rebuilt from activestream's own
trainer, scorer and queue. Each row then moves one knob from the reference to what
activestream's defaults were before this table existed, and the last rows are those old
defaults and the new ones. Every row runs margin and random with the same knobs, same seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from activestream.benchmarks.freshness import LEARNING
from activestream.benchmarks.pages import Page, add_tiny_argument
from activestream.benchmarks.suite import machine as suite_machine
from activestream.config import Config
from activestream.pipelines.curves import compare
from activestream.pipelines.simulate import plot_curves, simulate
from activestream.sources.resolve import resolve_dataset

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/knobs.py",
    *LEARNING,
)

PAGE = Page(
    "knobs",
    "Which knob costs what",
    "knobs",
    "knobs.json",
    postscript="\n![new defaults](knobs/new_defaults.png)\n",
)
BEGIN, END = PAGE.begin, PAGE.end


def reference_cnn(num_classes: int, *, shape: tuple[int, int, int] = (1, 8, 8)) -> nn.Module:
    """The reference loop's CNN: two 3x3 convolutions, a 2x2 max-pool, no dropout."""
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * (h // 2) * (w // 2), 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


REFERENCE: dict[str, Any] = {
    "model.factory": "activestream.benchmarks.knobs:reference_cnn",
    "model.dropout": 0.0,
    "training.policy": "full",
    "training.batch_size": 64,
    "training.steps_per_update": 30,
    "training.buffer_size": 16,
    "sampling.explore_p": 1.0,
    "sampling.cold_start": True,
    "sampling.warmup_labels": 20,
    "sampling.warmup_accuracy": 1.01,  # above 1: a fixed warm-up of warmup_max_labels
    "sampling.warmup_max_labels": 20,
}
OLD_DEFAULTS: dict[str, Any] = {
    "model.factory": "digits_cnn",
    "model.dropout": 0.25,
    "training.policy": "replay",
    "training.replay_ratio": 0.5,
    "training.batch_size": 32,
    "sampling.explore_p": 0.9,
    "sampling.cold_start": False,
}
#: (row name, what changed, overrides on top of the reference)
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("reference", "the reference loop", {}),
    ("no random start", "margin from the first label", {"sampling.cold_start": False}),
    (
        "replay half new",
        "each minibatch half newest batch, half older labels",
        {"training.policy": "replay", "training.replay_ratio": 0.5},
    ),
    ("minibatch 32", "32 labels per step instead of 64", {"training.batch_size": 32}),
    ("explore p 0.9", "one slot in ten a random pick", {"sampling.explore_p": 0.9}),
    (
        "model digits_cnn",
        "the built-in CNN (average pool, dropout 0.25)",
        {"model.factory": "digits_cnn", "model.dropout": 0.25},
    ),
    (
        "evidence hand-over",
        "random until prequential accuracy reaches 0.5 (at least 20 labels)",
        {"sampling.warmup_accuracy": 0.5, "sampling.warmup_max_labels": 200},
    ),
    ("old defaults", "activestream's defaults before this table", OLD_DEFAULTS),
    ("new defaults", "activestream's defaults now", "defaults"),  # type: ignore[list-item]
]
#: (row name, what changed, overrides on top of the new defaults): the way back.
BACK: list[tuple[str, str, dict[str, Any]]] = [
    ("defaults + minibatch 64", "64 labels per step", {"training.batch_size": 64}),
    ("defaults + uniform replay", "minibatches drawn from all labels", {"training.policy": "full"}),
    ("defaults + explore p 1.0", "no exploration slots", {"sampling.explore_p": 1.0}),
    (
        "defaults + fixed hand-over",
        "hand over after 20 labels whatever the evidence",
        {"sampling.warmup_accuracy": 1.01, "sampling.warmup_max_labels": 20},
    ),
    (
        "defaults + hand-over at 0.3",
        "hand over once prequential accuracy reaches 0.3",
        {"sampling.warmup_accuracy": 0.3},
    ),
    (
        "defaults + all three",
        "minibatch 64, uniform replay, p 1.0",
        {"training.batch_size": 64, "training.policy": "full", "sampling.explore_p": 1.0},
    ),
]


def _config(overrides: dict[str, Any] | str, back: bool = False) -> Config:
    if overrides == "defaults":
        return Config()
    if back:
        return Config().with_overrides(overrides)  # type: ignore[arg-type]
    return Config().with_overrides({**REFERENCE, **overrides})  # type: ignore[dict-item]


def run(seeds: int, budget: int, workers: int, only: set[str] | None = None) -> dict[str, Any]:
    """Every row: margin and random, ``seeds`` seeds, ``budget`` labels."""
    rows = []
    began = time.perf_counter()
    plan = [(n, w, o, False) for n, w, o in ROWS] + [(n, w, o, True) for n, w, o in BACK]
    for name, what, overrides, back in plan:
        if only and name not in only:
            continue
        cfg = _config(overrides, back)
        pool, test = resolve_dataset(cfg)
        t0 = time.perf_counter()
        results = simulate(
            cfg,
            pool,
            test,
            strategies=["margin"],
            seeds=seeds,
            budget=budget,
            progress=False,
            workers=workers,
        )
        table = compare(results)
        rows.append(
            {"name": name, "what": what, "back": back, "results": results, "compare": table}
        )
        m, r = table["margin"], table["random"]
        print(
            f"{name:<22} margin auc {m['auc']:.3f} vs random {r['auc']:.3f}; "
            f"labels to random final {m['labels_to_random_final']}; "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return {
        "seeds": seeds,
        "budget": budget,
        "seconds": round(time.perf_counter() - began, 1),
        "machine": suite_machine(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }


def _acc_at(r: dict[str, Any], n: int) -> float:
    return float(np.interp(n, r["labels"], r["accuracy_mean"]))


def _table(rows: list[dict[str, Any]], budget: int, header: str) -> list[str]:
    lines = [
        f"| setting | {header} | margin AUC | random AUC | margin - random | margin at 100 "
        "labels | random at 100 | labels to random's final | share | margin stays above random "
        "from |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, r = row["compare"]["margin"], row["compare"]["random"]
        ms, rs = row["results"]["strategies"]["margin"], row["results"]["strategies"]["random"]
        need = m["labels_to_random_final"]
        share = "-" if need is None else f"{need / budget:.0%}"
        above = m["stays_above_from"]
        lines.append(
            f"| {row['name']} | {row['what']} | {m['auc']:.3f} | {r['auc']:.3f} | "
            f"{m['auc'] - r['auc']:+.3f} | {_acc_at(ms, 100):.3f} | {_acc_at(rs, 100):.3f} | "
            f"{'not reached' if need is None else need} | {share} | "
            f"{'never' if above is None else above} |"
        )
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    """Two tables: from the reference toward the old defaults, then from the new defaults back.

    Every row runs margin and random under the same knobs and seeds.
    """
    budget = data["budget"]
    forward = [r for r in data["rows"] if not r.get("back")]
    back = [r for r in data["rows"] if r.get("back")]
    m = data["machine"]
    if isinstance(m, dict):  # runs since the JSON records the machine and commit
        m = f"{m['cores']} cores, torch {m['torch']}, commit {m['commit']}"
    lines = [
        f"Digits, margin vs random under the same knobs, {data['seeds']} seeds, budget "
        f"{budget}; {m}, {data['date']}, {data['seconds'] / 60:.0f} min.",
        "",
        "### From the reference loop, one knob at a time",
        "",
        *_table(forward, budget, "what changed from the reference"),
    ]
    if back:
        lines += [
            "",
            "### From the new defaults, one knob back toward the reference",
            "",
            *_table(back, budget, "what changed from the new defaults"),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--out", default="docs/knobs")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", help="comma-separated row names (a partial run)")
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if args.tiny:  # the reference and the new defaults: every code path, two rows
        args.seeds, args.budget, only = 1, 32, {"reference", "new defaults"}
        args.workers = 1  # in process: starting worker processes would cost more than the runs
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(args.seeds, args.budget, args.workers, only),
        render=render_markdown,
        plot=lambda data, out: plot_curves(
            next(r for r in data["rows"] if r["name"] == "new defaults")["results"],
            out / "new_defaults.png",
        ),
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
