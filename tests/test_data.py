from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tarball, write_cifar_dir

from s9tune import data
from s9tune.errors import DataError


# -- reading --------------------------------------------------------------------------
def test_reads_official_layout(tiny_cifar: Path) -> None:
    folder = data.ensure_cifar10(tiny_cifar, download=False)
    cifar = data.read_cifar10(folder)
    train_x, train_y, test_x, classes = cifar.train_x, cifar.train_y, cifar.test_x, cifar.classes
    assert train_x.shape == (200, 32, 32, 3) and train_x.dtype == np.uint8
    assert train_y.dtype == np.int64 and set(train_y) == set(range(10))
    assert test_x.shape == (30, 32, 32, 3)
    assert classes[0] == "airplane" and len(classes) == 10
    # CHW -> HWC: pixel (row 0, col 1) of channel 1 sits at flat index 1024 + 1
    raw = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    assert train_x[0, 0, 1, 1] == raw[b"data"][0, 1024 + 1]


def test_accepts_batch_folder_itself(tiny_cifar: Path) -> None:
    assert data.ensure_cifar10(tiny_cifar / "cifar-10-batches-py", download=False) == tiny_cifar / "cifar-10-batches-py"


def test_real_mini_slice_loads(mini: Path) -> None:
    s = data.load_splits(mini, val_size=0.1, seed=0, download=False)
    assert len(s.train_y) + len(s.val_y) == 4068 and len(s.test_y) == 1017


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"garbage" * 100), "truncated or corrupt"),
        (lambda p: p.unlink(), "missing"),
        (lambda p: p.write_bytes(pickle.dumps({b"data": np.zeros((3, 10), np.uint8), b"labels": [0, 1, 2]})), "shape"),
        (lambda p: p.write_bytes(pickle.dumps(Path("x"))), "refusing|corrupt"),
    ],
)
def test_bad_files_name_the_path(tiny_cifar: Path, damage, needle: str) -> None:
    target = tiny_cifar / "cifar-10-batches-py" / "test_batch"
    damage(target)
    with pytest.raises(DataError, match=needle) as err:
        data.load_splits(tiny_cifar, val_size=0.1, seed=0, download=False)
    assert str(target) in str(err.value)


def test_no_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no CIFAR-10"):
        data.ensure_cifar10(tmp_path / "empty", download=False)


# -- splitting ------------------------------------------------------------------------
def test_val_split_disjoint_stratified_stable(tiny_cifar: Path) -> None:
    a = data.load_splits(tiny_cifar, val_size=0.2, seed=3)
    b = data.load_splits(tiny_cifar, val_size=0.2, seed=3)
    c = data.load_splits(tiny_cifar, val_size=0.2, seed=4)
    assert len(a.val_y) == 40 and len(a.train_y) == 160
    assert np.array_equal(a.val_x, b.val_x) and not np.array_equal(a.val_x, c.val_x)
    # every class gets its share
    assert np.bincount(a.val_y, minlength=10).tolist() == [4] * 10
    # disjoint: no validation image is also a training image
    train_rows = {r.tobytes() for r in a.train_x}
    assert not any(r.tobytes() in train_rows for r in a.val_x)


def test_a_training_subset_never_takes_validation_images(tiny_cifar: Path) -> None:
    """Every test search uses val_size with train_subset: the subset is drawn from what is left
    after the validation split (drawn from the whole set it put 148 of 770 validation images
    into training), and the validation split is the same with or without it."""
    whole = data.load_splits(tiny_cifar, val_size=0.2, seed=3)
    sub = data.load_splits(tiny_cifar, val_size=0.2, seed=3, train_subset=100)
    assert len(sub.train_y) == 100 and np.array_equal(sub.val_x, whole.val_x)
    val_rows = {r.tobytes() for r in sub.val_x}
    assert not any(r.tobytes() in val_rows for r in sub.train_x)


def test_val_size_zero_and_subset(tiny_cifar: Path) -> None:
    s = data.load_splits(tiny_cifar, val_size=0.0, seed=0, train_subset=50)
    assert not s.has_val and len(s.train_y) == 50
    assert np.bincount(s.train_y, minlength=10).tolist() == [5] * 10


# -- download -------------------------------------------------------------------------
class _Server:
    """Serves one tarball from 127.0.0.1 and counts the GETs."""

    def __init__(self, payload: bytes, delay: float = 0.0) -> None:
        self.payload, self.delay, self.hits = payload, delay, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if self.path != "/cifar-10-python.tar.gz":
                    self.send_error(404)
                    return
                time.sleep(outer.delay)
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path):
    src = tmp_path / "src"
    write_cifar_dir(src)
    tarball = tmp_path / "served.tar.gz"
    md5 = make_tarball(src, tarball)
    server = _Server(tarball.read_bytes(), delay=0.3)
    yield server, md5
    server.close()


def test_download_good_md5(tmp_path: Path, served) -> None:
    server, md5 = served
    folder = data.ensure_cifar10(tmp_path / "dl", url=server.url, md5=md5)
    assert folder == tmp_path / "dl" / "cifar-10-batches-py"
    assert data.read_cifar10(folder).train_x.shape == (200, 32, 32, 3)
    assert server.hits == 1
    # a second call finds the folder and does not download again
    data.ensure_cifar10(tmp_path / "dl", url=server.url, md5=md5)
    assert server.hits == 1
    assert not list((tmp_path / "dl").glob("*.part"))


def test_download_bad_md5(tmp_path: Path, served) -> None:
    server, _ = served
    with pytest.raises(DataError, match="md5"):
        data.ensure_cifar10(tmp_path / "dl", url=server.url, md5="0" * 32)
    assert not (tmp_path / "dl" / "cifar-10-batches-py").exists()
    assert not (tmp_path / "dl" / "cifar-10-python.tar.gz").exists()  # moved aside, not trusted


def test_download_failure_is_one_clear_error(tmp_path: Path, served) -> None:
    server, md5 = served
    with pytest.raises(DataError, match=r"download of .* failed"):
        data.ensure_cifar10(tmp_path / "dl", url=server.url.replace("cifar-10", "nope"), md5=md5)
    assert not list((tmp_path / "dl").glob("*.part"))


def _worker(root: str, url: str, md5: str, q) -> None:
    try:
        q.put(str(data.ensure_cifar10(Path(root), url=url, md5=md5)))
    except Exception as exc:  # noqa: BLE001 - whatever the child hits is reported to the parent
        q.put(f"ERROR {exc!r}")


def test_concurrent_callers_download_once(tmp_path: Path, served) -> None:
    server, md5 = served
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "dl"), server.url, md5, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [str(tmp_path / "dl" / "cifar-10-batches-py")] * 4
    assert server.hits == 1


def test_env_var_sets_default_dir(monkeypatch: pytest.MonkeyPatch, tiny_cifar: Path) -> None:
    monkeypatch.setenv("S9TUNE_DATA_DIR", str(tiny_cifar))
    assert data.resolve_data_dir(None) == tiny_cifar.resolve()
    monkeypatch.delenv("S9TUNE_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/xdg")
    assert data.resolve_data_dir(None) == Path("/tmp/xdg/s9tune/cifar10")
