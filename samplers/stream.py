"""Stream-based selective sampling: ask or skip each record as it arrives, under a label budget.

Pool samplers rank a batch; a stream sampler must decide on the spot. The variable uncertainty
strategy of Žliobaitė, Bifet, Pfahringer & Holmes 2014, "Active Learning With Drifting
Streaming Data" (IEEE TNNLS 25(1)), asks when the top-class probability falls below a threshold
that adapts: it drops by a factor (1 - step) after each query, so in a stretch of uncertain
records only the most uncertain keep being asked, and rises by (1 + step) after each confident
record, so when the model grows confident (or drift makes its confidence uniform) the budget
still gets spent across the whole stream instead of only where the model is unsure. The
fraction of records asked never exceeds the budget.
"""

from __future__ import annotations

import numbers

from numpy.typing import ArrayLike

from activestream.samplers._validate import check_row


def _check_fraction(value: float, name: str, *, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value < 1.0)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return float(value)


class VariableUncertainty:
    """Ask for a record's label when max_c p_c < threshold, with an adaptive threshold.

    For each record (Žliobaitė et al. 2014, algorithm "Variable Uncertainty"): count it as
    seen; if asking would take the asked fraction over the budget, skip it and leave the
    threshold alone; otherwise ask when the top-class probability is below the threshold and
    then lower the threshold, ``threshold *= 1 - step``, or else skip it and raise the
    threshold, ``threshold *= 1 + step``, capped at 1.

    Since asking needs ``asked + 1 <= budget * seen``, ``asked <= budget * seen`` holds after
    every call; in particular no record before the ``ceil(1 / budget)``-th can be asked.

    Attributes:
        budget: Largest fraction of the records seen that may be asked, in (0, 1].
        step: Relative threshold adjustment per record, in [0, 1).
        threshold: Current threshold on the top-class probability, in (0, 1].
        seen: Records passed to :meth:`ask` so far.
        asked: Records for which :meth:`ask` returned True.

    By hand, budget 0.5, step 0.1, records with p1 = 0.6: record 1 would make 1/1 > 0.5, skip;
    record 2: 1/2 fits and 0.6 < 1, ask, threshold 0.9; record 3: 2/3 > 0.5, skip; record 4:
    2/4 fits and 0.6 < 0.9, ask, threshold 0.81. Then p1 = 0.95 at record 6 (3/6 fits) is
    above 0.81: skip and raise the threshold to 0.891.

    >>> vu = VariableUncertainty(0.5, step=0.1)
    >>> [vu.ask([0.6, 0.4]) for _ in range(4)], round(vu.threshold, 4)
    ([False, True, False, True], 0.81)
    >>> [vu.ask([0.95, 0.05]) for _ in range(2)], vu.seen, vu.asked, round(vu.threshold, 4)
    ([False, False], 6, 2, 0.891)
    """

    def __init__(self, budget: float, *, step: float = 0.01, threshold: float = 1.0) -> None:
        """Store the settings; counters start at 0.

        Raises:
            ValueError: ``budget`` or ``threshold`` outside (0, 1], ``step`` outside [0, 1).
        """
        self.budget = _check_fraction(budget, "budget", low_open=True)
        self.step = _check_fraction(step, "step", low_open=False)
        self.threshold = _check_fraction(threshold, "threshold", low_open=True)
        self.seen = 0
        self.asked = 0

    def ask(self, probs: ArrayLike) -> bool:
        """Decide on one record from its (C,) class probabilities; True = ask for its label.

        Raises:
            ValueError: ``probs`` is not a valid (C,) probability row (nothing is counted).
        """
        p = check_row(probs)  # (C,)
        self.seen += 1
        if self.asked + 1 > self.budget * self.seen:
            return False
        if p.max() < self.threshold:
            self.asked += 1
            self.threshold *= 1.0 - self.step
            return True
        self.threshold = min(1.0, self.threshold * (1.0 + self.step))
        return False

    def __repr__(self) -> str:
        return (
            f"VariableUncertainty(budget={self.budget}, step={self.step}, "
            f"threshold={self.threshold:.6g}, seen={self.seen}, asked={self.asked})"
        )
