"""`s9tune analyze` (and the end of `retrain`): explain a trained model on the test split.

Writes into one folder: plots/*.png (training curves, per-class accuracy, confusion matrix,
misclassified gallery, GradCAM grids, augmentation samples), analysis.json, report.md and a
self-contained report.html (`metrics.seed_style_lines` gives the seed's console output);
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
from s9tune.analysis import seedlog
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


@dataclass(frozen=True)
class AnalysisSpec:
    """What an analysis shows besides the model's test predictions: the GradCAM layer, how many
    images the gallery and each GradCAM grid hold, the device it runs on (default: CUDA if
    available), the run's per-epoch history (training curves), and the report's title,
    leaderboard and extra fields (also written into analysis.json)."""

    target_layer: str = DEFAULT_TARGET_LAYER
    device: torch.device | str | None = None
    n_gallery: int = 20
    n_cam: int = 10
    history_rows: Sequence[Mapping[str, Any]] = ()
    title: str | None = None
    leaderboard: Sequence[Mapping[str, Any]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Analysis:
    """One analysis under way: where it writes, what it found, what it was asked for."""

    out: Path
    figs: _Figures
    ev: M.TestEvaluation
    cfg: TrainConfig
    dev: torch.device
    spec: AnalysisSpec


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
    shown = P.plot_misclassified(test_x, ev, ev.wrong[:n_gallery], figs.path("misclassified"))
    figs.add(
        "misclassified",
        "Misclassified images",
        f"The {len(shown)} most confident mistakes (confidence of the wrong class in brackets).",
    )
    return shown


def _plot_gradcam(a: _Analysis, cam_model: nn.Module, test_x: np.ndarray) -> dict[str, list[int]]:
    """GradCAM grids of the predicted class on mistakes and on correct images; returns the images used."""
    figs, ev, dev, layer, n_cam = a.figs, a.ev, a.dev, a.spec.target_layer, a.spec.n_cam
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
        titles = [P.verdict(names[ev.y_true[i]], names[ev.y_pred[i]], float(conf[i])) for i in idx]
        colors = [P.OK_COLOR if ev.y_true[i] == ev.y_pred[i] else P.BAD_COLOR for i in idx]
        heading = f"GradCAM on {layer} for the predicted class: {label} test images"
        P.plot_cam_grid(images01, overlay_cams(images01, maps), figs.path(key), P.Captions(titles, heading, colors))
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
    P.plot_augmentation_samples(splits.train_x[idx], figs.path("augmentation"), cfg=cfg, draws=AUG_DRAWS, labels=names)
    figs.add(
        "augmentation", "Data augmentation", f"Random training augmentations at aug_strength={cfg.aug_strength:g}."
    )


def _analysis_record(a: _Analysis, shown: list[int], cams: dict[str, list[int]]) -> dict[str, Any]:
    """What analysis.json holds."""
    ev, figs, layer, dev, cfg, extra = a.ev, a.figs, a.spec.target_layer, a.dev, a.cfg, a.spec.extra
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
        **dict(extra),
    }


def _write_report(a: _Analysis) -> None:
    ev, rows, figs, layer, cfg, extra = a.ev, a.spec.history_rows, a.figs, a.spec.target_layer, a.cfg, a.spec.extra
    total = ev.total
    summary: list[tuple[str, Any]] = [("test accuracy", f"{100 * ev.correct / total:.2f}%" if total else "—")]
    if rows:
        last = rows[-1]
        summary.append(("epochs", last.get("epoch")))
        if last.get("eval_split") == "val":
            summary.append(("val accuracy", last.get("eval_accuracy")))
        summary.append(("final train accuracy", last.get("train_accuracy")))
    summary += [("misclassified", f"{len(ev.wrong)} of {total}"), ("GradCAM layer", layer), ("width", cfg.width)]
    summary += [(key, extra[key]) for key in ("checkpoint", "status") if key in extra]
    data = ReportData(
        title=a.spec.title or "s9tune analysis",
        test_line=seedlog.seed_test_line(ev.loss, ev.correct, total) if total else None,
        classes=ev.classes,
        per_class_accuracy=[_finite_or_none(float(a)) for a in ev.per_class_accuracy],
        per_class_counts=[int(n) for n in ev.class_counts],
        per_class_correct=[int(n) for n in ev.per_class_correct],
        config=cfg.to_dict(),
        summary=summary,
        figures=figs.figures,
        leaderboard=a.spec.leaderboard,
        notes=() if rows else ("No training history found: the training-curve plot is left out.",),
    )
    write_report(data, a.out)


def analyze_model(
    model: nn.Module,
    cfg: TrainConfig,
    splits: Splits,
    out_dir: Path,
    *,
    spec: AnalysisSpec | None = None,
    predictions: Predictions | None = None,
) -> dict[str, Any]:
    """Explain `model` on the test split: plots, analysis.json and the reports.

    `predictions` are the model's test predictions when the caller already has them (retrain's
    last epoch), so the test set is scored once per set of weights. `model` itself is left
    untouched (mode, device, hooks): prediction and GradCAM run on a deep copy. `out_dir` is
    created if needed; files already in it are overwritten.
    """
    spec = spec or AnalysisSpec()
    resolve_target_layer(model, spec.target_layer)  # a typo fails before any work
    dev = _device(spec.device)
    figs = _Figures(Path(out_dir) / PLOTS)
    figs.plots_dir.mkdir(parents=True, exist_ok=True)
    # one copy serves both: eval mode and non-inplace ReLUs give the same logits as the original
    cam_model = prepare_cam_model(model, dev)
    if predictions is None:
        predictions = score(cam_model, EvalBatches(splits.test_x, splits.test_y, cfg.eval_batch_size, dev), dev)
    ev = M.TestEvaluation.from_logits(
        predictions.logits.numpy(), predictions.labels.numpy(), splits.classes, predictions.loss
    )
    logger.info("test accuracy %d/%d, %d misclassified", ev.correct, ev.total, len(ev.wrong))
    a = _Analysis(Path(out_dir), figs, ev, cfg, dev, spec)
    _plot_curves(figs, spec.history_rows, cfg, len(splits.train_y))
    shown = _plot_test_set(figs, ev, splits.test_x, spec.n_gallery)
    cams = _plot_gradcam(a, cam_model, splits.test_x)
    _plot_augmentation(figs, cfg, splits)
    result = _analysis_record(a, shown, cams)
    atomic_write_json(a.out / "analysis.json", result)
    _write_report(a)
    return result
