"""Run ``activestream`` as a user does: a real process, its exit code and its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m activestream.cli ARGS`` in ``cwd``, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "activestream.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
