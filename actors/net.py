"""The model every part builds from the one config: factory, weights, frozen layers, input.

Trainer, scorers, simulator and Serve all call :func:`build_net`, so a user's factory, its
``model.kwargs`` and the input transform are resolved the same way in every process. Only the
trainer reads ``model.init_weights`` (:func:`load_init_weights`); it publishes the result as
version 0 and every scorer receives it through the object store.

Example:
    >>> from activestream.config import ModelConfig
    >>> net = build_net(ModelConfig(train="head"), stored_shape=(1, 8, 8), num_classes=3)
    >>> [name for name, p in net.named_parameters() if p.requires_grad]
    ['head.5.weight', 'head.5.bias']
"""

from __future__ import annotations

import io
import pickle

import torch
from torch import nn

from activestream.config import ModelConfig, StorageConfig
from activestream.errors import ConfigError
from activestream.models import build_model
from activestream.models.parts import last_linear
from activestream.sources.fs import DEFAULT_STORAGE, filesystem_for


def build_net(
    model: ModelConfig, *, stored_shape: tuple[int, int, int], num_classes: int, seed: int = 0
) -> nn.Module:
    """Build the configured classifier for images stored as ``stored_shape``, seeded.

    With ``model.train == "head"`` every parameter but the last linear layer's is frozen.

    Raises:
        ConfigError: The factory fails to build or returns something that is not a module.
    """
    shape = model.transform().output_shape(stored_shape)
    try:
        net = build_model(
            model.factory,
            shape=shape,
            num_classes=num_classes,
            dropout=model.dropout,
            seed=seed,
            kwargs=model.kwargs,
        )
    except ValueError as err:
        raise ConfigError(f"config key 'model.factory': {err}") from None
    if model.train == "head":
        freeze_all_but_head(net)
    return net


def freeze_all_but_head(net: nn.Module) -> nn.Linear:
    """Freeze every parameter except the final linear layer's; return that layer."""
    head = last_linear(net)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return head


def load_init_weights(net: nn.Module, uri: str, storage: StorageConfig = DEFAULT_STORAGE) -> None:
    """Load a state dict from a local path or ``s3://`` URI into ``net``.

    The final layer may differ in shape (a backbone pretrained on other classes): such keys
    keep the fresh initialisation. Every other missing or unexpected key is an error, because
    silently ignoring a mismatched checkpoint trains a random network.

    Raises:
        ConfigError: The file cannot be read, is not a state dict, or does not fit the model.
    """
    fs, path = filesystem_for(uri, storage)
    try:
        with fs.open_input_stream(path) as fh:
            raw = fh.read()
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"model.init_weights {uri}: cannot load a state dict: {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not isinstance(state, dict):
        raise ConfigError(f"model.init_weights {uri}: holds a {type(state).__name__}, not a dict")
    own = net.state_dict()
    final = last_linear(net)
    head = {f"{n}.{k}" for n, m in net.named_modules() if m is final for k in ("weight", "bias")}
    fitted = {
        k: v for k, v in state.items() if k in own and (tuple(v.shape) == tuple(own[k].shape))
    }
    mismatched = sorted(k for k in state if k in own and k not in fitted and k not in head)
    missing = sorted(k for k in own if k not in state and k not in head)
    unexpected = sorted(k for k in state if k not in own)
    problems = [
        f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
        f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
        f"{len(mismatched)} of another shape (e.g. {mismatched[0]})" if mismatched else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError(
            f"model.init_weights {uri} does not fit model.factory: keys {'; '.join(problems)}"
        )
    net.load_state_dict(fitted, strict=False)


@torch.inference_mode()
def head_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the final linear layer for ``x``: what a frozen backbone makes of it.

    With ``train: head`` this never changes for an item, so the trainer and the scorers compute
    it once and then run only the final layer on it.
    """
    captured: list[torch.Tensor] = []
    hook = last_linear(net).register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0])
    )
    try:
        net.eval()
        net(x)
    finally:
        hook.remove()
    return captured[-1].flatten(1)
