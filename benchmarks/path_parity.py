"""Does the fast tensor augmentation path lose accuracy against the albumentations reference?

Trains the same config with `data_path=albumentations` and `data_path=tensor` over several seeds
on the mini slice and prints test accuracy mean ± std per path. On a GPU run
it at width 64; on the CPU at a small width.

    python benchmarks/path_parity.py --width 16 --epochs 5 --batch-size 128 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import MINI_DIR

from s9tune.config import TrainConfig
from s9tune.data import load_splits
from s9tune.engine import score, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=MINI_DIR)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    splits = load_splits(args.data_dir, val_size=0.0, seed=0)
    results: dict[str, list[float]] = {}
    for path in ("albumentations", "tensor"):
        for seed in range(args.seeds):
            cfg = TrainConfig(
                width=args.width,
                epochs=args.epochs,
                batch_size=args.batch_size,
                val_size=0.0,
                seed=seed,
                data_path=path,
                device=args.device,
            )
            t = time.perf_counter()
            run = train(cfg, splits)
            acc = score(run.model, run.loaders.test, run.device).accuracy
            results.setdefault(path, []).append(acc)
            print(
                f"{path:<15} seed {seed}  test accuracy {100 * acc:6.2f}%  ({time.perf_counter() - t:.1f} s)",
                flush=True,
            )
    print()
    for path, accs in results.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{path:<15} {100 * statistics.mean(accs):6.2f}% ± {100 * sd:.2f}% over {len(accs)} seeds")
    diff = statistics.mean(results["tensor"]) - statistics.mean(results["albumentations"])
    print(f"tensor - albumentations: {100 * diff:+.2f} points")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
