"""Synthetic image shards of any size, for scaling tests and benchmarks without downloads.

Each class is an oriented sinusoidal grating with its own orientation, spatial frequency and
colour tint. Every image draws a random phase offset, orientation and frequency jitter, contrast,
brightness and Gaussian pixel noise, so a small CNN has something real to learn (orientation and
frequency survive any phase) while a pixel-space template matcher stays far from perfect.

Rows are generated shard by shard and, within a shard, block by block, so memory stays flat no
matter how many rows are asked for. All randomness comes from generators seeded with
``(seed, split, shard_index)``: the same arguments give the same bytes on every machine, and any
shard can be regenerated alone.

Example:
    >>> import tempfile
    >>> pool = make_synthetic_shards(tempfile.mkdtemp(), 50, rows_per_shard=20, progress=False)
    >>> len(pool.paths), pool.num_rows, pool.shape, len(pool.classes)
    (3, 50, (3, 32, 32), 10)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from activestream.config import StorageConfig
from activestream.sources.fs import DEFAULT_STORAGE
from activestream.sources.shards import ShardSet
from activestream.sources.writing import ShardWriter

if TYPE_CHECKING:
    from tqdm import tqdm

_BLOCK = 1024  # rows synthesised at once: bounds the float32 temporaries to a few MB per row
_POOL, _TEST = 0, 1  # split codes mixed into the seeds so pool and test never share draws


def class_names(num_classes: int) -> list[str]:
    """Return the class names the generator writes as metadata (``"grating-0"``, ...)."""
    return [f"grating-{k}" for k in range(num_classes)]


def _class_params(num_classes: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orientation, frequency (cycles per image) and per-channel gain of every class.

    They depend on the class count only, never on the seed, so a pool and a test split made
    with different seeds describe the same task.
    """
    k = np.arange(num_classes, dtype=np.float64)
    theta = np.pi * k / num_classes
    golden = (k * 0.6180339887) % 1.0
    freq = 1.5 + 3.0 * golden
    hue = 2 * np.pi * (k / num_classes)[:, None] + 2 * np.pi * np.arange(channels) / max(
        channels, 3
    )
    gain = 0.75 + 0.25 * np.cos(hue) if channels > 1 else np.ones((num_classes, 1))
    return theta, freq, gain


def _images(
    rng: np.random.Generator, labels: np.ndarray, shape: Sequence[int], num_classes: int
) -> np.ndarray:
    """Synthesise uint8 ``(n, C, H, W)`` images of the given class labels."""
    c, h, w = shape
    n = len(labels)
    theta0, freq0, gain0 = _class_params(num_classes, c)
    jitter = np.pi / num_classes * 0.8
    theta = (theta0[labels] + rng.uniform(-jitter, jitter, n)).astype(np.float32)
    freq = (freq0[labels] * rng.uniform(0.8, 1.2, n)).astype(np.float32)
    phase = rng.uniform(-0.6 * np.pi, 0.6 * np.pi, n).astype(np.float32)
    contrast = rng.uniform(0.1, 0.3, n).astype(np.float32)
    brightness = rng.uniform(0.35, 0.65, n).astype(np.float32)
    gain = (gain0[labels] * rng.uniform(0.7, 1.3, (n, c))).astype(np.float32)

    yy, xx = np.meshgrid(
        np.linspace(-0.5, 0.5, h, dtype=np.float32),
        np.linspace(-0.5, 0.5, w, dtype=np.float32),
        indexing="ij",
    )
    proj = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    grating = np.cos(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    grating *= contrast[:, None, None]
    img = grating[:, None] * gain[:, :, None, None]
    img += brightness[:, None, None, None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.25)
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    return np.rint(img).astype(np.uint8)


def _write_split(
    out: str,
    *,
    first_id: int,
    rows: int,
    rows_per_shard: int,
    num_classes: int,
    shape: tuple[int, int, int],
    seed: int,
    split: int,
    storage: StorageConfig,
    bar: tqdm,
) -> ShardSet:
    writer = ShardWriter(out, storage, shape, class_names(num_classes), labels=True)
    for shard, lo in enumerate(range(0, rows, rows_per_shard)):
        n = min(rows_per_shard, rows - lo)
        rng = np.random.default_rng([seed, split, shard])
        labels = rng.integers(0, num_classes, n)
        pixels = np.empty((n, *shape), dtype=np.uint8)
        for b in range(0, n, _BLOCK):
            pixels[b : b + _BLOCK] = _images(rng, labels[b : b + _BLOCK], shape, num_classes)
            bar.update(min(_BLOCK, n - b))
        ids = [f"syn-{i:09d}" for i in range(first_id + lo, first_id + lo + n)]
        writer.write(ids, pixels, labels)
    return writer.finish()


def make_synthetic_shards(
    out: str,
    rows: int,
    *,
    rows_per_shard: int = 10_000,
    num_classes: int = 10,
    shape: Sequence[int] = (3, 32, 32),
    seed: int = 0,
    test_rows: int = 0,
    first_id: int = 0,
    storage: StorageConfig = DEFAULT_STORAGE,
    progress: bool = True,
) -> ShardSet:
    """Write ``rows`` labeled synthetic images to ``<out>/pool/part-*.parquet``.

    Args:
        out: Local directory or ``s3://`` prefix; ``pool/`` (and ``test/``) are created in it.
        rows: Pool rows.
        rows_per_shard: Rows per Parquet file (also the unit of memory use).
        num_classes: Number of grating classes (>= 2).
        shape: ``(C, H, W)`` of the images.
        seed: Seeds every draw; the same seed gives identical shards.
        test_rows: When > 0, also write a held-out ``<out>/test/`` split of this many rows.
        first_id: Number of the first pool id (``syn-<number>``; the test split's follow the
            pool's), so rows written later to grow a pool never reuse an id.
        storage: How to reach an ``s3://`` output.
        progress: Show a tqdm bar over rows.

    Returns:
        The pool shard set (open the test split with
        :func:`activestream.sources.shards.open_shards`).

    Raises:
        ValueError: Non-positive sizes or fewer than two classes.
    """
    from tqdm.auto import tqdm

    shape3 = tuple(int(v) for v in shape)
    if rows < 1 or rows_per_shard < 1 or test_rows < 0 or first_id < 0:
        raise ValueError("rows and rows_per_shard must be >= 1, test_rows and first_id >= 0")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2")
    if len(shape3) != 3 or min(shape3) < 1:
        raise ValueError(f"shape must be three positive integers (C, H, W), got {shape}")
    base = out.rstrip("/")
    common = {
        "rows_per_shard": rows_per_shard,
        "num_classes": num_classes,
        "shape": shape3,
        "seed": seed,
        "storage": storage,
    }
    with tqdm(
        total=rows + test_rows, unit="rows", desc="synthesising", disable=not progress
    ) as bar:
        pool = _write_split(
            _sub(base, "pool"), first_id=first_id, rows=rows, split=_POOL, bar=bar, **common
        )
        if test_rows:
            _write_split(
                _sub(base, "test"),
                first_id=first_id + rows,
                rows=test_rows,
                split=_TEST,
                bar=bar,
                **common,
            )
    return pool


def _sub(base: str, name: str) -> str:
    return f"{base}/{name}" if base.startswith("s3://") else os.path.join(base, name)
