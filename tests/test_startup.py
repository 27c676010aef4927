"""The service hands out queries from the moment it answers, before any scoring round."""

from __future__ import annotations

import pytest

from activestream.benchmarks import startup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def timings():
    result = startup.measure(timeout=400)
    print(f"\nstartup: {result}")
    return result


def test_the_first_query_comes_within_seconds_of_the_first_health_answer(timings):
    assert timings["healthz_s"] is not None
    assert timings["query_after_healthz_s"] < 5


def test_a_scored_round_follows(timings):
    assert timings["first_scored_s"] is not None
