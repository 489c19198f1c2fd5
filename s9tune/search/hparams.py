"""Ray's TBX logger, with the HParams row written from a trial's first result.

Ray's own TBXLoggerCallback writes HParams only when a trial ends, so running trials and
(depending on the version) trials that ASHA stopped have no row in TensorBoard's HParams tab,
and it drops numpy scalars. Here every trial gets its row as soon as it reports, with plain
Python values; the metric columns then follow the trial's scalars as they arrive.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.logger import TBXLoggerCallback

logger = logging.getLogger(__name__)

HPARAM_METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")


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
        self._hparams_written: set[str] = set()

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        super().log_trial_result(iteration, trial, result)
        if trial.trial_id not in self._hparams_written:
            self._write_hparams(trial, result)
            self._hparams_written.add(trial.trial_id)

    def _write_hparams(self, trial: Any, result: dict) -> None:
        from tensorboardX.summary import hparams

        params = {k: plain(v) for k, v in (trial.evaluated_params or trial.config or {}).items()}
        # the metric tags are the scalar tags Ray's logger writes, so the columns fill as they come
        metrics = {f"ray/tune/{k}": float(result[k]) for k in HPARAM_METRICS if isinstance(result.get(k), (int, float))}
        exp, start, end = hparams(hparam_dict=params, metric_dict=metrics)
        writer = self._trial_writer[trial].file_writer
        for summary in (exp, start, end):
            writer.add_summary(summary)
        self._trial_writer[trial].flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial.trial_id in self._hparams_written and trial in self._trial_writer:
            # our row exists already; a second one from the base class would duplicate it
            self._trial_writer[trial].close()
            del self._trial_writer[trial]
            self._trial_result.pop(trial, None)
            return
        super().log_trial_end(trial, failed)
