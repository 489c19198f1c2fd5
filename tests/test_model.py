from __future__ import annotations

import pytest
import torch
from torch import nn

from s9tune.config import TrainConfig
from s9tune.model import CustomResNet, build_model, count_params, summary_table

# The seed README's summary table: (layer type, output shape without batch, params)
SEED_TABLE = [
    ("Conv2d", (64, 32, 32), 1728),
    ("BatchNorm2d", (64, 32, 32), 128),
    ("ReLU", (64, 32, 32), 0),
    ("Conv2d", (128, 32, 32), 73728),
    ("MaxPool2d", (128, 16, 16), 0),
    ("BatchNorm2d", (128, 16, 16), 256),
    ("ReLU", (128, 16, 16), 0),
    ("Conv2d", (128, 16, 16), 147456),
    ("BatchNorm2d", (128, 16, 16), 256),
    ("ReLU", (128, 16, 16), 0),
    ("Conv2d", (128, 16, 16), 147456),
    ("BatchNorm2d", (128, 16, 16), 256),
    ("ReLU", (128, 16, 16), 0),
    ("Conv2d", (256, 16, 16), 294912),
    ("MaxPool2d", (256, 8, 8), 0),
    ("BatchNorm2d", (256, 8, 8), 512),
    ("ReLU", (256, 8, 8), 0),
    ("Conv2d", (512, 8, 8), 1179648),
    ("MaxPool2d", (512, 4, 4), 0),
    ("BatchNorm2d", (512, 4, 4), 1024),
    ("ReLU", (512, 4, 4), 0),
    ("Conv2d", (512, 4, 4), 2359296),
    ("BatchNorm2d", (512, 4, 4), 1024),
    ("ReLU", (512, 4, 4), 0),
    ("Conv2d", (512, 4, 4), 2359296),
    ("BatchNorm2d", (512, 4, 4), 1024),
    ("ReLU", (512, 4, 4), 0),
    ("MaxPool2d", (512, 1, 1), 0),
    ("Linear", (10,), 5120),
]


def layer_trace(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    rows: list[tuple[str, tuple[int, ...], int]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out: rows.append(
                (type(mod).__name__, tuple(out.shape[1:]), sum(p.numel() for p in mod.parameters()))
            )
        )
        for m in model.modules()
        if not list(m.children())
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    return rows


def test_width64_matches_seed_table() -> None:
    model = CustomResNet(64)
    assert count_params(model) == 6_573_120
    assert layer_trace(model) == SEED_TABLE


@pytest.mark.parametrize("width", [1, 8, 16])
def test_small_widths_scale(width: int) -> None:
    model = CustomResNet(width)
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)
    shapes = [s for _, s, _ in layer_trace(model)]
    assert shapes[-2] == (8 * width, 1, 1)


def test_build_model_is_seeded_and_leaves_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model(TrainConfig(width=4, seed=1))
    b = build_model(TrainConfig(width=4, seed=1))
    c = build_model(TrainConfig(width=4, seed=2))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.prep[0].weight, c.prep[0].weight)


def test_summary_table_prints_total() -> None:
    text = summary_table(64)
    assert "6,573,120" in text and "[1, 512, 1, 1]" in text
