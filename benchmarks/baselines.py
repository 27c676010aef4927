"""Scoring baselines without Ray: what a skilled engineer writes with pyarrow and torch alone.

Both baselines do exactly the scorer pool's work per row, because they call the same code: an
in-process :class:`~activestream.actors.scorer.Scorer` (same model build and seed, same decode,
same transforms, same softmax and sampler) and the pass's own top-k and random sample
(:class:`~activestream.pipelines.scoring._Round`). Only the driving differs:

* :func:`single_process`: read each shard, decode, forward, fold, in one process with
  ``threads`` torch threads (the loop a first version would be).
* :func:`dataloader`: a ``torch.utils.data.DataLoader`` whose worker processes read the shards
  and decode them (split by file), with persistent workers, prefetching and pinned memory on a
  GPU; the main process runs the model and the top-k. :func:`best_dataloader` tries every
  reasonable (workers, threads) setting and keeps the fastest.

Every figure is a second pass after a discarded warm-up pass (workers started, caches and
allocator warm, CUDA initialised), synchronised with the device before the clock stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from activestream.actors.scorer import Scorer
from activestream.config import Config
from activestream.pipelines.scoring import ScoreResult, _Round, scorer_kwargs
from activestream.sources.images import decode_images
from activestream.sources.shards import ShardSet, pixels_to_array


@dataclass(frozen=True)
class Measured:
    """One timed pass: rows per second, and what the pass kept (to check it did the work)."""

    rows_per_s: float
    result: ScoreResult


def make_scorer(cfg: Config, shards: ShardSet, threads: int) -> Scorer:
    """The pool's scorer, in this process: same model, seed, sampler and transforms."""
    kwargs = scorer_kwargs(cfg, shards)
    return Scorer(**{**kwargs, "threads": threads, "nice": 0})


def decode(column: Any, shards: ShardSet) -> np.ndarray:
    """Stored images (pixels or encoded bytes) -> (N, C, H, W) float32, as the scorers decode."""
    if shards.encoded:
        return decode_images(column, shards.shape)[0]
    return pixels_to_array(column, shards.shape)


def _batches(paths: list[str], shards: ShardSet, batch: int) -> Iterator[pa.RecordBatch]:
    for path in paths:
        with shards.filesystem.open_input_file(path) as fh:
            yield from pq.ParquetFile(fh).iter_batches(
                batch_size=batch, columns=["id", shards.image_column]
            )


def _fold(round_: _Round, ids: Any, scores: np.ndarray, version: int) -> None:
    round_.push(
        pa.table(
            {
                "id": ids,
                "score": pa.array(scores, pa.float64()),
                "model_version": pa.array(np.full(len(scores), version, np.int64)),
            }
        )
    )


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(one_pass: Any) -> Measured:
    """Discard a warm-up pass, then time one more."""
    one_pass()
    began = time.perf_counter()
    result = one_pass()
    _sync()
    return Measured(result.rows / (time.perf_counter() - began), result)


def single_process(cfg: Config, shards: ShardSet, threads: int) -> Measured:
    """Read, decode, score and fold in this process, shard after shard."""
    scorer = make_scorer(cfg, shards, threads)
    k, batch = cfg.sampling.candidates, cfg.scoring.batch_size

    def one_pass() -> ScoreResult:
        round_ = _Round(k, np.random.default_rng(cfg.seed))
        for rb in _batches(list(shards.paths), shards, batch):
            _, scores, _ = scorer.outputs(decode(rb.column(1), shards))
            _fold(round_, rb.column(0), scores, scorer.version)
        return round_.result()

    return _timed(one_pass)


class ShardBatches(torch.utils.data.IterableDataset):
    """Decoded batches of the shards, each worker process reading its own files."""

    def __init__(self, shards: ShardSet, batch: int) -> None:
        super().__init__()
        self.shards, self.batch = shards, batch

    def __iter__(self) -> Iterator[tuple[pa.Array, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        paths = list(self.shards.paths)
        mine = paths if info is None else paths[info.id :: info.num_workers]
        for rb in _batches(mine, self.shards, self.batch):
            yield rb.column(0), torch.from_numpy(decode(rb.column(1), self.shards))


def dataloader(cfg: Config, shards: ShardSet, workers: int, threads: int) -> Measured:
    """Workers read and decode, the main process scores and folds (one setting)."""
    scorer = make_scorer(cfg, shards, threads)
    loader = torch.utils.data.DataLoader(
        ShardBatches(shards, cfg.scoring.batch_size),
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        pin_memory=torch.cuda.is_available(),
        collate_fn=lambda item: item,  # keep the Arrow id column as it is
    )
    k = cfg.sampling.candidates

    def one_pass() -> ScoreResult:
        round_ = _Round(k, np.random.default_rng(cfg.seed))
        for ids, x in loader:
            _, scores, _ = scorer.outputs(x.numpy())
            _fold(round_, ids, scores, scorer.version)
        return round_.result()

    return _timed(one_pass)


def settings(cores: int | None = None) -> list[tuple[int, int]]:
    """(workers, threads) pairs worth trying on ``cores`` cores.

    >>> settings(2)
    [(1, 1), (1, 2), (2, 1), (2, 2)]
    >>> len(settings(16))
    15
    """
    cores = cores or os.cpu_count() or 1
    workers = [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= cores]
    threads = sorted({1, min(2, cores), max(1, cores // 2)})
    return [(w, t) for w in workers for t in threads]


def best_dataloader(
    cfg: Config, shards: ShardSet, cores: int | None = None
) -> tuple[str, Measured, dict[str, float]]:
    """The fastest DataLoader setting: (its name, its pass, rows/s of every setting tried)."""
    tried: dict[str, Measured] = {}
    for workers, threads in settings(cores):
        tried[f"workers={workers},threads={threads}"] = dataloader(cfg, shards, workers, threads)
    best = max(tried, key=lambda name: tried[name].rows_per_s)
    return best, tried[best], {name: round(m.rows_per_s, 1) for name, m in tried.items()}
