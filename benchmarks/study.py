"""The study: does active learning beat random, where, by how much, and with which settings.

    python -m activestream.benchmarks.study                    # every part, ~1 h on 2 cores
    python -m activestream.benchmarks.study --only digits,stream
    python -m activestream.benchmarks.study --render           # docs/study.md from the JSON

Every part runs the in-process oracle simulator (the loop's real trainer, scorer and queue
classes, ground truth as the annotator) with the defaults unless it says otherwise, and writes
its results to ``docs/study/<part>.json``; ``docs/study.md`` is rendered from those files by
:func:`render_markdown`, so no number on the page is typed. The parts:

- ``digits``, ``gratings``, ``fashion_cnn``, ``fashion_head``: every sampler, ``auto`` and
  random on the bundled digits, synthetic gratings, Fashion-MNIST with a randomly initialised
  CNN, and Fashion-MNIST with the ImageNet-pretrained EfficientNet-Lite0 (head only);
- ``stream``: stream-based selection (ask or skip each arriving record) on digits;
- ``buffer`` and ``explore``: how much to buffer, how much to explore (margin, digits);
- ``policy``: training policy on a stream whose classes arrive in order;
- ``fashion_head_parts``, ``digits_parts``: what each part buys (fitted head, cold starts,
  pseudo-labels), every row on the same seeds against a strong baseline row;
- ``cold_scale``: time and memory of the cold-start selection on pools up to 1M embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from activestream import samplers
from activestream.benchmarks import forgetting
from activestream.benchmarks.freshness import LEARNING
from activestream.benchmarks.pages import add_tiny_argument, write_section
from activestream.config import Config
from activestream.pipelines.curves import compare
from activestream.pipelines.scoring import cold_start_on_embedding
from activestream.pipelines.simulate import plot_curves, simulate
from activestream.sources.resolve import resolve_dataset

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/study.py",
    *LEARNING,
    "pipelines/curves.py",
    "pipelines/features.py",
    "sources/",
)

BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
FASHION_HEAD = {
    "model.factory": "efficientnet_lite0",
    "model.train": "head",
    "model.resize": 64,
    "model.normalize": "imagenet",
    "model.dropout": 0.2,
}
#: The pretrained network a from-scratch classifier may select with (sampling.embedding_model).
PRETRAINED_EMBEDDER = {"factory": "efficientnet_lite0", "resize": 64, "normalize": "imagenet"}
#: Sampler parts: (title, data, config overrides, budget).
SETUPS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "digits": ("Bundled digits, CNN from scratch", "digits", {}, 400),
    "gratings": ("Synthetic gratings (16x16), CNN from scratch", "gratings", {}, 400),
    "fashion_cnn": (
        "Fashion-MNIST at 14x14, CNN from scratch, pretrained embedding for selection",
        "fashion",
        {"model.resize": 14, "sampling.embedding_model": PRETRAINED_EMBEDDER},
        256,
    ),
    "fashion_head": (
        "Fashion-MNIST, pretrained EfficientNet-Lite0, head only",
        "fashion",
        FASHION_HEAD,
        256,
    ),
}
#: What each part of the product buys, one row per configuration: (row, strategy, overrides).
Variant = tuple[str, str, dict[str, Any]]
#: Rows that train on labels only, and rows that add the pool's pseudo-labels, set it outright:
#: the default (``auto``) is pseudo-labels with the fitted head.
NO_POOL = {"training.semi_supervised": "none"}
PSEUDO = {"training.semi_supervised": "pseudo_label"}
#: Rows that pick cold-start queries on a from-scratch model's own (untrained) layer, which the
#: default (``cold_start_embedding: pretrained``) no longer does.
OWN_EMBEDDING = {"sampling.cold_start_embedding": "any"}
#: Variant parts: (title, data, config overrides, budget, baseline row, rows).
VARIANTS: dict[str, tuple[str, str, dict[str, Any], int, str, list[Variant]]] = {
    "fashion_head_parts": (
        "Fashion-MNIST, pretrained EfficientNet-Lite0 head: what each part buys",
        "fashion",
        {**FASHION_HEAD, "training.buffer_size": 10},
        200,
        "random, refit logistic regression",
        [
            ("random, SGD head (before)", "random", {**NO_POOL, "training.head_fit": "sgd"}),
            ("random, refit logistic regression", "random", NO_POOL),
            ("random, pseudo-labels", "random", PSEUDO),
            (
                "margin, SGD head, random cold start (before)",
                "margin",
                {**NO_POOL, "training.head_fit": "sgd", "sampling.cold_start_strategy": "random"},
            ),
            (
                "margin, random cold start",
                "margin",
                {**NO_POOL, "sampling.cold_start_strategy": "random"},
            ),
            (
                "margin, typiclust",
                "margin",
                {**NO_POOL, "sampling.cold_start_strategy": "typiclust"},
            ),
            (
                "margin, maxherding",
                "margin",
                {**NO_POOL, "sampling.cold_start_strategy": "maxherding"},
            ),
            (
                "margin, maxherding, pseudo-labels",
                "margin",
                {**PSEUDO, "sampling.cold_start_strategy": "maxherding"},
            ),
            ("cluster_margin, maxherding, pseudo-labels", "cluster_margin", PSEUDO),
            ("badge, maxherding, pseudo-labels", "badge", PSEUDO),
        ],
    ),
    "fashion_cnn_parts": (
        "Fashion-MNIST at 14x14, CNN from scratch: the pretrained embedding for selection",
        "fashion",
        {"model.resize": 14},
        256,
        "random",
        [
            ("random", "random", {}),
            ("margin, own embedding", "margin", OWN_EMBEDDING),
            (
                "margin, pretrained embedding",
                "margin",
                {"sampling.embedding_model": PRETRAINED_EMBEDDER},
            ),
            (
                "cluster_margin, pretrained embedding",
                "cluster_margin",
                {"sampling.embedding_model": PRETRAINED_EMBEDDER},
            ),
            ("badge (the model's own gradients)", "badge", {}),
        ],
    ),
    "digits_parts": (
        "Bundled digits, CNN from scratch: cold start",
        "digits",
        {},
        400,
        "random",
        [
            ("random", "random", {}),
            ("margin, random cold start", "margin", {"sampling.cold_start_strategy": "random"}),
            (
                "margin, typiclust",
                "margin",
                {**OWN_EMBEDDING, "sampling.cold_start_strategy": "typiclust"},
            ),
            (
                "margin, maxherding",
                "margin",
                {**OWN_EMBEDDING, "sampling.cold_start_strategy": "maxherding"},
            ),
        ],
    ),
}
PARTS = [*SETUPS, *VARIANTS, "cold_scale", "stream", "buffer", "explore", "policy"]
#: Labels per class at which the variant tables show accuracy.
PER_CLASS = (1, 2, 5, 10)


def _say(text: str) -> None:
    print(text, flush=True)


def _data(kind: str, cache: Path, rows: int) -> str:
    """The dataset value for ``kind``, writing its shards under ``cache`` once."""
    if kind == "digits":
        return "digits"
    folder = cache / kind
    if not (folder / "pool").exists():
        if kind == "gratings":
            from activestream.sources.synthetic import make_synthetic_shards

            make_synthetic_shards(
                str(folder), rows, rows_per_shard=500, shape=(1, 16, 16), test_rows=1000,
                progress=False,
            )  # fmt: skip
        else:
            from activestream.sources.fashion_mnist import write_fashion_mnist_shards

            write_fashion_mnist_shards(str(folder), limit=rows, progress=False)
    return str(folder)


def _simulate(
    cfg: Config, strategies: list[str], seeds: int, budget: int, workers: int, **kw: Any
) -> dict[str, Any]:
    pool, test = resolve_dataset(cfg)
    began = time.perf_counter()
    results = simulate(
        cfg,
        pool,
        test,
        strategies=strategies,
        seeds=seeds,
        budget=budget,
        progress=True,
        workers=workers,
        share_features=cfg.model.train == "head",
        **kw,
    )
    results["seconds"] = round(time.perf_counter() - began, 1)
    results["pool_rows"], results["test_rows"] = pool.num_rows, test.num_rows
    if "random" in results["strategies"]:
        results["compare"] = compare(results)
    return results


def run_part(part: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Run one part; its JSON-ready results."""
    seeds, workers = args.seeds, args.workers
    base = Config().with_overrides({"data.cache_dir": str(cache)})
    if part in SETUPS:
        title, kind, overrides, budget = SETUPS[part]
        budget = args.budget or budget
        cfg = base.with_overrides({"data.dataset": _data(kind, cache, args.rows), **overrides})
        names = [*samplers.names(), "auto"]
        results = _simulate(cfg, names, seeds, budget, workers, dataset=title)
    elif part in VARIANTS:
        results = _variants(part, base, cache, args)
    elif part == "cold_scale":
        results = cold_scale(args.scale_rows)
    elif part == "stream":
        strategies = ["variable_uncertainty", "auto"]
        results = _simulate(base, strategies, seeds, args.budget or 400, workers, mode="stream")
    elif part in ("buffer", "explore"):
        key, values = {
            "buffer": ("training.buffer_size", [2, 4, 16, 64]),
            "explore": ("sampling.explore_p", [1.0, 0.9, 0.7, 0.5]),
        }[part]
        results = {"key": key, "settings": {}}
        for value in values:
            _say(f"  {key} = {value}")
            tuned = base.with_overrides({key: value})
            r = _simulate(tuned, ["margin"], seeds, args.budget or 400, workers)
            results["settings"][str(value)] = r
    else:
        table = {}
        for policy in ("new_only", "replay", "full"):
            _say(f"  policy {policy}")
            rows = args.rows if args.tiny else None  # the whole digits pool otherwise
            runs = [forgetting.run_policy(base, policy, seed, rows) for seed in range(seeds)]
            table[policy] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        results = {"policies": table}
    results["seeds"] = seeds
    return results


def _variants(part: str, base: Config, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every row of a variant part on the same seeds, compared with its baseline row."""
    title, kind, overrides, budget, baseline, rows = VARIANTS[part]
    budget = args.budget or budget
    setup = base.with_overrides({"data.dataset": _data(kind, cache, args.rows), **overrides})
    pool, test = resolve_dataset(setup)
    out: dict[str, Any] = {
        "title": title,
        "baseline": baseline,
        "config": {**setup.model_dump(), "budget": budget, "seeds": args.seeds, "mode": "pool"},
        "pool_rows": pool.num_rows,
        "test_rows": test.num_rows,
        "classes": len(pool.classes),
        "rows": {},
    }
    for label, strategy, tweak in rows:
        _say(f"  {label}")
        cfg = setup.with_overrides(tweak)
        # Only the row's own strategy: every row is measured against the baseline row.
        r = _simulate(
            cfg,
            [strategy],
            args.seeds,
            budget,
            args.workers,
            dataset=title,
            with_random=strategy == "random",
        )
        out["rows"][label] = {"strategy": strategy, "overrides": tweak, **r["strategies"][strategy]}
    # One results dict whose "random" is the baseline row: compare() then measures every row
    # against it (labels to its final accuracy, gap in standard errors).
    named = {f"row:{label}": row for label, row in out["rows"].items()}
    as_results = {
        "config": out["config"],
        "strategies": {**named, "random": named[f"row:{baseline}"]},
    }
    out["compare"] = {k[4:]: v for k, v in compare(as_results).items() if k.startswith("row:")}
    if setup.model.train == "head":
        out["ceiling"] = embedding_ceiling(setup)
    return out


def cold_scale(sizes: list[int], dim: int = 128, k: int = 20) -> dict[str, Any]:
    """Seconds and peak memory of each cold start's picks on pools of ``sizes`` embeddings.

    Embeddings are float32 blobs (50 centres); the peak counts what the selection allocates
    beyond the embeddings themselves (tracemalloc sees numpy's and scikit-learn's buffers).
    """
    import tracemalloc

    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 5, (50, dim)).astype(np.float32)
        x = centres[rng.integers(0, 50, n)] + rng.normal(0, 1, (n, dim)).astype(np.float32)
        for name in ("typiclust", "maxherding"):
            tracemalloc.start()
            began = time.perf_counter()
            picks = samplers.cold_picks(name, x, k, rng=np.random.default_rng(1))
            seconds = time.perf_counter() - began
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append(
                {
                    "strategy": name,
                    "rows": n,
                    "dim": dim,
                    "k": k,
                    "picks": len(picks),
                    "seconds": round(seconds, 2),
                    "peak_mb": round(peak / 2**20, 1),
                    "embeddings_mb": round(x.nbytes / 2**20, 1),
                }
            )
            _say(f"  {name} on {n:,}: {seconds:.2f} s, peak {peak / 2**20:.0f} MB")
        del x
    return {"results": rows}


def embedding_ceiling(cfg: Config) -> dict[str, float]:
    """What the frozen embedding allows at all: a head fitted on every pool label, and kNN.

    Active learning can at best reach these with fewer labels; when they are low, the embedding
    (backbone, input resolution), not the sampler, bounds what labels can buy.
    """
    import torch
    from sklearn.neighbors import KNeighborsClassifier
    from torch import nn

    from activestream.models.head_fit import fit_linear_head
    from activestream.pipelines.simulate import pretrained_features

    pool, test = resolve_dataset(cfg)
    f = pretrained_features(cfg, pool, test)
    began = time.perf_counter()
    head = nn.Linear(f["pool"].shape[1], len(pool.classes))
    fit_linear_head(
        head,
        torch.from_numpy(f["pool"]),
        torch.from_numpy(f["pool_y"].astype(np.int64)),
        l2=cfg.training.head_l2,
        max_iter=500,
    )
    with torch.no_grad():
        probe = float((head(torch.from_numpy(f["test"])).argmax(1).numpy() == f["test_y"]).mean())
    knn = KNeighborsClassifier(10).fit(f["pool"], f["pool_y"]).score(f["test"], f["test_y"])
    return {
        "linear_probe_all_labels": round(probe, 4),
        "knn10_all_labels": round(float(knn), 4),
        "labels": int(len(f["pool_y"])),
        "seconds": round(time.perf_counter() - began, 1),
    }


# -- rendering ----------------------------------------------------------------------------------
def _fmt_need(need: int | None, budget: int) -> str:
    return "not reached" if need is None else f"{need} ({need / budget:.0%})"


def _sampler_table(results: dict[str, Any]) -> list[str]:
    budget = results["config"]["budget"]
    table = results["compare"]
    order = sorted(table, key=lambda n: (-table[n]["auc"], n))
    lines = [
        "| sampler | final accuracy | AUC | labels to random's final | stays above random from "
        "| worst gap (SE) | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in order:
        c = table[name]
        above = c["stays_above_from"]
        lines.append(
            f"| {'**' + name + '**' if name == 'auto' else name} | "
            f"{c['final']:.3f} ± {c['final_std']:.3f} | {c['auc']:.3f} | "
            f"{_fmt_need(c['labels_to_random_final'], budget)} | "
            f"{'never' if above is None else above} | {c['worst_gap_se']:+.1f} | "
            f"{c['seconds_mean']:.1f} |"
        )
    return lines


def _verdict(results: dict[str, Any]) -> str:
    table = results["compare"]
    others = {n: c for n, c in table.items() if n != "random"}
    best = max(others, key=lambda n: others[n]["auc"])
    below = [n for n, c in others.items() if c["worst_gap_se"] < -1.0]
    auto = table.get("auto")
    parts = [f"best AUC: **{best}** ({others[best]['auc']:.3f} vs random's "]
    parts[0] += f"{table['random']['auc']:.3f})"
    if auto is not None:
        parts.append(
            f"auto: AUC {auto['auc']:.3f}, worst point {auto['worst_gap_se']:+.1f} SE from random"
        )
    parts.append(
        "more than one SE below random somewhere: "
        + (", ".join(sorted(below)) if below else "none")
    )
    return "From this run: " + "; ".join(parts) + "."


def _arm_line(results: dict[str, Any]) -> str:
    pulls = results["strategies"].get("auto", {}).get("arm_pulls")
    if not pulls:
        return ""
    total = sum(pulls.values()) or 1
    shares = ", ".join(f"{a} {n / total:.0%}" for a, n in sorted(pulls.items()))
    return f"Batches `auto` gave each arm, over all seeds: {shares}.\n"


def _settings(config: dict[str, Any]) -> str:
    """The defaults a part ran with that change its figures (runs before they existed: none)."""
    sampling, training = config.get("sampling", {}), config.get("training", {})
    cold = sampling.get("cold_start_strategy", "random")
    if "cold_start_embedding" in sampling:  # runs since it exists: the cold start in effect
        known = {k: v for k, v in config.items() if k in Config.model_fields}
        if cold != "random" and not cold_start_on_embedding(Config.model_validate(known)):
            cold = "random (an untrained network's embedding is not read)"
    said = [f"cold start: {cold}"]
    if sampling.get("embedding_model"):
        said.append(f"selection embedding: {sampling['embedding_model']['factory']}")
    if config.get("model", {}).get("train") == "head":
        said.append(f"head fit: {training.get('head_fit', 'sgd')}")
        said.append(f"semi-supervised: {training.get('semi_supervised', 'none')}")
    return ", ".join(said)


def _setup_section(part: str, r: dict[str, Any]) -> list[str]:
    title = SETUPS[part][0] if part in SETUPS else "Stream-based selection, digits"
    budget = r["config"]["budget"]
    return [
        f"## {title}",
        "",
        f"{r['pool_rows']:,} pool and {r['test_rows']:,} test images, {r['seeds']} seeds, "
        f"budget {budget}; random's final accuracy {r['random_final_accuracy']:.3f}; "
        f"{r['seconds'] / 60:.0f} min for all runs; {_settings(r['config'])}.",
        "",
        *_sampler_table(r),
        "",
        _verdict(r),
        "",
        _arm_line(r),
        f"![{part}](study/{part}.png)",
        "",
    ]


def _accuracy_at(row: dict[str, Any], labels: int) -> float | None:
    grid = row["labels"]
    if labels > grid[-1]:
        return None
    return float(np.interp(labels, grid, row["accuracy_mean"]))


def _variants_section(part: str, r: dict[str, Any]) -> list[str]:
    budget, seeds, classes = r["config"]["budget"], r["config"]["seeds"], r["classes"]
    at = [n * classes for n in PER_CLASS]
    lines = [
        f"## {r['title']}",
        "",
        f"{r['pool_rows']:,} pool and {r['test_rows']:,} test images, {seeds} seeds, budget "
        f"{budget}, every row on the same seeds. Baseline: **{r['baseline']}** (final accuracy "
        f"{r['rows'][r['baseline']]['accuracy_mean'][-1]:.3f}); the last columns measure each "
        "row against it.",
        "",
    ]
    if "ceiling" in r:
        c = r["ceiling"]
        lines += [
            f"The embedding's ceiling: a head fitted on all {c['labels']:,} pool labels "
            f"reaches {c['linear_probe_all_labels']:.3f}, 10-nearest-neighbours "
            f"{c['knn10_all_labels']:.3f}.",
            "",
        ]
    head = " | ".join(f"at {n} ({n // classes}/class)" for n in at)
    lines += [
        f"| configuration | {head} | final | AUC | labels to baseline's final "
        "| worst gap (SE) | s/run |",
        "|---|" + "---|" * (len(at) + 5),
    ]
    for label, row in r["rows"].items():
        c = r["compare"][label]
        cells = " | ".join("" if (a := _accuracy_at(row, n)) is None else f"{a:.3f}" for n in at)
        lines.append(
            f"| {label} | {cells} | {c['final']:.3f} ± {c['final_std']:.3f} | {c['auc']:.3f} "
            f"| {_fmt_need(c['labels_to_random_final'], budget)} | {c['worst_gap_se']:+.1f} "
            f"| {c['seconds_mean']:.1f} |"
        )
    return [*lines, "", f"![{part}](study/{part}.png)", ""]


def plot_variants(r: dict[str, Any], path: Path) -> None:
    """The variant part's curves, one per row, in the simulator's plot."""
    results = {
        "dataset": r["title"].split(":")[0],
        "config": r["config"],
        "strategies": {k: v for k, v in r["rows"].items()},
        "random_final_accuracy": r["rows"][r["baseline"]]["accuracy_mean"][-1],
    }
    plot_curves(results, path)


def _scale_section(r: dict[str, Any]) -> list[str]:
    first = r["results"][0]
    lines = [
        f"## Cold-start selection on large pools ({first['dim']}-dimensional embeddings, "
        f"{first['k']} picks)",
        "",
        "Both strategies work on a bounded uniform sample of the pool (20,000 points for "
        "typiclust's k-means, 3,000 for maxherding's kernel), so time and memory stop growing "
        "with the pool; the embeddings themselves are the pool's, not the selection's.",
        "",
        "| strategy | pool | seconds | peak extra memory | the embeddings |",
        "|---|---|---|---|---|",
    ]
    for row in r["results"]:
        lines.append(
            f"| {row['strategy']} | {row['rows']:,} | {row['seconds']:.2f} | "
            f"{row['peak_mb']:.0f} MB | {row['embeddings_mb']:.0f} MB |"
        )
    return [*lines, ""]


def _knob_section(part: str, r: dict[str, Any]) -> list[str]:
    title = {"buffer": "How much to buffer", "explore": "How much to explore"}[part]
    budget = next(iter(r["settings"].values()))["config"]["budget"]
    lines = [
        f"## {title} (margin, digits, {r['seeds']} seeds, budget {budget})",
        "",
        f"| {r['key'].split('.')[-1]} | margin final | random final | margin AUC | random AUC "
        "| labels to random's final | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for value, s in r["settings"].items():
        m, rnd = s["compare"]["margin"], s["compare"]["random"]
        lines.append(
            f"| {value} | {m['final']:.3f} | {rnd['final']:.3f} | {m['auc']:.3f} | "
            f"{rnd['auc']:.3f} | {_fmt_need(m['labels_to_random_final'], budget)} | "
            f"{m['seconds_mean']:.1f} |"
        )
    return [*lines, ""]


def _policy_section(r: dict[str, Any]) -> list[str]:
    table = r["policies"]
    return [
        f"## Training policy on a shifting stream (digits, classes in order, {r['seeds']} seeds)",
        "",
        "| policy | first classes (0-1) | last classes (8-9) | all | training seconds |",
        "|---|---|---|---|---|",
        *[
            f"| {p} | {t['first_classes_accuracy']:.3f} | {t['last_classes_accuracy']:.3f} "
            f"| {t['all_classes_accuracy']:.3f} | {t['train_seconds']:.1f} |"
            for p, t in table.items()
        ],
        "",
    ]


def render_markdown(data: dict[str, dict[str, Any]], machine: dict[str, Any]) -> str:
    """The page's generated section from every part's results (parts not run are skipped)."""
    lines = [
        f"Machine: {machine['cores']} cores ({machine['cpu']}), GPUs: "
        f"{', '.join(machine['gpus']) or 'none'}; {machine['when']}.",
        "",
        "AUC is the mean accuracy over the label range (1.0 is perfect from the first label). "
        "*Stays above random from* is the first label count after which the sampler's mean is "
        "never below random's; *worst gap* is the sampler's lowest point relative to random, in "
        "standard errors of the difference (negative: below random).",
        "",
    ]
    for part in PARTS:
        if part not in data:
            continue
        r = data[part]
        if part in SETUPS or part == "stream":
            lines += _setup_section(part, r)
        elif part in VARIANTS:
            lines += _variants_section(part, r)
        elif part == "cold_scale":
            lines += _scale_section(r)
        elif part in ("buffer", "explore"):
            lines += _knob_section(part, r)
        else:
            lines += _policy_section(r)
    return "\n".join(lines) + "\n"


def load(out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Every part's committed JSON under ``out`` and the machine record."""
    data = {
        p: json.loads((out / f"{p}.json").read_text())
        for p in PARTS
        if (out / f"{p}.json").exists()
    }
    return data, json.loads((out / "machine.json").read_text())


def render_page(out: Path, page: Path) -> None:
    """Rewrite the generated section of ``page`` from the JSON under ``out``."""
    data, machine = load(out)
    write_section(
        page,
        BEGIN,
        END,
        render_markdown(data, machine),
        "# Study: active learning against random\n\n"
        "Generated by `python -m activestream.benchmarks.study --render` from "
        "`docs/study/*.json`; do not edit the section by hand.\n\n",
    )


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    from activestream.benchmarks.suite import machine, require_publishable

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--out", default="docs/study")
    parser.add_argument("--only", help=f"comma-separated parts of: {', '.join(PARTS)}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, help="one label budget for every part")
    parser.add_argument("--rows", type=int, default=2000, help="pool rows of gratings, Fashion")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument(
        "--scale-rows",
        type=lambda v: [int(n) for n in v.split(",")],
        default=[10_000, 100_000, 1_000_000],
        help="pool sizes of the cold_scale part, comma-separated",
    )
    parser.add_argument("--render", action="store_true", help="only re-render docs/study.md")
    args = parser.parse_args(argv)
    if args.tiny:  # every part's code on sizes of seconds
        args.seeds, args.budget, args.rows, args.scale_rows = 1, 32, 300, [2_000, 4_000]
        args.workers = 1  # in process: starting worker processes would cost more than the runs
    out = Path(args.out)
    parts = PARTS if not args.only else [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    if not args.render:
        require_publishable(out, "tiny" if args.tiny else "full")
        out.mkdir(parents=True, exist_ok=True)
        cache = Path(tempfile.mkdtemp(prefix="activestream-study-"))
        measured_on = machine()
        (out / "machine.json").write_text(json.dumps(measured_on, indent=1))
        for i, part in enumerate(parts, 1):
            _say(f"{i}/{len(parts)} {part}")
            results = run_part(part, args, cache)
            results["machine"] = measured_on  # per part: parts are rerun on their own
            (out / f"{part}.json").write_text(json.dumps(results, indent=1))
            if "strategies" in results:
                plot_curves(results, out / f"{part}.png")
            elif part in VARIANTS:
                plot_variants(results, out / f"{part}.png")
    render_page(out, out.parent / "study.md")


if __name__ == "__main__":
    main()
