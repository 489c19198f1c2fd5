"""The search's Optuna studies, kept with the experiment through Optuna's public storage API.

`STORAGE/NAME/optuna.journal` is an Optuna `JournalStorage` file. It holds one study per
budget: `NAME`, the first budget's (what TPE proposes configs from and learns from: one trial
per config, its value the end of a complete first-budget schedule), and under halving
`NAME@B` for each longer budget B (one trial per promoted run). Every trial carries the Tune
trial that ran it (`tune_trial_id`), its config (`config_id`) and, for a run that took the
place of a failed one, `replaces`. optuna-dashboard reads the file as it grows:

    optuna-dashboard STORAGE/NAME/optuna.journal

A local experiment's journal is written in place, one line per ask, report and tell; every line
but a report (a run's value at one epoch: its curve) is synced to disk before the search goes
on, so a crash never loses what a resume relies on. For a URI (s3://, gs://) the journal is a
local file that is copied to the experiment every time Tune saves its own state, so the copy
there is never older than the trials Tune would resume, and between those after a completion
if the last copy is old enough (a copy is the whole file: one per completion made the uploads
grow with the square of the trials); `--resume` copies it back first.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend

from s9tune.errors import S9Error
from s9tune.storage import Folder

logger = logging.getLogger(__name__)

JOURNAL = "optuna.journal"
SYNC_MIN_S = 10.0  # the least time between two copies of a URI experiment's journal, unless forced


def study_name(experiment: str, budgets: tuple[int, ...], rung: int) -> str:
    """The first budget's study is named after the experiment; each longer budget's gets `@B`."""
    return experiment if rung == 0 else f"{experiment}@{budgets[rung]}"


class StudyStore:
    """Where the studies live: the journal in the experiment's folder, or memory (`folder` None: a searcher
    built on its own, as the tests and benchmarks do)."""

    def __init__(self, folder: Folder | None = None) -> None:
        import optuna

        self.folder = folder
        self._tmp: Path | None = None
        self._synced, self._sync_s = -float("inf"), 0.0  # when the last copy ended, how long it took
        if folder is None:
            self.storage: Any = optuna.storages.InMemoryStorage()
            return
        from optuna.storages import JournalStorage

        path = Path(folder.base) / JOURNAL
        if not folder.is_local:
            self._tmp = Path(tempfile.mkdtemp(prefix="s9tune-journal-"))  # private: 0700
            path = self._tmp / JOURNAL
            if folder.exists(JOURNAL):
                folder.download(path, JOURNAL)
        self.path = path
        self.storage = JournalStorage(JournalFile(str(path)))

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


class JournalFile(BaseJournalBackend):
    """Optuna's journal file, except that a run's value at an epoch is appended without a disk
    sync: at every epoch of every run, the sync (milliseconds on a busy disk) was most of the
    driver's time per result. Everything else (asks, tells, attributes) goes through Optuna's
    own backend, locked and synced, and its sync covers the reports written before it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = JournalFileBackend(path)

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        return self.file.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not all("intermediate_value" in log for log in logs):
            self.file.append_logs(logs)
            return
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        with open(self.path, "ab") as fh:  # one write of whole lines: a reader never sees half of one
            fh.write(text.encode("utf-8"))


def open_study(store: StudyStore, name: str, *, seed: int, startup: int, maximize: bool, attrs: dict[str, Any]) -> Any:
    """The study `name` on `store`, created on first use, with TPE after `startup` random
    configs. TPE is seeded from `seed` and from how many trials the study already holds, so a
    resumed search does not draw again the random start-up points it drew before the
    interruption."""
    import optuna

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
    import optuna

    number = len(study.get_trials(deepcopy=False))
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=dists, state=optuna.trial.TrialState.RUNNING, user_attrs=attrs
        )
    )
    return number


def run_value(result: dict | None, metric: str, *, budget: int) -> tuple[float | None, bool]:
    """(its last value, whether it finished) for a run's last result: a run finished if it
    reached the end of its `budget`-epoch schedule, or diverged (a verdict on the config,
    valued at its reported worst). A failed run has no result, so no value."""
    value = None if not result or metric not in result else float(result[metric])
    done = value is not None and (int(result.get("training_iteration", 0)) >= budget or bool(result.get("diverged")))
    return value, done
