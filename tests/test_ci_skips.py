"""Under CI=true a skipped test fails the run, and the run ends with the skips it allows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(tmp_path: Path, body: str, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(body)
    env = {**os.environ, "CI": "true" if ci else "false"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sample.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SKIPS = (
    "import pytest\ndef test_skips():\n    pytest.skip('no server')\ndef test_runs():\n    pass\n"
)


def test_a_skip_under_ci_fails_the_run_and_is_named_at_the_end(tmp_path):
    proc = _run(tmp_path, SKIPS, True)
    assert proc.returncode == 1, proc.stdout
    assert "skips allowed under CI=true: none" in proc.stdout
    assert "skipped under CI=true: test_sample.py::test_skips" in proc.stdout


def test_a_skip_outside_ci_is_only_a_skip(tmp_path):
    proc = _run(tmp_path, SKIPS, False)
    assert proc.returncode == 0, proc.stdout
    assert "skips allowed" not in proc.stdout


def test_a_run_without_skips_passes_under_ci_and_still_prints_the_allowed_list(tmp_path):
    proc = _run(tmp_path, "def test_runs():\n    pass\n", True)
    assert proc.returncode == 0, proc.stdout
    assert "skips allowed under CI=true: none" in proc.stdout
