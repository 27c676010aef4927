"""One scoring pass: stream shards through the Ray Data scorer pool into a global top-k.

The pool is never materialized: read tasks stream Parquet row groups into an actor pool of
:class:`activestream.actors.scorer.Scorer`, and the driver folds each small output batch (id,
score, pred, model_version) into a :class:`activestream.samplers.TopK` for exploitation and a
second ``TopK`` over random keys, which is a uniform sample without replacement, for exploration.
Optionally every score row is also streamed to a Parquet file.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from activestream import samplers
from activestream.actors.scorer import Scorer
from activestream.actors.weights import WeightsVersion
from activestream.config import Config, ModelConfig
from activestream.pipelines.runtime import scorer_gpus
from activestream.sources.shards import ShardSet, read_ray_dataset


@dataclass
class ScoreResult:
    """What a pass leaves behind: the best candidates, a random sample, and counters."""

    top: samplers.TopKResult
    explore: samplers.TopKResult
    rows: int
    seconds: float
    versions: Counter[int] = field(default_factory=Counter)
    first_seen: dict[int, float] = field(default_factory=dict)
    embeddings: np.ndarray | None = None  # (k, D) for ``top.ids``, diversity samplers only
    explore_embeddings: np.ndarray | None = None  # (k, D) for ``explore.ids`` (cold start)
    bad_rows: int = 0  # encoded images that did not decode: skipped, never queried
    arm_tops: list[samplers.TopKResult] | None = None  # ``auto``: the best rows of each arm
    preds: dict[str, int] | None = None  # ``auto``: the model's class for ``explore.ids``
    slot_scores: dict[str, np.ndarray] | None = None  # ``auto``: (A,) per ``explore.ids``

    @property
    def rows_per_second(self) -> float:
        """Throughput of the whole pass, fixed costs included."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def scorer_kwargs(
    cfg: Config, shards: ShardSet, *, board: Any = None, weights: WeightsVersion | None = None
) -> dict[str, Any]:
    """Constructor arguments of every scorer actor, all derived from the one config."""
    return {
        "model": cfg.model,
        "shape": shards.shape,
        "num_classes": len(shards.classes),
        "sampler": cfg.sampling.sampler,
        "board": board,
        "weights": weights,
        "seed": cfg.seed,
        "threads": cfg.scoring.threads_per_scorer,
        "nice": cfg.scoring.nice,
        "reserved_cpus": cfg.serve.cores_kept,
        "mc_samples": cfg.sampling.mc_samples,
        "image_column": shards.image_column,
        "encoded": shards.encoded,
        "features": shards.image_column == "feature",  # see pipelines.features
        # A cold start on the embedding reads the random sample's embeddings; otherwise the
        # sampler decides (diversity samplers need them for their candidates).
        "embed": scorer_embeds(cfg),
    }


def embedding_model(cfg: Config) -> ModelConfig | None:
    """The frozen network embedding the pool for selection, if not the model itself."""
    sampler = samplers.spec(cfg.sampling.sampler)
    if cfg.sampling.embedding_model is None or sampler.embedding == "gradient":
        return None
    return cfg.sampling.embedding_model


def scorer_embeds(cfg: Config) -> bool | None:
    """Whether scorers emit an embedding column (None: as the sampler needs)."""
    if embedding_model(cfg) is not None:
        return False  # selection reads the embedding model's files instead
    return True if cold_start_on_embedding(cfg) else None


#: Registered models whose weights are trained before any label (their features mean something).
PRETRAINED_FACTORIES = frozenset({"efficientnet_lite0"})


def embedding_is_pretrained(cfg: Config) -> bool:
    """Whether the embedding selection reads comes from trained weights, not a random init."""
    model = cfg.model
    return (
        embedding_model(cfg) is not None
        or model.train == "head"
        or model.init_weights is not None
        or model.factory in PRETRAINED_FACTORIES
    )


def cold_start_on_embedding(cfg: Config) -> bool:
    """Whether cold-start queries are picked from the pool's embedding (not uniformly).

    Only from a pretrained embedding unless ``cold_start_embedding: any``: an untrained
    network's penultimate layer steered the first picks wrong in the study.
    """
    sampling = cfg.sampling
    return (
        sampling.cold_start
        and sampling.cold_start_strategy != "random"
        and (sampling.cold_start_embedding == "any" or embedding_is_pretrained(cfg))
    )


def scored_dataset(
    cfg: Config,
    shards: ShardSet,
    *,
    board: Any = None,
    weights: WeightsVersion | None = None,
) -> Any:
    """The lazy Ray Dataset of score rows; nothing runs until it is iterated."""
    import ray

    ds = read_ray_dataset(
        shards, read_cpus=cfg.scoring.read_cpus, read_concurrency=cfg.scoring.read_concurrency
    )
    if cfg.scoring.object_store_mb is not None:
        limits = ds.context.execution_options.resource_limits
        ds.context.execution_options.resource_limits = limits.copy(
            object_store_memory=cfg.scoring.object_store_mb * 2**20
        )
    return ds.map_batches(
        Scorer,
        fn_constructor_kwargs=scorer_kwargs(cfg, shards, board=board, weights=weights),
        batch_size=cfg.scoring.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.scoring.num_scorers),
        num_cpus=cfg.scoring.cpus_per_scorer,
        num_gpus=scorer_gpus(cfg.scoring) or None,
        resources=dict(cfg.scoring.resources) or None,
    )


class _Round:
    """Folds score batches into one round's top-k, random sample and version counters."""

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.top, self.explore = samplers.TopK(k), samplers.TopK(k)
        self.rng = rng
        self.versions: Counter[int] = Counter()
        self.first_seen: dict[int, float] = {}
        self.rows = 0
        self.start = time.perf_counter()
        self.k = k
        self.embedding: dict[str, np.ndarray] = {}
        self.bad_rows = 0
        self.arm_tops: list[samplers.TopK] = []
        self.slots: dict[str, tuple[np.ndarray, int]] = {}  # id -> (A,) arm scores, class

    def push(self, batch: pa.Table) -> None:
        if "ok" in batch.column_names:
            ok = batch.column("ok")
            self.bad_rows += batch.num_rows - (pc.sum(pc.cast(ok, pa.int64())).as_py() or 0)
            batch = batch.filter(ok).drop_columns(["ok"])
        ids = batch.column("id").to_numpy(zero_copy_only=False)
        version = batch.column("model_version").to_numpy()
        self.top.push(ids, batch.column("score").to_numpy(), version)
        self.explore.push(ids, self.rng.random(batch.num_rows), version)
        if "embedding" in batch.column_names:
            self._keep_embeddings(ids, batch.column("embedding"))
        if "arm_scores" in batch.column_names:
            self._push_arms(ids, batch.column("arm_scores"), batch.column("pred"), version)
        self.versions.update(version.tolist())
        for v in np.unique(version).tolist():
            self.first_seen.setdefault(v, time.time())
        self.rows += batch.num_rows

    @property
    def consumed(self) -> int:
        """Rows read so far, undecodable ones included."""
        return self.rows + self.bad_rows

    def _keep_embeddings(self, ids: np.ndarray, column: Any) -> None:
        """Hold embeddings of rows that may end in the top-k; prune to it now and then."""
        array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        dim = array.type.list_size
        values = array.flatten().to_numpy().reshape(-1, dim)
        self.embedding.update(zip(ids.tolist(), values, strict=True))
        if len(self.embedding) > 4 * self.k:
            keep = set(self.top.result().ids.tolist()) | set(self.explore.result().ids.tolist())
            self.embedding = {i: e for i, e in self.embedding.items() if i in keep}

    def _push_arms(self, ids: np.ndarray, column: Any, pred: Any, version: np.ndarray) -> None:
        """Each arm's own top-k; every arm's score and the class of rows that may be sampled."""
        array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        arms = array.type.list_size
        scores = array.flatten().to_numpy().reshape(-1, arms)  # (n, A)
        if not self.arm_tops:
            self.arm_tops = [samplers.TopK(self.k) for _ in range(arms)]
        for a, top in enumerate(self.arm_tops):
            top.push(ids, scores[:, a], version)
        own = [row.copy() for row in scores]  # (A,) each: a kept row holds no batch alive
        rows = zip(own, pred.to_numpy().tolist(), strict=True)
        self.slots.update(zip(ids.tolist(), rows, strict=True))
        if len(self.slots) > 4 * self.k:
            keep = set(self.explore.result().ids.tolist())
            self.slots = {i: v for i, v in self.slots.items() if i in keep}

    def result(self) -> ScoreResult:
        seconds = time.perf_counter() - self.start
        top = self.top.result()
        explore = self.explore.result()
        embeddings = explore_embeddings = preds = slot_scores = None
        if self.slots:
            sampled = [i for i in explore.ids.tolist() if i in self.slots]
            preds = {i: self.slots[i][1] for i in sampled}
            slot_scores = {i: self.slots[i][0] for i in sampled}
        if self.embedding:
            embeddings = np.stack([self.embedding[i] for i in top.ids.tolist()])
            explore_embeddings = np.stack([self.embedding[i] for i in explore.ids.tolist()])
        return ScoreResult(
            top,
            explore,
            self.rows,
            seconds,
            self.versions,
            self.first_seen,
            embeddings=embeddings,
            explore_embeddings=explore_embeddings,
            bad_rows=self.bad_rows,
            arm_tops=[t.result() for t in self.arm_tops] or None,
            preds=preds,
            slot_scores=slot_scores,
        )


def score_pass(
    cfg: Config,
    shards: ShardSet,
    *,
    candidates: int | None = None,
    board: Any = None,
    weights: WeightsVersion | None = None,
    out: str | None = None,
    progress: bool = False,
) -> ScoreResult:
    """Score every row of ``shards`` once and keep the best ``candidates`` rows.

    Args:
        cfg: The run's config (model, sampler, pool size, resources).
        shards: The unlabeled pool.
        candidates: Size of the kept top-k; defaults to ``cfg.sampling.candidates``.
        board: WeightsBoard handle: scorers follow new versions mid-pass.
        weights: Fixed weights when no board is given; None scores the random initial model.
        out: Optional local Parquet path receiving every score row.
        progress: Show a progress bar over rows.
    """
    from tqdm.auto import tqdm

    round_ = _Round(candidates or cfg.sampling.candidates, np.random.default_rng(cfg.seed))
    writer: pq.ParquetWriter | None = None
    bar = tqdm(total=shards.num_rows, unit="rows", desc="scoring", disable=not progress)
    try:
        for batch in scored_dataset(cfg, shards, board=board, weights=weights).iter_batches(
            batch_format="pyarrow", batch_size=None
        ):
            if batch.num_rows == 0:
                continue
            round_.push(batch)
            if out is not None:
                writer = writer or pq.ParquetWriter(out, batch.schema)
                writer.write_table(batch)
            bar.update(batch.num_rows)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if out is not None and writer is None:
        pq.write_table(_empty_scores(), out)
    return round_.result()


def pass_rounds(
    wanted: int,
    rows: int,
    files: int,
    *,
    most_rows: int = 20_000_000,
    most_files: int = 200,
) -> int:
    """Rounds one streaming pass plans: ``scoring.stream_rounds``, fewer for a large pool.

    A pass that ends starts new scorer processes for the next one, so the more rounds it
    plans the rarer that is; but the plan is read as one dataset (a read task per Parquet
    file, a row index per image), and starting and ending a pass costs about 60 ms per planned
    file on 2 cores: a new file's first query took 44-49 s with 100 rounds of 4 files planned,
    27-29 s with 20.

    Args:
        wanted: ``scoring.stream_rounds``.
        rows: Rows one round reads.
        files: Parquet files one round reads (0 for an image folder, read in chunks of rows).
        most_rows: Rows one pass plans at most.
        most_files: Parquet read tasks one pass plans at most.

    >>> pass_rounds(20, rows=8_000, files=4), pass_rounds(20, rows=100_000, files=40)
    (20, 5)
    >>> pass_rounds(20, rows=50_000_000, files=0), pass_rounds(20, rows=10**6, files=1_000)
    (1, 1)
    """
    by_rows = most_rows // max(1, rows)
    by_files = most_files // files if files else wanted
    return max(1, min(wanted, by_rows, by_files))


def stream_rounds(
    cfg: Config, rounds: Sequence[ShardSet], *, board: Any = None
) -> Iterator[ScoreResult]:
    """Score several rounds in one streaming pass; yield each round's result as it completes.

    The scorer actors start once and stay warm from round to round, picking up each new model
    version from the board between batches, so the fixed cost of a pass (actor start, model
    build, executor start) is paid once per stream instead of once per round. Output order is
    preserved, so a round ends exactly when its shards' rows are in (a block that spans two
    rounds is split at the boundary). Closing the generator
    (``break`` in the consumer) shuts the pass down.

    Args:
        cfg: The run's config.
        rounds: The shards of each round, in order (e.g. the whole pool, repeated).
        board: WeightsBoard handle the scorers follow.
    """
    if not rounds:
        return
    looped = replace(
        rounds[0],
        paths=tuple(p for r in rounds for p in r.paths),
        file_rows=tuple(n for r in rounds for n in r.file_rows),
        num_rows=sum(r.num_rows for r in rounds),
    )
    ds = scored_dataset(cfg, looped, board=board)
    ds.context.execution_options.preserve_order = True
    rng = np.random.default_rng(cfg.seed)
    index = 0
    round_ = _Round(cfg.sampling.candidates, rng)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        while batch.num_rows and index < len(rounds):
            # Rows arrive in plan order, but a block may span rounds: split it at the boundary.
            # Count rows read, undecodable ones included, or a round would eat the next one's.
            take = min(batch.num_rows, rounds[index].num_rows - round_.consumed)
            round_.push(batch.slice(0, take))
            batch = batch.slice(take)
            if round_.consumed == rounds[index].num_rows:
                yield round_.result()
                index += 1
                round_ = _Round(cfg.sampling.candidates, rng)


def _empty_scores() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([], pa.string()),
            "score": pa.array([], pa.float64()),
            "pred": pa.array([], pa.int64()),
            "model_version": pa.array([], pa.int64()),
        }
    )
