"""`s9tune retrain`: the best trial of a search, retrained on train + validation for the full
schedule, evaluated on the test set every epoch, then analysed (plots, GradCAM, report).

Best trial = highest validation accuracy at the last epoch of a complete schedule
(search/experiment/record.py, Experiment.scope), taken from the loaded experiment (a folder or a storage URI).

The seeds run on Ray (search/execution/retrain_seeds.py): on the cluster at `--address`, or on a Ray started
in-process, in parallel as far as the resources allow. OUT (a folder or a URI) then holds seed
0's run at its top and the others under seeds/seed-N/; the analysis runs once, here, on the
driver, from the checkpoint the report names. Until every seed has finished, OUT/tune holds
Tune's experiment, which `--resume` continues.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s9tune.analysis.analyze import AnalysisSpec, analyze_model
from s9tune.analysis.cam import resolve_target_layer
from s9tune.analysis.seedlog import seed_style_lines
from s9tune.callbacks import read_metrics_jsonl
from s9tune.checkpoint import Checkpoint
from s9tune.config import LIMITS, TrainConfig, check_seeds, parse_set_args
from s9tune.data import load_splits
from s9tune.errors import ConfigError, OutputExistsError, shown
from s9tune.fileio import atomic_write_json
from s9tune.model import build_model
from s9tune.options import MAX_SEEDS, RetrainOptions
from s9tune.outdir import MARKER, MARKER_MAX_BYTES, check_listing, marker_kind_of, marker_text, prepare_out_dir
from s9tune.search.execution.logfile import ray_output_to
from s9tune.search.experiment.export import leaderboard_rows
from s9tune.search.experiment.record import load_experiment
from s9tune.search.outcome import FINAL
from s9tune.search.space.space import check_resources
from s9tune.storage import Folder

logger = logging.getLogger(__name__)

RECORD = "s9tune_retrain.json"  # what was started: resume continues exactly that
LOG = "retrain.log"
TUNE_DIR = "tune"  # Tune's experiment (search/execution/retrain_seeds.py), until every seed has finished
RECORD_MAX_BYTES = 1024 * 1024  # the record is a few KB
LOG_MAX_BYTES = 256 * 1024 * 1024  # Ray's output for a retrain: megabytes at most


def retrain_config(best: TrainConfig, epochs: int, sets: Sequence[str]) -> TrainConfig:
    """Full training set (train + validation), full schedule, then the user's --set."""
    cfg = best.with_overrides({"epochs": epochs, "val_size": 0.0, "train_subset": None})
    return cfg.with_overrides(parse_set_args(sets))


def seed_dir(k: int, seed: int) -> str:
    """Where seed number k (0-based) of a retrain lives in OUT."""
    return "" if k == 0 else f"seeds/seed-{seed}"


@dataclass
class Retrain:
    """A retrain's outcome; `metrics` is what OUT/metrics.json holds once it finished."""

    out: Folder
    metrics: dict[str, Any] = field(default_factory=dict)
    seeds: list[Any] = field(default_factory=list)  # search.seeds.SeedResult, one per seed
    log: str | None = None

    @property
    def interrupted(self) -> bool:
        return any(s.status == "unfinished" for s in self.seeds)

    @property
    def failed(self) -> list[Any]:
        return [s for s in self.seeds if s.status == "error"]


def _check_out(out: str, experiment: str, *, force: bool, resume: bool, data_dir: Any = None) -> Folder:
    """OUT as given, refused before any work if it overlaps the experiment, cannot be written,
    holds something (unless --force, and then only a retrain s9tune wrote: outdir.py), or has
    nothing to resume (with --resume)."""
    dest = Folder.parse(out)
    exp = Folder.parse(experiment)
    if dest.contains(exp) or exp.contains(dest):
        raise OutputExistsError(f"{dest}: overlaps the experiment {exp}; choose another --out")
    dest.check_writable()
    if resume:
        if dest.read_text(RECORD, RECORD_MAX_BYTES) is None:
            raise ConfigError(f"{dest}: nothing to resume (no retrain was started there)")
        if not dest.exists(TUNE_DIR):
            raise ConfigError(f"{dest}: nothing to resume (this retrain has finished)")
    elif dest.files() and not force:
        raise OutputExistsError(
            f"{dest}: already holds a previous run; pass --force to replace it or choose another --out"
        )
    _make_out(dest, out, force=force, resume=resume, data_dir=data_dir, check_only=True)
    return dest


def _make_out(dest: Folder, out: str, *, force: bool, resume: bool, data_dir: Any, check_only: bool = False) -> None:
    """Create OUT (or, with --force, replace what s9tune retrain wrote there). Locally through
    outdir.prepare_out_dir with OUT as the user gave it, so that a symbolic link is refused."""
    if dest.is_local:
        prepare_out_dir(out, kind="retrain", force=force, resume=resume, protect=(data_dir,), check_only=check_only)
        return
    if force and not resume and dest.files():
        check_listing(str(dest), "retrain", marker_kind_of(dest.read_text(MARKER, MARKER_MAX_BYTES)), dest.files())
        if not check_only:
            dest.delete()
    if not check_only and not resume:
        dest.write_text(MARKER, marker_text("retrain") + "\n")


def _record(cfg: TrainConfig, seeds: list[int], exp_path: str, best_trial: str) -> dict[str, Any]:
    return {"experiment": exp_path, "best_trial": best_trial, "seeds": seeds, "config": cfg.to_dict()}


def _resumed_seeds(dest: Folder, cfg: TrainConfig) -> list[int]:
    """The seeds of the retrain in OUT, whose config today's arguments must ask for again."""
    where, damaged = f"{dest}/{RECORD}", "damaged or edited; start again with a new --out"
    try:
        rec = json.loads(dest.read_text(RECORD, RECORD_MAX_BYTES) or "{}")
    except (ValueError, RecursionError):
        raise ConfigError(f"{where}: not JSON ({damaged})") from None
    seeds = rec.get("seeds") if isinstance(rec, dict) else None
    if (
        not isinstance(seeds, list)
        or not 1 <= len(seeds) <= MAX_SEEDS
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= LIMITS["seed"] for x in seeds)
        or len(set(seeds)) < len(seeds)
    ):
        raise ConfigError(f"{where}: seeds {shown(seeds)} is not a list of 1-{MAX_SEEDS} different seeds ({damaged})")
    if rec.get("config") != cfg.to_dict():
        raise ConfigError(
            f"{dest}: was started with another config (--epochs, --set or the experiment's best trial "
            "differ); resume with the same arguments, or use a new --out"
        )
    return seeds


def _log_path(dest: Folder) -> Path:
    """Ray's output: a local file while Ray runs (OUT may be a URI, or replaced by --force),
    copied into OUT afterwards; in a private folder (mkdtemp: 0700, a name nobody can guess),
    so no one can plant a link where it is written."""
    return Path(tempfile.mkdtemp(prefix="s9tune-log-")) / f"retrain-{dest.name}.log"


def _per_seed(results: list[Any], stage: Path) -> list[dict[str, Any]]:
    rows = []
    for k, r in enumerate(results):
        rel = seed_dir(k, r.seed)
        m = json.loads((stage / rel / "metrics.json").read_text()) if r.finished else {}
        rows.append(
            {
                "seed": r.seed,
                "status": r.status,
                "test_accuracy": m.get("test_accuracy"),
                "test_loss": m.get("test_loss"),
                "run": rel or ".",
                **({"error": r.error} if r.error else {}),
            }
        )
    return rows


def _seed_summary(per_seed: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    accs = [s["test_accuracy"] for s in per_seed if s["test_accuracy"] is not None]
    return {
        "seeds": [s["seed"] for s in per_seed],
        "per_seed": per_seed,
        "test_accuracy_mean": statistics.mean(accs) if accs else None,
        "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0 if accs else None,
        "wall_s_all_seeds": wall_s,
    }


def run_retrain(opts: RetrainOptions) -> Retrain:
    """Retrain (or continue retraining) the pick of `opts.experiment` into `opts.out`; see the module doc."""
    if opts.cpus_per_run is not None or opts.gpus_per_run is not None:
        check_resources(
            opts.cpus_per_run or 1, opts.gpus_per_run or 0, where="--cpus-per-run/--gpus-per-run", unit="run"
        )
    exp = load_experiment(opts.experiment)
    best = exp.best()  # raises if no trial finished its schedule
    cfg = retrain_config(best.config, opts.epochs, opts.sets)
    resolve_target_layer(build_model(cfg.with_overrides({"width": 1})), opts.target_layer)  # typo -> error now
    dest = _check_out(str(opts.out), exp.path, force=opts.force, resume=opts.resume, data_dir=opts.data_dir)
    if not opts.resume:
        check_seeds(cfg.seed, opts.seeds, f"--seeds {opts.seeds}")
    seed_list = _resumed_seeds(dest, cfg) if opts.resume else [cfg.seed + k for k in range(opts.seeds)]
    logger.info("best trial %s of %s (%s)", best.trial_id, exp.path, exp.scope.split(":")[0])
    splits = load_splits(opts.data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)

    # Ray Tune here, after every check above: ~0.9 s CPU at import (median of 5, 2-core VM) that a
    # refused retrain (experiment, --out, --seeds, data) does not pay
    from s9tune.search.execution import retrain_seeds as ray_seeds

    log = None if opts.ray_to_console else _log_path(dest)
    started = time.perf_counter()
    result = Retrain(dest)
    extra = {"experiment": exp.path, "best_trial": best.trial_id}
    try:
        with ray_output_to(log) as console, ray_seeds.ray_session(opts.address):
            cpus, gpus, slots = ray_seeds.plan_resources(opts.cpus_per_run, opts.gpus_per_run, dest)
            logger.info(
                "retrain %s: %d seed(s), %d at once, %g CPUs and %g GPUs each", dest, len(seed_list), slots, cpus, gpus
            )
            _make_out(dest, str(opts.out), force=opts.force, resume=opts.resume, data_dir=opts.data_dir)
            if not opts.resume:
                dest.write_text(RECORD, json.dumps(_record(cfg, seed_list, exp.path, best.trial_id), indent=2))
            runs = ray_seeds.SeedRuns(cfg, seed_list, dest.child(TUNE_DIR), extra, cpus, gpus)
            result.seeds = ray_seeds.fit_seeds(
                runs,
                splits,
                resume=opts.resume,
                console=console if opts.progress else None,
                max_failures=opts.max_failures,
            )
    finally:
        if log is not None and log.exists() and dest.exists(RECORD):
            old = dest.read_text(LOG, LOG_MAX_BYTES) or ""
            dest.write_text(LOG, old + log.read_text(encoding="utf-8", errors="replace"))
            result.log = f"{dest.child(LOG)}"
        if log is not None:  # the private folder _log_path made: OUT keeps the log
            shutil.rmtree(log.parent, ignore_errors=True)
    if not result.interrupted:
        result.metrics = _finish(result, splits, exp, opts.target_layer, time.perf_counter() - started)
    return result


def _finish(result: Retrain, splits: Any, exp: Any, target_layer: str, wall_s: float) -> dict:
    """The finished seeds' run folders into OUT, the analysis of the first, and metrics.json."""
    dest = result.out
    stage = Path(dest.base) if dest.is_local else Path(tempfile.mkdtemp(prefix="s9tune-retrain-"))
    try:
        for k, r in enumerate(result.seeds):
            if r.finished:
                r.fetch(stage / seed_dir(k, r.seed))
        per_seed = _per_seed(result.seeds, stage)
        first = next((row for row in per_seed if row["status"] in FINAL), None)
        metrics: dict[str, Any] = {}
        if first is not None:
            metrics = json.loads((stage / first["run"] / "metrics.json").read_text())
        metrics.update(_seed_summary(per_seed, wall_s))
        if first is not None and first["test_accuracy"] is not None:
            metrics.update(_analyse(stage, first["run"], splits, exp, target_layer, metrics))
        atomic_write_json(stage / "metrics.json", metrics)
        if not dest.is_local:
            dest.upload(stage)
    finally:
        if not dest.is_local:
            shutil.rmtree(stage, ignore_errors=True)
    if not result.failed:
        dest.child(TUNE_DIR).delete()  # every seed finished: nothing left to resume
    return metrics


def _analyse(stage: Path, run: str, splits: Any, exp: Any, target_layer: str, metrics: dict[str, Any]) -> dict:
    """The analysis of one seed's final checkpoint, on this machine, into OUT's top."""
    rel = str(Path(run) / "checkpoints" / "last.pt")
    ckpt = Checkpoint.load(stage / rel)
    keys = ("seeds", "test_accuracy_mean", "test_accuracy_std")
    spec = AnalysisSpec(
        target_layer=target_layer,
        history_rows=read_metrics_jsonl(stage / run / "metrics.jsonl"),
        title=f"s9tune retrain of {exp.path} (trial {metrics.get('best_trial')})",
        leaderboard=leaderboard_rows(exp),
        extra={"experiment": exp.path, "checkpoint": rel, **{k: metrics[k] for k in keys}},
    )
    analysis = analyze_model(ckpt.build_model(stage / rel), ckpt.train_config(stage / rel), splits, stage, spec=spec)
    if analysis.get("test_accuracy") != metrics.get("test_accuracy"):
        logger.warning(
            "the analysis scored %s here, the run %s on its own device (another device or precision "
            "can flip a few predictions); report.html shows the analysis",
            analysis.get("test_accuracy"),
            metrics.get("test_accuracy"),
        )
    return {"per_class_accuracy": analysis["per_class_accuracy"], "report": "report.html", "analysed_checkpoint": rel}


def summary_lines(r: Retrain) -> list[str]:
    """What the console shows at the end: the seed's test lines for the analysed run, a line per
    seed (when there are several, or failures) with mean ± std, and the report."""
    m, lines = r.metrics, []
    if m.get("status") == "diverged":
        lines.append(f"Retrain diverged (non-finite loss) after {m['epochs']} epoch(s); see {r.out}/metrics.jsonl")
    elif "status" in m:
        lines += [f"EPOCH: {m['epochs']} (best trial {m['best_trial']} of {m['experiment']})", *seed_style_lines(m)]
    if len(m["per_seed"]) > 1 or r.failed:
        for s in m["per_seed"]:
            acc = "-" if s["test_accuracy"] is None else f"{100 * s['test_accuracy']:.2f}%"
            lines.append(f"seed {s['seed']:>3}  {s['status']:<9} {acc:>7}  {s['run']}  {s.get('error', '')}".rstrip())
    if m["test_accuracy_mean"] is not None and len(m["per_seed"]) > 1:
        n = sum(s["test_accuracy"] is not None for s in m["per_seed"])
        lines.append(
            f"Test accuracy over {n} seeds: {100 * m['test_accuracy_mean']:.2f}% "
            f"± {100 * m['test_accuracy_std']:.2f}% (mean ± std)"
        )
    if "report" in m:
        lines.append(f"{m['train_images_per_s']:.0f} training images/s. Report: {r.out.child('report.html')}")
    return lines
