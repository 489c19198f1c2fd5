from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s9tune.cli import main
from s9tune.config import TrainConfig, load_config, parse_set_args
from s9tune.errors import ConfigError

TINY = ["--set", "width=4", "--set", "epochs=2", "--set", "batch_size=64", "--set", "device=cpu"]


# -- config ---------------------------------------------------------------------------
def test_yaml_roundtrip(tmp_path: Path) -> None:
    cfg = TrainConfig(width=8, max_lr=0.1, train_subset=100)
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_defaults_are_the_seed_recipe() -> None:
    cfg = TrainConfig()
    assert (cfg.width, cfg.epochs, cfg.batch_size, cfg.aug_strength, cfg.val_size) == (64, 24, 512, 1.0, 0.1)
    assert cfg.max_lr == 0.4 and abs(cfg.pct_start * 24 - 5) < 1e-9 and cfg.nesterov


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"foo": 1}, "unknown config key 'foo'"),
        ({"max_lr": 0}, "max_lr"),
        ({"max_lr": -0.1}, "max_lr"),
        ({"pct_start": 1.0}, "pct_start"),
        ({"pct_start": 0}, "pct_start"),
        ({"width": 0}, "width"),
        ({"width": 2.5}, "expected int"),
        ({"width": "abc"}, "expected int"),
        ({"nesterov": "yes"}, "expected bool"),
        ({"epochs": True}, "expected int"),
        ({"aug_strength": 3.0}, "aug_strength"),
        ({"val_size": 1.0}, "val_size"),
        ({"device": "tpu"}, "device"),
        ({"batch_size": None}, "null"),
    ],
)
def test_bad_values_raise(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TrainConfig().with_overrides(overrides)


def test_set_parsing_and_yaml_then_set(tmp_path: Path) -> None:
    assert parse_set_args(["max_lr=0.1", "nesterov=false", "train_subset=null", "pad_mode=constant"]) == {
        "max_lr": 0.1,
        "nesterov": False,
        "train_subset": None,
        "pad_mode": "constant",
    }
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"width": 8, "max_lr": 0.2}))
    cfg = load_config(f, ["max_lr=0.3"])
    assert (cfg.width, cfg.max_lr) == (8, 0.3)
    f.write_text("width: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f, [])
    f.write_text("widht: 8\n")
    with pytest.raises(ConfigError, match=f"{f}: unknown config key 'widht'"):
        load_config(f, [])


# -- CLI ------------------------------------------------------------------------------
def test_train_writes_a_run(tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Test set: Average loss:" in printed and "/30 (" in printed
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "val_accuracy", "status", "train_images_per_s", "epochs", "wall_s"):
        assert key in m
    assert m["status"] == "completed" and m["epochs"] == 2
    assert m["gpu_peak_memory_bytes"] is None  # CUDA only (1.3 GiB at width 64 on an H200)
    assert 0 <= m["test_accuracy"] <= 1 and 0 <= m["val_accuracy"] <= 1 and m["train_images_per_s"] > 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "checkpoints" / "last.pt").exists() and list((out / "tb").glob("events.out.tfevents.*"))
    assert TrainConfig.from_yaml(out / "config.yaml").width == 4


def test_train_without_val_split(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--set", "val_size=0", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["val_accuracy"] is None and m["test_accuracy"] is not None
    assert "test_accuracy" in json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_train_resume_continues(
    tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after epoch 1 of 3, then --resume through the CLI: the run goes on from epoch 2
    (epoch 1 is not trained again) and ends with the weights of an uninterrupted run (on the
    CPU every random draw of an epoch derives from (seed, epoch))."""
    import torch

    from s9tune.callbacks import Checkpointer
    from s9tune.checkpoint import Checkpoint

    args = ["train", "--data-dir", str(tiny_cifar), *TINY, "--set", "epochs=3"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    real = Checkpointer.on_epoch_end
    trained: list[int] = []

    def interrupt_after_epoch_1(self, state, m) -> None:
        trained.append(m.epoch)
        real(self, state, m)
        if m.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "on_epoch_end", interrupt_after_epoch_1)
    out = tmp_path / "run"
    assert main([*args, "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert Checkpoint.load(out / "checkpoints" / "last.pt").epoch == 1 and trained == [1]
    first_row = (out / "metrics.jsonl").read_text().splitlines()[0]
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert trained == [1, 2, 3]  # the resumed process trained epochs 2 and 3 only
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and rows[0] == first_row  # epoch 1's row (its timings too) is the first run's
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3
    resumed = Checkpoint.load(out / "checkpoints" / "last.pt").model_state
    whole = Checkpoint.load(tmp_path / "whole" / "checkpoints" / "last.pt").model_state
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole), "resumed weights differ from an uninterrupted run"


def test_train_resume_refuses_another_config(tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--resume continues the run that was started: with `--set max_lr=...` on an existing run
    it would train the rest with another config and overwrite the run's config.yaml."""
    args = ["train", "--data-dir", str(tiny_cifar), *TINY, "--set", "epochs=2"]
    out = tmp_path / "run"
    assert main([*args, "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main([*args, "--set", "max_lr=0.2", "--out", str(out), "--resume"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("s9tune: error:")]
    assert len(errors) == 1 and "was trained with another config; use a new --out" in errors[0], errors
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--set", "foo=1"], "unknown config key"),
        (["--set", "max_lr=0"], "max_lr"),
        (["--set", "pct_start=1.5"], "pct_start"),
        (["--set", "width=0"], "width"),
        (["--set", "width=wide"], "expected int"),
        (["--set", "novalue"], "expected key=value"),
        (["--config", "/nonexistent/c.yaml"], "no such file"),
        (["--data-dir", "NODATA", "--set", "device=cpu"], "download of"),
    ],
)
def test_bad_input_exits_2_writes_nothing(
    extra: list[str], needle: str, tmp_path: Path, tiny_cifar: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    monkeypatch.setenv("S9TUNE_CIFAR10_URL", "http://127.0.0.1:9/none.tar.gz")  # never the real network
    out = tmp_path / "run"
    extra = [str(tmp_path / "nodata") if e == "NODATA" else e for e in extra]
    args = ["train", *(["--data-dir", str(tiny_cifar)] if "--data-dir" not in extra else []), *extra, "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("s9tune: error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err
    assert not out.exists()


def test_existing_run_is_not_overwritten(tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out)]) == 2
    assert "already holds a previous run" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    # --force replaces only a run s9tune wrote (tests/test_outdir.py has every other case)
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(out), "--force"]) == 2
    assert (out / "precious.txt").read_text() == "keep me"
    run = tmp_path / "run2"
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(run)]) == 0
    first = (run / "run.json").read_bytes()
    assert main(["train", "--data-dir", str(tiny_cifar), *TINY, "--out", str(run), "--force"]) == 0
    assert (run / "run.json").read_bytes() != first


def test_summary_and_help_are_fast_and_light() -> None:
    res = subprocess.run([sys.executable, "-m", "s9tune", "summary", "--width", "64"], capture_output=True, text=True)
    assert res.returncode == 0 and "6,573,120" in res.stdout
    res = subprocess.run([sys.executable, "-m", "s9tune", "summary", "--width", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    # `train` must not need Ray: the engine modules never import it
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['optuna'] = None\n"
        "import s9tune.engine, s9tune.runs, s9tune.callbacks, s9tune.cli\n"
        "assert 'matplotlib' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_lr_find(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "lr"
    assert main(["lr-find", "--data-dir", str(tiny_cifar), *TINY, "--num-iter", "20", "--out", str(out)]) == 0
    info = json.loads((out / "lr_find.json").read_text())
    assert info["suggested_max_lr"] > 0 and len(info["lrs"]) == 20
    assert info["lrs"] == sorted(info["lrs"])  # exponential sweep upwards
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


def test_every_option_has_its_flag() -> None:
    """The CLI fills each options field from the flag whose dest has its name (cli.options_from);
    a flag with another dest would leave its field at the default without a word. Only the
    fields listed here are the API's alone."""
    import argparse
    from dataclasses import fields

    from s9tune.cli import build_parser
    from s9tune.options import AnalyzeOptions, LRFindOptions, RetrainOptions, SearchOptions, TrainOptions

    api_only = {SearchOptions: {"max_failures"}, RetrainOptions: {"max_failures"}, AnalyzeOptions: {"device"}}
    derived = {"ray_to_console", "progress"}  # from -v and -q
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = {
        "train": TrainOptions,
        "lr-find": LRFindOptions,
        "search": SearchOptions,
        "retrain": RetrainOptions,
        "analyze": AnalyzeOptions,
    }
    for command, cls in commands.items():
        dests = {a.dest for a in sub.choices[command]._actions}
        missing = {f.name for f in fields(cls)} - dests - derived - api_only.get(cls, set())
        assert not missing, (command, missing)
