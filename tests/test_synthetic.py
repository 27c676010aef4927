"""Synthetic shards: sizes, determinism, and a task that is learnable but not trivial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activestream.config import StorageConfig
from activestream.sources.shards import ShardSet, load_arrays, open_shards
from activestream.sources.synthetic import make_synthetic_shards


def _make(out: Path, rows: int, **kwargs: object) -> ShardSet:
    kwargs = {"rows_per_shard": 100, "shape": (3, 16, 16), "progress": False, **kwargs}
    return make_synthetic_shards(str(out), rows, **kwargs)  # type: ignore[arg-type]


def test_row_and_shard_counts(tmp_path: Path) -> None:
    pool = _make(tmp_path, 250)
    assert pool.num_rows == 250 and pool.file_rows == (100, 100, 50)
    assert [Path(p).name for p in pool.paths] == [f"part-0000{i}.parquet" for i in range(3)]
    assert open_shards(str(tmp_path / "pool")) == pool


def test_shape_classes_and_pixel_type(tmp_path: Path) -> None:
    pool = _make(tmp_path, 20, shape=(1, 8, 8), num_classes=4)
    ids, x, labels = load_arrays(pool)
    assert pool.shape == (1, 8, 8) and x.shape == (20, 1, 8, 8)
    assert len(pool.classes) == 4 and labels is not None and set(labels) <= {0, 1, 2, 3}
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_ids_are_unique_zero_padded_and_continue_into_test(tmp_path: Path) -> None:
    _make(tmp_path, 150, test_rows=30)
    pool_ids = list(load_arrays(open_shards(str(tmp_path / "pool")))[0])
    test_ids = list(load_arrays(open_shards(str(tmp_path / "test")))[0])
    assert pool_ids[:2] == ["syn-000000000", "syn-000000001"]
    assert test_ids[0] == "syn-000000150" and len(test_ids) == 30
    assert len(set(pool_ids) | set(test_ids)) == 180


def test_same_seed_gives_identical_shards(tmp_path: Path) -> None:
    a = load_arrays(_make(tmp_path / "a", 120, seed=7))
    b = load_arrays(_make(tmp_path / "b", 120, seed=7))
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)


def test_different_seed_gives_different_pixels(tmp_path: Path) -> None:
    _, xa, _ = load_arrays(_make(tmp_path / "a", 50, seed=0))
    _, xb, _ = load_arrays(_make(tmp_path / "b", 50, seed=1))
    assert not np.array_equal(xa, xb)


def test_each_shard_depends_only_on_its_index(tmp_path: Path) -> None:
    short = load_arrays(_make(tmp_path / "a", 100))
    long = load_arrays(_make(tmp_path / "b", 300))
    np.testing.assert_array_equal(short[1], long[1][:100])


def test_classes_are_learnable_but_not_trivial(tmp_path: Path) -> None:
    _, x, labels = load_arrays(_make(tmp_path, 2000, rows_per_shard=1000, shape=(3, 32, 32)))
    assert labels is not None
    flat = x.reshape(len(x), -1)
    train, test = slice(0, 1000), slice(1000, 2000)
    means = np.stack([flat[train][labels[train] == k].mean(0) for k in range(10)])
    dist = ((flat[test][:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == labels[test]).mean()
    assert 0.35 < accuracy < 0.95  # chance is 0.1: learnable, yet far from a lookup
    same_class = flat[labels == 0]
    assert len(np.unique(same_class, axis=0)) == len(same_class)


def test_progress_false_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make(tmp_path, 10)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_writes_to_s3(s3_server: StorageConfig, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/syn"
    pool = make_synthetic_shards(
        uri, 30, rows_per_shard=20, test_rows=5, storage=s3_server, progress=False
    )
    assert pool.paths == tuple(f"{s3_bucket}/syn/pool/part-0000{i}.parquet" for i in range(2))
    assert open_shards(f"{uri}/test", s3_server).num_rows == 5


def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        _make(tmp_path, 10, num_classes=1)
    with pytest.raises(ValueError, match="rows"):
        _make(tmp_path, 0)
