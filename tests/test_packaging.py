"""The distribution installs one import name, ``activestream``, and works from a fresh venv."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

import activestream

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("actors", "benchmarks", "deploy", "models", "pipelines", "samplers", "sources", "tasks")
# Names a module could import if it forgot the package prefix (they resolve only in a source tree).
BARE = {*FOLDERS, "config", "errors"}


def _source_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in listed if (ROOT / p).is_file()]


def _modules(skip: tuple[str, ...]) -> list[Path]:
    """The package's Python files, less those under the top-level folders ``skip`` names."""
    return [
        path
        for path in _source_files()
        if path.suffix == ".py" and path.parts[len(ROOT.parts)] not in skip
    ]


def _imports(path: Path) -> list[str]:
    """Every absolute module name ``path`` imports, wherever in the file the import stands."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the files a clean clone has (never from a stale build/ folder)."""
    src = tmp_path_factory.mktemp("src")
    for path in _source_files():
        dest = src / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + [str(src), "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("activestream-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A new venv with the wheel installed; dependencies are borrowed, not reinstalled.

    Installing torch and Ray again would take minutes and gigabytes, so a ``.pth`` line points
    at this environment's site-packages, added *after* the install so it cannot hide what the
    wheel put there.
    """
    root = tmp_path_factory.mktemp("venv")
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    before = set(p.name for p in site.iterdir())
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    added = set(p.name for p in site.iterdir()) - before
    (site / "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return {"python": python, "bin": root / "bin", "site": site, "added": added}


def test_the_wheel_holds_one_top_level_package_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {
        "activestream",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    for folder in (*FOLDERS, "samplers/detection"):
        assert f"activestream/{folder}/__init__.py" in names
    assert "activestream/deploy/serve_config.yaml" in names
    assert "activestream/deploy/static/index.html" in names
    assert not any(n.startswith("activestream/tests/") for n in names)


@pytest.mark.slow
def test_installing_the_wheel_adds_only_activestream_to_site_packages(fresh_venv: dict) -> None:
    version = activestream.__version__
    assert fresh_venv["added"] == {"activestream", f"activestream-{version}.dist-info"}


@pytest.mark.slow
def test_the_installed_package_imports_from_the_fresh_venv(fresh_venv: dict) -> None:
    out = subprocess.run(
        [str(fresh_venv["python"]), "-c", "import activestream; print(activestream.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(out).is_relative_to(fresh_venv["site"])


@pytest.mark.slow
def test_the_console_script_answers_help_from_the_fresh_venv(fresh_venv: dict) -> None:
    done = subprocess.run(
        [str(fresh_venv["bin"] / "activestream"), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for command in ("simulate", "serve", "score", "bench", "make-shards"):
        assert command in done.stdout


@pytest.mark.slow
def test_the_installed_package_does_real_work_from_the_fresh_venv(
    fresh_venv: dict, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(fresh_venv["bin"] / "activestream"), "make-shards", "--rows", "64"]
        + ["--rows-per-shard", "32", "--out", str(tmp_path / "shards")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "shards").rglob("*.parquet"))) >= 2


def test_no_module_imports_a_folder_by_its_bare_name() -> None:
    # In a source tree `import samplers` can work by accident; installed, it breaks.
    offenders = [
        f"{path.name}: {name}"
        for path in _modules(skip=("tests", "scripts"))
        for name in _imports(path)
        if name.split(".")[0] in BARE
    ]
    assert offenders == []


#: Extras that switch on optional parts a user may leave out (the pretrained backbone, the
#: detector's mAP); ``bench`` and ``test`` serve the benchmarks and tests, never the service.
OPTIONAL_EXTRAS = ("pretrained", "detection")


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution ``requirements`` install, with their own requirements, normalized."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import requires as requires_of

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(Requirement(r), ("",)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            below = requires_of(req.name) or []
        except PackageNotFoundError:
            continue
        todo += [(Requirement(r), ("", *req.extras)) for r in below]
    return seen


def test_every_module_the_service_imports_comes_with_its_declared_dependencies() -> None:
    # A bare `pip install activestream` (or with the optional extras) must run the service:
    # a module imported outside the benchmarks that only `bench` or `test` installs would
    # break it for users however well the tests pass in the full environment.
    from importlib.metadata import packages_distributions

    import tomllib
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(r for e in OPTIONAL_EXTRAS for r in extras[e])]
    installed = _installed_closure(wanted)
    providers = packages_distributions()
    missing = []
    for path in _modules(skip=("tests", "scripts", "benchmarks")):
        for name in {n.split(".")[0] for n in _imports(path)}:
            if name in sys.stdlib_module_names or name == "activestream":
                continue
            dists = {canonicalize_name(d) for d in providers.get(name, [])}
            if not dists & installed:
                missing.append(f"{path.relative_to(ROOT)}: {name} ({', '.join(dists)})")
    assert missing == []


def test_importing_activestream_starts_neither_ray_nor_torch() -> None:
    code = "import activestream; print(json.dumps(sorted({'ray', 'torch'} & set(sys.modules))))"
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys; " + code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("name", activestream.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(activestream, name) is not None


def test_the_docker_image_installs_the_package_from_the_build_context() -> None:
    dockerfile = (ROOT / "deploy/kuberay/Dockerfile").read_text()
    assert re.search(r"^COPY \. ", dockerfile, re.M)
    assert re.search(r"pip install [^\n]*--no-cache-dir [^\n]*/src", dockerfile)
    assert "activestream==" not in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"tests", "docs", ".git"} <= set(ignored)


def test_the_cluster_installs_the_wheel_it_mounts() -> None:
    cluster = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    mounts = cluster["file_mounts"]
    assert mounts["~/activestream/dist"] == "./dist"
    setup = " ".join(cluster["setup_commands"])
    assert "~/activestream/dist/activestream-" in setup
    assert "activestream==" not in setup
