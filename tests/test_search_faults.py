"""Failed runs in a real halving search (Ray Tune on the mini slice), with failures injected by
the test-only fault hook (search/execution/faults.py): a run that raises once (Tune retries it), a
promoted run that always raises (its place goes to the next config in line, and the console
and `results` say so), and a SIGKILL while a failed run's rerun is pending, then --resume."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SEARCH_SPACE, _require_mini, kill_driver, optuna_study, search_cmd, trial_runs

pytestmark = pytest.mark.slow

TINY = {"width": 4, "epochs": 3, "batch_size": 64, "train_subset": 256, "val_size": 0.2, "device": "cpu"}
HALVING = {
    **SEARCH_SPACE,
    "fixed": TINY,
    "num_samples": 4,
    "scheduler": {"type": "halving", "budgets": [1, 3], "keep": 0.5},
}


def with_faults(tmp: Path, faults: list[dict]) -> dict[str, str]:
    (tmp / "faults.json").write_text(json.dumps(faults))
    return {**os.environ, "S9TUNE_TEST_FAULTS": str(tmp / "faults.json")}


def by_run(exp: Path) -> dict[tuple[str, int], dict]:
    """(config, budget) -> its trial's params and rows; each pair must be one trial."""
    runs = list(trial_runs(exp).values())
    pairs = [(r["params"]["config_id"], r["params"]["budget"]) for r in runs]
    assert len(pairs) == len(set(pairs)), pairs  # no run twice, no promotion repeated
    return dict(zip(pairs, runs, strict=True))


def finished(run: dict) -> bool:
    return bool(run["rows"]) and run["rows"][-1]["epoch"] == run["params"]["budget"]


def top(values: dict[str, float], k: int, order: list[str]) -> list[str]:
    """The synchronous rule's ranking: best first, ties to the earlier config."""
    return sorted(values, key=lambda c: (-values[c], order.index(c)))[:k]


@pytest.fixture(scope="module")
def replaced(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict:
    """c1's first-budget run raises once; the first promoted run to reach epoch 2 raises at
    every attempt (Tune's two retries included), so it fails for good."""
    mini = _require_mini(request)
    tmp = tmp_path_factory.mktemp("faults")
    env = with_faults(
        tmp,
        [
            {"config": "c1", "budget": 1, "epoch": 1, "times": 1},
            {"config": "any", "budget": 3, "epoch": 2, "times": -1},
        ],
    )
    res = subprocess.run(search_cmd(tmp, mini, "f", HALVING), env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    claimed = (tmp / "faults.json.any-3.claim").read_text()
    return {"exp": tmp / "st" / "f", "out": res.stdout, "failed": claimed, "tmp": tmp}


def test_a_run_that_raises_once_is_retried_and_counts_once(replaced: dict) -> None:
    runs = by_run(replaced["exp"])
    c1 = runs[("c1", 1)]
    assert finished(c1) and [r["epoch"] for r in c1["rows"]] == [1]  # the failed attempt reported nothing
    assert (replaced["tmp"] / "faults.json.c1-1.attempts").read_text() == "1"
    trials = [t for t in optuna_study(replaced["exp"], "f").trials if t.user_attrs["config_id"] == "c1"]
    assert [t.state.name for t in trials] == ["COMPLETE"]  # a retried run is one run, told once
    assert trials[0].value == pytest.approx(c1["rows"][-1]["val_accuracy"])


def test_a_promoted_run_that_fails_gives_its_place_to_the_next_in_line(replaced: dict) -> None:
    runs, failed = by_run(replaced["exp"]), replaced["failed"]
    first = {cid: r["rows"][-1]["val_accuracy"] for (cid, b), r in runs.items() if b == 1 and finished(r)}
    order = sorted(first, key=lambda c: int(c[1:]))
    assert len(first) == 4
    promoted = {cid for cid, b in runs if b == 3}
    # the synchronous rule: the best first-budget values, in order, until two finish at 3 epochs
    assert promoted == set(top(first, 3, order)) and failed in top(first, 2, order)
    assert not finished(runs[(failed, 3)]) and (replaced["tmp"] / f"faults.json.{failed}-3.attempts").read_text() == "3"
    stand_in = [cid for cid in promoted if runs[(cid, 3)]["params"].get("replaces") == failed]
    assert stand_in == top(first, 3, order)[2:] and finished(runs[(stand_in[0], 3)])
    states = {t.user_attrs["config_id"]: t.state.name for t in optuna_study(replaced["exp"], "f@3").trials}
    assert states == {cid: "FAIL" if cid == failed else "COMPLETE" for cid in promoted}
    # the console says so, and so does `results`
    out = replaced["out"]
    assert f"promoted in place of config {failed}, whose 3-epoch run failed" in out
    assert "error: " in out and "injected fault" in out
    assert f"Config {failed}'s 3-epoch run failed; config {stand_in[0]} was promoted in its place." in out
    board = json.loads((replaced["exp"] / "leaderboard.json").read_text())
    assert board["replacements"] == [
        f"config {failed}'s 3-epoch run failed; config {stand_in[0]} was promoted in its place"
    ]


def test_sigkill_while_a_rerun_is_pending_then_resume(tmp_path: Path, mini: Path) -> None:
    """c2's first-budget run fails for good (three attempts) in the first run of the search,
    which is SIGKILLed then; --resume reruns it (the fourth attempt succeeds). While the rerun is
    pending no promotion may rely on the failure; when it finishes its value enters the ranking.
    The search ends with every (config, budget) run finished exactly once, and the promoted set
    is what the synchronous rule picks over the same events: the top two of all four values,
    plus, if a promotion before the kill relied on c2's failure, the top two without c2."""
    env = with_faults(tmp_path, [{"config": "c2", "budget": 1, "epoch": 1, "times": 3}])
    cmd = search_cmd(tmp_path, mini, "k", HALVING)
    exp = tmp_path / "st" / "k"
    with open(tmp_path / "console-1.txt", "w") as out:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:
                if " error: " in (tmp_path / "console-1.txt").read_text():  # c2 failed for good
                    break
                time.sleep(0.2)
            else:
                assert proc.poll() is not None, "c2 did not fail in time"
        finally:
            kill_driver(proc)
    assert (tmp_path / "faults.json.c2-1.attempts").read_text() == "3"
    res = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = by_run(exp)
    assert all(finished(r) for r in runs.values()), {k: [x["epoch"] for x in r["rows"]] for k, r in runs.items()}
    assert (tmp_path / "faults.json.c2-1.attempts").read_text() == "3"  # the rerun was the fourth, unharmed
    first = {cid: r["rows"][-1]["val_accuracy"] for (cid, b), r in runs.items() if b == 1}
    order = sorted(first, key=lambda c: int(c[1:]))
    assert len(first) == 4
    promoted = {cid for cid, b in runs if b == 3}
    without = {c: v for c, v in first.items() if c != "c2"}
    assert set(top(first, 2, order)) <= promoted <= set(top(first, 2, order)) | set(top(without, 2, order))
    trials = [t for t in optuna_study(exp, "k").trials if t.user_attrs["config_id"] == "c2"]
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]  # the failure kept, the rerun's value added
    assert trials[-1].value == pytest.approx(first["c2"])
