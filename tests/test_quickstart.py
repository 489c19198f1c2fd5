"""examples/quickstart.py, run as a user runs it: from a folder of its own, through the Python API
alone; it must finish, print the pick and the retrain's test accuracy, and write only under
that folder (searches/ and runs/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, _require_mini


@pytest.mark.slow
@pytest.mark.realdata
def test_quickstart_runs_from_any_folder(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    mini = _require_mini(request)
    here = tmp_path / "somewhere"
    here.mkdir()
    repo_before = _repo_state()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), "--data-dir", str(mini), "--num-samples", "3"],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"picked trial \w+: \d+\.\d\d% val over 1 run\(s\)", out), out
    assert re.search(r"test accuracy \d+\.\d\d% \(\d+/1017\)", out), out
    assert sorted(p.name for p in here.iterdir()) == ["runs", "searches"]
    (exp,) = (here / "searches").iterdir()
    assert (exp / "trials.csv").is_file() and (here / "runs" / exp.name / "report.html").is_file()
    assert _repo_state() == repo_before, "the example wrote into the repository"


def _repo_state() -> set[str]:
    """Every changed, new or ignored path git sees in the repository (a new `searches/` there
    would be ignored, hence --ignored), without Python's byte-code caches."""
    proc = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {line for line in proc.stdout.splitlines() if "__pycache__" not in line and ".pytest_cache" not in line}
