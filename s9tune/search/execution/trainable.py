"""The Tune function trainable: trial dict -> TrainConfig -> engine.train -> tune.report.

It calls the same `fit()` as `s9tune train`; only the callbacks differ. The data set arrives
through `tune.with_parameters` (Ray's object store): loaded once by the driver, stored once
per node, read zero-copy by every trial on that node.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from s9tune.callbacks import BaseCallback, CheckpointPacer
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import EpochMetrics, FitResult, FitState, gpu_peak_memory, train
from s9tune.search.execution.faults import fault_injector
from s9tune.search.space.space import BUDGET_KEY, RUN_KEYS, SEED_KEY

logger = logging.getLogger(__name__)

CKPT_NAME = "checkpoint.pt"
WORST_ACCURACY = 0.0  # what a diverged trial scores, so the searcher learns to avoid it


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def epoch_report(m: EpochMetrics) -> dict[str, Any]:
    """Plain Python floats only: Tune's loggers and Optuna reject numpy scalars."""
    return {
        "epoch": int(m.epoch),
        "val_accuracy": float(m.eval_accuracy),
        "val_loss": float(m.eval_loss),
        "train_accuracy": float(m.train_accuracy),
        "train_loss": float(m.train_loss),
        "lr": float(m.lr),
        "images_per_s": float(m.images_per_s),
        "epoch_s": float(m.epoch_s),
        # with Tune's time_this_iter_s these split a run's time into training, evaluation and the
        # rest (set-up before the first epoch, checkpoints, reporting): where a run's seconds go
        "eval_s": float(m.eval_s),
        "diverged": 0,
    }


class TuneReport(BaseCallback):
    """One `tune.report` per epoch, so training_iteration == epoch; a checkpoint goes with it
    when the pacer says one is due (always with the first and the last epoch). A restored trial
    reports the epochs after its checkpoint again, under the same training_iteration."""

    def __init__(self, pacer: CheckpointPacer | None = None) -> None:
        self.node = _node_id()
        self.pacer = pacer or CheckpointPacer()

    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        metrics = {**epoch_report(m), "node_id": self.node}
        peak = gpu_peak_memory(state.device)  # what packing trials onto one GPU is limited by
        if peak is not None:
            metrics["gpu_peak_memory_bytes"] = peak
        if not self.pacer.due(m.epoch, state.cfg.epochs):
            tune.report(metrics)
            return
        with self.pacer.writing(), tempfile.TemporaryDirectory() as tmp:
            state.checkpoint().save(Path(tmp) / CKPT_NAME)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def on_fit_end(self, state: FitState, result: FitResult) -> None:
        if result.status == "diverged":
            # scored worst, reported as such; no checkpoint of NaN weights
            tune.report(
                {
                    "epoch": state.epoch + 1,
                    "val_accuracy": WORST_ACCURACY,
                    "val_loss": math.inf,
                    "diverged": 1,
                    "node_id": self.node,
                }
            )


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
    import torch

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
    import torch

    if cfg.device != "cpu" and torch.cuda.is_available() and cfg.gpu_memory_fraction is None:
        share = _gpu_share()
        if share is not None and share < 1:
            return cfg.with_overrides({"gpu_memory_fraction": share})
    return cfg


def _gpu_share() -> float | None:
    try:
        import ray

        ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
        res = ray.get_runtime_context().get_assigned_resources()
    except Exception:  # noqa: BLE001 - outside Ray or an old API: no cap
        return None
    gpus = res.get("GPU")
    if not ids or gpus is None:
        return None
    return float(gpus) / len(ids)
