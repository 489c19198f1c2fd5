"""A Tune experiment read from its trial folders' plain files, executing nothing.

Tune keeps its own state (the entries of experiment_state-*.json, tuner.pkl, each
trial's params.pkl and error.pkl) as cloudpickled objects, so loading it runs whatever code the
files name: opening an experiment someone else wrote would run theirs. This module reads only
what Tune writes for people to read, in each trial folder:

    params.json   the trial's config            result.json  one JSON row per report
    error.txt     "Failure # N (occurred at DATE)" and the traceback, once per failure

and never opens a .pkl or Tune's state. A trial's status then follows from those files
(`trial_status`); the rule is checked against Tune's own statuses in tests/test_search.py.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from s9tune.config import LIMITS
from s9tune.errors import ConfigError, S9Error, shown
from s9tune.search.execution.ray_compat import tune_state
from s9tune.search.experiment.trials import TrialRow
from s9tune.search.outcome import RunStatus, run_status
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, METRIC, REPLACES_KEY, RUN_KEYS, SEED_KEY

if TYPE_CHECKING:
    from s9tune.search.space.space import SearchSpace

logger = logging.getLogger(__name__)

PARAMS = "params.json"
RESULT = "result.json"
ERROR = "error.txt"
# What is read is capped, per file and in all, so that a planted experiment cannot make
# `results` or `retrain` read (and hold) gigabytes. A 24-epoch trial writes ~30 KB of
# result.json (about 1 KB a row); the caps sit far above any run s9tune's limits allow.
MAX_BYTES = 64 * 1024 * 1024  # Tune's experiment state (--resume), which grows with the trials
CAPS = {PARAMS: 1024 * 1024, RESULT: 16 * 1024 * 1024, ERROR: 8 * 1024 * 1024}
TOTAL_MAX_BYTES = 2 * 1024**3  # every trial file of one experiment together
MAX_ROWS = 20 * LIMITS["epochs"]  # one row per epoch; a restored trial repeats a few
MAX_FAILURE_DIGITS = 9
# of a result.json row, what the statuses and the leaderboard read: a row is kept this small
ROW_KEYS = ("trial_id", "training_iteration", METRIC, "diverged", "done", "date", "time_total_s")
# a Tune trial id, a config id (c12, c12+) or the one a stand-in replaces: nothing a shell, a
# spreadsheet or a terminal would read as anything but a name
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_FAILURE = re.compile(r"^Failure # (\d+) \(occurred at ([0-9_-]+)\)", re.MULTILINE)
# Tune names a trial folder TRAINABLE_TRIALID_INDEX_...; the id is 8 hex digits (a searcher's
# trials) or 5 hex digits and a 5-digit counter (Tune's own variant generator)
_DIRNAME = re.compile(r"_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_(\d+)(?:_|$)")


class Files(Protocol):
    """What the reader needs of the storage (search/experiment.ExperimentRef provides it)."""

    path: str

    def list_dirs(self) -> list[str]: ...

    def read_text(self, relpath: str, limit: int) -> str | None: ...


@dataclass
class TrialFiles:
    trial_id: str
    index: int  # Tune's creation order
    params: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0  # the highest "Failure # N" in error.txt
    last_failure: str = ""  # its date, Tune's date_str format (sorts as text)
    folder: str = ""  # its folder's name in the experiment


class _Reader:
    """The experiment's files, each read under its cap and all of them under TOTAL_MAX_BYTES."""

    def __init__(self, files: Files) -> None:
        self.files, self.left = files, TOTAL_MAX_BYTES

    def text(self, relpath: str) -> str | None:
        text = self.files.read_text(relpath, CAPS[relpath.rsplit("/", 1)[-1]])
        if text is None:
            return None
        self.left -= len(text)
        if self.left < 0:
            raise S9Error(
                f"{self.files.path}: its trial files hold more than {TOTAL_MAX_BYTES // 2**20:,} MiB in all "
                "(the cap on what s9tune reads of one experiment); not an experiment s9tune or Tune wrote"
            )
        return text


def read_trials(files: Files) -> list[TrialFiles]:
    """Every trial folder (one that holds params.json), in the order Tune created them."""
    trials = []
    reader = _Reader(files)
    for name in files.list_dirs():
        text = reader.text(f"{name}/{PARAMS}")
        rows = _rows(files, f"{name}/{RESULT}", reader.text(f"{name}/{RESULT}"))
        try:
            params = None if text is None else json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError, or an integer too long to convert
            # A driver killed while Tune wrote a new trial's params.json, or while it copied the
            # staging folder (which truncates each file before writing it: an empty params.json
            # beside a whole result.json), leaves what the trial's own files cannot show. Its
            # state is Tune's to restore, a finished run's end the journal's
            # (search/experiment/journal_rows.py). Anything else that does not parse beside
            # results is damage: one line.
            if rows and text.strip():
                raise _not_json(files, f"{name}/{PARAMS}") from None
            logger.warning("%s/%s/%s: empty or cut short (a killed driver); left out", files.path, name, PARAMS)
            continue
        if params is None:
            continue
        if not isinstance(params, dict):
            raise S9Error(f"{files.path}/{name}/{PARAMS}: not a mapping of parameters")
        match = _DIRNAME.search(name)
        trial_id = str(rows[0].get("trial_id")) if rows and rows[0].get("trial_id") else None
        if trial_id is None:
            trial_id = match.group(1) if match else name
        if not ID_PATTERN.fullmatch(trial_id):
            raise S9Error(f"{files.path}/{name}/{RESULT}: trial_id {shown(trial_id)} is not a Tune trial id")
        failures, last = _failures(files, f"{name}/{ERROR}", reader.text(f"{name}/{ERROR}"))
        index = int(match.group(2)) if match else len(trials)
        trials.append(TrialFiles(trial_id, index, params, rows, failures, last, name))
    return sorted(trials, key=lambda t: t.index)


def check_trial(t: TrialFiles, space: SearchSpace, path: str) -> None:
    """A trial's params.json against the experiment's record: the searched values inside their
    recorded distributions and valid TrainConfig values, a budget the scheduler has, ids that are
    names, a rerun's seed one the re-evaluation gives. One line naming the file and the field."""
    where = f"{path}/{t.folder}/{PARAMS}"
    try:
        space.check_params(t.params, where)
    except ConfigError as exc:
        raise S9Error(str(exc)) from None
    budgets = space.scheduler.budgets or (space.max_t,)
    budget = t.params.get(BUDGET_KEY, space.max_t)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget not in budgets:
        raise S9Error(f"{where}: {BUDGET_KEY} {shown(budget)} is not a budget of this search {list(budgets)}")
    for key in (CONFIG_KEY, REPLACES_KEY):
        value = t.params.get(key)
        if value is not None and not (isinstance(value, str) and (ID_PATTERN.fullmatch(value) or value == "")):
            raise S9Error(f"{where}: {key} {shown(value)} is not a config id")
    if SEED_KEY in t.params:
        seed = t.params[SEED_KEY]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed not in space.rerun_seeds:
            raise S9Error(f"{where}: {SEED_KEY} {shown(seed)} is not a seed of this search's reruns")


def trial_status(t: TrialFiles, budget: int, max_failures: int) -> RunStatus:
    """completed | stopped | diverged | error | unfinished, from the trial's files alone.

    diverged: a row says diverged=1. completed: it reported the last epoch of its schedule.
    stopped: its last row says done, which Tune writes only when a scheduler or stopper ends a
    trial early (ASHA). error: error.txt records more failures than `max_failures` retries allow
    (Tune's rule) and no row came after the last one. Anything else is unfinished: running, or
    waiting for a retry or a start, when the driver stopped. Dates are compared as Tune writes
    them (local time of the machine that wrote them; one cluster shares its time zone).
    """
    last_row = str(t.rows[-1].get("date", "")) if t.rows else ""
    return run_status(
        reached_epoch(t.rows),
        budget,
        diverged=any(_number(r.get("diverged")) > 0 for r in t.rows),
        stopped=bool(t.rows) and t.rows[-1].get("done") is True,
        failed=t.failures > max_failures and t.last_failure >= last_row,
    )


def trial_row(t: TrialFiles, searched: list[str], max_t: int, max_failures: int) -> TrialRow:
    budget = int(t.params.get(BUDGET_KEY, max_t))
    # a restored trial reports the epochs after its last checkpoint again: the later row of an
    # epoch is the one its final weights went through
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in t.rows:
        it = r.get("training_iteration")
        if isinstance(it, int) and not r.get("diverged"):
            by_epoch[it] = r
    kept = [by_epoch[k] for k in sorted(by_epoch)]
    hist = [float(r[METRIC]) for r in kept if _finite(r.get(METRIC))]
    times = [float(r["time_total_s"]) for r in t.rows if _finite(r.get("time_total_s"))]
    return TrialRow(
        trial_id=t.trial_id,
        config={k: t.params.get(k) for k in searched},
        status=trial_status(t, budget, max_failures),
        # the epoch reached, not the rows: rows of the epochs before a checkpoint can be missing
        # where the driver was killed before it uploaded them (cloud storage)
        epochs=max(by_epoch, default=0),
        best_val_accuracy=max(hist) if hist else None,
        last_val_accuracy=hist[-1] if hist else None,
        time_s=max(times, default=0.0),
        history=hist,
        config_id=str(t.params.get(CONFIG_KEY, t.trial_id)),
        budget=budget,
        replaces=str(t.params.get(REPLACES_KEY) or ""),
        seed=int(t.params[SEED_KEY]) if isinstance(t.params.get(SEED_KEY), int) else None,
    )


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(_float(v))


def _float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # an integer of hundreds of digits
        return math.inf


def reached_epoch(rows: list[dict[str, Any]]) -> int:
    its = [int(_number(r.get("training_iteration"))) for r in rows if _number(r.get("diverged")) == 0]
    return max(its, default=0)


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(_float(v)):
        return 0.0
    return float(v)


def _not_json(files: Files, relpath: str) -> S9Error:
    return S9Error(f"{files.path}/{relpath}: not valid JSON")


def _json(files: Files, relpath: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, or an integer too long to convert
        raise _not_json(files, relpath) from None


def _rows(files: Files, relpath: str, text: str | None) -> list[dict[str, Any]]:
    """result.json's rows, each cut to ROW_KEYS as it is read (memory grows with the rows kept,
    not with what a row holds); a line cut short by a killed driver is skipped."""
    rows, skipped = [], 0
    for n, line in enumerate(io.StringIO(text or ""), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            skipped += 1
            continue
        if not isinstance(row, dict):
            continue
        it = row.get("training_iteration")
        if it is not None and (not isinstance(it, int) or isinstance(it, bool) or not 0 <= it <= LIMITS["epochs"]):
            raise S9Error(
                f"{files.path}/{relpath} line {n}: training_iteration {shown(it)} is not an epoch "
                f"(0 to {LIMITS['epochs']:,}); not a file Tune wrote"
            )
        rows.append({k: row[k] for k in ROW_KEYS if k in row})
        if len(rows) > MAX_ROWS:
            raise S9Error(
                f"{files.path}/{relpath}: more than {MAX_ROWS:,} rows (one per epoch, at most "
                f"{LIMITS['epochs']:,} epochs); not a file Tune wrote"
            )
    if skipped:
        logger.warning("%s/%s: %d line(s) not JSON, skipped", files.path, relpath, skipped)
    return rows


def _failures(files: Files, relpath: str, text: str | None) -> tuple[int, str]:
    found = []
    for n, date in _FAILURE.findall(text or ""):
        if len(n) > MAX_FAILURE_DIGITS:
            raise S9Error(f"{files.path}/{relpath}: 'Failure # {n[:12]}...' is not a count of failures")
        found.append((int(n), date))
    return max(found, default=(0, ""))


def check_resumable(files: Files, record: dict[str, Any], searched: set[str]) -> None:
    """Refuse to resume unless Tune's state and s9tune's record describe the same search.

    Resuming means tune.run(resume=...), which unpickles Tune's state: that is why s9tune resumes only
    experiments the user trusts (README, --help). This check catches the honest mistakes: a
    folder that is not an s9tune search, a record from another search copied in, Tune's state
    missing. It reads Tune's newest experiment_state-*.json as plain JSON (its pickled entries
    stay inert text) and every trial folder's params.json, and requires: the metric s9tune
    searches, the s9tune trainable, and exactly the record's searched keys in every trial.
    """
    states = sorted(n for n in files.list_files() if n.startswith("experiment_state-") and n.endswith(".json"))
    if not states:
        raise S9Error(f"{files.path}: holds no Tune state to resume (experiment_state-*.json)")
    try:
        state = tune_state(_json(files, states[-1], files.read_text(states[-1], MAX_BYTES)))
    except ValueError as exc:
        raise S9Error(f"{files.path}/{states[-1]}: not a Tune experiment state this s9tune knows ({exc})") from None
    if state.metric != record.get("metric"):
        raise S9Error(f"{files.path}: Tune's state optimises {state.metric!r}, not {record.get('metric')!r}")
    if any(name != "train_trial" for name, _ in state.trials):
        raise S9Error(f"{files.path}: a trial in Tune's state is not an s9tune trial")
    configs = [config for _, config in state.trials]
    configs += [t.params for t in read_trials(files)]
    halving = record.get("scheduler", {}).get("type") == "halving"
    # a halving run's config adds its budget and config id (and, for a stand-in, whom it replaces)
    needed, allowed = (
        (searched | {BUDGET_KEY, CONFIG_KEY}, searched | set(RUN_KEYS)) if halving else (searched, searched)
    )
    # a re-evaluation run's config adds its config id and seed
    rerun = (needed | {CONFIG_KEY, SEED_KEY}, allowed | {CONFIG_KEY, SEED_KEY})
    for config in configs:
        need, allow = rerun if isinstance(config, dict) and SEED_KEY in config else (needed, allowed)
        if not isinstance(config, dict) or not need <= set(config) <= allow:
            keys = sorted(config) if isinstance(config, dict) else config
            raise S9Error(
                f"{files.path}: a trial's parameters {keys} do not match s9tune's record "
                f"({sorted(needed)}); not resuming a search the record does not describe"
            )
