"""The test session's own rules (tests/conftest.py), each tried in a pytest of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SESSION = """
import time
import pytest

@pytest.fixture(scope="session")
def cluster():
    yield
    open("torn-down", "w").write("yes")

def test_waits(cluster):
    open("started", "w").write("yes")
    time.sleep(60)
"""


def _pytest_under_conftest(tmp: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """Command and environment for a pytest in ``tmp`` with tests/conftest.py as its plugin."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider"]
    return [*command, "--rootdir", str(tmp), "-c", os.devnull, *args], env


@pytest.mark.slow
def test_a_sigterm_tears_session_fixtures_down_as_ctrl_c_does(tmp_path: Path) -> None:
    (tmp_path / "test_session.py").write_text(SESSION)
    command, env = _pytest_under_conftest(tmp_path, "test_session.py")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert (tmp_path / "torn-down").exists(), out


COMPUTE_WITH_RAY = """
import pytest

@pytest.mark.compute
def test_uses_the_cluster(ray_session):
    pass
"""


def test_a_compute_test_that_needs_the_session_cluster_is_refused_at_collection(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_compute.py").write_text(COMPUTE_WITH_RAY)
    command, env = _pytest_under_conftest(
        tmp_path,
        "--strict-markers",
        "-o",
        "markers=compute: CPU-bound",
        "--collect-only",
        "test_compute.py",
    )
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "marked compute but use the session's Ray: test_compute.py::test_uses_the_cluster" in (
        done.stdout + done.stderr
    )
