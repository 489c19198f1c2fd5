"""The search's Ray `Searcher`, over Optuna studies s9tune owns (search/searcher/journal.py).

A OneCycle run's accuracy part-way through its schedule measures where it is in the LR cycle
more than how good the config is (benchmarks/RUNG_STUDY.md), so no value the search learns
from or promotes on comes from the middle of a schedule:

* halving: every config first trains from scratch on a complete schedule of `budgets[0]`
  epochs; the best `keep` fraction trains again, from scratch, on a complete schedule of the
  next budget, and so on (search/searcher/halving.py decides what is certain enough to start). Each run
  is its own Tune trial, so the experiment stays one Tune experiment.
* asha: one full-length schedule per config, which Tune's ASHA may stop; a trial stopped
  mid-cycle is told to Optuna as PRUNED at the step it reached, not as COMPLETE with its
  mid-cycle value, so TPE ranks it below every complete trial, by how far it got.

With `reevaluate`, the top configs by complete full-length value train again on more seeds
(reeval.py, their study `NAME@seeds`; ASHA never stops them, asha.py).

TPE (seeded, the baseline enqueued first) proposes configs through Optuna's ask-and-tell and
learns only first-budget values. Every ask, report and tell goes to the study's storage at
once, so the state of the search is the journal: a restarted searcher rebuilds its rungs from
it, then `reconcile` lines them up with the trials Tune restored (Tune's state and the journal
are written at different moments, so a crash can leave either one a step ahead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search import Searcher, SearchGenerator

from s9tune.search.outcome import WORST_ACCURACY
from s9tune.search.searcher.asha import SearchASHA
from s9tune.search.searcher.halving import Ranking, Rungs
from s9tune.search.searcher.journal import (
    CONFIG_ATTR,
    LOST_ATTR,
    REPLACES_ATTR,
    TUNE_ID,
    StudyStore,
    add_running,
    journal_runs,
    lose_run,
    open_study,
    report,
    run_value,
    study_name,
)
from s9tune.search.searcher.pick import auto_reruns
from s9tune.search.searcher.reeval import Reruns
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, METRIC, MODE, REPLACES_KEY, SEED_KEY, SearchSpace

logger = logging.getLogger(__name__)

# user attributes of each Optuna trial


@dataclass(frozen=True)
class TrialView:
    """What reconciliation reads of a Tune trial (`Callback` hooks hand Tune's trials over)."""

    trial_id: str
    config: dict[str, Any]
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    result: dict[str, Any]  # its last result, {} if none


class StudySearch(Searcher):
    """Successive halving (or, under ASHA, plain TPE) over the space's first-budget study.

    `store`: where the studies live (default: memory). `name`: the experiment, which names
    the studies. `max_concurrent`: runs at once (the free slots); None for no limit.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        store: StudyStore | None = None,
        name: str = "search",
        max_concurrent: int | None = None,
    ) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        sched = space.scheduler
        self.halving = sched.type == "halving"
        self.budgets = tuple(sched.budgets) if self.halving else (space.max_t,)
        self.rungs = Rungs(list(space.plan().rung_sizes))
        self.dists = {d.key: d.optuna_distribution() for d in space.dists}
        self.store = store or StudyStore()
        self.max_concurrent = max_concurrent
        self.names = [study_name(name, self.budgets, r) for r in range(len(self.budgets))]
        self.studies = [
            open_study(
                self.store,
                n,
                seed=space.searcher_seed,
                startup=space.n_startup_trials,
                maximize=MODE == "max",
                attrs={"budget_epochs": b, "metric": METRIC, "s9tune_experiment": name},
            )
            for n, b in zip(self.names, self.budgets, strict=True)
        ]
        self.params: dict[str, dict[str, Any]] = {}  # config id -> searched values
        self.runs: dict[str, tuple[str, int]] = {}  # Tune trial id -> (config id, rung)
        self.open: dict[str, int] = {}  # Tune trial id -> number of its running Optuna trial
        if space.baseline and not self.studies[0].get_trials(deepcopy=False):
            self.studies[0].enqueue_trial(dict(space.baseline))
        self.final: dict[str, float] = {}  # config id -> its complete full-length value
        self.top = Ranking(-1.0, self.rungs.seq)  # the same, best first
        self.reruns = Reruns(self.store, name=name, space=space, dists=self.dists) if space.reevaluate.on else None
        self._rebuild()

    # -- Ray's Searcher API ----------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return metric in (None, METRIC) and mode in (None, MODE)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.max_concurrent is not None and self._live() >= self.max_concurrent:
            return None
        # the deepest promotion first: the final values arrive as early as possible
        for r in range(len(self.budgets) - 1, 0, -1):
            cid = self.rungs.promotable(r)
            if cid is not None:
                return self._promote(trial_id, cid, r)
        if len(self.rungs[0].started) < self.rungs[0].quota:
            return self._new_config(trial_id)
        if self.reruns is not None:
            self._plan_reruns()
            run = self.reruns.plan.next_run()
            if run is not None:
                return self._rerun(trial_id, run)
        return Searcher.FINISHED if self.is_finished() else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric not in result or result.get("diverged"):
            return
        step, value = int(result.get("training_iteration", 0)), float(result[self.metric])
        if trial_id in self.open:
            _, r = self.runs[trial_id]
            report(self.store, self.names[r], self.open[trial_id], step=step, value=value)
        elif self.reruns is not None and trial_id in self.reruns.open:
            self.reruns.report(trial_id, step=step, value=value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self.reruns is not None and trial_id in self.reruns.open:
            self.reruns.complete(trial_id, None if error else result)
            return
        if trial_id not in self.open:
            return  # not ours, or recorded already (a finished run that Tune ran again)
        cid, r = self.runs[trial_id]
        number, study = self.open.pop(trial_id), self.studies[r]
        result = None if error else result  # a failed run's last result is partial: no value
        value, done = run_value(result, self.metric, budget=self.budgets[r])
        if done:
            study.tell(number, value)
            self.rungs.finish(r, cid, value)
            if r == len(self.budgets) - 1 and value > WORST_ACCURACY:  # a diverged run: not worth a rerun
                self._final(cid, value)
        elif value is not None and not self.halving:  # stopped by ASHA mid-cycle
            report(self.store, self.names[r], number, step=int(result.get("training_iteration", 0)), value=value)
            study.tell(number, state=optuna.trial.TrialState.PRUNED)
            self.rungs.finish(r, cid, value)
        else:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            self.rungs.fail(r, cid)
            logger.info("config %s: its %d-epoch run %s failed", cid, self.budgets[r], trial_id)
        self.store.sync()

    def is_finished(self) -> bool:
        if self.reruns is not None and self.rungs.finished():
            self._plan_reruns()
        return self.rungs.finished() and (self.reruns is None or self.reruns.plan.finished())

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        # the state is the journal, written as it changes; Tune saving its own is the moment to
        # copy a URI experiment's journal there, so it is never older than Tune's trials
        self.store.sync(force=True)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Nothing to read: the journal rebuilt the state, and `reconcile` checks it against
        the trials Tune restores."""

    # -- resume ----------------------------------------------------------------------
    def reconcile(self, trials: list[TrialView]) -> None:
        """Line the rungs up with the trials Tune will run: drop a run Tune lost, adopt one the
        journal never heard of, record one Tune finished, and count a failed run that Tune
        reruns (a resume reruns errored trials) as pending again."""
        known = {t.trial_id for t in trials}
        for tid in [t for t in self.open if t not in known]:
            self._lose(tid)
        for tid in [t for t in (self.reruns.open if self.reruns else {}) if t not in known]:
            self.reruns.lose(tid)
        for t in trials:
            if SEED_KEY in t.config and self.reruns is not None:
                row = str(t.config[CONFIG_KEY])
                cid = row if self.halving else self.runs.get(row, (row, 0))[0]
                if cid in self.params:  # else its config's run is unknown to both: nothing to pick by
                    run = (cid, int(t.config[SEED_KEY]) - self.reruns.seed)
                    self.reruns.reconcile(t.trial_id, status=t.status, result=t.result, run=run, params=self.params)
                continue
            if t.trial_id not in self.runs:
                self._adopt(t)
            cid, r = self.runs[t.trial_id]
            if t.status == "TERMINATED":
                self.on_trial_complete(t.trial_id, t.result or None)
            elif t.status == "ERROR":
                self.on_trial_complete(t.trial_id, None, error=True)
            elif t.trial_id not in self.open and cid in self.rungs[r].failed:
                self._reopen(t.trial_id)
        self.store.sync()

    def _rebuild(self) -> None:
        last = len(self.studies) - 1
        for r, study in enumerate(self.studies):
            for run in journal_runs(study, needs=(TUNE_ID, CONFIG_ATTR)):
                tid, cid = run.attrs[TUNE_ID], run.attrs[CONFIG_ATTR]
                if r == 0:
                    self.params.setdefault(cid, run.params)
                if tid not in self.runs:
                    self.runs[tid] = (cid, r)
                    self.rungs.start(r, cid)
                self.open.pop(tid, None)
                if run.state == "running":
                    self.open[tid] = run.number
                    self.rungs.rerun(r, cid)
                elif run.state in ("complete", "pruned"):
                    value = run.value if run.value is not None else WORST_ACCURACY
                    self.rungs.finish(r, cid, value)
                    if run.state == "complete" and r == last and value > WORST_ACCURACY:
                        self._final(cid, value)
                else:
                    self.rungs.fail(r, cid)
        if self.reruns is not None:
            self.reruns.rebuild()

    def _lose(self, tid: str) -> None:
        cid, r = self.runs.pop(tid)
        lose_run(self.store, self.studies[r], self.names[r], self.open.pop(tid))
        self.rungs.forget(r, cid)
        if r == 0:
            del self.params[cid]
        logger.info("run %s (config %s) was lost with the driver; it will not run", tid, cid)

    def _adopt(self, t: TrialView) -> None:
        params = {k: t.config[k] for k in self.dists}
        r = self.budgets.index(int(t.config[BUDGET_KEY])) if self.halving else 0
        cid = str(t.config[CONFIG_KEY]) if self.halving else None
        extra = {REPLACES_ATTR: t.config[REPLACES_KEY]} if REPLACES_KEY in t.config else {}
        number = self._add_running(self.studies[r], params, t.trial_id, cid, extra)
        cid = cid or self._fresh_id(number)
        if r == 0:
            self.params[cid] = params
        self.runs[t.trial_id] = (cid, r)
        self.rungs.start(r, cid)
        self.open[t.trial_id] = number
        logger.info("run %s (config %s) adopted from Tune's saved state", t.trial_id, cid)

    def _reopen(self, tid: str) -> None:
        cid, r = self.runs[tid]
        self.open[tid] = self._add_running(self.studies[r], self.params[cid], tid, cid, {})
        self.rungs.rerun(r, cid)

    # -- starting runs ---------------------------------------------------------------
    def _new_config(self, trial_id: str) -> dict[str, Any]:
        trial = self.studies[0].ask(self.dists)
        cid = self._fresh_id(trial.number)
        trial.set_user_attr(CONFIG_ATTR, cid)
        trial.set_user_attr(TUNE_ID, trial_id)
        self.params[cid] = dict(trial.params)
        return self._start(trial_id, cid, 0, trial.number)

    def _promote(self, trial_id: str, cid: str, r: int) -> dict[str, Any]:
        replaces = self.rungs.replaces(r)
        extra = {REPLACES_ATTR: replaces} if replaces else {}
        number = self._add_running(self.studies[r], self.params[cid], trial_id, cid, extra)
        if replaces:
            logger.info("config %s promoted to %d epochs in place of %s", cid, self.budgets[r], replaces)
        return self._start(trial_id, cid, r, number, replaces)

    def _start(self, trial_id: str, cid: str, r: int, number: int, replaces: str | None = None) -> dict[str, Any]:
        self.runs[trial_id] = (cid, r)
        self.rungs.start(r, cid)
        self.open[trial_id] = number
        if not self.halving:
            return dict(self.params[cid])
        extra = {REPLACES_KEY: replaces} if replaces else {}
        return {**self.params[cid], BUDGET_KEY: self.budgets[r], CONFIG_KEY: cid, **extra}

    def _rerun(self, trial_id: str, run: tuple[str, int]) -> dict[str, Any]:
        """A re-evaluation run: the config's values on a complete full-length schedule, with
        another seed; its config id is the one its search run's row carries (results group
        them): under halving the config id, under ASHA its trial's id."""
        cid, j = run
        self.reruns.start(trial_id, run, self.params[cid])
        row = cid if self.halving else next(t for t, (c, r) in self.runs.items() if c == cid and r == 0)
        budget = {BUDGET_KEY: self.budgets[-1]} if self.halving else {}
        return {**self.params[cid], **budget, CONFIG_KEY: row, SEED_KEY: self.reruns.seed + j}

    def _plan_reruns(self) -> None:
        """Plan the reruns that are certain now: a fixed step's configs certain to be in its top;
        under `auto`, the rule's next round once no search run is pending and no rerun runs (its
        inputs are then final, so a resumed search decides the same)."""
        plan, spec = self.reruns.plan, self.reruns.plan.spec
        if not spec.auto:
            plan.add(self._certain_top())
            return
        if not self.rungs.finished() or plan.next_run() is not None or plan.live():
            return
        left = spec.runs(len(self.final), search_epochs=self._search_epochs(), max_t=self.budgets[-1])
        values = plan.values_of({c: self.final[c] for c in self._by_start(self.final)})
        plan.more(auto_reruns(values, confidence=spec.confidence, margin=spec.margin, left=left - len(plan.planned)))

    def _search_epochs(self) -> int:
        """Epochs the search's own runs trained, as the journal has them: each run's last
        reported step (a complete run without reports: its whole schedule)."""
        done = optuna.trial.TrialState.COMPLETE
        total = 0
        for study, budget in zip(self.studies, self.budgets, strict=True):
            for t in study.get_trials(deepcopy=False):
                if t.user_attrs.get(LOST_ATTR):
                    continue
                total += max(t.intermediate_values, default=budget if t.state == done else 0)
        return total

    def _by_start(self, configs: dict[str, Any]) -> list[str]:
        """`configs`' ids in the order their configs started: ties in a ranking go to the earlier."""
        order = {c: i for i, c in enumerate(self.rungs[0].started)}
        return sorted(configs, key=lambda c: order.get(c, len(order)))

    def _final(self, cid: str, value: float) -> None:
        self.final[cid] = value
        self.top.set(cid, value)

    def _certain_top(self) -> list[str]:
        """Configs certain to be in the re-evaluated top even if every pending value beat them."""
        return self.top.first(self.reruns.plan.spec.top - self.rungs.pending(len(self.budgets) - 1))

    def _live(self) -> int:
        return self.rungs.live_runs() + (len(self.reruns.plan.live()) if self.reruns else 0)

    def _add_running(self, study: Any, params: dict[str, Any], tid: str, cid: str | None, extra: dict[str, Any]) -> int:
        """A running trial with these values in `study`, in one write; its number."""
        attrs = {TUNE_ID: tid, CONFIG_ATTR: cid or self._fresh_id(len(study.get_trials(deepcopy=False)))}
        return add_running(study, self.dists, params, {**attrs, **extra})

    def _fresh_id(self, number: int) -> str:
        cid = f"c{number}"
        while cid in self.params:  # an adopted run kept the id it had; never reuse one
            cid += "+"
        return cid


class StudySearchGenerator(SearchGenerator):
    """Tune's SearchGenerator, except that the searcher alone says when the search is over:
    Tune's own count of trials created (saved apart from the journal) may be stale after a
    crash, and a resume that reruns failed runs may make new promotions due."""

    def is_finished(self) -> bool:
        return self.searcher.is_finished()


class SearchSync(Callback):
    """Hands the searcher the trials Tune will run, once, before Tune first asks it for one,
    and ASHA (`scheduler`) the values its rungs held before an interruption."""

    def __init__(self, searcher: StudySearch, scheduler: SearchASHA | None = None) -> None:
        self.searcher, self.scheduler = searcher, scheduler
        self.done = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.done:
            return
        self.done = True
        self.searcher.reconcile(
            [TrialView(t.trial_id, dict(t.config), str(t.status), dict(t.last_result or {})) for t in trials]
        )
        if self.scheduler is not None and trials:
            curves = self.searcher.store.curves(self.searcher.names[0], TUNE_ID)
            self.scheduler.restore(trials, curves, running=set(self.searcher.open))
