"""The detector's scorer: one uncertainty score per image, for the same scoring rounds.

:class:`DetectorScorer` is the :class:`~activestream.actors.scorer.Scorer` of the detection
task: Ray Data runs it as an actor pool over the pool's encoded images, it follows the weights
board the same way (a long poll, weights swapped between batches), and it returns the rows a
scoring round folds into its top-k: ``id``, ``score``, ``pred``, ``model_version`` and ``ok``.
What differs is the inside: each image is decoded at its own size, the detector finds its
boxes, and a detection sampler (:mod:`activestream.samplers.detection`) turns them into the
image's score. ``pred`` is how many boxes the detector is sure of (score 0.5 or more), so a
round can be read as "which images hold what the model cannot yet find".

With ``embed`` it also returns each image's ``embedding``: the backbone's deepest feature map
averaged over the image's own area (the batch's padding cropped off), taken from the same
forward pass. Padding still moves it a little (EfficientNet pads its strided convolutions by
input size): an image scored alone and beside a larger one measured cosine 0.93-0.95, against
0.67-0.75 to other canvases. With
the built-in backbone that map is the ImageNet-pretrained EfficientNet-Lite0's (320 channels,
before the feature pyramid, which starts untrained), so the embedding means something before
the first label: what cold starts and diversity-aware selection need.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from activestream.actors.cpus import keep_off_reserved
from activestream.actors.detector import decode_rgb, to_tensor
from activestream.actors.scorer import Scorer, _worker_salt
from activestream.actors.weights import WeightsVersion
from activestream.models.detection import (
    capture_embedding_inputs,
    detect_flipped,
    fcos_detector,
    flat_outputs,
    pooled_embeddings,
)
from activestream.models.parts import pick_device
from activestream.samplers import detection as box_samplers
from activestream.sources.images import encoded_bytes

#: Detections scoring at least this count as found (the ``pred`` column).
SURE = 0.5


class DetectorScorer(Scorer):
    """Scores Arrow batches of encoded images with the newest published detector.

    Args:
        num_classes: Object classes of the detector.
        sampler: A registered detection sampler (``box_entropy_max``, ``flip_consistency``...).
        detector: ``detector(num_classes)`` -> the same architecture the trainer builds.
        board: A WeightsBoard actor handle to follow new versions; None keeps ``weights``.
        weights: Initial weights; None means the random model of ``seed`` as version 0.
        seed: Seeds the initial model and the random sampler.
        threads: torch intra-op threads.
        nice: Raise the process's nice value by this much (0 keeps it).
        reserved_cpus: Lowest-numbered cores this process stays off.
        image_column: The batch column holding encoded images.
        embed: Also output each image's ``embedding`` (see the module docstring).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        sampler: str = "box_entropy_max",
        detector: Callable[[int], nn.Module] = fcos_detector,
        board: Any = None,
        weights: WeightsVersion | None = None,
        seed: int = 0,
        threads: int = 1,
        nice: int = 0,
        reserved_cpus: int = 0,
        image_column: str = "image",
        embed: bool = False,
    ) -> None:
        torch.set_num_threads(threads)
        if nice > 0:
            os.nice(nice)
        keep_off_reserved(reserved_cpus, whole_process=True)
        self._image_column = image_column
        self._device = pick_device()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._model = detector(num_classes)
        self._model.to(self._device).eval()
        spec = box_samplers.spec(sampler)
        self._flip = spec.inputs == ("detections", "flipped")
        self._score = box_samplers.get(sampler, np.random.default_rng([seed, _worker_salt()]))
        self.arms = None
        self.embed = embed
        self._captured: dict[str, Any] = {}
        if embed:
            capture_embedding_inputs(self._model, self._captured)
        self._board = board
        self.version = 0
        self._newer: WeightsVersion | None = None
        if weights is not None:
            self._load(weights)
        if board is not None:
            self._newer = self._ask_board()
            self._refresh()
            threading.Thread(target=self._listen, name="weights-listener", daemon=True).start()

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (3, H, W) images of any sizes -> (N,) sampler scores and (N,) sure boxes.

        With ``embed``, :attr:`embeddings` holds the (N, D) embeddings of the same pass.
        """
        self.embeddings: np.ndarray | None = None
        if not images:
            return np.zeros(0), np.zeros(0, np.int64)
        tensors = [to_tensor(x).to(self._device) for x in images]
        self._model.eval()
        found = self._model(tensors)
        if self.embed:
            self.embeddings = pooled_embeddings(self._captured)
        detections = box_samplers.check_detections(*flat_outputs(found))
        if self._flip:
            flipped = box_samplers.check_detections(
                *flat_outputs(detect_flipped(self._model, tensors))
            )
            scores = self._score(detections, flipped)
        else:
            scores = self._score(detections)
        sure = np.array([int((f["scores"] >= SURE).sum()) for f in found], dtype=np.int64)
        return np.asarray(scores, dtype=np.float64), sure

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score one batch of (id, image) rows -> (id, score, pred, model_version, ok).

        An image that does not decode is scored 0 and flagged ``ok = False``: the round
        skips and counts it instead of failing the pass.
        """
        self._refresh()
        raw = encoded_bytes(batch.column(self._image_column)).to_pylist()
        images, ok = [], np.zeros(len(raw), dtype=bool)
        for i, data in enumerate(raw):
            try:
                images.append(decode_rgb(data or b""))
                ok[i] = True
            except Exception:  # noqa: BLE001 - PIL raises several kinds for corrupt data
                continue
        scores, sure = np.zeros(len(raw)), np.zeros(len(raw), np.int64)
        scores[ok], sure[ok] = self.detect(images)
        columns = {
            "id": batch.column("id"),
            "score": pa.array(scores, pa.float64()),
            "pred": pa.array(sure, pa.int64()),
            "model_version": pa.array(np.full(len(raw), self.version, np.int64)),
        }
        if self.embed:
            dim = self._embedding_width()
            embedding = np.zeros((len(raw), dim), np.float32)
            if self.embeddings is not None:
                embedding[ok] = self.embeddings
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(
                pa.array(embedding.reshape(-1), pa.float32()), dim
            )
        columns["ok"] = pa.array(ok, pa.bool_())
        return pa.table(columns)

    def _embedding_width(self) -> int:
        """Width of the embedding, from a probe when no batch has set it yet."""
        if self.embeddings is None or not len(self.embeddings):
            self.detect([np.zeros((3, 32, 32), np.uint8)])
        return int(self.embeddings.shape[1])  # type: ignore[union-attr]
