"""SGD and the OneCycle schedule: built here once for training, resume, the benchmarks' bare
loop and the schedule plot, so they cannot drift apart."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from s9tune.config import TrainConfig


def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    # fused SGD runs the whole update in one kernel on CUDA; foreach is the CPU default
    kwargs: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.max_lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        **kwargs,
    )


def make_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.max_lr,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=cfg.pct_start,
        anneal_strategy=cfg.anneal_strategy,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
        cycle_momentum=False,  # Page's recipe keeps momentum fixed
    )


def lr_schedule(cfg: TrainConfig, train_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(fractional epoch, lr) of every optimiser step of cfg's OneCycle schedule.

    Replays `make_scheduler` on a dummy parameter, so the curve is the one training used rather
    than a re-derivation. Step i ends at epoch (i + 1) / steps_per_epoch, which puts each
    epoch's last step where metrics.jsonl records its lr.
    """
    steps = max(1, math.ceil(train_images / cfg.batch_size))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.max_lr, momentum=cfg.momentum)
    sched = make_scheduler(cfg, opt, steps)
    total = cfg.epochs * steps
    lrs = np.empty(total, dtype=np.float64)
    for i in range(total):
        lrs[i] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return (np.arange(1, total + 1) / steps, lrs)
