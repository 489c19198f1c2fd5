"""A two-node Ray cluster on this machine: trials run on both nodes; killing the worker node
mid-trial makes that trial resume from its checkpoint on the other node."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import SEARCH_SPACE

pytestmark = pytest.mark.slow

# 4 epochs without early stopping: time to catch a trial mid-run on the worker node
SPACE = {
    **SEARCH_SPACE,
    "num_samples": 4,
    "fixed": {**SEARCH_SPACE["fixed"], "epochs": 4},
    "scheduler": {"type": "asha", "grace_period": 4, "reduction_factor": 2},
}


def rows(exp: Path) -> dict[str, list[dict]]:
    out = {}
    for d in exp.glob("train_trial_*"):
        f = d / "result.json"
        if f.exists():
            out[d.name] = [json.loads(line) for line in f.read_text().splitlines()]
    return out


def test_two_node_cluster(tmp_path: Path, mini: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from s9tune.search.cluster import ClusterError
    from s9tune.search.runner import run_search
    from s9tune.search.space import load_space

    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    space = load_space(space_file)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    head_id, worker_id = cluster.head_node.node_id, worker.node_id
    exp = tmp_path / "st" / "c"
    killed: dict[str, object] = {}

    def kill_worker_mid_trial() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            for name, rs in rows(exp).items():
                if rs and rs[-1]["node_id"] == worker_id and len(rs) < 4:
                    killed["trial"], killed["epochs_before"] = name, len(rs)
                    cluster.remove_node(worker)
                    return
            time.sleep(0.3)

    try:
        # a trial asking for more than any node has is an error, not a hang
        with pytest.raises(ClusterError, match="largest node has 1"):
            run_search(space.with_resources(2, 0), mini, storage=str(tmp_path / "st"), name="big", address=cluster.address)
        killer = threading.Thread(target=kill_worker_mid_trial, daemon=True)
        killer.start()
        out = run_search(space, mini, storage=str(tmp_path / "st"), name="c", address=cluster.address, max_failures=3)
        killer.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert out.total == 4 and out.errors == 0, out
    final = rows(exp)
    nodes = {r["node_id"] for rs in final.values() for r in rs}
    assert {head_id, worker_id} <= nodes, "trials did not run on both nodes"
    assert "trial" in killed, "no trial was caught running on the worker node"
    rs = final[killed["trial"]]
    epochs = [r["epoch"] for r in rs]
    assert epochs == [1, 2, 3, 4], epochs  # resumed from its checkpoint, not restarted from epoch 1
    assert rs[-1]["node_id"] == head_id  # finished on the surviving node
