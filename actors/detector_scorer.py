"""The detector's scorer: one uncertainty score per image, for the same scoring rounds.

:class:`DetectorScorer` is the :class:`~activestream.actors.scorer.Scorer` of the detection
task: Ray Data runs it as an actor pool over the pool's encoded images, it follows the weights
board the same way (a long poll, weights swapped between batches), and it returns the rows a
scoring round folds into its top-k: ``id``, ``score``, ``pred``, ``model_version`` and ``ok``.
What differs is the inside: each image is decoded at its own size, the detector finds its
boxes, and a detection sampler (:mod:`activestream.samplers.detection`) turns them into the
image's score. ``pred`` is how many boxes the detector is sure of (score 0.5 or more), so a
round can be read as "which images hold what the model cannot yet find".
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
from activestream.models.detection import detect_flipped, fcos_detector, flat_outputs
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
        self.embed = False
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
        """uint8 (3, H, W) images of any sizes -> (N,) sampler scores and (N,) sure boxes."""
        if not images:
            return np.zeros(0), np.zeros(0, np.int64)
        tensors = [to_tensor(x).to(self._device) for x in images]
        self._model.eval()
        found = self._model(tensors)
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
        return pa.table(
            {
                "id": batch.column("id"),
                "score": pa.array(scores, pa.float64()),
                "pred": pa.array(sure, pa.int64()),
                "model_version": pa.array(np.full(len(raw), self.version, np.int64)),
                "ok": pa.array(ok, pa.bool_()),
            }
        )
