"""Every bad input a user can give is one line `s9tune: error: ...`, exit code 2, no traceback and
nothing written: the cases of the error table in docs/safety.md, each run through the CLI. The table itself
is checked against these cases, so it cannot drift from what s9tune prints."""

from __future__ import annotations

import json
import pickle
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, SEARCH_SPACE, make_batch, write_cifar_dir
from test_experiment_files import add_trial, new_experiment, row

from s9tune.cli import main

TINY = ["--set", "width=4", "--set", "epochs=1", "--set", "batch_size=64", "--set", "device=cpu"]


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path], list[str]]  # tmp folder (holding data/, a cifar dir) -> arguments
    message: str  # a fragment of the one line, as the table in docs/safety.md quotes it


def _config(text: str | bytes) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        f = tmp / "c.yaml"
        f.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["train", "--data-dir", str(tmp / "data"), "--config", str(f), "--out", str(tmp / "out")]

    return argv


def _train(*sets: str) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        pairs = [x for s in sets for x in ("--set", s)]
        return ["train", "--data-dir", str(tmp / "data"), *TINY, *pairs, "--out", str(tmp / "out")]

    return argv


def _batches(change: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        change(tmp / "data" / "cifar-10-batches-py")
        return _train()(tmp)

    return argv


def _labels(value: object) -> Callable[[Path], None]:
    def change(batches: Path) -> None:
        b = make_batch(40, 1)
        b[b"labels"] = [value] * 40
        (batches / "data_batch_1").write_bytes(pickle.dumps(b, protocol=2))

    return change


def _empty(name: str) -> Callable[[Path], None]:
    def change(batches: Path) -> None:
        files = [name] if name == "test_batch" else [f"data_batch_{i}" for i in range(1, 6)]
        for f in files:
            b = make_batch(1, 1)
            b[b"data"], b[b"labels"] = b[b"data"][:0], []
            (batches / f).write_bytes(pickle.dumps(b, protocol=4))  # protocol 2 spells empty arrays bytes()

    return change


def _folder_batch(batches: Path) -> None:
    (batches / "data_batch_1").unlink()
    (batches / "data_batch_1").mkdir()


def _checkpoint(change: Callable[[dict], None]) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        from s9tune.checkpoint import Checkpoint
        from s9tune.config import TrainConfig
        from s9tune.model import build_model

        cfg = TrainConfig(width=4, device="cpu")
        raw = {"format_version": 1, **Checkpoint(cfg.to_dict(), build_model(cfg).state_dict()).__dict__}
        change(raw)
        torch.save(raw, tmp / "c.pt")
        return ["analyze", str(tmp / "c.pt"), "--data-dir", str(tmp / "data"), "--out", str(tmp / "out")]

    return argv


def _search_space(change: dict) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / "s.yaml").write_text(yaml.safe_dump({**SEARCH_SPACE, **change}))
        return ["search", "--space", str(tmp / "s.yaml"), "--data-dir", str(tmp / "data")]

    return argv


def _search(*extra: str) -> Callable[[Path], list[str]]:
    def argv(tmp: Path) -> list[str]:
        (tmp / "s.yaml").write_text(yaml.safe_dump(SEARCH_SPACE))
        return ["search", "--space", str(tmp / "s.yaml"), "--data-dir", str(tmp / "data"), *extra]

    return argv


def _experiment(change: Callable[[Path], None], *command: str) -> Callable[[Path], list[str]]:
    """`command` (default `results`) on a small finished experiment at tmp/st/exp (two complete
    trials; tmp/space.yaml its space) after `change` damaged it."""

    def argv(tmp: Path) -> list[str]:
        exp = new_experiment(tmp)
        for i in (1, 2):
            add_trial(exp, i, f"aaaaaaa{i}", [row(1), row(2), row(3, done=True)])
        change(exp)
        if command and command[0] == "retrain":
            return ["retrain", str(exp), "--data-dir", str(tmp / "data"), *command[1:], "--out", str(tmp / "out")]
        if command and command[0] == "resume":
            _tune_state(exp)
            space = ["--space", str(tmp / "space.yaml"), "--data-dir", str(tmp / "data")]
            return ["search", *space, "--storage", str(tmp / "st"), "--name", "exp", "--resume"]
        return ["results", str(exp)]

    return argv


def _tune_state(exp: Path) -> None:
    """Tune's state as JSON (what --resume checks before it restores anything)."""
    trials = [
        [json.dumps({"trainable_name": "train_trial", "config": json.loads(p.read_text())}), "{}"]
        for p in sorted(exp.glob("train_trial_*/params.json"))
    ]
    state = {"runner_data": {"_metric": "val_accuracy"}, "trial_data": trials}
    (exp / "experiment_state-2026-12-07_10-00-00.json").write_text(json.dumps(state))


def _record(text: Callable[[str], str]) -> Callable[[Path], None]:
    def change(exp: Path) -> None:
        f = exp / "s9tune_space.json"
        f.write_text(text(f.read_text()))

    return change


def _record_value(path: str, value: object) -> Callable[[Path], None]:
    """Set one value of the record (`a.b` for a nested key)."""

    def text(raw: str) -> str:
        record = json.loads(raw)
        *outer, last = path.split(".")
        node = record
        for key in outer:
            node = node[key]
        node[last] = value
        return json.dumps(record)

    return _record(text)


def _trial_file(name: str, text: Callable[[str], str]) -> Callable[[Path], None]:
    def change(exp: Path) -> None:
        f = next(exp.glob("train_trial_aaaaaaa1_*")) / name
        f.write_text(text(f.read_text() if f.exists() else ""))

    return change


def _params(**values: object) -> Callable[[Path], None]:
    return _trial_file("params.json", lambda raw: json.dumps({**json.loads(raw), **values}))


def _journal(text: bytes) -> Callable[[Path], None]:
    def change(exp: Path) -> None:
        (exp / "optuna.journal").write_bytes(text)

    return change


def _linked_journal(exp: Path) -> None:
    outside = exp.parent.parent / "outside.txt"
    outside.write_text("someone else's file\n")
    (exp / "optuna.journal").symlink_to(outside)


def _retrain_record(text: str) -> Callable[[Path], None]:
    """OUT (tmp/out) as a retrain interrupted mid-way leaves it, its record replaced by `text`."""

    def change(exp: Path) -> None:
        out = exp.parent.parent / "out"
        (out / "tune").mkdir(parents=True)
        (out / "s9tune.json").write_text(json.dumps({"kind": "retrain", "s9tune": "0"}))
        (out / "s9tune_retrain.json").write_text(text)

    return change


def _seed_near_the_limit(exp: Path) -> None:
    _record_value("fixed.seed", 2**31 - 2)(exp)


OP = b'{"op_code":0,"worker_id":"w","study_name":"exp","directions":[1]}\n'


BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

CASES = [
    Case("width-huge", _train("width=1000000"), "width=1000000: must be <= 512"),
    Case("epochs-huge", _train("epochs=1000000000"), "epochs=1000000000: must be <= 1,000"),
    Case("batch-huge", _train("batch_size=100000000000000000000"), "must be <= 65,536"),
    Case("workers-huge", _train("num_workers=100000"), "num_workers=100000: must be <= 256"),
    Case("lr-infinite", _train("max_lr=.inf"), "max_lr=inf: must be a finite number"),
    Case("echo-capped", _train("max_lr=[" + "9," * 5000 + "]"), "max_lr=[9, 9, 9, 9, 9, 9, ...]"),
    Case("huge-number", _train("max_lr=" + "9" * 5000), "refused: a value Python cannot read"),
    Case("alias-bomb", _config(BOMB), "refused: more than 100,000 values once its aliases are expanded"),
    Case("deep-list", _config("width: " + "[" * 20000 + "]" * 20000), "refused: nested deeper than 32 levels"),
    Case("huge-file", _config("# padding\n" * 200_000), "refused: larger than 1024 KiB"),
    Case("not-utf8", _config(b"width: 8\nname: caf\xe9\n"), "not UTF-8 text (byte 18)"),
    Case("labels-text", _batches(_labels("cat")), "labels are not integers 0-9"),
    Case("labels-2**70", _batches(_labels(2**70)), "labels are not integers 0-9"),
    Case("batch-is-folder", _batches(_folder_batch), "cannot read it as a CIFAR-10 batch file (Is a directory)"),
    Case("empty-train", _batches(_empty("train")), "the data_batch_* files hold no images"),
    Case("empty-test", _batches(_empty("test_batch")), "holds no images; the test set cannot be empty"),
    Case("ckpt-epochs", _checkpoint(lambda r: r["config"].update(epochs=10**12)), "must be <= 1,000"),
    Case("ckpt-state-list", _checkpoint(lambda r: r.update(model_state=[1, 2])), "model_state is a list, not a dict"),
    Case("num-samples-huge", _search("--num-samples", str(10**30)), "must lie in [1, 10,000]"),
    Case("s3-no-bucket", _search("--storage", "s3://"), "'s3://': names no bucket"),
    Case("address-bad-port", _search("--address", "127.0.0.1:99999999"), "expected HOST:PORT or auto"),
    Case(
        "lr-find-steps",
        lambda t: ["lr-find", "--data-dir", str(t / "data"), "--num-iter", "10000000", "--out", str(t / "out")],
        "[10, 100,000]",
    ),
    Case(
        "seeds-huge", lambda t: ["retrain", str(t / "exp"), "--seeds", "1000000", "--out", str(t / "out")], "[1, 100]"
    ),
    Case("summary-width", lambda t: ["summary", "--width", "1000000"], "--width 1000000: must lie in [1, 512]"),
    # a bad command line, a bad YAML file or number
    Case("argv-missing-value", lambda t: ["search", "--name", "-rf"], "argument --name: expected one argument"),
    Case("yaml-duplicate-key", _config("width: 8\nepochs: 1\nwidth: 16\n"), "the key 'width' appears twice (lines 1"),
    Case("float-400-digits", _train("max_lr=" + "9" * 400), "too large for a number"),
    Case("batch-empty-file", _batches(lambda b: (b / "data_batch_1").write_bytes(b"")), "truncated or corrupt"),
    # seeds past the largest seed: reruns train with fixed.seed + k, retrain with seed + k
    Case(
        "reeval-seed-limit",
        _search_space({"fixed": {**SEARCH_SPACE["fixed"], "seed": 2**31 - 2}, "reevaluate": {"top": 2, "seeds": 2}}),
        "reevaluate.seeds: the seeds run from 2,147,483,646 to 2,147,483,648, past the largest seed",
    ),
    Case("retrain-seed-limit", _experiment(_seed_near_the_limit, "retrain", "--seeds", "3"), "past the largest seed"),
    # a damaged or edited experiment: one line naming the file and the field
    Case(
        "record-1e309",
        _experiment(_record(lambda r: r.replace('"num_samples": 6', '"num_samples": 1e309'))),
        "num_samples",
    ),
    Case(
        "record-failures-text", _experiment(_record_value("max_failures", "two")), "max_failures: expected an integer"
    ),
    Case(
        "record-top-infinite",
        _experiment(_record_value("reevaluate", {"top": float("inf"), "seeds": 1})),
        "reevaluate.top",
    ),
    Case(
        "record-no-budgets",
        _experiment(_record_value("scheduler", {"type": "halving", "max_t": 3, "budgets": [], "keep": 0.5})),
        "scheduler.budgets: expected a list",
    ),
    Case(
        "params-budget-text",
        _experiment(_params(budget="four")),
        "params.json: budget 'four' is not a budget of this search",
    ),
    Case(
        "params-budget-1e309",
        _experiment(_trial_file("params.json", lambda r: r[:-1] + ', "budget": 1e309}')),
        "budget inf is not a budget",
    ),
    Case(
        "params-out-of-range", _experiment(_params(max_lr=50)), "params.json: max_lr=50 lies outside the searched range"
    ),
    Case(
        "failures-5000-digits",
        _experiment(_trial_file("error.txt", lambda r: f"Failure # {'9' * 5000} (occurred at 2026-11-29_10-00-01)\n")),
        "is not a count of failures",
    ),
    Case(
        "iteration-10**400",
        _experiment(_trial_file("result.json", lambda r: r + json.dumps(row(4, training_iteration=10**400)) + "\n")),
        "line 4: training_iteration 1000000000000",
    ),
    Case(
        "retrain-record-garbage",
        _experiment(_retrain_record("{not json"), "retrain", "--resume"),
        "s9tune_retrain.json: not JSON (damaged or edited",
    ),
    Case(
        "retrain-record-seeds",
        _experiment(_retrain_record(json.dumps({"seeds": ["x"], "config": {}})), "retrain", "--resume"),
        "s9tune_retrain.json: seeds ['x'] is not a list of 1-100 different seeds",
    ),
    Case("journal-garbage", _experiment(_journal(OP + b"garbage\n" + OP), "resume"), "line 2 is not an Optuna"),
    Case("journal-5000-digits", _experiment(_journal(OP + b"9" * 5000 + b"\n"), "resume"), "line 2 is not an Optuna"),
    Case("journal-link", _experiment(_linked_journal, "resume"), "optuna.journal: is a symbolic link"),
    Case("address-ray-client-closed", _search("--address", "ray://127.0.0.1:1"), "nothing answers at 127.0.0.1:1"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar_dir(tmp_path / "data")
    argv = case.argv(tmp_path)
    monkeypatch.chdir(tmp_path)  # a search's default storage would be ./searches
    before = written(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("s9tune: error: ") and "Traceback" not in err, err
    assert case.message in err, err
    assert len(err) < 400, err  # echoed values are capped
    assert written(tmp_path) == before  # no out folder, no searches/, no file changed or added


def written(tmp: Path) -> dict[str, bytes | str]:
    """Every file and folder below tmp (the data dir aside), links as their target, never followed."""
    out: dict[str, bytes | str] = {}
    for p in sorted(tmp.rglob("*")):
        rel = p.relative_to(tmp)
        if rel.parts[0] == "data":
            continue
        out[str(rel)] = f"-> {p.readlink()}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


def test_a_port_that_is_not_ray_fails_within_the_handshake_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something accepts TCP but never speaks Ray's protocol: one line after the handshake
    limit, not a hang of minutes, and no experiment folder left behind."""
    from s9tune.search.execution import cluster

    monkeypatch.setattr(cluster, "HANDSHAKE_S", 2.0)
    write_cifar_dir(tmp_path / "data")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))  # held open: no race for the port
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        argv = _search("--address", address, "--storage", str(tmp_path / "st"), "--name", "e")(tmp_path)
        assert main(argv) == 2
        took = time.monotonic() - started
    err = capsys.readouterr().err
    assert "did not answer as a Ray cluster within 2 s" in err and err.count("\n") == 1, err
    assert took < 30, took
    assert not (tmp_path / "st" / "e").exists()


def test_a_dollar_in_a_class_name_is_plotted_as_text(tmp_path: Path) -> None:
    """Class names come from batches.meta: one that matplotlib's mathtext cannot parse is drawn
    as the literal text, so analyze still writes its report."""
    batches = write_cifar_dir(tmp_path / "data")
    names = [b"$\\frac{$", b"a$b$c", *[f"class{i}".encode() for i in range(8)]]
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    args = ["train", "--data-dir", str(tmp_path / "data"), *TINY, "--out", str(tmp_path / "run")]
    assert main(args) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert main(["analyze", str(ckpt), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "a")]) == 0
    assert "$\\frac{$" in (tmp_path / "a" / "analysis.json").read_text(encoding="utf-8").replace("\\\\", "\\")


def test_unprintable_class_names_are_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    batches = write_cifar_dir(tmp_path / "data")
    names = [b"\xff\xfe", *[f"c{i}".encode() for i in range(9)]]
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    assert main(["train", "--data-dir", str(tmp_path / "data"), *TINY, "--out", str(tmp_path / "o")]) == 2
    assert "label_names must be 64 or fewer printable characters" in capsys.readouterr().err


def test_docs_error_table_quotes_what_s9tune_prints() -> None:
    """Each row of the error table in docs/safety.md names a case here and quotes its message."""
    page = (REPO / "docs" / "safety.md").read_text(encoding="utf-8")
    section = page.split("<!-- error-table -->", 2)[1]
    rows = re.findall(r"^\| `?([^|`]+)`? \| .* \| `…([^`]+)…` \|$", section, re.MULTILINE)
    quoted = {case_id.strip(): message for case_id, message in rows}
    by_id = {c.id: c.message for c in CASES}
    assert set(by_id) <= set(quoted) | {"echo-capped"}, sorted(set(by_id) - set(quoted))
    for case_id, message in quoted.items():
        if case_id in by_id:
            assert message in by_id[case_id] or by_id[case_id] in message, (case_id, message)


def test_help_says_resume_only_trusted_experiments() -> None:
    res = subprocess.run([sys.executable, "-m", "s9tune", "search", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "trust" in res.stdout
