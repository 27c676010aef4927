"""Ray Serve wiring: the edge where :class:`~activestream.deploy.app.LabelingAPI` is deployed.

``serve run deploy/serve_config.yaml`` imports :func:`build_app`; ``activestream serve`` calls
:func:`start` for the same result in one command. Either way the loop's actors (trainer,
weights board, query queue, scoring rounds) run in a named actor that the app reaches by
handle, so several replicas share one model.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray import serve
from ray.serve.config import BackpressureConfig

from activestream.actors.items import ItemStore
from activestream.config import Config, load_config
from activestream.deploy.app import LabelingAPI
from activestream.pipelines.runtime import LOOP_ACTOR, free_port
from activestream.sources.resolve import resolve_dataset


class _ReusableSockets:
    """The ``socket`` module as Ray's HTTP helpers see it, with ``SO_REUSEADDR`` on new sockets.

    Ray 2.60 binds a replica's own HTTP socket (direct ingress) without ``SO_REUSEADDR``. After
    a replica, or the whole service, is killed with connections open, the port keeps them in
    the kernel's TIME_WAIT for 60 s and every replacement fails to bind until then (measured:
    the service answered again after 61-64 s; 7 s when no connection was open). With the
    option set a socket may bind over TIME_WAIT, never over a live listener.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    @staticmethod
    def socket(*args: Any, **kwargs: Any) -> socket.socket:  # noqa: D102
        sock = socket.socket(*args, **kwargs)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock


class _Ingress(LabelingAPI):
    """Serve builds the ASGI app on each replica, after the constructor."""

    def __init__(self, **kwargs: Any) -> None:
        from ray.serve._private import http_util

        # The constructor runs before the replica binds its port (direct ingress).
        http_util.socket = _ReusableSockets()  # type: ignore[assignment]
        super().__init__(**kwargs)

    def __serve_build_asgi_app__(self) -> Any:
        return self.build_asgi_app()


LabelingDeployment = serve.deployment(
    serve.ingress()(_Ingress),
    name="LabelingAPI",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,  # handlers are async and only await actor calls
    # Admission control: past 200 in flight and 100 waiting at the proxy, requests are turned
    # away at once with 503 and Retry-After instead of queueing for seconds.
    max_queued_requests=100,
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1),
    # A killed replica fails its next check at once (its actor is gone): checking every 2 s
    # instead of 10 brings a replacement up sooner. The timeout stays long, so a replica that
    # is only slow on a busy machine is never killed for it.
    health_check_period_s=2,
    health_check_timeout_s=30,
)


def bind(cfg: Config, *, detached: bool = False, wait: bool = True) -> Any:
    """Start (or find) the loop actor and bind the ingress to its actor handles.

    ``wait=False`` binds as soon as the loop's actors are asked for: the replica then starts
    while they build, and :func:`start` waits for the loop after ``serve.run``.

    ``serve.reserved_cpus`` unset keeps one core for serving: on 2 cores a scoring pass and a
    training step otherwise hold both for seconds at a time, nice values notwithstanding
    (measured at 25 req/s while rounds ran: p99 2-5 s sharing every core, 40 ms with one kept).
    """
    if cfg.serve.reserved_cpus is None:
        cfg = cfg.with_overrides({"serve.reserved_cpus": 1})
    from activestream.pipelines.loop import start_loop_actor

    pool, _ = resolve_dataset(cfg)
    host = start_loop_actor(cfg, pool, detached=detached, wait=wait)
    handles = ray.get(host.handles.remote())
    return LabelingDeployment.bind(
        ledger=handles["ledger"],
        trainer=handles["trainer"],
        queue=handles["queue"],
        board=handles["board"],
        loop=host,
        label_studio=handles["label_studio"],
        items=ItemStore(pool, storage=cfg.storage),
        token=os.environ.get("ACTIVESTREAM_TOKEN") or None,
        max_body_bytes=cfg.serve.max_body_bytes,
        control_timeout=cfg.serve.request_timeout,
        max_waiting=cfg.serve.max_waiting,
        task=ray.get(host.task_name.remote()),
    )


def build_app(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run`` / ``serve deploy`` (``args``: config path)."""
    cfg = load_config(args.get("config"))
    if args.get("data_dir"):
        cfg = cfg.with_overrides({"data.cache_dir": str(args["data_dir"])})
    return bind(cfg, detached=True)


def start(cfg: Config, *, host: str = "127.0.0.1", port: int = 8000, direct: bool = False) -> None:
    """Run the app on ``host:port`` in the connected Ray cluster (non-blocking).

    ``direct``: the cluster was started with :func:`~activestream.pipelines.runtime.
    direct_ingress_env` for ``port``, so the replica binds ``port`` itself and Serve's proxy
    (still started: Serve expects one) listens on a free port of its own.
    """
    proxy_port = free_port(host) if direct else port
    serve.start(http_options={"host": host, "port": proxy_port})
    # The replica starts while the trainer and the ledger build (each takes seconds); a
    # failed one ends the start here, with its constructor's error.
    serve.run(bind(cfg, wait=False), name="activestream", route_prefix="/", blocking=False)
    ray.get(ray.get_actor(LOOP_ACTOR).ready.remote())


@contextlib.contextmanager
def running(
    cfg: Config, *, port: int, token: str | None = None, ready_timeout: float = 240.0
) -> Iterator[str]:
    """The whole app on ``127.0.0.1:port`` for benchmarks and tests; yields its base URL.

    Returns once a scoring round has filled the query queue. On exit Serve is shut down (so
    the next app can bind its own port) and the loop is stopped, which writes a checkpoint.
    """
    import requests

    if token:
        os.environ["ACTIVESTREAM_TOKEN"] = token
    try:
        start(cfg, port=port)
    finally:
        os.environ.pop("ACTIVESTREAM_TOKEN", None)
    base = f"http://127.0.0.1:{port}"
    queue = ray.get(ray.get_actor(LOOP_ACTOR).handles.remote())["queue"]
    deadline = time.monotonic() + ready_timeout
    # Asked of the queue, not through GET /queries: a lease would hide an item from the caller.
    while not (ray.get(queue.round_count.remote()) and requests.get(f"{base}/healthz").ok):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no scoring round finished in {ready_timeout:.0f} s")
        time.sleep(0.5)
    try:
        yield base
    finally:
        serve.shutdown()
        loop = ray.get_actor(LOOP_ACTOR)
        ray.get(loop.stop.remote())
        ray.kill(loop)
