"""Failures injected into search runs, for the tests of failure handling only.

When `S9TUNE_TEST_FAULTS` names a JSON file, a run whose config and budget match an entry
raises at the end of that epoch, before the epoch is reported (a retry goes on from the
checkpoint before it), and at every later epoch, for `times` attempts (-1: every attempt):

    [{"config": "c1", "budget": 3, "epoch": 2, "times": 1}]

`"config": "any"` is taken by the first run at that budget to get there, and only by it.
A failed run is retried in another process, so attempts are counted in files beside the JSON.
Nothing reads the variable unless it is set; no user-facing option sets it. It ships with the
package because the failure has to happen inside a trial, in a Ray worker that imports only the
installed s9tune: a test cannot patch code in that process.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.callbacks import BaseCallback
from s9tune.engine import EpochMetrics, FitState
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY

FAULTS_ENV = "S9TUNE_TEST_FAULTS"


class InjectedFault(RuntimeError):
    pass


@dataclass(frozen=True)
class Fault:
    config: str
    budget: int
    epoch: int
    times: int  # attempts that fail; -1: all

    def counter(self, spec: Path) -> Path:
        return spec.with_name(f"{spec.name}.{self.config}-{self.budget}.attempts")


class FaultInjector(BaseCallback):
    """Raises where the fault file says, for the run with this trial config."""

    def __init__(self, spec: Path, config: dict[str, Any]) -> None:
        self.spec = spec
        cid, budget = str(config.get(CONFIG_KEY)), int(config.get(BUDGET_KEY, 0))
        entries = json.loads(spec.read_text(encoding="utf-8"))
        self.faults = [
            Fault(**{**e, "config": cid})
            for e in entries
            if int(e["budget"]) == budget and (e["config"] == cid or (e["config"] == "any" and _claim(spec, e, cid)))
        ]

    def on_epoch_end(self, state: FitState, metrics: EpochMetrics) -> None:
        for fault in self.faults:
            if metrics.epoch < fault.epoch:
                continue
            counter = fault.counter(self.spec)
            done = int(counter.read_text()) if counter.exists() else 0
            if fault.times != -1 and done >= fault.times:
                continue
            counter.write_text(str(done + 1))
            raise InjectedFault(
                f"injected fault: config {fault.config}, {fault.budget}-epoch run, epoch {metrics.epoch}"
            )


def _claim(spec: Path, entry: dict[str, Any], cid: str) -> bool:
    """Whether `cid` holds the "any" fault at this budget: the first to ask gets it."""
    claim = spec.with_name(f"{spec.name}.any-{entry['budget']}.claim")
    try:
        with open(claim, "x", encoding="utf-8") as fh:  # exclusive create: one winner
            fh.write(cid)
    except FileExistsError:
        pass
    return claim.read_text(encoding="utf-8") == cid


def fault_injector(config: dict[str, Any]) -> FaultInjector | None:
    spec = os.environ.get(FAULTS_ENV)
    return FaultInjector(Path(spec), config) if spec else None
