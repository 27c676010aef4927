"""Name -> model factory registry, so configs pick a classifier by name and one check covers all.

A factory has the :data:`ModelFactory` signature ``(shape, num_classes, dropout) -> nn.Module``.
Entries are either callables or ``"package.module:function"`` strings resolved on first use, so
the registry itself imports no torch: a config can be validated, and ``activestream --help``
answered, without loading a deep-learning framework. The built-in architectures are entries of
this same registry.

Example:
    >>> "digits_cnn" in model_names()
    True
    >>> net = build_model("digits_cnn", shape=(1, 8, 8), num_classes=3)
    >>> type(net).__name__, net.head[-1].out_features
    ('CompactCNN', 3)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, int, int]
#: Builds a classifier for ``(C, H, W)`` inputs: ``(shape, num_classes, dropout) -> nn.Module``
#: whose forward maps ``(N, C, H, W)`` float32 to ``(N, num_classes)`` logits.
ModelFactory = Callable[[Shape, int, float], "nn.Module"]

_REGISTRY: dict[str, ModelFactory | str] = {
    "digits_cnn": "activestream.models.builtin:digits_cnn",
    "mobilenet_v3_small": "activestream.models.builtin:mobilenet_v3_small",
    "resnet18": "activestream.models.builtin:resnet18",
}


def register_model(name: str, factory: ModelFactory | str) -> None:
    """Register ``factory`` (a callable or ``"package.module:function"``) under ``name``.

    Raises:
        ValueError: The name is taken or the string is not of the form ``module:function``.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"model factory {factory!r} must look like 'package.module:function'")
    _REGISTRY[name] = factory


def model_names() -> list[str]:
    """Sorted names of every registered architecture."""
    return sorted(_REGISTRY)


def _load(target: str) -> ModelFactory:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import model factory {target!r}: {err}") from None


def get_factory(name: str) -> ModelFactory:
    """Return the factory registered under ``name``, importing it on first use.

    Raises:
        ValueError: Unknown name (the message lists the known ones) or an entry that does not
            import.
    """
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose from {', '.join(model_names())}"
        ) from None
    if isinstance(entry, str):
        entry = _REGISTRY[name] = _load(entry)
    return entry


def build_model(
    arch: str, *, shape: Shape, num_classes: int, dropout: float = 0.25, seed: int = 0
) -> nn.Module:
    """Build a randomly initialised classifier for ``shape`` = (C, H, W) images.

    The seed makes initial weights reproducible without touching torch's global generator.

    Raises:
        ValueError: Unknown architecture, or fewer than two classes.
    """
    import torch

    factory = get_factory(arch)
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(tuple(shape), num_classes, dropout)  # type: ignore[arg-type]
