"""The task a deployment runs, as its config says: what the loop builds for classes or boxes.

One loop, one ledger, one app: a task only swaps the parts that differ. The config's ``task``
picks them, and the data must agree: a pool written by
:func:`~activestream.sources.detection_pool.write_detection_pool` says ``activestream.task:
detection`` in its shards' metadata (everything else holds classes), so boxes served under a
classification config, or classes under a detection one, stop with one line that names the
fix. The detection parts are imported only for a detection pool: a classification service
never loads a detector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from activestream import samplers
from activestream.config import Config
from activestream.errors import ConfigError
from activestream.pipelines.scoring import ScoreResult, cold_start_on_embedding, stream_rounds
from activestream.sources.shards import ShardSet

Task = Literal["classification", "detection"]

#: The detection sampler the service ranks images by unless the config names one: presence
#: (is there an object, and what is it) summed over each image's boxes, each batch spread over
#: clusters of the images' embeddings: the study's best (docs/detection.md), with the fewest
#: images to random's final and no more boxes than random; each image's worst box alone
#: (``box_entropy_max``) did no better than random there.
DETECTION_SAMPLER = "box_presence_clusters"


@dataclass(frozen=True)
class TaskParts:
    """What differs between tasks, as the loop needs it.

    Attributes:
        name: ``classification`` or ``detection``.
        trainer: The trainer service class; both take the same constructor arguments.
        label_kind: Builds the ledger's label kind from the pool's item store; None keeps
            the ledger's own (class labels).
        rounds: ``(cfg, rounds, board=)`` -> the streaming pass's round results.
        queue_batch: The sampler's diverse-batch picker for the queue, if any.
        queue_arms: ``auto``'s arms, if any.
        cold_on_embedding: Cold-start picks come from the pool's embedding (not uniform).
        embedding_model: Whether ``sampling.embedding_model`` applies (class samplers only).
        label_studio: What a label is in Label Studio; None: classes of the configured sampler.
    """

    name: Task
    trainer: type
    label_kind: Callable[[Any], Any] | None
    rounds: Callable[..., Iterator[ScoreResult]]
    queue_batch: Any = None
    queue_arms: tuple[str, ...] | None = None
    cold_on_embedding: bool = False
    embedding_model: bool = True
    label_studio: Any = None


def pool_task(pool: ShardSet) -> Task:
    """The task a pool's shards declare (``activestream.task``); classification if none."""
    from activestream.sources.detection_pool import pool_task as declared

    return "detection" if declared(pool) == "detection" else "classification"


def check_task(cfg: Config, declared: Task) -> None:
    """Stop with one line when data of the ``declared`` task meets a config for the other.

    Boxes served as classes (or classes as boxes) would fail deep inside the trainer; the
    config's ``task`` says what the user means, the data what it holds.

    >>> from activestream.config import Config
    >>> check_task(Config(), "detection")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    activestream.errors.ConfigError: the data holds boxes (a detection pool): set task: ...
    """
    if declared == cfg.task:
        return
    what = (
        "boxes (a detection pool)"
        if declared == "detection"
        else "no boxes (no COCO annotations.json, YOLO labels/ or Parquet objects column)"
    )
    raise ConfigError(
        f"the data holds {what}: set task: {declared} in the config, or pass --task {declared}"
    )


def detection_sampler(cfg: Config) -> str:
    """The detection sampler ``cfg`` runs: the one it names, else the service's default.

    ``sampling.sampler`` names a detection sampler (or random, the baseline); a class
    sampler's name (the config's default ``margin`` among them) means :data:`DETECTION_SAMPLER`.

    >>> from activestream.config import Config
    >>> box = Config(task="detection")
    >>> [detection_sampler(box.with_overrides({"sampling.sampler": name}))
    ...  for name in ("margin", "random", "box_entropy_sum")]
    ['box_presence_clusters', 'random', 'box_entropy_sum']
    >>> detection_sampler(box.with_overrides({"sampling.sampler": "boxes"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    activestream.errors.ConfigError: config key 'sampling.sampler': 'boxes' is no sampler; ...
    """
    from activestream.samplers import detection as box_samplers

    name = cfg.sampling.sampler
    if name in box_samplers.names():
        return name
    try:
        samplers.spec(name)
    except ValueError:
        raise ConfigError(
            f"config key 'sampling.sampler': {name!r} is no sampler; task: detection takes "
            f"{', '.join(box_samplers.names())}"
        ) from None
    return DETECTION_SAMPLER


def sampler_name(cfg: Config) -> str:
    """The sampler ``cfg`` runs, by its task: a class sampler, or :func:`detection_sampler`."""
    return detection_sampler(cfg) if cfg.task == "detection" else cfg.sampling.sampler


def task_parts(cfg: Config, pool: ShardSet) -> TaskParts:
    """The parts of ``pool``'s task under ``cfg`` (the two must agree: :func:`check_task`)."""
    check_task(cfg, pool_task(pool))
    if cfg.task == "detection":
        return _detection(cfg, pool)
    from activestream.actors.trainer import TrainerService

    sampler = samplers.spec(cfg.sampling.sampler)
    return TaskParts(
        name="classification",
        trainer=TrainerService,
        label_kind=None,
        rounds=stream_rounds,
        queue_batch=sampler.batch,
        queue_arms=sampler.arms,
        cold_on_embedding=cold_start_on_embedding(cfg),
    )


def _detection(cfg: Config, pool: ShardSet) -> TaskParts:
    from contextlib import nullcontext

    from activestream.actors.detector import (
        BoxLabels,
        DetectorTrainerService,
        checked_detector_factory,
    )
    from activestream.actors.label_studio_boxes import RectanglesTask
    from activestream.pipelines.detection_scoring import stream_detection_rounds
    from activestream.samplers import detection as box_samplers

    sampling = cfg.sampling
    sampler = detection_sampler(cfg)
    # The trainer builds the same detector from cfg.model in its own process; a user's is
    # checked here first, so a broken one stops `serve` with one line before any actor starts.
    detector, embeds = checked_detector_factory(cfg.model, len(pool.classes))
    # The built-in detector's backbone is ImageNet-pretrained: its embedding means something
    # before the first label, so a cold start may pick from it whatever the model config
    # says. Not for random, the baseline (its first picks stay uniform), nor for a detector
    # without a torchvision-style backbone to pool.
    cold = (
        sampling.cold_start
        and sampling.cold_start_strategy != "random"
        and sampler != "random"
        and embeds
    )
    # A sampler that spreads each batch over the images' embeddings gets them from the same
    # pass; a detector without a backbone to pool leaves it the plain top-k by its scores.
    batch = box_samplers.spec(sampler).batch if embeds else None
    return TaskParts(
        name="detection",
        trainer=DetectorTrainerService,
        # The ledger holds its own lock around every check: the kind needs none of its own.
        label_kind=lambda items: BoxLabels(items, items.classes, lock=nullcontext()),
        rounds=partial(
            stream_detection_rounds,
            sampler=sampler,
            embed=bool(cold or batch is not None),
            detector=detector,
        ),
        queue_batch=batch,
        cold_on_embedding=cold,
        embedding_model=False,
        label_studio=RectanglesTask(sampler),
    )
