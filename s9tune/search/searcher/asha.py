"""The Tune scheduler a search space asks for: ASHA under `asha`, none under `halving` (every
run ends its own complete schedule). ASHA's rungs are for the search's configs: a
re-evaluation run (search/searcher/reeval.py) measures a chosen config on another seed, so it always
runs its whole schedule."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from s9tune.search.space.space import METRIC, SEED_KEY, SearchSpace

TIME_ATTR = "training_iteration"  # a run's epochs: it reports once per epoch


class SearchASHA(ASHAScheduler):
    """Ray's ASHA, except that a re-evaluation run is not one of its trials: never stopped, and
    its final value never enters a rung's cutoff (ASHA would record it at the highest rung it
    passed, beside the mid-schedule values of the search's runs still going)."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if SEED_KEY not in trial.config:
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if SEED_KEY in trial.config:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if SEED_KEY not in trial.config:
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if SEED_KEY not in trial.config:
            super().on_trial_remove(tune_controller, trial)

    def restore(self, trials: list[Any], curves: dict[str, list[tuple[int, float]]], *, running: set[str]) -> None:
        """Give a resumed search's ASHA the values its rungs held: Tune saves no scheduler, so it
        starts empty, and the runs that reach a rung after the resume would be judged against the
        few values reported since (promoted where the search uninterrupted would have stopped
        them), a restored run past a rung judged there again. Each run Tune restored (and added
        here) replays the values it reported, in step order, through ASHA's own hook, whose
        decisions are dropped: its rungs then hold what they held before. `curves`: each run's
        reported (epoch, value), by Tune trial id (the journal's); `running`: the runs the
        journal has running. A run Tune restores to run on that the journal has finished (Tune's
        state was saved before ASHA stopped it) is left out: it reaches the rung again, and is
        judged there again, as it was before."""
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR") and trial.trial_id not in running:
                continue
            for step, value in curves.get(trial.trial_id, ()):
                self.on_trial_result(None, trial, {TIME_ATTR: step, METRIC: value})


def scheduler_for(space: SearchSpace) -> TrialScheduler | None:
    sched = space.scheduler
    if sched.type == "halving":
        return None
    return SearchASHA(
        time_attr=TIME_ATTR,
        max_t=space.max_t,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
        brackets=sched.brackets,
    )
