"""What the asynchronous service costs in labels, against the in-process simulator.

    python -m activestream.benchmarks.real_loop            # ~20 min on 2 cores
    python -m activestream.benchmarks.real_loop --render   # only re-render docs/real-loop.md

The simulator runs the loop's classes in lockstep: every query comes from a model that has
seen every earlier label. The real service does not wait: annotators lease from the last
finished round while the trainer moves on, several people label at once, and a query can be
some versions old when it is answered. Each session here starts a fresh ``activestream serve``
(its own Ray cluster and state) on the bundled digits and labels it over HTTP with the oracle
annotator (:mod:`activestream.pipelines.annotate`); the simulator runs the same config at the
same budget. Rows vary how many people label and how fast, the buffer and the rescoring
cadence, so the table says what staleness and concurrency cost and which settings win it back.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream.benchmarks.freshness import SERVICE
from activestream.benchmarks.pages import Page, add_tiny_argument
from activestream.config import Config
from activestream.pipelines.curves import area_under_curve, labels_to_reach
from activestream.pipelines.realloop import session
from activestream.pipelines.simulate import simulate
from activestream.sources.resolve import resolve_dataset

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/real_loop.py",
    *SERVICE,
    "samplers/",
)

PAGE = Page(
    "real_loop",
    "The real loop against the simulator",
    "real-loop",
    "real_loop.json",
    note="*Versions behind*: how many model versions the round that scored a query trailed "
    "the newest model when the query was leased (exploited queries only).",
    postscript="\n![curves](real-loop/real_loop.png)\n",
)
BEGIN, END = PAGE.begin, PAGE.end
#: name -> (annotators, labels per second each, config overrides)
VARIANTS: dict[str, tuple[int, float, dict[str, Any]]] = {
    "1 person at 8 labels/s": (1, 8.0, {}),
    "4 people at 2 labels/s": (4, 2.0, {}),
    "4 people, buffer 8": (4, 2.0, {"training.buffer_size": 8}),
    "4 people, rescore every 2 versions": (4, 2.0, {"scoring.rescore_every": 2}),
    "random, 4 people at 2 labels/s": (4, 2.0, {"sampling.sampler": "random"}),
}


def run(
    budget: int, seeds: int, sim_seeds: int, only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The simulator's curves, then every variant's sessions (or the ``only`` ones)."""
    from activestream.benchmarks.suite import machine

    cfg = Config()
    pool, test = resolve_dataset(cfg)
    began = time.perf_counter()
    sim = simulate(
        cfg,
        pool,
        test,
        strategies=[cfg.sampling.sampler],
        seeds=sim_seeds,
        budget=budget,
        progress=False,
        workers=min(2, sim_seeds),  # one seed: in process, no worker start
    )
    print(f"simulator: {time.perf_counter() - began:.0f} s", flush=True)
    variants: dict[str, Any] = {}
    for name, (people, rate, overrides) in VARIANTS.items():
        if only is not None and name not in only:
            continue
        runs = []
        for seed in range(seeds):
            run_cfg = cfg.with_overrides({"seed": seed, **overrides})
            print(f"== {name}, seed {seed}", flush=True)
            runs.append(
                session(run_cfg, budget=budget, annotators=people, rate=rate, progress=False)
            )
        acc = np.array([r["accuracy"] for r in runs])
        variants[name] = {
            "annotators": people,
            "rate": rate,
            "overrides": overrides,
            "sampler": runs[0]["sampler"],
            "labels": runs[0]["labels"],
            "accuracy_mean": acc.mean(axis=0).round(5).tolist(),
            "accuracy_std": acc.std(axis=0).round(5).tolist(),
            "versions_behind": [r["mean_versions_behind"] for r in runs],
            "seconds_to_post": [r["seconds_to_post_budget"] for r in runs],
            "empty_leases": [r["empty_leases"] for r in runs],
            "accepted": [r["accepted"] for r in runs],
            "errors": sum(len(r["errors"]) for r in runs),
        }
    return {
        "machine": machine(),
        "budget": budget,
        "seeds": seeds,
        "simulator_seeds": sim_seeds,
        "sampler": cfg.sampling.sampler,
        "simulator": sim["strategies"],
        "variants": variants,
    }


#: The service's own random session: the target every service row is measured against.
RANDOM_VARIANT = "random, 4 people at 2 labels/s"


def targets(data: dict[str, Any]) -> tuple[float, float]:
    """Random's final accuracy in the simulator, and in the service's own random session.

    Service rows are measured against the service's random session (same HTTP, timing and
    staleness), not the simulator's: the strongest fair baseline for a loop is random through
    the same loop.
    """
    sim = data["simulator"]["random"]["accuracy_mean"][-1]
    return sim, data["variants"][RANDOM_VARIANT]["accuracy_mean"][-1]


def _row(name: str, labels: list[int], acc: list[float], target: float) -> dict[str, Any]:
    return {
        "name": name,
        "final": acc[-1],
        "auc": area_under_curve(labels, acc),
        "need": labels_to_reach(labels, acc, target),
    }


def render_markdown(data: dict[str, Any]) -> str:
    """The table: simulator rows against the simulator's random, service rows against its own."""
    sim = data["simulator"]
    sampler, budget = data["sampler"], data["budget"]
    sim_target, target = targets(data)
    m = data["machine"]
    lines = [
        f"Bundled digits, defaults (sampler `{sampler}`), budget {budget}; simulator "
        f"{data['simulator_seeds']} seeds, real service {data['seeds']} sessions per row; "
        f"{m['cores']} cores ({m['cpu']}), {m['when']}, commit {m.get('commit')}. Labels to "
        f"target: to random's final accuracy in the same place, the simulator's ({sim_target:.3f}) "
        f"for simulator rows, the service's own random session's ({target:.3f}) for service "
        "rows.",
        "",
        "| run | final accuracy | AUC | labels to target | versions behind | "
        "seconds to post | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in sim.items():
        r = _row(name, s["labels"], s["accuracy_mean"], sim_target)
        need = "not reached" if r["need"] is None else str(r["need"])
        lines.append(
            f"| simulator, {name} | {r['final']:.3f} | {r['auc']:.3f} | {need} | 0 | - | - |"
        )
    for name, v in data["variants"].items():
        r = _row(name, v["labels"], v["accuracy_mean"], target)
        need = "not reached" if r["need"] is None else str(r["need"])
        behind = [b for b in v["versions_behind"] if b is not None]
        lines.append(
            f"| service, {name} | {r['final']:.3f} | {r['auc']:.3f} | {need} | "
            f"{np.mean(behind):.2f} | {np.mean(v['seconds_to_post']):.0f} | {v['errors']} |"
            if behind
            else f"| service, {name} | {r['final']:.3f} | {r['auc']:.3f} | {need} | - | "
            f"{np.mean(v['seconds_to_post']):.0f} | {v['errors']} |"
        )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    """Simulator and service curves on one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    for name, s in data["simulator"].items():
        ax.plot(s["labels"], s["accuracy_mean"], linestyle=":", linewidth=2, label=f"sim {name}")
    for name, v in data["variants"].items():
        style = "--" if v["sampler"] == "random" else "-"
        ax.plot(v["labels"], v["accuracy_mean"], linestyle=style, label=name)
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("digits: the real service over HTTP vs the in-process simulator")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--out", default="docs/real-loop")
    parser.add_argument("--budget", type=int, default=320)
    parser.add_argument("--seeds", type=int, default=2, help="sessions per variant")
    parser.add_argument("--sim-seeds", type=int, default=5)
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    only = None
    if args.tiny:  # random's session: the baseline every row needs, every line of the code
        args.budget, args.seeds, args.sim_seeds = 32, 1, 1
        only = (RANDOM_VARIANT,)
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(args.budget, args.seeds, args.sim_seeds, only),
        render=render_markdown,
        plot=lambda data, out: plot(data, out / "real_loop.png"),
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
