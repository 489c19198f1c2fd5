"""`s9tune analyze CHECKPOINT`: the analysis of `analyze_model` for any saved checkpoint, with
the training history of its run folder when it has one."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from s9tune.analysis.analyze import AnalysisSpec, analyze_model
from s9tune.analysis.cam import resolve_target_layer
from s9tune.callbacks import read_metrics_jsonl
from s9tune.checkpoint import Checkpoint
from s9tune.data import load_splits
from s9tune.errors import CheckpointError, OutputExistsError
from s9tune.options import AnalyzeOptions
from s9tune.outdir import prepare_out_dir
from s9tune.storage import Folder, is_uri

logger = logging.getLogger(__name__)


def _run_folder_history(checkpoint: Path) -> Path | None:
    """RUN/metrics.jsonl if `checkpoint` is RUN/checkpoints/<name>.pt, else None."""
    if checkpoint.parent.name == "checkpoints":
        jsonl = checkpoint.parent.parent / "metrics.jsonl"
        if jsonl.is_file():
            return jsonl
    return None


def _fetched(uri: str, dest: Path) -> Path:
    """A checkpoint on storage, copied to `dest` in the same shape: RUN/checkpoints/NAME.pt
    comes with RUN/metrics.jsonl (its training history), if there is one."""
    folder = Folder.parse(uri)
    local = dest / folder.parent.name / folder.name
    if not folder.exists():
        raise CheckpointError(f"{uri}: no such checkpoint file")
    folder.download(local)
    if folder.parent.name == "checkpoints" and folder.parent.parent.exists("metrics.jsonl"):
        folder.parent.parent.download(dest / "metrics.jsonl", "metrics.jsonl")
    return local


def analyze_checkpoint(opts: AnalyzeOptions) -> dict[str, Any]:
    """`s9tune analyze CHECKPOINT --data-dir D --out DIR`.

    Raises CheckpointError (unreadable file, width mismatch), ConfigError (unknown target
    layer), DataError, OutputExistsError (non-empty `out` without `force`) or StorageError
    (a URI that cannot be read). Everything that can fail is checked before `out` is touched.
    """
    if is_uri(str(opts.checkpoint)):
        with tempfile.TemporaryDirectory(prefix="s9tune-analyze-") as tmp:
            return _analyze(_fetched(str(opts.checkpoint), Path(tmp)), opts, source=str(opts.checkpoint))
    path = Path(opts.checkpoint).expanduser().resolve()
    return _analyze(path, opts, source=str(path))


def _analyze(path: Path, opts: AnalyzeOptions, *, source: str) -> dict[str, Any]:
    ckpt = Checkpoint.load(path)
    cfg = ckpt.train_config(path)
    model = ckpt.build_model(path, width=opts.width)
    resolve_target_layer(model, opts.target_layer)
    real_out = Path(opts.out).expanduser().resolve()
    if real_out == path.parent or real_out in path.parents:
        raise OutputExistsError(f"{real_out}: holds the checkpoint being analysed; choose another --out")
    splits = load_splits(opts.data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    history_file = _run_folder_history(path)
    if history_file is not None:
        rows = read_metrics_jsonl(history_file)
        logger.info("training history from %s (%d epochs)", history_file, len(rows))
    else:
        rows = [dict(m) for m in ckpt.metrics if isinstance(m, Mapping)]
    out = prepare_out_dir(opts.out, kind="analyze", force=opts.force, protect=(opts.data_dir,))
    shown = PurePosixPath(source.partition("?")[0])  # the checkpoint as the user named it
    name = shown.parent.parent.name if history_file is not None else shown.stem
    spec = AnalysisSpec(
        target_layer=opts.target_layer,
        device=opts.device,
        history_rows=rows,
        title=f"s9tune analysis: {name}",
        extra={"checkpoint": source, "checkpoint_epoch": ckpt.epoch},
    )
    return analyze_model(model, cfg, splits, out, spec=spec)
