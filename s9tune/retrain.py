"""`s9tune retrain`: the best trial of a search, retrained on train + validation for the full
schedule, evaluated on the test set every epoch, then analysed (plots, GradCAM, report).

Best trial = highest validation accuracy at the last epoch of a complete schedule (see
search/export.SCOPE). Reads the experiment's plain files; Ray is only needed when the search
never got to write them (it was killed before its end).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.checkpoint import atomic_write_json
from s9tune.config import TrainConfig, parse_set_args
from s9tune.errors import ConfigError, OutputExistsError, S9Error

logger = logging.getLogger(__name__)


@dataclass
class BestTrial:
    experiment: str
    config: TrainConfig
    trial_id: str
    leaderboard: list[dict[str, Any]]


def best_trial(experiment: str) -> BestTrial:
    """Best config and leaderboard of a search, from STORAGE/NAME (a folder or a URI)."""
    import yaml

    from s9tune.search.export import BEST_CONFIG, LEADERBOARD_JSON, SCOPE, split_path
    from s9tune.search.runner import SPACE_COPY, read_text

    storage, name = split_path(experiment)
    if read_text(storage, f"{name}/{SPACE_COPY}") is None:
        raise S9Error(f"{experiment}: no such s9tune experiment (no {SPACE_COPY}); pass the STORAGE/NAME a search printed")
    text = read_text(storage, f"{name}/{BEST_CONFIG}")
    board = read_text(storage, f"{name}/{LEADERBOARD_JSON}")
    if text is None or board is None:
        from s9tune.search.export import export_experiment

        exp = export_experiment(experiment)  # raises if no trial finished its schedule
        exp.best()
        text = read_text(storage, f"{name}/{BEST_CONFIG}")
        board = read_text(storage, f"{name}/{LEADERBOARD_JSON}")
    rows = json.loads(board or "{}").get("rows", [])
    if text is None:
        raise S9Error(f"{experiment}: no trial finished its schedule, so there is no best config to retrain")
    first = text.splitlines()[0] if text else ""
    trial_id = first.split()[3] if first.startswith("# best trial") else "?"
    cfg = TrainConfig.from_dict(yaml.safe_load(text))
    logger.info("best trial %s of %s (%s)", trial_id, experiment, SCOPE.split(":")[0])
    return BestTrial(f"{storage}/{name}", cfg, trial_id, rows)


def retrain_config(best: TrainConfig, epochs: int, sets: list[str] | None) -> TrainConfig:
    """Full training set (train + validation), full schedule, then the user's --set."""
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: must be >= 1")
    cfg = best.with_overrides({"epochs": epochs, "val_size": 0.0, "train_subset": None})
    return cfg.with_overrides(parse_set_args(sets))


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
    from s9tune.analysis.cam import resolve_target_layer
    from s9tune.analyze import analyze_model, read_metrics_jsonl
    from s9tune.data import load_splits
    from s9tune.model import build_model
    from s9tune.runs import prepare_out_dir, train_to_dir

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be >= 1")
    best = best_trial(experiment)
    cfg = retrain_config(best.config, epochs, sets)
    resolve_target_layer(build_model(cfg.with_overrides({"width": 1})), target_layer)  # typo -> error now
    out = Path(out).expanduser().resolve()
    if "://" not in best.experiment:
        exp_path = Path(best.experiment)
        if out == exp_path or exp_path in out.parents or out in exp_path.parents:
            raise OutputExistsError(f"{out}: overlaps the experiment {exp_path}; choose another --out")
    splits = load_splits(data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    out = prepare_out_dir(out, force=force)

    started = time.perf_counter()
    extra = {"experiment": best.experiment, "best_trial": best.trial_id}
    per_seed: list[dict[str, Any]] = []
    first = None
    for k in range(seeds):
        c = cfg.with_overrides({"seed": cfg.seed + k})
        run_dir = out if k == 0 else out / "seeds" / f"seed-{c.seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        logger.info("retrain seed %d (%d of %d) -> %s", c.seed, k + 1, seeds, run_dir)
        outcome = train_to_dir(c, splits, run_dir, extra=extra)
        per_seed.append(
            {
                "seed": c.seed,
                "status": outcome.metrics["status"],
                "test_accuracy": outcome.metrics["test_accuracy"],
                "test_loss": outcome.metrics["test_loss"],
                "run": str(run_dir),
            }
        )
        if first is None:
            first = outcome
    assert first is not None
    m0 = first.metrics
    metrics: dict[str, Any] = dict(m0)
    accs = [s["test_accuracy"] for s in per_seed if s["test_accuracy"] is not None]
    metrics.update(
        {
            "seeds": [s["seed"] for s in per_seed],
            "per_seed": per_seed,
            "test_accuracy_mean": statistics.mean(accs) if accs else None,
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
            "wall_s_all_seeds": time.perf_counter() - started,
        }
    )
    if m0["status"] != "diverged":
        analysis = analyze_model(
            first.run.model,
            cfg,
            splits,
            out,
            history_rows=read_metrics_jsonl(out / "metrics.jsonl"),
            leaderboard=best.leaderboard,
            target_layer=target_layer,
            device=first.run.device,
            title=f"s9tune retrain of {best.experiment} (trial {best.trial_id})",
            extra={**extra, "seeds": metrics["seeds"], "test_accuracy_mean": metrics["test_accuracy_mean"],
                   "test_accuracy_std": metrics["test_accuracy_std"]},
        )
        metrics["per_class_accuracy"] = analysis["per_class_accuracy"]
        metrics["test_correct"] = analysis["test_correct"]
        metrics["report"] = "report.html"
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
