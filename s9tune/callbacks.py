"""Per-epoch hooks for `fit()`: console log, metrics.jsonl, TensorBoard, checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from s9tune.engine import BaseCallback, EpochMetrics, FitResult, FitState

# the pacer lives apart so that code which never trains can use it without torch
from s9tune.pacing import CHECKPOINT_MAX_SHARE as CHECKPOINT_MAX_SHARE
from s9tune.pacing import CheckpointPacer

logger = logging.getLogger(__name__)


class ConsoleLog(BaseCallback):
    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        logger.info(
            "epoch %2d/%d  lr %.3g  train loss %.4f acc %.2f%%  %s loss %.4f acc %.2f%%  %.1fs  %.0f img/s",
            m.epoch,
            state.cfg.epochs,
            m.lr,
            m.train_loss,
            100 * m.train_accuracy,
            m.eval_split,
            m.eval_loss,
            100 * m.eval_accuracy,
            m.epoch_s,
            m.images_per_s,
        )


class MetricsFile(BaseCallback):
    """One JSON line per epoch; a resumed run rewrites the file from the checkpoint's history."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, state: FitState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as fh:
            for m in state.history:
                fh.write(json.dumps(m.to_dict()) + "\n")

    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(m.to_dict()) + "\n")


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows `MetricsFile` wrote; unreadable lines are skipped with a warning."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: not JSON; line skipped", path, n)
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


class TensorBoardLog(BaseCallback):
    """Scalars per epoch under `log_dir` (torch.utils.tensorboard)."""

    def __init__(self, log_dir: Path, hparams: dict[str, Any] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.hparams = hparams
        self.writer: Any = None

    def on_fit_start(self, state: FitState) -> None:
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        w, s = self.writer, m.epoch
        w.add_scalar("loss/train", m.train_loss, s)
        w.add_scalar(f"loss/{m.eval_split}", m.eval_loss, s)
        w.add_scalar("accuracy/train", m.train_accuracy, s)
        w.add_scalar(f"accuracy/{m.eval_split}", m.eval_accuracy, s)
        w.add_scalar("lr", m.lr, s)
        w.add_scalar("speed/images_per_s", m.images_per_s, s)
        w.flush()

    def on_fit_end(self, state: FitState, result: FitResult) -> None:
        if self.writer is None:
            return
        if self.hparams is not None and result.history:
            last = result.history[-1]
            self.writer.add_hparams(
                self.hparams,
                {f"hparam/{last.eval_split}_accuracy": last.eval_accuracy, "hparam/train_loss": last.train_loss},
                run_name=".",
            )
        self.writer.close()


class Checkpointer(BaseCallback):
    """`last.pt` (atomic) after the epochs a `CheckpointPacer` picks, so a killed run resumes
    near where it stopped."""

    def __init__(self, directory: Path, pacer: CheckpointPacer | None = None) -> None:
        self.directory = Path(directory)
        self.pacer = pacer or CheckpointPacer()
        self.saved_epoch = 0

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        if self.pacer.due(m.epoch, state.cfg.epochs):
            with self.pacer.writing():
                state.checkpoint().save(self.last)
            self.saved_epoch = m.epoch

    def on_fit_end(self, state: FitState, result: FitResult) -> None:
        # a run stopped early (a callback, Ctrl-C) keeps the epochs it trained since the last one
        if result.status != "diverged" and state.epoch > self.saved_epoch:
            state.checkpoint().save(self.last)
            self.saved_epoch = state.epoch
