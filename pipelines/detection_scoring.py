"""A scoring pass of the detector pool: Ray Data actors running the detector over the pool.

The same construction as the classifier's pass (:func:`activestream.pipelines.scoring.
scored_dataset`): the pool's Parquet shards read by a bounded number of read tasks, a pool of
scorer actors (here :class:`~activestream.actors.detector_scorer.DetectorScorer`) with the
scoring section's resources, rows coming back as ``id, score, pred, model_version, ok`` for a
round's top-k (:class:`~activestream.pipelines.scoring._Round` folds them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from activestream.actors.detector_scorer import DetectorScorer
from activestream.actors.weights import WeightsVersion
from activestream.config import ScoringConfig
from activestream.models.detection import fcos_detector
from activestream.pipelines.runtime import scorer_gpus
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
