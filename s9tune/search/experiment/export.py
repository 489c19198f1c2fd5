"""A finished (or interrupted) experiment -> leaderboard, trials.csv, best_config.yaml,
parameter importance (Optuna's fANOVA) and compute spent, as files and as the printed table."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from typing import Any

import optuna

from s9tune.errors import S9Error, printable
from s9tune.search.experiment.record import ExperimentRef, load_experiment
from s9tune.search.experiment.trials import Experiment, TrialRow

logger = logging.getLogger(__name__)

BEST_CONFIG = "best_config.yaml"
TRIALS_CSV = "trials.csv"
LEADERBOARD_JSON = "leaderboard.json"
MAX_TABLE_ROWS = 25  # the printed leaderboard's best rows; the files hold every one


MIN_IMPORTANCE_VALUES = 10  # fANOVA's forest on fewer points ranks noise (2 trials gave 1.000 / 0.000 / 0.000)
# fANOVA's time grows faster than its values (on this 2-core machine 2 s at 300, 16 s at 1,000):
# above this many, a seeded uniform sample of them
MAX_IMPORTANCE_VALUES = 300


def importance(exp: Experiment) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each searched parameter, on values of one schedule length
    (computed once per loaded experiment: export and the printed table share it)."""
    if exp._importance is None:
        exp._importance = _fanova(exp)
    return exp._importance


def _importance_basis(exp: Experiment) -> tuple[list[TrialRow], str]:
    if exp.halving:
        first = exp.space.scheduler.budgets[0]
        runs = [r for r in exp.rows if r.budget == first and r.final_value is not None]
        return runs, f"configs' values at the first budget ({first}-epoch schedules), which every config reaches"
    return [r for r in exp.search_rows if r.final_value is not None], "trials that completed the schedule"


def _fanova(exp: Experiment) -> tuple[dict[str, float], str]:
    dists = {d.key: d for d in exp.space.dists}
    runs, basis = _importance_basis(exp)
    if len(runs) < MIN_IMPORTANCE_VALUES:
        return {}, f"n/a: {len(runs)} {basis}; fANOVA needs at least {MIN_IMPORTANCE_VALUES}"
    basis = f"{len(runs)} {basis}"
    if len(runs) > MAX_IMPORTANCE_VALUES:
        basis = f"{MAX_IMPORTANCE_VALUES} of the {basis} (a seeded uniform sample)"
        runs = random.Random(0).sample(runs, MAX_IMPORTANCE_VALUES)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for r in runs:
        study.add_trial(
            optuna.trial.create_trial(
                params={k: r.config[k] for k in dists},
                distributions={k: d.optuna_distribution() for k, d in dists.items()},
                value=r.final_value,
            )
        )
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (RuntimeError, ValueError) as exc:
        return {}, f"n/a: fANOVA failed ({exc})"
    return {k: float(v) for k, v in imp.items()}, f"Optuna fANOVA on {basis}"


def trial_rows(exp: Experiment) -> list[dict[str, Any]]:
    """One row per Tune trial (trials.csv): a config under ASHA, a run under halving."""
    rows = []
    for r in exp.ranked():
        run = {"config": r.config_id, "budget": r.budget, "replaces": r.replaces} if exp.halving else {}
        if exp.space.reevaluate.on:
            run["seed"] = r.seed  # a re-evaluation run's; empty for the search's runs
        rows.append(
            {
                "trial": r.trial_id,
                **run,
                **{k: r.config.get(k) for k in exp.searched},
                "best_val_accuracy": r.best_val_accuracy,
                "last_val_accuracy": r.last_val_accuracy,
                "epochs": r.epochs,
                "status": r.status,
                "time_s": round(r.time_s, 1),
            }
        )
    return rows


def leaderboard_rows(exp: Experiment) -> list[dict[str, Any]]:
    """One row per config, best first; under halving with its value at every budget it reached."""
    if not exp.halving:
        return trial_rows(exp)
    return [
        {
            "config": c.config_id,
            **{k: c.config.get(k) for k in exp.searched},
            **{f"val@{b}": c.values.get(b) for b in exp.space.scheduler.budgets},
            "epochs": sum(r.epochs for r in c.runs),
            "status": c.status,
            "time_s": round(sum(r.time_s for r in c.runs), 1),
        }
        for c in exp.configs()
    ]


def seed_mean_rows(exp: Experiment) -> list[dict[str, Any]]:
    """The re-evaluated configs, best mean first: the first is the pick."""
    return [
        {
            "config": m.config_id,
            **{k: m.config.get(k) for k in exp.searched},
            "values": m.values,
            "mean": m.mean,
            "runs": [m.search_run.trial_id, *[r.trial_id for r in m.reruns]],
        }
        for m in exp.reevaluated()
    ]


def pick_block(exp: Experiment) -> dict[str, Any] | None:
    """leaderboard.json's `pick`: the pick, its mean and 95% interval, its runs, the σ used and
    where it came from, the runner-up, and P(truly better) than it and than the baseline."""
    cert = exp.certainty()
    return cert.to_json() if cert else None


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def export_experiment(experiment: str) -> Experiment:
    """Write trials.csv, leaderboard.json and (if any trial completed) best_config.yaml."""
    exp = load_experiment(experiment)
    ref = ExperimentRef.parse(exp.path)
    ref.write_text(TRIALS_CSV, _csv(trial_rows(exp)))
    imp, basis = importance(exp)
    board = {
        "scope": exp.scope,
        "rows": leaderboard_rows(exp),
        "replacements": exp.replacements(),
        "reevaluated": seed_mean_rows(exp),
        "pick": pick_block(exp),
        "importance": imp,
        "importance_basis": basis,
        **exp.compute_hours(),
    }
    ref.write_text(LEADERBOARD_JSON, json.dumps(board, indent=2))
    try:
        best = exp.best()
    except S9Error:
        logger.warning("%s: no trial completed its schedule; no %s written", exp.path, BEST_CONFIG)
        return exp
    header = f"# best trial {best.trial_id} of {exp.path} ({best.epochs}-epoch schedule)\n# scope: {exp.scope}\n"
    if best.seeds > 1:
        header += f"# picked by its mean over {best.seeds} seeds: {100 * best.val_accuracy:.2f}%\n"
    cert = exp.certainty()
    header += "".join(f"# {printable(line)}\n" for line in (cert.lines() if cert else []))
    ref.write_text(BEST_CONFIG, header + best.config.to_yaml())
    return exp


def _table_cells(exp: Experiment) -> tuple[list[str], list[list[str]]]:
    keys = exp.searched
    if exp.halving:
        budgets = exp.space.scheduler.budgets
        head = ["config", *keys, *[f"val@{b}" for b in budgets], "epochs", "status"]
        cells = [
            [
                c.config_id,
                *[_fmt(c.config.get(k)) for k in keys],
                *[_pct(c.values.get(b)) for b in budgets],
                str(sum(r.epochs for r in c.runs)),
                c.status,
            ]
            for c in exp.configs()
        ]
        return head, cells
    seeds = exp.space.reevaluate.on  # a rerun's row says which seed and whose rerun it is
    head = ["trial", *keys, "best val", "last val", "epochs", "status", *(["rerun of"] if seeds else [])]
    cells = [
        [
            r.trial_id,
            *[_fmt(r.config.get(k)) for k in keys],
            _pct(r.best_val_accuracy),
            _pct(r.last_val_accuracy),
            f"{r.epochs}/{exp.space.max_t}",
            r.status,
            *([f"{r.config_id}, seed {r.seed}" if r.seed is not None else "-"] if seeds else []),
        ]
        for r in exp.ranked()
    ]
    return head, cells


def format_results(exp: Experiment) -> str:
    """The leaderboard table (its best MAX_TABLE_ROWS rows), parameter importance and compute, as
    `s9tune results` prints it; every cell escaped (printable), since it comes from the
    experiment's files."""
    head, cells = _table_cells(exp)
    lines = [[printable(c) for c in row] for row in cells[:MAX_TABLE_ROWS]]
    widths = (
        [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)] if lines else [len(h) for h in head]
    )
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    if len(cells) > len(lines):
        out.append(f"... and {len(cells) - len(lines)} more rows: {exp.path}/{LEADERBOARD_JSON} and {TRIALS_CSV}")
    out.append("")
    out.append(f"Ranked by {exp.scope.split(':')[0]}. {'Runs' if exp.halving else 'Trials'}: {exp.status_counts()}.")
    out += [printable(f"{line[0].upper()}{line[1:]}.") for line in exp.replacements()]
    means = seed_mean_rows(exp)
    cert = exp.certainty()
    if means:
        spec = exp.space.reevaluate
        how = "by reevaluate: auto" if spec.auto else f"on {spec.seeds} more seed(s)"
        by = "the mean, shrunk for the luck of a few runs (below)" if spec.auto else "the mean"
        out.append(f"Re-evaluated {how}, picked by {by}:")
        picked = cert.config if cert else means[0]["config"]
        out += [
            f"  {printable(m['config']):<12} mean {_pct(m['mean'])} over {len(m['values'])} "
            f"({', '.join(_pct(v) for v in m['values'])})" + ("  <- picked" if m["config"] == picked else "")
            for m in means
        ]
    out += [printable(line) for line in cert.lines()] if cert else []
    imp, basis = importance(exp)
    if imp:
        out.append(f"Parameter importance ({basis}):")
        out += [f"  {k:<14} {v:.3f}" for k, v in imp.items()]
    else:
        out.append(f"Parameter importance: {basis}")
    hours = exp.compute_hours()
    out.append(
        f"Compute: {hours['trial_hours']:.2f} trial-hours = {hours['gpu_hours']:.2f} GPU-hours "
        f"(at {exp.space.gpus_per_trial:g} GPU/trial), {hours['cpu_core_hours']:.2f} CPU core-hours"
    )
    return "\n".join(out)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"
