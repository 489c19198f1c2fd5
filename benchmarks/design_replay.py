"""Which search design finds the best config per epoch of compute? A replay of s9tune's shipped
searcher (StudySearch: TPE, and halving inside it) and Ray's ASHA and HyperBand against
the design table (design_table.py), in simulated epoch-time on asynchronous slots.

Every design runs at several matched totals (in epochs); each replay draws a searcher seed and
which measured seed answers each config. Designs are paired by replay seed: replay r of every
design uses the same searcher seed and the same seed draws, so differences against the shipped
default get paired confidence intervals. Regret is measured on the evaluation split, which no
design selects on: the table's best config's seed-mean evaluation accuracy minus the pick's.

    python benchmarks/design_replay.py --reps 500 --seed 1 --json benchmarks/design_replay.json \
        --plot benchmarks/design_replay.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from replay_sim import Oracle, TableController, pick
from replay_stats import compare, report_rows, summarize
from replay_table import Surrogate, Table

from s9tune.search.space.sections import ReevalSpec
from s9tune.search.space.space import METRIC, MODE, SchedulerSpec, SearchSpace, load_space

logger = logging.getLogger("design_replay")
REPO = Path(__file__).resolve().parents[1]
SHIPPED = "shipped"  # the prefix of the shipped default's name


@dataclasses.dataclass(frozen=True)
class Design:
    name: str
    family: str
    scheduler: dict[str, Any]  # SchedulerSpec fields, or {"type": "hyperband", "reduction_factor": r}
    sampler: str = "tpe"  # "tpe" (the study's TPESampler) or "random"
    # TPE's n_startup_trials: "s9tune" (the space's; by default a quarter of the configs, at
    # most 10) or "10" (Optuna's default)
    startup: str = "s9tune"
    reeval: int = 0  # the top k configs retrained on more seeds before the pick (search/searcher/reeval.py)
    reeval_seeds: int = 0  # how many more: 0 for all the table's other seeds
    shipped: bool = False  # the default space's own design, the reference of paired differences


def _fraction(epochs: int, max_t: int) -> str:
    """A schedule length as a fraction of the longest one: 2 of 8 -> "E/4"."""
    return "E" if epochs == max_t else f"E/{max_t // epochs}" if max_t % epochs == 0 else f"{epochs}/{max_t}E"


def shipped_scheduler(space: SearchSpace, e: int) -> dict[str, Any]:
    """The default space's scheduler with its epochs scaled from its schedule to the table's E."""
    sched, scale = space.scheduler, e / space.max_t
    if sched.type == "halving":
        return {
            "type": "halving",
            "budgets": tuple(max(1, round(b * scale)) for b in sched.budgets),
            "keep": sched.keep,
        }
    grace = max(1, round(sched.grace_period * scale))
    return {
        "type": "asha",
        "grace_period": grace,
        "reduction_factor": sched.reduction_factor,
        "brackets": sched.brackets,
    }


def _label(sched: dict[str, Any], e: int) -> str:
    if sched["type"] == "halving":
        budgets = ", ".join(_fraction(b, e) for b in sched["budgets"])
        return f"halving [{budgets}] keep {sched['keep']:g}"
    grace = _fraction(sched["grace_period"], e)
    return f"ASHA r{sched['reduction_factor']:g} grace {grace} {sched['brackets']} bracket(s)"


def _reeval_label(top: int, seeds: int) -> str:
    """ ", top-3 re-evaluated" (on all the table's other seeds) or ", top-3 re-evaluated on 1 seed"."""
    if not top:
        return ""
    return f", top-{top} re-evaluated" + (f" on {seeds} seed{'s' * (seeds > 1)}" if seeds else "")


def base_of(name: str) -> str:
    """The design a variant is paired with in `vs_base`: without its re-evaluation step, or
    with s9tune's TPE start-up count in place of Optuna's 10."""
    if ", TPE startup 10" in name or "TPE (startup 10)" in name:
        return name.replace(", TPE startup 10", "").replace("TPE (startup 10)", "TPE")
    return name.removeprefix(f"{SHIPPED}: ").split(", top-")[0]


def _key(d: Design) -> str:
    return json.dumps([d.scheduler, d.sampler, d.startup, d.reeval, d.reeval_seeds], sort_keys=True, default=list)


def designs(e: int, shipped: dict[str, Any], reeval: ReevalSpec | None = None) -> list[Design]:
    """The shipped design (its scheduler and `reeval`, the space's re-evaluation step, with its
    seeds as given: a space's 2 are the table's 2 other seeds) and its variants first, then the
    grid; a grid design equal to the shipped one is left out."""
    q, h = max(1, e // 4), max(1, e // 2)
    full = {"type": "halving", "budgets": (e,), "keep": 1.0}
    top, seeds = (reeval.top, reeval.seeds) if reeval is not None and reeval.on else (0, 0)
    label, fam = _label(shipped, e), shipped["type"]
    name = f"{SHIPPED}: {label}{_reeval_label(top, seeds)}"
    out = [
        Design(name, fam, shipped, reeval=top, reeval_seeds=seeds, shipped=True),
        Design(f"{name}, TPE startup 10", fam, shipped, startup="10", reeval=top, reeval_seeds=seeds),
        Design(label, fam, shipped),
        Design(f"{label}, TPE startup 10", fam, shipped, startup="10"),
    ]
    for k, m in ((2, 0), (3, 0), (3, 1)):
        out.append(Design(f"{label}{_reeval_label(k, m)}", fam, shipped, reeval=k, reeval_seeds=m))
    out += [
        Design("random, full schedules", "full", full, sampler="random"),
        Design("TPE, full schedules", "full", full),
        Design("TPE (startup 10), full schedules", "full", full, startup="10"),
    ]
    for k, m in ((2, 0), (3, 0), (3, 1)):
        out.append(Design(f"TPE, full schedules{_reeval_label(k, m)}", "full", full, reeval=k, reeval_seeds=m))
    # the default before 2026-11-29, so it stays in every comparison
    out.append(Design("halving [E/4, E] keep 0.34", "halving", {"type": "halving", "budgets": (q, e), "keep": 0.34}))
    third = {"type": "halving", "budgets": (q, e), "keep": 1 / 3}
    out.append(Design("halving [E/4, E] keep 1/3, top-3 re-evaluated", "halving", third, reeval=3))
    for budgets in ((q, e), (max(1, e // 8), q, e)):
        for keep, kl in ((1 / 2, "1/2"), (1 / 3, "1/3"), (1 / 4, "1/4")):
            sched = {"type": "halving", "budgets": budgets, "keep": keep}
            out.append(Design(_label(sched, e).replace(f"keep {keep:g}", f"keep {kl}"), "halving", sched))
    asha = [(2.0, max(1, e // 8), 1)]  # the cheapest design of the earlier end-to-end study
    asha += [(rf, g, b) for rf in (2.0, 3.0) for g in (q, h) for b in (1, 3)]
    for rf, grace, brackets in asha:
        sched = {"type": "asha", "grace_period": grace, "reduction_factor": rf, "brackets": brackets}
        out.append(Design(_label(sched, e), "asha", sched))
    out.append(Design("HyperBand r2", "hyperband", {"type": "hyperband", "reduction_factor": 2.0}))
    seen = {_key(out[0])}
    kept = out[:1]
    for d in out[1:]:
        if _key(d) not in seen:
            seen.add(_key(d))
            kept.append(d)
    return kept


def design_space(
    base: SearchSpace, design: Design, *, configs: int, seed: int, longest: int, seeds: int = 3
) -> SearchSpace:
    """The shipped space with the table's schedule length, the design's scheduler, and its
    re-evaluation step on the table's other `seeds - 1` seeds."""
    fields = {k: v for k, v in design.scheduler.items() if k != "type"}
    if "budgets" in fields:
        fields["budgets"] = tuple(fields["budgets"])
    spec = SchedulerSpec(design.scheduler["type"], **fields)
    fixed = base.fixed.with_overrides({"epochs": longest})
    startup = 10 if design.startup == "10" else base.startup_trials
    return dataclasses.replace(
        base,
        num_samples=configs,
        scheduler=spec,
        searcher_seed=seed,
        fixed=fixed,
        startup_trials=startup,
        reevaluate=reeval_spec(design, seeds),
    )


def reeval_spec(design: Design, seeds: int) -> ReevalSpec:
    """The design's re-evaluation step, on at most the table's `seeds - 1` other seeds."""
    if not design.reeval:
        return ReevalSpec()
    return ReevalSpec(design.reeval, min(design.reeval_seeds or seeds - 1, seeds - 1))


def build_search(space: SearchSpace, *, slots: int, sampler: Any = None, store: Any = None) -> tuple[Any, Any, int]:
    """(searcher, scheduler, trials) as s9tune/search/execution/runner.py builds them for `space`: one
    StudySearch (TPE seeded, the baseline first; halving inside it) at one run per slot, with
    ASHA as Tune's scheduler under `asha`. Two additions a space file cannot express: an Optuna
    `sampler` in place of the study's TPE (random search) and Ray's synchronous
    HyperBandScheduler in ASHA's place (with no cap on live runs: see below). `store`: where the
    studies live (search/searcher/journal.py's StudyStore; memory by default).

    The one place the replay builds s9tune's searcher: when runner.py's construction changes
    (a new constructor argument), change it here too."""
    from ray.tune.schedulers import HyperBandScheduler

    from s9tune.search.searcher.asha import scheduler_for
    from s9tune.search.searcher.searcher import StudySearch

    sched = space.scheduler
    # HyperBand pauses whole brackets: capped at the slot count no bracket would ever fill
    # (paused runs count as live), so it runs without a cap
    searcher = StudySearch(space, store=store, max_concurrent=None if sched.type == "hyperband" else slots)
    if sampler is not None:
        searcher.studies[0].sampler = sampler  # Optuna's Study.sampler: the one that asks
    searcher.set_search_properties(METRIC, MODE, {})  # as Tune does
    scheduler: Any = None
    if sched.type == "hyperband":
        scheduler = HyperBandScheduler(max_t=space.max_t, reduction_factor=sched.reduction_factor)
    else:
        scheduler = scheduler_for(space)  # runner.py's: ASHA (never stopping a rerun), or none
    if scheduler is not None:
        scheduler.set_search_properties(METRIC, MODE)
    # as runner.py hands tune.run: the searcher says FINISHED before this count is reached
    return searcher, scheduler, space.max_trials


def make_sampler(design: Design, seed: int) -> Any:
    import optuna

    if design.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return None  # the study's own TPESampler (search/searcher/journal.py): seeded, the space's n_startup_trials


def replay(sur: Surrogate, base: SearchSpace, design: Design, *, configs: int, rep: int, slots: int) -> dict[str, Any]:
    """One search of `design` with `configs` configs, replay seed `rep`."""
    table = sur.table
    space = design_space(base, design, configs=configs, seed=rep, longest=table.longest, seeds=table.seeds)
    searcher, scheduler, trials = build_search(space, slots=slots, sampler=make_sampler(design, rep))
    np.random.seed(rep % 2**32)  # ASHA draws each trial's bracket from NumPy's global generator
    oracle = Oracle(sur, np.random.default_rng(rep))
    out = TableController(searcher, scheduler, oracle, slots=slots, max_trials=trials).run()
    best = pick(out, table.longest)
    epochs, search_value, draw = out.epochs, float("nan"), None  # no pick: scored as the worst config
    if best is not None:
        draw, search_value = best[0].draw, float(np.mean(best[1]))
    quality = draw.quality if draw is not None else float(sur.mean[:, -1].min())
    expected_val = float(draw.values[sur.val_longest] - sur.resid[draw.c, draw.s, sur.val_longest]) if draw else 0.0
    return {
        "regret": sur.best_quality - quality,
        "pick": draw.c if draw is not None else -1,
        "epochs": epochs,
        "runs": len(out.runs),
        "makespan": out.makespan,
        "busy": out.busy,
        "stalled": out.stalled,
        "failed": best is None,
        # the pick's value as the search saw it (with re-evaluation, its mean over seeds), minus
        # its expected validation accuracy
        "optimism": search_value - expected_val,
    }


def planned_epochs(design: Design, configs: int, e: int, seeds: int) -> float | None:
    if design.scheduler["type"] != "halving":
        return None
    spec = SchedulerSpec("halving", budgets=tuple(design.scheduler["budgets"]), keep=design.scheduler["keep"])
    sizes = spec.rung_sizes(configs)
    extra = reeval_spec(design, seeds).runs(sizes[-1]) * e
    return float(sum(n * b for n, b in zip(sizes, spec.budgets, strict=True)) + extra)


_CACHE: dict[str, Any] = {}  # one worker's table and space, loaded once by _init


def _init(table_path: str, space_path: str, surrogate: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a HyperBand run stopped while paused ends with no result: the searcher logs each one
    logging.getLogger("s9tune.search.searcher.searcher").setLevel(logging.WARNING)
    _CACHE["sur"] = Surrogate(Table.load(Path(table_path)), surrogate)
    _CACHE["space"] = load_space(Path(space_path))


def choose_configs(design: Design, total: float, *, slots: int, calib: int) -> int:
    """The most configs whose compute stays within `total` epochs: planned for halving, the mean
    of `calib` calibration replays (their own seeds) for ASHA and HyperBand."""
    sur, base = _CACHE["sur"], _CACHE["space"]
    e, seeds = sur.table.longest, sur.table.seeds

    def cost(n: int) -> float:
        plan = planned_epochs(design, n, e, seeds)
        if plan is not None:
            return plan
        reps = [replay(sur, base, design, configs=n, rep=10**9 + i, slots=slots) for i in range(calib)]
        return float(np.mean([r["epochs"] for r in reps]))

    lo, hi = max(1, design.reeval), max(2, int(4 * total / e))
    if cost(lo) > total:
        return 0  # the design does not fit in this total
    while lo < hi:  # compute grows with the number of configs
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= total else (lo, mid - 1)
    return lo


def run_cell(job: dict[str, Any]) -> dict[str, Any]:
    """All replays of one design at one total."""
    sur, base = _CACHE["sur"], _CACHE["space"]
    design = Design(**job["design"])
    t0 = time.perf_counter()
    n = job["configs"] or choose_configs(
        design, job["total"] * sur.table.longest, slots=job["slots"], calib=job["calib"]
    )
    cell = {"design": design.name, "family": design.family, "shipped": design.shipped, "total": job["total"]}
    if n == 0:  # the design does not fit in this total
        return {**cell, "configs": 0, "rows": []}
    rows = [{"rep": rep, **replay(sur, base, design, configs=n, rep=rep, slots=job["slots"])} for rep in job["reps"]]
    return {**cell, "configs": n, "rows": rows, "seconds": time.perf_counter() - t0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=REPO / "benchmarks" / "design_table.json")
    p.add_argument("--space", type=Path, default=REPO / "search_spaces" / "default.yaml")
    p.add_argument("--reps", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slots", type=int, default=4, help="trials at once (the default: 4 per GPU, one GPU)")
    p.add_argument("--totals", default="8,19,32", help="compute budgets in full-schedule runs (19 = the default's)")
    p.add_argument("--calib", type=int, default=10, help="calibration replays per candidate size (ASHA, HyperBand)")
    p.add_argument("--configs", type=int, default=0, help="every design with this many configs, not matched compute")
    p.add_argument("--designs", default="", help="only designs whose name contains one of these (comma-separated)")
    p.add_argument(
        "--surrogate", default="rbf", choices=("rbf", "nn"), help="what answers a config between table points"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    p.add_argument("--rows", action="store_true", help="also every replay's outcome in the JSON (large)")
    return p.parse_args(argv)


def run_all(args: argparse.Namespace, table: Table) -> list[dict[str, Any]]:
    space = load_space(args.space)
    every = designs(table.longest, shipped_scheduler(space, table.longest), space.reevaluate)
    wanted = [s.strip() for s in args.designs.split(",") if s.strip()]
    # the shipped design always runs: every other design is paired with it
    chosen = [d for d in every if d.shipped or not wanted or any(s in d.name for s in wanted)]
    reps = [args.seed * 100_000 + i for i in range(args.reps)]
    jobs = [
        {
            "design": dataclasses.asdict(d),
            "total": 0.0 if args.configs else float(t),
            "configs": args.configs,
            "reps": reps,
            "slots": args.slots,
            "calib": args.calib,
        }
        for t in (["0"] if args.configs else args.totals.split(","))
        for d in chosen
    ]
    init = (str(args.table), str(args.space), args.surrogate)
    if args.workers <= 1:
        _init(*init)
        return [run_cell(j) for j in jobs]
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=init) as pool:
        return list(pool.map(run_cell, jobs))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = Table.load(args.table)
    t0, load0 = time.time(), os.getloadavg()
    cells = run_all(args, table)
    skipped = [f"{c['design']} @ {c['total']:g}" for c in cells if not c["rows"]]
    cells = [c for c in cells if c["rows"]]
    if not any(c["shipped"] for c in cells):
        raise SystemExit("design_replay: error: the shipped design fits in none of the totals")
    sigma = table.seed_sigma("eval")
    default = {c["total"]: c["rows"] for c in cells if c["shipped"]}
    for c in cells:
        c["is_default"] = c.pop("shipped")
        c["summary"] = summarize(c["rows"], sigma=sigma, longest=table.longest)
        c["vs_default"] = compare(c["rows"], default.get(c["total"], []))
    # each variant against its base design (the same one without re-evaluation, or with
    # s9tune's start-up count), paired by replay seed as well
    by_name = {(c["total"], c["design"]): c["rows"] for c in cells}
    for c in cells:
        base = (c["total"], base_of(c["design"]))
        if base[1] != c["design"] and base in by_name:
            c["vs_base"] = {"base": base[1], **compare(c["rows"], by_name[base])}
    out = {
        "command": " ".join(["python", "benchmarks/design_replay.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_start": list(load0),
            "load_avg_end": list(os.getloadavg()),
        },
        "wall_s": round(time.time() - t0, 1),
        "slots": args.slots,
        "reps": args.reps,
        "table": table.summary(),
        "cells": [{k: v for k, v in c.items() if k != "rows"} for c in cells],
        "skipped": skipped,  # designs whose smallest search exceeds the total
        "rows": {f"{c['design']} @ {c['total']:g}": c["rows"] for c in cells} if args.rows else {},
    }
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print("\n".join(report_rows(out["cells"])))
    print(f"\nseed sigma (evaluation split) {sigma:.4f}; {args.reps} replays per cell; {out['wall_s']:.0f} s")
    if args.plot:
        from replay_stats import plot

        plot(
            out["cells"],
            args.plot,
            title=f"{table.path.name}: {table.configs} configs x {table.seeds} seeds; "
            f"{args.reps} replays per point, {args.slots} slots",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
