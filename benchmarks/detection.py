"""Which images to box first: detection samplers against random on canvases of real images.

    python -m activestream.benchmarks.detection            # 5 seeds, ~1.5 h on 2 cores
    python -m activestream.benchmarks.detection --render   # only re-render docs/detection.md

The data are canvases of 1-4 real Fashion-MNIST items at random places and sizes, their tight
boxes as ground truth (:mod:`activestream.sources.canvases`); the detector is FCOS on the
ImageNet-pretrained EfficientNet-Lite0 (:mod:`activestream.models.detection`); the loop is
:mod:`activestream.pipelines.detection_sim`: the same random seed images for every strategy,
then rounds of query, label and online steps over every labeled image. Every strategy runs
the same seeds; mAP@0.5 and mAP@[.5:.95] come from torchmetrics on held-out canvases.

"Images to random's final" is where a strategy's mean mAP@0.5 curve first reaches the mean
mAP@0.5 random ends with; "share" divides it by random's budget, so 50% is 2x fewer labels.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from activestream.benchmarks.pages import Page, add_tiny_argument
from activestream.benchmarks.suite import machine as suite_machine
from activestream.pipelines.detection_sim import DetectionSimConfig, simulate
from activestream.sources.canvases import CanvasSpec, make_canvases

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/detection.py",
    "pipelines/detection_sim.py",
    "samplers/detection/",
    "samplers/exploration.py",
    "sources/canvases.py",
    "sources/detection.py",
    "models/detection.py",
    "tasks/",
)

PAGE = Page(
    "detection",
    "Which images to box first",
    "detection",
    "detection.json",
    postscript="\n![mAP against labeled images](detection/learning_curves.png)\n",
)

#: The canvases and the loop of the published run (about 5 minutes a run, two at a time): class
#: entropy of an image's boxes by its worst box, their mean (what an image costs grows with its
#: boxes; the mean does not favour crowded images) and their sum (it does), the mean margin,
#: presence (is there an object, and what is it, from a low score floor), presence with each
#: batch spread over clusters of the images' embeddings, and the
#: localization-aware flip score.
CANVASES = CanvasSpec("fashion-mnist", pool=1000, test=200, size=128)
LOOP = DetectionSimConfig(
    samplers=(
        "box_entropy_max",
        "box_entropy_mean",
        "box_entropy_sum",
        "box_margin_mean",
        "box_presence_sum",
        "box_presence_clusters",
        "flip_consistency",
    ),
    seeds=5,
    seed_images=16,
    batch=16,
    rounds=10,
    candidates=300,
    steps=40,
)
#: Every code path in seconds: two rounds on a handful of small canvases, one seed.
TINY_CANVASES = CanvasSpec("fashion-mnist", pool=40, test=12, size=64)
TINY_LOOP = DetectionSimConfig(
    samplers=("box_entropy_max", "flip_consistency"),
    seeds=1,
    seed_images=4,
    batch=4,
    rounds=2,
    candidates=12,
    steps=2,
    minibatch=4,
    image_size=64,
)


def run(
    data: Path, canvases: CanvasSpec, loop: DetectionSimConfig, workers: int = 1
) -> dict[str, Any]:
    """Write (or reuse) the canvases under ``data``, simulate every strategy, gather the record."""
    began = time.perf_counter()
    manifest = make_canvases(data, canvases)
    with tempfile.TemporaryDirectory() as out:
        results = simulate(data, loop, out, workers=workers)
    return {
        **results,
        "canvases": {**asdict(canvases), "boxes": manifest["boxes"]},
        "classes": manifest["classes"],
        "seconds": round(time.perf_counter() - began, 1),
        "workers": workers,
        "machine": suite_machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


Curve = tuple[np.ndarray, np.ndarray, np.ndarray]


def mean_curve(row: dict[str, Any], key: str = "map50") -> Curve:
    """Images labeled, mean and std of ``key`` after each round, over the strategy's seeds."""
    curves = row["curves"]
    values = np.array([c[key] for c in curves])
    return np.mean([c["images"] for c in curves], axis=0), values.mean(0), values.std(0)


def _budget(data: dict[str, Any]) -> int:
    """Images random has labeled when it stops (seed images plus every round)."""
    return int(mean_curve(data["strategies"]["random"])[0][-1])


def _share(need: float | None, budget: int) -> str:
    """``need`` as a share of ``budget`` and the factor it saves, e.g. ``67% (1.5x fewer)``.

    >>> _share(72.0, 144)
    '50% (2.0x fewer)'
    >>> _share(None, 144)
    'not reached'
    """
    if need is None:
        return "not reached"
    return f"{need / budget:.0%} ({budget / need:.1f}x fewer)"


def render_markdown(data: dict[str, Any]) -> str:
    """The page's table: final mAPs over seeds and the labels each strategy needed."""
    cfg, canvases, m = data["config"], data["canvases"], data["machine"]
    budget = _budget(data)
    lines = [
        f"{canvases['pool']} pool and {canvases['test']} test canvases of {canvases['size']} px "
        f"({canvases['source']}, {len(data['classes'])} classes); {cfg['seed_images']} random "
        f"seed images, then {cfg['rounds']} rounds of {cfg['batch']} (a share "
        f"{cfg['explore_p']:.0%} by the sampler, the rest random) from {cfg['candidates']} "
        f"candidates, {cfg['steps']} steps of {cfg['minibatch']} images after each; "
        f"{cfg['seeds']} seed{'s' if cfg['seeds'] > 1 else ''}, mean ± std. "
        f"{m['cores']} cores, torch {m['torch']}, commit "
        f"`{m['commit']}`, {data['date']}, {data['seconds'] / 60:.0f} min.",
        "",
        f"| strategy | mAP@0.5 at {budget} images | mAP@[.5:.95] | images to random's final "
        "| share of random's images | boxes to random's final |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in data["strategies"].items():
        reach = row["labels_to_reach_random_final"]
        boxes = "-" if reach["boxes"] is None else f"{reach['boxes']:.0f}"
        images = "-" if reach["images"] is None else f"{reach['images']:.0f}"
        share = "(the reference)" if name == "random" else _share(reach["images"], budget)
        lines.append(
            f"| {name} | {row['map50_mean']:.3f} ± {row['map50_std']:.3f} | "
            f"{row['map_mean']:.3f} | {images} | {share} | {boxes} |"
        )
    return "\n".join(lines) + "\n"


def render_readme(data: dict[str, Any]) -> str:
    """One line per detection sampler for the README: what it saves against random."""
    budget = _budget(data)
    random = data["strategies"]["random"]
    lines = []
    for name, row in data["strategies"].items():
        if name == "random":
            continue
        need = row["labels_to_reach_random_final"]["images"]
        reach = "not reached" if need is None else f"reached with {_share(need, budget)}"
        lines.append(
            f"- `{name}`: mAP@0.5 {row['map50_mean']:.3f} ± {row['map50_std']:.3f} at {budget} "
            f"labeled images against random's {random['map50_mean']:.3f} ± "
            f"{random['map50_std']:.3f}; random's final {reach} "
            f"({data['config']['seeds']} seeds, [detection](docs/detection.md))."
        )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], out: Path) -> None:
    """mAP@0.5 and mAP@[.5:.95] against labeled images, mean and one-std band per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for ax, key, label in zip(axes, ("map50", "map"), ("mAP@0.5", "mAP@[.5:.95]"), strict=True):
        for name, row in data["strategies"].items():
            x, mean, std = mean_curve(row, key)
            ax.plot(x, mean, label=name, linestyle="--" if name == "random" else "-")
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.axhline(mean_curve(data["strategies"]["random"], key)[1][-1], c="grey", lw=0.8, ls=":")
        ax.set_xlabel("labeled images")
        ax.set_ylabel(f"test {label}")
        ax.grid(alpha=0.3)
        ax.legend()
    seeds = data["config"]["seeds"]
    fig.suptitle(f"Canvases: which images to box first ({seeds} seed(s), mean ± std)")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--out", default="docs/detection")
    parser.add_argument("--data", default="data/detection-canvases", help="canvases, made once")
    parser.add_argument("--seeds", type=int, default=LOOP.seeds)
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    for key in ("seeds", "workers"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1, not {getattr(args, key)}")
    canvases, loop = (TINY_CANVASES, TINY_LOOP) if args.tiny else (CANVASES, LOOP)
    if not args.tiny:
        loop = replace(loop, seeds=args.seeds)
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(Path(args.data), canvases, loop, 1 if args.tiny else args.workers),
        render=render_markdown,
        plot=plot,
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
