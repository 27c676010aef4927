"""Placement and fault tolerance on a real three-node Ray cluster, and the files that deploy one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_cluster_launcher_config_validates_against_rays_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler/ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1 and workers["min_workers"] <= workers["max_workers"]
    assert any("~/activestream/dist/activestream-" in cmd for cmd in config["setup_commands"])


def test_the_rayservice_embeds_exactly_the_serve_config():
    docs = list(yaml.safe_load_all((ROOT / "deploy/kuberay/rayservice.yaml").read_text()))
    service = next(d for d in docs if d["kind"] == "RayService")
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    serve_config = yaml.safe_load((ROOT / "deploy/serve_config.yaml").read_text())
    assert embedded["applications"] == serve_config["applications"]
    cluster = service["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["readinessProbe"] and head["livenessProbe"]
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]


def test_the_cluster_config_keeps_every_path_on_s3():
    from activestream.config import load_config

    cfg = load_config(ROOT / "deploy/cluster_config.yaml")
    assert cfg.data.dataset.startswith("s3://")
    assert cfg.state_dir.startswith("s3://")


@pytest.mark.slow
def test_a_three_node_cluster_places_work_and_survives_losing_a_node(s3_server, s3_bucket):
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests/multinode_scenario.py"),
            "--endpoint",
            s3_server.endpoint_url,
            "--bucket",
            s3_bucket,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    print(f"\nmulti-node: {result}")
    assert result["trainer_node"] == result["accelerator_node"]
    assert len(result["scorer_nodes"]) == 2  # one scorer per node: 1.5 CPUs never fit two
    assert result["spare_node"] in result["scorer_nodes"]  # so removing it killed a scorer
    assert result["replacement_node"] in result["scorer_nodes_after"]
    assert all(nodes == [result["head_node"]] for nodes in result["control_nodes"].values())
    assert result["rounds_after_removal"] >= 2
    assert result["last_round_rows"] == result["pool_rows"]
    assert result["labels_acked"] >= 56 and result["labels_lost"] == 0  # 7 batches of 8, or more
