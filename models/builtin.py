"""The built-in classifiers, every one randomly initialised (no downloads exist here).

torchvision's classifiers expect 3x224x224 ImageNet inputs; for the small images that active
learning pools often hold (8x8 digits, 32x32 crops) their stems downsample the signal away, so
these builders swap the first convolution for a stride-1 one with the right input channels and
drop ResNet's max-pool on small inputs. Each builder has the :data:`~activestream.models.registry.
ModelFactory` convention (``num_classes`` first, ``shape`` and ``dropout`` as keywords) and
is registered by name in :mod:`activestream.models.registry`.

Example:
    >>> import torch
    >>> net = digits_cnn(10, shape=(1, 8, 8), dropout=0.25)
    >>> tuple(net(torch.zeros(2, 1, 8, 8)).shape)
    (2, 10)
"""

from __future__ import annotations

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


def digits_cnn(num_classes: int, *, shape: Shape = (1, 8, 8), dropout: float = 0.25) -> nn.Module:
    """The compact CNN: the default, sized for 8x8 digits and small crops."""
    return CompactCNN(shape[0], num_classes, dropout)


def resnet18(num_classes: int, *, shape: Shape = (3, 32, 32), dropout: float = 0.0) -> nn.Module:
    """Torchvision's ResNet-18, randomly initialised, with a stem for small inputs."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
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


def mobilenet_v3_small(
    num_classes: int, *, shape: Shape = (3, 32, 32), dropout: float = 0.2
) -> nn.Module:
    """Torchvision's MobileNetV3-Small, randomly initialised, stem for small inputs."""
    from torchvision.models import mobilenet_v3_small as tv_mobilenet

    net = tv_mobilenet(weights=None, num_classes=num_classes, dropout=dropout)
    stem = net.features[0][0]
    small = min(shape[1:]) <= 64
    net.features[0][0] = nn.Conv2d(
        shape[0], stem.out_channels, kernel_size=3, stride=1 if small else 2, padding=1, bias=False
    )
    return net
