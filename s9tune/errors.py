"""User-facing errors. The CLI turns any S9Error into one line on stderr and exit code 2."""

from __future__ import annotations


class S9Error(Exception):
    """An error the user can cause and fix (bad input, missing file, ...)."""

    exit_code = 2


class ConfigError(S9Error):
    """Bad TrainConfig value, YAML file or search space."""


class DataError(S9Error):
    """Missing, truncated or corrupt CIFAR-10 files, or a failed download."""


class CheckpointError(S9Error):
    """A checkpoint that cannot be read or does not fit the model."""


class OutputExistsError(S9Error):
    """An output directory already holds a previous run."""
