"""The parts of a search whose cost had to stop growing with the trials, each checked on its own:
halving's bookkeeping against the rule as first written, the console's summary, the HParams
event files, the journal's unsynced reports, and ASHA's rungs after a resume."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import halving_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from s9tune.search.searcher.halving import Rungs


# -- halving: the incremental bookkeeping answers as the rule as first written ------------------
def questions(rungs: Any, n: int) -> list[Any]:
    return [
        rungs.live_runs(),
        rungs.finished(),
        *[rungs.pending(r) for r in range(n)],
        *[rungs.promotable(r) for r in range(n)],
        *[rungs.ranked(r) for r in range(n)],
        *[rungs.replaces(r) for r in range(n)],
    ]


def events(data: st.DataObject, sizes: list[int]) -> list[tuple]:
    """A valid history: configs start at the first budget, a config starts at a budget only
    after a value below, runs finish (ties on purpose), fail, are rerun after a resume, or are
    lost with the driver."""
    ref = halving_reference.Rungs(sizes)
    out: list[tuple] = []
    fresh = 0
    for _ in range(data.draw(st.integers(0, 40))):
        live = [(r, c) for r in range(len(sizes)) for c in ref[r].live()]
        failed = [(r, c) for r in range(len(sizes)) for c in ref[r].failed]
        promotable = [(r, c) for r in range(1, len(sizes)) for c in ref[r - 1].values if c not in ref[r].started]
        kinds = ["start0"] + ["finish", "fail", "forget"] * bool(live) + ["promote"] * bool(promotable)
        kind = data.draw(st.sampled_from(kinds + ["rerun"] * bool(failed)))
        if kind == "start0":
            ev: tuple = ("start", 0, f"c{fresh}")
            fresh += 1
        elif kind == "promote":
            ev = ("start", *data.draw(st.sampled_from(promotable)))
        elif kind == "finish":
            ev = ("finish", *data.draw(st.sampled_from(live)), data.draw(st.sampled_from([0.1, 0.2, 0.3, 0.5])))
        elif kind == "rerun":
            ev = ("rerun", *data.draw(st.sampled_from(failed)))
        else:
            ev = (kind, *data.draw(st.sampled_from(live)))
        getattr(ref, ev[0])(*ev[1:])
        out.append(ev)
    return out


@settings(derandomize=True, max_examples=300, deadline=None)
@given(data=st.data())
def test_incremental_rungs_answer_as_the_rule_as_first_written(data: st.DataObject) -> None:
    sizes = data.draw(st.sampled_from([[6], [6, 3], [8, 4, 2], [5, 2, 1]]))
    history = events(data, sizes)
    ref, new = halving_reference.Rungs(sizes), Rungs(sizes)
    for ev in history:
        getattr(ref, ev[0])(*ev[1:])
        getattr(new, ev[0])(*ev[1:])
        assert questions(new, len(sizes)) == questions(ref, len(sizes)), (ev, history)


# -- the console: a large search prints a summary, and its cost does not grow with the square --
@dataclass
class CountedTrial:
    """A stand-in for Tune's trial that counts how often the console reads its status."""

    trial_id: str
    config: dict[str, Any]
    _status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None
    reads: list[int] = field(default_factory=lambda: [0])

    @property
    def status(self) -> str:
        self.reads[0] += 1
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value


def play_large(progress: Any, n: int, tmp_path: Path, *, errors: int = 0) -> tuple[list[CountedTrial], list[int]]:
    """n trials, as Tune calls the hooks: each starts, reports 4 epochs and ends (ASHA stops
    every other one at epoch 2); the last `errors` raise instead, with a retry first."""
    reads = [0]
    (tmp_path / "error.txt").write_text("RuntimeError: injected\n")
    trials: list[CountedTrial] = []
    for i in range(n):
        t = CountedTrial(f"t{i:05d}", {"max_lr": 0.1 + i / n}, reads=reads, error_file=str(tmp_path / "error.txt"))
        trials.append(t)
        progress.on_trial_start(0, trials, t)
        t.status = "RUNNING"
        if i >= n - errors:
            progress.on_trial_recover(0, trials, t)
            progress.on_trial_error(0, trials, t)
            t.status = "ERROR"
            continue
        for epoch in range(1, 3 if i % 2 else 5):
            t.last_result = {"training_iteration": epoch, "val_accuracy": 0.1 * epoch + i / (10 * n)}
            progress.on_trial_result(0, trials, t, t.last_result)
        progress.on_trial_complete(0, trials, t)
        t.status = "TERMINATED"
    progress.on_experiment_end(trials)
    return trials, reads


def test_a_large_search_prints_a_bounded_summary_with_the_first_errors(tmp_path: Path) -> None:
    from s9tune.search.execution.console import MAX_LINES, NOTABLE_MAX, Plan, SearchProgress

    out = io.StringIO()
    plan = Plan("big", trials=1000, epochs=4000, exact=False, max_t=4, searched=("max_lr",))
    play_large(SearchProgress(plan, out, live=False), 1000, tmp_path, errors=30)
    lines = out.getvalue().splitlines()
    assert len(lines) <= MAX_LINES, len(lines)
    assert "1000 trials planned" in lines[0]
    notable = [line for line in lines if " error: RuntimeError: injected" in line or "retrying" in line]
    assert len(notable) == NOTABLE_MAX  # the first ones, as they came (a retry, then its error)
    progress = [line for line in lines if "trials done" in line]
    assert len(progress) >= 20 and "970/1000 trials done" in lines[-1] and "30 errors" in lines[-1]
    assert "search ended" in lines[-1] and "40 more events not shown" in lines[-1]
    assert all(line.startswith("[") for line in lines)


def test_the_consoles_cost_grows_with_the_trials_not_their_square(tmp_path: Path) -> None:
    """Trials the console reads, for 250 and for 1,000 trials: at every event a walk over all
    of them (as before) read 1,000 trials 4x as often per trial as 250."""
    from s9tune.search.execution.console import Plan, SearchProgress

    per_trial = []
    for n in (250, 1000):
        for live in (False, True):
            plan = Plan("big", trials=n, epochs=4 * n, exact=False, max_t=4, searched=("max_lr",))
            progress = SearchProgress(plan, io.StringIO(), live=live)
            if live:
                progress._console.file = io.StringIO()
            _, reads = play_large(progress, n, tmp_path)
            per_trial.append(reads[0] / n)
    assert max(per_trial) <= 60 * 2, per_trial  # a walk per printed line (or live refresh), not per event
    assert per_trial[2] <= 1.5 * per_trial[0] + 5 and per_trial[3] <= 1.5 * per_trial[1] + 5, per_trial


# -- results: fANOVA on at most MAX_IMPORTANCE_VALUES values --------------------------------------
def test_importance_samples_at_most_its_cap_of_values() -> None:
    import random

    from s9tune.search.experiment.export import MAX_IMPORTANCE_VALUES, importance
    from s9tune.search.experiment.trials import Experiment, TrialRow
    from s9tune.search.space.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "benchmarks" / "scale_space.yaml")
    rng = random.Random(1)

    def rows(n: int) -> list[TrialRow]:
        out = []
        for i in range(n):
            config = {"max_lr": rng.uniform(0.05, 2.0), "pct_start": rng.uniform(0.1, 0.5), "aug_strength": 1.0}
            value = 0.9 - (config["pct_start"] - 0.3) ** 2
            out.append(TrialRow(f"t{i}", config, "completed", 24, value, value, 1.0, budget=24))
        return out

    few = importance(Experiment("e", space, rows(40)))
    assert few[1] == "Optuna fANOVA on 40 trials that completed the schedule"
    many_rows = rows(MAX_IMPORTANCE_VALUES + 150)
    many = importance(Experiment("e", space, many_rows))
    assert many[1].startswith(f"Optuna fANOVA on {MAX_IMPORTANCE_VALUES} of the {MAX_IMPORTANCE_VALUES + 150} trials")
    assert importance(Experiment("e", space, many_rows))[0] == many[0]  # the sample is seeded
    assert max(many[0], key=many[0].get) == "pct_start"


# -- HParams: a writer per running trial, none left after the trials end ------------------------
def test_hparams_writers_are_closed_when_their_trials_end(tmp_path: Path) -> None:
    """200 trials running at once, each reporting: once they end, the driver's open files and
    threads are back where they were (a SummaryWriter holds a file and a thread while its trial
    runs), and each trial's event file reads back with its scalars and its HParams row."""
    import threading
    import types

    import psutil
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from s9tune.search.execution.hparams import HParamsTBXLogger

    me = psutil.Process()
    fds, threads = me.num_fds(), threading.active_count()
    logger = HParamsTBXLogger()
    trials = []
    for i in range(200):
        folder = tmp_path / f"t{i}"
        folder.mkdir()
        trials.append(
            types.SimpleNamespace(
                trial_id=f"t{i}",
                evaluated_params={"max_lr": 0.1 * i},
                config={},
                local_path=str(folder),
                init_local_path=lambda: None,
            )
        )
        logger.log_trial_start(trials[-1])
    for epoch in (1, 2):
        for t in trials:
            logger.log_trial_result(epoch, t, {"training_iteration": epoch, "val_accuracy": 0.4 + epoch / 10})
    assert me.num_fds() > fds and threading.active_count() > threads  # the check below can fail
    for t in trials:
        logger.log_trial_end(t)
    assert me.num_fds() <= fds + 2 and threading.active_count() <= threads + 1
    ea = EventAccumulator(trials[7].local_path)
    ea.Reload()
    assert [(s.step, round(s.value, 3)) for s in ea.Scalars("ray/tune/val_accuracy")] == [(1, 0.5), (2, 0.6)]
    assert b"max_lr" in ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]


# -- the journal: every epoch's value is in it, through Optuna's own backend --------------------
def test_reports_and_tells_read_back_from_the_journal(tmp_path: Path) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from s9tune.search.experiment.record import ExperimentRef
    from s9tune.search.searcher.journal import StudyStore, add_running, open_study, report

    (tmp_path / "e").mkdir()
    store = StudyStore(ExperimentRef(str(tmp_path), "e").folder)
    study = open_study(store, "e", seed=0, startup=1, maximize=True, attrs={})
    dists = {"x": optuna.distributions.FloatDistribution(0, 1)}
    number = add_running(study, dists, {"x": 0.5}, {"tune_trial_id": "t0"})
    for step in range(1, 51):
        report(store, "e", number, step=step, value=step / 100)
    study.tell(number, 0.5)
    again = optuna.load_study(study_name="e", storage=JournalStorage(JournalFileBackend(str(store.path))))
    assert again.trials[0].intermediate_values == {s: s / 100 for s in range(1, 51)}
    assert again.trials[0].value == 0.5 and store.curves("e", "tune_trial_id")["t0"][-1] == (50, 0.5)


# -- ASHA after a resume: its rungs hold what they held ------------------------------------------
def test_a_resumed_asha_judges_runs_as_the_uninterrupted_one_would() -> None:
    """Nine runs reach the epoch-12 rung, then the driver dies. A new run under the cut must be
    stopped there, and a restored run already past the rung must go on, as the uninterrupted
    ASHA decides; an ASHA that started empty (Tune saves none) promotes the first and judges
    the second again."""
    import types

    from ray.tune.schedulers import TrialScheduler

    from s9tune.search.searcher.asha import SearchASHA

    def asha() -> SearchASHA:
        a = SearchASHA(time_attr="training_iteration", max_t=24, grace_period=12, reduction_factor=3)
        a.set_search_properties("val_accuracy", "max")
        return a

    def trial(tid: str) -> Any:
        return types.SimpleNamespace(trial_id=tid, config={"max_lr": 0.1}, status="TERMINATED")

    old = [trial(f"t{i}") for i in range(9)]
    curves = {t.trial_id: [(s, 0.05 * s + i / 100) for s in range(1, 13)] for i, t in enumerate(old)}
    curves["t8"] += [(13, 0.61)]  # the best run went on past the rung
    whole, resumed, empty = asha(), asha(), asha()
    for a in (whole, resumed, empty):
        for t in old:
            a.on_trial_add(None, t)
    for t in old:
        for step, value in curves[t.trial_id]:
            whole.on_trial_result(None, t, {"training_iteration": step, "val_accuracy": value})
    old[8].status = "PENDING"  # restored to run on: the journal has it running
    old[0].status = "PENDING"  # restored to run on, though the journal has it stopped at the rung
    resumed.restore(old, curves, running={"t8"})
    new = trial("new")
    decisions = []
    for a in (whole, resumed, empty):
        a.on_trial_add(None, new)
        low = a.on_trial_result(None, new, {"training_iteration": 12, "val_accuracy": 0.5})
        past = a.on_trial_result(None, old[8], {"training_iteration": 14, "val_accuracy": 0.45})
        decisions.append((low, past))
    stop, go = TrialScheduler.STOP, TrialScheduler.CONTINUE
    assert decisions[0] == (stop, go) and decisions[1] == decisions[0]
    assert decisions[2] == (go, stop)  # what a resume did before the rungs were restored
    # Tune's state was saved before ASHA stopped t0: rerun from its checkpoint, it is judged again
    assert resumed.on_trial_result(None, old[0], {"training_iteration": 12, "val_accuracy": 0.6}) == stop


def test_pending_trials_are_the_slots_unless_the_user_set_them(monkeypatch) -> None:
    import os

    from s9tune.search.execution.runner import _pending_trials

    monkeypatch.delenv("TUNE_MAX_PENDING_TRIALS_PG", raising=False)
    with _pending_trials(32):
        assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "32"
    assert "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "4")
    with _pending_trials(32):
        assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "4"
    assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "4"


def test_the_printed_leaderboard_shows_the_best_rows_and_where_the_rest_are() -> None:
    from s9tune.search.experiment.export import MAX_TABLE_ROWS, format_results
    from s9tune.search.experiment.trials import Experiment, TrialRow
    from s9tune.search.space.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "benchmarks" / "scale_space.yaml")
    space = space.with_num_samples(1000)

    def table(n: int) -> list[str]:
        config = {"max_lr": 0.4, "pct_start": 0.2, "aug_strength": 1.0}
        rows = [TrialRow(f"t{i}", config, "completed", 24, i / n, i / n, 1.0) for i in range(n)]
        return format_results(Experiment("st/e", space, rows)).split("\n\n")[0].splitlines()

    assert len(table(10)) == 11 and not any("more rows" in line for line in table(10))
    big = table(1000)
    assert len(big) == 1 + MAX_TABLE_ROWS + 1 and big[1].startswith("t999 ")  # the best first
    assert big[-1] == f"... and {1000 - MAX_TABLE_ROWS} more rows: st/e/leaderboard.json and trials.csv"
