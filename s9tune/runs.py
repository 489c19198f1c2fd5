"""Run folders: what `s9tune train` (and `retrain`) write, and how they refuse to overwrite.

RUN/ config.yaml  run.json  metrics.jsonl  metrics.json  tb/  checkpoints/last.pt

`train_to_dir` writes everything but metrics.json, whose content its caller completes
(`retrain` adds the seeds and the analysis), so each file is written once.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from s9tune.callbacks import Checkpointer, ConsoleLog, MetricsFile, TensorBoardLog
from s9tune.checkpoint import Checkpoint, versions
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import Predictions, TrainRun, gpu_peak_memory, score, train
from s9tune.errors import CheckpointError
from s9tune.fileio import atomic_write_json, atomic_write_text

METRICS_JSON = "metrics.json"

logger = logging.getLogger(__name__)


def git_sha() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,  # no git, or not a checkout: the sha is simply unknown
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


@dataclass
class RunOutcome:
    run: TrainRun
    test: Predictions | None  # the final weights on the test split (None if the run diverged)
    metrics: dict[str, Any]  # what metrics.json holds


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    atomic_write_json(out / METRICS_JSON, metrics)


def _test_predictions(run: TrainRun) -> Predictions | None:
    if run.result.status == "diverged":
        return None
    if run.loaders.eval_name == "test":
        return run.result.final_eval  # the last epoch already scored these weights on the test set
    return score(run.model, run.loaders.test, run.device)


def train_to_dir(
    cfg: TrainConfig,
    splits: Splits,
    out: Path,
    *,
    resume: bool = False,
    extra: dict[str, Any] | None = None,
    checkpointer: Checkpointer | None = None,
) -> RunOutcome:
    """Train one config into `out` (already prepared); metrics.json is left to the caller.
    `checkpointer`: one that writes `out/checkpoints/last.pt` and may also hand the folder on
    (a retrain seed gives it to Ray Tune's storage)."""
    ckpt_dir = out / "checkpoints"
    ckpt = None
    if resume and (ckpt_dir / "last.pt").exists():
        ckpt = Checkpoint.load(ckpt_dir / "last.pt")
        if ckpt.config != cfg.to_dict():
            raise CheckpointError(f"{ckpt_dir / 'last.pt'}: was trained with another config; use a new --out")
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    started = time.time()
    callbacks = [
        ConsoleLog(),
        MetricsFile(out / "metrics.jsonl"),
        TensorBoardLog(out / "tb", hparams=_hparams(cfg)),
        checkpointer or Checkpointer(ckpt_dir),
    ]
    run = train(cfg, splits, callbacks, resume=ckpt)
    test = _test_predictions(run)
    atomic_write_json(
        out / "run.json",
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_s": time.time() - started,
            "git_sha": git_sha(),
            "versions": versions(),
            "device": device_name(run.device),
            "seed": cfg.seed,
        },
    )
    return RunOutcome(run, test, _run_metrics(cfg, splits, run, test, extra))


def _run_metrics(
    cfg: TrainConfig, splits: Splits, run: TrainRun, test: Predictions | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    res = run.result
    last = res.history[-1] if res.history else None
    on_val = last is not None and last.eval_split == "val"
    return {
        "status": res.status,
        "test_accuracy": test.accuracy if test else None,
        "test_loss": test.loss if test else None,
        "test_correct": test.correct if test else None,
        "test_images": len(splits.test_y),
        "val_accuracy": last.eval_accuracy if on_val else None,
        "val_loss": last.eval_loss if on_val else None,
        "epochs": res.epochs,
        "wall_s": res.wall_s,
        "train_images_per_s": res.train_images_per_s,
        "train_images": len(splits.train_y),
        "val_images": len(splits.val_y),
        "device": device_name(run.device),
        "gpu_peak_memory_bytes": gpu_peak_memory(run.device),
        "config": cfg.to_dict(),
        "per_epoch": "metrics.jsonl",
        "checkpoint": "checkpoints/last.pt",
        **(extra or {}),
    }


def _hparams(cfg: TrainConfig) -> dict[str, Any]:
    keys = ("max_lr", "pct_start", "aug_strength", "weight_decay", "batch_size", "epochs", "width", "seed")
    return {k: getattr(cfg, k) for k in keys}
