"""The service hands out queries from the moment it answers, before any scoring round."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from clirun import run_cli

from activestream.benchmarks import startup
from activestream.pipelines.runtime import free_port

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


def test_weights_the_trainer_cannot_load_end_serve_with_one_line_naming_them(tmp_path):
    # The replica starts while the trainer builds: the trainer's failure must still end the
    # command, as one line, rather than leave a service up without a model.
    weights = tmp_path / "weights.pt"
    weights.write_text("not a state dict")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"init_weights": str(weights)}}))
    result = run_cli(
        "serve", "--config", str(config), "--data-dir", str(tmp_path / "state"),
        "--port", str(free_port()), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("activestream: error")]
    assert len(error) == 1
    assert error[0].startswith(
        f"activestream: error: the trainer could not start: model.init_weights {weights}: "
        "cannot load a state dict: "
    )
    assert "activestream serving" not in result.stdout


def test_the_replica_loads_its_module_without_torch() -> None:
    """Serve's replica imports ``serve_app``: torch there would cost every start its import."""
    code = "import sys, activestream.deploy.serve_app; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
