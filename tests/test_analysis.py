"""Analysis: metrics, GradCAM (via pytorch-grad-cam), plots and the self-contained report."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from s9tune.analysis import metrics as M
from s9tune.analysis import seedlog
from s9tune.analysis.cam import compute_gradcam, gradcam_maps, prepare_cam_model
from s9tune.analysis.seedlog import seed_style_lines
from s9tune.api import analyze
from s9tune.augment import EvalBatches, normalize_uint8
from s9tune.checkpoint import Checkpoint
from s9tune.config import TrainConfig
from s9tune.data import Splits, load_splits
from s9tune.engine import score
from s9tune.errors import CheckpointError, ConfigError, OutputExistsError
from s9tune.model import CustomResNet, build_model
from s9tune.options import AnalyzeOptions

CFG = TrainConfig(width=8, device="cpu")


# -- helpers ----------------------------------------------------------------------------
def tiny_splits(data_dir: Path) -> Splits:
    return load_splits(data_dir, val_size=CFG.val_size, seed=CFG.seed)


def train_briefly(model: nn.Module, splits: Splits, steps: int = 12) -> nn.Module:
    """A few SGD steps so the weights (and hence the GradCAM gradients) are not the init's."""
    torch.manual_seed(0)
    x = normalize_uint8(splits.train_x, torch.device("cpu"))
    y = torch.as_tensor(splits.train_y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def write_checkpoint(path: Path, model: nn.Module, cfg: TrainConfig = CFG) -> Path:
    Checkpoint(config=cfg.to_dict(), model_state=model.state_dict(), epoch=1, rng_state=torch.get_rng_state()).save(
        path
    )
    return path


def fake_history(epochs: int = 3) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 2.3 - 0.2 * e,
            "train_accuracy": 0.1 * e,
            "eval_loss": 2.2 - 0.1 * e,
            "eval_accuracy": 0.12 * e,
            "eval_split": "val",
            "lr": 0.01 * e,
            "epoch_s": 1.0,
            "images_per_s": 100.0,
        }
        for e in range(1, epochs + 1)
    ]


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.img_src: list[str] = []
        self.other_refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if tag == "img" and name == "src":
                self.img_src.append(value or "")
            elif name in ("src", "href", "srcset"):
                self.other_refs.append(f"{tag}.{name}={value}")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Width-8 nets on 32x32 images: a second intra-op thread only adds contention (it made
    these tests several times slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def splits(tiny_cifar: Path) -> Splits:
    return tiny_splits(tiny_cifar)


@pytest.fixture(scope="module")
def _trained_state() -> dict:
    return {}


@pytest.fixture
def trained(splits: Splits, _trained_state: dict) -> nn.Module:
    """The briefly trained model; trained once per module (tiny_cifar is the same data every
    time, it is seeded), then a fresh copy per test so no test sees another's changes."""
    if "state" not in _trained_state:
        _trained_state["state"] = train_briefly(build_model(CFG), splits).state_dict()
    model = build_model(CFG)
    model.load_state_dict(_trained_state["state"])
    return model


@pytest.fixture
def run_checkpoint(tmp_path: Path, trained: nn.Module) -> Path:
    """RUN/checkpoints/last.pt with RUN/metrics.jsonl beside it, as `s9tune train` lays it out."""
    run = tmp_path / "run"
    ckpt = write_checkpoint(run / "checkpoints" / "last.pt", trained)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fake_history()))
    return ckpt


# -- metrics --------------------------------------------------------------------------
def test_per_class_accuracy_weighted_by_counts_is_overall() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 500)
    y_true[y_true == 7] = 3  # a class with no images must not break the identity
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 10, 500))
    cm = M.confusion_matrix(y_true, y_pred, 10)
    assert cm.sum() == 500 and np.trace(cm) == int((y_true == y_pred).sum())
    acc, counts = M.per_class_accuracy(cm), M.class_counts(cm)
    assert np.isnan(acc[7]) and counts[7] == 0
    seen = counts > 0
    assert np.isclose((acc[seen] * counts[seen]).sum() / counts.sum(), M.overall_accuracy(cm))
    assert np.isclose(M.overall_accuracy(cm), (y_true == y_pred).mean())


def test_misclassified_indices_are_wrong_and_most_confident_first() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    y = np.array([1, 1, 1, 0, 1])
    assert M.misclassified_indices(y, probs).tolist() == [4, 0, 3, 2]
    assert M.correct_indices(y, probs).tolist() == [1]


def test_class_table_matches_seed_format() -> None:
    lines = seedlog.class_table(["airplane", "cat", "ship"], [0.9412, 0.29, float("nan")])
    assert lines[0] == "Accuracy of airplane : 94 %"
    assert lines[1] == "Accuracy of   cat : 29 %"  # %5s and float error (0.29 * 100 = 28.99...) as the seed had none
    assert "n/a" in lines[2]
    assert (
        seedlog.seed_test_line(0.12341, 9365, 10000) == "Test set: Average loss: 0.1234, Accuracy: 9365/10000 (93.65%)"
    )


# -- GradCAM --------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["r2", "layer3", "r1"])
def test_gradcam_maps_shape_range_and_hooks_released(trained: nn.Module, splits: Splits, layer: str) -> None:
    x = normalize_uint8(splits.test_x[:6], torch.device("cpu"))
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    trained.train()
    cam_model = prepare_cam_model(trained)
    with torch.no_grad():
        pred = [int(c) for c in cam_model(x).argmax(1)]
    maps = compute_gradcam(cam_model, x, pred, target_layer=layer)
    assert maps.shape == (6, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    spread = maps.reshape(6, -1).std(axis=1)
    if layer == "r2":
        # the default layer, explaining the predicted class: every map has a hot spot
        assert (spread > 1e-3).all(), spread
    else:
        # a barely trained net may give an all-negative (hence all-zero) map on earlier layers
        assert spread.max() > 1e-3, spread
    assert hook_count(cam_model) == 0, "GradCAM left hooks on the model it explained"
    # the caller's model is untouched: still training, no hooks, same weights
    assert trained.training and hook_count(trained) == 0
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    # the one-call form (its own copy; None = the predicted class) gives the same maps
    again = gradcam_maps(trained, x, None, target_layer=layer)
    np.testing.assert_allclose(again, maps, atol=1e-5)
    assert hook_count(trained) == 0


def test_gradcam_inside_inference_mode(trained: nn.Module) -> None:
    with torch.inference_mode():
        x = torch.randn(2, 3, 32, 32)
        maps = gradcam_maps(trained, x, None)
    assert maps.shape == (2, 32, 32)


@pytest.mark.parametrize("name", ["nope", "r3", "r2.res9", "", "fc"])
def test_unknown_or_unusable_target_layer_is_config_error(trained: nn.Module, name: str) -> None:
    with pytest.raises(ConfigError):
        gradcam_maps(trained, torch.zeros(1, 3, 32, 32), [0], target_layer=name)


# -- the whole analysis ---------------------------------------------------------------
def test_analyze_checkpoint_writes_consistent_report(
    run_checkpoint: Path, tiny_cifar: Path, tmp_path: Path, trained: nn.Module
) -> None:
    out = tmp_path / "analysis"
    res = analyze(AnalyzeOptions(checkpoint=run_checkpoint, data_dir=tiny_cifar, out=out, target_layer="r2"))
    splits = tiny_splits(tiny_cifar)

    on_disk = json.loads((out / "analysis.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "test_correct",
        "test_images",
        "per_class_accuracy",
        "per_class_counts",
        "confusion_matrix",
        "misclassified",
    ):
        assert on_disk[key] == res[key]
    assert res["test_images"] == len(splits.test_y)

    # per-class accuracies weighted by class counts give the overall accuracy
    acc, counts = res["per_class_accuracy"], res["per_class_counts"]
    weighted = sum(acc[c] * counts[c] for c in counts if counts[c]) / sum(counts.values())
    assert weighted == pytest.approx(res["test_accuracy"])
    assert res["test_correct"] == round(res["test_accuracy"] * res["test_images"])
    assert np.trace(np.array(res["confusion_matrix"])) == res["test_correct"]

    # predictions agree with an independent evaluation; the gallery shows only mistakes
    cpu = torch.device("cpu")
    p = score(trained, EvalBatches(splits.test_x, splits.test_y, 256, cpu), cpu)
    logits, labels = p.logits, p.labels
    pred = logits.argmax(1).numpy()
    assert int((pred == labels.numpy()).sum()) == res["test_correct"]
    assert res["misclassified"] == int((pred != labels.numpy()).sum()) > 0
    assert res["misclassified_shown"], "the barely trained model should make mistakes"
    assert all(pred[i] != splits.test_y[i] for i in res["misclassified_shown"])
    assert all(pred[i] != splits.test_y[i] for i in res["gradcam_misclassified"])
    assert all(pred[i] == splits.test_y[i] for i in res["gradcam_correct"])

    # plots exist, including the curves from RUN/metrics.jsonl
    for rel in res["plots"].values():
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = {"training_curves", "per_class_accuracy", "confusion_matrix", "misclassified", "augmentation"}
    assert expected <= set(res["plots"])

    # report.html is self-contained: every image is a data: URI, nothing else is referenced
    page = (out / "report.html").read_text()
    refs = _Refs()
    refs.feed(page)
    assert len(refs.img_src) == len(res["plots"])
    assert all(s.startswith("data:image/png;base64,") for s in refs.img_src)
    assert refs.other_refs == [] and "url(" not in page
    assert "Test set: Average loss: " in page and "Accuracy of" in page
    md = (out / "report.md").read_text()
    assert sorted(re.findall(r"\]\((plots/[\w.]+\.png)\)", md)) == sorted(res["plots"].values())

    lines = seed_style_lines(res)
    assert re.fullmatch(r"Test set: Average loss: \d+\.\d{4}, Accuracy: \d+/\d+ \(\d+\.\d{2}%\)", lines[0])
    assert len(lines) == 11 and lines[1].startswith("Accuracy of airplane : ")


def test_report_renders_leaderboard(tmp_path: Path, tiny_cifar: Path, trained: nn.Module) -> None:
    from s9tune.analysis.analyze import AnalysisSpec, analyze_model

    board = [
        {
            "trial": "t1",
            "max_lr": 0.4,
            "best_val_accuracy": 0.91,
            "last_val_accuracy": 0.9,
            "epochs": 24,
            "status": "TERMINATED",
        },
        {
            "trial": "t2<b>",
            "max_lr": 0.1,
            "best_val_accuracy": 0.85,
            "last_val_accuracy": None,
            "epochs": 3,
            "status": "STOPPED",
        },
    ]
    spec = AnalysisSpec(leaderboard=board, n_cam=0, n_gallery=0)
    analyze_model(trained, CFG, tiny_splits(tiny_cifar), tmp_path / "a", spec=spec)
    page = (tmp_path / "a" / "report.html").read_text()
    assert "Leaderboard" in page and "91.00%" in page and "t2&lt;b&gt;" in page and "t2<b>" not in page
    assert "| trial | max_lr |" in (tmp_path / "a" / "report.md").read_text()


def test_corrupt_checkpoint_and_width_mismatch(tmp_path: Path, tiny_cifar: Path, trained: nn.Module) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        analyze(AnalyzeOptions(checkpoint=garbage, data_dir=tiny_cifar, out=tmp_path / "o1"))
    good = write_checkpoint(tmp_path / "good.pt", trained)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        analyze(AnalyzeOptions(checkpoint=truncated, data_dir=tiny_cifar, out=tmp_path / "o2"))
    with pytest.raises(CheckpointError):
        analyze(AnalyzeOptions(checkpoint=good, data_dir=tiny_cifar, out=tmp_path / "o3", width=16))
    # weights of another width under a width-8 config
    wrong = write_checkpoint(tmp_path / "wrong.pt", CustomResNet(16))
    with pytest.raises(CheckpointError):
        analyze(AnalyzeOptions(checkpoint=wrong, data_dir=tiny_cifar, out=tmp_path / "o4"))
    with pytest.raises(ConfigError):
        analyze(AnalyzeOptions(checkpoint=good, data_dir=tiny_cifar, out=tmp_path / "o5", target_layer="r9"))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6)), "nothing is written on failure"


def test_existing_out_dir_needs_force(tmp_path: Path, tiny_cifar: Path, run_checkpoint: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    with pytest.raises(OutputExistsError):
        analyze(AnalyzeOptions(checkpoint=run_checkpoint, data_dir=tiny_cifar, out=out))
    assert (out / "keep.txt").exists()
    # --force into the run folder itself would delete the checkpoint: refused
    with pytest.raises(OutputExistsError):
        analyze(
            AnalyzeOptions(checkpoint=run_checkpoint, data_dir=tiny_cifar, out=run_checkpoint.parent.parent, force=True)
        )
    assert run_checkpoint.exists()
    # --force replaces only an analysis s9tune wrote, not a folder of someone else's files
    with pytest.raises(OutputExistsError, match=r"s9tune\.json missing"):
        analyze(AnalyzeOptions(checkpoint=run_checkpoint, data_dir=tiny_cifar, out=out, force=True))
    assert (out / "keep.txt").read_text() == "previous"
    done = tmp_path / "done"
    analyze(AnalyzeOptions(checkpoint=run_checkpoint, data_dir=tiny_cifar, out=done))
    (done / "report.html").write_text("old")
    res = analyze(AnalyzeOptions(checkpoint=run_checkpoint, data_dir=tiny_cifar, out=done, force=True))
    assert (done / "report.html").read_text() != "old" and res["test_images"] > 0
