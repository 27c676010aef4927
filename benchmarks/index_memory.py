"""Id index memory: bytes per item, build and lookup time, IdIndex against a dict of strs.

The item store keeps where every id of the pool lives in every process that serves labels or
images. Today that is a dict of Python ``str`` -> ``(file, row)`` plus an object array of the
same strs (:class:`~activestream.actors.items.ItemStore`); the goal for
:class:`~activestream.sources.idindex.IdIndex` is at most ~30 bytes per item at 1M items.

For N synthetic ids (``syn-0000001``, ...) in files of 10k, each approach is measured in its
own fresh Python process, so one's freed memory cannot hide the other's:

* ``bytes_per_item``: memory still allocated after the build, traced with :mod:`tracemalloc`
  (Python objects and numpy buffers; the index copies its Arrow ids into numpy-owned buffers,
  so they are traced too), divided by N. ``peak_bytes_per_item`` is the build's peak.
* ``rss_bytes_per_item``: the process's resident set growth over the (untraced) build.
* ``build_s``: building from the per-file Arrow id arrays (as ``pq.read_table(...).column``
  gives them), best of the repeats; ``lookup_s``: locating 10k random ids at once;
  ``single_us``: one ``id in index`` test, averaged over the same 10k ids.

The hash the index uses is compared with the other deterministic candidates on the same ids:
FNV-1a vectorised with numpy (one pass per byte position over the ids still that long) and
``hashlib.blake2b(digest_size=8)`` per id in a list comprehension.

    python -m activestream.benchmarks.index_memory --rows 1000000 --out results/index
    python -m activestream.benchmarks.index_memory --rows 20000 --out /tmp/index
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from activestream.benchmarks.pages import add_tiny_argument
from activestream.sources.idindex import IdIndex, _buffers, _hash_ids

FILE_ROWS = 10_000
LOOKUPS = 10_000
APPROACHES = ("idindex", "dict")
MODULE = "activestream.benchmarks.index_memory"


def synthetic_files(rows: int, file_rows: int = FILE_ROWS) -> list[pa.Array]:
    """``syn-0000001`` ... in files of ``file_rows``, as Arrow string arrays."""
    width = max(7, len(str(rows)))
    return [
        pa.array([f"syn-{i:0{width}d}" for i in range(s + 1, min(s + file_rows, rows) + 1)])
        for s in range(0, rows, file_rows)
    ]


class DictIndex:
    """The old approach, as ``ItemStore._index`` builds it: a dict plus object arrays of strs."""

    def __init__(self, per_file: list[pa.Array]) -> None:
        self.where: dict[str, tuple[int, int]] = {}
        self.ids: list[np.ndarray] = []
        for f, column in enumerate(per_file):
            ids = column.to_pylist()
            self.ids.append(np.asarray(ids, dtype=object))
            self.where.update((item, (f, row)) for row, item in enumerate(ids))

    def locate(self, ids: list[str]) -> list[tuple[int, int] | None]:
        return [self.where.get(i) for i in ids]

    def __contains__(self, item: str) -> bool:
        return item in self.where


def _best(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _lookups(index: IdIndex | DictIndex, queries: list[str], repeats: int) -> tuple[float, float]:
    """Seconds for one bulk lookup of all ``queries``, and per ``in`` test of one of them."""
    bulk = _best(lambda: index.locate(queries), repeats)
    single = _best(lambda: [q in index for q in queries], repeats) / len(queries)
    return bulk, single


def measure(name: str, rows: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """One approach's figures; meant to run in a fresh process (see :func:`main`)."""
    files = synthetic_files(rows)

    def build() -> IdIndex | DictIndex:
        return IdIndex.build(files) if name == "idindex" else DictIndex(files)

    rng = np.random.default_rng(seed)
    width = max(7, len(str(rows)))
    queries = [f"syn-{i:0{width}d}" for i in rng.integers(1, rows + 1, LOOKUPS)]
    gc.collect()
    rss_before = _rss()
    began = time.perf_counter()
    index = build()
    first_build = time.perf_counter() - began
    gc.collect()
    rss_growth = _rss() - rss_before
    lookup_s, single_s = _lookups(index, queries, repeats)
    result: dict[str, Any] = {"name": name, "rows": rows}
    if isinstance(index, IdIndex):
        result["nbytes_per_item"] = round(index.bytes_per_item, 2)
    del index
    gc.collect()
    build_s = min(first_build, _best(build, repeats - 1) if repeats > 1 else first_build)
    gc.collect()
    tracemalloc.start()
    kept = build()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    result.update(
        bytes_per_item=round(held / rows, 2),
        peak_bytes_per_item=round(peak / rows, 2),
        rss_bytes_per_item=round(rss_growth / rows, 2),
        build_s=round(build_s, 4),
        lookup_s=round(lookup_s, 5),
        single_us=round(single_s * 1e6, 2),
    )
    return result


def _fnv1a_numpy(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a, vectorised per byte position: ids sorted by length, longest first."""
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    starts, lengths = offsets[:-1][order], lengths[order]
    h = np.full(len(lengths), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for j in range(int(lengths[0]) if len(lengths) else 0):
        active = int(np.searchsorted(-lengths, -j, side="left"))  # ids longer than j
        h[:active] ^= data[starts[:active] + j].astype(np.uint64)
        h[:active] *= prime
    out = np.empty_like(h)
    out[order] = h
    return out


def _blake2b(ids: pa.Array) -> np.ndarray:
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
            for i in ids.to_pylist()
        ],
        dtype=np.uint64,
    )


def hashes(rows: int, repeats: int) -> list[dict[str, Any]]:
    """Seconds to hash every id, file by file, for the index's hash and two alternatives."""
    files = synthetic_files(rows)
    buffers = [_buffers(f) for f in files]
    candidates: dict[str, Callable[[], Any]] = {
        "poly64+fmix (numpy prefix sums, IdIndex)": lambda: [_hash_ids(*b) for b in buffers],
        "fnv1a-64 (numpy, per byte position)": lambda: [_fnv1a_numpy(*b) for b in buffers],
        "blake2b-8 (hashlib, per id)": lambda: [_blake2b(f) for f in files],
    }
    out = []
    for name, fn in candidates.items():
        seconds = _best(fn, repeats)
        per_id = round(seconds / rows * 1e9, 1)
        out.append({"name": name, "rows": rows, "seconds": round(seconds, 4), "ns_per_id": per_id})
    return out


def _in_fresh_process(name: str, rows: int, repeats: int) -> dict[str, Any]:
    command = [sys.executable, "-m", MODULE, "--worker", name]
    command += ["--rows", str(rows), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(rows: int, out: Path, repeats: int = 3) -> dict[str, Any]:
    """Measure both approaches and the hashes, write ``<out>/index_memory.json``."""
    from activestream.benchmarks.suite import machine

    results = [_in_fresh_process(name, rows, repeats) for name in APPROACHES]
    index, old = results
    index["ratio"] = round(old["bytes_per_item"] / index["bytes_per_item"], 1)
    report = {"machine": machine(), "results": results, "hashes": hashes(rows, repeats)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "index_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("results/index"))
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    parser.add_argument("--worker", choices=APPROACHES, help=argparse.SUPPRESS)
    add_tiny_argument(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.rows, args.repeats = 10_000, 1
    if args.worker:
        print(json.dumps(measure(args.worker, args.rows, args.repeats)))
        return
    report = run(args.rows, args.out, args.repeats)
    for row in report["results"]:
        print(json.dumps(row))
    for row in report["hashes"]:
        print(json.dumps(row))
    print(f"wrote {args.out / 'index_memory.json'}")


if __name__ == "__main__":
    main()
