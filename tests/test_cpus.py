"""``serve.reserved_cpus``: training and scoring threads stay off the cores kept for serving."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from activestream.actors.cpus import keep_off_reserved

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two = pytest.mark.skipif(len(CORES) < 2, reason="needs CPU affinity and 2 cores")


@needs_two
def test_a_thread_keeps_off_the_reserved_cores_and_the_others_keep_every_core():
    seen = {}

    def work() -> None:
        seen["returned"] = keep_off_reserved(1)
        seen["affinity"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen["returned"] == seen["affinity"] == set(CORES[1:])
    assert os.sched_getaffinity(0) == set(CORES)  # this thread (serving's stand-in) is untouched


@needs_two
def test_a_scorer_process_moves_every_thread_it_has():
    code = (
        "import os, threading, time\n"
        "from activestream.actors.cpus import keep_off_reserved\n"
        "t = threading.Thread(target=time.sleep, args=(1,)); t.start()\n"
        "keep_off_reserved(1, whole_process=True)\n"
        "tids = [int(x) for x in os.listdir('/proc/self/task')]\n"
        "print(sorted({min(os.sched_getaffinity(tid)) for tid in tids}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([CORES[1]])


def test_nothing_changes_when_nothing_is_reserved_or_no_core_would_be_left():
    assert keep_off_reserved(0) is None
    assert keep_off_reserved(len(CORES) or 1) is None
