"""User-facing errors. The CLI turns any S9Error into one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import re
import reprlib
from typing import NoReturn

# C0 and C1 controls (ESC starts ANSI and OSC sequences), DEL, and the Unicode marks that
# reorder or break a line on a terminal
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


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
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(value: object) -> str:
    """str(value) for a terminal or a table, with every control character written out as an
    escape (`\\x1b`): a value from someone's experiment must not drive the terminal."""
    return _UNPRINTABLE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", str(value)
    )


class UsageError(S9Error):
    """A command line argparse cannot parse (a missing value, an unknown option)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad command line is one line and exit 2 like every other user
    error, not the usage block (`--help` still prints it); subcommands inherit the class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")
