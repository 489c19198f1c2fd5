"""A search stopped with Ctrl-C mid-run, then resumed with --resume: every trial completed before
the interrupt is intact, and the experiment ends with num_samples trials. (SIGKILL, then
--resume: test_s3.py under ASHA, test_halving_search.py under halving.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SEARCH_SPACE, kill_driver

pytestmark = pytest.mark.slow

# grace 3 = max_t: no early stopping, so "complete" is easy to see from the outside
SPACE = {**SEARCH_SPACE, "scheduler": {"type": "asha", "grace_period": 3, "reduction_factor": 2}}


def results(exp: Path) -> dict[str, list[str]]:
    out = {}
    for d in exp.glob("train_trial_*"):
        f = d / "result.json"
        if f.exists():
            out[d.name] = f.read_text().splitlines()
    return out


# SIGKILL then --resume runs in test_s3.py (ASHA, experiment on S3) and test_halving_search.py
@pytest.mark.parametrize("sig", [signal.SIGINT], ids=["ctrl-c"])
def test_interrupt_then_resume(tmp_path: Path, mini: Path, sig: signal.Signals) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    storage, exp = tmp_path / "st", tmp_path / "st" / "k"
    cmd = [sys.executable, "-m", "s9tune", "search", "--space", str(space), "--data-dir", str(mini),
           "--storage", str(storage), "--name", "k"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    complete: dict[str, list[str]] = {}
    try:
        while time.time() < deadline:
            time.sleep(1.0)
            res = results(exp)
            complete = {k: v for k, v in res.items() if len(v) == 3}
            running = [k for k, v in res.items() if 0 < len(v) < 3]
            if complete and running:
                break
            assert proc.poll() is None, "search ended before it could be killed"
        else:
            pytest.fail("no trial completed in time")
        time.sleep(1.0)  # let the driver snapshot the finished trial, as it would in real life
    finally:
        rc = None
        if sig == signal.SIGINT:
            # Ctrl-C reaches the whole foreground process group; Tune stops and saves its state
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        kill_driver(proc)  # SIGKILL; after Ctrl-C, whatever of its Ray still runs
    if sig == signal.SIGINT:
        assert rc == 130, rc  # "Interrupted. Continue with: ... --resume"
    complete = {k: v for k, v in results(exp).items() if len(v) == 3}
    assert complete

    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    final = results(exp)
    assert len(final) == 6, sorted(final)
    for name, lines in complete.items():
        assert final[name] == lines, f"{name} was rerun or changed"
    assert all(len(v) == 3 for v in final.values())  # every trial ran its schedule
    # no trial restarted from scratch: epochs within a trial never repeat
    for name, lines in final.items():
        epochs = [json.loads(line)["epoch"] for line in lines]
        assert epochs == sorted(set(epochs)), (name, epochs)
