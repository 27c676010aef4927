"""The HTTP API: a FastAPI app whose routes talk to the loop's actors by handle.

:class:`LabelingAPI` is a plain class; :mod:`activestream.deploy.serve_app` applies
``serve.ingress`` and ``serve.deployment`` at the edge. Contract: the HTTP table in the design
document.

Rules a client can rely on:

* Writes (``POST``) and ``GET /queries`` (it takes leases) need
  ``Authorization: Bearer $ACTIVESTREAM_TOKEN`` when that variable is set, compared in constant
  time; other reads stay open.
* ``POST /queries/release`` gives leases back early (a skipped item returns to the queue); ids
  not leased right now are ignored, and the answer counts those released.
* Bad input is a 4xx with a JSON ``detail``: 422 for malformed or out-of-range data, 404 for an
  unknown id, 409 for a different label on an id already labeled (the first answer stands;
  send ``"relabel": true`` to replace it, as the labeling page's undo does), 413 for a body
  over ``max_body_bytes``. A rejected batch changes nothing.
* Repeating the same (id, label) is idempotent: it counts as a duplicate.
* A 2xx on ``POST /labels`` means the labels are in the durable label log. While the trainer
  restarts, labels are still accepted and ``/queries`` keeps serving the last round;
  ``/healthz`` says ``degraded`` and trainer-backed reads (``/model``, ``/predict``) answer 503
  with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from activestream.errors import StorageError

STATIC = Path(__file__).parent / "static"
#: Time a detector may take per uploaded image on top of ``trainer_timeout`` (about 60 ms an
#: image of 96 px on one CPU core; four times that, as training shares the cores).
PER_IMAGE_SECONDS = 0.25


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Label(_Strict):
    """One answer from an annotator."""

    id: str = Field(min_length=1, max_length=512)
    label: int = Field(ge=0)


class LabelBatch(_Strict):
    """A batch of answers; validated as a whole. ``annotator`` is recorded in the label log."""

    labels: list[Label] = Field(min_length=1, max_length=10_000)
    relabel: bool = False
    annotator: str | None = Field(None, max_length=256)


class LabelResult(BaseModel):
    """How many labels were new, and how many repeated an earlier answer."""

    accepted: int
    duplicates: int


class QueryItem(BaseModel):
    """A leased item: ask a person for its label."""

    id: str
    score: float
    model_version: int
    explored: bool = False  # a random pick (exploration or cold start), not the sampler's


class Queries(BaseModel):
    """Leased queries and the model version serving now."""

    model_version: int
    queries: list[QueryItem]


class Release(_Strict):
    """Leased ids to hand back before their lease runs out (the annotator skipped them)."""

    ids: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1, max_length=1000
    )


class Released(BaseModel):
    """How many of the ids were leased and are now free for anyone to lease."""

    released: int


class PredictRequest(_Strict):
    """Images as nested lists of shape (C, H, W) or flat C*H*W, values in [0, 1]."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[list[Any]] = Field(min_length=1, max_length=1024)


class Prediction(BaseModel):
    """Most likely class and the full distribution."""

    label: int
    probs: list[float]


class Predictions(BaseModel):
    """Predictions of one model version."""

    model_version: int
    predictions: list[Prediction]


class ModelInfo(BaseModel):
    """The model serving now."""

    version: int
    labels_seen: int
    labels_trained: int | None = None  # of labels_seen, those this version was trained on
    arch: str
    classes: list[str]
    recent_accuracy: float | None = None  # detection: the share of images got wholly right
    task: str = "classification"


class Health(BaseModel):
    """Liveness and the current version; ``degraded`` while the trainer catches up.

    Also ``degraded`` while the label log or checkpoint store cannot be written: ``reason`` then
    names the location and the cause (missing bucket, denied access, unreachable endpoint).
    """

    status: str
    model_version: int
    labels_logged: int | None = None
    reason: str | None = None


def _reason(err: BaseException) -> str:
    """The original message of an error raised inside an actor (Ray wraps it)."""
    cause = getattr(err, "cause", None) or err
    return str(cause.args[0]) if cause.args else type(cause).__name__


def _storage_unavailable(request: Request, err: Exception) -> JSONResponse:
    """503 for storage the service cannot write now: the client retries, nothing was logged.

    A storage failure is the operator's to fix, not the client's input, so it is neither a 4xx
    nor a 500; ``Retry-After`` tells well-behaved clients to come back.
    """
    return JSONResponse({"detail": _reason(err)}, status_code=503, headers={"Retry-After": "5"})


def _reject(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


class LabelingAPI:
    """Routes of the Serve ingress; holds only actor handles and the item store.

    Args:
        ledger: LabelLedger actor handle (validates, logs durably, forwards to the trainer).
        trainer: TrainerService actor handle.
        queue: QueryQueue actor handle.
        board: WeightsBoard actor handle.
        loop: ActiveLoop actor handle (round counters for metrics), optional.
        token: Bearer token every write must carry; None leaves writes open.
        items: ItemStore of the pool, to render item images.
        max_body_bytes: Larger request bodies get 413 before they are parsed.
        max_queries: Largest ``n`` a client may lease at once.
        trainer_timeout: Seconds to wait for the trainer before answering 503.
        control_timeout: Seconds to wait for the queue or the ledger before answering 503
            with ``Retry-After``: past what the machine holds, a quick no beats a long wait.
        max_waiting: Calls to the queue or the ledger this replica lets wait at once; past
            it a request gets 503 with ``Retry-After`` before it costs an actor call.
        version_ttl: How stale the reported model version may be, in seconds.
        board_timeout: Seconds to wait for the weights board before reporting the last
            version seen (a restarting board must not hold up every read route).
        task: The pool's task: ``detection`` takes box labels and answers boxes
            (:mod:`activestream.deploy.boxes`); the routes are the same.
    """

    def __init__(
        self,
        *,
        ledger: Any,
        trainer: Any,
        queue: Any,
        board: Any,
        items: Any,
        loop: Any = None,
        label_studio: Any = None,
        token: str | None = None,
        max_body_bytes: int = 1 << 20,
        max_queries: int = 100,
        trainer_timeout: float = 5.0,
        control_timeout: float = 1.0,
        max_waiting: int = 32,
        version_ttl: float = 0.1,
        board_timeout: float = 0.5,
        task: str = "classification",
    ) -> None:
        self.task = task
        self.ledger = ledger
        self.trainer = trainer
        self.trainer_timeout = trainer_timeout
        self.control_timeout = control_timeout
        self.max_waiting = max_waiting
        self._waiting = 0  # control calls awaited now (one event loop: no lock needed)
        self.version_ttl = version_ttl
        self.board_timeout = board_timeout
        self._version, self._version_at = -1, float("-inf")
        self._box_classes: list[str] | None = None  # a detection pool's, fixed with its data
        self._version_call: asyncio.Future[None] | None = None
        self.queue = queue
        self.board = board
        self.loop = loop
        self.label_studio = label_studio
        self.items = items
        self._items_lock = threading.Lock()
        self.max_body_bytes = max_body_bytes
        self.max_queries = max_queries
        self.token = token or None
        self._page_html = (STATIC / "index.html").read_text()
        self._box_editor_js = (STATIC / "boxes.js").read_text()

    def build_asgi_app(self) -> FastAPI:
        """The FastAPI app with this instance's routes (bound methods, no globals)."""
        api = FastAPI(
            title="activestream",
            description="Online active learning: queries out, labels in, model always current.",
            version="0.1.0",
        )
        predictions: type[BaseModel] = Predictions
        label_batch: type[BaseModel] = LabelBatch
        if self.task == "detection":  # the same routes, with boxes in and out
            from activestream.deploy.boxes import BoxLabelBatch, BoxPredictions

            predictions, label_batch = BoxPredictions, BoxLabelBatch
        routes: list[tuple[str, Any, str, Any]] = [
            ("/healthz", self.healthz, "GET", Health),
            ("/queries", self.queries, "GET", Queries),
            ("/queries/release", self.release, "POST", Released),
            ("/items/{item_id:path}/image", self.item_image, "GET", None),
            ("/labels", self.labels, "POST", LabelResult),
            ("/predict", self.predict, "POST", predictions),
            ("/model", self.model, "GET", ModelInfo),
            ("/model/weights", self.weights, "GET", None),
            ("/metrics", self.metrics, "GET", None),
            ("/", self.page, "GET", None),
            ("/static/boxes.js", self.box_editor, "GET", None),
            ("/label-studio/health", self.ls_health, "GET", None),
            ("/label-studio/setup", self.ls_setup, "POST", None),
            ("/label-studio/predict", self.ls_predict, "POST", None),
            ("/label-studio/webhook", self.ls_webhook, "POST", None),
        ]
        bodies = {"/labels": label_batch, "/queries/release": Release, "/predict": PredictRequest}
        for path, endpoint, method, model in routes:
            extra: dict[str, Any] = {}
            if path in bodies:  # parsed by hand (size limit first); documented for OpenAPI
                extra["openapi_extra"] = {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{bodies[path].__name__}"}
                            }
                        },
                    }
                }
            api.add_api_route(
                path,
                endpoint,
                methods=[method],
                response_model=model,
                response_class=JSONResponse
                if model is not None or path.startswith("/label-studio")
                else HTMLResponse
                if path == "/"
                else Response,
                **extra,
            )
        _add_schemas(api, bodies.values())
        api.add_exception_handler(StorageError, _storage_unavailable)
        return api

    # -- helpers --------------------------------------------------------------------------
    def _authorize(self, authorization: str | None) -> None:
        if self.token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not authorization or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _reject(413, f"body over {self.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise _reject(413, f"body over {self.max_body_bytes} bytes")
        return body

    async def _parse(self, request: Request, model: type[BaseModel]) -> Any:
        from pydantic import ValidationError

        body = await self._body(request)
        try:
            return model.model_validate_json(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise _reject(422, f"{where}: {first['msg']}") from None

    async def version(self) -> int:
        """Newest published version, at most ``version_ttl`` seconds old, never lower.

        Every read route reports it; caching it saves one actor call per request, which is a
        large share of the work on a small machine. One board call at a time: the request that
        starts it waits at most ``board_timeout`` and the others take the cached version, so a
        restarting board holds nothing up. A replica that has seen no version yet has nothing
        better to say: it waits for the board.
        """
        if time.monotonic() - self._version_at <= self.version_ttl:
            return self._version
        if self._version_call is None or self._version_call.done():
            self._version_call = asyncio.ensure_future(self._ask_board())
            if self._version >= 0:
                await asyncio.wait({self._version_call}, timeout=self.board_timeout)
        if self._version < 0:
            await asyncio.shield(self._version_call)
        return self._version

    async def _ask_board(self) -> None:
        from ray.exceptions import RayActorError

        try:
            latest = int(await self.board.latest_version.remote())
        except RayActorError:  # restarting: the last answer is the best one there is
            return
        # never lower: a weights board that just restarted says -1 for a moment
        self._version = max(self._version, latest)
        self._version_at = time.monotonic()

    async def _trainer(self, call: Any, timeout: float | None = None) -> Any:
        """Await a trainer call; 503 with ``Retry-After`` while the trainer restarts.

        ``timeout`` (default ``trainer_timeout``) is for calls whose work grows with the
        request, such as the boxes of many uploaded images.

        ``asyncio.TimeoutError`` is named as well as ``TimeoutError``: they are one class only
        from Python 3.11 on, and on 3.10 ``wait_for`` raises the former, which would otherwise
        escape as a 500.
        """
        from ray.exceptions import RayActorError

        try:
            wait = self.trainer_timeout if timeout is None else timeout
            return await asyncio.wait_for(asyncio.ensure_future(call), wait)
        except (RayActorError, TimeoutError, asyncio.TimeoutError):
            raise HTTPException(
                status_code=503,
                detail="the trainer is restarting; labels are still accepted, retry shortly",
                headers={"Retry-After": "2"},
            ) from None

    async def _control(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of the ledger or the queue and await it, with admission control.

        Past ``max_waiting`` calls awaited at once the request is answered 503 with
        ``Retry-After`` before any call is made: past what the machine holds, a quick no beats
        a long wait. An actor that restarts (in about a second or two, the ledger from the
        label log) gets 503 as well; a client that retries loses nothing, since a repeated
        label counts as a duplicate.
        """
        from ray.exceptions import RayActorError

        if self._waiting >= self.max_waiting:
            raise HTTPException(
                status_code=503,
                detail=f"the service is at capacity ({self._waiting} requests waiting on the "
                f"{what}); retry shortly",
                headers={"Retry-After": "1"},
            )
        call = method.remote(*args, **kwargs)
        self._waiting += 1
        try:
            return await asyncio.wait_for(asyncio.ensure_future(call), self.control_timeout)
        except RayActorError:
            raise HTTPException(
                status_code=503,
                detail=f"the {what} is restarting; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        except (TimeoutError, asyncio.TimeoutError):
            # Overloaded: the call may still complete (a label is then logged, and its retry
            # counts as a duplicate; a lease then expires unanswered); nothing is lost.
            raise HTTPException(
                status_code=503,
                detail=f"the {what} is busy; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        finally:
            self._waiting -= 1

    # -- routes ---------------------------------------------------------------------------
    async def healthz(self) -> Health:
        """Liveness, the model version, and ``degraded`` while the trainer catches up."""
        from ray.exceptions import RayActorError

        try:
            status = await self.ledger.status.remote()
        except RayActorError:  # it rebuilds from the label log; nothing accepted is lost
            return Health(
                status="degraded",
                model_version=await self.version(),
                reason="the label ledger is restarting (labels get 503 with Retry-After)",
            )
        reasons = []
        if status.get("storage_problem"):
            reasons.append(f"storage: {status['storage_problem']}")
        if not status["trainer_ok"]:
            reasons.append("trainer starting, restarting or catching up on the label log")
        return Health(
            status="degraded" if reasons else "ok",
            model_version=await self.version(),
            labels_logged=status["labels"],
            reason="; ".join(reasons) or None,
        )

    async def queries(
        self,
        n: Annotated[int, Query(ge=1, le=1000)] = 1,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Queries:
        """Lease the next ``n`` queries (exploit with probability p, explore otherwise).

        A read that changes state: each lease hides its items from everyone else, so it needs
        the token like a write, or anyone could drain the queue.
        """
        self._authorize(authorization)
        if n > self.max_queries:
            raise _reject(422, f"n must be at most {self.max_queries}")
        leased = await self._control("query queue", self.queue.lease, n)
        return Queries(
            model_version=await self.version(),
            queries=[
                QueryItem(
                    id=q.id, score=q.score, model_version=q.model_version, explored=q.explored
                )
                for q in leased
            ],
        )

    async def release(
        self, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Released:
        """Give leases back early, so a skipped item goes to the next annotator at once.

        Without this a skipped item would sit leased until ``lease_seconds`` ran out. Ids that
        are not leased now (never leased, expired, labeled, released twice) are ignored: a
        retried or late release must not fail.
        """
        self._authorize(authorization)
        body: Release = await self._parse(request, Release)
        released = await self._control("query queue", self.queue.release, body.ids)
        return Released(released=int(released))

    async def item_image(self, item_id: str) -> Response:
        """The item's original bytes, or decoded pixels as a PNG at native size.

        Everything that touches the item store runs in a worker thread, the id lookup included:
        the store builds its id index from every shard's ``id`` column on first use and lists
        the pool again on a miss, and either may be a slow read from S3. The event loop, which
        also answers ``/healthz`` and ``/queries``, must never wait on storage.
        """
        from activestream.actors.items import UnknownItem

        try:
            data, media = await asyncio.to_thread(self._image_bytes, item_id)
        except UnknownItem:
            raise _reject(404, f"unknown id {item_id!r}") from None
        return Response(data, media_type=media)

    def _image_bytes(self, item_id: str) -> tuple[bytes, str]:
        """Read and encode one item's image (in a worker thread; see :meth:`item_image`).

        Raises:
            UnknownItem: ``item_id`` is not in the pool.
        """
        from PIL import Image

        with self._items_lock:  # the store's index and shard cache are not thread-safe
            original = self.items.original(item_id)
            x = None if original is not None else self.items.get([item_id])[0]  # (C, H, W)
        if original is not None:
            return original
        pixels = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "image/png"

    async def labels(
        self, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> LabelResult:
        """Accept a batch of labels: durable in the label log before the answer leaves."""
        from activestream.actors.labels import LabelConflict, LabelError, UnknownId

        self._authorize(authorization)
        if self.task == "detection":
            from activestream.deploy.boxes import BoxLabelBatch

            boxes: BoxLabelBatch = await self._parse(request, BoxLabelBatch)
            batch: Any = boxes
            records = boxes.records()
        else:
            batch = await self._parse(request, LabelBatch)
            records = [label.model_dump() for label in batch.labels]
        try:
            result = await self._control(
                "label ledger",
                self.ledger.add,
                records,
                relabel=batch.relabel,
                annotator=batch.annotator,
            )
        except LabelConflict as err:
            raise _reject(409, _reason(err)) from None
        except UnknownId as err:
            raise _reject(404, _reason(err)) from None
        except LabelError as err:
            raise _reject(422, _reason(err)) from None
        return LabelResult(accepted=result.accepted, duplicates=result.duplicates)

    async def predict(
        self, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        """Class probabilities from the trainer's current model (boxes, for a detector).

        The body is JSON (``{"inputs": [array, ...]}`` of pixel values in [0, 1]), an image file
        (``image/*``), or a multipart form with one or more image files. Images are decoded,
        converted and resized to the pool's stored shape exactly as pool items are; the model's
        input transform then applies to both alike.
        """
        self._authorize(authorization)
        ctype = request.headers.get("content-type", "").lower()
        if self.task == "detection":
            return await self._predict_boxes(request, ctype)
        shape = self.items.shape
        if ctype.startswith(("image/", "multipart/form-data", "application/octet-stream")):
            body = await self._body(request)
            x = await asyncio.to_thread(_decode_uploads, ctype, body, shape)
        else:
            parsed: PredictRequest = await self._parse(request, PredictRequest)
            try:
                x = np.asarray(parsed.inputs, dtype=np.float32).reshape(len(parsed.inputs), *shape)
            except (ValueError, TypeError):
                raise _reject(
                    422,
                    f"inputs: each must hold {int(np.prod(shape))} numbers (shape {list(shape)})",
                ) from None
        if not np.isfinite(x).all():
            raise _reject(422, "inputs: values must be finite numbers")
        info = await self._trainer(self.trainer.model_info.remote())
        probs = await self._trainer(self.trainer.predict_proba.remote(x))
        return Predictions(
            model_version=info["version"],
            predictions=[
                Prediction(label=int(p.argmax()), probs=p.astype(float).round(6).tolist())
                for p in probs
            ],
        )

    async def _predict_boxes(self, request: Request, ctype: str) -> Any:
        """The boxes the current detector finds in uploaded images, each at its own size.

        Boxes scoring under ``?min_score=`` (default 0.3: suggestions worth showing) are left
        out; ``min_score=0`` gives every box, as mAP needs them.
        """
        from activestream.deploy.boxes import BoxPredictions, box_predictions, decode_native

        if not ctype.startswith(("image/", "multipart/form-data", "application/octet-stream")):
            raise _reject(415, "a detection model takes image files (image/* or multipart)")
        raw = request.query_params.get("min_score", "0.3")
        try:
            floor = float(raw)
        except ValueError:
            floor = float("nan")
        if not 0.0 <= floor <= 1.0:
            raise _reject(422, f"min_score: a number in [0, 1], got {raw!r}")
        body = await self._body(request)
        files = await asyncio.to_thread(_upload_files, ctype, body)
        try:
            images = await asyncio.to_thread(decode_native, files)
        except ValueError as err:
            raise _reject(422, str(err)) from None
        if self._box_classes is None:  # the pool's object classes: asked once
            self._box_classes = (await self._trainer(self.trainer.model_info.remote()))["classes"]
        # The version that found the boxes: the newest, or the one before while an update
        # trains (boxes never wait for training).
        seconds = self.trainer_timeout + PER_IMAGE_SECONDS * len(images)
        call = self.trainer.predict_versioned.remote(images)
        version, found = await self._trainer(call, timeout=seconds)
        return BoxPredictions(
            model_version=version,
            predictions=box_predictions(found, self._box_classes, floor=floor),
        )

    async def model(self) -> ModelInfo:
        """Version, labels held (trained or buffered), architecture, classes."""
        info = await self._trainer(self.trainer.model_info.remote())
        return ModelInfo(**{k: info[k] for k in ModelInfo.model_fields if k in info})

    async def weights(self) -> Response:
        """The current state dict, as ``torch.save`` bytes."""
        import torch

        state = await self._trainer(self.trainer.state_arrays.remote())
        buf = io.BytesIO()
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, buf)
        return Response(buf.getvalue(), media_type="application/octet-stream")

    async def metrics(self) -> Response:
        """Prometheus text format."""
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            disable_created_metrics,
            generate_latest,
        )

        disable_created_metrics()

        info = await self._trainer(self.trainer.model_info.remote())
        queue = await self._control("query queue", self.queue.stats)
        version = info["version"]
        registry = CollectorRegistry()
        Gauge("activestream_model_version", "Newest model version", registry=registry).set(version)
        Counter("activestream_labels", "Labels held", registry=registry).inc(info["labels_seen"])
        Gauge("activestream_queue_depth", "Candidates leasable now", registry=registry).set(
            queue["depth"]
        )
        lag = max(0, version - queue["round_version"]) if queue["round_version"] >= 0 else version
        Gauge(
            "activestream_scoring_lag_versions",
            "Versions between the model and the round serving queries",
            registry=registry,
        ).set(lag)
        Counter("activestream_train_steps", "Optimizer steps", registry=registry).inc(
            info["train_steps"]
        )
        Gauge(
            "activestream_pseudo_labels",
            "Unlabeled items the newest model trained on with its own pseudo-labels",
            registry=registry,
        ).set(info.get("pseudo_labels", 0))
        Gauge(
            "activestream_training_backlog",
            "Labels held but not trained on yet (time-boxed updates keep it short)",
            registry=registry,
        ).set(info.get("buffered", 0))
        Counter(
            "activestream_empty_leases",
            "Lease requests answered with no item",
            registry=registry,
        ).inc(queue.get("empty_leases", 0))
        Counter(
            "activestream_reserve_leases",
            "Items leased from random reserve picks after a round's lists were spent",
            registry=registry,
        ).inc(queue.get("reserve_leased", 0))
        Gauge("activestream_pool_items", "Items in the pool", registry=registry).set(
            queue.get("pool_rows", 0)
        )
        Gauge(
            "activestream_bad_items",
            "Items of the last round whose image did not decode (skipped, never queried)",
            registry=registry,
        ).set(queue.get("bad_rows", 0))
        Gauge(
            "activestream_cold_start",
            "1 while queries are random picks until the model proves ready",
            registry=registry,
        ).set(queue.get("warming", 0))
        arms = await self._control("query queue", self.queue.arms)
        if arms:  # sampler: auto
            chance = Gauge(
                "activestream_sampler_arm_probability",
                "Chance that auto ranks the next batch by each sampler",
                ["arm"],
                registry=registry,
            )
            judged = Gauge(
                "activestream_sampler_arm_error_auc",
                "How well each sampler's scores rank the model's errors on labeled random slots "
                "(0.5: no better than chance)",
                ["arm"],
                registry=registry,
            )
            for arm, state in arms.items():
                chance.labels(arm=arm).set(state["probability"])
                judged.labels(arm=arm).set(state["error_auc"])
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    # -- Label Studio's ML backend (see activestream.actors.label_studio) -----------------
    def _authorize_ml(self, authorization: str | None) -> None:
        """Label Studio sends Basic auth (user and password from its ML settings) or a bearer.

        With ``ACTIVESTREAM_TOKEN`` set, either must carry it: as the bearer token, or as the
        Basic password (any user name).
        """
        if self.token is None:
            return
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                value = ""
            authorization = f"Bearer {value}"
        self._authorize(authorization)

    async def _ls_body(self, request: Request) -> dict[str, Any]:
        body = await self._body(request)
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            raise _reject(422, "body: not JSON") from None
        if not isinstance(parsed, dict):
            raise _reject(422, "body: expected a JSON object")
        return parsed

    async def _bridge(self, method: str, *args: Any) -> Any:
        if self.label_studio is None:
            raise _reject(404, "this deployment has no Label Studio bridge")
        try:
            return await self._control(
                "Label Studio bridge", getattr(self.label_studio, method), *args
            )
        except (ValueError, KeyError, TypeError) as err:
            raise _reject(422, _reason(err)) from None

    async def ls_health(self, authorization: Annotated[str | None, Header()] = None) -> Any:
        """Label Studio's health check (1 s budget): up, and the current model version."""
        self._authorize_ml(authorization)
        if self.label_studio is None:
            raise _reject(404, "this deployment has no Label Studio bridge")
        return await self._bridge("health")

    async def ls_setup(
        self, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        """A project's label config; answers the model version Label Studio compares."""
        self._authorize_ml(authorization)
        body = await self._ls_body(request)
        return await self._bridge("setup", body)

    async def ls_predict(
        self, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        """One prediction per task, in order; the score is the model's confidence."""
        self._authorize_ml(authorization)
        body = await self._ls_body(request)
        return await self._bridge("predict", body)

    async def ls_webhook(self, request: Request) -> Any:
        """Project events (1 s budget, no credentials: Label Studio's webhooks carry none).

        Safe open: an event only makes the bridge read the task's annotations back from
        Label Studio with its own key, so a forged event cannot change a label.
        """
        body = await self._ls_body(request)
        return await self._bridge("webhook", body)

    async def page(self) -> HTMLResponse:
        """The labeling page."""
        return HTMLResponse(self._page_html)

    async def box_editor(self) -> Response:
        """The page's box editor (detection pools): draw, pick classes, accept suggestions."""
        return Response(self._box_editor_js, media_type="text/javascript")


def _decode_uploads(ctype: str, body: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Image files from a raw body or a multipart form -> float32 ``(N, C, H, W)`` in [0, 1]."""
    from activestream.sources.images import decode_one

    out = []
    for i, data in enumerate(_upload_files(ctype, body)):
        arr = decode_one(data, shape)
        if arr is None:
            raise _reject(422, f"file {i}: not a decodable image ({len(data)} bytes)")
        out.append(arr)
    return np.divide(np.stack(out), 255, dtype=np.float32)


def _upload_files(ctype: str, body: bytes) -> list[bytes]:
    """The files of a raw image body or a multipart form, undecoded."""
    from email import message_from_bytes
    from email.policy import HTTP

    if ctype.startswith("multipart/form-data"):
        message = message_from_bytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body, policy=HTTP
        )
        files = [
            part.get_payload(decode=True) or b""
            for part in message.iter_parts()
            if part.get_filename() or part.get_content_maintype() == "image"
        ]
        if not files:
            raise _reject(422, "multipart body has no file part (send the image as a file)")
        return files
    return [body]


def _add_schemas(api: FastAPI, models: Any) -> None:
    """Put the hand-parsed request models into the OpenAPI components."""
    original = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(spec.pop("$defs", {}))
            components[model.__name__] = spec
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
