"""`retrain` on Ray: each seed is one trial of a Ray Tune experiment, placed where
the cluster has room (one GPU each where it has GPUs), all of them at once as far as it allows.
`retraining.py` decides where that experiment lives and what becomes of the seeds' folders.

Tune rather than bare Ray tasks, because it already does what a retrain must survive: a trial
whose node dies restarts from its last checkpoint on another node (`max_failures`), a killed or
interrupted driver's experiment continues with `tune.run(resume=...)` (every seed from its last
checkpoint, the finished ones untouched), and its storage layer writes to a folder or a URI alike.

A seed's Tune checkpoint is its whole run folder (config.yaml, metrics.jsonl, tb/,
checkpoints/last.pt, and in the last one run.json and metrics.json), so a seed restored on
another node carries on in the same folder, its TensorBoard events included. The data reach
the trials as in a search, through `tune.with_parameters`: once per node, from the object store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import ray
import torch
from ray import tune

from s9tune.callbacks import Checkpointer
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import EpochMetrics, FitState
from s9tune.runs import METRICS_JSON, train_to_dir, write_metrics
from s9tune.search.execution import cluster
from s9tune.search.execution.console import SEED_FINISHED, SEED_STARTED, SeedProgress, error_line
from s9tune.search.execution.trainable import within_gpu_share
from s9tune.search.outcome import FINAL, RunStatus
from s9tune.storage import Folder

logger = logging.getLogger(__name__)

SEED_KEY = "seed"
FINAL_KEYS = ("test_accuracy", "test_loss", "test_correct", "test_images")


def _node() -> dict[str, str]:
    node_id = ray.get_runtime_context().get_node_id()
    return {"node_id": node_id, "node": f"{ray.util.get_node_ip_address()} ({node_id[:8]})"}


class TuneCheckpointer(Checkpointer):
    """The run's Checkpointer, reporting every epoch to Tune; each checkpoint its pacer allows
    hands the run folder to Tune's storage in the same report (the pacer counts the upload).
    The last epoch's folder goes with the final report, once run.json and metrics.json are in it."""

    def __init__(self, run_dir: Path, node: dict[str, str]) -> None:
        super().__init__(run_dir / "checkpoints")
        self.run_dir, self.node = run_dir, node

    def on_epoch_end(self, state: FitState, m: EpochMetrics) -> None:
        metrics = {**m.to_dict(), **self.node}
        if m.epoch >= state.cfg.epochs or not self.pacer.due(m.epoch, state.cfg.epochs):
            tune.report(metrics)
            return
        with self.pacer.writing():
            state.checkpoint().save(self.last)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.run_dir)))
        self.saved_epoch = m.epoch


def _report_final(run_dir: Path, metrics: dict[str, Any], node: dict[str, str]) -> None:
    final = {"event": SEED_FINISHED, "status": metrics["status"], "epoch": metrics["epochs"], **node}
    final.update({k: metrics[k] for k in FINAL_KEYS if metrics.get(k) is not None})
    tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(run_dir)))


def train_seed(
    config: dict[str, Any], *, splits: Splits, base: dict[str, Any], extra: dict[str, Any], threads: int
) -> None:
    """Ray Tune entry point: the retrain config `base` with the trial's seed, into a run folder
    restored from the trial's last checkpoint (if any), by `runs.train_to_dir` as in-process."""
    cfg = within_gpu_share(TrainConfig.from_dict(base).with_overrides({"seed": int(config[SEED_KEY])}))
    torch.set_num_threads(threads)  # as many as the run holds CPUs, wherever it lands: same numbers
    node = _node()
    run_dir = Path(tempfile.mkdtemp(prefix=f"s9tune-seed{cfg.seed}-"))
    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            ckpt.to_directory(str(run_dir))
        if (run_dir / METRICS_JSON).is_file():  # finished, but the driver died before it heard
            _report_final(run_dir, json.loads((run_dir / METRICS_JSON).read_text()), node)
            return
        last = run_dir / "checkpoints" / "last.pt"
        after = Checkpoint.load(last).epoch if last.is_file() else 0
        tune.report({"event": SEED_STARTED, "epoch": after, **node})
        try:
            outcome = train_to_dir(
                cfg, splits, run_dir, resume=True, extra=extra, checkpointer=TuneCheckpointer(run_dir, node)
            )
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeError(f"CUDA out of memory (gpu_memory_fraction={cfg.gpu_memory_fraction}): {exc}") from None
        write_metrics(run_dir, outcome.metrics)
        _report_final(run_dir, outcome.metrics, node)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class SeedResult:
    seed: int
    status: RunStatus  # completed | diverged (finished) | error (failed for good) | unfinished
    error: str | None = None
    checkpoint: Any = None  # Tune's checkpoint: the run folder, complete when finished

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def fetch(self, dest: Path) -> None:
        """The seed's run folder into `dest` (from the experiment's storage)."""
        self.checkpoint.to_directory(str(dest))


@dataclass(frozen=True)
class SeedRuns:
    """What `fit_seeds` runs: `cfg` with each of `seeds`, `cpus` and `gpus` each, as the Tune
    experiment in `experiment` (a folder or a URI)."""

    cfg: TrainConfig
    seeds: list[int]
    experiment: Folder
    extra: dict[str, Any]
    cpus: float
    gpus: float


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray joined (or started in-process) for the block; shut down after it, inside the caller's
    log redirect, so Ray's goodbyes go to its log too."""
    try:
        cluster.init_ray(address)
        yield
    finally:
        ray.shutdown()


def plan_resources(cpus: float | None, gpus: float | None, out: Folder) -> tuple[float, float, int]:
    """(CPUs, GPUs) per run, the user's or the defaults, and how many runs fit at once; refused
    (one line) when no node can hold a run, or a local --out is not seen by every node."""
    dcpus, dgpus = cluster.default_run_resources()
    cpus = dcpus if cpus is None else cpus
    gpus = dgpus if gpus is None else gpus
    probe = out
    if out.is_local:  # the probe goes in the nearest folder that exists: nothing is created
        probe = Folder.parse(next(p for p in (Path(out.base), *Path(out.base).parents) if p.is_dir()))
    slots = cluster.check_cluster(cpus, gpus, probe.parent.url, probe.name, unit="run", flag="--out")
    return cpus, gpus, slots


def fit_seeds(
    runs: SeedRuns, splits: Splits, *, resume: bool, console: TextIO | None, max_failures: int
) -> list[SeedResult]:
    """Run (or, with `resume`, continue) the seeds; returns one result per seed. A Ctrl-C stops
    Tune gracefully: the seeds it stopped come back unfinished. `tune.run` rather than a Tuner,
    as for a search: a continued run takes this process's console callback as a new one does."""
    trainable = tune.with_resources(
        tune.with_parameters(
            train_seed, splits=splits, base=runs.cfg.to_dict(), extra=runs.extra, threads=max(1, int(runs.cpus))
        ),
        {"cpu": runs.cpus, "gpu": runs.gpus},
    )
    analysis = tune.run(
        trainable,
        name=runs.experiment.name,
        storage_path=runs.experiment.parent.url,
        config={SEED_KEY: tune.grid_search(runs.seeds)},
        callbacks=[SeedProgress(runs.cfg.epochs, console)] if console is not None else None,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        max_failures=max_failures,
        verbose=0,
        raise_on_failed_trial=False,  # a seed that failed is reported in the table, not raised
        resume="AUTO+ERRORED" if resume else None,  # unfinished seeds from their checkpoints; failed ones again
    )
    by_seed = {int(t.config[SEED_KEY]): t for t in analysis.trials if SEED_KEY in t.config}
    return [_seed_result(s, by_seed.get(s)) for s in runs.seeds]


def _seed_result(seed: int, trial: Any) -> SeedResult:
    if trial is None:
        return SeedResult(seed, "unfinished")
    last = trial.last_result or {}
    if trial.status == "TERMINATED" and last.get("event") == SEED_FINISHED:
        return SeedResult(seed, str(last.get("status", "completed")), checkpoint=trial.checkpoint)
    if trial.status == "ERROR":
        return SeedResult(seed, "error", error=error_line(trial))
    return SeedResult(seed, "unfinished", checkpoint=trial.checkpoint)
