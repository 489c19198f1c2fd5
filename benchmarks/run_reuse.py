"""What a reused process keeps from one run to the next: several `fit()` runs of the same shapes
in one process, as a search trial's reused Ray actor runs them, each timed by phase.

A search packs short runs into reused actors; what a run costs beyond its steady epochs is its
fixed cost. This measures, per run in the sequence: set-up before the first epoch (model to the
device, optimizer, scheduler), the first epoch's extra time over a steady one (cuDNN autotuning,
allocator warm-up, with --compile the compile), the steady epoch, evaluation, and the whole run.
Run 1 pays what a new process pays; runs 2.. show what the process kept (cuDNN's autotuned
algorithms, the CUDA context, with --compile Dynamo's compiled graphs, which a new model of the
same structure reuses when its parameters are graph inputs).

    python benchmarks/run_reuse.py --runs 4 --epochs 3 --json out.json            # CUDA, width 64
    python benchmarks/run_reuse.py --runs 4 --epochs 3 --compile --json out.json
    python benchmarks/run_reuse.py --quick                                        # any machine

Data are random uint8 images of CIFAR's shape; speed does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s9tune.augment import make_loaders
from s9tune.config import TrainConfig
from s9tune.data import CLASSES, Splits
from s9tune.engine import fit, resolve_device
from s9tune.model import build_model


def random_splits(train: int, test: int, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)

    def labels(n: int) -> np.ndarray:
        return rng.integers(0, 10, size=n).astype(np.int64)

    empty = np.zeros((0, 32, 32, 3), np.uint8)
    return Splits(
        train_x=images(train),
        train_y=labels(train),
        val_x=empty,
        val_y=np.zeros(0, np.int64),
        test_x=images(test),
        test_y=labels(test),
        classes=CLASSES,
    )


def one_run(cfg: TrainConfig, splits: Splits, device: torch.device) -> dict[str, Any]:
    """One run as a trial runs it: loaders and model built anew, then fit()."""
    t0 = time.perf_counter()
    loaders = make_loaders(cfg, splits, device)
    model = build_model(cfg, num_classes=len(splits.classes))
    built = time.perf_counter()
    res = fit(cfg, model, loaders, device)
    end = time.perf_counter()
    epochs = [m.epoch_s for m in res.history]
    evals = [m.eval_s for m in res.history]
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    in_epochs = sum(epochs) + sum(evals)
    return {
        "build_s": built - t0,
        "fit_s": res.wall_s,
        "setup_s": res.wall_s - in_epochs,  # inside fit(), before and between the epochs
        "first_epoch_extra_s": epochs[0] - steady,
        "steady_epoch_s": steady,
        "eval_s_per_epoch": statistics.median(evals),
        "run_s": end - t0,
        "steady_images_per_s": res.train_images / res.epochs / steady if steady > 0 else None,
        "status": res.status,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--eval-images", type=int, default=10_000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model of every run")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny settings on any machine (a dry run)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.eval_images, args.width, args.batch_size, args.epochs = 256, 64, 4, 64, 2
        args.runs = min(args.runs, 3)
    if min(args.runs, args.epochs, args.images, args.eval_images, args.width, args.batch_size) < 1:
        ap.error("every count must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = TrainConfig(
        width=args.width,
        batch_size=args.batch_size,
        epochs=args.epochs,
        val_size=0.0,
        device=args.device,
        compile=args.compile,
    )
    device = resolve_device(cfg)
    splits = random_splits(args.images, args.eval_images)
    runs = []
    for k in range(args.runs):
        row = one_run(cfg.with_overrides({"seed": k}), splits, device)
        runs.append(row)
        print(
            f"run {k + 1}/{args.runs}: {row['run_s']:.2f} s in all, set-up {row['setup_s']:.2f} s, "
            f"first-epoch extra {row['first_epoch_extra_s']:.2f} s, steady epoch {row['steady_epoch_s']:.3f} s, "
            f"eval {row['eval_s_per_epoch']:.3f} s/epoch",
            flush=True,
        )
    out = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "width": args.width,
        "batch_size": args.batch_size,
        "images": args.images,
        "epochs": args.epochs,
        "compile": args.compile,
        "runs": runs,
        # what a reused process saves per run: run 1's fixed cost minus a later run's
        "kept_s": (runs[0]["run_s"] - statistics.median(r["run_s"] for r in runs[1:])) if len(runs) > 1 else None,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
