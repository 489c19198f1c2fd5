"""Checks shared by the search-space parsers: each failure is one ConfigError that names the
file and the key (exit 2), raised before Ray starts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig
from s9tune.errors import ConfigError, shown


def err(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def number(path: Path, key: str, v: Any, *, integer: bool = False) -> float:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
        raise err(path, key, f"expected {'an integer' if integer else 'a number'}, got {shown(v)}")
    try:
        float(v)
    except OverflowError:  # an integer of hundreds of digits: no setting is that large
        raise err(path, key, f"{shown(v)} is too large") from None
    return v


def mapping(path: Path, key: str, v: Any, allowed: set[str]) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise err(path, key, f"expected a mapping, got {type(v).__name__}")
    unknown = set(v) - allowed
    if unknown:
        raise err(path, f"{key}.{sorted(unknown)[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return v


def check_field(path: Path, where: str, key: str, value: Any) -> None:
    try:
        TrainConfig().with_overrides({key: value})
    except ConfigError as exc:
        raise err(path, where, str(exc)) from None
