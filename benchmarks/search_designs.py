"""Which search design finds the best OneCycle config per unit of compute? Real end-to-end
`s9tune search` runs (Ray Tune, OptunaSearch, the mini slice, 2 CPU slots), same space, several
searcher seeds per design:

* a  every config on the full schedule (halving with one budget): the reference
* b  ASHA, grace 1
* c  ASHA, grace E/2
* d  halving over complete schedules, budgets [E/4, E], keep 1/3

For each search: epochs trained, wall time, the fraction of slot-time trials were running, and
the config it picks. Every picked config is then retrained on the full schedule with fresh
seeds, so its quality is measured without the selection bias of the value that got it picked;
regret = the reference's best (so measured) minus the design's pick (so measured).

    python benchmarks/search_designs.py --json benchmarks/search_designs.json

Searches and retrains are stored in --json as they finish; `--resume` reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from _common import MINI_DIR, REPO, shipped_space

DESIGNS = {
    "a": ("full schedule for every config", lambda e: {"type": "halving", "budgets": [e]}),
    "b": ("ASHA, grace 1", lambda e: {"type": "asha", "grace_period": 1, "reduction_factor": 2}),
    "c": ("ASHA, grace E/2", lambda e: {"type": "asha", "grace_period": e // 2, "reduction_factor": 2}),
    "d": ("halving, budgets [E/4, E], keep 1/3", lambda e: {"type": "halving", "budgets": [e // 4, e], "keep": 0.33}),
}


def space_doc(args: argparse.Namespace, design: str, seed: int) -> dict[str, Any]:
    base = shipped_space(args.space)
    return {
        "num_samples": args.configs,
        "fixed": {
            "width": args.width,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "val_size": args.val_size,
            "device": "cpu",
            "num_workers": 0,
        },
        "space": {d.key: _dist_yaml(d) for d in base.dists},
        "baseline": base.baseline,
        "scheduler": DESIGNS[design][1](args.epochs),
        "searcher": {"type": "optuna", "seed": seed},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }


def _dist_yaml(d: Any) -> dict[str, Any]:
    rec = d.to_record()
    keep = {"choice": ("values",), "quniform": ("low", "high", "q")}.get(d.type, ("low", "high"))
    return {"type": d.type, **{k: rec[k] for k in keep}}


def busy_fraction(exp_dir: Path, slots: int) -> tuple[float, float]:
    """(busy fraction, span in s): trial time from first to last report over slots x span."""
    spans = []
    for f in exp_dir.glob("train_trial_*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return sum(e - s for s, e in spans) / (slots * (end - start)), end - start


def run_search(args: argparse.Namespace, design: str, seed: int, root: Path) -> dict[str, Any]:
    from s9tune.search.experiment import load_experiment

    name = f"{design}-s{seed}"
    space = root / f"{name}.yaml"
    space.write_text(yaml.safe_dump(space_doc(args, design, seed)))
    cmd = [
        sys.executable,
        "-m",
        "s9tune",
        "-q",
        "search",
        "--space",
        str(space),
        "--data-dir",
        str(args.data_dir),
        "--storage",
        str(root / "st"),
        "--name",
        name,
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"search {name} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    exp = load_experiment(str(root / "st" / name))
    best = exp.best()
    busy, span = busy_fraction(root / "st" / name, args.slots)
    return {
        "design": design,
        "seed": seed,
        "wall_s": wall,
        "trials_span_s": span,
        "busy_fraction": busy,
        "epochs_trained": sum(r.epochs for r in exp.rows),
        "runs": len(exp.rows),
        "picked": best.params,
        "picked_value_in_search": best.val_accuracy,
        "picked_budget": best.epochs,
    }


def key(params: dict[str, Any]) -> str:
    return json.dumps({k: round(v, 10) if isinstance(v, float) else v for k, v in sorted(params.items())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=MINI_DIR)
    ap.add_argument("--space", default="default", help="shipped space whose distributions and baseline are searched")
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=8, help="E, the full schedule")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--val-size", type=float, default=0.2)
    ap.add_argument("--seeds", default="0,1,2", help="searcher seeds")
    ap.add_argument("--designs", default="a,b,c,d")
    ap.add_argument("--eval-seeds", default="1,2", help="fresh training seeds for re-measuring each picked config")
    ap.add_argument("--slots", type=int, default=2, help="CPU slots (Ray starts with this machine's CPUs)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    eval_seeds = [int(s) for s in args.eval_seeds.split(",") if s]
    out: dict[str, Any] = {"searches": {}, "retrains": {}}
    if args.resume and args.json and args.json.exists():
        out.update(json.loads(args.json.read_text()))
    out["args"] = {k: str(v) for k, v in vars(args).items()}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for design in args.designs.split(","):
                name = f"{design}-s{seed}"
                if name in out["searches"]:
                    continue
                print(f"search {name} ...", file=sys.stderr, flush=True)
                out["searches"][name] = run_search(args, design, seed, Path(tmp))
                r = out["searches"][name]
                print(
                    f"  {r['epochs_trained']} epochs, {r['wall_s']:.0f} s, busy {r['busy_fraction']:.2f}, "
                    f"picked {r['picked']} ({r['picked_value_in_search']:.3f})",
                    file=sys.stderr,
                    flush=True,
                )
                save()
    picked = {key(r["picked"]) for r in out["searches"].values()}
    todo = sorted((k, s) for k in picked for s in eval_seeds if f"{s}|{k}" not in out["retrains"])
    if todo:
        print(f"re-measuring {len(todo)} picked config x seed on the full schedule", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(args.slots) as pool:
            futs = {pool.submit(_retrain_one, json.loads(k), s, vars(args)): (k, s) for k, s in todo}
            for f, (k, s) in futs.items():
                out["retrains"][f"{s}|{k}"] = f.result()
                save()
    report(out, args, eval_seeds)
    save()


def _retrain_one(params: dict[str, Any], seed: int, argd: dict[str, Any]) -> float:
    import torch

    from s9tune.config import TrainConfig
    from s9tune.data import load_splits
    from s9tune.engine import train

    torch.set_num_threads(1)
    cfg = TrainConfig(
        width=argd["width"],
        epochs=argd["epochs"],
        batch_size=argd["batch_size"],
        val_size=argd["val_size"],
        device="cpu",
        num_workers=0,
        seed=seed,
        **params,
    )
    splits = load_splits(argd["data_dir"], val_size=argd["val_size"], seed=0)  # the searches' split
    return float(train(cfg, splits).result.final_eval.accuracy)


def report(out: dict[str, Any], args: argparse.Namespace, eval_seeds: list[int]) -> None:
    measured = {}
    for k in {key(r["picked"]) for r in out["searches"].values()}:
        vals = [out["retrains"][f"{s}|{k}"] for s in eval_seeds if f"{s}|{k}" in out["retrains"]]
        if vals:
            measured[k] = vals
    # seed sigma of a single config: pooled within-config std over the fresh seeds
    within = [statistics.pvariance(v) * len(v) / (len(v) - 1) for v in measured.values() if len(v) > 1]
    sigma = statistics.mean(within) ** 0.5 if within else float("nan")
    mean = {k: statistics.mean(v) for k, v in measured.items()}
    refs = [mean[key(r["picked"])] for r in out["searches"].values() if r["design"] == "a" and key(r["picked"]) in mean]
    ref_best = max(refs) if refs else float("nan")
    rows = []
    full = None
    for design, (label, _) in DESIGNS.items():  # a first: the others are compared with its epochs
        rs = [r for r in out["searches"].values() if r["design"] == design]
        if not rs:
            continue
        epochs = statistics.mean(r["epochs_trained"] for r in rs)
        full = epochs if design == "a" else full
        regrets = [ref_best - mean[key(r["picked"])] for r in rs if key(r["picked"]) in mean]
        rows.append(
            (
                design,
                label,
                len(rs),
                epochs,
                statistics.mean(r["wall_s"] for r in rs),
                statistics.mean(r["busy_fraction"] for r in rs),
                regrets,
            )
        )
    out["summary"] = {
        "seed_sigma": sigma,
        "reference_best": ref_best,
        "rows": [
            {"design": d, "label": lb, "searches": n, "epochs": e, "wall_s": w, "busy": b, "regrets": rg}
            for d, lb, n, e, w, b, rg in rows
        ],
    }
    print(
        f"\nreference best (design a's picks, re-measured on {len(eval_seeds)} fresh seeds): {ref_best:.4f}; "
        f"seed sigma of one config: {sigma:.4f}"
    )
    print(f"{'design':<40}{'n':>3}{'epochs':>9}{'x a':>6}{'wall s':>8}{'busy':>6}{'regret mean':>13}{'max':>7}")
    for d, lb, n, e, w, b, rg in rows:
        ratio = e / full if full else float("nan")
        print(
            f"{d + ': ' + lb:<40}{n:>3}{e:>9.1f}{ratio:>6.2f}{w:>8.0f}{b:>6.2f}"
            f"{statistics.mean(rg) if rg else float('nan'):>13.4f}{max(rg) if rg else float('nan'):>7.4f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
