"""Detection data as people have it: COCO JSON, YOLO text labels, or Hugging Face Parquet.

Each reader gives a :class:`DetectionSet`: the class names and one :class:`DetectionItem` per
image (id, where the image is, its size, its true boxes), local or on ``s3://``. Which layout a
folder holds is read off its files (:func:`read_detection`):

* **COCO**: ``annotations.json`` (``images`` with ``file_name``, ``width``, ``height``;
  ``annotations`` with ``bbox = [x, y, w, h]`` pixels and ``category_id``; ``categories`` by id
  and name) beside an ``images/`` folder.
* **YOLO**: ``images/*.jpg|png`` and ``labels/*.txt`` of the same stem, one
  ``class cx cy w h`` line per box in fractions of the image, class names in ``classes.txt``
  (one per line) or a ``data.yaml`` ``names:`` list.
* **Hugging Face Parquet**: ``*.parquet`` as ``datasets`` writes an object-detection set: an
  ``image`` column (``{bytes, path}``), an ``objects`` column with ``bbox`` (COCO ``[x, y, w,
  h]``) and ``category`` lists, and the class names in the file's ``huggingface`` metadata.

Images may have any size, each its own. A box outside its image, of no area, or of a class the
set does not name is a :class:`~activestream.errors.DataError` naming the file and the box: a
data set is checked when it is opened, not when the detector trips on it.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import DEFAULT_STORAGE, filesystem_for, join_path
from activestream.tasks.boxes import Box, BoxError, parse_box

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class DetectionItem:
    """One image and its true boxes.

    Attributes:
        id: The image's id: its file name without the suffix (COCO, YOLO) or the ``image_id``
            column (Parquet), as labels name it.
        source: Where the image is: an in-filesystem path, or ``parquet:<file>#<row>``.
        width: Image width in pixels; height likewise.
        boxes: The true boxes, checked against the image.
    """

    id: str
    source: str
    width: int
    height: int
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class DetectionSet:
    """A folder of detection data: class names, items, and how it was laid out."""

    layout: str
    classes: tuple[str, ...]
    items: tuple[DetectionItem, ...]

    @property
    def boxes(self) -> int:
        """How many true boxes the set holds."""
        return sum(len(item.boxes) for item in self.items)


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    try:
        with fs.open_input_stream(path) as handle:
            return handle.read()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}".splitlines()[0]) from None


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _image_size(data: bytes, where: str) -> tuple[int, int]:
    """(width, height) from the image header alone."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{where}: not an image ({err})") from None


def _box(raw: dict[str, Any], width: int, height: int, classes: tuple[str, ...], where: str) -> Box:
    try:
        return parse_box(raw, width=width, height=height, classes=classes, where=where)
    except BoxError as err:
        raise DataError(str(err)) from None


def _as_uri(uri: str, path: str) -> str:
    """An in-filesystem ``path`` under the user's ``uri`` as a URI again (``s3://`` kept)."""
    return f"s3://{path}" if uri.startswith("s3://") else path


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def read_coco(uri: str, storage: StorageConfig = DEFAULT_STORAGE) -> DetectionSet:
    """A COCO folder: ``annotations.json`` and the images it names under ``images/``."""
    fs, base = filesystem_for(uri, storage)
    where = join_path(base, "annotations.json")
    try:
        coco = json.loads(_read_bytes(fs, where))
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        images, annotations = coco["images"], coco.get("annotations", [])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{where}: not COCO annotations ({type(err).__name__}: {err})") from None
    classes = tuple(str(c["name"]) for c in categories)
    index = {c["id"]: i for i, c in enumerate(categories)}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for a in annotations:
        if not a.get("iscrowd"):  # crowd regions are not objects to find one by one
            by_image.setdefault(a.get("image_id"), []).append(a)
    items = []
    for image in images:
        path = join_path(base, "images", image["file_name"])
        width, height = image.get("width"), image.get("height")
        if not width or not height:
            width, height = _image_size(_read_bytes(fs, path), path)
        boxes = []
        for a in by_image.pop(image["id"], []):
            label = index.get(a.get("category_id"), f"category id {a.get('category_id')}")
            boxes.append(_box({"bbox": a.get("bbox"), "label": label}, width, height, classes,
                              f"{where}: annotation {a.get('id')}"))  # fmt: skip
        items.append(
            DetectionItem(_stem(image["file_name"]), _as_uri(uri, path), width, height,
                          tuple(boxes))
        )  # fmt: skip
    if by_image:
        raise DataError(f"{where}: annotations name images it does not list: {list(by_image)[:3]}")
    return DetectionSet("coco", classes, tuple(items))


def _yolo_classes(fs: pafs.FileSystem, base: str) -> tuple[str, ...]:
    if _exists(fs, join_path(base, "classes.txt")):
        text = _read_bytes(fs, join_path(base, "classes.txt")).decode()
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    if _exists(fs, join_path(base, "data.yaml")):
        import yaml

        names = yaml.safe_load(_read_bytes(fs, join_path(base, "data.yaml"))).get("names")
        if isinstance(names, dict):  # {0: person, 1: car}
            names = [names[k] for k in sorted(names)]
        if isinstance(names, list) and names:
            return tuple(str(n) for n in names)
    raise DataError(f"{base}: a YOLO folder names its classes in classes.txt or data.yaml")


def _files(fs: pafs.FileSystem, folder: str) -> list[str]:
    selector = pafs.FileSelector(folder, recursive=False, allow_not_found=True)
    return sorted(i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File)


def read_yolo(uri: str, storage: StorageConfig = DEFAULT_STORAGE) -> DetectionSet:
    """A YOLO folder: ``images/``, ``labels/`` with one ``.txt`` per image, class names."""
    fs, base = filesystem_for(uri, storage)
    classes = _yolo_classes(fs, base)
    labels = {_stem(p): p for p in _files(fs, join_path(base, "labels")) if p.endswith(".txt")}
    items = []
    for path in _files(fs, join_path(base, "images")):
        if not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        width, height = _image_size(_read_bytes(fs, path), path)
        boxes = []
        text = _read_bytes(fs, labels[_stem(path)]).decode() if _stem(path) in labels else ""
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{labels[_stem(path)]}:{n}"
            fields = line.split()
            try:
                cls, cx, cy, w, h = int(fields[0]), *(float(f) for f in fields[1:5])
            except (ValueError, IndexError):
                wanted = "a YOLO line is 'class cx cy w h'"
                raise DataError(f"{where}: {wanted}, got {line!r}") from None
            bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            boxes.append(_box({"bbox": bbox, "label": cls}, width, height, classes, where))
        items.append(DetectionItem(_stem(path), _as_uri(uri, path), width, height, tuple(boxes)))
    return DetectionSet("yolo", classes, tuple(items))


def _hf_classes(schema_metadata: dict[bytes, bytes] | None, where: str) -> tuple[str, ...]:
    """Class names from the ``huggingface`` metadata's ClassLabel under ``objects``."""
    raw = (schema_metadata or {}).get(b"huggingface")
    if raw is None:
        raise DataError(f"{where}: no 'huggingface' metadata naming the classes")

    def find(node: Any) -> Iterator[list[str]]:
        if isinstance(node, dict):
            if node.get("_type") == "ClassLabel" and "names" in node:
                yield node["names"]
            for value in node.values():
                yield from find(value)
        elif isinstance(node, list):
            for value in node:
                yield from find(value)

    objects = json.loads(raw).get("info", {}).get("features", {}).get("objects", {})
    for names in find(objects):
        return tuple(str(n) for n in names)
    raise DataError(f"{where}: the 'huggingface' metadata has no ClassLabel under 'objects'")


def read_hf_parquet(uri: str, storage: StorageConfig = DEFAULT_STORAGE) -> DetectionSet:
    """Parquet files with ``image`` and ``objects`` columns, as Hugging Face writes them."""
    fs, base = filesystem_for(uri, storage)
    files = [p for p in _files(fs, base) if p.endswith(".parquet")]
    if not files:
        raise DataError(f"{uri}: no .parquet files")
    classes: tuple[str, ...] | None = None
    items = []
    for file in files:
        table = pq.read_table(file, filesystem=fs)
        classes = classes or _hf_classes(table.schema.metadata, file)
        missing = {"image", "objects"} - set(table.column_names)
        if missing:
            raise DataError(f"{file}: no {' or '.join(sorted(missing))} column")
        ids = table.column("image_id").to_pylist() if "image_id" in table.column_names else None
        for row, (image, objects) in enumerate(
            zip(table.column("image").to_pylist(), table.column("objects").to_pylist(),
                strict=True)
        ):  # fmt: skip
            where = f"{file}#{row}"
            width, height = _image_size((image or {}).get("bytes") or b"", where)
            boxes = [
                _box({"bbox": bbox, "label": label}, width, height, classes, f"{where} box {k}")
                for k, (bbox, label) in enumerate(
                    zip(objects["bbox"], objects["category"], strict=True)
                )
            ]
            item_id = str(ids[row]) if ids else f"{_stem(file)}-{row:06d}"
            source = f"parquet:{_as_uri(uri, file)}#{row}"
            items.append(DetectionItem(item_id, source, width, height, tuple(boxes)))
    return DetectionSet("hf-parquet", classes or (), tuple(items))


def read_detection(uri: str, storage: StorageConfig = DEFAULT_STORAGE) -> DetectionSet:
    """Whichever layout ``uri`` holds: COCO, YOLO or Hugging Face Parquet."""
    fs, base = filesystem_for(uri, storage)
    if _exists(fs, join_path(base, "annotations.json")):
        return read_coco(uri, storage)
    if _exists(fs, join_path(base, "labels")):
        return read_yolo(uri, storage)
    if any(p.endswith(".parquet") for p in _files(fs, base)):
        return read_hf_parquet(uri, storage)
    raise DataError(
        f"{uri}: no detection data (want annotations.json + images/ for COCO, images/ + "
        "labels/ for YOLO, or Parquet with image and objects columns)"
    )


def open_image(item: DetectionItem, storage: StorageConfig = DEFAULT_STORAGE) -> bytes:
    """The encoded bytes of an item's image, wherever its set keeps it."""
    if item.source.startswith("parquet:"):
        file, row = item.source[len("parquet:") :].rsplit("#", 1)
        fs, path = filesystem_for(file, storage)
        parquet = pq.ParquetFile(path, filesystem=fs)
        index = int(row)
        for group in range(parquet.num_row_groups):  # read the one row group holding the row
            rows = parquet.metadata.row_group(group).num_rows
            if index < rows:
                images = parquet.read_row_group(group, columns=["image"]).column("image")
                return images[index].as_py()["bytes"]
            index -= rows
        raise DataError(f"{file} has no row {row}")
    fs, path = filesystem_for(item.source, storage)
    return _read_bytes(fs, path)
