"""Starting Ray and sizing work to the cluster it finds.

Ray's CPU counts are logical. A local cluster declares more logical CPUs than cores so that a
Serve replica, the trainer, the query queue and a scorer pool can all be scheduled on a laptop;
the real limit on CPU use is each scorer's torch thread count. GPUs are read from the cluster's
resources, never from a flag, so the same config runs on a CPU laptop and a GPU cluster.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable
from functools import partial

from activestream.config import RayConfig, ScoringConfig, TrainingConfig
from activestream.errors import ClusterError

#: The named actor that runs one deployment's loop: every driver and replica finds it by name.
#: Here, not beside the loop, so that Serve's replica reaches it without importing torch.
LOOP_ACTOR = "activestream-loop"


def local_logical_cpus(cfg: RayConfig) -> int:
    """Logical CPUs for a local cluster: the configured number or max(8, 4 x cores)."""
    return cfg.num_cpus or max(8, 4 * (os.cpu_count() or 1))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for a local Serve or a test server)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def direct_ingress_env(port: int) -> dict[str, str]:
    """Ray Serve settings that put the ingress replica itself on ``port`` (no proxy hop).

    Serve reads them when its processes start, so they go into the environment before a local
    cluster is started. On 2 cores the proxy hop costs about 9 ms a request (p50 10 ms through
    the proxy, 1 ms direct, for a route that calls no actor). One port holds one replica, the
    default; a replaced replica takes the port over at once (no quarantine) and a stopping one
    does not hold it for a load balancer's sake (there is none in front of it).
    """
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # range(min, max): one port
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


def init_ray(cfg: RayConfig) -> None:
    """Connect to ``cfg.address`` or start a local cluster; a no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    allocator = {"ARROW_DEFAULT_MEMORY_POOL": cfg.arrow_allocator}
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False, runtime_env={"env_vars": allocator})
        return
    # On a small machine everything starts at once (raylet, workers, Serve's proxy, scorers):
    # Serve's 5 s proxy readiness check then fails three times and it kills the proxy before
    # it ever served. The local cluster's processes inherit this environment.
    for name in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S"):
        os.environ.setdefault(name, "30")
    # Ray starts every worker at nice 15, Serve's proxy and replica included, so serving would
    # compete with training and scoring on equal terms. Started at 0, the workers that must
    # answer at once (Serve, ledger, queue) come first, and the trainer's thread and the
    # scorers step down below them (``training.nice``, ``scoring.nice``).
    os.environ.setdefault("RAY_worker_niceness", "0")
    start = partial(
        ray.init,
        # "local" always starts a new cluster: Ray would otherwise attach to any cluster it
        # finds running on this machine (another user's, another test run) and fail on num_cpus.
        address="local",
        num_cpus=local_logical_cpus(cfg),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": driver_path(), **allocator}
        },
    )
    start_local_cluster(start)


def start_local_cluster(start: Callable[[], object], tries: int = 2) -> None:
    """Run ``start`` (``ray.init`` of a new local cluster), again if Ray gives up on its start.

    Ray waits a fixed 30 s for its raylet to register and then raises, leaving the processes
    it started behind; on a loaded machine (a busy CI runner) that happens now and then.
    Whatever a failed try started here is stopped before the next one, so two clusters never
    compete for the same cores.

    Raises:
        ClusterError: Every try failed; the message is Ray's reason in one line.
    """
    import psutil

    me = psutil.Process()
    for attempt in range(1, tries + 1):
        before = {p.pid for p in me.children(recursive=True)}
        try:
            start()
            return
        except Exception as err:  # Ray raises a bare Exception for its startup timeout
            left = [p for p in me.children(recursive=True) if p.pid not in before]
            for process in left:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(left, timeout=10)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if attempt == tries:
                raise ClusterError(
                    f"Ray's local cluster did not start ({tries} tries): {reason}"
                ) from None
            print(f"Ray's local cluster did not start ({reason}); trying again", file=sys.stderr)


def driver_path() -> str:
    """The driver's own import folders, for the workers of a local cluster.

    A user's ``model.factory: "mypackage.nets:classifier"`` must import in the trainer and in
    every scorer, not only in the driver; on a local cluster the workers run on this machine,
    so giving them the driver's source folders (not the interpreter's own) does exactly that.
    On a remote cluster, install the package on the nodes (image or wheel) instead.
    """
    skip = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    folders: list[str] = []
    for entry in [os.getcwd(), *sys.path, *os.environ.get("PYTHONPATH", "").split(os.pathsep)]:
        real = os.path.realpath(entry) if entry else ""
        if not real or not os.path.isdir(real) or real in folders:
            continue
        if any(real == s or real.startswith(s + os.sep) for s in skip):
            continue
        folders.append(real)
    return os.pathsep.join(folders)


def cluster_gpus() -> float:
    """GPUs the connected cluster has in total (0 on CPU-only clusters)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def scorer_gpus(cfg: ScoringConfig) -> float:
    """GPU share per scorer: the configured share, else an even split of what the trainer leaves.

    With one GPU the trainer takes half and the scorers share the other half; with more, the
    trainer takes one and the scorers share the rest, at most one GPU each.
    """
    if cfg.gpus_per_scorer is not None:
        return cfg.gpus_per_scorer
    gpus = cluster_gpus()
    if gpus < 1:
        return 0.0
    free = 0.5 if gpus < 2 else gpus - 1.0
    return min(1.0, free / cfg.num_scorers)


def trainer_gpus(cfg: TrainingConfig) -> float:
    """GPUs for the trainer: the configured number, else one (half of a lone GPU), else none."""
    if cfg.num_gpus is not None:
        return cfg.num_gpus
    gpus = cluster_gpus()
    return 1.0 if gpus >= 2 else 0.5 if gpus >= 1 else 0.0
