"""The continuous loop on Ray: trainer actor, weights board, query queue and scoring rounds.

Labels go to the :class:`~activestream.actors.trainer.TrainerService` actor, which trains in a
background thread and publishes each new version on the
:class:`~activestream.actors.weights.WeightsBoard` (one ``ray.put`` per version). A driver thread
starts a scoring round through the Ray Data scorer pool whenever the board's version advanced by
``rescore_every``; scorers pick up versions published mid-round, and every candidate keeps the
version that scored it. Finished rounds replace the :class:`~activestream.actors.queue.QueryQueue`
candidates, which annotators lease from.

Rounds run in one streaming pass (:func:`~activestream.pipelines.scoring.stream_rounds`) for as
long as each finished round finds a newer version to score with, so the scorers stay warm while
labels flow; when nothing new arrived, the pass ends and the scorers are released until the next
version.

For pools too large to rescore on every version, ``scoring.shards_per_round`` rotates over a
subset of shards per round.

The pool's task (:mod:`activestream.pipelines.task`) picks the parts that differ: a detection
pool gets the detector trainer, box labels in the ledger and the detector scorer pool, in this
same loop.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import ray

from activestream import samplers
from activestream.actors.checkpoints import CheckpointStore
from activestream.actors.items import ItemStore
from activestream.actors.label_studio import LabelStudioBridge
from activestream.actors.labels import AddResult
from activestream.actors.ledger import LabelLedger
from activestream.actors.queue import QueryQueue, RoundUpdate, cold_start_over
from activestream.actors.weights import WeightsBoard, WeightsVersion
from activestream.config import Config
from activestream.errors import ActivestreamError, DataError
from activestream.pipelines.features import ensure_features, read_features
from activestream.pipelines.runtime import LOOP_ACTOR, trainer_gpus
from activestream.pipelines.scoring import (
    ScoreResult,
    embedding_model,
    pass_rounds,
)
from activestream.pipelines.task import task_parts
from activestream.sources.pool import grow_shards
from activestream.sources.shards import ShardSet, sample_ids

HEAD_RESOURCE = "node:__internal_head__"  # every Ray head node has one unit of it


def _publisher(board: Any) -> Any:
    def publish(weights: WeightsVersion) -> None:
        ray.get(board.publish.remote(weights))  # visible to scorers before the call returns

    return publish


def _on_head() -> dict[str, Any]:
    """Actor options that keep a small control actor on the head node, as Serve's controller.

    Worker nodes come and go with the autoscaler and spot markets; the head's loss ends the
    cluster anyway. (Soft node affinity is not enough: zero-CPU actors spill to other nodes.)
    """
    return {"resources": {HEAD_RESOURCE: 0.001}}


def _trainer_weights(name: str) -> WeightsVersion | None:
    """What a restarted weights board asks: the named trainer's newest publication.

    No trainer yet (the first start) means nothing to recover.
    """
    try:
        trainer = ray.get_actor(name)
    except ValueError:
        return None
    return ray.get(trainer.latest_published.remote(), timeout=10)


def _constructed(ref: Any, role: str) -> Any:
    """``ray.get`` of an actor's first call, a failed constructor as one line naming ``role``.

    Ray reports that as ``ActorDiedError``, the remote traceback as text: its last line is the
    constructor's own error (``activestream.errors.ConfigError: model.init_weights ...``).
    """
    try:
        return ray.get(ref)
    except ray.exceptions.ActorDiedError as err:
        if not err.actor_init_failed:
            raise
        last = str(err).strip().splitlines()[-1]
        cause = re.sub(r"^activestream\.errors\.\w+: ", "", last)
        raise ActivestreamError(f"{role} could not start: {cause}") from None


def _floor(board: Any) -> Any:
    def floor() -> int:
        return int(ray.get(board.latest_version.remote()))

    return floor


class RayDownstream:
    """The ledger's view of the trainer and query queue actors, with a deadline per call.

    Args:
        trainer: TrainerService actor handle.
        queue: QueryQueue actor handle.
        timeout: Seconds to wait for an actor before the ledger reports degraded.
    """

    def __init__(self, trainer: Any, queue: Any, timeout: float) -> None:
        self.trainer = trainer
        self.queue = queue
        self.timeout = timeout

    def forward(self, start: int, records: list[dict[str, Any]]) -> int:  # noqa: D102
        return int(ray.get(self.trainer.ingest.remote(start, records), timeout=self.timeout))

    def trainer_offset(self) -> int:  # noqa: D102
        return int(ray.get(self.trainer.applied_offset.remote(), timeout=self.timeout))

    def retire(self, ids: list[str], labels: list[int] | None = None) -> None:  # noqa: D102
        ray.get(self.queue.mark_labeled.remote(ids, labels), timeout=self.timeout)

    def retired(self) -> int:  # noqa: D102
        return int(ray.get(self.queue.stats.remote(), timeout=self.timeout)["labeled"])


class RayService:
    """The Label Studio bridge's view of the ledger, trainer and board actors.

    Args:
        ledger: LabelLedger actor handle.
        trainer: TrainerService actor handle.
        board: WeightsBoard actor handle.
        timeout: Seconds to wait for an actor.
    """

    def __init__(self, ledger: Any, trainer: Any, board: Any, timeout: float = 60.0) -> None:
        self.ledger = ledger
        self.trainer = trainer
        self.board = board
        self.timeout = timeout

    def add(self, records: list[dict[str, Any]], *, annotator: str) -> None:  # noqa: D102
        ref = self.ledger.add.remote(records, relabel=True, annotator=annotator)
        ray.get(ref, timeout=self.timeout)

    def retract(self, ids: list[str]) -> None:  # noqa: D102
        ray.get(self.ledger.retract.remote(ids, annotator="label-studio"), timeout=self.timeout)

    def labels_of(self, ids: list[str]) -> dict[str, int]:  # noqa: D102
        return ray.get(self.ledger.labels_of.remote(ids), timeout=self.timeout)

    def predict_proba(self, x: Any) -> Any:  # noqa: D102
        return ray.get(self.trainer.predict_proba.remote(x), timeout=self.timeout)

    def detect(self, images: list[Any]) -> list[dict[str, Any]]:  # noqa: D102
        return ray.get(self.trainer.predict.remote(images), timeout=self.timeout)

    def version(self) -> int:  # noqa: D102
        return int(ray.get(self.board.latest_version.remote(), timeout=self.timeout))

    def flush(self) -> None:  # noqa: D102
        ray.get(self.trainer.flush.remote(), timeout=self.timeout)


@dataclass
class RoundStats:
    """One finished scoring round."""

    index: int
    started_version: int
    versions: dict[int, int]
    rows: int
    seconds: float
    first_seen: dict[int, float] = field(default_factory=dict)


def start_loop_actor(
    cfg: Config, pool: ShardSet, *, detached: bool = False, wait: bool = True
) -> Any:
    """Run an :class:`ActiveLoop` inside a named actor (reused if it exists), started.

    The loop restarts on its own when its process dies (its constructor starts it again and
    finds its actors by name); the actors it made are detached, so they outlive it.

    Args:
        cfg: The one config.
        pool: Unlabeled pool shards.
        detached: Outlive the driver (``serve run``, ``serve deploy``).
        wait: Return once the loop is :meth:`~ActiveLoop.ready`. False returns once its actors
            are asked for (their handles work); call ``ready`` later to see a failed one.
    """
    options: dict[str, Any] = {
        "name": LOOP_ACTOR,
        "get_if_exists": True,
        "num_cpus": 0,
        "max_concurrency": 16,
        "max_restarts": -1,
        "max_task_retries": 0,
        **_on_head(),
    }
    if detached:
        options["lifetime"] = "detached"
    host = ray.remote(ActiveLoop).options(**options).remote(cfg, pool, name=LOOP_ACTOR)
    ray.get(host.ready.remote() if wait else host.handles.remote())
    return host


def _reserve_ids(pool: ShardSet, n: int, seed: int, draw: int) -> list[str]:
    """Random pool ids for the queue's reserve: draw ``draw`` of a seeded sequence."""
    return sample_ids(pool, n, seed=seed + 7919 * draw)


class ActiveLoop:
    """Owns the actors of one active-learning deployment and the background scoring rounds.

    Args:
        cfg: The one config.
        pool: Unlabeled pool shards.
        name: Run as the named loop actor: the board, queue, trainer and ledger become detached
            actors named ``{name}:{role}``, found again by name when the loop restarts, so no
            actor's death takes another with it. None (in-process use) keeps them owned by
            this process and gone with it.
    """

    def __init__(self, cfg: Config, pool: ShardSet, name: str | None = None) -> None:
        self.cfg = cfg
        self.pool = pool
        self.name = name
        self.task = task_parts(cfg, pool)  # classes or boxes: the parts that differ
        self.rounds: list[RoundStats] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.board: Any = None
        self.trainer: Any = None
        self.queue: Any = None
        self.ledger: Any = None
        self.label_studio: Any = None
        self._ready = False  # the model has earned the hand-over from the cold start
        self._checked_version = -1
        self._embedding_files: tuple[ShardSet, ShardSet] | None = None
        self._cold_put_first: dict[str, np.ndarray] = {}  # cold picks' embeddings, by id
        self._pool_checked_at = time.monotonic()
        self._new_files = False  # files found under the pool that no pass has scored yet
        self._published_seen = -1  # the newest version the trainer said it published
        self._queue_rounds = 0  # rounds the queue said it holds at the last look
        self.queue_restarts = 0
        self._actors_up = False  # the trainer is built and holds the whole label log
        self._ready_lock = threading.Lock()  # the rounds and the driver may both ask
        if name is not None:
            # A restarted loop actor comes back on its own. Not waiting for the actors lets the
            # Serve replica start while they build: about 8 s of a 27 s start on 2 cores.
            self.start(wait=False)

    def _actor(self, role: str, cls: type, options: dict[str, Any]) -> Any:
        """``cls`` as a Ray actor; named and detached when the loop itself is named."""
        restart = {"max_restarts": -1, "max_task_retries": 0}
        if self.name is not None:
            restart |= {
                "name": f"{self.name}:{role}",
                "lifetime": "detached",
                "get_if_exists": True,
            }
        return ray.remote(cls).options(**options, **restart)

    def start(self, *, wait: bool = True) -> None:
        """Create (or find) the actors, publish version 0 and start scoring rounds.

        Args:
            wait: Return once the trainer is built and holds the whole label log. False
                returns as soon as the actors are asked for: their handles work at once (calls
                wait for the constructors), and the rounds start once they are up. A failed
                actor then surfaces through :meth:`ready`.
        """
        if self._thread is not None:
            return
        ray.data.DataContext.get_current().enable_progress_bars = False  # rounds run for ever
        cfg = self.cfg
        # Every actor restarts on its own when its process dies; state comes back from the
        # label log (ledger, queue), the newest checkpoint (trainer) and the trainer (board).
        control = _on_head()  # small actors that everything else calls
        recover = None if self.name is None else partial(_trainer_weights, f"{self.name}:trainer")
        self.board = self._actor(
            "board",
            WeightsBoard,
            # Every scorer (up to num_scorers per pass, two passes may overlap) holds one long
            # poll; the rest serve publications and the loop's and Serve's reads.
            {"num_cpus": 0, "max_concurrency": 64 + 2 * cfg.scoring.num_scorers, **control},
        ).remote(recover=recover)
        self.queue = self._actor(
            "queue", QueryQueue, {"num_cpus": 0, "max_concurrency": 16, **control}
        ).remote(
            explore_p=cfg.sampling.explore_p,
            lease_seconds=cfg.sampling.lease_seconds,
            seed=cfg.seed,
            batch=self.task.queue_batch,
            warmup=cfg.sampling.cold_start,
            arms=self.task.queue_arms,
            cold_sample=partial(sample_ids, self.pool, cfg.sampling.candidates, cfg.seed),
            reserve_sample=partial(_reserve_ids, self.pool, cfg.sampling.candidates, cfg.seed),
        )
        durability = cfg.durability
        self.trainer = self._actor(
            "trainer",
            self.task.trainer,
            {
                "num_cpus": 0.5,
                "num_gpus": trainer_gpus(cfg.training),
                "resources": dict(cfg.training.resources),
                "max_concurrency": 8,
            },
        ).remote(
            training=cfg.training,
            model=cfg.model,
            items=ItemStore(self.pool, storage=cfg.storage),
            seed=cfg.seed,
            publish=_publisher(self.board),
            put=ray.put,  # owned by the trainer: scorers keep their weights while it restarts
            checkpoints=CheckpointStore(
                f"{cfg.state_dir}/checkpoints", cfg.storage, keep=durability.keep_checkpoints
            ),
            checkpoint_every=durability.checkpoint_every,
            version_floor=_floor(self.board),
            autostart=True,
            reserved_cpus=cfg.serve.cores_kept,
        )
        items = ItemStore(self.pool, storage=cfg.storage)
        self.ledger = self._actor(
            "ledger", LabelLedger, {"num_cpus": 0, "max_concurrency": 32, **control}
        ).remote(
            f"{cfg.state_dir}/labels",
            items=items,
            kind=None if self.task.label_kind is None else self.task.label_kind(items),
            storage=cfg.storage,
            downstream=RayDownstream(self.trainer, self.queue, durability.forward_timeout),
            sync_seconds=durability.sync_seconds,
            background=True,
            autostart=True,
            probe_uris=[f"{cfg.state_dir}/checkpoints"],  # /healthz names a failing store
        )
        self.label_studio = self._actor(
            "label-studio", LabelStudioBridge, {"num_cpus": 0, "max_concurrency": 16, **control}
        ).remote(
            items=ItemStore(self.pool, storage=cfg.storage),
            service=RayService(self.ledger, self.trainer, self.board),
            config=cfg.label_studio,
            sampler=cfg.sampling.sampler,
            task=self.task.label_studio,
            storage=cfg.storage,
            autostart=True,
        )
        if wait:
            self.ready()
        self._thread = threading.Thread(target=self._run, name="scoring-rounds", daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """Return once the trainer is built and holds the whole label log.

        Raises:
            ActivestreamError: The trainer or the ledger could not be built (weights that do
                not load, say); the message is the constructor's.
        """
        with self._ready_lock:
            if self._actors_up:
                return
            # constructed: recovered and publishing
            _constructed(self.trainer.applied_offset.remote(), "the trainer")
            # the trainer holds the whole log
            _constructed(self.ledger.catch_up.remote(), "the label ledger")
            self._actors_up = True

    def stop(self) -> None:
        """Stop the rounds, the ledger and the trainer (a final checkpoint); end named actors."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self.label_studio is not None:
            ray.get(self.label_studio.stop.remote())
        if self.ledger is not None:
            ray.get(self.ledger.stop.remote())
        if self.trainer is not None:
            ray.get(self.trainer.stop.remote())  # writes a final checkpoint
        if self.name is not None:  # detached: they would outlive every handle
            for handle in (self.label_studio, self.ledger, self.trainer, self.queue, self.board):
                if handle is not None:
                    ray.kill(handle, no_restart=True)

    # -- annotator side -------------------------------------------------------------------
    def handles(self) -> dict[str, Any]:
        """Actor handles for the Serve app, which talks to the actors directly."""
        return {
            "trainer": self.trainer,
            "queue": self.queue,
            "board": self.board,
            "ledger": self.ledger,
            "label_studio": self.label_studio,
        }

    def task_name(self) -> str:
        """The pool's task (``classification`` or ``detection``): what the app takes and answers."""
        return self.task.name

    def stats(self) -> dict[str, Any]:
        """Round counters for metrics: rounds done, version of the last round, errors."""
        last = self.rounds[-1] if self.rounds else None
        return {
            "rounds": len(self.rounds),
            "last_round_version": min(last.versions) if last and last.versions else -1,
            "errors": self.errors[-5:],
            "queue_restarts": self.queue_restarts,
        }

    def add_labels(self, records: list[dict[str, Any]], relabel: bool = False) -> AddResult:
        """Log labels durably through the ledger, which forwards them and retires their ids."""
        return ray.get(self.ledger.add.remote(records, relabel=relabel))

    def lease(self, n: int) -> list[Any]:
        """Lease up to n queries from the last finished round."""
        return ray.get(self.queue.lease.remote(n))

    def version(self) -> int:
        """Newest published model version."""
        return ray.get(self.board.latest_version.remote())

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        """Poll ``predicate()`` until true; raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    # -- scoring rounds -------------------------------------------------------------------
    def _grow_pool(self) -> bool:
        """Take in shards that appeared under the pool's URI; True when some did."""
        try:
            bigger = grow_shards(self.pool, self.cfg.storage)
        except DataError as err:  # a malformed new file: say so, keep scoring the rest
            message = f"DataError: {err}"
            if message not in self.errors[-5:]:
                self.errors.append(message)
            return False
        if bigger is None:
            return False
        self.pool = bigger
        return True

    def _scoring_source(self) -> ShardSet:
        """What rounds read: the pool, or with ``train: head`` its backbone features."""
        if self.cfg.model.train != "head" or self.task.name != "classification":
            return self.pool
        weights = ray.get(self.board.latest.remote())
        features = ensure_features(self.cfg, self.pool, weights)
        if self.cfg.training.semi_supervised_for(self.cfg.model) != "none":
            # the trainer's unlabeled sample comes from these files (a no-op once it has one;
            # asked every round, so a restarted trainer gets it again)
            self.trainer.use_unlabeled_files.remote(features)
        return features

    def _shards_for(self, source: ShardSet, index: int) -> ShardSet:
        per_round = self.cfg.scoring.shards_per_round
        n = len(source.paths)
        if per_round is None or per_round >= n:
            return source
        start = (index * per_round) % n
        return source.subset([(start + i) % n for i in range(per_round)])

    def _run(self) -> None:
        every = self.cfg.scoring.rescore_every
        last: int | None = None
        while not self._stop.is_set():
            try:
                self.ready()  # started without waiting: the actors may still be building
                version = self.version()
                idle = last is not None and version < last + every
                if idle and not self._queue_restarted() and not self._pool_grew():
                    self._hand_over(version)
                    self._await_publication(0.5)
                    continue
                self._grow_pool()
                self._new_files = False  # this pass scores them
                source = self._scoring_source()
                first = len(self.rounds)
                one = self._shards_for(source, first)
                planned = pass_rounds(
                    self.cfg.scoring.stream_rounds,
                    rows=one.num_rows,
                    files=0 if one.images else len(one.paths),
                )
                plan = [self._shards_for(source, first + i) for i in range(planned)]
                began = time.perf_counter()
                rounds = self.task.rounds(self.cfg, plan, board=self.board)
                try:
                    for result in rounds:
                        if max(result.versions, default=version) < version:
                            continue  # scored ahead while the stream waited: all stale
                        self._finish_round(result, version, time.perf_counter() - began)
                        last = version
                        if self._grow_pool():
                            # New shards: the next pass plans rounds over them too, at once,
                            # whether or not a version comes (an idle service waited for one).
                            self._new_files = True
                            break
                        if not self._await_version(last + every):
                            break  # nothing new to score: let the scorers go
                        version, began = self.version(), time.perf_counter()
                finally:
                    rounds.close()
            except Exception as err:  # noqa: BLE001 - a failed round is retried, not fatal
                self.errors.append(f"{type(err).__name__}: {err}")
                self._stop.wait(1.0)

    def _pool_grew(self) -> bool:
        """New files under the pool since the last pass (looked for every pool_check_seconds).

        They are scored with the current model at once, without waiting for a version: until
        then nobody could be asked about them (labels wait for queries, versions for labels).
        """
        now = time.monotonic()
        if now - self._pool_checked_at >= self.cfg.scoring.pool_check_seconds:
            self._pool_checked_at = now
            self._new_files = self._grow_pool() or self._new_files
        return self._new_files

    def _await_version(self, target: int) -> bool:
        """Wait up to ``scoring.linger_seconds`` for version ``target``; False on timeout."""
        deadline = time.monotonic() + self.cfg.scoring.linger_seconds
        while (version := self.version()) < target:
            if self._queue_restarted():
                break  # an empty queue: score again now, with the version there is
            if self._pool_grew():
                return False  # a new pass, planned over the new files too
            self._hand_over(version)
            left = deadline - time.monotonic()
            if self._stop.is_set() or left <= 0:
                return False
            self._await_publication(min(0.5, left))
        self._hand_over(version)
        return not self._stop.is_set()

    def _queue_restarted(self) -> bool:
        """Whether the query queue lost its round (its actor restarted) since the last look.

        A restarted queue serves random pool items at once (its cold sample) and gets the
        next round without waiting for a new version, which could need labels that nobody can
        give without queries.
        """
        try:
            held = int(ray.get(self.queue.round_count.remote(), timeout=10))
        except Exception:  # noqa: BLE001 - restarting right now: look again next time
            return False
        lost = held < self._queue_rounds
        self._queue_rounds = held
        if lost:
            self.queue_restarts += 1
            self._checked_version = -1  # it came back cold: hand it over again
        return lost

    def _await_publication(self, timeout: float) -> None:
        """Sleep until the board has a version newer than the last seen, at most ``timeout`` s.

        One long poll on the board, the one authority on versions (``WeightsBoard.listen``),
        instead of asking every 20 to 50 ms (each ask costs both actors about half a
        millisecond of CPU, taken from training on a small machine). A call that fails (the
        board restarting) costs a short sleep, never a version: callers read the board after.
        """
        if self._stop.is_set():
            return
        try:
            ref = self.board.listen.remote(self._published_seen, timeout)
            latest = ray.get(ref, timeout=timeout + 5)
            if latest is not None:
                self._published_seen = latest.version
        except Exception:  # noqa: BLE001 - a restarting board: poll it again shortly
            self._stop.wait(0.05)

    def _hand_over(self, version: int) -> None:
        """End the queue's cold start once the trainer's prequential record says it is ready.

        Checked at every new version, not only when a round finishes: rounds can take
        several versions, and the last round's ranking is the model's already. A queue that
        restarted comes back cold and is handed over again at the next version.
        """
        if not self.cfg.sampling.cold_start or version == self._checked_version:
            return
        self._checked_version = version
        if not self._ready:
            prequential = ray.get(self.trainer.prequential.remote())
            self._ready = cold_start_over(self.cfg.sampling, prequential)
        if self._ready and ray.get(self.queue.stats.remote())["warming"]:
            ray.get(self.queue.end_warmup.remote())

    def _cold_order(self, result: ScoreResult) -> list[str]:
        """The round's random sample, with cold-start picks from its embedding first.

        While the model is cold a warming queue hands out this list in order, so with
        ``cold_start_strategy`` set the first questions are the sample's typical or covering
        items instead of uniform ones; labeled and leased ones are skipped by the queue.
        """
        ids = result.explore.ids.tolist()
        sampling = self.cfg.sampling
        if self._ready or result.explore_embeddings is None or not self.task.cold_on_embedding:
            return ids
        # Items put first in earlier rounds and asked since cover their region: the next picks
        # go elsewhere (the sample is fresh each round; the queue says which were asked).
        asked = ray.get(self.queue.taken.remote(list(self._cold_put_first)))
        already = np.stack([self._cold_put_first[i] for i in asked]) if asked else None
        first = min(len(ids), 4 * self.cfg.training.buffer_size)
        order = samplers.cold_order(
            sampling.cold_start_strategy,
            result.explore_embeddings,
            first,
            rng=np.random.default_rng([self.cfg.seed, len(self.rounds)]),
            already=already,
        )
        for row in order[:first].tolist():
            self._cold_put_first[ids[row]] = result.explore_embeddings[row]
        return [ids[i] for i in order.tolist()]

    def _with_embedding_model(self, result: ScoreResult) -> ScoreResult:
        """The round's candidates and random sample embedded by ``sampling.embedding_model``.

        Its features are computed once per pool file (kept beside the label log, like the
        frozen features of ``train: head``) and only the rows this round needs are read back.
        """
        model = embedding_model(self.cfg) if self.task.embedding_model else None
        if model is None:
            return result
        if self._embedding_files is None or self._embedding_files[0] is not self.pool:
            embedded = ensure_features(self.cfg, self.pool, None, model=model)
            self._embedding_files = (self.pool, embedded)
        top, explore = result.top.ids.tolist(), result.explore.ids.tolist()
        wanted = list(dict.fromkeys(top + explore))  # one pass over the files for both lists
        found = read_features(self._embedding_files[1], wanted)
        row = {item: k for k, item in enumerate(wanted)}
        return replace(
            result,
            embeddings=found[[row[i] for i in top]],
            explore_embeddings=found[[row[i] for i in explore]],
        )

    def _finish_round(self, result: ScoreResult, started_version: int, seconds: float) -> None:
        result = self._with_embedding_model(result)
        top = result.top
        ray.get(
            self.queue.take_round.remote(
                RoundUpdate(
                    top.ids,
                    top.scores,
                    top.versions,
                    self._cold_order(result),
                    min(result.versions) if result.versions else started_version,
                    result.embeddings,
                    pool_rows=self.pool.num_rows,
                    bad_rows=result.bad_rows,
                    arm_ranked=[t.ids for t in result.arm_tops or []] or None,
                    preds=result.preds,
                    slot_scores=result.slot_scores,
                )
            )
        )
        self._queue_rounds += 1
        self._hand_over(self.version())
        self.rounds.append(
            RoundStats(
                len(self.rounds),
                started_version,
                dict(result.versions),
                result.rows,
                seconds,
                result.first_seen,
            )
        )
