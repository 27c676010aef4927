"""Image folders read in place: no conversion, ids are relative paths, labels are folders."""

from __future__ import annotations

import io
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from activestream.actors.items import ItemStore, UnknownItem
from activestream.config import Config, DataConfig, StorageConfig
from activestream.errors import DataError
from activestream.sources.fs import resolve_uri
from activestream.sources.imagefolder import image_files, open_image_folder
from activestream.sources.images import decode_one
from activestream.sources.pool import grow_shards
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import (
    IMAGES_PER_READ_TASK,
    _image_chunk_size,
    ground_truth,
    iter_batches,
    load_arrays,
    read_ray_dataset,
)

CLASSES = ("cat", "dog", "fox")
FIRST = (12, 16)  # (H, W) of the first image in sorted order, the set's shape


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(arr)
    if mode is not None:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _make_folder(root: Path, per_class: int = 4, seed: int = 0) -> tuple[dict[str, int], str]:
    """PNG and JPEG images of mixed sizes and modes (L, RGB, RGBA, P) in three class folders.

    Returns the ground truth (id -> class index) and the id of a truncated JPEG (in the truth:
    its label is known from its folder even though its pixels are not).
    """
    rng = np.random.default_rng(seed)
    truth: dict[str, int] = {}
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = (
                FIRST
                if (label, i) == (0, 0)
                else (int(rng.integers(8, 30)), int(rng.integers(8, 30)))
            )
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if i % 4 == 0:
                data, rel = _encode(arr, "PNG", "L"), f"{name}/img{i:02d}.png"
            elif i % 4 == 1:
                data, rel = _encode(arr, "JPEG"), f"{name}/img{i:02d}.jpg"
            elif i % 4 == 2:
                data, rel = _encode(arr, "PNG", "RGBA"), f"{name}/img{i:02d}.PNG"
            else:
                data, rel = _encode(arr, "PNG", "P"), f"{name}/img{i:02d}.png"
            (root / rel).write_bytes(data)
            truth[rel] = label
    # A nested folder still belongs to its class; hidden files and other files are skipped.
    (root / "fox" / "more").mkdir()
    (root / "fox" / "more" / "deep.jpeg").write_bytes(
        _encode(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8), "JPEG")
    )
    truth["fox/more/deep.jpeg"] = 2
    (root / "dog" / ".hidden.png").write_bytes(b"not an image")
    (root / "dog" / "notes.txt").write_text("not an image either")
    truncated = "dog/truncated.jpg"
    full = _encode(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "JPEG")
    (root / truncated).write_bytes(full[: len(full) // 2])
    truth[truncated] = 1
    return truth, truncated


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``roots`` with its size and mtime."""
    out: dict[str, tuple[int, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                st = os.stat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _config(dataset: Path, cache: Path) -> Config:
    return Config(data=DataConfig(dataset=str(dataset), cache_dir=str(cache)))


@pytest.fixture()
def folder(tmp_path: Path) -> tuple[Path, dict[str, int], str]:
    truth, truncated = _make_folder(tmp_path / "data")
    return tmp_path / "data", truth, truncated


def test_a_folder_opens_in_place_and_writes_nothing(folder, tmp_path: Path) -> None:
    root, truth, _ = folder
    cache = tmp_path / "cache"
    before = _tree(tmp_path)
    began = time.perf_counter()
    pool, test = resolve_dataset(_config(root, cache))
    opened = time.perf_counter() - began
    assert test is None and pool.kind == "images" and pool.uri == str(root)
    assert opened < 5.0
    assert all(p.startswith(str(root) + "/") for p in pool.paths)  # the images themselves
    assert pool.classes == CLASSES and pool.num_rows == len(truth) == len(pool.paths)
    assert pool.file_rows == (1,) * len(truth) and pool.encoded and not pool.native
    # Read everything a run reads: nothing appears or changes under the data or cache dir.
    load_arrays(pool)
    store = ItemStore(pool)
    store.get(sorted(truth)[:3])
    store.original(sorted(truth)[0])
    assert _tree(tmp_path) == before
    assert not cache.exists()


def test_ids_are_relative_paths_and_labels_come_from_class_folders(folder) -> None:
    root, truth, _ = folder
    shards = open_image_folder(str(root))
    assert ground_truth(shards) == truth
    ids, x, labels = load_arrays(shards)
    assert list(ids) == sorted(truth)
    assert labels is not None and labels.tolist() == [truth[i] for i in ids]
    assert image_files(root) == (list(CLASSES), sorted(truth.items()))


def test_the_first_image_gives_the_shape_and_every_image_decodes_to_it(folder) -> None:
    root, truth, truncated = folder
    shards = open_image_folder(str(root))
    assert shards.shape == (1, *FIRST)  # the first image (cat/img00.png) is grayscale
    ids, x, _ = load_arrays(shards)
    assert x.shape == (len(truth), 1, *FIRST) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    table = shards.read_images(shards.paths)
    _, ok = shards.decode(table.column("image"))
    assert [i for i, good in zip(ids, ok.tolist(), strict=True) if not good] == [truncated]
    # An explicit shape wins: everything is converted to RGB and resized.
    rgb = open_image_folder(str(root), shape=(3, 8, 8))
    assert load_arrays(rgb)[1].shape == (len(truth), 3, 8, 8)


def test_a_truncated_jpeg_is_flagged_not_fatal(folder) -> None:
    root, _, truncated = folder
    shards = open_image_folder(str(root))
    index = shards.image_ids(shards.paths).index(truncated)
    table = shards.read_file(index)
    assert table.column("id").to_pylist() == [truncated] and table.column("label")[0].as_py() == 1
    x, ok = shards.decode(table.column("image"))
    assert ok.tolist() == [False] and not x.any()
    # A file that vanished after opening is a bad row as well, never an exception.
    (root / truncated).unlink()
    x, ok = shards.decode(shards.read_file(index).column("image"))
    assert ok.tolist() == [False]


def test_iter_batches_reads_the_folder_in_batches(folder) -> None:
    root, truth, _ = folder
    shards = open_image_folder(str(root))
    batches = list(iter_batches(shards, 5, ("id", "label")))
    assert [b.num_rows for b in batches[:-1]] == [5] * (len(batches) - 1)
    assert [i for b in batches for i in b.column("id").to_pylist()] == sorted(truth)
    assert "image" not in batches[0].schema.names


def test_the_item_store_indexes_paths_and_reads_only_requested_files(folder, monkeypatch) -> None:
    root, truth, truncated = folder
    shards = open_image_folder(str(root))
    read: list[str] = []
    original_read = type(shards).read_image_bytes

    def counting(self, paths):
        read.extend(paths)
        return original_read(self, paths)

    monkeypatch.setattr(type(shards), "read_image_bytes", counting)
    store = ItemStore(shards)
    assert len(store) == len(truth) and list(store.ids()) == sorted(truth)
    assert read == []  # the index came from paths alone
    wanted = ["fox/img01.jpg", "cat/img00.png", "fox/img01.jpg", truncated]
    x = store.get(wanted)
    assert sorted(read) == sorted(str(root / w) for w in set(wanted))  # each file read once
    assert x.shape == (4, 1, *FIRST)
    expected = decode_one((root / "fox/img01.jpg").read_bytes(), shards.shape)
    np.testing.assert_allclose(x[0], expected / np.float32(255))
    np.testing.assert_array_equal(x[0], x[2])
    assert not x[3].any()  # the truncated JPEG: blank, not an error
    data, media = store.original("dog/img01.jpg")
    assert data == (root / "dog/img01.jpg").read_bytes() and media == "image/jpeg"
    assert store.original("cat/img00.png")[1] == "image/png"
    assert store.missing(["cat/img00.png", "cat/nope.png"]) == ["cat/nope.png"]
    with pytest.raises(UnknownItem, match="cat/nope.png"):
        store.get(["cat/nope.png"])


def test_a_new_image_is_found_by_grow_shards_and_by_the_item_store(folder) -> None:
    root, truth, _ = folder
    shards = open_image_folder(str(root))
    store = ItemStore(shards, grow_every=0.0)
    assert store.missing(["dog/zz-new.jpg"]) == ["dog/zz-new.jpg"]
    assert grow_shards(shards) is None  # nothing new yet
    new = np.full((30, 10, 3), 200, dtype=np.uint8)
    (root / "dog" / "zz-new.jpg").write_bytes(_encode(new, "JPEG"))
    (root / "bird").mkdir()  # an empty new folder is not a class yet: ignored
    bigger = grow_shards(shards)
    assert bigger is not None and bigger.num_rows == shards.num_rows + 1
    assert bigger.paths[-1] == str(root / "dog" / "zz-new.jpg") and bigger.classes == CLASSES
    assert ground_truth(bigger)["dog/zz-new.jpg"] == 1
    # The store finds it on a miss, without being told.
    x = store.get(["dog/zz-new.jpg"])
    assert x.shape == (1, 1, *FIRST) and abs(float(x.mean()) - 200 / 255) < 0.05
    assert len(store) == len(truth) + 1 and "dog/zz-new.jpg" in store
    assert store.shards.num_rows == bigger.num_rows


def test_a_new_class_folder_is_refused_by_name(folder) -> None:
    root, _, _ = folder
    shards = open_image_folder(str(root))
    (root / "bird").mkdir()
    Image.new("RGB", (5, 5)).save(root / "bird" / "a.png")
    with pytest.raises(DataError, match="new class folder.*'bird'"):
        grow_shards(shards)


def test_pool_and_test_image_folders_share_one_class_list(tmp_path: Path) -> None:
    _make_folder(tmp_path / "data" / "pool", per_class=2)
    (tmp_path / "data" / "test" / "fox").mkdir(parents=True)
    Image.new("L", (6, 6), 10).save(tmp_path / "data" / "test" / "fox" / "t.png")
    pool, test = resolve_dataset(_config(tmp_path / "data", tmp_path / "cache"))
    assert test is not None and pool.kind == test.kind == "images"
    assert pool.classes == test.classes == CLASSES
    assert ground_truth(test) == {"fox/t.png": 2}  # not 0, though test/ has one folder only
    assert not (tmp_path / "cache").exists()


def test_a_folder_with_parquet_files_is_still_a_shard_set(tmp_path: Path) -> None:
    from activestream.sources.writing import write_shards

    px = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    write_shards(str(tmp_path / "mixed"), ["a", "b"], px, [0, 1], ["x", "y"], rows_per_shard=2)
    (tmp_path / "mixed" / "cat").mkdir()
    Image.new("L", (2, 2)).save(tmp_path / "mixed" / "cat" / "a.png")
    pool, _ = resolve_dataset(_config(tmp_path / "mixed", tmp_path / "cache"))
    assert pool.kind == "parquet" and pool.num_rows == 2


def test_opening_reads_one_header_not_every_image(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    Image.new("RGB", (7, 5)).save(root / "cat" / "0000.png")
    for i in range(1, 3000):  # not images at all: opening must not look at them
        (root / CLASSES[i % 3] / f"{i:04d}.jpg").write_bytes(b"x")
    began = time.perf_counter()
    shards = open_image_folder(str(root))
    assert time.perf_counter() - began < 5.0
    assert shards.num_rows == 3000 and shards.shape == (3, 5, 7)
    assert len(ItemStore(shards)) == 3000


def test_read_tasks_take_many_images_each() -> None:
    assert _image_chunk_size(1_000_000) == IMAGES_PER_READ_TASK == 1024
    assert -(-1_000_000 // _image_chunk_size(1_000_000)) == 977  # tasks for a million files
    assert _image_chunk_size(10) == 64 and _image_chunk_size(3200) == 200


def test_a_missing_or_empty_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_image_folder(str(tmp_path / "missing"))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="empty data set"):
        open_image_folder(str(tmp_path / "empty"))


def test_an_image_folder_on_s3_opens_in_place_and_grows(
    s3_server: StorageConfig, s3_bucket: str, tmp_path: Path
) -> None:
    truth, truncated = _make_folder(tmp_path / "local", per_class=2)
    fs, base = resolve_uri(f"s3://{s3_bucket}/imgs", s3_server)
    for rel in truth:
        with fs.open_output_stream(f"{base}/{rel}") as out:
            out.write((tmp_path / "local" / rel).read_bytes())
    cfg = Config(data=DataConfig(dataset=f"s3://{s3_bucket}/imgs"), storage=s3_server)
    pool, test = resolve_dataset(cfg)
    assert test is None and pool.kind == "images" and pool.classes == CLASSES
    assert ground_truth(pool) == truth
    ids, x, _ = load_arrays(pool)
    assert list(ids) == sorted(truth) and x.shape == (len(truth), 1, *FIRST)
    store = ItemStore(pool, storage=s3_server, grow_every=0.0)
    assert store.original("cat/img01.jpg")[0] == (tmp_path / "local/cat/img01.jpg").read_bytes()
    with fs.open_output_stream(f"{base}/fox/later.png") as out:
        out.write(_encode(np.zeros((4, 4, 3), dtype=np.uint8), "PNG"))
    assert store.get(["fox/later.png"]).shape == (1, 1, *FIRST)
    assert store.shards.num_rows == len(truth) + 1


@pytest.mark.slow
def test_a_scoring_pass_reads_the_folder_in_place(ray_session, folder, tmp_path: Path) -> None:
    from activestream.pipelines.scoring import score_pass

    root, truth, truncated = folder
    pool, _ = resolve_dataset(_config(root, tmp_path / "cache"))
    # Read tasks take ranges of files; a pool repeated for 10 rounds (as a streaming pass
    # plans it) spans several of them and comes back whole and in order.
    looped = replace(
        pool, paths=pool.paths * 10, file_rows=pool.file_rows * 10, num_rows=pool.num_rows * 10
    )
    assert _image_chunk_size(looped.num_rows) < looped.num_rows
    ds = read_ray_dataset(looped, columns=("id", "label"))
    ds.context.execution_options.preserve_order = True
    rows = [(r["id"], r["label"]) for r in ds.take_all()]
    assert rows == sorted(truth.items()) * 10
    cfg = Config().with_overrides(
        {"data.cache_dir": str(tmp_path / "cache"), "sampling.candidates": 2 * len(truth)}
    )
    out = tmp_path / "scores.parquet"
    result = score_pass(cfg, pool, out=str(out))
    assert result.bad_rows == 1 and result.rows == len(truth) - 1
    assert sorted(result.top.ids.tolist()) == sorted(set(truth) - {truncated})
    scored = pq.read_table(out)
    assert sorted(scored.column("id").to_pylist()) == sorted(truth)  # every image, once


@pytest.mark.slow
def test_a_folder_read_in_place_is_queried_labeled_and_shown_through_serve(
    run_service, tmp_path: Path
) -> None:
    import requests

    truth, truncated = _make_folder(tmp_path / "data", per_class=6)
    cfg = _config(tmp_path / "data", tmp_path / "cache").with_overrides(
        {
            "training.buffer_size": 4,
            "training.steps_per_update": 2,
            "sampling.candidates": 32,
            "model.resize": 16,
        }
    )
    with run_service(cfg) as base:
        leased = requests.get(f"{base}/queries", params={"n": 4}, timeout=30).json()["queries"]
        ids = [q["id"] for q in leased]
        assert ids and all(i in truth and i != truncated for i in ids)
        image = requests.get(f"{base}/items/{ids[0]}/image", timeout=30)
        assert image.content == (tmp_path / "data" / ids[0]).read_bytes()
        before = requests.get(f"{base}/model", timeout=30).json()["version"]
        labels = [{"id": i, "label": truth[i]} for i in ids]
        answer = requests.post(f"{base}/labels", json={"labels": labels}, timeout=30)
        assert answer.json()["accepted"] == len(ids)
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/model", timeout=30).json()["version"] <= before:
            assert time.monotonic() < deadline, "no new version after labels"
            time.sleep(0.2)
    assert not (tmp_path / "cache").exists() or not any(
        p.suffix == ".parquet" and "images-" in str(p) for p in (tmp_path / "cache").rglob("*")
    )
