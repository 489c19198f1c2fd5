"""The one training loop: `fit()` serves `train`, every search trial and `retrain`.

They differ only in config and callbacks. Knows nothing of Ray, Optuna, matplotlib or the CLI.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from tqdm import tqdm

from s9tune.augment import EvalBatches, Loaders, make_loaders
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.errors import ConfigError
from s9tune.model import build_model
from s9tune.optim import make_optimizer, make_scheduler

logger = logging.getLogger(__name__)


@dataclass
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    eval_loss: float
    eval_accuracy: float
    eval_split: str  # "val" or "test"
    lr: float  # lr of the epoch's last step
    epoch_s: float  # training time of the epoch (no evaluation)
    eval_s: float
    images_per_s: float  # training images / epoch_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # the names a reader looks for: val_accuracy or test_accuracy
        d[f"{self.eval_split}_loss"] = self.eval_loss
        d[f"{self.eval_split}_accuracy"] = self.eval_accuracy
        return d


@dataclass(frozen=True)
class Predictions:
    """Float32 logits and labels of one pass over an eval split, on the CPU: the one place the
    loss, the correct count and the accuracy of a set of weights come from."""

    logits: torch.Tensor
    labels: torch.Tensor

    @property
    def total(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> int:
        return int((self.logits.argmax(1) == self.labels).sum().item())

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.total, 1)  # exact: correct / total

    @property
    def loss(self) -> float:
        return float(nn.functional.cross_entropy(self.logits, self.labels).item()) if self.total else float("nan")


FitStatus = Literal["completed", "diverged", "stopped"]  # stopped: a callback ended it early


@dataclass
class FitResult:
    status: FitStatus
    history: list[EpochMetrics] = field(default_factory=list)
    wall_s: float = 0.0
    train_images: int = 0
    train_s: float = 0.0
    final_eval: Predictions | None = None  # the last epoch's evaluation, i.e. of the final weights

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def train_images_per_s(self) -> float:
        return self.train_images / self.train_s if self.train_s > 0 else 0.0


@dataclass
class FitState:
    """What callbacks may read (and what a checkpoint must hold)."""

    cfg: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    epoch: int = 0  # epochs completed
    history: list[EpochMetrics] = field(default_factory=list)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            config=self.cfg.to_dict(),
            model_state=self.model.state_dict(),
            epoch=self.epoch,
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict(),
            metrics=[m.to_dict() for m in self.history],
            rng_state=torch.get_rng_state(),
        )

    def restore(self, ckpt: Checkpoint) -> None:
        self.model.load_state_dict(ckpt.model_state)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.scheduler.load_state_dict(ckpt.scheduler_state)
        self.epoch = int(ckpt.epoch)
        self.history = [EpochMetrics(**_epoch_fields(m)) for m in ckpt.metrics]
        if ckpt.rng_state is not None:
            torch.set_rng_state(ckpt.rng_state.cpu())


class BaseCallback:
    """Per-epoch hooks of `fit()`; s9tune.callbacks holds the ones train, search and retrain use."""

    def on_fit_start(self, state: FitState) -> None:
        pass

    def on_epoch_end(self, state: FitState, metrics: EpochMetrics) -> bool | None:
        """Return True to stop training after this epoch."""
        return None

    def on_fit_end(self, state: FitState, result: FitResult) -> None:
        pass


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cpu":
        return torch.device("cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use --set device=cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_peak_memory(device: torch.device) -> int | None:
    """Peak CUDA memory this process allocated (None off CUDA): what sizes gpus_per_trial."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _autocast(device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def score(model: nn.Module, batches: EvalBatches | Iterable, device: torch.device) -> Predictions:
    """One pass over an eval split in eval mode, without gradients: its logits and labels, from
    which the loss and accuracy follow."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for x, y in batches:
        with _autocast(device):
            outs.append(model(x).float())
        ys.append(y)
    model.train(was_training)
    return Predictions(torch.cat(outs).cpu(), torch.cat(ys).cpu())


def _progress(iterable: Iterable, total: int, desc: str) -> Iterable:
    if not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


@dataclass
class _EpochTrain:
    loss: float
    accuracy: float
    images: int
    lr: float  # lr of the epoch's last step
    seconds: float


def _train_epoch(
    state: FitState, step_model: nn.Module, batches: Iterable, steps: int, criterion: nn.Module
) -> _EpochTrain:
    opt, sched, device = state.optimizer, state.scheduler, state.device
    state.model.train()
    # running sums stay on the device: no host sync inside the hot loop
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, opt.param_groups[0]["lr"]
    t0 = time.perf_counter()
    for x, y in _progress(batches, steps, f"epoch {state.epoch + 1}/{state.cfg.epochs}"):
        with _autocast(device):
            out = step_model(x)
            loss = criterion(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (out.argmax(1) == y).sum()
        seen += y.shape[0]
    train_loss = loss_sum.item() / max(seen, 1)  # the one sync of the epoch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _EpochTrain(train_loss, correct.item() / max(seen, 1), seen, lr, time.perf_counter() - t0)


def _on_device(cfg: TrainConfig, model: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cuda":
        return model.to(device)
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    if cfg.gpu_memory_fraction is not None:
        # torch wants an index: a bare torch.device('cuda') is refused (seen on torch 2.11)
        torch.cuda.set_per_process_memory_fraction(
            cfg.gpu_memory_fraction, device.index if device.index is not None else torch.cuda.current_device()
        )
    return model.to(device, memory_format=torch.channels_last)


def fit(
    cfg: TrainConfig,
    model: nn.Module,
    loaders: Loaders,
    device: torch.device,
    callbacks: Sequence[BaseCallback] = (),
    resume: Checkpoint | None = None,
) -> FitResult:
    """Train `model` with SGD + OneCycleLR for cfg.epochs, evaluating after every epoch.

    `resume`: training continues after the checkpoint's last completed epoch and, on the CPU,
    ends with the same weights as an uninterrupted run (all randomness of an epoch derives
    from (seed, epoch)).
    """
    t_start = time.perf_counter()
    model = _on_device(cfg, model, device)
    optimizer = make_optimizer(cfg, model, device)
    state = FitState(cfg, model, optimizer, make_scheduler(cfg, optimizer, len(loaders.train)), device)
    if resume is not None:
        state.restore(resume)
        logger.info("resuming after epoch %d of %d", state.epoch, cfg.epochs)
    step_model: nn.Module = torch.compile(model) if cfg.compile else model  # type: ignore[assignment]
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    for cb in callbacks:
        cb.on_fit_start(state)

    result = FitResult(status="completed")
    for epoch in range(state.epoch, cfg.epochs):
        loaders.train.set_epoch(epoch)
        tr = _train_epoch(state, step_model, loaders.train, len(loaders.train), criterion)
        result.train_images += tr.images
        result.train_s += tr.seconds
        if not math.isfinite(tr.loss):
            logger.warning("epoch %d: training loss is %s; the run diverged", epoch + 1, tr.loss)
            result.status = "diverged"
            result.final_eval = None
            break
        t1 = time.perf_counter()
        result.final_eval = score(step_model, loaders.eval, device)
        metrics = EpochMetrics(
            epoch=epoch + 1,
            train_loss=tr.loss,
            train_accuracy=tr.accuracy,
            eval_loss=result.final_eval.loss,
            eval_accuracy=result.final_eval.accuracy,
            eval_split=loaders.eval_name,
            lr=tr.lr,
            epoch_s=tr.seconds,
            eval_s=time.perf_counter() - t1,
            images_per_s=tr.images / tr.seconds if tr.seconds > 0 else 0.0,
        )
        state.epoch = epoch + 1
        state.history.append(metrics)
        stop = False
        for cb in callbacks:
            stop = bool(cb.on_epoch_end(state, metrics)) or stop
        if stop and state.epoch < cfg.epochs:
            result.status = "stopped"
            break
    result.history = list(state.history)
    result.wall_s = time.perf_counter() - t_start
    for cb in callbacks:
        cb.on_fit_end(state, result)
    return result


def _epoch_fields(d: dict[str, Any]) -> dict[str, Any]:
    names = EpochMetrics.__dataclass_fields__
    return {k: v for k, v in d.items() if k in names}


@dataclass
class TrainRun:
    """Everything `train()` built, for callers that evaluate or analyse afterwards."""

    cfg: TrainConfig
    model: nn.Module
    loaders: Loaders
    device: torch.device
    result: FitResult


def train(
    cfg: TrainConfig,
    splits: Splits,
    callbacks: Sequence[BaseCallback] = (),
    resume: Checkpoint | None = None,
) -> TrainRun:
    """Build model and loaders from `cfg`, then `fit()`."""
    device = resolve_device(cfg)
    loaders = make_loaders(cfg, splits, device)
    model = build_model(cfg, num_classes=len(splits.classes))
    result = fit(cfg, model, loaders, device, callbacks, resume)
    return TrainRun(cfg, model, loaders, device, result)
