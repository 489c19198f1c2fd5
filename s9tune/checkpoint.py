"""One checkpoint payload, written atomically, read with `weights_only=True`.

Payload keys: format_version, model_state, optimizer_state, scheduler_state, epoch (epochs
completed), config (plain dict), metrics (per-epoch dicts), rng_state, versions.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from s9tune import __version__
from s9tune.config import TrainConfig
from s9tune.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def versions() -> dict[str, str]:
    return {"s9tune": __version__, "torch": str(torch.__version__)}  # TorchVersion would not load with weights_only


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format_version": FORMAT_VERSION, "versions": versions(), **payload}, tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable s9tune checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or "model_state" not in payload or "config" not in payload:
        raise CheckpointError(f"{path}: not an s9tune checkpoint (no model_state/config)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format_version')!r}, this s9tune reads {FORMAT_VERSION}"
        )
    return payload


def config_from_payload(payload: dict[str, Any], path: Path | None = None) -> TrainConfig:
    try:
        return TrainConfig.from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path or 'checkpoint'}: its config is not valid here ({exc})") from None


def model_from_payload(payload: dict[str, Any], path: Path | None = None, width: int | None = None) -> torch.nn.Module:
    """Rebuild the model a checkpoint was trained with; `width`, if given, must match it."""
    from s9tune.model import CustomResNet

    cfg = config_from_payload(payload, path)
    if width is not None and width != cfg.width:
        raise CheckpointError(f"{path or 'checkpoint'}: trained at width {cfg.width}, not {width}")
    model = CustomResNet(cfg.width, 10, cfg.logit_scale)
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path or 'checkpoint'}: weights do not fit a width-{cfg.width} model ({first})") from None
    return model
