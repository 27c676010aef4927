"""Every generated page in docs/ matches the committed JSON it is rendered from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activestream.benchmarks import encoded_throughput, fashion_mnist_study, head_rescore

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [
    (fashion_mnist_study, "fashion-mnist.md", "fashion-mnist/study.json"),
    (head_rescore, "head-rescore.md", "head-rescore/head_rescore.json"),
    (encoded_throughput, "encoded-throughput.md", "encoded-throughput/encoded_throughput.json"),
]


@pytest.mark.parametrize(("module", "page", "source"), PAGES, ids=[p[1] for p in PAGES])
def test_the_committed_page_is_rendered_from_its_json(module, page, source):
    data = json.loads((DOCS / source).read_text())
    text = (DOCS / page).read_text()
    section = text.split(module.BEGIN, 1)[1].split(module.END, 1)[0]
    assert section == "\n" + module.render_markdown(data)


def test_a_changed_number_in_the_json_changes_the_page():
    data = json.loads((DOCS / "head-rescore/head_rescore.json").read_text())
    before = head_rescore.render_markdown(data)
    data["results"][0]["ratio"] += 1.0
    assert head_rescore.render_markdown(data) != before


def test_the_readme_figures_are_rendered_from_the_json():
    from activestream.benchmarks import report

    text = (DOCS.parent / "README.md").read_text()
    section = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0]
    assert section == "\n" + report.render(report.load())
