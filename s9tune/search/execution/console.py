"""What a search shows on the console while it runs, built on Tune's callback API.

On a terminal: one compact live view (rich) of trials done, running and pending, epochs done
of those planned, the best value so far and its config, an ETA, and errors. Elsewhere (a log,
CI, a pipe): one line per trial event, so the output stays short and greppable; for a search
of more than EVENT_LINES_MAX_TRIALS trials, a line per 5% of its trials ended instead, with the
first NOTABLE_MAX errors, retries and divergences, and a last line that counts what was not
shown: at most MAX_LINES lines, whatever the search's size.

Counts are recomputed from Tune's own trial list rather than kept as state, so a resumed search
shows the restored trials correctly from its first line. That walks every trial, so it is done
only for a line to print, and for the live view at most every REFRESH_S seconds (and no more
often than keeps it to 5% of the time): at every event it made the console's cost grow with
the square of the trials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from s9tune.errors import printable
from s9tune.search.outcome import RunStatus, run_status
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, METRIC, REPLACES_KEY, SEED_KEY

EVENT_LINES_MAX_TRIALS = 24  # up to this many planned trials, a line per trial event
MAX_LINES = 60  # the most lines a search prints when not on a terminal
PROGRESS_LINES = 20  # above EVENT_LINES_MAX_TRIALS: a line per 1/20 of the planned trials ended
NOTABLE_MAX = 20  # ... and the first this many errors, retries, divergences and stand-ins
REFRESH_S = 0.5  # the live view's counts at most this often (rich redraws twice a second)


@dataclass(frozen=True)
class Plan:
    name: str
    trials: int  # Tune trials the search will create (configs under ASHA, runs under halving)
    epochs: int  # epochs those trials would train: exact under halving, an upper bound under ASHA
    exact: bool
    max_t: int  # schedule length of a trial without a budget of its own
    searched: tuple[str, ...]


def _budget(trial: Any, plan: Plan) -> int:
    return int(trial.config.get(BUDGET_KEY, plan.max_t))


def _epochs(trial: Any) -> int:
    return int((trial.last_result or {}).get("training_iteration", 0) or 0)


def _params(trial: Any, plan: Plan) -> str:
    """A trial's config in words; every value escaped (printable), since a resumed search
    shows configs restored from the experiment's files."""
    parts = [
        f"{k} {trial.config[k]:.3g}" if isinstance(trial.config.get(k), float) else f"{k} {trial.config.get(k)}"
        for k in plan.searched
    ]
    budget, cid, replaces = (trial.config.get(k) for k in (BUDGET_KEY, CONFIG_KEY, REPLACES_KEY))
    run = f" ({budget}-epoch schedule, config {cid})" if budget else ""
    if replaces:
        run += f", promoted in place of config {replaces}, whose {budget}-epoch run failed"
    if trial.config.get(SEED_KEY) is not None:  # under ASHA a config is known by its trial's id
        run = f" (rerun of {'config' if budget else 'trial'} {cid} with seed {trial.config[SEED_KEY]})"
    return printable(", ".join(parts) + run)


def outcome(trial: Any, plan: Plan) -> RunStatus:
    """completed | stopped | diverged, from a finished trial's last result."""
    last = trial.last_result or {}
    return run_status(
        _epochs(trial), _budget(trial, plan), diverged=bool(last.get("diverged")), stopped=True, failed=False
    )


@dataclass
class Snapshot:
    total: int  # the plan's trials, plus one for each promoted run that replaces a failed one
    planned_epochs: int  # the plan's epochs, plus each replacement's
    done: int
    running: int
    pending: int
    errors: int
    epochs: int
    best: tuple[float, Any] | None  # (value, trial): the end of a complete schedule, longest first
    elapsed: float
    eta: float | None


def snapshot(trials: list[Any], plan: Plan, started: float, now: dict[str, str] | None = None) -> Snapshot:
    """`now`: statuses Tune sets only after its hook ran (trial id -> status)."""
    status = [(now or {}).get(t.trial_id, t.status) for t in trials]
    done = status.count("TERMINATED")
    epochs = sum(_epochs(t) for t in trials)
    complete = [
        t for t, st in zip(trials, status, strict=True) if st == "TERMINATED" and outcome(t, plan) == "completed"
    ]
    best = None
    if complete:
        t = max(complete, key=lambda t: (_budget(t, plan), float(t.last_result.get(METRIC, 0.0))))
        best = (float(t.last_result.get(METRIC, 0.0)), t)
    replacements = [t for t in trials if t.config.get(REPLACES_KEY)]
    total = plan.trials + len(replacements)
    planned_epochs = plan.epochs + sum(_budget(t, plan) for t in replacements)
    elapsed = time.monotonic() - started
    eta = max(0, planned_epochs - epochs) * elapsed / epochs if epochs else None
    return Snapshot(
        total,
        planned_epochs,
        done,
        status.count("RUNNING"),
        max(0, total - len(trials)) + status.count("PENDING"),
        status.count("ERROR"),
        epochs,
        best,
        elapsed,
        eta,
    )


def _clock(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(max(0.0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class SearchProgress(Callback):
    """Tune callback that keeps the console up to date; `live` selects the terminal view."""

    def __init__(self, plan: Plan, stream: TextIO, live: bool) -> None:
        self.plan, self.stream = plan, stream
        self.started = time.monotonic()
        self.summary = not live and plan.trials > EVENT_LINES_MAX_TRIALS
        self.lines = self.notable = self.hidden = 0
        self.ended: int | None = None  # trials ended (done or failed for good), once counted
        self.marks = 0  # progress lines printed
        self._refreshed, self._refresh_s = -math.inf, 0.0  # the live view's last refresh, its cost
        self._live: Any = None
        if live:
            self._console = Console(file=stream)
            self._live = Live(console=self._console, refresh_per_second=2, transient=False)

    def __getstate__(self) -> dict[str, Any]:
        # a pickled copy (tune.run pickles its arguments when it runs on a remote driver) must
        # not write to this process's console
        return {**self.__dict__, "stream": None, "_live": None, "_console": None}

    # -- Tune's hooks ----------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(trials, trial, "started", f"started: {_params(trial, self.plan)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self._live is not None and self._due():
            self._refresh(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        kind = outcome(trial, self.plan)
        what = {
            "completed": f"finished: {100 * float(last.get(METRIC, 0)):.2f}% val after {_epochs(trial)} epochs",
            "stopped": f"stopped by ASHA at epoch {_epochs(trial)}: {100 * float(last.get(METRIC, 0)):.2f}% val",
            "diverged": f"diverged (non-finite loss) in epoch {_epochs(trial)}",
        }[kind]
        self._event(trials, trial, kind, what)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(trials, trial, "retry", "failed; retrying from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(trials, trial, "error", f"error: {error_line(trial)}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._live is not None:
            self._refresh(trials)
            self._live.stop()
            self._live = None
        elif self.stream is not None and (self.summary or self.hidden):
            self._progress(trials, None, "search ended: ", force=True)

    # -- rendering -------------------------------------------------------------------
    def _event(self, trials: list, trial: Any, kind: str, what: str) -> None:
        if self.stream is None:
            return
        now = {"started": "RUNNING", "error": "ERROR", "retry": "PENDING"}.get(kind, "TERMINATED")
        notable = kind in ("error", "retry", "diverged")
        if self._live is not None:
            if notable:
                self._console.print(
                    Text(f"trial {printable(trial.trial_id)} {what}")
                )  # kept above the live view; Text: no markup read from a trial
            if notable or self._due():
                self._refresh(trials, {trial.trial_id: now})
            return
        if self.summary:
            self._summarize(trials, trial, what, now, notable=notable or bool(trial.config.get(REPLACES_KEY)))
        else:
            self._line(trials, trial, what, now)

    def _line(self, trials: list, trial: Any, what: str, now: str) -> None:
        snap = snapshot(trials, self.plan, self.started, {trial.trial_id: now})
        self._write(
            f"trial {printable(trial.trial_id)} {what}  ({snap.done}/{snap.total} done, {snap.running} running)", snap
        )

    def _summarize(self, trials: list, trial: Any, what: str, now: str, *, notable: bool) -> None:
        """A large search: a line for the first notable events, then one per 1/20 of the plan."""
        if self.ended is None:  # the first event (of a resumed search too): walk the trials once
            self.ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
            self._write(
                f"search {self.plan.name}: {self.plan.trials} trials planned; not a terminal, so one line "
                f"per {100 // PROGRESS_LINES}% of them ended and the first {NOTABLE_MAX} errors, retries and "
                "divergences"
            )
        if now in ("TERMINATED", "ERROR"):
            self.ended += 1
        if notable and self.notable < NOTABLE_MAX:
            self.notable += 1
            self._line(trials, trial, what, now)
        elif notable:
            self.hidden += 1
        step = max(1, math.ceil(self.plan.trials / PROGRESS_LINES))
        if self.marks < PROGRESS_LINES and self.ended >= step * (self.marks + 1):
            self.marks = self.ended // step
            self._progress(trials, {trial.trial_id: now}, "")

    def _progress(self, trials: list, now: dict[str, str] | None, head: str, force: bool = False) -> None:
        s = snapshot(trials, self.plan, self.started, now)
        best = f"; best {100 * s.best[0]:.2f}% val (trial {printable(s.best[1].trial_id)})" if s.best else ""
        more = f"; {self.hidden} more events not shown (results and search.log have them)" if self.hidden else ""
        bound = "" if self.plan.exact else "≤ "
        self._write(
            f"{head}{s.done}/{s.total} trials done, {s.running} running, {s.pending} pending, "
            f"{s.errors} errors{best}; ETA {bound}{_clock(s.eta)}{more}",
            s,
            force=force,
        )

    def _write(self, text: str, snap: Snapshot | None = None, force: bool = False) -> None:
        if self.lines >= MAX_LINES - 1 and not force:  # the last line is kept for what was not shown
            self.hidden += 1
            return
        elapsed = snap.elapsed if snap is not None else time.monotonic() - self.started
        self.stream.write(f"[{_clock(elapsed):>7}] {text}\n")
        self.stream.flush()
        self.lines += 1

    def _due(self) -> bool:
        """Whether the live view's counts may be refreshed: REFRESH_S since the last, and 19
        times what that one cost (at most 5% of the driver's time, as Tune paces its state)."""
        return time.monotonic() - self._refreshed >= max(REFRESH_S, 19 * self._refresh_s)

    def _refresh(self, trials: list, now: dict[str, str] | None = None) -> None:
        if not self._live.is_started:
            self._live.start()
        t0 = time.monotonic()
        s = snapshot(trials, self.plan, self.started, now)
        bound = "" if self.plan.exact else "≤ "
        lines = [
            f"search {self.plan.name}   {_clock(s.elapsed)} elapsed   ETA {bound}{_clock(s.eta)}",
            f"trials  {s.done} done · {s.running} running · {s.pending} pending · {s.errors} errors",
            f"epochs  {s.epochs} / {bound}{s.planned_epochs}",
            "best    "
            + (
                f"{100 * s.best[0]:.2f}% val  {_params(s.best[1], self.plan)}  [{printable(s.best[1].trial_id)}]"
                if s.best
                else "- (no schedule complete yet)"
            ),
        ]
        self._live.update(Text("\n".join(lines)))
        self._refreshed = time.monotonic()
        self._refresh_s = self._refreshed - t0


def error_line(trial: Any) -> str:
    """The last line of a failed trial's error file: the exception."""
    try:
        text = Path(trial.error_file).read_text(encoding="utf-8").strip() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    return printable(lines[-1][:200]) if lines else "see the trial's error.txt"


# -- retrain: one line per seed event -----------------------------------------------------
SEED_STARTED = "started"  # the `event` of a seed's first report (and of each restart)
SEED_FINISHED = "finished"  # ... and of its last, with the test scores
PROGRESS_EVERY_S = 5.0


class SeedProgress(Callback):
    """Tune callback for `retrain`: a line when a seed starts (and on which node, and from which
    epoch after a restart), its epochs at most every `every_s` seconds, its end with the test
    accuracy, and each failure."""

    def __init__(
        self,
        epochs: int,
        stream: TextIO,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epochs, self.stream, self.every_s, self.clock = epochs, stream, every_s, clock
        self.started = clock()
        self._last: dict[str, float] = {}  # trial id -> when its last line was written

    def __getstate__(self) -> dict[str, Any]:
        # stored with the experiment: silent there; a resumed retrain attaches its own console
        return {**self.__dict__, "stream": None, "clock": time.monotonic}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        event, epoch = result.get("event"), int(result.get("epoch", 0) or 0)
        if event == SEED_STARTED:
            cont = f", continuing after epoch {epoch}" if epoch else ""
            self._line(trial, f"started on node {result.get('node', '?')}{cont}")
        elif event == SEED_FINISHED:
            self._line(trial, _seed_end(result))
        elif self.clock() - self._last.get(trial.trial_id, -math.inf) >= self.every_s and epoch < self.epochs:
            acc = float(result.get("eval_accuracy", math.nan))
            split = result.get("eval_split", "test")
            speed = float(result.get("images_per_s", 0.0))
            self._line(trial, f"epoch {epoch}/{self.epochs}: {100 * acc:.2f}% {split}, {speed:.0f} images/s")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        node = (trial.last_result or {}).get("node", "?")
        self._line(trial, f"failed on node {node}; retrying from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, f"failed for good: {error_line(trial)}")

    def _line(self, trial: Any, what: str) -> None:
        self._last[trial.trial_id] = self.clock()
        if self.stream is None:
            return
        seed = trial.config.get("seed", "?")
        self.stream.write(printable(f"[{_clock(self.clock() - self.started):>7}] seed {seed} {what}") + "\n")
        self.stream.flush()


def _seed_end(result: dict) -> str:
    if result.get("status") == "diverged":
        return f"diverged (non-finite loss) in epoch {int(result.get('epoch', 0)) + 1}"
    acc = float(result.get("test_accuracy", math.nan))
    score = f" ({result['test_correct']}/{result['test_images']})" if "test_correct" in result else ""
    return f"finished: {100 * acc:.2f}% test{score} after {int(result.get('epoch', 0))} epochs"
