"""Cold start: when to stop asking at random and start trusting the model's uncertainty.

An untrained model's uncertainty is noise, and uncertainty sampling on it spends the first
labels on whatever a random network happens to be unsure about: often one corner of the input
space, so the next model is worse than one trained on a random sample (Attenberg & Provost
2010, "Why label when you can search?"; Hacohen, Dekel & Weinshall 2022, "Active learning on a
budget", who show that at small budgets typical or random picks beat uncertainty). Early
queries are therefore drawn uniformly at random, and the model earns the hand-over with its
own evidence: the prequential accuracy (predict each new label before training on it) over the
last ``window`` labels. Random picks make that an unbiased estimate of its pool accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def warmed_up(
    hits: Sequence[bool],
    *,
    labels: int | None = None,
    min_labels: int,
    accuracy: float,
    max_labels: int,
    window: int | None = None,
) -> bool:
    """Whether the model may now choose the queries it exploits.

    True when ``n >= max_labels``, or when ``n >= min_labels`` and
    ``mean(hits[-window:]) >= accuracy``, with n the labels trained on so far.

    Args:
        hits: Prequential outcomes of the labels so far, oldest first: True where the model
            predicted the label right before it trained on it. The newest ``window`` suffice.
        labels: Labels trained on so far; None means ``len(hits)``.
        min_labels: Never hand over before this many labels (the fixed warm-up).
        accuracy: Prequential accuracy over the window that proves the model ready; above 1
            disables the evidence rule, leaving a fixed warm-up of ``max_labels``.
        max_labels: Hand over after this many labels whatever the evidence.
        window: Labels the accuracy is measured over; None uses ``min_labels``.

    Returns:
        True once the model's own scores should pick the exploited queries.

    Six of the last eight right (0.75) clears 0.7; before eight labels nothing does:

    >>> warmed_up([False] * 12 + [True] * 6 + [False] * 2, min_labels=8, accuracy=0.7,
    ...           max_labels=100)
    True
    >>> warmed_up([True] * 7, min_labels=8, accuracy=0.7, max_labels=100)
    False
    >>> warmed_up([False] * 100, min_labels=8, accuracy=0.7, max_labels=100)
    True
    """
    n = len(hits) if labels is None else labels
    if n >= max_labels:
        return True
    if n < min_labels:
        return False
    recent = np.asarray(hits[-(window or min_labels) :], dtype=bool)
    return bool(recent.mean() >= accuracy)


#: Registered cold-start strategies: how the first labels are picked while the model is cold.
COLD_STARTS = ("random", "typiclust", "maxherding")


def cold_picks(
    name: str,
    embeddings: np.ndarray,
    k: int,
    *,
    rng: np.random.Generator,
    already: np.ndarray | None = None,
) -> np.ndarray:
    """(N, D) embeddings of unlabeled items -> (min(k, N),) indices to ask while cold.

    ``random`` draws uniformly; ``typiclust`` (:func:`~activestream.samplers.typiclust`) and
    ``maxherding`` (:func:`~activestream.samplers.maxherding`) read the embeddings, with the
    labeled items' embeddings ``already`` counted as covered.

    >>> x = np.array([[0.0], [0.1], [0.2], [0.1], [5.0], [5.1], [5.2], [40.0]])
    >>> cold_picks("maxherding", x, 1, rng=np.random.default_rng(0), already=x[:1]).tolist()
    [5]
    >>> cold_picks("greedy", x, 1, rng=np.random.default_rng(0))
    Traceback (most recent call last):
    ...
    ValueError: unknown cold start 'greedy'; choose from random, typiclust, maxherding
    """
    from activestream.samplers.maxherding import maxherding
    from activestream.samplers.typiclust import typiclust

    if name == "random":
        return rng.permutation(len(embeddings))[:k].astype(np.int64)
    if name == "typiclust":
        return typiclust(embeddings, k, rng=rng, already=already)
    if name == "maxherding":
        return maxherding(embeddings, k, rng=rng, already=already)
    raise ValueError(f"unknown cold start {name!r}; choose from {', '.join(COLD_STARTS)}")


def cold_order(
    name: str,
    embeddings: np.ndarray,
    first: int,
    *,
    rng: np.random.Generator,
    already: np.ndarray | None = None,
) -> np.ndarray:
    """A random sample's rows, reordered so ``first`` cold-start picks come before the rest.

    The service's scoring round keeps a uniform random sample of the pool with its embeddings;
    a warming queue hands that list out in order, so putting the strategy's picks first makes
    them the first questions, and the rest stay a uniform sample behind them.

    Args:
        name: A strategy of :data:`COLD_STARTS`.
        embeddings: (N, D) embeddings of the sample.
        first: How many picks go first.
        rng: Drives the strategy's sampling.
        already: Optional (M, D) embeddings of items asked before, counted as covered.

    Returns:
        (N,) int64: a permutation of ``range(N)``.

    Two groups of three and an outlier: each group's centre first, then the rest in order.

    >>> x = np.array([[0.0], [40.0], [0.1], [5.1], [0.2], [5.0], [5.2]])
    >>> cold_order("maxherding", x, 2, rng=np.random.default_rng(0)).tolist()
    [3, 2, 0, 1, 4, 5, 6]
    """
    picks = (
        cold_picks(name, embeddings, first, rng=rng, already=already)
        if first
        else np.zeros(0, np.int64)
    )
    rest = np.setdiff1d(np.arange(len(embeddings)), picks)
    return np.concatenate([picks, rest]).astype(np.int64)
