"""Published figures know which code they measure and say when it changed since."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from activestream.benchmarks import freshness
from activestream.benchmarks.suite import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module", [*BENCHMARKS.values(), *(m for m, _ in freshness.PAGES.values())]
)
def test_every_benchmark_declares_paths_that_exist_including_its_own_module(module):
    declared = freshness.measures(module)
    assert all((ROOT / p).exists() for p in declared), declared
    own = module.partition(":")[0].removeprefix("activestream.").replace(".", "/") + ".py"
    assert own in declared


def _repo(tmp_path: Path) -> tuple[Path, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "measured.py").write_text("x = 1\n")
    (tmp_path / "other.py").write_text("y = 1\n")
    git("add", ".")
    git("commit", "-qm", "measured here")
    return tmp_path, git("rev-parse", "--short=12", "HEAD")


def _commit_file(root: Path, rel: str) -> None:
    """A new file at ``rel``, committed: a change to that path and nothing else."""
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("z = 1\n")
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", f"{rel} only"], cwd=root, check=True)


def _figures(commit: str | None) -> freshness.Figures:
    return freshness.Figures("b", "b.json", commit, ("measured.py",))


def test_figures_stay_fresh_while_only_unmeasured_code_changes(tmp_path):
    root, commit = _repo(tmp_path)
    (root / "other.py").write_text("y = 2\n")
    subprocess.run(["git", "commit", "-qam", "elsewhere"], cwd=root, check=True)
    assert freshness.stale(root, [_figures(commit)]) == []
    assert freshness.commits_ago(commit, root) == 1


def test_figures_go_stale_when_their_measured_code_changes(tmp_path):
    root, commit = _repo(tmp_path)
    (root / "measured.py").write_text("x = 2\n")
    subprocess.run(["git", "commit", "-qam", "measured code"], cwd=root, check=True)
    ((figures, reason),) = freshness.stale(root, [_figures(commit)])
    assert reason == f"measured.py changed since {commit}"


def test_only_commits_that_change_measured_code_count_as_changes_since(tmp_path):
    root, commit = _repo(tmp_path)
    assert freshness.changes_since(_figures(commit), root) == 0
    for path, text, message in [
        ("other.py", "y = 2\n", "elsewhere"),
        ("measured.py", "x = 2\n", "measured code"),
        ("measured.py", "x = 3\n", "measured code again"),
    ]:
        (root / path).write_text(text)
        subprocess.run(["git", "commit", "-qam", message], cwd=root, check=True)
    assert freshness.changes_since(_figures(commit), root) == 2
    assert freshness.commits_ago(commit, root) == 3
    assert freshness.changes_since(_figures(f"{commit}+dirty"), root) is None


@pytest.mark.parametrize(
    ("commit", "says"),
    [(None, "records no commit"), ("0123456789ab", "not in this clone")],
)
def test_figures_without_a_known_commit_are_stale(tmp_path, commit, says):
    root, _ = _repo(tmp_path)
    ((_, reason),) = freshness.stale(root, [_figures(commit)])
    assert says in reason


def test_the_committed_json_names_every_benchmark_it_shows():
    listed = {f.benchmark for f in freshness.published(ROOT)}
    shown = {r["benchmark"] for r in json.loads((ROOT / freshness.BENCH).read_text())["results"]}
    assert shown <= listed | {None}


def test_a_study_parts_rerun_command_cuts_the_pool_it_was_measured_on():
    parts = [f for f in freshness.published(ROOT) if f.benchmark == "study"]
    for figures in parts:
        data = json.loads((ROOT / figures.source).read_text())
        cut = data.get("pool_rows") and data["config"]["data"]["dataset"] != "digits"
        command = freshness.rerun(figures)
        assert (f"--rows {data['pool_rows']}" in command) if cut else ("--rows" not in command)
    assert any("--rows" in freshness.rerun(f) for f in parts)


def test_the_reasons_read_as_the_module_docstring_says():
    import doctest

    assert doctest.testmod(freshness).failed == 0


@pytest.mark.parametrize("found", ["abc123+dirty", None])
def test_figures_for_the_docs_are_refused_from_code_in_no_commit(monkeypatch, found):
    from activestream.benchmarks import suite

    monkeypatch.setattr(suite, "commit", lambda: found)
    docs = Path(suite.__file__).resolve().parents[1] / "docs" / "study"
    with pytest.raises(SystemExit, match="clean commit only"):
        suite.require_clean(docs)


def test_figures_written_outside_the_docs_are_allowed_from_a_dirty_tree(monkeypatch, tmp_path):
    from activestream.benchmarks import suite

    monkeypatch.setattr(suite, "commit", lambda: "abc123+dirty")
    suite.require_clean(tmp_path / "results")  # no exit


def test_rendered_pages_do_not_make_the_code_dirty_but_code_does(monkeypatch, tmp_path):
    from activestream.benchmarks import suite

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    for path in ("docs/part.json", "README.md", "code.py"):
        (tmp_path / path).write_text("1")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(suite, "_git", git)
    (tmp_path / "docs" / "part.json").write_text("2")  # a study's first part, just written
    (tmp_path / "README.md").write_text("2")
    assert not suite.commit().endswith("+dirty")
    (tmp_path / "new.py").write_text("1")  # a new module, in no commit yet
    assert suite.commit().endswith("+dirty")
    (tmp_path / "new.py").unlink()
    (tmp_path / "code.py").write_text("2")
    assert suite.commit().endswith("+dirty")


def _module(path: str) -> str:
    """``samplers/detection/`` -> ``activestream.samplers.detection``."""
    return "activestream." + path.removesuffix("/").removesuffix(".py").replace("/", ".")


def _names_reached(file: Path) -> set[str]:
    """Every module ``file`` imports, at any depth, and every module path it spells in a string."""
    package = _module(file.relative_to(ROOT).as_posix()).rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, ``level - 1`` up
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(re.findall(r"activestream(?:\.\w+)+", node.value))
    return names


def test_every_unreached_path_exists():
    assert all((ROOT / p).exists() for p in freshness.UNREACHED), freshness.UNREACHED


def _measured_by(rel: str) -> tuple[str, ...]:
    """The paths a benchmark module's own MEASURES names (none for any other file)."""
    if not rel.startswith("benchmarks/"):
        return ()
    return getattr(importlib.import_module(_module(rel)), "MEASURES", ())


def test_no_code_outside_the_unreached_paths_imports_or_names_them():
    """A benchmark may run them when its own MEASURES names them: its figures see the changes."""
    offenders = []
    for file in sorted(ROOT.rglob("*.py")):
        rel = file.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/", ".", *freshness.UNREACHED, *freshness.GATES)):
            continue
        if ".egg-info/" in rel:
            continue
        unreached = [
            _module(p)
            for p in freshness.UNREACHED
            if not any(d.startswith(p) for d in _measured_by(rel))
        ]
        for name in _names_reached(file):
            if any(name == u or name.startswith(u + ".") for u in unreached):
                offenders.append(f"{rel}: {name}")
    assert offenders == [], "reached: remove these paths from freshness.UNREACHED"


def test_a_benchmark_may_run_unreached_code_only_if_it_measures_it():
    measured = _measured_by("benchmarks/detection.py")
    assert "pipelines/detection_sim.py" in measured
    assert "activestream.pipelines.detection_sim" in _names_reached(
        ROOT / "benchmarks" / "detection.py"
    )
    assert _measured_by("cli.py") == ()


def test_changes_to_unreached_paths_leave_figures_fresh_unless_named(tmp_path):
    root, commit = _repo(tmp_path)
    _commit_file(root, "samplers/detection/boxes.py")
    broad = freshness.Figures("b", "b.json", commit, ("measured.py", "samplers/"))
    assert freshness.stale(root, [broad]) == []
    assert freshness.changes_since(broad, root) == 0
    named = freshness.Figures("d", "d.json", commit, ("samplers/detection/",))
    ((_, reason),) = freshness.stale(root, [named])
    assert reason == f"samplers/detection/boxes.py changed since {commit}"


def test_figures_measuring_a_gate_go_stale_when_unreached_code_changes(tmp_path):
    root, commit = _repo(tmp_path)
    _commit_file(root, "pipelines/detection_sim.py")
    aside = freshness.Figures("p", "p.json", commit, ("pipelines/simulate.py", "samplers/"))
    assert freshness.stale(root, [aside]) == []
    for gate in (("cli.py",), ("pipelines/",), ("deploy/",)):
        figures = freshness.Figures("c", "c.json", commit, gate)
        ((_, reason),) = freshness.stale(root, [figures])
        assert reason == f"pipelines/detection_sim.py changed since {commit}", gate


def test_the_command_line_and_the_service_are_gates_measured_by_the_service_figures():
    assert freshness.GATES == (
        "cli.py",
        "pipelines/task.py",
        "deploy/app.py",
        "pipelines/realloop.py",
    )
    assert "cli.py" in freshness.measures("activestream.benchmarks.startup")
    for name in ("label_latency", "keep_pace", "kill_each", "real_loop"):
        assert "pipelines/" in freshness.measures(f"activestream.benchmarks.{name}"), name


def test_no_benchmark_loads_the_page_or_its_scripts():
    """What keeps deploy/static/ out of every figure: no benchmark names it or asks for ``/``."""
    root_url = re.compile(r"""\{(?:base|url)\}/?["']""")  # f"{base}/": the page itself
    for file in sorted((ROOT / "benchmarks").glob("*.py")):
        if file.name == "freshness.py":
            continue
        text = file.read_text()
        for sign in ("deploy/static", "index.html", "boxes.js", "STATIC"):
            assert sign not in text, f"{file.name} names {sign}"
        assert not root_url.search(text), f"{file.name} asks for the page"


def test_changes_to_the_page_leave_every_figure_fresh(tmp_path):
    root, commit = _repo(tmp_path)
    _commit_file(root, "deploy/static/boxes.js")
    for measured in (("deploy/",), ("cli.py",)):
        figures = freshness.Figures("s", "s.json", commit, measured)
        assert freshness.stale(root, [figures]) == [], measured
