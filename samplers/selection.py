"""Turn a round's candidates into queries: exploit with probability p, explore with 1 - p.

The pool-wide random sample comes from the scoring pass (a top-k over random keys), so an
exploration slot is uniform over the whole pool, not over the uncertain candidates.

Example:
    >>> import numpy as np
    >>> picks = select_queries(["a", "b", "c"], ["x", "a", "y"], k=3, p=1.0,
    ...                        rng=np.random.default_rng(0))
    >>> [(q.id, q.explored) for q in picks]
    [('a', False), ('b', False), ('c', False)]
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pick:
    """One selected item and whether an exploration slot chose it."""

    id: str
    explored: bool


def select_queries(
    ranked: Sequence[str],
    random_sample: Sequence[str],
    *,
    k: int,
    p: float,
    rng: np.random.Generator,
    exclude: Collection[str] = (),
) -> list[Pick]:
    """Fill ``k`` slots, never the same id twice and never an excluded id.

    Args:
        ranked: Candidate ids, most uncertain first.
        random_sample: Ids drawn uniformly from the pool, in random order.
        k: Slots to fill; fewer come back when both lists run out.
        p: Probability that a slot exploits (takes the next ranked id).
        rng: The only source of randomness.
        exclude: Ids already labeled or leased.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"explore p must be in [0, 1], got {p}")
    taken: set[str] = set(exclude)
    sources = (iter(ranked), iter(random_sample))
    picks: list[Pick] = []
    exhausted = [False, False]
    while len(picks) < k and not all(exhausted):
        want = 0 if rng.random() < p else 1
        order = (want, 1 - want)
        for source in order:
            item = _next_free(sources[source], taken)
            if item is None:
                exhausted[source] = True
                continue
            taken.add(item)
            picks.append(Pick(item, explored=source == 1))
            break
    return picks


def _next_free(items: object, taken: set[str]) -> str | None:
    for item in items:  # type: ignore[attr-defined]
        if item not in taken:
            return str(item)
    return None
