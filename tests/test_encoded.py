"""Pools of encoded images (PNG/JPEG bytes in Parquet), as users bring them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from encoded_data import NAMES, encode, image_for, write_encoded

from activestream.actors.items import ItemStore
from activestream.actors.scorer import Scorer
from activestream.sources.shards import ground_truth, load_arrays, open_shards


def test_a_binary_image_column_opens_with_the_first_images_shape_and_named_classes(tmp_path):
    write_encoded(tmp_path, 10)
    shards = open_shards(str(tmp_path))
    assert shards.encoded and shards.image_column == "image" and shards.has_ids
    assert shards.shape[0] == 3 and shards.string_labels
    assert shards.classes == tuple(sorted(NAMES))


def test_images_of_different_sizes_decode_to_one_shape(tmp_path):
    write_encoded(tmp_path, 12)
    ids, x, labels = load_arrays(open_shards(str(tmp_path)))
    assert x.shape[0] == 12 and x.shape[1:] == open_shards(str(tmp_path)).shape
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_string_labels_become_indices_of_the_sorted_class_names(tmp_path):
    truth = write_encoded(tmp_path, 12)
    assert ground_truth(open_shards(str(tmp_path))) == truth


def test_the_dominant_colour_survives_decoding(tmp_path):
    truth = write_encoded(tmp_path, 12)
    ids, x, _ = load_arrays(open_shards(str(tmp_path)))
    names = sorted(NAMES)
    for item, image in zip(ids.tolist(), x, strict=True):
        channel = NAMES.index(names[truth[item]])
        assert image.mean(axis=(1, 2)).argmax() == channel


def test_a_hugging_face_struct_column_without_ids_gets_ids_from_file_and_row(tmp_path):
    truth = write_encoded(tmp_path, 8, layout="struct", with_ids=False)
    shards = open_shards(str(tmp_path))
    assert not shards.has_ids and shards.encoded
    assert ground_truth(shards) == truth
    assert "part-00000.parquet#0" in ItemStore(shards)


def test_the_item_store_returns_original_bytes_and_decoded_pixels(tmp_path):
    write_encoded(tmp_path, 6)
    shards = open_shards(str(tmp_path))
    store = ItemStore(shards)
    table = pq.read_table(tmp_path / "part-00000.parquet")
    first_id, first_bytes = table.column("id")[0].as_py(), table.column("image")[0].as_py()
    data, media = store.original(first_id)
    assert data == first_bytes and media == "image/jpeg"
    assert store.get([first_id]).shape == (1, *shards.shape)


def test_the_scorer_flags_rows_that_do_not_decode_instead_of_failing(tmp_path):
    write_encoded(tmp_path, 6, files=1, bad_rows=2)
    shards = open_shards(str(tmp_path))
    batch = pq.read_table(tmp_path / "part-00000.parquet", columns=["id", "image"])
    scorer = Scorer(
        shape=shards.shape, num_classes=3, image_column="image", encoded=True, sampler="margin"
    )
    out = scorer(batch)
    assert out.num_rows == 8
    assert out.column("ok").to_pylist() == [True] * 6 + [False] * 2


def test_a_file_with_neither_pixels_nor_encoded_images_names_what_it_expected(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), tmp_path / "x.parquet")
    with pytest.raises(Exception, match="no image column.*encoded-image column"):
        open_shards(str(tmp_path))


@pytest.mark.slow
def test_a_scoring_pass_over_encoded_images_skips_and_counts_bad_rows(ray_session, tmp_path):
    from activestream.config import Config
    from activestream.pipelines.scoring import score_pass

    write_encoded(tmp_path / "pool", 40, files=3, bad_rows=3, with_ids=False)
    shards = open_shards(str(tmp_path / "pool"))
    cfg = Config().with_overrides(
        {"data.cache_dir": str(tmp_path / "cache"), "sampling.candidates": 16}
    )
    result = score_pass(cfg, shards)
    assert result.bad_rows == 3
    assert result.rows == 40
    assert all("#" in i for i in result.top.ids.tolist())


@pytest.mark.slow
def test_streamed_rounds_split_at_their_boundaries_even_with_bad_rows(ray_session, tmp_path):
    from activestream.config import Config
    from activestream.pipelines.scoring import stream_rounds

    write_encoded(tmp_path / "pool", 20, files=2, bad_rows=2, with_ids=False)
    shards = open_shards(str(tmp_path / "pool"))
    cfg = Config().with_overrides(
        {"data.cache_dir": str(tmp_path / "cache"), "sampling.candidates": 8}
    )
    results = list(stream_rounds(cfg, [shards, shards]))
    assert [(r.rows, r.bad_rows) for r in results] == [(20, 2), (20, 2)]


@pytest.mark.parametrize("statistics", [True, False], ids=["with-stats", "no-stats"])
@pytest.mark.parametrize(
    "order",
    [("image", "label"), ("label", "image"), ("id", "image", "label"), ("image", "id", "label")],
    ids="-".join,
)
def test_integer_labels_are_read_whatever_the_position_of_a_nested_image_column(
    tmp_path, order, statistics
):
    # Hugging Face writes the image struct (bytes, path) wherever the features put it; footer
    # statistics are per leaf column, so a struct before `label` shifts its leaf index.
    rng = np.random.default_rng(0)
    labels = [int(v) for v in rng.integers(0, 3, 9)] + [2]
    images = [encode(image_for(label, (24, 24), rng)) for label in labels]
    columns = {
        "id": pa.array([f"x{i}" for i in range(len(labels))], pa.string()),
        "image": pa.StructArray.from_arrays(
            [pa.array(images, pa.binary()), pa.array([f"pool/{i:05d}.png" for i in range(10)])],
            ["bytes", "path"],
        ),
        "label": pa.array(labels, pa.int64()),
    }
    pq.write_table(
        pa.table({name: columns[name] for name in order}),
        tmp_path / "part.parquet",
        write_statistics=statistics,
    )
    shards = open_shards(str(tmp_path))
    assert shards.classes == ("0", "1", "2")
    truth = ground_truth(shards)
    assert sorted(truth.values()) == sorted(labels)
