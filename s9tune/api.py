"""s9tune's Python API: every command of the CLI as a function that takes an options object
(s9tune/options.py) and returns values. The CLI is a thin shell over these.

    import s9tune

    exp = s9tune.run_search(s9tune.SearchOptions(space="search_spaces/smoke.yaml", data_dir=DATA))
    exp.trials          # pandas DataFrame: one row per Tune trial, best first
    exp.pick            # the config a retrain reproduces, with its value and how many runs it rests on
    exp.best_config     # its TrainConfig
    exp = s9tune.load("searches/smoke-20261207-101500")   # any experiment: a folder or a URI
    run = s9tune.retrain(s9tune.RetrainOptions(experiment=exp.path, out="runs/best", data_dir=DATA))

A user's error raises an `S9Error` subclass (ConfigError, DataError, CheckpointError,
OutputExistsError, StorageError, ClusterError) with a one-line message; the CLI prints it and
exits 2.

Why the imports of the working modules sit inside the functions here: they pull in torch
(2.5 s), Ray Tune (1.1 s) or pandas (0.5 s) (measured with `python -c "import torch"` etc. on the
2-core VM, 2026-12-07), or Optuna (the experiment's modules; 0.17 s CPU, median of 5), and every
CLI invocation imports this module: `s9tune --help`, and an error in a config or a space file,
must answer before any of them is loaded. This module holds that laziness for the commands;
the few other lazy imports each say their own measured reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s9tune.config import LIMITS, TrainConfig, load_config
from s9tune.errors import ConfigError
from s9tune.options import AnalyzeOptions, LRFindOptions, RetrainOptions, SearchOptions, TrainOptions

if TYPE_CHECKING:
    import pandas as pd

    from s9tune.lrfind import LRFindResult
    from s9tune.retraining import Retrain
    from s9tune.search.experiment.trials import BestTrial
    from s9tune.search.experiment.trials import Experiment as Loaded

logger = logging.getLogger(__name__)


@dataclass
class Experiment:
    """A search experiment at `path` (STORAGE/NAME), as read from its files (JSON and text only:
    nothing stored in it runs). `log`: where Ray's output of the search that returned it went."""

    loaded: Loaded = field(repr=False)
    log: str | None = None

    @property
    def path(self) -> str:
        return self.loaded.path

    @property
    def trials(self) -> pd.DataFrame:
        """One row per Tune trial (what trials.csv holds), best first."""
        import pandas as pd

        from s9tune.search.experiment.export import trial_rows

        return pd.DataFrame(trial_rows(self.loaded))

    @property
    def leaderboard(self) -> pd.DataFrame:
        """One row per config under halving (its value at every budget), else per trial, best first."""
        import pandas as pd

        from s9tune.search.experiment.export import leaderboard_rows

        return pd.DataFrame(leaderboard_rows(self.loaded))

    @property
    def pick(self) -> BestTrial:
        """The config a retrain reproduces; raises S9Error if no run finished its schedule."""
        return self.loaded.best()

    @property
    def best_config(self) -> TrainConfig:
        return self.pick.config

    @property
    def interrupted(self) -> bool:
        """A trial is unfinished, or runs the plan asked for never started: `resume` continues it."""
        return self.loaded.interrupted()

    @property
    def importance(self) -> dict[str, float]:
        """Optuna's fANOVA importance of each searched key ({} with too few complete values)."""
        from s9tune.search.experiment.export import importance

        return importance(self.loaded)[0]

    @property
    def best_config_file(self) -> str:
        """Where `results` writes the pick's config (best_config.yaml) in the experiment."""
        from s9tune.search.experiment.export import BEST_CONFIG

        return f"{self.path}/{BEST_CONFIG}"

    def table(self) -> str:
        """The leaderboard, importance and compute, as `s9tune results` prints them."""
        from s9tune.search.experiment.export import format_results

        return format_results(self.loaded)


def run_search(options: SearchOptions) -> Experiment:
    """Run (or with `options.resume`, continue) a search; the experiment as it stands at the end
    (`.interrupted` says whether it got through its plan). The space file is checked before Ray
    starts, and the data before anything is written."""
    from s9tune.search.space.space import check_resources, load_space

    space = load_space(Path(options.space)).with_num_samples(options.num_samples)
    space = space.with_resources(options.cpus_per_trial, options.gpus_per_trial)
    check_resources(space.cpus_per_trial, space.gpus_per_trial, where="--cpus-per-trial/--gpus-per-trial")

    from s9tune.search.execution.runner import run_search as run

    outcome = run(space, options)
    return Experiment(outcome.result, log=outcome.log)


def load(experiment: str | Path) -> Experiment:
    """The experiment at STORAGE/NAME (a folder or a URI), read without running anything in it."""
    from s9tune.search.experiment.record import load_experiment

    return Experiment(load_experiment(str(experiment)))


def results(experiment: str | Path) -> Experiment:
    """As `load`, and writes trials.csv, leaderboard.json and best_config.yaml into the experiment."""
    from s9tune.search.experiment.export import export_experiment

    return Experiment(export_experiment(str(experiment)))


def retrain(options: RetrainOptions) -> Retrain:
    """Retrain the pick of `options.experiment` into `options.out` and analyse it."""
    from s9tune.retraining import run_retrain

    return run_retrain(options)


def analyze(options: AnalyzeOptions) -> dict[str, Any]:
    """The analysis of a saved checkpoint into `options.out`; what analysis.json holds."""
    from s9tune.analysis.from_checkpoint import analyze_checkpoint

    return analyze_checkpoint(options)


def train(options: TrainOptions) -> dict[str, Any]:
    """Train one config into `options.out`; what its metrics.json holds."""
    cfg = load_config(options.config, options.sets)
    from s9tune.data import load_splits
    from s9tune.outdir import prepare_out_dir
    from s9tune.runs import train_to_dir, write_metrics

    # data errors surface before anything is written
    splits = load_splits(options.data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    out = prepare_out_dir(
        options.out, kind="train", force=options.force, resume=options.resume, protect=(options.data_dir,)
    )
    metrics = train_to_dir(cfg, splits, out, resume=options.resume).metrics
    write_metrics(out, metrics)
    return {**metrics, "run_dir": str(out)}


def lr_find(options: LRFindOptions) -> LRFindResult:
    """torch-lr-finder's range test; writes lr_find.png and lr_find.json into `options.out`."""
    cfg = load_config(options.config, options.sets)
    from s9tune.data import load_splits
    from s9tune.outdir import prepare_out_dir

    splits = load_splits(options.data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    out = prepare_out_dir(options.out, kind="lr-find", force=options.force, protect=(options.data_dir,))
    from s9tune.lrfind import run_lr_find  # torch: after the data and --out are checked

    return run_lr_find(cfg, splits, out, start_lr=options.start_lr, end_lr=options.end_lr, num_iter=options.num_iter)


def summary(width: int = TrainConfig.width) -> str:
    """The model's layer table (torchinfo) and parameter count at `width`."""
    if not 1 <= width <= LIMITS["width"]:
        raise ConfigError(f"--width {width}: must lie in [1, {LIMITS['width']}]")
    from s9tune.model import summary_table

    return summary_table(width)
