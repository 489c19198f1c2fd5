"""Training speed of `s9tune.engine.fit()` on the tensor data path, and how trials pack on a device.

Runs on any device: on CUDA it measures what a search trial costs (fit() brings bf16 autocast,
channels_last and fused SGD); on the CPU, `--quick` runs the same code at a tiny width so the
script is exercised in CI and cannot rot. Data are random uint8 images of CIFAR's shape
(50,000 x 32 x 32 x 3 by default): speed does not depend on pixel values.

Prints, and with --json writes:
  images/s (steady state: epochs after the first), epoch seconds, projected 24-epoch wall time
  at 50k images/epoch, first-epoch overhead (first epoch minus a steady one: with --compile
  that is the compile time, i.e. the first compiled steps, plus the recompile for a short last
  batch, minus normal steps; without it, cuDNN autotuning and allocator warm-up), peak memory
  (torch.cuda.max_memory_allocated on CUDA, the process's maxrss on the CPU), the data path's
  share of step time (one TensorLoader epoch alone: shuffle + gather + TensorAugment, over a
  training epoch), and a packing table: k copies of
  this benchmark started together in separate processes, each with --gpu-fraction 1/k
  (torch.cuda.set_per_process_memory_fraction), giving aggregate images/s (all steady epochs
  over one wall window: see aggregate_rate; a lower bound), the sum of per-process steady
  rates (an upper bound: it counts each at its own best moment) and per-process peak memory
  for k = 1, 2, 4, 8.

    python benchmarks/gpu_speed.py                         # CUDA: width 64, batch 512, 50k images
    python benchmarks/gpu_speed.py --compile --json out.json
    python benchmarks/gpu_speed.py --quick                 # any machine, well under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import sync

from s9tune.augment import make_loaders
from s9tune.callbacks import BaseCallback
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import fit, resolve_device
from s9tune.errors import S9Error
from s9tune.model import build_model, count_params
from s9tune.optim import make_optimizer

# importing torch (and s9tune, which adds little) raises the CPU high-water mark by most of a
# GiB; recorded so the CPU peak below can be read against it
MAXRSS_AFTER_IMPORT = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

CIFAR_TRAIN = 50_000
PROJECT_EPOCHS = 24
RESULT_PREFIX = "GPU_SPEED_RESULT "
METRICS_HEADER = "metric                                   value"
PACKING_HEADER = (
    "procs  mem fraction  aggregate img/s  sum of per-proc  per-proc img/s (min-max)  per-proc peak memory (max)"
)
JSON_KEYS = (
    "device",
    "device_name",
    "torch",
    "width",
    "params",
    "batch_size",
    "images",
    "epochs",
    "compile",
    "images_per_s",
    "epoch_s",
    "epoch_s_all",
    "eval_s",
    "first_epoch_overhead_s",
    "compile_s",
    "projected_24ep_s",
    "projected_24ep_with_eval_s",
    "peak_memory_bytes",
    "peak_memory_kind",
    "loader_epoch_s",
    "data_share",
    "checkpoint_bytes",
    "checkpoint_s",
    "checkpoint_share",
    "packing",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run for CI: width 4, batch 32, 128 images, packing 1,2")
    ap.add_argument("--width", type=int, default=None, help="default 64 (4 with --quick)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 512 (32 with --quick)")
    ap.add_argument(
        "--images", type=int, default=None, help=f"training images, default {CIFAR_TRAIN} (128 with --quick)"
    )
    ap.add_argument("--eval-images", type=int, default=None, help="default 10000 (32 with --quick)")
    ap.add_argument("--epochs", type=int, default=None, help="default 3 (2 with --quick); the first is warm-up")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (fit's cfg.compile)")
    ap.add_argument("--gpu-fraction", type=float, default=None, help="per-process CUDA memory fraction")
    ap.add_argument(
        "--packing",
        default=None,
        help="comma-separated process counts; default 1,2,4,8 on CUDA and 1,2 on the CPU; 0 = skip",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one packing process
    ap.add_argument("--barrier", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = args.quick
    seed_recipe = TrainConfig()  # the seed's net and batch: width 64, batch 512
    defaults = {
        "width": 4 if quick else seed_recipe.width,
        "batch_size": 32 if quick else seed_recipe.batch_size,
        "images": 128 if quick else CIFAR_TRAIN,
        "eval_images": 32 if quick else 10_000,
        "epochs": 2 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("width", "batch_size", "images", "eval_images", "epochs"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.gpu_fraction is not None and not 0 < args.gpu_fraction <= 1:
        ap.error("--gpu-fraction must lie in (0, 1]")
    return args


def rss_bytes(ru_maxrss: int) -> int:
    return int(ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024)  # Linux reports KiB


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "cpu_maxrss"


def random_splits(n_train: int, n_eval: int, seed: int) -> Splits:
    rng = np.random.default_rng(seed)
    empty_x, empty_y = np.empty((0, 32, 32, 3), np.uint8), np.empty((0,), np.int64)
    return Splits(
        rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.int64),
        empty_x,
        empty_y,
        rng.integers(0, 256, (n_eval, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, n_eval, dtype=np.int64),
    )


def wait_at_barrier(barrier: Path, timeout: float = 600.0) -> None:
    """Packing processes set up (imports, data, model) first and then start training together."""
    (barrier / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go signal in {barrier} after {timeout:.0f} s")
        time.sleep(0.02)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One fit() on the tensor path, then one loader-only epoch for the data path's share."""
    cfg = TrainConfig(
        width=args.width,
        batch_size=args.batch_size,
        epochs=args.epochs,
        val_size=0.0,
        seed=args.seed,
        device=device.type,
        data_path="tensor",
        compile=args.compile,
        gpu_memory_fraction=args.gpu_fraction,
    )
    splits = random_splits(args.images, args.eval_images, args.seed)
    loaders = make_loaders(cfg, splits, device)
    model = build_model(cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.barrier is not None:
        wait_at_barrier(args.barrier)
    stamps = EpochStamps()
    t_start = time.time()
    result = fit(cfg, model, loaders, device, [stamps])
    t_end = time.time()
    peak, peak_kind = peak_memory(device)  # before the loader-only pass below adds anything

    epoch_s = [m.epoch_s for m in result.history]
    eval_s = [m.eval_s for m in result.history]
    steady = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
    images_per_s = args.images / steady
    # with one epoch there is no steady epoch to subtract: the overhead is unknown (None)
    overhead = epoch_s[0] - steady if len(epoch_s) > 1 else None
    steady_eval = statistics.median(eval_s[1:]) if len(eval_s) > 1 else eval_s[0]
    eval_per_image = steady_eval / max(args.eval_images, 1)
    # the first evaluation compiles the eval-mode graph under --compile: a one-off cost as well
    eval_overhead = eval_s[0] - steady_eval if len(eval_s) > 1 else None
    epoch_50k = CIFAR_TRAIN / images_per_s
    projected = max(overhead or 0.0, 0.0) + PROJECT_EPOCHS * epoch_50k

    # the data path alone: shuffle, gather and TensorAugment of one epoch, as fit() iterates it
    loader_times = []
    for epoch in range(2):
        loaders.train.set_epoch(args.epochs + epoch)
        sync(device)
        t0 = time.perf_counter()
        for _ in loaders.train:
            pass
        sync(device)
        loader_times.append(time.perf_counter() - t0)
    loader_s = min(loader_times)
    ckpt_bytes, ckpt_s = checkpoint_cost(cfg, model, device)

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "width": args.width,
        "params": count_params(model),
        "batch_size": args.batch_size,
        "images": args.images,
        "epochs": args.epochs,
        "compile": args.compile,
        "gpu_fraction": args.gpu_fraction,
        "status": result.status,
        "images_per_s": images_per_s,
        "epoch_s": steady,
        "epoch_s_all": epoch_s,
        "eval_s": eval_s,
        "first_epoch_overhead_s": overhead,
        "compile_s": overhead if args.compile else None,
        "projected_24ep_s": projected,
        "first_eval_overhead_s": eval_overhead,
        "projected_24ep_with_eval_s": projected
        + max(eval_overhead or 0.0, 0.0)
        + PROJECT_EPOCHS * eval_per_image * 10_000,
        "peak_memory_bytes": peak,
        "peak_memory_kind": peak_kind,
        "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else None,
        "maxrss_after_import_bytes": rss_bytes(MAXRSS_AFTER_IMPORT),
        "loader_epoch_s": loader_s,
        "data_share": loader_s / steady,
        "checkpoint_bytes": ckpt_bytes,
        "checkpoint_s": ckpt_s,
        # a trial checkpoints once per epoch (training + evaluation)
        "checkpoint_share": ckpt_s / (steady + steady_eval),
        "train_start_unix": t_start,
        "train_end_unix": t_end,
        "epoch_end_unix": stamps.ends,
    }


class EpochStamps(BaseCallback):
    """fit() callback: the wall-clock end of each epoch (its training and evaluation)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_epoch_end(self, state: Any, metrics: Any) -> None:
        sync(state.device)
        self.ends.append(time.time())


def checkpoint_cost(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> tuple[int, float]:
    """(bytes, seconds) of one per-epoch trial checkpoint: Checkpoint.save of the model and the
    optimizer with its momentum buffers, then the copy tune.report makes into the trial folder."""
    opt = make_optimizer(cfg, model, device)
    for p in model.parameters():  # one step fills the momentum buffers a real checkpoint carries
        p.grad = torch.zeros_like(p)
    opt.step()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(3):
            src, dst = Path(tmp, f"ckpt{i}"), Path(tmp, f"trial{i}")
            sync(device)
            t0 = time.perf_counter()
            Checkpoint(config=cfg.to_dict(), model_state=model.state_dict(), optimizer_state=opt.state_dict()).save(
                src / "checkpoint.pt"
            )
            shutil.copytree(src, dst)
            times.append(time.perf_counter() - t0)
        size = (src / "checkpoint.pt").stat().st_size
    return size, statistics.median(times)


# -- packing ---------------------------------------------------------------------------------
def worker_argv(args: argparse.Namespace, k: int, device: torch.device, barrier: Path) -> list[str]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--barrier",
        str(barrier),
        "--width",
        str(args.width),
        "--batch-size",
        str(args.batch_size),
        "--images",
        str(args.images),
        "--eval-images",
        str(args.eval_images),
        "--epochs",
        str(args.epochs),
        "--device",
        device.type,
        "--seed",
        str(args.seed),
    ]
    if args.compile:
        argv.append("--compile")
    if device.type == "cuda":
        argv += ["--gpu-fraction", repr(1.0 / k)]
    else:
        # k processes with a full thread pool each would oversubscribe the cores (OpenMP
        # spin-waits then dominate); share them out as a trial scheduler would
        argv += ["--threads", str(max(1, (os.cpu_count() or 1) // k))]
    return argv


def run_packing(args: argparse.Namespace, counts: list[int], device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for k in counts:
        with tempfile.TemporaryDirectory(prefix="gpu_speed_") as tmp:
            barrier = Path(tmp)
            procs = [
                subprocess.Popen(
                    worker_argv(args, k, device, barrier), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                for _ in range(k)
            ]
            # start the timed part together, once every process has its data and model
            deadline = time.monotonic() + 600
            while len(list(barrier.glob("ready-*"))) < k and time.monotonic() < deadline:
                if any(p.poll() is not None for p in procs):
                    break  # one died during setup; its error is collected below
                time.sleep(0.05)
            (barrier / "go").touch()
            results, errors = [], []
            for p in procs:
                out, err = p.communicate()
                found = [line for line in out.splitlines() if line.startswith(RESULT_PREFIX)]
                if p.returncode != 0 or not found:
                    tail = (err.strip().splitlines() or ["no output"])[-1]
                    errors.append(f"exit {p.returncode}: {tail}")
                    continue
                res = json.loads(found[-1][len(RESULT_PREFIX) :])
                if "error" in res:
                    errors.append(res["error"])
                else:
                    results.append(res)
        ips = [r["images_per_s"] for r in results]
        mem = [r["peak_memory_bytes"] for r in results]
        rows.append(
            {
                "procs": k,
                "gpu_fraction": 1.0 / k if device.type == "cuda" else None,
                "aggregate_images_per_s": aggregate_rate(results) if results else None,
                "sum_per_proc_images_per_s": sum(ips) if ips else None,
                "per_proc_images_per_s": ips,
                "per_proc_peak_memory_bytes": mem,
                "max_peak_memory_bytes": max(mem) if mem else None,
                "errors": errors,
            }
        )
    return rows


def aggregate_rate(results: list[dict[str, Any]]) -> float:
    """Steady training images of all processes over one wall window, from the first process's
    end of its first epoch (warm-up) to the last process's end of its last epoch; evaluations
    in between count as time. Summing per-process rates instead overstates: processes that
    finish early leave the GPU to the rest, whose rates then rise (8 processes on an H200 ranged
    20k-75k images/s each)."""
    steady_images = sum(r["images"] * (r["epochs"] - 1) for r in results)
    start = min(r["epoch_end_unix"][0] for r in results)
    end = max(r["epoch_end_unix"][-1] for r in results)
    if steady_images == 0 or end <= start:  # one epoch each: no steady part to time
        return sum(r["images_per_s"] for r in results)
    return steady_images / (end - start)


# -- output ----------------------------------------------------------------------------------
def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f} MiB"


def fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s >= 3600:
        return f"{s:,.0f} s ({s / 3600:.2f} h)"
    if s >= 60:
        return f"{s:,.1f} s ({s / 60:.1f} min)"
    return f"{s:.3f} s"


def print_report(res: dict[str, Any]) -> None:
    print(
        f"gpu_speed: torch {res['torch']}, device {res['device']} ({res['device_name']}), "
        f"{res['threads']} CPU threads; "
        f"width {res['width']} ({res['params']:,} params), batch {res['batch_size']}, {res['images']:,} random "
        f"images x {res['epochs']} epochs, compile {res['compile']}"
    )
    if res["device"] == "cpu":
        print("NOTE: CPU run: these figures say nothing about GPU speed")
    print()
    print(METRICS_HEADER)
    print("-" * len(METRICS_HEADER))
    overhead_name = "compile time (1st epoch - steady epoch)" if res["compile"] else "first-epoch overhead (warm-up)"
    rows = [
        ("images/s (steady, training)", f"{res['images_per_s']:,.1f}"),
        (f"epoch seconds ({res['images']:,} images)", fmt_s(res["epoch_s"])),
        ("epoch seconds, all epochs", ", ".join(f"{s:.3f}" for s in res["epoch_s_all"])),
        (f"projected {PROJECT_EPOCHS} epochs x 50k, training", fmt_s(res["projected_24ep_s"])),
        (f"projected {PROJECT_EPOCHS} epochs x 50k, + 10k eval", fmt_s(res["projected_24ep_with_eval_s"])),
        (overhead_name, fmt_s(res["first_epoch_overhead_s"])),
        ("first-evaluation overhead", fmt_s(res["first_eval_overhead_s"])),
        (f"peak memory ({res['peak_memory_kind']})", fmt_bytes(res["peak_memory_bytes"])),
        ("data path: loader epoch alone", fmt_s(res["loader_epoch_s"])),
        ("data path share of epoch time", f"{100 * res['data_share']:.1f} %"),
        (f"checkpoint per epoch ({fmt_bytes(res['checkpoint_bytes'])})", fmt_s(res["checkpoint_s"])),
        ("checkpoint share of epoch time", f"{100 * res['checkpoint_share']:.1f} %"),
    ]
    for name, value in rows:
        print(f"{name:<40} {value}")
    if res["packing"]:
        print()
        print(PACKING_HEADER)
        print("-" * len(PACKING_HEADER))
        for row in res["packing"]:
            frac = f"{row['gpu_fraction']:.3f}" if row["gpu_fraction"] is not None else "n/a (cpu)"
            ips = row["per_proc_images_per_s"]
            agg = f"{row['aggregate_images_per_s']:,.1f}" if row["aggregate_images_per_s"] is not None else "failed"
            per = f"{min(ips):,.1f}-{max(ips):,.1f}" if ips else "-"
            tot = f"{row['sum_per_proc_images_per_s']:,.1f}" if row["sum_per_proc_images_per_s"] is not None else "-"
            print(
                f"{row['procs']:>5}  {frac:<12}  {agg:>15}  {tot:>15}  {per:>24}  "
                f"{fmt_bytes(row['max_peak_memory_bytes']):>26}"
            )
            for err in row["errors"]:
                print(f"       error: {err}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(TrainConfig(device=args.device))
    except S9Error as exc:
        print(f"gpu_speed: error: {exc}", file=sys.stderr)
        return 2
    if args.worker:
        try:
            res = measure(args, device)
        except torch.OutOfMemoryError as exc:  # a packing level too tight for its memory share
            res = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
        print(RESULT_PREFIX + json.dumps(res), flush=True)
        return 0

    packing_arg = args.packing if args.packing is not None else ("1,2,4,8" if device.type == "cuda" else "1,2")
    counts = [int(c) for c in packing_arg.split(",") if c.strip() and int(c) > 0]
    res = measure(args, device)
    res["packing"] = run_packing(args, counts, device) if counts else []
    print_report(res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.json)  # a reader never sees half a file
    return 0


if __name__ == "__main__":
    sys.exit(main())
