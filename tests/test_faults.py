"""Real faults against the real app: SIGKILLed trainer and scorers, fuzzed HTTP, S3 state."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
import requests

from activestream.benchmarks import fault_recovery
from activestream.pipelines.loop import LOOP_ACTOR
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import ground_truth

pytestmark = pytest.mark.slow
TOKEN = "fault-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service(run_service, durable_config, tmp_path_factory):
    cfg = durable_config(tmp_path_factory.mktemp("faults"))
    pool, _ = resolve_dataset(cfg)
    items = list(ground_truth(pool).items())
    np.random.default_rng(0).shuffle(items)
    with run_service(cfg, token=TOKEN) as base:
        trainer = ray.get(ray.get_actor(LOOP_ACTOR).handles.remote())["trainer"]
        yield {"base": base, "trainer": trainer, "items": items}


def take(service, n):
    """The next n items nobody has labeled yet in this module."""
    items = service["items"]
    batch, service["items"] = items[:n], items[n:]
    return [{"id": i, "label": y} for i, y in batch]


def wait_healthy(base, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{base}/healthz", timeout=10).json()
        if body["status"] == "ok" and requests.get(f"{base}/model", timeout=10).ok:
            return body
        time.sleep(0.2)
    raise AssertionError(f"not healthy after {timeout} s")


def test_while_the_trainer_restarts_labels_are_accepted_and_queries_served(service):
    base = service["base"]
    wait_healthy(base)
    fault_recovery.kill_trainer(service["trainer"])()
    posted = requests.post(f"{base}/labels", json={"labels": take(service, 2)}, headers=AUTH)
    assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 10  # the ledger notices when it hands the labels on
    while (health := requests.get(f"{base}/healthz", timeout=10).json())["status"] == "ok":
        assert time.monotonic() < deadline, "never degraded while the trainer was down"
        time.sleep(0.05)
    assert health["status"] == "degraded" and health["reason"]
    assert requests.get(f"{base}/queries?n=2", headers=AUTH, timeout=10).status_code == 200
    model = requests.get(f"{base}/model", timeout=30)
    assert model.status_code in (200, 503)
    if model.status_code == 503:
        assert model.headers["Retry-After"] and model.json()["detail"]
    assert wait_healthy(base)["status"] == "ok"


def test_a_trainer_killed_under_load_loses_no_answered_label(service):
    wait_healthy(service["base"])
    result = fault_recovery.run(
        service["base"],
        service["trainer"],
        service["items"],
        rate=24,
        seconds=8,
        kill_at=2,
        headers=AUTH,
    )
    print(f"\nload with a trainer kill: {result}")
    assert result["labels_acked"] > 10
    assert result["errors"]["labels"] == 0  # the ledger answers while the trainer is down
    assert result["labels_lost"] == 0
    assert result["labels_seen"] == result["labels_held"]  # nothing held twice
    assert result["recovery_seconds"] is not None
    service["items"] = service["items"][result["labels_acked"] :]


def test_a_restarted_trainer_resumes_from_a_checkpoint(service):
    wait_healthy(service["base"])
    saved = ray.get(service["trainer"].save_checkpoint.remote())  # one exists, whatever the pace
    fault_recovery.kill_trainer(service["trainer"])()
    info = wait_healthy(service["base"])
    model = requests.get(f"{service['base']}/model", timeout=10).json()
    assert model["version"] >= info["model_version"] - 1
    recovered = ray.get(service["trainer"].model_info.remote())["recovered_from"]
    assert recovered is not None and recovered >= saved


def test_the_api_survives_fuzzing_from_its_openapi_schema(service):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    base = service["base"]
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    cases, server_errors = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case):
                nonlocal cases
                response = case.call(base_url=base, headers=AUTH, timeout=30)
                cases += 1
                if response.status_code >= 500:
                    server_errors.append((case.method, case.path, response.status_code))

            try:
                call()
            except Unsatisfiable:  # no invalid input exists (an operation without parameters)
                continue
    print(f"\nfuzz: {cases} cases, {len(server_errors)} answers >= 500")
    assert cases > 100
    assert server_errors == []
    assert wait_healthy(base)["status"] == "ok"
