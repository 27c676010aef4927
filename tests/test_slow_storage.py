"""A pool on an S3 server that answers slowly: serving and label intake must not wait on it.

A TCP proxy in front of the session's real S3 server (moto) holds every request for
``delay`` seconds before passing it on. The pool's shards are written straight to the server
and read through the proxy, so only the reads under test are slow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from activestream.actors.items import ItemStore
from activestream.actors.ledger import LabelLedger
from activestream.actors.queue import QueryQueue
from activestream.actors.trainer import TrainerService
from activestream.actors.weights import WeightsBoard
from activestream.config import ModelConfig, StorageConfig, TrainingConfig
from activestream.deploy.app import LabelingAPI
from activestream.pipelines.runtime import free_port
from activestream.sources.shards import ShardSet, open_shards
from activestream.sources.writing import write_shards

pytestmark = pytest.mark.slow

CLASSES = tuple(str(k) for k in range(10))
FAST = 1.0  # seconds: what "answers at once" means on a busy two-core machine


class SlowProxy:
    """Forwards TCP to ``target`` and, while ``delay`` > 0, holds each request that long.

    Only the client-to-server direction is delayed (each chunk a client sends, which for S3
    is one request or part of one); answers flow back at once. Runs its own event loop in a
    daemon thread, so it is slow for everyone but blocks no caller's thread.
    """

    def __init__(self, target: str) -> None:
        parsed = urlparse(target)
        self.host, self.port = parsed.hostname or "127.0.0.1", int(parsed.port or 80)
        self.delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="slow-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        """The proxy's endpoint, to use in place of the server's."""
        return f"http://127.0.0.1:{self.listen_port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.listen_port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, slow=True),
            self._pipe(up_reader, writer, slow=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        try:
            while data := await src.read(1 << 16):
                if slow and self.delay > 0:
                    await asyncio.sleep(self.delay)
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    def close(self) -> None:
        """Stop the proxy's event loop."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture()
def proxy(s3_server: StorageConfig) -> Iterator[SlowProxy]:
    slow = SlowProxy(str(s3_server.endpoint_url))
    yield slow
    slow.close()


def write_pool(s3_server: StorageConfig, bucket: str, rows: int, per_shard: int) -> list[str]:
    """Random 8x8 images straight to the server (not through the proxy); returns the ids."""
    ids = [f"item-{i:04d}" for i in range(rows)]
    pixels = np.random.default_rng(0).integers(0, 256, (rows, 1, 8, 8), dtype=np.uint8)
    write_shards(
        f"s3://{bucket}/pool",
        ids,
        pixels,
        None,
        CLASSES,
        rows_per_shard=per_shard,
        storage=s3_server,
    )
    return ids


def through(proxy: SlowProxy, s3_server: StorageConfig) -> StorageConfig:
    """The server's credentials, with the proxy as the endpoint."""
    return s3_server.model_copy(update={"endpoint_url": proxy.url})


class InProcess:
    """Ray-handle-shaped access to a plain object: ``handle.method.remote(...)`` is awaitable."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        class _Method:
            remote = staticmethod(call)

        return _Method()


class Uvicorn:
    """A real HTTP server for an ASGI app, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.base = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.05)

    def close(self) -> None:
        """Ask the server to exit and wait for it."""
        self.server.should_exit = True
        self._thread.join(30)


def timed_get(url: str) -> tuple[float, requests.Response]:
    began = time.monotonic()
    response = requests.get(url, timeout=30)
    return time.monotonic() - began, response


def test_health_and_queries_answer_at_once_while_an_image_waits_on_slow_storage(
    proxy, s3_server, s3_bucket, tmp_path
):
    ids = write_pool(s3_server, s3_bucket, rows=200, per_shard=100)
    storage = through(proxy, s3_server)
    pool: ShardSet = open_shards(f"s3://{s3_bucket}/pool", storage)
    ledger = LabelLedger(str(tmp_path / "labels"), items=ItemStore(pool, storage=storage))
    ledger.start()
    api = LabelingAPI(
        ledger=InProcess(ledger),
        trainer=None,
        queue=InProcess(QueryQueue()),
        board=InProcess(WeightsBoard()),
        items=ItemStore(pool, storage=storage),  # its id index is built on the first lookup
    )
    server = Uvicorn(api.build_asgi_app())
    try:
        for route in ("healthz", "queries"):  # first calls import and build things: not timed
            assert requests.get(f"{server.base}/{route}", timeout=30).ok
        proxy.delay = 2.0
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            image = executor.submit(timed_get, f"{server.base}/items/{ids[150]}/image")
            time.sleep(0.3)  # the image request is in, waiting on storage
            answers = [
                timed_get(f"{server.base}/{route}")
                for _ in range(3)
                for route in ("healthz", "queries")
            ]
            assert not image.done(), "the store answered too fast for this test to show anything"
            waited, picture = image.result(timeout=120)
    finally:
        proxy.delay = 0.0
        server.close()
    assert all(response.ok for _, response in answers)
    assert max(seconds for seconds, _ in answers) < FAST, [s for s, _ in answers]
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    assert waited > 2.0  # it did wait on the slow store, in a worker thread


class DeadlineDownstream:
    """The trainer and queue in this process, each call cut off after ``timeout`` seconds.

    What :class:`~activestream.pipelines.loop.RayDownstream` does with ``ray.get(timeout=)``:
    a call that runs over raises and the ledger reports the trainer as not keeping up.
    """

    def __init__(self, trainer: TrainerService, queue: QueryQueue, timeout: float) -> None:
        self.trainer, self.queue, self.timeout = trainer, queue, timeout
        self._calls = concurrent.futures.ThreadPoolExecutor(4)

    def _call(self, fn: Any, *args: Any) -> Any:
        return self._calls.submit(fn, *args).result(timeout=self.timeout)

    def forward(self, start: int, records: list[dict[str, Any]]) -> int:  # noqa: D102
        return self._call(self.trainer.ingest, start, records)

    def trainer_offset(self) -> int:  # noqa: D102
        return self._call(self.trainer.applied_offset)

    def retire(self, ids: list[str], labels: list[int] | None = None) -> None:  # noqa: D102
        self._call(self.queue.mark_labeled, ids, labels)

    def retired(self) -> int:  # noqa: D102
        return self._call(self.queue.stats)["labeled"]


def slow_trainer(proxy: SlowProxy, s3_server: StorageConfig, bucket: str) -> TrainerService:
    """A service trainer whose pool (index and pixels, nothing read yet) is behind the proxy."""
    storage = through(proxy, s3_server)
    pool = open_shards(f"s3://{bucket}/pool", storage)
    return TrainerService(
        training=TrainingConfig(buffer_size=4, steps_per_update=2),
        model=ModelConfig(),
        items=ItemStore(pool, storage=storage),
        publish=lambda weights: None,
        put=lambda state: state,
    )


def test_labels_reach_the_trainer_in_time_while_its_pixel_reads_are_slow(
    proxy, s3_server, s3_bucket, tmp_path: Path
):
    ids = write_pool(s3_server, s3_bucket, rows=100, per_shard=100)
    trainer = slow_trainer(proxy, s3_server, s3_bucket)
    trainer.start()
    fast_pool = open_shards(f"s3://{s3_bucket}/pool", s3_server)  # the ledger's checks: not slow
    ledger = LabelLedger(
        str(tmp_path / "labels"),
        items=ItemStore(fast_pool, storage=s3_server),
        downstream=DeadlineDownstream(trainer, QueryQueue(), timeout=1.0),
        sync_seconds=0.5,
        background=True,
    )
    ledger.start()
    proxy.delay = 2.0
    try:
        for k in range(2):
            ledger.add([{"id": i, "label": k} for i in ids[4 * k : 4 * k + 4]])
            assert ledger.flush(timeout=30)
        status = ledger.status()
        held = trainer.held_labels()
    finally:
        proxy.delay = 0.0
        ledger.stop()
        trainer.stop()
    assert status["trainer_ok"] and status["degraded_since"] is None
    assert held == {i: k for k in range(2) for i in ids[4 * k : 4 * k + 4]}


def test_the_training_thread_trains_on_labels_once_their_slow_pixel_reads_finish(
    proxy, s3_server, s3_bucket
):
    ids = write_pool(s3_server, s3_bucket, rows=100, per_shard=100)
    trainer = slow_trainer(proxy, s3_server, s3_bucket)
    trainer.start()
    proxy.delay = 1.0
    try:
        began = time.monotonic()
        assert trainer.ingest(0, [{"id": i, "label": 1} for i in ids[:4]]) == 4
        recorded = time.monotonic() - began
        deadline = time.monotonic() + 120
        while trainer.version < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        trained = time.monotonic() - began
    finally:
        proxy.delay = 0.0
        trainer.stop()
    assert recorded < FAST
    assert trainer.version == 1 and trainer.unfetched == 0 and not trainer.errors
    assert trained > 1.0  # it did wait on the slow store: in the training thread
