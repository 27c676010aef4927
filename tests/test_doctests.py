"""Every example in a docstring of the installed package runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import activestream

# The benchmarks' examples are command lines, not doctests; they are exercised by test_bench.
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(activestream.__path__, "activestream.")
    if not m.name.startswith("activestream.benchmarks")
)
WITH_EXAMPLES = [
    name
    for name in ["activestream", *MODULES]
    if any(t.examples for t in doctest.DocTestFinder().find(importlib.import_module(name)))
]


def test_the_walk_finds_every_subpackage() -> None:
    packages = {name.split(".")[1] for name in MODULES}
    assert {"actors", "deploy", "models", "pipelines", "samplers", "sources"} <= packages


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
