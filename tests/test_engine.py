from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s9tune.callbacks import BaseCallback, Checkpointer, MetricsFile
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import load_splits
from s9tune.engine import score, train
from s9tune.errors import CheckpointError


def tiny_cfg(**kw) -> TrainConfig:
    base = {"width": 4, "epochs": 3, "batch_size": 32, "max_lr": 0.2, "device": "cpu", "val_size": 0.1, "seed": 7}
    return TrainConfig(**{**base, **kw})


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


class StopAfter(BaseCallback):
    def __init__(self, n: int) -> None:
        self.n = n

    def on_epoch_end(self, state, metrics) -> bool:
        return metrics.epoch >= self.n


def test_loss_falls_when_overfitting_one_batch(tiny_cifar: Path) -> None:
    splits = load_splits(tiny_cifar, val_size=0.0, seed=0, train_subset=32)
    run = train(tiny_cfg(width=8, epochs=20, batch_size=32, max_lr=0.4, aug_strength=0.0, val_size=0.0), splits)
    losses = [m.train_loss for m in run.result.history]
    assert run.result.status == "completed" and len(losses) == 20
    assert losses[-1] < 0.5 * losses[0]


def test_cpu_runs_are_deterministic(tiny_cifar: Path) -> None:
    splits = load_splits(tiny_cifar, val_size=0.1, seed=7)
    a = train(tiny_cfg(), splits)
    b = train(tiny_cfg(), splits)
    assert weights_equal(a.model, b.model)
    c = train(tiny_cfg(seed=8), splits)
    assert not weights_equal(a.model, c.model)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_gives_same_weights(tiny_cifar: Path, tmp_path: Path, workers: int) -> None:
    cfg = tiny_cfg(num_workers=workers)
    splits = load_splits(tiny_cifar, val_size=cfg.val_size, seed=cfg.seed)
    full = train(cfg, splits)
    part = train(cfg, splits, [Checkpointer(tmp_path / "ck"), StopAfter(1)])
    assert part.result.status == "stopped" and part.result.epochs == 1
    ckpt = Checkpoint.load(tmp_path / "ck" / "last.pt")
    assert ckpt.epoch == 1
    resumed = train(cfg, splits, [Checkpointer(tmp_path / "ck")], resume=ckpt)
    assert resumed.result.status == "completed" and resumed.result.epochs == 3
    assert [m.epoch for m in resumed.result.history] == [1, 2, 3]
    assert weights_equal(full.model, resumed.model)


def test_divergence_is_a_status_not_a_crash(tiny_cifar: Path, tmp_path: Path) -> None:
    splits = load_splits(tiny_cifar, val_size=0.1, seed=0)
    run = train(tiny_cfg(max_lr=1e6), splits, [Checkpointer(tmp_path / "ck")])
    assert run.result.status == "diverged"
    assert not (tmp_path / "ck" / "last.pt").exists()  # no NaN weights saved as "last"


def test_metrics_file_and_checkpoint_roundtrip(tiny_cifar: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(epochs=2)
    splits = load_splits(tiny_cifar, val_size=cfg.val_size, seed=cfg.seed)
    run = train(cfg, splits, [MetricsFile(tmp_path / "m.jsonl"), Checkpointer(tmp_path / "ck")])
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_s", "images_per_s"):
        assert key in rows[0]
    ckpt = Checkpoint.load(tmp_path / "ck" / "last.pt")
    assert TrainConfig.from_dict(ckpt.config) == cfg
    model = ckpt.build_model()
    assert weights_equal(model, run.model.cpu())
    a, b = (score(m, run.loaders.eval, torch.device("cpu")) for m in (model, run.model))
    assert (a.loss, a.accuracy) == (b.loss, b.accuracy)


def test_bad_checkpoints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        Checkpoint.load(bad)
    with pytest.raises(CheckpointError, match="no such"):
        Checkpoint.load(tmp_path / "missing.pt")
    # an arbitrary pickle is refused by weights_only loading
    evil = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "config": {}, "x": Path("/")}, evil)
    with pytest.raises(CheckpointError):
        Checkpoint.load(evil)
    # width mismatch
    cfg = tiny_cfg()
    from s9tune.model import build_model

    ok = tmp_path / "ok.pt"
    Checkpoint(config=cfg.to_dict(), model_state=build_model(cfg).state_dict(), epoch=1).save(ok)
    with pytest.raises(CheckpointError, match="width 4, not 8"):
        Checkpoint.load(ok).build_model(ok, width=8)


@pytest.mark.slow  # 110 s on 2 CPU cores
def test_learns_on_real_images(mini: Path) -> None:
    """A width-16 model on the real mini slice beats chance (10%) by far in a few CPU epochs."""
    cfg = TrainConfig(width=16, epochs=5, batch_size=128, device="cpu", val_size=0.0, seed=0)
    splits = load_splits(mini, val_size=0.0, seed=0)
    run = train(cfg, splits)
    acc = score(run.model, run.loaders.test, run.device).accuracy
    assert acc >= 0.40, acc


@pytest.mark.slow
def test_compiled_fit_matches_eager(tiny_cifar: Path, tmp_path: Path) -> None:
    """cfg.compile (the GPU speed path) also runs on the CPU, so it cannot rot: same losses within
    float tolerance, and checkpoints hold the plain model's state (no `_orig_mod.` keys)."""
    splits = load_splits(tiny_cifar, val_size=0.1, seed=0)
    eager = train(tiny_cfg(epochs=2), splits)
    compiled = train(tiny_cfg(epochs=2, compile=True), splits, [Checkpointer(tmp_path / "ck")])
    for a, b in zip(eager.result.history, compiled.result.history, strict=True):
        assert abs(a.train_loss - b.train_loss) < 1e-2
    keys = Checkpoint.load(tmp_path / "ck" / "last.pt").model_state.keys()
    assert not any(k.startswith("_orig_mod") for k in keys)


class FirstBatches(torch.nn.Module):
    """The model, recording the first training batch it sees in each epoch."""

    def __init__(self, model: torch.nn.Module, per_epoch: int) -> None:
        super().__init__()
        self.model, self.per_epoch, self.calls, self.firsts = model, per_epoch, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if self.calls % self.per_epoch == 0:
                self.firsts.append(x.detach().clone())
            self.calls += 1
        return self.model(x)


@pytest.mark.parametrize("data_path", ["albumentations", "tensor"])
def test_every_epoch_draws_its_own_order_and_augmentation(tiny_cifar: Path, data_path: str) -> None:
    """fit() tells the loader which epoch it is: without that every epoch repeats the first one's
    order and augmentation (the resume tests cannot see it: both runs would repeat alike)."""
    from s9tune.augment import make_loaders
    from s9tune.engine import fit, resolve_device
    from s9tune.model import build_model

    cfg = tiny_cfg(epochs=2, data_path=data_path, train_subset=64)
    splits = load_splits(tiny_cifar, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    device = resolve_device(cfg)
    loaders = make_loaders(cfg, splits, device)
    model = FirstBatches(build_model(cfg), per_epoch=len(loaders.train))
    fit(cfg, model, loaders, device)
    assert len(model.firsts) == 2 and not torch.equal(model.firsts[0], model.firsts[1])
