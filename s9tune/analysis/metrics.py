"""Test-set metrics from labels and predictions: plain numpy, no torch, no plotting.

Conventions: the confusion matrix has true classes on rows and predicted classes on columns;
a class with no test images has accuracy NaN (not 0), so it cannot pass for a failing class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max so large logits cannot overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """(C, C) int64 counts; cm[t, p] = images of class t predicted as p."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    # bincount over the flattened (t, p) pair is one pass instead of a Python loop
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_counts(cm: np.ndarray) -> np.ndarray:
    """Test images per true class."""
    return cm.sum(axis=1)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of every class (the seed's 'Accuracy of X'); NaN for a class with no images."""
    counts = class_counts(cm).astype(np.float64)
    correct = np.diag(cm).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, correct / np.where(counts > 0, counts, 1), np.nan)


def overall_accuracy(cm: np.ndarray) -> float:
    total = int(cm.sum())
    return float(np.trace(cm)) / total if total else float("nan")


def misclassified_indices(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of wrongly predicted images, most confident mistake first.

    The confident mistakes are the informative ones (label noise, look-alike classes); the
    stable sort keeps ties in dataset order so the gallery is reproducible.
    """
    probs = np.asarray(probs)
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    conf = probs[wrong, pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")]


def correct_indices(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices of correctly predicted images, most confident first."""
    probs = np.asarray(probs)
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = probs.argmax(axis=1)
    right = np.flatnonzero(pred == y_true)
    conf = probs[right, pred[right]]
    return right[np.argsort(-conf, kind="stable")]


def spread_over_classes(indices: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Up to `n` of `indices`, taken round-robin over classes in their given order.

    A plain top-n of confident predictions is often all one easy class; round-robin shows
    every class while keeping each class's best examples first.
    """
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    queues = {int(c): [int(i) for i in indices if labels[i] == c] for c in np.unique(labels[indices])}
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(len(q) > depth for q in queues.values()):
        for c in sorted(queues):
            if depth < len(queues[c]) and len(picked) < n:
                picked.append(queues[c][depth])
        depth += 1
    return np.asarray(picked, dtype=np.int64)


@dataclass(frozen=True)
class TestEvaluation:
    """Everything the plots, analysis.json and the report read about one model's test predictions."""

    classes: tuple[str, ...]
    loss: float
    y_true: np.ndarray
    probs: np.ndarray

    @classmethod
    def from_logits(cls, logits: np.ndarray, labels: np.ndarray, classes: Sequence[str], loss: float) -> TestEvaluation:
        return cls(tuple(classes), loss, np.asarray(labels, dtype=np.int64), softmax(logits))

    @cached_property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1) if len(self.y_true) else np.zeros(0, dtype=np.int64)

    @cached_property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class, per image."""
        return self.probs[np.arange(len(self.y_true)), self.y_pred] if len(self.y_true) else np.zeros(0)

    @cached_property
    def cm(self) -> np.ndarray:
        return confusion_matrix(self.y_true, self.y_pred, len(self.classes))

    @cached_property
    def per_class_accuracy(self) -> np.ndarray:
        return per_class_accuracy(self.cm)

    @cached_property
    def class_counts(self) -> np.ndarray:
        return class_counts(self.cm)

    @cached_property
    def per_class_correct(self) -> np.ndarray:
        return np.diag(self.cm)

    @property
    def accuracy(self) -> float:
        return overall_accuracy(self.cm)

    @property
    def total(self) -> int:
        return len(self.y_true)

    @property
    def correct(self) -> int:
        return int((self.y_pred == self.y_true).sum())

    @cached_property
    def wrong(self) -> np.ndarray:
        return misclassified_indices(self.y_true, self.probs) if self.total else np.zeros(0, dtype=np.int64)

    @cached_property
    def right(self) -> np.ndarray:
        return correct_indices(self.y_true, self.probs) if self.total else np.zeros(0, dtype=np.int64)


__all__ = [
    "TestEvaluation",
    "class_counts",
    "confusion_matrix",
    "correct_indices",
    "misclassified_indices",
    "overall_accuracy",
    "per_class_accuracy",
    "softmax",
    "spread_over_classes",
]
