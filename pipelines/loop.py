"""The continuous loop on Ray: trainer actor, weights board, query queue and scoring rounds.

Labels go to the :class:`~actors.trainer.TrainerService` actor, which trains in a background
thread and publishes each new version on the :class:`~actors.weights.WeightsBoard` (one
``ray.put`` per version). A driver thread starts a scoring round through the Ray Data scorer
pool whenever the board's version advanced by ``rescore_every``; scorers pick up versions
published mid-round, and every candidate keeps the version that scored it. Finished rounds
replace the :class:`~actors.queue.QueryQueue` candidates, which annotators lease from.

For pools too large to rescore on every version, ``scoring.shards_per_round`` rotates over a
subset of shards per round.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.items import ItemStore
from actors.queue import QueryQueue
from actors.trainer import AddResult, TrainerService
from actors.weights import WeightsBoard, WeightsVersion
from pipelines.config import Config
from pipelines.runtime import trainer_gpus
from pipelines.scoring import score_pass
from pipelines.sources import ShardSet


def _publisher(board: Any) -> Any:
    def publish(weights: WeightsVersion) -> None:
        ray.get(board.publish.remote(weights))  # visible to scorers before the call returns

    return publish


@dataclass
class RoundStats:
    """One finished scoring round."""

    index: int
    started_version: int
    versions: dict[int, int]
    rows: int
    seconds: float
    first_seen: dict[int, float] = field(default_factory=dict)


LOOP_ACTOR = "activestream-loop"


def start_loop_actor(cfg: Config, pool: ShardSet, *, detached: bool = False) -> Any:
    """Run an :class:`ActiveLoop` inside a named actor (reused if it exists), started."""
    options: dict[str, Any] = {
        "name": LOOP_ACTOR,
        "get_if_exists": True,
        "num_cpus": 0,
        "max_concurrency": 16,
    }
    if detached:
        options["lifetime"] = "detached"
    host = ray.remote(ActiveLoop).options(**options).remote(cfg, pool)
    ray.get(host.start.remote())
    return host


class ActiveLoop:
    """Owns the actors of one active-learning deployment and the background scoring rounds.

    Args:
        cfg: The one config.
        pool: Unlabeled pool shards.
    """

    def __init__(self, cfg: Config, pool: ShardSet) -> None:
        self.cfg = cfg
        self.pool = pool
        self.rounds: list[RoundStats] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.board: Any = None
        self.trainer: Any = None
        self.queue: Any = None

    def start(self) -> None:
        """Create the actors, publish version 0 and start scoring rounds in the background."""
        if self._thread is not None:
            return
        ray.data.DataContext.get_current().enable_progress_bars = False  # rounds run for ever
        cfg = self.cfg
        self.board = ray.remote(WeightsBoard).options(num_cpus=0, max_concurrency=64).remote()
        self.queue = (
            ray.remote(QueryQueue)
            .options(num_cpus=0, max_concurrency=16)
            .remote(
                explore_p=cfg.sampling.explore_p,
                lease_seconds=cfg.sampling.lease_seconds,
                seed=cfg.seed,
            )
        )
        self.trainer = (
            ray.remote(TrainerService)
            .options(num_cpus=0.5, num_gpus=trainer_gpus(cfg.training), max_concurrency=8)
            .remote(
                training=cfg.training,
                model=cfg.model,
                items=ItemStore(self.pool),
                seed=cfg.seed,
                publish=_publisher(self.board),
                put=ray.put,
            )
        )
        ray.get(self.trainer.start.remote())
        self._thread = threading.Thread(target=self._run, name="scoring-rounds", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the rounds and the trainer thread; actors die with their handles."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        if self.trainer is not None:
            ray.get(self.trainer.stop.remote())

    # -- annotator side -------------------------------------------------------------------
    def handles(self) -> dict[str, Any]:
        """Actor handles for the Serve app, which talks to the actors directly."""
        return {"trainer": self.trainer, "queue": self.queue, "board": self.board}

    def stats(self) -> dict[str, Any]:
        """Round counters for metrics: rounds done, version of the last round, errors."""
        last = self.rounds[-1] if self.rounds else None
        return {
            "rounds": len(self.rounds),
            "last_round_version": min(last.versions) if last and last.versions else -1,
            "errors": self.errors[-5:],
        }

    def add_labels(self, records: list[dict[str, Any]], relabel: bool = False) -> AddResult:
        """Hand labels to the trainer (validated as a batch) and retire their ids."""
        result = ray.get(self.trainer.add_labels.remote(records, relabel=relabel))
        ray.get(self.queue.mark_labeled.remote([r["id"] for r in records]))
        return result

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
    def _shards_for(self, index: int) -> ShardSet:
        per_round = self.cfg.scoring.shards_per_round
        n = len(self.pool.paths)
        if per_round is None or per_round >= n:
            return self.pool
        start = (index * per_round) % n
        return self.pool.subset([(start + i) % n for i in range(per_round)])

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                version = self.version()
                if last is not None and version < last + self.cfg.scoring.rescore_every:
                    self._stop.wait(0.05)
                    continue
                began = time.perf_counter()
                index = len(self.rounds)
                result = score_pass(self.cfg, self._shards_for(index), board=self.board)
                top, explore = result.top, result.explore
                ray.get(
                    self.queue.update_round.remote(
                        top.ids.tolist(),
                        top.scores.tolist(),
                        top.versions.tolist(),
                        explore.ids.tolist(),
                        min(result.versions) if result.versions else version,
                    )
                )
                self.rounds.append(
                    RoundStats(
                        index,
                        version,
                        dict(result.versions),
                        result.rows,
                        time.perf_counter() - began,
                        result.first_seen,
                    )
                )
                last = version
            except Exception as err:  # noqa: BLE001 - a failed round is retried, not fatal
                self.errors.append(f"{type(err).__name__}: {err}")
                self._stop.wait(1.0)
