"""A plain FastAPI app answering ``/queries`` and ``/labels`` with fixed payloads.

The baseline for :mod:`activestream.benchmarks.serve_latency`: the same routes and payload sizes
without Ray Serve, actors or a model, so the difference is what Serve and the loop cost per request.

    uvicorn activestream.benchmarks.plain_app:app --port 8001
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI(title="plain baseline")
_QUERY = {"id": "digits-00042", "score": 0.93, "model_version": 3}


@app.get("/queries")
async def queries(n: int = 1) -> dict[str, Any]:
    """The same shape as activestream's answer."""
    return {"model_version": 3, "queries": [_QUERY] * n}


@app.post("/labels")
async def labels(body: dict[str, Any]) -> dict[str, int]:
    """Count the labels, keep nothing."""
    return {"accepted": 0, "duplicates": len(body.get("labels", []))}
