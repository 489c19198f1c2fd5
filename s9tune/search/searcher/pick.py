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


@dataclass(frozen=True)
class Shrunk:
    """Each config's true mean given one value of σ: normal, `est` (its mean shrunk toward the
    configs' average) and `var`."""

    est: dict[str, float]
    var: dict[str, float]


@dataclass(frozen=True)
class Posterior:
    """Each config's true mean, averaged over what σ may be given its measurement: one `Shrunk`
    per quantile of σ's posterior (equal weights)."""

    noise: Noise
    grid: list[Shrunk]
    spread: float  # how much the configs' true means differ (SD, at σ's estimate; inf: too few configs)

    @property
    def est(self) -> dict[str, float]:
        return {c: sum(g.est[c] for g in self.grid) / len(self.grid) for c in self.grid[0].est}

    def p_better(self, a: str, b: str, margin: float = 0.0) -> float:
        """P(config a is truly better than config b), or with a `margin`: P(a is truly better
        than b less the margin), i.e. that a is not worse than b by more than it."""
        total = 0.0
        for g in self.grid:
            diff, sd = g.est[a] + margin - g.est[b], math.sqrt(g.var[a] + g.var[b])
            if sd == 0.0:  # every repeated run gave the same value: no noise to weigh the gap against
                total += 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
            else:
                total += 0.5 * (1.0 + math.erf(diff / (sd * math.sqrt(2.0))))
        return total / len(self.grid)


def interval(v: list[float], nz: Noise, level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t interval of a config's true mean from its own runs, or None while σ is
    unmeasured. It does not allow for the config having been picked as the best of many (the
    posterior estimate does)."""
    if not nz.measured or not v:
        return None
    from scipy.special import stdtrit  # lazy: SciPy costs a CLI that never states a probability ~0.5 s

    half = float(stdtrit(nz.df, 0.5 + level / 2)) * (nz.sigma or 0.0) / math.sqrt(len(v))
    return mean(v) - half, mean(v) + half


GRID = 64  # quantiles of σ's posterior the probabilities average over


def posterior(values: Values) -> Posterior | None:
    """The configs' posteriors (module doc), or None while σ is unmeasured. σ is not taken at
    its estimate: with Jeffreys' prior, σ² given its estimate s² on df degrees of freedom is
    df s² / χ²_df, and every probability averages over GRID equal-probability quantiles of
    that (without shrinking this is exactly Student's t; with it, a larger σ also shrinks more,
    which a plug-in estimate from one pair of runs would miss)."""
    nz = noise(values)
    if not nz.measured:
        return None
    from scipy.special import chdtri  # lazy, as in interval

    means = {c: mean(v) for c, v in values.items() if v}
    s2 = (nz.sigma or 0.0) ** 2
    sigmas2 = [nz.df * s2 / float(chdtri(nz.df, 1 - (k + 0.5) / GRID)) for k in range(GRID)]
    return Posterior(nz, [_shrunk(values, means, v2) for v2 in sigmas2], math.sqrt(_spread(values, means, s2)))


def _shrunk(values: Values, means: dict[str, float], s2: float) -> Shrunk:
    """The normal-normal posterior of every config's mean for seed variance s2, the prior's
    centre and spread estimated from the configs' means (method of moments)."""
    if s2 == 0.0:
        return Shrunk(dict(means), dict.fromkeys(means, 0.0))
    spread = _spread(values, means, s2)
    if math.isinf(spread):  # too few configs to tell their spread: no shrinking
        return Shrunk(dict(means), {c: s2 / len(values[c]) for c in means})
    spread = max(spread, 1e-6 * s2)  # 0 would make every config the same
    centre = sum(means.values()) / len(means)
    var = {c: 1 / (1 / spread + len(values[c]) / s2) for c in means}
    return Shrunk({c: var[c] * (centre / spread + len(values[c]) * means[c] / s2) for c in means}, var)


def _spread(values: Values, means: dict[str, float], s2: float) -> float:
    """The variance of the configs' true means (method of moments: their means' variance less
    what seed noise adds to it, at least 0); inf with fewer than 3 configs."""
    if len(means) < 3:
        return math.inf
    centre = sum(means.values()) / len(means)
    between = sum((m - centre) ** 2 for m in means.values()) / (len(means) - 1)
    return max(0.0, between - sum(s2 / len(values[c]) for c in means) / len(means))


def ranked(values: Values) -> list[str]:
    """Every config, best first: by posterior mean once σ is measured, else by mean (ties: the
    mean, then the search run's single value, then the earlier config)."""
    post = posterior(values)
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
    order = ranked(values)
    if left <= 0 or not order:
        return []
    lead = order[0]
    post = posterior(values)
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
    others = [c for c in ranked(values) if c != pick]
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
