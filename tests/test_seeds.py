"""Retrain on Ray, piece by piece and without a cluster: how a run is sized and refused, what the
console shows for each seed, the folders on disk or on storage the seeds write to, the commands
printed for the next step, and the table when a seed failed."""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from s9tune.errors import S9Error
from s9tune.storage import Folder

GPU_NODE = {"NodeID": "a" * 40, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 8.0, "GPU": 2.0}}
SMALL_GPU_NODE = {"NodeID": "b" * 40, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 3.0, "GPU": 1.0}}
HEAD = {"NodeID": "c" * 40, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 0.0}}
CPU_NODES = [
    {"NodeID": "d" * 40, "NodeManagerAddress": "10.0.0.4", "Resources": {"CPU": 4.0}},
    {"NodeID": "e" * 40, "NodeManagerAddress": "10.0.0.5", "Resources": {"CPU": 2.0}},
]


def test_run_resources_default_to_one_gpu_and_its_share_of_cpus(monkeypatch) -> None:
    from s9tune.search.execution import cluster

    monkeypatch.setattr(cluster, "_alive_nodes", lambda: [GPU_NODE, SMALL_GPU_NODE, HEAD])
    # the least-provisioned GPU node decides: 3 CPUs for its one GPU, so a run fits on every GPU node
    assert cluster.default_run_resources() == (3.0, 1.0)
    assert cluster.check_cluster(3, 1, "s3://b/rt", "rt", unit="run") == 3  # 2 on the 2-GPU node, 1 on the other
    monkeypatch.setattr(cluster, "_alive_nodes", lambda: [*CPU_NODES, HEAD])
    # no GPU: every core of the smallest node with cores; one run per node
    assert cluster.default_run_resources() == (2.0, 0.0)
    assert cluster.check_cluster(2, 0, "s3://b/rt", "rt", unit="run") == 3


def test_a_run_no_node_can_hold_is_refused(monkeypatch, tmp_path: Path) -> None:
    from s9tune.search.execution import cluster

    monkeypatch.setattr(cluster, "_alive_nodes", lambda: [GPU_NODE, *CPU_NODES])
    with pytest.raises(
        cluster.ClusterError, match="a run asks for 9 CPUs but the largest node has 8; lower --cpus-per-run"
    ):
        cluster.check_cluster(9, 0, "s3://b/rt", "rt", unit="run")
    with pytest.raises(cluster.ClusterError, match=r"asks for 4 GPUs .* lower --gpus-per-run \(0 runs on CPUs\)"):
        cluster.check_cluster(1, 4, "s3://b/rt", "rt", unit="run")
    # enough CPUs somewhere and enough GPUs somewhere, but never on the same node
    monkeypatch.setattr(cluster, "_alive_nodes", lambda: [SMALL_GPU_NODE, *CPU_NODES])
    with pytest.raises(cluster.ClusterError, match="no node has 4 CPUs and 1 GPUs at once for a run"):
        cluster.check_cluster(4, 1, "s3://b/rt", "rt", unit="run")
    monkeypatch.setattr(cluster, "nodes_not_seeing", lambda path, ns: ["10.0.0.5 (eeeeeeee)"])
    with pytest.raises(cluster.ClusterError, match=r"--out \S+ is a local path that node\(s\) 10\.0\.0\.5"):
        cluster.check_cluster(1, 0, str(tmp_path), "rt", unit="run", flag="--out")


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_seed_console_lines(tmp_path: Path) -> None:
    """Started (where, and from which epoch), epochs at most every 5 s a seed, finished with the
    test accuracy, a retry, an error: one line each."""
    from s9tune.search.execution.console import SEED_FINISHED, SEED_STARTED, SeedProgress

    out, clock = io.StringIO(), Clock()
    p = SeedProgress(epochs=24, stream=out, clock=clock)
    a, b = FakeTrial("a", {"seed": 0}), FakeTrial("b", {"seed": 1}, error_file=str(tmp_path / "error.txt"))
    p.on_trial_result(0, [a, b], a, {"event": SEED_STARTED, "epoch": 0, "node": "10.0.0.1 (aaaaaaaa)"})
    p.on_trial_result(0, [a, b], b, {"event": SEED_STARTED, "epoch": 7, "node": "10.0.0.2 (bbbbbbbb)"})
    for epoch in range(1, 25):  # one epoch a second: a line every 5 s, none for the last epoch
        clock.now += 1
        row = {"epoch": epoch, "eval_accuracy": 0.5, "eval_split": "test", "images_per_s": 1000.0}
        p.on_trial_result(0, [a, b], a, row)
    p.on_trial_result(
        0, [a, b], a, {"event": SEED_FINISHED, "status": "completed", "epoch": 24, "test_accuracy": 0.9405,
                       "test_correct": 9405, "test_images": 10000},
    )  # fmt: skip
    b.last_result = {"node": "10.0.0.2 (bbbbbbbb)"}
    p.on_trial_recover(0, [a, b], b)
    (tmp_path / "error.txt").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    p.on_trial_error(0, [a, b], b)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("seed 0 started on node 10.0.0.1 (aaaaaaaa)")
    assert lines[1].endswith("seed 1 started on node 10.0.0.2 (bbbbbbbb), continuing after epoch 7")
    epochs = [line for line in lines if "seed 0 epoch" in line]
    assert [int(line.split("epoch ")[1].split("/")[0]) for line in epochs] == [5, 10, 15, 20]
    assert epochs[0].endswith("seed 0 epoch 5/24: 50.00% test, 1000 images/s")
    assert lines[-3].endswith("seed 0 finished: 94.05% test (9405/10000) after 24 epochs")
    assert lines[-2].endswith("seed 1 failed on node 10.0.0.2 (bbbbbbbb); retrying from its last checkpoint")
    assert lines[-1].endswith("seed 1 failed for good: RuntimeError: CUDA out of memory")
    assert len(lines) == 2 + 4 + 3


def test_folders_on_disk_and_behind_a_uri(tmp_path: Path) -> None:
    f = Folder.parse("s3://bucket/runs/best/?endpoint_override=127.0.0.1:9000&scheme=http")
    assert f.base == "s3://bucket/runs/best" and f.name == "best"
    assert f.child("tune").url == "s3://bucket/runs/best/tune?endpoint_override=127.0.0.1:9000&scheme=http"
    assert f.parent.url == "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert f.contains(f.child("seeds/seed-1")) and not f.contains(Folder.parse("s3://bucket/runs/best2"))
    src = tmp_path / "src"
    (src / "checkpoints").mkdir(parents=True)
    (src / "checkpoints" / "last.pt").write_bytes(b"x" * 10)
    (src / "metrics.json").write_text("{}")
    for where in (tmp_path / "local", f"file://{tmp_path}/uri"):
        dest = Folder.parse(where)
        assert not dest.exists() and dest.files() == []
        dest.upload(src)
        assert dest.files() == ["checkpoints/last.pt", "metrics.json"] and dest.exists("metrics.json")
        dest.write_text("a/b.txt", "hello")
        assert dest.read_text("a/b.txt", 5) == "hello" and dest.read_text("missing", 5) is None
        with pytest.raises(S9Error, match="larger than"):
            dest.read_text("a/b.txt", 4)
        assert dest.listing(dirs=True) == ["a", "checkpoints"] and dest.listing(dirs=False) == ["metrics.json"]
        dest.download(tmp_path / "back" / dest.name)
        assert (tmp_path / "back" / dest.name / "checkpoints" / "last.pt").read_bytes() == b"x" * 10
        dest.delete()
        assert not dest.exists()


def test_next_commands_parse_with_the_real_cli() -> None:
    from s9tune.cli import build_parser, options_from
    from s9tune.nextsteps import after_search, retrain_resume
    from s9tune.options import RetrainOptions

    results, retrain = after_search("/data/searches/smoke-1", Path("/d"), None)
    assert results == "s9tune results /data/searches/smoke-1"
    assert retrain == "s9tune retrain /data/searches/smoke-1 --data-dir /d --out runs/smoke-1"
    _, retrain = after_search("s3://b/s9tune/default-k8s", None, "auto")
    assert retrain == "s9tune retrain s3://b/s9tune/default-k8s --out s3://b/s9tune/default-k8s-retrain --address auto"
    args = build_parser().parse_args([*shlex.split(retrain)[1:], "--set", "width=8", "--gpus-per-run", "0.5"])
    again = retrain_resume(options_from(RetrainOptions, args))
    back = build_parser().parse_args(shlex.split(again)[1:])
    assert back.resume and {k: v for k, v in vars(back).items() if k != "resume"} == {
        k: v for k, v in vars(args).items() if k != "resume"
    }


def test_a_seed_that_failed_for_good_is_in_the_table_and_the_others_count() -> None:
    from s9tune.retraining import Retrain, _seed_summary, summary_lines
    from s9tune.search.execution.retrain_seeds import SeedResult

    seeds = [SeedResult(0, "completed"), SeedResult(1, "error", error="RuntimeError: CUDA out of memory")]
    per_seed = [
        {"seed": 0, "status": "completed", "test_accuracy": 0.75, "test_loss": 0.8, "run": "."},
        {"seed": 1, "status": "error", "test_accuracy": None, "test_loss": None, "run": "seeds/seed-1",
         "error": "RuntimeError: CUDA out of memory"},
    ]  # fmt: skip
    metrics = {"status": "completed", "epochs": 2, "best_trial": "t", "experiment": "e", **_seed_summary(per_seed, 9.0)}
    r = Retrain(Folder.parse("/tmp/rt"), metrics, seeds)
    assert r.failed == [seeds[1]] and not r.interrupted
    lines = summary_lines(r)
    assert "seed   1  error           -  seeds/seed-1  RuntimeError: CUDA out of memory" in lines
    assert "Test accuracy over 1 seeds: 75.00% ± 0.00% (mean ± std)" in lines
