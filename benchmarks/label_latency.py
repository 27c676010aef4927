"""Label to model: from ``POST /labels`` sent to the new version visible at ``/model``.

What an annotator feels: how long until the labels just sent have changed the model. Measured
through the real app (Serve, ledger, trainer actor) on loopback, once per buffer size: each
sample posts exactly one full buffer of fresh labels and polls ``GET /model`` every 20 ms until
the version moves (polling faster would itself load the 2 cores the app runs on). The aim for
the digits CNN is p50 < 250 ms at buffer 16 on 2 cores.

Each row splits the time, from the trainer's own timings of each update (``model_info()`` of
the trainer actor; ``GET /model`` does not show them), so the reader sees what is training and
what is plumbing:

* ``train_p50_s``: the update's prequential pass and ``training.steps_per_update`` optimizer
  steps, wall clock; ``train_cpu_p50_s`` is the CPU the training thread spent on them, so the
  difference is time spent waiting for a core (on 2 cores, mostly for scoring rounds).
* ``update_p50_s``: training plus publishing the weights (``ray.put`` and the weights board).
  ``/model`` shows a version as soon as its steps end, so publishing is not in the latency.
* ``plumbing_p50_s``: the rest of each sample (HTTP, ``/model``, the 20 ms polling), taken
  sample by sample. The ledger hands labels to the trainer before it answers, so training
  often starts before the answer reaches the client and this part is small.

    python -m activestream.benchmarks.label_latency --quick --out results/bench
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import SERVICE
from activestream.config import Config
from activestream.pipelines.runtime import free_port, init_ray
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/label_latency.py",
    *SERVICE,
)


def _trainer_handle() -> Any:
    """The app's trainer actor, for the trainer-side timings ``/model`` does not show."""
    import ray

    from activestream.pipelines.loop import LOOP_ACTOR

    return ray.get(ray.get_actor(LOOP_ACTOR).handles.remote())["trainer"]


def _update_info(trainer: Any, version: int, timeout: float = 10.0) -> dict[str, Any]:
    """The trainer's timings of the update that made ``version`` (empty if it reports none).

    ``/model`` shows a version as soon as its training steps end, a moment before it is
    published: wait (outside the measured time) until the trainer has recorded the update.
    """
    import ray

    deadline = time.monotonic() + timeout
    while True:
        info = ray.get(trainer.model_info.remote())
        if "last_update_version" not in info:
            return {}
        if info["last_update_version"] >= version or time.monotonic() > deadline:
            return info
        time.sleep(0.01)


def _sample(
    base: str, labels: list[dict[str, Any]], trainer: Any, timeout: float = 60.0
) -> dict[str, float | None]:
    before = requests.get(f"{base}/model", timeout=10).json()["version"]
    sent = time.perf_counter()  # the annotator's clock starts when the label leaves
    response = requests.post(f"{base}/labels", json={"labels": labels}, timeout=30)
    response.raise_for_status()
    deadline = time.perf_counter() + timeout
    while (version := requests.get(f"{base}/model", timeout=10).json()["version"]) <= before:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no new version {timeout:.0f} s after a full buffer")
        time.sleep(0.02)
    seconds = time.perf_counter() - sent
    info = _update_info(trainer, version)
    return {
        "seconds": seconds,
        "train_s": info.get("last_train_seconds"),
        "train_cpu_s": info.get("last_train_cpu_seconds"),
        "update_s": info.get("last_update_seconds"),
    }


def _p50(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(float(np.percentile(known, 50)), 3) if known else None


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """One app per buffer size; p50/p99/max of label-to-version seconds, with its breakdown."""
    from activestream.deploy import serve_app

    samples = pick(size, tiny=2, quick=20, full=50)
    buffers = pick(size, tiny=(16,), quick=(1, 16, 64), full=(1, 16, 64))
    results = []
    for buffer in buffers:
        cfg = Config().with_overrides(
            {
                "training.buffer_size": buffer,
                "durability.dir": tempfile.mkdtemp(prefix="activestream-bench-"),
            }
        )
        init_ray(cfg.ray)
        pool, _ = resolve_dataset(cfg)
        items = list(ground_truth(pool).items())
        np.random.default_rng(buffer).shuffle(items)
        # Each sample labels items never labeled before: the pool bounds the count (full size
        # asks 50 x 64 of the 1,348 digits; an empty batch would be refused with a 422).
        count = min(samples, len(items) // buffer)
        with serve_app.running(cfg, port=free_port()) as base:
            trainer = _trainer_handle()
            measured = []
            for i in range(count):
                chunk = items[i * buffer : (i + 1) * buffer]
                labels = [{"id": k, "label": y} for k, y in chunk]
                measured.append(_sample(base, labels, trainer))
        seconds = [m["seconds"] for m in measured]
        train = [m["train_s"] for m in measured]
        plumbing = [None if m["train_s"] is None else m["seconds"] - m["train_s"] for m in measured]
        p50, p99 = np.percentile(seconds, 50), np.percentile(seconds, 99)
        row = {
            "name": f"label_to_model_buffer_{buffer}",
            "buffer_size": buffer,
            "samples": count,
            "p50_s": round(float(p50), 3),
            "p99_s": round(float(p99), 3),
            "max_s": round(float(max(seconds)), 3),
            "train_p50_s": _p50(train),
            "train_cpu_p50_s": _p50([m["train_cpu_s"] for m in measured]),
            "update_p50_s": _p50([m["update_s"] for m in measured]),
            "plumbing_p50_s": _p50(plumbing),
            "ratio": None,
        }
        print(
            f"  label->model buffer {buffer:>3}: p50 {row['p50_s']:.3f} s, "
            f"p99 {row['p99_s']:.3f} s, max {row['max_s']:.3f} s "
            f"(p50s: train {row['train_p50_s']} of which CPU {row['train_cpu_p50_s']}, "
            f"train+publish {row['update_p50_s']}, plumbing {row['plumbing_p50_s']})",
            flush=True,
        )
        results.append(row)
    return results


def main() -> None:  # noqa: D103
    bench_main(run, "label_latency", __doc__)


if __name__ == "__main__":
    main()
