"""The design table (design_table.py's JSON) as the replay reads it, and its surrogate.

A config a searcher proposes between table points is answered by its nearest table config in
the normalised space (log scale for a loguniform key, each key scaled to [0, 1]); the answer is
one of that config's measured seeds, so the replay's noise is the measured seed noise. The
surrogate's fidelity is the leave-one-out rank correlation of that rule over the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr


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

    @classmethod
    def load(cls, path: Path) -> Table:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        dists = raw["setup"]["dists"]
        params = [c["params"] for c in raw["configs"]]
        budgets = [int(b) for b in raw["setup"]["budgets"]]
        val, ev = np.asarray(raw["val"], dtype=float), np.asarray(raw["eval"], dtype=float)
        if np.isnan(val).any() or np.isnan(ev).any():
            raise SystemExit(f"design_replay: error: {path}: the table is incomplete (some runs have no value)")
        secs = np.asarray(raw["train_s"], dtype=float) / np.asarray(budgets, dtype=float)
        return cls(
            Path(path),
            raw,
            budgets,
            dists,
            params,
            np.stack([unit_coords(dists, p) for p in params]),
            val,
            ev,
            np.asarray(raw["val_curve"], dtype=float),
            secs / np.median(secs),
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

    def surrogate_fidelity(self) -> dict[str, float]:
        """Leave-one-out: each config predicted by its nearest other config; Spearman of the
        prediction against the truth, for the seed-mean validation and evaluation accuracy on the
        longest schedule, and the same for one seed against another seed of the same config
        (the ceiling any surrogate fed one seed can reach)."""
        nn = [self.nearest(self.params[i], exclude=i) for i in range(self.configs)]
        mval, mev = self.val[:, :, -1].mean(1), self.quality()
        return {
            "loo_nn_spearman_val": float(spearmanr(mval, mval[nn])[0]),
            "loo_nn_spearman_eval": float(spearmanr(mev, mev[nn])[0]),
            "one_seed_vs_another_val": self.seed_rank_correlation()["mean"],
        }

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
            "surrogate": self.surrogate_fidelity(),
            "rung_rank_correlation": self.rung_rank_correlation(),
        }
