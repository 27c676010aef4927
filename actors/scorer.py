"""The scorer: a callable class that Ray Data runs as an actor pool over unlabeled shards.

Each actor builds its model once, then for every batch: asks the :class:`WeightsBoard` for the
latest version number, fetches weights only when it changed, turns the ``pixels`` column into a
tensor without copying the Arrow buffer, and returns one row per input with the sampler's
``score`` and the ``model_version`` that produced it, so staleness is always visible.

It is a plain class: tests call it directly on an Arrow table, without Ray.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import torch

import samplers
from actors.models import build_model, pick_device
from actors.weights import WeightsVersion, load_numpy_state
from pipelines.sources import pixels_to_array


def _worker_salt() -> int:
    """Distinct per Ray actor so random scores differ across the pool; 0 outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            actor = ray.get_runtime_context().get_actor_id()
            return int(actor[-8:], 16) if actor else 0
    except Exception:  # noqa: BLE001 - no runtime context: not inside Ray
        pass
    return 0


class Scorer:
    """Scores Arrow batches with the newest published model.

    Args:
        arch: Model architecture name (see :func:`actors.models.build_model`).
        shape: (C, H, W) of the images in the ``pixels`` column.
        num_classes: Output classes of the model.
        sampler: Registered sampler name turning probabilities into scores.
        board: A WeightsBoard actor handle to follow new versions; None keeps ``weights``.
        weights: Initial weights; None means the random model of ``seed`` as version 0.
        seed: Seeds the initial model and the random sampler.
        threads: torch intra-op threads; keep low so scoring leaves cores to serving.
        dropout: Dropout of the model (matters for MC-dropout samplers only).
        nice: Raise the process's nice value by this much (0 keeps it).
    """

    def __init__(
        self,
        *,
        arch: str,
        shape: tuple[int, int, int],
        num_classes: int,
        sampler: str = "entropy",
        board: Any = None,
        weights: WeightsVersion | None = None,
        seed: int = 0,
        threads: int = 1,
        dropout: float = 0.25,
        nice: int = 0,
    ) -> None:
        torch.set_num_threads(threads)
        if nice > 0:
            os.nice(nice)  # scoring is batch work: serving and labeling come first
        self._shape = tuple(shape)
        self._device = pick_device()
        self._model = build_model(
            arch, shape=self._shape, num_classes=num_classes, dropout=dropout, seed=seed
        )
        self._model.to(self._device).eval()
        self._score = samplers.get(sampler, rng=np.random.default_rng([seed, _worker_salt()]))
        self._board = board
        self.version = 0
        if weights is not None:
            self._load(weights)
        self._refresh()

    def _load(self, weights: WeightsVersion) -> None:
        import ray

        state = ray.get(weights.refs[0]) if weights.refs else None
        if state is not None:
            load_numpy_state(self._model, state)
        self.version = weights.version

    def set_weights(self, state: dict[str, np.ndarray], version: int) -> None:
        """Load weights handed over directly (in-process use, without the object store)."""
        load_numpy_state(self._model, state)
        self.version = version

    def _refresh(self) -> None:
        if self._board is None:
            return
        import ray

        try:
            if ray.get(self._board.latest_version.remote()) == self.version:
                return
            latest = ray.get(self._board.latest.remote())
            if latest is not None and latest.version != self.version:
                self._load(latest)
        except ray.exceptions.RayError:
            return  # board or weights briefly unreachable (a restart): keep scoring as we are

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N, classes) float64 probabilities."""
        logits = self._model(torch.from_numpy(x).to(self._device, non_blocking=True))
        return torch.softmax(logits.float(), dim=1).double().cpu().numpy()

    def score_arrays(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N,) sampler scores with the current weights."""
        return self._score(self.predict_proba(x))

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score one batch of (id, pixels) rows -> (id, score, pred, model_version)."""
        self._refresh()
        probs = self.predict_proba(pixels_to_array(batch.column("pixels"), self._shape))
        scores = self._score(probs)
        n = batch.num_rows
        return pa.table(
            {
                "id": batch.column("id"),
                "score": pa.array(scores, pa.float64()),
                "pred": pa.array(probs.argmax(axis=1) if n else np.zeros(0, np.int64), pa.int64()),
                "model_version": pa.array(np.full(n, self.version, np.int64)),
            }
        )
