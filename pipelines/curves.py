"""How a sampler's learning curve compares with random's: the numbers studies report.

Every function takes mean curves on one label grid (what :func:`~activestream.pipelines.
simulate.simulate` writes per strategy) and returns plain numbers, so the study, the knob
table, the real-loop benchmark and the tests all read curves the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def labels_to_reach(labels: Sequence[int], accuracy: Sequence[float], target: float) -> int | None:
    """First label count whose accuracy reaches ``target``, or None.

    >>> labels_to_reach([0, 16, 32], [0.1, 0.8, 0.9], 0.8)
    16
    >>> labels_to_reach([0, 16], [0.1, 0.5], 0.9) is None
    True
    """
    for n, acc in zip(labels, accuracy, strict=True):
        if acc >= target - 1e-12:
            return int(n)
    return None


def area_under_curve(labels: Sequence[int], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the label range (trapezoids / range): 1.0 is perfect from label 0.

    >>> area_under_curve([0, 10, 20], [0.0, 1.0, 1.0])
    0.75
    """
    x, y = np.asarray(labels, dtype=float), np.asarray(accuracy, dtype=float)
    if x[-1] <= x[0]:
        return float(y[-1])
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def stays_above_from(
    labels: Sequence[int], sampler: Sequence[float], random: Sequence[float]
) -> int | None:
    """First label count from which the sampler's mean is never below random's, or None.

    >>> stays_above_from([0, 16, 32, 48], [0.1, 0.2, 0.5, 0.6], [0.1, 0.3, 0.4, 0.5])
    32
    """
    below = np.asarray(sampler) < np.asarray(random) - 1e-12
    if below[-1]:
        return None
    last_below = np.flatnonzero(below)
    return int(labels[0] if last_below.size == 0 else labels[last_below[-1] + 1])


def worst_gap_in_se(s: dict[str, Any], r: dict[str, Any], seeds: int) -> float:
    """The most negative (sampler - random) gap over the grid, in standard errors of it.

    Each point's standard error is sqrt((sd_s^2 + sd_r^2) / seeds); where both spreads are
    zero the gap itself decides. -1.0 means one standard error below random at its worst.
    """
    gap = np.asarray(s["accuracy_mean"]) - np.asarray(r["accuracy_mean"])
    se = np.sqrt((np.square(s["accuracy_std"]) + np.square(r["accuracy_std"])) / seeds)
    ratio = np.where(se > 0, gap / np.where(se > 0, se, 1.0), np.sign(gap) * 0.0)
    return float(ratio.min())


def compare(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per strategy: final accuracy, AUC, labels to random's final, stays-above point, worst gap.

    ``results`` is :func:`~activestream.pipelines.simulate.simulate`'s output; every strategy
    shares random's label grid.
    """
    seeds = int(results["config"]["seeds"])
    strategies = results["strategies"]
    rnd = strategies["random"]
    target = rnd["accuracy_mean"][-1]
    budget = rnd["labels"][-1]
    out: dict[str, dict[str, Any]] = {}
    for name, s in strategies.items():
        need = labels_to_reach(s["labels"], s["accuracy_mean"], target)
        out[name] = {
            "final": s["accuracy_mean"][-1],
            "final_std": s["accuracy_std"][-1],
            "auc": round(area_under_curve(s["labels"], s["accuracy_mean"]), 5),
            "labels_to_random_final": need,
            "share_of_budget": None if need is None else round(need / budget, 4),
            "stays_above_from": stays_above_from(
                s["labels"], s["accuracy_mean"], rnd["accuracy_mean"]
            ),
            "worst_gap_se": round(worst_gap_in_se(s, rnd, seeds), 3),
            "seconds_mean": s.get("seconds_mean"),
        }
    return out
