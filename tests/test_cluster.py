"""A real multi-process Ray cluster, started as Ray's docs show: `ray start --head`, then
`ray start --address` for a second node, with token authentication on (current Ray's default
for a cluster with a token). `s9tune search --address` runs trials on both nodes; the worker
node's raylet is killed by pid mid-trial and the trial resumes from its checkpoint on the head.

Every process is started with its own temp dir and stopped by pid (never `ray stop`, which
would stop every Ray on the machine)."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SEARCH_SPACE, assert_resumed_not_restarted, search_cmd
from ray_cluster import RAY, Cluster, running_cluster

pytestmark = pytest.mark.slow

# 4 epochs without early stopping: time to catch a trial mid-run on the worker node
SPACE = {
    **SEARCH_SPACE,
    "num_samples": 4,
    "fixed": {**SEARCH_SPACE["fixed"], "epochs": 4},
    "scheduler": {"type": "asha", "grace_period": 4, "reduction_factor": 2},
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as c:
        yield c


def test_ray_status_sees_both_nodes(cluster: Cluster) -> None:
    deadline = time.time() + 90
    while True:  # the head's monitor reports a few seconds after `ray start` returns
        res = subprocess.run(
            [RAY, "status", "--address", cluster.address], env=cluster.env, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr[-2000:]
        if "second_node" in res.stdout or time.time() > deadline:
            break
        time.sleep(2)
    assert "second_node" in res.stdout and res.stdout.count("node_") >= 2, res.stdout


def search(cluster: Cluster, tmp: Path, mini: Path, name: str, env: dict[str, str], *extra: str, timeout: float = 420):
    cmd = search_cmd(tmp, mini, name, SPACE, "--address", cluster.address, *extra)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(exp: Path) -> dict[str, list[dict]]:
    out = {}
    for f in exp.glob("train_trial_*/result.json"):
        lines = []
        for line in f.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                break  # still being written
        out[f.parent.name] = lines
    return out


def test_without_the_token_the_search_says_what_to_set(cluster: Cluster, tmp_path: Path, mini: Path) -> None:
    no_auth = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    proc = search(cluster, tmp_path, mini, "noauth", no_auth)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("s9tune: error:")]
    assert len(errors) == 1, err
    # nothing else but s9tune's own log lines: Ray's retries and warnings went to its log
    assert all(" INFO s9tune." in line for line in err.splitlines() if line not in errors), err
    line = errors[0]
    assert "uses token authentication: set RAY_AUTH_MODE=token" in line and "ray get-auth-token" in line
    assert not (tmp_path / "st" / "noauth").exists()  # refused before launch: nothing left behind
    wrong = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    proc = search(cluster, tmp_path, mini, "wrong", wrong)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "rejected this machine's token" in err, err


def test_oversized_trials_are_refused_before_launch(cluster: Cluster, tmp_path: Path, mini: Path) -> None:
    proc = search(cluster, tmp_path, mini, "big", cluster.env, "--cpus-per-trial", "2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "largest node has 1" in err, err
    assert not (tmp_path / "st" / "big").exists()


def test_trials_run_on_both_nodes_and_survive_losing_one(cluster: Cluster, tmp_path: Path, mini: Path) -> None:
    raylet, worker_id = cluster.worker_raylet()
    exp = tmp_path / "st" / "c"
    proc = search(cluster, tmp_path, mini, "c", cluster.env)
    killed: dict[str, object] = {}
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not killed:
        for name, rs in rows(exp).items():
            if rs and rs[-1]["node_id"] == worker_id and len(rs) < 4:
                killed.update(trial=name, epochs_before=len(rs))
                raylet.send_signal(signal.SIGKILL)  # the second machine dies mid-trial
                break
        time.sleep(0.3)
    out, err = proc.communicate(timeout=420)
    assert proc.returncode == 0, err[-3000:]
    assert "trial" in killed, "no trial was caught running on the worker node"
    final = rows(exp)
    assert len(final) == 4 and all(rs[-1]["epoch"] == 4 for rs in final.values())
    nodes = {r["node_id"] for rs in final.values() for r in rs}
    assert worker_id in nodes and len(nodes) == 2, "trials did not run on both nodes"
    rs = final[killed["trial"]]
    epochs = [r["epoch"] for r in rs]
    moved = next((i for i in range(1, len(rs)) if rs[i]["node_id"] != rs[i - 1]["node_id"]), len(rs))
    # the worker can die after it persisted an epoch's checkpoint (that comes before the report)
    # but before the driver logged the epoch's row; the trial then goes on from that checkpoint
    # on the other node (seen once in CI: rows 1, 2 on the worker, 4 on the head). At most that
    # one row is lost, and only where the trial moved; it is put back for the check below.
    if moved < len(rs) and epochs[moved] == epochs[moved - 1] + 2:
        epochs.insert(moved, epochs[moved] - 1)
    assert_resumed_not_restarted(epochs, 4)
    assert rs[-1]["node_id"] != worker_id  # finished on the surviving node
    # the console shows s9tune's progress and results, not Ray's logs
    assert "completed" in out and "Ray's log:" in out
    assert "(raylet)" not in out + err and "session_" not in out
    assert "(raylet)" in (exp / "search.log").read_text()  # Ray's news of the dead node went to the log
