"""Shared fixtures: tiny CIFAR-format data sets built in tmp dirs, and the real mini slice."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def make_batch(n: int, seed: int, label_name: str = "batch") -> dict:
    """A batch in the official layout: `data` (N, 3072) uint8 in CHW order, `labels` list."""
    rng = np.random.default_rng(seed)
    labels = [int(i % 10) for i in range(n)]
    rng.shuffle(labels)
    # class-dependent colour so a model can learn something from the tiny set
    base = np.array(labels, dtype=np.float64)[:, None] * 20.0
    data = np.clip(rng.normal(base + 40, 30, size=(n, 3072)), 0, 255).astype(np.uint8)
    return {
        b"batch_label": label_name.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def write_cifar_dir(folder: Path, n_train: int = 40, n_test: int = 30) -> Path:
    """Write cifar-10-batches-py/ with 5 training batches, a test batch and batches.meta."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(make_batch(n_train, i), protocol=2))
    (batches / "test_batch").write_bytes(pickle.dumps(make_batch(n_test, 99), protocol=2))
    meta = {b"label_names": [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer",
                                                   "dog", "frog", "horse", "ship", "truck")]}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def make_tarball(src_root: Path, dest: Path) -> str:
    """tar.gz of src_root/cifar-10-batches-py, as the official file is laid out; returns md5."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    dest.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    """A data dir holding a tiny CIFAR-10 (5 x 40 training images, 30 test images)."""
    root = tmp_path / "cifar"
    write_cifar_dir(root)
    return root


def mini_dir() -> Path:
    return Path(os.environ.get("S9TUNE_MINI_DIR", REPO.parent / "shared" / "data" / "cifar10-mini"))


@pytest.fixture
def mini() -> Path:
    """The real 5,085-image slice of CIFAR-10. CI sets S9TUNE_REQUIRE_REALDATA=1, so a missing
    slice fails there instead of skipping silently."""
    path = mini_dir()
    if not (path / "cifar-10-batches-py" / "test_batch").exists():
        if os.environ.get("S9TUNE_REQUIRE_REALDATA"):
            pytest.fail(f"real-data tests need the mini slice at {path}")
        pytest.skip(f"no cifar10-mini at {path}")
    return path
