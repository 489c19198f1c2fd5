"""The experiment on storage: where it lives (a folder or a URI), how s9tune's record of it is
written and read, and what its trials hold once Ray's `ExperimentAnalysis` has read them.

`STORAGE/NAME` is one Tune experiment plus s9tune's record (`s9tune_space.json`: the
validated search space, so resume and results never depend on today's YAML file).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.errors import S9Error
from s9tune.search.space import BUDGET_KEY, CONFIG_KEY, METRIC, MODE, REPLACES_KEY, SearchSpace
from s9tune.search.trials import Experiment, RunStatus, TrialRow
from s9tune.storage import Folder, is_uri

SPACE_RECORD = "s9tune_space.json"


def resolve_storage(storage: str | None) -> str:
    """Absolute local path or a URI. Tune changes each trial's working directory, so a relative
    path would point somewhere else inside a trial."""
    if storage is None:
        return str((Path.cwd() / "searches").resolve())
    if is_uri(storage):
        base, sep, query = storage.partition("?")
        return base.rstrip("/") + sep + query
    return str(Path(storage).expanduser().resolve())


def default_name(space: SearchSpace) -> str:
    return f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class ExperimentRef:
    """STORAGE/NAME, with the file operations s9tune needs on it (local or a pyarrow URI such as
    s3://bucket/prefix, optionally with ?endpoint_override=host:port&scheme=http)."""

    storage: str
    name: str

    @classmethod
    def parse(cls, experiment: str) -> ExperimentRef:
        base, sep, query = experiment.partition("?")
        base = base.rstrip("/")
        if not is_uri(base):
            base = str(Path(base).expanduser().resolve())
        storage, _, name = base.rpartition("/")
        return cls(storage + sep + query, name)

    @property
    def path(self) -> str:
        base, sep, query = self.storage.partition("?")
        return f"{base}/{self.name}{sep}{query}"

    @property
    def folder(self) -> Folder:
        return Folder.parse(self.path)

    def exists(self) -> bool:
        return self.folder.exists()

    def check_writable(self) -> None:
        """A missing bucket, refused credentials or a read-only folder become one line here,
        before Ray starts, not a traceback from a trial (nothing is created for a local path)."""
        self.folder.check_writable()

    def delete(self) -> None:
        self.folder.delete()

    def write_text(self, relpath: str, text: str) -> None:
        self.folder.write_text(relpath, text)

    def read_text(self, relpath: str) -> str | None:
        """The file's text, or None if it does not exist."""
        return self.folder.read_text(relpath)

    def write_record(self, space: SearchSpace) -> None:
        self.write_text(SPACE_RECORD, json.dumps(space.to_record(), indent=2))

    def read_record(self) -> SearchSpace:
        raw = self.read_text(SPACE_RECORD)
        if raw is None:
            raise S9Error(
                f"{self.path}: no such s9tune experiment (no {SPACE_RECORD}); pass the STORAGE/NAME a search printed"
            )
        return SearchSpace.from_record(json.loads(raw))


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
    return Experiment(ref.path, space, rows)


def _trial_row(trial: Any, df: Any, searched: list[str], max_t: int) -> TrialRow:
    budget = int(trial.config.get(BUDGET_KEY, max_t))
    hist: list[float] = []
    diverged = False
    time_s = 0.0
    epochs = 0
    if df is not None and len(df) and METRIC in df:
        time_s = float(df["time_total_s"].max()) if "time_total_s" in df else 0.0
        if "training_iteration" in df:
            # a restored trial reports the epochs after its last checkpoint again: the later row
            # of an epoch is the one its final weights went through
            df = df.drop_duplicates("training_iteration", keep="last").sort_values("training_iteration")
        if "diverged" in df:
            diverged = bool((df["diverged"].fillna(0) > 0).any())
            df = df[df["diverged"].fillna(0) == 0]
        hist = [float(v) for v in df[METRIC].tolist() if isinstance(v, (int, float)) and not math.isnan(v)]
        # the epoch reached, not the rows: rows of the epochs before a checkpoint can be missing
        # where the driver was killed before it uploaded them (cloud storage)
        epochs = int(df["training_iteration"].iloc[-1]) if "training_iteration" in df and len(df) else len(hist)
    return TrialRow(
        trial_id=trial.trial_id,
        config={k: _plain(trial.config.get(k)) for k in searched},
        status=_status(str(trial.status), epochs, budget, diverged),
        epochs=epochs,
        best_val_accuracy=max(hist) if hist else None,
        last_val_accuracy=hist[-1] if hist else None,
        time_s=time_s,
        history=hist,
        config_id=str(trial.config.get(CONFIG_KEY, trial.trial_id)),
        budget=budget,
        replaces=str(trial.config.get(REPLACES_KEY) or ""),
    )


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _status(ray_status: str, epochs: int, max_t: int, diverged: bool) -> RunStatus:
    if diverged:
        return "diverged"
    if ray_status == "ERROR":
        return "error"
    if ray_status != "TERMINATED":
        return "unfinished"
    return "completed" if epochs >= max_t else "stopped"
