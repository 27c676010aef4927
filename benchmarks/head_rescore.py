"""What caching a frozen backbone's features buys when every new version rescores the pool.

    python -m activestream.benchmarks.head_rescore --out docs/head-rescore
    python -m activestream.benchmarks.head_rescore --render   # docs/head-rescore.md

Pretrained EfficientNet-Lite0 with ``train: head`` on Fashion-MNIST (resized to 64x64,
ImageNet normalisation). Two ways to rescore the pool after a new version, each timed after a
discarded warm-up pass, on the same Ray cluster and cores:

* ``images``: a scoring pass over the encoded images, the whole network per item (what every
  round cost before features were cached);
* ``features``: a pass over the feature files, the final layer only (what a round costs now),
  plus the one-time cost of writing those files.

The same two are also timed in one process without Ray (the scorer class alone), which shows
the compute ratio without the fixed cost of a Ray Data pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from activestream.benchmarks.freshness import SCORING
from activestream.benchmarks.pages import Page, add_tiny_argument

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/head_rescore.py",
    *SCORING,
    "pipelines/features.py",
)

PAGE = Page(
    "head_rescore",
    "Rescoring with a frozen backbone: images vs cached features",
    "head-rescore",
    "head_rescore.json",
)
BEGIN, END = PAGE.begin, PAGE.end


def _best(fn: Any, repeats: int) -> float:
    fn()  # warm-up, discarded
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from activestream.actors.items import ItemStore
    from activestream.actors.scorer import Scorer
    from activestream.actors.trainer import Trainer
    from activestream.benchmarks.suite import machine
    from activestream.config import Config
    from activestream.pipelines.features import ensure_features
    from activestream.pipelines.runtime import init_ray
    from activestream.pipelines.scoring import score_pass
    from activestream.sources.fashion_mnist import write_fashion_mnist_shards
    from activestream.sources.resolve import resolve_dataset
    from activestream.sources.shards import load_arrays

    write_fashion_mnist_shards(args.data, limit=args.rows, progress=False)
    cfg = Config().with_overrides(
        {
            "data.dataset": args.data,
            "data.cache_dir": f"{args.data}-cache",
            "model.factory": "efficientnet_lite0",
            "model.train": "head",
            "model.resize": 64,
            "model.normalize": "imagenet",
            "sampling.sampler": "margin",
        }
    )
    pool, _ = resolve_dataset(cfg)
    init_ray(cfg.ray)
    results: list[dict[str, Any]] = []

    images = _best(lambda: score_pass(cfg, pool), args.repeats)
    began = time.perf_counter()
    features = ensure_features(cfg, pool, None)
    extract = time.perf_counter() - began
    head = _best(lambda: score_pass(cfg, features), args.repeats)
    results.append(
        {
            "name": "ray_pass",
            "rows": pool.num_rows,
            "images_s": round(images, 3),
            "features_s": round(head, 3),
            "feature_extraction_s": round(extract, 3),
            "ratio": round(images / head, 2),
        }
    )
    print(f"ray pass: images {images:.2f} s, features {head:.2f} s ({images / head:.1f}x)")

    # The scorer class alone, in this process: compute only.
    trainer = Trainer(training=cfg.training, model=cfg.model, items=ItemStore(pool), seed=0)
    scorer = Scorer(model=cfg.model, shape=pool.shape, num_classes=10, sampler="margin")
    _, x, _ = load_arrays(pool)
    x = x[: args.inproc_rows]
    f = trainer.features(x)
    images = _best(lambda: scorer.outputs(x), args.repeats)
    head = _best(lambda: scorer.feature_outputs(f), args.repeats)
    results.append(
        {
            "name": "scorer_only",
            "rows": len(x),
            "images_s": round(images, 4),
            "features_s": round(head, 4),
            "feature_extraction_s": None,
            "ratio": round(images / head, 1),
        }
    )
    print(f"scorer only: images {images:.3f} s, features {head:.4f} s ({images / head:.0f}x)")
    return {
        "machine": machine(),
        "settings": {
            "model": "efficientnet_lite0, train: head, resize 64, normalize imagenet",
            "pool_rows": pool.num_rows,
            "repeats": args.repeats,
            "timing": "best of repeats after one discarded warm-up pass",
        },
        "results": results,
    }


def render_markdown(data: dict[str, Any]) -> str:
    """The table, from the JSON alone."""
    s, m = data["settings"], data["machine"]
    lines = [
        f"{s['model']}; {s['pool_rows']:,} Fashion-MNIST images; {s['timing']}; "
        f"{m['cores']} cores ({m['cpu']}), GPUs: {', '.join(m['gpus']) or 'none'}.",
        "",
        "| measured | rows | rescoring images (s) | rescoring features (s) | speed-up | "
        "one-time feature files (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        extract = "-" if r["feature_extraction_s"] is None else f"{r['feature_extraction_s']:.1f}"
        lines.append(
            f"| {r['name']} | {r['rows']:,} | {r['images_s']:.3f} | {r['features_s']:.4f} | "
            f"{r['ratio']:.1f}x | {extract} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--data", default="data/fashion-mnist-rescore")
    parser.add_argument("--out", default="docs/head-rescore")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--inproc-rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    if args.tiny:
        args.rows, args.inproc_rows, args.repeats = 200, 50, 1
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(args),
        render=render_markdown,
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
