"""Write random images of CIFAR-10's shape in the official `cifar-10-batches-py` layout
(5 x 10,000 training images, 10,000 test images), for speed runs of the real CLI where CIFAR-10
cannot be downloaded (the lent GPU machine has no network). Accuracy on it means nothing.

    python benchmarks/make_cifar_like.py OUT_DIR [--per-batch 10000]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-batch", type=int, default=10_000)
    args = ap.parse_args()
    folder = args.out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for name in names:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, args.per_batch).tolist(),
            b"data": rng.integers(0, 256, (args.per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * args.per_batch,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    labels = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": labels}, protocol=2))
    print(folder)


if __name__ == "__main__":
    main()
