"""Image folders: ``root/<class_name>/<file>.png`` becomes labeled shards, ids = relative paths.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for cls in ("cat", "dog"):
    ...     (root / cls).mkdir()
    ...     Image.new("L", (4, 4)).save(root / cls / "001.png")
    >>> image_files(root)
    (['cat', 'dog'], [('cat/001.png', 0), ('dog/001.png', 1)])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import DEFAULT_STORAGE
from activestream.sources.shards import ShardSet
from activestream.sources.writing import ShardWriter, row_bounds

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def image_files(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted class names and (relative POSIX path, label) of every image below them."""
    classes = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )
    files: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append((path.relative_to(root).as_posix(), label))
    return classes, files


def folder_fingerprint(root: Path, files: Sequence[tuple[str, int]]) -> str:
    """Hash of names, labels, sizes and mtimes: changes whenever an image is added or edited."""
    digest = hashlib.sha256()
    for rel, label in files:
        st = (root / rel).stat()
        digest.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


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
