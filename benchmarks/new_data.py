"""New data and warm scorers: a file landing under a running service, and scorer restarts.

Production pools grow while the service runs, and the seed's loop paid a fresh scorer process
per round. Two questions, asked of ``activestream serve`` as a user starts it (a child process)
on a synthetic pool of 10,000 rows:

* **New file -> first served query.** A Parquet file of 3,000 new items lands under the pool
  (written beside it and renamed in, as a writer of shards would); the clock runs from the
  rename until a lease first returns one of its items. A probe leases 20 queries every 0.25 s
  and releases them at once (nobody is given them). ``idle``: nobody labels, so no new version
  starts a round: the loop's pool check (``scoring.pool_check_seconds``) must. ``labeling``: a
  client labels 5 items/s meanwhile, so versions move and rounds run.
* **Scorer processes started after warm-up.** Over the labeling run, every process whose title
  names the scorer pool (``MapBatches(Scorer)``) is counted once it appears after the first
  round; the row gives them per 100 versions published, and apart, those started before the
  file landed, while only versions moved. The aim there is 0: warm scorers follow the weights
  board and never restart while versions move. A new file starts a new pass over the grown
  pool, with new scorers.

    python -m activestream.benchmarks.new_data --quick --out results/bench
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from activestream.benchmarks.entry import Size, bench_main, pick
from activestream.benchmarks.freshness import SERVICE
from activestream.benchmarks.kill_each import scorer_pids
from activestream.config import Config
from activestream.pipelines.annotate import polite_session
from activestream.sources.shards import ground_truth

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/new_data.py",
    *SERVICE,
)

POOL_ROWS = 10_000
NEW_ROWS = 3_000
LABEL_RATE = 5.0
VARIANTS = ("idle", "labeling")  # nobody labels; people label at LABEL_RATE
PROBE_SECONDS = 300.0  # how long the probe looks for the new file's items


def land_file(pool_dir: Path, first_id: int, seed: int, rows: int = NEW_ROWS) -> dict[str, int]:
    """Write ``rows`` items beside the pool and rename them in; their true classes."""
    from activestream.sources.synthetic import make_synthetic_shards

    with tempfile.TemporaryDirectory(dir=pool_dir.parent) as tmp:
        shards = make_synthetic_shards(
            tmp, rows, rows_per_shard=rows, first_id=first_id, seed=seed, progress=False
        )
        truth = ground_truth(shards)
        os.replace(shards.paths[0], pool_dir / f"part-landed-{first_id}.parquet")
    return truth


def _label(base: str, truth: dict[str, int], stop: threading.Event) -> None:
    """One annotator at ``LABEL_RATE`` labels/s, leasing one query at a time."""
    session = polite_session()
    while not stop.is_set():
        began = time.monotonic()
        queries = session.get(f"{base}/queries", params={"n": 1}, timeout=30).json()["queries"]
        labels = [{"id": q["id"], "label": truth[q["id"]]} for q in queries if q["id"] in truth]
        if labels:
            session.post(f"{base}/labels", json={"labels": labels}, timeout=30)
        stop.wait(max(0.0, 1.0 / LABEL_RATE - (time.monotonic() - began)))


def _first_served(base: str, new: set[str], timeout: float) -> float | None:
    """Seconds until a lease first returns one of ``new`` (None past ``timeout``)."""
    session, began = polite_session(), time.monotonic()
    while time.monotonic() - began < timeout:
        leased = session.get(f"{base}/queries", params={"n": 20}, timeout=30).json()["queries"]
        ids = [q["id"] for q in leased]
        if ids:
            session.post(f"{base}/queries/release", json={"ids": ids}, timeout=30)
        if new.intersection(ids):
            return round(time.monotonic() - began, 2)
        time.sleep(0.25)
    return None


def _version(base: str) -> int:
    return int(polite_session().get(f"{base}/model", timeout=30).json()["version"])


def run_variant(
    pool_root: Path, truth: dict[str, int], variant: str, seconds: float, new_rows: int = NEW_ROWS
) -> dict:
    """One fresh service; a file of ``new_rows`` lands once its first round is served."""
    from activestream.pipelines.realloop import Service

    cfg = Config().with_overrides({"data.dataset": str(pool_root)})
    with Service(cfg) as svc:
        base, stop = svc.url, threading.Event()
        _first_served(base, set(truth), timeout=240.0)  # the first round is served
        warm = scorer_pids()
        first_version = _version(base)
        annotator = threading.Thread(target=_label, args=(base, truth, stop), daemon=True)
        if variant == "labeling":
            annotator.start()
            time.sleep(seconds / 2)  # versions move before the file lands
        # Scorer starts while only versions moved: what the warm stream must keep at 0.
        started_before = len(scorer_pids() - warm)
        versions_before = _version(base) - first_version
        first_id = 10 * POOL_ROWS + (0 if variant == "idle" else NEW_ROWS)
        new = land_file(pool_root / "pool", first_id, seed=first_id, rows=new_rows)
        truth.update(new)  # the annotator labels the new items too
        landed_s = _first_served(base, set(new), timeout=PROBE_SECONDS)
        if variant == "labeling":
            stop.wait(seconds / 2)
            stop.set()
            annotator.join(timeout=60)
        versions = _version(base) - first_version
        started = len(scorer_pids() - warm)
    row = {
        "name": f"new_data_{variant}",
        "variant": variant,
        "pool_rows": len(truth) - len(new),
        "new_rows": new_rows,
        "label_rate": LABEL_RATE if variant == "labeling" else 0.0,
        "new_file_to_first_query_s": landed_s,
        "probe_seconds": PROBE_SECONDS,
        "versions": versions,
        "scorer_starts_after_warmup": started,
        "scorer_starts_per_100_versions": round(100 * started / versions, 1) if versions else None,
        "versions_before_new_file": versions_before,
        "scorer_starts_before_new_file": started_before,
        "ratio": None,
    }
    print(
        f"  new data, {variant}: first query from the new file after {landed_s} s; "
        f"{versions} versions, {started} scorer processes started after warm-up "
        f"({started_before} over the {versions_before} versions before the file landed)",
        flush=True,
    )
    return row


def run(size: Size, out: Path) -> list[dict[str, Any]]:
    """Idle and labeling, each on a fresh copy of the pool (new files would carry over)."""
    import shutil

    from activestream.sources.synthetic import make_synthetic_shards

    seconds = pick(size, tiny=8.0, quick=60.0, full=300.0)
    rows_in_pool = pick(size, tiny=2_500, quick=POOL_ROWS, full=POOL_ROWS)
    new_rows = pick(size, tiny=500, quick=NEW_ROWS, full=NEW_ROWS)
    rows = []
    for variant in pick(size, tiny=("labeling",), quick=VARIANTS, full=VARIANTS):
        root = out / "new-data-pool" / variant
        shutil.rmtree(root, ignore_errors=True)
        pool = make_synthetic_shards(
            str(root), rows_in_pool, rows_per_shard=2_500, test_rows=200, progress=False
        )
        rows.append(run_variant(root, ground_truth(pool), variant, seconds, new_rows))
    return rows


def main() -> None:  # noqa: D103
    bench_main(run, "new_data", __doc__)


if __name__ == "__main__":
    main()
