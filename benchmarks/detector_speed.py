"""How fast the detector scores a pool and learns from boxes, against the strongest baseline.

    python -m activestream.benchmarks.detector_speed --out docs/detector-speed
    python -m activestream.benchmarks.detector_speed --render

Canvases of real Fashion-MNIST items (``make-detection``), written as the service's pool
(encoded PNGs with ids); FCOS on the pretrained EfficientNet-Lite0 at 128 px, images scored by
the service's detection sampler (:data:`~activestream.pipelines.task.DETECTION_SAMPLER`, with
each image's embedding from the same pass when it picks diverse batches) into a global top-k.

* **Scoring.** ``activestream``: the detector pool (Ray Data actors running
  :class:`~activestream.actors.detector_scorer.DetectorScorer`, reading and decoding the
  shards themselves), measured after its first cycle over the pool (warm actors, as the loop
  runs). ``dataloader``: a ``torch.utils.data.DataLoader`` whose worker processes read and
  decode the same shards while the main process runs the same detector and sampler and keeps
  the same top-k; persistent workers, a discarded warm-up pass, the best of every (workers,
  torch threads) setting the cores allow.
* **Training.** Milliseconds per optimizer step (minibatches of 8 labeled images) and, on the
  trainer service with its default time box, seconds from a buffer of labels handed to it to
  the new version published (the trainer's part of label -> new version; the HTTP and ledger
  hops of the classifier's figure come on top).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from activestream.benchmarks.pages import Page, add_tiny_argument
from activestream.pipelines.task import DETECTION_SAMPLER
from activestream.samplers import detection as box_samplers

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/detector_speed.py",
    "actors/detector.py",
    "actors/detector_scorer.py",
    "actors/trainer.py",
    "actors/scorer.py",
    "actors/items.py",
    "pipelines/detection_scoring.py",
    "pipelines/scoring.py",
    "pipelines/task.py",
    "sources/",
    "sources/canvases.py",
    "sources/detection.py",
    "sources/detection_pool.py",
    "models/",
    "models/detection.py",
    "samplers/detection/",
    "samplers/topk.py",
    "tasks/",
    "config.py",
)

PAGE = Page(
    "detector_speed",
    "Detector speed: scoring pool vs a DataLoader, training steps, label -> version",
    "detector-speed",
    "detector_speed.json",
)
BEGIN, END = PAGE.begin, PAGE.end
SAMPLER = DETECTION_SAMPLER
#: The service's scorers emit embeddings for a sampler that spreads its batches over them.
EMBED = box_samplers.spec(SAMPLER).batch is not None
TOP_K = 256


def _pool(data: Path, tiny: bool) -> tuple[Any, Any]:
    """The canvases under ``data`` (written once) and their pool shards."""
    from activestream.sources.canvases import CanvasSpec, make_canvases
    from activestream.sources.detection import read_coco
    from activestream.sources.detection_pool import write_detection_pool
    from activestream.sources.shards import open_shards

    spec = (
        CanvasSpec("digits", pool=40, test=4, size=64)
        if tiny
        else CanvasSpec("fashion-mnist", pool=512, test=16, size=128)
    )
    manifest = make_canvases(data, spec)
    shards_dir = data / "pool-shards"
    pool = read_coco(str(data / "pool"))
    done = shards_dir / "_SUCCESS"
    if done.exists() and done.read_text() == repr(manifest["params"]):
        return pool, open_shards(str(shards_dir), classes=pool.classes)
    # Canvases of another spec (the tiny run's, in the same folder) leave shards that would mix
    # with these: their classes differ, and the pool refuses them as inconsistent.
    shutil.rmtree(shards_dir, ignore_errors=True)
    shards = write_detection_pool(pool, str(shards_dir), rows_per_shard=64 if tiny else 128)
    done.write_text(repr(manifest["params"]))
    return pool, shards


def _detector(size: int) -> Any:
    from functools import partial

    from activestream.models.detection import fcos_detector

    return partial(fcos_detector, image_size=size)


class _Images(torch.utils.data.IterableDataset):
    """The pool's images decoded at their own sizes, each worker process reading its own files."""

    def __init__(self, paths: list[str], batch: int) -> None:
        super().__init__()
        self.paths, self.batch = paths, batch

    def __iter__(self) -> Iterator[tuple[pa.Array, list[np.ndarray]]]:
        from activestream.actors.detector import decode_rgb

        info = torch.utils.data.get_worker_info()
        mine = self.paths if info is None else self.paths[info.id :: info.num_workers]
        for path in mine:
            for rb in pq.ParquetFile(path).iter_batches(self.batch, columns=["id", "image"]):
                yield rb.column(0), [decode_rgb(b) for b in rb.column(1).to_pylist()]


def _dataloader_rate(shards: Any, detector: Any, workers: int, threads: int, batch: int) -> float:
    """Rows/s of the second of two passes: workers decode, this process detects and folds."""
    from activestream.actors.detector_scorer import DetectorScorer
    from activestream.pipelines.scoring import _Round

    scorer = DetectorScorer(
        num_classes=len(shards.classes),
        sampler=SAMPLER,
        detector=detector,
        threads=threads,
        embed=EMBED,
    )
    loader = torch.utils.data.DataLoader(
        _Images(list(shards.paths), batch),
        batch_size=None,
        num_workers=workers,
        persistent_workers=True,
        prefetch_factor=4,
        collate_fn=lambda item: item,
    )

    def one_pass() -> tuple[int, float]:
        round_ = _Round(TOP_K, np.random.default_rng(0))
        began = time.perf_counter()
        for ids, images in loader:
            scores, sure = scorer.detect(images)
            columns = {
                "id": ids,
                "score": pa.array(scores, pa.float64()),
                "pred": pa.array(sure, pa.int64()),
                "model_version": pa.array(np.zeros(len(scores), np.int64)),
            }
            if scorer.embeddings is not None:  # the top-k keeps them, as the pool's rounds do
                flat = pa.array(scorer.embeddings.reshape(-1), pa.float32())
                columns["embedding"] = pa.FixedSizeListArray.from_arrays(
                    flat, scorer.embeddings.shape[1]
                )
            round_.push(pa.table(columns))
        return round_.rows, time.perf_counter() - began

    one_pass()  # warm-up: workers started, allocator and caches warm
    rows, seconds = one_pass()
    return rows / seconds


def _pool_rate(shards: Any, detector: Any, cycles: int, batch: int) -> tuple[float, int]:
    """Rows/s of the detector pool after its first cycle over the shards; rows it scored."""
    from activestream.config import ScoringConfig
    from activestream.pipelines.detection_scoring import detector_scored_dataset
    from activestream.pipelines.scoring import _Round

    looped = shards.subset([i for _ in range(cycles) for i in range(len(shards.paths))])
    scoring = ScoringConfig(nice=0)  # nothing else competes here; priorities would only skew
    ds = detector_scored_dataset(
        scoring, looped, sampler=SAMPLER, detector=detector, batch_size=batch, embed=EMBED
    )
    round_ = _Round(TOP_K, np.random.default_rng(0))
    first = None
    began = time.perf_counter()
    for part in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if part.num_rows:
            round_.push(part)
        if first is None and round_.rows >= shards.num_rows:
            first = (time.perf_counter(), round_.rows)
    end = time.perf_counter()
    if first is None or cycles < 2:
        return round_.rows / (end - began), round_.rows
    return (round_.rows - first[1]) / (end - first[0]), round_.rows


def _training(pool: Any, shards: Any, detector: Any, updates: int) -> dict[str, Any]:
    """Milliseconds per optimizer step, and label -> version on the trainer service."""
    from activestream.actors.detector import DetectorTrainer, DetectorTrainerService
    from activestream.actors.items import ItemStore
    from activestream.config import TrainingConfig

    labels = [{"id": i.id, "boxes": [b.to_json() for b in i.boxes]} for i in pool.items]
    steps_cfg = TrainingConfig(buffer_size=16, batch_size=8, update_seconds=None)
    trainer = DetectorTrainer(
        training=steps_cfg, items=ItemStore(shards), classes=pool.classes, detector=detector
    )
    per_step = []
    for u in range(updates):
        trainer.add_labels(labels[16 * u : 16 * (u + 1)])
        trainer.fetch_pending()  # reads are the service thread's, apart from the steps
        before = trainer.train_steps
        began = time.perf_counter()
        trainer.partial_fit()
        per_step.append(1000 * (time.perf_counter() - began) / (trainer.train_steps - before))

    service_cfg = TrainingConfig(buffer_size=16, batch_size=8)  # the service's time box
    published: dict[int, float] = {}
    arrived = threading.Condition()

    def publish(weights: Any) -> None:
        with arrived:
            published[weights.version] = time.perf_counter()
            arrived.notify_all()

    service = DetectorTrainerService(
        publish=publish, put=lambda state: state, training=service_cfg,
        items=ItemStore(shards), classes=pool.classes, detector=detector,
    )  # fmt: skip
    latencies = []
    try:
        service.start()
        offset = 16 * updates
        for u in range(updates):
            target = service.version + 1
            sent = time.perf_counter()
            service.add_labels(labels[offset + 16 * u : offset + 16 * (u + 1)])
            with arrived:
                arrived.wait_for(lambda t=target: t in published, timeout=300)
            latencies.append(published[target] - sent)
    finally:
        service.stop()
    return {
        "ms_per_step": [round(v, 1) for v in per_step],
        "ms_per_step_median": round(statistics.median(per_step), 1),
        "minibatch": steps_cfg.batch_size,
        "buffer_size": service_cfg.buffer_size,
        "update_seconds": service_cfg.update_seconds,
        "label_to_version_s": [round(v, 3) for v in latencies],
        "label_to_version_p50_s": round(statistics.median(latencies), 3),
        "errors": service.errors[-3:],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement on one pool; the record the page renders."""
    from activestream.benchmarks.baselines import settings
    from activestream.benchmarks.suite import machine
    from activestream.config import RayConfig
    from activestream.pipelines.runtime import init_ray

    began = time.perf_counter()
    pool, shards = _pool(Path(args.data), args.tiny)
    size = 64 if args.tiny else 128
    detector = _detector(size)
    batch = 16
    tried = [(1, 1)] if args.tiny else settings()  # tiny: the code path, not the search
    baseline = {
        f"workers={w},threads={t}": round(_dataloader_rate(shards, detector, w, t, batch), 2)
        for w, t in tried
    }
    best = max(baseline, key=baseline.__getitem__)
    print(f"dataloader: {baseline} (best {best})", flush=True)
    init_ray(RayConfig())
    warm, rows = _pool_rate(shards, detector, cycles=2 if args.tiny else 3, batch=batch)
    print(f"detector pool, warm: {warm:.2f} rows/s", flush=True)
    training = _training(pool, shards, detector, updates=1 if args.tiny else 4)
    print(f"training: {training}", flush=True)
    return {
        "machine": machine(),
        "settings": {
            "images": shards.num_rows,
            "image_size": size,
            "classes": len(pool.classes),
            "model": f"FCOS on pretrained EfficientNet-Lite0, {size} px",
            "sampler": SAMPLER,
            "batch": batch,
            "activestream": "2 scorers x 1 thread (the scoring defaults), rows/s after the "
            "first cycle over the pool",
        },
        "scoring": {
            "activestream_rows_per_s": round(warm, 2),
            "activestream_rows_scored": rows,
            "dataloader_rows_per_s": baseline[best],
            "dataloader_best_setting": best,
            "dataloader_all_settings": baseline,
            "ratio": round(warm / baseline[best], 2),
        },
        "training": training,
        "seconds": round(time.perf_counter() - began, 1),
    }


def render_markdown(data: dict[str, Any]) -> str:
    """The page's table, from the JSON alone."""
    s, m, sc, tr = data["settings"], data["machine"], data["scoring"], data["training"]
    return (
        f"{s['images']:,} canvases of {s['image_size']} px ({s['classes']} classes); "
        f"{s['model']}; `{s['sampler']}`, {s['batch']} images per detector call; "
        f"{m['cores']} cores ({m['cpu']}), commit `{m['commit']}`.\n\n"
        "| measured | activestream | strongest baseline | ratio |\n|---|---|---|---|\n"
        f"| scoring the pool, images/s | {sc['activestream_rows_per_s']:,.1f} (detector pool, "
        f"warm) | {sc['dataloader_rows_per_s']:,.1f} (DataLoader, {sc['dataloader_best_setting']}"
        f") | {sc['ratio']:.2f}x |\n"
        f"| one optimizer step, {tr['minibatch']} images | {tr['ms_per_step_median']:,.0f} ms "
        "(median) | | |\n"
        f"| {tr['buffer_size']} labels -> new version, trainer side | "
        f"{tr['label_to_version_p50_s']:.2f} s (p50, time box {tr['update_seconds']:g} s) | | |\n"
    )


def render_readme(data: dict[str, Any]) -> str:
    """One line for the README's detection section."""
    sc, tr = data["scoring"], data["training"]
    return (
        f"- Speed ([detector-speed](docs/detector-speed.md)): the detector pool scores "
        f"{sc['activestream_rows_per_s']:,.1f} images/s against {sc['dataloader_rows_per_s']:,.1f}"
        f" for the best DataLoader ({sc['ratio']:.2f}x); a step on {tr['minibatch']} images takes "
        f"{tr['ms_per_step_median']:,.0f} ms; {tr['buffer_size']} labels become a version in "
        f"{tr['label_to_version_p50_s']:.2f} s on the trainer (p50).\n"
    )


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--data", default="data/detector-speed")
    parser.add_argument("--out", default="docs/detector-speed")
    parser.add_argument("--render", action="store_true", help="only re-render the page")
    args = parser.parse_args(argv)
    PAGE.main(
        Path(args.out),
        render_only=args.render,
        produce=lambda: run(args),
        render=render_markdown,
        tiny=args.tiny,
    )


if __name__ == "__main__":
    main()
