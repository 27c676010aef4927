"""Builders of encoded-image Parquet tables in the layouts users bring."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

NAMES = ("cat", "dog", "fox")


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode a (H, W, 3) or (H, W) uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def image_for(label: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An RGB image whose dominant channel is the class: learnable, varied, any size."""
    h, w = size
    arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    arr[..., label] += 180
    return arr


def write_encoded(
    folder: Path,
    rows: int,
    *,
    files: int = 2,
    layout: str = "binary",
    with_ids: bool = True,
    bad_rows: int = 0,
    seed: int = 0,
    first_file: int = 0,
) -> dict[str, int]:
    """Write ``files`` Parquet files of JPEG/PNG images of mixed sizes with string labels.

    Returns the ground truth (id -> class index into the sorted class names); bad rows
    (truncated JPEGs) are written last and left out of the truth.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, int] = {}
    per_file = -(-rows // files)
    for f in range(first_file, first_file + files):
        images, labels, ids = [], [], []
        for r in range(min(per_file, rows - (f - first_file) * per_file)):
            label = int(rng.integers(len(NAMES)))
            size = (int(rng.integers(20, 40)), int(rng.integers(20, 40)))
            fmt = "PNG" if r % 2 else "JPEG"
            images.append(encode(image_for(label, size, rng), fmt))
            labels.append(NAMES[label])
            ids.append(f"img-{f}-{r}")
        if f == first_file + files - 1:
            for b in range(bad_rows):
                images.append(encode(image_for(0, (24, 24), rng), "JPEG")[:60])
                labels.append(NAMES[0])
                ids.append(f"bad-{b}")
        name = f"part-{f:05d}.parquet"
        for row, (item, label) in enumerate(zip(ids, labels, strict=True)):
            key = item if with_ids else f"{name}#{row}"
            if not item.startswith("bad-"):
                truth[key] = sorted(NAMES).index(label)
        if layout == "struct":
            paths = [f"{i}.jpg" for i in ids]
            image = pa.StructArray.from_arrays(
                [pa.array(images, pa.binary()), pa.array(paths, pa.string())], ["bytes", "path"]
            )
        else:
            image = pa.array(images, pa.binary())
        columns = {"image": image, "label": pa.array(labels, pa.string())}
        if with_ids:
            columns = {"id": pa.array(ids, pa.string()), **columns}
        pq.write_table(pa.table(columns), folder / name)
    return truth
