"""A real halving search on the mini slice (Ray Tune, 2 CPUs): every run ends its own complete
schedule, the top `keep` are rerun longer, Optuna learns only from complete schedules, and the
experiment is one Tune experiment that Ray, TensorBoard, `results`, `retrain` and `--resume` read."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SEARCH_SPACE, _require_mini, assert_resumed_not_restarted, search_cmd
from conftest import trial_runs as runs

pytestmark = pytest.mark.slow

HALVING = {**SEARCH_SPACE, "num_samples": 4, "scheduler": {"type": "halving", "budgets": [1, 3], "keep": 0.5}}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict:
    """One halving search through the CLI, SIGKILLed once a promoted run is part-way and then
    resumed: every test below reads the experiment it ends with, so all of it holds after a
    resume too. Returns the experiment and the runs that had finished before the kill."""
    from conftest import kill_driver

    mini = _require_mini(request)
    tmp = tmp_path_factory.mktemp("halving")
    exp = tmp / "st" / "h"
    cmd = search_cmd(tmp, mini, "h", HALVING)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            time.sleep(0.2)  # polling for the event below, not waiting in its place
            now = runs(exp) if exp.exists() else {}
            # a promoted run part-way with a checkpoint on disk: the kill interrupts a run that
            # resume can continue rather than restart
            if any(
                r["params"]["budget"] == 3 and 0 < len(r["rows"]) < 3 and any((exp / name).glob("checkpoint_*"))
                for name, r in now.items()
            ):
                break
            assert proc.poll() is None, "search ended before it could be killed"
        else:
            pytest.fail("no promoted run started in time")
    finally:
        kill_driver(proc)
    at_kill = runs(exp)
    done = {k: r["rows"] for k, r in at_kill.items() if r["rows"] and len(r["rows"]) == r["params"]["budget"]}
    cut = {k: r["rows"] for k, r in at_kill.items() if len(r["rows"]) < r["params"]["budget"]}
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"exp": exp, "done_before_kill": done, "cut_by_kill": cut}


@pytest.fixture(scope="module")
def halving(killed_and_resumed: dict) -> Path:
    return killed_and_resumed["exp"]


def test_every_run_ends_its_own_complete_schedule(halving: Path) -> None:
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(halving), default_metric="val_accuracy", default_mode="max")
    assert len(analysis.trials) == 4 + 2  # 4 configs at 1 epoch, ceil(0.5 * 4) = 2 of them at 3
    frames = analysis.trial_dataframes
    for t in analysis.trials:
        df, budget = frames[t.trial_id], t.config["budget"]
        assert int(df["training_iteration"].iloc[-1]) == budget  # the last iteration is a budget
        assert df["lr"].iloc[-1] <= 0.01 * t.config["max_lr"]  # annealed: the end of its own schedule
    first = {t.config["config_id"]: t for t in analysis.trials if t.config["budget"] == 1}
    longer = [t for t in analysis.trials if t.config["budget"] == 3]
    assert len(first) == 4 and len({t.config["config_id"] for t in longer}) == 2
    # a promoted run trains its config from scratch: same searched values, epoch 1 again
    value = {cid: frames[t.trial_id]["val_accuracy"].iloc[-1] for cid, t in first.items()}
    # the top 2 by first-budget value; on a small validation set values tie often (126 of 814
    # images for two configs), and a tie goes to the config that started first: its number in
    # the first budget's study, the order TPE proposed them in
    from conftest import optuna_study

    started: dict[str, int] = {}
    for trial in optuna_study(halving, "h").trials:
        started.setdefault(trial.user_attrs["config_id"], trial.number)
    top = sorted(value, key=lambda cid: (-value[cid], started[cid]))[:2]
    assert {t.config["config_id"] for t in longer} == set(top)
    for t in longer:
        assert t.config["max_lr"] == first[t.config["config_id"]].config["max_lr"]
        # from epoch 1 to 3; a run the SIGKILL caught may repeat epochs after its last checkpoint
        assert_resumed_not_restarted([int(e) for e in frames[t.trial_id]["epoch"]], 3)


def test_optuna_learns_only_complete_first_budget_schedules(halving: Path) -> None:
    """The experiment holds its Optuna storage: `optuna.load_study` reads one COMPLETE trial per
    config at the first budget, holding that budget's value, and the 3-epoch runs in a study of
    their own, each trial naming its config and the Tune trial that ran it."""
    import optuna
    from conftest import optuna_study

    trials = optuna_study(halving, "h").trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.user_attrs["config_id"] for t in complete}) == 4
    # a run the SIGKILL caught may have left a trial marked lost: it never ran, nothing else may
    assert all(t.state == optuna.trial.TrialState.COMPLETE or t.user_attrs.get("lost") for t in trials)
    first = {
        r["params"]["config_id"]: r["rows"][-1]["val_accuracy"]
        for r in runs(halving).values()
        if r["params"]["budget"] == 1
    }
    assert {t.user_attrs["config_id"]: t.value for t in complete} == pytest.approx(first)
    assert trials[0].params["max_lr"] == 0.4  # the baseline first
    longer = [t for t in optuna_study(halving, "h@3").trials if t.state == optuna.trial.TrialState.COMPLETE]
    third = {
        r["params"]["config_id"]: r["rows"][-1]["val_accuracy"]
        for r in runs(halving).values()
        if r["params"]["budget"] == 3
    }
    assert {t.user_attrs["config_id"]: t.value for t in longer} == pytest.approx(third) and len(third) == 2


def test_tensorboard_has_a_run_per_run_with_its_budget(halving: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = sorted(halving.glob("train_trial_*"))
    assert len(dirs) == 6
    for d in dirs:
        ea = EventAccumulator(str(d))
        ea.Reload()
        info = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        assert b"budget" in info and b"max_lr" in info, d


def test_results_and_best_config_use_the_highest_budget(halving: Path, capsys: pytest.CaptureFixture) -> None:
    from s9tune.cli import main
    from s9tune.config import TrainConfig
    from s9tune.search.experiment.record import load_experiment

    assert main(["results", str(halving)]) == 0
    out = capsys.readouterr().out
    assert "val@1" in out and "val@3" in out
    exp = load_experiment(str(halving))
    configs = exp.configs()
    assert len(configs) == 4 and [3 in c.values for c in configs] == [True, True, False, False]  # longest first
    best = exp.best()
    assert best.epochs == 3 and best.val_accuracy == max(c.values[3] for c in configs[:2])
    cfg = TrainConfig.from_yaml(halving / "best_config.yaml")
    assert cfg.epochs == 3 and cfg.max_lr == best.params["max_lr"]
    board = json.loads((halving / "leaderboard.json").read_text())
    assert [row["config"] for row in board["rows"]] == [c.config_id for c in configs]
    assert board["importance"] == {} and "first budget (1-epoch schedules)" in board["importance_basis"]


def test_retrain_takes_the_best_config(halving: Path, mini: Path, tmp_path: Path) -> None:
    from s9tune.cli import main
    from s9tune.search.experiment.record import load_experiment

    best = load_experiment(str(halving)).best()
    out = tmp_path / "rt"
    args = ["retrain", str(halving), "--data-dir", str(mini), "--epochs", "1", "--set", "width=4", "--out", str(out)]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["best_trial"] == best.trial_id and m["config"]["max_lr"] == best.params["max_lr"]


def test_resume_after_sigkill_continued_the_rungs(killed_and_resumed: dict) -> None:
    """No finished run lost or rerun, no promotion repeated, and the plan (4 + 2 runs) complete."""
    exp, done_before = killed_and_resumed["exp"], killed_and_resumed["done_before_kill"]
    cut = killed_and_resumed["cut_by_kill"]
    assert done_before
    # the kill interrupted something: a promoted run part-way through its schedule
    assert any(rows and len(rows) < 3 for rows in cut.values()), cut
    final = runs(exp)
    pairs = [(r["params"]["config_id"], r["params"]["budget"]) for r in final.values()]
    assert len(pairs) == len(set(pairs)) == 6, pairs  # no run twice, no promotion repeated
    assert sorted(b for _, b in pairs) == [1, 1, 1, 1, 3, 3]
    for name, rows in done_before.items():
        assert final[name]["rows"] == rows, f"{name} was rerun or changed"
    for r in final.values():
        # each run from epoch 1 to its budget; the run the SIGKILL caught goes on from its last
        # checkpoint (CheckpointPacer may have skipped some), so it may repeat epochs, never epoch 1
        assert_resumed_not_restarted([row["epoch"] for row in r["rows"]], r["params"]["budget"])
    for name, rows in cut.items():  # each run the kill cut short went on from where it was
        assert final[name]["rows"][: len(rows)] == rows and len(final[name]["rows"]) > len(rows), name
