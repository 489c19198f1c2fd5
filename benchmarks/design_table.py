"""A tabular benchmark of the default search space: every config trained once per seed on a
COMPLETE OneCycle schedule at every budget a search design needs, with the per-epoch validation
curve of the longest schedule, each run scored on the validation split (what a search selects
on) and on the slice's test batch (the evaluation split, which no design ever selects on).

Configs: the space's baseline first, then a scrambled Sobol sample of the space. Training is
s9tune's own `engine.train` on one `data.load_splits` split; a run's seed changes only its
initialisation and augmentation, as `TrainConfig.seed` does in a search.

    nohup nice -n 19 python benchmarks/design_table.py --out benchmarks/design_table.json \
        --log design_table.log &

Every finished run is appended to OUT's `.runs.jsonl` at once; a restart skips the runs already
there, so an interrupted build resumes where it stopped. `--check N` retrains N recorded runs
from their config and seed and compares them with the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from s9tune.config import TrainConfig
from s9tune.search.space.space import SearchSpace, load_space

logger = logging.getLogger("design_table")
REPO = Path(__file__).resolve().parents[1]
FORMAT = 1
_WORKER: dict[str, Any] = {}  # one process's splits and fixed config, set once by _init_worker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", type=Path, default=REPO / "search_spaces" / "default.yaml")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("S9TUNE_MINI_DIR", "data")))
    p.add_argument("--configs", type=int, default=64, help="Sobol points (the baseline comes on top)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", default="1,2,8", help="epochs of the complete schedules; the last is the longest")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-subset", type=int, default=1536)
    p.add_argument("--val-size", type=float, default=0.25)
    p.add_argument("--data-path", default="tensor", choices=("tensor", "albumentations"))
    p.add_argument("--sobol-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--out", type=Path, required=True, help="the table (JSON); runs go to OUT.runs.jsonl")
    p.add_argument("--log", type=Path, help="progress log (appended)")
    p.add_argument("--check", type=int, default=0, help="retrain N recorded runs and compare, instead of building")
    p.add_argument("--check-seed", type=int, default=0)
    p.add_argument("--assemble", action="store_true", help="write the table from the runs done so far, train nothing")
    args = p.parse_args(argv)
    args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    return args


def unit_to_value(dist: Any, u: float) -> float:
    """A point of the unit interval on a distribution's scale (its normalised coordinate)."""
    if dist.type == "uniform":
        return float(dist.low + u * (dist.high - dist.low))
    if dist.type == "loguniform":
        return float(np.exp(np.log(dist.low) + u * (np.log(dist.high) - np.log(dist.low))))
    raise SystemExit(f"design_table: error: {dist.key}: only uniform and loguniform spaces are supported")


def sample_configs(space: SearchSpace, k: int, seed: int) -> list[dict[str, Any]]:
    """The baseline (config 0), then k scrambled Sobol points of the space."""
    from scipy.stats import qmc

    # the first k points of a 2^m draw: the same sequence, without scipy's balance warning
    m = max(0, (k - 1).bit_length())
    units = qmc.Sobol(d=len(space.dists), scramble=True, seed=seed).random_base2(m)[:k]
    out = []
    if space.baseline:
        out.append({"kind": "baseline", "params": dict(space.baseline)})
    for row in units:
        params = {d.key: round(unit_to_value(d, float(u)), 6) for d, u in zip(space.dists, row, strict=True)}
        out.append({"kind": "sobol", "params": params})
    return out


def fixed_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        width=args.width,
        batch_size=args.batch_size,
        train_subset=args.train_subset,
        val_size=args.val_size,
        data_path=args.data_path,
        device="cpu",
        num_workers=0,
    )


def _init_worker(fixed: dict[str, Any], data_dir: str, threads: int) -> None:
    import torch

    from s9tune.data import load_splits

    torch.set_num_threads(threads)
    cfg = TrainConfig.from_dict(fixed)
    # one split for every run (seed 0, as a search loads it once); run seeds change training only
    _WORKER["splits"] = load_splits(data_dir, val_size=cfg.val_size, seed=0, train_subset=cfg.train_subset)
    _WORKER["fixed"] = cfg


def train_run(task: dict[str, Any]) -> dict[str, Any]:
    """One complete schedule: its validation curve, final validation and evaluation accuracy."""
    from s9tune.engine import score, train

    cfg = _WORKER["fixed"].with_overrides({**task["params"], "epochs": task["budget"], "seed": task["seed"]})
    t0 = time.perf_counter()
    run = train(cfg, _WORKER["splits"])
    res = run.result
    curve = [float(m.eval_accuracy) for m in res.history]
    diverged = res.status == "diverged"
    # a diverged run scores what the search's trainable reports for it (0.0) on both splits
    val = 0.0 if diverged else curve[-1]
    evaluation = 0.0 if diverged else score(run.model, run.loaders.test, run.device).accuracy
    curve += [0.0] * (task["budget"] - len(curve))
    return {
        **task,
        "val": val,
        "eval": float(evaluation),
        "val_curve": curve if task["budget"] == task["longest"] else None,
        "status": res.status,
        "train_s": round(res.train_s, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
        "load1": round(os.getloadavg()[0], 2),
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }


def run_key(r: dict[str, Any]) -> tuple[int, int, int]:
    return (int(r["config"]), int(r["seed"]), int(r["budget"]))


def all_tasks(configs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Config-major, so a build cut short holds whole configs (every seed and budget): a prefix
    of the Sobol sequence, itself a usable table."""
    return [
        {"config": i, "seed": s, "budget": b, "params": c["params"], "longest": args.budgets[-1]}
        for i, c in enumerate(configs)
        for s in range(args.seeds)
        for b in reversed(args.budgets)
    ]


def read_runs(path: Path) -> dict[tuple[int, int, int], dict[str, Any]]:
    """Finished runs; a line cut by an interruption is skipped and rerun."""
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "config" in r:  # not a session line
                done[run_key(r)] = r
    return done


def build(args: argparse.Namespace, configs: list[dict[str, Any]], runs_path: Path) -> None:
    done = read_runs(runs_path)
    todo = [t for t in all_tasks(configs, args) if run_key(t) not in done]
    total = len(done) + len(todo)
    logger.info("%d runs in the table, %d done, %d to go (%d workers)", total, len(done), len(todo), args.workers)
    t0, finished = time.time(), 0
    init = (fixed_config(args).to_dict(), str(args.data_dir), args.threads)
    with ProcessPoolExecutor(args.workers, initializer=_init_worker, initargs=init) as pool:
        queue = iter(todo)
        running: set[Future] = set()
        while True:
            while len(running) < 2 * args.workers and (task := next(queue, None)) is not None:
                running.add(pool.submit(train_run, task))
            if not running:
                break
            ready, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in ready:
                rec = fut.result()
                with runs_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                finished += 1
                rate = (time.time() - t0) / finished
                logger.info(
                    "%d/%d config %d seed %d budget %d: val %.4f eval %.4f (%.1f s, load %.2f); ~%.0f min left",
                    len(done) + finished,
                    total,
                    rec["config"],
                    rec["seed"],
                    rec["budget"],
                    rec["val"],
                    rec["eval"],
                    rec["wall_s"],
                    rec["load1"],
                    rate * (len(todo) - finished) / 60,
                )


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def session_record(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    return {
        "session": {
            "command": shlex.join([Path(sys.executable).name, *argv]),
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "git": git_sha(),
            "workers": args.workers,
            "threads": args.threads,
        }
    }


def assemble(args: argparse.Namespace, configs: list[dict[str, Any]], runs_path: Path) -> dict[str, Any]:
    """The table: per config, per seed, per budget (in `budgets` order) the validation and the
    evaluation accuracy; per config and seed the validation curve of the longest schedule."""
    done = read_runs(runs_path)
    sessions = [json.loads(line)["session"] for line in runs_path.read_text().splitlines() if '"session"' in line]

    def grid(field: str) -> list:
        return [
            [[done.get((i, s, b), {}).get(field) for b in args.budgets] for s in range(args.seeds)]
            for i in range(len(configs))
        ]

    longest = args.budgets[-1]
    curves = [[done.get((i, s, longest), {}).get("val_curve") for s in range(args.seeds)] for i in range(len(configs))]
    runs = list(done.values())
    cfg = fixed_config(args)
    return {
        "format": FORMAT,
        "complete": len(done) == len(configs) * args.seeds * len(args.budgets),
        "meta": {
            "sessions": sessions,
            "assembled": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(),
            "runs": len(runs),
            "train_s_total": round(sum(r["train_s"] for r in runs), 1),
            "wall_s_total": round(sum(r["wall_s"] for r in runs), 1),
            "load1_mean": round(float(np.mean([r["load1"] for r in runs])), 2) if runs else None,
        },
        "setup": {
            "fixed": cfg.to_dict(),
            "space_file": str(args.space.relative_to(REPO) if args.space.is_relative_to(REPO) else args.space),
            "dists": [d.to_record() for d in load_space(args.space).dists],
            "budgets": args.budgets,
            "seeds": list(range(args.seeds)),
            "sobol_seed": args.sobol_seed,
            "split_seed": 0,
            "eval_split": "the slice's test_batch (never selected on)",
        },
        "configs": [{"id": i, **c} for i, c in enumerate(configs)],
        "val": grid("val"),
        "eval": grid("eval"),
        "status": grid("status"),
        "train_s": grid("train_s"),
        "val_curve": curves,
    }


def check(args: argparse.Namespace, table: dict[str, Any]) -> int:
    """Retrain `args.check` recorded runs from their config and seed; 0 if all reproduce."""
    import torch

    fixed = TrainConfig.from_dict(table["setup"]["fixed"])
    _init_worker(fixed.to_dict(), str(args.data_dir), args.threads)
    budgets = table["setup"]["budgets"]
    cells = [
        (i, s, j) for i in range(len(table["configs"])) for s in table["setup"]["seeds"] for j in range(len(budgets))
    ]
    picks = random.Random(args.check_seed).sample(cells, min(args.check, len(cells)))
    bad = 0
    for i, s, j in picks:
        task = {"config": i, "seed": s, "budget": budgets[j], "params": table["configs"][i]["params"]}
        rec = train_run({**task, "longest": budgets[-1]})
        want = (table["val"][i][s][j], table["eval"][i][s][j])
        got = (rec["val"], rec["eval"])
        same = want == got and (j < len(budgets) - 1 or rec["val_curve"] == table["val_curve"][i][s])
        bad += not same
        logger.info(
            "config %d seed %d budget %d: table val %.4f eval %.4f, retrained %.4f %.4f: %s (torch threads %d)",
            i,
            s,
            budgets[j],
            *want,
            *got,
            "identical" if same else "DIFFERENT",
            torch.get_num_threads(),
        )
    logger.info("%d of %d retrained runs reproduce the table exactly", len(picks) - bad, len(picks))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.log:
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
    if args.check:
        return check(args, json.loads(args.out.read_text(encoding="utf-8")))
    configs = sample_configs(load_space(args.space), args.configs, args.sobol_seed)
    runs_path = args.out.with_suffix(".runs.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.assemble:
        with runs_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(session_record(args, ["benchmarks/design_table.py", *argv])) + "\n")
        build(args, configs, runs_path)
    table = assemble(args, configs, runs_path)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    logger.info("wrote %s (%d runs, complete: %s)", args.out, table["meta"]["runs"], table["complete"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
