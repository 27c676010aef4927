"""The model contract as a check anyone can run on their own factory.

Every part that builds a model (trainer, scorers, simulator, Serve) relies on the same few
properties; :func:`check_model` tries them on a fresh build, and the test suite runs it over every
registered architecture:

* the factory returns a ``torch.nn.Module``; in eval mode it maps ``(N, C, H, W)`` float32 to
  finite ``(N, num_classes)`` logits, for a batch of one too, and gives the same logits twice;
* its last ``nn.Linear`` produces those logits (its input is the embedding that the diversity
  samplers use);
* a seeded build is reproducible, so every process builds the same initial weights;
* a state dict loaded into a second build reproduces the first one's logits (that is how weights
  travel from the trainer to the scorers);
* one training step gives finite gradients that reach the last layer;
* with ``dropout > 0`` there is a dropout layer, so MC-dropout samplers get stochastic passes.

Example:
    >>> from torch import nn
    >>> def tiny(num_classes, *, shape, dropout):
    ...     c, h, w = shape
    ...     head = nn.Linear(c * h * w, num_classes)
    ...     return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), head)
    >>> check_model(tiny, shape=(1, 4, 4), num_classes=3)
    >>> check_model(lambda num_classes: nn.Flatten(), shape=(1, 4, 4), num_classes=3)
    Traceback (most recent call last):
    ...
    activestream.models.checks.ModelCheckError: model <lambda>: has no nn.Linear layer; \
the last one must produce the logits
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from activestream.models.registry import (
    ModelFactory,
    Shape,
    call_factory,
    materialize,
    resolve,
)


class ModelCheckError(AssertionError):
    """A model factory broke the contract; the message names the factory and the invariant."""


def _build(
    factory: ModelFactory, shape: Shape, num_classes: int, dropout: float, kwargs: dict[str, Any]
) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = call_factory(factory, num_classes, shape=shape, dropout=dropout, kwargs=kwargs)
        if isinstance(net, nn.Module):
            try:
                materialize(net, shape)
            except ValueError as err:
                raise ModelCheckError(f"model {_label(factory)}: {err}") from None
        return net


def _label(factory: ModelFactory | str) -> str:
    return factory if isinstance(factory, str) else getattr(factory, "__name__", str(factory))


def check_model(
    factory: ModelFactory | str,
    *,
    shape: Shape = (3, 32, 32),
    num_classes: int = 10,
    dropout: float = 0.25,
    kwargs: dict[str, Any] | None = None,
) -> None:
    """Run the model contract on ``factory``; return quietly or raise :class:`ModelCheckError`.

    Args:
        factory: A :data:`~activestream.models.registry.ModelFactory` or a registered name.
        shape: ``(C, H, W)`` of the inputs to try.
        num_classes: Classes to ask for.
        dropout: Dropout to ask for; ``0`` skips the dropout check.
        kwargs: Keyword arguments for the factory (``model.kwargs``).

    Raises:
        ModelCheckError: The first invariant the model breaks, named in the message.
    """
    name = _label(factory)
    fn = resolve(factory) if isinstance(factory, str) else factory
    kwargs = dict(kwargs or {})
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]

    def fail(message: str) -> None:
        raise ModelCheckError(f"model {name}: {message}")

    net = _build(fn, shape, num_classes, dropout, kwargs)
    if not isinstance(net, nn.Module):
        fail(f"the factory returned {type(net).__name__}, not a torch.nn.Module")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        fail("has no nn.Linear layer; the last one must produce the logits")
    if linears[-1].out_features != num_classes:
        fail(f"its last nn.Linear has {linears[-1].out_features} outputs, not {num_classes}")

    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    net.eval()
    with torch.inference_mode():
        logits = net(x)
        if tuple(logits.shape) != (4, num_classes):
            fail(f"maps {tuple(x.shape)} inputs to {tuple(logits.shape)}, not (4, {num_classes})")
        if not torch.isfinite(logits).all():
            fail("gives non-finite logits in eval mode")
        if tuple(net(x[:1]).shape) != (1, num_classes):
            fail("cannot score a batch of one")
        if not torch.allclose(net(x), logits):
            fail("gives different logits for the same input twice in eval mode")
        twin = _build(fn, shape, num_classes, dropout, kwargs)
        if any(
            not torch.equal(a, b)
            for a, b in zip(net.state_dict().values(), twin.state_dict().values(), strict=False)
        ):
            fail("two builds with the same torch seed have different initial weights")
        twin.load_state_dict(net.state_dict())
        if not torch.allclose(twin.eval()(x), logits, atol=1e-6):
            fail("a second build loaded with the first one's state dict gives other logits")

    net.train()
    loss = nn.functional.cross_entropy(net(x), torch.arange(4) % num_classes)
    loss.backward()
    grad = linears[-1].weight.grad
    if grad is None or not torch.isfinite(grad).all() or not grad.abs().sum() > 0:
        fail("one training step gives no finite gradient at the last nn.Linear")
    if dropout > 0 and not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in net.modules()):
        fail(f"asked for dropout={dropout} but has no dropout layer (MC-dropout samplers need one)")
