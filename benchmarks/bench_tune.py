"""Tune overhead: one trial inside Ray Tune vs the same `fit()` outside it, startup time, slot
ramp-up, and how the data set reaches trials (object store vs reading the files again).

    python benchmarks/bench_tune.py [--width 16] [--epochs 3] [--train-subset 2048]

Goals: in-Tune throughput >= 0.9x of plain fit(); startup <= 15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from _common import MINI_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=MINI_DIR)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-subset", type=int, default=2048)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray

    from s9tune.api import run_search
    from s9tune.config import TrainConfig
    from s9tune.data import load_splits
    from s9tune.engine import train
    from s9tune.options import SearchOptions

    fixed = {
        "width": args.width,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_subset": args.train_subset,
        "val_size": 0.2,
        "device": "cpu",
    }
    cfg = TrainConfig(**fixed)
    t = time.perf_counter()
    splits = load_splits(args.data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    load_s = time.perf_counter() - t

    # 1. plain fit(), same process, same threads as one 2-CPU trial
    run = train(cfg, splits)
    plain_ips = [m.images_per_s for m in run.result.history[1:]] or [run.result.history[0].images_per_s]

    # 2. the same config as a one-trial Tune search (2 CPUs), then two 1-CPU trials for ramp-up
    out: dict = {"load_from_disk_s": load_s, "plain_fit_images_per_s": statistics.mean(plain_ips)}
    with tempfile.TemporaryDirectory() as tmp:
        for label, n, cpus in (("one_trial", 1, 2), ("two_slots", 2, 1)):
            doc = {
                "num_samples": n,
                "fixed": fixed,
                "space": {"seed": {"type": "choice", "values": [0, 1]}},
                "baseline": {"seed": 0},
                "scheduler": {"grace_period": args.epochs},
                "resources": {"cpus_per_trial": cpus},
            }
            space_file = Path(tmp) / f"{label}.yaml"
            space_file.write_text(yaml.safe_dump(doc))
            t0 = time.time()
            res = run_search(SearchOptions(space=space_file, data_dir=args.data_dir, storage=f"{tmp}/st", name=label))
            ray.shutdown()
            starts, ips = [], []
            for d in Path(res.path).glob("train_trial_*"):
                rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
                first = rows[0]
                # the trial began training when its first epoch (train + eval) started
                starts.append(first["timestamp"] - first["time_this_iter_s"] - t0)
                ips += [r["images_per_s"] for r in rows[1:]] or [first["images_per_s"]]
            out[f"{label}_startup_s"] = min(starts)
            out[f"{label}_last_trial_start_s"] = max(starts)
            out[f"{label}_images_per_s"] = statistics.mean(ips)

    # 3. how trials get the data: object store (what s9tune does) vs each trial reading the files
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ref = ray.put(splits)

    @ray.remote(num_cpus=1)
    def fetch(s) -> float:
        return float(s.train_x.nbytes)

    @ray.remote(num_cpus=1)
    def read_files(path: str) -> float:
        t = time.perf_counter()
        load_splits(path, val_size=0.2, seed=0, train_subset=args.train_subset)
        return time.perf_counter() - t

    ray.get(fetch.remote(ref))  # warm a worker
    t = time.perf_counter()
    ray.get([fetch.remote(ref) for _ in range(4)])
    out["object_store_4_trials_s"] = time.perf_counter() - t
    out["read_files_per_trial_s"] = statistics.mean(ray.get([read_files.remote(str(args.data_dir)) for _ in range(4)]))
    ray.shutdown()

    out["tune_vs_plain"] = out["one_trial_images_per_s"] / out["plain_fit_images_per_s"]
    print(f"{'measure':<42}{'value':>12}")
    for k, v in out.items():
        print(f"{k:<42}{v:>12.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **out}, indent=2))


if __name__ == "__main__":
    main()
