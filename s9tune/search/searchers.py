"""Searchers that learn only from complete OneCycle schedules.

A OneCycle run's accuracy part-way through its schedule measures where it is in the LR cycle
more than how good the config is (benchmarks/RUNG_STUDY.md), so no value the search learns
from or promotes on may come from the middle of a schedule:

* `CompleteScheduleOptuna` (ASHA mode): Ray's OptunaSearch, except that a trial ASHA stopped
  mid-cycle is told to Optuna as PRUNED at the step it reached, not as COMPLETE with its
  mid-cycle value. TPE then ranks it below every complete trial, by how far it got.
* `HalvingSearch` (halving mode): successive halving over complete schedules. Every config
  first trains from scratch on a complete schedule of `budgets[0]` epochs; the best `keep`
  fraction is trained again, from scratch, on a complete schedule of the next budget, and so
  on. Each run is its own Tune trial, so the experiment stays one Tune experiment.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from s9tune.search.space import BUDGET_KEY, CONFIG_KEY, SchedulerSpec

logger = logging.getLogger(__name__)


def restored_trials(dirpath: str) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(trial id, config, status, last result) of each trial in the experiment state Tune is
    resuming from, read as TuneController.resume reads it.

    A killed driver can leave the searcher's saved state and the trials' saved state from
    different moments (two files, written and uploaded one after the other), so a searcher
    that is restored reconciles itself with the trials Tune will actually run."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.experiment.trial import Trial
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    path = _find_newest_experiment_checkpoint(dirpath)
    if path is None:
        return []
    with open(path, encoding="utf-8") as fh:
        state = _loads_with_cloudpickle(fh.read())
    out = []
    for trial_json, run_metadata in state["trial_data"]:
        trial = Trial.from_json_state(trial_json, stub=True)
        trial.restore_run_metadata(run_metadata)
        out.append((trial.trial_id, dict(trial.config), str(trial.status), dict(trial.last_result or {})))
    return out


def _finished(status: str, result: dict[str, Any]) -> bool:
    # an ERROR trial is rerun on resume (resume_errored), so it is not finished yet
    return status == "TERMINATED" and bool(result)


class ResumableSearch(SearchGenerator):
    """Tune's SearchGenerator around a ConcurrencyLimiter, reconciled on resume with the trials
    Tune restores: how many trials exist (so none is created twice or lost) and which are live
    (so the limiter neither waits for a trial that is gone nor drops one's completion)."""

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)  # the base searcher reconciles itself in here
        trials = restored_trials(dirpath)
        self._counter = len(trials)
        limiter = self.searcher
        if isinstance(limiter, ConcurrencyLimiter):
            limiter.live_trials = {tid for tid, _, status, _ in trials if status != "TERMINATED"}
            limiter.num_unfinished_live_trials = len(limiter.live_trials)


class CompleteScheduleOptuna(OptunaSearch):
    """OptunaSearch (TPE) that records only complete schedules as COMPLETE."""

    def __init__(self, *args: Any, max_t: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_t = max_t

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cut_short = (
            not error
            and result is not None
            and int(result.get("training_iteration", self._max_t)) < self._max_t
            and not result.get("diverged")  # a diverged run is a verdict on the config: keep its worst score
        )
        if not cut_short or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        import optuna

        ot_trial = self._ot_trials[trial_id]
        # Tune withholds the result that made ASHA stop the trial from on_trial_result; record it,
        # so PRUNED takes it as the last intermediate value (TPE ranks pruned trials below
        # complete ones, deeper ones first)
        if self.metric in result:
            ot_trial.report(float(result[self.metric]), int(result["training_iteration"]))
        self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def adopt(self, trial_id: str, params: dict[str, Any]) -> None:
        """Register a trial Tune runs but this searcher's saved state does not know."""
        if trial_id in self._ot_trials:
            return
        self._ot_study.enqueue_trial(params)
        self._ot_trials[trial_id] = self._ot_study.ask(fixed_distributions=self._space)

    def forget(self, trial_id: str) -> None:
        """Close a trial this searcher started but Tune's saved state does not have."""
        import optuna

        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        super().restore_from_dir(checkpoint_dir)
        trials = restored_trials(checkpoint_dir)
        for tid in set(self._ot_trials) - {t[0] for t in trials}:
            self.forget(tid)
        for tid, config, status, result in trials:
            self.adopt(tid, {k: config[k] for k in self._space})
            if _finished(status, result) and tid not in self._completed_trials:
                self.on_trial_complete(tid, result, error=status == "ERROR")


class HalvingSearch(Searcher):
    """Successive halving over complete schedules, new configs from an Optuna TPE searcher.

    TPE proposes configs for the first budget only and learns from their first-budget values,
    each the end of a complete schedule. Promotion is asynchronous but never speculative: a
    config starts at the next budget as soon as it is certain to be in the top `keep` of its
    budget, i.e. even if every run still pending at that budget beat it, it would still make
    the cut. So a slot waits only when no promotion is certain yet and no new config is left,
    and the set promoted is exactly the top `ceil(keep * n)`, whatever the order runs end in.
    """

    def __init__(self, inner: OptunaSearch, spec: SchedulerSpec, num_configs: int, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.inner = inner
        self.budgets = list(spec.budgets)
        self.plan = spec.rung_sizes(num_configs)
        self.params: dict[str, dict[str, Any]] = {}  # config id -> searched values, in start order
        self.runs: dict[str, tuple[str, int]] = {}  # trial id -> (config id, rung)
        self.started: list[list[str]] = [[] for _ in self.budgets]  # config ids per rung
        self.values: list[dict[str, float | None]] = [{} for _ in self.budgets]  # finished runs; None = failed

    @property
    def total_runs(self) -> int:
        return sum(self.plan)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def _ranked(self, rung: int) -> list[str]:
        done = [(cid, v) for cid, v in self.values[rung].items() if v is not None]
        order = {cid: i for i, cid in enumerate(self.params)}
        sign = -1.0 if self.mode == "max" else 1.0
        return [cid for cid, v in sorted(done, key=lambda cv: (sign * cv[1], order[cv[0]]))]

    def expected(self, rung: int) -> int:
        """Runs this rung will have in the end: its plan, unless failures below leave fewer configs."""
        if rung == 0:
            return self.plan[0]
        prev = rung - 1
        valid = sum(v is not None for v in self.values[prev].values())
        return min(self.plan[rung], valid + self.expected(prev) - len(self.values[prev]))

    def promotable(self, rung: int) -> str | None:
        """A config certain to be in the top of rung-1 and not yet started at `rung`."""
        prev, quota = rung - 1, self.plan[rung]
        if len(self.started[rung]) >= quota:
            return None
        pending = self.expected(prev) - len(self.values[prev])  # runs that may still beat it
        for pos, cid in enumerate(self._ranked(prev)):
            if pos + pending >= quota:
                return None
            if cid not in self.started[rung]:
                return cid
        return None

    def _start(self, trial_id: str, cid: str, rung: int) -> dict[str, Any]:
        self.runs[trial_id] = (cid, rung)
        self.started[rung].append(cid)
        logger.debug("run %s: config %s on a %d-epoch schedule", trial_id, cid, self.budgets[rung])
        return {**self.params[cid], BUDGET_KEY: self.budgets[rung], CONFIG_KEY: cid}

    def suggest(self, trial_id: str) -> dict | str | None:
        # the deepest promotion first: the final values arrive as early as possible
        for rung in range(len(self.budgets) - 1, 0, -1):
            cid = self.promotable(rung)
            if cid is not None:
                return self._start(trial_id, cid, rung)
        if len(self.started[0]) < self.plan[0]:
            params = self.inner.suggest(trial_id)
            if params is None or params == Searcher.FINISHED:
                return params
            self.params[trial_id] = dict(params)
            return self._start(trial_id, trial_id, 0)
        if all(cid in self.values[rung] for cid, rung in self.runs.values()):
            return Searcher.FINISHED  # nothing running and nothing left to promote: no run can follow
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.runs.get(trial_id, ("", -1))[1] == 0:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.runs:
            return
        cid, rung = self.runs[trial_id]
        value = None if (error or not result) else result.get(self.metric)
        complete = result is not None and (
            int(result.get("training_iteration", 0)) >= self.budgets[rung] or bool(result.get("diverged"))
        )
        self.values[rung][cid] = float(value) if (value is not None and complete) else None
        if rung == 0:
            self.inner.on_trial_complete(trial_id, result=result, error=error or not complete)

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        super().restore_from_dir(checkpoint_dir)
        trials = restored_trials(checkpoint_dir)
        known = {t[0] for t in trials}
        for tid, (cid, rung) in list(self.runs.items()):
            if tid not in known:  # started after Tune's last snapshot: Tune will not run it
                del self.runs[tid]
                self.started[rung].remove(cid)
                self.values[rung].pop(cid, None)
                if rung == 0:
                    del self.params[cid]
                    self.inner.forget(tid)
        for tid, config, status, result in trials:
            if tid not in self.runs:  # started before it, but after the searcher's own snapshot
                cid, rung = str(config[CONFIG_KEY]), self.budgets.index(int(config[BUDGET_KEY]))
                if rung == 0:
                    self.params[cid] = {k: v for k, v in config.items() if k not in (BUDGET_KEY, CONFIG_KEY)}
                    self.inner.adopt(tid, self.params[cid])
                self.runs[tid] = (cid, rung)
                self.started[rung].append(cid)
            cid, rung = self.runs[tid]
            if _finished(status, result) and cid not in self.values[rung]:
                self.on_trial_complete(tid, result, error=status == "ERROR")

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__.copy(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
