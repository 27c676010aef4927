"""The real loop at work: start ``activestream serve``, label it with the oracle, stop it.

Each session runs the service as users run it, a separate ``activestream serve`` process
with its own local Ray cluster and a fresh state directory, and drives it over HTTP with
:class:`~activestream.pipelines.annotate.Oracle`. ``demo`` runs the configured sampler and
random one after the other under the same settings and plots both learning curves: held-out
accuracy for classes, mAP@0.5 for boxes (the config's ``task: detection``, on a folder in
COCO, YOLO or Hugging Face layout with ``pool/`` and ``test/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from activestream.config import Config
from activestream.errors import ActivestreamError
from activestream.pipelines.annotate import ClassHeldOut, HeldOut, Oracle, curve_on_grid
from activestream.pipelines.curves import area_under_curve, labels_to_reach
from activestream.pipelines.task import sampler_name
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import load_arrays


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``activestream serve`` in a child process, for one session (a context manager)."""

    def __init__(self, cfg: Config, *, port: int | None = None, startup: float = 240.0) -> None:
        self.cfg = cfg
        self.port = port or free_port()
        self.startup = startup
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="activestream-session-")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        folder = Path(self._dir.name)
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json")))
        log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._log = log
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "activestream.cli",
                "serve",
                "--config",
                str(config),
                "--data-dir",
                str(folder / "data"),
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ActivestreamError(f"activestream serve exited:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise ActivestreamError(f"activestream serve did not answer in {self.startup:.0f} s")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the service printed."""
        path = Path(self._dir.name) / "serve.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)  # final checkpoint, Serve and Ray down
            try:
                self._proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._log.close()
        self._dir.cleanup()


#: The detection demo's data when no ``--dataset`` is given: canvases of scikit-learn's
#: digits (bundled, nothing to install), small enough for a laptop's CPU.
DEMO_CANVASES = {"source": "digits", "pool": 600, "test": 48, "size": 96, "scale": (16, 40)}


def demo_canvases(cfg: Config) -> str:
    """The detection demo's default data set under ``data.cache_dir``, made once."""
    from activestream.sources.canvases import CanvasSpec, make_canvases

    spec = json.dumps(DEMO_CANVASES, sort_keys=True).encode()
    out = Path(cfg.data.cache_dir) / f"demo-canvases-{hashlib.sha256(spec).hexdigest()[:8]}"
    if not (out / "test").is_dir():
        partial = out.with_name(out.name + ".partial")
        make_canvases(partial, CanvasSpec(**DEMO_CANVASES))  # type: ignore[arg-type]
        partial.rename(out)
    return str(out)


def ground_truth(cfg: Config) -> tuple[dict[str, Any], HeldOut]:
    """Every pool id's answer (its class, or its boxes), and the held-out split, for the oracle."""
    if cfg.task == "detection":
        from activestream.pipelines.box_oracle import box_truth

        return box_truth(cfg)
    pool, test = resolve_dataset(cfg)
    if test is None:
        raise ActivestreamError(f"{cfg.data.dataset}: the oracle needs a test/ split")
    ids, _, y_pool = load_arrays(pool)
    _, x_test, y_test = load_arrays(test)
    if y_pool is None or y_test is None:
        raise ActivestreamError(f"{cfg.data.dataset}: the oracle needs labeled pool and test")
    truth = dict(zip(ids.tolist(), y_pool.tolist(), strict=True))
    return truth, ClassHeldOut(x_test, y_test)


def session(
    cfg: Config,
    *,
    budget: int,
    annotators: int,
    rate: float,
    progress: bool = True,
    settle: float = 60.0,
) -> dict[str, Any]:
    """One labeling session against a fresh service; the oracle's report plus the settings.

    The report's curve on the grid of every ``buffer_size`` labels is named after its metric
    (``accuracy`` for classes, ``map50`` for boxes), and ``sampler`` is the sampler that ran.
    """
    truth, held_out = ground_truth(cfg)
    with Service(cfg) as service:
        oracle = Oracle(
            service.url, truth, held_out, annotators=annotators, rate=rate, budget=budget
        )
        report = oracle.run(progress=progress, settle=settle)
    grid = list(range(0, budget + 1, cfg.training.buffer_size))
    metric = held_out.metric
    report["labels"] = grid
    report[metric] = [round(a, 5) for a in curve_on_grid(report["curve"], grid, metric)]
    report["sampler"] = sampler_name(cfg)
    return report


def demo(
    cfg: Config,
    out: Path,
    *,
    budget: int = 320,
    annotators: int = 4,
    rate: float = 2.0,
    progress: bool = True,
    settle: float = 60.0,
) -> dict[str, Any]:
    """The configured sampler, then random, each through a fresh real service; JSON and PNG."""
    runs: dict[str, Any] = {}
    for sampler in (cfg.sampling.sampler, "random"):
        run_cfg = cfg.with_overrides({"sampling.sampler": sampler})
        name = sampler_name(run_cfg)
        print(f"== {name}: {annotators} annotators at {rate:g} labels/s, {budget} labels")
        runs[name] = session(
            run_cfg,
            budget=budget,
            annotators=annotators,
            rate=rate,
            progress=progress,
            settle=settle,
        )
    metric = next(iter(runs.values()))["metric"]
    results = {
        "dataset": cfg.data.dataset,
        "task": cfg.task,
        "metric": metric,
        "budget": budget,
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_loop.json").write_text(json.dumps(results, indent=1))
    plot_sessions(results, out / "learning_curves.png")
    print(summary(results))
    print(f"wrote {out / 'real_loop.json'} and {out / 'learning_curves.png'}")
    return results


def summary(results: dict[str, Any]) -> str:
    """Final metric, area under the curve and labels to random's final, per sampler."""
    runs, metric = results["runs"], results.get("metric", "accuracy")
    target = runs["random"][metric][-1]
    final = "final acc" if metric == "accuracy" else f"final {metric}"
    rows = [f"{'sampler':<18} {final:>10} {'AUC':>7} {'labels to random final':>24}"]
    for name, r in runs.items():
        need = labels_to_reach(r["labels"], r[metric], target)
        auc = area_under_curve(r["labels"], r[metric])
        rows.append(f"{name:<18} {r[metric][-1]:>10.3f} {auc:>7.3f} {str(need):>24}")
    return "\n".join(rows)


def plot_sessions(results: dict[str, Any], path: Path) -> None:
    """Accuracy against labels for every session of ``results``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    metric = results.get("metric", "accuracy")
    for name, r in results["runs"].items():
        ax.plot(r["labels"], r[metric], label=name, linestyle="--" if name == "random" else "-")
    ax.set_xlabel("labels (images)" if metric == "map50" else "labels")
    ax.set_ylabel("held-out mAP@0.5" if metric == "map50" else "held-out accuracy")
    ax.set_title(f"{results['dataset']}: the real service, labeled over HTTP")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
