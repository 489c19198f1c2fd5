"""The design table (design_table.py's JSON) as the replay reads it, and its surrogate.

A config a searcher proposes between table points is answered by a surrogate of the table plus
seed noise. The surrogate predicts a config's seed-mean values (validation at every budget, the
longest schedule's validation curve, evaluation at the longest budget) from its place in the
normalised space (log scale for a loguniform key, each key scaled to [0, 1]): either the
nearest table config's means ("nn"), or a thin-plate-spline radial basis function fitted to all
of them, its smoothing chosen by leave-one-out error ("rbf"). Its fidelity is the leave-one-out
rank correlation over the table's configs.

The noise (`NoiseModel`) gives every run its own draw, independent of every other run's, at
the measured level. A measured residual about its config's 3-seed mean is not such a draw: the
3 residuals of a config sum to zero and each has variance 2σ²/3, so answering a config's runs
with its measured seeds in turn makes their mean too good (a 2-run mean of two of them is minus
half the third: variance σ²/6, not σ²/2). So each residual vector (all of a run's values:
budgets and epochs stay correlated as they were measured) is rescaled by sqrt(n / (n - 1)) and
divided by its config's noise level, and a run draws one of these shapes with replacement from
the pool of all configs' and seeds', times its own config's level. The level is config-aware:
noise shrinks as configs get better (Spearman -0.41 between a config's mean and its seed SD on
the table), so a config's level is the mean seed variance of the table configs nearest it in
mean validation accuracy (9 of them: 18 degrees of freedom), rescaled so that the pooled level
over the table is the measured pooled seed σ. `scale` multiplies every draw: the config means
stay as they are while the noise-to-spread ratio goes down towards full-scale CIFAR-10's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

logger = logging.getLogger("design_replay")


def unit_coords(dists: list[dict[str, Any]], params: dict[str, Any]) -> np.ndarray:
    """A point's coordinates in the unit cube: Sobol's scale, on which 'nearest' is measured."""
    out = []
    for d in dists:
        v, lo, hi = float(params[d["key"]]), float(d["low"]), float(d["high"])
        if d["type"] == "loguniform":
            v, lo, hi = math.log(v), math.log(lo), math.log(hi)
        out.append((v - lo) / (hi - lo))
    return np.asarray(out)


@dataclass
class Table:
    path: Path
    raw: dict[str, Any]
    budgets: list[int]
    dists: list[dict[str, Any]]
    params: list[dict[str, Any]]
    coords: np.ndarray  # configs x keys, in the unit cube
    val: np.ndarray  # configs x seeds x budgets
    eval: np.ndarray  # configs x seeds x budgets
    curve: np.ndarray  # configs x seeds x longest budget: validation after each epoch
    epoch_time: np.ndarray  # configs x seeds x budgets: training seconds per epoch
    diverged: np.ndarray  # configs x seeds x budgets
    mult: np.ndarray | None = None  # a bootstrap resample: how often each config was drawn

    def resample(self, seed: int) -> Table:
        """The table's configs drawn with replacement (a bootstrap table): the distinct ones,
        each with how often it was drawn (the noise pool counts it that often; a surrogate fits
        each point once, since a repeated point would leak into its own leave-one-out error)."""
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, self.configs, size=self.configs)
        keep, mult = np.unique(idx, return_counts=True)
        return dataclasses.replace(
            self,
            params=[self.params[i] for i in keep],
            coords=self.coords[keep],
            val=self.val[keep],
            eval=self.eval[keep],
            curve=self.curve[keep],
            epoch_time=self.epoch_time[keep],
            diverged=self.diverged[keep],
            mult=mult.astype(float),
        )

    @property
    def weights(self) -> np.ndarray:
        return np.ones(self.configs) if self.mult is None else self.mult

    @classmethod
    def load(cls, path: Path) -> Table:
        """The table; a build still running or cut short keeps only its complete configs."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        budgets = [int(b) for b in raw["setup"]["budgets"]]
        seeds = len(raw["setup"]["seeds"])

        def grid(key: str, width: int) -> np.ndarray:
            rows = [[r if r is not None else [None] * width for r in cfg] for cfg in raw[key]]
            return np.asarray(rows, dtype=float).reshape(len(raw["configs"]), seeds, width)

        val, ev = grid("val", len(budgets)), grid("eval", len(budgets))
        curve, secs = grid("val_curve", budgets[-1]), grid("train_s", len(budgets)) / np.asarray(budgets, dtype=float)
        keep = ~(np.isnan(val).any((1, 2)) | np.isnan(ev).any((1, 2)) | np.isnan(curve).any((1, 2)))
        if keep.sum() < 2:
            raise SystemExit(f"design_replay: error: {path}: fewer than 2 configs have every seed and budget")
        if not keep.all():
            logger.warning("%s: %d of %d configs complete; the replay uses those", path, keep.sum(), len(keep))
        dists = raw["setup"]["dists"]
        params = [c["params"] for c, k in zip(raw["configs"], keep, strict=True) if k]
        status = np.asarray([[[x or "" for x in r] for r in cfg] for cfg in raw["status"]], dtype=object)
        return cls(
            Path(path),
            raw,
            budgets,
            dists,
            params,
            np.stack([unit_coords(dists, p) for p in params]),
            val[keep],
            ev[keep],
            curve[keep],
            secs[keep] / np.median(secs[keep]),
            status[keep] == "diverged",
        )

    @property
    def longest(self) -> int:
        return self.budgets[-1]

    @property
    def configs(self) -> int:
        return len(self.params)

    @property
    def seeds(self) -> int:
        return self.val.shape[1]

    def quality(self) -> np.ndarray:
        """Each config's expected evaluation accuracy on the longest schedule: what a pick is worth."""
        return self.eval[:, :, -1].mean(axis=1)

    def seed_sigma(self, split: str = "eval") -> float:
        """Pooled within-config standard deviation over seeds, on the longest schedule."""
        a = (self.eval if split == "eval" else self.val)[:, :, -1]
        return float(np.sqrt(a.var(axis=1, ddof=1).mean()))

    def nearest(self, point: dict[str, Any], exclude: int | None = None) -> int:
        d = np.linalg.norm(self.coords - unit_coords(self.dists, point), axis=1)
        if exclude is not None:
            d[exclude] = np.inf
        return int(np.argmin(d))

    def seed_rank_correlation(self, budget_index: int = -1) -> dict[str, Any]:
        """Spearman correlation of the configs' validation accuracies between every pair of seeds."""
        rhos = [
            float(spearmanr(self.val[:, a, budget_index], self.val[:, b, budget_index])[0])
            for a in range(self.seeds)
            for b in range(a + 1, self.seeds)
        ]
        return {"pairs": rhos, "mean": float(np.mean(rhos)), "budget": self.budgets[budget_index]}

    def rung_rank_correlation(self) -> dict[str, float]:
        """Spearman of each cheaper signal (a short complete schedule, an epoch of the longest)
        against the seed-mean evaluation accuracy on the longest schedule, one seed at a time."""
        q, out = self.quality(), {}
        for j, b in enumerate(self.budgets):
            out[f"complete_{b}"] = float(np.mean([spearmanr(self.val[:, s, j], q)[0] for s in range(self.seeds)]))
        for e in range(self.longest):
            out[f"epoch_{e + 1}_of_{self.longest}"] = float(
                np.mean([spearmanr(self.curve[:, s, e], q)[0] for s in range(self.seeds)])
            )
        return out

    def summary(self) -> dict[str, Any]:
        q = self.quality()
        return {
            "path": str(self.path),
            "configs": self.configs,
            "seeds": self.seeds,
            "budgets": self.budgets,
            "best_config": int(np.argmax(q)),
            "best_quality": float(q.max()),
            "median_quality": float(np.median(q)),
            "baseline_quality": float(q[0]),
            "seed_sigma_eval": self.seed_sigma("eval"),
            "seed_sigma_val": self.seed_sigma("val"),
            "seed_rank_correlation": self.seed_rank_correlation(),
            "surrogate": {kind: Surrogate(self, kind).fidelity() for kind in ("nn", "rbf")},
            "rung_rank_correlation": self.rung_rank_correlation(),
        }


SMOOTHING = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class Surrogate:
    """Seed-mean values of any config, plus one measured seed's deviation (see the module doc).

    A value vector holds, in order: validation after each shorter budget, the longest
    schedule's validation after each of its epochs, evaluation after the longest."""

    def __init__(self, table: Table, kind: str = "rbf") -> None:
        self.table, self.kind = table, kind
        short = table.val[:, :, :-1]
        self.y = np.concatenate([short, table.curve, table.eval[:, :, -1:]], axis=2)  # configs x seeds x values
        self.mean = self.y.mean(axis=1)
        self.resid = self.y - self.mean[:, None, :]
        self.noise = NoiseModel(self.y, self.mean[:, self.val_longest], table.weights)
        self.smoothing = self._choose_smoothing() if kind == "rbf" else None
        self.model = self._fit(np.arange(table.configs)) if kind == "rbf" else None
        self.best_quality = self._best_quality()

    def _best_quality(self) -> float:
        """The reference of regret: the best predicted evaluation accuracy in the space (over the
        table's configs and, for a smooth surrogate, a dense Sobol sample between them)."""
        if self.model is None:
            return float(self.mean[:, -1].max())
        from scipy.stats import qmc

        dense = qmc.Sobol(d=self.table.coords.shape[1], scramble=True, seed=1).random_base2(12)
        return float(self.model(np.vstack([self.table.coords, dense]))[:, -1].max())

    @property
    def val_longest(self) -> int:
        return len(self.table.budgets) - 2 + self.table.longest

    def _fit(self, rows: np.ndarray, smoothing: float | None = None) -> Any:
        from scipy.interpolate import RBFInterpolator

        lam = self.smoothing if smoothing is None else smoothing
        return RBFInterpolator(self.table.coords[rows], self.mean[rows], kernel="thin_plate_spline", smoothing=lam)

    def _loo(self, smoothing: float | None = None) -> np.ndarray:
        """Each config's mean values predicted without it."""
        k = self.table.configs
        if self.kind == "nn":
            return self.mean[[self.table.nearest(self.table.params[i], exclude=i) for i in range(k)]]
        out = np.empty_like(self.mean)
        for i in range(k):
            rows = np.delete(np.arange(k), i)
            out[i] = self._fit(rows, smoothing)(self.table.coords[i : i + 1])[0]
        return out

    def _choose_smoothing(self) -> float:
        cols = [self.val_longest, -1]
        errors = {lam: float(((self._loo(lam) - self.mean)[:, cols] ** 2).mean()) for lam in SMOOTHING}
        return min(errors, key=errors.get)

    def mu(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            return self.mean[self.nearest(x)]
        return self.model(x[None, :])[0]

    def nearest(self, x: np.ndarray) -> int:
        return int(np.argmin(np.linalg.norm(self.table.coords - x, axis=1)))

    def fidelity(self) -> dict[str, Any]:
        pred = self._loo()
        return {
            "kind": self.kind,
            "smoothing": self.smoothing,
            "loo_spearman_val": float(spearmanr(self.mean[:, self.val_longest], pred[:, self.val_longest])[0]),
            "loo_spearman_eval": float(spearmanr(self.mean[:, -1], pred[:, -1])[0]),
            "loo_rmse_eval": float(np.sqrt(((self.mean[:, -1] - pred[:, -1]) ** 2).mean())),
        }


NEIGHBOURS = 9  # table configs whose seed variances make one config's noise level


class NoiseModel:
    """Independent seed noise at the measured, config-aware level (see the module doc).

    `y`: configs x seeds x values as measured; `quality`: each config's mean validation
    accuracy (what the level follows); `weights`: how often each config counts (a bootstrap
    table's multiplicities)."""

    def __init__(self, y: np.ndarray, quality: np.ndarray, weights: np.ndarray) -> None:
        configs, seeds, _ = y.shape
        w = weights / weights.sum()
        var = y.var(axis=1, ddof=1)  # configs x values: unbiased per config
        k = min(NEIGHBOURS, configs)
        near = np.argsort(np.abs(quality[:, None] - quality[None, :]), axis=1, kind="stable")[:, :k]
        level = (var[near] * weights[near][:, :, None]).sum(1) / weights[near].sum(1)[:, None]
        pooled = (w[:, None] * var).sum(0)  # the measured pooled variance of each value
        level *= np.divide(pooled, (w[:, None] * level).sum(0), out=np.zeros_like(pooled), where=level.any(0))
        self.sd = np.sqrt(level)  # configs x values: each config's noise level
        resid = (y - y.mean(axis=1, keepdims=True)) * math.sqrt(seeds / (seeds - 1))
        z = np.divide(resid, self.sd[:, None, :], out=np.zeros_like(resid), where=self.sd[:, None, :] > 0)
        self.z = z.reshape(configs * seeds, -1)  # the pool of shapes
        self.p = np.repeat(w / seeds, seeds)  # each shape's chance
        second = (self.p[:, None] * self.z**2).sum(0)
        self.z = np.divide(self.z, np.sqrt(second), out=np.zeros_like(self.z), where=second > 0)
        self.pooled_sd = np.sqrt(pooled)
        self.cum = np.cumsum(self.p)  # draws by inverse CDF: np.random's choice(p=) is slow

    def shapes(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Indices of `size` shapes drawn with replacement, each with its chance `p`."""
        return np.minimum(np.searchsorted(self.cum, rng.random(size) * self.cum[-1], side="right"), len(self.z) - 1)

    def draw_shape(self, rng: np.random.Generator) -> int:
        """The index of one run's shape in the pool (its noise: sd[c] * z[index] at config c)."""
        return int(self.shapes(rng, 1)[0])

    def draw(self, c: int, rng: np.random.Generator) -> np.ndarray:
        """One run's noise at table config `c`'s level (scale 1)."""
        return self.sd[c] * self.z[self.draw_shape(rng)]
