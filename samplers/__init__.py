"""Active-learning samplers: pure numpy functions from model outputs to query scores.

Every sampler maps a (N, C) array of class probabilities to (N,) float64 scores in [0, 1],
higher = ask a human first. Pick one by name with :func:`get`; :func:`names` lists them.
:func:`explore_mix` turns scores into a batch of queries with a share of random exploration,
and :class:`TopK` keeps the best rows of a pool scored in many pieces.

This package imports numpy only: no Ray, no torch, nothing else from the project, so it can be
tested and reused anywhere.
"""

from samplers.entropy import entropy
from samplers.exploration import ExploreResult, explore_mix
from samplers.least_confidence import least_confidence
from samplers.margin import margin
from samplers.random_sampler import random_sampler
from samplers.ratio import ratio
from samplers.registry import SamplerSpec, ScoreFn, get, names, register, register_factory, spec
from samplers.topk import TopK, TopKResult

__all__ = [
    "ExploreResult",
    "SamplerSpec",
    "ScoreFn",
    "TopK",
    "TopKResult",
    "entropy",
    "explore_mix",
    "get",
    "least_confidence",
    "margin",
    "names",
    "random_sampler",
    "ratio",
    "register",
    "register_factory",
    "spec",
]
