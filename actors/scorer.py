"""The scorer: a callable class that Ray Data runs as an actor pool over unlabeled shards.

Each actor builds its model once, then for every batch: asks the :class:`WeightsBoard` for the
latest version number, fetches weights only when it changed, turns the ``pixels`` column into a
tensor without copying the Arrow buffer, and returns one row per input with the sampler's
``score`` and the ``model_version`` that produced it, so staleness is always visible.

Samplers that need more than one deterministic pass get it here: BALD's (T, N, C) samples come
from T forward passes with only the dropout layers active (MC dropout), and diversity samplers
(k-center, cluster-margin) get an ``embedding`` column, the input of the model's last linear
layer, so the batch selection can spread queries over the embedding space.

It is a plain class: tests call it directly on an Arrow table, without Ray.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from activestream import samplers
from activestream.actors.cpus import keep_off_reserved
from activestream.actors.net import build_net
from activestream.actors.weights import LISTEN_SECONDS, WeightsVersion, load_numpy_state
from activestream.config import ModelConfig
from activestream.models.parts import last_linear, pick_device
from activestream.sources.images import decode_images
from activestream.sources.shards import pixels_to_array


def features_to_array(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_list<float32>`` feature column -> float32 (N, D), without a copy."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = array.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(array), array.type.list_size).astype(np.float32, copy=False)


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
        model: What to build and how to feed it (factory, kwargs, dropout, input transform).
        shape: (C, H, W) of the images in the ``pixels`` column.
        num_classes: Output classes of the model.
        sampler: Registered sampler name turning probabilities into scores.
        board: A WeightsBoard actor handle to follow new versions; None keeps ``weights``.
        weights: Initial weights; None means the random model of ``seed`` as version 0.
        seed: Seeds the initial model and the random sampler.
        threads: torch intra-op threads; keep low so scoring leaves cores to serving.
        nice: Raise the process's nice value by this much (0 keeps it).
        reserved_cpus: Lowest-numbered cores this process stays off (``serve.reserved_cpus``).
        mc_samples: Stochastic passes T for samplers over (T, N, C) samples (BALD).
        embed: Output penultimate-layer embeddings; None: when the sampler selects batches
            for diversity.
        image_column: The batch column holding images.
        encoded: Whether that column holds encoded images (decoded here, in the worker).
        features: The column holds a frozen backbone's features (``train: head``): only the
            final layer runs, so rescoring the pool after a new version costs a matrix product.
    """

    def __init__(
        self,
        *,
        model: ModelConfig | None = None,
        shape: tuple[int, int, int],
        num_classes: int,
        sampler: str = "entropy",
        board: Any = None,
        weights: WeightsVersion | None = None,
        seed: int = 0,
        threads: int = 1,
        nice: int = 0,
        reserved_cpus: int = 0,
        mc_samples: int = 8,
        embed: bool | None = None,
        image_column: str = "pixels",
        encoded: bool = False,
        features: bool = False,
    ) -> None:
        torch.set_num_threads(threads)
        self._image_column = image_column
        self._encoded = encoded
        self._features = features
        if nice > 0:
            os.nice(nice)  # scoring is batch work: serving and labeling come first
        keep_off_reserved(reserved_cpus, whole_process=True)  # serving's cores stay free
        self._shape = tuple(shape)
        self._device = pick_device()
        model = model or ModelConfig()
        self._p = model.dropout
        self._transform = model.transform()
        self._model = build_net(model, stored_shape=self._shape, num_classes=num_classes, seed=seed)
        self._model.to(self._device).eval()
        self._score = samplers.get(sampler, rng=np.random.default_rng([seed, _worker_salt()]))
        spec = samplers.spec(sampler)
        self.arms = spec.arms  # auto: scores come as (N, A), one column per arm
        self._mc = mc_samples if spec.inputs == ("samples",) else 0
        if self._mc and not any(
            isinstance(m, torch.nn.Dropout) and m.p > 0 for m in self._model.modules()
        ):
            raise ValueError(
                f"sampler {sampler!r} needs stochastic passes: set model.dropout > 0 "
                f"({model.factory} has no active dropout layer)"
            )
        self._mc_rng = np.random.default_rng([seed, _worker_salt(), 1])
        self.embed = spec.batch is not None if embed is None else embed
        # BADGE and the like select on the last layer's gradient, not on its input.
        self._gradient = spec.embedding == "gradient"
        self._captured: list[torch.Tensor] = []
        if self.embed:
            last_linear(self._model).register_forward_hook(
                lambda _m, inputs, _out: self._captured.append(inputs[0])
            )
        self._board = board
        self.version = 0
        self._newer: WeightsVersion | None = None  # handed over by the listener thread
        if weights is not None:
            self._load(weights)
        if board is not None:
            self._newer = self._ask_board()  # the newest version now; then the listener's
            self._refresh()
            threading.Thread(target=self._listen, name="weights-listener", daemon=True).start()

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

    def _ask_board(self) -> WeightsVersion | None:
        import ray

        try:
            return ray.get(self._board.latest.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - board restarting: the listener catches up
            return None

    def _listen(self, timeout: float = LISTEN_SECONDS) -> None:
        """Long-poll the board for versions newer than the newest seen; runs for good.

        The board answers the moment a newer version exists, with its reference, so batches
        pick it up without asking anyone (:meth:`_refresh` only swaps in what arrived).
        """
        import ray

        seen = self.version
        while True:
            try:
                latest = ray.get(self._board.listen.remote(seen, timeout), timeout=timeout + 30)
            except SystemExit:  # Ray is shutting down under this process: nothing to follow
                return
            except Exception:  # noqa: BLE001 - the board restarting: ask again shortly
                if not ray.is_initialized():
                    return
                time.sleep(0.5)
                continue
            if latest is not None:
                seen = latest.version
                self._newer = latest

    def _refresh(self) -> None:
        """Load the newest version the listener received, if it is newer than ours."""
        newer = self._newer
        if newer is None or newer.version <= self.version:
            return
        import ray

        try:
            self._load(newer)
        except ray.exceptions.RayError:
            return  # the weights briefly unreachable (a restart): keep scoring as we are

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) stored pixels in [0, 1] -> (N, classes) float64 probabilities."""
        self._captured.clear()
        x = self._transform(x)
        logits = self._model(torch.from_numpy(x).to(self._device, non_blocking=True))
        return torch.softmax(logits.float(), dim=1).double().cpu().numpy()

    @torch.inference_mode()
    def mc_proba(self, x: np.ndarray, passes: int) -> np.ndarray:
        """(N, C, H, W) -> (T, N, classes): T passes with dropout on, seeded per call."""
        dropouts = [m for m in self._model.modules() if isinstance(m, torch.nn.Dropout)]
        xt = torch.from_numpy(self._transform(x)).to(self._device, non_blocking=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._mc_rng.integers(2**31)))
            for m in dropouts:
                m.train()
            try:
                out = [torch.softmax(self._model(xt).float(), dim=1) for _ in range(passes)]
            finally:
                for m in dropouts:
                    m.eval()
        return torch.stack(out).double().cpu().numpy()

    @torch.inference_mode()
    def feature_outputs(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Backbone features (N, D) -> probabilities, scores, embeddings (the features)."""
        head = last_linear(self._model)
        ft = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(self._device)
        probs = torch.softmax(head(ft).float(), dim=1).double().cpu().numpy()
        if self._mc:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(self._mc_rng.integers(2**31)))
                passes = [
                    torch.softmax(head(torch.nn.functional.dropout(ft, self._p)).float(), dim=1)
                    for _ in range(self._mc)
                ]
            scores = self._score(torch.stack(passes).double().cpu().numpy())
        else:
            scores = self._score(probs)
        return probs, scores, (self._embedding(probs, f) if self.embed else None)

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(N, C, H, W) -> probabilities (N, C), scores (N,), embeddings (N, D) or None."""
        probs = self.predict_proba(x)
        embedding = None
        if self.embed and self._captured:
            embedding = self._embedding(probs, self._captured[-1].float().cpu().numpy())
        if self._mc:
            scores = self._score(self.mc_proba(x, self._mc))
        else:
            scores = self._score(probs)
        return probs, scores, embedding

    def _embedding(self, probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The embedding the sampler selects on, from the last layer's input features."""
        if self._gradient:
            return samplers.gradient_embedding(probs, features)  # (N, C * D')
        return np.asarray(features, dtype=np.float32)  # (N, D)

    def score_arrays(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> (N,) sampler scores with the current weights."""
        return self.outputs(x)[1]

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score one batch of (id, image) rows -> (id, score, pred, model_version[, ok]).

        Encoded images that do not decode are scored as blanks and flagged ``ok = False``, so
        the round skips and counts them instead of failing the pass.
        """
        self._refresh()
        ok = None
        if self._features:
            probs, scores, embedding = self.feature_outputs(
                features_to_array(batch.column(self._image_column))
            )
        else:
            if self._encoded:
                x, ok = decode_images(batch.column(self._image_column), self._shape)
            else:
                x = pixels_to_array(batch.column(self._image_column), self._shape)
            probs, scores, embedding = self.outputs(x)
        n = batch.num_rows
        arm_scores = None
        if self.arms is not None:  # auto: rank by the arms' mean, keep every arm's column
            arm_scores = pa.FixedSizeListArray.from_arrays(
                pa.array(scores.reshape(-1), pa.float64()), len(self.arms)
            )
            scores = scores.mean(axis=1) if n else np.zeros(0)
        columns = {
            "id": batch.column("id"),
            "score": pa.array(scores, pa.float64()),
            "pred": pa.array(probs.argmax(axis=1) if n else np.zeros(0, np.int64), pa.int64()),
            "model_version": pa.array(np.full(n, self.version, np.int64)),
        }
        if self.embed:
            dim = self._embed_dim(embedding)
            flat = np.zeros(0, np.float32) if embedding is None else embedding.reshape(-1)
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(
                pa.array(flat, pa.float32()), dim
            )
        if arm_scores is not None:
            columns["arm_scores"] = arm_scores
        if ok is not None:
            columns["ok"] = pa.array(ok, pa.bool_())
        return pa.table(columns)

    def _embed_dim(self, embedding: np.ndarray | None) -> int:
        if embedding is not None:
            return int(embedding.shape[1])
        head = last_linear(self._model)
        if self._gradient:  # as wide as one row's gradient embedding (sketched or not)
            c, d = int(head.out_features), int(head.in_features)
            return int(samplers.gradient_embedding(np.full((1, c), 1.0 / c), np.zeros((1, d))).size)
        return int(head.in_features)
