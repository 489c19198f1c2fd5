"""What every benchmark script shares: where the mini slice lives, a device sync for timing, and
the shipped search spaces and defaults, read through s9tune rather than copied. The scripts
import s9tune as an installed package (`pip install -e .`, or PYTHONPATH on the GPU machine)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]

MINI_DIR = REPO.parent / "shared" / "data" / "cifar10-mini"
SPACES_DIR = REPO / "search_spaces"

if TYPE_CHECKING:
    import torch

    from s9tune.search.space.space import SearchSpace


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads when the work ended, not when it was queued."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shipped_space(name: str = "default") -> SearchSpace:
    from s9tune.search.space.space import load_space

    return load_space(SPACES_DIR / f"{name}.yaml")
