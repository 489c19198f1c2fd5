"""A search or retrain that stops before it starts leaves nothing behind, and every probe of a
cluster is bounded: a loopback forward Ray cannot use, a `ray://` address that is not Ray, Ctrl-C
or SIGTERM while Ray starts, a journal cut mid-write, the private log folder of a retrain."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import SEARCH_SPACE, write_cifar_dir
from test_bad_input import _tune_state
from test_experiment_files import add_trial, new_experiment, row

from s9tune.cli import main

STORAGE_ARGS = ["--storage", "st", "--name", "e"]


def one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("s9tune: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def search_argv(tmp: Path, *extra: str) -> list[str]:
    write_cifar_dir(tmp / "data")
    (tmp / "s.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    return ["search", "--space", str(tmp / "s.yaml"), "--data-dir", str(tmp / "data"), *extra]


@contextmanager
def grpc_on_loopback() -> Iterator[int]:
    """A gRPC server bound to 127.0.0.1 only, as `ssh -L` or `kubectl port-forward` listen: it
    completes the handshake s9tune probes for, but nothing answers at this machine's own IP."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


# -- cluster probes: bounded, one line ---------------------------------------------------------
@pytest.mark.timeout(90)
def test_a_loopback_forward_ray_cannot_use_is_one_line_not_a_hang(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray dials 127.0.0.1:P as this machine's IP:P; where a forward listens on loopback only,
    ray.init retried without end (still hanging after 150 s here). s9tune probes that address."""
    monkeypatch.chdir(tmp_path)
    if own_address().startswith("127."):
        pytest.skip("this machine has no address but loopback, so Ray does not rewrite one")
    with grpc_on_loopback() as port:
        address = f"127.0.0.1:{port}"
        started = time.monotonic()
        assert main(search_argv(tmp_path, "--address", address, *STORAGE_ARGS)) == 2
        took = time.monotonic() - started
    err = one_error(capsys)
    assert f"--address {address}: Ray connects to a loopback address through this machine's own address" in err
    assert "ray://127.0.0.1:PORT" in err and took < 30, (took, err)
    assert not (tmp_path / "st" / "e").exists()


def own_address() -> str:
    """This machine's address as Ray finds it: the source of a route out (UDP: nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))
        except OSError:
            return "127.0.0.1"
        return s.getsockname()[0]


def test_a_ray_client_address_gets_the_same_bounded_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s9tune.search.execution import cluster

    monkeypatch.setattr(cluster, "HANDSHAKE_S", 2.0)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as server:  # accepts TCP, never speaks gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"ray://127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        assert main(search_argv(tmp_path, "--address", address, *STORAGE_ARGS)) == 2
        took = time.monotonic() - started
    assert "did not answer as a Ray cluster within 2 s" in one_error(capsys) and took < 15, took
    assert not (tmp_path / "st" / "e").exists()


def _forward(listen: socket.socket, target: tuple[str, int]) -> None:
    """Copy bytes both ways between each connection to `listen` and `target` (daemon threads)."""

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listen.accept()
            except OSError:
                return
            up = socket.create_connection(target)
            threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
            threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_loopback_forward_to_a_real_head_is_one_line(tmp_path: Path) -> None:
    """The repro: a real `ray start --head`, reached through a forward on 127.0.0.1 only. Today's
    s9tune answers in one line; ray.init itself retries without end."""
    from ray_cluster import running_cluster

    write_cifar_dir(tmp_path / "data")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    with running_cluster() as c, socket.socket() as listen:
        listen.bind(("127.0.0.1", 0))
        listen.listen(16)
        _forward(listen, ("127.0.0.1", c.port))
        address = f"127.0.0.1:{listen.getsockname()[1]}"
        cmd = [sys.executable, "-m", "s9tune", "search", "--space", str(tmp_path / "s.yaml")]
        cmd += ["--data-dir", str(tmp_path / "data"), "--storage", str(tmp_path / "st"), "--name", "e"]
        started = time.monotonic()
        res = subprocess.run([*cmd, "--address", address], env=c.env, capture_output=True, text=True, timeout=300)
        took = time.monotonic() - started
    assert res.returncode == 2 and "Ray connects to a loopback address" in res.stderr, res.stderr[-2000:]
    assert took < 90, took  # the probe's 20 s at most, plus starting Python and loading the data
    assert not (tmp_path / "st" / "e").exists()


# -- an interrupted launch leaves nothing --------------------------------------------------------
def test_ctrl_c_while_ray_starts_leaves_no_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s9tune.api import run_search
    from s9tune.options import SearchOptions
    from s9tune.search.execution import runner

    def interrupted(*args: object, **kwargs: object) -> int:
        assert (tmp_path / "st" / "e" / "s9tune_space.json").exists()  # the record was written
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_start_ray", interrupted)
    write_cifar_dir(tmp_path / "data")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    with pytest.raises(KeyboardInterrupt):
        run_search(
            SearchOptions(space=tmp_path / "s.yaml", data_dir=tmp_path / "data", storage=str(tmp_path / "st"), name="e")
        )
    assert not (tmp_path / "st").exists()  # the experiment and the storage folder it made


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_while_the_cluster_is_probed_leaves_no_experiment(tmp_path: Path) -> None:
    argv = search_argv(tmp_path, "--storage", str(tmp_path / "st"), "--name", "e")
    with socket.socket() as server:  # accepts TCP, never answers: the probe waits out its handshake
        server.bind(("127.0.0.1", 0))
        server.listen()
        cmd = [sys.executable, "-m", "s9tune", *argv, "--address", f"127.0.0.1:{server.getsockname()[1]}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        record = tmp_path / "st" / "e" / "s9tune_space.json"
        deadline = time.monotonic() + 120
        while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record.exists(), proc.stderr.read() if proc.poll() is not None else "no record in time"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not (tmp_path / "st" / "e").exists()
    assert proc.returncode != 0


# -- the journal: a torn last line is trimmed, with a warning ------------------------------------
def test_a_journal_cut_mid_line_is_trimmed_before_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash mid-write leaves a last line without its newline. Optuna skips it when reading
    but appends the next operation to it, after which the journal can never be read again."""
    import optuna

    from s9tune.search.execution.runner import _experiment
    from s9tune.search.searcher.journal import StudyStore
    from s9tune.search.space.space import load_space

    exp = new_experiment(tmp_path)
    add_trial(exp, 1, "aaaaaaa1", [row(1), row(2), row(3)])
    _tune_state(exp)
    store = StudyStore(load_experiment_ref(exp).folder)
    optuna.create_study(study_name="exp", storage=store.storage).ask()
    store.close()
    journal = exp / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":5,"worker_id":"x","trial_id":0,"para')  # the crash
    with caplog.at_level(logging.WARNING, logger="s9tune"):
        _experiment(load_space(tmp_path / "space.yaml"), str(tmp_path / "st"), "exp", resume=True)
    assert journal.read_bytes() == whole
    assert any("optuna.journal: its last line was cut short" in r.getMessage() for r in caplog.records)
    resumed = StudyStore(load_experiment_ref(exp).folder)
    optuna.load_study(study_name="exp", storage=resumed.storage).ask()  # appends after the trim
    resumed.close()
    again = StudyStore(load_experiment_ref(exp).folder)
    assert len(optuna.load_study(study_name="exp", storage=again.storage).trials) == 2


def load_experiment_ref(exp: Path):
    from s9tune.search.experiment.record import ExperimentRef

    return ExperimentRef.parse(str(exp))


# -- retrain's private log folder ---------------------------------------------------------------
def test_retrain_removes_its_private_log_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's output goes to a private temp folder while it runs, then into OUT; the temp folder
    went too. (Before, every retrain left s9tune-log-*/retrain-NAME.log in the temp dir.)"""
    import tempfile
    from contextlib import nullcontext

    from s9tune.api import retrain
    from s9tune.options import RetrainOptions
    from s9tune.search.execution import retrain_seeds

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    monkeypatch.setattr(retrain_seeds, "ray_session", lambda address: nullcontext())
    monkeypatch.setattr(retrain_seeds, "plan_resources", lambda cpus, gpus, dest: (1.0, 0.0, 1))

    def fit_seeds(runs: object, splits: object, **kwargs: object) -> list:
        print("Ray's output")  # lands in the log while the seeds run
        return [SimpleNamespace(status="unfinished")]  # interrupted: no analysis to run

    monkeypatch.setattr(retrain_seeds, "fit_seeds", fit_seeds)
    exp = new_experiment(tmp_path)
    add_trial(exp, 1, "aaaaaaa1", [row(1), row(2), row(3)])
    write_cifar_dir(tmp_path / "data")
    out = tmp_path / "out"
    opts = RetrainOptions(str(exp), str(out), data_dir=tmp_path / "data", epochs=1, sets=("width=4",), progress=False)
    r = retrain(opts)
    assert r.interrupted and r.log == str(out / "retrain.log")
    assert "Ray's output" in (out / "retrain.log").read_text()
    assert os.listdir(system_tmp) == []
