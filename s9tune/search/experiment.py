"""The experiment on storage: where it lives (a folder or a URI), how s9tune's record of it is
written and read, and what its trials hold once Ray's `ExperimentAnalysis` has read them.

`STORAGE/NAME` is one Tune experiment plus s9tune's record (`s9tune_space.json`: the
validated search space, so resume and results never depend on today's YAML file).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig
from s9tune.errors import S9Error
from s9tune.search.space import BUDGET_KEY, CONFIG_KEY, METRIC, MODE, SearchSpace

SPACE_RECORD = "s9tune_space.json"
SCOPE = (
    "last epoch of a complete schedule: the final weights of a OneCycle run are what a retrain "
    "reproduces; mid-schedule peaks are at high LR and do not last"
)
HALVING_SCOPE = (
    "value at the highest budget a config reached: each value is the last epoch of a complete "
    "schedule of that length, and the final weights of a OneCycle run are what a retrain reproduces"
)


def is_uri(storage: str) -> bool:
    return "://" in storage


def resolve_storage(storage: str | None) -> str:
    """Absolute local path or a URI. Tune changes each trial's working directory, so a relative
    path would point somewhere else inside a trial."""
    if storage is None:
        return str((Path.cwd() / "searches").resolve())
    if is_uri(storage):
        return storage.rstrip("/")
    return str(Path(storage).expanduser().resolve())


def default_name(space: SearchSpace) -> str:
    return f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class ExperimentRef:
    """STORAGE/NAME, with the file operations s9tune needs on it (local or pyarrow URI)."""

    storage: str
    name: str

    @classmethod
    def parse(cls, experiment: str) -> "ExperimentRef":
        exp = experiment.rstrip("/")
        if not is_uri(exp):
            exp = str(Path(exp).expanduser().resolve())
        storage, _, name = exp.rpartition("/")
        return cls(storage, name)

    @property
    def path(self) -> str:
        return f"{self.storage}/{self.name}"

    def _fs(self):  # noqa: ANN202
        import pyarrow.fs

        if is_uri(self.storage):
            fs, root = pyarrow.fs.FileSystem.from_uri(self.storage)
            return fs, f"{root}/{self.name}"
        return pyarrow.fs.LocalFileSystem(), self.path

    def exists(self) -> bool:
        import pyarrow.fs

        fs, root = self._fs()
        return fs.get_file_info(root).type != pyarrow.fs.FileType.NotFound

    def delete(self) -> None:
        fs, root = self._fs()
        fs.delete_dir(root)

    def write_text(self, relpath: str, text: str) -> None:
        fs, root = self._fs()
        path = f"{root}/{relpath}"
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as fh:
            fh.write(text.encode("utf-8"))

    def read_text(self, relpath: str) -> str | None:
        fs, root = self._fs()
        try:
            with fs.open_input_stream(f"{root}/{relpath}") as fh:
                return fh.read().decode("utf-8")
        except (FileNotFoundError, OSError):
            return None

    def write_record(self, space: SearchSpace) -> None:
        self.write_text(SPACE_RECORD, json.dumps(space.to_record(), indent=2))

    def read_record(self) -> SearchSpace:
        raw = self.read_text(SPACE_RECORD)
        if raw is None:
            raise S9Error(f"{self.path}: no such s9tune experiment (no {SPACE_RECORD}); pass the STORAGE/NAME a search printed")
        return SearchSpace.from_record(json.loads(raw))


@dataclass
class TrialRow:
    """One Tune trial: a config under ASHA, one run of a config at one budget under halving."""

    trial_id: str
    config: dict[str, Any]  # the searched values
    status: str  # completed | stopped (ASHA) | diverged | error | unfinished
    epochs: int
    best_val_accuracy: float | None
    last_val_accuracy: float | None
    time_s: float
    history: list[float] = field(default_factory=list)
    config_id: str = ""  # under halving, shared by a config's runs; else the trial id
    budget: int = 0  # epochs of the run's schedule

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
    def status(self) -> str:
        return max(self.runs, key=lambda r: r.budget).status


@dataclass(frozen=True)
class BestTrial:
    """The trial a retrain reproduces: the best value at the end of a complete schedule."""

    experiment: str
    trial_id: str
    params: dict[str, Any]  # the searched values
    config: TrainConfig  # fixed values + params
    val_accuracy: float
    epochs: int


@dataclass
class Experiment:
    ref: ExperimentRef
    space: SearchSpace
    rows: list[TrialRow]
    _importance: tuple[dict[str, float], str] | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return self.ref.path

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

    def ranked(self) -> list[TrialRow]:
        """Complete schedules first, by last-epoch val accuracy; then the rest."""

        def key(r: TrialRow) -> tuple:
            return (r.status == "completed", r.last_val_accuracy if r.last_val_accuracy is not None else -1.0)

        return sorted(self.rows, key=key, reverse=True)

    def configs(self) -> list[ConfigRow]:
        """Halving's configs, ranked by their value at the highest budget each reached."""
        by_id: dict[str, ConfigRow] = {}
        for r in self.rows:
            by_id.setdefault(r.config_id, ConfigRow(r.config_id, r.config, [])).runs.append(r)

        def key(c: ConfigRow) -> tuple:
            top = c.top
            return (top.budget, top.final_value) if top is not None else (0, -1.0)

        return sorted(by_id.values(), key=key, reverse=True)

    def best(self) -> BestTrial:
        """The highest value at the end of a complete schedule: under halving, at the highest budget."""
        if self.halving:
            done = [c.top for c in self.configs() if c.top is not None]
            row = done[0] if done else None
        else:
            row = next((r for r in self.ranked() if r.final_value is not None), None)
        if row is None:
            raise S9Error(f"{self.path}: no trial finished its schedule (statuses: {self.status_counts()})")
        cfg = self.space.fixed.with_overrides(row.config)
        return BestTrial(self.path, row.trial_id, dict(row.config), cfg, float(row.last_val_accuracy or 0.0), row.budget)

    def interrupted(self) -> bool:
        """True if a trial is unfinished or runs the plan asked for were never started."""
        if any(r.status == "unfinished" for r in self.rows):
            return True
        if not self.halving:
            return len(self.rows) < self.space.num_samples
        sizes = self.space.scheduler.rung_sizes(self.space.num_samples)
        for size, budget, below in zip(sizes, self.space.scheduler.budgets, [None, *self.space.scheduler.budgets]):
            ran = sum(r.budget == budget for r in self.rows)
            # a rung may be short only because too few configs below it got a value
            valid_below = sum(r.budget == below and r.final_value is not None for r in self.rows) if below else size
            if ran < min(size, valid_below):
                return True
        return False

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


def load_experiment(experiment: str) -> Experiment:
    """Read STORAGE/NAME: s9tune's record, then every trial through Ray's ExperimentAnalysis."""
    from ray.tune import ExperimentAnalysis

    ref = ExperimentRef.parse(experiment)
    space = ref.read_record()
    try:
        analysis = ExperimentAnalysis(ref.path, default_metric=METRIC, default_mode=MODE)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise S9Error(f"{experiment}: Ray cannot read this experiment ({str(exc).splitlines()[0]})") from None
    frames = analysis.trial_dataframes
    keys = [d.key for d in space.dists]
    rows = [_trial_row(t, frames.get(t.trial_id), keys, space.max_t) for t in analysis.trials]
    return Experiment(ref, space, rows)


def _trial_row(trial: Any, df: Any, searched: list[str], max_t: int) -> TrialRow:
    budget = int(trial.config.get(BUDGET_KEY, max_t))
    hist: list[float] = []
    diverged = False
    time_s = 0.0
    if df is not None and len(df) and METRIC in df:
        time_s = float(df["time_total_s"].max()) if "time_total_s" in df else 0.0
        if "diverged" in df:
            diverged = bool((df["diverged"].fillna(0) > 0).any())
            df = df[df["diverged"].fillna(0) == 0]
        hist = [float(v) for v in df[METRIC].tolist() if isinstance(v, (int, float)) and not math.isnan(v)]
    return TrialRow(
        trial_id=trial.trial_id,
        config={k: _plain(trial.config.get(k)) for k in searched},
        status=_status(str(trial.status), len(hist), budget, diverged),
        epochs=len(hist),
        best_val_accuracy=max(hist) if hist else None,
        last_val_accuracy=hist[-1] if hist else None,
        time_s=time_s,
        history=hist,
        config_id=str(trial.config.get(CONFIG_KEY, trial.trial_id)),
        budget=budget,
    )


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _status(ray_status: str, epochs: int, max_t: int, diverged: bool) -> str:
    if diverged:
        return "diverged"
    if ray_status == "ERROR":
        return "error"
    if ray_status != "TERMINATED":
        return "unfinished"
    return "completed" if epochs >= max_t else "stopped"
