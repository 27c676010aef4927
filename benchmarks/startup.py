"""Time from `activestream serve` to the first query a person can answer, and the first scored.

The command starts in a child process on a fresh state directory, as an operator starts it.
From the moment it is launched, the measurer asks ``/healthz`` and leases one query (then hands
it straight back with ``POST /queries/release``) every 50 ms, and records:

* ``healthz_s``: the first answer of ``/healthz`` (Ray and Serve are up; ``degraded`` until the
  trainer is built and holds the label log, which happens while the replica starts);
* ``first_query_s``: the first lease that hands out an item (a random pool item before the
  first scoring round: the cold start's choice);
* ``first_scored_s``: the first item from a finished scoring round (its ``model_version`` is
  the version that scored it, not -1).

    python -m activestream.benchmarks.startup --out results/startup
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from activestream.benchmarks.entry import Size, bench_main
from activestream.benchmarks.freshness import SERVICE

# What these figures measure: a change to any of it makes them stale (benchmarks.freshness).
MEASURES = (
    "benchmarks/startup.py",
    *SERVICE,
    "cli.py",
)

TOKEN = "startup-token"


def _launch(state: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "", "ACTIVESTREAM_TOKEN": TOKEN}
    config = state / "config.yaml"
    config.write_text(json.dumps({"durability": {"dir": str(state / "state")}}))  # JSON is YAML
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "activestream.cli", "serve", "--port", str(port)]
            + ["--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _poll(base: str, began: float, timeout: float, proc: subprocess.Popen) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    out: dict[str, Any] = {"healthz_s": None, "first_query_s": None, "first_scored_s": None}
    deadline = began + timeout
    while None in out.values() and time.monotonic() < deadline and proc.poll() is None:
        now = time.monotonic() - began
        try:
            if out["healthz_s"] is None and requests.get(f"{base}/healthz", timeout=2).ok:
                out["healthz_s"] = round(now, 2)
            answer = requests.get(f"{base}/queries?n=1", headers=auth, timeout=2)
            queries = answer.json()["queries"] if answer.ok else []
        except (requests.RequestException, ValueError, KeyError):
            queries = []
        if queries:
            now = time.monotonic() - began
            if out["first_query_s"] is None:
                out["first_query_s"] = round(now, 2)
                out["first_query_explored"] = queries[0]["explored"]
            if queries[0]["model_version"] >= 0 and out["first_scored_s"] is None:
                out["first_scored_s"] = round(now, 2)
            with contextlib.suppress(requests.RequestException):
                ids = [q["id"] for q in queries]
                requests.post(f"{base}/queries/release", json={"ids": ids}, headers=auth)
        time.sleep(0.05)
    return out


def measure(port: int | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Launch ``activestream serve`` once on a fresh state directory; see the module docstring."""
    from activestream.pipelines.runtime import free_port

    port = port or free_port()
    state = Path(tempfile.mkdtemp(prefix="activestream-startup-"))
    log = state / "serve.log"
    began = time.monotonic()
    proc = _launch(state, port, log)
    try:
        result = _poll(f"http://127.0.0.1:{port}", began, timeout, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if result["first_query_s"] is None:
        raise RuntimeError(f"no query within {timeout:.0f} s: {log.read_text()[-2000:]}")
    return {
        **result,
        "query_after_healthz_s": round(result["first_query_s"] - result["healthz_s"], 2),
    }


def suite(size: Size, out: Path) -> list[dict[str, Any]]:
    """The suite's entry: one cold start of the command."""
    return [{"name": "startup", **measure(), "ratio": None}]


def main() -> None:  # noqa: D103
    bench_main(suite, "startup", __doc__)


if __name__ == "__main__":
    main()
