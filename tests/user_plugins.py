"""A user's own model factory and sampler, outside the package, used by import string.

It lives beside the tests because Ray workers inherit the driver's ``sys.path`` at ``ray.init``,
which is how a user's own module reaches the scorer actors too.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.ops import FeaturePyramidNetwork

BUILT: list[int] = []


def tiny_mlp(num_classes: int, *, shape: tuple[int, int, int], hidden: int = 16) -> nn.Module:
    """An MLP classifier; ``hidden`` comes from ``model.kwargs``."""
    c, h, w = shape
    BUILT.append(hidden)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
    )


def lazy_cnn(num_classes: int, *, dropout: float = 0.25) -> nn.Module:
    """A CNN written with lazy layers: no input shape anywhere in the user's code."""
    return nn.Sequential(
        nn.LazyConv2d(8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.LazyLinear(num_classes),
    )


def not_a_model(num_classes: int) -> str:
    """Returns the wrong thing, to check the error users get."""
    return f"{num_classes} classes"


def first_class_doubt(probs: np.ndarray) -> np.ndarray:
    """Ask first about items the model thinks are unlikely to be class 0."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError("probs must be 2-D")
    return 1.0 - p[:, 0]


class TinyPyramid(nn.Module):
    """A user's own detection backbone: three strided conv stages (8, 16, 32) under an FPN."""

    def __init__(self, out_channels: int = 32) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int, downs: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for k in range(downs):
                layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, 2, 1), nn.ReLU()]
            return nn.Sequential(*layers)

        self.stages = nn.ModuleList([stage(3, 16, 3), stage(16, 32, 1), stage(32, 32, 1)])
        self.fpn = FeaturePyramidNetwork([16, 32, 32], out_channels)
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        taps, x = OrderedDict(), images
        for k, stage in enumerate(self.stages):
            x = stage(x)
            taps[str(k)] = x
        return self.fpn(taps)


def tiny_fcos(num_classes: int, *, width: int = 32) -> nn.Module:
    """The package's FCOS on the user's own backbone (``model.kwargs`` sets its width)."""
    from activestream.models.detection import fcos_detector

    return fcos_detector(num_classes, backbone=lambda: TinyPyramid(width), image_size=64)


def plain_fcos(num_classes: int) -> nn.Module:
    """torchvision's FCOS as it comes: its detections carry no class scores."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    anchors = AnchorGenerator(((16,), (32,), (64,)), ((1.0,),) * 3)
    return FCOS(TinyPyramid(), num_classes, min_size=64, max_size=64, anchor_generator=anchors)
