"""`s9tune search`: one Tuner over the trainable, on the experiment at STORAGE/NAME; new, or
restored with `--resume`. Optuna's TPE (seeded, the baseline first) proposes configs; ASHA
stops trials early, or successive halving reruns the best on longer complete schedules."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from s9tune.errors import ConfigError, S9Error
from s9tune.search.experiment import ExperimentRef, default_name, is_uri, resolve_storage
from s9tune.search.space import METRIC, MODE, SearchSpace
from s9tune.search.trials import Experiment

logger = logging.getLogger(__name__)

SEARCH_LOG = "search.log"


@dataclass
class SearchOutcome:
    experiment: str  # storage/name
    finished: int
    total: int
    errors: int
    interrupted: bool
    result: Experiment
    log: str | None = None  # where Ray's and Tune's output went


def require_tensorboardx() -> None:
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise S9Error(
            "tensorboardX is not installed, so trials would write no TensorBoard files; "
            "install it with: pip install tensorboardX"
        ) from None


def _experiment(
    space: SearchSpace, storage: str | None, name: str | None, resume: bool
) -> tuple[ExperimentRef, SearchSpace]:
    """The experiment to write to and the space it runs: on resume, the experiment's own record
    decides the data and the fixed values, not today's file (only resources may change)."""
    if resume and not name:
        raise ConfigError("--resume needs the --name of the experiment to continue")
    ref = ExperimentRef(resolve_storage(storage), name or default_name(space))
    ref.check_writable()
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
    from ray.tune.search import ConcurrencyLimiter

    from s9tune.search.hparams import HParamsTBXLogger
    from s9tune.search.searchers import ResumableSearch

    searcher, scheduler, trials = _search_alg(space)
    # the searcher hands out one pending trial at a time unless its limiter says how many slots exist
    search_alg = ResumableSearch(ConcurrencyLimiter(searcher, max_concurrent=slots))
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=trials,
            # a new trial takes over a finished one's process: no new interpreter, torch import,
            # CUDA context or cuDNN autotuning per run (a 2-epoch GPU run was mostly start-up)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=ref.name,
            storage_path=ref.storage,
            callbacks=[HParamsTBXLogger()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,  # s9tune's console shows progress; Tune's tables would repeat it every 30 s
        ),
    )


def _plan(space: SearchSpace, ref: ExperimentRef) -> Any:
    from s9tune.search.progress import Plan

    keys = tuple(d.key for d in space.dists)
    sched = space.scheduler
    if sched.type == "halving":
        sizes = sched.rung_sizes(space.num_samples)
        return Plan(
            ref.name, sum(sizes), sum(n * b for n, b in zip(sizes, sched.budgets, strict=True)), True, space.max_t, keys
        )
    return Plan(ref.name, space.num_samples, space.num_samples * space.max_t, False, space.max_t, keys)


def _log_path(ref: ExperimentRef) -> Path:
    """Ray's output: in the experiment folder, or beside it locally when the experiment is on a URI."""
    if is_uri(ref.storage):
        return Path(tempfile.gettempdir()) / "s9tune-logs" / f"{ref.name}.log"
    return Path(ref.path) / SEARCH_LOG


def run_search(
    space: SearchSpace,
    data_dir: str | Path | None,
    *,
    storage: str | None = None,
    name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    max_failures: int = 2,
    dashboard: bool = False,
    ray_to_console: bool = False,
    progress: bool = True,
) -> SearchOutcome:
    """Run (or resume) a search. Ray's and Tune's output goes to STORAGE/NAME/search.log unless
    `ray_to_console`; the console shows s9tune's own progress unless not `progress`."""
    import ray

    from s9tune.data import load_splits
    from s9tune.search.export import export_experiment
    from s9tune.search.logfile import ray_output_to

    require_tensorboardx()
    ref, space = _experiment(space, storage, name, resume)
    fixed = space.fixed
    # on the driver, before Ray starts: a data error is one clear line, not a failed trial
    splits = load_splits(data_dir, val_size=fixed.val_size, seed=fixed.seed, train_subset=fixed.train_subset)
    if not splits.has_val:
        raise ConfigError(f"{space.path}: fixed.val_size is 0; a search must score on a validation split")
    if not resume:
        ref.write_record(space)
    log = None if ray_to_console else _log_path(ref)
    launched: list[bool] = []
    try:
        with ray_output_to(log) as console:
            try:
                _fit(
                    space,
                    ref,
                    splits,
                    address,
                    resume,
                    max_failures,
                    dashboard,
                    console if progress else None,
                    launched,
                )
            finally:
                ray.shutdown()  # inside the redirect: Ray's goodbyes belong in its log too
    except S9Error:
        if not resume and not launched:
            ref.delete()  # refused before Tune started (cluster checks): a retry may use the same name
        raise
    finally:
        if log is not None and is_uri(ref.storage) and log.exists() and ref.exists():
            ref.write_text(SEARCH_LOG, log.read_text(encoding="utf-8", errors="replace"))
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
        log=str(log) if log is not None else None,
    )


def _fit(
    space: SearchSpace,
    ref: ExperimentRef,
    splits: Any,
    address: str | None,
    resume: bool,
    max_failures: int,
    dashboard: bool,
    console: TextIO | None,
    launched: list[bool],
) -> None:
    from ray import tune

    from s9tune.search.cluster import init_ray, preflight
    from s9tune.search.progress import SearchProgress
    from s9tune.search.trainable import train_trial

    init_ray(address, dashboard)
    slots = preflight(space, ref.storage, ref.name)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, splits=splits, base=space.fixed.to_dict()),
        {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial},
    )
    if resume:
        logger.info("resuming %s", ref.path)
        tuner = tune.Tuner.restore(ref.path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        logger.info("search %s: %d configs, %d trials at once", ref.path, space.num_samples, slots)
        tuner = _tuner(space, ref, trainable, slots, max_failures)
    if console is not None:
        progress = SearchProgress(_plan(space, ref), console, live=console.isatty())
        # Tune.restore rebuilds the run config from the experiment; the console is this process's
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, SearchProgress)] + [progress]
    launched.append(True)
    tuner.fit()
