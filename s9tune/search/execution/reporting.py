"""What a search run tells Tune, and when: one report per epoch with the same metrics, a
checkpoint with it when the pacer says one is due (always with the first and the last epoch),
and for a run that diverged one report scored worst.

No torch here (the trainable, trainable.py, brings it): a process that reports without
training, such as the fast stand-in trainable of the scale benchmark, imports this alone, so a
worker of it costs a Ray worker's memory and not torch's.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from s9tune.pacing import CheckpointPacer
from s9tune.search.outcome import WORST_ACCURACY

if TYPE_CHECKING:
    from s9tune.engine import EpochMetrics

CKPT_NAME = "checkpoint.pt"


def _node_id() -> str:
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


class TrialReporter:
    """One `tune.report` per epoch, so training_iteration == epoch. A restored trial reports
    the epochs after its checkpoint again, under the same training_iteration."""

    def __init__(self, pacer: CheckpointPacer | None = None) -> None:
        self.node = _node_id()
        self.pacer = pacer or CheckpointPacer()

    def epoch(self, m: EpochMetrics, *, last_epoch: int, save: Callable[[Path], None], **extra: Any) -> None:
        """`save(folder)` writes the checkpoint's files into `folder`, if one is due."""
        metrics = {**epoch_report(m), "node_id": self.node, **extra}
        if not self.pacer.due(m.epoch, last_epoch):
            tune.report(metrics)
            return
        with self.pacer.writing(), tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def diverged(self, epoch: int) -> None:
        """Scored worst, reported as such; no checkpoint of NaN weights. `epoch`: the one that diverged."""
        tune.report(
            {"epoch": epoch, "val_accuracy": WORST_ACCURACY, "val_loss": math.inf, "diverged": 1, "node_id": self.node}
        )
