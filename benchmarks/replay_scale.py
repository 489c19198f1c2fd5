"""The shipped searchers at cluster scale, by simulation: many configs on many slots, each
run's epoch time drawn from the design table's spread, values answered by the table's surrogate.

Measured on this machine: the driver-side time of every searcher and scheduler call (per
decision, per finished run, and how it grows with the trials seen), the driver's memory
(tracemalloc peak over one replay, a second pass so timing is not slowed), and the share of
slot-time left idle while work remained (halving waits until a promotion is certain; ASHA
promotes on what it has) and at the end.

    python benchmarks/replay_scale.py --sizes 64,256,1024 --json benchmarks/replay_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from design_replay import Design, build_search, design_space, designs, shipped_scheduler
from replay_sim import Oracle, TableController
from replay_table import Surrogate, Table

from s9tune.search.space.space import SearchSpace, load_space

REPO = Path(__file__).resolve().parents[1]
# besides the shipped design: ASHA without its re-evaluation step, and one more of each of
# s9tune's two schedulers (one equal to the shipped design is not in the list of designs)
OTHERS = ("ASHA r3 grace E/2 1 bracket(s)", "halving [E/4, E] keep 0.34", "ASHA r2 grace E/4 1 bracket(s)")


def scale_designs(base: SearchSpace, e: int) -> list[Design]:
    every = designs(e, shipped_scheduler(base, e), base.reevaluate)
    return [d for d in every if d.shipped or d.name in OTHERS]


def simulate(
    sur: Surrogate,
    base: SearchSpace,
    design: Design,
    *,
    configs: int,
    slots: int,
    seed: int,
    spread: float = 1.0,
    journal: bool = False,
) -> dict[str, Any]:
    """One replay at scale. `journal`: the searcher's studies on an Optuna journal file in a
    temporary folder, as a real search keeps them (STORAGE/NAME/optuna.journal), not in memory."""
    from s9tune.search.experiment.record import ExperimentRef
    from s9tune.search.searcher.journal import StudyStore

    table = sur.table
    space = design_space(base, design, configs=configs, seed=seed, longest=table.longest)
    with tempfile.TemporaryDirectory(prefix="s9replay-") as tmp:
        store = None
        if journal:
            (Path(tmp) / "e").mkdir()
            store = StudyStore(ExperimentRef(tmp, "e").folder)
        searcher, scheduler, trials = build_search(space, slots=slots, store=store)
        np.random.seed(seed)
        ctrl = TableController(
            searcher,
            scheduler,
            Oracle(sur, np.random.default_rng(seed), draw_times=True, spread=spread),
            slots=slots,
            max_trials=trials,
        )
        t0 = time.perf_counter()
        out = ctrl.run()
        wall = time.perf_counter() - t0
        written = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    driver = sum(out.driver_s.values())
    finished = sum(r.trial.status == "TERMINATED" for r in out.runs)
    suggest = ctrl.suggest_s
    tenth = max(1, len(suggest) // 10)
    return {
        "design": design.name,
        "configs": configs,
        "slots": slots,
        "spread": spread,
        "studies": "journal" if journal else "memory",
        "journal_bytes": written,
        "runs": len(out.runs),
        "epochs": out.epochs,
        "makespan_epochs": out.makespan,
        "busy": out.busy,
        "idle_waiting": out.idle["waiting"],
        "idle_draining": out.idle["draining"],
        "driver_s": driver,
        "replay_wall_s": wall,
        "driver_s_per_finished_run": driver / max(finished, 1),
        "decisions": sum(out.calls.values()),
        "driver_s_per_decision": driver / max(sum(out.calls.values()), 1),
        "by_call": {k: {"calls": out.calls[k], "mean_ms": 1e3 * v / out.calls[k]} for k, v in out.driver_s.items()},
        "suggest_ms_first_tenth": 1e3 * float(np.mean(suggest[:tenth])),
        "suggest_ms_last_tenth": 1e3 * float(np.mean(suggest[-tenth:])),
    }


def peak_memory(sur: Surrogate, base: SearchSpace, design: Design, *, configs: int, slots: int, seed: int) -> int:
    """Peak bytes Python allocated over one replay: searcher, scheduler, Trial objects."""
    tracemalloc.start()
    simulate(sur, base, design, configs=configs, slots=slots, seed=seed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return int(peak)


def driver_limit(row: dict[str, Any], run_s: float) -> float:
    """Slots at which the driver is busy all the time: each slot ends a run every `run_s`
    seconds on average, and each finished run costs the driver `driver_s_per_finished_run`."""
    return run_s / row["driver_s_per_finished_run"]


def describe(row: dict[str, Any], run_s: float) -> str:
    mem = f", peak {row['peak_bytes'] / 2**20:.1f} MiB" if "peak_bytes" in row else ""
    return (
        f"{row['design']:38s} {row['configs']:5d} configs {row['slots']:4d} slots, spread {row['spread']:g}, "
        f"studies in {row['studies']}: "
        f"{row['runs']:5d} runs, busy {row['busy']:.2f}, idle waiting {row['idle_waiting']:.3f} draining "
        f"{row['idle_draining']:.3f}; driver {1e3 * row['driver_s_per_finished_run']:.2f} ms/run, "
        f"{1e3 * row['driver_s_per_decision']:.3f} ms/decision, suggest {row['suggest_ms_first_tenth']:.2f} -> "
        f"{row['suggest_ms_last_tenth']:.2f} ms{mem}; driver-bound above ~{row['driver_limit_slots']:.0f} slots "
        f"at {run_s:g} s/run"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=REPO / "benchmarks" / "design_table.json")
    p.add_argument("--space", type=Path, default=REPO / "search_spaces" / "default.yaml")
    p.add_argument("--sizes", default="64,256,1024", help="configs; slots = configs / 4")
    p.add_argument("--spreads", default="1,0", help="run-time spread: 1 as the table measured it, 0 all equal")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--memory", action="store_true", help="also a tracemalloc pass per size (slower)")
    p.add_argument("--journal", action="store_true", help="the studies on a journal file, as a real search keeps them")
    # 441 six-epoch runs per GPU-hour at 4 trials per H200 (RESULTS.md, GPU figures): 33 s per run and slot
    p.add_argument("--run-s", type=float, default=33.0, help="seconds of one run on a slot: the driver limit's scale")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sur, base = Surrogate(Table.load(args.table), "rbf"), load_space(args.space)
    times = sur.table.epoch_time
    rows, load0 = [], list(os.getloadavg())
    spreads = [float(x) for x in args.spreads.split(",")]
    for spread in spreads:
        for n in (int(x) for x in args.sizes.split(",")):
            for design in scale_designs(base, sur.table.longest):
                kw = {"configs": n, "slots": max(1, n // 4), "seed": args.seed}
                row = simulate(sur, base, design, spread=spread, journal=args.journal, **kw)
                if args.memory and spread == spreads[0]:  # memory does not depend on run times
                    row["peak_bytes"] = peak_memory(sur, base, design, **kw)
                row["driver_limit_slots"] = driver_limit(row, args.run_s)
                rows.append(row)
                print(describe(row, args.run_s), flush=True)
    out = {
        "command": " ".join(["python", "benchmarks/replay_scale.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "load_avg_start": load0, "load_avg_end": list(os.getloadavg())},
        "run_s": args.run_s,
        "epoch_time_spread": {
            "cv": float(times.std() / times.mean()),
            "p90_over_p10": float(np.percentile(times, 90) / np.percentile(times, 10)),
        },
        "rows": rows,
    }
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
