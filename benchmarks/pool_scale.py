"""One scoring round as the pool grows: bounded memory, linear time, fixed shard size.

For each pool size (10k, 100k, 1M synthetic 3x32x32 rows by default, always in shards of the
same size) the driver runs one :func:`activestream.pipelines.scoring.score_pass` with the default
config (digits CNN, entropy sampler, top-k of 256 candidates) on one Ray session, after one
warm-up pass on the smallest pool. A sampler thread polls every 0.5 s the proportional set size
(PSS) of the driver and of every Ray process the driver started (GCS, raylet, agents, workers,
idle workers: their name or command line contains ``ray``); PSS counts the shared object store
pages once overall. ``peak_pss_mb`` is the peak of that sum during the pass minus its value just
before the pass, and the peak of every process is kept in ``by_process`` so growth can be traced
to one process. Ray processes of other sessions on the same machine are not counted.

Alongside: seconds and rows/s of the whole pass (fixed costs included), the bytes per item of
the :class:`~activestream.actors.items.ItemStore` id index at that size, built in the driver
after the pass, and the shard count.

Shard ``i`` of a synthetic pool is the same bytes whatever the pool size (it is seeded by its
index), so the largest pool is written once under ``--data`` and every smaller pool of whole
shards is a prefix of it; both are reused by later runs.

    python -m activestream.benchmarks.pool_scale --rows 10000,100000,1000000 \
        --rows-per-shard 10000 --out docs/scale
    python -m activestream.benchmarks.pool_scale --render --out docs/scale

The second form only redraws the plot and rewrites the table of ``docs/pool-scale.md``
(between the ``<!-- pool_scale:begin -->`` and ``<!-- pool_scale:end -->`` markers) from
``<out>/pool_scale.json``; a run does that too.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from activestream.benchmarks.freshness import SCORING
from activestream.benchmarks.pages import add_tiny_argument
from activestream.config import Config
from activestream.sources.shards import ShardSet

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/pool_scale.py",
    *SCORING,
)

BEGIN, END = "<!-- pool_scale:begin -->", "<!-- pool_scale:end -->"
REFERENCE_ROWS = 100_000
DOC = Path("docs/pool-scale.md")
_DOC_HEAD = """# One scoring round as the pool grows

`python -m activestream.benchmarks.pool_scale --rows 10000,100000,1000000 --rows-per-shard 10000
--out docs/scale` scores synthetic 3x32x32 pools of growing size, in shards of a fixed size, once
each on one Ray session, and samples the memory (PSS) of the driver and every Ray process while
it runs. The table below is rendered from `docs/scale/pool_scale.json` (`--render`);
`tests/test_pool_scale.py` checks that the two agree.

![time and peak memory against pool size](scale/pool_scale.png)

"""


# --- measuring -------------------------------------------------------------------------------


def _label(proc: Any) -> str:
    """A short role name: ``driver``, ``raylet``, ``gcs_server``, ``agent.py``, ``ray::IDLE``."""
    cmd = proc.info.get("cmdline") or []
    if proc.pid == os.getpid():
        return "driver"
    joined = " ".join(cmd).strip()
    if joined.startswith("ray::"):
        return joined
    for arg in cmd[1:]:
        if arg.endswith(".py"):
            return os.path.basename(arg)
    return os.path.basename(cmd[0]) if cmd else proc.info.get("name") or "?"


def session_processes() -> list[Any]:
    """The driver plus every Ray process it started (GCS, raylet, agents, workers, idle ones).

    Descendants of the driver only, so another Ray session on the same machine is not counted.
    """
    import psutil

    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            proc.info = {"name": proc.name(), "cmdline": proc.cmdline()}
        except psutil.Error:
            continue
        text = proc.info["name"] + " " + " ".join(proc.info["cmdline"])
        if proc.pid == me.pid or "ray" in text.lower():
            found.append(proc)
    return found


def pss_by_process() -> dict[int, tuple[str, int]]:
    """pid -> (role, PSS bytes) for :func:`session_processes`; vanished processes are skipped."""
    import psutil

    out: dict[int, tuple[str, int]] = {}
    for proc in session_processes():
        try:
            out[proc.pid] = (_label(proc), proc.memory_full_info().pss)
        except (psutil.Error, AttributeError):
            continue
    return out


class SessionMemory:
    """Peak summed PSS of the Ray session above its value at entry, polled in a thread."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        snap = pss_by_process()
        total = sum(pss for _, pss in snap.values())
        if total > self.peak:
            self.peak, self.at_peak = total, snap
        for pid, (label, pss) in snap.items():
            if pss >= self.peaks.get(pid, (label, 0))[1]:
                self.peaks[pid] = (label, pss)  # the role as seen at the process's own peak
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> SessionMemory:
        self.before = pss_by_process()
        self.start = self.peak = sum(pss for _, pss in self.before.values())
        self.at_peak = self.before
        self.peaks: dict[int, tuple[str, int]] = dict(self.before)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def added(self) -> int:
        """Peak summed PSS during the pass minus the sum just before it."""
        return max(0, self.peak - self.start)

    def breakdown(self, top: int = 12) -> list[dict[str, Any]]:
        """The processes that grew most: PSS before, own peak, and share of the summed peak."""
        rows = []
        for pid, (label, peak) in self.peaks.items():
            before = self.before.get(pid, (label, 0))[1]
            rows.append(
                {
                    "pid": pid,
                    "process": label,
                    "before_mb": round(before / 2**20, 1),
                    "peak_mb": round(peak / 2**20, 1),
                    "grew_mb": round((peak - before) / 2**20, 1),
                    "at_total_peak_mb": round(self.at_peak.get(pid, (label, 0))[1] / 2**20, 1),
                }
            )
        rows.sort(key=lambda r: r["grew_mb"], reverse=True)
        return rows[:top]


# --- data ------------------------------------------------------------------------------------


def _cached(data: Path, rows: int, rows_per_shard: int) -> ShardSet:
    """A synthetic pool of ``rows`` rows, written once under ``data`` and reused afterwards."""
    from activestream.sources.shards import open_shards
    from activestream.sources.synthetic import make_synthetic_shards

    home = data / f"synthetic-{rows}-per-{rows_per_shard}"
    done = home / "complete.json"
    if done.exists():
        shards = open_shards(str(home / "pool"))
        if shards.num_rows == rows:
            return shards
    shards = make_synthetic_shards(str(home), rows, rows_per_shard=rows_per_shard)
    done.write_text(json.dumps({"rows": rows, "rows_per_shard": rows_per_shard}))
    return shards


def pool(data: Path, rows: int, rows_per_shard: int, largest: int) -> ShardSet:
    """``rows`` synthetic rows in shards of ``rows_per_shard``; whole shards share the largest."""
    if rows % rows_per_shard:
        return _cached(data, rows, rows_per_shard)
    whole = -(-largest // rows_per_shard) * rows_per_shard
    for done in sorted(data.glob(f"synthetic-*-per-{rows_per_shard}/complete.json")):
        have = json.loads(done.read_text())["rows"]
        if have >= rows and have % rows_per_shard == 0:
            whole = have
            break
    return _cached(data, whole, rows_per_shard).subset(range(rows // rows_per_shard))


# --- running ---------------------------------------------------------------------------------


def scoring_config() -> Config:
    """The default config: digits CNN (any input size), entropy, a top-k of 256 candidates."""
    return Config().with_overrides({"model.factory": "digits_cnn", "sampling.candidates": 256})


def settings(cfg: Config, rows_per_shard: int, every: float) -> dict[str, Any]:
    """Everything that shapes the numbers, as stored in the JSON."""
    import ray

    s = cfg.scoring
    return {
        "rows_per_shard": rows_per_shard,
        "shard_mb": round(rows_per_shard * 3 * 32 * 32 / 2**20, 1),
        "image_shape": [3, 32, 32],
        "model": cfg.model.factory,
        "sampler": cfg.sampling.sampler,
        "candidates": cfg.sampling.candidates,
        "num_scorers": s.num_scorers,
        "threads_per_scorer": s.threads_per_scorer,
        "cpus_per_scorer": s.cpus_per_scorer,
        "batch_size": s.batch_size,
        "scorer_nice": s.nice,
        "object_store_mb": s.object_store_mb,
        "object_store_note": "Ray Data resource limit of the pass (scoring.object_store_mb); "
        "the session's plasma store is larger, see ray_object_store_mb",
        "ray_object_store_mb": round(ray.cluster_resources().get("object_store_memory", 0) / 2**20),
        "ray_logical_cpus": ray.cluster_resources().get("CPU", 0),
        "read_concurrency": s.read_concurrency,
        "read_cpus": s.read_cpus,
        "reader": "ray.data.read_parquet, datasource V1: one read task per shard",
        "pss_every_s": every,
        "pss_scope": "driver + every process it started whose name or command line contains "
        "'ray' (gcs_server, raylet, agents, workers, idle workers); peak during the pass "
        "minus the sum just before it, taken once the previous pass's scorer processes have "
        "exited and 3 s later",
        "seconds": "wall time of one score_pass, fixed costs (actor start, model build) included",
        "index": "ItemStore(shards).index.bytes_per_item, built in the driver after the pass",
    }


def wait_for_scorers_to_exit(timeout: float = 120.0) -> float:
    """Wait until the previous pass's scorer actors are gone; returns the seconds waited.

    Ray Data stops the actor pool after the last batch, but the processes exit later (tens of
    seconds on a loaded machine); still alive at the baseline, they would hide the new pass's
    scorers and make the pass look cheaper than it is.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not any("MapWorker" in label for label, _ in pss_by_process().values()):
            break
        time.sleep(0.5)
    return time.monotonic() - began


def measure(
    cfg: Config, shards: ShardSet, every: float, settle: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One pass: (the result row, the per-process record)."""
    from activestream.actors.items import ItemStore
    from activestream.pipelines.scoring import score_pass

    gc.collect()
    waited = wait_for_scorers_to_exit()
    time.sleep(settle)
    load = os.getloadavg()[0]
    with SessionMemory(every) as mem:
        began = time.perf_counter()
        result = score_pass(cfg, shards, progress=True)
        seconds = time.perf_counter() - began
    if result.rows != shards.num_rows:
        raise RuntimeError(f"scored {result.rows} rows of {shards.num_rows}")
    store = ItemStore(shards)
    per_item = store.index.bytes_per_item
    del store
    row = {
        "rows": shards.num_rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(shards.num_rows / seconds, 1),
        "peak_pss_mb": round(mem.added / 2**20, 1),
        "index_bytes_per_item": round(per_item, 2),
        "shards": len(shards.paths),
    }
    record = {
        "rows": shards.num_rows,
        "before_pss_mb": round(mem.start / 2**20, 1),
        "peak_total_pss_mb": round(mem.peak / 2**20, 1),
        "samples": mem.samples,
        "waited_for_old_scorers_s": round(waited, 1),
        "load_1m_before": round(load, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
        "processes": mem.breakdown(),
    }
    return row, record


def run_sizes(
    sizes: list[int], rows_per_shard: int, data: Path, every: float = 0.5, settle: float = 3.0
) -> dict[str, Any]:
    """Warm up on the smallest pool, then one measured pass per size; returns the JSON."""
    import logging

    import ray
    from tqdm.auto import tqdm

    from activestream.benchmarks.suite import machine
    from activestream.pipelines.runtime import init_ray

    cfg = scoring_config()
    largest = max(sizes)
    pools = {n: pool(data, n, rows_per_shard, largest) for n in sorted(sizes)}
    # A cluster left by `ray start` on this machine would otherwise be joined (ray.init with no
    # address reads /tmp/ray/ray_current_cluster): measure a session of our own.
    os.environ.setdefault("RAY_ADDRESS", "local")
    init_ray(cfg.ray)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    report: dict[str, Any] = {
        "machine": machine(),
        "settings": settings(cfg, rows_per_shard, every),
        "results": [],
        "by_process": [],
    }
    smallest = pools[min(sizes)]
    tqdm.write(f"warm-up: {smallest.num_rows:,} rows")
    from activestream.pipelines.scoring import score_pass

    score_pass(cfg, smallest)
    for n, shards in pools.items():
        tqdm.write(f"pool of {n:,} rows in {len(shards.paths)} shards")
        row, record = measure(cfg, shards, every, settle)
        report["results"].append(row)
        report["by_process"].append(record)
        tqdm.write(
            f"  {row['seconds']:.1f} s, {row['rows_per_second']:,.0f} rows/s, peak PSS "
            f"+{row['peak_pss_mb']:,.0f} MB, index {row['index_bytes_per_item']:.1f} B/item"
        )
    return report


# --- reporting -------------------------------------------------------------------------------


def ratios(results: list[dict[str, Any]], reference: int = REFERENCE_ROWS) -> dict[str, Any]:
    """Largest pool against ``reference`` rows (the smallest pool when that size is missing)."""
    ordered = sorted(results, key=lambda r: r["rows"])
    largest = ordered[-1]
    base = next((r for r in ordered if r["rows"] == reference), ordered[0])
    return {
        "largest_rows": largest["rows"],
        "reference_rows": base["rows"],
        "peak_pss": largest["peak_pss_mb"] / base["peak_pss_mb"],
        "time_per_row": (largest["seconds"] / largest["rows"]) / (base["seconds"] / base["rows"]),
    }


def _header(data: dict[str, Any]) -> str:
    m, s = data.get("machine", {}), data.get("settings", {})
    parts = []
    if m:
        gpus = ", ".join(m.get("gpus") or []) or "none"
        parts.append(
            f"Measured {m.get('when', '?')} on {m.get('cores', '?')} cores ({m.get('cpu', '?')}), "
            f"GPUs: {gpus}."
        )
    if s:
        parts.append(
            f"Shards of {s['rows_per_shard']:,} rows; {s['num_scorers']} scorers "
            f"({s['model']}, {s['sampler']}, top {s['candidates']}), batch {s['batch_size']}; "
            f"object store limit {s['object_store_mb']} MB per pass; "
            f"read concurrency {s['read_concurrency']}."
        )
    return " ".join(parts)


def render_markdown(data: dict[str, Any]) -> str:
    """The table of ``pool_scale.json`` plus the largest-against-100k ratios, as markdown."""
    lines = []
    header = _header(data)
    if header:
        lines += [header, ""]
    lines += [
        "| rows | shards | seconds | rows/s | peak PSS MB | index bytes/item |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(data["results"], key=lambda r: r["rows"]):
        lines.append(
            f"| {r['rows']:,} | {r['shards']:,} | {r['seconds']:,.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['peak_pss_mb']:,.0f} | "
            f"{r['index_bytes_per_item']:.1f} |"
        )
    lines += [
        "",
        "peak PSS MB: the peak of the session's summed PSS during the pass minus the sum just "
        "before it.",
    ]
    if len(data["results"]) > 1:
        q = ratios(data["results"])
        lines += [
            "",
            f"{q['largest_rows']:,} rows against {q['reference_rows']:,} rows: peak PSS "
            f"{q['peak_pss']:.2f}x, time per row {q['time_per_row']:.2f}x "
            "(1.00x and 1.00x: flat memory, linear time).",
        ]
    lines += _session_lines(data)
    return "\n".join(lines) + "\n"


def _session_lines(data: dict[str, Any]) -> list[str]:
    """The session's total PSS at each peak and the machine's load, from ``by_process``.

    ``peak PSS MB`` is relative to what the session held just before the pass, and that includes
    idle workers left by earlier passes; the total at the peak shows the memory the machine
    actually needed.
    """
    records = sorted(data.get("by_process") or [], key=lambda r: r["rows"])
    if not records:
        return []
    totals = " / ".join(f"{r['peak_total_pss_mb']:,.0f}" for r in records)
    sizes = " / ".join(f"{r['rows']:,}" for r in records)
    lines = [
        "",
        f"Session total PSS at the peak, baseline included, for {sizes} rows: {totals} MB",
    ]
    if len(records) > 1:
        largest = records[-1]
        base = next((r for r in records if r["rows"] == REFERENCE_ROWS), records[0])
        ratio = largest["peak_total_pss_mb"] / base["peak_total_pss_mb"]
        lines[-1] += f" ({largest['rows']:,} against {base['rows']:,} rows: {ratio:.2f}x)"
    lines[-1] += "."
    loads = ", ".join(f"{r['load_1m_before']:.1f} -> {r['load_1m_after']:.1f}" for r in records)
    cores = data.get("machine", {}).get("cores", "?")
    lines += ["", f"1-minute load average before -> after each pass ({cores} cores): {loads}."]
    return lines


def section(text: str) -> str | None:
    """What lies between the markers of ``text`` (None without them)."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write_doc(data: dict[str, Any], doc: Path = DOC) -> None:
    """Rewrite the marked section of ``doc`` (created with a short preface when missing)."""
    text = doc.read_text() if doc.exists() else _DOC_HEAD + f"{BEGIN}\n{END}\n"
    if section(text) is None:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"{head}{BEGIN}\n{render_markdown(data)}{END}{tail}")


def plot(data: dict[str, Any], path: Path) -> None:
    """Time and peak PSS against rows, log x; a dashed line is linear time from the smallest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(data["results"], key=lambda r: r["rows"])
    rows = [p["rows"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.loglog(rows, [p["seconds"] for p in points], "o-", label="measured")
    ax1.loglog(rows, [points[0]["seconds"] * r / rows[0] for r in rows], "--", label="linear")
    ax1.set(xlabel="rows", ylabel="seconds", title="one scoring pass")
    ax1.legend()
    ax2.semilogx(rows, [p["peak_pss_mb"] for p in points], "o-", label="added by the pass")
    records = sorted(data.get("by_process") or [], key=lambda r: r["rows"])
    if records:
        totals = [r["peak_total_pss_mb"] for r in records]
        ax2.semilogx([r["rows"] for r in records], totals, "s--", label="session total")
    ax2.set(xlabel="rows", ylabel="MB", title="peak PSS", ylim=(0, None))
    ax2.legend()
    fig.suptitle(f"shards of {data['settings']['rows_per_shard']:,} rows", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_tiny_argument(parser)
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated sizes")
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--data", default="data/scale", help="synthetic shards, reused")
    parser.add_argument("--out", default="docs/scale", help="pool_scale.json and .png")
    parser.add_argument("--doc", default=str(DOC), help="markdown with the table's markers")
    parser.add_argument("--every", type=float, default=0.5, help="PSS polling period, s")
    parser.add_argument(
        "--render", action="store_true", help="only redraw the plot and rewrite --doc from the JSON"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.tiny:
        args.rows, args.rows_per_shard = "1000,2000", 500
    if args.render:
        data = json.loads((out / "pool_scale.json").read_text())
        plot(data, out / "pool_scale.png")
        write_doc(data, Path(args.doc))
        return
    from activestream.benchmarks.suite import require_publishable

    require_publishable(out, "tiny" if args.tiny else "full")
    require_publishable(Path(args.doc).parent, "tiny" if args.tiny else "full")
    sizes = [int(v) for v in args.rows.split(",") if v.strip()]
    report = run_sizes(sizes, args.rows_per_shard, Path(args.data), every=args.every)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pool_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / "pool_scale.png")
    write_doc(report, Path(args.doc))
    print(render_markdown(report), flush=True)


if __name__ == "__main__":
    main()
