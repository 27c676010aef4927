"""Starting a local Ray cluster on a loaded machine: a start Ray gives up on is cleared and retried.

Ray waits a fixed 30 s for its raylet and then raises a bare ``Exception``, leaving what it
started running. These tests stand a process in for that leftover and check it is gone before
the next try, and that two failures end in one line, not Ray's traceback.
"""

from __future__ import annotations

import subprocess

import psutil
import pytest

from activestream.errors import ClusterError
from activestream.pipelines.runtime import start_local_cluster

RAY_GAVE_UP = (
    "The current node timed out during startup. This could happen because some of the raylet "
    "failed to startup or the GCS has become overloaded."
)


class FlakyStart:
    """``ray.init`` that starts a process and gives up, ``fails`` times, then succeeds."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0
        self.left: list[subprocess.Popen] = []

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.fails:
            self.left.append(subprocess.Popen(["sleep", "600"]))
            raise Exception(RAY_GAVE_UP)  # what Ray raises


def gone(process: subprocess.Popen) -> bool:
    try:
        return psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_start_ray_gave_up_on_is_cleared_and_tried_again(capsys):
    start = FlakyStart(fails=1)
    start_local_cluster(start)
    assert start.calls == 2
    assert gone(start.left[0])
    assert "did not start (The current node timed out during startup" in capsys.readouterr().err


def test_two_failed_starts_are_one_line_and_leave_nothing_running():
    start = FlakyStart(fails=2)
    with pytest.raises(ClusterError) as err:
        start_local_cluster(start)
    assert start.calls == 2 and all(gone(p) for p in start.left)
    assert str(err.value) == (
        "Ray's local cluster did not start (2 tries): The current node timed out during "
        "startup. This could happen because some of the raylet failed to startup or the GCS "
        "has become overloaded."
    )


def test_a_start_that_works_runs_once_and_stops_nothing():
    start = FlakyStart(fails=0)
    start_local_cluster(start)
    assert start.calls == 1
