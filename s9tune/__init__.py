"""s9tune: hyperparameter search for the S9 ResNet on CIFAR-10 with Ray Tune and Optuna.

The Python API (s9tune/api.py) in one namespace: `run_search`, `load`, `results`, `retrain`,
`analyze`, `train`, `lr_find`, `summary`; their options (`SearchOptions`, `RetrainOptions`,
`AnalyzeOptions`, `TrainOptions`, `LRFindOptions`); `TrainConfig`; and the errors a user can
cause, each an `S9Error` (the CLI prints it as one line and exits 2). Importing it is light:
torch, Ray and pandas load only when a function needs them.
"""

__version__ = "0.1.0"

from s9tune.api import (
    Experiment,
    analyze,
    load,
    lr_find,
    results,
    retrain,
    run_search,
    summary,
    train,
)
from s9tune.config import TrainConfig
from s9tune.errors import CheckpointError, ConfigError, DataError, OutputExistsError, S9Error
from s9tune.options import (
    AnalyzeOptions,
    LRFindOptions,
    RetrainOptions,
    SearchOptions,
    TrainOptions,
)

__all__ = [
    "AnalyzeOptions",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Experiment",
    "LRFindOptions",
    "OutputExistsError",
    "RetrainOptions",
    "S9Error",
    "SearchOptions",
    "TrainConfig",
    "TrainOptions",
    "__version__",
    "analyze",
    "load",
    "lr_find",
    "results",
    "retrain",
    "run_search",
    "summary",
    "train",
]
