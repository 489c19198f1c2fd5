"""The S9 custom ResNet (David Page's ResNet-9), with a width knob for tests and CPU runs.

At width 64 it has 6,573,120 parameters and the layer shapes of the seed README's summary.
"""

from __future__ import annotations

import torch
from torch import nn
from torchinfo import summary

from s9tune.config import TrainConfig


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    """3x3 conv (no bias: BN follows), optional 2x2 max-pool, BN, ReLU: the seed's order."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + block(x), where block is two conv-BN-ReLU units."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res1 = conv_bn(channels, channels)
        self.res2 = conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res2(self.res1(x))


class CustomResNet(nn.Module):
    """prep -> layer1 (+R1) -> layer2 -> layer3 (+R2) -> MaxPool(4) -> linear -> * logit_scale.

    `logit_scale` (Page's Mul(0.125)) has no parameters and no layer of its own, so the
    summary table is the seed's; it keeps the softmax from saturating at lr 0.4.
    """

    def __init__(self, width: int = 64, num_classes: int = 10, logit_scale: float = 0.125) -> None:
        super().__init__()
        w = width
        self.prep = conv_bn(3, w)
        self.layer1 = conv_bn(w, 2 * w, pool=True)
        self.r1 = Residual(2 * w)
        self.layer2 = conv_bn(2 * w, 4 * w, pool=True)
        self.layer3 = conv_bn(4 * w, 8 * w, pool=True)
        self.r2 = Residual(8 * w)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        x = self.layer1(x)
        x = self.r1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.r2(x)
        x = self.pool(x).flatten(1)
        return self.fc(x) * self.logit_scale


def build_model(cfg: TrainConfig, num_classes: int = 10) -> CustomResNet:
    """A freshly initialised model; its weights depend only on cfg.seed (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return CustomResNet(cfg.width, num_classes, cfg.logit_scale)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary_table(width: int = 64) -> str:
    """The per-layer summary (torchinfo), as the seed README shows it."""
    model = CustomResNet(width)
    stats = summary(
        model,
        input_size=(1, 3, 32, 32),
        col_names=("output_size", "num_params"),
        depth=3,
        verbose=0,
        device="cpu",
    )
    return str(stats)
