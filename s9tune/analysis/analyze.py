"""`s9tune analyze` (and the end of `retrain`): explain a trained model on the test split.

Writes into one folder: plots/*.png (training curves, per-class accuracy, confusion matrix,
misclassified gallery, GradCAM grids, augmentation samples), analysis.json, report.md and a
self-contained report.html. `seed_style_lines` gives the seed's console output for the CLI;
`analysis/from_checkpoint.py` runs the same analysis on a saved checkpoint.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from s9tune.analysis import metrics as M
from s9tune.analysis import plots as P
from s9tune.analysis.cam import (
    DEFAULT_TARGET_LAYER,
    compute_gradcam,
    denormalize,
    overlay_cams,
    prepare_cam_model,
    resolve_target_layer,
)
from s9tune.analysis.report import ReportData, ReportFigure, write_report
from s9tune.augment import EvalBatches, normalize_uint8
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.engine import Predictions, score
from s9tune.fileio import atomic_write_json
from s9tune.optim import lr_schedule

logger = logging.getLogger(__name__)

PLOTS = "plots"
AUG_IMAGES = 4
AUG_DRAWS = 5


@dataclass
class _Figures:
    """The PNGs written so far, in report order."""

    plots_dir: Path
    figures: list[ReportFigure] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)

    def path(self, key: str) -> Path:
        return self.plots_dir / f"{key}.png"

    def add(self, key: str, section: str, caption: str, wide: bool = True) -> None:
        rel = f"{PLOTS}/{key}.png"
        self.paths[key] = rel
        self.figures.append(ReportFigure(section, caption, rel, wide))


def _device(device: torch.device | str | None) -> torch.device:
    # not cfg.device: a checkpoint trained with device=cuda must still be analysable on a laptop
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _plot_curves(figs: _Figures, rows: Sequence[Mapping[str, Any]], cfg: TrainConfig, train_images: int) -> None:
    if not rows:
        return
    P.plot_training_curves(rows, figs.path("training_curves"), lr_curve=lr_schedule(cfg, train_images))
    split = rows[-1].get("eval_split", "eval")
    figs.add(
        "training_curves", "Training curves", f"Loss, accuracy and learning rate per epoch ({split} split as eval)."
    )


def _plot_test_set(figs: _Figures, ev: M.TestEvaluation, test_x: np.ndarray, n_gallery: int) -> list[int]:
    """Per-class accuracy, confusion matrix and the gallery of confident mistakes; returns the gallery."""
    cm = ev.cm
    P.plot_per_class_accuracy(ev.classes, ev.per_class_accuracy, figs.path("per_class_accuracy"), overall=ev.accuracy)
    figs.add(
        "per_class_accuracy", "Test set", "Test accuracy per class; orange bars are below the overall.", wide=False
    )
    P.plot_confusion_matrix(cm, ev.classes, figs.path("confusion_matrix"))
    figs.add(
        "confusion_matrix",
        "Test set",
        "Confusion matrix: rows are true classes, columns predictions; colour is the row fraction.",
        wide=False,
    )
    if n_gallery <= 0 or not len(ev.wrong):
        return []
    shown = P.plot_misclassified(
        test_x,
        ev.y_true,
        ev.y_pred,
        ev.classes,
        ev.wrong[:n_gallery],
        figs.path("misclassified"),
        confidences=ev.confidence,
    )
    figs.add(
        "misclassified",
        "Misclassified images",
        f"The {len(shown)} most confident mistakes (confidence of the wrong class in brackets).",
    )
    return shown


def _plot_gradcam(
    figs: _Figures,
    cam_model: nn.Module,
    ev: M.TestEvaluation,
    test_x: np.ndarray,
    dev: torch.device,
    layer: str,
    n_cam: int,
) -> dict[str, list[int]]:
    """GradCAM grids of the predicted class on mistakes and on correct images; returns the images used."""
    cam_sets: dict[str, list[int]] = {}
    if n_cam <= 0:
        return cam_sets
    for key, chosen, label in (
        ("gradcam_misclassified", ev.wrong[:n_cam], "misclassified"),
        ("gradcam_correct", M.spread_over_classes(ev.right, ev.y_true, n_cam), "correctly classified"),
    ):
        idx = [int(i) for i in chosen]
        if not idx:
            continue
        x = normalize_uint8(test_x[idx], dev)
        # explain the predicted class: what the network saw when it made this decision
        maps = compute_gradcam(cam_model, x, [int(ev.y_pred[i]) for i in idx], target_layer=layer)
        images01 = denormalize(x)
        names, conf = ev.classes, ev.confidence
        titles = [f"true: {names[ev.y_true[i]]}\npred: {names[ev.y_pred[i]]} ({conf[i]:.2f})" for i in idx]
        colors = [P.OK_COLOR if ev.y_true[i] == ev.y_pred[i] else P.BAD_COLOR for i in idx]
        P.plot_cam_grid(
            images01,
            overlay_cams(images01, maps),
            titles,
            figs.path(key),
            suptitle=f"GradCAM on {layer} for the predicted class: {label} test images",
            title_colors=colors,
        )
        cam_sets[key] = idx
        figs.add(
            key, "GradCAM", f"GradCAM ({layer}) of the predicted class on {label} images; image above, heatmap below."
        )
    return cam_sets


def _plot_augmentation(figs: _Figures, cfg: TrainConfig, splits: Splits) -> None:
    if not len(splits.train_y):
        return
    # the first training image of each of the first classes present: varied, and stable
    idx = M.spread_over_classes(np.arange(len(splits.train_y)), splits.train_y, AUG_IMAGES)
    names = [splits.classes[int(splits.train_y[i])] for i in idx]
    P.plot_augmentation_samples(
        splits.train_x[idx],
        figs.path("augmentation"),
        strength=cfg.aug_strength,
        pad_mode=cfg.pad_mode,
        draws=AUG_DRAWS,
        seed=cfg.seed,
        labels=names,
    )
    figs.add(
        "augmentation", "Data augmentation", f"Random training augmentations at aug_strength={cfg.aug_strength:g}."
    )


def _analysis_record(
    ev: M.TestEvaluation,
    shown: list[int],
    cams: dict[str, list[int]],
    figs: _Figures,
    layer: str,
    dev: torch.device,
    cfg: TrainConfig,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What analysis.json holds."""
    return {
        "test_accuracy": _finite_or_none(ev.accuracy),
        "test_loss": _finite_or_none(ev.loss),
        "test_correct": ev.correct,
        "test_images": ev.total,
        "classes": list(ev.classes),
        "per_class_accuracy": {
            c: _finite_or_none(float(a)) for c, a in zip(ev.classes, ev.per_class_accuracy, strict=True)
        },
        "per_class_counts": {c: int(n) for c, n in zip(ev.classes, ev.class_counts, strict=True)},
        "per_class_correct": {c: int(n) for c, n in zip(ev.classes, ev.per_class_correct, strict=True)},
        "confusion_matrix": ev.cm.tolist(),
        "misclassified": len(ev.wrong),
        "misclassified_shown": shown,
        "gradcam_target_layer": layer,
        "gradcam_misclassified": cams.get("gradcam_misclassified", []),
        "gradcam_correct": cams.get("gradcam_correct", []),
        "plots": figs.paths,
        "device": str(dev),
        "config": cfg.to_dict(),
        **dict(extra or {}),
    }


def _write_report(
    out: Path,
    ev: M.TestEvaluation,
    rows: Sequence[Mapping[str, Any]],
    figs: _Figures,
    layer: str,
    cfg: TrainConfig,
    *,
    title: str | None,
    leaderboard: Sequence[Mapping[str, Any]] | None,
    extra: Mapping[str, Any] | None,
) -> None:
    total = ev.total
    summary: list[tuple[str, Any]] = [("test accuracy", f"{100 * ev.correct / total:.2f}%" if total else "—")]
    if rows:
        last = rows[-1]
        summary.append(("epochs", last.get("epoch")))
        if last.get("eval_split") == "val":
            summary.append(("val accuracy", last.get("eval_accuracy")))
        summary.append(("final train accuracy", last.get("train_accuracy")))
    summary += [("misclassified", f"{len(ev.wrong)} of {total}"), ("GradCAM layer", layer), ("width", cfg.width)]
    summary += [(key, extra[key]) for key in ("checkpoint", "status") if extra and key in extra]
    data = ReportData(
        title=title or "s9tune analysis",
        test_line=M.seed_test_line(ev.loss, ev.correct, total) if total else None,
        classes=ev.classes,
        per_class_accuracy=[_finite_or_none(float(a)) for a in ev.per_class_accuracy],
        per_class_counts=[int(n) for n in ev.class_counts],
        per_class_correct=[int(n) for n in ev.per_class_correct],
        config=cfg.to_dict(),
        summary=summary,
        figures=figs.figures,
        leaderboard=leaderboard,
        notes=() if rows else ("No training history found: the training-curve plot is left out.",),
    )
    write_report(data, out)


def analyze_model(
    model: nn.Module,
    cfg: TrainConfig,
    splits: Splits,
    out_dir: Path,
    *,
    predictions: Predictions | None = None,
    history_rows: Sequence[Mapping[str, Any]] | None = None,
    leaderboard: Sequence[Mapping[str, Any]] | None = None,
    target_layer: str = DEFAULT_TARGET_LAYER,
    device: torch.device | str | None = None,
    n_gallery: int = 20,
    n_cam: int = 10,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Explain `model` on the test split: plots, analysis.json and the reports.

    `predictions` are the model's test predictions when the caller already has them (retrain's
    last epoch), so the test set is scored once per set of weights. `model` itself is left
    untouched (mode, device, hooks): prediction and GradCAM run on a deep copy. `out_dir` is
    created if needed; files already in it are overwritten.
    """
    resolve_target_layer(model, target_layer)  # a typo fails before any work
    dev = _device(device)
    out = Path(out_dir)
    figs = _Figures(out / PLOTS)
    figs.plots_dir.mkdir(parents=True, exist_ok=True)
    # one copy serves both: eval mode and non-inplace ReLUs give the same logits as the original
    cam_model = prepare_cam_model(model, dev)
    if predictions is None:
        predictions = score(cam_model, EvalBatches(splits.test_x, splits.test_y, cfg.eval_batch_size, dev), dev)
    ev = M.TestEvaluation.from_logits(
        predictions.logits.numpy(), predictions.labels.numpy(), splits.classes, predictions.loss
    )
    logger.info("test accuracy %d/%d, %d misclassified", ev.correct, ev.total, len(ev.wrong))
    rows = list(history_rows or [])
    _plot_curves(figs, rows, cfg, len(splits.train_y))
    shown = _plot_test_set(figs, ev, splits.test_x, n_gallery)
    cams = _plot_gradcam(figs, cam_model, ev, splits.test_x, dev, target_layer, n_cam)
    _plot_augmentation(figs, cfg, splits)
    result = _analysis_record(ev, shown, cams, figs, target_layer, dev, cfg, extra)
    atomic_write_json(out / "analysis.json", result)
    _write_report(out, ev, rows, figs, target_layer, cfg, title=title, leaderboard=leaderboard, extra=extra)
    return result


def seed_style_lines(result: Mapping[str, Any]) -> list[str]:
    """The seed's console output: the test line, then 'Accuracy of <class> : NN %' per class."""
    lines = []
    if result.get("test_images"):
        raw = result.get("test_loss")
        loss = float("nan") if raw is None else float(raw)
        lines.append(M.seed_test_line(loss, int(result["test_correct"]), int(result["test_images"])))
    per_class = result.get("per_class_accuracy", {})
    lines += M.class_table(list(per_class), [np.nan if v is None else v for v in per_class.values()])
    return lines
