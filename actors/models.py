"""A small model factory: every classifier is randomly initialised (no downloads exist here).

torchvision's classifiers expect 3x224x224 ImageNet inputs; for the small images that active
learning pools often hold (8x8 digits, 32x32 crops) their stems downsample the signal away, so
the factory swaps the first convolution for a stride-1 one with the right input channels and
drops ResNet's max-pool on small inputs.

Example:
    >>> import torch
    >>> net = build_model("digits_cnn", shape=(1, 8, 8), num_classes=10)
    >>> tuple(net(torch.zeros(2, 1, 8, 8)).shape)
    (2, 10)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Shape = tuple[int, int, int]


class CompactCNN(nn.Module):
    """Two conv blocks and an MLP head; learns 8x8 digits in a few hundred labels.

    Adaptive pooling to 4x4 lets the same network take any input size. Dropout doubles as the
    source of stochastic passes for MC-dropout samplers.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, C, H, W) images to (N, classes) logits."""
        return self.head(self.features(x))


def _digits_cnn(shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    return CompactCNN(shape[0], num_classes, dropout)


def _resnet18(shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    small = min(shape[1:]) <= 64
    net.conv1 = nn.Conv2d(
        shape[0],
        64,
        kernel_size=3 if small else 7,
        stride=1 if small else 2,
        padding=1 if small else 3,
        bias=False,
    )
    if small:
        net.maxpool = nn.Identity()
    if dropout > 0:  # torchvision's resnet has none; MC-dropout samplers (BALD) need some
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
    return net


def _mobilenet_v3_small(shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    net = mobilenet_v3_small(weights=None, num_classes=num_classes, dropout=dropout)
    stem = net.features[0][0]
    small = min(shape[1:]) <= 64
    net.features[0][0] = nn.Conv2d(
        shape[0], stem.out_channels, kernel_size=3, stride=1 if small else 2, padding=1, bias=False
    )
    return net


_FACTORIES: dict[str, Callable[[Shape, int, float], nn.Module]] = {
    "digits_cnn": _digits_cnn,
    "resnet18": _resnet18,
    "mobilenet_v3_small": _mobilenet_v3_small,
}


def model_names() -> list[str]:
    """Architectures :func:`build_model` knows."""
    return sorted(_FACTORIES)


def build_model(
    arch: str, *, shape: Shape, num_classes: int, dropout: float = 0.25, seed: int = 0
) -> nn.Module:
    """Build a randomly initialised classifier for ``shape`` = (C, H, W) images.

    The seed makes initial weights reproducible without touching torch's global generator.
    """
    if arch not in _FACTORIES:
        raise ValueError(f"unknown model {arch!r}; choose from {', '.join(model_names())}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _FACTORIES[arch](tuple(shape), num_classes, dropout)


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer: its input is the embedding diversity samplers use."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to take embeddings from")
    return linears[-1]


def pick_device() -> torch.device:
    """CUDA when this process was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
