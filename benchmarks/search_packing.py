"""How many trials share a GPU best, measured inside a real `s9tune search`: for each
--gpus-per-trial, a search runs for --time-limit seconds (then Ctrl-C, as a user would stop it)
and the script reports aggregate training images/s, runs finished per GPU-hour, the fraction of
slot-time trials were running, and each trial's peak GPU memory.

    python benchmarks/search_packing.py --data-dir D --gpus-per-trial 1,0.5,0.25 --time-limit 240
    python benchmarks/search_packing.py --data-dir D --space default --keep-scheduler --time-limit 300

The first form trains every config on one short complete schedule (--epochs), so the figures
are throughput; the second runs the shipped search as it is (its budgets, keep, num_samples) to
measure what a user gets from the default in the first minutes.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import MINI_DIR, REPO, shipped_space

HEADER = "gpus/trial  slots  runs done  epochs  agg img/s  runs/GPU-h  busy  peak mem/trial (max)"


def busy_fraction(exp_dir: Path, slots: int) -> tuple[float, float]:
    """(busy fraction, span in s): trial time from first to last report over slots x span."""
    spans = []
    for f in exp_dir.glob("train_trial_*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return sum(e - s for s, e in spans) / (slots * (end - start)), end - start


def space_doc(args: argparse.Namespace, gpus: float) -> dict[str, Any]:
    doc = yaml.safe_load(shipped_space(args.space).path.read_text())
    if args.width:
        doc["fixed"]["width"] = args.width
    if not args.keep_scheduler:
        doc["fixed"]["epochs"] = args.epochs
        doc["scheduler"] = {"type": "halving", "budgets": [args.epochs]}
        doc["num_samples"] = args.configs
        doc.pop("reevaluate", None)  # packing is measured on exactly `configs` runs
    if args.device:
        doc["fixed"]["device"] = args.device
    doc["resources"] = {"cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": gpus}
    return doc


def run(args: argparse.Namespace, gpus: float, root: Path) -> dict[str, Any]:
    name = f"g{gpus:g}".replace(".", "_")
    space = root / f"{name}.yaml"
    space.write_text(yaml.safe_dump(space_doc(args, gpus)))
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
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finished = True
    try:
        proc.wait(timeout=args.time_limit)
    except subprocess.TimeoutExpired:
        finished = False
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops the trials and saves the experiment
        proc.wait(timeout=300)
    wall = time.perf_counter() - started
    summary = summarize(root / "st" / name, gpus, round(1 / gpus) if gpus else args.slots, doc_epochs(space))
    if summary is None:
        raise SystemExit(
            f"no trial reported within {args.time_limit} s; raise --time-limit\n{proc.stderr.read()[-2000:]}"
        )
    # the whole command, Ray's start and the final export included: what a user waits for
    return {**summary, "wall_s": wall, "ran_to_the_end": finished and proc.returncode == 0}


def summarize(exp: Path, gpus: float, slots: int, epochs: int) -> dict[str, Any] | None:
    """The packing figures of one experiment folder (None if no trial reported)."""
    trials = []
    for d in exp.glob("train_trial_*"):
        if not (d / "result.json").exists():  # created, then stopped by Ctrl-C before it reported
            continue
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
        if rows:
            trials.append((json.loads((d / "params.json").read_text()).get("budget", epochs), rows))
    if not trials:
        return None
    busy, span = busy_fraction(exp, slots)
    rows = [r for _, rs in trials for r in rs]
    done = sum(rs[-1]["training_iteration"] >= budget for budget, rs in trials)
    gpu_hours = span / 3600 if gpus else 0.0  # one GPU in all
    return {
        "gpus_per_trial": gpus,
        "slots": slots,
        "runs_started": len(trials),
        "runs_done": done,
        "epochs": len(rows),
        "span_s": span,
        "aggregate_images_per_s": sum(r["images_per_s"] * r["epoch_s"] for r in rows) / span,
        "runs_per_gpu_hour": done / gpu_hours if gpu_hours else None,
        "busy_fraction": busy,
        "peak_memory_bytes_max": max(r.get("gpu_peak_memory_bytes") or 0 for r in rows) or None,
    }


def doc_epochs(space: Path) -> int:
    return int(yaml.safe_load(space.read_text())["fixed"]["epochs"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=MINI_DIR)
    ap.add_argument("--space", default="default", help="shipped space (search_spaces/NAME.yaml)")
    ap.add_argument("--gpus-per-trial", default="1,0.5,0.25")
    ap.add_argument("--cpus-per-trial", type=float, default=2)
    ap.add_argument("--slots", type=int, default=2, help="slots when --gpus-per-trial is 0 (CPU runs)")
    ap.add_argument("--epochs", type=int, default=2, help="the one complete schedule of each config (throughput runs)")
    ap.add_argument("--configs", type=int, default=16)
    ap.add_argument("--width", type=int, default=None, help="default: the space's")
    ap.add_argument("--device", default=None, help="e.g. cpu for a CPU check; default: the space's")
    ap.add_argument("--keep-scheduler", action="store_true", help="run the space's own scheduler and size")
    ap.add_argument("--time-limit", type=float, default=240, help="seconds per search before Ctrl-C")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in (float(x) for x in args.gpus_per_trial.split(",")):
            results.append(run(args, g, Path(tmp)))
    print(HEADER)
    for r in results:
        mem = f"{r['peak_memory_bytes_max'] / 2**30:.2f} GiB" if r["peak_memory_bytes_max"] else "-"
        per_h = f"{r['runs_per_gpu_hour']:.1f}" if r["runs_per_gpu_hour"] else "-"
        print(
            f"{r['gpus_per_trial']:>10g}  {r['slots']:>5}  {r['runs_done']:>9}  {r['epochs']:>6}  "
            f"{r['aggregate_images_per_s']:>9.0f}  {per_h:>10}  {r['busy_fraction']:.2f}  {mem:>20}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
