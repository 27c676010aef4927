"""The sampler contract as a check anyone can run on their own sampler.

The test suite runs :func:`check_sampler` over every registered sampler; a user who registers a
``"package.module:function"`` sampler runs the same invariants on theirs, in the spirit of river's
``check_estimator``:

* one float64 score in [0, 1] per row, for any batch size including an empty one;
* array-likes (nested lists) accepted; NaN, inf, negative entries, rows not summing to 1 and
  arrays of the wrong rank rejected with ``ValueError``;
* deterministic samplers: the same input gives the same scores, a row scores the same alone and
  in a batch, and permuting rows permutes scores;
* uncertainty samplers: 1 at the uniform distribution, 0 at a one-hot row, and a sharper row
  never scores above a flatter one.

Example:
    >>> import numpy as np
    >>> def least_sure(probs):
    ...     p = np.asarray(probs, dtype=np.float64)
    ...     if p.ndim != 2 or not np.isfinite(p).all() or (p < 0).any():
    ...         raise ValueError("probs must be a finite, non-negative 2-D array")
    ...     if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
    ...         raise ValueError("rows must sum to 1")
    ...     c = p.shape[1]
    ...     return np.clip((1.0 - p.max(axis=1, initial=0.0)) * c / (c - 1), 0.0, 1.0)
    >>> check_sampler(least_sure, uncertainty=True)
    >>> check_sampler(lambda probs: np.ones(3))  # ignores its input
    Traceback (most recent call last):
    ...
    activestream.samplers.checks.SamplerCheckError: sampler <lambda>: scores for (0, 2) \
probabilities have shape (3,), expected (0,)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from activestream.samplers.registry import ScoreFn


class SamplerCheckError(AssertionError):
    """A sampler broke the contract; the message names the sampler and the invariant."""


def _dirichlet_rows(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    rows = rng.dirichlet(np.full(c, 0.5), size=n)
    if n >= 2:
        rows[0] = np.full(c, 1.0 / c)  # uniform
        rows[1] = np.eye(c)[rng.integers(c)]  # one-hot
    return rows


def _probs_cases(rng: np.random.Generator) -> list[np.ndarray]:
    return [_dirichlet_rows(rng, n, c) for n, c in [(0, 2), (1, 2), (5, 3), (64, 10), (8, 100)]]


def _samples_cases(rng: np.random.Generator) -> list[np.ndarray]:
    return [
        np.stack([_dirichlet_rows(rng, n, c) for _ in range(t)])
        for t, n, c in [(1, 0, 2), (1, 3, 2), (4, 5, 3), (8, 32, 10)]
    ]


def _invalid_probs() -> dict[str, object]:
    return {
        "NaN": [[0.5, np.nan]],
        "inf": [[np.inf, 0.0]],
        "a negative entry": [[1.2, -0.2]],
        "a row summing to 0.9": [[0.5, 0.4]],
        "a 1-D array": [0.5, 0.5],
        "a 3-D array": [[[0.5, 0.5]]],
    }


def _invalid_samples() -> dict[str, object]:
    return {
        "NaN": [[[0.5, np.nan]]],
        "a negative entry": [[[1.2, -0.2]]],
        "a row summing to 0.9": [[[0.5, 0.4]]],
        "a 2-D array": [[0.5, 0.5]],
    }


def check_sampler(
    sampler: ScoreFn | str,
    *,
    inputs: tuple[str, ...] = ("probs",),
    uncertainty: bool = False,
    deterministic: bool = True,
    seed: int = 0,
) -> None:
    """Run the sampler contract on ``sampler``; return quietly or raise :class:`SamplerCheckError`.

    Args:
        sampler: A score function, or a registered name (its registry flags are then used and
            the keyword flags ignored).
        inputs: ``("probs",)`` for (N, C) probabilities, ``("samples",)`` for (T, N, C)
            MC-dropout passes.
        uncertainty: Also check 1 at uniform, 0 at one-hot and monotonicity in sharpness.
        deterministic: Also check repeatability, batch independence and row equivariance.
        seed: Seeds the generated inputs (and the sampler, when given by name).

    Raises:
        SamplerCheckError: The first invariant the sampler breaks, named in the message.
    """
    if isinstance(sampler, str):
        from activestream.samplers.registry import get, spec

        entry = spec(sampler)
        inputs, uncertainty, deterministic = entry.inputs, entry.uncertainty, entry.deterministic
        name, fn = sampler, get(sampler, rng=np.random.default_rng(seed))
    else:
        name, fn = getattr(sampler, "__name__", type(sampler).__name__), sampler
    if inputs not in (("probs",), ("samples",)):
        raise ValueError(f"inputs must be ('probs',) or ('samples',), got {inputs}")
    samples = inputs == ("samples",)
    rng = np.random.default_rng(seed)

    def fail(message: str) -> None:
        raise SamplerCheckError(f"sampler {name}: {message}")

    def run(x: object, what: str) -> np.ndarray:
        try:
            out = fn(x)
        except Exception as err:  # noqa: BLE001 - any crash on valid input breaks the contract
            fail(f"raised {type(err).__name__} on {what}: {err}")
        return np.asarray(out)

    cases = _samples_cases(rng) if samples else _probs_cases(rng)
    for x in cases:
        what = f"{x.shape} {'samples' if samples else 'probabilities'}"
        n = x.shape[1] if samples else x.shape[0]
        out = run(x, what)
        if out.shape != (n,):
            fail(f"scores for {what} have shape {out.shape}, expected {(n,)}")
        if out.dtype != np.float64:
            fail(f"scores for {what} are {out.dtype}, expected float64")
        if not np.all((out >= 0.0) & (out <= 1.0)):
            fail(f"scores for {what} leave [0, 1]: min {out.min()}, max {out.max()}")
        if deterministic:
            again = run(x.copy(), what)
            if not np.array_equal(out, again):
                fail(f"the same {what} scored twice gave different scores")
            if n >= 2:
                order = rng.permutation(n)
                permuted = run(x[:, order] if samples else x[order], what)
                if not np.allclose(permuted, out[order], atol=1e-12):
                    fail("permuting the rows did not permute the scores the same way")
                alone = run(x[:, -1:] if samples else x[-1:], "a single row")
                if not np.allclose(alone, out[-1:], atol=1e-12):
                    fail("a row scored differently alone than inside a batch")

    nested = cases[2].tolist()
    if run(nested, "nested lists").shape != (len(nested[0]) if samples else len(nested),):
        fail("nested lists were not scored like the array they describe")

    for problem, bad in (_invalid_samples() if samples else _invalid_probs()).items():
        try:
            fn(bad)
        except ValueError:
            continue
        except Exception as err:  # noqa: BLE001
            fail(f"input with {problem} raised {type(err).__name__}, expected ValueError")
        fail(f"input with {problem} was accepted; it must raise ValueError")

    if uncertainty:
        _check_uncertainty(lambda p: run(p[None] if samples else p, "edge rows"), fail)


def _check_uncertainty(
    score: Callable[[np.ndarray], np.ndarray], fail: Callable[[str], None]
) -> None:
    for c in (2, 3, 10):
        uniform, one_hot = np.full((1, c), 1.0 / c), np.eye(c)[:1]
        if not np.isclose(score(uniform)[0], 1.0, atol=1e-9):
            fail(f"the uniform distribution over {c} classes scored {score(uniform)[0]}, not 1")
        if not np.isclose(score(one_hot)[0], 0.0, atol=1e-9):
            fail(f"a one-hot row over {c} classes scored {score(one_hot)[0]}, not 0")
    sharp, flat = score(np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2]]))
    if sharp > flat:
        fail(f"a sharper row scored {sharp}, above a flatter row's {flat}")
