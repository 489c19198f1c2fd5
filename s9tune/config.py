"""TrainConfig: the one record that flows from YAML / CLI / a Tune trial into `fit()`.

Defaults are the seed's recipe in David Page's form (batch 512, 24 epochs, SGD with
Nesterov momentum 0.9, weight decay 5e-4, OneCycle with a linear ramp to 0.4 at epoch 5,
cross-entropy, pad-4 crop, flip, 8x8 cutout). Only stdlib and PyYAML here: no torch.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from s9tune import safeyaml
from s9tune.errors import ConfigError, shown

DEVICES = ("auto", "cpu", "cuda")
DATA_PATHS = ("auto", "tensor", "albumentations")
ANNEAL = ("linear", "cos")
PAD_MODES = ("reflect", "constant")
AUG_STRENGTH_MAX = 2.0
# Upper bounds, checked before anything is allocated: far beyond any CIFAR-10 run (width 512 is
# 8x the seed's net, 420M parameters; 1,000 epochs is 40x its schedule), yet small enough that
# a typo such as width 10**6 (72 TB of weights) is one line, not an allocation or a week's run.
LIMITS = {
    "width": 512,
    "epochs": 1000,
    "batch_size": 65536,
    "eval_batch_size": 65536,
    "num_workers": 256,
    "train_subset": 10**9,
    "seed": 2**31 - 1,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Frozen: derive new ones with `with_overrides`."""

    # model
    width: int = 64
    logit_scale: float = 0.125
    # schedule and optimiser
    epochs: int = 24
    batch_size: int = 512
    max_lr: float = 0.4
    pct_start: float = 5 / 24
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: str = "linear"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    # data
    aug_strength: float = 1.0
    pad_mode: str = "reflect"
    val_size: float = 0.1
    train_subset: int | None = None
    seed: int = 0
    # execution
    device: str = "auto"
    data_path: str = "auto"
    num_workers: int = 0
    compile: bool = False
    eval_batch_size: int = 1024
    gpu_memory_fraction: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ---------------------------------------------------------------
    def validate(self) -> None:
        """Range checks; types are checked by `from_dict`."""

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{key}={shown(getattr(self, key))}: {what}")

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float):
                need(math.isfinite(value), f.name, "must be a finite number")
            if f.name in LIMITS and value is not None:
                need(value <= LIMITS[f.name], f.name, f"must be <= {LIMITS[f.name]:,}")

        need(self.width >= 1, "width", "must be >= 1")
        need(self.logit_scale > 0, "logit_scale", "must be > 0")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.max_lr > 0, "max_lr", "must be > 0")
        need(0 < self.pct_start < 1, "pct_start", "must lie in (0, 1)")
        need(self.div_factor >= 1, "div_factor", "must be >= 1")
        need(self.final_div_factor >= 1, "final_div_factor", "must be >= 1")
        need(self.anneal_strategy in ANNEAL, "anneal_strategy", f"must be one of {ANNEAL}")
        need(0 <= self.momentum < 1, "momentum", "must lie in [0, 1)")
        need(not (self.nesterov and self.momentum == 0), "nesterov", "needs momentum > 0")
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must lie in [0, 1)")
        need(
            0 <= self.aug_strength <= AUG_STRENGTH_MAX,
            "aug_strength",
            f"must lie in [0, {AUG_STRENGTH_MAX}] (1.0 = the seed's pad-4 crop, flip, 8x8 cutout)",
        )
        need(self.pad_mode in PAD_MODES, "pad_mode", f"must be one of {PAD_MODES}")
        need(0 <= self.val_size < 1, "val_size", "must lie in [0, 1) (a fraction of the training set)")
        need(self.train_subset is None or self.train_subset >= 1, "train_subset", "must be >= 1 or null")
        need(self.seed >= 0, "seed", "must be >= 0")
        need(self.device in DEVICES, "device", f"must be one of {DEVICES}")
        need(self.data_path in DATA_PATHS, "data_path", f"must be one of {DATA_PATHS}")
        need(self.num_workers >= 0, "num_workers", "must be >= 0")
        need(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        need(
            self.gpu_memory_fraction is None or 0 < self.gpu_memory_fraction <= 1,
            "gpu_memory_fraction",
            "must lie in (0, 1] or be null",
        )

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """Strict: unknown keys and wrong types raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping of key: value, got {type(data).__name__}")
        known = field_types()
        values = dataclasses.asdict(base) if base is not None else {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"unknown config key {shown(key)} (known: {', '.join(sorted(known))})")
            values[key] = coerce(key, value, known[key])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainConfig:
        return cls.from_dict(read_yaml_mapping(path))

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        return TrainConfig.from_dict(overrides, base=self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return True, args[0]
    return False, tp


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the field type; ints are accepted where floats are expected."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {inner.__name__})")
    # numpy scalars arrive from searchers; accept them as plain Python numbers
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise ConfigError(f"{key}={shown(value)}: too large for a number") from None
    elif inner is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}={shown(value)}: expected {inner.__name__}, got {type(value).__name__}")


def check_seeds(first: int, count: int, where: str) -> None:
    """Runs seeded `first`, `first + 1`, ..., `first + count - 1` (retrain's seeds, a search's
    reruns): every one must be a valid seed, checked before the first starts."""
    last = first + count - 1
    if last > LIMITS["seed"]:
        raise ConfigError(
            f"{where}: the seeds run from {first:,} to {last:,}, past the largest seed {LIMITS['seed']:,}; "
            "lower the seed"
        )


def parse_set_args(items: Sequence[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are parsed as YAML scalars (so 0.1 is a float, null is None)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {shown(item)}: expected key=value")
        try:
            out[key.strip()] = safeyaml.load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
        except safeyaml.YAMLLimitError as exc:
            raise ConfigError(f"--set {shown(key.strip())}: refused: {exc}") from None
    return out


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(safeyaml.YAML_MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = safeyaml.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except safeyaml.YAMLDuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except safeyaml.YAMLLimitError as exc:
        raise ConfigError(f"{path}: refused: {exc} (a config or search space is a few lines)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


def load_config(source: TrainConfig | Path | str | None, sets: Sequence[str] | None) -> TrainConfig:
    """A TrainConfig, a YAML file of TrainConfig values, or the defaults (the seed's recipe);
    then the --set overrides (KEY=VALUE)."""
    if isinstance(source, TrainConfig):
        return source.with_overrides(parse_set_args(sets))
    cfg = TrainConfig()
    path = None if source is None else Path(source)
    if path is not None:
        try:
            cfg = cfg.with_overrides(read_yaml_mapping(path))
        except ConfigError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {exc}") from None
    return cfg.with_overrides(parse_set_args(sets))


__all__ = ["TrainConfig", "load_config", "parse_set_args", "read_yaml_mapping"]
