"""retrain + analyze on a tiny real search: reproducible metrics, a self-contained report, and
every bad input as one clear line with exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from s9tune.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def retrained(search_experiment, mini: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp, _ = search_experiment
    out = tmp_path_factory.mktemp("rt") / "run"
    rc = main(["retrain", str(exp), "--data-dir", str(mini), "--epochs", "2", "--set", "width=16", "--out", str(out)])
    assert rc == 0
    return out


def test_retrain_outputs(retrained: Path, search_experiment, capsys: pytest.CaptureFixture) -> None:
    m = json.loads((retrained / "metrics.json").read_text())
    exp, _ = search_experiment
    assert m["epochs"] == 2 and m["config"]["width"] == 16 and m["config"]["val_size"] == 0.0
    assert m["config"]["train_subset"] is None and m["train_images"] == 4068  # train + val, full set
    assert m["experiment"] == str(exp) and m["seeds"] == [0]
    rows = [json.loads(line) for line in (retrained / "metrics.jsonl").read_text().splitlines()]
    assert all("test_accuracy" in r for r in rows)  # the test set every epoch: the seed's graph
    for name in (
        "training_curves",
        "per_class_accuracy",
        "confusion_matrix",
        "misclassified",
        "gradcam_misclassified",
        "gradcam_correct",
        "augmentation",
    ):
        assert (retrained / "plots" / f"{name}.png").exists(), name
    assert list((retrained / "tb").glob("events.out.tfevents.*"))


def test_checkpoint_reproduces_metrics_exactly(retrained: Path, mini: Path) -> None:
    from s9tune.augment import EvalBatches
    from s9tune.checkpoint import Checkpoint
    from s9tune.data import load_splits
    from s9tune.engine import score

    m = json.loads((retrained / "metrics.json").read_text())
    model = Checkpoint.load(retrained / "checkpoints" / "last.pt").build_model()  # weights_only=True inside
    splits = load_splits(mini, val_size=0.0, seed=0)
    acc = score(
        model, EvalBatches(splits.test_x, splits.test_y, 512, torch.device("cpu")), torch.device("cpu")
    ).accuracy
    assert acc == m["test_accuracy"]
    # class accuracies weighted by class counts give the overall accuracy
    counts = np.bincount(splits.test_y, minlength=10)
    per = np.array(list(m["per_class_accuracy"].values()))
    assert abs(float((per * counts).sum() / counts.sum()) - m["test_accuracy"]) < 1e-9
    assert m["test_correct"] == round(m["test_accuracy"] * 1017)


def test_gallery_shows_only_misclassified(retrained: Path, mini: Path) -> None:
    from s9tune.augment import EvalBatches
    from s9tune.checkpoint import Checkpoint
    from s9tune.data import load_splits
    from s9tune.engine import score

    info = json.loads((retrained / "analysis.json").read_text())
    shown = info["misclassified_shown"]
    assert shown
    model = Checkpoint.load(retrained / "checkpoints" / "last.pt").build_model()
    splits = load_splits(mini, val_size=0.0, seed=0)
    p = score(model, EvalBatches(splits.test_x, splits.test_y, 512, torch.device("cpu")), torch.device("cpu"))
    wrong = (p.logits.argmax(1) != p.labels).numpy()
    assert all(wrong[i] for i in shown)


def test_report_is_self_contained(retrained: Path) -> None:
    html = (retrained / "report.html").read_text()
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) >= 7 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "Test set: Average loss:" in html
    assert "Leaderboard" in html and html.index("Leaderboard") < html.index("<img")  # the search on top
    md = (retrained / "report.md").read_text()
    assert "plots/training_curves.png" in md


def test_analyze_reproduces_retrain(retrained: Path, mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ana"
    assert (
        main(["analyze", str(retrained / "checkpoints" / "last.pt"), "--data-dir", str(mini), "--out", str(out)]) == 0
    )
    m = json.loads((retrained / "metrics.json").read_text())
    a = json.loads((out / "analysis.json").read_text())
    assert a["test_accuracy"] == m["test_accuracy"]
    printed = capsys.readouterr().out
    assert f"Accuracy: {m['test_correct']}/1017" in printed and "Accuracy of" in printed
    assert (out / "report.html").exists()


def _one_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("s9tune: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs(
    retrained: Path, failed_search: Path, mini: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = retrained / "checkpoints" / "last.pt"
    # no such experiment
    assert main(["retrain", str(tmp_path / "nope"), "--data-dir", str(mini), "--out", str(tmp_path / "o1")]) == 2
    assert "no such s9tune experiment" in _one_error(capsys)
    # an experiment whose trials all failed
    assert main(["retrain", str(failed_search), "--data-dir", str(mini), "--out", str(tmp_path / "o2")]) == 2
    assert "no trial finished its schedule" in _one_error(capsys)
    # a checkpoint from another width
    assert main(["analyze", str(ckpt), "--data-dir", str(mini), "--width", "8", "--out", str(tmp_path / "o3")]) == 2
    assert "trained at width 16, not 8" in _one_error(capsys)
    # a corrupt checkpoint
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["analyze", str(bad), "--data-dir", str(mini), "--out", str(tmp_path / "o4")]) == 2
    assert "not a readable s9tune checkpoint" in _one_error(capsys)
    # an output dir holding a previous run: refused, untouched; --force replaces it
    before = (retrained / "metrics.json").read_bytes()
    assert main(["analyze", str(ckpt), "--data-dir", str(mini), "--out", str(retrained)]) == 2
    assert "holds the checkpoint" in _one_error(capsys)
    prev = tmp_path / "prev"
    assert main(["analyze", str(ckpt), "--data-dir", str(mini), "--out", str(prev)]) == 0
    (prev / "report.html").write_text("old")
    assert main(["analyze", str(ckpt), "--data-dir", str(mini), "--out", str(prev)]) == 2
    assert "already holds a previous run" in _one_error(capsys)
    assert (prev / "report.html").read_text() == "old"
    assert main(["analyze", str(ckpt), "--data-dir", str(mini), "--out", str(prev), "--force"]) == 0
    assert (prev / "report.html").read_text() != "old"
    assert (retrained / "metrics.json").read_bytes() == before
    for n in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / n).exists()
    # a typo in the target layer
    assert (
        main(["analyze", str(ckpt), "--data-dir", str(mini), "--target-layer", "r9", "--out", str(tmp_path / "o5")])
        == 2
    )
    assert "r9" in _one_error(capsys)


def test_retrain_accepts_the_storage_uri(search_experiment, mini: Path, tmp_path: Path) -> None:
    exp, _ = search_experiment
    out = tmp_path / "uri"
    args = ["retrain", f"file://{exp}", "--data-dir", str(mini), "--epochs", "1", "--set", "width=4"]
    args += ["--set", "train_subset=512", "--out", str(out)]  # the URI matters here, not the training
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 1 and m["experiment"] == f"file://{exp}"


def test_a_killed_retrain_resumes_each_seed_from_its_checkpoint(search_experiment, mini: Path, tmp_path: Path) -> None:
    """SIGKILL to the driver (and its Ray) while seed 1 trains, seed 0 done; `--resume` then
    continues seed 1 after its checkpoint and leaves seed 0 alone."""
    import subprocess
    import sys
    import time

    from conftest import kill_driver, tune_rows

    exp, _ = search_experiment
    out = tmp_path / "rt"
    small = ["--set", "width=4", "--set", "batch_size=256", "--set", "train_subset=1024", "--cpus-per-run", "2"]
    cmd = [
        sys.executable, "-m", "s9tune", "retrain", str(exp), "--data-dir", str(mini), "--epochs", "3", "--seeds", "2",
    ]  # fmt: skip
    cmd += [*small, "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seed0: dict = {}
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            done = list(out.glob("tune/*seed=0*/checkpoint_*/run.json"))  # its last folder: finished
            rows = [r for trial, rs in tune_rows(out).items() if "seed=1" in trial for r in rs]
            if done and any(1 <= r.get("epoch", 0) < 3 and "eval_accuracy" in r for r in rows):
                try:
                    seed0 = json.loads(done[0].read_text())
                    break
                except json.JSONDecodeError:
                    pass  # Tune is still copying the folder
            time.sleep(0.2)
    finally:
        kill_driver(proc)
    assert seed0, "seed 1 was not caught between its first and last epoch"
    res = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert not any("seed 0 started" in line for line in lines), lines  # finished: not rerun
    start = next(line for line in lines if "seed 1 started" in line)
    assert 1 <= int(start.rsplit("continuing after epoch ", 1)[1]) < 3, lines
    assert json.loads((out / "run.json").read_text()) == seed0  # seed 0's run, as it was before the kill
    m = json.loads((out / "metrics.json").read_text())
    assert [s["status"] for s in m["per_seed"]] == ["completed", "completed"] and not (out / "tune").exists()
    rows = (out / "seeds" / "seed-1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
