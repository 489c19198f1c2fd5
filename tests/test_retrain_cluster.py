"""`s9tune retrain --address` on a real two-node Ray cluster on 127.0.0.1 (token authentication
on; tests/ray_cluster.py), writing to a real S3 server (moto, tests/moto_s3.py): both seeds run
at once, one per node; the files and seed 0's test accuracy are those of a retrain on a Ray
started in-process; `analyze` reads the checkpoint back from the bucket; losing the worker node
mid-retrain costs its seed only the epochs since its checkpoint; every refusal is one line.

All retrains share the session's smoke search (conftest.search_experiment) and shrink its best
config to width 4 on 1,024 images, so that each seed takes seconds on one core."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import tune_rows
from moto_s3 import BUCKET, free_port, moto_server, s3_client
from ray_cluster import Cluster, running_cluster

from s9tune.cli import main

pytestmark = pytest.mark.slow

SMALL = ["--set", "width=4", "--set", "batch_size=256", "--set", "train_subset=1024"]
OUT = f"s3://{BUCKET}/retrains/rt"
RUN_FILES = {"config.yaml", "run.json", "metrics.jsonl", "metrics.json", "checkpoints/last.pt", "tb/events"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        yield env


@pytest.fixture(scope="module")
def cluster(s3: dict[str, str]) -> Iterator[Cluster]:
    # every node writes to the bucket, so every node has the credentials (as the README says)
    with running_cluster({k: v for k, v in s3.items() if k.startswith("AWS_")}) as c:
        yield c


def s9tune(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s9tune", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def normalised(paths: list[str]) -> set[str]:
    """Run-relative file paths, TensorBoard's (host- and time-stamped) event files as tb/events."""
    return {p.split("/events.out.tfevents.")[0] + "/events" if "events.out.tfevents" in p else p for p in paths}


@pytest.fixture(scope="module")
def on_cluster(cluster: Cluster, s3: dict[str, str], search_experiment, mini: Path) -> dict[str, Any]:
    """Two seeds on the cluster, into the bucket: the console, the files written, metrics.json."""
    exp, _ = search_experiment
    t = time.time()
    res = s9tune(
        cluster.env, "retrain", str(exp), "--data-dir", str(mini), "--epochs", "2", *SMALL, "--seeds", "2",
        "--out", OUT, "--address", cluster.address,
    )  # fmt: skip
    wall = time.time() - t
    assert res.returncode == 0, res.stderr[-3000:]
    client, prefix = s3_client(s3), OUT.split(f"{BUCKET}/", 1)[1] + "/"
    keys = [
        o["Key"][len(prefix) :]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
        if not o["Key"].endswith("/")  # pyarrow's folder markers
    ]

    def read(key: str) -> dict[str, Any]:
        return json.loads(client.get_object(Bucket=BUCKET, Key=prefix + key)["Body"].read())

    runs = {rel: read(f"{rel}run.json") for rel in ("", "seeds/seed-1/")}
    return {"stdout": res.stdout, "keys": keys, "metrics": read("metrics.json"), "runs": runs, "wall_s": wall}


@pytest.fixture(scope="module")
def in_process(search_experiment, mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed 0 alone, on a Ray started in-process, one CPU as on each cluster node."""
    exp, _ = search_experiment
    out = tmp_path_factory.mktemp("inproc") / "rt"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = s9tune(
        env, "retrain", str(exp), "--data-dir", str(mini), "--epochs", "2", *SMALL, "--cpus-per-run", "1", "--out",
        str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def seed_lines(stdout: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in stdout.splitlines() if line.startswith("[") and "] seed " in line]


def test_both_seeds_run_at_once_one_per_node(on_cluster: dict[str, Any]) -> None:
    lines = seed_lines(on_cluster["stdout"])
    started = [i for i, line in enumerate(lines) if " started on node " in line]
    finished = [i for i, line in enumerate(lines) if " finished: " in line]
    assert len(started) == 2 and len(finished) == 2 and max(started) < min(finished), lines
    assert len({lines[i].split(" on node ")[1] for i in started}) == 2, lines  # one seed per node
    # and by the seeds' own clocks: each started before the other ended
    spans = [
        (time.mktime(time.strptime(r["started"], "%Y-%m-%dT%H:%M:%S")), r["wall_s"])
        for r in on_cluster["runs"].values()
    ]
    (s0, w0), (s1, w1) = spans
    assert s1 < s0 + w0 and s0 < s1 + w1, spans
    m = on_cluster["metrics"]
    assert [s["status"] for s in m["per_seed"]] == ["completed", "completed"] and m["seeds"] == [0, 1]
    assert f"Test accuracy over 2 seeds: {100 * m['test_accuracy_mean']:.2f}%" in on_cluster["stdout"]
    assert f"Report: {OUT}/report.html" in on_cluster["stdout"]


def test_the_cluster_writes_what_in_process_writes_and_seed_0_scores_the_same(
    on_cluster: dict[str, Any], in_process: Path
) -> None:
    local = normalised([str(p.relative_to(in_process)) for p in in_process.rglob("*") if p.is_file()])
    remote = normalised(on_cluster["keys"])
    assert {p for p in remote if not p.startswith("seeds/")} == local
    assert {p.split("seeds/seed-1/", 1)[1] for p in remote if p.startswith("seeds/")} == RUN_FILES
    assert "tune" not in {p.split("/")[0] for p in remote}  # every seed finished: Tune's tree is gone
    mine = json.loads((in_process / "metrics.json").read_text())
    seed0 = on_cluster["metrics"]
    # on the CPU every random draw derives from (seed, epoch) and each run has one thread: the
    # same weights, whichever node trains them and however the data got there
    assert (seed0["test_correct"], seed0["test_loss"]) == (mine["test_correct"], mine["test_loss"])
    assert seed0["per_seed"][0]["test_accuracy"] == mine["test_accuracy"]


def test_analyze_reads_the_checkpoint_back_from_the_bucket(
    on_cluster: dict[str, Any], s3: dict[str, str], mini: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    for k, v in s3.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    ckpt = f"{OUT}/checkpoints/last.pt"
    assert main(["analyze", ckpt, "--data-dir", str(mini), "--out", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert a["test_accuracy"] == on_cluster["metrics"]["test_accuracy"] and a["checkpoint"] == ckpt
    assert "training history from" in capsys.readouterr().err  # the run's metrics.jsonl came with it


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in res.stderr.splitlines() if line.startswith("s9tune: error:")]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    return lines[0]


def test_refusals_are_one_line_and_leave_nothing(
    cluster: Cluster, s3: dict[str, str], search_experiment, mini: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    exp, _ = search_experiment
    out = tmp_path / "rt"
    args = ["retrain", str(exp), "--data-dir", str(mini), "--epochs", "1", *SMALL, "--out", str(out)]
    no_token = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    line = one_error(s9tune(no_token, *args, "--address", cluster.address))
    assert "uses token authentication: set RAY_AUTH_MODE=token" in line
    wrong = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    assert "rejected this machine's token" in one_error(s9tune(wrong, *args, "--address", cluster.address))
    line = one_error(s9tune(cluster.env, *args, "--address", cluster.address, "--cpus-per-run", "2"))
    assert "a run asks for 2 CPUs but the largest node has 1; lower --cpus-per-run" in line
    assert not out.exists()
    # refused before Ray starts (or at its first probe): in this process
    for k, v in s3.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    port = free_port()  # nothing listens there
    for extra, needle in (
        (["--out", "s3://no-such-bucket/rt"], "the bucket 'no-such-bucket' does not exist"),
        (["--resume"], "nothing to resume (no retrain was started there)"),
        (["--address", f"127.0.0.1:{port}"], f"nothing answers at 127.0.0.1:{port}"),
    ):
        capsys.readouterr()
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("s9tune: error:") == 1 and needle in err and "Traceback" not in err, err
    assert not out.exists()


def test_losing_the_worker_mid_retrain_costs_its_seed_only_the_epochs_since_its_checkpoint(
    cluster: Cluster, search_experiment, mini: Path, tmp_path: Path
) -> None:
    """Last in this module: the cluster has one node left after it."""
    raylet, worker_id = cluster.worker_raylet()
    exp, _ = search_experiment
    out = tmp_path / "rt"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "s9tune", "retrain", str(exp), "--data-dir", str(mini), "--epochs", "3", *SMALL,
            "--set", "train_subset=2048", "--seeds", "2", "--out", str(out), "--address", cluster.address,
        ],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline and proc.poll() is None:
        for trial, rows in tune_rows(out).items():
            epochs = [r["epoch"] for r in rows if "eval_accuracy" in r]
            if epochs and rows[-1].get("node_id") == worker_id and max(epochs) < 3:
                victim = int(trial.split("seed=")[1].split("_")[0])
                raylet.send_signal(signal.SIGKILL)  # the second machine dies mid-seed
                break
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert victim is not None, "no seed was caught mid-run on the worker node"
    m = json.loads((out / "metrics.json").read_text())
    assert [s["status"] for s in m["per_seed"]] == ["completed", "completed"], m["per_seed"]
    lines = [line for line in seed_lines(stdout) if line.startswith(f"seed {victim} ")]
    starts = [line for line in lines if " started on node " in line]
    assert len(starts) == 2 and worker_id[:8] in starts[0] and worker_id[:8] not in starts[1], lines
    after = int(starts[1].rsplit("continuing after epoch ", 1)[1])  # never from scratch
    assert 1 <= after < 3, lines
    assert any("failed on node" in line for line in lines) and lines[-1].startswith(f"seed {victim} finished"), lines
    run = out / ("." if victim == 0 else f"seeds/seed-{victim}")
    assert [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]
    assert not (out / "tune").exists()
