"""Name -> detection sampler, so configs pick them by name and one test suite covers all.

Kept apart from the classification registry (:mod:`activestream.samplers.registry`): its
samplers take (N, C) probabilities, these take :class:`~.boxes.Detections`, and a name asked
for the wrong task must fail when the config is read, not on the first scored batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: A scorer: :class:`~.boxes.Detections` (one, or two for the flip pass) -> (N,) float64.
DetectionScoreFn = Callable[..., np.ndarray]
#: Builds a scorer from a random generator; deterministic samplers ignore it.
Factory = Callable[[np.random.Generator], DetectionScoreFn]
#: A batch selector, as for classes: ``(scores (N,), embeddings (N, D), k, rng) -> (min(k, N),)``
#: distinct int64 indices into the N candidates.
BatchFn = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class DetectionSamplerSpec:
    """What the registry knows about one detection sampler.

    Attributes:
        name: Registered name, as used in configs.
        factory: Builds the scorer from a generator (ignored by deterministic samplers).
        inputs: The detector passes the scorer takes: ``("detections",)``, or
            ``("detections", "flipped")`` when it also needs the pass over the flipped image
            (boxes mapped back to the image's own coordinates).
        deterministic: Same input, same scores, whatever the generator.
        bounded: Scores lie in [0, 1]; otherwise in [0, n_i] (a sum over image i's boxes).
        batch: Optional :data:`BatchFn` picking a diverse batch from the scored images and
            their embeddings (the detector backbone's pooled features); None: top-k by score.
    """

    name: str
    factory: Factory
    inputs: tuple[str, ...] = ("detections",)
    deterministic: bool = True
    bounded: bool = True
    batch: BatchFn | None = None


_REGISTRY: dict[str, DetectionSamplerSpec] = {}


def add(entry: DetectionSamplerSpec) -> DetectionSamplerSpec:
    """Register ``entry`` under its name (twice is an error: configs name one sampler)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"detection sampler {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def names() -> list[str]:
    """Every registered detection sampler, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> DetectionSamplerSpec:
    """The registry entry for ``name``; ValueError naming the choices when unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown detection sampler {name!r}; choose from {', '.join(names())}"
        ) from None


def get(name: str, rng: np.random.Generator | None = None) -> DetectionScoreFn:
    """The scorer registered as ``name``, built with ``rng`` (default: seeded 0)."""
    return spec(name).factory(np.random.default_rng(0) if rng is None else rng)
