"""Statistics and the report of design_replay.py: means with 95% confidence intervals, paired
differences against the shipped default, the markdown table and the regret-vs-compute plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats


def mean_ci(x: np.ndarray | list[float]) -> tuple[float, float, float]:
    """(mean, low, high): Student-t 95% interval of the mean."""
    a = np.asarray(x, dtype=float)
    m = float(a.mean())
    if len(a) < 2 or float(a.std(ddof=1)) == 0.0:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return m, m - half, m + half


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """(share, low, high): Wilson 95% interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    z, p = 1.959964, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def summarize(rows: list[dict[str, Any]], *, sigma: float, longest: int) -> dict[str, Any]:
    regret = [r["regret"] for r in rows]
    within = sum(r["regret"] <= sigma for r in rows)
    epochs = [r["epochs"] for r in rows]
    return {
        "reps": len(rows),
        "regret": mean_ci(regret),
        "regret_median": float(np.median(regret)),
        "within_sigma": wilson(within, len(rows)),
        "epochs": float(np.mean(epochs)),
        "epochs_sd": float(np.std(epochs)),
        "full_runs_equivalent": float(np.mean(epochs)) / longest,
        "busy": float(np.mean([r["busy"] for r in rows])),
        "makespan": float(np.mean([r["makespan"] for r in rows])),
        "runs": float(np.mean([r["runs"] for r in rows])),
        "optimism": mean_ci([r["optimism"] for r in rows if not math.isnan(r["optimism"])] or [float("nan")]),
        "stalled": int(sum(r["stalled"] for r in rows)),
        "failed": int(sum(r["failed"] for r in rows)),
    }


def compare(rows: list[dict[str, Any]], reference: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired by replay seed: this design's regret minus the reference's, with a 95% CI."""
    ref = {r["rep"]: r["regret"] for r in reference}
    diffs = [r["regret"] - ref[r["rep"]] for r in rows if r["rep"] in ref]
    if not diffs:
        return {"pairs": 0}
    m, lo, hi = mean_ci(diffs)
    return {"pairs": len(diffs), "diff": m, "low": lo, "high": hi}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def report_rows(cells: list[dict[str, Any]]) -> list[str]:
    """A markdown table: one row per design and total, regret in accuracy points."""
    lines = [
        "| total (E) | design | n | epochs (×E) | regret, pts [95% CI] | P(≤1σ) | vs shipped, pts [95% CI] | busy |",
        "|--:|---|--:|--:|---|--:|---|--:|",
    ]
    for c in cells:
        s, d = c["summary"], c["vs_default"]
        m, lo, hi = s["regret"]
        vs = (
            "—" if c["is_default"] or not d.get("pairs") else f"{_pct(d['diff'])} [{_pct(d['low'])}, {_pct(d['high'])}]"
        )
        flag = " (stalled)" if s["stalled"] else ""
        lines.append(
            f"| {c['total']:g} | {c['design']}{flag} | {c['configs']} | {s['full_runs_equivalent']:.1f} | "
            f"{_pct(m)} [{_pct(lo)}, {_pct(hi)}] | {s['within_sigma'][0]:.2f} | {vs} | {s['busy']:.2f} |"
        )
    return lines


def plot(cells: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    colours = {"full": "tab:blue", "halving": "tab:green", "asha": "tab:orange", "hyperband": "tab:purple"}
    for c in cells:
        s = c["summary"]
        m, lo, hi = s["regret"]
        x = s["full_runs_equivalent"]
        style = (
            {"marker": "*", "ms": 14, "color": "black", "zorder": 5}
            if c["is_default"]
            else {"marker": "o", "ms": 5, "color": colours.get(c["family"], "grey"), "alpha": 0.6}
        )
        ax.errorbar(x, 100 * m, yerr=[[100 * (m - lo)], [100 * (hi - m)]], capsize=2, **style)
    for fam, col in colours.items():
        ax.plot([], [], "o", color=col, label=fam)
    shipped = next((c["design"] for c in cells if c["is_default"]), "shipped")
    ax.plot([], [], "*", color="black", ms=12, label=shipped)
    ax.set_xlabel("compute (epochs / E: full-schedule runs)")
    ax.set_ylabel("regret on the evaluation split (accuracy points), mean and 95% CI")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
