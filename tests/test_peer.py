"""The peer benchmark's modAL loops, refit and warm-started, at a tiny budget."""

from __future__ import annotations

import pytest

from activestream.benchmarks.peer import run_modal
from activestream.config import Config
from activestream.sources.resolve import resolve_dataset

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("warm", [False, True], ids=["refit", "warm-started"])
def test_a_modal_loop_spends_its_budget_in_query_batches_and_learns(tmp_path, warm):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path), "training.buffer_size": 16})
    pool, test = resolve_dataset(cfg)
    curve = run_modal(cfg, pool, test, seed=0, budget=48, warm=warm)
    assert curve.labels == [16, 32, 48]
    assert curve.accuracy[-1] > 0.3  # ten classes: chance is 0.1
