"""`s9tune search`: one `tune.run` over the trainable, on the experiment at STORAGE/NAME; new,
or continued with `--resume`. Optuna's TPE (seeded, the baseline first) proposes configs; ASHA
stops trials early, or successive halving reruns the best on longer complete schedules.

`tune.run` rather than `Tuner`: a resumed Tuner rebuilds its searcher and callbacks from the
pickles it saved, while `tune.run(resume=...)` takes this process's own, so the console and the
searcher (rebuilt from the experiment's Optuna journal) attach through public arguments."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from s9tune.data import Splits, load_splits
from s9tune.errors import ConfigError, S9Error
from s9tune.options import SearchOptions
from s9tune.search.execution.logfile import ray_output_to
from s9tune.search.experiment.export import export_experiment
from s9tune.search.experiment.record import (
    SEARCH_LOG,
    ExperimentRef,
    already_exists,
    check_name,
    check_resumable,
    default_name,
    is_uri,
    resolve_storage,
)
from s9tune.search.experiment.trials import Experiment
from s9tune.search.outcome import OVER
from s9tune.search.searcher.journal import StudyStore, check_resume
from s9tune.search.space.space import METRIC, MODE, SearchSpace

logger = logging.getLogger(__name__)

# Ray and the modules that load it (cluster, console, hparams, asha, searcher; trainable also
# torch) are imported inside the functions that start Ray: Ray Tune alone costs ~0.9 s CPU at
# import, torch ~1.3 s (medians of 5, `python -c "import ray.tune"`, 2-core VM), and
# run_search's checks (tensorboardX, the name, --resume, the data) answer in one line before.


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
        import tensorboardX  # noqa: F401 - here: whether it imports is the check
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
    ref = ExperimentRef(resolve_storage(storage), check_name(name or default_name(space)))
    ref.check_writable()
    exists = ref.exists()
    if resume and not exists:
        raise ConfigError(f"{ref.path}: no such experiment to resume")
    if not resume and exists:
        raise already_exists(ref.path)
    if not resume:
        return ref, space
    saved = check_resumable(ref)
    check_resume(ref.folder)  # the journal: whole, not a link; a torn last line trimmed
    return ref, saved.with_resources(space.cpus_per_trial, space.gpus_per_trial)


@contextlib.contextmanager
def _pending_trials(slots: int) -> Iterator[None]:
    """Tune keeps one trial pending at a time for a searcher of its own; with as many as there
    are slots, the slots fill at once rather than one actor start after another (the searcher's
    `max_concurrent` keeps pending and running runs within the slots, so no config is asked for
    before a slot could take it). Tune reads this documented variable when it starts; a value
    the user set is kept, and it is put back afterwards."""
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    before = os.environ.get(key)
    os.environ[key] = before or str(slots)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _plan(space: SearchSpace, ref: ExperimentRef) -> Any:
    from s9tune.search.execution.console import Plan  # Ray: see the note at the top

    plan = space.plan()
    return Plan(
        ref.name,
        trials=plan.trials,
        epochs=plan.epochs,
        exact=plan.exact,
        max_t=space.max_t,
        searched=tuple(d.key for d in space.dists),
    )


def _log_path(ref: ExperimentRef) -> Path:
    """Ray's output: in the experiment folder; for a URI experiment first in a private folder of
    this machine's (mkdtemp: 0700, a name nobody can guess), uploaded when the search ends."""
    if is_uri(ref.storage):
        return Path(tempfile.mkdtemp(prefix="s9tune-log-")) / SEARCH_LOG
    return Path(ref.path) / SEARCH_LOG


def run_search(
    space: SearchSpace, opts: SearchOptions, *, trainable: Callable[..., None] | None = None
) -> SearchOutcome:
    """Run (or resume) a search of `space` (already loaded and checked; on resume the experiment's
    own record takes its place). Ray's and Tune's output goes to STORAGE/NAME/search.log unless
    `opts.ray_to_console`; the console shows s9tune's own progress if `opts.progress`.
    `trainable`: in place of trainable.train_trial, a function with its signature and name
    (the scale benchmark's stand-in); no user-facing option sets it."""
    import ray  # lazy, as the note at the top says: the checks below answer before it loads

    require_tensorboardx()
    ref, space = _experiment(space, opts.storage, opts.name, opts.resume)
    fixed = space.fixed
    # on the driver, before Ray starts: a data error is one clear line, not a failed trial
    splits = load_splits(opts.data_dir, val_size=fixed.val_size, seed=fixed.seed, train_subset=fixed.train_subset)
    if not splits.has_val:
        raise ConfigError(f"{space.path}: fixed.val_size is 0; a search must score on a validation split")
    with _sigterm_exits():
        made = [] if opts.resume else ref.create(space, max_failures=opts.max_failures)
        log = None if opts.ray_to_console else _log_path(ref)
        try:
            with ray_output_to(log) as console:
                try:
                    slots = _start_ray(space, ref, address=opts.address, dashboard=opts.dashboard)
                    run = _trainable(space, splits, trainable)
                    _run_tune(space, ref, run, slots=slots, opts=opts, console=console if opts.progress else None)
                finally:
                    ray.shutdown()  # inside the redirect: Ray's goodbyes belong in its log too
        except BaseException:
            # refused before Tune wrote its state (a cluster check), Ctrl-C or SIGTERM while Ray
            # started: nothing --resume could continue, so the name is freed for a retry
            if not opts.resume and not ref.tune_started():
                ref.discard(made)
            raise
        finally:
            if log is not None and is_uri(ref.storage):
                if log.exists() and ref.exists():
                    ref.write_text(SEARCH_LOG, log.read_text(encoding="utf-8", errors="replace"))
                shutil.rmtree(log.parent, ignore_errors=True)
    result = export_experiment(ref.path)
    statuses = [r.status for r in result.rows]
    # after Ctrl-C Tune returns normally: unfinished trials, or runs never started, tell
    return SearchOutcome(
        ref.path,
        finished=sum(s in OVER for s in statuses),
        total=len(statuses),
        errors=statuses.count("error"),
        interrupted=result.interrupted(),
        result=result,
        log=(f"{ref.path}/{SEARCH_LOG}" if is_uri(ref.storage) else str(log)) if log is not None else None,
    )


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit while a search launches, so that its clean-up runs (Python's
    default ends the process at once; ray.init installs the same rule once it runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _start_ray(space: SearchSpace, ref: ExperimentRef, *, address: str | None, dashboard: bool) -> int:
    """Start or join Ray and check the cluster can run the search; the slots it has."""
    from s9tune.search.execution.cluster import init_ray, preflight  # Ray: see the note at the top

    init_ray(address, dashboard)
    return preflight(space, ref.storage, ref.name)


def _trainable(space: SearchSpace, splits: Splits, trainable: Callable[..., None] | None) -> Any:
    """The trainable Tune runs: `trainable` (or train_trial) with the data and the space's fixed
    settings bound, on the space's share of a worker."""
    from ray import tune  # lazy, as the note at the top says

    from s9tune.search.execution.trainable import train_trial

    return tune.with_resources(
        tune.with_parameters(trainable or train_trial, splits=splits.without_test(), base=space.fixed.to_dict()),
        {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial},
    )


def _run_tune(
    space: SearchSpace, ref: ExperimentRef, run: Any, *, slots: int, opts: SearchOptions, console: TextIO | None
) -> None:
    """One `tune.run` over the trainable: a new experiment, or the one at `ref` continued
    (unfinished and errored trials run again). The searcher and the callbacks are this
    process's own either way; the searcher's state comes from the experiment's Optuna journal."""
    from ray import tune  # lazy, as the note at the top says, and so are the four below

    from s9tune.search.execution.console import SearchProgress
    from s9tune.search.execution.hparams import HParamsTBXLogger
    from s9tune.search.searcher.asha import scheduler_for
    from s9tune.search.searcher.searcher import SearchSync, StudySearch, StudySearchGenerator

    logger.info(
        "%s %s: %d configs, %d trials at once",
        "resuming" if opts.resume else "search",
        ref.path,
        space.num_samples,
        slots,
    )
    store = StudyStore(ref.folder)
    try:
        searcher = StudySearch(space, store=store, name=ref.name, max_concurrent=slots)
        scheduler = scheduler_for(space)
        callbacks: list[Any] = [SearchSync(searcher, scheduler), HParamsTBXLogger()]
        if console is not None:
            callbacks.append(SearchProgress(_plan(space, ref), console, live=console.isatty()))
        with _pending_trials(slots):
            tune.run(
                run,
                name=ref.name,
                storage_path=ref.storage,
                search_alg=StudySearchGenerator(searcher),
                scheduler=scheduler,
                # an upper bound only: the searcher ends the search
                num_samples=space.max_trials,
                metric=METRIC,
                mode=MODE,
                callbacks=callbacks,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                max_failures=opts.max_failures,
                # a new trial takes over a finished one's process: no new interpreter, torch import,
                # CUDA context or cuDNN autotuning per run (a 2-epoch GPU run was mostly start-up)
                reuse_actors=True,
                verbose=0,  # s9tune's console shows progress; Tune's tables would repeat it every 30 s
                raise_on_failed_trial=False,  # a failed trial is reported in the results, not raised
                resume="AUTO+ERRORED" if opts.resume else None,
            )
    finally:
        store.close()
