"""The GPU session's headline figures, in one machine-readable file (benchmarks/gpu_results.json).

`gpu_session.sh product` leaves in its results folder: the 24-epoch train's
metrics.json / metrics.jsonl and its process time (train24_process_s.txt), and the shipped
default search's default_search.json (search_packing.py). This script reads them and writes:

    device, date, commit, retrain_24ep_fit_s, retrain_24ep_process_s, steady_train_img_s,
    mfu_dense_peak, default_search_wall_s, default_search_img_s, default_search_to_loop_ratio

plus the inputs each figure came from (flop per image, the peak used). A figure whose step did
not run (or ran on the CPU, QUICK=1) is null, never a guess.

    python benchmarks/gpu_results.py RESULTS_DIR --out benchmarks/gpu_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import REPO

KEYS = (
    "device",
    "date",
    "commit",
    "retrain_24ep_fit_s",
    "retrain_24ep_process_s",
    "steady_train_img_s",
    "mfu_dense_peak",
    "default_search_wall_s",
    "default_search_img_s",
    "default_search_to_loop_ratio",
)

# dense bf16 tensor-core peaks from the vendors' data sheets (SXM parts), FLOP/s
DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def dense_peak(device: str) -> float | None:
    return next((peak for name, peak in DENSE_BF16_PEAK.items() if name in device), None)


def flop_per_image(width: int = 64) -> float:
    """Forward + backward FLOP of one training image, counted by torch's FlopCounterMode on the
    real model (matmuls and convolutions; what a tensor-core peak is quoted in)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from s9tune.config import TrainConfig
    from s9tune.model import build_model

    model = build_model(TrainConfig(width=width))
    x = torch.zeros(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _commit() -> str | None:
    """The commit measured: $S9TUNE_COMMIT (the device machine gets a copy of the working tree
    without .git, so the session's command passes it), else this checkout's HEAD."""
    if os.environ.get("S9TUNE_COMMIT"):
        return os.environ["S9TUNE_COMMIT"]
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return res.stdout.strip() or None


def steady_rate(jsonl: Path) -> float | None:
    """Median training images/s over the epochs after the first (the first pays the warm-up)."""
    if not jsonl.is_file():
        return None
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in rows if r.get("epoch", 1) > 1 and r.get("images_per_s")]
    return statistics.median(rates) if rates else None


def collect(res: Path) -> dict[str, Any]:
    train = _json(res / "metrics.json") or {}
    on_gpu = train.get("gpu_peak_memory_bytes") is not None  # None off CUDA
    device = str(train.get("device")) if on_gpu else "cpu (a dry run, not a GPU figure)"
    process = res / "train24_process_s.txt"
    steady = steady_rate(res / "metrics.jsonl")
    search = ((_json(res / "default_search.json") or {}).get("results") or [None])[0]
    flop = flop_per_image(int(train.get("config", {}).get("width", 64)))
    peak = dense_peak(device)
    out: dict[str, Any] = {
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "retrain_24ep_fit_s": train.get("wall_s") if train.get("epochs") == 24 else None,
        "retrain_24ep_process_s": float(process.read_text()) if process.is_file() else None,
        "steady_train_img_s": steady,
        "mfu_dense_peak": steady * flop / peak if (steady and peak) else None,
        "default_search_wall_s": (search or {}).get("wall_s"),
        "default_search_img_s": (search or {}).get("aggregate_images_per_s"),
        "default_search_to_loop_ratio": None,
        "flop_per_image": flop,
        "dense_bf16_peak_flops": peak,
        "train_device": train.get("device"),
        "measured_on_gpu": on_gpu,
        "default_search": search,
    }
    if out["default_search_img_s"] and steady:
        out["default_search_to_loop_ratio"] = out["default_search_img_s"] / steady
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="the results folder gpu_session.sh filled")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    out = collect(args.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in KEYS}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
