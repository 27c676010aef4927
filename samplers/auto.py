"""``sampler: auto``: a bandit over samplers, for users who cannot know which one suits them.

Which uncertainty measure wins depends on the data (see the study), and none is known in
advance. Following "active learning by learning" (Hsu & Lin 2015, AAAI), each batch of queries
is chosen by one arm, drawn from a multi-armed bandit over the probability samplers and
random; when the labels come back the arm is rewarded by what its picks taught the model.
The reward of one labeled pick is its prequential error, 1 when the model that chose it had
predicted a wrong class (the label corrects the model) and 0 when it was right (the label only
confirms it). EXP3 (Auer et al. 2002, "The nonstochastic multiarmed bandit problem") keeps a
floor of ``gamma / arms`` on every arm, random included, so no arm is starved and a run is
never far from the best arm's mixture for long.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers.entropy import entropy
from activestream.samplers.least_confidence import least_confidence
from activestream.samplers.margin import margin
from activestream.samplers.random_sampler import random_sampler
from activestream.samplers.ratio import ratio
from activestream.samplers.registry import SamplerSpec, ScoreFn, register_meta

#: The arms: every sampler computable from one (N, C) probability array, and random.
ARMS: tuple[str, ...] = ("entropy", "margin", "least_confidence", "ratio", "random")


class Exp3:
    """EXP3 over ``len(arms)`` arms with rewards in [0, 1].

    Probabilities: p_a = (1 - gamma) * w_a / sum(w) + gamma / A. After arm a earns reward r
    with probability p_a, w_a <- w_a * exp(gamma * (r / p_a) / A): the importance weight r / p_a
    keeps the estimate unbiased for arms drawn rarely.

    Args:
        arms: Arm names, in a fixed order.
        gamma: Exploration share in (0, 1]; every arm keeps at least ``gamma / A``.
        rng: Source of randomness for :meth:`choose`.

    Two arms, gamma 0.5: both start at 0.5; a full reward to arm 0 (drawn with p 0.5) scales
    its weight by exp(0.5 * 2 / 2) = e^0.5, so p_0 = 0.5 * e^0.5 / (e^0.5 + 1) + 0.25:

    >>> b = Exp3(["a", "b"], gamma=0.5, rng=np.random.default_rng(0))
    >>> b.probabilities().tolist()
    [0.5, 0.5]
    >>> b.update(0, 1.0, 0.5)
    >>> round(float(b.probabilities()[0]), 4)
    0.5612
    """

    def __init__(self, arms: Sequence[str], gamma: float, rng: np.random.Generator) -> None:
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.arms = tuple(arms)
        self.gamma = gamma
        self.rng = rng
        self.log_weights = np.zeros(len(self.arms))  # (A,), logs: no overflow on long runs
        self.pulls = np.zeros(len(self.arms), dtype=np.int64)  # (A,)
        self.rewards = np.zeros(len(self.arms))  # (A,) raw reward sums, for reporting

    def probabilities(self) -> np.ndarray:
        """(A,) the current draw probabilities, summing to 1."""
        w = np.exp(self.log_weights - self.log_weights.max())  # (A,)
        return (1.0 - self.gamma) * w / w.sum() + self.gamma / len(self.arms)

    def choose(self) -> tuple[int, float]:
        """Draw an arm; return it with the probability it was drawn with."""
        p = self.probabilities()
        arm = int(self.rng.choice(len(self.arms), p=p))
        self.pulls[arm] += 1
        return arm, float(p[arm])

    def update(self, arm: int, reward: float, probability: float) -> None:
        """Credit ``reward`` in [0, 1] to ``arm``, drawn with ``probability``."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1], got {probability}")
        estimate = reward / probability
        self.log_weights[arm] += self.gamma * estimate / len(self.arms)
        self.rewards[arm] += reward

    def summary(self) -> dict[str, dict[str, float]]:
        """Per arm: draw probability now, pulls and mean raw reward, for metrics and studies."""
        p = self.probabilities()
        return {
            name: {
                "probability": round(float(p[i]), 4),
                "pulls": int(self.pulls[i]),
                "reward_sum": round(float(self.rewards[i]), 3),
            }
            for i, name in enumerate(self.arms)
        }


def auto_scores(rng: np.random.Generator | None = None) -> ScoreFn:
    """Build ``f(probs (N, C)) -> (N, A)``: column a holds arm a's scores (:data:`ARMS` order).

    >>> f = auto_scores(np.random.default_rng(0))
    >>> s = f([[0.5, 0.5], [1.0, 0.0]])
    >>> s.shape, s[:, 0].tolist()
    ((2, 5), [1.0, 0.0])
    """
    fns = {
        "entropy": entropy,
        "margin": margin,
        "least_confidence": least_confidence,
        "ratio": ratio,
        "random": random_sampler(np.random.default_rng(0) if rng is None else rng),
    }

    def score(probs: ArrayLike) -> np.ndarray:
        return np.stack([fns[a](probs) for a in ARMS], axis=1)  # (N, A)

    return score


#: What :func:`~activestream.samplers.registry.spec` returns for ``"auto"``: not a registered
#: score function (it returns one column per arm), so the per-sampler suite does not list it.
AUTO = register_meta(
    SamplerSpec("auto", auto_scores, uncertainty=False, deterministic=False, arms=ARMS)
)
