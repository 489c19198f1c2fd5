"""TensorBoard files for every trial, with the HParams row written from a trial's first result.

Ray's own TBXLoggerCallback writes HParams only when a trial ends, so running trials and
(depending on the version) trials that ASHA stopped have no row in TensorBoard's HParams tab,
and it drops numpy scalars. This logger takes its place (Tune adds Ray's unless a callback of
that type is given) and writes through tensorboardX writers of its own: each numeric result as
a scalar under `ray/tune/`, as Ray's does, and the HParams row as soon as the trial reports,
with plain Python values; the metric columns then follow the trial's scalars as they arrive.
One SummaryWriter per running trial, as Ray's own logger keeps, closed when the trial ends.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.logger import TBXLoggerCallback
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

logger = logging.getLogger(__name__)

HPARAM_METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
# a writer flushes on its own thread at most this often, and on close at the trial's end: a flush
# per result was a disk sync per epoch of every running trial in the driver
FLUSH_S = 10
NOT_SCALARS = {"config", "pid", "timestamp", "time_total_s", "training_iteration"}  # as Ray's logger skips


def plain(v: Any) -> Any:
    """numpy scalars -> Python; anything else unsupported -> str."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (TypeError, ValueError):
            pass
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


class HParamsTBXLogger(TBXLoggerCallback):
    def __init__(self) -> None:
        super().__init__()
        self.writers: dict[str, Any] = {}  # trial id -> its tensorboardX SummaryWriter
        self.hparams_written: set[str] = set()

    def log_trial_start(self, trial: Any) -> None:
        self.log_trial_end(trial)  # a trial that starts again (a retry) gets a new event file
        trial.init_local_path()
        self.writers[trial.trial_id] = SummaryWriter(trial.local_path, flush_secs=FLUSH_S)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial.trial_id not in self.writers:
            self.log_trial_start(trial)
        writer = self.writers[trial.trial_id]
        step = result.get("timesteps_total") or result["training_iteration"]
        for key, value in result.items():
            value = plain(value)
            if key not in NOT_SCALARS and _number(value):
                writer.add_scalar(f"ray/tune/{key}", value, global_step=step)
        if trial.trial_id not in self.hparams_written:
            self._write_hparams(writer, trial, result)
            self.hparams_written.add(trial.trial_id)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self.writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()

    def _write_hparams(self, writer: Any, trial: Any, result: dict) -> None:
        params = {k: plain(v) for k, v in (trial.evaluated_params or trial.config or {}).items()}
        # the metric tags are the scalar tags written above, so the columns fill as they come
        metrics = {f"ray/tune/{k}": float(result[k]) for k in HPARAM_METRICS if _number(plain(result.get(k)))}
        for summary in hparams(hparam_dict=params, metric_dict=metrics):
            writer.file_writer.add_summary(summary)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
