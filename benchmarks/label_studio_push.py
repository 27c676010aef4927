"""Label Studio at scale: what a new model version costs to bring a project's task order up to date.

A real Label Studio 1.23.2 server (its own venv, from ``scripts/label_studio.sh``) on PostgreSQL,
the database production runs on (a throwaway cluster; see ``DATABASE``), holds a project of 200
tasks and one of 20,000, each task naming an item of a synthetic 20,000-row pool. The bridge runs
in this process with a real trainer and label ledger. Each of several versions (5 for 200 tasks,
2 for 20,000: see ``VERSIONS``) is trained on 16 new labels of the project's tasks, then written
to Label Studio two ways, on the same server, for the same version:

* **the bridge**: only the unlabeled tasks whose score moved by more than
  ``label_studio.score_tolerance`` and the front of the ranking (``exact_top``), rewritten in
  place, unless a full import would take fewer requests;
* **every score again** (the baseline, what the bridge did before): every task's prediction
  imported in batches of ``label_studio.batch`` (``BATCH``: 100 for 200 tasks, 1,000 for
  20,000) and the project switched to them.

Both sides predict every task (the bridge must, to know what moved), so the difference is the
writing. After each bridge push the project's predictions are read back: Label Studio's first
``exact_top`` tasks must be the model's, and no score may lag the model's by more than the
tolerance. The first push of a project (every score) is timed apart, and so is the bridge's
first listing of the project's tasks before it. Label Studio deletes a replaced prediction set
one prediction at a time: minutes for 20,000. The bridge leaves that to its housekeeping
thread (nobody waits for it); the benchmark waits for it outside the timings, so each timing
starts on a quiet server (``settle_s``: the longest such wait). Label Studio runs with
its memory-efficient prediction import on (``LABEL_STUDIO_ENV``). ``ratio``: the baseline's
seconds over the bridge's, per version. ``http_5xx``: Label Studio's 5xx answers during that
project, from its log.

    python -m activestream.benchmarks.label_studio_push --quick --out results/bench
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from activestream.benchmarks.entry import Size, bench_main, pick

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/label_studio_push.py",
    "actors/label_studio.py",
    "actors/trainer.py",
    "actors/ledger.py",
    "actors/items.py",
    "benchmarks/label_studio_client.py",
)

# Both sizes run on PostgreSQL: Label Studio 1.23.2 on SQLite (the tests' server) answers 500
# to listing a project's 20,000 predictions and to deleting a set of 20,000, so 20,000 tasks
# cannot be measured there. On PostgreSQL both work (the listing ~1 s, the deletion ~3 min:
# one pre_delete signal, three queries, per prediction).
DATABASE = "postgresql"
SIZES = (200, 20_000)
TINY_SIZES = (50,)
VERSIONS = {50: 2, 200: 5, 20_000: 2}  # a version at 20,000 takes ~5 min, most of it deletions
# Predictions per import request: the config's default at 200; the most it allows at 20,000,
# the fewest requests (each costs Label Studio a fixed part plus its share of the batch).
BATCH = {50: 20, 200: 100, 20_000: 1_000}
# Label Studio's own prediction import that counts predictions only on the tasks it wrote:
# shipped off in 1.23.2, whose legacy import recounts every task of the project per request
# (1.9 s for 100 predictions into 20,000 bare tasks, 18 s once they hold a set; over the
# bridge's 30 s request timeout on a busy server), so a full write of 20,000 took minutes.
LABEL_STUDIO_ENV = {
    "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true"
}
LABELS_PER_VERSION = 16
SETTLE_TIMEOUT = 1_200.0  # seconds to wait for Label Studio to finish a deletion
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="label" toName="image" '
    'choice="single">' + "".join(f'<Choice value="{i}"/>' for i in range(10)) + "</Choices></View>"
)


def every_score(bridge: Any, project: Any, version: int) -> int:
    """The baseline: every task's prediction imported again, the project switched; requests."""
    from activestream.actors.label_studio import VERSION_PREFIX

    task_ids = list(project.tasks)
    outputs, scores = bridge.task.assess(
        bridge.service, bridge.items, [project.tasks[t] for t in task_ids]
    )
    name = f"{VERSION_PREFIX}{version}-all"
    rows = [
        {"task": t, **bridge._prediction(project.schema, out, name, score)}
        for t, out, score in zip(task_ids, outputs, scores.tolist(), strict=True)
    ]
    size = bridge.config.batch
    for i in range(0, len(rows), size):
        bridge._api(
            "POST", f"api/projects/{project.id}/import/predictions", json=rows[i : i + size]
        )
    bridge._api("PATCH", f"api/projects/{project.id}", json={"model_version": name})
    return -(-len(rows) // size) + 1


def agreement(ls: Any, bridge: Any, pid: int) -> tuple[bool, float]:
    """(Label Studio's first exact_top unlabeled tasks are the model's, largest score lag)."""
    project = bridge._projects[pid]
    held = {
        p["task"]: p["score"]
        for p in ls.predictions(pid)
        if p["model_version"] == project.generation
    }
    labeled = bridge.service.labels_of(list(project.tasks.values()))
    open_ = [t for t in project.tasks if project.tasks[t] not in labeled]
    _, scores = bridge.task.assess(bridge.service, bridge.items, [project.tasks[t] for t in open_])
    model = np.round(scores, 6)
    now = np.array([held[t] for t in open_])
    k = min(bridge.config.exact_top, len(open_))
    front = bool(np.sort(now)[:k].tolist() == np.sort(model)[:k].tolist())
    return front, float(np.max(np.abs(now - model)))


def settle(ls: Any, pid: int, keep: str | None) -> float:
    """Wait until the project holds no prediction set but ``keep``; the seconds it took.

    A set's deletion is one transaction that Label Studio finishes after a client gave up on
    it; until then it holds the tasks' rows, and any write to them waits behind it.

    Raises:
        RuntimeError: If other sets are still there after ``SETTLE_TIMEOUT`` seconds.
    """
    began = time.perf_counter()
    while True:
        held = ls.request("GET", f"/api/projects/{pid}/model-versions/", timeout=120) or {}
        others = {v: n for v, n in held.items() if v != keep and n}
        if not others:
            return time.perf_counter() - began
        if time.perf_counter() - began > SETTLE_TIMEOUT:
            raise RuntimeError(f"Label Studio still holds {others} after {SETTLE_TIMEOUT:.0f} s")
        time.sleep(2.0)


def http_5xx(log: Path, since: int) -> list[str]:
    """Label Studio's 5xx answers logged after byte ``since`` (each line is logged twice)."""
    with open(log, "rb") as f:
        f.seek(since)
        lines = f.read().decode(errors="replace").splitlines()
    return list(dict.fromkeys(line for line in lines if re.search(r'HTTP/1\.1" 5\d\d ', line)))


def run(size: Size, out: Path, server: Any = None) -> list[dict[str, Any]]:
    """Both sizes on one Label Studio server; one row per size.

    Args:
        size: ``tiny`` pushes 50 tasks; ``quick`` and ``full`` both measure 200 and 20,000.
        out: Folder for the pool.
        server: A running Label Studio (``running_label_studio``); a new one by default.
    """
    from activestream.actors.items import ItemStore
    from activestream.actors.label_studio import VERSION_PREFIX, LabelStudioBridge, LocalService
    from activestream.actors.ledger import LabelLedger
    from activestream.actors.trainer import Trainer
    from activestream.benchmarks.label_studio_client import LabelStudioError, running_label_studio
    from activestream.config import LabelStudioConfig, ModelConfig, TrainingConfig
    from activestream.sources.shards import ground_truth, open_shards
    from activestream.sources.synthetic import make_synthetic_shards

    sizes = pick(size, tiny=TINY_SIZES, quick=SIZES, full=SIZES)
    home = out / "data" / f"ls-pool-{max(sizes)}"
    if (home / "pool").exists():
        pool = open_shards(str(home / "pool"))
    else:
        pool = make_synthetic_shards(str(home), max(sizes), rows_per_shard=5_000, progress=False)
    truth = ground_truth(pool)
    ids = list(truth)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ls-push-"))
        if server is None:
            server = stack.enter_context(
                running_label_studio(
                    Path(tmp) / "label-studio", database=DATABASE, extra_env=LABEL_STUDIO_ENV
                )
            )
        ls = server.client()
        for n in sizes:
            log_from = server.log.stat().st_size
            trainer = Trainer(
                training=TrainingConfig(buffer_size=LABELS_PER_VERSION),
                model=ModelConfig(),
                items=ItemStore(pool),
            )
            ledger = LabelLedger(str(Path(tmp) / f"labels-{n}"), items=ItemStore(pool))
            ledger.start()
            # the whole-project comparison runs once, at the start, not inside a timing
            config = LabelStudioConfig(
                url=server.url, api_key=server.token, reconcile_seconds=1e9, batch=BATCH[n]
            )
            bridge = LabelStudioBridge(
                items=ItemStore(pool), service=LocalService(ledger, trainer), config=config
            )
            pid = ls.create_project(f"push {n}", CONFIG)["id"]
            tasks = [{"image": f"/x/{i}.png", "id": i} for i in ids[:n]]
            for i in range(0, n, 5_000):
                ls.import_tasks(pid, tasks[i : i + 5_000])
            bridge.setup({"project": pid, "schema": CONFIG})
            began = time.perf_counter()
            bridge.step()  # the first reconcile lists the tasks
            listing = time.perf_counter() - began
            began = time.perf_counter()
            bridge.step()  # the first push
            first = time.perf_counter() - began
            project = bridge._projects[pid]
            assert bridge.status()["pushed_version"] == 0, bridge.status()["errors"]
            rng = np.random.default_rng(n)
            order = rng.permutation(n)
            mine: list[float] = []
            mine_requests: list[int] = []
            base: list[float] = []
            base_requests: list[int] = []
            fronts, lags, settles = [], [], [0.0]
            for v in range(VERSIONS[n]):
                chosen = order[v * LABELS_PER_VERSION : (v + 1) * LABELS_PER_VERSION]
                labels = [{"id": ids[i], "label": truth[ids[i]]} for i in chosen]
                ledger.add(labels)
                trainer.add_labels(labels)
                trainer.partial_fit()
                assert trainer.version == v + 1
                began = time.perf_counter()
                bridge.step()
                mine.append(time.perf_counter() - began)
                status = bridge.status()
                assert status["pushed_version"] == v + 1, status["errors"]
                errors = status["errors"]
                mine_requests.append(int(status["push_requests"]))
                # a full write's deletion of the old set may still run in Label Studio
                settles.append(settle(ls, pid, project.generation))
                front, lag = agreement(ls, bridge, pid)
                fronts.append(front)
                lags.append(lag)
                began = time.perf_counter()
                base_requests.append(every_score(bridge, project, v + 1))
                base.append(time.perf_counter() - began)
                # the bridge's own set stays the one the project ranks by; the baseline's
                # set goes before the next version (Label Studio would keep every one)
                ls.patch_project(pid, model_version=project.generation)
                if v + 1 == VERSIONS[n]:
                    continue  # nothing is timed after the last: no need to wait for it
                with contextlib.suppress(requests.RequestException, LabelStudioError):
                    ls.request(  # a timeout is fine: settle() waits for the deletion
                        "DELETE",
                        f"/api/projects/{pid}/model-versions/",
                        json={"model_version": f"{VERSION_PREFIX}{v + 1}-all"},
                    )
                settles.append(settle(ls, pid, project.generation))
            ratio = float(np.median(base) / np.median(mine))
            failures = http_5xx(server.log, log_from)
            rows.append(
                {
                    "name": f"label_studio_push_{n}",
                    "tasks": n,
                    "database": server.database,
                    "label_studio_flags": sorted(LABEL_STUDIO_ENV),
                    "versions": VERSIONS[n],
                    "labels_per_version": LABELS_PER_VERSION,
                    "batch": config.batch,
                    "exact_top": config.exact_top,
                    "score_tolerance": config.score_tolerance,
                    "first_listing_s": round(listing, 2),
                    "first_push_s": round(first, 2),
                    "push_s": [round(x, 3) for x in mine],
                    "push_s_median": round(float(np.median(mine)), 3),
                    "push_requests": mine_requests,
                    "every_score_s": [round(x, 3) for x in base],
                    "every_score_s_median": round(float(np.median(base)), 3),
                    "every_score_requests": base_requests,
                    "front_exact_every_version": all(fronts),
                    "max_score_lag": round(max(lags), 4),
                    "settle_s": round(max(settles), 1),
                    "http_5xx": len(failures),
                    "notes": errors[-2:],
                    "ratio": round(ratio, 2),
                }
            )
            for line in failures[-5:]:
                print(f"  Label Studio answered: {line}", flush=True)
            print(
                f"  Label Studio {n:>6} tasks ({server.database}): push p50 "
                f"{np.median(mine):.2f} s "
                f"({mine_requests} requests) vs every score {np.median(base):.2f} s "
                f"({base_requests} requests); first push {first:.1f} s; front exact "
                f"{all(fronts)}, largest lag {max(lags):.3f}",
                flush=True,
            )
    return rows


def main() -> None:  # noqa: D103
    bench_main(run, "label_studio_push", __doc__)


if __name__ == "__main__":
    main()
