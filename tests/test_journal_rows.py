"""A finished run whose Tune files a killed driver cut short is read back from the journal.

Tune copies each trial's params.json and result.json from a staging folder to the experiment
at every save of its state; a SIGKILL during that copy left three finished runs of the
1,000-config scale run empty, missing or a copy behind (benchmarks/RESULTS.md). The journal
recorded each when it finished. These tests hold `results` to the journal wherever Tune's files
show a run less far on, to Tune's files wherever they are whole, and to the same hostile-input
rules as Tune's files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import SEARCH_SPACE
from hypothesis import given, settings
from hypothesis import strategies as st
from test_experiment_files import add_trial, row

from s9tune.cli import main
from s9tune.errors import S9Error
from s9tune.search.experiment import journal_rows, tune_files
from s9tune.search.experiment.record import ExperimentRef, load_experiment
from s9tune.search.searcher import journal
from s9tune.search.space.space import load_space
from s9tune.storage import Folder

EPOCHS = 3
SPACE = {**SEARCH_SPACE, "reevaluate": {"top": 2, "seeds": 1}}
PARAMS = {"max_lr": 0.1, "pct_start": 0.2, "aug_strength": 1.0}
STATE = optuna.trial.TrialState


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return load_space(path)


def trial(number: int, tid: str, *, state=STATE.COMPLETE, values=(0.1, 0.2, 0.3), cid: str = "", params=None, **attrs):
    """A journal trial as the searcher leaves it: each epoch reported but the last, which comes
    with the tell (Tune hands the last result to on_trial_complete)."""
    dists = {k: optuna.distributions.FloatDistribution(1e-9, 10.0) for k in PARAMS}
    reported = values[:-1] if state == STATE.COMPLETE else values
    t = optuna.trial.create_trial(
        params=params or PARAMS,
        distributions=dists,
        value=values[-1] if state == STATE.COMPLETE else None,
        intermediate_values=dict(enumerate(reported, 1)),
        user_attrs={journal.TUNE_ID: tid, journal.CONFIG_ATTR: cid or f"c{number}", **attrs},
        state=state,
    )
    t.number = number
    return t


def study(trials, *, reruns: bool = False, budget: int = EPOCHS, name: str = "exp") -> journal.Study:
    attrs = {"budget_epochs": budget, "metric": "val_accuracy", **({"reruns": True} if reruns else {})}
    return journal.Study(name + ("@seeds" if reruns else ""), attrs, list(trials))


def tune_row(space, tid: str, rows: list[dict]):
    t = tune_files.TrialFiles(tid, 0, dict(PARAMS), rows)
    return tune_files.trial_row(t, [d.key for d in space.dists], space.max_t, 2)


def whole(values, *, state) -> list[dict]:
    """Tune's rows of the same run: done on the last row where ASHA stopped it."""
    rows = [row(e, val_accuracy=v) for e, v in enumerate(values, 1)]
    if state == STATE.PRUNED:
        rows[-1]["done"] = True
    return rows


# -- the rule: the journal wins exactly where Tune's files do not show the run over ---------------------------
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    ended=st.sampled_from(["complete", "stopped", "diverged"]),
    cut=st.one_of(st.none(), st.integers(0, EPOCHS)),  # None: no trial folder at all
    values=st.lists(st.floats(0.01, 1.0), min_size=EPOCHS, max_size=EPOCHS),
)
def test_whatever_the_copy_left_the_run_reads_as_it_ended(space, ended: str, cut: int | None, values) -> None:
    if ended == "stopped":
        values, state = values[:1], STATE.PRUNED
    elif ended == "diverged":
        values, state = [*values[:1], 0.0], STATE.COMPLETE
    else:
        state = STATE.COMPLETE
    tune_rows = whole(values, state=state)
    if ended == "diverged":
        tune_rows[-1]["diverged"] = 1
    truth = tune_row(space, "abcdef12", tune_rows)
    damaged = [] if cut is None else [tune_row(space, "abcdef12", tune_rows[:cut])]
    journal_says = [study([trial(0, "abcdef12", state=state, values=values)])]
    out = journal_rows.fill_from_journal(damaged, journal_says, space, "e")
    assert len(out) == 1
    got = out[0]
    assert (got.status, got.epochs, got.last_val_accuracy, got.config, got.budget) == (
        truth.status,
        truth.epochs,
        truth.last_val_accuracy,
        truth.config,
        truth.budget,
    )
    assert got.history == pytest.approx(truth.history)


def test_whole_files_are_kept_with_their_times(space) -> None:
    rows = [tune_row(space, "abcdef12", whole((0.1, 0.2, 0.3), state=STATE.COMPLETE))]
    out = journal_rows.fill_from_journal(rows, [study([trial(0, "abcdef12")])], space, "e")
    assert out[0] is rows[0]  # the files' row, time_s and all


def test_runs_the_journal_does_not_show_over_are_not_read(space) -> None:
    trials = [
        trial(0, "aaaaaaa0", state=STATE.RUNNING, values=(0.1,)),
        trial(1, "aaaaaaa1", state=STATE.FAIL, values=()),
        trial(2, "aaaaaaa2", **{journal.LOST_ATTR: True}),  # lost with the driver, ran again
    ]
    assert journal_rows.fill_from_journal([], [study(trials)], space, "e") == []


def test_a_lost_rerun_keeps_its_config_as_the_files_name_it(space) -> None:
    """Under ASHA the files know a config by its search run's Tune trial id; a rerun read from
    the journal joins that config, not the searcher's own id."""
    search = study([trial(0, "aaaaaaa0", cid="c0"), trial(1, "aaaaaaa1", cid="c1", values=(0.2, 0.3, 0.4))])
    rerun = study([trial(0, "bbbbbbb0", cid="c1", values=(0.2, 0.3, 0.5), seed=1)], reruns=True)
    rows = [tune_row(space, t, whole(v, state=STATE.COMPLETE)) for t, v in (("aaaaaaa0", (0.1, 0.2, 0.3)),)]
    out = journal_rows.fill_from_journal(rows, [search, rerun], space, "e")
    by_id = {r.trial_id: r for r in out}
    assert set(by_id) == {"aaaaaaa0", "aaaaaaa1", "bbbbbbb0"}
    assert (by_id["bbbbbbb0"].config_id, by_id["bbbbbbb0"].seed) == ("aaaaaaa1", 1)
    assert by_id["aaaaaaa1"].config_id == "aaaaaaa1" and by_id["aaaaaaa1"].seed is None


# -- hostile journals: one line naming the study and the trial ---------------------------------
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: study([trial(0, "$(rm -rf ~)")]), "tune_trial_id"),
        (lambda: study([trial(0, "aaaaaaa0", cid="../x")]), "config_id"),
        (lambda: study([trial(0, "aaaaaaa0", values=(0.1, 0.2, 1.5))]), "accuracy 1.5"),
        (lambda: study([trial(0, "aaaaaaa0", values=(0.1, float("nan"), 0.3))]), "accuracy nan"),
        (lambda: study([trial(0, "aaaaaaa0")], budget=7), "budget_epochs 7"),
        (lambda: study([trial(0, "aaaaaaa0", values=(0.1, 0.2, 0.3, 0.4, 0.5))]), "epoch 4 lies outside"),
        (lambda: study([trial(0, "aaaaaaa0", seed=99)], reruns=True), "seed 99"),
        (lambda: study([trial(0, "aaaaaaa0", seed=1)], reruns=True, budget=1), "budget_epochs 1"),
    ],
)
def test_a_tampered_journal_is_one_line(space, make, words: str) -> None:
    with pytest.raises(S9Error, match=words) as err:
        journal_rows.fill_from_journal([], [make()], space, "e")
    assert "\n" not in str(err.value) and "optuna.journal" in str(err.value)


def test_values_outside_the_searched_ranges_are_refused(space) -> None:
    t = trial(0, "aaaaaaa0")
    t.params = {**PARAMS, "max_lr": 50.0}
    with pytest.raises(S9Error, match="max_lr"):
        journal_rows.fill_from_journal([], [study([t])], space, "e")


# -- the files: read without writing, never through a link -------------------------------------
def experiment(tmp_path: Path) -> Path:
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    ExperimentRef(str(tmp_path / "st"), "exp").create(load_space(tmp_path / "space.yaml"), max_failures=2)
    return tmp_path / "st" / "exp"


def write_journal(exp: Path, trials) -> None:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(exp / journal.JOURNAL)))
    s = optuna.create_study(study_name="exp", storage=storage, direction="maximize")
    s.set_user_attr("budget_epochs", EPOCHS)
    for t in trials:
        s.add_trial(t)


def test_results_reads_cut_short_runs_back_from_the_journal(tmp_path: Path, caplog, capsys) -> None:
    """The three ways the 1,000-config run lost a finished run: every file empty, no params.json
    or result.json at all, and a copy from before its end."""
    exp = experiment(tmp_path)
    values = {f"aaaaaaa{i}": (0.1, 0.2, 0.3 + 0.1 * i) for i in range(4)}
    for i, (tid, v) in enumerate(values.items()):
        add_trial(exp, i + 1, tid, whole(v, state=STATE.COMPLETE))
    # add_trial's max_lr is 0.1 x its index
    told = [
        trial(i, t, values=v, params={**PARAMS, "max_lr": 0.1 * (i + 1)}) for i, (t, v) in enumerate(values.items())
    ]
    write_journal(exp, told)
    intact = {r.trial_id: r for r in load_experiment(str(exp)).rows}
    folders = {tid: next(exp.glob(f"train_trial_{tid}_*")) for tid in values}
    for name in ("params.json", "result.json"):
        (folders["aaaaaaa1"] / name).write_text("")
        (folders["aaaaaaa2"] / name).unlink()
    (folders["aaaaaaa3"] / "result.json").write_text(json.dumps({**row(1), "trial_id": "aaaaaaa3"}) + "\n")
    before = sorted(os.listdir(exp))
    with caplog.at_level(logging.WARNING):
        rows = {r.trial_id: r for r in load_experiment(str(exp)).rows}
    assert sorted(os.listdir(exp)) == before  # nothing written to the experiment
    for tid in values:
        assert (rows[tid].status, rows[tid].epochs, rows[tid].last_val_accuracy, rows[tid].config) == (
            intact[tid].status,
            intact[tid].epochs,
            intact[tid].last_val_accuracy,
            intact[tid].config,
        )
    said = [r.getMessage() for r in caplog.records if "read from the journal" in r.getMessage()]
    assert len(said) == 1 and "3 finished run(s)" in said[0] and "aaaaaaa0" not in said[0]
    assert main(["results", str(exp)]) == 0
    assert "aaaaaaa3" in capsys.readouterr().out


def test_a_journal_that_is_a_link_is_refused(tmp_path: Path, capsys) -> None:
    exp = experiment(tmp_path)
    add_trial(exp, 1, "aaaaaaa1", whole((0.1, 0.2, 0.3), state=STATE.COMPLETE))
    elsewhere = tmp_path / "elsewhere.journal"
    write_journal(tmp_path / "st", [])  # a real journal, outside the experiment
    (tmp_path / "st" / journal.JOURNAL).rename(elsewhere)
    (exp / journal.JOURNAL).symlink_to(elsewhere)
    with pytest.raises(S9Error, match="link"):
        journal.read_studies(Folder.parse(str(exp)))
    assert main(["results", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_damaged_journal_is_one_line_and_no_journal_is_none(tmp_path: Path) -> None:
    exp = experiment(tmp_path)
    assert journal.read_studies(Folder.parse(str(exp))) == []
    (exp / journal.JOURNAL).write_text('{"op_code": 0}\nnot json\n')
    with pytest.raises(S9Error, match="line 2"):
        journal.read_studies(Folder.parse(str(exp)))
    (exp / journal.JOURNAL).write_text('{"op_code": 0, "worker_id": "w"}\n')  # a study without a name
    with pytest.raises(S9Error, match="damaged or edited"):
        journal.read_studies(Folder.parse(str(exp)))
