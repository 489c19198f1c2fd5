"""The seed's console lines (its test line and class-wise table), so an s9tune log and the
seed's compare side by side. Plain Python: the CLI prints them without loading numpy."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def class_table(classes: Sequence[str], per_class_acc: Sequence[float]) -> list[str]:
    """The seed's class-wise lines, e.g. 'Accuracy of airplane : 94 %'.

    Same format as the seed's `'Accuracy of %5s : %2d %%'` (names right-aligned to 5, the
    percentage truncated), so the two logs line up when compared side by side.
    """
    lines = []
    for name, acc in zip(classes, per_class_acc, strict=True):
        if acc is None or not math.isfinite(acc):
            lines.append(f"Accuracy of {name:>5s} : n/a (no test images)")
        else:
            # the epsilon undoes float error (0.29 * 100 = 28.999...), which the seed's
            # 100 * correct / total never had
            lines.append(f"Accuracy of {name:>5s} : {int(100 * acc + 1e-9):2d} %")
    return lines


def seed_test_line(loss: float, correct: int, total: int) -> str:
    """The seed's summary line: 'Test set: Average loss: 0.1234, Accuracy: 9365/10000 (93.65%)'."""
    pct = 100 * correct / total if total else float("nan")
    return f"Test set: Average loss: {loss:.4f}, Accuracy: {correct}/{total} ({pct:.2f}%)"


def seed_style_lines(result: Mapping[str, Any]) -> list[str]:
    """The seed's console output: the test line, then 'Accuracy of <class> : NN %' per class."""
    lines = []
    if result.get("test_images"):
        raw = result.get("test_loss")
        loss = float("nan") if raw is None else float(raw)
        lines.append(seed_test_line(loss, int(result["test_correct"]), int(result["test_images"])))
    per_class = result.get("per_class_accuracy", {})
    lines += class_table(list(per_class), [math.nan if v is None else v for v in per_class.values()])
    return lines
