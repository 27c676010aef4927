"""Fashion-MNIST as Parquet shards of PNG-encoded images, from the Debian package's IDX files.

Fashion-MNIST (Zalando Research, MIT licence) is 70,000 labelled 28x28 grayscale photos of
clothing in ten classes: a real data set that is as cheap to handle as MNIST but far from solved
by a linear model, which makes it a fair test for active learning. Nothing is downloaded: Debian
ships the official files (``apt-get install dataset-fashion-mnist`` puts them under
``/usr/share/datasets/fashion-mnist``), and ``activestream fashion-mnist --out DIR`` turns them
into ``DIR/pool/part-*.parquet`` (the 60,000 training images) and ``DIR/test/part-*.parquet``
(the 10,000 test images).

Each shard has the columns ``id: string``, ``image: binary`` (one PNG file per row) and
``label: int64``, plus the class names under the schema metadata key ``activestream.classes``.
Images are stored encoded rather than as ``pixels: list<uint8>`` because that is the form real
image collections arrive in; PNG is lossless, so decoding gives back the exact source pixels. A
``_SUCCESS.json`` manifest, written last, makes a repeated call a cheap no-op.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from activestream.config import StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import (
    DEFAULT_STORAGE,
    filesystem_for,
    invalidate_cache,
    is_s3,
    join_path,
)
from activestream.sources.writing import read_manifest, row_bounds, write_manifest

#: The official class names, in label order (label ``k`` is ``CLASSES[k]``).
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Where ``apt-get install dataset-fashion-mnist`` puts the IDX files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES_KEY = b"activestream.classes"
INSTALL_HINT = "apt-get install dataset-fashion-mnist"

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type Fashion-MNIST uses
_FORMAT_VERSION = 1  # bump when the shard layout changes, so old manifests are not trusted
_MANIFEST = "_SUCCESS.json"
_BAR_STEP = 1000  # rows encoded between progress-bar updates
_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("label", pa.int64()),
    ],
    metadata={CLASSES_KEY: json.dumps(list(CLASSES)).encode()},
)


@dataclass(frozen=True)
class FashionMnistShards:
    """What :func:`write_fashion_mnist_shards` wrote (or found already written).

    Attributes:
        pool: URI of the pool split (the 60,000 training images, or ``limit`` of them).
        test: URI of the test split.
        pool_files: Shard paths of the pool, as the output filesystem names them.
        test_files: Shard paths of the test split.
        pool_rows: Rows over all pool shards.
        test_rows: Rows over all test shards.
        written: False when a matching manifest showed the shards were already there.
    """

    pool: str
    test: str
    pool_files: tuple[str, ...]
    test_files: tuple[str, ...]
    pool_rows: int
    test_rows: int
    written: bool


def find_idx_files(root: str | None = None) -> dict[str, Path]:
    """Locate the four IDX files, gzip'd (as Debian ships them) or plain.

    Args:
        root: Folder holding them; default the Debian package's install location.

    Returns:
        Paths under the keys ``train_images``, ``train_labels``, ``test_images``,
        ``test_labels``.

    Raises:
        DataError: A file is missing; the one-line message says how to install them.
    """
    folder = Path(root).expanduser() if root else DEBIAN_DIR
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, stem in _FILES.items():
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                found[key] = folder / name
                break
        else:
            missing.append(f"{stem}.gz")
    if missing:
        raise DataError(
            f"Fashion-MNIST IDX files not found in {folder} (missing {', '.join(missing)}): "
            f"run '{INSTALL_HINT}' or pass the folder that holds them"
        )
    return found


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip'd or plain) into a NumPy array.

    The magic number is checked, and so is the payload length, because a truncated download or
    a file of the other kind (labels for images) would otherwise give silently wrong data.

    Args:
        path: The file; gzip is recognised by its content, not its name.
        ndim: Dimensions it must have: 3 for images ``(n, rows, cols)``, 1 for labels.

    Returns:
        A read-only uint8 array of the stored shape.

    Raises:
        DataError: Unreadable file, wrong magic number or a payload of the wrong size.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {err}".splitlines()[0]) from None
    magic = raw[:4]
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != _IDX_UBYTE or magic[3] != ndim:
        raise DataError(
            f"{path} is not an unsigned-byte IDX file with {ndim} dimension(s) "
            f"(magic {magic.hex() or 'missing'}, want 0000{_IDX_UBYTE:02x}{ndim:02x})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header is truncated")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX dimensions {dims} need {expected} bytes, file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` and labels ``(n,)`` of ``split`` (``"train"`` or ``"test"``).

    Raises:
        DataError: A bad file, image and label counts that differ, or labels outside 0..9.
    """
    images = read_idx(files[f"{split}_images"], ndim=3)
    labels = read_idx(files[f"{split}_labels"], ndim=1)
    if len(images) != len(labels):
        raise DataError(
            f"{files[f'{split}_images']} holds {len(images)} images but "
            f"{files[f'{split}_labels']} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise DataError(f"{files[f'{split}_labels']}: label {int(labels.max())} is not in 0..9")
    return images, labels


def encode_png(image: np.ndarray) -> bytes:
    """One ``(H, W)`` uint8 image as grayscale PNG bytes.

    ``optimize=False`` keeps encoding fast (the optimiser tries several filters per image for a
    few percent of size) and the output deterministic for a given Pillow and zlib.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buf, format="PNG", optimize=False
    )
    return buf.getvalue()


def _digest(paths: list[Path]) -> str:
    """SHA-256 over the source files, so new source data invalidates an old manifest."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class _Output:
    """The output folder on a local disk or S3: shard writes, listing and the manifest."""

    def __init__(self, out: str, storage: StorageConfig) -> None:
        self.uri = out.rstrip("/") or out
        self.fs, self.base = filesystem_for(out, storage)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def sub_uri(self, name: str) -> str:
        return f"{self.uri}/{name}" if is_s3(self.uri) else os.path.join(self.uri, name)

    def write_table(self, table: pa.Table, folder: str, name: str) -> str:
        """Write ``folder/name``; return its path.

        Locally the table goes to a hidden temporary name first and is renamed, so a reader or
        a second writer never sees half a file; an S3 object appears whole or not at all.
        """
        path = join_path(folder, name)
        if self.local:
            tmp = join_path(folder, f".{name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp, filesystem=self.fs)
            os.replace(tmp, path)
        else:
            pq.write_table(table, path, filesystem=self.fs)
        return path

    def remove_stale(self, folder: str, keep: set[str]) -> None:
        """Delete ``part-*.parquet`` files a previous, larger write left behind."""
        invalidate_cache(self.fs)
        selector = pafs.FileSelector(folder, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith("part-") and name.endswith(".parquet") and info.path not in keep:
                self.fs.delete_file(info.path)

    def sizes(self, paths: list[str]) -> list[int | None]:
        invalidate_cache(self.fs)
        return [
            info.size if info.type == pafs.FileType.File else None
            for info in self.fs.get_file_info(paths)
        ]

    def read_manifest(self) -> dict[str, Any] | None:
        path = join_path(self.base, _MANIFEST)
        if self.local:
            return read_manifest(Path(path))
        try:
            with self.fs.open_input_stream(path) as f:
                return json.loads(f.read())
        except (OSError, ValueError, pa.ArrowException):
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        path = join_path(self.base, _MANIFEST)
        if self.local:
            write_manifest(Path(path), manifest)
            return
        with self.fs.open_output_stream(path) as f:  # an S3 object appears whole or not at all
            f.write(json.dumps(manifest, indent=2, sort_keys=True).encode())

    def drop_manifest(self) -> None:
        path = join_path(self.base, _MANIFEST)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)


def _already_written(output: _Output, params: dict[str, Any]) -> FashionMnistShards | None:
    """The manifest's description when it matches ``params`` and every shard is intact."""
    manifest = output.read_manifest()
    if manifest is None or manifest.get("params") != params:
        return None
    try:
        splits = {name: manifest["splits"][name] for name in ("pool", "test")}
        paths = {
            name: [join_path(output.base, name, f) for f in split["files"]]
            for name, split in splits.items()
        }
        sizes = [size for split in splits.values() for size in split["bytes"]]
        rows = {name: sum(split["rows"]) for name, split in splits.items()}
    except (KeyError, TypeError):
        return None  # a manifest from some other writer: rewrite
    if output.sizes([*paths["pool"], *paths["test"]]) != sizes:
        return None  # a shard was deleted or changed since: rewrite
    return FashionMnistShards(
        pool=output.sub_uri("pool"),
        test=output.sub_uri("test"),
        pool_files=tuple(paths["pool"]),
        test_files=tuple(paths["test"]),
        pool_rows=rows["pool"],
        test_rows=rows["test"],
        written=False,
    )


def _write_split(
    output: _Output,
    name: str,
    prefix: str,
    images: np.ndarray,
    labels: np.ndarray,
    rows_per_shard: int,
    bar: Any,
) -> dict[str, list[Any]]:
    """Encode and write one split; return its manifest entry (file names, rows, bytes)."""
    folder = join_path(output.base, name)
    output.fs.create_dir(folder, recursive=True)
    written: dict[str, list[Any]] = {"files": [], "rows": [], "bytes": []}
    paths: list[str] = []
    for shard, (lo, hi) in enumerate(row_bounds(len(images), rows_per_shard)):
        # Serial on purpose: one 28x28 PNG takes ~0.1 ms, so all 70k rows cost ~6 s of CPU, and
        # a ProcessPoolExecutor measured slower on a 2-core machine (start-up and pickling
        # outweigh the work); on many cores it could save a few seconds of a one-off job.
        encoded: list[bytes] = []
        for start in range(lo, hi, _BAR_STEP):
            stop = min(start + _BAR_STEP, hi)
            encoded.extend(encode_png(image) for image in images[start:stop])
            bar.update(stop - start)
        table = pa.Table.from_arrays(
            [
                pa.array([f"{prefix}-{i:05d}" for i in range(lo, hi)], pa.string()),
                pa.array(encoded, pa.binary()),
                pa.array(labels[lo:hi].astype(np.int64), pa.int64()),
            ],
            schema=_SCHEMA,
        )
        file_name = f"part-{shard:05d}.parquet"
        paths.append(output.write_table(table, folder, file_name))
        written["files"].append(file_name)
        written["rows"].append(hi - lo)
    output.remove_stale(folder, set(paths))
    written["bytes"] = output.sizes(paths)
    return written


def write_fashion_mnist_shards(
    out: str,
    *,
    rows_per_shard: int = 10_000,
    limit: int | None = None,
    idx_dir: str | None = None,
    storage: StorageConfig = DEFAULT_STORAGE,
    progress: bool = True,
) -> FashionMnistShards:
    """Write Fashion-MNIST as ``<out>/pool/part-*.parquet`` and ``<out>/test/part-*.parquet``.

    The pool is the official training split (ids ``fmnist-train-00000``, ...), the test split
    the official test split (``fmnist-test-00000``, ...), both in file order. The call is
    idempotent: when ``<out>/_SUCCESS.json`` records the same parameters and source files and
    every shard it lists is intact, nothing is read or written again.

    Args:
        out: Local directory or ``s3://bucket/prefix``.
        rows_per_shard: Rows per Parquet file (the last one may hold fewer).
        limit: Keep only the first ``limit`` rows of each split (quick trials); None keeps all.
        idx_dir: Folder with the IDX files; default the Debian package's location.
        storage: How to reach an ``s3://`` output.
        progress: Show a tqdm bar over the rows being encoded.

    Returns:
        Where the splits are and how many rows each holds.

    Raises:
        ValueError: ``rows_per_shard`` or ``limit`` below 1.
        DataError: IDX files missing (the message gives the ``apt-get`` command) or damaged.
    """
    from tqdm.auto import tqdm

    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    files = find_idx_files(idx_dir)
    params = {
        "dataset": "fashion-mnist",
        "format": _FORMAT_VERSION,
        "rows_per_shard": int(rows_per_shard),
        "limit": None if limit is None else int(limit),
        "source_sha256": _digest([files[k] for k in _FILES]),
    }
    output = _Output(out, storage)
    done = _already_written(output, params)
    if done is not None:
        return done

    train_images, train_labels = load_split(files, "train")
    test_images, test_labels = load_split(files, "test")
    train_images, train_labels = train_images[:limit], train_labels[:limit]
    test_images, test_labels = test_images[:limit], test_labels[:limit]
    if len(train_labels) == 0 or len(test_labels) == 0:
        folder = files["train_images"].parent
        raise DataError(f"empty data set: the IDX files in {folder} hold no rows")
    output.fs.create_dir(output.base, recursive=True)
    output.drop_manifest()  # from here until the new one is written, nothing is trusted
    with tqdm(
        total=len(train_labels) + len(test_labels),
        unit="rows",
        desc="encoding",
        disable=not progress,
    ) as bar:
        splits = {
            "pool": _write_split(
                output, "pool", "fmnist-train", train_images, train_labels, rows_per_shard, bar
            ),
            "test": _write_split(
                output, "test", "fmnist-test", test_images, test_labels, rows_per_shard, bar
            ),
        }
    output.write_manifest({"params": params, "splits": splits})
    return FashionMnistShards(
        pool=output.sub_uri("pool"),
        test=output.sub_uri("test"),
        pool_files=tuple(join_path(output.base, "pool", f) for f in splits["pool"]["files"]),
        test_files=tuple(join_path(output.base, "test", f) for f in splits["test"]["files"]),
        pool_rows=sum(splits["pool"]["rows"]),
        test_rows=sum(splits["test"]["rows"]),
        written=True,
    )
