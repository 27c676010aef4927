"""Pixels by id: only the row groups holding the asked rows are read, and kept within a budget."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from activestream.actors.items import ItemStore
from activestream.sources.writing import write_shards


@pytest.fixture
def pool(tmp_path):
    """Three files of 100 items; the second written in row groups of 16 rows."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(300, 3, 4, 4), dtype=np.uint8)
    ids = [f"item-{i:03d}" for i in range(300)]
    shards = write_shards(
        str(tmp_path), ids, pixels, rng.integers(0, 3, 300), ["a", "b", "c"], rows_per_shard=100
    )
    second = shards.paths[1]
    pq.write_table(pq.read_table(second), second, row_group_size=16)
    assert pq.ParquetFile(second).metadata.num_row_groups == 7
    return shards, dict(zip(ids, pixels, strict=True))


def test_items_scattered_over_files_and_row_groups_come_back_in_the_asked_order(pool):
    shards, truth = pool
    asked = [f"item-{i:03d}" for i in np.random.default_rng(1).permutation(300)[:120]]
    got = ItemStore(shards).get(asked)
    assert np.allclose(got, np.stack([truth[i] for i in asked]) / 255.0)


def test_only_the_row_groups_holding_the_asked_rows_are_read(pool):
    shards, _ = pool
    store = ItemStore(shards)
    store.get(["item-120", "item-125", "item-199"])  # rows 20, 25 and 99 of the second file
    assert set(store._cache) == {(1, 1), (1, 6)}


def test_a_cache_smaller_than_one_row_group_still_answers_right_and_keeps_one(pool):
    shards, truth = pool
    store = ItemStore(shards, cache_bytes=1)
    asked = ["item-299", "item-000", "item-150", "item-101"]
    for _ in range(2):
        got = store.get(asked)
        assert np.allclose(got, np.stack([truth[i] for i in asked]) / 255.0)
    assert len(store._cache) == 1
