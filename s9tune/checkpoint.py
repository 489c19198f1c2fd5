"""The one checkpoint type: what `fit()` saves at the end of an epoch, what a search trial resumes from, and
what `retrain`/`analyze` rebuild a model from. Written atomically, read with `weights_only=True`.

On disk it is a plain dict (format_version, versions and the fields below), so any torch can
read it without importing s9tune.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from s9tune import __version__
from s9tune.config import TrainConfig
from s9tune.errors import CheckpointError, ConfigError, shown
from s9tune.fileio import atomic_path
from s9tune.model import build_model

FORMAT_VERSION = 1
ARCHIVE_SLACK = 1024 * 1024  # declared sizes may exceed the file's by this much (none do: headers count)


def versions() -> dict[str, str]:
    return {"s9tune": __version__, "torch": str(torch.__version__)}  # TorchVersion would not load with weights_only


def _check_archive(path: Path) -> None:
    """torch.save writes a zip whose entries are stored, not compressed, so their declared
    sizes add up to about the file's own. A compressed entry, or sizes far beyond the file's,
    is a zip bomb (1 MB that inflates to gigabytes inside torch.load): refused before it is read."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format, or not a checkpoint: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable s9tune checkpoint ({exc})") from None
    declared = sum(e.file_size for e in entries)
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or declared > path.stat().st_size + ARCHIVE_SLACK:
        raise CheckpointError(
            f"{path}: its entries would unpack to {declared:,} bytes from a {path.stat().st_size:,}-byte file "
            "(torch.save stores them uncompressed); refused as a zip bomb"
        )


@dataclass
class Checkpoint:
    config: dict[str, Any]  # TrainConfig.to_dict(): plain, so weights_only loading accepts it
    model_state: dict[str, torch.Tensor]
    epoch: int = 0  # epochs completed
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    scheduler_state: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # EpochMetrics.to_dict() per epoch
    rng_state: torch.Tensor | None = None
    versions: dict[str, str] = field(default_factory=versions)

    def save(self, path: Path) -> None:
        with atomic_path(Path(path)) as tmp:
            torch.save({"format_version": FORMAT_VERSION, **asdict(self)}, tmp)

    @classmethod
    def load(cls, path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        _check_archive(path)
        try:
            raw = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a readable s9tune checkpoint ({first[:160]})") from None
        if not isinstance(raw, dict) or "model_state" not in raw or "config" not in raw:
            raise CheckpointError(f"{path}: not an s9tune checkpoint (no model_state/config)")
        if raw.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {shown(raw.get('format_version'))}, this s9tune reads {FORMAT_VERSION}"
            )
        known = cls.__dataclass_fields__
        ckpt = cls(**{k: v for k, v in raw.items() if k in known})
        ckpt._check_types(path)
        return ckpt

    def _check_types(self, path: Path) -> None:
        """weights_only loading admits any plain container: a payload of the wrong shape would
        otherwise fail deep inside torch (a list as model_state) or run away (epoch 10**12)."""
        expected = {
            "config": dict,
            "model_state": dict,
            "epoch": int,
            "optimizer_state": dict,
            "scheduler_state": dict,
            "metrics": list,
            "versions": dict,
        }
        for name, tp in expected.items():
            value = getattr(self, name)
            if not isinstance(value, tp) or isinstance(value, bool):
                raise CheckpointError(f"{path}: {name} is a {type(value).__name__}, not a {tp.__name__}")
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in self.model_state.items()):
            raise CheckpointError(f"{path}: model_state must map parameter names to tensors")
        if self.rng_state is not None and not isinstance(self.rng_state, torch.Tensor):
            raise CheckpointError(f"{path}: rng_state is a {type(self.rng_state).__name__}, not a tensor")
        epochs = self.config.get("epochs")
        if not 0 <= self.epoch <= (epochs if isinstance(epochs, int) else 0):
            raise CheckpointError(
                f"{path}: epoch {shown(self.epoch)} does not lie within its {shown(epochs)}-epoch run"
            )

    def train_config(self, where: Path | str = "checkpoint") -> TrainConfig:
        try:
            return TrainConfig.from_dict(self.config)
        except ConfigError as exc:
            raise CheckpointError(f"{where}: its config is not valid here ({exc})") from None

    def build_model(self, where: Path | str = "checkpoint", width: int | None = None) -> nn.Module:
        """The model this checkpoint was trained with, weights loaded; `width`, if given, must match."""
        cfg = self.train_config(where)
        if width is not None and width != cfg.width:
            raise CheckpointError(f"{where}: trained at width {cfg.width}, not {width}")
        model = build_model(cfg)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{where}: weights do not fit a width-{cfg.width} model ({first})") from None
        return model
