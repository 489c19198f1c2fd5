"""Statistics and the report of design_replay.py: means with 95% confidence intervals, paired
differences with and without the table's own uncertainty, the pre-registered selection rule,
the calibration of the probabilities s9tune states about its pick, and the markdown table."""

from __future__ import annotations

import math
from collections import defaultdict
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


def with_table(d: np.ndarray, boot: np.ndarray) -> dict[str, Any]:
    """A paired difference's 95% CI with the table's uncertainty in it.

    `d`: the per-replay-seed differences on the table itself (their mean is the estimate);
    `boot`: tables x replays, the same difference on bootstrap tables (the table's configs drawn
    with replacement, surrogate and noise refitted). The estimate's variance is the replay part,
    var(d) / len(d), plus the table part: the variance of the bootstrap tables' mean
    differences less what their own replays add to it (a random-effects split, floored at 0).
    The interval is Student's t with Satterthwaite's degrees of freedom for the sum."""
    m, lo, hi = mean_ci(d)
    n = len(d)
    se2 = float(np.var(d, ddof=1)) / n if n > 1 else 0.0
    tables, reps = boot.shape if boot.ndim == 2 else (0, 0)
    table_var = 0.0
    if tables >= 2 and reps >= 2:
        table_var = max(0.0, float(boot.mean(1).var(ddof=1)) - float(boot.var(1, ddof=1).mean()) / reps)
    total = se2 + table_var
    if total == 0.0:
        return {"ci": [lo, hi], "ci_with_table": [m, m], "table_sd": 0.0, "tables": int(tables)}
    parts = (se2**2 / (n - 1) if n > 1 else 0.0) + (table_var**2 / (tables - 1) if table_var else 0.0)
    df = total**2 / parts if parts > 0 else float(n - 1)
    half = float(stats.t.ppf(0.975, df)) * math.sqrt(total)
    return {
        "ci": [lo, hi],
        "ci_with_table": [m - half, m + half],
        "table_sd": math.sqrt(table_var),
        "tables": int(tables),
        "boot_mean": float(boot.mean()) if boot.size else None,
    }


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Cell a's regret minus cell b's, paired by replay seed (and by bootstrap table and seed)."""
    d = np.array([x["regret"] for x in a["rows"]]) - np.array([y["regret"] for y in b["rows"]])
    boot = np.asarray(a["boot"], dtype=float) - np.asarray(b["boot"], dtype=float) if a["boot"] else np.zeros((0, 0))
    return {"diff": float(d.mean()), **with_table(d, boot)}


def _group(c: dict[str, Any]) -> tuple[str, float, float]:
    return c["surrogate"], c["noise_scale"], c["total"]


def assemble(results: list[dict[str, Any]], *, args: Any, table: Any) -> dict[str, Any]:
    """The JSON's cells (one per design, surrogate, noise scale and total), the calibration of
    the stated probabilities, and, for the plan's candidates, the selection rule's outcome."""
    raw = [c for c in results if c["rows"]]
    skipped = [
        f"{c['design']} @ {c['total']:g} ({c['surrogate']}, noise {c['noise_scale']:g})"
        for c in results
        if not c["rows"]
    ]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in raw:
        groups[_group(c)].append(c)
    cells = []
    for members in groups.values():
        default = next((c for c in members if c["shipped"]), None)
        best = min(members, key=lambda c: np.mean([r["regret"] for r in c["rows"]]))
        fixed = [c for c in members if "auto re-evaluation" not in c["design"]]
        best_fixed = min(fixed, key=lambda c: np.mean([r["regret"] for r in c["rows"]])) if fixed else None
        for c in members:
            cell = _cell(c, default=default, best=best, longest=table.longest, args=args)
            if best_fixed is not None and "auto re-evaluation" in c["design"]:
                cell["vs_best_fixed"] = {"best_fixed": best_fixed["design"], **paired(c, best_fixed)}
            cells.append(cell)
    out = {
        "cells": cells,
        "skipped": skipped,
        "calibration": calibration(raw),
        "auto": auto_checks(cells, table.longest),
    }
    if not args.grid:
        out["selection"] = select(cells)
    if args.rows:
        out["rows"] = {
            f"{c['design']} | {c['surrogate']} | {c['noise_scale']:g} | {c['total']:g}": c["rows"] for c in raw
        }
    return out


def _cell(c: dict[str, Any], *, default: dict | None, best: dict, longest: int, args: Any) -> dict[str, Any]:
    rows = c["rows"]
    m, lo, hi = mean_ci([r["regret"] for r in rows])
    reg_boot = np.asarray(c["boot"], dtype=float) if c["boot"] else np.zeros((0, 0))
    tab = with_table(np.array([r["regret"] for r in rows]), reg_boot)
    epochs = float(np.mean([r["epochs"] for r in rows]))
    optimism = [r["optimism"] for r in rows if r["optimism"] is not None]
    return {
        "design": c["design"],
        "family": c["family"],
        "is_default": c["shipped"],
        "surrogate": c["surrogate"],
        "noise_scale": c["noise_scale"],
        "total_runs": c["total"],
        "configs": c["configs"],
        "weight": c.get("weight", 1.0),
        "epochs": epochs,
        "epochs_target": c.get("epochs_target"),
        "epochs_vs_target": epochs / c["epochs_target"] - 1 if c.get("epochs_target") else None,
        # what the mixture of n and n + 1 configs was set to spend (from the pilot seeds or a plan)
        "expected_epochs": _expected(c),
        "rerun_epochs": float(np.mean([r["rerun_epochs"] for r in rows])),
        "reruns": float(np.mean([r["reruns"] for r in rows])),
        "full_runs_equivalent": epochs / longest,
        "regret_mean": m,
        "regret_ci": [lo, hi],
        "regret_ci_with_table": tab["ci_with_table"],
        "within_sigma": None,
        "busy": float(np.mean([r["busy"] for r in rows])),
        "optimism": mean_ci(optimism) if optimism else None,
        "failed": int(sum(r["failed"] for r in rows)),
        "stalled": int(sum(r["stalled"] for r in rows)),
        "reps": len(rows),
        "vs_default": paired(c, default) if default is not None else None,
        "vs_best": {"best": best["design"], **paired(c, best)},
        "seconds": c.get("seconds"),
    }


def _expected(c: dict[str, Any]) -> float | None:
    at = c.get("epochs_at")
    if not at or not c.get("epochs_target"):
        return None
    w = c.get("weight", 1.0)
    return w * at[0] + (1 - w) * at[1]


def auto_checks(cells: list[dict[str, Any]], longest: int) -> list[dict[str, Any]]:
    """What `reevaluate: auto` must show: resolved worse than the best fixed design (any design
    without auto, re-evaluating or not) in no group, and at noise scale <= 0.1 at most half the
    fixed top-3 x 1 step's rerun epochs (1.5 full runs) on average."""
    out = []
    for c in cells:
        if "vs_best_fixed" not in c:
            continue
        v = c["vs_best_fixed"]
        out.append(
            {
                "design": c["design"],
                "surrogate": c["surrogate"],
                "noise_scale": c["noise_scale"],
                "total_runs": c["total_runs"],
                "best_fixed": v["best_fixed"],
                "diff": v["diff"],
                "ci_with_table": v["ci_with_table"],
                "resolved_worse": v["ci_with_table"][0] > 0,
                "rerun_runs": c["rerun_epochs"] / longest,
                "within_half_of_top3": c["rerun_epochs"] / longest <= 1.5 if c["noise_scale"] <= 0.1 else None,
            }
        )
    return out


def select(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan's rule: a design is resolved worse in a group (surrogate, noise scale, total)
    when the CI with the table of its regret minus the group's best design's lies above 0;
    the selected design is the first in the plan's order (simplest first) resolved worse in
    no group."""
    order = list(dict.fromkeys(c["design"] for c in cells))
    worse: dict[str, list[str]] = {d: [] for d in order}
    better_than_default: dict[str, list[str]] = {d: [] for d in order}
    for c in cells:
        where = f"{c['surrogate']} noise {c['noise_scale']:g} @ {c['total_runs']:g}"
        if c["vs_best"]["ci_with_table"][0] > 0:
            worse[c["design"]].append(where)
        if c["vs_default"] and c["vs_default"]["ci_with_table"][1] < 0:
            better_than_default[c["design"]].append(where)
    eligible = [d for d in order if not worse[d]]
    least = min((len(w) for w in worse.values()), default=0)
    fewest = [d for d in order if len(worse[d]) == least]
    return {
        "order": order,
        "resolved_worse_than_best": worse,
        "resolved_better_than_default": better_than_default,
        "eligible": eligible,
        "selected": eligible[0] if eligible else None,
        # the plan's second amendment, for when no design is eligible
        "fewest": fewest,
        "fallback": None if eligible else fewest[0],
    }


def decide(sel: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """The plan's decision (as amended before the confirmation ran) from the two stages' `select`.
    With a design eligible on the selection: it, if eligible on the confirmation too, else the
    first eligible on both. Without (the fallback S, first of those resolved worse in the fewest
    groups): S, if it is eligible on the confirmation, or none is and S is again among the
    fewest; else the first design by the fewest groups resolved worse on both stages together."""
    order = sel["order"]
    if sel["selected"] is not None:
        both = [d for d in order if d in sel["eligible"] and d in conf["eligible"]]
        s = sel["selected"]
        default = s if s in conf["eligible"] else (both[0] if both else None)
        return {"selected_on_selection": s, "by": "rule", "default": default}
    s = sel["fallback"]
    if s in conf["eligible"] or (not conf["eligible"] and s in conf["fewest"]):
        return {"selected_on_selection": s, "by": "fallback, confirmed", "default": s}
    total = {d: len(sel["resolved_worse_than_best"][d]) + len(conf["resolved_worse_than_best"][d]) for d in order}
    default = min(order, key=total.__getitem__)  # the first of equals: the simpler
    return {"selected_on_selection": s, "by": "fallback, fewest on both stages", "default": default, "counts": total}


def calibration(raw: list[dict[str, Any]], threshold: float = 0.9) -> list[dict[str, Any]]:
    """Are the stated probabilities calibrated? Per surrogate and noise scale, over every replay
    whose pick had a measured σ (designs with re-evaluation): of the picks stated at P >=
    `threshold` against the runner-up, the share truly better (expected validation accuracy,
    the surrogate's), with a Wilson 95% CI; the same by bins of P, against the baseline, and
    the coverage of the stated 95% interval of the pick's mean."""
    by: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in raw:
        for s in c.get("stated", []):
            by[(c["surrogate"], c["noise_scale"], "auto" if "auto" in c["design"] else "fixed")].append(s)
    out = []
    for (kind, scale, rule), recs in sorted(by.items()):
        stated = [r for r in recs if r["p_runner"] is not None]
        runner = [r for r in stated if r["better_runner"] is not None]  # exact ties (nn) left out
        sure = [r for r in runner if r["p_runner"] >= threshold]
        base = [
            r for r in recs if r["p_base"] is not None and r["p_base"] >= threshold and r["better_base"] is not None
        ]
        bins = []
        for a, b in ((0.5, 0.7), (0.7, 0.9), (0.9, 0.99), (0.99, 1.01)):
            inside = [r for r in runner if a <= r["p_runner"] < b]
            if inside:
                k = sum(r["better_runner"] for r in inside)
                bins.append({"p": [a, min(b, 1.0)], "stated_mean": float(np.mean([r["p_runner"] for r in inside])),
                             "n": len(inside), "share_true": wilson(k, len(inside))})  # fmt: skip
        out.append(
            {
                "surrogate": kind,
                "noise_scale": scale,
                "rule": rule,
                "picks": len(recs),
                "ties_left_out": len(stated) - len(runner),
                "stated_p_ge": threshold,
                "n": len(sure),
                "share_truly_better": wilson(sum(r["better_runner"] for r in sure), len(sure)),
                "vs_baseline": wilson(sum(bool(r["better_base"]) for r in base), len(base)),
                "vs_baseline_n": len(base),
                "ci95_coverage": wilson(sum(bool(r["covered"]) for r in recs), len(recs)),
                "bins": bins,
            }
        )
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _ci(c: list[float]) -> str:
    return f"[{_pct(c[0])}, {_pct(c[1])}]"


def report_rows(cells: list[dict[str, Any]]) -> list[str]:
    """A markdown table: one row per cell, regret in accuracy points."""
    lines = [
        "| surrogate | noise | total (E) | design | configs (w) | epochs vs total | rerun epochs | regret [95% CI] "
        "| minus default [replay CI] [with table] | minus best, with table |",
        "|---|--:|--:|---|---|--:|--:|---|---|---|",
    ]
    for c in cells:
        d, b = c["vs_default"], c["vs_best"]
        vs = "—" if c["is_default"] or not d else f"{_pct(d['diff'])} {_ci(d['ci'])} {_ci(d['ci_with_table'])}"
        best = "best" if b["best"] == c["design"] else f"{_pct(b['diff'])} {_ci(b['ci_with_table'])}"
        n0, n1 = c["configs"]
        ratio = c["epochs_vs_target"]
        lines.append(
            f"| {c['surrogate']} | {c['noise_scale']:g} | {c['total_runs']:g} | {c['design']}"
            f"{' (default)' if c['is_default'] else ''} | {n0}/{n1} ({c['weight']:.2f}) | "
            f"{'' if ratio is None else f'{100 * ratio:+.1f}%'} | {c['rerun_epochs']:.1f} | "
            f"{_pct(c['regret_mean'])} {_ci(c['regret_ci'])} | {vs} | {best} |"
        )
    return lines
