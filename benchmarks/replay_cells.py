"""design_replay.py's cells, run in a pool of worker processes: one cell is one design under one
surrogate, noise scale and total compute. Each worker loads the table and the space once and
keeps every surrogate it fits (the table's own and each bootstrap table's), so a cell costs its
replays, not its fits.

A cell (`run_cell`):
1. finds n, the most configs whose mean compute stays within the total (halving: planned
   exactly; ASHA or `auto`: the mean of `calib` calibration replays on their own seeds);
2. replays the design with n and with n + 1 configs on the same replay seeds and mixes the two
   with the weight w that makes their mean epochs equal the total: each replay seed's outcome
   is w x (n configs) + (1 - w) x (n + 1), the expected outcome of a search that runs n
   configs with probability w (if the total falls outside the two means of the first 40 seeds,
   n moves; if it still falls outside them over all seeds, w is 0 or 1 and the cell's epochs
   say by how much it missed);
3. replays it on each bootstrap table (`--tables`, `--table-reps` replays each, a replay seed
   running n configs with probability w), for the table's share of the uncertainty.
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
MIXED = ("regret", "epochs", "rerun_epochs", "reruns", "busy", "makespan", "optimism")
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
        n, w, rows0, rows1 = job["configs"], 1.0, [run(job["configs"], r) for r in job["reps"]], None
    else:
        n = choose_configs(design, target, run=run, e=e, calib=job["calib"])
        if n == 0:
            return {**cell, "configs": [0, 0], "rows": []}
        n, w, rows0, rows1 = matched(design, target, n, run=run, reps=job["reps"], e=e)
    rows = [mix(a, b, w) for a, b in zip(rows0, rows1 or rows0, strict=True)]
    stated = [{k: r.get(k) for k in STATED} for r in rows0 + (rows1 or []) if "p_runner" in r]
    boot = []
    for b, tseed in enumerate(job["table_seeds"]):
        s = surrogate(kind, tseed)
        reps = boot_reps(job["seed"], b, job["table_reps"])
        boot.append([run(n if np.random.default_rng([r, 99]).random() < w else n + 1, r, s)["regret"] for r in reps])
    epochs = (float(np.mean([r["epochs"] for r in rows0])), float(np.mean([r["epochs"] for r in rows1 or rows0])))
    return {
        **cell,
        "configs": [n, n + 1],
        "weight": w,
        "epochs_target": target,
        "epochs_at": epochs,
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


def matched(
    design: Design, total: float, n: int, *, run: Any, reps: list[int], e: int
) -> tuple[int, float, list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(n, w, the replays with n configs, those with n + 1 or None): w mixes their mean epochs
    to `total`. n moves (up to MOVES times) while `total` lies outside the two means of the
    first PILOT replay seeds, so a move costs PILOT replays, not all of them; w comes from all."""
    rows: dict[int, list[dict[str, Any]]] = {}

    def replays(k: int, upto: int) -> list[dict[str, Any]]:
        have = rows.setdefault(k, [])
        have += [run(k, r) for r in reps[len(have) : upto]]
        return have[:upto]

    def epochs(k: int, upto: int) -> float:
        plan = planned_epochs(design, k, e)
        return plan if plan is not None else float(np.mean([r["epochs"] for r in replays(k, upto)]))

    least, pilot = max(1, design.reeval), min(PILOT, len(reps))
    for _ in range(MOVES):
        if epochs(n, pilot) > total and n > least:
            n -= 1
        elif epochs(n, pilot) < total and epochs(n + 1, pilot) < total:
            n += 1
        else:
            break
    e0 = epochs(n, len(reps))
    if e0 >= total:  # exact (a plan), or the fewest configs: n alone
        return n, 1.0, replays(n, len(reps)), None
    e1 = epochs(n + 1, len(reps))
    w = float(np.clip((e1 - total) / (e1 - e0), 0.0, 1.0)) if e1 > e0 else 1.0
    return n, w, replays(n, len(reps)), replays(n + 1, len(reps))


def mix(a: dict[str, Any], b: dict[str, Any], w: float) -> dict[str, Any]:
    """One replay seed's outcome, w of the n-config search and 1 - w of the (n + 1)-config one."""
    out = {"failed": bool(a.get("failed")) or bool(b.get("failed")), "stalled": a["stalled"] or b["stalled"]}
    for k in MIXED:
        x, y = a.get(k), b.get(k)
        out[k] = None if x is None or y is None else w * x + (1 - w) * y
    return out


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
