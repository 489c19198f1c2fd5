"""The shared search (conftest.search_experiment) was stopped with Ctrl-C mid-run and continued
with --resume: Ctrl-C exits 130 with the resume command, every trial finished before it is
intact, and the experiment ends with num_samples trials, none restarted from scratch.
(SIGKILL, then --resume: test_s3.py under ASHA, test_halving_search.py under halving.)"""

from __future__ import annotations

import json

import pytest
from conftest import assert_resumed_not_restarted, result_lines

pytestmark = pytest.mark.slow


def test_ctrl_c_then_resume(search_experiment) -> None:
    from ray.tune import ExperimentAnalysis

    exp, _ = search_experiment
    info = json.loads((exp.parent.parent / "interrupt.json").read_text())
    assert info["returncode"] == 130
    first = (exp.parent.parent / "console-1.txt").read_text()
    assert "Interrupted. Continue with: s9tune search" in first and "--name exp --resume" in first
    assert info["finished"], "no trial had finished before the interrupt"
    final = result_lines(exp)
    assert len(final) == 6, sorted(final)
    for name, lines in info["finished"].items():
        assert final[name] == lines, f"{name} was rerun or changed"
    for lines in final.values():
        # no trial restarted from scratch
        assert_resumed_not_restarted([json.loads(line)["epoch"] for line in lines])
    assert all(t.status == "TERMINATED" for t in ExperimentAnalysis(str(exp)).trials)
