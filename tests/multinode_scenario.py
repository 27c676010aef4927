"""A three-node Ray cluster on this machine, end to end; run by ``tests/test_multinode.py``.

Runs in its own process because a test session holds one Ray instance already. Nodes: a head,
an "accelerator" node (a custom resource standing in for a GPU) and a spare node, replaced by a
fresh one when it is removed. Data, the label log and checkpoints live on the S3-compatible
server given on the command line. Prints one JSON object with what the test checks.

    python tests/multinode_scenario.py --endpoint http://127.0.0.1:PORT --bucket B
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np
import ray
from ray.cluster_utils import Cluster

from activestream.config import Config, StorageConfig
from activestream.pipelines.loop import ActiveLoop
from activestream.sources.digits import write_digits_shards
from activestream.sources.resolve import resolve_dataset
from activestream.sources.shards import load_arrays
from activestream.sources.writing import write_shards


def actor_nodes(name: str) -> set[str]:
    """Nodes that host a live actor whose class name contains ``name`` right now."""
    from ray._private import state

    nodes = set()
    for info in state.actors().values():
        if name in info.get("ActorClassName", "") and info["State"] == "ALIVE":
            nodes.add(info["Address"]["NodeID"])
    return nodes


def add_labels(loop: ActiveLoop, batch: list[dict[str, Any]], acked: dict[str, int]) -> None:
    """Post until acknowledged: an actor restarting on another node answers a little later."""
    for _ in range(60):
        try:
            loop.add_labels(batch)
        except ray.exceptions.RayError:
            time.sleep(1)
            continue
        acked.update((r["id"], r["label"]) for r in batch)
        return
    raise RuntimeError("labels were never acknowledged")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    storage = StorageConfig(endpoint_url=args.endpoint, key="testing", secret="testing")

    # The head (1 CPU) cannot hold a 1.5-CPU scorer, so one scorer sits on the spare node and
    # dies with it; a fresh node then joins, as the autoscaler's min_workers would bring one.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    accelerator = cluster.add_node(num_cpus=2, resources={"accelerator": 1})
    spare = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    local, _ = write_digits_shards(tempfile.mkdtemp(), shards=4)
    ids, x, y = load_arrays(local)
    pixels = np.rint(x * 255).astype(np.uint8)
    uri = f"s3://{args.bucket}/pool"
    write_shards(uri, ids, pixels, y, local.classes, rows_per_shard=400, storage=storage)
    cfg = Config().with_overrides(
        {
            "data.dataset": uri,
            "storage": storage.model_dump(),
            "durability.dir": f"s3://{args.bucket}/state",
            "durability.sync_seconds": 0.5,
            "training.resources": {"accelerator": 1},
            "training.buffer_size": 8,
            "training.steps_per_update": 3,
            "scoring.num_scorers": 2,
            "scoring.cpus_per_scorer": 1.5,  # one scorer per 2-CPU node at most
            "scoring.batch_size": 64,
            "scoring.linger_seconds": 30.0,
        }
    )
    pool, _ = resolve_dataset(cfg)
    truth = dict(zip(ids.tolist(), y.tolist(), strict=True))
    loop = ActiveLoop(cfg, pool)
    loop.start()
    acked: dict[str, int] = {}
    spread: set[str] = set()
    try:
        loop.wait_for(lambda: loop.rounds, 300, "the first round")
        items = iter(truth.items())
        for _ in range(3):
            add_labels(
                loop, [{"id": k, "label": v} for k, v in (next(items) for _ in range(8))], acked
            )
            spread |= actor_nodes("MapBatches(Scorer)")
            time.sleep(0.5)
        rounds_before = len(loop.rounds)
        cluster.remove_node(spare)  # mid-round: rounds stream while versions keep coming
        replacement = cluster.add_node(num_cpus=2)
        for _ in range(4):
            add_labels(
                loop, [{"id": k, "label": v} for k, v in (next(items) for _ in range(8))], acked
            )
            time.sleep(0.5)
        after: set[str] = set()
        fed = [time.monotonic()]

        def replaced_and_two_more_rounds() -> bool:
            after.update(actor_nodes("MapBatches(Scorer)"))
            if replacement.node_id in after and len(loop.rounds) >= rounds_before + 2:
                return True
            if time.monotonic() - fed[0] > 1.0:  # keep versions coming: each starts a pass
                fed[0] = time.monotonic()  # whose pool can place a scorer on the new node
                batch = [{"id": k, "label": v} for k, v in (next(items) for _ in range(8))]
                add_labels(loop, batch, acked)
            return False

        loop.wait_for(replaced_and_two_more_rounds, 300, "a scorer on the replacement node")
        deadline = time.monotonic() + 120
        while True:
            try:
                held = ray.get(loop.trainer.held_labels.remote(), timeout=30)
            except ray.exceptions.RayError:
                held = {}
            if all(held.get(k) == v for k, v in acked.items()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        info = ray.get(loop.trainer.model_info.remote())
        result = {
            "trainer_node": info["node"],
            "accelerator_node": accelerator.node_id,
            "spare_node": spare.node_id,
            "scorer_nodes": sorted(spread),
            "replacement_node": replacement.node_id,
            "scorer_nodes_after": sorted(after),
            "head_node": cluster.head_node.node_id,
            "control_nodes": {
                c: sorted(actor_nodes(c)) for c in ("WeightsBoard", "QueryQueue", "LabelLedger")
            },
            "rounds_before_removal": rounds_before,
            "rounds_after_removal": len(loop.rounds) - rounds_before,
            "last_round_rows": loop.rounds[-1].rows,
            "pool_rows": pool.num_rows,
            "labels_acked": len(acked),
            "labels_lost": sum(1 for k, v in acked.items() if held.get(k) != v),
            "errors": loop.errors[-3:],
        }
    finally:
        loop.stop()
        ray.shutdown()
        cluster.shutdown()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
