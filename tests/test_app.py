"""LabelingAPI as a plain class: routes awaited directly, with handles that live in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from fastapi import HTTPException

from activestream.actors.items import ItemStore
from activestream.config import Config
from activestream.deploy.app import LabelingAPI
from activestream.sources.resolve import resolve_dataset


class _Stalled:
    """A trainer handle whose every call ends as ``asyncio.wait_for`` ends on Python 3.10.

    There ``asyncio.TimeoutError`` is not the builtin ``TimeoutError`` (they are one class
    only from 3.11 on), so raising it here specifies the 3.10 behaviour on any version.
    """

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise asyncio.TimeoutError

        class _Method:
            remote: Callable[..., Coroutine[Any, Any, Any]] = staticmethod(fail)

        return _Method()


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> ItemStore:
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path_factory.mktemp("cache"))})
    pool, _ = resolve_dataset(cfg)
    return ItemStore(pool)


def api_with(items: ItemStore, trainer: Any = None) -> LabelingAPI:
    return LabelingAPI(ledger=None, trainer=trainer, queue=None, board=None, items=items)


def test_a_trainer_call_timing_out_as_on_python_3_10_is_a_503_with_retry_after(items):
    with pytest.raises(HTTPException) as raised:
        asyncio.run(api_with(items, _Stalled()).model())
    assert raised.value.status_code == 503
    assert raised.value.headers == {"Retry-After": "2"}


class _Board:
    """A weights board handle that answers ``version`` after ``delay`` s, or never (restarting)."""

    def __init__(self, version: int | None, delay: float = 0.0) -> None:
        async def latest() -> int:
            await asyncio.sleep(3600 if version is None else delay)
            return version

        self.latest_version = type("_Method", (), {"remote": staticmethod(latest)})()


def test_the_version_comes_from_the_board(items):
    api = LabelingAPI(ledger=None, trainer=None, queue=None, board=_Board(7), items=items)
    assert asyncio.run(api.version()) == 7


def test_a_board_that_does_not_answer_leaves_the_last_version_within_the_deadline(items):
    api = LabelingAPI(
        ledger=None, trainer=None, queue=None, board=_Board(7), items=items, board_timeout=0.2
    )
    asyncio.run(api.version())
    api.board, api._version_at = _Board(None), float("-inf")  # restarting; the cache is stale

    async def timed() -> tuple[int, float]:
        began = asyncio.get_running_loop().time()
        version = await api.version()
        return version, asyncio.get_running_loop().time() - began

    version, waited = asyncio.run(timed())
    assert version == 7
    assert waited < 1.0


def test_a_replica_that_has_seen_no_version_waits_for_the_board(items):
    api = LabelingAPI(
        ledger=None, trainer=None, queue=None, board=_Board(None), items=items, board_timeout=0.1
    )

    async def bounded() -> int:
        return await asyncio.wait_for(api.version(), 0.5)

    with pytest.raises(asyncio.TimeoutError):  # still waiting; never a made-up -1
        asyncio.run(bounded())


def test_requests_racing_a_fresh_replicas_first_board_call_all_report_its_answer(items):
    api = LabelingAPI(ledger=None, trainer=None, queue=None, board=_Board(7, 0.1), items=items)

    async def together() -> list[int]:
        return list(await asyncio.gather(*(api.version() for _ in range(5))))

    assert asyncio.run(together()) == [7] * 5


def test_a_board_that_restarted_empty_never_lowers_the_version(items):
    api = LabelingAPI(ledger=None, trainer=None, queue=None, board=_Board(7), items=items)
    asyncio.run(api.version())
    api.board, api._version_at = _Board(-1), float("-inf")
    assert asyncio.run(api.version()) == 7


def test_an_unknown_item_id_is_a_404_from_the_worker_thread_lookup(items):
    with pytest.raises(HTTPException) as raised:
        asyncio.run(api_with(items).item_image("no-such-item"))
    assert raised.value.status_code == 404
    assert "no-such-item" in raised.value.detail


def test_a_known_item_id_renders_its_pixels_as_a_png(items):
    response = asyncio.run(api_with(items).item_image(str(items.ids()[0])))
    assert response.media_type == "image/png"
    assert response.body.startswith(b"\x89PNG")


def basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [basic("label-studio", "s3cret"), basic("", "s3cret"), "Bearer s3cret"],
)
def test_label_studio_may_authenticate_with_basic_auth_or_the_bearer_token(items, authorization):
    api = LabelingAPI(
        ledger=None, trainer=None, queue=None, board=None, items=items, token="s3cret"
    )
    api._authorize_ml(authorization)  # no exception: accepted


@pytest.mark.parametrize(
    "authorization", [None, basic("label-studio", "wrong"), "Basic !!notbase64", "Bearer wrong"]
)
def test_label_studio_calls_without_the_token_are_401(items, authorization):
    api = LabelingAPI(
        ledger=None, trainer=None, queue=None, board=None, items=items, token="s3cret"
    )
    with pytest.raises(HTTPException) as raised:
        api._authorize_ml(authorization)
    assert raised.value.status_code == 401


def test_label_studio_routes_answer_404_when_the_deployment_has_no_bridge(items):
    with pytest.raises(HTTPException) as raised:
        asyncio.run(api_with(items).ls_health())
    assert raised.value.status_code == 404


class _BusyQueue:
    """A query queue handle whose lease answers only after an hour (an overloaded actor)."""

    def __init__(self) -> None:
        self.calls = 0

        async def lease(n: int) -> list:
            self.calls += 1
            await asyncio.sleep(3600)
            return []

        self.lease = type("_Method", (), {"remote": staticmethod(lease)})()


def test_a_busy_queue_is_a_503_with_retry_after_within_the_request_timeout(items):
    api = LabelingAPI(
        ledger=None, trainer=None, queue=_BusyQueue(), board=None, items=items,
        control_timeout=0.2,
    )  # fmt: skip

    async def timed() -> tuple[HTTPException, float]:
        began = asyncio.get_running_loop().time()
        with pytest.raises(HTTPException) as raised:
            await api._control("query queue", api.queue.lease, 4)
        return raised.value, asyncio.get_running_loop().time() - began

    error, seconds = asyncio.run(timed())
    assert error.status_code == 503 and error.headers == {"Retry-After": "1"}
    assert "busy" in error.detail and 0.2 <= seconds < 1.0


def test_past_max_waiting_a_request_is_refused_at_once_without_calling_the_actor(items):
    queue = _BusyQueue()
    api = LabelingAPI(
        ledger=None, trainer=None, queue=queue, board=None, items=items,
        control_timeout=5.0, max_waiting=2,
    )  # fmt: skip

    async def third_while_two_wait() -> tuple[HTTPException, float]:
        waiting = [asyncio.ensure_future(api._control("query queue", queue.lease, 4)) for _ in "ab"]
        await asyncio.sleep(0.05)  # both are awaiting the queue now
        began = asyncio.get_running_loop().time()
        with pytest.raises(HTTPException) as raised:
            await api._control("query queue", queue.lease, 4)
        seconds = asyncio.get_running_loop().time() - began
        for w in waiting:
            w.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return raised.value, seconds

    error, seconds = asyncio.run(third_while_two_wait())
    assert error.status_code == 503 and error.headers == {"Retry-After": "1"}
    assert "capacity" in error.detail and seconds < 0.05
    assert queue.calls == 2  # the refused request never reached the queue
    assert api._waiting == 0  # cancelled waits give their places back
