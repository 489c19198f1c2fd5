"""A finished (or interrupted) experiment -> leaderboard, trials.csv, best_config.yaml,
parameter importance (Optuna's fANOVA) and compute spent. Plain files, so `retrain` and the
report need no Ray."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from s9tune.config import TrainConfig
from s9tune.errors import S9Error
from s9tune.search.runner import SPACE_COPY, is_uri, read_text, write_text

logger = logging.getLogger(__name__)

BEST_CONFIG = "best_config.yaml"
TRIALS_CSV = "trials.csv"
LEADERBOARD_JSON = "leaderboard.json"
SCOPE = (
    "last epoch of a complete schedule: the final weights of a OneCycle run are what a retrain "
    "reproduces; mid-schedule peaks are at high LR and do not last"
)


@dataclass
class TrialRow:
    trial_id: str
    config: dict[str, Any]
    status: str  # completed | stopped (ASHA) | diverged | error | unfinished
    epochs: int
    best_val_accuracy: float | None
    last_val_accuracy: float | None
    time_s: float
    history: list[float] = field(default_factory=list)


@dataclass
class Experiment:
    path: str
    record: dict[str, Any]
    rows: list[TrialRow]
    _importance: tuple[dict[str, float], str] | None = field(default=None, repr=False)

    @property
    def max_t(self) -> int:
        return int(self.record["scheduler"]["max_t"])

    @property
    def searched(self) -> list[str]:
        return [d["key"] for d in self.record["dists"]]

    def ranked(self) -> list[TrialRow]:
        """Complete schedules first, by last-epoch val accuracy; then the rest."""

        def key(r: TrialRow) -> tuple:
            return (r.status == "completed", r.last_val_accuracy if r.last_val_accuracy is not None else -1.0)

        return sorted(self.rows, key=key, reverse=True)

    def best(self) -> TrialRow:
        done = [r for r in self.rows if r.status == "completed" and r.last_val_accuracy is not None]
        if not done:
            raise S9Error(f"{self.path}: no trial finished its schedule (statuses: {self.status_counts()})")
        return max(done, key=lambda r: r.last_val_accuracy or 0.0)

    def best_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.record["fixed"]).with_overrides(self.best().config)

    def status_counts(self) -> str:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trials"

    def compute_hours(self) -> dict[str, float]:
        secs = sum(r.time_s for r in self.rows)
        res = self.record["resources"]
        return {
            "trial_hours": secs / 3600,
            "gpu_hours": secs * float(res["gpus_per_trial"]) / 3600,
            "cpu_core_hours": secs * float(res["cpus_per_trial"]) / 3600,
        }


def split_path(experiment: str) -> tuple[str, str]:
    exp = experiment.rstrip("/")
    if not is_uri(exp):
        from pathlib import Path

        exp = str(Path(exp).expanduser().resolve())
    storage, _, name = exp.rpartition("/")
    return storage, name


def load_experiment(experiment: str) -> Experiment:
    from ray.tune import ExperimentAnalysis

    storage, name = split_path(experiment)
    raw = read_text(storage, f"{name}/{SPACE_COPY}")
    if raw is None:
        raise S9Error(f"{experiment}: not an s9tune experiment (no {SPACE_COPY}); pass STORAGE/NAME of a search")
    record = json.loads(raw)
    try:
        analysis = ExperimentAnalysis(f"{storage}/{name}", default_metric="val_accuracy", default_mode="max")
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise S9Error(f"{experiment}: Ray cannot read this experiment ({str(exc).splitlines()[0]})") from None
    max_t = int(record["scheduler"]["max_t"])
    searched = [d["key"] for d in record["dists"]]
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        df = frames.get(trial.trial_id)
        hist: list[float] = []
        diverged = False
        time_s = 0.0
        if df is not None and len(df) and "val_accuracy" in df:
            if "diverged" in df:
                diverged = bool((df["diverged"].fillna(0) > 0).any())
                df = df[df["diverged"].fillna(0) == 0]
            hist = [float(v) for v in df["val_accuracy"].tolist() if isinstance(v, (int, float)) and not math.isnan(v)]
            time_s = float(frames[trial.trial_id]["time_total_s"].max()) if "time_total_s" in frames[trial.trial_id] else 0.0
        status = _status(str(trial.status), len(hist), max_t, diverged)
        rows.append(
            TrialRow(
                trial_id=trial.trial_id,
                config={k: _plain(trial.config.get(k)) for k in searched},
                status=status,
                epochs=len(hist),
                best_val_accuracy=max(hist) if hist else None,
                last_val_accuracy=hist[-1] if hist else None,
                time_s=time_s,
                history=hist,
            )
        )
    return Experiment(f"{storage}/{name}", record, rows)


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


def importance(exp: Experiment) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each searched parameter for the final val accuracy
    (computed once per loaded experiment: export and the printed table share it)."""
    if exp._importance is None:
        exp._importance = _fanova(exp)
    return exp._importance


def _fanova(exp: Experiment) -> tuple[dict[str, float], str]:
    import optuna

    from s9tune.search.space import Dist

    dists = {d["key"]: Dist(d["key"], d["type"], d["low"], d["high"], d["q"], tuple(d["values"])) for d in exp.record["dists"]}
    done = [r for r in exp.rows if r.status == "completed" and r.last_val_accuracy is not None]
    basis = "trials that completed the schedule"
    if len(done) < 3:
        done = [r for r in exp.rows if r.last_val_accuracy is not None and r.status in ("completed", "stopped")]
        basis = "finished trials, ASHA-stopped ones at their last rung (fewer than 3 completed the schedule)"
    if len(done) < 2 or len(dists) < 1:
        return {}, "n/a: fANOVA needs at least 2 finished trials"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for r in done:
        study.add_trial(
            optuna.trial.create_trial(
                params={k: r.config[k] for k in dists},
                distributions={k: d.optuna_distribution() for k, d in dists.items()},
                value=r.last_val_accuracy,
            )
        )
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (RuntimeError, ValueError) as exc:
        return {}, f"n/a: fANOVA failed ({exc})"
    return {k: float(v) for k, v in imp.items()}, f"Optuna fANOVA on {len(done)} {basis}"


def leaderboard_rows(exp: Experiment) -> list[dict[str, Any]]:
    rows = []
    for r in exp.ranked():
        rows.append(
            {
                "trial": r.trial_id,
                **{k: r.config.get(k) for k in exp.searched},
                "best_val_accuracy": r.best_val_accuracy,
                "last_val_accuracy": r.last_val_accuracy,
                "epochs": r.epochs,
                "status": r.status,
                "time_s": round(r.time_s, 1),
            }
        )
    return rows


def export_experiment(experiment: str) -> Experiment:
    """Write trials.csv, leaderboard.json and (if any trial completed) best_config.yaml."""
    exp = load_experiment(experiment)
    storage, name = split_path(exp.path)
    rows = leaderboard_rows(exp)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(storage, f"{name}/{TRIALS_CSV}", buf.getvalue())
    imp, basis = importance(exp)
    write_text(
        storage,
        f"{name}/{LEADERBOARD_JSON}",
        json.dumps(
            {"scope": SCOPE, "rows": rows, "importance": imp, "importance_basis": basis, **exp.compute_hours()},
            indent=2,
        ),
    )
    try:
        cfg = exp.best_config()
    except S9Error:
        logger.warning("%s: no trial completed its schedule; no %s written", exp.path, BEST_CONFIG)
        return exp
    header = f"# best trial {exp.best().trial_id} of {exp.path}\n# scope: {SCOPE}\n"
    write_text(storage, f"{name}/{BEST_CONFIG}", header + cfg.to_yaml())
    return exp


def format_results(exp: Experiment) -> str:
    """The leaderboard table, parameter importance and compute, as `s9tune results` prints it."""
    keys = exp.searched
    head = ["trial", *keys, "best val", "last val", "epochs", "status"]
    lines = []
    for r in exp.ranked():
        lines.append(
            [
                r.trial_id,
                *[_fmt(r.config.get(k)) for k in keys],
                _pct(r.best_val_accuracy),
                _pct(r.last_val_accuracy),
                f"{r.epochs}/{exp.max_t}",
                r.status,
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in lines]
    out.append("")
    out.append(f"Ranked by {SCOPE.split(':')[0]}. Trials: {exp.status_counts()}.")
    imp, basis = importance(exp)
    if imp:
        out.append(f"Parameter importance ({basis}):")
        out += [f"  {k:<14} {v:.3f}" for k, v in imp.items()]
    else:
        out.append(f"Parameter importance: {basis}")
    hours = exp.compute_hours()
    out.append(
        f"Compute: {hours['trial_hours']:.2f} trial-hours = {hours['gpu_hours']:.2f} GPU-hours "
        f"(at {exp.record['resources']['gpus_per_trial']} GPU/trial), {hours['cpu_core_hours']:.2f} CPU core-hours"
    )
    return "\n".join(out)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def dump_yaml(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)
