"""Name -> sampler registry, so configs pick samplers by name and one test suite covers all.

Every sampler module registers itself at import time with :func:`register` (a pure score
function) or :func:`register_factory` (a sampler needing a random generator). Each entry is a
:class:`SamplerSpec` saying what inputs the scorer takes, so samplers that need more than an
(N, C) probability array (BALD over (T, N, C) MC-dropout samples) join without changing
:func:`get`: callers and the shared tests read ``spec.inputs``. A sampler may also carry a
:data:`BatchFn` (``spec.batch``) choosing a diverse batch from scored candidates and their
embeddings (k-center, cluster-margin), since the top-k by score alone often asks k near-copies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: A scorer: input arrays (by default one (N, C) probability array) -> (N,) float64 scores,
#: higher = ask a human first.
ScoreFn = Callable[..., np.ndarray]
#: Builds a scorer from a random generator; deterministic samplers ignore it.
Factory = Callable[[np.random.Generator], ScoreFn]
#: A batch selector: ``(scores (N,), embeddings (N, D), k, rng) -> (min(k, N),)`` distinct int64
#: indices into the N candidates, for samplers that trade score against diversity.
BatchFn = Callable[[np.ndarray, np.ndarray, int, np.random.Generator], np.ndarray]

#: The default input of a sampler: one (N, C) probability array.
PROBS: tuple[str, ...] = ("probs",)


@dataclass(frozen=True)
class SamplerSpec:
    """What the registry knows about one sampler.

    Attributes:
        name: Registered name, as used in configs.
        factory: Builds the scorer from a generator (ignored by deterministic samplers).
        inputs: Names of the positional arrays the scorer takes, e.g. ``("probs",)`` for
            (N, C) probabilities, ``("samples",)`` for (T, N, C) MC-dropout passes (BALD).
        uncertainty: Scores are 1 at the uniform distribution and 0 at a one-hot row.
        deterministic: Same input, same scores, whatever the generator.
        batch: Optional :data:`BatchFn` picking a diverse batch of k candidates from their
            scores and embeddings; None means the plain top-k by score.
        arms: Set for ``auto`` only: the scorer returns (N, A) scores, one column per arm
            named here, and the queue's bandit picks an arm per batch.
        embedding: What the scorer emits as each candidate's embedding: ``"penultimate"``
            (the last layer's input features) or ``"gradient"`` (BADGE's last-layer gradient
            embedding, :func:`~activestream.samplers.badge.gradient_embedding`).
    """

    name: str
    factory: Factory
    inputs: tuple[str, ...] = PROBS
    uncertainty: bool = True
    deterministic: bool = True
    batch: BatchFn | None = None
    arms: tuple[str, ...] | None = None
    embedding: Literal["penultimate", "gradient"] = "penultimate"


_REGISTRY: dict[str, SamplerSpec] = {}
#: Samplers over other samplers (``auto``): found by :func:`spec`, left out of :func:`names`
#: so the shared check suite, which runs every name, sees only single samplers.
_META: dict[str, SamplerSpec] = {}


def register_meta(entry: SamplerSpec) -> SamplerSpec:
    """Make ``entry`` known to :func:`spec` by its name without listing it in :func:`names`."""
    if entry.name in _META or entry.name in _REGISTRY:
        raise ValueError(f"sampler {entry.name!r} is already registered")
    _META[entry.name] = entry
    return entry


def _add(spec: SamplerSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"sampler {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def register(
    name: str,
    *,
    inputs: tuple[str, ...] = PROBS,
    uncertainty: bool = True,
    batch: BatchFn | None = None,
    embedding: Literal["penultimate", "gradient"] = "penultimate",
) -> Callable[[ScoreFn], ScoreFn]:
    """Register a deterministic score function under ``name`` (use as a decorator).

    The function is returned unchanged, so it stays importable and callable directly, and may
    be registered again under another name with a different ``batch`` selector.
    """

    def decorate(fn: ScoreFn) -> ScoreFn:
        _add(
            SamplerSpec(
                name,
                lambda _rng: fn,
                inputs,
                uncertainty,
                deterministic=True,
                batch=batch,
                embedding=embedding,
            )
        )
        return fn

    return decorate


def register_factory(
    name: str,
    *,
    inputs: tuple[str, ...] = PROBS,
    uncertainty: bool = False,
    batch: BatchFn | None = None,
) -> Callable[[Factory], Factory]:
    """Register a factory building a stochastic scorer from a generator (a decorator)."""

    def decorate(factory: Factory) -> Factory:
        _add(SamplerSpec(name, factory, inputs, uncertainty, deterministic=False, batch=batch))
        return factory

    return decorate


def names() -> list[str]:
    """Sorted names of every registered sampler."""
    return sorted(_REGISTRY)


def _import_spec(target: str) -> SamplerSpec:
    """A user's sampler from ``"package.module:function"``, imported in whichever process asks.

    The target is a score function ``f(probs (N, C)) -> (N,)`` or a :class:`SamplerSpec` (for
    samplers that need a generator, other inputs or a batch selector).
    """
    module_name, _, attr = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except ImportError as err:
        raise ValueError(f"cannot import sampler {target!r}: {err}") from None
    except AttributeError:
        raise ValueError(f"cannot import sampler {target!r}: {module_name} has no {attr}") from None
    if isinstance(value, SamplerSpec):
        return value
    if not callable(value):
        raise ValueError(f"sampler {target!r} is a {type(value).__name__}, not a score function")
    return SamplerSpec(target, lambda _rng: value, uncertainty=False)


def spec(name: str) -> SamplerSpec:
    """Return the :class:`SamplerSpec` registered under ``name`` or imported from it.

    ``name`` is a registered name or ``"package.module:function"``; an import string is
    imported here, so it works the same in the driver and inside every scorer actor.

    Raises:
        ValueError: Unknown name (the message lists the known ones) or an import that fails.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _META:  # e.g. 'auto', a bandit over the registered samplers, not one of them
        return _META[name]
    if ":" in name:
        return _import_spec(name)
    raise ValueError(
        f"unknown sampler {name!r}; known samplers: {', '.join(names())}, "
        "'auto' (a bandit over them), or 'package.module:function'"
    )


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
