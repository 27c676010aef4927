"""Active learning for a detector, simulated: which images to box first, measured in mAP.

The oracle is the data set's own boxes. Every strategy starts from the same random seed
images; each round the detector scores a random draw of unlabeled candidates, the strategy's
sampler (:mod:`activestream.samplers.detection`) turns its boxes into one score per image,
the best ``batch`` images (with a share ``1 - explore_p`` of random picks, as the service
mixes them) get their true boxes, and the detector takes ``steps`` online steps on minibatches
drawn from every labeled image (replay of all labels, as the classification trainer does).
mAP@0.5 and mAP@[.5:.95] on the test images are measured after every round.

``results.json`` has the classification simulator's keys with mAP in place of accuracy: per
strategy ``map50_mean``/``map50_std`` and ``map_mean`` (final, over seeds), the curves, and
``labels_to_reach_random_final``: the labeled images (and boxes) each strategy needed to reach
random's final mAP@0.5.

    python -m activestream.pipelines.detection_sim --data data/canvases --out results/det
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from activestream.models.detection import (
    capture_embedding_inputs,
    detect_flipped,
    fcos_detector,
    flat_outputs,
    parameter_groups,
    pooled_embeddings,
)
from activestream.samplers import detection as samplers
from activestream.samplers.detection import check_detections
from activestream.samplers.exploration import explore_mix
from activestream.sources.detection import DetectionSet, open_image, read_detection
from activestream.tasks.metrics import mean_average_precision


@dataclass(frozen=True)
class DetectionSimConfig:
    """One simulated study: the strategies, the budget and how the detector learns.

    Attributes:
        samplers: Detection sampler names to compare; ``random`` is always run as well.
        seeds: Runs per strategy, seeds 0..seeds-1 (model init, seed images, exploration).
        seed_images: Random images labeled before the first query.
        batch: Images labeled per round.
        rounds: Query rounds after the seed images.
        candidates: Unlabeled images scored per round (a random draw), all when larger.
        explore_p: Share of a round's slots that go to the top scores; the rest are random.
        steps: Online training steps after each round; minibatch: images per step.
        lr: AdamW learning rate of the new layers (pyramid and heads).
        pretrained_lr: AdamW learning rate of the backbone's pretrained weights.
        image_size: The detector's input size (longer side).
    """

    samplers: tuple[str, ...] = ("box_entropy_max", "box_margin_mean", "flip_consistency")
    seeds: int = 5
    seed_images: int = 16
    batch: int = 16
    rounds: int = 10
    candidates: int = 400
    explore_p: float = 0.9
    steps: int = 30
    minibatch: int = 8
    lr: float = 1e-3
    pretrained_lr: float = 1e-4
    image_size: int = 128

    def __post_init__(self) -> None:
        """Refuse a study that cannot run, before any data is read (one line, the field)."""
        at_least = {"seeds": 1, "seed_images": 1, "batch": 1, "rounds": 1, "candidates": 1,
                    "steps": 0, "minibatch": 1, "image_size": 16}  # fmt: skip
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise ValueError(f"{key} must be at least {low}, not {getattr(self, key)}")
        if not 0.0 <= self.explore_p <= 1.0:
            raise ValueError(f"explore_p must lie in [0, 1], not {self.explore_p}")
        for key in ("lr", "pretrained_lr"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be above 0, not {getattr(self, key)}")


@dataclass
class Curve:
    """One run's learning curve: after each round, labels so far and test mAP."""

    images: list[int] = field(default_factory=list)
    boxes: list[int] = field(default_factory=list)
    map50: list[float] = field(default_factory=list)
    map: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _tensors(data: DetectionSet) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Every image as a (3, H, W) float tensor in [0, 1] and its boxes as torchvision targets."""
    images, targets = [], []
    for item in data.items:
        pixels = np.asarray(Image.open(io.BytesIO(open_image(item))).convert("RGB"))
        images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255))
        boxes = [b.xyxy for b in item.boxes]
        targets.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([b.label for b in item.boxes], dtype=torch.int64),
        })  # fmt: skip
    return images, targets


@torch.no_grad()
def _detect(model: torch.nn.Module, images: list[torch.Tensor], chunk: int = 32) -> list[dict]:
    model.eval()
    return [out for k in range(0, len(images), chunk) for out in model(images[k : k + chunk])]


@torch.no_grad()
def _detect_embedded(
    model: torch.nn.Module, images: list[torch.Tensor], captured: dict, chunk: int = 32
) -> tuple[list[dict], np.ndarray]:
    """:func:`_detect`, and each image's (N, D) pooled backbone embedding from the same pass."""
    model.eval()
    found, pooled = [], []
    for k in range(0, len(images), chunk):
        found.extend(model(images[k : k + chunk]))
        pooled.append(pooled_embeddings(captured))
    return found, np.concatenate(pooled)


def _evaluate(model: torch.nn.Module, images: list, targets: list) -> dict[str, float]:
    return mean_average_precision(_detect(model, images), targets)


def _scores(
    name: str,
    model: torch.nn.Module,
    images: list,
    rng: np.random.Generator,
    captured: dict,
    batch: int,
) -> np.ndarray:
    """(N,) scores of the candidates, to rank them; a batch sampler's batch ranks first.

    For a sampler with a batch selection, its batch among the best ``max(8 * batch, 64)``
    candidates (the queue's window) gets the top ranks, the others keep their order below,
    and the returned scores are those ranks (higher first), as the service's queue leases.
    """
    spec = samplers.spec(name)
    fn = samplers.get(name, rng)
    if spec.batch is not None:
        found, embeddings = _detect_embedded(model, images, captured)
    else:
        found, embeddings = _detect(model, images), None
    det = check_detections(*flat_outputs(found))
    if spec.inputs == ("detections", "flipped"):
        model.eval()
        flipped = check_detections(*flat_outputs(detect_flipped(model, images)))
        return fn(det, flipped)
    if embeddings is None:
        return fn(det)
    return _diverse_first(fn(det), embeddings, spec, rng, batch)


def _diverse_first(
    scores: np.ndarray, embeddings: np.ndarray, spec: Any, rng: np.random.Generator, k: int
) -> np.ndarray:
    """(N,) rank scores: the batch selection's k picks first, then the rest by ``scores``."""
    ranked = np.lexsort((np.arange(len(scores)), -scores))  # (N,), best first, ties by index
    window = ranked[: max(8 * k, 64)]
    if len(window) <= k:
        return scores
    chosen = window[spec.batch(scores[window], embeddings[window], k, rng)]
    order = np.concatenate([chosen, ranked[~np.isin(ranked, chosen)]])  # (N,)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(len(scores), 0, -1)  # (N,), N for the first pick ... 1
    return ranks


def run_strategy(
    name: str, seed: int, cfg: DetectionSimConfig, pool: tuple[list, list], test: tuple[list, list],
    num_classes: int,
) -> Curve:  # fmt: skip
    """One strategy, one seed: seed images, then ``rounds`` of query, label and train."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = fcos_detector(num_classes, image_size=cfg.image_size)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.lr, cfg.pretrained_lr))
    images, targets = pool
    labeled = np.zeros(len(images), dtype=bool)
    labeled[rng.choice(len(images), size=min(cfg.seed_images, len(images)), replace=False)] = True
    curve = Curve()
    captured: dict[str, Any] = {}
    if samplers.spec(name).batch is not None:
        capture_embedding_inputs(model, captured)

    def train() -> None:
        model.train()
        chosen = np.flatnonzero(labeled)
        for _ in range(cfg.steps):
            batch = rng.choice(chosen, size=min(cfg.minibatch, len(chosen)), replace=False)
            loss = sum(model([images[i] for i in batch], [targets[i] for i in batch]).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def record() -> None:
        result = _evaluate(model, *test)
        curve.images.append(int(labeled.sum()))
        curve.boxes.append(int(sum(len(targets[i]["labels"]) for i in np.flatnonzero(labeled))))
        curve.map50.append(result["map_50"])
        curve.map.append(result["map"])

    train()
    record()
    for _ in range(cfg.rounds):
        unlabeled = np.flatnonzero(~labeled)
        if not len(unlabeled):
            break
        draw = rng.choice(unlabeled, size=min(cfg.candidates, len(unlabeled)), replace=False)
        scores = _scores(name, model, [images[i] for i in draw], rng, captured, cfg.batch)
        picks = explore_mix(scores, cfg.batch, cfg.explore_p, rng).indices
        labeled[draw[picks]] = True
        train()
        record()
    curve.seconds = round(time.perf_counter() - began, 1)
    return curve


def _labels_to_reach(curves: list[Curve], target: float) -> dict[str, float | None]:
    """Mean images and boxes at which the mean mAP@0.5 curve first reaches ``target``."""
    mean = np.mean([c.map50 for c in curves], axis=0)
    hit = np.flatnonzero(mean >= target - 1e-9)
    if not len(hit):
        return {"images": None, "boxes": None}
    k = int(hit[0])
    return {"images": float(np.mean([c.images[k] for c in curves])),
            "boxes": float(np.mean([c.boxes[k] for c in curves]))}  # fmt: skip


#: Tensors of the data one :func:`simulate` call reads, by folder: read once per process (each
#: worker its own copy), emptied at every call, so data rewritten in place is read anew.
_DATA: dict[str, tuple[tuple[list, list], tuple[list, list], int]] = {}


def _sets(data: str) -> tuple[DetectionSet, DetectionSet]:
    """``data/pool`` and ``data/test`` as read and checked (same classes), images not decoded."""
    pool_set = read_detection(str(Path(data) / "pool"))
    test_set = read_detection(str(Path(data) / "test"))
    if pool_set.classes != test_set.classes:
        raise ValueError(f"pool and test name different classes under {data}")
    return pool_set, test_set


def _load(data: str) -> tuple[tuple[list, list], tuple[list, list], int]:
    """Pool and test tensors of ``data`` and its class count, read once per process."""
    if data not in _DATA:
        pool_set, test_set = _sets(data)
        _DATA[data] = (_tensors(pool_set), _tensors(test_set), len(pool_set.classes))
    return _DATA[data]


def _run_task(data: str, cfg: DetectionSimConfig, name: str, seed: int) -> Curve:
    """One run from picklable arguments, so a worker process can run it on its own copy."""
    pool, test, num_classes = _load(data)
    return run_strategy(name, seed, cfg, pool, test, num_classes)


def _one_thread() -> None:
    torch.set_num_threads(1)


def simulate(
    data: str | Path, cfg: DetectionSimConfig, out: str | Path, *, workers: int = 1
) -> dict[str, Any]:
    """Every strategy over every seed on ``data/pool`` and ``data/test``; writes results.json.

    ``workers`` > 1 runs that many runs at once in processes of one torch thread each (on 2
    cores two such runs finish sooner than one run on both); each process reads the data once.
    """
    data = str(data)
    _DATA.clear()  # a folder rewritten since the last call is read anew
    # Unreadable data or mismatched classes fail here, before any worker starts; only a run
    # in this process needs the decoded tensors.
    if workers <= 1:
        _load(data)
    else:
        _sets(data)
    strategies = [*dict.fromkeys([*cfg.samplers, "random"])]
    for name in strategies:
        samplers.spec(name)  # an unknown name fails before any training
    plan = [(name, seed) for name in strategies for seed in range(cfg.seeds)]
    done: dict[tuple[str, int], Curve] = {}

    def report(name: str, seed: int, curve: Curve) -> None:
        done[(name, seed)] = curve
        print(f"{name} seed {seed}: mAP@0.5 {curve.map50[-1]:.3f} with {curve.images[-1]} "
              f"images ({curve.seconds:.0f} s)", flush=True)  # fmt: skip

    if workers <= 1:
        for name, seed in plan:
            report(name, seed, _run_task(data, cfg, name, seed))
    else:
        spawn = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_one_thread) as ex:
            futures = {ex.submit(_run_task, data, cfg, *run): run for run in plan}
            for future in as_completed(futures):
                report(*futures[future], future.result())
    runs = {name: [done[(name, seed)] for seed in range(cfg.seeds)] for name in strategies}
    random_final = float(np.mean([c.map50[-1] for c in runs["random"]]))
    results: dict[str, Any] = {"config": asdict(cfg), "task": "detection", "strategies": {}}
    for name, curves in runs.items():
        finals50 = [c.map50[-1] for c in curves]
        results["strategies"][name] = {
            "map50_mean": float(np.mean(finals50)),
            "map50_std": float(np.std(finals50)),
            "map_mean": float(np.mean([c.map[-1] for c in curves])),
            "labels_to_reach_random_final": _labels_to_reach(curves, random_final),
            "curves": [asdict(c) for c in curves],
        }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return json.loads(json.dumps(results))  # as a reader of results.json sees it


def main(argv: list[str] | None = None) -> None:
    """``python -m activestream.pipelines.detection_sim``: simulate, print the finals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder with pool/ and test/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--samplers", default=",".join(DetectionSimConfig.samplers))
    for key in ("seeds", "seed_images", "batch", "rounds", "candidates", "steps", "minibatch"):
        default = getattr(DetectionSimConfig, key)
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=default)
    parser.add_argument("--workers", type=int, default=1, help="runs at once, one thread each")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    try:
        cfg = DetectionSimConfig(
            samplers=tuple(s for s in args.samplers.split(",") if s), seeds=args.seeds,
            seed_images=args.seed_images, batch=args.batch, rounds=args.rounds,
            candidates=args.candidates, steps=args.steps, minibatch=args.minibatch,
        )  # fmt: skip
        results = simulate(args.data, cfg, args.out, workers=args.workers)
    except ValueError as err:  # a bad setting, unknown sampler, unreadable data: one line
        sys.exit(f"activestream: {err}")
    for name, row in results["strategies"].items():
        reach = row["labels_to_reach_random_final"]["images"]
        print(f"{name:>18}: mAP@0.5 {row['map50_mean']:.3f} +- {row['map50_std']:.3f}, "
              f"mAP {row['map_mean']:.3f}, images to random's final: {reach}")  # fmt: skip


if __name__ == "__main__":
    main()
