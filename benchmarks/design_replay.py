"""Which search design finds the best config per epoch of compute, and when does re-evaluating
the top configs on more seeds pay? A replay of s9tune's shipped searcher (StudySearch: TPE,
halving and the re-evaluation step inside it; SearchASHA) against the design table
(design_table.py), in simulated epoch-time on asynchronous slots; the pick and its certainty
come from s9tune's own results code (Experiment.best, Experiment.certainty).

One cell per design, surrogate, noise scale and total compute:
- every run draws independent seed noise at the measured, config-aware level times the noise
  scale (replay_table.NoiseModel; the config means stay as they are);
- the design runs with n and n + 1 configs on the same replay seeds, mixed with the weight that
  makes their mean epochs equal the total (matched compute: the same expected epochs);
- replays are paired by replay seed across designs, so each design's regret minus the default's
  has a replay CI; `--tables` bootstrap tables (the table's configs drawn with replacement, the
  surrogate and noise model refitted on each) give the table's share of the uncertainty, and a
  CI with it (`ci_with_table`; replay_stats.with_table says how).

    python benchmarks/design_replay.py --reps 100 --seed 11 --noise-scales 1,0.1 --json OUT

The candidate designs come from the pre-registered plan (benchmarks/design_plan.json);
`--stage selection|confirmation` takes that stage's seeds and sizes from the plan and records
the plan's commit; `--grid` replays the earlier grid of designs instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from replay_sim import Oracle, TableController, as_experiment
from replay_table import Surrogate, Table

from s9tune.errors import S9Error
from s9tune.search.space.sections import ReevalSpec
from s9tune.search.space.space import METRIC, MODE, SEED_KEY, SchedulerSpec, SearchSpace, load_space

logger = logging.getLogger("design_replay")
REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "benchmarks" / "design_plan.json"
SELECTION = REPO / "benchmarks" / "design_select.json"  # the selection's output, committed before the confirmation
SHIPPED = "shipped"  # the prefix of the shipped default's name in the grid


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
    reeval_seeds: int = 0  # how many more seeds each
    auto: bool = False  # `reevaluate: auto` in place of a fixed step
    confidence: float = 0.9  # auto's
    cap: float = 0.2  # auto's
    margin: float = 0.25  # auto's
    shipped: bool = False  # the default space's own design, the reference of paired differences

    @property
    def spec(self) -> ReevalSpec:
        if self.auto:
            return ReevalSpec(auto=True, confidence=self.confidence, cap=self.cap, margin=self.margin)
        return ReevalSpec(self.reeval, self.reeval_seeds) if self.reeval else ReevalSpec()

    @property
    def key(self) -> str:
        """What makes two designs the same search (not their names)."""
        return json.dumps(
            [self.scheduler, self.sampler, self.startup, self.spec.to_record()], sort_keys=True, default=list
        )


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
        if len(sched["budgets"]) == 1:
            return "TPE, full schedules"
        budgets = ", ".join(_fraction(b, e) for b in sched["budgets"])
        return f"halving [{budgets}] keep {sched['keep']:g}"
    grace = _fraction(sched["grace_period"], e)
    return f"ASHA r{sched['reduction_factor']:g} grace {grace} {sched['brackets']} bracket(s)"


def reeval_label(spec: ReevalSpec) -> str:
    """ ", top-3 re-evaluated on 1 seed", ", auto re-evaluation" or ""."""
    if spec.auto:
        return ", auto re-evaluation"
    if not spec.on:
        return ""
    return f", top-{spec.top} re-evaluated on {spec.seeds} seed{'s' * (spec.seeds > 1)}"


def base_of(name: str) -> str:
    """The design a variant is paired with in `vs_base`: without its re-evaluation step, or
    with s9tune's TPE start-up count in place of Optuna's 10."""
    if ", TPE startup 10" in name or "TPE (startup 10)" in name:
        return name.replace(", TPE startup 10", "").replace("TPE (startup 10)", "TPE")
    name = name.removeprefix(f"{SHIPPED}: ")
    return name.split(", top-")[0].split(", auto re-evaluation")[0]


def designs(e: int, shipped: dict[str, Any], reeval: ReevalSpec | None = None) -> list[Design]:
    """The earlier grid (`--grid`; replay_scale.py): the shipped design (its scheduler and the
    space's re-evaluation step) and its variants first, then the grid; a grid design equal to
    the shipped one is left out."""
    q, h = max(1, e // 4), max(1, e // 2)
    full = {"type": "halving", "budgets": (e,), "keep": 1.0}
    spec = reeval if reeval is not None and reeval.on else ReevalSpec()
    label, fam = _label(shipped, e), shipped["type"]
    name = f"{SHIPPED}: {label}{reeval_label(spec)}"
    kw = {"reeval": spec.top, "reeval_seeds": spec.seeds, "auto": spec.auto}
    out = [
        Design(name, fam, shipped, shipped=True, **kw),
        Design(f"{name}, TPE startup 10", fam, shipped, startup="10", **kw),
        Design(label, fam, shipped),
        Design(f"{label}, TPE startup 10", fam, shipped, startup="10"),
    ]
    for k, m in ((2, 2), (3, 2), (3, 1)):
        out.append(Design(f"{label}{reeval_label(ReevalSpec(k, m))}", fam, shipped, reeval=k, reeval_seeds=m))
    out.append(Design(f"{label}, auto re-evaluation", fam, shipped, auto=True))
    out += [
        Design("random, full schedules", "full", full, sampler="random"),
        Design("TPE, full schedules", "full", full),
        Design("TPE (startup 10), full schedules", "full", full, startup="10"),
    ]
    for k, m in ((2, 2), (3, 2), (3, 1)):
        out.append(
            Design(f"TPE, full schedules{reeval_label(ReevalSpec(k, m))}", "full", full, reeval=k, reeval_seeds=m)
        )
    # the default before 2026-11-29, so it stays in every comparison
    out.append(Design("halving [E/4, E] keep 0.34", "halving", {"type": "halving", "budgets": (q, e), "keep": 0.34}))
    third = {"type": "halving", "budgets": (q, e), "keep": 1 / 3}
    out.append(
        Design("halving [E/4, E] keep 1/3, top-3 re-evaluated on 2 seeds", "halving", third, reeval=3, reeval_seeds=2)
    )
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
    seen = {out[0].key}
    kept = out[:1]
    for d in out[1:]:
        if d.key not in seen:
            seen.add(d.key)
            kept.append(d)
    return kept


def plan_designs(plan: dict[str, Any], space: SearchSpace, e: int) -> list[Design]:
    """The plan's candidates (schedules given as fractions of E), in the plan's order, the one
    equal to the shipped space's design marked `shipped` (or added first if none is)."""
    out = []
    for c in plan["candidates"]:
        sched = dict(c["scheduler"])
        if sched["type"] == "asha":
            sched["grace_period"] = max(1, round(sched.pop("grace_fraction") * e))
        elif sched["type"] == "halving":
            sched["budgets"] = tuple(max(1, round(f * e)) for f in sched.pop("budget_fractions"))
        spec = c.get("reevaluate") or {}
        kw = (
            {"auto": True, "confidence": spec["confidence"], "cap": spec["cap"], "margin": spec["margin"]}
            if spec.get("auto")
            else {}
        )
        if spec and not spec.get("auto"):
            kw = {"reeval": spec["top"], "reeval_seeds": spec["seeds"]}
        out.append(Design(c["name"], c["family"], sched, **kw))
    shipped = Design("", "", shipped_scheduler(space, e), **_spec_kw(space.reevaluate))
    for i, d in enumerate(out):
        if d.key == shipped.key:
            out[i] = dataclasses.replace(d, shipped=True)
            return out
    label = f"{SHIPPED}: {_label(shipped.scheduler, e)}{reeval_label(space.reevaluate)}"
    return [dataclasses.replace(shipped, name=label, family=shipped.scheduler["type"], shipped=True), *out]


def _spec_kw(spec: ReevalSpec) -> dict[str, Any]:
    if spec.auto:
        return {"auto": True, "confidence": spec.confidence, "cap": spec.cap, "margin": spec.margin}
    return {"reeval": spec.top, "reeval_seeds": spec.seeds} if spec.on else {}


def design_space(base: SearchSpace, design: Design, *, configs: int, seed: int, longest: int) -> SearchSpace:
    """The shipped space with the table's schedule length, the design's scheduler and its
    re-evaluation step."""
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
        reevaluate=design.spec,
    )


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


def replay(
    sur: Surrogate, base: SearchSpace, design: Design, *, configs: int, rep: int, slots: int, noise_scale: float = 1.0
) -> dict[str, Any]:
    """One search of `design` with `configs` configs, replay seed `rep`: its regret, compute,
    and what s9tune's results would state about its pick, beside the truth."""
    table = sur.table
    space = design_space(base, design, configs=configs, seed=rep, longest=table.longest)
    searcher, scheduler, trials = build_search(space, slots=slots, sampler=make_sampler(design, rep))
    np.random.seed(rep % 2**32)  # ASHA draws each trial's bracket from NumPy's global generator
    oracle = Oracle(sur, np.random.default_rng(rep), noise_scale=noise_scale, key=rep)
    out = TableController(searcher, scheduler, oracle, slots=slots, max_trials=trials).run()
    reruns = [r for r in out.runs if SEED_KEY in r.trial.config]
    row: dict[str, Any] = {
        "epochs": out.epochs,
        "rerun_epochs": sum(r.epoch for r in reruns),
        "runs": len(out.runs),
        "reruns": len(reruns),
        "makespan": out.makespan,
        "busy": out.busy,
        "stalled": out.stalled,
    }
    exp = as_experiment(out, space)
    try:
        best = exp.best()
    except S9Error:  # no pick: scored as the worst config
        return {**row, "regret": sur.best_quality - float(sur.mean[:, -1].min()), "failed": True, "optimism": None}
    pick = next(r.config_id for r in exp.rows if r.trial_id == best.trial_id)
    truth = {cid: float(d.mu[sur.val_longest]) for cid, d in oracle.draws.items()}
    row |= {
        "regret": sur.best_quality - oracle.draws[pick].quality,
        "failed": False,
        # the pick's value as the search saw it (a mean, with reruns) minus its expected validation
        "optimism": best.val_accuracy - truth[pick],
    }
    cert = exp.certainty()
    if cert is not None and cert.noise.measured:
        lo, hi = cert.ci95
        base_id = exp.baseline_id()
        # configs near one table config share its mean under nn: a tie is neither better nor worse
        runner, based = cert.runner_up, cert.p_beats_baseline is not None
        row |= {
            "p_runner": cert.p_beats_runner_up,
            "better_runner": None if runner is None or truth[pick] == truth[runner] else truth[pick] > truth[runner],
            "covered": lo <= truth[pick] <= hi,
            "p_base": cert.p_beats_baseline,
            "better_base": None if not based or truth[pick] == truth[base_id] else truth[pick] > truth[base_id],
            "df": cert.noise.df,
            "runs": [cert.runs, len(exp.full_values().get(runner, [])) if runner else 0],
            # the σ stated against the pick's own level in the oracle
            "sigma_ratio": (cert.noise.sigma or 0.0)
            / (noise_scale * sur.noise.sd[oracle.draws[pick].c, sur.val_longest]),
        }
    return row


def planned_epochs(design: Design, configs: int, e: int) -> float | None:
    """A halving design's epochs, exact before it runs (None when they depend on the run)."""
    if design.scheduler["type"] != "halving" or design.auto:
        return None
    spec = SchedulerSpec("halving", budgets=tuple(design.scheduler["budgets"]), keep=design.scheduler["keep"])
    sizes = spec.rung_sizes(configs)
    return float(sum(n * b for n, b in zip(sizes, spec.budgets, strict=True)) + design.spec.runs(sizes[-1]) * e)


def git_commit(path: Path) -> dict[str, Any]:
    """The commit that last changed `path`, and whether the file differs from it now."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    commit = git("log", "-1", "--format=%H %cI", "--", str(path))
    dirty = bool(git("status", "--porcelain", "--", str(path)))
    sha, _, when = commit.partition(" ")
    return {
        "path": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        "commit": sha or None,
        "committed": when or None,
        "uncommitted_changes": dirty,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=REPO / "benchmarks" / "design_table.json")
    p.add_argument("--space", type=Path, default=REPO / "search_spaces" / "default.yaml")
    p.add_argument("--plan", type=Path, default=PLAN, help="the pre-registered plan: candidates, rule, seeds")
    p.add_argument(
        "--stage", choices=("selection", "confirmation"), help="take this stage's seeds and sizes from the plan"
    )
    p.add_argument("--grid", action="store_true", help="the earlier grid of designs instead of the plan's candidates")
    p.add_argument("--reps", type=int, default=100, help="replays per cell on the table itself")
    p.add_argument("--seed", type=int, default=1, help="replay seeds seed*100000 + i; bootstrap tables from it too")
    p.add_argument("--tables", type=int, default=8, help="bootstrap tables per cell (0: replay-only CIs)")
    p.add_argument("--table-reps", type=int, default=16, help="replays per bootstrap table")
    p.add_argument("--noise-scales", default="1,0.25,0.1,0.05", help="seed noise times these (config means unchanged)")
    p.add_argument("--surrogates", default="rbf,nn", help="what answers a config between table points")
    p.add_argument("--slots", type=int, default=4, help="trials at once (the default: 4 per GPU, one GPU)")
    p.add_argument("--totals", default="19,32", help="compute budgets in full-schedule runs (19 = the default's)")
    p.add_argument("--calib", type=int, default=8, help="replays per candidate size when finding n (ASHA, auto)")
    p.add_argument("--configs", type=int, default=0, help="every design with this many configs, not matched compute")
    p.add_argument("--designs", default="", help="only designs whose name contains one of these (comma-separated)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--rows", action="store_true", help="also every replay's outcome in the JSON (large)")
    args = p.parse_args(argv)
    if args.stage:
        stage = json.loads(args.plan.read_text(encoding="utf-8"))[args.stage]
        for key in ("reps", "seed", "tables", "table_reps", "calib"):
            setattr(args, key, int(stage[key]))
        args.noise_scales = ",".join(f"{x:g}" for x in stage["noise_scales"])
        args.surrogates = ",".join(stage["surrogates"])
        args.totals = ",".join(f"{x:g}" for x in stage["totals"])
    return args


def chosen_designs(args: argparse.Namespace, space: SearchSpace, e: int) -> list[Design]:
    if args.grid:
        every = designs(e, shipped_scheduler(space, e), space.reevaluate)
    else:
        every = plan_designs(json.loads(args.plan.read_text(encoding="utf-8")), space, e)
    wanted = [s.strip() for s in args.designs.split(",") if s.strip()]
    # the shipped design always runs: every other design is paired with it
    return [d for d in every if d.shipped or not wanted or any(s in d.name for s in wanted)]


def main(argv: list[str] | None = None) -> int:
    from replay_cells import run_all
    from replay_stats import assemble, decide, report_rows

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = Table.load(args.table)
    plan = git_commit(args.plan) if not args.grid else None
    if args.stage == "confirmation" and (plan is None or not plan["commit"] or plan["uncommitted_changes"]):
        raise SystemExit("design_replay: error: a confirmation runs only against a committed, unchanged plan")
    t0, load0 = time.time(), os.getloadavg()
    space = load_space(args.space)
    chosen = chosen_designs(args, space, table.longest)
    results = run_all(args, chosen)
    out = assemble(results, args=args, table=table)
    out = {
        "oracle": "independent",
        "default": next(d.name for d in chosen if d.shipped),
        "command": " ".join(["python", "benchmarks/design_replay.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "load_avg_start": list(load0), "load_avg_end": list(os.getloadavg())},
        "wall_s": round(time.time() - t0, 1),
        "plan": plan,
        "code": subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "stage": args.stage,
        "slots": args.slots,
        "reps": args.reps,
        "seed": args.seed,
        "tables": args.tables,
        "table_reps": args.table_reps,
        "table": table.summary(),
        **out,
    }
    if args.stage == "confirmation" and SELECTION.exists():
        out["decision"] = decide(json.loads(SELECTION.read_text(encoding="utf-8"))["selection"], out["selection"])
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print("\n".join(report_rows(out["cells"])))
    print(f"\n{args.reps} replays per cell, {args.tables} bootstrap tables x {args.table_reps}; {out['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
