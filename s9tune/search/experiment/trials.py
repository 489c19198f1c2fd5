"""What a loaded experiment holds, as values: its trials (TrialRow), halving's configs
(ConfigRow), the ranking, the best trial (BestTrial) and whether the search got through its plan.
search/experiment/record.py builds it from storage; export, results and retrain read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s9tune.config import TrainConfig
from s9tune.errors import ConfigError, S9Error
from s9tune.search.outcome import RunStatus
from s9tune.search.searcher.pick import Certainty, auto_reruns, by_mean, certainty, ranked
from s9tune.search.space.space import SearchSpace

SCOPE = (
    "last epoch of a complete schedule: the final weights of a OneCycle run are what a retrain "
    "reproduces; mid-schedule peaks are at high LR and do not last"
)
HALVING_SCOPE = (
    "value at the highest budget a config reached: each value is the last epoch of a complete "
    "schedule of that length, and the final weights of a OneCycle run are what a retrain reproduces"
)


# what became of a Tune trial: its whole schedule, stopped early by ASHA, a non-finite loss,
# an error Tune gave up on, or not over yet (interrupted, or running)


@dataclass
class TrialRow:
    """One Tune trial: a config under ASHA, one run of a config at one budget under halving."""

    trial_id: str
    config: dict[str, Any]  # the searched values
    status: RunStatus
    epochs: int
    best_val_accuracy: float | None
    last_val_accuracy: float | None
    time_s: float
    history: list[float] = field(default_factory=list)
    config_id: str = ""  # under halving, shared by a config's runs; else the trial id
    budget: int = 0  # epochs of the run's schedule
    replaces: str = ""  # under halving: the config whose failed run at this budget this one stood in for
    seed: int | None = None  # a re-evaluation run's seed (search/searcher/reeval.py); None for the search's own runs

    @property
    def final_value(self) -> float | None:
        """The value at the end of its complete schedule, if it got there."""
        return self.last_val_accuracy if self.status == "completed" else None


@dataclass
class ConfigRow:
    """One config under halving: its runs, one per budget it reached."""

    config_id: str
    config: dict[str, Any]
    runs: list[TrialRow]

    @property
    def values(self) -> dict[int, float | None]:
        return {r.budget: r.final_value for r in sorted(self.runs, key=lambda r: r.budget)}

    @property
    def top(self) -> TrialRow | None:
        """The run at the highest budget with a complete-schedule value."""
        done = [r for r in self.runs if r.final_value is not None]
        return max(done, key=lambda r: r.budget) if done else None

    @property
    def status(self) -> RunStatus:
        return max(self.runs, key=lambda r: r.budget).status


@dataclass
class SeedMean:
    """A config the re-evaluation step retrained: its search run and its reruns."""

    config_id: str
    config: dict[str, Any]
    search_run: TrialRow
    reruns: list[TrialRow]

    @property
    def values(self) -> list[float]:
        """Complete full-length values: the search run's first, then the reruns' by seed."""
        runs = [self.search_run, *sorted(self.reruns, key=lambda r: r.seed or 0)]
        return [r.final_value for r in runs if r.final_value is not None]

    @property
    def mean(self) -> float | None:
        vals = self.values
        return sum(vals) / len(vals) if vals else None


@dataclass(frozen=True)
class BestTrial:
    """The trial a retrain reproduces: the best value at the end of a complete schedule."""

    experiment: str
    trial_id: str
    params: dict[str, Any]  # the searched values
    config: TrainConfig  # fixed values + params
    val_accuracy: float  # the run's value, or with re-evaluation the mean over its seeds
    epochs: int
    seeds: int = 1  # complete runs the value is the mean of


@dataclass
class Experiment:
    path: str  # STORAGE/NAME, as search/experiment.ExperimentRef writes it
    space: SearchSpace
    rows: list[TrialRow]
    _importance: tuple[dict[str, float], str] | None = field(default=None, repr=False)

    @property
    def searched(self) -> list[str]:
        return [d.key for d in self.space.dists]

    @property
    def halving(self) -> bool:
        return self.space.scheduler.type == "halving"

    @property
    def scope(self) -> str:
        """What the ranking and the best trial are based on."""
        return HALVING_SCOPE if self.halving else SCOPE

    @property
    def search_rows(self) -> list[TrialRow]:
        """The search's own runs, without the re-evaluation runs."""
        return [r for r in self.rows if r.seed is None]

    def ranked(self) -> list[TrialRow]:
        """Complete schedules first, by last-epoch val accuracy; then the rest."""

        def key(r: TrialRow) -> tuple:
            return (r.status == "completed", r.last_val_accuracy if r.last_val_accuracy is not None else -1.0)

        return sorted(self.rows, key=key, reverse=True)

    def configs(self) -> list[ConfigRow]:
        """Halving's configs, ranked by their value at the highest budget each reached."""
        by_id: dict[str, ConfigRow] = {}
        for r in self.search_rows:
            by_id.setdefault(r.config_id, ConfigRow(r.config_id, r.config, [])).runs.append(r)

        def key(c: ConfigRow) -> tuple:
            top = c.top
            return (top.budget, top.final_value) if top is not None else (0, -1.0)

        return sorted(by_id.values(), key=key, reverse=True)

    def reevaluated(self) -> list[SeedMean]:
        """The configs the re-evaluation step retrained, best mean first (search/searcher/reeval.py)."""
        longest = self.space.max_t
        search = {r.config_id: r for r in self.search_rows if r.budget == longest}
        out: dict[str, SeedMean] = {}
        for r in self.rows:
            if r.seed is not None and r.config_id in search:
                run = search[r.config_id]
                if r.config != run.config:  # a rerun measures its search run's config, or nothing
                    raise S9Error(
                        f"{self.path}: trial {r.trial_id}, a rerun of {r.config_id}, has other values than "
                        f"that config's run {run.trial_id}; the experiment is damaged or edited"
                    )
                out.setdefault(r.config_id, SeedMean(r.config_id, run.config, run, [])).reruns.append(r)
        ranked = by_mean({c: m.values for c, m in out.items()}, set(out))  # the pick's rule
        return [out[c] for c in ranked] + [m for c, m in out.items() if c not in ranked]

    def full_values(self) -> dict[str, list[float]]:
        """Each config's complete full-length values: its search run's, then its reruns' by
        seed (search/searcher/pick.py's input), configs in the order their runs appear."""
        longest = self.space.max_t
        out = {r.config_id: [r.final_value] for r in self.search_rows if r.budget == longest and r.final_value}
        for r in sorted((r for r in self.rows if r.seed is not None), key=lambda r: r.seed or 0):
            if r.config_id in out and r.final_value is not None:
                out[r.config_id].append(r.final_value)
        return out

    def baseline_id(self) -> str | None:
        """The config id of the space's baseline (the search's first config), if it ran."""
        base = self.space.baseline
        if not base:
            return None
        same = (r for r in self.search_rows if all(_same(r.config.get(k), v) for k, v in base.items()))
        return next((r.config_id for r in same), None)

    def certainty(self) -> Certainty | None:
        """How sure the pick is (search/searcher/pick.py); None if nothing completed."""
        values = self.full_values()
        try:
            best = self.best()
        except S9Error:
            return None
        pick = next((r.config_id for r in self.search_rows if r.trial_id == best.trial_id), best.trial_id)
        if pick not in values:
            return None
        base = self.baseline_id()
        note = "the search had no baseline" if not self.space.baseline else ""
        return certainty(values, pick, baseline=base, baseline_note=note)

    def best(self) -> BestTrial:
        """With re-evaluation, the re-evaluated config with the best mean over its seeds (under
        `auto`, the leader by pick.ranked, re-evaluated or not); otherwise the highest value
        at the end of a complete schedule (under halving, at the highest budget)."""
        if self.space.reevaluate.auto:
            values = self.full_values()
            lead = next(iter(ranked(values)), None)
            row = next((r for r in self.search_rows if r.config_id == lead and r.budget == self.space.max_t), None)
            if row is not None:
                cfg = self.space.fixed.with_overrides(row.config)
                vals = values[row.config_id]
                return BestTrial(
                    self.path, row.trial_id, dict(row.config), cfg, sum(vals) / len(vals), row.budget, len(vals)
                )
        means = [m for m in self.reevaluated() if m.mean is not None]
        if means:
            top = means[0]
            cfg = self._config(top.search_run)
            return BestTrial(
                self.path,
                top.search_run.trial_id,
                dict(top.config),
                cfg,
                float(top.mean or 0.0),
                self.space.max_t,
                seeds=len(top.values),
            )
        if self.halving:
            done = [c.top for c in self.configs() if c.top is not None]
            row = done[0] if done else None
        else:
            row = next((r for r in self.ranked() if r.final_value is not None and r.seed is None), None)
        if row is None:
            raise S9Error(f"{self.path}: no trial finished its schedule (statuses: {self.status_counts()})")
        cfg = self._config(row)
        return BestTrial(
            self.path, row.trial_id, dict(row.config), cfg, float(row.last_val_accuracy or 0.0), row.budget
        )

    def _config(self, row: TrialRow) -> TrainConfig:
        """The TrainConfig a retrain trains for this trial: its values checked against the
        recorded distributions and TrainConfig's bounds, whoever wrote the files."""
        try:
            return self.space.fixed.with_overrides(
                self.space.check_params(row.config, f"{self.path}: trial {row.trial_id}")
            )
        except ConfigError as exc:
            raise S9Error(f"{exc} (the experiment is damaged or edited)") from None

    def interrupted(self) -> bool:
        """True if a trial is unfinished or runs the plan asked for were never started."""
        if any(r.status == "unfinished" for r in self.rows):
            return True
        longest = self.space.max_t
        complete = sum(r.budget == longest and r.final_value is not None for r in self.search_rows)
        if self.space.reevaluate.auto:
            if self._auto_wants_more():
                return True
        elif sum(r.seed is not None for r in self.rows) < self.space.reevaluate.runs(complete):
            return True
        if not self.halving:
            return len(self.search_rows) < self.space.num_samples
        sizes = self.space.plan().rung_sizes
        for size, budget, below in zip(
            sizes, self.space.scheduler.budgets, [None, *self.space.scheduler.budgets[:-1]], strict=True
        ):
            ran = sum(r.budget == budget for r in self.search_rows)
            # a rung may be short only because too few configs below it got a value
            valid_below = (
                sum(r.budget == below and r.final_value is not None for r in self.search_rows) if below else size
            )
            if ran < min(size, valid_below):
                return True
        return False

    def _auto_wants_more(self) -> bool:
        """`reevaluate: auto` would still start a rerun: its rule on these values, within its cap."""
        spec = self.space.reevaluate
        spent = sum(r.epochs for r in self.search_rows)
        cap = spec.runs(0, search_epochs=spent, max_t=self.space.max_t)
        done = sum(r.seed is not None for r in self.rows)
        return bool(auto_reruns(self.full_values(), confidence=spec.confidence, margin=spec.margin, left=cap - done))

    def replacements(self) -> list[str]:
        """Under halving, each promoted run that failed and the config promoted in its place."""
        return [
            f"config {r.replaces}'s {r.budget}-epoch run failed; config {r.config_id} was promoted in its place"
            for r in sorted(self.rows, key=lambda r: (r.budget, r.config_id))
            if r.replaces
        ]

    def status_counts(self) -> str:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trials"

    def compute_hours(self) -> dict[str, float]:
        secs = sum(r.time_s for r in self.rows)
        return {
            "trial_hours": secs / 3600,
            "gpu_hours": secs * self.space.gpus_per_trial / 3600,
            "cpu_core_hours": secs * self.space.cpus_per_trial / 3600,
        }


def _same(a: Any, b: Any) -> bool:
    """A searched value as recorded equals the baseline's (floats through JSON: to rounding)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b
