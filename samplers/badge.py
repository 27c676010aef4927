"""BADGE: k-means++ seeding on the gradient embeddings of the last layer.

Ash et al. 2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds"
(ICLR). For each candidate, the gradient of the cross-entropy loss with respect to the last
layer's weights, taking the model's own prediction as the label, is ``(p - e_yhat) (x) h``: the
outer product of the logits' gradient and the penultimate features. Its norm is large where the
model is unsure (uncertainty) and its direction says which features and classes the label would
move (diversity). k-means++ seeding over these vectors then picks a batch that is both: each
next pick is drawn with probability proportional to its squared distance to the picks so far.

Shape budget: C classes times D features can be large (10 x 1280 = 12,800 floats for
EfficientNet-Lite0). :func:`gradient_embedding` keeps the exact product while C * D is at most
``max_dim`` and otherwise first projects the features with a fixed Gaussian sketch (seeded, so
every scorer process projects the same way), which preserves inner products, hence the
distances k-means++ draws by, in expectation (Johnson-Lindenstrauss).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import (
    check_batch_inputs,
    check_embeddings,
    check_probs,
    clip_unit,
)
from activestream.samplers.registry import register

#: Largest gradient embedding emitted exactly; above it the features are sketched.
MAX_DIM = 2048
#: Seed of the feature sketch: a constant, so every process emits comparable embeddings.
SKETCH_SEED = 20200426


def _sketch(features: np.ndarray, dim: int) -> np.ndarray:
    """(N, D) -> (N, dim) Gaussian projection scaled by 1/sqrt(dim) (same matrix everywhere)."""
    rng = np.random.default_rng([SKETCH_SEED, features.shape[1], dim])
    proj = rng.standard_normal((features.shape[1], dim)) / np.sqrt(dim)  # (D, dim)
    return features @ proj  # (N, dim)


def gradient_embedding(
    probs: ArrayLike, features: ArrayLike, *, max_dim: int = MAX_DIM
) -> np.ndarray:
    """Gradient of the last layer's loss at the predicted label -> (N, C * D') float32.

    ``g = (p - e_yhat) (x) h`` with ``yhat = argmax p``, flattened class-major. When C * D
    exceeds ``max_dim`` the features ``h`` are first sketched to ``D' = max(1, max_dim // C)``
    dimensions (see the module docstring); otherwise ``D' = D`` and the product is exact.

    Args:
        probs: (N, C) class probabilities.
        features: (N, D) penultimate features of the same items (the last layer's input).
        max_dim: Largest C * D emitted without sketching.

    Returns:
        (N, C * D') float32 gradient embeddings.

    By hand, p = [0.75, 0.25] and h = [2, 1]: yhat = 0, p - e_0 = [-0.25, 0.25], so
    g = [-0.5, -0.25, 0.5, 0.25]. A one-hot row has a zero gradient.

    >>> gradient_embedding([[0.75, 0.25], [0.0, 1.0]], [[2.0, 1.0], [1.0, 1.0]]).tolist()
    [[-0.5, -0.25, 0.5, 0.25], [0.0, 0.0, 0.0, 0.0]]
    """
    p = check_probs(probs)  # (N, C)
    h = check_embeddings(features, name="features")  # (N, D)
    if h.shape[0] != p.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but features has {h.shape[0]}")
    n, c = p.shape
    if c * h.shape[1] > max_dim:
        h = _sketch(h, max(1, max_dim // c))  # (N, D')
    a = p.copy()  # (N, C), the logits' gradient
    a[np.arange(n), p.argmax(axis=1)] -= 1.0
    g = a[:, :, None] * h[:, None, :]  # (N, C, D')
    return g.reshape(n, c * h.shape[1]).astype(np.float32)  # (N, C * D')


def gradient_norm(probs: ArrayLike) -> np.ndarray:
    """Score = |p - e_yhat|^2 * C / (C - 1): the squared norm of the logits' loss gradient.

    It scales BADGE's gradient embedding (whose norm is this times |h|), so ranking candidates
    by it keeps the ones k-means++ seeding would favour. ``|p - e_yhat|^2 = 1 - 2 p_max +
    sum p^2 <= 1 - p_max <= (C - 1) / C``, with equality at the uniform row: scores lie in [0, 1].

    Args:
        probs: (N, C) class probabilities.

    Returns:
        (N,) float64 scores; 1 at the uniform row, 0 at a one-hot row.

    By hand, p = [0.75, 0.25]: (0.25^2 + 0.25^2) * 2 / 1 = 0.25.

    >>> gradient_norm([[0.75, 0.25], [0.5, 0.5], [1.0, 0.0]]).tolist()
    [0.25, 1.0, 0.0]
    """
    p = check_probs(probs)  # (N, C)
    n, c = p.shape
    a = p.copy()  # (N, C)
    a[np.arange(n), p.argmax(axis=1) if n else np.zeros(0, np.int64)] -= 1.0
    return clip_unit(np.einsum("nc,nc->n", a, a) * c / (c - 1))  # (N,)


def badge_select(
    scores: ArrayLike, embeddings: ArrayLike, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ seeding of min(k, N) candidates: the ``"badge"`` batch selector.

    The first pick is the candidate with the largest embedding norm (ties to the lower index),
    as in the paper's code; each next one is drawn with probability proportional to D(x)^2, its
    squared distance to the nearest pick so far. Once every remaining candidate duplicates a
    pick (all D(x)^2 = 0) the rest are drawn uniformly. ``scores`` only need to match the
    embeddings in length: the norms already carry the uncertainty.

    Args:
        scores: (N,) scores of the candidates (checked, unused).
        embeddings: (N, D) gradient embeddings (:func:`gradient_embedding`).
        k: Batch size, >= 0.
        rng: Draws the picks (never numpy's global state).

    Returns:
        (min(k, N),) distinct int64 indices, in pick order.

    By hand: the longest vector, [3, 0], goes first (its duplicate and [-3, 0] are as long but
    come later); [-3, 0] (squared distance 36) is then 18 times as likely as [2, 1] (squared
    distance 2), and the duplicate of [3, 0] is never drawn before both.

    >>> x = [[3.0, 0.0], [2.0, 1.0], [-3.0, 0.0], [3.0, 0.0]]
    >>> badge_select([0.0] * 4, x, 3, np.random.default_rng(0)).tolist()
    [0, 2, 1]
    """
    _, x, m = check_batch_inputs(scores, embeddings, k)  # (N,), (N, D), int
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n = x.shape[0]
    m = min(m, n)
    picks = np.empty(m, dtype=np.int64)  # (m,)
    if m == 0:
        return picks
    x_sq = np.einsum("nd,nd->n", x, x)  # (N,)
    nearest = np.full(n, np.inf)  # (N,), squared distance to the nearest pick
    taken = np.zeros(n, dtype=bool)
    for slot in range(m):
        if slot == 0:
            idx = int(np.argmax(x_sq))
        else:
            weights = np.where(taken, 0.0, nearest)  # (N,)
            total = weights.sum()
            if total > 0:
                idx = int(rng.choice(n, p=weights / total))
            else:  # only duplicates of picks remain
                idx = int(rng.choice(np.flatnonzero(~taken)))
        picks[slot] = idx
        taken[idx] = True
        d = x_sq - 2.0 * (x @ x[idx]) + x_sq[idx]  # (N,)
        nearest = np.minimum(nearest, np.maximum(d, 0.0))
    return picks


register("badge", batch=badge_select, embedding="gradient")(gradient_norm)
