"""Name -> model factory registry: configs pick a classifier by name or by import string.

A factory is any callable ``fn(num_classes, **kwargs) -> torch.nn.Module`` whose forward maps
``(N, C, H, W)`` float32 to ``(N, num_classes)`` logits. ``kwargs`` are the config's
``model.kwargs``; besides those, a factory that *declares* a ``shape`` parameter gets the input
``(C, H, W)`` and one that declares ``dropout`` gets ``model.dropout``, so a user's factory never
receives arguments it did not ask for.

Entries are callables or ``"package.module:function"`` strings imported on first use, so the
registry imports no torch: a config can be validated, and ``activestream --help`` answered,
without loading a deep-learning framework. The built-in architectures are entries of this same
registry, and :func:`resolve` takes an import string directly too, so
``model.factory: "mypackage.nets:classifier"`` works without registering anything, in every
process that builds the model (trainer, scorers, simulator, Serve).

Example:
    >>> "digits_cnn" in model_names()
    True
    >>> net = build_model("digits_cnn", shape=(1, 8, 8), num_classes=3)
    >>> type(net).__name__, net.head[-1].out_features
    ('CompactCNN', 3)
    >>> net = build_model("activestream.models.builtin:digits_cnn", shape=(1, 8, 8), num_classes=4)
    >>> net.head[-1].out_features
    4
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, int, int]
#: Builds a classifier: ``fn(num_classes, **kwargs) -> nn.Module`` (see the module docstring).
ModelFactory = Callable[..., "nn.Module"]

_REGISTRY: dict[str, ModelFactory | str] = {
    "digits_cnn": "activestream.models.builtin:digits_cnn",
    "efficientnet_lite0": "activestream.models.pretrained:efficientnet_lite0",
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


def import_target(target: str, what: str = "model factory") -> Any:
    """Import ``"package.module:attribute"``; a ValueError names the target and the cause."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {target!r} must look like 'package.module:function'")
    try:
        value = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except ImportError as err:
        raise ValueError(f"cannot import {what} {target!r}: {err}") from None
    except AttributeError:
        raise ValueError(f"cannot import {what} {target!r}: {module_name} has no {attr}") from None
    if not callable(value):
        raise ValueError(f"{what} {target!r} is a {type(value).__name__}, not a callable")
    return value


def resolve(factory: str) -> ModelFactory:
    """The callable behind a registered name or a ``"package.module:function"`` string.

    Raises:
        ValueError: Unknown name (the message lists the registered ones), or a target that
            does not import or is not callable.
    """
    if factory in _REGISTRY:
        entry = _REGISTRY[factory]
        if isinstance(entry, str):
            entry = _REGISTRY[factory] = import_target(entry)
        return entry
    if ":" in factory:
        return import_target(factory)
    raise ValueError(
        f"unknown model {factory!r}; choose from {', '.join(model_names())} "
        "or give 'package.module:function'"
    )


def call_factory(
    fn: ModelFactory,
    num_classes: int,
    *,
    shape: Shape,
    dropout: float,
    kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """Call ``fn`` the documented way: ``shape`` and ``dropout`` only when it declares them."""
    call = dict(kwargs or {})
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        params = {}
    if "shape" in params and "shape" not in call:
        call["shape"] = tuple(shape)
    if "dropout" in params and "dropout" not in call:
        call["dropout"] = dropout
    return fn(num_classes, **call)


def build_model(
    factory: str | ModelFactory,
    *,
    shape: Shape,
    num_classes: int,
    dropout: float = 0.25,
    seed: int = 0,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a classifier for ``shape`` = (C, H, W) images, with reproducible initial weights.

    The seed makes initial weights reproducible without touching torch's global generator.

    Raises:
        ValueError: Unknown or unimportable factory, fewer than two classes, or a factory that
            returns something other than a ``torch.nn.Module`` (the message names it).
    """
    import torch

    fn = resolve(factory) if isinstance(factory, str) else factory
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = call_factory(fn, num_classes, shape=shape, dropout=dropout, kwargs=kwargs)
        except TypeError as err:
            raise ValueError(
                f"model factory {_name(factory)} rejected its arguments: {err}"
            ) from None
        if not isinstance(net, torch.nn.Module):
            raise ValueError(
                f"model factory {_name(factory)} returned {type(net).__name__}, "
                "not a torch.nn.Module"
            )
        materialize(net, shape)  # under the seed: lazy layers' weights are reproducible too
    return net


def materialize(net: Any, shape: Shape) -> None:
    """Give lazy layers (``nn.LazyLinear``, ``nn.LazyConv2d``...) their shapes with one dry pass.

    A lazy layer has no weights until its first forward, so an optimizer, a state dict or a
    weights broadcast built before it would hold uninitialized parameters. Every part builds
    its model through :func:`build_model`, so all of them get the same materialized network.

    Raises:
        ValueError: The dry forward at ``shape`` fails (the message names the cause).

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    >>> materialize(net, (1, 4, 4))
    >>> net[1].weight.shape
    torch.Size([3, 16])
    """
    import torch
    from torch.nn.parameter import is_lazy

    if not any(is_lazy(p) for p in net.parameters()):
        return
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(2, *shape))
    except Exception as err:  # a user's model: name what failed, whatever it raised
        raise ValueError(
            f"a dry forward at shape {tuple(shape)} (to size its lazy layers) failed: "
            f"{type(err).__name__}: {err}"
        ) from None
    finally:
        net.train(was_training)


def _name(factory: str | ModelFactory) -> str:
    return repr(factory) if isinstance(factory, str) else getattr(factory, "__qualname__", "?")
