"""The search console on its own: Tune's callback hooks driven with stand-in trials, in both the
line mode (not a terminal) and the live view (rich, as on a terminal)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

from s9tune.search.execution.console import Plan, SearchProgress

PLAN = Plan("exp", trials=4, epochs=16, exact=False, max_t=4, searched=("max_lr", "aug_strength"))


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None


def play(progress: SearchProgress, tmp_path) -> list[FakeTrial]:
    a = FakeTrial("a", {"max_lr": 0.4, "aug_strength": 1.0})
    b = FakeTrial("b", {"max_lr": 0.123456, "aug_strength": 0.5})
    trials = [a, b]
    for t in trials:
        progress.on_trial_start(0, trials, t)  # as in Tune: the status changes after the hook
        t.status = "RUNNING"
    for epoch in (1, 2):
        for t in trials:
            t.last_result = {"training_iteration": epoch, "val_accuracy": 0.1 * epoch + (t is a) * 0.05}
            progress.on_trial_result(0, trials, t, t.last_result)
    progress.on_trial_complete(0, trials, b)  # ASHA stopped it at epoch 2 of 4
    b.status = "TERMINATED"
    for epoch in (3, 4):
        a.last_result = {"training_iteration": epoch, "val_accuracy": 0.6}
        progress.on_trial_result(0, trials, a, a.last_result)
    progress.on_trial_complete(0, trials, a)
    a.status = "TERMINATED"
    c = FakeTrial("c", {"max_lr": 9.0, "aug_strength": 2.0}, error_file=str(tmp_path / "error.txt"))
    (tmp_path / "error.txt").write_text(
        "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory in this trial\n"
    )
    trials.append(c)
    progress.on_trial_start(0, trials, c)
    c.status = "RUNNING"
    progress.on_trial_error(0, trials, c)
    c.status = "ERROR"
    progress.on_experiment_end(trials)
    return trials


def test_line_mode_prints_one_line_per_trial_event(tmp_path) -> None:
    out = io.StringIO()
    play(SearchProgress(PLAN, out, live=False), tmp_path)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6, lines  # 3 starts, 2 ends, 1 error; no line per epoch
    assert "trial a started: max_lr 0.4, aug_strength 1" in lines[0] and "(0/4 done, 1 running)" in lines[0]
    assert "trial b started: max_lr 0.123, aug_strength 0.5" in lines[1]
    assert "trial b stopped by ASHA at epoch 2: 20.00% val" in lines[2] and "(1/4 done, 1 running)" in lines[2]
    assert "trial a finished: 60.00% val after 4 epochs" in lines[3] and "(2/4 done, 0 running)" in lines[3]
    assert "trial c error: RuntimeError: CUDA out of memory in this trial" in lines[5]
    assert all(line.startswith("[") and "]" in line for line in lines)  # elapsed time first


def test_live_view_shows_counts_epochs_best_and_eta(tmp_path) -> None:
    out = io.StringIO()
    progress = SearchProgress(PLAN, out, live=True)
    progress._console.file = out  # the view as a terminal would get it
    progress.started = time.monotonic() - 60
    play(progress, tmp_path)
    text = out.getvalue()
    assert "trials  2 done · 0 running · 1 pending · 1 errors" in text
    assert "epochs  6 / ≤ 16" in text  # ASHA's plan is an upper bound
    assert "best    60.00% val  max_lr 0.4, aug_strength 1  [a]" in text
    assert "ETA ≤" in text and "elapsed" in text
    assert "trial c error: RuntimeError: CUDA out of memory" in text  # kept above the view


def test_a_pickled_copy_is_silent() -> None:
    """tune.run pickles its arguments for a remote driver; the copy must not hold this console."""
    import pickle

    out = io.StringIO()
    copy = pickle.loads(pickle.dumps(SearchProgress(PLAN, out, live=False)))
    t = FakeTrial("x", {"max_lr": 0.1, "aug_strength": 0.0})
    copy.on_trial_start(0, [t], t)
    assert out.getvalue() == "" and copy.stream is None


def test_a_replacement_run_counts_in_the_plan(tmp_path) -> None:
    """Halving promotes the next config in line when a promoted run fails for good: one run
    more than planned, so the counts say N/N+1 then N+1/N+1, never more done than planned."""
    plan = Plan("exp", trials=3, epochs=2 + 2 + 8, exact=True, max_t=8, searched=("max_lr",))
    out = io.StringIO()
    progress = SearchProgress(plan, out, live=False)
    runs = [
        FakeTrial("a", {"max_lr": 0.1, "budget": 2, "config_id": "c0"}),
        FakeTrial("b", {"max_lr": 0.2, "budget": 2, "config_id": "c1"}),
        FakeTrial("p", {"max_lr": 0.2, "budget": 8, "config_id": "c1"}, error_file=str(tmp_path / "e.txt")),
        FakeTrial("q", {"max_lr": 0.1, "budget": 8, "config_id": "c0", "replaces": "c1"}),
    ]
    (tmp_path / "e.txt").write_text("RuntimeError: lost\n")
    trials: list[FakeTrial] = []
    for t in runs:
        trials.append(t)
        progress.on_trial_start(0, trials, t)
        t.status = "RUNNING"
        t.last_result = {"training_iteration": 1 if t is runs[2] else t.config["budget"], "val_accuracy": 0.5}
        if t is runs[2]:
            progress.on_trial_error(0, trials, t)
            t.status = "ERROR"
        else:
            progress.on_trial_complete(0, trials, t)
            t.status = "TERMINATED"
    lines = out.getvalue().splitlines()
    assert "(2/3 done, 1 running)" in lines[4], lines  # p started: still the plan's 3
    assert "in place of config c1" in lines[6] and "(2/4 done, 1 running)" in lines[6], lines
    assert "(3/4 done, 0 running)" in lines[-1], lines
