"""Claims in the docs (README and docs/) that had no test of their own: `--seeds N` reports
mean ± std, a search never hands trials the test set, a trial's CUDA OOM stays that trial's
error, relative paths are made absolute before Ray starts, and -v / -q change what is printed."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import SEARCH_SPACE
from test_experiment_files import add_trial, new_experiment, row

from s9tune.cli import main


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    """A finished experiment as Tune lays it out (results and retrain read only its JSON)."""
    exp = new_experiment(tmp_path)
    add_trial(exp, 1, "bbbbbbb1", [row(1), row(2), row(3, done=True)])
    return exp


@pytest.mark.slow
def test_seeds_report_mean_and_std(
    experiment: Path, tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "rt"
    args = ["retrain", str(experiment), "--data-dir", str(tiny_cifar), "--epochs", "3", "--seeds", "3"]
    assert main([*args, "--set", "width=8", "--set", "batch_size=16", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    accs = [s["test_accuracy"] for s in m["per_seed"]]
    assert m["seeds"] == [0, 1, 2] and len(accs) == 3
    assert len(set(accs)) > 1, accs  # seeds that differ, or no std formula could be told from another
    assert m["test_accuracy_mean"] == pytest.approx(statistics.mean(accs))
    assert m["test_accuracy_std"] == pytest.approx(statistics.stdev(accs))
    for seed in (1, 2):  # every extra seed is a run of its own
        assert json.loads((out / "seeds" / f"seed-{seed}" / "metrics.json").read_text())["config"]["seed"] == seed
    printed = capsys.readouterr().out
    mean, std = 100 * statistics.mean(accs), 100 * statistics.stdev(accs)
    assert f"Test accuracy over 3 seeds: {mean:.2f}% ± {std:.2f}% (mean ± std)" in printed


def test_trials_never_receive_the_test_set(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Tuner ships to trials (tune.with_parameters) holds no test image."""
    from ray import tune

    from s9tune.api import run_search
    from s9tune.options import SearchOptions
    from s9tune.search.execution import cluster

    handed: dict = {}

    class Stop(Exception):
        pass

    def capture(trainable, **kwargs):
        handed.update(kwargs)
        raise Stop

    monkeypatch.setattr(cluster, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(cluster, "preflight", lambda *a, **k: 1)
    monkeypatch.setattr(tune, "with_parameters", capture)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    with pytest.raises(Stop):
        run_search(
            SearchOptions(space=tmp_path / "s.yaml", data_dir=tiny_cifar, storage=str(tmp_path / "st"), name="t")
        )
    splits = handed["splits"]
    assert len(splits.test_y) == 0 and len(splits.test_x) == 0
    assert len(splits.train_y) > 0 and len(splits.val_y) > 0  # trials score on validation


def test_a_trials_cuda_oom_is_that_trials_error(tiny_cifar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainable turns CUDA's OOM into a plain exception of the trial, which Tune records as
    that trial's error (FailureConfig decides about retries); the search goes on."""
    import torch

    from s9tune.data import load_splits
    from s9tune.search.execution import reporting, trainable

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainable, "train", oom)
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(reporting, "_node_id", lambda: "node")
    splits = load_splits(tiny_cifar, val_size=0.2, seed=0)
    base = {"width": 4, "epochs": 1, "device": "cpu"}
    with pytest.raises(RuntimeError, match="CUDA out of memory in this trial") as err:
        trainable.train_trial({"max_lr": 0.1}, splits=splits, base=base)
    assert not isinstance(err.value, torch.cuda.OutOfMemoryError)


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s9tune.search.experiment.record import ExperimentRef, resolve_storage

    monkeypatch.chdir(tmp_path)
    assert resolve_storage("searches") == str(tmp_path.resolve() / "searches")
    assert resolve_storage(None) == str(tmp_path.resolve() / "searches")
    assert ExperimentRef.parse("searches/exp").path == str(tmp_path.resolve() / "searches" / "exp")
    assert resolve_storage("s3://b/p/") == "s3://b/p"  # a URI is left as it is


def test_verbose_and_quiet(tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    args = ["train", "--data-dir", str(tiny_cifar), "--set", "width=4", "--set", "epochs=1", "--set", "device=cpu"]
    assert main(["-q", *args, "--out", str(tmp_path / "q")]) == 0
    assert " INFO " not in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "n")]) == 0
    assert " INFO s9tune." in capsys.readouterr().err
    ckpt = tmp_path / "n" / "checkpoints" / "last.pt"
    analyze = ["analyze", str(ckpt), "--data-dir", str(tiny_cifar)]
    assert main(["-vv", *analyze, "--out", str(tmp_path / "a1")]) == 0
    assert " DEBUG s9tune.analysis" in capsys.readouterr().err  # every plot written
    assert main([*analyze, "--out", str(tmp_path / "a2")]) == 0
    assert " DEBUG " not in capsys.readouterr().err
    # a search: -v sends Ray's own output to the console, -q turns s9tune's progress off
    from s9tune.search.execution import runner

    seen: list[dict] = []

    def fake_search(space, opts):
        seen.append(opts)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_search", fake_search)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
    for flags in ([], ["-v"], ["-q"]):
        assert main([*flags, "search", "--space", str(tmp_path / "s.yaml")]) == 130
    assert [(o.ray_to_console, o.progress) for o in seen] == [(False, True), (True, True), (False, False)]
