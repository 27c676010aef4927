import gzip
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from clirun import run_cli
from PIL import Image

from activestream.errors import DataError
from activestream.sources.fashion_mnist import (
    CLASSES,
    DEBIAN_DIR,
    find_idx_files,
    read_idx,
    write_fashion_mnist_shards,
)

STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> None:
    """An unsigned-byte IDX file: magic 0x0000_08_<ndim>, big-endian dims, raw bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_idx_dir(folder: Path, train: int = 7, test: int = 3, seed: int = 0) -> dict:
    """Small valid Fashion-MNIST-like IDX files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, :4] = 0  # some flat regions too, as in the real photos
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / STEMS[split][0], images)
        write_idx(folder / STEMS[split][1], labels)
        arrays[split] = (images, labels)
    return arrays


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.mode == "L"
        return np.asarray(img)


def read_split(folder: Path) -> dict:
    files = sorted(folder.glob("part-*.parquet"))
    tables = [pq.read_table(f) for f in files]
    return {
        "files": files,
        "ids": [i for t in tables for i in t.column("id").to_pylist()],
        "images": [decode(b) for t in tables for b in t.column("image").to_pylist()],
        "labels": [v for t in tables for v in t.column("label").to_pylist()],
        "schema": tables[0].schema,
    }


def test_images_round_trip_exactly_with_labels_ids_and_classes(tmp_path):
    arrays = make_idx_dir(tmp_path / "idx")
    info = write_fashion_mnist_shards(
        str(tmp_path / "out"), idx_dir=str(tmp_path / "idx"), progress=False
    )
    assert (info.pool_rows, info.test_rows, info.written) == (7, 3, True)
    assert info.pool == str(tmp_path / "out" / "pool")
    for split, name, prefix in (("train", "pool", "fmnist-train"), ("test", "test", "fmnist-test")):
        images, labels = arrays[split]
        got = read_split(tmp_path / "out" / name)
        assert got["ids"] == [f"{prefix}-{i:05d}" for i in range(len(labels))]
        assert got["labels"] == labels.astype(int).tolist()
        assert all(np.array_equal(a, b) for a, b in zip(got["images"], images, strict=True))
        schema = got["schema"]
        assert [(f.name, str(f.type)) for f in schema] == [
            ("id", "string"),
            ("image", "binary"),
            ("label", "int64"),
        ]
        assert json.loads(schema.metadata[b"activestream.classes"]) == list(CLASSES)
        assert b"activestream.shape" not in schema.metadata
    assert CLASSES[0] == "T-shirt/top" and CLASSES[9] == "Ankle boot"


def test_plain_idx_files_work_too(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte", images, gz=False)
    assert np.array_equal(read_idx(tmp_path / "x-idx3-ubyte", ndim=3), images)


def test_rows_per_shard_splits_files_and_limit_caps_each_split(tmp_path):
    make_idx_dir(tmp_path / "idx", train=7, test=3)
    info = write_fashion_mnist_shards(
        str(tmp_path / "out"),
        idx_dir=str(tmp_path / "idx"),
        rows_per_shard=3,
        limit=5,
        progress=False,
    )
    assert [pq.read_metadata(f).num_rows for f in info.pool_files] == [3, 2]
    assert [pq.read_metadata(f).num_rows for f in info.test_files] == [3]
    assert (info.pool_rows, info.test_rows) == (5, 3)
    assert [Path(f).name for f in info.pool_files] == ["part-00000.parquet", "part-00001.parquet"]


def test_second_call_is_a_no_op_and_new_parameters_rewrite(tmp_path):
    make_idx_dir(tmp_path / "idx", train=7, test=3)
    out, idx = str(tmp_path / "out"), str(tmp_path / "idx")
    first = write_fashion_mnist_shards(out, idx_dir=idx, rows_per_shard=2, progress=False)
    mtimes = {f: Path(f).stat().st_mtime_ns for f in first.pool_files}
    again = write_fashion_mnist_shards(out, idx_dir=idx, rows_per_shard=2, progress=False)
    assert not again.written
    assert (again.pool_files, again.pool_rows, again.test_rows) == (
        first.pool_files,
        first.pool_rows,
        first.test_rows,
    )
    assert {f: Path(f).stat().st_mtime_ns for f in first.pool_files} == mtimes

    # Fewer, larger shards: the stale part files of the first write are gone.
    bigger = write_fashion_mnist_shards(out, idx_dir=idx, rows_per_shard=10, progress=False)
    assert bigger.written and len(bigger.pool_files) == 1
    assert sorted(p.name for p in (tmp_path / "out" / "pool").iterdir()) == ["part-00000.parquet"]

    # A damaged shard is noticed and rewritten rather than trusted.
    Path(bigger.pool_files[0]).write_bytes(b"oops")
    fixed = write_fashion_mnist_shards(out, idx_dir=idx, rows_per_shard=10, progress=False)
    assert fixed.written
    assert read_split(tmp_path / "out" / "pool")["ids"][-1] == "fmnist-train-00006"


def test_corrupt_magic_is_a_data_error_naming_the_file(tmp_path):
    make_idx_dir(tmp_path / "idx")
    bad = tmp_path / "idx" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + (7).to_bytes(4, "big") + bytes(7)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*magic"):
        write_fashion_mnist_shards(
            str(tmp_path / "out"), idx_dir=str(tmp_path / "idx"), progress=False
        )
    assert not (tmp_path / "out" / "_SUCCESS.json").exists()


def test_truncated_payload_is_a_data_error(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + bytes(4))
    with pytest.raises(DataError, match="need 10 bytes"):
        read_idx(path, ndim=1)


def test_missing_folder_gives_the_apt_hint(tmp_path):
    with pytest.raises(DataError) as err:
        find_idx_files(str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message


def test_s3_output_is_written_once_with_its_manifest(tmp_path, s3_server, s3_bucket):
    from activestream.sources.fs import filesystem_for

    arrays = make_idx_dir(tmp_path / "idx", train=5, test=2)
    uri = f"s3://{s3_bucket}/fm"
    kwargs = {"idx_dir": str(tmp_path / "idx"), "rows_per_shard": 2, "storage": s3_server}
    first = write_fashion_mnist_shards(uri, progress=False, **kwargs)
    assert (first.pool, first.pool_rows, first.test_rows) == (f"{uri}/pool", 5, 2)
    assert first.pool_files[0] == f"{s3_bucket}/fm/pool/part-00000.parquet"
    fs, _ = filesystem_for(uri, s3_server)
    table = pq.read_table(first.pool_files[-1], filesystem=fs)
    assert table.column("id").to_pylist() == ["fmnist-train-00004"]
    assert np.array_equal(decode(table.column("image")[0].as_py()), arrays["train"][0][4])
    again = write_fashion_mnist_shards(uri, progress=False, **kwargs)
    assert not again.written and again.pool_files == first.pool_files


def test_cli_writes_shards_and_reports_errors_in_one_line(tmp_path):
    make_idx_dir(tmp_path / "idx", train=5, test=2)
    args = ("fashion-mnist", "--idx-dir", "idx", "--out", "fm", "--rows-per-shard", "2")
    proc = run_cli(*args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 5 pool rows in 3 shards" in proc.stdout
    assert "2 test rows in 1 shard to" in proc.stdout
    assert len(list((tmp_path / "fm" / "pool").glob("part-*.parquet"))) == 3

    proc = run_cli("fashion-mnist", "--idx-dir", "missing", "--out", "x", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "apt-get install dataset-fashion-mnist" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="needs apt-get install dataset-fashion-mnist",
)
def test_real_fashion_mnist_converts(tmp_path):
    info = write_fashion_mnist_shards(
        str(tmp_path / "fm"), limit=2000, rows_per_shard=1000, progress=False
    )
    assert (info.pool_rows, info.test_rows) == (2000, 2000)
    assert (len(info.pool_files), len(info.test_files)) == (2, 2)
    got = read_split(tmp_path / "fm" / "pool")
    assert len(got["ids"]) == 2000 and got["ids"][0] == "fmnist-train-00000"
    assert all(img.shape == (28, 28) for img in got["images"])
    assert set(got["labels"]) == set(range(10))
    # The official training set's first label is 9 (Ankle boot).
    assert got["labels"][0] == 9
