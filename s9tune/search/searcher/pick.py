"""The pick and how sure it is, as plain values: one place for the statistics that the searcher's
re-evaluation rule (reeval.py, `reevaluate: auto`), the results (search/experiment/) and the
design replay (benchmarks/) all use.

Every function takes `values`: {config id: its complete full-length values}, the search's own
run first, then its reruns. Seed noise is the pooled within-config standard deviation over the
configs that ran more than once (a config run n times gives n - 1 degrees of freedom); with no
such config it is unmeasured, and nothing below turns that into a number.

Once σ is measured, each config's true mean has a posterior (`Posterior`): its own mean shrunk
toward the average of the search's configs by how noisy it is, the prior's spread estimated
from the configs' means (empirical Bayes, normal-normal), averaged over σ's own uncertainty
(`posterior`). The best single value of twenty is also, on average, the luckiest; a flat prior
would take it at its word, and the design replay found probabilities stated that way too sure
(benchmarks/RESULTS.md, "calibration"). Under the model the posterior stays valid whatever was
selected on. "P(a is truly better than b)" is the posterior probability that a's true mean
exceeds b's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class Posterior:
    """Each config's true mean, normal given σ (`est`, `var`: one row per quantile of σ's
    posterior, one column per config), averaged over the rows with equal weights."""

    noise: Noise
    configs: list[str]
    est_grid: np.ndarray
    var_grid: np.ndarray
    spread: float  # how much the configs' true means differ (SD, at σ's estimate; inf: too few configs)

    @property
    def est(self) -> dict[str, float]:
        return dict(zip(self.configs, self.est_grid.mean(axis=0).tolist(), strict=True))

    def var(self, c: str) -> float:
        """Config c's posterior variance at σ's median."""
        return float(self.var_grid[len(self.var_grid) // 2, self.configs.index(c)])

    def p_better(self, a: str, b: str, margin: float = 0.0) -> float:
        """P(config a is truly better than config b), or with a `margin`: P(a is truly better
        than b less the margin), i.e. that a is not worse than b by more than it."""
        from scipy.special import ndtr  # lazy, as in interval

        ia, ib = self.configs.index(a), self.configs.index(b)
        diff = self.est_grid[:, ia] + margin - self.est_grid[:, ib]
        sd = np.sqrt(self.var_grid[:, ia] + self.var_grid[:, ib])
        # where every repeated run gave the same value there is no noise to weigh the gap against
        ties = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
        p = np.where(sd > 0, ndtr(np.divide(diff, sd, out=np.zeros_like(diff), where=sd > 0)), ties)
        return float(p.mean())


def interval(v: list[float], nz: Noise, level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval of a config's true mean from its own runs, or None while σ is
    unmeasured. It does not allow for the config having been picked as the best of many (the
    posterior estimate does)."""
    if not nz.measured or not v:
        return None
    # lazy: scipy.special costs ~0.2 s CPU at import (median of 5, 2-core VM), which `results`
    # of a search that never states a probability, and `search`'s checks, do not pay
    from scipy.special import stdtrit

    half = float(stdtrit(nz.df, 0.5 + level / 2)) * (nz.sigma or 0.0) / math.sqrt(len(v))
    return mean(v) - half, mean(v) + half


GRID = 64  # quantiles of σ's posterior the probabilities average over


@functools.lru_cache(maxsize=64)
def _chi2_quantiles(df: int) -> np.ndarray:
    from scipy.special import chdtri  # lazy, as in interval

    return np.array([chdtri(df, 1 - (k + 0.5) / GRID) for k in range(GRID)])


def posterior(values: Values) -> Posterior | None:
    """The configs' posteriors (module doc), or None while σ is unmeasured. σ is not taken at
    its estimate: with Jeffreys' prior, σ² given its estimate s² on df degrees of freedom is
    df s² / χ²_df, and every probability averages over GRID equal-probability quantiles of
    that (without shrinking this is exactly Student's t; with it, a larger σ also shrinks more,
    which a plug-in estimate from one pair of runs would miss)."""
    nz = noise(values)
    if not nz.measured:
        return None
    configs = [c for c, v in values.items() if v]
    means = np.array([mean(values[c]) for c in configs])
    runs = np.array([len(values[c]) for c in configs], dtype=float)
    s2 = (nz.sigma or 0.0) ** 2
    grid = nz.df * s2 / _chi2_quantiles(nz.df)[:, None]  # GRID x 1: σ² at each quantile
    est, var = _shrunk(means, runs, grid)
    return Posterior(nz, configs, est, var, math.sqrt(float(_spread(means, runs, np.array([[s2]]))[0, 0])))


def _shrunk(means: np.ndarray, runs: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normal-normal posterior of every config's mean (columns) for each seed variance in
    s2 (rows), the prior's centre and spread estimated from the configs' means (method of
    moments); no shrinking with fewer than 3 configs, or where σ is 0."""
    k = len(means)
    if k < 3 or not s2.any():
        return np.broadcast_to(means, (len(s2), k)).copy(), s2 / runs
    spread = np.maximum(_spread(means, runs, s2), 1e-6 * s2)  # 0 would make every config the same
    var = 1 / (1 / spread + runs / s2)
    return var * (means.mean() / spread + runs * means / s2), var


def _spread(means: np.ndarray, runs: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """The variance of the configs' true means for each seed variance in s2 (method of moments:
    their means' variance less what seed noise adds to it, at least 0); inf with fewer than 3."""
    if len(means) < 3:
        return np.full_like(s2, np.inf)
    between = means.var(ddof=1)
    return np.maximum(0.0, between - (s2 / runs).mean(axis=1, keepdims=True))


def ranked(values: Values, post: Posterior | None = None) -> list[str]:
    """Every config, best first: by posterior mean once σ is measured, else by mean (ties: the
    mean, then the search run's single value, then the earlier config). `post`: the values'
    posterior, if already computed."""
    post = post or posterior(values)
    order = by_mean(values, set(values))
    if post is None:
        return order
    est = post.est
    return sorted(order, key=lambda c: est[c], reverse=True)  # stable: ties keep by_mean's order


def auto_reruns(values: Values, *, confidence: float, left: int, margin: float = 0.0) -> list[str]:
    """`reevaluate: auto`'s next round, decided once no search run is pending and no rerun
    runs: the configs to train once more, each with a new seed ([] to stop).

    While σ is unmeasured, the leader (best mean) runs again: that measures σ and checks the
    pick at once. Then a contender is a config the leader is not separated from: P(the leader
    is truly better than it, less `margin` x the spread of the configs' true means) below
    `confidence`. (The margin lets near-ties go: a gap that small is not worth reruns; while
    seed noise is small against the spread, two configs that close need many reruns to tell
    apart and cost little to confuse.) The leader and the contender it is least surely better
    than are compared: the one with fewer runs runs again (both if they have as many, the
    leader first). `left`: reruns the cap still allows."""
    if left <= 0 or not values:
        return []
    post = posterior(values)
    order = ranked(values, post)
    lead = order[0]
    if post is None:
        return [lead]
    zone = 0.0 if math.isinf(post.spread) else margin * post.spread
    close = [(p, i, c) for i, c in enumerate(order[1:]) if (p := post.p_better(lead, c, zone)) < confidence]
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
    mean: float  # over its complete full-length runs
    runs: int
    noise: Noise
    estimate: float | None  # its posterior mean: the mean allowing for the luck a pick has
    ci95: tuple[float, float] | None  # of its true mean, from its own runs (`interval`)
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
            "estimate": self.estimate,
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
            f"{head}, 95% interval {_pct(lo)} to {_pct(hi)}; allowing for the luck of being picked, about "
            f"{_pct(self.estimate or 0.0)}. Seed σ {100 * (self.noise.sigma or 0.0):.2f} points, "
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
    post = posterior(values)
    others = [c for c in ranked(values, post) if c != pick]
    runner_up = others[0] if others else None
    p_base, note = None, ""
    if baseline == pick:
        note = "the pick is the baseline"
    elif baseline is None or baseline not in values:
        note = baseline_note or "the baseline has no complete full-length run"
    elif post is not None:
        p_base = post.p_better(pick, baseline)
    return Certainty(
        pick,
        mean(values[pick]),
        len(values[pick]),
        noise(values),
        post.est[pick] if post else None,
        interval(values[pick], noise(values)),
        runner_up,
        post.p_better(pick, runner_up) if post and runner_up is not None else None,
        p_base,
        note,
    )


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _p(p: float) -> str:
    """A probability as stated: two decimals, never rounded to a certainty it is not."""
    return "> 0.99" if p > 0.99 else "< 0.01" if p < 0.01 else f"= {p:.2f}"
