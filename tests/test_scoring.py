"""A scoring pass through the Ray Data scorer pool on the session's real Ray cluster."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from activestream.pipelines.scoring import score_pass, stream_rounds
from activestream.sources.shards import open_shards
from activestream.sources.writing import write_shards

pytestmark = pytest.mark.slow


def test_a_pass_scores_every_row_once_and_keeps_the_global_top_k(ray_session, digits, tmp_path):
    cfg, pool, _, _ = digits
    out = tmp_path / "scores.parquet"
    result = score_pass(cfg, pool, candidates=20, out=str(out))
    table = pq.read_table(out)
    assert result.rows == pool.num_rows == table.num_rows
    assert len(set(table.column("id").to_pylist())) == pool.num_rows
    order = np.lexsort((table.column("id").to_numpy(), -table.column("score").to_numpy()))
    expected = table.column("id").to_numpy()[order][:20]
    assert result.top.ids.tolist() == expected.tolist()
    assert set(table.column("model_version").to_pylist()) == {0}


def test_the_random_sample_is_drawn_from_the_whole_pool(ray_session, digits):
    cfg, pool, _, _ = digits
    result = score_pass(cfg, pool, candidates=50)
    assert len(set(result.explore.ids.tolist())) == 50
    assert set(result.explore.ids.tolist()) != set(result.top.ids.tolist())


def test_a_pass_reads_shards_from_s3(ray_session, s3_server, s3_bucket, digits):
    cfg, pool, _, _ = digits
    ids = [f"s{i}" for i in range(300)]
    pixels = np.random.default_rng(0).integers(0, 256, (300, 1, 8, 8), dtype=np.uint8)
    uri = f"s3://{s3_bucket}/pool"
    write_shards(uri, ids, pixels, None, pool.classes, rows_per_shard=100, storage=s3_server)
    remote = open_shards(uri, s3_server)
    result = score_pass(cfg.model_copy(update={"storage": s3_server}), remote, candidates=10)
    assert result.rows == 300
    assert set(result.top.ids.tolist()) <= set(ids)


def test_writing_scores_of_a_pool_without_rows_is_an_error_before_ray(tmp_path: Path):
    from activestream.errors import DataError

    with pytest.raises(DataError, match="empty"):
        open_shards(str(tmp_path))


def test_a_stream_yields_one_complete_round_per_planned_round(ray_session, digits):
    cfg, pool, _, _ = digits
    halves = [pool.subset([0, 1]), pool.subset([2, 3]), pool]
    results = list(stream_rounds(cfg, halves))
    assert [r.rows for r in results] == [h.num_rows for h in halves]
    assert len(set(results[2].top.ids.tolist())) == cfg.sampling.candidates  # no id twice


def test_closing_a_stream_early_ends_the_pass(ray_session, digits):
    cfg, pool, _, _ = digits
    rounds = stream_rounds(cfg, [pool] * 50)
    first = next(rounds)
    rounds.close()
    assert first.rows == pool.num_rows
    assert score_pass(cfg, pool).rows == pool.num_rows  # the cluster is free for the next pass


def test_an_auto_round_keeps_each_arms_top_k_and_every_arms_scores_of_its_random_sample(
    ray_session, digits
):
    cfg, pool, _, _ = digits
    cfg = cfg.with_overrides({"sampling.sampler": "auto", "sampling.candidates": 16})
    rounds = stream_rounds(cfg, [pool])
    result = next(rounds)
    rounds.close()
    assert result.arm_tops is not None and len(result.arm_tops) == 5
    assert all(len(top.ids) == 16 for top in result.arm_tops)
    assert len({tuple(top.ids.tolist()) for top in result.arm_tops}) > 1
    sampled = set(result.explore.ids.tolist())
    assert set(result.preds) == set(result.slot_scores) == sampled
    assert all(np.shape(s) == (5,) for s in result.slot_scores.values())
    assert set(result.preds.values()) <= set(range(10))


def test_a_cold_start_on_the_embedding_gets_the_random_samples_embeddings(ray_session, digits):
    from activestream.actors.items import ItemStore
    from activestream.actors.scorer import Scorer

    cfg, pool, _, _ = digits
    cfg = cfg.with_overrides({"sampling.cold_start_embedding": "any"})  # the untrained CNN's
    result = score_pass(cfg, pool, candidates=30)
    assert result.explore_embeddings is not None
    assert result.explore_embeddings.shape[0] == len(result.explore.ids) == 30
    # the same model (version 0 of the seed) in this process gives the same embedding per id
    local = Scorer(model=cfg.model, shape=pool.shape, num_classes=10, seed=cfg.seed, embed=True)
    _, _, expected = local.outputs(ItemStore(pool).get(result.explore.ids.tolist()))
    np.testing.assert_allclose(result.explore_embeddings, expected, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [{"sampling.cold_start_strategy": "random"}, {}],
    ids=["uniform cold start", "untrained network by default"],
)
def test_a_uniform_cold_start_with_a_plain_sampler_carries_no_embeddings(
    ray_session, digits, overrides
):
    cfg, pool, _, _ = digits
    result = score_pass(cfg.with_overrides(overrides), pool, candidates=30)
    assert result.explore_embeddings is None and result.embeddings is None


def test_ray_workers_use_the_configured_arrow_allocator(ray_session):
    import ray

    @ray.remote(num_cpus=0.1)
    def pool_name() -> str:
        import pyarrow as pa

        return pa.default_memory_pool().backend_name

    assert ray.get(pool_name.remote()) == "jemalloc"  # ray.arrow_allocator's default
