"""Input transforms: one definition applied identically in training, scoring and ``/predict``.

Pixels arrive as float32 ``(N, C, H, W)`` in [0, 1] (decoded from whatever the pool stores);
the transform makes them what the model expects: ``channels`` (grayscale repeated to RGB, or RGB
averaged to grayscale), ``resize`` (bilinear with antialiasing, to ``(H, W)``) and ``normalize``
(``imagenet``: subtract the ImageNet mean and divide by its standard deviation per channel, as
every ImageNet-pretrained backbone was trained with). Every process that feeds the model goes
through the same :class:`InputTransform`, so the trainer, the scorers and Serve cannot drift.

Example:
    >>> import numpy as np
    >>> t = InputTransform(resize=(4, 4), channels=3, normalize="imagenet")
    >>> t.output_shape((1, 2, 2))
    (3, 4, 4)
    >>> x = t(np.full((2, 1, 2, 2), 0.5, np.float32))
    >>> x.shape, x.dtype, round(float(x[0, 0, 0, 0]), 3)
    ((2, 3, 4, 4), dtype('float32'), 0.066)
    >>> InputTransform().is_identity
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputTransform:
    """What the model needs from decoded pixels.

    Attributes:
        resize: ``(H, W)`` to resize to; None keeps the stored size.
        channels: 1 or 3 to convert to; None keeps the stored channels.
        normalize: ``"imagenet"`` or ``"none"``.
    """

    resize: tuple[int, int] | None = None
    channels: Literal[1, 3] | None = None
    normalize: Literal["none", "imagenet"] = "none"

    @property
    def is_identity(self) -> bool:
        """Nothing to do: the stored pixels are the model's input."""
        return self.resize is None and self.channels is None and self.normalize == "none"

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The model's input ``(C, H, W)`` for stored images of ``shape``."""
        c, h, w = shape
        if self.channels is not None:
            c = self.channels
        if self.resize is not None:
            h, w = self.resize
        return (int(c), int(h), int(w))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` float32 in [0, 1] -> the model's input, float32."""
        if self.is_identity:
            return x
        if self.channels == 3 and x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        elif self.channels == 1 and x.shape[1] == 3:
            x = x.mean(axis=1, keepdims=True, dtype=np.float32)
        if self.resize is not None and tuple(x.shape[2:]) != tuple(self.resize):
            import torch
            from torch.nn import functional

            with torch.inference_mode():
                x = functional.interpolate(
                    torch.from_numpy(np.ascontiguousarray(x)),
                    size=tuple(self.resize),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                ).numpy()
        if self.normalize == "imagenet":
            c = x.shape[1]
            mean = np.asarray(IMAGENET_MEAN if c == 3 else [np.mean(IMAGENET_MEAN)], np.float32)
            std = np.asarray(IMAGENET_STD if c == 3 else [np.mean(IMAGENET_STD)], np.float32)
            x = (x - mean[:, None, None]) / std[:, None, None]
        return np.ascontiguousarray(x, dtype=np.float32)
