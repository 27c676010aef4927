"""Weight broadcast: time from publishing a version to every scorer holding it.

Every trained version must reach every scorer before it can steer the next queries, so the
broadcast sits on the label-to-query path. The goal is under 100 ms for resnet18 (about 45 MB
of float32) to 8 scorer actors on one machine.

Three methods run side by side on the same actors:

* ``board``, the real mechanism: one ``ray.put`` of the numpy state dict and a
  :meth:`~activestream.actors.weights.WeightsBoard.publish`; each actor waits in the board's
  long poll (:meth:`~activestream.actors.weights.WeightsBoard.listen`) the way
  :class:`~activestream.actors.scorer.Scorer`'s listener thread does, gets the reference in the
  answer, then one ``ray.get`` and loads the weights into its module. The time is the latest
  actor's "holding" time minus the time the put began.
* ``ref``, the strongest plain-Ray baseline (the ratio's): one ``ray.put`` of the state dict and
  the reference passed to every actor's call, so each actor reads the one stored copy. This
  pushes to actors the driver can call; the scorers live inside a Ray Data pool the loop cannot
  address, which is why the real mechanism pulls from a board instead. The time is until all
  calls return.
* ``by_value``, the anti-pattern (labelled, not a ratio): the driver passes the state dict to
  each actor in its own call, so Ray serializes and stores it once per actor.

Each point is the median over several repeats, after two warm-up rounds per model. Run it with::

    python -m activestream.benchmarks.broadcast --out results/bench
    python -m activestream.benchmarks.broadcast --quick --out /tmp/bcast
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from activestream.actors.weights import (
    LISTEN_SECONDS,
    WeightsBoard,
    WeightsVersion,
    load_numpy_state,
    state_to_numpy,
)
from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.config import Config
from activestream.models import build_model
from activestream.pipelines.runtime import init_ray

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/broadcast.py",
    "actors/weights.py",
    "models/",
)

MODELS: tuple[str, ...] = ("digits_cnn", "resnet18")
ACTOR_COUNTS: tuple[int, ...] = (1, 2, 4, 8)
SHAPE: tuple[int, int, int] = (3, 32, 32)
NUM_CLASSES = 10
GOAL_MS = 100.0
PARKED_S = 0.05  # a listener's next long poll reaches the board well within this
WARMUP_ROUNDS = 2  # per model, with all actors: fresh object store pages cost ~4x a reused put


class _Holder:
    """A stand-in scorer: one model, weights from the board (long poll) or handed over directly."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self._model: Any = None
        self.version = -1
        self._held = threading.Event()
        self._held_at = 0.0
        self._target = 0
        self._listener: threading.Thread | None = None

    def build(self, arch: str) -> int:
        """Build ``arch`` as the module to load into; returns its parameter count."""
        self._model = build_model(arch, shape=SHAPE, num_classes=NUM_CLASSES, seed=0).eval()
        self.version = -1
        return sum(p.numel() for p in self._model.parameters())

    def arm(self, board: Any, version: int) -> bool:
        """Wait for ``version`` from ``board``: the listener thread loads it when it arrives.

        The listener starts once and stays parked in the board's long poll between versions,
        as a scorer's does: a thread started per version would still be on its way to the
        board, competing for the cores, while the version is put and published.
        """
        self._target = version
        self._held.clear()
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, args=(board,), daemon=True)
            self._listener.start()
        return True

    def _listen(self, board: Any) -> None:
        seen = -1
        while True:  # the scorer's listener: long poll, then the weights
            latest = ray.get(board.listen.remote(seen, LISTEN_SECONDS))
            if latest is None:
                continue
            seen = latest.version
            if latest.version >= self._target:
                load_numpy_state(self._model, ray.get(latest.refs[0]))
                self.version = latest.version
                self._held_at = time.time()
                self._held.set()

    def held_at(self, timeout: float = 60.0) -> float:
        """``time.time()`` at which the armed version was loaded (blocks until then)."""
        if not self._held.wait(timeout):
            raise TimeoutError("the published version never arrived")
        return self._held_at

    def set_weights(self, state: dict[str, np.ndarray], version: int) -> int:
        """Load weights passed in the call (by value, or a reference Ray resolves)."""
        load_numpy_state(self._model, state)
        self.version = version
        return version


def _board_once(board: Any, actors: list[Any], state: dict[str, np.ndarray], version: int) -> float:
    """One publish through the board; milliseconds until the last actor holds it."""
    ray.get([a.arm.remote(board, version) for a in actors])
    time.sleep(PARKED_S)  # every listener parked in the board, as scorers wait between versions
    began = time.time()
    ref = ray.put(state)
    ray.get(board.publish.remote(WeightsVersion(version, 0, refs=[ref], published_at=began)))
    held = ray.get([a.held_at.remote() for a in actors])
    return (max(held) - began) * 1000.0


def _by_value_once(actors: list[Any], state: dict[str, np.ndarray], version: int) -> float:
    """One state dict passed to each actor by value; milliseconds until all have loaded it."""
    began = time.perf_counter()
    ray.get([a.set_weights.remote(state, version) for a in actors])
    return (time.perf_counter() - began) * 1000.0


def _ref_once(actors: list[Any], state: dict[str, np.ndarray], version: int) -> float:
    """One ``ray.put``, its reference passed to every actor; milliseconds until all loaded it."""
    began = time.perf_counter()
    ref = ray.put(state)
    ray.get([a.set_weights.remote(ref, version) for a in actors])
    return (time.perf_counter() - began) * 1000.0


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        n = [r["actors"] for r in mine]
        ax.plot(n, [r["board_ms"] for r in mine], "o-", label=f"{model} board")
        ax.plot(n, [r["ref_ms"] for r in mine], "s--", label=f"{model} ray.put + ref")
        ax.plot(n, [r["by_value_ms"] for r in mine], "x:", label=f"{model} by value")
    ax.axhline(GOAL_MS, color="grey", lw=0.8, ls=":", label=f"goal {GOAL_MS:.0f} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(ACTOR_COUNTS), [str(n) for n in ACTOR_COUNTS])
    ax.set_xlabel("scorer actors")
    ax.set_ylabel("broadcast ms (median)")
    ax.set_title("Publish to all actors holding the new weights")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """Measure both methods for every model and actor count; writes ``out/broadcast.png``.

    Args:
        size: Repeats: 11 full, 5 quick; tiny repeats once with up to 2 actors.
        out: Folder for the plot; created when missing.

    Returns:
        One row per (model, actors) with median ``board_ms``, ``ref_ms`` and ``by_value_ms``;
        the ratio is ``ref_ms / board_ms`` (above 1: the board is faster).
    """
    if not ray.is_initialized():
        init_ray(Config().ray)
    repeats = pick(size, tiny=1, quick=5, full=11)
    counts = pick(size, tiny=ACTOR_COUNTS[:2], quick=ACTOR_COUNTS, full=ACTOR_COUNTS)
    holder = ray.remote(_Holder).options(num_cpus=0.01, max_concurrency=2)
    actors = [holder.remote() for _ in range(max(counts))]
    board = ray.remote(WeightsBoard).options(num_cpus=0, max_concurrency=64).remote()
    version = 0
    rows: list[dict[str, Any]] = []
    try:
        for model in MODELS:
            ray.get([a.build.remote(model) for a in actors])
            state = state_to_numpy(build_model(model, shape=SHAPE, num_classes=NUM_CLASSES))
            state_mb = sum(v.nbytes for v in state.values()) / 1e6
            for _ in range(WARMUP_ROUNDS):  # touch the object store memory both paths reuse
                version += 3
                _board_once(board, actors, state, version - 2)
                _ref_once(actors, state, version - 1)
                _by_value_once(actors, state, version)
            for n in counts:
                some = actors[:n]
                times: dict[str, list[float]] = {"board": [], "ref": [], "by_value": []}
                for _ in range(repeats):  # interleaved, so background load hits all alike
                    version += 3
                    times["board"].append(_board_once(board, some, state, version - 2))
                    times["ref"].append(_ref_once(some, state, version - 1))
                    times["by_value"].append(_by_value_once(some, state, version))
                med = {k: statistics.median(v) for k, v in times.items()}
                rows.append(
                    {
                        "name": f"broadcast_{model}_{n}",
                        "model": model,
                        "actors": n,
                        "repeats": repeats,
                        "board_ms": round(med["board"], 2),
                        "ref_ms": round(med["ref"], 2),
                        "by_value_ms": round(med["by_value"], 2),
                        "board_max_ms": round(max(times["board"]), 2),
                        "state_mb": round(state_mb, 2),
                        "ratio": round(med["ref"] / med["board"], 3),
                    }
                )
    finally:
        for a in [*actors, board]:
            ray.kill(a)
    out.mkdir(parents=True, exist_ok=True)
    _plot(rows, out / "broadcast.png")
    return rows


def main() -> None:  # noqa: D103
    bench_main(run, "broadcast", __doc__)


if __name__ == "__main__":
    main()
