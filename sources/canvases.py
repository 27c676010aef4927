"""A detection data set from real images: canvases of placed Fashion-MNIST items or digits.

Detection data with known boxes cannot be downloaded here, so it is built the way many papers
build a detection benchmark from a classification set (multi-MNIST style, e.g. Eslami et al.
2016, "Attend, Infer, Repeat"): each canvas gets 1-4 real images, each scaled at random and
pasted at a random place, with the tight box of its visible pixels as ground truth. Objects
overlap little (at most ``max_overlap`` IoU), sizes vary by ``scale``, and pool and test
canvases draw from the source's own train and test splits, so no test object was ever seen.

The output is COCO's layout, which the detection readers take like any other COCO data set::

    DIR/pool/images/canvas-000000.png ...   DIR/pool/annotations.json
    DIR/test/images/canvas-000000.png ...   DIR/test/annotations.json

``bbox`` is ``[x, y, w, h]`` in pixels and category ids start at 1, as in COCO. A
``_SUCCESS.json`` written last records the parameters, so asking again for the same set is a
no-op and asking for another one rewrites it.

    python -m activestream.sources.canvases --out data/canvases --source fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Source = Literal["fashion-mnist", "digits"]
#: Pixels above this (of 255) belong to the object when its tight box is drawn.
INK = 16


@dataclass(frozen=True)
class CanvasSpec:
    """What a canvas set is made of; the manifest records it.

    Attributes:
        source: ``fashion-mnist`` (28x28 photos of clothing, 10 classes) or ``digits``
            (scikit-learn's 8x8 handwritten digits, 10 classes).
        pool: Canvases to label; test: canvases to measure mAP on.
        size: Canvas width and height in pixels.
        objects: Fewest and most objects per canvas.
        scale: Smallest and largest object side, in pixels.
        max_overlap: Largest IoU between two objects' boxes on one canvas.
        seed: Everything random comes from ``np.random.default_rng(seed)``.
    """

    source: Source = "fashion-mnist"
    pool: int = 2000
    test: int = 500
    size: int = 128
    objects: tuple[int, int] = (1, 4)
    scale: tuple[int, int] = (24, 64)
    max_overlap: float = 0.1
    seed: int = 0


def _load(source: Source, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(n, h, w) uint8 images, (n,) labels and class names of ``split`` (train or test)."""
    if source == "fashion-mnist":
        from activestream.sources.fashion_mnist import CLASSES, find_idx_files, load_split

        images, labels = load_split(find_idx_files(), split)
        return images, labels, list(CLASSES)
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # (1797, 8, 8)
        cut = int(0.8 * len(images))  # sklearn's order is writer-mixed; first 80% to train
        part = slice(0, cut) if split == "train" else slice(cut, None)
        return images[part], digits.target[part].astype(np.int64), [str(d) for d in range(10)]
    raise ValueError(f"unknown canvas source {source!r}; choose fashion-mnist or digits")


def _overlap(box: np.ndarray, boxes: list[np.ndarray]) -> float:
    """Largest IoU of ``box`` with any of ``boxes`` (all ``[x1, y1, x2, y2]``)."""
    best = 0.0
    for other in boxes:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            inter = w * h
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            best = max(best, inter / (area(box) + area(other) - inter))
    return best


def compose(
    images: np.ndarray, labels: np.ndarray, spec: CanvasSpec, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[list[float], int]]]:
    """One canvas: (size, size) uint8 pixels and its objects as ``([x, y, w, h], class)``."""
    from PIL import Image

    canvas = np.zeros((spec.size, spec.size), dtype=np.uint8)
    placed: list[np.ndarray] = []
    objects: list[tuple[list[float], int]] = []
    for _ in range(int(rng.integers(spec.objects[0], spec.objects[1] + 1))):
        for _try in range(20):  # a spot overlapping little with what is already there
            k = int(rng.integers(len(images)))
            side = int(rng.integers(spec.scale[0], spec.scale[1] + 1))
            item = np.asarray(
                Image.fromarray(images[k]).resize((side, side), Image.Resampling.BILINEAR)
            )
            rows, cols = np.nonzero(item > INK)
            if not len(rows):
                break  # a blank source image: nothing to place
            x0 = int(rng.integers(0, spec.size - side + 1))
            y0 = int(rng.integers(0, spec.size - side + 1))
            box = np.array(
                [x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1],
                dtype=np.float64,
            )
            if _overlap(box, placed) > spec.max_overlap:
                continue
            window = canvas[y0 : y0 + side, x0 : x0 + side]
            np.maximum(window, item, out=window)
            placed.append(box)
            x1, y1, x2, y2 = box.tolist()
            objects.append(([x1, y1, x2 - x1, y2 - y1], int(labels[k])))
            break
    return canvas, objects


def _write_split(
    folder: Path, n: int, images: np.ndarray, labels: np.ndarray, classes: list[str],
    spec: CanvasSpec, rng: np.random.Generator,
) -> int:  # fmt: skip
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }
    for i in range(n):
        pixels, objects = compose(images, labels, spec, rng)
        name = f"canvas-{i:06d}.png"
        Image.fromarray(pixels).save(folder / "images" / name)
        coco["images"].append({"id": i, "file_name": name, "width": spec.size,
                               "height": spec.size})  # fmt: skip
        for bbox, label in objects:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]),
                    "image_id": i,
                    "bbox": bbox,
                    "category_id": label + 1,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    (folder / "annotations.json").write_text(json.dumps(coco))
    return len(coco["annotations"])


def make_canvases(out: str | Path, spec: CanvasSpec | None = None) -> dict[str, Any]:
    """Write the canvas set ``spec`` under ``out`` (``pool/`` and ``test/``); its manifest.

    A set already there with the same parameters is kept as it is.
    """
    spec = spec or CanvasSpec()
    out = Path(out)
    manifest_path = out / "_SUCCESS.json"
    params = json.loads(json.dumps(asdict(spec)))  # tuples as lists, as read back
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params:
            return manifest
    for split in ("pool", "test"):
        shutil.rmtree(out / split, ignore_errors=True)
    manifest_path.unlink(missing_ok=True)
    rng = np.random.default_rng(spec.seed)
    counts = {}
    for split, source_split, n in (("pool", "train", spec.pool), ("test", "test", spec.test)):
        images, labels, classes = _load(spec.source, source_split)
        counts[split] = _write_split(out / split, n, images, labels, classes, spec, rng)
    manifest = {"params": params, "images": {"pool": spec.pool, "test": spec.test},
                "boxes": counts, "classes": classes}  # fmt: skip
    manifest_path.write_text(json.dumps(manifest, indent=1))  # last: the set is complete
    return manifest


def main(argv: list[str] | None = None) -> None:
    """``python -m activestream.sources.canvases``: write a canvas set, say what it holds."""
    parser = argparse.ArgumentParser(prog="python -m activestream.sources.canvases",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--out", required=True, help="folder to write pool/ and test/ under")
    parser.add_argument("--source", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--pool", type=int, default=CanvasSpec.pool)
    parser.add_argument("--test", type=int, default=CanvasSpec.test)
    parser.add_argument("--size", type=int, default=CanvasSpec.size)
    parser.add_argument("--seed", type=int, default=CanvasSpec.seed)
    args = parser.parse_args(argv)
    spec = CanvasSpec(args.source, args.pool, args.test, args.size, seed=args.seed)
    if spec.size < spec.scale[1]:
        parser.error(f"--size {spec.size} is smaller than the largest object ({spec.scale[1]})")
    from activestream.errors import DataError

    try:
        manifest = make_canvases(args.out, spec)
    except DataError as err:
        sys.exit(f"activestream: {err}")
    print(
        f"{args.out}: {manifest['images']['pool']} pool and {manifest['images']['test']} test "
        f"canvases, {manifest['boxes']['pool']} + {manifest['boxes']['test']} boxes"
    )


if __name__ == "__main__":
    main()
