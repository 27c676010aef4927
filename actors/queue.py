"""The query queue: hands out leases on the most useful unlabeled items, never twice.

A scoring round replaces the queue's candidates (ranked by the sampler) and its random sample
of the pool. ``lease(n)`` fills n slots, exploiting with probability ``p`` and exploring with
``1 - p``, skipping anything labeled or currently leased. A lease that is not answered within
``lease_seconds`` expires and the item can be handed out again.

With a diversity sampler (k-center, cluster-margin) the round also carries an embedding per
ranked candidate, and each lease picks its exploited items from the best available candidates
with the sampler's batch selection, so one batch of queries spreads over the embedding space
instead of repeating one confusion.

While ``warming`` (cold start, on by default in the loop) every slot explores: an untrained
model's uncertainty is noise, so the first labels are a uniform sample of the pool until the
caller sees the model is ready (:func:`activestream.samplers.warmed_up`) and calls
:meth:`end_warmup`.

With ``sampler: auto`` a round carries one ranked list per arm (each probability sampler and
random) and each lease asks a judge (:class:`activestream.samplers.auto.ErrorJudge`) which
arm fills its exploited slots. The queue remembers every arm's score and the model's class for
each random slot it hands out; when the label arrives (:meth:`mark_labeled` with labels) the
item tells how well each arm's scores rank the model's errors.

Before the first round finishes (and right after the queue's actor restarts, when it comes
back empty) ``cold_sample`` fills the random list from the pool itself: an untrained model's
ranking is noise anyway, so random items are the right first questions, and nobody opening the
page waits for a scoring pass. They are marked explored and carry model version -1 (unscored).

A lease never comes back empty while the pool has unlabeled items: once a round's candidates
and random sample are spent (annotators outpacing the rounds), ``reserve_sample`` draws more
random pool ids, in a background thread, as soon as fewer than ``low_water`` items remain
leasable, and leases fall back on them (explored) until the next round lands.

Plain class, clock injected: tests move time by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activestream.config import SamplingConfig
from activestream.samplers.auto import ErrorJudge
from activestream.samplers.cold_start import warmed_up
from activestream.samplers.selection import select_queries


@dataclass(frozen=True)
class Query:
    """One leased item."""

    id: str
    score: float
    model_version: int
    explored: bool


@dataclass(frozen=True)
class RoundUpdate:
    """A finished scoring round, as the queue takes it: one typed object across actors.

    Arrays travel as arrays (Ray serializes numpy without copying element by element); the
    queue turns ids into its own lookup structures once, on arrival.

    Attributes:
        ranked_ids: (K,) candidate ids, best first.
        scores: (K,) their sampler scores.
        versions: (K,) the model version that scored each.
        random_ids: (R,) a uniform sample of the pool, in random order (exploration, cold
            start).
        round_version: The oldest version the round's scores came from.
        embeddings: (K, D) embeddings of the candidates, for batch samplers; None otherwise.
        pool_rows: Items in the pool the round saw (reported in stats).
        bad_rows: Of those, images that did not decode.
        arm_ranked: ``auto`` only: one ranked id array per arm.
        preds: ``auto`` only: the round model's class for the ids in ``slot_scores``.
        slot_scores: ``auto`` only: every arm's score (A,) for the ids of ``random_ids``; the
            labels of random slots judge the arms (:class:`~activestream.samplers.auto.ErrorJudge`).
    """

    ranked_ids: Sequence[str] | np.ndarray
    scores: Sequence[float] | np.ndarray
    versions: Sequence[int] | np.ndarray
    random_ids: Sequence[str] | np.ndarray
    round_version: int
    embeddings: Sequence[Sequence[float]] | np.ndarray | None = None
    pool_rows: int | None = None
    bad_rows: int | None = None
    arm_ranked: Sequence[Sequence[str] | np.ndarray] | None = None
    preds: Mapping[str, int] | None = None
    slot_scores: Mapping[str, Sequence[float] | np.ndarray] | None = None


class QueryQueue:
    """Leases over the candidates of the last finished scoring round.

    Args:
        explore_p: Probability that a slot exploits (takes the next ranked candidate).
        lease_seconds: How long a leased item stays reserved for its annotator.
        seed: Seeds the exploration draws.
        clock: Seconds, monotonic; injected for tests.
        batch: The sampler's batch selection ``(scores, embeddings, k, rng) -> indices``;
            None ranks by score alone.
        pool_factor: A diverse batch of n is chosen among the best ``pool_factor * n``
            available candidates (at least 64).
        warmup: Start in the cold-start phase: every slot explores until :meth:`end_warmup`.
        arms: Arm names for ``sampler: auto``; None ranks by the one sampler's scores.
        cold_sample: Returns random pool ids to hand out until the first round lands; called
            once, in a background thread, so a (re)started queue answers at once.
        reserve_sample: ``draw -> random pool ids`` (draw = 1, 2, ...), called in a background
            thread whenever fewer than ``low_water`` items remain leasable; leases fall back on
            them once the round's lists run out.
        low_water: Leasable items below which the reserve is refilled.
    """

    def __init__(
        self,
        *,
        explore_p: float = 0.9,
        lease_seconds: float = 300.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        batch: Callable[..., np.ndarray] | None = None,
        pool_factor: int = 8,
        warmup: bool = False,
        arms: Sequence[str] | None = None,
        cold_sample: Callable[[], Sequence[str]] | None = None,
        reserve_sample: Callable[[int], Sequence[str]] | None = None,
        low_water: int = 64,
    ) -> None:
        self.explore_p = explore_p
        self.lease_seconds = lease_seconds
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._batch = batch
        self.pool_factor = pool_factor
        self.warming = warmup
        self.judge = None if arms is None else ErrorJudge(arms, np.random.default_rng([seed, 1]))
        self._arm_ranked: list[list[str]] = []
        self._pred: dict[str, int] = {}
        self._slot_scores: dict[str, np.ndarray] = {}  # random id -> (A,) every arm's score
        self._judged: dict[str, tuple[np.ndarray, int]] = {}  # leased random slot -> scores, pred
        self._embedding: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._ranked: list[str] = []
        self._random: list[str] = []
        self._score: dict[str, tuple[float, int]] = {}
        self._labeled: set[str] = set()
        self._leases: dict[str, float] = {}
        self.round_version = -1
        self.rounds = 0
        self.pool_rows = 0  # items in the pool when the last round finished
        self.bad_rows = 0  # of those, images that did not decode
        self.leased_total = 0
        self.explored_total = 0
        self.cold_error: str | None = None
        self._reserve_sample = reserve_sample
        self.low_water = low_water
        self._reserve: list[str] = []
        self._reserve_draws = 0
        self._refilling = False
        self.reserve_leased = 0  # leases the reserve answered (the round's lists were spent)
        self.empty_leases = 0  # lease calls for n > 0 that found nothing
        self._cold = threading.Event()
        if cold_sample is None:
            self._cold.set()
        else:
            threading.Thread(
                target=self._fill_cold, args=(cold_sample,), name="cold-sample", daemon=True
            ).start()

    def _fill_cold(self, cold_sample: Callable[[], Sequence[str]]) -> None:
        try:
            ids = [str(i) for i in cold_sample()]
        except Exception as err:  # noqa: BLE001 - the first round fills the queue anyway
            self.cold_error = f"{type(err).__name__}: {err}"
            ids = []
        with self._lock:
            if self.rounds == 0:  # a round that landed first knows better
                self._random = ids
        self._cold.set()

    def wait_cold(self, timeout: float | None = None) -> bool:
        """Wait until the cold-start sample is in (tests and startup); True when it is."""
        return self._cold.wait(timeout)

    def update_round(
        self,
        ranked_ids: Sequence[str],
        scores: Sequence[float],
        versions: Sequence[int],
        random_ids: Sequence[str],
        round_version: int,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
        **rest: Any,
    ) -> None:
        """:meth:`take_round` from loose arguments (tests, in-process callers)."""
        self.take_round(
            RoundUpdate(ranked_ids, scores, versions, random_ids, round_version, embeddings, **rest)
        )

    def take_round(self, update: RoundUpdate) -> None:
        """Replace the candidates with a finished round's (ranked best first).

        ``pool_rows`` and ``bad_rows`` (images that did not decode) are what the round saw;
        they are only reported, in :meth:`stats`. ``arm_ranked`` (one ranked id list per arm),
        ``slot_scores`` and ``preds`` (every arm's score and the round model's class for the
        random ids) feed ``auto``'s judge.
        """
        ranked = [str(i) for i in update.ranked_ids]
        scores = np.asarray(update.scores, dtype=np.float64).tolist()
        versions = np.asarray(update.versions, dtype=np.int64).tolist()
        embedding = (
            {}
            if update.embeddings is None
            else {
                i: np.asarray(e, dtype=np.float32)
                for i, e in zip(ranked, update.embeddings, strict=True)
            }
        )
        with self._lock:
            self._arm_ranked = [[str(i) for i in r] for r in update.arm_ranked or []]
            self._pred = {str(i): int(c) for i, c in (update.preds or {}).items()}
            self._slot_scores = {
                str(i): np.asarray(v, dtype=np.float64)
                for i, v in (update.slot_scores or {}).items()
            }
            if update.pool_rows is not None:
                self.pool_rows = int(update.pool_rows)
            if update.bad_rows is not None:
                self.bad_rows = int(update.bad_rows)
            self._embedding = embedding
            self._ranked = ranked
            self._random = [str(i) for i in update.random_ids]
            self._score = {i: (s, v) for i, s, v in zip(ranked, scores, versions, strict=True)}
            self.round_version = int(update.round_version)
            self.rounds += 1

    def _expire(self, now: float) -> None:
        for item in [i for i, until in self._leases.items() if until <= now]:
            del self._leases[item]
            self._judged.pop(item, None)  # unanswered: it judges nothing

    def lease(self, n: int) -> list[Query]:
        """Lease up to ``n`` items that are neither labeled nor leased."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            now = self._clock()
            self._expire(now)
            blocked = self._labeled | self._leases.keys()
            ranked = self._ranked
            if self.warming:
                pass  # every slot explores: the model's ranking means nothing yet
            elif self.judge is not None and self._arm_ranked:
                ranked = self._arm_ranked[self.judge.choose()]
            else:
                ranked = self._diverse_first(n, blocked)
            picks = select_queries(
                ranked,
                self._random,
                k=n,
                p=0.0 if self.warming else self.explore_p,
                rng=self._rng,
                exclude=blocked,
            )
            if len(picks) < n:  # the round's lists are spent: random pool items instead
                reserve = select_queries(
                    (), self._reserve, k=n - len(picks), p=0.0, rng=self._rng,
                    exclude=blocked | {p.id for p in picks},
                )  # fmt: skip
                self.reserve_leased += len(reserve)
                picks += reserve
            self._refill_if_low(blocked | {p.id for p in picks})
            out = []
            if self.judge is not None and not self.warming:
                for pick in picks:  # uniform draws: an unbiased test of the round's model
                    if pick.explored and pick.id in self._slot_scores and pick.id in self._pred:
                        self._judged[pick.id] = (self._slot_scores[pick.id], self._pred[pick.id])
            for pick in picks:
                self._leases[pick.id] = now + self.lease_seconds
                score, version = self._score.get(pick.id, (0.0, self.round_version))
                out.append(Query(pick.id, score, version, pick.explored))
            self.leased_total += len(out)
            self.explored_total += sum(q.explored for q in out)
            self.empty_leases += n > 0 and not out
            return out

    def _refill_if_low(self, blocked: set[str] | Any) -> None:
        """Start drawing more random pool ids when few leasable items remain (lock held)."""
        if self._reserve_sample is None or self._refilling:
            return
        left = 0
        for items in (self._ranked, self._random, self._reserve):
            left += sum(1 for i in items if i not in blocked)
            if left >= self.low_water:
                return
        self._refilling = True
        self._reserve_draws += 1
        threading.Thread(
            target=self._refill, args=(self._reserve_draws,), name="reserve", daemon=True
        ).start()

    def _refill(self, draw: int) -> None:
        try:
            ids = [str(i) for i in self._reserve_sample(draw)]  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - the next round fills the queue anyway
            ids = []
        with self._lock:
            kept = [i for i in self._reserve if i not in self._labeled]
            seen = set(kept)
            self._reserve = kept + [i for i in ids if i not in seen and i not in self._labeled]
            self._refilling = False

    def wait_refilled(self, timeout: float = 10.0) -> bool:
        """Wait until no reserve draw is running (tests); True when none is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._refilling:
                    return True
            time.sleep(0.01)
        return False

    def _diverse_first(self, n: int, blocked: set[str] | Any) -> list[str]:
        """The ranked ids, with a diverse batch of the best available ones moved to the front."""
        if self._batch is None or not self._embedding or n < 2:
            return self._ranked
        window = max(self.pool_factor * n, 64)
        available = [i for i in self._ranked if i not in blocked and i in self._embedding]
        available = available[:window]
        if len(available) <= n:
            return self._ranked
        scores = np.array([self._score[i][0] for i in available])
        embeddings = np.stack([self._embedding[i] for i in available])
        chosen = [available[j] for j in self._batch(scores, embeddings, n, self._rng)]
        first = set(chosen)
        return chosen + [i for i in self._ranked if i not in first]

    def end_warmup(self) -> None:
        """Hand query choice to the model's scores (the cold start is over, for good)."""
        with self._lock:
            self.warming = False

    def mark_labeled(self, ids: Iterable[str], labels: Iterable[int] | None = None) -> None:
        """Never hand these ids out again; with ``labels``, random slots judge ``auto``'s arms."""
        ids = list(ids)
        with self._lock:
            for item in ids:
                self._labeled.add(item)
                self._leases.pop(item, None)
            if labels is None or self.judge is None:
                return
            for item, label in zip(ids, labels, strict=True):
                judged = self._judged.pop(item, None)
                if judged is not None:
                    scores, pred = judged
                    self.judge.record(scores, pred != int(label))

    def arms(self) -> dict[str, dict[str, float]] | None:
        """``auto``'s judge per arm (chance of the next batch, pulls, error AUC); else None."""
        with self._lock:
            return None if self.judge is None else self.judge.summary()

    def release(self, ids: Iterable[str]) -> int:
        """Give leases back early (an annotator skipped the items); returns how many were held.

        Ids not leased now (expired, labeled, never leased, released already) are ignored, so
        a client may retry a release safely.
        """
        released = 0
        with self._lock:
            self._expire(self._clock())
            for item in ids:
                released += self._leases.pop(item, None) is not None
                self._judged.pop(item, None)
        return released

    def taken(self, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` labeled or leased now (asked, so they cover their region)."""
        with self._lock:
            self._expire(self._clock())
            return [i for i in ids if i in self._labeled or i in self._leases]

    def depth(self) -> int:
        """Ranked candidates that could still be leased now."""
        with self._lock:
            self._expire(self._clock())
            blocked = self._labeled | self._leases.keys()
            return sum(1 for i in self._ranked if i not in blocked)

    def round_count(self) -> int:
        """Rounds received since this queue started: 0 after a restart asks for one at once."""
        return self.rounds

    def stats(self) -> dict[str, int]:
        """Counters for metrics and tests."""
        depth = self.depth()
        with self._lock:
            return {
                "depth": depth,
                "leased": len(self._leases),
                "labeled": len(self._labeled),
                "round_version": self.round_version,
                "rounds": self.rounds,
                "leased_total": self.leased_total,
                "explored_total": self.explored_total,
                "reserve_leased": self.reserve_leased,
                "empty_leases": self.empty_leases,
                "pool_rows": self.pool_rows,
                "bad_rows": self.bad_rows,
                "warming": int(self.warming),
            }


def cold_start_over(sampling: SamplingConfig, prequential: tuple[int, list[bool]]) -> bool:
    """Whether the trainer's prequential record (labels, recent hits) ends the cold start."""
    labels, hits = prequential
    return warmed_up(
        hits,
        labels=labels,
        min_labels=sampling.warmup_labels,
        accuracy=sampling.warmup_accuracy,
        max_labels=sampling.warmup_max_labels,
    )
