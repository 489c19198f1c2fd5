"""Data tests the mutation run showed were missing: the batch files, the split, the download."""

from __future__ import annotations

import hashlib
import io
import pickle
import socket
import struct
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from conftest import make_batch, make_tarball, write_cifar_dir
from test_data import _Server

from s9tune import data
from s9tune.errors import DataError


# -- data: reading the batch files, the split, the download -----------------------------------
class _Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2's str (SHORT_BINSTRING/BINSTRING): how the official CIFAR-10
    batch files spell their keys and pixel data."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def write_pickle(path: Path, obj: object) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def test_the_official_python2_batch_files_are_read(tmp_path: Path) -> None:
    batch = make_batch(20, seed=5)
    write_pickle(tmp_path / "data_batch_1", batch)
    x, y = data.read_batch(tmp_path / "data_batch_1")
    assert y.tolist() == batch[b"labels"] and x[3, 0, 1, 1] == batch[b"data"][3, 1024 + 1]


def _batch(n: int = 30, **kw: object) -> dict:
    return {**make_batch(n, seed=1), **{k.encode(): v for k, v in kw.items()}}


@pytest.mark.parametrize(
    "content, needle",
    [
        (_batch(data=[[0] * 3072] * 30), "no 'data' array"),
        (_batch(labels=["x"] * 30), "not integers"),
        (_batch(labels=[1] * 29), "do not match"),
        (_batch(labels=[10] * 30), "do not match"),
        (_batch(labels=[-1] * 30), "do not match"),
        (["not", "a", "dict"], "expected a dict"),
        (_batch(0), "holds no images"),
        (None, "cannot read"),  # a folder where the file should be
    ],
    ids=["data-list", "labels-text", "labels-short", "label-10", "label-minus-1", "a-list", "empty", "a-folder"],
)
def test_a_damaged_test_batch_is_one_data_error_naming_it(tiny_cifar: Path, content: object, needle: str) -> None:
    target = tiny_cifar / "cifar-10-batches-py" / "test_batch"
    target.unlink()
    if content is None:
        target.mkdir()
    else:
        write_pickle(target, content)
    with pytest.raises(DataError, match=needle) as err:
        data.read_cifar10(target.parent)
    assert str(target) in str(err.value)


@pytest.mark.parametrize("empty", [True, False], ids=["batches-empty", "no-batches"])
def test_training_batches_that_hold_no_images_are_one_data_error(tiny_cifar: Path, empty: bool) -> None:
    folder = tiny_cifar / "cifar-10-batches-py"
    for f in data.TRAIN_FILES:
        (folder / f).unlink()
        if empty:
            write_pickle(folder / f, _batch(0))
    with pytest.raises(DataError, match="hold no images" if empty else "no data_batch") as err:
        data.read_cifar10(folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize(
    "names",
    [[str(i) for i in range(10)], [f"{c}{'x' * 63}" for c in "abcdefghij"], None],
    ids=["one-character", "64-characters", "no-meta-file"],
)
def test_the_data_sets_class_names_are_read(tiny_cifar: Path, names: list[str] | None) -> None:
    folder = tiny_cifar / "cifar-10-batches-py"
    if names is None:
        (folder / data.META_FILE).unlink()
    else:
        write_pickle(folder / data.META_FILE, {b"label_names": [n.encode() for n in names]})
    cifar = data.read_cifar10(folder)
    assert cifar.classes == (tuple(names) if names else data.CLASSES)
    assert data.make_splits(cifar, val_size=0.1, seed=0).classes == cifar.classes


@pytest.mark.parametrize(
    "names",
    [
        [b"a"] * 9,
        [""] + ["a"] * 9,  # text: Python 3 pickles an empty bytes as a call the loader refuses
        [b"a" * 65] + [b"a"] * 9,
        [b"\x1b[31mred"] + [b"a"] * 9,
        [b"\xff"] + [b"a"] * 9,
        [1] * 10,
    ],
    ids=["nine", "empty-name", "65-characters", "escape-code", "not-utf8", "numbers"],
)
def test_bad_class_names_are_one_data_error_naming_the_meta_file(tiny_cifar: Path, names: list) -> None:
    meta = tiny_cifar / "cifar-10-batches-py" / data.META_FILE
    meta.write_bytes(pickle.dumps({b"label_names": names}, protocol=2))  # names as bytes, as Python 3 pickles them
    with pytest.raises(DataError, match="label_names") as err:
        data.read_cifar10(meta.parent)
    assert str(meta) in str(err.value)


def test_the_training_subset_depends_only_on_the_seed(tiny_cifar: Path) -> None:
    """Every trial of a search trains on the same images: same (val_size, seed, train_subset),
    same subset; another seed, another subset."""
    cifar = data.read_cifar10(tiny_cifar / "cifar-10-batches-py")
    a, b, c = (data.make_splits(cifar, val_size=0.2, seed=s, train_subset=50) for s in (1, 1, 2))
    assert np.array_equal(a.train_x, b.train_x) and not np.array_equal(a.train_x, c.train_x)
    assert np.array_equal(data.subset_indices(cifar.train_y, 50, 4), data.subset_indices(cifar.train_y, 50, 4))


def test_a_split_that_leaves_no_training_image_names_val_size(tiny_cifar: Path) -> None:
    full = data.read_cifar10(tiny_cifar / "cifar-10-batches-py")
    one = data.Cifar10(full.train_x[:1], full.train_y[:1], full.test_x, full.test_y)
    with pytest.raises(DataError, match=r"val_size=0\.9"):
        data.make_splits(one, val_size=0.9, seed=0)


def test_a_search_trial_gets_the_splits_without_the_test_set(tiny_cifar: Path) -> None:
    s = data.load_splits(tiny_cifar, val_size=0.2, seed=0)
    t = s.without_test()
    assert len(t.test_y) == 0 and t.test_x.shape == (0, 32, 32, 3)
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert np.array_equal(getattr(t, name), getattr(s, name))
    assert t.classes == s.classes and len(s.test_y) == 30


def test_the_default_data_dir_is_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.default_data_dir() == tmp_path.resolve() / ".cache" / "s9tune" / "cifar10"


@pytest.fixture
def tarball_server(tmp_path: Path):
    src = tmp_path / "src"
    write_cifar_dir(src)
    md5 = make_tarball(src, tmp_path / "served.tar.gz")
    server = _Server((tmp_path / "served.tar.gz").read_bytes())
    yield server, md5
    server.close()


def test_loading_an_empty_data_dir_downloads_cifar10(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tarball_server
) -> None:
    """What `s9tune train` does on a new machine: the data dir is empty, so it downloads (here
    a stand-in whose md5 is not the official one, so the download is refused after it)."""
    server, _ = tarball_server
    monkeypatch.setenv("S9TUNE_CIFAR10_URL", server.url)
    with pytest.raises(DataError, match="md5"):
        data.load_splits(tmp_path / "new", val_size=0.1, seed=0)
    assert server.hits == 1


def test_a_server_that_never_answers_is_a_data_error_after_the_timeout(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/cifar-10-python.tar.gz"
    outcome: list = []

    def fetch() -> None:
        try:
            data.ensure_cifar10(tmp_path / "dl", url=url, timeout=0.5)
        except Exception as exc:  # noqa: BLE001 - the thread reports whatever it ended with
            outcome.append(exc)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout=60)
    listener.close()  # frees a hung download, if any
    assert not thread.is_alive() and len(outcome) == 1, "the download hung"
    assert isinstance(outcome[0], DataError) and "download of" in str(outcome[0])


def _tarball(tmp_path: Path, members: dict[str, bytes]) -> tuple[Path, str]:
    """A data dir holding only cifar-10-python.tar.gz with these members; (data dir, its md5)."""
    root = tmp_path / "root"
    root.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    (root / data.TARBALL).write_bytes(buf.getvalue())
    return root, hashlib.md5(buf.getvalue()).hexdigest()


def test_extraction_happens_inside_the_data_dir_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    write_cifar_dir(src)
    root = tmp_path / "root"
    root.mkdir()
    md5 = make_tarball(src, root / data.TARBALL)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temp-dir"))  # the system's is not used
    assert data.ensure_cifar10(root, md5=md5, download=False) == root / data.BATCH_DIR
    assert sorted(p.name for p in root.iterdir()) == sorted([".cifar10.lock", data.BATCH_DIR, data.TARBALL])


@pytest.mark.parametrize(
    "members, needle",
    [
        ({"../escaped.txt": b"x", f"{data.BATCH_DIR}/test_batch": b"x"}, "not a readable"),
        ({"other/test_batch": b"x"}, "holds no"),
    ],
    ids=["member-outside", "no-batch-folder"],
)
def test_a_bad_tarball_is_one_data_error_naming_it_and_writes_nothing_outside(
    tmp_path: Path, members: dict, needle: str
) -> None:
    root, md5 = _tarball(tmp_path, members)
    with pytest.raises(DataError, match=needle) as err:
        data.ensure_cifar10(root, md5=md5, download=False)
    assert str(root / data.TARBALL) in str(err.value)
    assert not (tmp_path / "escaped.txt").exists() and not (root / data.BATCH_DIR).exists()
