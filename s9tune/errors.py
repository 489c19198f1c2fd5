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


def shown(value: object, limit: int = 80) -> str:
    """repr() for an error message, bounded in length and in the work it does: a value from a
    user's file can be huge or nested (an expanded YAML alias bomb) and is echoed in one line."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
