"""`s9tune analyze CHECKPOINT`: the analysis of `analyze_model` for any saved checkpoint, with
the training history of its run folder when it has one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from s9tune.analysis.analyze import analyze_model
from s9tune.analysis.cam import DEFAULT_TARGET_LAYER, resolve_target_layer
from s9tune.callbacks import read_metrics_jsonl
from s9tune.checkpoint import Checkpoint
from s9tune.errors import OutputExistsError

logger = logging.getLogger(__name__)


def _run_folder_history(checkpoint: Path) -> Path | None:
    """RUN/metrics.jsonl if `checkpoint` is RUN/checkpoints/<name>.pt, else None."""
    if checkpoint.parent.name == "checkpoints":
        jsonl = checkpoint.parent.parent / "metrics.jsonl"
        if jsonl.is_file():
            return jsonl
    return None


def analyze_checkpoint(
    checkpoint_path: Path,
    data_dir: Path | str | None,
    out_dir: Path,
    *,
    force: bool = False,
    target_layer: str = DEFAULT_TARGET_LAYER,
    width: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """`s9tune analyze CHECKPOINT --data-dir D --out DIR`.

    Raises CheckpointError (unreadable file, width mismatch), ConfigError (unknown target
    layer), DataError, or OutputExistsError (non-empty `out_dir` without `force`). Everything
    that can fail is checked before `out_dir` is touched.
    """
    from s9tune.data import load_splits
    from s9tune.outdir import prepare_out_dir

    path = Path(checkpoint_path).expanduser().resolve()
    ckpt = Checkpoint.load(path)
    cfg = ckpt.train_config(path)
    model = ckpt.build_model(path, width=width)
    resolve_target_layer(model, target_layer)
    real_out = Path(out_dir).expanduser().resolve()
    if real_out == path.parent or real_out in path.parents:
        raise OutputExistsError(f"{real_out}: holds the checkpoint being analysed; choose another --out")
    splits = load_splits(data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    history_file = _run_folder_history(path)
    if history_file is not None:
        rows = read_metrics_jsonl(history_file)
        logger.info("training history from %s (%d epochs)", history_file, len(rows))
    else:
        rows = [dict(m) for m in ckpt.metrics if isinstance(m, Mapping)]
    out = prepare_out_dir(out_dir, kind="analyze", force=force, protect=(data_dir,))
    name = path.parent.parent.name if history_file is not None else path.stem
    return analyze_model(
        model,
        cfg,
        splits,
        out,
        history_rows=rows,
        target_layer=target_layer,
        device=device,
        title=f"s9tune analysis: {name}",
        extra={"checkpoint": str(path), "checkpoint_epoch": ckpt.epoch},
    )
