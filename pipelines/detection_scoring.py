"""A scoring pass of the detector pool: Ray Data actors running the detector over the pool.

The same construction as the classifier's pass (:func:`activestream.pipelines.scoring.
scored_dataset`): the pool's Parquet shards read by a bounded number of read tasks, a pool of
scorer actors (here :class:`~activestream.actors.detector_scorer.DetectorScorer`) with the
scoring section's resources, rows coming back as ``id, score, pred, model_version, ok`` for a
round's top-k (:class:`~activestream.pipelines.scoring._Round` folds them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from activestream.actors.detector_scorer import DetectorScorer
from activestream.actors.weights import WeightsVersion
from activestream.config import Config, ScoringConfig
from activestream.models.detection import fcos_detector
from activestream.pipelines.runtime import scorer_gpus
from activestream.pipelines.scoring import ScoreResult, _Round
from activestream.sources.shards import ShardSet, read_ray_dataset


def detector_scored_dataset(
    scoring: ScoringConfig,
    shards: ShardSet,
    *,
    sampler: str,
    detector: Callable[[int], nn.Module] = fcos_detector,
    board: Any = None,
    weights: WeightsVersion | None = None,
    seed: int = 0,
    batch_size: int = 16,
    embed: bool = False,
) -> Any:
    """The lazy Ray Dataset of a detection pool's score rows; nothing runs until iterated.

    Args:
        scoring: Scorers, threads, CPUs and GPUs per scorer, read tasks, object store cap.
        shards: The pool (encoded images with ids, :mod:`activestream.sources.detection_pool`).
        sampler: A registered detection sampler.
        detector: Builds the architecture the trainer trains.
        board: WeightsBoard handle the scorers follow; None keeps ``weights``.
        weights: Fixed weights without a board; None scores the random initial model.
        seed: Seeds the initial model and random scores.
        batch_size: Images per detector call (a detector batch weighs far more than a
            classifier's: 16 images of 128 px hold a pyramid of about 60 MB).
        embed: Rows also carry each image's ``embedding`` (cold starts, diversity).
    """
    import ray

    ds = read_ray_dataset(
        shards, read_cpus=scoring.read_cpus, read_concurrency=scoring.read_concurrency
    )
    if scoring.object_store_mb is not None:
        limits = ds.context.execution_options.resource_limits
        ds.context.execution_options.resource_limits = limits.copy(
            object_store_memory=scoring.object_store_mb * 2**20
        )
    return ds.map_batches(
        DetectorScorer,
        fn_constructor_kwargs={
            "num_classes": len(shards.classes),
            "sampler": sampler,
            "detector": detector,
            "board": board,
            "weights": weights,
            "seed": seed,
            "threads": scoring.threads_per_scorer,
            "nice": scoring.nice,
            "image_column": shards.image_column,
            "embed": embed,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=scoring.num_scorers),
        num_cpus=scoring.cpus_per_scorer,
        num_gpus=scorer_gpus(scoring) or None,
        resources=dict(scoring.resources) or None,
    )


def stream_detection_rounds(
    cfg: Config,
    rounds: Sequence[ShardSet],
    *,
    board: Any = None,
    sampler: str,
    embed: bool = False,
    detector: Callable[[int], nn.Module] = fcos_detector,
) -> Iterator[ScoreResult]:
    """The detector pool's streaming pass over several rounds: the classifier's, other scorers.

    As :func:`~activestream.pipelines.scoring.stream_rounds`: the scorers start once, follow
    the board between batches, and each round's top-k (one score per image from ``sampler``)
    is yielded as soon as its shards' rows are in. ``detector`` builds the architecture the
    trainer trains (:func:`~activestream.actors.detector.detector_factory`).
    """
    if not rounds:
        return
    looped = replace(
        rounds[0],
        paths=tuple(p for r in rounds for p in r.paths),
        file_rows=tuple(n for r in rounds for n in r.file_rows),
        num_rows=sum(r.num_rows for r in rounds),
    )
    ds = detector_scored_dataset(
        cfg.scoring,
        looped,
        sampler=sampler,
        detector=detector,
        board=board,
        seed=cfg.seed,
        embed=embed,
    )
    ds.context.execution_options.preserve_order = True
    rng = np.random.default_rng(cfg.seed)
    index = 0
    round_ = _Round(cfg.sampling.candidates, rng)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        while batch.num_rows and index < len(rounds):
            take = min(batch.num_rows, rounds[index].num_rows - round_.consumed)
            round_.push(batch.slice(0, take))
            batch = batch.slice(take)
            if round_.consumed == rounds[index].num_rows:
                yield round_.result()
                index += 1
                round_ = _Round(cfg.sampling.candidates, rng)
