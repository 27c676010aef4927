"""BALD: how much the stochastic passes of an MC-dropout model disagree about an item.

Score = (H(mean_t p_t) - mean_t H(p_t)) / log C for T stochastic forward passes p_1 .. p_T of
the same item, H the Shannon entropy. This is the mutual information between the label and the
model parameters (Houlsby et al. 2011, "Bayesian Active Learning for Classification and
Preference Learning"), estimated with MC dropout as in Gal, Islam & Ghahramani 2017, "Deep
Bayesian Active Learning with Image Data".
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from activestream.samplers._validate import check_samples, clip_unit
from activestream.samplers.entropy import shannon_nats
from activestream.samplers.registry import register

#: The input of BALD: (T, N, C) class probabilities from T stochastic forward passes.
SAMPLES: tuple[str, ...] = ("samples",)


@register("bald", inputs=SAMPLES, uncertainty=False)
def bald(samples: ArrayLike) -> np.ndarray:
    """Score = (H(mean_t p_t) - mean_t H(p_t)) / log C, per item, from (T, N, C) samples.

    The entropy of the averaged prediction (total uncertainty) minus the average entropy of
    each pass (the noise the model expects even if its weights were known) leaves the part
    that comes from not knowing the weights: what a label would teach the model. Unlike entropy
    it is *not* high for an item that every pass finds ambiguous: T identical uniform passes
    score 0. It is high when the passes are each confident but disagree with one another.
    Mutual information lies in [0, H(mean)] and H(mean) <= log C, so dividing by log C keeps
    scores in [0, 1] (1 needs T >= C passes that are one-hot on different classes in equal
    shares); tiny negatives from rounding are clipped to 0.

    Args:
        samples: (T, N, C) class probabilities, T >= 1 stochastic forward passes (e.g. with
            dropout left on) over the same N items; each (t, n) row sums to 1.

    Returns:
        (N,) float64 scores in [0, 1]; 0 when all T passes agree on an item.

    By hand, with T = 2 passes over C = 2 classes (H in bits, as log 2 = log C):
    item 0, both passes [1, 0]: H(mean) = 0, mean H = 0 -> 0.
    item 1, passes [1, 0] and [0, 1]: H([.5, .5]) = 1, mean H = 0 -> 1.
    item 2, both passes [.5, .5]: H(mean) = 1, mean H = 1 -> 0.
    item 3, passes [.5, .5] and [1, 0]: H([.75, .25]) = 0.8113, mean H = 0.5 -> 0.3113.

    >>> passes = [[[1, 0], [1, 0], [.5, .5], [.5, .5]],
    ...           [[1, 0], [0, 1], [.5, .5], [1, 0]]]
    >>> bald(passes).round(4).tolist()
    [0.0, 1.0, 0.0, 0.3113]
    """
    p = check_samples(samples)  # (T, N, C)
    total = shannon_nats(p.mean(axis=0))  # (T, N, C) -> (N, C) -> (N,)
    expected = shannon_nats(p).mean(axis=0)  # (T, N, C) -> (T, N) -> (N,)
    return clip_unit((total - expected) / np.log(p.shape[2]))  # (N,)
