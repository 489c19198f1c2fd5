"""`s9tune search`: one Tuner over the trainable, on the experiment at STORAGE/NAME; new, or
restored with `--resume`. Optuna's TPE (seeded, the baseline first) proposes configs; ASHA
stops trials early, or successive halving reruns the best on longer complete schedules."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.errors import ConfigError, S9Error
from s9tune.search.experiment import Experiment, ExperimentRef, default_name, resolve_storage
from s9tune.search.space import METRIC, MODE, SearchSpace

logger = logging.getLogger(__name__)


@dataclass
class SearchOutcome:
    experiment: str  # storage/name
    finished: int
    total: int
    errors: int
    interrupted: bool
    result: Experiment


def require_tensorboardx() -> None:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise S9Error(
            "tensorboardX is not installed, so trials would write no TensorBoard files; "
            "install it with: pip install tensorboardX"
        ) from None


def _experiment(space: SearchSpace, storage: str | None, name: str | None, resume: bool) -> tuple[ExperimentRef, SearchSpace]:
    """The experiment to write to and the space it runs: on resume, the experiment's own record
    decides the data and the fixed values, not today's file (only resources may change)."""
    if resume and not name:
        raise ConfigError("--resume needs the --name of the experiment to continue")
    ref = ExperimentRef(resolve_storage(storage), name or default_name(space))
    exists = ref.exists()
    if resume and not exists:
        raise ConfigError(f"{ref.path}: no such experiment to resume")
    if not resume and exists:
        raise ConfigError(f"{ref.path}: already exists; pass --resume to continue it or choose another --name")
    if not resume:
        return ref, space
    try:
        saved = ref.read_record()
    except S9Error:
        raise ConfigError(f"{ref.path}: not an s9tune experiment; cannot resume it") from None
    return ref, saved.with_resources(space.cpus_per_trial, space.gpus_per_trial)


def _search_alg(space: SearchSpace) -> tuple[Any, Any, int]:
    """(searcher, scheduler, trials) for the space's scheduler type: TPE under ASHA, or TPE
    feeding successive halving over complete schedules (search/searchers.py)."""
    from ray.tune.schedulers import ASHAScheduler

    from s9tune.search.searchers import CompleteScheduleOptuna, HalvingSearch

    sched = space.scheduler
    tpe = CompleteScheduleOptuna(
        metric=METRIC,
        mode=MODE,
        seed=space.searcher_seed,
        points_to_evaluate=[space.baseline] if space.baseline else None,
        max_t=sched.budgets[0] if sched.type == "halving" else space.max_t,
    )
    if sched.type == "halving":
        halving = HalvingSearch(tpe, sched, space.num_samples, METRIC, MODE)
        return halving, None, halving.total_runs  # no Tune scheduler: every run ends its schedule
    asha = ASHAScheduler(
        time_attr="training_iteration",
        max_t=space.max_t,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
        brackets=sched.brackets,
    )
    return tpe, asha, space.num_samples


def _tuner(space: SearchSpace, ref: ExperimentRef, trainable: Any, slots: int, max_failures: int) -> Any:
    from ray import tune

    from s9tune.search.hparams import HParamsTBXLogger

    searcher, scheduler, trials = _search_alg(space)
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            # the searcher hands out one pending trial at a time unless told how many slots exist
            max_concurrent_trials=slots,
        ),
        run_config=tune.RunConfig(
            name=ref.name,
            storage_path=ref.storage,
            callbacks=[HParamsTBXLogger()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=1,
        ),
    )


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

    from s9tune.data import load_splits
    from s9tune.search.cluster import init_ray, preflight
    from s9tune.search.export import export_experiment
    from s9tune.search.trainable import train_trial

    require_tensorboardx()
    ref, space = _experiment(space, storage, name, resume)
    fixed = space.fixed
    # on the driver, before Ray starts: a data error is one clear line, not a failed trial
    splits = load_splits(data_dir, val_size=fixed.val_size, seed=fixed.seed, train_subset=fixed.train_subset)
    if not splits.has_val:
        raise ConfigError(f"{space.path}: fixed.val_size is 0; a search must score on a validation split")

    init_ray(address)
    slots = preflight(space, ref.storage, ref.name)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, splits=splits, base=fixed.to_dict()),
        {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial},
    )
    if resume:
        logger.info("resuming %s", ref.path)
        tuner = tune.Tuner.restore(ref.path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        ref.write_record(space)
        logger.info("search %s: %d trials, %d at once", ref.path, space.num_samples, slots)
        tuner = _tuner(space, ref, trainable, slots, max_failures)
    tuner.fit()
    result = export_experiment(ref.path)
    statuses = [r.status for r in result.rows]
    # after Ctrl-C Tune returns normally: unfinished trials, or runs never started, tell
    return SearchOutcome(
        ref.path,
        finished=sum(s in ("completed", "stopped", "diverged") for s in statuses),
        total=len(statuses),
        errors=statuses.count("error"),
        interrupted=result.interrupted(),
        result=result,
    )
