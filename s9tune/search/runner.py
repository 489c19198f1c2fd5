"""Tuner setup: OptunaSearch (TPE, seeded, baseline first) + ASHA, resources, storage, resume.

The only module (with its siblings in search/) that talks to Ray.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig
from s9tune.errors import ConfigError, S9Error
from s9tune.search.space import METRIC, MODE, SearchSpace

logger = logging.getLogger(__name__)

SPACE_COPY = "s9tune_space.json"


class ClusterError(S9Error):
    """The cluster cannot run this search as asked (resources, storage)."""


def is_uri(storage: str) -> bool:
    return "://" in storage


def resolve_storage(storage: str | None) -> str:
    """Absolute local path or a URI. Tune changes each trial's working directory, so a relative
    path would point somewhere else inside a trial."""
    if storage is None:
        return str((Path.cwd() / "searches").resolve())
    if is_uri(storage):
        return storage.rstrip("/")
    return str(Path(storage).expanduser().resolve())


def default_name(space: SearchSpace) -> str:
    return f"{space.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _fs(storage: str):  # noqa: ANN202
    import pyarrow.fs

    if is_uri(storage):
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), storage


def experiment_exists(storage: str, name: str) -> bool:
    import pyarrow.fs

    fs, root = _fs(storage)
    info = fs.get_file_info(f"{root}/{name}")
    return info.type != pyarrow.fs.FileType.NotFound


def write_text(storage: str, relpath: str, text: str) -> None:
    fs, root = _fs(storage)
    path = f"{root}/{relpath}"
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(text.encode("utf-8"))


def read_text(storage: str, relpath: str) -> str | None:
    fs, root = _fs(storage)
    try:
        with fs.open_input_stream(f"{root}/{relpath}") as fh:
            return fh.read().decode("utf-8")
    except (FileNotFoundError, OSError):
        return None


@dataclass
class SearchOutcome:
    experiment: str  # storage/name
    finished: int
    total: int
    errors: int
    interrupted: bool
    result: Any = None  # the exported search.export.Experiment


def _require_tensorboardx() -> None:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise S9Error(
            "tensorboardX is not installed, so trials would write no TensorBoard files; "
            "install it with: pip install tensorboardX"
        ) from None


def init_ray(address: str | None) -> None:
    import ray

    import s9tune

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # every epoch checkpoints by design (resume, ASHA); Tune's "snapshotting too often" warning
    # would repeat all search long
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if address:
        # ship this package to the cluster's workers; their Python needs the dependencies
        runtime_env = {"py_modules": [str(Path(s9tune.__file__).resolve().parent)]}
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    else:
        # embedded: Ray lives in this process tree; dashboard off (it would listen on a port)
        ray.init(include_dashboard=False, log_to_driver=True)


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def preflight(space: SearchSpace, storage: str, exp_name: str) -> int:
    """Check that the cluster can run the trials; returns how many can run at once."""
    nodes = _alive_nodes()
    cpus, gpus = space.cpus_per_trial, space.gpus_per_trial
    max_cpu = max(n["Resources"].get("CPU", 0) for n in nodes)
    max_gpu = max(n["Resources"].get("GPU", 0) for n in nodes)
    if cpus > max_cpu:
        raise ClusterError(f"a trial asks for {cpus:g} CPUs but the largest node has {max_cpu:g}; lower --cpus-per-trial")
    if gpus > max_gpu:
        raise ClusterError(
            f"a trial asks for {gpus:g} GPUs but the largest node has {max_gpu:g}; "
            "lower --gpus-per-trial (0 runs on CPUs)"
        )
    slots = 0
    for n in nodes:
        per_node = math.floor(n["Resources"].get("CPU", 0) / cpus + 1e-9)
        if gpus > 0:
            per_node = min(per_node, math.floor(n["Resources"].get("GPU", 0) / gpus + 1e-9))
        slots += per_node
    if len(nodes) > 1 and not is_uri(storage):
        _check_storage_visible(storage, exp_name, nodes)
    return max(1, slots)


def _check_storage_visible(storage: str, exp_name: str, nodes: list[dict[str, Any]]) -> None:
    """A local storage path works on several nodes only if it is a shared filesystem."""
    marker = Path(storage) / exp_name / f".s9tune-probe-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("probe")
    try:
        blind = nodes_not_seeing(marker, nodes)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ClusterError(
            f"storage {storage} is a local path that node(s) {', '.join(blind)} cannot see; "
            "on a multi-node cluster use a shared filesystem or a URI (s3://..., gs://...) for --storage"
        )


def nodes_not_seeing(path: Path, nodes: list[dict[str, Any]]) -> list[str]:
    """Ask a zero-CPU task pinned to each node whether `path` exists there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def sees(p: str) -> bool:
        return Path(p).exists()

    refs = {
        f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(path))
        for n in nodes
    }
    return [node for node, ref in refs.items() if not ray.get(ref, timeout=60)]


def run_search(
    space: SearchSpace,
    data_dir: str | Path | None,
    *,
    storage: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    max_failures: int = 2,
) -> SearchOutcome:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from s9tune.data import load_splits
    from s9tune.search.export import export_experiment
    from s9tune.search.hparams import HParamsTBXLogger
    from s9tune.search.trainable import train_trial

    _require_tensorboardx()
    storage = resolve_storage(storage)
    if resume and not name:
        raise ConfigError("--resume needs the --name of the experiment to continue")
    name = name or default_name(space)
    exp = f"{storage}/{name}"
    exists = experiment_exists(storage, name)
    if resume and not exists:
        raise ConfigError(f"{exp}: no such experiment to resume")
    if not resume and exists:
        raise ConfigError(f"{exp}: already exists; pass --resume to continue it or choose another --name")

    record = _space_record(space)
    if resume:
        # the experiment's own record decides the data and the fixed values, not today's file
        saved = read_text(storage, f"{name}/{SPACE_COPY}")
        if saved is None:
            raise ConfigError(f"{exp}: not an s9tune experiment (no {SPACE_COPY}); cannot resume it")
        record = {**json.loads(saved), "resources": record["resources"]}
    fixed = fixed_config(record)
    # on the driver, before Ray starts: a data error is one clear line, not a failed trial
    splits = load_splits(data_dir, val_size=fixed.val_size, seed=fixed.seed, train_subset=fixed.train_subset)
    if not splits.has_val:
        raise ConfigError(f"{space.path}: fixed.val_size is 0; a search must score on a validation split")

    init_ray(address)
    slots = preflight(space, storage, name)
    base = fixed.to_dict()
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, splits=splits, base=base),
        {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial},
    )
    if resume:
        logger.info("resuming %s", exp)
        tuner = tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        write_text(storage, f"{name}/{SPACE_COPY}", json.dumps(record, indent=2))
        searcher = OptunaSearch(
            metric=METRIC,
            mode=MODE,
            seed=space.searcher_seed,
            points_to_evaluate=[space.baseline] if space.baseline else None,
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=space.max_t,
            grace_period=space.grace_period,
            reduction_factor=space.reduction_factor,
            brackets=space.brackets,
        )
        logger.info("search %s: %d trials, %d at once", exp, space.num_samples, slots)
        tuner = tune.Tuner(
            trainable,
            param_space=space.param_space(),
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=space.num_samples,
                # the searcher hands out one pending trial at a time unless told how many slots exist
                max_concurrent_trials=slots,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=[HParamsTBXLogger()],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=1,
            ),
        )
    tuner.fit()
    result = export_experiment(exp)
    statuses = [r.status for r in result.rows]
    # after Ctrl-C Tune returns normally: unfinished trials, or fewer than asked for, tell
    return SearchOutcome(
        exp,
        finished=sum(s in ("completed", "stopped", "diverged") for s in statuses),
        total=len(statuses),
        errors=statuses.count("error"),
        interrupted="unfinished" in statuses or len(statuses) < int(record["num_samples"]),
        result=result,
    )


def _space_record(space: SearchSpace) -> dict[str, Any]:
    return {
        "space_file": str(space.path),
        "num_samples": space.num_samples,
        "fixed": space.fixed.to_dict(),
        "dists": [
            {"key": d.key, "type": d.type, "low": d.low, "high": d.high, "q": d.q, "values": list(d.values)}
            for d in space.dists
        ],
        "baseline": space.baseline,
        "scheduler": {
            "type": "asha",
            "max_t": space.max_t,
            "grace_period": space.grace_period,
            "reduction_factor": space.reduction_factor,
            "brackets": space.brackets,
        },
        "searcher": {"type": "optuna", "sampler": "TPE", "seed": space.searcher_seed},
        "resources": {"cpus_per_trial": space.cpus_per_trial, "gpus_per_trial": space.gpus_per_trial},
        "metric": METRIC,
        "mode": MODE,
    }


def fixed_config(record: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(record["fixed"])
