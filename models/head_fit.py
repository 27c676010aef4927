"""Fit a linear head to convergence: the convex problem that ``train: head`` really is.

With a frozen backbone the classifier is multinomial logistic regression on fixed features. A
few minibatch steps per buffer leave it far from its optimum at every label count, which throws
away most of what well-chosen queries could give; L-BFGS solves it in a few dozen iterations,
milliseconds for thousands of labels. The objective is scikit-learn's ``LogisticRegression``
with ``C = 1 / l2`` (the intercept is not penalized), so a refit scikit-learn model on the same
features is the baseline this must match::

    minimize  (1/l2) * sum_i w[y_i] * CE(W x_i + b, y_i)  +  ||W||^2 / 2

with ``w[c] = n / (classes * n_c)`` for ``class_weight="balanced"`` (classes counts those seen)
and 1 otherwise. It is divided by n for the optimizer; the minimizer is the same.

Example:
    >>> import torch
    >>> from torch import nn
    >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    >>> y = torch.tensor([0, 1, 0, 1])
    >>> head = nn.Linear(2, 2)
    >>> iterations = fit_linear_head(head, x, y, l2=0.01)
    >>> head(x).argmax(1).tolist()
    [0, 1, 0, 1]
    >>> 0 < iterations <= 100
    True
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ClassWeight = Literal["none", "balanced"]


def class_weights(y: torch.Tensor, classes: int, mode: ClassWeight) -> torch.Tensor:
    """Per-class loss weights: all 1, or ``n / (seen classes * n_c)`` (scikit-learn's balanced).

    Classes with no label get weight 0 (nothing to weigh).

    >>> class_weights(torch.tensor([0, 0, 0, 1]), 3, "balanced").tolist()
    [0.6666666865348816, 2.0, 0.0]
    """
    counts = torch.bincount(y, minlength=classes).to(torch.float32)
    if mode == "none":
        return torch.ones(classes)
    seen = int((counts > 0).sum())
    return torch.where(counts > 0, len(y) / (seen * counts.clamp(min=1)), torch.zeros(()))


def fit_linear_head(
    head: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    l2: float,
    class_weight: ClassWeight = "none",
    sample_weight: torch.Tensor | None = None,
    max_iter: int = 100,
    tolerance: float = 1e-7,
) -> int:
    """Minimize the regularized logistic loss of ``head`` on ``(x, y)`` in place, warm started.

    Args:
        head: The final layer; its current weights are the starting point, so a refit after a
            few new labels takes few iterations.
        x: (N, D) features (the frozen backbone's output).
        y: (N,) class indices; negative entries (withdrawn labels) are ignored.
        l2: Inverse regularization strength, scikit-learn's ``1 / C``.
        class_weight: ``"balanced"`` weighs classes inversely to their label counts.
        sample_weight: (N,) weight of each row (e.g. below 1 for pseudo-labels); None: all 1.
        max_iter: L-BFGS iterations at most.
        tolerance: Stop when the gradient's largest entry falls below this.

    Returns:
        L-BFGS iterations taken (0 when no label is usable).
    """
    keep = y >= 0
    x, y = x[keep].float(), y[keep]
    if not len(y):
        return 0
    weight = class_weights(y.cpu(), head.out_features, class_weight).to(x.device)
    sample_w = weight[y]
    if sample_weight is not None:
        sample_w = sample_w * sample_weight[keep].to(sample_w)
    n = float(len(y))
    optimizer = torch.optim.LBFGS(
        head.parameters(),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance,
        tolerance_change=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        losses = nn.functional.cross_entropy(head(x), y, reduction="none")
        loss = (sample_w * losses).sum() / (l2 * n) + head.weight.pow(2).sum() / (2 * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    state = optimizer.state[optimizer._params[0]]
    return int(state.get("n_iter", 0))
