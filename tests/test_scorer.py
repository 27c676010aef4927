import time

import numpy as np
import pyarrow as pa
import pytest

from activestream.actors.scorer import Scorer
from activestream.actors.weights import (
    WeightsBoard,
    WeightsVersion,
    load_numpy_state,
    state_to_numpy,
)
from activestream.config import ModelConfig
from activestream.models import build_model


def _batch(n: int, shape=(1, 8, 8), seed=0) -> pa.Table:
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, 256, size=(n, int(np.prod(shape))), dtype=np.uint8)
    offsets = pa.array(np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32))
    pixels = pa.ListArray.from_arrays(offsets, pa.array(flat.ravel()))
    return pa.table({"id": [f"i{j}" for j in range(n)], "pixels": pixels})


def test_scorer_returns_one_row_per_input_with_score_and_version():
    scorer = Scorer(shape=(1, 8, 8), num_classes=10, sampler="margin")
    out = scorer(_batch(5))
    assert out.column_names == ["id", "score", "pred", "model_version"]
    assert out.column("id").to_pylist() == [f"i{j}" for j in range(5)]
    scores = out.column("score").to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert out.column("model_version").to_pylist() == [0] * 5


def test_scorer_accepts_an_empty_batch():
    scorer = Scorer(shape=(1, 8, 8), num_classes=10)
    assert scorer(_batch(0)).num_rows == 0


def test_scorer_scores_match_the_sampler_applied_to_the_models_probabilities():
    from activestream import samplers

    scorer = Scorer(shape=(1, 8, 8), num_classes=10, sampler="entropy")
    batch = _batch(4)
    from activestream.sources.shards import pixels_to_array

    probs = scorer.predict_proba(pixels_to_array(batch.column("pixels"), (1, 8, 8)))
    expected = samplers.get("entropy")(probs)
    np.testing.assert_allclose(scorer(batch).column("score").to_numpy(), expected)


def test_state_round_trips_through_numpy_arrays():
    a = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=1)
    b = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=2)
    state = state_to_numpy(a)
    for v in state.values():
        v.setflags(write=False)  # as read zero-copy from the object store
    load_numpy_state(b, state)
    assert all(np.array_equal(state[k], v.numpy()) for k, v in b.state_dict().items())


def test_board_keeps_only_the_newest_version():
    board = WeightsBoard()
    assert board.latest() is None
    assert board.publish(WeightsVersion(version=2, labels_seen=16))
    assert not board.publish(WeightsVersion(version=1, labels_seen=8))
    assert board.latest_version() == 2


@pytest.mark.slow
def test_scorer_follows_the_board_and_tags_rows_with_the_new_version(ray_session):
    """In a Ray worker, as the scorer pool runs it: its listener thread long-polls the board for
    good, and one left in the test process would outlive ``ray.shutdown`` and take the process
    down with it at the session's end."""
    import ray

    board = ray.remote(WeightsBoard).options(max_concurrency=8).remote()
    scorer = (
        ray.remote(Scorer)
        .options(num_cpus=0.1)
        .remote(shape=(1, 8, 8), num_classes=10, board=board)
    )

    def versions() -> tuple[list[int], pa.Table]:
        out = ray.get(scorer.__call__.remote(_batch(3)))
        return out.column("model_version").to_pylist(), out

    try:
        assert versions()[0] == [0] * 3
        trained = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10, seed=7)
        ref = ray.put(state_to_numpy(trained))
        ray.get(board.publish.remote(WeightsVersion(version=4, labels_seen=64, refs=[ref])))
        # The scorer's listener hears of version 4 within moments; no batch asks the board.
        deadline = time.monotonic() + 10
        seen, out = versions()
        while seen != [4] * 3 and time.monotonic() < deadline:
            time.sleep(0.02)
            seen, out = versions()
        assert seen == [4] * 3
    finally:
        ray.kill(scorer)
        ray.kill(board)
    expected = Scorer(shape=(1, 8, 8), num_classes=10, seed=7)(_batch(3))
    np.testing.assert_allclose(out.column("score").to_numpy(), expected.column("score").to_numpy())


def test_a_bald_scorer_runs_several_dropout_passes_and_scores_their_disagreement():
    scorer = Scorer(shape=(1, 8, 8), num_classes=10, sampler="bald", mc_samples=6)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    samples = scorer.mc_proba(x, 6)
    assert samples.shape == (6, 4, 10)
    assert not np.allclose(samples[0], samples[1])  # dropout is on in these passes
    scores = scorer.score_arrays(x)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all() and scores.max() > 0
    again = scorer.predict_proba(x)
    assert np.allclose(again, scorer.predict_proba(x))  # the plain pass stays deterministic


def test_a_diversity_sampler_gets_an_embedding_column():
    scorer = Scorer(shape=(1, 8, 8), num_classes=10, sampler="kcenter")
    out = scorer(_batch(5))
    assert out.column_names[-1] == "embedding"
    embedding = np.stack(out.column("embedding").to_pylist())
    assert embedding.shape[0] == 5 and embedding.shape[1] > 10
    assert scorer(_batch(0)).column("embedding").type.list_size == embedding.shape[1]


def test_badge_gets_the_last_layers_loss_gradient_as_its_embedding():
    import torch

    from activestream.sources.shards import pixels_to_array

    scorer = Scorer(shape=(1, 8, 8), num_classes=10, sampler="badge")
    batch = _batch(3)
    embedding = np.stack(scorer(batch).column("embedding").to_pylist())  # (3, C * D)
    # The same gradient by autograd: cross-entropy at the predicted class, w.r.t. the weights
    # of the last linear layer, one row at a time.
    from activestream.models.parts import last_linear

    x = torch.from_numpy(
        scorer._transform(pixels_to_array(batch.column("pixels"), (1, 8, 8)))  # noqa: SLF001
    )
    head = last_linear(scorer._model)  # noqa: SLF001
    for row in range(3):
        scorer._model.zero_grad()  # noqa: SLF001
        logits = scorer._model(x[row : row + 1])  # noqa: SLF001
        loss = torch.nn.functional.cross_entropy(logits, logits.argmax(dim=1))
        loss.backward()
        np.testing.assert_allclose(
            embedding[row], head.weight.grad.numpy().ravel(), rtol=1e-4, atol=1e-6
        )
    assert scorer(_batch(0)).column("embedding").type.list_size == embedding.shape[1]


def test_resnet18_gets_a_dropout_layer_so_bald_passes_disagree():
    scorer = Scorer(
        model=ModelConfig(factory="resnet18", dropout=0.5),
        shape=(3, 8, 8),
        num_classes=4,
        sampler="bald",
        mc_samples=3,
    )
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    assert scorer.score_arrays(x).max() > 0


def test_bald_without_dropout_is_refused_with_the_setting_to_change():
    with pytest.raises(ValueError, match=r"set model.dropout > 0"):
        Scorer(model=ModelConfig(dropout=0.0), shape=(1, 8, 8), num_classes=10, sampler="bald")


def test_an_auto_scorer_keeps_every_arms_scores_and_ranks_by_their_mean():
    from activestream import samplers
    from activestream.sources.shards import pixels_to_array

    scorer = Scorer(shape=(1, 8, 8), num_classes=10, sampler="auto")
    batch = _batch(6)
    out = scorer(batch)
    arms = np.array(out.column("arm_scores").to_pylist())  # (N, A)
    assert arms.shape == (6, len(samplers.spec("auto").arms))
    probs = scorer.predict_proba(pixels_to_array(batch.column("pixels"), (1, 8, 8)))
    np.testing.assert_allclose(arms[:, 1], samplers.get("margin")(probs))
    np.testing.assert_allclose(out.column("score").to_numpy(), arms.mean(axis=1))
