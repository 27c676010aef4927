"""Every generated page in docs/ matches the committed JSON it is rendered from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activestream.benchmarks import (
    encoded_throughput,
    head_rescore,
    knobs,
    real_loop,
    study,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [
    (head_rescore, "head-rescore.md", "head-rescore/head_rescore.json"),
    (encoded_throughput, "encoded-throughput.md", "encoded-throughput/encoded_throughput.json"),
    (knobs, "knobs.md", "knobs/knobs.json"),
    (real_loop, "real-loop.md", "real-loop/real_loop.json"),
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


def test_the_study_page_is_rendered_from_its_json():
    text = (DOCS / "study.md").read_text()
    section = text.split(study.BEGIN, 1)[1].split(study.END, 1)[0]
    data, machine = study.load(DOCS / "study")
    assert set(data) == set(study.PARTS)
    assert section == "\n" + study.render_markdown(data, machine)


def test_the_readme_learning_figures_are_rendered_from_the_json():
    from activestream.benchmarks import report

    text = (DOCS.parent / "README.md").read_text()
    section = text.split(report.LEARNING_BEGIN, 1)[1].split(report.LEARNING_END, 1)[0]
    assert section == "\n" + report.render_learning(report.load_learning())
