"""Small questions every part asks of a model: where its embedding is, which device to use."""

from __future__ import annotations

import torch
from torch import nn


def last_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer: its input is the embedding diversity samplers use.

    >>> last_linear(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))).in_features
    3
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer to take embeddings from")
    return linears[-1]


def pick_device() -> torch.device:
    """CUDA when this process was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
