"""design_replay.py's cells, run in a pool of worker processes: one cell is one design under one
surrogate, noise scale and total compute. Each worker loads the table and the space once and
keeps every surrogate it fits (the table's own and each bootstrap table's), so a cell costs its
replays, not its fits.

A cell (`run_cell`):
1. finds n, the most configs whose mean compute stays within the total (halving: planned
   exactly; ASHA or `auto`: the mean of `calib` calibration replays on their own seeds);
2. runs n configs on each replay seed with probability w and n + 1 otherwise, w making the
   expected epochs equal the total: the mean epochs at n and n + 1 come from the first 40
   seeds run at both (n moves while the total falls outside them); the cell's realised epochs
   are reported beside the total (`epochs_vs_target`);
3. replays it on each bootstrap table (`--tables`, `--table-reps` replays each, n or n + 1 as
   above), for the table's share of the uncertainty.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from design_replay import Design, planned_epochs, replay
from replay_table import Surrogate, Table

from s9tune.search.space.space import load_space

_CACHE: dict[str, Any] = {}  # one worker's table, space and fitted surrogates
STATED = ("p_runner", "better_runner", "covered", "p_base", "better_base", "df", "runs", "sigma_ratio")
MOVES = 4  # how far n may move when the total falls outside the n / n + 1 means
PILOT = 40  # replay seeds that decide where n lies before the rest run


def init(table_path: str, space_path: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a HyperBand run stopped while paused ends with no result: the searcher logs each one
    logging.getLogger("s9tune.search.searcher.searcher").setLevel(logging.WARNING)
    _CACHE["table"] = Table.load(Path(table_path))
    _CACHE["space"] = load_space(Path(space_path))
    _CACHE["surrogates"] = {}


def surrogate(kind: str, table_seed: int | None) -> Surrogate:
    """The surrogate of the table itself (seed None) or of the bootstrap table `table_seed`."""
    key = (kind, table_seed)
    if key not in _CACHE["surrogates"]:
        table = _CACHE["table"] if table_seed is None else _CACHE["table"].resample(table_seed)
        _CACHE["surrogates"][key] = Surrogate(table, kind)
    return _CACHE["surrogates"][key]


def table_seeds(seed: int, tables: int) -> list[int]:
    return [seed * 1000 + b for b in range(tables)]


def boot_reps(seed: int, b: int, reps: int) -> list[int]:
    """Replay seeds on bootstrap table b: common to every design, apart from the main ones."""
    return [seed * 1_000_000 + 500_000 + b * 1000 + i for i in range(reps)]


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    design, kind, scale = Design(**job["design"]), job["surrogate"], job["noise_scale"]
    sur, base = surrogate(kind, None), _CACHE["space"]
    e = sur.table.longest
    cell = {"design": design.name, "family": design.family, "shipped": design.shipped, "surrogate": kind}
    cell |= {"noise_scale": scale, "total": job["total"]}

    def run(n: int, rep: int, s: Surrogate = sur) -> dict[str, Any]:
        return replay(s, base, design, configs=n, rep=rep, slots=job["slots"], noise_scale=scale)

    target = job["total"] * e
    if job["configs"]:
        n, w, rows, at = job["configs"], 1.0, [run(job["configs"], r) for r in job["reps"]], (0.0, 0.0)
    else:
        n = choose_configs(design, target, run=run, e=e, calib=job["calib"])
        if n == 0:
            return {**cell, "configs": [0, 0], "rows": []}
        n, w, rows, at = matched(design, target, n, run=run, reps=job["reps"], e=e)
    stated = [{k: r.get(k) for k in STATED} for r in rows if "p_runner" in r]
    boot = []
    for b, tseed in enumerate(job["table_seeds"]):
        s = surrogate(kind, tseed)
        reps = boot_reps(job["seed"], b, job["table_reps"])
        boot.append([run(n if takes_n(r, w) else n + 1, r, s)["regret"] for r in reps])
    return {
        **cell,
        "configs": [n, n + 1],
        "weight": w,
        "epochs_target": target,
        "epochs_at": list(at),
        "rows": rows,
        "stated": stated,
        "boot": boot,
        "seconds": time.perf_counter() - t0,
    }


def choose_configs(design: Design, total: float, *, run: Any, e: int, calib: int) -> int:
    """About the most configs whose compute stays within `total` epochs (`matched` then moves
    it to the exact bracket): exact for a halving design's plan; otherwise from `calib`
    calibration replays (their own seeds) at total / E configs, which give the epochs per
    config and the reruns' epochs. 0 if even the fewest configs do not fit."""
    least = max(1, design.reeval)
    if planned_epochs(design, least, e) is not None:
        if planned_epochs(design, least, e) > total:
            return 0
        n = least
        while planned_epochs(design, n + 1, e) <= total:
            n += 1
        return n
    n0 = max(least, round(total / e))
    rows = [run(n0, 10**9 + i) for i in range(calib)]
    spent, reruns = np.mean([r["epochs"] for r in rows]), np.mean([r["rerun_epochs"] for r in rows])
    if n0 == least and spent > total:
        return 0
    return max(least, int((total - reruns) / ((spent - reruns) / n0)))


def takes_n(rep: int, w: float) -> bool:
    """Whether replay seed `rep` runs n configs (probability w) or n + 1: the same draw for
    every design, so paired designs run their larger search on the same seeds."""
    return bool(np.random.default_rng([rep, 99]).random() < w)


def matched(
    design: Design, total: float, n: int, *, run: Any, reps: list[int], e: int
) -> tuple[int, float, list[dict[str, Any]], tuple[float, float]]:
    """(n, w, one replay per seed, the mean epochs at n and at n + 1): each seed runs n configs
    with probability w and n + 1 otherwise, w making the expected epochs equal `total`. The
    means come from the first PILOT seeds run at both (a halving design's from its plan); n
    moves (up to MOVES times) while `total` lies outside them."""
    runs: dict[tuple[int, int], dict[str, Any]] = {}
    pilot = reps[: min(PILOT, len(reps))]

    def replay_at(k: int, rep: int) -> dict[str, Any]:
        if (k, rep) not in runs:
            runs[k, rep] = run(k, rep)
        return runs[k, rep]

    def epochs(k: int) -> float:
        plan = planned_epochs(design, k, e)
        return plan if plan is not None else float(np.mean([replay_at(k, r)["epochs"] for r in pilot]))

    least = max(1, design.reeval)
    for _ in range(MOVES):
        if epochs(n) > total and n > least:
            n -= 1
        elif epochs(n) < total and epochs(n + 1) < total:
            n += 1
        else:
            break
    e0 = epochs(n)
    e1 = epochs(n + 1) if e0 < total else e0
    w = float(np.clip((e1 - total) / (e1 - e0), 0.0, 1.0)) if e1 > e0 else 1.0  # n alone if exact or least
    return n, w, [replay_at(n if takes_n(r, w) else n + 1, r) for r in reps], (e0, e1)


def run_all(args: Any, chosen: list[Design]) -> list[dict[str, Any]]:
    import dataclasses

    reps = [args.seed * 100_000 + i for i in range(args.reps)]
    seeds = table_seeds(args.seed, args.tables)
    jobs = [
        {
            "design": dataclasses.asdict(d),
            "surrogate": kind,
            "noise_scale": float(scale),
            "total": 0.0 if args.configs else float(total),
            "configs": args.configs,
            "reps": reps,
            "slots": args.slots,
            "calib": args.calib,
            "seed": args.seed,
            "table_seeds": seeds,
            "table_reps": args.table_reps,
        }
        for kind in args.surrogates.split(",")
        for scale in args.noise_scales.split(",")
        for total in (["0"] if args.configs else args.totals.split(","))
        for d in chosen
    ]
    init_args = (str(args.table), str(args.space))
    log = logging.getLogger("design_replay")
    if args.workers <= 1:
        init(*init_args)
        return [_logged(run_cell(j), log, i, len(jobs)) for i, j in enumerate(jobs)]
    with ProcessPoolExecutor(args.workers, initializer=init, initargs=init_args) as pool:
        return [_logged(c, log, i, len(jobs)) for i, c in enumerate(pool.map(run_cell, jobs))]


def _logged(cell: dict[str, Any], log: logging.Logger, i: int, n: int) -> dict[str, Any]:
    regret = np.mean([r["regret"] for r in cell["rows"]]) if cell["rows"] else float("nan")
    log.info(
        "%d/%d %s | %s noise %g total %g: n %s w %.2f regret %.4f (%.0f s)",
        i + 1, n, cell["design"], cell["surrogate"], cell["noise_scale"], cell["total"],
        cell["configs"], cell.get("weight", 1.0), regret, cell.get("seconds", 0.0),
    )  # fmt: skip
    return cell
