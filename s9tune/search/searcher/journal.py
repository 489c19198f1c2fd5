"""The search's Optuna studies, kept with the experiment through Optuna's public storage API.

`STORAGE/NAME/optuna.journal` is an Optuna `JournalStorage` file. It holds one study per
budget: `NAME`, the first budget's (what TPE proposes configs from and learns from: one trial
per config, its value the end of a complete first-budget schedule), and under halving
`NAME@B` for each longer budget B (one trial per promoted run). Every trial carries the Tune
trial that ran it (`tune_trial_id`), its config (`config_id`) and, for a run that took the
place of a failed one, `replaces`. optuna-dashboard reads the file as it grows:

    optuna-dashboard STORAGE/NAME/optuna.journal

A local experiment's journal is written in place by Optuna's JournalFileBackend, one
line per ask, report and tell. For a URI (s3://, gs://) the journal is a local file that is
copied to the experiment every time Tune saves its own state, so the copy there is never
older than the trials Tune would resume, and between those after a completion if the last
copy is old enough (a copy is the whole file: one per completion made the uploads grow with
the square of the trials); `--resume` copies it back first.

Before a resume opens it, the journal is checked (`check_resume`): every line must be one of
Optuna's JSON operations, except that a last line without its newline (a crash mid-write) is
trimmed, with a warning, rather than have the next operation appended to it. Anything else
damaged, or a journal that is a symbolic link, is one line and nothing is appended.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from s9tune.errors import S9Error
from s9tune.search.outcome import FINAL, run_status
from s9tune.storage import Folder

logger = logging.getLogger(__name__)

JOURNAL = "optuna.journal"
# a run's user attributes in the journal: its Tune trial, its config, the config whose failed run
# it took the place of, a rerun's seed, and the mark of a run lost with the driver
TUNE_ID, CONFIG_ATTR, REPLACES_ATTR, SEED_ATTR, LOST_ATTR = "tune_trial_id", "config_id", "replaces", "seed", "lost"
JOURNAL_MAX_BYTES = 256 * 1024 * 1024  # ~1 KB per trial and epoch: far above any search's


def _good_length(raw: bytes, where: str) -> int:
    """How much of the journal is whole: every line a JSON object with Optuna's `op_code`; a
    last line without its newline (cut short mid-write) is left out."""
    good = raw.rfind(b"\n") + 1
    for n, line in enumerate(raw[:good].split(b"\n")[:-1], 1):
        try:
            op = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or a number of thousands of digits
            op = None
        if not isinstance(op, dict) or not isinstance(op.get("op_code"), int):
            raise S9Error(f"{where}: line {n} is not an Optuna journal operation (damaged or edited)")
    return good


def _check_local(path: Path, shown_as: str) -> None:
    """Refuse a link or anything but a file, check the lines, trim a torn last line."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise S9Error(f"{shown_as}: is a symbolic link or not a file; s9tune appends only to its own journal")
    if st.st_size > JOURNAL_MAX_BYTES:
        raise S9Error(f"{shown_as}: larger than {JOURNAL_MAX_BYTES // 2**20} MiB; not a journal s9tune wrote")
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    with os.fdopen(fd, "r+b") as fh:
        raw = fh.read(JOURNAL_MAX_BYTES + 1)
        good = _good_length(raw, shown_as)
        if good < len(raw):
            fh.truncate(good)
            logger.warning(
                "%s: its last line was cut short (a crash while it was written): trimmed %d bytes",
                shown_as,
                len(raw) - good,
            )


def check_resume(folder: Folder) -> None:
    """Before a resume, with nothing started yet: the experiment's journal as `_check_local`
    checks it (for a URI, a downloaded copy; StudyStore trims its own copy)."""
    if folder.is_local:
        _check_local(Path(folder.base) / JOURNAL, f"{folder.base}/{JOURNAL}")
        return
    if not folder.exists(JOURNAL):
        return
    tmp = Path(tempfile.mkdtemp(prefix="s9tune-journal-"))
    try:
        folder.download(tmp / JOURNAL, JOURNAL)
        raw = (tmp / JOURNAL).read_bytes()[: JOURNAL_MAX_BYTES + 1]
        if len(raw) > JOURNAL_MAX_BYTES:
            raise S9Error(
                f"{folder}/{JOURNAL}: larger than {JOURNAL_MAX_BYTES // 2**20} MiB; not a journal s9tune wrote"
            )
        _good_length(raw, f"{folder}/{JOURNAL}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# what Optuna's replay raises on lines of JSON it cannot apply
_REPLAY_ERRORS = (KeyError, ValueError, TypeError, IndexError, AttributeError, AssertionError, RecursionError)


def _unreadable(shown_as: str) -> S9Error:
    return S9Error(f"{shown_as}: not an Optuna journal s9tune can read (damaged or edited)")


def _open(path: Path, shown_as: str) -> JournalStorage:
    """Optuna's storage over the journal at `path` (whose lines `_good_length` passed)."""
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except _REPLAY_ERRORS:
        raise _unreadable(shown_as) from None


@dataclass(frozen=True)
class Study:
    """One study of a journal, read back: its user attributes and its trials."""

    name: str
    attrs: dict[str, Any]
    trials: list[optuna.trial.FrozenTrial]


def read_studies(folder: Folder) -> list[Study]:
    """Every study in the experiment's journal, read without writing to the experiment: its
    bytes are read under the cap (never through a link), checked line by line, and replayed by
    Optuna from a private copy (Optuna's file backend creates the file it is given). No journal:
    no studies."""
    where = f"{folder}/{JOURNAL}"
    raw = folder.read_bytes(JOURNAL, JOURNAL_MAX_BYTES)
    if raw is None:
        return []
    good = _good_length(raw, where)
    tmp = Path(tempfile.mkdtemp(prefix="s9tune-journal-"))
    try:
        (tmp / JOURNAL).write_bytes(raw[:good])
        storage = _open(tmp / JOURNAL, where)
        try:
            return [
                Study(
                    s.study_name,
                    dict(s.user_attrs),
                    storage.get_all_trials(storage.get_study_id_from_name(s.study_name), deepcopy=False),
                )
                for s in storage.get_all_studies()
            ]
        except _REPLAY_ERRORS:
            raise _unreadable(where) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SYNC_MIN_S = 10.0  # the least time between two copies of a URI experiment's journal, unless forced


def study_name(experiment: str, budgets: tuple[int, ...], rung: int) -> str:
    """The first budget's study is named after the experiment; each longer budget's gets `@B`."""
    return experiment if rung == 0 else f"{experiment}@{budgets[rung]}"


class StudyStore:
    """Where the studies live: the journal in the experiment's folder, or memory (`folder` None: a searcher
    built on its own, as the tests and benchmarks do)."""

    def __init__(self, folder: Folder | None = None) -> None:

        self.folder = folder
        self._tmp: Path | None = None
        self._synced, self._sync_s = -float("inf"), 0.0  # when the last copy ended, how long it took
        if folder is None:
            self.storage: Any = optuna.storages.InMemoryStorage()
            return
        path = Path(folder.base) / JOURNAL
        if not folder.is_local:
            self._tmp = Path(tempfile.mkdtemp(prefix="s9tune-journal-"))  # private: 0700
            path = self._tmp / JOURNAL
            if folder.exists(JOURNAL):
                folder.download(path, JOURNAL)
        self.path = path
        try:
            _check_local(path, f"{folder}/{JOURNAL}")
            self.storage = _open(path, f"{folder}/{JOURNAL}")
        except S9Error:
            if self._tmp is not None:  # nothing is copied back
                shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def sync(self, *, force: bool = False) -> None:
        """Copy a URI experiment's journal to it (a local one is written in place): when forced,
        else if the last copy is SYNC_MIN_S old and 19 times as old as it took (at most 5% of
        the driver's time goes to copies, as Tune paces its own state)."""
        if self._tmp is None or self.folder is None:
            return
        now = time.monotonic()
        if not force and now - self._synced < max(SYNC_MIN_S, 19 * self._sync_s):
            return
        try:
            self.folder.upload(self._tmp)  # the folder holds the journal alone
        except S9Error as exc:  # the next sync tries again; the run itself is unharmed
            logger.warning("could not copy the Optuna journal to the experiment: %s", exc)
        self._synced = time.monotonic()
        self._sync_s = self._synced - now

    def curves(self, study: str, key: str) -> dict[str, list[tuple[int, float]]]:
        """The reported (step, value) of each of the study's trials, in step order, by its user
        attribute `key` (a trial reported again after a failure: its last)."""
        trials = self.storage.get_all_trials(self.storage.get_study_id_from_name(study), deepcopy=False)
        return {t.user_attrs[key]: sorted(t.intermediate_values.items()) for t in trials if key in t.user_attrs}

    def close(self) -> None:
        self.sync(force=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def open_study(store: StudyStore, name: str, *, seed: int, startup: int, maximize: bool, attrs: dict[str, Any]) -> Any:
    """The study `name` on `store`, created on first use, with TPE after `startup` random
    configs. TPE is seeded from `seed` and from how many trials the study already holds, so a
    resumed search does not draw again the random start-up points it drew before the
    interruption."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        known = optuna.load_study(study_name=name, storage=store.storage)
        done = len(known.get_trials(deepcopy=False))
    except KeyError:
        done = None
    sampler = optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed + (done or 0))
    study = optuna.create_study(
        study_name=name,
        storage=store.storage,
        sampler=sampler,
        direction="maximize" if maximize else "minimize",
        load_if_exists=True,
    )
    if done is None:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
    return study


def _trial_id(store: StudyStore, name: str, number: int) -> int:
    storage = store.storage
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)


def report(store: StudyStore, name: str, number: int, *, step: int, value: float) -> None:
    """An intermediate value of a running trial, by its number: a run started before a resume
    has no trial object in this process, so this goes through the storage's public API."""
    store.storage.set_trial_intermediate_value(_trial_id(store, name, number), step, value)


def set_attr(store: StudyStore, name: str, number: int, key: str, value: Any) -> None:
    """A user attribute on a running trial, by its number (as `report`)."""
    store.storage.set_trial_user_attr(_trial_id(store, name, number), key, value)


def add_running(study: Any, dists: dict[str, Any], params: dict[str, Any], attrs: dict[str, Any]) -> int:
    """A running trial with these values and user attributes in `study`, in one write (a
    trial the study did not ask for: a promotion, a rerun, an adopted run); its number."""
    number = len(study.get_trials(deepcopy=False))
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=dists, state=optuna.trial.TrialState.RUNNING, user_attrs=attrs
        )
    )
    return number


@dataclass(frozen=True)
class JournalRun:
    """A run as the journal holds it, for a restarted searcher."""

    number: int
    attrs: dict[str, Any]
    params: dict[str, Any]
    state: Literal["running", "complete", "pruned", "failed"]
    value: float | None


def journal_runs(study: Any, *, needs: tuple[str, ...]) -> Iterator[JournalRun]:
    """The study's runs in number order (a rerun after its failure comes later), as a restarted
    searcher rebuilds its state from them: waiting ones and ones lost with the driver left out;
    one asked for but never handed to Tune (an attribute of `needs` missing: the driver died
    between the ask and the start) is failed in the journal now and left out too."""
    state = optuna.trial.TrialState
    words = {state.RUNNING: "running", state.COMPLETE: "complete", state.PRUNED: "pruned"}
    for t in study.get_trials(deepcopy=False):
        if t.state == state.WAITING or t.user_attrs.get(LOST_ATTR):
            continue
        if any(t.user_attrs.get(k) is None for k in needs):
            if t.state == state.RUNNING:
                study.tell(t.number, state=state.FAIL)
            continue
        yield JournalRun(t.number, dict(t.user_attrs), dict(t.params), words.get(t.state, "failed"), t.value)


def lose_run(store: StudyStore, study: Any, name: str, number: int) -> None:
    """A running run the journal has but Tune lost in a crash: marked lost and failed, so that no
    later rebuild counts it."""
    set_attr(store, name, number, LOST_ATTR, True)
    study.tell(number, state=optuna.trial.TrialState.FAIL)


def run_value(result: dict | None, metric: str, *, budget: int) -> tuple[float | None, bool]:
    """(its last value, whether it finished) for a run's last result: a run finished if it
    reached the end of its `budget`-epoch schedule, or diverged (a verdict on the config,
    valued at its reported worst). A failed run has no result, so no value."""
    value = None if not result or metric not in result else float(result[metric])
    epochs = int(result.get("training_iteration", 0)) if result else 0
    status = run_status(epochs, budget, diverged=bool(result and result.get("diverged")), stopped=False, failed=False)
    done = value is not None and status in FINAL
    return value, done
