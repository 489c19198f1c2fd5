"""Search-space YAML files: parse and validate before Ray starts, then build Tune domains.

A file looks like this (every section but `space` optional)::

    num_samples: 16
    fixed:                  # TrainConfig values shared by every trial
      width: 64
      epochs: 24
    space:                  # searched TrainConfig keys
      max_lr: {type: loguniform, low: 0.05, high: 2.0}
      pct_start: {type: uniform, low: 0.1, high: 0.5}
      aug_strength: {type: uniform, low: 0.0, high: 2.0}
    baseline: {max_lr: 0.4, pct_start: 0.2083, aug_strength: 1.0}   # trial 0
    scheduler: {type: asha, grace_period: 4, reduction_factor: 2}
    searcher: {type: optuna, seed: 0}
    resources: {cpus_per_trial: 2, gpus_per_trial: 0.25}

Errors name the file and the key and raise ConfigError (exit 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s9tune.config import TrainConfig, field_types, read_yaml_mapping
from s9tune.errors import ConfigError

TOP_KEYS = {"num_samples", "fixed", "space", "baseline", "scheduler", "searcher", "resources", "description"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor", "max_t", "brackets"}
SEARCHER_KEYS = {"type", "seed"}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial"}
DIST_KEYS = {
    "uniform": {"low", "high"},
    "loguniform": {"low", "high"},
    "quniform": {"low", "high", "q"},
    "randint": {"low", "high"},
    "lograndint": {"low", "high"},
    "choice": {"values"},
}
METRIC, MODE = "val_accuracy", "max"
DATA_KEYS = ("val_size", "train_subset")  # the driver loads the splits once for all trials


@dataclass(frozen=True)
class Dist:
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple[Any, ...] = ()

    def contains(self, v: Any) -> bool:
        if self.type == "choice":
            return v in self.values
        return isinstance(v, (int, float)) and not isinstance(v, bool) and self.low <= v <= self.high  # type: ignore[operator]

    def tune_domain(self):  # noqa: ANN201
        from ray import tune

        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.type == "quniform":
            return tune.quniform(self.low, self.high, self.q)
        if self.type == "randint":
            return tune.randint(int(self.low), int(self.high) + 1)  # inclusive high, as written in the file
        if self.type == "lograndint":
            return tune.lograndint(int(self.low), int(self.high) + 1)
        return tune.choice(list(self.values))

    def optuna_distribution(self):  # noqa: ANN201
        import optuna.distributions as od

        if self.type == "uniform":
            return od.FloatDistribution(self.low, self.high)
        if self.type == "loguniform":
            return od.FloatDistribution(self.low, self.high, log=True)
        if self.type == "quniform":
            return od.FloatDistribution(self.low, self.high, step=self.q)
        if self.type == "randint":
            return od.IntDistribution(int(self.low), int(self.high))
        if self.type == "lograndint":
            return od.IntDistribution(int(self.low), int(self.high), log=True)
        return od.CategoricalDistribution(list(self.values))


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    num_samples: int
    fixed: TrainConfig
    dists: tuple[Dist, ...]
    baseline: dict[str, Any] | None
    grace_period: int
    reduction_factor: float
    brackets: int
    searcher_seed: int
    cpus_per_trial: float
    gpus_per_trial: float
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def max_t(self) -> int:
        return self.fixed.epochs

    def param_space(self) -> dict[str, Any]:
        return {d.key: d.tune_domain() for d in self.dists}

    def with_resources(self, cpus: float | None, gpus: float | None) -> "SearchSpace":
        from dataclasses import replace

        return replace(
            self,
            cpus_per_trial=self.cpus_per_trial if cpus is None else cpus,
            gpus_per_trial=self.gpus_per_trial if gpus is None else gpus,
        )


def _err(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def _number(path: Path, key: str, v: Any, *, integer: bool = False) -> float:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
        raise _err(path, key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
    return v


def _mapping(path: Path, key: str, v: Any, allowed: set[str]) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, key, f"expected a mapping, got {type(v).__name__}")
    unknown = set(v) - allowed
    if unknown:
        raise _err(path, f"{key}.{sorted(unknown)[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return v


def parse_dist(path: Path, key: str, spec: Any, field_type: Any) -> Dist:
    where = f"space.{key}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise _err(path, where, "expected {type: uniform|loguniform|quniform|randint|lograndint|choice, ...}")
    kind = spec["type"]
    if kind not in DIST_KEYS:
        raise _err(path, f"{where}.type", f"unknown distribution {kind!r} (known: {', '.join(DIST_KEYS)})")
    given = set(spec) - {"type"}
    if given != DIST_KEYS[kind]:
        missing, extra = DIST_KEYS[kind] - given, given - DIST_KEYS[kind]
        what = f"missing {sorted(missing)}" if missing else f"unknown {sorted(extra)}"
        raise _err(path, where, f"{kind} takes {sorted(DIST_KEYS[kind])}: {what}")
    if kind == "choice":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _err(path, f"{where}.values", "expected a non-empty list")
        for v in values:  # every value must be valid for the TrainConfig field
            _check_field(path, where, key, v)
        return Dist(key, kind, values=tuple(values))
    integer = kind in ("randint", "lograndint")
    low = _number(path, f"{where}.low", spec["low"], integer=integer)
    high = _number(path, f"{where}.high", spec["high"], integer=integer)
    if low >= high:
        raise _err(path, where, f"low ({low}) must be < high ({high})")
    if kind in ("loguniform", "lograndint") and low <= 0:
        raise _err(path, f"{where}.low", f"{kind} needs low > 0, got {low}")
    q = None
    if kind == "quniform":
        q = _number(path, f"{where}.q", spec["q"])
        if q <= 0:
            raise _err(path, f"{where}.q", "must be > 0")
    if integer and "int" not in str(field_type):
        raise _err(path, where, f"{kind} gives integers but {key} is {field_type}")
    _check_field(path, where, key, low)
    _check_field(path, where, key, high)
    return Dist(key, kind, float(low), float(high), q)


def _check_field(path: Path, where: str, key: str, value: Any) -> None:
    try:
        TrainConfig().with_overrides({key: value})
    except ConfigError as exc:
        raise _err(path, where, str(exc)) from None


def load_space(path: Path) -> SearchSpace:
    path = Path(path).expanduser().resolve()
    raw = read_yaml_mapping(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise _err(path, sorted(unknown)[0], f"unknown key (allowed: {', '.join(sorted(TOP_KEYS))})")
    types = field_types()

    fixed_raw = _mapping(path, "fixed", raw.get("fixed"), set(types))
    try:
        fixed = TrainConfig().with_overrides(fixed_raw)
    except ConfigError as exc:
        raise _err(path, "fixed", str(exc)) from None

    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise _err(path, "space", "expected a non-empty mapping of TrainConfig key -> distribution")
    dists = []
    for key, spec in space_raw.items():
        if key not in types:
            raise _err(path, f"space.{key}", "not a TrainConfig key")
        if key == "epochs":
            raise _err(path, "space.epochs", "cannot be searched under ASHA: the LR schedule is stretched over epochs")
        if key in DATA_KEYS:
            raise _err(path, f"space.{key}", "defines the validation split, which every trial must share; put it under fixed")
        if key in fixed_raw:
            raise _err(path, f"space.{key}", "is also under fixed; keep it in one place")
        dists.append(parse_dist(path, key, spec, types[key]))

    num_samples = int(_number(path, "num_samples", raw.get("num_samples", 16), integer=True))
    if num_samples < 1:
        raise _err(path, "num_samples", "must be >= 1")

    sched = _mapping(path, "scheduler", raw.get("scheduler"), SCHEDULER_KEYS)
    if sched.get("type", "asha") != "asha":
        raise _err(path, "scheduler.type", f"only 'asha' is supported, got {sched.get('type')!r}")
    grace = int(_number(path, "scheduler.grace_period", sched.get("grace_period", 1), integer=True))
    rf = _number(path, "scheduler.reduction_factor", sched.get("reduction_factor", 2))
    brackets = int(_number(path, "scheduler.brackets", sched.get("brackets", 1), integer=True))
    if "max_t" in sched and sched["max_t"] != fixed.epochs:
        raise _err(path, "scheduler.max_t", f"must equal fixed.epochs ({fixed.epochs}); it is derived from it")
    if not 1 <= grace <= fixed.epochs:
        raise _err(path, "scheduler.grace_period", f"must lie in [1, epochs={fixed.epochs}]")
    if rf <= 1:
        raise _err(path, "scheduler.reduction_factor", "must be > 1")
    if brackets < 1:
        raise _err(path, "scheduler.brackets", "must be >= 1")

    searcher = _mapping(path, "searcher", raw.get("searcher"), SEARCHER_KEYS)
    if searcher.get("type", "optuna") != "optuna":
        raise _err(path, "searcher.type", f"only 'optuna' is supported, got {searcher.get('type')!r}")
    seed = int(_number(path, "searcher.seed", searcher.get("seed", 0), integer=True))

    res = _mapping(path, "resources", raw.get("resources"), RESOURCE_KEYS)
    cpus = _number(path, "resources.cpus_per_trial", res.get("cpus_per_trial", 1))
    gpus = _number(path, "resources.gpus_per_trial", res.get("gpus_per_trial", 0))
    check_resources(cpus, gpus, where=f"{path}: resources")

    baseline = _parse_baseline(path, raw.get("baseline", "default"), dists, fixed)
    return SearchSpace(path, num_samples, fixed, tuple(dists), baseline, grace, float(rf), brackets, seed, cpus, gpus, raw)


def check_resources(cpus: float, gpus: float, where: str = "resources") -> None:
    if cpus <= 0:
        raise ConfigError(f"{where}: cpus_per_trial must be > 0, got {cpus}")
    if gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise ConfigError(f"{where}: gpus_per_trial must be a fraction in [0, 1] or a whole number, got {gpus}")


def _parse_baseline(path: Path, raw: Any, dists: list[Dist], fixed: TrainConfig) -> dict[str, Any] | None:
    """Trial 0 is the known-good recipe: by default TrainConfig's defaults (Page's baseline)."""
    if raw is None or raw is False:
        return None
    if raw == "default":
        defaults = TrainConfig()
        point = {d.key: getattr(defaults, d.key) for d in dists}
        # a baseline outside the searched range would be rejected by Optuna; clip into it
        return {d.key: _clip(d, v) for d, v in zip(dists, point.values())}
    base = _mapping(path, "baseline", raw, {d.key for d in dists})
    missing = {d.key for d in dists} - set(base)
    if missing:
        raise _err(path, "baseline", f"needs a value for every searched key; missing {sorted(missing)}")
    for d in dists:
        if not d.contains(base[d.key]):
            raise _err(path, f"baseline.{d.key}", f"{base[d.key]!r} lies outside the searched range")
        _check_field(path, f"baseline.{d.key}", d.key, base[d.key])
    return dict(base)


def _clip(d: Dist, v: Any) -> Any:
    if d.contains(v):
        return v
    if d.type == "choice":
        return d.values[0]
    return min(max(v, d.low), d.high)
