"""``sampling.embedding_model``: a frozen network embeds the pool for selection, once per file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from activestream import samplers
from activestream.config import Config, ConfigError
from activestream.pipelines.features import FEATURE_COLUMN, read_features
from activestream.pipelines.scoring import embedding_model, scorer_embeds
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ShardSet, load_arrays

#: Another network than the model (digits_cnn at 8x8): the same architecture at 16x16.
EMBEDDER = {"factory": "digits_cnn", "resize": 16}


@pytest.fixture(scope="module")
def digits_embedded(tmp_path_factory):
    cfg = Config().with_overrides(
        {
            "data.cache_dir": str(tmp_path_factory.mktemp("cache")),
            "sampling.embedding_model": EMBEDDER,
        }
    )
    pool, test = resolve_dataset(cfg)
    return cfg, pool, test


def test_an_embedding_model_is_a_model_config_and_a_bad_one_is_a_config_error():
    cfg = Config().with_overrides({"sampling.embedding_model": EMBEDDER})
    assert cfg.sampling.embedding_model.resize == (16, 16)
    with pytest.raises(ConfigError, match="embedding_model.factory"):
        Config().with_overrides({"sampling.embedding_model": {"factory": "no_such_net"}})


def test_scorers_skip_their_own_embedding_unless_the_sampler_needs_gradients():
    cfg = Config().with_overrides({"sampling.embedding_model": EMBEDDER})
    assert embedding_model(cfg) is not None and scorer_embeds(cfg) is False
    badge = cfg.with_overrides({"sampling.sampler": "badge"})
    # badge's own gradient embedding, emitted because badge needs it (None: as it needs)
    assert embedding_model(badge) is None and scorer_embeds(badge) is None
    any_layer = badge.with_overrides({"sampling.cold_start_embedding": "any"})
    assert scorer_embeds(any_layer) is True  # the cold start reads it too
    assert embedding_model(Config()) is None


def test_the_simulators_cold_start_asks_from_the_embedding_models_features(digits_embedded):
    from activestream.pipelines.simulate import pretrained_features, run_once

    cfg, pool, test = digits_embedded
    buffer = cfg.training.buffer_size
    curve = run_once(cfg, pool, test, strategy="margin", seed=3, budget=buffer)
    frozen = cfg.sampling.embedding_model.model_copy(update={"train": "head"})
    features = pretrained_features(cfg.model_copy(update={"model": frozen}), pool, test)["pool"]
    assert features.shape == (pool.num_rows, 128)  # digits_cnn: 128 features
    ids = load_arrays(pool)[0].tolist()  # the simulator's row order

    def picks(embedding: np.ndarray) -> list[str]:
        rows = samplers.cold_picks(
            cfg.sampling.cold_start_strategy,
            embedding,
            buffer,
            rng=np.random.default_rng([3, 2]),
            already=embedding[:0],
        )
        return [ids[i] for i in rows.tolist()]

    assert curve.asked == picks(features)
    # ...and not what the model's own features would have asked.
    own = run_once(
        Config().with_overrides({"data.cache_dir": cfg.data.cache_dir}),
        pool,
        test,
        strategy="margin",
        seed=3,
        budget=buffer,
    )
    assert own.asked != curve.asked


def test_reading_features_returns_the_rows_asked_in_order_and_zeros_for_missing(tmp_path):
    paths = []
    for part in range(2):
        ids = [f"item-{part}-{j}" for j in range(5)]
        values = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) + 100 * part
        table = pa.table(
            {
                "id": ids,
                FEATURE_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 3),
            }
        )
        paths.append(str(tmp_path / f"{part:06d}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=2)
    files = ShardSet(
        paths=tuple(paths),
        filesystem=pafs.LocalFileSystem(),
        shape=(1, 8, 8),
        classes=(),
        num_rows=10,
        has_labels=False,
        uri=str(tmp_path),
        image_column=FEATURE_COLUMN,
    )
    got = read_features(files, ["item-1-4", "gone", "item-0-0", "item-1-0"])
    np.testing.assert_array_equal(
        got, [[112.0, 113.0, 114.0], [0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [100.0, 101.0, 102.0]]
    )
    assert read_features(files, []).shape[0] == 0


@pytest.mark.slow
def test_the_loop_embeds_the_pool_once_with_the_embedding_model(ray_session, tmp_path):
    from activestream.pipelines.loop import ActiveLoop
    from activestream.sources.shards import ground_truth

    cfg = Config().with_overrides(
        {
            "data.cache_dir": str(tmp_path / "cache"),
            "sampling.embedding_model": EMBEDDER,
            "sampling.sampler": "cluster_margin",
            "sampling.candidates": 64,
            "training.buffer_size": 4,
        }
    )
    pool, _ = resolve_dataset(cfg)
    loop = ActiveLoop(cfg, pool)
    loop.start()
    try:
        loop.wait_for(lambda: loop.rounds, 180, "the first round")
        files = sorted((tmp_path / "cache" / "state" / "features").rglob("*.parquet"))
        assert len(files) == len(pool.paths)
        assert pq.read_table(files[0]).column_names == ["id", "feature"]
        written = [f.stat().st_mtime_ns for f in files]
        truth = ground_truth(pool)
        leased = loop.lease(4)
        assert len({q.id for q in leased}) == 4
        loop.add_labels([{"id": q.id, "label": truth[q.id]} for q in leased])
        loop.wait_for(lambda: len(loop.rounds) >= 2, 120, "a round after the new version")
        assert [f.stat().st_mtime_ns for f in files] == written  # computed once
        assert not loop.errors
    finally:
        loop.stop()
