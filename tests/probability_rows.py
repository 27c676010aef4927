"""Hypothesis helpers shared by the sampler tests: valid probability rows, edge cases included."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st


def draw_rows(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """Rows (last axis) of positive weights normalized per row, with exact zeros and one-hots."""
    c = shape[-1]
    weight = st.one_of(st.just(0.0), st.floats(1e-9, 1e6, allow_nan=False, allow_infinity=False))
    raw = draw(hnp.arrays(np.float64, shape, elements=weight))
    flat = raw.reshape(-1, c)  # a view: (rows, C)
    for row in range(flat.shape[0]):
        # All-zero rows cannot be normalized; make them (and some others) one-hot.
        if flat[row].sum() == 0 or draw(st.integers(0, 4)) == 0:
            flat[row] = 0.0
            flat[row, draw(st.integers(0, c - 1))] = 1.0
    return raw / raw.sum(axis=-1, keepdims=True)


@st.composite
def prob_rows(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """Strategy form of :func:`draw_rows`."""
    return draw_rows(draw, shape)
