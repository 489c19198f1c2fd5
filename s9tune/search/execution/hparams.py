"""TensorBoard files for every trial, with the HParams row written from a trial's first result.

Ray's own TBXLoggerCallback writes HParams only when a trial ends, so running trials and
(depending on the version) trials that ASHA stopped have no row in TensorBoard's HParams tab,
and it drops numpy scalars. This logger takes its place (Tune adds Ray's unless a callback of
that type is given) and writes tensorboardX's records into event files of its own: each numeric
result as a scalar under `ray/tune/`, as Ray's does, and the HParams row as soon as the trial
reports, with plain Python values; the metric columns then follow the trial's scalars as they
arrive.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import time
from pathlib import Path
from typing import Any

from ray.tune.logger import TBXLoggerCallback
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c
from tensorboardX.summary import hparams, scalar

logger = logging.getLogger(__name__)

HPARAM_METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
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


class EventFile:
    """One trial's TensorBoard event file, opened, appended to and closed at each write.

    tensorboardX's SummaryWriter keeps, per trial, an open file, a multiprocessing queue (a pipe)
    and a thread, and fsyncs at every flush: in a driver with thousands of running trials that is
    thousands of threads and descriptors, and one disk sync per result. Here a write is one
    append of whole records; an event file needs no sync (TensorBoard rereads it as it grows, and
    the tail a machine crash could lose, a restored trial reports again)."""

    def __init__(self, folder: Path) -> None:
        stem = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self.path, n = folder / stem, 0
        while self.path.exists():  # a retry within the same second gets a file of its own
            n += 1
            self.path = folder / f"{stem}.{n}"
        self.write([event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")])

    def write(self, events: list[Any]) -> None:
        with open(self.path, "ab") as fh:
            fh.write(b"".join(_record(e.SerializeToString()) for e in events))


def _record(data: bytes) -> bytes:
    """TFRecord framing: length, its masked CRC-32C, the data, its masked CRC-32C."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


class HParamsTBXLogger(TBXLoggerCallback):
    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, EventFile] = {}  # trial id -> its event file, while it runs
        self.hparams_written: set[str] = set()

    def log_trial_start(self, trial: Any) -> None:
        self.log_trial_end(trial)  # a trial that starts again (a retry) gets a new event file
        trial.init_local_path()
        self.files[trial.trial_id] = EventFile(Path(trial.local_path))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial.trial_id not in self.files:
            self.log_trial_start(trial)
        step = result.get("timesteps_total") or result["training_iteration"]
        values = [
            v
            for key, value in result.items()
            if key not in NOT_SCALARS and _number(plain(value))
            for v in scalar(f"ray/tune/{key}", plain(value)).value
        ]
        now = time.time()
        events = [event_pb2.Event(wall_time=now, step=step, summary=summary_pb2.Summary(value=values))]
        if trial.trial_id not in self.hparams_written:
            events += [event_pb2.Event(wall_time=now, summary=s) for s in _hparams(trial, result)]
            self.hparams_written.add(trial.trial_id)
        self.files[trial.trial_id].write(events)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self.files.pop(trial.trial_id, None)


def _hparams(trial: Any, result: dict) -> list[Any]:
    params = {k: plain(v) for k, v in (trial.evaluated_params or trial.config or {}).items()}
    # the metric tags are the scalar tags written above, so the columns fill as they come
    metrics = {f"ray/tune/{k}": float(result[k]) for k in HPARAM_METRICS if _number(plain(result.get(k)))}
    return list(hparams(hparam_dict=params, metric_dict=metrics))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
