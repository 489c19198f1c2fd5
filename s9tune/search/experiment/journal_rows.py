"""Finished runs whose Tune files a crash cut short, read back from the search's journal.

Tune's driver writes each trial's params.json and result.json into a staging folder and copies
the whole folder to the experiment at each save of its state. A driver killed during that copy
leaves a finished run's files empty, missing or a copy behind (benchmarks/RESULTS.md, "A
thousand trials, measured"), and Tune restores none of them: its state says the run is over.
The journal (search/searcher/journal.py) recorded the same run when it finished: its Tune
trial, its config, every epoch's value and its end. So when the journal shows a run over and
Tune's files do not, the run is read from the journal, and a warning names it.

The journal is checked as Tune's files are: its ids are names, its values lie in the
searched ranges, its budgets and seeds are this search's, its accuracies are finite and in
[0, 1]; anything else is one line naming the study and the trial.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from s9tune.errors import ConfigError, S9Error, shown
from s9tune.search.experiment.trials import TrialRow
from s9tune.search.experiment.tune_files import ID_PATTERN
from s9tune.search.outcome import OVER, WORST_ACCURACY, run_status
from s9tune.search.searcher.journal import CONFIG_ATTR, JOURNAL, LOST_ATTR, REPLACES_ATTR, SEED_ATTR, TUNE_ID, Study

if TYPE_CHECKING:
    from s9tune.search.space.space import SearchSpace

logger = logging.getLogger(__name__)

SHOWN_IDS = 5  # of the runs read from the journal, how many the warning names


@dataclass(frozen=True)
class _Run:
    trial: optuna.trial.FrozenTrial
    budget: int
    reruns: bool
    where: str  # the journal, the study and the trial, for a message


def _accuracy(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise S9Error(f"{where}: accuracy {shown(value)} is not a finite value in [0, 1]")
    return float(value)


def _name(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise S9Error(f"{where}: {what} {shown(value)} is not an id")
    return value


def _finished(studies: list[Study], space: SearchSpace, path: str) -> list[_Run]:
    """The runs the journal records as over (complete or pruned, not lost with the driver), each
    study's budget one of this search's."""
    out = []
    for study in studies:
        reruns = study.attrs.get("reruns") is True
        # reruns train on the full-length schedule only
        budgets = (space.max_t,) if reruns else space.scheduler.budgets or (space.max_t,)
        budget = study.attrs.get("budget_epochs")
        where = f"{path}/{JOURNAL}: study {shown(study.name)}"
        if isinstance(budget, bool) or not isinstance(budget, int) or budget not in budgets:
            raise S9Error(f"{where}: budget_epochs {shown(budget)} is not a budget of this search {list(budgets)}")
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        out += [
            _Run(t, budget, reruns, f"{where}, trial {t.number}")
            for t in study.trials
            if t.state in done and not t.user_attrs.get(LOST_ATTR) and TUNE_ID in t.user_attrs
        ]
    return out


def _row(run: _Run, *, space: SearchSpace, row_ids: dict[str, str]) -> TrialRow:
    """The run as Tune's files would have shown it."""
    t, where = run.trial, run.where
    attrs = t.user_attrs
    tid = _name(attrs.get(TUNE_ID), TUNE_ID, where)
    cid = _name(attrs.get(CONFIG_ATTR), CONFIG_ATTR, where)
    try:
        config = space.check_params(t.params, where)
    except ConfigError as exc:
        raise S9Error(str(exc)) from None
    steps = {}
    for step, value in t.intermediate_values.items():
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= run.budget:
            raise S9Error(f"{where}: epoch {shown(step)} lies outside its {run.budget}-epoch schedule")
        steps[step] = _accuracy(value, where)
    seed = None
    if run.reruns:
        seed = attrs.get(SEED_ATTR)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed not in space.rerun_seeds:
            raise S9Error(f"{where}: {SEED_ATTR} {shown(seed)} is not a seed of this search's reruns")
    diverged = False
    if t.state == optuna.trial.TrialState.COMPLETE:
        value = _accuracy(t.value, where)
        # a diverged run is told at WORST_ACCURACY, its last epoch's value never reported
        diverged = value <= WORST_ACCURACY
        if not diverged:
            steps[run.budget] = value
    epochs = max(steps, default=0)
    stopped = t.state == optuna.trial.TrialState.PRUNED
    history = [steps[k] for k in sorted(steps)]
    start, end = t.datetime_start, t.datetime_complete
    replaces = attrs.get(REPLACES_ATTR) or ""
    if replaces:
        _name(replaces, REPLACES_ATTR, where)
    return TrialRow(
        trial_id=tid,
        config=config,
        status=run_status(epochs, run.budget, diverged=diverged, stopped=stopped, failed=False),
        epochs=epochs,
        best_val_accuracy=max(history) if history else None,
        last_val_accuracy=history[-1] if history else None,
        time_s=(end - start).total_seconds() if start and end else 0.0,
        history=history,
        config_id=row_ids.get(cid, cid),
        budget=run.budget,
        replaces=str(replaces),
        seed=seed,
    )


def fill_from_journal(rows: list[TrialRow], studies: list[Study], space: SearchSpace, path: str) -> list[TrialRow]:
    """`rows` (from Tune's files), with each run the journal shows over but they do not (they
    lack it, or show it unfinished: a copy from before its end) read from the journal instead.
    Where Tune's files show the run over too, they are kept (they also hold its times)."""
    runs = _finished(studies, space, path)
    row_ids: dict[str, str] = {}
    if space.scheduler.type != "halving":
        # under ASHA the files know a config by its search run's Tune trial (searcher._rerun)
        for run in runs:
            if not run.reruns and isinstance(run.trial.user_attrs.get(CONFIG_ATTR), str):
                row_ids[run.trial.user_attrs[CONFIG_ATTR]] = str(run.trial.user_attrs[TUNE_ID])
    at = {r.trial_id: i for i, r in enumerate(rows)}
    out, read = list(rows), []
    for run in runs:
        row = _row(run, space=space, row_ids=row_ids)
        i = at.get(row.trial_id)
        if i is not None and out[i].status in OVER:
            continue
        if i is None:
            at[row.trial_id] = len(out)
            out.append(row)
        else:
            out[i] = row
        read.append(row.trial_id)
    if read:
        more = f" and {len(read) - SHOWN_IDS} more" if len(read) > SHOWN_IDS else ""
        logger.warning(
            "%s: %d finished run(s) missing or cut short in Tune's trial files (a driver killed while Tune "
            "copied them); read from the journal: %s%s",
            path,
            len(read),
            ", ".join(read[:SHOWN_IDS]),
            more,
        )
    return out
