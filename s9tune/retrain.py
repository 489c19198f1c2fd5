"""`s9tune retrain`: the best trial of a search, retrained on train + validation for the full
schedule, evaluated on the test set every epoch, then analysed (plots, GradCAM, report).

Best trial = highest validation accuracy at the last epoch of a complete schedule
(search/experiment.py, Experiment.scope), taken from the loaded experiment (a folder or a storage URI).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig, parse_set_args
from s9tune.errors import ConfigError, OutputExistsError

logger = logging.getLogger(__name__)

MAX_SEEDS = 100  # each is a full retrain


def retrain_config(best: TrainConfig, epochs: int, sets: list[str] | None) -> TrainConfig:
    """Full training set (train + validation), full schedule, then the user's --set."""
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be >= 1")
    cfg = best.with_overrides({"epochs": epochs, "val_size": 0.0, "train_subset": None})
    return cfg.with_overrides(parse_set_args(sets))


def _check_out(out: Path, experiment: str) -> None:
    real = Path(out).expanduser().resolve()
    if "://" not in experiment:
        exp_path = Path(experiment)
        if real == exp_path or exp_path in real.parents or real in exp_path.parents:
            raise OutputExistsError(f"{real}: overlaps the experiment {exp_path}; choose another --out")


def _seed_summary(runs: list[tuple[Path, Any]], started: float) -> dict[str, Any]:
    per_seed = [
        {
            "seed": o.run.cfg.seed,
            "status": o.metrics["status"],
            "test_accuracy": o.metrics["test_accuracy"],
            "test_loss": o.metrics["test_loss"],
            "run": str(run_dir),
        }
        for run_dir, o in runs
    ]
    accs = [s["test_accuracy"] for s in per_seed if s["test_accuracy"] is not None]
    return {
        "seeds": [s["seed"] for s in per_seed],
        "per_seed": per_seed,
        "test_accuracy_mean": statistics.mean(accs) if accs else None,
        "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
        "wall_s_all_seeds": time.perf_counter() - started,
    }


def run_retrain(
    experiment: str,
    data_dir: str | Path | None,
    out: Path,
    *,
    epochs: int = 24,
    seeds: int = 1,
    sets: list[str] | None = None,
    force: bool = False,
    target_layer: str = "r2",
) -> dict[str, Any]:
    from s9tune.analysis.analyze import analyze_model
    from s9tune.analysis.cam import resolve_target_layer
    from s9tune.data import load_splits
    from s9tune.model import build_model
    from s9tune.outdir import prepare_out_dir
    from s9tune.runs import train_to_dir, write_metrics
    from s9tune.search.experiment import load_experiment
    from s9tune.search.export import leaderboard_rows

    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {seeds}: must lie in [1, {MAX_SEEDS}]")
    exp = load_experiment(experiment)
    best = exp.best()  # raises if no trial finished its schedule
    logger.info("best trial %s of %s (%s)", best.trial_id, exp.path, exp.scope.split(":")[0])
    cfg = retrain_config(best.config, epochs, sets)
    resolve_target_layer(build_model(cfg.with_overrides({"width": 1})), target_layer)  # typo -> error now
    _check_out(out, exp.path)
    splits = load_splits(data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    out = prepare_out_dir(out, kind="retrain", force=force, protect=(data_dir,))

    started = time.perf_counter()
    extra = {"experiment": exp.path, "best_trial": best.trial_id}
    runs = []
    for k in range(seeds):
        c = cfg.with_overrides({"seed": cfg.seed + k})
        run_dir = out if k == 0 else out / "seeds" / f"seed-{c.seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        logger.info("retrain seed %d (%d of %d) -> %s", c.seed, k + 1, seeds, run_dir)
        outcome = train_to_dir(c, splits, run_dir, extra=extra)
        if k > 0:
            write_metrics(run_dir, outcome.metrics)  # the first seed's file is written below, once
        runs.append((run_dir, outcome))
    first = runs[0][1]
    metrics: dict[str, Any] = {**first.metrics, **_seed_summary(runs, started)}
    if first.test is not None:
        analysis = analyze_model(
            first.run.model,
            cfg,
            splits,
            out,
            predictions=first.test,
            history_rows=[m.to_dict() for m in first.run.result.history],
            leaderboard=leaderboard_rows(exp),
            target_layer=target_layer,
            device=first.run.device,
            title=f"s9tune retrain of {exp.path} (trial {best.trial_id})",
            extra={**extra, **{k: metrics[k] for k in ("seeds", "test_accuracy_mean", "test_accuracy_std")}},
        )
        metrics["per_class_accuracy"] = analysis["per_class_accuracy"]
        metrics["report"] = "report.html"
    write_metrics(out, metrics)
    return metrics
