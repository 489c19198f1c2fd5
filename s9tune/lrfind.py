"""torch-lr-finder adapter: our batch iterables in, a loss-vs-LR plot and a suggestion out."""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from s9tune.augment import make_loaders
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import resolve_device
from s9tune.fileio import atomic_write_json
from s9tune.model import build_model

logger = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    suggested_max_lr: float
    method: str
    lr_at_min_loss: float
    min_loss: float
    start_lr: float
    end_lr: float
    num_iter: int
    lrs: list[float]
    losses: list[float]


def run_lr_find(
    cfg: TrainConfig,
    splits: Splits,
    out: Path,
    *,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    num_iter: int = 100,
) -> LRFindResult:
    """Exponential LR range test on a fresh model and optimizer; writes lr_find.png and .json."""
    matplotlib.use("Agg")  # when it draws, not when it is imported: a notebook keeps its backend till then

    class _Iter(TrainDataLoaderIter):
        """Our loaders yield (x, y) already on the device; torch-lr-finder needs this subclass."""

        def inputs_labels_from_batch(self, batch: Any) -> tuple[Any, Any]:
            return batch[0], batch[1]

    device = resolve_device(cfg)
    loaders = make_loaders(cfg, splits, device)
    model = build_model(cfg).to(device)
    # a fresh optimizer: torch-lr-finder refuses one that already has a scheduler attached
    optimizer = torch.optim.SGD(
        model.parameters(), lr=start_lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    finder = LRFinder(model, optimizer, criterion, device=device)
    # it prints and draws tqdm bars itself; keep that out of our logs
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(_Iter(loaders.train), end_lr=end_lr, num_iter=num_iter, step_mode="exp", diverge_th=5)
        fig, ax = plt.subplots(figsize=(6, 4))
        _, suggested = finder.plot(
            ax=ax, suggest_lr=True, skip_start=min(10, num_iter // 10), skip_end=min(5, num_iter // 20)
        )
    lrs = [float(v) for v in finder.history["lr"]]
    losses = [float(v) for v in finder.history["loss"]]
    finder.reset()
    i_min = int(np.nanargmin(np.array(losses)))
    ax.set_title(f"LR range test (width {cfg.width}, batch {cfg.batch_size})")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "lr_find.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    steepest_ok = suggested is not None and math.isfinite(suggested) and suggested < lrs[i_min]
    result = LRFindResult(
        suggested_max_lr=float(suggested) if steepest_ok else lrs[i_min] / 10,
        method=(
            "steepest: torch-lr-finder's suggestion, the LR where the loss falls fastest "
            "(steepest negative gradient), first and last points skipped"
            if steepest_ok
            else "min_loss/10: the LR of the lowest loss divided by 10, because the steepest-gradient "
            "point lay past the loss minimum (a noisy curve)"
        ),
        lr_at_min_loss=lrs[i_min],
        min_loss=losses[i_min],
        start_lr=start_lr,
        end_lr=end_lr,
        num_iter=len(lrs),
        lrs=lrs,
        losses=losses,
    )
    atomic_write_json(out / "lr_find.json", asdict(result))
    return result
