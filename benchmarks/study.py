"""The seed's open questions, answered with data.

Run it with ``python -m activestream.benchmarks.study --out docs``.

One command runs the oracle simulator over every question and writes ``docs/study.md`` with
its plots under ``docs/study/``:

1. every sampler (the new BALD, k-center and cluster-margin included) against random, on the
   bundled digits and on a harder synthetic set;
2. how much to buffer: buffer size 1, 8, 32, 128 against labels needed and wall time;
3. train on everything or only on new data: ``new_only`` / ``replay`` / ``full`` on a stream
   whose class mix shifts (classes arrive in order), accuracy on old and new classes;
4. how much to explore: p in {1.0, 0.9, 0.7, 0.5};
5. stream-based selection (ask or skip each arriving record) against random at the same budget.

``--quick`` (2 seeds, smaller budget) checks the pipeline in a few minutes; the default is the
study (5 seeds, budget 400).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream import samplers
from activestream.benchmarks import forgetting
from activestream.config import Config
from activestream.pipelines.simulate import labels_to_reach, plot_curves, run_once, simulate
from activestream.sources.resolve import resolve_dataset
from activestream.sources.synthetic import make_synthetic_shards


def _say(text: str) -> None:
    print(text, flush=True)


def _row(name: str, r: dict[str, Any], target: float, budget: int) -> str:
    need = labels_to_reach(r["labels"], r["accuracy_mean"], target)
    share = f"{need} ({need / budget:.0%})" if need is not None else "not reached"
    final = f"{r['accuracy_mean'][-1]:.3f} ± {r['accuracy_std'][-1]:.3f}"
    return f"| {name} | {final} | {share} | {r['seconds_mean']:.1f} |"


def _need(r: dict[str, Any], target: float) -> int | None:
    return labels_to_reach(r["labels"], r["accuracy_mean"], target)


def _answer(strategies: dict[str, dict[str, Any]], target: float, budget: int) -> str:
    """One data-driven sentence: which setting needs fewest labels, which runs fastest."""
    reached = {n: _need(r, target) for n, r in strategies.items()}
    reached = {n: v for n, v in reached.items() if v is not None}
    fastest = min(strategies, key=lambda n: strategies[n]["seconds_mean"])
    best_acc = max(strategies, key=lambda n: strategies[n]["accuracy_mean"][-1])
    parts = [f"highest final accuracy: **{best_acc}**"]
    if reached:
        fewest = min(reached.values())
        winners = [n for n, v in reached.items() if v == fewest]
        parts.insert(
            0,
            f"fewest labels to random's final accuracy: **{', '.join(winners)}** "
            f"({fewest} of {budget})",
        )
    else:
        parts.insert(0, f"no setting reached random's final accuracy within {budget} labels")
    parts.append(f"fastest: **{fastest}** ({strategies[fastest]['seconds_mean']:.1f} s per run)")
    return "Answer from this run: " + "; ".join(parts) + "."


def samplers_part(cfg: Config, dataset: str, seeds: int, budget: int, out: Path) -> str:
    pool, test = resolve_dataset(cfg)
    names = [n for n in samplers.names() if n != "random"]
    began = time.perf_counter()
    results = simulate(
        cfg, pool, test, strategies=names, seeds=seeds, budget=budget, dataset=dataset
    )
    plot_curves(results, out / f"samplers-{dataset}.png")
    target = results["random_final_accuracy"]
    ranked = sorted(
        results["strategies"].items(),
        key=lambda kv: _need(kv[1], target) or 1e9,
    )
    lines = [
        f"### {dataset}: {len(names)} samplers vs random ({seeds} seeds, budget {budget})",
        "",
        f"Random's final accuracy: {target:.3f}. Ran in {time.perf_counter() - began:.0f} s.",
        "",
        "| sampler | final accuracy | labels to random's final | seconds per run |",
        "|---|---|---|---|",
        *[_row(n, r, target, budget) for n, r in ranked],
        "",
        _answer(results["strategies"], target, budget),
        "",
        f"![{dataset}](study/samplers-{dataset}.png)",
        "",
    ]
    (out / f"samplers-{dataset}.json").write_text(json.dumps(results, indent=2))
    return "\n".join(lines)


def _curves(cfg: Config, strategy: str, seeds: int, budget: int) -> dict[str, Any]:
    pool, test = resolve_dataset(cfg)
    runs = [
        run_once(cfg, pool, test, strategy=strategy, seed=cfg.seed + s, budget=budget)
        for s in range(seeds)
    ]
    acc = np.array([r.accuracy for r in runs])
    return {
        "labels": runs[0].labels,
        "accuracy_mean": acc.mean(axis=0).round(5).tolist(),
        "accuracy_std": acc.std(axis=0).round(5).tolist(),
        "seconds_mean": float(np.mean([r.seconds for r in runs])),
    }


def knob_part(
    cfg: Config,
    title: str,
    key: str,
    values: list[Any],
    seeds: int,
    budget: int,
    target: float,
    out: Path,
    slug: str,
) -> str:
    results: dict[str, Any] = {"dataset": "digits", "config": {"seeds": seeds}, "strategies": {}}
    for value in values:
        _say(f"  {key} = {value}")
        tuned = cfg.with_overrides({key: value})
        results["strategies"][f"{key.split('.')[-1]}={value}"] = _curves(
            tuned, "margin", seeds, budget
        )
    results["random_final_accuracy"] = target
    plot_curves(results, out / f"{slug}.png")
    (out / f"{slug}.json").write_text(json.dumps(results, indent=2))
    return "\n".join(
        [
            f"### {title} (margin sampler, digits, {seeds} seeds, budget {budget})",
            "",
            "| setting | final accuracy | labels to random's final | seconds per run |",
            "|---|---|---|---|",
            *[_row(n, r, target, budget) for n, r in results["strategies"].items()],
            "",
            _answer(results["strategies"], target, budget),
            "",
            f"![{slug}](study/{slug}.png)",
            "",
        ]
    )


def policy_part(cfg: Config, seeds: int, out: Path) -> str:
    table = {}
    for policy in ("new_only", "replay", "full"):
        _say(f"  policy {policy}")
        runs = [forgetting.run(cfg, policy, seed) for seed in range(seeds)]
        table[policy] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    (out / "policies.json").write_text(json.dumps(table, indent=2))
    _plot_policies(table, out / "policies.png")
    return "\n".join(
        [
            f"### Training policy on a shifting stream (digits, classes in order, {seeds} seeds)",
            "",
            "| policy | accuracy on the first classes (0-1) | on the last classes (8-9) "
            "| on all | training seconds |",
            "|---|---|---|---|---|",
            *[
                f"| {p} | {r['first_classes_accuracy']:.3f} | {r['last_classes_accuracy']:.3f} "
                f"| {r['all_classes_accuracy']:.3f} | {r['train_seconds']:.1f} |"
                for p, r in table.items()
            ],
            "",
            _policy_answer(table),
            "",
            "![policies](study/policies.png)",
            "",
        ]
    )


def _policy_answer(table: dict[str, dict[str, float]]) -> str:
    def best(key: str) -> str:
        return max(table, key=lambda p: table[p][key])

    fastest = min(table, key=lambda p: table[p]["train_seconds"])
    return (
        "Answer from this run: the first classes are best kept by "
        f"**{best('first_classes_accuracy')}**, the newest classes best learned by "
        f"**{best('last_classes_accuracy')}**, all classes by "
        f"**{best('all_classes_accuracy')}**; fastest to train: **{fastest}** "
        f"({table[fastest]['train_seconds']:.1f} s vs "
        f"{max(r['train_seconds'] for r in table.values()):.1f} s for the slowest)."
    )


def _plot_policies(table: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["first_classes_accuracy", "last_classes_accuracy", "all_classes_accuracy"]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    width = 0.25
    for i, key in enumerate(keys):
        ax.bar(
            np.arange(len(table)) + (i - 1) * width,
            [table[p][key] for p in table],
            width,
            label=key.replace("_", " ").replace(" accuracy", ""),
        )
    ax.set_xticks(range(len(table)), list(table))
    ax.set_ylabel("held-out accuracy")
    ax.set_title("training policy on a class-incremental stream")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def stream_part(cfg: Config, seeds: int, budget: int, out: Path) -> str:
    pool, test = resolve_dataset(cfg)
    results = simulate(
        cfg,
        pool,
        test,
        strategies=["variable_uncertainty"],
        seeds=seeds,
        budget=budget,
        mode="stream",
    )
    plot_curves(results, out / "stream.png")
    (out / "stream.json").write_text(json.dumps(results, indent=2))
    target = results["random_final_accuracy"]
    return "\n".join(
        [
            f"### Stream-based selection (digits as a stream of {pool.num_rows} records, "
            f"budget {budget} labels, {seeds} seeds)",
            "",
            "| strategy | final accuracy | labels to random's final | seconds per run |",
            "|---|---|---|---|",
            *[_row(n, r, target, budget) for n, r in results["strategies"].items()],
            "",
            _answer(results["strategies"], target, budget),
            "",
            "![stream](study/stream.png)",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument("--budget", type=int, help="override the label budget")
    parser.add_argument("--pool-rows", type=int, default=2000, help="synthetic pool rows")
    args = parser.parse_args()
    seeds, budget = (2, 160) if args.quick else (5, 400)
    seeds, budget = args.seeds or seeds, args.budget or budget
    docs = Path(args.out)
    out = docs / "study"
    out.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(prefix="activestream-study-")
    digits = Config().with_overrides({"data.cache_dir": cache})
    synthetic_dir = f"{cache}/synthetic"
    make_synthetic_shards(
        synthetic_dir,
        args.pool_rows,
        rows_per_shard=500,
        shape=(1, 16, 16),
        test_rows=1000,
        progress=False,
    )
    synthetic = digits.with_overrides({"data.dataset": synthetic_dir})
    began = time.perf_counter()
    sections = []
    _say("1/5 samplers on digits")
    sections.append(samplers_part(digits, "digits", seeds, budget, out))
    target = json.loads((out / "samplers-digits.json").read_text())["random_final_accuracy"]
    _say("1/5 samplers on synthetic gratings")
    sections.append(samplers_part(synthetic, "synthetic", seeds, budget, out))
    _say("2/5 buffer size")
    sections.append(
        knob_part(
            digits,
            "How much to buffer",
            "training.buffer_size",
            [1, 8, 32, 128],
            seeds,
            budget,
            target,
            out,
            "buffer",
        )
    )
    _say("3/5 training policy")
    sections.append(policy_part(digits, seeds, out))
    _say("4/5 exploration")
    sections.append(
        knob_part(
            digits,
            "How much to explore",
            "sampling.explore_p",
            [1.0, 0.9, 0.7, 0.5],
            seeds,
            budget,
            target,
            out,
            "explore",
        )
    )
    _say("5/5 stream-based selection")
    sections.append(stream_part(digits, seeds, budget, out))
    minutes = (time.perf_counter() - began) / 60
    from activestream.benchmarks.suite import machine

    m = machine()
    header = (
        "# Study: answers to the seed's open questions\n\n"
        "Produced by `python -m activestream.benchmarks.study"
        f"{' --quick' if args.quick else ''}` in {minutes:.0f} minutes on {m['cores']} cores "
        f"({m['cpu']}), GPUs: "
        f"{', '.join(m['gpus']) or 'none'}, {m['when']}. Every number is the mean over seeds of "
        "the in-process oracle simulator (the loop's real trainer, scorer and queue classes, "
        "ground truth as the annotator), p = 0.9 and buffer 16 unless a section varies them.\n\n"
    )
    (docs / "study.md").write_text(header + "\n".join(sections) + "\n")
    _say(f"wrote {docs / 'study.md'} in {minutes:.1f} min")


if __name__ == "__main__":
    main()
