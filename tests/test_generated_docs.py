"""Every generated table in README.md and docs/ matches the committed JSON it is rendered from."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from activestream.benchmarks import head_rescore, report, study

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = report.sections()


@pytest.mark.parametrize("section", SECTIONS, ids=[f"{s.file}:{s.key}" for s in SECTIONS])
def test_the_committed_section_is_rendered_from_its_json(section):
    assert section.committed(ROOT) == section.render(ROOT)


def test_every_marked_section_of_readme_and_docs_is_one_the_report_renders():
    known = {(s.file, s.key) for s in SECTIONS}
    found = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for chunk in page.read_text().split("<!-- ")[1:]:
            marker = chunk.split(" -->", 1)[0]
            if marker.endswith(":begin"):
                found.add((str(page.relative_to(ROOT)), marker.removesuffix(":begin")))
    assert found == known


def test_a_changed_number_in_the_json_changes_the_page():
    data = json.loads((ROOT / "docs/head-rescore/head_rescore.json").read_text())
    before = head_rescore.render_markdown(data)
    data["results"][0]["ratio"] += 1.0
    assert head_rescore.render_markdown(data) != before


def test_the_study_has_every_part():
    data, _ = study.load(ROOT / "docs" / "study")
    assert set(data) == set(study.PARTS)


def test_the_report_check_finds_every_section_current_and_every_figure_fresh(tmp_path):
    from clirun import run_cli

    proc = run_cli("bench", "report", "--check", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "every generated section is current and fresh"


def test_the_report_check_names_figures_whose_measured_code_changed_after_them(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    with (clone / "benchmarks" / "allocator.py").open("a") as f:
        f.write("\n# a change to measured code\n")
    git("commit", "-qam", "measured code changed")

    found = report.check(clone)

    assert any(
        line.startswith("stale: allocator (docs/allocator/allocator.json): ")
        and "benchmarks/allocator.py changed since" in line
        and line.endswith("; rerun: python -m activestream.benchmarks.allocator")
        for line in found
    ), found
    assert "out of date: README.md:provenance" in found  # its table counts that commit
