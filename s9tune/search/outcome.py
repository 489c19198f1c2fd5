"""What became of a run: the one rule the searcher, the console, the experiment's files and
retrain's seeds all use.

A run trains one config on one complete OneCycle schedule of `budget` epochs, as one Tune trial:

* diverged: its loss went non-finite; a verdict on the config, valued at WORST_ACCURACY, so that
  TPE learns to avoid it (it wins over everything below: a run that diverged in its last epoch
  reached the end of its schedule too, with nothing worth keeping);
* completed: it reported the last epoch of its schedule;
* stopped: a scheduler (ASHA) ended it early; its last value is mid-schedule;
* error: it failed for good (Tune's retries spent);
* unfinished: none of these yet (running, or waiting to start or to retry, when the driver stopped).

A run is `over` when it will not train again (completed, stopped, diverged); its value is `final`
(what the searcher learns, what ranks a config, what a pick rests on) only when completed or
diverged: a stopped run's value is mid-cycle.
"""

from __future__ import annotations

from typing import Literal

RunStatus = Literal["completed", "stopped", "diverged", "error", "unfinished"]
WORST_ACCURACY = 0.0  # what a diverged run scores
OVER: tuple[RunStatus, ...] = ("completed", "stopped", "diverged")
FINAL: tuple[RunStatus, ...] = ("completed", "diverged")


def run_status(epochs: int, budget: int, *, diverged: bool, stopped: bool, failed: bool) -> RunStatus:
    """The status of a run that reported up to epoch `epochs` of its `budget`-epoch schedule.
    `stopped`: a scheduler ended it (Tune's `done` on a last row before the end); `failed`: Tune
    gave up on it (no retry left, nothing reported after the last failure)."""
    if diverged:
        return "diverged"
    if epochs >= budget:
        return "completed"
    if stopped:
        return "stopped"
    if failed:
        return "error"
    return "unfinished"
