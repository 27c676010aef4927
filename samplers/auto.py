"""``sampler: auto``: the sampler whose scores find the model's mistakes, chosen for the user.

Which uncertainty measure wins depends on the data (see the study), and none is known in
advance. Each batch of queries is ranked by one arm: a probability sampler, or random. The
random slots (``explore_p``) are a uniform sample of the pool, so their labels are an unbiased
test of the model at the time it scored them, and every arm's score for those items is known.
An arm is as good as its scores are at ranking the model's errors there: its error AUC, the
chance that a wrongly predicted random item scores above a rightly predicted one (Mann-Whitney
U over the items; 0.5 for random by construction). Every random label informs every arm (full
information, unlike a bandit paid only by the arm it drew), and Thompson sampling from each
estimate's normal approximation (Hanley & McNeil 1982) chooses: arms no better than random
lose their share as soon as the evidence says so, and close arms keep sharing until it
separates them. This replaces the prequential-error reward of "active learning by learning"
(Hsu & Lin 2015), which paid every uncertainty arm about the same (it left each with 17-26%
of the batches in the study) because they all pick items the model gets wrong.

:class:`Exp3` stays for the stream simulator's two-arm choice, where no random slots exist.
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


def error_auc(scores: ArrayLike, errors: ArrayLike) -> float:
    """Chance that a wrongly predicted item scores above a rightly predicted one (ties: half).

    AUC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0), with R_1 the sum of the errors' ranks among
    all n = n_1 + n_0 scores (average ranks for ties): the Mann-Whitney U statistic over
    n_1 n_0. 0.5 when one side is empty (nothing to tell apart yet).

    Errors at 0.9 and 0.6, right answers at 0.2 and 0.1: every error is above every right one.

    >>> error_auc([0.9, 0.2, 0.6, 0.1], [True, False, True, False])
    1.0
    >>> error_auc([0.5, 0.5, 0.1], [True, False, False])
    0.75
    >>> error_auc([0.3, 0.4], [False, False])
    0.5
    """
    s = np.asarray(scores, dtype=np.float64)  # (n,)
    e = np.asarray(errors, dtype=bool)  # (n,)
    n1, n0 = int(e.sum()), int((~e).sum())
    if n1 == 0 or n0 == 0:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # (n,) average rank within each group of ties
    return float((ranks[e].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_se(auc: float, n1: int, n0: int) -> float:
    """Standard error of an AUC from n1 positives and n0 negatives (Hanley & McNeil 1982).

    Var = (A (1 - A) + (n1 - 1)(Q1 - A^2) + (n0 - 1)(Q2 - A^2)) / (n1 n0), Q1 = A / (2 - A),
    Q2 = 2 A^2 / (1 + A); 0.5 (uninformative) when a side is empty. A = 0.5, n1 = n0 = 1:
    Var = 0.25, SE 0.5. A = 0.8, n1 = 10, n0 = 40: (0.16 + 9 * 0.0267 + 39 * 0.0711) / 400,
    SE 0.089.

    >>> auc_se(0.5, 1, 1)
    0.5
    >>> round(auc_se(0.8, 10, 40), 4)
    0.0891
    """
    if n1 == 0 or n0 == 0:
        return 0.5
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    return float(np.sqrt(max(var, 1e-12)))


class ErrorJudge:
    """Chooses an arm per batch by how well its scores rank the model's errors on random slots.

    Args:
        arms: Arm names, in the scorer's column order; ``baseline`` among them.
        rng: Source of randomness for the Thompson draws.
        baseline: The arm whose scores carry no information (random): AUC 0.5, exactly.
        window: Random-slot labels kept; older ones judged an older model.

    Each :meth:`choose` draws AUC_a ~ N(auc_a, se_a^2) for every other arm and takes the
    largest, the baseline's fixed 0.5 included. Before any evidence every arm is N(0.5, 0.5^2):

    >>> j = ErrorJudge(["margin", "random"], rng=np.random.default_rng(0))
    >>> j.estimates()[0].tolist()
    [0.5, 0.5]
    >>> for s, wrong in [(0.9, True), (0.8, True), (0.3, False), (0.1, False), (0.2, False)]:
    ...     j.record([s, 0.5], wrong)
    >>> j.estimates()[0].tolist()
    [1.0, 0.5]
    """

    def __init__(
        self,
        arms: Sequence[str],
        rng: np.random.Generator,
        *,
        baseline: str = "random",
        window: int = 256,
    ) -> None:
        self.arms = tuple(arms)
        self.rng = rng
        self.baseline = self.arms.index(baseline) if baseline in self.arms else -1
        self.window = window
        self._scores: list[np.ndarray] = []  # each (A,)
        self._errors: list[bool] = []
        self.pulls = np.zeros(len(self.arms), dtype=np.int64)  # (A,)

    def record(self, scores: ArrayLike, error: bool) -> None:
        """One random-slot label: every arm's score for the item, and whether the model erred."""
        row = np.asarray(scores, dtype=np.float64).reshape(-1)  # (A,)
        if row.shape != (len(self.arms),):
            raise ValueError(f"expected {len(self.arms)} arm scores, got {row.shape}")
        self._scores.append(row)
        self._errors.append(bool(error))
        del self._scores[: -self.window], self._errors[: -self.window]

    @property
    def judged(self) -> int:
        """Random-slot labels the estimates rest on."""
        return len(self._errors)

    def estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """(A,) error AUC of each arm and (A,) its standard error; the baseline's is 0.5 +- 0."""
        errors = np.asarray(self._errors, dtype=bool)  # (n,)
        n1, n0 = int(errors.sum()), int(len(errors) - errors.sum())
        scores = np.asarray(self._scores).reshape(len(errors), len(self.arms))  # (n, A)
        auc = np.array([error_auc(scores[:, a], errors) for a in range(len(self.arms))])
        se = np.array([auc_se(float(v), n1, n0) for v in auc])
        if self.baseline >= 0:
            auc[self.baseline], se[self.baseline] = 0.5, 0.0
        return auc, se

    def _draw(self, rng: np.random.Generator, times: int) -> np.ndarray:
        auc, se = self.estimates()
        return (auc + se * rng.standard_normal((times, len(self.arms)))).argmax(axis=1)

    def choose(self) -> int:
        """Draw the arm that ranks the next batch (Thompson sampling): one draw per lease.

        Its chance (:meth:`probabilities`, 512 draws) is left to the metrics, off this path.
        """
        arm = int(self._draw(self.rng, 1)[0])
        self.pulls[arm] += 1
        return arm

    def probabilities(self, draws: int = 512) -> np.ndarray:
        """(A,) each arm's chance of the next batch, by Monte Carlo on a fixed generator."""
        picks = self._draw(np.random.default_rng(0), draws)
        return np.bincount(picks, minlength=len(self.arms)) / draws

    def summary(self) -> dict[str, dict[str, float]]:
        """Per arm: chance of the next batch, batches drawn and error AUC, for metrics."""
        p = self.probabilities()
        auc, _ = self.estimates()
        return {
            name: {
                "probability": round(float(p[i]), 4),
                "pulls": int(self.pulls[i]),
                "error_auc": round(float(auc[i]), 4),
                "judged": self.judged,
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
