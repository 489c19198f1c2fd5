"""The pick and how sure it is, as plain values: one place for the statistics that the searcher's
re-evaluation rule (reeval.py, `reevaluate: auto`), the results (search/experiment/) and the
design replay (benchmarks/) all use.

Every function takes `values`: {config id: its complete full-length values}, the search's own
run first, then its reruns. Seed noise is the pooled within-config standard deviation over the
configs that ran more than once (a config run n times gives n - 1 degrees of freedom); with no
such config it is unmeasured, and nothing below turns that into a number. Differences and
intervals use Student's t with those degrees of freedom, so a σ measured on one pair of runs
(1 degree of freedom) claims little. "P(a is truly better than b)" is P(T_df < (mean_a -
mean_b) / (σ sqrt(1/n_a + 1/n_b))): the posterior probability under a flat prior on the two
means, assuming one noise level for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Values = dict[str, list[float]]
LEVEL = 0.95  # the pick's interval


def mean(v: list[float]) -> float:
    return sum(v) / len(v)


def by_mean(values: Values, among: set[str]) -> list[str]:
    """The configs of `among` that have values, best mean first; ties go to the config whose
    search run ranked higher on its single value, then to the earlier one (dict order)."""
    cands = [c for c in values if c in among and values[c]]
    return sorted(cands, key=lambda c: (mean(values[c]), values[c][0]), reverse=True)


@dataclass(frozen=True)
class Noise:
    """Seed noise as the search measured it: pooled σ, its degrees of freedom, and from what."""

    sigma: float | None
    df: int
    configs: int  # configs that ran more than once
    runs: int  # their runs

    @property
    def measured(self) -> bool:
        return self.df > 0 and self.sigma is not None

    def describe(self) -> str:
        if not self.measured:
            return "unmeasured: every config ran once, so the seed-to-seed noise is unknown"
        per = "twice" if self.runs == 2 * self.configs else f"{self.runs} runs in all"
        return (
            f"pooled over {self.configs} config{'s' * (self.configs > 1)} that ran more than once "
            f"({per}; {self.df} degree{'s' * (self.df > 1)} of freedom)"
        )


def noise(values: Values) -> Noise:
    """Pooled within-config standard deviation over the configs with 2 or more values."""
    ss, df, configs, runs = 0.0, 0, 0, 0
    for v in values.values():
        if len(v) > 1:
            m = mean(v)
            ss += sum((x - m) ** 2 for x in v)
            df += len(v) - 1
            configs += 1
            runs += len(v)
    return Noise(math.sqrt(ss / df) if df else None, df, configs, runs)


def p_better(a: list[float], b: list[float], nz: Noise) -> float | None:
    """P(a's config is truly better than b's), or None while σ is unmeasured."""
    if not nz.measured or not a or not b:
        return None
    diff = mean(a) - mean(b)
    se = nz.sigma * math.sqrt(1 / len(a) + 1 / len(b))
    if se == 0.0:  # every repeated run gave the same value: no noise to weigh the gap against
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    from scipy.special import stdtr  # lazy: SciPy costs a CLI that never states a probability ~0.5 s

    return float(stdtr(nz.df, diff / se))


def interval(v: list[float], nz: Noise, level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval of a config's true mean, or None while σ is unmeasured."""
    if not nz.measured or not v:
        return None
    from scipy.special import stdtrit  # lazy, as in p_better

    half = float(stdtrit(nz.df, 0.5 + level / 2)) * nz.sigma / math.sqrt(len(v))
    return mean(v) - half, mean(v) + half


def auto_reruns(values: Values, *, confidence: float, left: int) -> list[str]:
    """`reevaluate: auto`'s next round, decided once no search run is pending and no rerun
    runs: the configs to train once more, each with a new seed ([] to stop).

    While σ is unmeasured, the leader (best mean) runs again: that measures σ and checks the
    pick at once. Then the contender the leader is least separated from (the lowest P(leader
    truly better), below `confidence`) and the leader are compared: the one with fewer runs runs
    again (both if they have as many, the leader first). `left`: reruns the compute cap still
    allows."""
    if left <= 0:
        return []
    ranked = by_mean(values, set(values))
    if not ranked:
        return []
    lead = ranked[0]
    nz = noise(values)
    if not nz.measured:
        return [lead]
    close = [(p, i, c) for i, c in enumerate(ranked[1:]) if (p := p_better(values[lead], values[c], nz)) < confidence]
    if not close:
        return []
    rival = min(close)[2]
    n_lead, n_rival = len(values[lead]), len(values[rival])
    if n_rival < n_lead:
        return [rival]
    if n_lead < n_rival:
        return [lead]
    return [lead, rival][:left]


@dataclass(frozen=True)
class Certainty:
    """How sure the pick is: what `results`, leaderboard.json and best_config.yaml state."""

    config: str
    mean: float
    runs: int
    noise: Noise
    ci95: tuple[float, float] | None
    runner_up: str | None
    p_beats_runner_up: float | None
    p_beats_baseline: float | None
    baseline_note: str  # why there is no P(better than the baseline), when there is none

    def to_json(self) -> dict[str, Any]:
        """leaderboard.json's `pick` block."""
        return {
            "config": self.config,
            "mean": self.mean,
            "ci95": list(self.ci95) if self.ci95 else None,
            "runs": self.runs,
            "sigma": self.noise.sigma if self.noise.measured else None,
            "sigma_from": self.noise.describe(),
            "runner_up": self.runner_up,
            "p_beats_runner_up": self.p_beats_runner_up,
            "p_beats_baseline": self.p_beats_baseline,
            **({"baseline_note": self.baseline_note} if self.baseline_note else {}),
        }

    def lines(self) -> list[str]:
        """The certainty in words, one statement a line (values in accuracy percent)."""
        runs = f"{self.runs} run{'s' * (self.runs > 1)}"
        head = f"Pick {self.config}: {_pct(self.mean)} ({'mean of ' if self.runs > 1 else ''}{runs})"
        if not self.noise.measured:
            return [
                f"{head}; how sure: unknown. Every config ran once, so the seed-to-seed noise is "
                "unmeasured and no interval or probability can be given (reevaluate: auto measures it)."
            ]
        lo, hi = self.ci95 or (self.mean, self.mean)
        out = [
            f"{head}, 95% interval {_pct(lo)} to {_pct(hi)}; seed σ {100 * (self.noise.sigma or 0.0):.2f} points, "
            f"{self.noise.describe()}."
        ]
        if self.runner_up is not None and self.p_beats_runner_up is not None:
            out.append(f"P(truly better than the runner-up, {self.runner_up}) {_p(self.p_beats_runner_up)}.")
        if self.p_beats_baseline is not None:
            out.append(f"P(truly better than the baseline) {_p(self.p_beats_baseline)}.")
        elif self.baseline_note:
            out.append(f"Against the baseline: {self.baseline_note}.")
        return out


def certainty(values: Values, pick: str, *, baseline: str | None, baseline_note: str = "") -> Certainty:
    """The certainty of `pick` among every config with a complete full-length value; `baseline`:
    the baseline's config id if it has such a value (else `baseline_note` says why not)."""
    nz = noise(values)
    others = by_mean(values, set(values) - {pick})
    runner_up = others[0] if others else None
    p_base, note = None, ""
    if baseline == pick:
        note = "the pick is the baseline"
    elif baseline is None or baseline not in values:
        note = baseline_note or "the baseline has no complete full-length run"
    else:  # None while σ is unmeasured, which the first line already says
        p_base = p_better(values[pick], values[baseline], nz)
    return Certainty(
        pick,
        mean(values[pick]),
        len(values[pick]),
        nz,
        interval(values[pick], nz),
        runner_up,
        p_better(values[pick], values[runner_up], nz) if runner_up is not None else None,
        p_base,
        note,
    )


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _p(p: float) -> str:
    """A probability as stated: two decimals, never rounded to a certainty it is not."""
    return "> 0.99" if p > 0.99 else "< 0.01" if p < 0.01 else f"= {p:.2f}"
