"""Random: the baseline every active-learning sampler must beat."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_probs
from activestream.samplers.registry import ScoreFn, register_factory


@register_factory("random", uncertainty=False)
def random_sampler(rng: np.random.Generator | None = None) -> ScoreFn:
    """Build a scorer giving each row an independent uniform score in [0, 1).

    Passive learning (Settles 2009, "Active Learning Literature Survey"): ranking by these
    scores is a uniform random sample without replacement, the baseline of every learning
    curve. The generator is injected, never numpy's global state, so a seeded run is
    reproducible; each call advances it, so successive batches get fresh scores. The
    probabilities are validated like every other sampler's but otherwise ignored.

    Args:
        rng: Source of randomness; None means ``np.random.default_rng(0)``.

    Returns:
        ``f(probs: (N, C)) -> (N,)`` float64 scores in [0, 1).

    >>> score = random_sampler(np.random.default_rng(7))
    >>> s = score([[0.9, 0.1], [0.5, 0.5]])
    >>> s.shape, bool(((0 <= s) & (s < 1)).all())
    ((2,), True)
    """
    gen = np.random.default_rng(0) if rng is None else rng

    def score(probs: ArrayLike) -> np.ndarray:
        p = check_probs(probs)  # (N, C)
        return gen.random(p.shape[0])  # (N,)

    return score
