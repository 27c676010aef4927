"""Active-learning samplers: pure numpy functions from model outputs to query scores.

Most samplers map a (N, C) array of class probabilities to (N,) float64 scores in [0, 1],
higher = ask a human first; :func:`bald` takes (T, N, C) MC-dropout passes instead. Pick one by
name with :func:`get`; :func:`names` lists them and :func:`spec` says what each one takes.
Some also carry a :data:`BatchFn` (``spec(name).batch``) that picks a diverse batch from scored
candidates and their embeddings: :func:`kcenter_greedy` (core-set),
:func:`cluster_margin_select` and :func:`badge_select` (k-means++ on
:func:`gradient_embedding`). :func:`explore_mix` turns scores into a batch of queries with a
share of random exploration, :class:`TopK` keeps the best rows of a pool scored in many pieces,
and :class:`VariableUncertainty` decides record by record on a stream under a label budget.

Cold start: :func:`cold_picks` asks typical (:mod:`~activestream.samplers.typiclust`) or
covering (:mod:`~activestream.samplers.maxherding`) items of the pool's embedding while the
model is cold.

This package imports numpy (and scikit-learn for clustering and neighbours) only: no Ray, no
torch, nothing else from the project, so it can be tested and reused anywhere.
"""

from activestream.samplers import auto  # noqa: F401 - registers 'auto'
from activestream.samplers.badge import badge_select, gradient_embedding
from activestream.samplers.bald import bald
from activestream.samplers.cluster_margin import cluster_margin_select
from activestream.samplers.cold_start import COLD_STARTS, cold_order, cold_picks, warmed_up
from activestream.samplers.entropy import entropy
from activestream.samplers.exploration import ExploreResult, explore_mix
from activestream.samplers.kcenter import kcenter_greedy
from activestream.samplers.least_confidence import least_confidence
from activestream.samplers.margin import margin
from activestream.samplers.random_sampler import random_sampler
from activestream.samplers.ratio import ratio
from activestream.samplers.registry import (
    BatchFn,
    SamplerSpec,
    ScoreFn,
    get,
    names,
    register,
    register_factory,
    spec,
)
from activestream.samplers.stream import VariableUncertainty
from activestream.samplers.topk import TopK, TopKResult

__all__ = [
    "COLD_STARTS",
    "BatchFn",
    "ExploreResult",
    "SamplerSpec",
    "ScoreFn",
    "TopK",
    "TopKResult",
    "VariableUncertainty",
    "badge_select",
    "bald",
    "cluster_margin_select",
    "cold_order",
    "cold_picks",
    "entropy",
    "explore_mix",
    "get",
    "gradient_embedding",
    "kcenter_greedy",
    "least_confidence",
    "margin",
    "names",
    "random_sampler",
    "ratio",
    "register",
    "register_factory",
    "spec",
    "warmed_up",
]
