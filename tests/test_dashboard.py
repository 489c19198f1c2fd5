"""optuna-dashboard on a search's journal while the search runs: the real server, on 127.0.0.1,
read through its JSON API, stopped by its pid."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import SEARCH_SPACE, kill_driver, trial_runs

pytestmark = pytest.mark.slow

SPACE = {
    **SEARCH_SPACE,
    "fixed": {"width": 4, "epochs": 3, "batch_size": 64, "train_subset": 256, "val_size": 0.2, "device": "cpu"},
    "num_samples": 4,
    "scheduler": {"type": "halving", "budgets": [1, 3], "keep": 0.5},
}


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


@contextmanager
def dashboard(journal: Path, log: Path) -> Iterator[int]:
    """optuna-dashboard on `journal`; yields its port. A port picked free can be taken before
    the server binds it, so a server that exits at start is started again on another."""
    exe = str(Path(sys.executable).with_name("optuna-dashboard"))
    for _ in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(log, "a") as fh:
            server = subprocess.Popen(
                [exe, str(journal), "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref"],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.time() + 60
            while server.poll() is None and time.time() < deadline:
                try:
                    get(port, "/api/meta")
                    break
                except OSError:
                    time.sleep(0.2)
            if server.poll() is None:
                assert time.time() < deadline, log.read_text()
                yield port
                return
        finally:
            server.terminate()  # by its pid: never by name
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    pytest.fail(f"optuna-dashboard did not start: {log.read_text()[-2000:]}")


def trials_of(port: int, study: str) -> list[dict]:
    ids = {s["study_name"]: s["study_id"] for s in get(port, "/api/studies")["study_summaries"]}
    return get(port, f"/api/studies/{ids[study]}")["trials"] if study in ids else []


def complete(port: int) -> int:
    return sum(t["state"] == "Complete" for study in ("d", "d@3") for t in trials_of(port, study))


def test_optuna_dashboard_reads_a_live_search(tmp_path: Path, mini: Path) -> None:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    exp = tmp_path / "st" / "d"
    cmd = [sys.executable, "-m", "s9tune", "search", "--space", str(tmp_path / "space.yaml"), "--data-dir", str(mini)]
    cmd += ["--storage", str(tmp_path / "st"), "--name", "d"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (exp / "optuna.journal").exists():
            assert proc.poll() is None and time.time() < deadline, "the search wrote no journal"
            time.sleep(0.2)
        with dashboard(exp / "optuna.journal", tmp_path / "dashboard.log") as port:
            assert proc.poll() is None, "the search ended before the dashboard could read it live"
            seen = [complete(port)]
            while proc.poll() is None:
                seen.append(complete(port))
                time.sleep(1)
            assert proc.wait() == 0
            first, longer = trials_of(port, "d"), trials_of(port, "d@3")
    finally:
        kill_driver(proc)
    assert seen == sorted(seen) and seen[0] < 6, seen  # it followed the search as runs finished
    runs = {(r["params"]["config_id"], r["params"]["budget"]): r for r in trial_runs(exp).values()}
    # every config, with its searched values and its first-budget value; the longer runs in d@3
    assert len(first) == 4 and len(longer) == 2
    for trials, budget in ((first, 1), (longer, 3)):
        for t in trials:
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            run = runs[(attrs["config_id"], budget)]
            assert t["state"] == "Complete" and attrs["tune_trial_id"] in json.dumps(run["rows"][-1])
            assert t["values"] == [pytest.approx(run["rows"][-1]["val_accuracy"])]
            params = {p["name"]: float(p["param_external_value"]) for p in t["params"]}
            assert params == pytest.approx({k: run["params"][k] for k in params}) and len(params) == 3
