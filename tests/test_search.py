"""A real search on the mini slice with a local Ray (2 CPUs): Optuna TPE + ASHA end to end.

The experiment is read back through Ray's own ExperimentAnalysis, TensorBoard's event reader and
Optuna's `load_study` on the experiment's journal, not only through s9tune's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import mini_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def search(search_experiment):
    return search_experiment


def test_asha_stops_some_trials_and_some_complete(search) -> None:
    from ray.tune import ExperimentAnalysis

    exp, _ = search
    analysis = ExperimentAnalysis(str(exp), default_metric="val_accuracy", default_mode="max")
    assert len(analysis.trials) == 6
    # the epoch each trial ended at (a trial resumed after the interrupt may repeat the epochs
    # after its last checkpoint, so rows can outnumber epochs)
    epochs = {t.trial_id: int(analysis.trial_dataframes[t.trial_id]["epoch"].iloc[-1]) for t in analysis.trials}
    assert any(e < 3 for e in epochs.values()), epochs  # ASHA stopped some early
    assert any(e == 3 for e in epochs.values()), epochs
    df = next(iter(analysis.trial_dataframes.values()))
    for key in ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "lr", "epoch", "images_per_s"):
        assert key in df.columns
    # training_iteration == epoch: one report per epoch
    assert (df["training_iteration"] == df["epoch"]).all()


def test_baseline_is_trial_zero(search) -> None:
    exp, _ = search
    params = [json.loads(p.read_text()) for p in sorted(exp.glob("train_trial_*_1_*/params.json"))]
    assert params == [{"max_lr": 0.4, "pct_start": pytest.approx(5 / 24), "aug_strength": 1.0}]


def test_trials_ran_in_parallel(search) -> None:
    from ray.tune import ExperimentAnalysis

    exp, _ = search
    analysis = ExperimentAnalysis(str(exp))
    spans = []
    for df in analysis.trial_dataframes.values():
        start = df["timestamp"].min() - df["time_total_s"].iloc[0]
        spans.append((start, df["timestamp"].max()))
    overlaps = sum(1 for i, a in enumerate(spans) for b in spans[i + 1 :] if a[0] < b[1] and b[0] < a[1])
    assert overlaps >= 1, spans


def test_trials_reuse_actors(search) -> None:
    """A finished trial's process takes the next trial (reuse_actors): on a GPU a short run was
    mostly process start-up, CUDA context and cuDNN autotuning (benchmarks/RESULTS.md)."""
    exp, _ = search
    pids = {}
    for f in exp.glob("train_trial_*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        pids[f.parent.name] = {r["pid"] for r in rows}
    assert len(pids) == 6
    # 6 trials on 2 slots, across two drivers (Ctrl-C, then --resume): fewer processes than trials
    assert len(set().union(*pids.values())) < len(pids), pids


def test_optuna_learns_only_complete_schedules(search) -> None:
    """A trial that ran its whole schedule is COMPLETE with its final value; one ASHA stopped
    mid-cycle is PRUNED at the step it reached (TPE ranks it below every complete trial), so no
    mid-cycle accuracy is learnt as if it were a final one. The study is the experiment's own
    (optuna.journal), read with Optuna's public API."""
    import optuna
    from conftest import optuna_study
    from ray.tune import ExperimentAnalysis

    exp, _ = search
    trials = optuna_study(exp, "exp").trials
    assert len(trials) == 6
    analysis = ExperimentAnalysis(str(exp))
    finals = {
        t.trial_id: float(analysis.trial_dataframes[t.trial_id]["val_accuracy"].iloc[-1])
        for t in analysis.trials
        if analysis.trial_dataframes[t.trial_id]["epoch"].iloc[-1] == 3
    }
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(complete) + len(pruned) == 6 and complete and pruned
    assert {t.user_attrs["tune_trial_id"]: t.value for t in complete} == pytest.approx(finals)
    assert all(t.last_step < 3 for t in pruned)
    assert trials[0].params["max_lr"] == 0.4


def test_ray_reads_it(search) -> None:
    from ray.tune import ExperimentAnalysis

    exp, _ = search
    analysis = ExperimentAnalysis(str(exp), default_metric="val_accuracy", default_mode="max")
    assert len(analysis.trials) == 6 and all(t.status == "TERMINATED" for t in analysis.trials)
    best = analysis.get_best_trial(scope="last")
    assert analysis.get_best_checkpoint(best) is not None


def test_tensorboard_shows_every_trial_with_hparams(search) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    exp, _ = search
    dirs = sorted(exp.glob("train_trial_*"))
    assert len(dirs) == 6
    for d in dirs:
        ea = EventAccumulator(str(d))
        ea.Reload()
        assert "ray/tune/val_accuracy" in ea.Tags()["scalars"], d
        hp = ea.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in hp, d  # a row also for ASHA-stopped trials
        assert b"max_lr" in hp["_hparams_/session_start_info"]


def tags_by_file(trial_dir: Path) -> list[list[tuple[str, int]]]:
    """(tag, step) of every summary in each of the trial's event files, in the order written."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        [(v.tag, event.step) for event in EventFileLoader(str(f)).Load() for v in event.summary.value]
        for f in sorted(trial_dir.glob("events.out.tfevents.*"))
    ]


def test_hparams_row_is_written_at_the_first_report(search) -> None:
    """The row follows a trial's first scalars and precedes its second epoch's: Ray's own logger
    writes it only when the trial ends, after all of them. Checked in each event file that holds
    a trial's first two epochs (one driver's); a trial the Ctrl-C cut after its first epoch gets
    its row from the resumed driver, in the file of the epochs that driver ran."""
    exp, _ = search
    checked = 0
    for d in sorted(exp.glob("train_trial_*")):
        for tags in tags_by_file(d):
            v1, v2 = ("ray/tune/val_accuracy", 1), ("ray/tune/val_accuracy", 2)
            if v1 not in tags or v2 not in tags:
                continue
            rows = [i for i, (tag, _) in enumerate(tags) if tag == "_hparams_/session_start_info"]
            assert rows and tags.index(v1) < rows[0] < tags.index(v2), (d.name, tags)
            checked += 1
    assert checked >= 2, "too few trials ran two epochs in one driver to tell"


def test_results_command(search, capsys: pytest.CaptureFixture) -> None:
    from s9tune.cli import main
    from s9tune.config import TrainConfig

    exp, _ = search
    assert main(["results", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "last val" in out and "completed" in out and "stopped" in out
    # fewer than 10 complete schedules are too few for fANOVA: it says so instead of printing noise
    assert "Parameter importance: n/a:" in out and "fANOVA needs at least 10" in out and "GPU-hours" in out
    cfg = TrainConfig.from_yaml(exp / "best_config.yaml")
    assert cfg.width == 8 and cfg.epochs == 3
    # the best trial, worked out here from Tune's own files: the highest val_accuracy at the
    # last epoch among trials that completed the 3-epoch schedule (a later row of an epoch wins);
    # a tie goes to the trial Tune created first (its folder's index), as results rank them
    finals = {}
    for d in exp.glob("train_trial_*"):
        rows = {r["training_iteration"]: r for r in map(json.loads, (d / "result.json").read_text().splitlines())}
        if 3 in rows:
            finals[d] = rows[3]["val_accuracy"]
    best = min(finals, key=lambda d: (-finals[d], int(d.name.split("_")[3])))
    params = json.loads((best / "params.json").read_text())
    assert {k: getattr(cfg, k) for k in params} == pytest.approx(params)
    assert f"# best trial {best.name.split('_')[2]} " in (exp / "best_config.yaml").read_text()
    rows = list((exp / "trials.csv").read_text().splitlines())
    assert len(rows) == 7


def test_console_is_s9tunes_own(search) -> None:
    """One line per trial event, the results, and where to look: no Ray log lines and no path
    into Ray's session folder (the TensorBoard command names the experiment). The search was
    interrupted once, so its trial events are split over two runs."""
    exp, _ = search
    first, second = ((exp.parent.parent / f"console-{i}.txt").read_text() for i in (1, 2))
    lines = (first + second).splitlines()
    assert len(second.splitlines()) <= 43, second
    # it ends with what to type next, this experiment filled in
    assert second.rstrip().splitlines()[-3:] == [
        "Next:",
        f"  s9tune results {exp}",
        f"  s9tune retrain {exp} --data-dir {mini_dir()} --out runs/exp",
    ], second
    ends = [line for line in lines if " finished: " in line or " stopped by ASHA " in line]
    assert len(ends) == 6, ends  # each trial ends once; an interrupted one is not reported as stopped
    assert sum(" started: " in line and "max_lr" in line for line in lines) >= 6
    assert "(6/6 done, 0 running)" in ends[-1]
    assert f"TensorBoard: tensorboard --logdir {exp}" in second and f"Ray's log: {exp}/search.log" in second
    for out in (first, second):
        assert "session_" not in out and "INFO" not in out and "WARNING" not in out
    log = (exp / "search.log").read_text()
    assert "Checkpoint successfully created" in log  # the noise the console used to show, kept in the log


def test_existing_experiment_needs_resume(search, capsys: pytest.CaptureFixture) -> None:
    from s9tune.cli import main

    exp, space = search
    assert main(["search", "--space", str(space), "--storage", str(exp.parent), "--name", "exp"]) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert main(["search", "--space", str(space), "--storage", str(exp.parent), "--name", "nope", "--resume"]) == 2


def test_diverged_and_raising_trials_do_not_stop_the_search(failed_search: Path) -> None:
    """NaN trials are reported as diverged and scored worst; a trial that raises (device=cuda on a
    CPU-only machine) is that trial's error (FailureConfig), and the search goes on."""
    from s9tune.search.experiment.record import load_experiment

    exp = load_experiment(str(failed_search))
    assert len(exp.rows) == 4
    statuses = {r.trial_id: r.status for r in exp.rows}
    assert set(statuses.values()) == {"diverged", "error"}, statuses
    assert exp.ranked()[0].status != "completed"
    df_rows = [
        json.loads(line) for p in sorted(failed_search.glob("*_1_*/result.json")) for line in p.read_text().splitlines()
    ]
    assert df_rows[-1]["diverged"] == 1 and df_rows[-1]["val_accuracy"] == 0.0  # baseline: diverged, scored worst
    # max_failures=1: each raising trial was retried once, then recorded as its error
    errors = [f.read_text() for f in failed_search.glob("train_trial_*/error.txt")]
    assert errors and all("Failure # 2 " in e and "Failure # 3 " not in e for e in errors), errors
