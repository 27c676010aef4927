"""The serving baseline: the same two routes in a plain FastAPI app, doing the same work.

What a skilled engineer writes without Ray: one uvicorn process holding the queue in memory.
``GET /queries?n=`` leases the next items of a shuffled pool (each item once); ``POST /labels``
validates every label (known id, class in range, first answer stands) and appends the batch
to a JSON-lines log, flushed and ``fsync``-ed in a worker thread before the answer leaves, as
activestream's label log is. No model, no training, no scoring: the difference to activestream
is what Serve, the actors and the loop cost per request.

    ACTIVESTREAM_PLAIN_POOL=pool.json uvicorn activestream.benchmarks.plain_app:app --port 8001

``pool.json`` holds ``{"ids": [...], "classes": N, "log": "labels.jsonl"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

app = FastAPI(title="plain baseline")


class _State:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.queue = list(reversed(spec["ids"]))
        self.known = set(spec["ids"])
        self.classes = int(spec["classes"])
        self.labels: dict[str, int] = {}
        self.log = open(spec["log"], "a")  # noqa: SIM115 - lives as long as the app
        self.lock = asyncio.Lock()

    def append(self, lines: list[str]) -> None:
        self.log.write("".join(lines))
        self.log.flush()
        os.fsync(self.log.fileno())


_state: _State | None = None


def _get() -> _State:
    global _state
    if _state is None:
        _state = _State(json.loads(Path(os.environ["ACTIVESTREAM_PLAIN_POOL"]).read_text()))
    return _state


@app.get("/queries")
async def queries(n: int = 1) -> dict[str, Any]:
    """Lease the next ``n`` items (the same answer shape as activestream's)."""
    state = _get()
    items = [state.queue.pop() for _ in range(min(n, len(state.queue)))]
    return {
        "model_version": 0,
        "queries": [{"id": i, "score": 0.5, "model_version": 0} for i in items],
    }


@app.post("/labels")
async def labels(body: dict[str, Any]) -> dict[str, int]:
    """Validate the batch as a whole, log it durably, then answer."""
    state = _get()
    batch = body.get("labels")
    if not isinstance(batch, list) or not batch:
        raise HTTPException(422, "labels must be a non-empty list")
    fresh = []
    for rec in batch:
        item, label = rec.get("id"), rec.get("label")
        if item not in state.known:
            raise HTTPException(404, f"unknown id {item!r}")
        if not isinstance(label, int) or not 0 <= label < state.classes:
            raise HTTPException(422, f"label {label!r} out of range")
        if state.labels.get(item, label) != label:
            raise HTTPException(409, f"{item!r} already has label {state.labels[item]}")
        if item not in state.labels:
            fresh.append((item, label))
    async with state.lock:
        await asyncio.to_thread(
            state.append, [json.dumps({"id": i, "label": y}) + "\n" for i, y in fresh]
        )
        state.labels.update(fresh)
    return {"accepted": len(fresh), "duplicates": len(batch) - len(fresh)}
