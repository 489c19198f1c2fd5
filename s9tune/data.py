"""CIFAR-10 on disk: find or download (md5 + file lock + atomic rename), read, split.

The batch files are read here rather than through torchvision, because torchvision's md5
check rejects subsets such as the mini slice. Unpickling is restricted to numpy arrays and
plain containers, so a tampered batch file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from filelock import FileLock

from s9tune.errors import DataError

logger = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
TARBALL = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ENV_DATA_DIR = "S9TUNE_DATA_DIR"
MAX_CLASS_NAME = 64


@dataclass(frozen=True)
class Splits:
    """uint8 NHWC images and int64 labels. `val_*` are empty without a validation split."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...] = CLASSES

    @property
    def has_val(self) -> bool:
        return len(self.val_y) > 0

    def without_test(self) -> Splits:
        """The same splits with an empty test set: what a search's trials get (none may see it)."""
        return replace(self, test_x=self.test_x[:0], test_y=self.test_y[:0])

    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the training images on the 0-255 scale (the cutout fill)."""
        m = self.train_x.reshape(-1, 3).mean(axis=0, dtype=np.float64)
        return (float(m[0]), float(m[1]), float(m[2]))

    def std(self) -> tuple[float, float, float]:
        s = self.train_x.reshape(-1, 3).std(axis=0, dtype=np.float64)
        return (float(s[0]), float(s[1]), float(s[2]))


def default_data_dir() -> Path:
    """--data-dir beats $S9TUNE_DATA_DIR beats the user cache dir."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache) / "s9tune" / "cifar10").resolve()


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()


def batch_dir(data_dir: Path) -> Path:
    """Accept either the folder that holds `cifar-10-batches-py` or that folder itself."""
    data_dir = Path(data_dir)
    if (data_dir / TEST_FILE).exists() and not (data_dir / BATCH_DIR).exists():
        return data_dir
    return data_dir / BATCH_DIR


# -- download -------------------------------------------------------------------------
def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"download of {url} to {dest} failed ({reason}); check the network, or put "
            f"{TARBALL} or {BATCH_DIR}/ into {dest.parent} by hand"
        ) from None
    os.replace(part, dest)


def _extract(tarball: Path, data_dir: Path) -> None:
    """Extract into a temp dir beside the target, then rename: readers never see half a folder."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
    try:
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as exc:
            raise DataError(f"{tarball} is not a readable CIFAR-10 tarball ({exc}); delete it and run again") from None
        src = tmp / BATCH_DIR
        if not src.is_dir():
            raise DataError(f"{tarball} holds no {BATCH_DIR}/ folder; delete it and run again")
        os.replace(src, data_dir / BATCH_DIR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def zlib_error() -> type[Exception]:
    return zlib.error


def ensure_cifar10(
    data_dir: str | Path | None,
    *,
    download: bool = True,
    url: str | None = None,
    md5: str = CIFAR10_MD5,
    timeout: float = 60.0,
) -> Path:
    """Return the folder holding the batch files, downloading the tarball if needed.

    Safe to call from many processes at once: the first one downloads under a file lock, the
    others wait on it and then find the extracted folder.
    """
    root = resolve_data_dir(data_dir)
    found = batch_dir(root)
    if found.is_dir():
        return found
    url = url or os.environ.get("S9TUNE_CIFAR10_URL") or CIFAR10_URL
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / ".cifar10.lock"))
        lock.acquire(timeout=-1)
    except OSError as exc:
        raise DataError(f"{root}: cannot create the data folder or its lock ({exc.strerror})") from None
    try:
        if found.is_dir():  # another process finished while we waited
            return found
        tarball = root / TARBALL
        if not tarball.exists():
            if not download:
                raise DataError(f"{root}: no CIFAR-10 ({BATCH_DIR}/ or {TARBALL}) found")
            logger.info("downloading CIFAR-10 from %s to %s", url, tarball)
            _download(url, tarball, timeout)
        digest = file_md5(tarball)
        if digest != md5:
            bad = tarball.with_name(tarball.name + ".bad")
            os.replace(tarball, bad)
            raise DataError(
                f"{tarball}: md5 {digest} != expected {md5} (corrupt or truncated; "
                f"moved to {bad.name}); run again to download it anew"
            )
        _extract(tarball, root)
        logger.info("extracted CIFAR-10 into %s", root / BATCH_DIR)
        return root / BATCH_DIR
    finally:
        lock.release()


# -- reading --------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR pickles hold dicts, lists, bytes and numpy arrays; allow nothing else."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{path}: missing; point --data-dir at a complete CIFAR-10 folder or delete "
            f"{path.parent} to download it anew"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it as a CIFAR-10 batch file ({exc.strerror})") from None
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise DataError(
            f"{path}: truncated or corrupt ({type(exc).__name__}); delete {path.parent} to download it anew"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (N, 32, 32, 3) uint8 images, (N,) int64 labels."""
    d = _load_pickle(path)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 batch (no 'data' array or 'labels')")
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' has shape {data.shape} {data.dtype}, expected (N, 3072) uint8")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        raise DataError(f"{path}: labels are not integers 0-9") from None
    if y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{path}: labels do not match the images (count or range)")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def read_classes(folder: Path) -> tuple[str, ...]:
    path = folder / META_FILE
    if not path.exists():
        return CLASSES
    names = _load_pickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{path}: no list of 10 label_names")
    try:
        out = tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError:
        out = (None,)
    # names go into plots, tables and HTML: short printable text only
    if not all(isinstance(n, str) and 0 < len(n) <= MAX_CLASS_NAME and n.isprintable() for n in out):
        raise DataError(f"{path}: label_names must be {MAX_CLASS_NAME} or fewer printable characters each")
    return out


@dataclass(frozen=True)
class Cifar10:
    """The data set as read from its batch files: uint8 NHWC images, int64 labels, class names."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...] = CLASSES


def read_cifar10(folder: Path) -> Cifar10:
    """Every training batch present (at least one), plus the test batch."""
    folder = Path(folder)
    present = [folder / f for f in TRAIN_FILES if (folder / f).exists()]
    if not present:
        raise DataError(f"{folder}: no data_batch_* files; point --data-dir at a CIFAR-10 folder")
    if len(present) < len(TRAIN_FILES):
        logger.info("%s: %d of 5 training batches present", folder, len(present))
    parts = [read_batch(p) for p in present]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(folder / TEST_FILE)
    if not len(train_y):
        raise DataError(f"{folder}: the data_batch_* files hold no images")
    if not len(test_y):
        raise DataError(f"{folder / TEST_FILE}: holds no images; the test set cannot be empty")
    return Cifar10(train_x, train_y, test_x, test_y, read_classes(folder))


# -- splitting ------------------------------------------------------------------------
def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, taken): `fraction` of every class goes to `taken`."""
    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = round(fraction * len(idx))
        taken.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def subset_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A stratified subset of `count` indices (all of them if count >= len)."""
    if count >= len(labels):
        return np.arange(len(labels))
    _, taken = stratified_indices(labels, count / len(labels), seed)
    return taken


def make_splits(data: Cifar10, *, val_size: float, seed: int, train_subset: int | None = None) -> Splits:
    """Carve a seeded, stratified validation split out of the training set.

    The split depends only on (`val_size`, `seed`), so every trial of a search scores on the
    same images. `train_subset` then caps the remaining training images (stratified).
    """
    train_x, train_y = data.train_x, data.train_y
    if val_size > 0:
        tr, va = stratified_indices(train_y, val_size, seed)
    else:
        tr, va = np.arange(len(train_y)), np.arange(0)
    if train_subset is not None:
        tr = tr[subset_indices(train_y[tr], train_subset, seed + 1)]
    if not len(tr):
        raise DataError(f"no training images left after val_size={val_size} of {len(train_y)}; lower val_size")
    return Splits(train_x[tr], train_y[tr], train_x[va], train_y[va], data.test_x, data.test_y, data.classes)


def load_splits(
    data_dir: str | Path | None,
    *,
    val_size: float,
    seed: int,
    train_subset: int | None = None,
    download: bool = True,
) -> Splits:
    folder = ensure_cifar10(data_dir, download=download)
    return make_splits(read_cifar10(folder), val_size=val_size, seed=seed, train_subset=train_subset)
