"""PNG figures for the report. matplotlib is imported inside each function, on the Agg
backend, so importing this module costs nothing and works without a display.

Every function writes one PNG atomically (the report may be read while it is rebuilt) and
returns its path; figures are always closed, so a long analysis does not accumulate them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s9tune.analysis.metrics import TestEvaluation
from s9tune.augment import AugParams, albumentations_pipeline
from s9tune.config import TrainConfig
from s9tune.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

DPI = 110
OK_COLOR = "#1a7f37"
BAD_COLOR = "#c62828"
GRID_COLUMNS = 5  # images per row of a gallery or a GradCAM grid


def _pyplot() -> Any:
    # here, as the module doc says: pyplot costs ~0.34 s CPU at import (median of 5,
    # 2-core VM), and the backend is chosen when s9tune draws, not when it is imported
    import matplotlib

    matplotlib.use("Agg")
    # labels come from data files (class names in batches.meta): a "$" in one must print as
    # itself, not start mathtext that cannot parse it. s9tune's own labels use no math.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
        atomic_write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
    logger.debug("wrote %s", path)
    return path


def _col(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """A metric column as floats; NaN where a row lacks it (matplotlib leaves a gap)."""
    out = []
    for r in rows:
        v = r.get(key)
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan)
    return np.asarray(out, dtype=np.float64)


def plot_training_curves(
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    lr_curve: tuple[np.ndarray, np.ndarray] | None = None,
    title: str | None = None,
) -> Path:
    """Loss, accuracy and learning rate per epoch from metrics.jsonl rows.

    `lr_curve` = (fractional epoch, lr) of every optimiser step, if known: the rows only hold
    the lr of each epoch's last step, which hides the OneCycle shape in a short run.
    """
    if not rows:
        raise ValueError("no metrics rows to plot")
    plt = _pyplot()
    epochs = _col(rows, "epoch")
    split = str(rows[-1].get("eval_split", "eval"))
    marker = "o" if len(rows) <= 30 else None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(epochs, _col(rows, "train_loss"), marker=marker, label="train")
    ax.plot(epochs, _col(rows, "eval_loss"), marker=marker, label=split)
    ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    ax.legend()
    ax = axes[1]
    ax.plot(epochs, 100 * _col(rows, "train_accuracy"), marker=marker, label="train (augmented)")
    ax.plot(epochs, 100 * _col(rows, "eval_accuracy"), marker=marker, label=split)
    ax.set(title="Accuracy", xlabel="epoch", ylabel="%")
    ax.legend()
    ax = axes[2]
    if lr_curve is not None and len(lr_curve[0]):
        ax.plot(lr_curve[0], lr_curve[1], color="0.55", lw=1.2, label="schedule (per step)")
    ax.plot(epochs, _col(rows, "lr"), "o" if marker else "-", color="C3", ms=4, label="recorded (epoch end)")
    ax.set(title="Learning rate (OneCycle)", xlabel="epoch", ylabel="lr")
    ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
        if len(rows) <= 30:
            ax.set_xticks(range(0, int(np.nanmax(epochs)) + 1, max(1, int(np.nanmax(epochs)) // 8)))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_accuracy(
    classes: Sequence[str],
    accuracy: Sequence[float],
    path: Path,
    *,
    overall: float | None = None,
) -> Path:
    """Bar per class with its accuracy written on it; a dashed line at the overall accuracy."""
    plt = _pyplot()
    acc = 100 * np.asarray([np.nan if a is None else a for a in accuracy], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7.2, 5.6))
    x = np.arange(len(classes))
    colors = ["C0" if overall is None or not np.isfinite(a) or a >= 100 * overall else "C1" for a in acc]
    bars = ax.bar(x, np.nan_to_num(acc), color=colors)
    for bar, a in zip(bars, acc, strict=True):
        label = "n/a" if not np.isfinite(a) else f"{a:.1f}"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, label, ha="center", va="bottom", fontsize=8)
    title = "Test accuracy per class"
    if overall is not None and np.isfinite(overall):
        # named in the title, not a legend: a legend box would sit on some class's bar
        ax.axhline(100 * overall, color="0.3", ls="--", lw=1)
        title += f" (dashed: overall {100 * overall:.2f}%)"
    ax.set_xticks(x, list(classes), rotation=30, ha="right")
    ax.set(ylim=(0, 108), ylabel="accuracy (%)", title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Row-normalised colours (recall), raw counts written in every cell."""
    plt = _pyplot()
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, list(classes), rotation=45, ha="right")
    ax.set_yticks(ticks, list(classes))
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    fig.tight_layout()
    return _save(fig, path)


@dataclass(frozen=True)
class Captions:
    """A gallery's words: one title (and its colour) per image, and a heading over them all."""

    titles: Sequence[str]
    suptitle: str | None = None
    colors: Sequence[str] | None = None  # None: black

    def color(self, k: int) -> str:
        return self.colors[k] if self.colors is not None else "black"


def verdict(true_name: str, pred_name: str, conf: float | None) -> str:
    """A test image's title: its true and predicted class (and the prediction's confidence)."""
    c = f" ({conf:.2f})" if conf is not None else ""
    return f"true: {true_name}\npred: {pred_name}{c}"


def plot_image_grid(images: np.ndarray, path: Path, captions: Captions) -> Path:
    """uint8 (or [0, 1] float) NHWC images in a grid (GRID_COLUMNS to a row), one title each."""
    if len(images) == 0:
        raise ValueError("no images to plot")
    titles, suptitle = captions.titles, captions.suptitle
    plt = _pyplot()
    n = len(images)
    ncols = max(1, min(GRID_COLUMNS, n))
    nrows = int(np.ceil(n / ncols))
    figsize = (2.1 * ncols, 2.45 * nrows + (0.4 if suptitle else 0))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k], interpolation="nearest")
        ax.set_title(titles[k], fontsize=8.5, color=captions.color(k))
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_misclassified(images: np.ndarray, ev: TestEvaluation, indices: Sequence[int], path: Path) -> list[int]:
    """Gallery of misclassified test images titled 'true: X / pred: Y (confidence)'.

    Indices whose prediction is right are dropped, so the gallery can only show mistakes;
    returns the indices actually shown (empty, and no file, if none were wrong).
    """
    y_true, y_pred, classes, confidences = ev.y_true, ev.y_pred, ev.classes, ev.confidence
    shown = [int(i) for i in indices if int(y_true[i]) != int(y_pred[i])]
    if len(shown) < len(indices):
        logger.warning("misclassified gallery: dropped %d correctly classified indices", len(indices) - len(shown))
    if not shown:
        return []
    titles = [
        verdict(
            classes[int(y_true[i])], classes[int(y_pred[i])], None if confidences is None else float(confidences[i])
        )
        for i in shown
    ]
    heading = f"Misclassified test images, most confident mistakes first ({len(shown)} shown)"
    plot_image_grid(images[shown], path, Captions(titles, heading, [BAD_COLOR] * len(shown)))
    return shown


def plot_cam_grid(images01: np.ndarray, overlays: np.ndarray, path: Path, captions: Captions) -> Path:
    """Each item as a column (GRID_COLUMNS to a row): the image above, its GradCAM overlay right below it."""
    titles, suptitle = captions.titles, captions.suptitle
    n = len(images01)
    if n == 0 or len(overlays) != n or len(titles) != n:
        raise ValueError("need one overlay and one title per image (and at least one image)")
    plt = _pyplot()
    ncols = max(1, min(GRID_COLUMNS, n))
    blocks = int(np.ceil(n / ncols))
    # per block: a spacer row that takes the titles, then image and overlay close together,
    # so each overlay reads as belonging to the image above it rather than to the next block
    height = 4.6 * blocks + (0.35 if suptitle else 0)
    fig = plt.figure(figsize=(2.1 * ncols, height))
    grid = fig.add_gridspec(
        3 * blocks,
        ncols,
        height_ratios=[0.34, 1, 1] * blocks,
        hspace=0.06,
        wspace=0.08,
        left=0.01,
        right=0.99,
        bottom=0.01,
        top=1 - (0.35 if suptitle else 0.02) / height,
    )
    for k in range(n):
        r, c = 3 * (k // ncols), k % ncols
        top = fig.add_subplot(grid[r + 1, c])
        bottom = fig.add_subplot(grid[r + 2, c])
        top.imshow(images01[k], interpolation="nearest")
        top.set_title(titles[k], fontsize=8.5, color=captions.color(k))
        bottom.imshow(overlays[k], interpolation="bilinear")
        for ax in (top, bottom):
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11, y=1 - 0.05 / height, va="top")
    return _save(fig, path)


def plot_augmentation_samples(
    images: np.ndarray, path: Path, *, cfg: TrainConfig, draws: int = 5, labels: Sequence[str] | None = None
) -> Path:
    """Rows: training images; columns: the original, then `draws` augmented versions.

    Drawn with the albumentations reference pipeline (without normalisation, so the pixels are
    viewable) at the run's aug_strength and pad mode; seeded with its seed, so the figure is the
    same on every rebuild.
    """
    strength, pad_mode, seed = cfg.aug_strength, cfg.pad_mode, cfg.seed
    if len(images) == 0:
        raise ValueError("no images to augment")
    plt = _pyplot()
    transform = albumentations_pipeline(strength, pad_mode, normalize=False)
    transform.set_random_seed(seed)
    n = len(images)
    fig, axes = plt.subplots(n, draws + 1, figsize=(1.75 * (draws + 1), 1.85 * n + 0.5), squeeze=False)
    for i in range(n):
        row = [images[i]] + [transform(image=np.ascontiguousarray(images[i]))["image"] for _ in range(draws)]
        for j, img in enumerate(row):
            ax = axes[i, j]
            ax.imshow(np.clip(img, 0, 255).astype(np.uint8), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("original" if j == 0 else f"draw {j}", fontsize=9)
        if labels is not None:
            axes[i, 0].set_ylabel(labels[i], fontsize=9)
    p = AugParams.from_strength(strength)
    fig.suptitle(
        f"Training augmentation at aug_strength={strength:g}: pad {p.pad} ({pad_mode}) + crop 32, "
        f"flip p={p.flip_p:g}, cutout {p.cutout}x{p.cutout}",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "Captions",
    "plot_augmentation_samples",
    "plot_cam_grid",
    "plot_confusion_matrix",
    "plot_image_grid",
    "plot_misclassified",
    "plot_per_class_accuracy",
    "plot_training_curves",
    "verdict",
]
