"""Storage failures are one line naming the URI and the cause: exit 2 in the CLI, 503 in the ledger.

Real parts only: the CLI runs as a process, S3 is a moto server process on loopback (one that
refuses every key, the session's, or a port with nothing listening), the ledger writes to it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from clirun import run_cli

from activestream.actors.items import ItemStore
from activestream.actors.ledger import LabelLedger
from activestream.config import Config, StorageConfig
from activestream.errors import StorageError
from activestream.pipelines.runtime import free_port
from activestream.sources.resolve import resolve_dataset


def start_moto(port: int, log: Path, **env: str) -> subprocess.Popen:
    """A moto S3 server process on ``127.0.0.1:port``, returned once it accepts connections."""
    full = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start in 30 s")


@pytest.fixture(scope="module")
def refusing_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageConfig]:
    """An S3 server that checks signatures: no IAM user exists, so every key is refused."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    proc = start_moto(port, log, INITIAL_NO_AUTH_ACTION_COUNT="0")
    yield StorageConfig(endpoint_url=f"http://127.0.0.1:{port}", key="AKIAWRONG", secret="wrong")
    proc.kill()
    proc.wait(timeout=10)


def write_config(tmp_path: Path, storage: StorageConfig, **sections: dict) -> Path:
    path = tmp_path / "config.yaml"
    doc = {"storage": storage.model_dump(exclude_none=True), **sections}
    path.write_text(yaml.safe_dump(doc))
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2 and one ``activestream: error:`` line that holds every needle, no traceback."""
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line]
    errors = [line for line in lines if line.startswith("activestream: error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


# -- the CLI ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_score_with_refused_credentials_names_the_uri_and_access_denied(tmp_path, refusing_s3):
    config = write_config(tmp_path, refusing_s3)
    result = run_cli("score", "--config", str(config), "--data", "s3://data/x", cwd=tmp_path)
    assert_one_line_error(result, "s3://data/x", "access denied", "storage.key/secret")


@pytest.mark.slow
def test_score_on_a_missing_bucket_names_the_uri_and_nosuchbucket(tmp_path, s3_server):
    config = write_config(tmp_path, s3_server)
    result = run_cli("score", "--config", str(config), "--data", "s3://no-bucket/x", cwd=tmp_path)
    assert_one_line_error(result, "s3://no-bucket/x", "bucket does not exist (NoSuchBucket)")


@pytest.mark.slow
def test_score_against_a_stopped_endpoint_fails_in_seconds_naming_it(tmp_path, free_port):
    endpoint = f"http://127.0.0.1:{free_port}"
    config = write_config(tmp_path, StorageConfig(endpoint_url=endpoint, key="k", secret="s"))
    began = time.monotonic()
    result = run_cli("score", "--config", str(config), "--data", "s3://data/x", cwd=tmp_path)
    assert_one_line_error(result, "s3://data/x", f"cannot reach the S3 endpoint {endpoint}")
    assert time.monotonic() - began < 120  # retries are bounded: not minutes of backoff


@pytest.mark.slow
def test_serve_with_its_state_on_a_missing_bucket_exits_2_before_starting(tmp_path, s3_server):
    config = write_config(
        tmp_path,
        s3_server,
        data={"cache_dir": str(tmp_path / "cache")},
        durability={"dir": "s3://no-bucket/state"},
    )
    result = run_cli("serve", "--config", str(config), "--port", str(free_port()), cwd=tmp_path)
    assert_one_line_error(result, "s3://no-bucket/state", "NoSuchBucket")
    assert "activestream serving" not in result.stdout


@pytest.mark.slow
def test_serve_with_its_data_on_a_stopped_endpoint_exits_2_before_starting(tmp_path, free_port):
    endpoint = f"http://127.0.0.1:{free_port}"
    config = write_config(tmp_path, StorageConfig(endpoint_url=endpoint, key="k", secret="s"))
    result = run_cli(
        "serve", "--config", str(config), "--data", "s3://data/pool", "--port", "1", cwd=tmp_path
    )
    assert_one_line_error(result, "s3://data/pool", f"cannot reach the S3 endpoint {endpoint}")


# -- the ledger -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    cfg = Config().with_overrides({"data.cache_dir": str(tmp_path_factory.mktemp("cache"))})
    return resolve_dataset(cfg)[0]


@pytest.fixture()
def stoppable_s3(tmp_path) -> Iterator[tuple[StorageConfig, subprocess.Popen]]:
    """A moto server of this test's own, with one bucket ``labels``, that the test may kill."""
    import boto3

    port = free_port()
    proc = start_moto(port, tmp_path / "moto.log")
    storage = StorageConfig(endpoint_url=f"http://127.0.0.1:{port}", key="testing", secret="x")
    boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="x",
        region_name="us-east-1",
    ).create_bucket(Bucket="labels")
    yield storage, proc
    proc.kill()
    proc.wait(timeout=10)


def ledger_with_one_label(storage: StorageConfig, pool) -> tuple[LabelLedger, str]:
    ledger = LabelLedger("s3://labels/log", items=ItemStore(pool), storage=storage)
    ledger.start()
    first = ItemStore(pool).ids()[0]
    assert ledger.add([{"id": first, "label": 3}]).accepted == 1
    return ledger, first


@pytest.mark.slow
def test_a_label_batch_the_log_cannot_take_is_refused_and_earlier_labels_stay(pool, stoppable_s3):
    storage, server = stoppable_s3
    ledger, first = ledger_with_one_label(storage, pool)
    server.kill()
    server.wait(timeout=10)
    second = ItemStore(pool).ids()[1]
    with pytest.raises(StorageError, match="s3://labels/log.*cannot reach the S3 endpoint"):
        ledger.add([{"id": second, "label": 4}])
    assert ledger.labels() == {first: 3}
    assert ledger.log.offset == 1


@pytest.mark.slow
def test_ledger_status_names_the_storage_problem_after_a_failed_append(pool, stoppable_s3):
    storage, server = stoppable_s3
    ledger, _ = ledger_with_one_label(storage, pool)
    assert ledger.status()["storage_problem"] is None
    server.kill()
    server.wait(timeout=10)
    with pytest.raises(StorageError):
        ledger.add([{"id": ItemStore(pool).ids()[1], "label": 4}])
    problem = ledger.status()["storage_problem"]
    assert problem.startswith("s3://labels/log") and storage.endpoint_url in problem


def test_ledger_status_names_a_checkpoint_store_that_cannot_be_written(pool, tmp_path, s3_server):
    ledger = LabelLedger(
        str(tmp_path / "log"),
        items=ItemStore(pool),
        storage=s3_server,
        probe_uris=["s3://no-bucket/checkpoints"],
    )
    ledger.start()
    ledger.probe_storage(ledger.probe_uris)
    assert ledger.status()["storage_problem"] == (
        "s3://no-bucket/checkpoints: bucket does not exist (NoSuchBucket)"
    )
