"""Image folders: ``root/<class_name>/<file>.png``, read in place; ids are relative paths.

A folder of a million JPEGs must be usable at once, not after a decode-and-rewrite of every
file, so :func:`open_image_folder` only lists the folder and reads the header of its first
image: the result is a :class:`~activestream.sources.shards.ShardSet` of ``kind="images"`` whose
"files" are the images themselves. Ids are POSIX paths relative to the folder (``"cat/001.png"``,
the same as the shards :func:`image_folder_to_shards` writes, so labels given against either
stay valid), labels are the index of the class sub-folder among the sorted sub-folder names, and
images are decoded (and resized to the first image's size) where the model runs. Local folders
and ``s3://`` prefixes both work; local ones are listed with :func:`os.scandir`, which needs no
``stat`` per file.

:func:`image_folder_to_shards` remains as an explicit conversion, worth it when the same folder
is scored many times on a cluster and small Parquet files read faster than many tiny images.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.new("L", (4, 3)).save(root / cls / "001.png")
    >>> image_files(root)
    (['cat', 'dog'], [('cat/001.png', 0), ('dog/001.png', 1)])
    >>> images = open_image_folder(str(root))
    >>> images.kind, images.shape, images.classes, images.num_rows
    ('images', (1, 3, 4), ('cat', 'dog'), 2)
    >>> images.read_file(1, ["id", "label"]).to_pylist()
    [{'id': 'dog/001.png', 'label': 1}]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import DEFAULT_STORAGE, invalidate_cache, is_visible, resolve_uri
from activestream.sources.shards import ShardSet, _parse_shape
from activestream.sources.writing import ShardWriter, row_bounds

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
#: Files tried, in order, for a decodable image to take the set's shape from.
_SNIFF_FILES = 100


@dataclass(frozen=True)
class FolderScan:
    """What one listing of a folder found.

    Attributes:
        classes: Visible sub-folder names, sorted: the classes (a label is an index into them).
        files: Image files inside the class sub-folders (any depth), as the filesystem expects
            them, sorted by path.
        has_parquet: Whether a visible ``.parquet`` file was seen: then the folder is a shard
            set, not an image folder.
    """

    classes: tuple[str, ...]
    files: tuple[str, ...]
    has_parquet: bool


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _is_parquet(name: str) -> bool:
    return name.endswith(".parquet") and is_visible(name)


def _is_class(name: str) -> bool:
    return not name.startswith((".", "_"))


def _scan_local(base: str, stop_at_parquet: bool) -> FolderScan | None:
    """List a local folder with ``os.scandir``/``os.walk``: file types come without a stat."""
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DataError(f"cannot list data set {base}: {err}") from None
    classes: list[str] = []
    files: list[str] = []
    has_parquet = False
    for entry in entries:
        if _is_parquet(entry.name) and entry.is_file():
            has_parquet = True
            if stop_at_parquet:
                return FolderScan(tuple(classes), (), True)
        if not (_is_class(entry.name) and entry.is_dir()):
            continue
        classes.append(entry.name)
        for dirpath, dirnames, filenames in os.walk(entry.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            folder = dirpath.replace(os.sep, "/")
            for name in filenames:
                if _is_image(name):
                    files.append(f"{folder}/{name}")
                elif _is_parquet(name):
                    has_parquet = True
            if has_parquet and stop_at_parquet:
                return FolderScan(tuple(classes), (), True)
    files.sort()
    return FolderScan(tuple(classes), tuple(files), has_parquet)


def _scan_remote(fs: pafs.FileSystem, base: str) -> FolderScan | None:
    """List an object-store prefix in one recursive listing (S3 has no directory entries)."""
    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        return None
    prefix = base.rstrip("/") + "/"
    classes: set[str] = set()
    files: list[str] = []
    has_parquet = False
    for item in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        parts = item.path[len(prefix) :].split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if item.type == pafs.FileType.Directory:
            if len(parts) == 1 and _is_class(parts[0]):
                classes.add(parts[0])
            continue
        if item.type != pafs.FileType.File:
            continue
        if _is_parquet(parts[-1]):
            has_parquet = True
        elif len(parts) >= 2 and _is_class(parts[0]) and _is_image(parts[-1]):
            classes.add(parts[0])
            files.append(item.path)
    files.sort()
    return FolderScan(tuple(sorted(classes)), tuple(files), has_parquet)


def scan_folder(
    fs: pafs.FileSystem, base: str, *, stop_at_parquet: bool = False
) -> FolderScan | None:
    """List the class sub-folders and image files under ``base``; None if it is no folder.

    Only names are read, never an image: this is what opening a folder in place costs.

    Args:
        fs: The filesystem (local, or S3 from :func:`~activestream.sources.fs.resolve_uri`).
        base: The folder as ``fs`` expects it.
        stop_at_parquet: Stop at the first Parquet file seen (locally), for a caller that only
            needs to know that the folder is a shard set.

    Raises:
        DataError: The folder exists but cannot be listed.
    """
    invalidate_cache(fs)
    if isinstance(fs, pafs.LocalFileSystem):
        return _scan_local(base, stop_at_parquet)
    try:
        return _scan_remote(fs, base)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"cannot list data set {base}: {err}") from None


def image_files(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted class names and (relative POSIX path, label) of every image below them."""
    base = os.path.abspath(root)
    scan = _scan_local(base, stop_at_parquet=False)
    if scan is None:
        return [], []
    classes = list(scan.classes)
    lookup = {name: i for i, name in enumerate(classes)}
    start = len(base.replace(os.sep, "/").rstrip("/")) + 1
    rels = [path[start:] for path in scan.files]
    return classes, [(rel, lookup[rel.split("/", 1)[0]]) for rel in rels]


def _sniff_image_shape(fs: pafs.FileSystem, files: Sequence[str], uri: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of the first decodable image (headers only), like encoded Parquet."""
    from activestream.sources.images import image_info

    for path in files[:_SNIFF_FILES]:
        try:
            with fs.open_input_stream(path) as handle:
                mode, h, w, _ = image_info(handle.read())
        except Exception:  # noqa: BLE001 - a bad or vanished first image: try the next one
            continue
        return (1 if mode == "L" else 3, h, w)
    raise DataError(
        f"image folder {uri}: none of its first {min(len(files), _SNIFF_FILES)} images can be "
        f"read (first: {files[0]}); pass the image shape (C, H, W) explicitly"
    )


def open_image_folder(
    uri: str,
    storage: StorageConfig = DEFAULT_STORAGE,
    *,
    shape: Sequence[int] | None = None,
    scan: FolderScan | None = None,
) -> ShardSet:
    """Open ``uri/<class_name>/<file>.png`` in place: list it, read one image header, done.

    Nothing is converted or written, so a million images open in the time a listing takes.
    The shape is the first decodable image's (mode ``L`` gives 1 channel, anything else 3);
    images of another size or mode are resized and converted while decoding, and images that
    do not decode are flagged by :meth:`~activestream.sources.shards.ShardSet.decode`, not fatal.

    Args:
        uri: A local folder or ``s3://`` prefix with one sub-folder per class (png, jpg, jpeg,
            bmp in any case, at any depth below the class folder; hidden files are skipped).
        storage: How to reach an ``s3://`` folder.
        shape: ``(C, H, W)`` to decode every image to, instead of the first image's.
        scan: A listing of the folder already made (saves listing it twice).

    Raises:
        DataError: The folder does not exist or holds no images in class sub-folders, or none
            of its first images can be read.
    """
    fs, base = resolve_uri(uri, storage)
    if scan is None:
        scan = scan_folder(fs, base)
    if scan is None:
        raise DataError(f"image folder not found: {uri}")
    if not scan.files:
        raise DataError(
            f"empty data set: no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders of {uri}"
        )
    if shape is not None:
        final_shape = _parse_shape(shape, f"shape for {uri}")
    else:
        final_shape = _sniff_image_shape(fs, scan.files, uri)
    return ShardSet(
        paths=scan.files,
        filesystem=fs,
        shape=final_shape,
        classes=scan.classes,
        num_rows=len(scan.files),
        has_labels=True,
        uri=uri,
        file_rows=(1,) * len(scan.files),
        image_column="image",
        encoded=True,
        has_ids=False,
        string_labels=False,
        kind="images",
        root=base.replace(os.sep, "/") if isinstance(fs, pafs.LocalFileSystem) else base,
    )


def grow_image_folder(
    shards: ShardSet, storage: StorageConfig = DEFAULT_STORAGE
) -> ShardSet | None:
    """The image folder plus images that appeared in its class folders since; None if none.

    Lists the folder again (names only). Images that vanished are kept, like vanished shards:
    they may be labeled already, and reading them gives undecodable rows, not errors.

    A new class sub-folder is refused rather than appended: the model's outputs and every
    label check are sized by the classes the folder was opened with, so a class cannot join a
    running service. Empty new folders are ignored until they hold images.

    Raises:
        DataError: Images appeared in a class sub-folder the set does not know (the message
            names it); move them out, or restart on the folder to train with the new class.
    """
    fs, _ = resolve_uri(shards.uri, storage)
    try:
        scan = scan_folder(fs, shards.root)
    except DataError:
        return None  # the folder is briefly unreachable: keep scoring what we have
    if scan is None:
        return None
    known = set(shards.paths)
    fresh = [p for p in scan.files if p not in known]
    del known
    if not fresh:
        return None
    classes = set(shards.classes)
    new = sorted({i.split("/", 1)[0] for i in shards.image_ids(fresh)} - classes)
    if new:
        names = ", ".join(repr(n) for n in new)
        raise DataError(
            f"new class folder(s) {names} in image folder {shards.uri}: its classes were fixed "
            f"({len(shards.classes)}) when it was opened and size the model's outputs; move the "
            "folder out, or restart on the folder to train with the new class"
        )
    return replace(
        shards,
        paths=shards.paths + tuple(fresh),
        file_rows=shards.file_rows + (1,) * len(fresh),
        num_rows=shards.num_rows + len(fresh),
    )


def image_folder_to_shards(
    root: str,
    out: str,
    *,
    rows_per_shard: int = 4096,
    mode: Literal["L", "RGB"] | None = None,
    storage: StorageConfig = DEFAULT_STORAGE,
) -> ShardSet:
    """Convert ``root/<class_name>/<file>.png`` images into labeled shards.

    Ids are the POSIX paths relative to ``root`` (``"cat/001.png"``), so they stay the same
    across runs and machines and a labeler can find the original file.

    Args:
        root: Folder with one sub-folder per class (png, jpg, jpeg, bmp; any case).
        out: Output directory or ``s3://`` prefix.
        rows_per_shard: Images per file; only this many are decoded at a time.
        mode: ``"L"`` (1 channel) or ``"RGB"`` (3 channels); None picks ``"L"`` only when
            every image is grayscale.
        storage: How to reach an ``s3://`` output.

    Raises:
        DataError: No images, an unreadable image, or images of different sizes (the message
            names the first offending file).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L', 'RGB' or None, got {mode!r}")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"image folder not found: {root}")
    classes, files = image_files(base)
    if not files:
        raise DataError(
            f"empty data set: no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders "
            f"of {root}"
        )

    size: tuple[int, int] | None = None
    gray = True
    for rel, _ in files:  # headers only: cheap, and fails before anything is written
        try:
            with Image.open(base / rel) as img:
                img_size, img_mode = img.size, img.mode
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise DataError(f"cannot read image {base / rel}: {err}") from None
        if size is None:
            size = img_size
        elif img_size != size:
            raise DataError(
                f"image {base / rel} is {img_size[0]}x{img_size[1]}, but earlier images are "
                f"{size[0]}x{size[1]}; all images must have the same size"
            )
        gray = gray and img_mode in _GRAYSCALE_MODES
    assert size is not None
    mode = mode or ("L" if gray else "RGB")
    channels = 1 if mode == "L" else 3
    shape = (channels, size[1], size[0])

    writer = ShardWriter(out, storage, shape, classes, labels=True)
    for lo, hi in row_bounds(len(files), rows_per_shard):
        chunk = files[lo:hi]
        pixels = np.empty((len(chunk), *shape), dtype=np.uint8)
        for i, (rel, _) in enumerate(chunk):
            try:
                with Image.open(base / rel) as img:
                    arr = np.asarray(img.convert(mode), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                raise DataError(f"cannot decode image {base / rel}: {err}") from None
            pixels[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        writer.write([rel for rel, _ in chunk], pixels, [label for _, label in chunk])
    return writer.finish()
