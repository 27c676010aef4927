"""Shared fixtures: one real local Ray cluster per test session, one real S3 server process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from activestream.config import StorageConfig
from activestream.pipelines.runtime import free_port as _free_port

#: Tests that may skip under CI=true, by node id prefix, with why; printed at the end of every
#: CI run. Empty: CI installs everything every test needs, so any skip is a failure.
ALLOWED_SKIPS: dict[str, str] = {}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run as Ctrl-C does, so session fixtures still tear down.

    A runner that cancels a job, or ``timeout``, sends SIGTERM; by default that ends pytest at
    once and the session's Ray cluster (with a whole service in it) stays behind, holding cores
    for the next run. As a KeyboardInterrupt, the fixtures shut Serve and Ray down first.
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


#: Fixtures that need the session's Ray cluster (or a service in it).
_RAY_FIXTURES = frozenset({"ray_session", "run_service"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a ``compute`` test that uses the session's Ray cluster.

    scripts/test.sh runs the ``compute`` tests in a second pytest beside the rest, on idle CPU
    time only: one that needs a cluster would start a second cluster there, short of CPU.
    """
    wrong = [
        item.nodeid
        for item in items
        if item.get_closest_marker("compute") and _RAY_FIXTURES & set(item.fixturenames)
    ]
    if wrong:
        raise pytest.UsageError(f"marked compute but use the session's Ray: {', '.join(wrong)}")


def _unexpected_skips(reporter: Any) -> list[Any]:
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    return [r for r in skipped if not r.nodeid.startswith(tuple(ALLOWED_SKIPS))]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skip not on ``ALLOWED_SKIPS`` fails the run."""
    if os.environ.get("CI") != "true" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if _unexpected_skips(reporter):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _seconds_per_file(reporter: Any) -> list[tuple[float, str]]:
    """Setup, call and teardown seconds summed per test file, longest first."""
    totals: dict[str, float] = {}
    for reports in reporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                path = report.nodeid.split("::")[0]
                totals[path] = totals.get(path, 0.0) + report.duration
    return sorted(((s, path) for path, s in totals.items()), reverse=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print where the time went per file; under CI=true, end with the skips allowed and met.

    The per-file totals (fixtures included, which ``--durations`` splits over tests) are what
    keeps CI under its time bound: they show which module to slim when the run grows.
    """
    per_file = _seconds_per_file(terminalreporter)
    if len(per_file) > 1:
        total = sum(s for s, _ in per_file)
        terminalreporter.write_sep("=", f"slowest 10 test files ({total:.0f} s in all)")
        for seconds, path in per_file[:10]:
            terminalreporter.write_line(f"{seconds:8.1f}s {path}")
    if os.environ.get("CI") != "true":
        return
    allowed = "; ".join(f"{k} ({why})" for k, why in ALLOWED_SKIPS.items()) or "none"
    terminalreporter.write_line(f"skips allowed under CI=true: {allowed}")
    for report in _unexpected_skips(terminalreporter):
        terminalreporter.write_line(f"skipped under CI=true: {report.nodeid}", red=True)


@pytest.fixture(scope="module")
def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    return _free_port()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start Ray once; 8 logical CPUs so Serve, trainer and a scorer pool fit on 2 cores."""
    import ray

    from activestream.config import RayConfig
    from activestream.pipelines.runtime import init_ray

    init_ray(RayConfig(num_cpus=8))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - Serve may never have started
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    """A real S3-compatible server process (moto in server mode) on loopback."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited: {Path(log).read_text()[-2000:]}") from None
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start in 30 s")
    yield StorageConfig(endpoint_url=url, key="testing", secret="testing")
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_client(s3_server: StorageConfig) -> Any:
    """A boto3 client of the loopback S3 server, to put files where a test reads them."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
        region_name="us-east-1",
    )


@pytest.fixture()
def s3_bucket(s3_client: Any) -> str:
    """A fresh, empty bucket on the loopback S3 server; returns its name."""
    name = f"bucket-{time.monotonic_ns()}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def run_service(ray_session: None) -> Any:
    """Start the whole app in a module fixture: ``with run_service(cfg, token=...) as base``."""
    from activestream.deploy.serve_app import running

    def run(cfg: Any, token: str | None = None) -> Any:
        return running(cfg, port=_free_port(), token=token)

    return run


@pytest.fixture(scope="session")
def durable_config() -> Any:
    """Config factory for fault tests: small buffers, frequent checkpoints, quick catch-up."""
    from activestream.config import Config

    def make(tmp: Path, **overrides: Any) -> Config:
        return Config().with_overrides(
            {
                "data.cache_dir": str(tmp / "cache"),
                "durability.dir": str(tmp / "state"),
                "durability.checkpoint_every": 2,
                "durability.forward_timeout": 1.0,
                "durability.sync_seconds": 0.5,
                "training.buffer_size": 4,
                "training.steps_per_update": 3,
                "sampling.candidates": 128,
                **overrides,
            }
        )

    return make


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Label Studio 1.23.2 server on loopback, one per session, on a fresh SQLite data dir.

    Yields a ``benchmarks.label_studio_client.LabelStudioServer``: ``url``, ``token`` (the
    admin's legacy API token), ``log`` (its log file), ``data_dir``, ``username``/``password``,
    ``process`` and ``client()``, a REST client. The executable is ``$LABEL_STUDIO_BIN``
    (test.sh exports it), else scripts/label_studio.sh builds it. Start-up takes ~6 s once a
    migrated database has been cached beside its venv, ~70 s the very first time.
    ACTIVESTREAM_SKIP_LABEL_STUDIO=1 skips the tests that use it, locally only: under CI=true
    they always run.
    """
    from activestream.benchmarks.label_studio_client import running_label_studio

    if os.environ.get("CI") != "true" and os.environ.get("ACTIVESTREAM_SKIP_LABEL_STUDIO") == "1":
        pytest.skip("ACTIVESTREAM_SKIP_LABEL_STUDIO=1")

    with running_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


class Digits(NamedTuple):
    """The bundled digits as every test reads them: the config, both splits, the labels."""

    cfg: Any
    pool: Any
    test: Any
    truth: dict[str, int]


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """The bundled digits, written once per test session (read-only: never write under it)."""
    from activestream.config import Config
    from activestream.sources.resolve import resolve_dataset
    from activestream.sources.shards import ground_truth

    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path_factory.mktemp("digits"))})
    pool, test = resolve_dataset(cfg)
    return Digits(cfg, pool, test, ground_truth(pool))
