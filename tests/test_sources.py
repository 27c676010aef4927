"""Data sources against real files, a real S3-compatible server and a real local Ray."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from activestream.config import Config, DataConfig, StorageConfig
from activestream.errors import DataError
from activestream.sources.digits import write_digits_shards
from activestream.sources.imagefolder import image_folder_to_shards
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import (
    ShardSet,
    iter_batches,
    load_arrays,
    open_shards,
    pixels_to_array,
    read_ray_dataset,
)
from activestream.sources.writing import write_shards


def _random_images(n: int, shape: tuple[int, int, int] = (3, 4, 5), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _write_small(out: str | Path, n: int = 10, **kwargs: object) -> ShardSet:
    ids = [f"row-{i:03d}" for i in range(n)]
    labels = np.arange(n) % 3
    return write_shards(
        str(out), ids, _random_images(n), labels, ["a", "b", "c"], rows_per_shard=4, **kwargs
    )


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ShardSet, ShardSet]:
    root = tmp_path_factory.mktemp("digits")
    pool, test = write_digits_shards(str(root), shards=4, test_fraction=0.25, seed=0)
    return root, pool, test


def test_digits_pool_and_test_cover_all_1797_rows(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    _, pool, test = digits
    assert pool.num_rows + test.num_rows == 1797
    assert len(load_arrays(pool)[0]) + len(load_arrays(test)[0]) == 1797


def test_digits_pool_and_test_ids_are_disjoint(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    _, pool, test = digits
    pool_ids, test_ids = set(load_arrays(pool)[0]), set(load_arrays(test)[0])
    assert not pool_ids & test_ids
    assert len(pool_ids | test_ids) == 1797


def test_digits_test_split_is_stratified(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    _, _, test = digits
    _, _, labels = load_arrays(test)
    assert labels is not None
    counts = np.bincount(labels, minlength=10)
    assert (counts > 0).all()
    assert counts.max() - counts.min() <= 3  # digits are near-balanced, so is a stratified split


def test_digits_shape_classes_and_files(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    root, pool, test = digits
    assert pool.shape == test.shape == (1, 8, 8)
    assert pool.classes == test.classes == tuple(str(i) for i in range(10))
    assert [Path(p).name for p in pool.paths] == [f"part-0000{i}.parquet" for i in range(4)]
    assert test.paths == (str(root / "test" / "part-00000.parquet"),)
    assert pool.has_labels and test.has_labels


def test_digits_pixels_span_unit_range(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    _, pool, _ = digits
    _, x, _ = load_arrays(pool)
    assert x.dtype == np.float32 and x.shape == (pool.num_rows, 1, 8, 8)
    assert x.min() == 0.0 and x.max() == 1.0


def test_digits_second_call_does_not_rewrite(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    root, pool, test = digits
    files = sorted(root.rglob("*.parquet"))
    before = {f: f.stat().st_mtime_ns for f in files}
    again_pool, again_test = write_digits_shards(str(root), shards=4, test_fraction=0.25, seed=0)
    assert {f: f.stat().st_mtime_ns for f in sorted(root.rglob("*.parquet"))} == before
    assert (again_pool, again_test) == (pool, test)


def test_digits_other_parameters_rewrite(tmp_path: Path) -> None:
    first, _ = write_digits_shards(str(tmp_path), shards=4)
    second, _ = write_digits_shards(str(tmp_path), shards=2)
    assert len(first.paths) == 4 and len(second.paths) == 2
    assert len(list((tmp_path / "pool").glob("*.parquet"))) == 2


# ----------------------------------------------------------------------------- open_shards


def test_open_shards_nonexistent_path_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_shards(str(tmp_path / "nope"))


def test_open_shards_empty_dir_raises_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty data set"):
        open_shards(str(tmp_path))


def test_open_shards_garbage_file_names_the_file(tmp_path: Path) -> None:
    _write_small(tmp_path)
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="x.parquet"):
        open_shards(str(tmp_path))


def test_open_shards_missing_image_column_names_what_it_expects_and_the_file(
    tmp_path: Path,
) -> None:
    pq.write_table(pa.table({"id": ["a"], "label": [0]}), tmp_path / "nopix.parquet")
    with pytest.raises(DataError, match=r"nopix\.parquet has no image column: expected 'pixels'"):
        open_shards(str(tmp_path))


def test_open_shards_zero_rows_raises_empty(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("pixels", pa.list_(pa.uint8()))])
    pq.write_table(schema.empty_table(), tmp_path / "part-00000.parquet")
    with pytest.raises(DataError, match="empty data set"):
        open_shards(str(tmp_path))


def test_open_shards_inconsistent_shapes_raise(tmp_path: Path) -> None:
    for name, shape in (("a", (1, 2, 2)), ("b", (1, 4, 1))):
        write_shards(
            str(tmp_path / name), [name], _random_images(1, shape), [0], ["x"], rows_per_shard=1
        )
    with pytest.raises(DataError, match="inconsistent image shapes"):
        open_shards(str(tmp_path))


def test_open_shards_without_metadata_needs_a_shape(tmp_path: Path) -> None:
    pixels = pa.array([[1, 2, 3, 4]], pa.list_(pa.uint8()))
    pq.write_table(pa.table({"id": ["a"], "pixels": pixels}), tmp_path / "user.parquet")
    with pytest.raises(DataError, match="activestream.shape"):
        open_shards(str(tmp_path))


def test_open_shards_without_metadata_infers_classes_from_labels(tmp_path: Path) -> None:
    pixels = pa.array([[1, 2, 3, 4]] * 3, pa.list_(pa.uint8()))
    table = pa.table({"id": ["a", "b", "c"], "pixels": pixels, "label": [0, 2, 1]})
    pq.write_table(table, tmp_path / "user.parquet")
    shards = open_shards(str(tmp_path), shape=(1, 2, 2))
    assert shards.shape == (1, 2, 2)
    assert shards.classes == ("0", "1", "2")
    assert shards.has_labels and shards.num_rows == 3


def test_open_shards_single_file(tmp_path: Path) -> None:
    written = _write_small(tmp_path)
    shards = open_shards(written.paths[1])
    assert shards.paths == (written.paths[1],) and shards.num_rows == 4


def test_shard_set_pickles(tmp_path: Path) -> None:
    shards = open_shards(str(_write_small(tmp_path).uri))
    assert pickle.loads(pickle.dumps(shards)) == shards


def test_subset_counts_only_selected_shards(tmp_path: Path) -> None:
    shards = open_shards(_write_small(tmp_path).uri)
    assert shards.file_rows == (4, 4, 2)
    sub = shards.subset([2, 0])
    assert sub.paths == (shards.paths[2], shards.paths[0]) and sub.num_rows == 6


# ----------------------------------------------------------------------------- read and write


def test_write_shards_load_arrays_round_trip(tmp_path: Path) -> None:
    pixels = _random_images(10)
    ids = [f"row-{i:03d}" for i in range(10)]
    labels = np.arange(10) % 3
    written = write_shards(str(tmp_path), ids, pixels, labels, ["a", "b", "c"], rows_per_shard=4)
    shards = open_shards(str(tmp_path))
    got_ids, x, got_labels = load_arrays(shards)
    assert len(written.paths) == 3 and shards == written
    assert list(got_ids) == ids
    np.testing.assert_array_equal(x, pixels.astype(np.float32) / 255)
    np.testing.assert_array_equal(got_labels, labels)


def test_write_shards_without_labels_loads_none(tmp_path: Path) -> None:
    write_shards(str(tmp_path), ["a", "b"], _random_images(2), None, ["x"], rows_per_shard=5)
    shards = open_shards(str(tmp_path))
    assert not shards.has_labels and shards.classes == ("x",)
    assert load_arrays(shards)[2] is None


def test_write_shards_removes_stale_parts(tmp_path: Path) -> None:
    _write_small(tmp_path, n=10)
    _write_small(tmp_path, n=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.parquet"]


def test_pixels_to_array_divides_by_255() -> None:
    pixels = _random_images(6, (2, 3, 3))
    column = pa.chunked_array(
        [
            pa.array(list(pixels[:4].reshape(4, -1)), pa.list_(pa.uint8())),
            pa.array(list(pixels[4:].reshape(2, -1)), pa.list_(pa.uint8())),
        ]
    )
    x = pixels_to_array(column, (2, 3, 3))
    assert x.dtype == np.float32 and x.shape == (6, 2, 3, 3)
    np.testing.assert_array_equal(x, pixels.astype(np.float32) / 255)


def test_pixels_to_array_handles_sliced_and_empty_input() -> None:
    pixels = _random_images(5, (1, 2, 2))
    arr = pa.array(list(pixels.reshape(5, -1)), pa.list_(pa.uint8()))
    np.testing.assert_array_equal(
        pixels_to_array(arr[2:4], (1, 2, 2)), pixels[2:4] / np.float32(255)
    )
    empty = pa.chunked_array([], pa.list_(pa.uint8()))
    assert pixels_to_array(empty, (1, 2, 2)).shape == (0, 1, 2, 2)


def test_pixels_to_array_rejects_wrong_row_length() -> None:
    arr = pa.array([[1, 2, 3, 4], [1, 2, 3]], pa.list_(pa.uint8()))
    with pytest.raises(DataError, match="row 1 has 3 values, expected 4"):
        pixels_to_array(arr, (1, 2, 2))


def test_iter_batches_requests_only_existing_columns(tmp_path: Path) -> None:
    write_shards(str(tmp_path), list("abcde"), _random_images(5), None, ["x"], rows_per_shard=3)
    batches = list(iter_batches(open_shards(str(tmp_path)), batch_size=2))
    assert [b.num_rows for b in batches] == [2, 1, 2]
    assert all(b.schema.names == ["id", "pixels"] for b in batches)
    assert [i for b in batches for i in b.column("id").to_pylist()] == list("abcde")


@pytest.mark.slow
def test_read_ray_dataset_streams_ids_and_pixels(tmp_path: Path, ray_session: None) -> None:
    shards = _write_small(tmp_path, n=10)
    ds = read_ray_dataset(shards)
    assert ds.count() == shards.num_rows
    batches = list(ds.iter_batches(batch_format="pyarrow", batch_size=None))
    assert all(b.schema.names == ["id", "pixels"] for b in batches)
    assert sorted(i for b in batches for i in b.column("id").to_pylist()) == [
        f"row-{i:03d}" for i in range(10)
    ]


# ----------------------------------------------------------------------------- s3


def test_s3_round_trip_matches_local_write(s3_server: StorageConfig, s3_bucket: str) -> None:
    pixels = _random_images(9)
    ids = [f"s3-{i}" for i in range(9)]
    labels = np.arange(9) % 3
    uri = f"s3://{s3_bucket}/pool"
    written = write_shards(
        uri, ids, pixels, labels, ["a", "b", "c"], rows_per_shard=4, storage=s3_server
    )
    shards = open_shards(uri, s3_server)
    assert shards.paths == tuple(f"{s3_bucket}/pool/part-0000{i}.parquet" for i in range(3))
    assert (shards.num_rows, shards.shape, shards.classes) == (
        written.num_rows,
        written.shape,
        written.classes,
    )
    got_ids, x, got_labels = load_arrays(pickle.loads(pickle.dumps(shards)))
    assert list(got_ids) == ids
    np.testing.assert_array_equal(x, pixels / np.float32(255))
    np.testing.assert_array_equal(got_labels, labels)


def test_s3_missing_prefix_raises(s3_server: StorageConfig, s3_bucket: str) -> None:
    with pytest.raises(DataError, match="not found"):
        open_shards(f"s3://{s3_bucket}/does-not-exist", s3_server)


@pytest.mark.slow
def test_read_ray_dataset_over_s3_counts_rows(
    s3_server: StorageConfig, s3_bucket: str, ray_session: None
) -> None:
    uri = f"s3://{s3_bucket}/pool"
    _write_small(uri, n=10, storage=s3_server)
    shards = open_shards(uri, s3_server)
    ds = read_ray_dataset(shards)
    assert ds.count() == 10
    ids = [i for b in ds.iter_batches(batch_format="pyarrow") for i in b.column("id").to_pylist()]
    assert sorted(ids) == [f"row-{i:03d}" for i in range(10)]


# ----------------------------------------------------------------------------- image folders


def _image_folder(root: Path, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            rel = f"{cls}/img{i}.png"
            w, h = (sizes or {}).get(rel, (6, 4))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
    return root


def test_image_folder_ids_are_relative_paths_and_labels_follow_folders(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    shards = image_folder_to_shards(str(root), str(tmp_path / "out"), rows_per_shard=4)
    ids, x, labels = load_arrays(shards)
    assert shards.classes == ("cat", "dog") and shards.shape == (3, 4, 6)
    assert list(ids) == [f"{c}/img{i}.png" for c in ("cat", "dog") for i in range(3)]
    assert labels is not None and labels.tolist() == [0, 0, 0, 1, 1, 1]
    original = np.asarray(Image.open(root / "dog/img2.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[5], original / np.float32(255))


def test_image_folder_conversion_gives_same_ids_twice(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    first = load_arrays(image_folder_to_shards(str(root), str(tmp_path / "a")))[0]
    second = load_arrays(image_folder_to_shards(str(root), str(tmp_path / "b")))[0]
    assert list(first) == list(second)


def test_image_folder_grayscale_images_give_one_channel(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "only").mkdir(parents=True)
    Image.new("L", (5, 3), color=128).save(tmp_path / "imgs" / "only" / "a.PNG")
    shards = image_folder_to_shards(str(tmp_path / "imgs"), str(tmp_path / "out"))
    assert shards.shape == (1, 3, 5)


def test_image_folder_corrupt_png_names_the_file(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        image_folder_to_shards(str(root), str(tmp_path / "out"))


def test_image_folder_mixed_sizes_name_the_first_mismatch(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs", sizes={"dog/img1.png": (7, 4)})
    with pytest.raises(DataError, match="dog/img1.png.*same size"):
        image_folder_to_shards(str(root), str(tmp_path / "out"))


def test_image_folder_without_images_is_empty(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="empty data set"):
        image_folder_to_shards(str(tmp_path / "imgs"), str(tmp_path / "out"))


# ----------------------------------------------------------------------------- resolve_dataset


def _config(dataset: str, cache_dir: Path) -> Config:
    return Config(data=DataConfig(dataset=dataset, cache_dir=str(cache_dir)))


def test_resolve_digits_writes_into_cache(tmp_path: Path) -> None:
    pool, test = resolve_dataset(_config("digits", tmp_path))
    assert test is not None and pool.num_rows + test.num_rows == 1797
    assert all(p.startswith(str(tmp_path / "digits" / "pool")) for p in pool.paths)


def test_resolve_pool_and_test_layout_returns_both(tmp_path: Path) -> None:
    _write_small(tmp_path / "data" / "pool", n=7)
    _write_small(tmp_path / "data" / "test", n=3)
    pool, test = resolve_dataset(_config(str(tmp_path / "data"), tmp_path / "cache"))
    assert pool.num_rows == 7 and test is not None and test.num_rows == 3


def test_resolve_plain_directory_is_the_pool_only(tmp_path: Path) -> None:
    _write_small(tmp_path / "data", n=5)
    pool, test = resolve_dataset(_config(str(tmp_path / "data"), tmp_path / "cache"))
    assert pool.num_rows == 5 and test is None


def test_resolve_image_folder_is_read_in_place_with_the_converted_ids(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "imgs")
    cfg = _config(str(root), tmp_path / "cache")
    pool, test = resolve_dataset(cfg)
    assert test is None and pool.num_rows == 6 and pool.classes == ("cat", "dog")
    assert pool.kind == "images" and all(p.startswith(str(root)) for p in pool.paths)
    assert not (tmp_path / "cache").exists()  # nothing converted, nothing cached
    again, _ = resolve_dataset(cfg)
    assert again == pool
    # The explicit conversion is still there, and agrees on ids, labels and pixels.
    converted = image_folder_to_shards(str(root), str(tmp_path / "out"))
    ids, x, labels = load_arrays(pool)
    ids_c, x_c, labels_c = load_arrays(converted)
    assert list(ids) == list(ids_c) and labels is not None and labels_c is not None
    assert labels.tolist() == labels_c.tolist()
    np.testing.assert_array_equal(x, x_c)


def test_resolve_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        resolve_dataset(_config(str(tmp_path / "missing"), tmp_path / "cache"))


def test_resolve_s3_pool_and_test_layout(s3_server: StorageConfig, s3_bucket: str) -> None:
    _write_small(f"s3://{s3_bucket}/ds/pool", n=6, storage=s3_server)
    _write_small(f"s3://{s3_bucket}/ds/test", n=2, storage=s3_server)
    cfg = Config(data=DataConfig(dataset=f"s3://{s3_bucket}/ds"), storage=s3_server)
    pool, test = resolve_dataset(cfg)
    assert pool.num_rows == 6 and test is not None and test.num_rows == 2


def test_sample_ids_draws_distinct_pool_ids_reading_only_a_few_files(
    digits: tuple[Path, ShardSet, ShardSet],
) -> None:
    from activestream.sources.shards import ground_truth, sample_ids

    _, pool, _ = digits
    ids = sample_ids(pool, 50, seed=3, max_files=1)
    assert len(ids) == 50 and len(set(ids)) == 50
    assert set(ids) <= set(ground_truth(pool))
    files = [set(pool.read_file(f, ("id",)).column("id").to_pylist()) for f in range(4)]
    assert sum(bool(f & set(ids)) for f in files) == 1


def test_sample_ids_differs_by_seed(digits: tuple[Path, ShardSet, ShardSet]) -> None:
    from activestream.sources.shards import sample_ids

    _, pool, _ = digits
    assert sample_ids(pool, 20, seed=0) != sample_ids(pool, 20, seed=1)
