"""Search-space distributions: parsed from the YAML, turned into Optuna distributions (what the
searcher asks TPE with, and importance) and plain records (for the experiment on storage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.errors import shown
from s9tune.search.space.checks import check_field, err, number

DIST_KEYS = {
    "uniform": {"low", "high"},
    "loguniform": {"low", "high"},
    "quniform": {"low", "high", "q"},
    "randint": {"low", "high"},
    "lograndint": {"low", "high"},
    "choice": {"values"},
}


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

    def describe(self) -> str:
        """The range in a few words, for a message."""
        if self.type == "choice":
            return f"one of {shown(list(self.values), 60)}"
        return f"{self.type} from {self.low:g} to {self.high:g}"

    def to_record(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "low": self.low,
            "high": self.high,
            "q": self.q,
            "values": list(self.values),
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Dist:
        return cls(d["key"], d["type"], d.get("low"), d.get("high"), d.get("q"), tuple(d.get("values") or ()))

    def optuna_distribution(self):
        # lazy: Optuna costs ~0.17 s CPU at import (median of 5, 2-core VM), and a space file's
        # errors (`s9tune search`, load_space) answer without it
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


def parse_dist(path: Path, key: str, spec: Any, field_type: Any) -> Dist:
    where = f"space.{key}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise err(path, where, "expected {type: uniform|loguniform|quniform|randint|lograndint|choice, ...}")
    kind = spec["type"]
    if kind not in DIST_KEYS:
        raise err(path, f"{where}.type", f"unknown distribution {shown(kind)} (known: {', '.join(DIST_KEYS)})")
    given = set(spec) - {"type"}
    if given != DIST_KEYS[kind]:
        missing, extra = DIST_KEYS[kind] - given, given - DIST_KEYS[kind]
        what = f"missing {sorted(missing)}" if missing else f"unknown {sorted(extra)}"
        raise err(path, where, f"{kind} takes {sorted(DIST_KEYS[kind])}: {what}")
    if kind == "choice":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise err(path, f"{where}.values", "expected a non-empty list")
        for v in values:  # every value must be valid for the TrainConfig field
            check_field(path, where, key, v)
        return Dist(key, kind, values=tuple(values))
    integer = kind in ("randint", "lograndint")
    low = number(path, f"{where}.low", spec["low"], integer=integer)
    high = number(path, f"{where}.high", spec["high"], integer=integer)
    if low >= high:
        raise err(path, where, f"low ({low}) must be < high ({high})")
    if kind in ("loguniform", "lograndint") and low <= 0:
        raise err(path, f"{where}.low", f"{kind} needs low > 0, got {low}")
    q = None
    if kind == "quniform":
        q = number(path, f"{where}.q", spec["q"])
        if q <= 0:
            raise err(path, f"{where}.q", "must be > 0")
    if integer and "int" not in str(field_type):
        raise err(path, where, f"{kind} gives integers but {key} is {field_type}")
    check_field(path, where, key, low)
    check_field(path, where, key, high)
    return Dist(key, kind, float(low), float(high), q)
