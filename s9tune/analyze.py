"""`s9tune analyze`: explain a trained model on the test split.

Writes into one folder: plots/*.png (training curves, per-class accuracy, confusion matrix,
misclassified gallery, GradCAM grids, augmentation samples), analysis.json, report.md and a
self-contained report.html. The seed's console output (test line, class-wise table) is
returned by `print_seed_style` for the CLI to print.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from s9tune.analysis import metrics as M
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
from s9tune.checkpoint import atomic_write_json, config_from_payload, load_checkpoint, model_from_payload
from s9tune.config import TrainConfig
from s9tune.data import Splits
from s9tune.errors import OutputExistsError

logger = logging.getLogger(__name__)

PLOTS = "plots"
AUG_IMAGES = 4
AUG_DRAWS = 5


def _device(device: torch.device | str | None) -> torch.device:
    # not cfg.device: a checkpoint trained with device=cuda must still be analysable on a laptop
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_schedule(cfg: TrainConfig, train_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(fractional epoch, lr) of every optimiser step of cfg's OneCycle schedule.

    Replays the scheduler `fit()` builds on a dummy parameter, so the curve is the one training
    used rather than a re-derivation. Step i ends at epoch (i + 1) / steps_per_epoch, which
    puts each epoch's last step where metrics.jsonl records its lr.
    """
    from s9tune.engine import make_scheduler

    steps = max(1, math.ceil(train_images / cfg.batch_size))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.max_lr, momentum=cfg.momentum)
    sched = make_scheduler(cfg, opt, steps)
    total = cfg.epochs * steps
    lrs = np.empty(total, dtype=np.float64)
    for i in range(total):
        lrs[i] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return (np.arange(1, total + 1) / steps, lrs)


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Per-epoch rows of a run's metrics.jsonl; unreadable lines are skipped with a warning."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: not JSON; line skipped", path, n)
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def _pick_aug_images(splits: Splits, n: int) -> tuple[np.ndarray, list[str]]:
    """The first training image of each of the first `n` classes present: varied, and stable."""
    idx = M.spread_over_classes(np.arange(len(splits.train_y)), splits.train_y, n)
    return splits.train_x[idx], [splits.classes[int(splits.train_y[i])] for i in idx]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def analyze_model(
    model: nn.Module,
    cfg: TrainConfig,
    splits: Splits,
    out_dir: Path,
    *,
    history_rows: Sequence[Mapping[str, Any]] | None = None,
    leaderboard: Sequence[Mapping[str, Any]] | None = None,
    target_layer: str = DEFAULT_TARGET_LAYER,
    device: torch.device | str | None = None,
    n_gallery: int = 20,
    n_cam: int = 10,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on the test split and write plots, analysis.json and the reports.

    `model` itself is left untouched (mode, device, hooks): prediction and GradCAM run on a
    deep copy. `out_dir` is created if needed; files already in it are overwritten.
    """
    from s9tune.analysis import plots as P
    from s9tune.engine import predict

    resolve_target_layer(model, target_layer)  # a typo fails before any work
    dev = _device(device)
    out = Path(out_dir)
    plots_dir = out / PLOTS
    plots_dir.mkdir(parents=True, exist_ok=True)
    classes = tuple(splits.classes)
    n_classes = len(classes)

    # one copy serves both: eval mode and non-inplace ReLUs give the same logits as the original
    cam_model = prepare_cam_model(model, dev)
    logits, labels = predict(cam_model, EvalBatches(splits.test_x, splits.test_y, cfg.eval_batch_size, dev), dev)
    test_loss = float(nn.functional.cross_entropy(logits, labels).item()) if len(labels) else float("nan")
    probs = M.softmax(logits.numpy())
    y_true = labels.numpy().astype(np.int64)
    y_pred = probs.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)
    conf = probs[np.arange(len(y_pred)), y_pred] if len(y_pred) else np.zeros(0)
    cm = M.confusion_matrix(y_true, y_pred, n_classes)
    acc_c = M.per_class_accuracy(cm)
    counts = M.class_counts(cm)
    correct_c = np.diag(cm)
    correct = int(np.trace(cm))
    total = int(cm.sum())
    wrong = M.misclassified_indices(y_true, probs) if total else np.zeros(0, dtype=np.int64)
    right = M.correct_indices(y_true, probs) if total else np.zeros(0, dtype=np.int64)
    logger.info("test accuracy %d/%d, %d misclassified", correct, total, len(wrong))

    figures: list[ReportFigure] = []
    plot_paths: dict[str, str] = {}

    def add(key: str, section: str, caption: str, wide: bool = True) -> None:
        rel = f"{PLOTS}/{key}.png"
        plot_paths[key] = rel
        figures.append(ReportFigure(section, caption, rel, wide))

    rows = list(history_rows or [])
    if rows:
        lr_curve = lr_schedule(cfg, len(splits.train_y))
        P.plot_training_curves(rows, plots_dir / "training_curves.png", lr_curve=lr_curve)
        split = rows[-1].get("eval_split", "eval")
        add(
            "training_curves", "Training curves", f"Loss, accuracy and learning rate per epoch ({split} split as eval)."
        )

    P.plot_per_class_accuracy(classes, acc_c, plots_dir / "per_class_accuracy.png", overall=M.overall_accuracy(cm))
    add("per_class_accuracy", "Test set", "Test accuracy per class; orange bars are below the overall.", wide=False)
    P.plot_confusion_matrix(cm, classes, plots_dir / "confusion_matrix.png")
    add(
        "confusion_matrix",
        "Test set",
        "Confusion matrix: rows are true classes, columns predictions; colour is the row fraction.",
        wide=False,
    )

    shown: list[int] = []
    if n_gallery > 0 and len(wrong):
        shown = P.plot_misclassified(
            splits.test_x, y_true, y_pred, classes, wrong[:n_gallery], plots_dir / "misclassified.png", confidences=conf
        )
        add(
            "misclassified",
            "Misclassified images",
            f"The {len(shown)} most confident mistakes (confidence of the wrong class in brackets).",
        )

    cam_sets: dict[str, list[int]] = {}
    if n_cam > 0:
        for key, idx, label in (
            ("gradcam_misclassified", wrong[:n_cam], "misclassified"),
            ("gradcam_correct", M.spread_over_classes(right, y_true, n_cam), "correctly classified"),
        ):
            idx = [int(i) for i in idx]
            if not idx:
                continue
            x = normalize_uint8(splits.test_x[idx], dev)
            # explain the predicted class: what the network saw when it made this decision
            maps = compute_gradcam(cam_model, x, [int(y_pred[i]) for i in idx], target_layer=target_layer)
            images01 = denormalize(x)
            titles = [f"true: {classes[y_true[i]]}\npred: {classes[y_pred[i]]} ({conf[i]:.2f})" for i in idx]
            colors = [P.OK_COLOR if y_true[i] == y_pred[i] else P.BAD_COLOR for i in idx]
            P.plot_cam_grid(
                images01,
                overlay_cams(images01, maps),
                titles,
                plots_dir / f"{key}.png",
                suptitle=f"GradCAM on {target_layer} for the predicted class: {label} test images",
                title_colors=colors,
            )
            cam_sets[key] = idx
            add(
                key,
                "GradCAM",
                f"GradCAM ({target_layer}) of the predicted class on {label} images; image above, heatmap below.",
            )

    if len(splits.train_y):
        imgs, names = _pick_aug_images(splits, AUG_IMAGES)
        P.plot_augmentation_samples(
            imgs, plots_dir / "augmentation.png", strength=cfg.aug_strength, pad_mode=cfg.pad_mode,
            draws=AUG_DRAWS, seed=cfg.seed, labels=names,
        )
        add("augmentation", "Data augmentation", f"Random training augmentations at aug_strength={cfg.aug_strength:g}.")

    result: dict[str, Any] = {
        "test_accuracy": _finite_or_none(M.overall_accuracy(cm)),
        "test_loss": _finite_or_none(test_loss),
        "test_correct": correct,
        "test_images": total,
        "classes": list(classes),
        "per_class_accuracy": {c: _finite_or_none(float(a)) for c, a in zip(classes, acc_c)},
        "per_class_counts": {c: int(n) for c, n in zip(classes, counts)},
        "per_class_correct": {c: int(n) for c, n in zip(classes, correct_c)},
        "confusion_matrix": cm.tolist(),
        "misclassified": int(len(wrong)),
        "misclassified_shown": shown,
        "gradcam_target_layer": target_layer,
        "gradcam_misclassified": cam_sets.get("gradcam_misclassified", []),
        "gradcam_correct": cam_sets.get("gradcam_correct", []),
        "plots": plot_paths,
        "device": str(dev),
        "config": cfg.to_dict(),
        **dict(extra or {}),
    }
    atomic_write_json(out / "analysis.json", result)

    summary: list[tuple[str, Any]] = [("test accuracy", f"{100 * correct / total:.2f}%" if total else "—")]
    if rows:
        last = rows[-1]
        summary.append(("epochs", last.get("epoch")))
        if last.get("eval_split") == "val":
            summary.append(("val accuracy", last.get("eval_accuracy")))
        summary.append(("final train accuracy", last.get("train_accuracy")))
    summary += [("misclassified", f"{len(wrong)} of {total}"), ("GradCAM layer", target_layer), ("width", cfg.width)]
    for key in ("checkpoint", "status"):
        if extra and key in extra:
            summary.append((key, extra[key]))
    data = ReportData(
        title=title or "s9tune analysis",
        test_line=M.seed_test_line(test_loss, correct, total) if total else None,
        classes=classes,
        per_class_accuracy=[_finite_or_none(float(a)) for a in acc_c],
        per_class_counts=[int(n) for n in counts],
        per_class_correct=[int(n) for n in correct_c],
        config=cfg.to_dict(),
        summary=summary,
        figures=figures,
        leaderboard=leaderboard,
        notes=() if rows else ("No training history found: the training-curve plot is left out.",),
    )
    write_report(data, out)
    return result


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
    leaderboard: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """`s9tune analyze CHECKPOINT --data-dir D --out DIR`.

    Raises CheckpointError (unreadable file, width mismatch), ConfigError (unknown target
    layer), DataError, or OutputExistsError (non-empty `out_dir` without `force`). Everything
    that can fail is checked before `out_dir` is touched.
    """
    from s9tune.data import load_splits
    from s9tune.runs import prepare_out_dir

    ckpt = Path(checkpoint_path).expanduser().resolve()
    payload = load_checkpoint(ckpt)
    cfg = config_from_payload(payload, ckpt)
    model = model_from_payload(payload, ckpt, width=width)
    resolve_target_layer(model, target_layer)
    out = Path(out_dir).expanduser().resolve()
    if out == ckpt.parent or out in ckpt.parents:
        # --force would rmtree the folder the checkpoint (and its run) lives in
        raise OutputExistsError(f"{out}: holds the checkpoint being analysed; choose another --out")
    splits = load_splits(data_dir, val_size=cfg.val_size, seed=cfg.seed, train_subset=cfg.train_subset)
    history_file = _run_folder_history(ckpt)
    if history_file is not None:
        rows = read_metrics_jsonl(history_file)
        logger.info("training history from %s (%d epochs)", history_file, len(rows))
    else:
        rows = [dict(m) for m in payload.get("metrics") or [] if isinstance(m, Mapping)]
    out = prepare_out_dir(out, force=force)
    name = ckpt.parent.parent.name if history_file is not None else ckpt.stem
    return analyze_model(
        model,
        cfg,
        splits,
        out,
        history_rows=rows,
        leaderboard=leaderboard,
        target_layer=target_layer,
        device=device,
        title=f"s9tune analysis: {name}",
        extra={"checkpoint": str(ckpt), "checkpoint_epoch": int(payload.get("epoch", 0))},
    )


def print_seed_style(result: Mapping[str, Any]) -> list[str]:
    """The seed's console output: the test line, then 'Accuracy of <class> : NN %' per class."""
    lines = []
    if result.get("test_images"):
        raw = result.get("test_loss")
        loss = float("nan") if raw is None else float(raw)
        lines.append(M.seed_test_line(loss, int(result["test_correct"]), int(result["test_images"])))
    per_class = result.get("per_class_accuracy", {})
    lines += M.class_table(list(per_class), [np.nan if v is None else v for v in per_class.values()])
    return lines


__all__ = ["analyze_checkpoint", "analyze_model", "lr_schedule", "print_seed_style", "read_metrics_jsonl"]
