"""What each s9tune command takes, as frozen dataclasses: the Python API (`s9tune.api`) takes
them, the CLI (`s9tune.cli`) fills them from its flags, and the modules that do the work read
them. Each default lives here once.

Light on purpose (stdlib and `config`): the CLI builds these before anything heavy is imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from s9tune.analysis import DEFAULT_TARGET_LAYER
from s9tune.config import TrainConfig
from s9tune.errors import ConfigError

DEFAULT_MAX_FAILURES = 2  # Tune's retries of a failed trial (a search) or seed (a retrain)
MAX_NUM_ITER = 100_000  # lr-find steps
MAX_SEEDS = 100  # retrain seeds; each is a full retrain


@dataclass(frozen=True)
class TrainOptions:
    """`s9tune train`: one config into the run folder `out`.

    `config`: a TrainConfig, or a YAML file of TrainConfig values, or None for the defaults (the
    seed's recipe); `sets` (KEY=VALUE, parsed as YAML) then override it.
    """

    out: Path | str
    data_dir: Path | str | None = None
    config: TrainConfig | Path | str | None = None
    sets: tuple[str, ...] = ()
    force: bool = False  # replace `out` if it holds a previous train run s9tune wrote
    resume: bool = False  # continue the run in `out` from its last checkpoint


@dataclass(frozen=True)
class LRFindOptions:
    """`s9tune lr-find`: torch-lr-finder's range test from `start_lr` to `end_lr` in `num_iter` steps."""

    out: Path | str
    data_dir: Path | str | None = None
    config: TrainConfig | Path | str | None = None
    sets: tuple[str, ...] = ()
    force: bool = False
    start_lr: float = 1e-5
    end_lr: float = 10.0
    num_iter: int = 100

    def __post_init__(self) -> None:
        if not 0 < self.start_lr < self.end_lr < math.inf:
            raise ConfigError(f"--start-lr {self.start_lr} / --end-lr {self.end_lr}: need 0 < start < end, both finite")
        if not 10 <= self.num_iter <= MAX_NUM_ITER:
            raise ConfigError(f"--num-iter {self.num_iter}: must lie in [10, {MAX_NUM_ITER:,}]")


@dataclass(frozen=True)
class SearchOptions:
    """`s9tune search`: the space file `space`, run (or with `resume`, continued) as the experiment
    STORAGE/NAME. Values left None come from the space file (`num_samples`, resources) or are
    chosen (`name`: SPACE-DATE-TIME; `storage`: ./searches; `address`: $RAY_ADDRESS, else Ray
    in-process)."""

    space: Path | str
    data_dir: Path | str | None = None
    num_samples: int | None = None
    name: str | None = None
    storage: str | None = None
    address: str | None = None
    resume: bool = False
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    dashboard: bool = False  # Ray's dashboard on 127.0.0.1, for the Ray s9tune starts
    max_failures: int = DEFAULT_MAX_FAILURES
    ray_to_console: bool = False  # Ray's and Tune's output on the console instead of STORAGE/NAME/search.log
    progress: bool = True  # s9tune's own progress on the console


@dataclass(frozen=True)
class RetrainOptions:
    """`s9tune retrain`: the pick of `experiment` (STORAGE/NAME, a folder or a URI) retrained on
    train + validation for `epochs`, with `seeds` seeds, into `out` (a folder or a URI), then
    analysed. `sets` override the pick's config (KEY=VALUE)."""

    experiment: str
    out: str
    data_dir: Path | str | None = None
    epochs: int = TrainConfig.epochs  # the seed's schedule
    seeds: int = 1
    sets: tuple[str, ...] = ()
    force: bool = False
    resume: bool = False
    target_layer: str = DEFAULT_TARGET_LAYER
    address: str | None = None
    cpus_per_run: float | None = None
    gpus_per_run: float | None = None
    max_failures: int = DEFAULT_MAX_FAILURES
    ray_to_console: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise ConfigError(f"--seeds {self.seeds}: must lie in [1, {MAX_SEEDS}]")
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be >= 1")


@dataclass(frozen=True)
class AnalyzeOptions:
    """`s9tune analyze`: the analysis of any saved checkpoint (a path or a URI) into `out`.
    `width`: refuse a checkpoint of another width."""

    checkpoint: Path | str
    out: Path | str
    data_dir: Path | str | None = None
    force: bool = False
    target_layer: str = DEFAULT_TARGET_LAYER
    width: int | None = None
    device: str | None = None
