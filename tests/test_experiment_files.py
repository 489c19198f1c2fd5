"""Reading an experiment executes nothing: `results` and `retrain` read Tune's per-trial JSON and
text files only (search/experiment/tune_files.py), and a trial's status follows from them as Tune's own
state says it (checked on the real searches). `search --resume`, which must unpickle Tune's
state, refuses an experiment whose record does not match it."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import SEARCH_SPACE

from s9tune.cli import main
from s9tune.errors import S9Error
from s9tune.search.experiment.record import ExperimentRef, check_resumable, load_experiment
from s9tune.search.space.space import load_space


class Payload:
    """Unpickling this creates `path`: the stand-in for code someone planted in an experiment."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def row(epoch: int, *, done: bool = False, date: str = "2026-11-29_10-00-00", **extra) -> dict:
    return {
        "epoch": epoch,
        "training_iteration": epoch,
        "val_accuracy": 0.1 * epoch,
        "time_total_s": 2.0 * epoch,
        "diverged": 0,
        "done": done,
        "date": date,
        **extra,
    }


def add_trial(exp: Path, index: int, trial_id: str, rows: list[dict], failures: list[str] = ()) -> None:
    d = exp / f"train_trial_{trial_id}_{index}_max_lr=0.1000_2026-11-29_10-00-00"
    d.mkdir()
    (d / "params.json").write_text(json.dumps({"max_lr": 0.1 * index, "pct_start": 0.2, "aug_strength": 1.0}))
    (d / "result.json").write_text("".join(json.dumps({**r, "trial_id": trial_id}) + "\n" for r in rows))
    if failures:
        (d / "error.txt").write_text(
            "".join(f"Failure # {n} (occurred at {date})\nTraceback ...\n" for n, date in enumerate(failures, 1))
        )


def new_experiment(tmp_path: Path) -> Path:
    """tmp_path/st/exp as `search` creates it (the shared space, max_failures 2), no trials yet."""
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    ExperimentRef(str(tmp_path / "st"), "exp").create(load_space(tmp_path / "space.yaml"), max_failures=2)
    return tmp_path / "st" / "exp"


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    """An experiment as Tune lays it out, with one trial of every status (max_failures 2, 3 epochs)."""
    exp = new_experiment(tmp_path)
    add_trial(exp, 1, "aaaaaaa1", [row(1), row(2), row(3, done=True)])
    add_trial(exp, 2, "aaaaaaa2", [row(1, done=True)])  # ASHA stopped it
    add_trial(exp, 3, "aaaaaaa3", [row(1), {**row(2), "diverged": 1, "val_accuracy": 0.0}])
    add_trial(exp, 4, "aaaaaaa4", [], failures=["2026-11-29_10-00-01"] * 3)  # failed 3 times: max_failures 2
    # failed twice, retried from its checkpoint and then finished: its error.txt stays
    add_trial(
        exp,
        5,
        "aaaaaaa5",
        [row(1), row(2, date="2026-11-29_10-00-09"), row(3, val_accuracy=0.5)],
        failures=["2026-11-29_10-00-05"] * 2,
    )
    add_trial(exp, 6, "aaaaaaa6", [row(1)])  # running when the driver stopped
    add_trial(exp, 7, "aaaaaaa7", [row(1)], failures=["2026-11-29_10-00-05"])  # waiting for its retry
    # errored for good, then resumed (resume_errored) and reporting again when the driver stopped
    add_trial(exp, 8, "aaaaaaa8", [row(1, date="2026-11-29_10-00-09")], failures=["2026-11-29_10-00-05"] * 3)
    return exp


def test_status_follows_from_the_trial_files(synthetic: Path) -> None:
    exp = load_experiment(str(synthetic))
    got = {r.trial_id: (r.status, r.epochs) for r in exp.rows}
    assert got == {
        "aaaaaaa1": ("completed", 3),
        "aaaaaaa2": ("stopped", 1),
        "aaaaaaa3": ("diverged", 1),
        "aaaaaaa4": ("error", 0),
        "aaaaaaa5": ("completed", 3),
        "aaaaaaa6": ("unfinished", 1),
        "aaaaaaa7": ("unfinished", 1),
        "aaaaaaa8": ("unfinished", 1),
    }
    assert [r.trial_id for r in exp.rows] == [f"aaaaaaa{i}" for i in range(1, 9)]  # Tune's order
    assert exp.best().trial_id == "aaaaaaa5" and exp.interrupted()


def test_max_failures_comes_from_the_record(synthetic: Path) -> None:
    record = json.loads((synthetic / "s9tune_space.json").read_text())
    (synthetic / "s9tune_space.json").write_text(json.dumps({**record, "max_failures": 0}))
    statuses = {r.trial_id: r.status for r in load_experiment(str(synthetic)).rows}
    assert statuses["aaaaaaa7"] == "error"  # one failure is final when no retry is allowed


def test_damaged_files_are_one_line(synthetic: Path, capsys: pytest.CaptureFixture) -> None:
    params = next(synthetic.glob("train_trial_aaaaaaa1_*")) / "params.json"
    params.write_bytes(b"\xff\xfe not utf-8")
    assert main(["results", str(synthetic)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8" in err
    params.write_text("[" * 100_000)
    assert main(["results", str(synthetic)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (synthetic / "s9tune_space.json").write_text('{"num_samples": "many"}')
    assert main(["results", str(synthetic)]) == 2
    assert "not a valid s9tune record" in capsys.readouterr().err


def test_a_params_file_cut_short_by_a_kill_is_left_out_if_the_trial_never_reported(synthetic: Path) -> None:
    """A driver killed while Tune wrote a new trial's params.json leaves it cut short, and one
    killed during Tune's staging copy leaves it empty; resume and results must go on without that
    trial. Anything else that does not parse, with results beside it, is damage: one line."""
    trial = next(synthetic.glob("train_trial_aaaaaaa8_*"))
    (trial / "params.json").write_text('{"max_lr": 0.1, "pct_')
    with pytest.raises(S9Error, match="not valid JSON"):
        load_experiment(str(synthetic))
    # Tune's staging copy cut by a kill: params.json truncated to nothing, result.json whole
    # (the 1,000-config scale run's resume hit this); the journal speaks for a finished run
    (trial / "params.json").write_text("")
    assert "aaaaaaa8" not in [r.trial_id for r in load_experiment(str(synthetic)).rows]
    for f in trial.iterdir():
        if f.name != "params.json":
            f.unlink()
    (trial / "params.json").write_text('{"max_lr": 0.1, "pct_')
    assert "aaaaaaa8" not in [r.trial_id for r in load_experiment(str(synthetic)).rows]
    (trial / "params.json").write_text("")
    assert len(load_experiment(str(synthetic)).rows) == 7


def test_results_run_nothing_planted_in_pickles(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ran = tmp_path / "payload-ran"
    payload = pickle.dumps(Payload(ran))
    for name in ("tuner.pkl", "searcher-state-2026.pkl"):
        (synthetic / name).write_bytes(payload)
    for trial in synthetic.glob("train_trial_*"):
        (trial / "params.pkl").write_bytes(payload)
        (trial / "error.pkl").write_bytes(payload)
    assert main(["results", str(synthetic)]) == 0
    assert "aaaaaaa5" in capsys.readouterr().out and not ran.exists()
    pickle.loads(payload)  # the payload is live: loading it is what would have run it
    assert ran.exists()


def test_resume_refuses_an_experiment_its_record_does_not_describe(synthetic: Path) -> None:
    ref = ExperimentRef.parse(str(synthetic))
    with pytest.raises(S9Error, match="no Tune state"):
        check_resumable(ref)
    (synthetic / "tuner.pkl").write_bytes(b"")
    trials = [
        [json.dumps({"trainable_name": "train_trial", "config": json.loads(p.read_text())}), "{}"]
        for p in sorted(synthetic.glob("train_trial_*/params.json"))
    ]
    (synthetic / "experiment_state-2026-11-29_10-00-00.json").write_text(
        json.dumps({"runner_data": {"_metric": "val_accuracy"}, "trial_data": trials})
    )
    assert check_resumable(ref).num_samples == SEARCH_SPACE["num_samples"]
    # a re-evaluation run adds its config id and seed (and nothing else)
    first = next(synthetic.glob("train_trial_*")) / "params.json"
    searched = json.loads(first.read_text())
    first.write_text(json.dumps({**searched, "config_id": "aaaaaaa0", "rerun_seed": 1}))
    assert check_resumable(ref).num_samples == SEARCH_SPACE["num_samples"]
    first.write_text(json.dumps({**searched, "rerun_seed": 1}))
    with pytest.raises(S9Error, match="do not match s9tune's record"):
        check_resumable(ref)
    # a trial whose parameters the record does not search: another search's folder
    (next(synthetic.glob("train_trial_*")) / "params.json").write_text(json.dumps({"lr": 0.1}))
    with pytest.raises(S9Error, match="do not match s9tune's record"):
        check_resumable(ref)
    (synthetic / "s9tune_space.json").unlink()
    with pytest.raises(S9Error, match="not an s9tune experiment"):
        check_resumable(ref)


# -- the real searches (slow): Tune's own statuses, and a payload in Tune's real state ------------
def _tune_statuses(exp: Path) -> dict[str, str]:
    from ray.tune import ExperimentAnalysis  # trusted here: the test wrote this experiment

    return {t.trial_id: t.status for t in ExperimentAnalysis(str(exp)).trials}


TUNE = {"completed": "TERMINATED", "stopped": "TERMINATED", "diverged": "TERMINATED", "error": "ERROR"}


@pytest.mark.slow
def test_statuses_match_tunes_own(search_experiment, failed_search: Path) -> None:
    for exp in (search_experiment[0], failed_search):
        ours = {r.trial_id: TUNE.get(r.status, r.status) for r in load_experiment(str(exp)).rows}
        assert ours == _tune_statuses(exp), exp


def _plant(exp: Path, payload: bytes) -> None:
    """The payload wherever Tune keeps a pickle: its state's cloudpickled entries, tuner.pkl,
    the searcher's state, every trial's params.pkl."""
    for state in exp.glob("experiment_state-*.json"):
        data = json.loads(state.read_text())
        for entry in data["trial_data"]:
            trial = json.loads(entry[0])
            trial["storage"] = {"_type": "CLOUDPICKLE_FALLBACK", "value": payload.hex()}
            entry[0] = json.dumps(trial)
        state.write_text(json.dumps(data))
    for f in [exp / "tuner.pkl", *exp.glob("searcher-state-*.pkl"), *exp.glob("train_trial_*/params.pkl")]:
        f.write_bytes(payload)


@pytest.mark.slow
def test_results_and_retrain_run_no_payload(search_experiment, mini: Path, tmp_path: Path) -> None:
    exp = tmp_path / "st" / "exp"
    shutil.copytree(search_experiment[0], exp)
    ran = tmp_path / "payload-ran"
    _plant(exp, pickle.dumps(Payload(ran)))
    assert main(["results", str(exp)]) == 0
    assert not ran.exists(), "results ran the planted payload"
    args = ["retrain", str(exp), "--data-dir", str(mini), "--epochs", "1", "--set", "width=4"]
    args += ["--set", "train_subset=512", "--out"]  # what is read matters here, not the training
    assert main([*args, str(tmp_path / "rt")]) == 0
    assert not ran.exists(), "retrain ran the planted payload"
    # Ray's own reader is what ran it before: proof that the payload sits where it would run
    import contextlib

    from ray.tune import ExperimentAnalysis

    with contextlib.suppress(Exception):  # the payload breaks Tune's state after it ran; only that it ran counts
        ExperimentAnalysis(str(exp))
    assert ran.exists()


def test_results_rank_by_the_last_epoch_best_first_in_every_file(tmp_path: Path) -> None:
    """Under ASHA the ranking is the last epoch of a complete schedule (what a retrain
    reproduces), never a mid-schedule peak at high LR; complete schedules first; every file
    and the table best first."""
    import csv

    exp = new_experiment(tmp_path)
    peak = [row(1, val_accuracy=0.2), row(2, val_accuracy=0.9), row(3, val_accuracy=0.5, done=True)]
    add_trial(exp, 1, "aaaaaaa1", peak)  # the best epoch of all, mid-schedule; ends third
    add_trial(exp, 2, "aaaaaaa2", [row(1, val_accuracy=0.3), row(2, val_accuracy=0.6), row(3, val_accuracy=0.7)])
    add_trial(exp, 3, "aaaaaaa3", [row(1, val_accuracy=0.1), row(2, val_accuracy=0.3), row(3, val_accuracy=0.6)])
    add_trial(exp, 4, "aaaaaaa4", [row(1, val_accuracy=0.95, done=True)])  # stopped by ASHA: after complete ones
    assert main(["results", str(exp)]) == 0
    expected = ["aaaaaaa2", "aaaaaaa3", "aaaaaaa1", "aaaaaaa4"]
    with open(exp / "trials.csv", newline="") as fh:
        assert [r["trial"] for r in csv.DictReader(fh)] == expected
    board = json.loads((exp / "leaderboard.json").read_text())
    assert [r["trial"] for r in board["rows"]] == expected
    assert (exp / "best_config.yaml").read_text().startswith("# best trial aaaaaaa2 ")
    assert load_experiment(str(exp)).best().val_accuracy == pytest.approx(0.7)


def test_halving_leaderboard_is_best_first_at_the_highest_budget(tmp_path: Path) -> None:
    """Under halving a config ranks by its value at the highest budget it reached; the config
    rows of leaderboard.json and the table come best first, as trials.csv's runs do."""
    import dataclasses

    from test_halving import space

    from s9tune.search.experiment.export import leaderboard_rows, trial_rows
    from s9tune.search.experiment.trials import Experiment, TrialRow
    from s9tune.search.space.dists import Dist

    def run(cid: str, budget: int, value: float) -> TrialRow:
        cfg = {"max_lr": 0.5}
        return TrialRow(f"t{cid}{budget}", cfg, "completed", budget, value, value, 1.0, [value], cid, budget)

    rows = [run("c0", 2, 0.3), run("c1", 2, 0.6), run("c2", 2, 0.5), run("c1", 4, 0.55), run("c2", 4, 0.7)]
    sp = dataclasses.replace(space((2, 4), 0.5, 3), dists=(Dist("max_lr", "uniform", 0.05, 2.0),))
    exp = Experiment(str(tmp_path), sp, rows)
    assert [r["config"] for r in leaderboard_rows(exp)] == ["c2", "c1", "c0"]
    assert [r["trial"] for r in trial_rows(exp)][:2] == ["tc24", "tc12"]
    assert exp.best().trial_id == "tc24"
