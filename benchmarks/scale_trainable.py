"""A stand-in for the search's trainable at scale: no training, a few milliseconds of sleep per
"epoch", and everything a run tells Tune going through the real trial's reporting
(s9tune/search/execution/reporting.py): the same metrics as `epoch_report`, a checkpoint
whenever the pacer says one is due, a restored trial going on after its checkpoint, and a
diverged run reported as the real one reports it. `val_accuracy` is a smooth function of the
config plus seeded noise, so TPE, ASHA and the re-evaluation have something to rank.

It imports no torch: a Ray worker that runs it costs a Ray worker's memory, so a benchmark
measures the driver, not 32 copies of torch. For `run_search(trainable=...)` it is named
`train_trial`, as Tune's state and `--resume`'s check expect of an s9tune trial.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray import tune

from s9tune.search.execution.reporting import CKPT_NAME, TrialReporter
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, SEED_KEY

EPOCH_S_ENV = "S9SCALE_EPOCH_S"  # seconds each "epoch" sleeps (the benchmark sets it)
EPOCH_S = 0.005
DIVERGE_ABOVE = 1.8  # a max_lr above this diverges (a few percent of the default space's configs)
DIVERGE_EPOCH = 3


def final_accuracy(config: dict[str, Any]) -> float:
    """What a complete schedule reaches: best near max_lr 0.4, pct_start 0.25, aug_strength 0.8."""
    lr = math.log(float(config.get("max_lr", 0.4)) / 0.4)
    pct = float(config.get("pct_start", 0.25)) - 0.25
    aug = float(config.get("aug_strength", 0.8)) - 0.8
    return 0.93 - 0.03 * lr * lr - 0.2 * pct * pct - 0.02 * aug * aug


def accuracy(config: dict[str, Any], epoch: int, epochs: int, rng: random.Random) -> float:
    """A OneCycle-like curve to `final_accuracy` at the end of the schedule, plus noise."""
    shape = (1 - math.exp(-3 * epoch / epochs)) / (1 - math.exp(-3))
    return max(0.0, min(1.0, final_accuracy(config) * shape + rng.gauss(0.0, 0.004)))


def train_trial(config: dict[str, Any], *, splits: Any, base: dict[str, Any]) -> None:
    """Tune entry point, with the real trainable's signature (`splits` is not read)."""
    epochs = int(config.get(BUDGET_KEY, base["epochs"]))
    seed = int(config.get(SEED_KEY, base.get("seed", 0)))
    epoch_s = float(os.environ.get(EPOCH_S_ENV, EPOCH_S))
    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(json.loads((Path(d) / CKPT_NAME).read_text())["epoch"])
    # a run's noise depends on its values, seed and epoch only, so a restored run repeats itself
    key = json.dumps({k: v for k, v in config.items() if k != CONFIG_KEY}, sort_keys=True)
    reporter = TrialReporter()
    for epoch in range(start + 1, epochs + 1):
        time.sleep(epoch_s)
        if float(config.get("max_lr", 0.0)) > DIVERGE_ABOVE and epoch == DIVERGE_EPOCH:
            reporter.diverged(epoch)
            return
        acc = accuracy(config, epoch, epochs, random.Random(f"{key}/{seed}/{epoch}"))
        m = SimpleNamespace(
            epoch=epoch,
            eval_accuracy=acc,
            eval_loss=2.3 * (1 - acc),
            train_accuracy=min(1.0, acc + 0.02),
            train_loss=2.2 * (1 - acc),
            lr=float(config.get("max_lr", 0.4)) * (1 - epoch / epochs),
            images_per_s=45_000 / 64,
            epoch_s=epoch_s,
            eval_s=epoch_s / 10,
        )
        state = {"epoch": epoch}
        reporter.epoch(m, last_epoch=epochs, save=lambda d, s=state: (d / CKPT_NAME).write_text(json.dumps(s)))
