"""Nothing outside s9tune's own folders is deleted or overwritten: every data-loss path is refused
with one line and exit 2, and the folder it aimed at is left byte for byte as it was.

Removal is spied on (`no_removal`): were a check broken, the spy fails the test before anything
is removed, so a broken build never deletes `/` or a home folder while these tests run."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path

import pytest

from s9tune import outdir
from s9tune.cli import main
from s9tune.errors import OutputExistsError

TINY = ["--set", "width=4", "--set", "epochs=1", "--set", "batch_size=64", "--set", "device=cpu"]


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under `folder` (links as their target text, never followed) and its bytes."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def no_removal(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []

    def spy(dir_fd: int, names: list[str]) -> None:
        calls.append(names)
        raise AssertionError(f"s9tune would have removed {names}")

    monkeypatch.setattr(outdir, "_remove_entries", spy)
    return calls


def one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("s9tune: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fake_run(folder: Path, kind: str = "train", extra: tuple[str, ...] = ()) -> Path:
    """A folder that looks exactly like s9tune's output of `kind` (marker and its files only)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / outdir.MARKER).write_text(json.dumps({"kind": kind, "s9tune": "0"}))
    for name in sorted(outdir.KIND_ENTRIES[kind])[:2]:
        (folder / name).write_text("s9tune output")
    for name in extra:
        (folder / name).write_text("the user's")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir, checkpoint) of a one-epoch width-4 run."""
    from conftest import write_cifar_dir

    root = tmp_path_factory.mktemp("ck")
    write_cifar_dir(root / "cifar")
    assert main(["train", "--data-dir", str(root / "cifar"), *TINY, "--out", str(root / "run")]) == 0
    return root / "cifar", root / "run" / "checkpoints" / "last.pt"


# -- --force never replaces what s9tune did not make --------------------------------------
def test_force_never_replaces_the_root(tiny_cifar: Path, no_removal: list, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", "/", "--force"]) == 2
    assert "the root folder" in one_error(capsys) and not no_removal


def test_force_never_replaces_home_even_if_it_looks_like_a_run(
    tmp_path: Path, tiny_cifar: Path, no_removal: list, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home = fake_run(tmp_path / "home", kind="lr-find")
    monkeypatch.setenv("HOME", str(home))
    before = snapshot(home)
    assert main(["lr-find", "--data-dir", str(tiny_cifar), *TINY, "--out", "~", "--force"]) == 2
    assert "the home folder" in one_error(capsys)
    assert snapshot(home) == before and not no_removal


def test_force_never_replaces_the_working_folder_or_above(
    tmp_path: Path,
    checkpoint: tuple[Path, Path],
    no_removal: list,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    data, ckpt = checkpoint
    work = fake_run(tmp_path / "work", kind="analyze")
    (work / "project").mkdir()
    monkeypatch.chdir(work / "project")
    before = snapshot(work)
    assert main(["analyze", str(ckpt), "--data-dir", str(data), "--out", str(work), "--force"]) == 2
    assert "holds the working folder" in one_error(capsys)
    assert snapshot(work) == before and not no_removal


def test_force_never_replaces_the_data_dir(tiny_cifar: Path, no_removal: list, capsys: pytest.CaptureFixture) -> None:
    before = snapshot(tiny_cifar)
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(tiny_cifar), "--force"]) == 2
    assert "the data dir" in one_error(capsys)
    assert snapshot(tiny_cifar) == before and not no_removal


def test_force_never_follows_a_symlink(
    tmp_path: Path, tiny_cifar: Path, no_removal: list, capsys: pytest.CaptureFixture
) -> None:
    target = fake_run(tmp_path / "real-run")  # even a genuine run is not replaced through a link
    link = tmp_path / "link"
    link.symlink_to(target)
    before = snapshot(target)
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(link), "--force"]) == 2
    assert "symbolic link" in one_error(capsys)
    assert snapshot(target) == before and link.is_symlink() and not no_removal


def test_force_never_replaces_an_experiment(
    tmp_path: Path, tiny_cifar: Path, no_removal: list, capsys: pytest.CaptureFixture
) -> None:
    exp = fake_run(tmp_path / "searches" / "exp")
    (exp / "s9tune_space.json").write_text("{}")
    (exp / "experiment_state-2026.json").write_text("{}")
    before = snapshot(exp)
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(exp), "--force"]) == 2
    assert "experiment" in one_error(capsys)
    assert snapshot(exp) == before and not no_removal


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: (p.mkdir(), (p / "precious.txt").write_text("keep")), "s9tune.json missing"),
        (lambda p: fake_run(p, extra=("notes.txt",)), "also holds 'notes.txt'"),
        (lambda p: fake_run(p, kind="lr-find"), "is an s9tune lr-find folder"),
        (
            lambda p: (fake_run(p), (p / "s9tune.json").unlink(), (p / "s9tune.json").symlink_to(p / "run.json")),
            "s9tune.json missing",
        ),
    ],
    ids=["foreign-files", "run-plus-user-file", "other-kind", "linked-marker"],
)
def test_force_replaces_only_a_folder_of_the_same_kind(
    make, needle: str, tmp_path: Path, tiny_cifar: Path, no_removal: list, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    make(out)
    before = snapshot(out)
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out), "--force"]) == 2
    assert needle in one_error(capsys)
    assert snapshot(out) == before and not no_removal


def test_force_replaces_an_s9tune_run_without_following_links_inside(tmp_path: Path, tiny_cifar: Path) -> None:
    import shutil

    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out)]) == 0
    assert json.loads((out / outdir.MARKER).read_text())["kind"] == "train"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    shutil.rmtree(out / "tb")
    (out / "tb").symlink_to(victim)  # a link planted where s9tune writes a folder of its own
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out), "--force"]) == 0
    assert snapshot(victim) == {"thesis.tex": b"years of work"}  # the link went, not its target
    assert not (out / "tb").is_symlink() and (out / "metrics.json").exists()


def test_resume_continues_only_a_real_run(tmp_path: Path, tiny_cifar: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "config.yaml").write_text("my own config\n")
    (out / "metrics.jsonl").write_text("my own numbers\n")
    before = snapshot(out)
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out), "--resume"]) == 2
    assert "nothing to resume here" in one_error(capsys)
    assert snapshot(out) == before
    lr = fake_run(tmp_path / "lr", kind="lr-find")
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(lr), "--resume"]) == 2
    assert "nothing to resume here" in one_error(capsys)


def test_a_new_folder_is_marked_and_a_file_is_refused(tmp_path: Path) -> None:
    made = outdir.prepare_out_dir(tmp_path / "a" / "b", kind="analyze")
    assert made == tmp_path / "a" / "b" and json.loads((made / outdir.MARKER).read_text())["kind"] == "analyze"
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        outdir.prepare_out_dir(tmp_path / "f", kind="train", force=True)
    assert (tmp_path / "f").read_text() == "x"


# -- searches: names, clean-up, logs ---------------------------------------------------------
def _space(tmp_path: Path) -> Path:
    import yaml
    from conftest import SEARCH_SPACE

    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(SEARCH_SPACE))
    return p


@pytest.mark.parametrize("name", ["new/../../victim2", "..", "a/b", "/abs", "x y", ".hidden", "ok\n"])
def test_experiment_name_is_one_safe_folder_name(
    name: str, tmp_path: Path, tiny_cifar: Path, capsys: pytest.CaptureFixture
) -> None:
    victim = fake_run(tmp_path / "victim2")
    before = snapshot(tmp_path)
    args = ["search", "--space", str(_space(tmp_path)), "--data-dir", str(tiny_cifar)]
    assert main([*args, "--storage", str(tmp_path / "st" / "a" / "b"), f"--name={name}"]) == 2
    assert "--name" in one_error(capsys)
    after = snapshot(tmp_path)
    after.pop("space.yaml")
    before.pop("space.yaml", None)
    assert after == before and victim.exists()  # not even the storage folder was created


def test_clean_up_never_removes_a_folder_it_did_not_create(
    tmp_path: Path, tiny_cifar: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even if the 'already exists' check is passed (a folder made meanwhile), the folder is
    created exclusively, so the search stops before it could clean anything up."""
    from s9tune.api import run_search
    from s9tune.errors import S9Error
    from s9tune.options import SearchOptions
    from s9tune.search.experiment import record as experiment

    victim = tmp_path / "st" / "mine"
    victim.mkdir(parents=True)
    (victim / "results.csv").write_text("irreplaceable")
    monkeypatch.setattr(experiment.ExperimentRef, "exists", lambda self: False)
    with pytest.raises(S9Error, match="already exists"):
        run_search(
            SearchOptions(space=_space(tmp_path), data_dir=tiny_cifar, storage=str(tmp_path / "st"), name="mine")
        )
    assert snapshot(victim) == {"results.csv": b"irreplaceable"}


def test_discard_removes_only_what_create_wrote(tmp_path: Path) -> None:
    from s9tune.search.experiment.record import ExperimentRef
    from s9tune.search.space.space import load_space

    ref = ExperimentRef(str(tmp_path / "st"), "e")
    ref.create(load_space(_space(tmp_path)), max_failures=2)
    assert json.loads((tmp_path / "st" / "e" / "s9tune_space.json").read_text())["max_failures"] == 2
    (tmp_path / "st" / "e" / "other.txt").write_text("someone else's")
    ref.discard()
    assert snapshot(tmp_path / "st" / "e") == {"other.txt": b"someone else's"}
    (tmp_path / "st" / "e" / "other.txt").unlink()
    ref.discard()
    assert not (tmp_path / "st" / "e").exists()


def test_uri_log_is_private_and_no_log_is_written_through_a_link(tmp_path: Path) -> None:
    from s9tune.errors import S9Error
    from s9tune.search.execution.logfile import open_log, ray_output_to
    from s9tune.search.execution.runner import _log_path
    from s9tune.search.experiment.record import ExperimentRef

    ref = ExperimentRef("s3://bucket/searches", "exp")
    a, b = _log_path(ref), _log_path(ref)
    assert a.parent != b.parent and "exp" not in str(a.parent)  # not guessable from the name
    assert stat.S_IMODE(a.parent.stat().st_mode) == 0o700
    with open_log(a) as fh:
        fh.write("x")
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    secret = tmp_path / "secret"
    secret.write_text("token")
    planted = tmp_path / "exp" / "search.log"
    planted.parent.mkdir()
    planted.symlink_to(secret)
    with pytest.raises(S9Error, match="symbolic link"), ray_output_to(planted):
        pass
    assert secret.read_text() == "token"


def test_retrains_own_files_are_the_ones_force_may_replace() -> None:
    # the module, not the package's `retrain` (the API function of that name)
    retrain = importlib.import_module("s9tune.retrain")

    assert {retrain.RECORD, retrain.LOG, retrain.TUNE_DIR} <= outdir.KIND_ENTRIES["retrain"]


def test_retrain_force_on_a_uri_replaces_only_a_retrain(tmp_path: Path) -> None:
    """A retrain's --out may be a storage URI (file:// here, read through pyarrow as s3:// is):
    there too --force needs s9tune's marker of a retrain and nothing but a retrain's files."""
    from s9tune.retrain import _make_out
    from s9tune.storage import Folder

    target = tmp_path / "bucket" / "rt"
    target.mkdir(parents=True)
    (target / "results.csv").write_text("someone else's")
    dest = Folder.parse(f"file://{target}")
    with pytest.raises(OutputExistsError, match=r"s9tune\.json missing"):
        _make_out(dest, dest.url, force=True, resume=False, data_dir=None)
    assert snapshot(target) == {"results.csv": b"someone else's"}
    fake_run(target, kind="retrain")  # now a retrain's folder, but results.csv is still there
    with pytest.raises(OutputExistsError, match=r"also holds 'results\.csv'"):
        _make_out(dest, dest.url, force=True, resume=False, data_dir=None)
    (target / "results.csv").unlink()
    _make_out(dest, dest.url, force=True, resume=False, data_dir=None)
    assert json.loads((target / outdir.MARKER).read_text())["kind"] == "retrain"
    assert sorted(p.name for p in target.iterdir()) == [outdir.MARKER]
