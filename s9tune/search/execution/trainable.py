"""The Tune function trainable: trial dict -> TrainConfig -> engine.train -> tune.report.

It calls the same `fit()` as `s9tune train`; only the callbacks differ. The data set arrives
through `tune.with_parameters` (Ray's object store): loaded once by the driver, stored once
per node, read zero-copy by every trial on that node.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from s9tune.callbacks import BaseCallback, CheckpointPacer
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import EpochMetrics, FitResult, FitState, gpu_peak_memory, train
from s9tune.search.execution.faults import fault_injector
from s9tune.search.execution.reporting import CKPT_NAME, TrialReporter
from s9tune.search.space.space import BUDGET_KEY, RUN_KEYS, SEED_KEY

logger = logging.getLogger(__name__)


class TuneReport(BaseCallback):
    """The trial's epochs, reported as reporting.TrialReporter says (with a checkpoint when due)."""

    def __init__(self, pacer: CheckpointPacer | None = None) -> None:
        self.reporter = TrialReporter(pacer)

    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        extra: dict[str, Any] = {}
        peak = gpu_peak_memory(state.device)  # what packing trials onto one GPU is limited by
        if peak is not None:
            extra["gpu_peak_memory_bytes"] = peak
        self.reporter.epoch(
            m, last_epoch=state.cfg.epochs, save=lambda d: state.checkpoint().save(d / CKPT_NAME), **extra
        )

    def on_fit_end(self, state: FitState, result: FitResult) -> None:
        if result.status == "diverged":
            self.reporter.diverged(state.epoch + 1)


def trial_config(config: dict[str, Any], base: dict[str, Any]) -> TrainConfig:
    """The run's TrainConfig: fixed values, the searched ones, under halving the run's budget
    as `epochs`, so its OneCycle schedule is complete at that length (pct_start scales with it),
    and for a re-evaluation run its seed."""
    searched = {k: v for k, v in config.items() if k not in RUN_KEYS}
    if BUDGET_KEY in config:
        searched["epochs"] = int(config[BUDGET_KEY])
    if SEED_KEY in config:
        searched["seed"] = int(config[SEED_KEY])
    return TrainConfig.from_dict(base).with_overrides(searched)


def train_trial(config: dict[str, Any], *, splits: Splits, base: dict[str, Any]) -> None:
    """Ray Tune entry point. `base` holds the fixed TrainConfig values, `config` the trial's."""
    cfg = trial_config(config, base)
    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = Checkpoint.load(Path(d) / CKPT_NAME)
        logger.info("trial resumes after epoch %d", resume.epoch)
    cfg = within_gpu_share(cfg)
    callbacks: list[BaseCallback] = [TuneReport()]
    injector = fault_injector(config)  # only where the tests of failure handling ask for one
    if injector is not None:
        callbacks.insert(0, injector)  # fails before the epoch is reported or checkpointed
    try:
        train(cfg, splits, callbacks, resume=resume)
    except torch.cuda.OutOfMemoryError as exc:
        # this trial's error (FailureConfig decides about retries), never the search's
        raise RuntimeError(
            f"CUDA out of memory in this trial (gpu_memory_fraction={cfg.gpu_memory_fraction}): {exc}"
        ) from None


def within_gpu_share(cfg: TrainConfig) -> TrainConfig:
    """Ray schedules GPU fractions but does not enforce them: keep this run in its share."""
    if cfg.device != "cpu" and torch.cuda.is_available() and cfg.gpu_memory_fraction is None:
        share = _gpu_share()
        if share is not None and share < 1:
            return cfg.with_overrides({"gpu_memory_fraction": share})
    return cfg


def _gpu_share() -> float | None:
    try:
        ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        res = ray.get_runtime_context().get_assigned_resources()
    except Exception:  # noqa: BLE001 - outside Ray or an old API: no cap
        return None
    gpus = res.get("GPU")
    if not ids or gpus is None:
        return None
    return float(gpus) / len(ids)
