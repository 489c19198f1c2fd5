"""Per-epoch checkpoints cost at most CHECKPOINT_MAX_SHARE of a run's time (written every epoch
they took 12-24% of a GPU run, benchmarks/RESULTS.md); the first and last epoch are always saved, and the trial and
CLI callbacks both follow the pacer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from test_engine import StopAfter, tiny_cfg

from s9tune.callbacks import CHECKPOINT_MAX_SHARE, BaseCallback, Checkpointer, CheckpointPacer
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import load_splits
from s9tune.engine import train


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_keeps_the_write_within_its_share() -> None:
    clock = FakeClock()
    pacer = CheckpointPacer(max_share=0.05, clock=clock)
    assert pacer.due(1, 24)  # nothing measured yet: the first epoch is always saved
    with pacer.writing():
        clock.now += 0.5  # the write took 0.5 s
    assert pacer.cost == pytest.approx(0.5)
    clock.now += 9.0  # 0.5 / (9 + 0.5) = 5.3% > 5%
    assert not pacer.due(2, 24)
    clock.now += 0.5  # 0.5 / (9.5 + 0.5) = 5%: due
    assert pacer.due(3, 24)
    assert pacer.due(24, 24)  # the last epoch is always saved, however recent the last write
    assert CheckpointPacer().max_share == CHECKPOINT_MAX_SHARE == 0.05


class SavedEpochs(BaseCallback):
    """After each epoch, which epoch last.pt holds (runs after the Checkpointer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[int] = []

    def on_epoch_end(self, state, metrics) -> None:
        self.seen.append(Checkpoint.load(self.path).epoch)


def test_checkpointer_skips_epochs_the_pacer_rules_out(tiny_cifar: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(epochs=4)
    splits = load_splits(tiny_cifar, val_size=cfg.val_size, seed=cfg.seed)
    # any write costs more than a zero share: only the first and the last epoch are saved
    saver = Checkpointer(tmp_path / "ck", CheckpointPacer(max_share=0.0))
    seen = SavedEpochs(saver.last)
    train(cfg, splits, [saver, seen])
    assert seen.seen == [1, 1, 1, 4]
    # a run stopped early still keeps the epochs it trained since the last saved one
    stopped = Checkpointer(tmp_path / "ck2", CheckpointPacer(max_share=0.0))
    part = train(cfg, splits, [stopped, StopAfter(3)])
    assert part.result.status == "stopped"
    assert Checkpoint.load(stopped.last).epoch == 3


def test_trial_reports_every_epoch_and_checkpoints_when_due(tiny_cifar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s9tune.search.execution import reporting, trainable

    reports: list[tuple[int, bool]] = []

    def fake_report(metrics, checkpoint=None) -> None:
        if checkpoint is not None:  # what Tune would persist is a loadable checkpoint of that epoch
            assert Checkpoint.load(Path(checkpoint.path) / trainable.CKPT_NAME).epoch == metrics["epoch"]
        reports.append((metrics["epoch"], checkpoint is not None))

    monkeypatch.setattr(trainable.tune, "report", fake_report)
    # outside a trial, asking Ray for the node would start a Ray in this process, which later
    # tests would then find running
    monkeypatch.setattr(reporting, "_node_id", lambda: "node")
    cfg = tiny_cfg(epochs=3)
    splits = load_splits(tiny_cifar, val_size=cfg.val_size, seed=cfg.seed)
    train(cfg, splits, [trainable.TuneReport(CheckpointPacer(max_share=0.0))])
    assert reports == [(1, True), (2, False), (3, True)]
    reports.clear()
    train(cfg, splits, [trainable.TuneReport(CheckpointPacer(max_share=1.0))])  # any cost will do
    assert reports == [(1, True), (2, True), (3, True)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_cap_on_a_bare_cuda_device(tiny_cifar: Path) -> None:
    """A trial's GPU share becomes a memory cap that binds: a run that needs more than its cap
    fails with CUDA's OOM (the trial's own error), and the same run uncapped needs more than
    that cap. torch refuses torch.device('cuda') without an index there (torch 2.11 on the
    H200), which failed every packed trial before the fix."""
    import numpy as np

    from s9tune.data import Splits

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 1024)
    splits = Splits(x, y, x[:0], y[:0], x[:256], y[:256])
    total = torch.cuda.get_device_properties(0).total_memory
    cap = 96 * 2**20  # far below what width 64 at batch 512 needs (1.3 GiB on the H200)
    cfg = TrainConfig(device="cuda", epochs=1, val_size=0.0, data_path="tensor", gpu_memory_fraction=cap / total)
    torch.cuda.empty_cache()
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            train(cfg, splits)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)  # the cap is per process: lift it for what follows
        torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    run = train(cfg.with_overrides({"gpu_memory_fraction": None}), splits)
    assert run.result.status == "completed"
    assert torch.cuda.max_memory_allocated() > cap  # so the cap, not chance, stopped the capped run


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pacer_skips_epochs_where_a_checkpoint_is_dear(tmp_path: Path) -> None:
    """At width 64 on a GPU an epoch of 10k images takes ~0.12 s and a checkpoint ~0.07 s
    (H200): writing every epoch would cost far over 5%, so the pacer must skip epochs, and the
    writes it makes between the first and the last stay within their share."""
    import numpy as np

    from s9tune.data import Splits

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 10_000)
    empty_x, empty_y = x[:0], y[:0]
    splits = Splits(x, y, empty_x, empty_y, x[:2000], y[:2000])
    cfg = TrainConfig(device="cuda", epochs=8, val_size=0.0, data_path="tensor")
    costs: list[float] = []

    class Recording(CheckpointPacer):
        @contextmanager
        def writing(self) -> Iterator[None]:
            with super().writing():
                yield
            costs.append(self.cost)

    pacer = Recording()
    saver = Checkpointer(tmp_path / "ck", pacer)
    run = train(cfg, splits, [saver])
    assert run.result.status == "completed"
    assert 2 <= len(costs) < cfg.epochs, costs  # first and last always; some epochs skipped
    assert Checkpoint.load(saver.last).epoch == cfg.epochs
    middle = sum(costs[1:-1])
    assert middle <= CHECKPOINT_MAX_SHARE * run.result.wall_s + max(costs), (costs, run.result.wall_s)


def test_a_restored_trials_repeated_epochs_count_once() -> None:
    """A trial restored from a checkpoint older than its last report reports those epochs again
    (same training_iteration): the leaderboard keeps the later row of each epoch."""
    from s9tune.search.experiment.tune_files import TrialFiles, trial_row

    iters, vals = [1, 2, 3, 2, 3, 4], [0.1, 0.2, 0.3, 0.25, 0.35, 0.4]  # checkpoint after epoch 1, killed after 3
    rows = [
        {"training_iteration": i, "val_accuracy": v, "time_total_s": t}
        for i, v, t in zip(iters, vals, [1.0, 2.0, 3.0, 2.5, 3.5, 4.5], strict=True)
    ]
    row = trial_row(TrialFiles("t", 1, {"max_lr": 0.4}, rows), ["max_lr"], 4, 2)
    assert row.history == [0.1, 0.25, 0.35, 0.4]
    assert row.epochs == 4 and row.status == "completed" and row.last_val_accuracy == 0.4
    # killed before the driver uploaded epoch 1's row (cloud storage): the epoch reached counts
    row = trial_row(TrialFiles("t", 1, {"max_lr": 0.4}, rows[3:]), ["max_lr"], 4, 2)
    assert row.epochs == 4 and row.status == "completed" and row.history == [0.25, 0.35, 0.4]
