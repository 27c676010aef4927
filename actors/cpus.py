"""Cores kept for serving: training and scoring threads stay off the lowest-numbered ones.

Nice values order the threads that compete for a core, but on 2 cores a scoring pass and a
training step still take both, and a request waits for the scheduler's next slice.
``serve.reserved_cpus`` takes the first N cores of each machine away from the training thread
and from scorer processes (Linux CPU affinity, per thread), so Serve's replica, its proxy and
the actors that answer requests always find one free. The price is throughput: training and
scoring get the other cores only.
"""

from __future__ import annotations

import os


def keep_off_reserved(reserved: int, *, whole_process: bool = False) -> set[int] | None:
    """Restrict the calling thread (or every thread of this process) to the unreserved cores.

    Threads started afterwards inherit it from their creator, so torch's pools do too.

    Args:
        reserved: How many of the lowest-numbered cores to leave free; 0 changes nothing.
        whole_process: Also move the threads this process runs already (a scorer's).

    Returns:
        The cores now allowed, or None when nothing changed (0 reserved, not Linux, or no
        core would be left: then serving and work share, as without the setting).
    """
    if reserved <= 0 or not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    allowed = set(cores[reserved:])
    if not allowed:
        return None
    tids = [int(t) for t in os.listdir("/proc/self/task")] if whole_process else [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, allowed)
        except OSError:  # a thread that ended meanwhile, or not permitted
            continue
    return allowed
