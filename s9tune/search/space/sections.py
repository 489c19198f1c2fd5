"""The search space's `scheduler` and `reevaluate` sections: how a search spends epochs on
configs, parsed and checked (each failure one ConfigError naming the file and key)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig
from s9tune.errors import shown
from s9tune.search.space.checks import err, mapping, number

SCHEDULER_KEYS = {
    "asha": {"type", "grace_period", "reduction_factor", "max_t", "brackets"},
    "halving": {"type", "budgets", "keep"},
}
REEVAL_KEYS = {"top", "seeds"}
AUTO_KEYS = {"auto", "confidence", "cap", "margin"}
MAX_REEVAL_TOP = 10_000  # as num_samples
MAX_REEVAL_SEEDS = 100  # as retrain --seeds


@dataclass(frozen=True)
class SchedulerSpec:
    """How the search spends epochs on configs.

    asha: every config on one full-length schedule; ASHA stops the worse ones at its rungs.
    halving: every config on a complete schedule of `budgets[0]` epochs; the best `keep` of them
    trained again from scratch on a complete schedule of the next budget, and so on.
    """

    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0
    brackets: int = 1
    budgets: tuple[int, ...] = ()
    keep: float = 1.0

    def rung_sizes(self, num_configs: int) -> list[int]:
        """Configs trained at each budget: all at the first, then ceil(keep * previous), at least 1."""
        sizes = [num_configs]
        for _ in self.budgets[1:]:
            sizes.append(max(1, math.ceil(self.keep * sizes[-1] - 1e-9)))
        return sizes

    def to_record(self, max_t: int) -> dict[str, Any]:
        if self.type == "halving":
            return {"type": "halving", "max_t": max_t, "budgets": list(self.budgets), "keep": self.keep}
        return {
            "type": self.type,
            "max_t": max_t,
            "grace_period": self.grace_period,
            "reduction_factor": self.reduction_factor,
            "brackets": self.brackets,
        }


# `reevaluate: auto`: rerun while the leader's P(truly better) than a contender is below
# `confidence`, within `cap` of the search's own epochs (benchmarks/RESULTS.md, "search designs
# by replay, with independent reruns", chose both on development replays, then froze them)
AUTO_CONFIDENCE = 0.9
AUTO_CAP = 0.2
AUTO_MARGIN = 0.25  # of the spread of the configs' true means: closer than that is a tie


@dataclass(frozen=True)
class ReevalSpec:
    """`top` configs, each trained on `seeds` more seeds; top 0 turns the step off. `auto`:
    instead, reruns decided by how separated the leader is (search/searcher/pick.py)."""

    top: int = 0
    seeds: int = 0
    auto: bool = False
    confidence: float = AUTO_CONFIDENCE
    cap: float = AUTO_CAP
    margin: float = AUTO_MARGIN

    @property
    def on(self) -> bool:
        return self.auto or (self.top > 0 and self.seeds > 0)

    def runs(self, configs: int, *, search_epochs: float | None = None, max_t: int = 1) -> int:
        """Runs the step plans after a search with `configs` complete full-length values; under
        `auto` at most that many: its cap of `search_epochs` (default: `configs` full-length
        runs of `max_t` epochs)."""
        if self.auto:
            spent = configs * max_t if search_epochs is None else search_epochs
            # to the nearest whole run, and at least one: the leader's rerun, which measures σ
            return max(1, math.floor(self.cap * spent / max_t + 0.5))
        return min(self.top, configs) * self.seeds if self.on else 0

    def to_record(self) -> dict[str, Any]:
        if self.auto:
            return {"auto": True, "confidence": self.confidence, "cap": self.cap, "margin": self.margin}
        return {"top": self.top, "seeds": self.seeds}


def parse_reeval(path: Path, raw: Any) -> ReevalSpec:
    """`reevaluate: {top: K, seeds: M}`: after the search, the K best configs train M more times.
    `reevaluate: auto` (or `{auto: true, confidence: C, cap: F, margin: M}`): reruns while they
    can still change the pick, at most F of the search's epochs."""
    if raw is None or raw is False:
        return ReevalSpec()
    if raw == "auto" or (isinstance(raw, dict) and "auto" in raw):
        return parse_auto(path, {} if raw == "auto" else raw)
    spec = mapping(path, "reevaluate", raw, REEVAL_KEYS)
    missing = REEVAL_KEYS - set(spec)
    if missing:
        raise err(path, f"reevaluate.{sorted(missing)[0]}", "missing (e.g. reevaluate: {top: 3, seeds: 2})")
    top = int(number(path, "reevaluate.top", spec["top"], integer=True))
    seeds = int(number(path, "reevaluate.seeds", spec["seeds"], integer=True))
    if not 1 <= top <= MAX_REEVAL_TOP:
        raise err(path, "reevaluate.top", f"must lie in [1, {MAX_REEVAL_TOP:,}]")
    if not 1 <= seeds <= MAX_REEVAL_SEEDS:
        raise err(path, "reevaluate.seeds", f"must lie in [1, {MAX_REEVAL_SEEDS}]")
    return ReevalSpec(top, seeds)


def parse_auto(path: Path, raw: dict[str, Any]) -> ReevalSpec:
    spec = mapping(path, "reevaluate", raw, AUTO_KEYS)
    if spec and spec.get("auto") is not True:
        raise err(path, "reevaluate.auto", f"must be true, got {shown(spec.get('auto'))} (or leave reevaluate out)")
    conf = float(number(path, "reevaluate.confidence", spec.get("confidence", AUTO_CONFIDENCE)))
    cap = float(number(path, "reevaluate.cap", spec.get("cap", AUTO_CAP)))
    if not 0.5 <= conf < 1:
        raise err(path, "reevaluate.confidence", f"must lie in [0.5, 1), got {conf:g}")
    if not 0 < cap <= 1:
        raise err(path, "reevaluate.cap", f"must lie in (0, 1] (a share of the search's epochs), got {cap:g}")
    margin = float(number(path, "reevaluate.margin", spec.get("margin", AUTO_MARGIN)))
    if not 0 <= margin <= 1:
        raise err(path, "reevaluate.margin", f"must lie in [0, 1] (a share of the configs' spread), got {margin:g}")
    return ReevalSpec(auto=True, confidence=conf, cap=cap, margin=margin)


def parse_scheduler(path: Path, raw: Any, fixed: TrainConfig) -> SchedulerSpec:
    kind = raw.get("type", "asha") if isinstance(raw, dict) else "asha"
    if kind not in SCHEDULER_KEYS:
        raise err(path, "scheduler.type", f"unknown scheduler {shown(kind)} (known: {', '.join(SCHEDULER_KEYS)})")
    sched = mapping(path, "scheduler", raw, SCHEDULER_KEYS[kind])
    if kind == "halving":
        return parse_halving(path, sched, fixed)
    grace = int(
        number(path, "scheduler.grace_period", sched.get("grace_period", SchedulerSpec.grace_period), integer=True)
    )
    rf = number(path, "scheduler.reduction_factor", sched.get("reduction_factor", SchedulerSpec.reduction_factor))
    brackets = int(number(path, "scheduler.brackets", sched.get("brackets", SchedulerSpec.brackets), integer=True))
    if "max_t" in sched and sched["max_t"] != fixed.epochs:
        raise err(path, "scheduler.max_t", f"must equal fixed.epochs ({fixed.epochs}); it is derived from it")
    if not 1 <= grace <= fixed.epochs:
        raise err(path, "scheduler.grace_period", f"must lie in [1, epochs={fixed.epochs}]")
    if rf <= 1:
        raise err(path, "scheduler.reduction_factor", "must be > 1")
    if brackets < 1:
        raise err(path, "scheduler.brackets", "must be >= 1")
    return SchedulerSpec("asha", grace, float(rf), brackets)


def parse_halving(path: Path, sched: dict[str, Any], fixed: TrainConfig) -> SchedulerSpec:
    budgets = sched.get("budgets")
    if not isinstance(budgets, list) or not budgets:
        raise err(
            path,
            "scheduler.budgets",
            f"expected a list of epochs ending at fixed.epochs ({fixed.epochs}), e.g. [6, {fixed.epochs}]",
        )
    for i, b in enumerate(budgets):
        if number(path, f"scheduler.budgets[{i}]", b, integer=True) < 1:
            raise err(path, f"scheduler.budgets[{i}]", f"must be >= 1, got {b}")
    if any(a >= b for a, b in itertools.pairwise(budgets)):
        raise err(path, "scheduler.budgets", f"must increase strictly, got {budgets}")
    if budgets[-1] != fixed.epochs:
        raise err(
            path, "scheduler.budgets", f"the last budget ({budgets[-1]}) must equal fixed.epochs ({fixed.epochs})"
        )
    if len(budgets) > 1 and "keep" not in sched:
        raise err(path, "scheduler.keep", "missing: the fraction of a budget's configs that go on to the next")
    keep = number(path, "scheduler.keep", sched.get("keep", 1.0))
    if len(budgets) > 1 and not 0 < keep < 1:
        raise err(path, "scheduler.keep", f"must lie strictly between 0 and 1, got {keep}")
    return SchedulerSpec("halving", budgets=tuple(int(b) for b in budgets), keep=float(keep))
