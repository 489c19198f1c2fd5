"""An experiment folder may come from someone else: `results` and `retrain` read it without
trusting it. They write only inside it and never through a link, refuse a trial folder that is
a link, check every trial's values against the record's distributions and TrainConfig's bounds
(a rerun's row never replaces its search run's config), and cap what they read, per file and in
all. Each test here failed on the code before these rules (see the report of the change)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import write_cifar_dir
from test_experiment_files import add_trial, new_experiment, row
from test_outdir import snapshot

from s9tune.cli import main
from s9tune.errors import S9Error
from s9tune.search.experiment import tune_files
from s9tune.search.experiment.record import load_experiment


def one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("s9tune: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    """A small finished experiment: three complete trials (max_failures 2, 3 epochs)."""
    e = new_experiment(tmp_path)
    for i in (1, 2, 3):
        add_trial(e, i, f"aaaaaaa{i}", [row(1), row(2), row(3, val_accuracy=0.1 * i, done=True)])
    return e


def trial_dir(exp: Path, trial_id: str) -> Path:
    return next(exp.glob(f"train_trial_{trial_id}_*"))


# -- writing: inside the experiment, never through a link ------------------------------------
@pytest.mark.parametrize("name", ["trials.csv", "leaderboard.json", "best_config.yaml"])
def test_results_never_writes_through_a_planted_link(
    name: str, exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    victim = tmp_path / "bashrc"
    victim.write_text("alias ls='ls --color'\n")
    (exp / name).symlink_to(victim)
    assert main(["results", str(exp)]) == 2
    assert "is a symbolic link" in one_error(capsys)
    assert victim.read_text() == "alias ls='ls --color'\n" and (exp / name).is_symlink()


def test_results_writes_atomically_with_the_users_permissions(exp: Path) -> None:
    assert main(["results", str(exp)]) == 0
    names = sorted(p.name for p in exp.iterdir() if p.is_file())
    assert names == ["best_config.yaml", "leaderboard.json", "s9tune_space.json", "trials.csv"]  # no temp left
    umask = os.umask(0)
    os.umask(umask)
    assert (exp / "trials.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_trial_folder_that_links_out_of_the_experiment_is_refused(
    exp: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Refused rather than skipped: a skipped trial would change the ranking and the best config
    without a word, and Tune never writes a link into an experiment."""
    outside = tmp_path / "elsewhere"
    shutil.copytree(trial_dir(exp, "aaaaaaa3"), outside)
    (outside / "params.json").write_text(json.dumps({"max_lr": 1.0, "pct_start": 0.2, "aug_strength": 1.0}))
    (exp / "train_trial_bbbbbbb1_9_x").symlink_to(outside, target_is_directory=True)
    before = snapshot(exp)
    assert main(["results", str(exp)]) == 2
    assert "train_trial_bbbbbbb1_9_x: is a symbolic link" in one_error(capsys)
    assert snapshot(exp) == before


def test_a_linked_file_inside_a_trial_folder_is_refused(exp: Path, tmp_path: Path, capsys) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"max_lr": 0.3, "pct_start": 0.2, "aug_strength": 1.0}))
    params = trial_dir(exp, "aaaaaaa2") / "params.json"
    params.unlink()
    params.symlink_to(secret)
    assert main(["results", str(exp)]) == 2
    assert "params.json: is a symbolic link" in one_error(capsys)


# -- values: checked against the record --------------------------------------------------------
def test_a_tampered_best_trial_is_refused_not_retrained(exp: Path, tmp_path: Path, capsys) -> None:
    params = trial_dir(exp, "aaaaaaa3") / "params.json"
    params.write_text(json.dumps({"max_lr": 50, "pct_start": 0.2, "aug_strength": 1.0}))
    out = tmp_path / "rt"
    write_cifar_dir(tmp_path / "data")  # so that today's refusal, not missing data, is what stops it
    assert main(["retrain", str(exp), "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--out", str(out)]) == 2
    err = one_error(capsys)
    assert "params.json: max_lr=50 lies outside the searched range (loguniform from 0.05 to 2)" in err, err
    assert not out.exists()
    assert main(["results", str(exp)]) == 2
    assert "max_lr=50" in one_error(capsys) and not (exp / "best_config.yaml").exists()


def test_best_checks_the_values_it_hands_on(exp: Path) -> None:
    """Experiment.best() checks the config it returns even for rows not read from files."""
    loaded = load_experiment(str(exp))
    loaded.rows[2].config["aug_strength"] = 7.0
    with pytest.raises(S9Error, match=r"trial aaaaaaa3: aug_strength=7.0 lies outside the searched range"):
        loaded.best()


def test_a_reruns_row_never_replaces_its_search_runs_config(tmp_path: Path) -> None:
    """The pick's config is its search run's; a rerun whose values differ is refused."""
    import yaml
    from conftest import SEARCH_SPACE

    from s9tune.search.experiment.record import ExperimentRef
    from s9tune.search.space.space import load_space

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SEARCH_SPACE, "reevaluate": {"top": 1, "seeds": 1}}))
    ExperimentRef(str(tmp_path / "st"), "e").create(load_space(tmp_path / "s.yaml"), max_failures=2)
    e = tmp_path / "st" / "e"
    add_trial(e, 1, "aaaaaaa1", [row(1), row(2), row(3, val_accuracy=0.6)])
    add_trial(e, 2, "aaaaaaa2", [row(1), row(2), row(3, val_accuracy=0.6)])
    rerun = trial_dir(e, "aaaaaaa2") / "params.json"
    searched = json.loads(rerun.read_text())
    rerun.write_text(json.dumps({**searched, "max_lr": 0.3, "config_id": "aaaaaaa1", "rerun_seed": 1}))
    assert main(["results", str(e)]) == 2  # its values are not those of the run it reruns
    rerun.write_text(json.dumps({**json.loads((trial_dir(e, "aaaaaaa1") / "params.json").read_text()),
                                 "config_id": "aaaaaaa1", "rerun_seed": 1}))  # fmt: skip
    best = load_experiment(str(e)).best()
    assert best.trial_id == "aaaaaaa1" and best.seeds == 2
    assert best.params == json.loads((trial_dir(e, "aaaaaaa1") / "params.json").read_text())


# -- reading: capped per file and in all, rows kept small ----------------------------------------
def test_reading_is_capped_per_file_and_says_so(exp: Path, capsys: pytest.CaptureFixture) -> None:
    result = trial_dir(exp, "aaaaaaa1") / "result.json"
    with open(result, "ab") as fh:
        fh.truncate(tune_files.CAPS["result.json"] + 1)
    assert main(["results", str(exp)]) == 2
    assert "result.json: larger than 16 MiB" in one_error(capsys)


def test_reading_is_capped_across_the_experiment(
    exp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    size = sum(f.stat().st_size for f in exp.glob("train_trial_*/*"))
    monkeypatch.setattr(tune_files, "TOTAL_MAX_BYTES", size - 1)
    assert main(["results", str(exp)]) == 2
    assert "its trial files hold more than 0 MiB in all (the cap on what s9tune reads" in one_error(capsys)
    monkeypatch.setattr(tune_files, "TOTAL_MAX_BYTES", size)
    assert main(["results", str(exp)]) == 0


def test_a_flood_of_tiny_rows_is_refused_early_and_cheaply(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """The repro's 63 MB of tiny rows cost 41 s and 2.5 GB: within the file cap, the row cap
    stops it after MAX_ROWS rows, each of which is kept cut to the few keys the reader needs."""
    result = trial_dir(exp, "aaaaaaa1") / "result.json"
    line = json.dumps({"training_iteration": 1, "val_accuracy": 0.1, "pad": "x" * 10}) + "\n"
    result.write_text(line * (15 * 2**20 // len(line)))
    started = time.monotonic()
    assert main(["results", str(exp)]) == 2
    assert "more than 20,000 rows" in one_error(capsys) and time.monotonic() - started < 20


def test_rows_keep_only_what_the_reader_needs(exp: Path) -> None:
    result = trial_dir(exp, "aaaaaaa1") / "result.json"
    result.write_text("".join(json.dumps({**row(e), "config": {"x": "y" * 1000}}) + "\n" for e in (1, 2, 3)))
    (t,) = [t for t in tune_files.read_trials(load_experiment_ref(exp)) if t.trial_id == "aaaaaaa1"]
    assert all(set(r) <= set(tune_files.ROW_KEYS) for r in t.rows) and len(t.rows) == 3


def load_experiment_ref(exp: Path):
    from s9tune.search.experiment.record import ExperimentRef

    return ExperimentRef.parse(str(exp))


def test_a_trial_id_that_is_not_a_name_is_refused(exp: Path, capsys: pytest.CaptureFixture) -> None:
    """A trial id lands at the start of a line of trials.csv; `$(cmd)` there ran under bash."""
    result = trial_dir(exp, "aaaaaaa1") / "result.json"
    result.write_text("".join(json.dumps({**row(e), "trial_id": "$(touch pwned)"}) + "\n" for e in (1, 2, 3)))
    assert main(["results", str(exp)]) == 2
    assert "trial_id '$(touch pwned)' is not a Tune trial id" in one_error(capsys)
    assert not (exp / "trials.csv").exists()


# -- a checkpoint: a zip bomb is refused before torch inflates it --------------------------------
def zip_bomb(path: Path, inflated: int = 256 * 2**20) -> Path:
    """A file shaped like torch.save's zip whose one entry deflates to `inflated` bytes of zeros."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("c/data.pkl", "w") as fh:
        block = b"\0" * 2**20
        for _ in range(inflated // len(block)):
            fh.write(block)
    return path


def test_a_zip_bomb_checkpoint_is_refused_before_torch_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from s9tune.checkpoint import Checkpoint
    from s9tune.errors import CheckpointError

    bomb = zip_bomb(tmp_path / "last.pt")
    assert bomb.stat().st_size < 2**20

    def inflate(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load was reached: it would inflate the archive")

    monkeypatch.setattr(torch, "load", inflate)
    with pytest.raises(CheckpointError, match=r"would unpack to 268,435,456 bytes from a [\d,]+-byte file"):
        Checkpoint.load(bomb)


def test_a_real_checkpoint_passes_the_archive_check(tmp_path: Path) -> None:
    from s9tune.checkpoint import Checkpoint
    from s9tune.config import TrainConfig
    from s9tune.model import build_model

    cfg = TrainConfig(width=4, device="cpu")
    Checkpoint(cfg.to_dict(), build_model(cfg).state_dict()).save(tmp_path / "c.pt")
    assert Checkpoint.load(tmp_path / "c.pt").config["width"] == 4


# -- the console and the results table: escapes from a trial never reach the terminal ------------
ESCAPES = "c0\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"


def test_the_console_escapes_what_comes_from_a_trial(tmp_path: Path) -> None:
    import io

    from test_progress import PLAN, FakeTrial

    from s9tune.search.execution.console import SearchProgress, SeedProgress

    (tmp_path / "error.txt").write_text(f"Traceback ...\nValueError: {ESCAPES}\n")
    out = io.StringIO()
    progress = SearchProgress(PLAN, out, live=False)
    t = FakeTrial(ESCAPES, {"max_lr": 0.4, "aug_strength": ESCAPES, "budget": 4, "config_id": ESCAPES})
    t.error_file = str(tmp_path / "error.txt")
    progress.on_trial_start(0, [t], t)
    progress.on_trial_error(0, [t], t)
    seeds = SeedProgress(2, out)
    seeds.on_trial_result(0, [t], FakeTrial("s", {"seed": ESCAPES}), {"event": "started", "node": ESCAPES})
    printed = out.getvalue()
    assert "\\x1b]0;owned\\x07" in printed and "\\u202e" in printed, printed
    assert not any(ch in printed for ch in "\x1b\x07\x9b\u202e"), printed


def test_the_results_table_escapes_what_comes_from_the_files(exp: Path) -> None:
    from s9tune.search.experiment.export import format_results

    loaded = load_experiment(str(exp))
    loaded.rows[0].trial_id = ESCAPES
    printed = format_results(loaded)
    assert "\\x1b[2J" in printed and not any(ch in printed for ch in "\x1b\x07\x9b\u202e")
