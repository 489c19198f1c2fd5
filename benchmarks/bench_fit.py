"""Is `s9tune.engine.fit()` as fast as a bare PyTorch loop? And how fast are the two data paths?

One run prints three things on the real CIFAR-10 slice (../shared/data/cifar10-mini):

(a) training images/s of `fit()` (FitResult.train_images_per_s: training loop time only, no
    evaluation), once with data_path="tensor" and once with data_path="albumentations";
(b) the same figure for a bare loop: same model class (CustomResNet, same init), same batch
    size and device, SGD (Nesterov, wd) + OneCycleLR + cross-entropy, nothing else. It runs
    over the very same TensorLoader batches that fit(data_path="tensor") sees (the fair
    comparison: only the loop differs), and over pre-made normalised tensors without
    augmentation (the compute-only floor). On CUDA it uses fit's bf16 autocast, channels_last
    and fused SGD, so that precision is not what is being compared;
(c) augmentation throughput at strength 1: the albumentations pipeline per image in one
    process (what one DataLoader worker can deliver), the AlbumentationsLoader epoch with
    workers=0, and TensorAugment / TensorLoader on the training device.

The ratio fit/bare (same TensorLoader batches) answers "fit() within 15% of a bare loop".

Two throughput columns: "wall" is training images / training-loop seconds (for fit() exactly
FitResult.train_images_per_s); "median step" is the median over steps of batch / step time,
read from a thin wrapper around the batch iterable that stamps each batch as the loop takes
it (so fit() itself is untouched). On a shared machine other processes stretch random steps;
the median step is far less sensitive to that than the wall figure. The load average is
printed before and after, so a reader can tell a quiet run from a contended one.

    python benchmarks/bench_fit.py                      # width 16, batch 512, 2 repeats x 16 steps per run
    python benchmarks/bench_fit.py --width 4 --batch-size 64 --steps 4   # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from _common import MINI_DIR, sync
from torch import nn

from s9tune.augment import (
    AlbumentationsLoader,
    TensorAugment,
    TensorLoader,
    albumentations_pipeline,
    make_loaders,
    normalize_uint8,
)
from s9tune.config import TrainConfig
from s9tune.data import Splits, load_splits
from s9tune.engine import fit, resolve_device
from s9tune.errors import S9Error
from s9tune.model import CustomResNet, build_model
from s9tune.optim import make_optimizer, make_scheduler

DEFAULT_DATA = MINI_DIR
TABLE_HEADER = (
    "run                  data path                                img/s (wall)  img/s (median step)  s/step (median)"
)
AUG_HEADER = "augmentation (strength 1.0)                                      images/s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=16, help="CustomResNet width (64 = the seed's net)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument(
        "--steps",
        type=int,
        default=16,
        help="optimizer steps per timed run; rounded up to whole epochs. Fewer than one epoch's "
        "worth trains on a stratified subset of steps*batch images instead",
    )
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help=f"default: {DEFAULT_DATA}")
    ap.add_argument("--repeats", type=int, default=2, help="repeat every timed run; medians are shown")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per batch shape first")
    ap.add_argument("--aug-images", type=int, default=2048, help="images per augmentation timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice). On a CPU shared with other jobs, 1 thread "
        "avoids OpenMP threads spin-waiting on a descheduled sibling",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    for name in ("width", "batch_size", "steps", "repeats", "aug_images"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


class StepClock:
    """A batch iterable that stamps the moment the training loop takes each batch.

    The time between two stamps is one whole step as the loop runs it (forward, backward,
    optimizer, scheduler, bookkeeping, fetching the next batch); the last step of an epoch
    ends when the loop asks for a batch that is not there. No device sync is added: on CUDA
    the stamps are paced by the launch queue, which in steady state is paced by the GPU.
    """

    def __init__(self, inner: TensorLoader | AlbumentationsLoader | list) -> None:
        self.inner = inner
        self.steps: list[tuple[int, float]] = []  # (images, seconds)

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples  # type: ignore[union-attr]

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        prev: tuple[int, float] | None = None
        for x, y in self.inner:
            now = time.perf_counter()
            if prev is not None:
                self.steps.append((prev[0], now - prev[1]))
            prev = (y.shape[0], now)
            yield x, y
        if prev is not None:
            self.steps.append((prev[0], time.perf_counter() - prev[1]))


@dataclass
class Timed:
    name: str
    data: str
    images_per_s: list[float] = field(default_factory=list)  # wall, one per repeat
    step_images_per_s: list[float] = field(default_factory=list)  # batch / step time, every step
    step_s: list[float] = field(default_factory=list)

    def add(self, images: int, seconds: float, clock: StepClock) -> None:
        self.images_per_s.append(images / seconds)
        self.step_images_per_s += [n / dt for n, dt in clock.steps]
        self.step_s += [dt for _, dt in clock.steps]

    @property
    def wall(self) -> float:
        return statistics.median(self.images_per_s)

    @property
    def median_step(self) -> float:
        return statistics.median(self.step_images_per_s)

    @property
    def sps(self) -> float:
        return statistics.median(self.step_s)

    def spread(self) -> str:
        if len(self.images_per_s) < 2:
            return ""
        return f"  (wall {min(self.images_per_s):,.1f}-{max(self.images_per_s):,.1f})"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# -- the bare loop ---------------------------------------------------------------------------
def bare_loop(
    cfg: TrainConfig,
    epoch_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    steps_per_epoch: int,
    device: torch.device,
) -> tuple[int, float, int]:
    """The loop anyone would write; returns (images, seconds in the training loop, steps)."""
    model: nn.Module = build_model(cfg)  # a CustomResNet with the init fit() gets
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last) if cuda else model.to(device)
    # the same optimizer and schedule objects fit() builds: only the loop around them differs
    opt = make_optimizer(cfg, model, device)
    sched = make_scheduler(cfg, opt, steps_per_epoch)
    criterion = nn.CrossEntropyLoss()
    model.train()
    images, seconds, steps = 0, 0.0, 0
    for epoch in range(cfg.epochs):
        batches = epoch_batches(epoch)
        sync(device)
        t0 = time.perf_counter()
        for x, y in batches:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += y.shape[0]
            steps += 1
        sync(device)
        seconds += time.perf_counter() - t0
    return images, seconds, steps


def warm_up(cfg: TrainConfig, shapes: list[int], device: torch.device, steps: int) -> None:
    """Untimed steps at every batch shape a run will see: allocator, oneDNN/cuDNN plans."""
    if steps <= 0:
        return
    model = CustomResNet(cfg.width, 10, cfg.logit_scale)
    cuda = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last) if cuda else model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    for n in shapes:
        x = torch.randn(n, 3, 32, 32, device=device)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (n,), device=device)
        for _ in range(steps):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    # evaluation shapes too, so fit()'s per-epoch evaluation does not pay first-call costs
    with torch.inference_mode():
        model.eval()
        model(torch.randn(min(cfg.eval_batch_size, 64), 3, 32, 32, device=device))
    sync(device)


# -- augmentation throughput -----------------------------------------------------------------
def time_albumentations_per_image(x: np.ndarray, pad_mode: str, seed: int) -> float:
    """One process, per image, as a DataLoader worker runs it (incl. the HWC -> CHW copy)."""
    pipe = albumentations_pipeline(1.0, pad_mode, normalize=True)
    pipe.set_random_seed(seed)

    def one(img: np.ndarray) -> None:
        out = pipe(image=img)["image"]
        torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    for img in x[:64]:
        one(img)
    t0 = time.perf_counter()
    for img in x:
        one(img)
    return len(x) / (time.perf_counter() - t0)


def time_epoch(loader: AlbumentationsLoader | TensorLoader, device: torch.device) -> float:
    loader.set_epoch(0)
    for _ in loader:  # warm-up epoch
        pass
    loader.set_epoch(1)
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for _, y in loader:
        n += y.shape[0]
    sync(device)
    return n / (time.perf_counter() - t0)


def time_tensor_augment(x: np.ndarray, batch_size: int, pad_mode: str, device: torch.device, seed: int) -> float:
    """TensorAugment alone on already-resident normalised batches (no shuffle, no gather)."""
    xt = normalize_uint8(x, device)
    aug = TensorAugment(1.0, pad_mode)
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = [xt[i : i + batch_size] for i in range(0, len(xt), batch_size)]
    aug(batches[0], gen)
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        aug(b, gen)
    sync(device)
    return len(xt) / (time.perf_counter() - t0)


# -- main ------------------------------------------------------------------------------------
def load_data(args: argparse.Namespace) -> tuple[Splits, str]:
    splits = load_splits(args.data_dir, val_size=0.0, seed=args.seed, download=False)
    n_full = len(splits.train_y)
    if args.steps < math.ceil(n_full / args.batch_size):
        # fewer steps than one epoch: a stratified subset keeps runs whole-epoch shaped
        count = args.steps * args.batch_size
        splits = load_splits(args.data_dir, val_size=0.0, seed=args.seed, train_subset=count, download=False)
        return splits, f"{len(splits.train_y)} of {n_full} train images (subset for --steps {args.steps})"
    return splits, f"{n_full} train images"


@dataclass
class Bench:
    """What every timed run shares: the arguments, the data, the device and the two configs."""

    args: argparse.Namespace
    splits: Splits
    device: torch.device
    base: TrainConfig
    cfg_tensor: TrainConfig
    cfg_albu: TrainConfig
    steps_per_epoch: int
    epochs: int

    @property
    def n_train(self) -> int:
        return len(self.splits.train_y)


def setup(args: argparse.Namespace) -> tuple[Bench, str]:
    """The benchmark's data and configs; raises S9Error for a bad data dir or device."""
    base = TrainConfig(width=args.width, batch_size=args.batch_size, device=args.device, val_size=0.0, seed=args.seed)
    device = resolve_device(base)
    splits, data_note = load_data(args)
    steps_per_epoch = math.ceil(len(splits.train_y) / args.batch_size)
    epochs = max(1, math.ceil(args.steps / steps_per_epoch))
    bench = Bench(
        args,
        splits,
        device,
        base,
        cfg_tensor=base.with_overrides({"epochs": epochs, "data_path": "tensor"}),
        cfg_albu=base.with_overrides({"epochs": epochs, "data_path": "albumentations"}),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
    )
    return bench, data_note


def timed_runs(b: Bench) -> tuple[dict[str, Timed], str, str]:
    """fit() and the bare loop on the same batches, repeated ABBA; returns the runs and the load
    average before and after."""
    args, splits, device = b.args, b.splits, b.device
    runs = {
        "fit_tensor": Timed("fit()", 'data_path="tensor" (TensorLoader)'),
        "fit_albu": Timed("fit()", 'data_path="albumentations" (workers=0)'),
        "bare_tensor": Timed("bare loop", "same TensorLoader batches"),
        "bare_premade": Timed("bare loop", "pre-made normalised tensors, no aug"),
    }
    premade_x = normalize_uint8(splits.train_x, device)
    if device.type == "cuda":
        premade_x = premade_x.contiguous(memory_format=torch.channels_last)
    premade_y = torch.as_tensor(splits.train_y, dtype=torch.long, device=device)
    premade = [
        (premade_x[i : i + args.batch_size], premade_y[i : i + args.batch_size])
        for i in range(0, b.n_train, args.batch_size)
    ]

    def run_fit(key: str, cfg: TrainConfig) -> None:
        loaders = make_loaders(cfg, splits, device)
        clock = StepClock(loaders.train)
        loaders.train = clock  # type: ignore[assignment]
        res = fit(cfg, build_model(cfg), loaders, device)
        runs[key].add(res.train_images, res.train_s, clock)  # wall = FitResult.train_images_per_s

    def run_bare_tensor() -> None:
        clock = StepClock(TensorLoader(splits.train_x, splits.train_y, b.cfg_tensor, device))

        def epoch_batches(epoch: int) -> StepClock:
            clock.set_epoch(epoch)
            return clock

        images, seconds, _ = bare_loop(b.cfg_tensor, epoch_batches, b.steps_per_epoch, device)
        runs["bare_tensor"].add(images, seconds, clock)

    def run_bare_premade() -> None:
        clock = StepClock(premade)
        images, seconds, _ = bare_loop(b.cfg_tensor, lambda _epoch: clock, b.steps_per_epoch, device)
        runs["bare_premade"].add(images, seconds, clock)

    order: list[Callable[[], None]] = [
        lambda: run_fit("fit_tensor", b.cfg_tensor),
        run_bare_tensor,
        lambda: run_fit("fit_albu", b.cfg_albu),
        run_bare_premade,
    ]
    load_before = load_average()
    for rep in range(args.repeats):
        # fit and bare alternate, and every other repeat runs backwards (ABBA), so a load that
        # rises or falls during the benchmark does not favour one side
        for job in order if rep % 2 == 0 else order[::-1]:
            job()
    return runs, load_before, load_average()


def augmentation_speeds(b: Bench) -> dict[str, float]:
    x_aug = b.splits.train_x[: b.args.aug_images]
    y_aug = b.splits.train_y[: len(x_aug)]
    device, pad, seed, bs = b.device, b.base.pad_mode, b.args.seed, b.args.batch_size
    return {
        "albumentations pipeline, per image, 1 process (1 worker)": time_albumentations_per_image(x_aug, pad, seed),
        "AlbumentationsLoader epoch, workers=0 (incl. collate)": time_epoch(
            AlbumentationsLoader(x_aug, y_aug, b.cfg_albu, device), device
        ),
        f"TensorAugment on {device.type}, batch {bs}": time_tensor_augment(x_aug, bs, pad, device, seed),
        f"TensorLoader epoch on {device.type} (shuffle+gather+aug)": time_epoch(
            TensorLoader(x_aug, y_aug, b.cfg_tensor, device), device
        ),
    }


def fit_ratios(runs: dict[str, Timed]) -> dict[str, tuple[float, float]]:
    def ratio(a: str, b: str) -> tuple[float, float]:
        return runs[a].wall / runs[b].wall, runs[a].median_step / runs[b].median_step

    return {
        "fit/bare, same TensorLoader batches": ratio("fit_tensor", "bare_tensor"),
        "fit(tensor)/bare(pre-made, no aug)": ratio("fit_tensor", "bare_premade"),
        "fit(albumentations)/bare(pre-made, no aug)": ratio("fit_albu", "bare_premade"),
    }


def print_tables(runs: dict[str, Timed], ratios: dict[str, tuple[float, float]], aug: dict[str, float]) -> None:
    print()
    print(TABLE_HEADER)
    print("-" * len(TABLE_HEADER))
    for r in runs.values():
        print(f"{r.name:<20} {r.data:<40} {r.wall:>12,.1f} {r.median_step:>20,.1f} {r.sps:>16.3f}{r.spread()}")
    print()
    print(f"{'ratio (1.0 = as fast)':<46} {'wall':>6} {'median step':>12}")
    for name, (w, m) in ratios.items():
        print(f"{name:<46} {w:>6.3f} {m:>12.3f}")
    w, m = ratios["fit/bare, same TensorLoader batches"]
    wall_ok, step_ok = ("yes" if v >= 0.85 else "NO" for v in (w, m))
    print(f"fit() within 15% of the bare loop: wall {wall_ok}, median step {step_ok}")
    print()
    print(AUG_HEADER)
    print("-" * len(AUG_HEADER))
    for name, ips in aug.items():
        print(f"{name:<60} {ips:>12,.0f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        b, data_note = setup(args)
    except S9Error as exc:
        print(f"bench_fit: error: {exc}", file=sys.stderr)
        return 2
    device = b.device
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    steps = b.epochs * b.steps_per_epoch
    print(
        f"bench_fit: torch {torch.__version__}, device {device} ({gpu}), {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"width {args.width}, batch {args.batch_size}, {b.epochs} epoch(s) x {b.steps_per_epoch} steps = {steps} "
        f"steps per run, {data_note}, repeats {args.repeats}"
    )
    n_train = b.n_train
    shapes = sorted({args.batch_size if n_train >= args.batch_size else n_train, n_train % args.batch_size} - {0})
    warm_up(b.base, shapes, device, args.warmup_steps)
    runs, load_before, load_after = timed_runs(b)
    aug = augmentation_speeds(b)
    ratios = fit_ratios(runs)
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print_tables(runs, ratios, aug)
    if args.json is not None:
        out = {
            "device": str(device),
            "gpu": gpu,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "width": args.width,
            "batch_size": args.batch_size,
            "epochs": b.epochs,
            "steps_per_run": steps,
            "train_images": n_train,
            "repeats": args.repeats,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "runs": {
                k: {
                    "wall_images_per_s": r.images_per_s,
                    "median_step_images_per_s": r.median_step,
                    "median_step_s": r.sps,
                    "step_s": r.step_s,
                }
                for k, r in runs.items()
            },
            "ratio_fit_bare_same_batches": ratios["fit/bare, same TensorLoader batches"],
            "ratio_fit_bare_premade": ratios["fit(tensor)/bare(pre-made, no aug)"],
            "ratio_fit_albu_bare_premade": ratios["fit(albumentations)/bare(pre-made, no aug)"],
            "augment_images_per_s": aug,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
