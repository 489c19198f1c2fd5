"""Shared fixtures: tiny CIFAR-format data sets built in tmp dirs, and the real mini slice."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@contextlib.contextmanager
def benchmarks_on_path() -> Iterator[None]:
    """The benchmark scripts import each other as they do when run: from their own folder."""
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def run_script(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """A script run as a person runs it (this Python, from the repository root, no GPU); it
    must exit 0."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def make_batch(n: int, seed: int, label_name: str = "batch") -> dict:
    """A batch in the official layout: `data` (N, 3072) uint8 in CHW order, `labels` list."""
    rng = np.random.default_rng(seed)
    labels = [int(i % 10) for i in range(n)]
    rng.shuffle(labels)
    # class-dependent colour so a model can learn something from the tiny set
    base = np.array(labels, dtype=np.float64)[:, None] * 20.0
    data = np.clip(rng.normal(base + 40, 30, size=(n, 3072)), 0, 255).astype(np.uint8)
    return {
        b"batch_label": label_name.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def write_cifar_dir(folder: Path, n_train: int = 40, n_test: int = 30) -> Path:
    """Write cifar-10-batches-py/ with 5 training batches, a test batch and batches.meta."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(make_batch(n_train, i), protocol=2))
    (batches / "test_batch").write_bytes(pickle.dumps(make_batch(n_test, 99), protocol=2))
    meta = {
        b"label_names": [
            c.encode()
            for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
        ]
    }
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def make_tarball(src_root: Path, dest: Path) -> str:
    """tar.gz of src_root/cifar-10-batches-py, as the official file is laid out; returns md5."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    dest.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


@pytest.fixture(scope="session", autouse=True)
def private_ray_temp_dir() -> Iterator[Path]:
    """Every Ray this test session starts (in-process, or in an s9tune subprocess, which
    inherits the variable) keeps its sessions, sockets and address file in a folder of its own,
    not in the machine's shared /tmp/ray. Short, under /tmp: Ray's socket paths have a length
    limit. Multi-node tests still give each node its own --temp-dir."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="s9r", dir="/tmp"))
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    """A data dir holding a tiny CIFAR-10 (5 x 40 training images, 30 test images)."""
    root = tmp_path / "cifar"
    write_cifar_dir(root)
    return root


def driver_tree(pid: int) -> list:
    """A search driver and every process its Ray started: its descendants, and the processes
    (reparented or not) that name the Ray session folder Ray named after the driver's pid.
    Matching on this one driver's pids, never on process names, leaves other Rays alone."""
    import psutil

    try:
        procs = {p.pid: p for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]}
    except psutil.NoSuchProcess:
        procs = {}
    tag = f"_{pid}/"
    for p in psutil.process_iter(["cmdline"]):
        if "session_" in " ".join(p.info["cmdline"] or []) and tag in " ".join(p.info["cmdline"] or []):
            procs[p.pid] = p
    return list(procs.values())


def kill_driver(proc) -> None:
    """SIGKILL a search driver and the Ray it started, as a crash would leave them."""
    import psutil

    for p in driver_tree(proc.pid):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def mini_dir() -> Path:
    return Path(os.environ.get("S9TUNE_MINI_DIR", REPO.parent / "shared" / "data" / "cifar10-mini"))


@pytest.fixture(scope="session")
def mini() -> Path:
    """The real 5,085-image slice of CIFAR-10. CI sets S9TUNE_REQUIRE_REALDATA=1, so a missing
    slice fails there instead of skipping silently."""
    path = mini_dir()
    if not (path / "cifar-10-batches-py" / "test_batch").exists():
        if os.environ.get("S9TUNE_REQUIRE_REALDATA"):
            pytest.fail(f"real-data tests need the mini slice at {path}")
        pytest.skip(f"no cifar10-mini at {path}")
    return path


# -- searches shared by several test modules (each costs about a minute on 2 cores) ----------
SEARCH_SPACE = {
    "num_samples": 6,
    "fixed": {"width": 8, "epochs": 3, "batch_size": 32, "train_subset": 768, "val_size": 0.2, "device": "cpu"},
    "space": {
        "max_lr": {"type": "loguniform", "low": 0.05, "high": 2.0},
        "pct_start": {"type": "uniform", "low": 0.1, "high": 0.5},
        "aug_strength": {"type": "uniform", "low": 0.0, "high": 2.0},
    },
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "searcher": {"type": "optuna", "seed": 0},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}

FAILING_SPACE = {
    "num_samples": 4,
    "fixed": {"width": 4, "epochs": 1, "batch_size": 64, "train_subset": 256, "val_size": 0.2},
    "space": {
        "max_lr": {"type": "loguniform", "low": 1e5, "high": 1e6},
        "device": {"type": "choice", "values": ["cpu", "cuda"]},
    },
    "baseline": {"max_lr": 1e5, "device": "cpu"},
    "scheduler": {"grace_period": 1},
    "searcher": {"seed": 3},
}


def _require_mini(request: pytest.FixtureRequest) -> Path:
    path = mini_dir()
    if not (path / "cifar-10-batches-py" / "test_batch").exists():
        request.getfixturevalue("mini")  # fails (CI) or skips with the reason
    return path


def assert_resumed_not_restarted(epochs: list[int], last: int | None = None, *, rows_lost: bool = False) -> None:
    """The epochs a trial reported, across interrupts: a resumed trial goes on from its last
    checkpoint, so it may repeat the epochs after it (CheckpointPacer may have skipped some), but
    it never restarts at epoch 1. `rows_lost`: on cloud storage the rows a killed driver had not
    uploaded are gone, so the rows may begin after epoch 1. `last`: the epoch it must end at."""
    assert rows_lost or epochs[0] == 1, epochs
    assert 1 not in epochs[1:], epochs
    assert all(b == a + 1 or 1 < b <= a for a, b in itertools.pairwise(epochs)), epochs
    if last is not None:
        assert epochs[-1] == last, epochs


def optuna_study(exp: Path, name: str):
    """A study of the experiment's Optuna journal, read through Optuna's public API alone."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def trial_runs(exp: Path) -> dict[str, dict]:
    """Trial folder -> its params (budget, config_id, searched values) and result rows."""
    out = {}
    for d in sorted(exp.glob("train_trial_*")):
        if not (d / "params.json").exists():
            continue  # Tune is still creating it
        rows = []
        for line in (d / "result.json").read_text().splitlines() if (d / "result.json").exists() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line Tune is still writing (or was, when the driver was killed)
        out[d.name] = {"params": json.loads((d / "params.json").read_text()), "rows": rows}
    return out


def result_lines(exp: Path) -> dict[str, list[str]]:
    """Each trial folder's result.json lines (one per epoch), as far as written."""
    return {f.parent.name: f.read_text().splitlines() for f in exp.glob("train_trial_*/result.json")}


def tune_rows(out: Path) -> dict[str, list[dict]]:
    """The rows of each trial of a retrain's Tune experiment (OUT/tune), as far as written."""
    rows: dict[str, list[dict]] = {}
    for f in out.glob("tune/*/result.json"):
        for line in f.read_text().splitlines():
            try:
                rows.setdefault(f.parent.name, []).append(json.loads(line))
            except json.JSONDecodeError:
                break  # still being written
    return rows


def search_cmd(tmp: Path, mini: Path, name: str, space: dict, *extra: str) -> list[str]:
    """`s9tune search` as a user types it: `space` written to tmp/space.yaml, the experiment at
    tmp/st/NAME, on the data at `mini`."""
    import sys

    import yaml

    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    return [
        sys.executable,
        "-m",
        "s9tune",
        "search",
        "--space",
        str(tmp / "space.yaml"),
        "--data-dir",
        str(mini),
        "--storage",
        str(tmp / "st"),
        "--name",
        name,
        *extra,
    ]


@pytest.fixture(scope="session")
def search_experiment(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A real TPE + ASHA search on the mini slice through the CLI, stopped with Ctrl-C
    once the driver reports the first trial ended, then continued with --resume: the
    experiment every search test reads has been through an interrupt. Returns (experiment,
    space file); beside them: console-1.txt / console-2.txt (stdout of both runs, not a tty),
    interrupt.json (exit code, and the trials Tune had finished before the interrupt)."""
    import signal
    import subprocess
    import time

    mini = _require_mini(request)
    tmp = tmp_path_factory.mktemp("search")
    space = tmp / "space.yaml"
    exp = tmp / "st" / "exp"
    # one trial at a time (2 CPUs each on the 2-core CI machine): ASHA's verdicts depend on the
    # order trials reach a rung, which two slots leave to timing; in start order they are the
    # same on every run, so the tests that need a stopped and a complete trial cannot flake
    one_slot = {**SEARCH_SPACE, "resources": {"cpus_per_trial": 2, "gpus_per_trial": 0}}
    cmd = search_cmd(tmp, mini, "exp", one_slot)
    with open(tmp / "console-1.txt", "w") as out:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        try:
            while time.time() < deadline:
                time.sleep(0.2)
                # the first trial the driver reports as ended (stopped or finished: s9tune's own
                # one line per event) leaves four to run, a few seconds' work with actor reuse
                if re.search(r"trial \w+ (stopped by ASHA|finished)", (tmp / "console-1.txt").read_text()):
                    break
                assert proc.poll() is None, "search ended before it could be interrupted"
            else:
                pytest.fail("no trial ended in time")
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                rc = None
        finally:
            kill_driver(proc)  # whatever of its Ray still runs
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(exp))
    finished = {t.trial_id for t in analysis.trials if t.status == "TERMINATED"}
    before = {name: lines for name, lines in result_lines(exp).items() if name.split("_")[2] in finished}
    (tmp / "interrupt.json").write_text(json.dumps({"returncode": rc, "finished": before}))
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    (tmp / "console-2.txt").write_text(res.stdout)
    assert res.returncode == 0, res.stderr[-3000:]
    return exp, space


@pytest.fixture(scope="session")
def failed_search(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A search whose trials all diverge (NaN) or raise (device=cuda here): no trial completes."""
    import ray
    import yaml

    from s9tune.api import run_search
    from s9tune.options import SearchOptions

    mini = _require_mini(request)
    tmp = tmp_path_factory.mktemp("failed")
    (tmp / "s.yaml").write_text(yaml.safe_dump(FAILING_SPACE))
    try:
        # one retry: every raising trial fails twice, then is that trial's error (FailureConfig)
        opts = SearchOptions(space=tmp / "s.yaml", data_dir=mini, storage=str(tmp / "st"), name="bad", max_failures=1)
        exp = run_search(opts)
    finally:
        ray.shutdown()
    assert len(exp.loaded.rows) == 4
    return tmp / "st" / "bad"
