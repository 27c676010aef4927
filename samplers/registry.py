"""Name -> sampler registry, so configs pick samplers by name and one test suite covers all.

Every sampler module registers itself at import time with :func:`register` (a pure score
function) or :func:`register_factory` (a sampler needing a random generator). Each entry is a
:class:`SamplerSpec` saying what inputs the scorer takes, so samplers that need more than an
(N, C) probability array (BALD over (T, N, C) MC-dropout samples, k-center over embeddings) can
join later without changing :func:`get`: callers and the shared tests read ``spec.inputs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: A scorer: input arrays (by default one (N, C) probability array) -> (N,) float64 scores,
#: higher = ask a human first.
ScoreFn = Callable[..., np.ndarray]
#: Builds a scorer from a random generator; deterministic samplers ignore it.
Factory = Callable[[np.random.Generator], ScoreFn]

#: The input of every sampler so far: one (N, C) probability array.
PROBS: tuple[str, ...] = ("probs",)


@dataclass(frozen=True)
class SamplerSpec:
    """What the registry knows about one sampler.

    Attributes:
        name: Registered name, as used in configs.
        factory: Builds the scorer from a generator (ignored by deterministic samplers).
        inputs: Names of the positional arrays the scorer takes, e.g. ``("probs",)`` for
            (N, C) probabilities; a future BALD would declare ``("samples",)`` for (T, N, C).
        uncertainty: Scores are 1 at the uniform distribution and 0 at a one-hot row.
        deterministic: Same input, same scores, whatever the generator.
    """

    name: str
    factory: Factory
    inputs: tuple[str, ...] = PROBS
    uncertainty: bool = True
    deterministic: bool = True


_REGISTRY: dict[str, SamplerSpec] = {}


def _add(spec: SamplerSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"sampler {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def register(
    name: str, *, inputs: tuple[str, ...] = PROBS, uncertainty: bool = True
) -> Callable[[ScoreFn], ScoreFn]:
    """Register a deterministic score function under ``name`` (use as a decorator).

    The function is returned unchanged, so it stays importable and callable directly.
    """

    def decorate(fn: ScoreFn) -> ScoreFn:
        _add(SamplerSpec(name, lambda _rng: fn, inputs, uncertainty, deterministic=True))
        return fn

    return decorate


def register_factory(
    name: str, *, inputs: tuple[str, ...] = PROBS, uncertainty: bool = False
) -> Callable[[Factory], Factory]:
    """Register a factory building a stochastic scorer from a generator (a decorator)."""

    def decorate(factory: Factory) -> Factory:
        _add(SamplerSpec(name, factory, inputs, uncertainty, deterministic=False))
        return factory

    return decorate


def names() -> list[str]:
    """Sorted names of every registered sampler."""
    return sorted(_REGISTRY)


def spec(name: str) -> SamplerSpec:
    """Return the :class:`SamplerSpec` registered under ``name``.

    Raises:
        ValueError: Unknown name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown sampler {name!r}; known samplers: {', '.join(names())}"
        ) from None


def get(name: str, rng: np.random.Generator | None = None) -> ScoreFn:
    """Return the scorer registered under ``name``.

    Args:
        name: A name from :func:`names`.
        rng: Generator for stochastic samplers. None means ``np.random.default_rng(0)`` so
            that even an unseeded call is reproducible; global numpy state is never used.

    Returns:
        ``f(probs: (N, C)) -> (N,) float64`` scores in [0, 1], higher = ask first (other
        inputs for samplers whose ``spec(name).inputs`` say so).

    Raises:
        ValueError: Unknown name; the message lists the known ones.
        TypeError: ``rng`` is not a ``np.random.Generator``.

    >>> score = get("least_confidence")
    >>> score([[0.5, 0.5], [1.0, 0.0]]).tolist()
    [1.0, 0.0]
    """
    entry = spec(name)
    if rng is None:
        rng = np.random.default_rng(0)
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return entry.factory(rng)
