"""The Tune scheduler a search space asks for: ASHA under `asha`, none under `halving` (every
run ends its own complete schedule). ASHA's rungs are for the search's configs: a
re-evaluation run (search/searcher/reeval.py) measures a chosen config on another seed, so it always
runs its whole schedule."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from s9tune.search.space.space import SEED_KEY, SearchSpace


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


def scheduler_for(space: SearchSpace) -> TrialScheduler | None:
    sched = space.scheduler
    if sched.type == "halving":
        return None
    return SearchASHA(
        time_attr="training_iteration",
        max_t=space.max_t,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
        brackets=sched.brackets,
    )
