"""A pool that keeps growing: shards added under the pool's prefix while the service runs."""

from __future__ import annotations

import time

import pytest
import requests
from encoded_data import write_encoded

from activestream.actors.items import ItemStore
from activestream.config import Config
from activestream.pipelines.annotate import polite_session
from activestream.sources.pool import grow_shards
from activestream.sources.shards import open_shards


def test_grow_shards_finds_only_the_new_files(tmp_path):
    write_encoded(tmp_path, 10, files=2)
    shards = open_shards(str(tmp_path))
    assert grow_shards(shards) is None
    write_encoded(tmp_path, 5, files=1, first_file=2)
    bigger = grow_shards(shards)
    assert bigger is not None
    assert bigger.num_rows == 15 and len(bigger.paths) == 3
    assert bigger.paths[:2] == shards.paths


def test_a_new_file_with_another_layout_is_refused_by_name(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_encoded(tmp_path, 4, files=1)
    shards = open_shards(str(tmp_path))
    pq.write_table(
        pa.table({"id": ["z"], "pixels": pa.array([[0] * 4], pa.list_(pa.uint8()))}),
        tmp_path / "part-00009.parquet",
    )
    with pytest.raises(Exception, match="part-00009.parquet does not match the layout"):
        grow_shards(shards)


def test_the_item_store_learns_new_ids_when_asked_about_them(tmp_path):
    write_encoded(tmp_path, 6, files=1)
    store = ItemStore(open_shards(str(tmp_path)), grow_every=0.0)
    assert "img-1-0" not in store
    write_encoded(tmp_path, 3, files=1, first_file=1)
    assert "img-1-0" in store
    assert len(store) == 9 and store.get(["img-1-2"]).shape[0] == 1


def test_the_pool_grows_on_the_loopback_s3_server(s3_server, s3_bucket, tmp_path):
    import pyarrow.fs as pafs

    from activestream.sources.fs import filesystem_for

    local = tmp_path / "local"
    write_encoded(local, 8, files=2)
    fs, base = filesystem_for(f"s3://{s3_bucket}/pool", s3_server)

    def upload(name: str) -> None:
        pafs.copy_files(str(local / name), f"{base}/{name}", destination_filesystem=fs)

    upload("part-00000.parquet")
    upload("part-00001.parquet")
    shards = open_shards(f"s3://{s3_bucket}/pool", s3_server)
    write_encoded(local, 4, files=1, first_file=2)
    upload("part-00002.parquet")
    bigger = grow_shards(shards, s3_server)
    assert bigger is not None and bigger.num_rows == 12
    store = ItemStore(shards, storage=s3_server, grow_every=0.0)
    assert "img-2-3" in store


@pytest.fixture(scope="module")
def growing_service(run_service, tmp_path_factory) -> dict:
    """One service, two files landing under its pool: first while nobody labels, then while
    labels come in. What each phase saw is recorded for the tests (one service start, not two).
    """
    tmp = tmp_path_factory.mktemp("growing")
    truth = write_encoded(tmp / "pool", 20, files=2)
    cfg = Config().with_overrides(
        {
            "data.dataset": str(tmp / "pool"),
            "data.cache_dir": str(tmp / "cache"),
            "sampling.candidates": 64,
            "sampling.explore_p": 0.0,
            "scoring.pool_check_seconds": 1.0,
            "training.buffer_size": 2,
            "training.steps_per_update": 2,
        }
    )
    seen: dict = {}
    with run_service(cfg) as base:

        def model_version() -> int:
            return requests.get(f"{base}/model", timeout=30).json()["version"]

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the first round, on version 0
            if "activestream_pool_items 20.0" in requests.get(f"{base}/metrics", timeout=30).text:
                break
            time.sleep(0.5)
        # No label arrives, so no new version: the new file alone must start a round.
        truth.update(write_encoded(tmp / "pool", 60, files=1, first_file=2, seed=3))
        seen["idle: served"] = False
        while time.monotonic() < deadline and not seen["idle: served"]:
            leased = requests.get(f"{base}/queries", params={"n": 20}, timeout=30).json()
            seen["idle: served"] = any(q["id"].startswith("img-2-") for q in leased["queries"])
            requests.post(
                f"{base}/queries/release",
                json={"ids": [q["id"] for q in leased["queries"]]},
                timeout=30,
            )
            time.sleep(0.5)
        seen["idle: version"] = model_version()

        truth.update(write_encoded(tmp / "pool", 10, files=1, first_file=3, seed=4))
        # A label on a new id is accepted at once: the ledger's store looks for new files. As
        # any client does, it honors a 503's Retry-After (a busy machine may take more than the
        # ledger's 1 s to read the new file): accepted on a retry is still before any round.
        seen["label on a new id"] = polite_session().post(
            f"{base}/labels", json={"labels": [{"id": "img-3-0", "label": 1}]}, timeout=30
        )
        seen["image of a new id"] = requests.get(f"{base}/items/img-3-5/image", timeout=30)
        # Labels keep coming, so versions advance and rounds take the new file in.
        deadline = time.monotonic() + 120
        seen["labeling: queried"] = False
        while time.monotonic() < deadline and not seen["labeling: queried"]:
            metrics = requests.get(f"{base}/metrics", timeout=30).text
            leased = requests.get(f"{base}/queries", params={"n": 4}, timeout=30).json()
            ids = [q["id"] for q in leased["queries"]]
            seen["labeling: queried"] = "activestream_pool_items 90.0" in metrics and any(
                i.startswith("img-3-") for i in ids
            )
            labels = [{"id": i, "label": truth[i]} for i in ids if i in truth]
            if labels:
                requests.post(f"{base}/labels", json={"labels": labels}, timeout=30)
            time.sleep(0.5)
        seen["labeling: version"] = model_version()
    return seen


@pytest.mark.slow
def test_new_shards_are_served_while_nobody_labels(growing_service):
    assert growing_service["idle: served"], "the new file was never served without a version"
    assert growing_service["idle: version"] == 0


@pytest.mark.slow
def test_a_label_on_an_id_of_a_file_added_while_serving_is_accepted_at_once(growing_service):
    answer = growing_service["label on a new id"]
    assert answer.status_code == 200, answer.text
    assert growing_service["image of a new id"].status_code == 200


@pytest.mark.slow
def test_shards_added_while_serving_are_scored_queried_and_labeled(growing_service):
    assert growing_service["labeling: queried"], "the new file never reached the queries"
    assert growing_service["labeling: version"] > 0


@pytest.mark.slow
def test_a_file_landing_before_the_first_round_ends_is_scored_without_a_new_version(
    ray_session, tmp_path
):
    """The growth seen right after a round must start the next pass, version or not."""
    from activestream.pipelines.loop import ActiveLoop
    from activestream.sources.resolve import resolve_dataset

    write_encoded(tmp_path / "pool", 20, files=2)
    cfg = Config().with_overrides(
        {
            "data.dataset": str(tmp_path / "pool"),
            "data.cache_dir": str(tmp_path / "cache"),
            "sampling.candidates": 64,
        }
    )
    pool, _ = resolve_dataset(cfg)
    landed = []

    class LandingDuringTheFirstRound(ActiveLoop):
        def _finish_round(self, *args, **kwargs):
            if not landed:  # the file lands while the first round is being handed over
                landed.append(write_encoded(tmp_path / "pool", 10, files=1, first_file=2, seed=3))
            super()._finish_round(*args, **kwargs)

    loop = LandingDuringTheFirstRound(cfg, pool)
    loop.start()
    try:
        loop.wait_for(lambda: any(r.rows == 30 for r in loop.rounds), 120, "the grown pool")
        assert loop.version() == 0  # nobody labeled: the new file alone started the pass
    finally:
        loop.stop()
