"""What the scale benchmark (scale.py) reads back from a finished experiment: whether any run
was lost, repeated or wrongly promoted, how long `s9tune results` and a TensorBoard server's
HParams listing take, the sizes of the journal and the event files, and the projection to
10,000 configs on 2,500 slots.

Wrongly promoted, under ASHA: the rule an uninterrupted ASHA applies is replayed over the
values its first rung saw, in the order the driver saw them (the journal's order: the searcher
writes each reported value as Tune hands it over, after ASHA's decision on it). A run that went
past the rung although its value was under the cutoff of the values before it was wrongly
promoted; one stopped although it was not under it, wrongly stopped. A search that was never
interrupted must show none of either (the benchmark checks that too). Under re-evaluation, a
rerun of a config outside the top `top` complete values counts as wrongly promoted as well.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FINISHED = ("completed", "stopped", "diverged")
# at 4 trials per H200, 441 six-epoch runs per GPU-hour (RESULTS.md, "GPU figures"): 33 s per
# run and slot, 5.5 s per epoch
EPOCH_S_ON_GPU = 33.0 / 6


def count_lines(path: Path) -> int:
    try:
        return Path(path).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def event_bytes(exp: Path) -> int:
    return sum(f.stat().st_size for f in exp.glob("*/events.out.tfevents*"))


def _journal_order(exp: Path, grace: int) -> list[tuple[str, float]]:
    """(Tune trial id, value) of each run's first value at epoch `grace`, in journal order."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = exp / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(path)))
    tune_id: dict[int, str] = {}
    for study in storage.get_all_studies():
        sid = storage.get_study_id_from_name(study.study_name)
        for t in storage.get_all_trials(sid, deepcopy=False):
            if "tune_trial_id" in t.user_attrs and "seed" not in t.user_attrs:
                tune_id[storage.get_trial_id_from_study_id_trial_number(sid, t.number)] = t.user_attrs["tune_trial_id"]
    order, seen = [], set()
    for line in path.read_text().splitlines():
        log = json.loads(line)
        if log.get("step") != grace or "intermediate_value" not in log:
            continue
        tid = tune_id.get(log["trial_id"])
        if tid is not None and tid not in seen:
            seen.add(tid)
            order.append((tid, float(log["intermediate_value"])))
    return order


def asha_replay(exp: Path, space: Any, reached: dict[str, int]) -> tuple[int, int]:
    """(wrongly promoted, wrongly stopped) at ASHA's first rung; `reached`: each search run's
    last epoch."""
    sched = space.scheduler
    grace, rf = sched.grace_period, sched.reduction_factor
    recorded: list[float] = []
    promoted = stopped = 0
    for tid, value in _journal_order(exp, grace):
        if tid not in reached:
            continue
        cutoff = float(np.nanpercentile(recorded, (1 - 1 / rf) * 100)) if recorded else None
        stop = cutoff is not None and value < cutoff
        recorded.append(value)
        went_on = reached[tid] > grace
        promoted += stop and went_on
        stopped += (not stop) and not went_on and reached[tid] == grace
    return promoted, stopped


def _restarted(exp: Path) -> int:
    """Trials whose result.json reports epoch 1 twice: started again from scratch."""
    n = 0
    for f in exp.glob("train_trial_*/result.json"):
        epochs = [json.loads(line).get("training_iteration") for line in f.read_text().splitlines() if line.strip()]
        n += epochs.count(1) > 1
    return n


def check_runs(exp: Path, space: Any) -> dict[str, Any]:
    """Runs lost (planned, never finished), repeated (the same config, or the same rerun, twice)
    and wrongly promoted, from the trial files and the journal."""
    from s9tune.search.experiment.record import load_experiment

    rows = load_experiment(str(exp)).rows
    search = [r for r in rows if r.seed is None]
    reruns = [r for r in rows if r.seed is not None]
    done = [r for r in search if r.status in FINISHED]
    complete = sorted((r for r in search if r.final_value is not None), key=lambda r: -(r.final_value or 0.0))
    planned_reruns = space.reevaluate.runs(len(complete))
    done_reruns = [r for r in reruns if r.status in FINISHED]
    lost = max(0, space.num_samples - len(done)) + max(0, planned_reruns - len(done_reruns))
    keys = {json.dumps(r.config, sort_keys=True) for r in search}
    repeated = (len(search) - len(keys)) + (len(reruns) - len({(r.config_id, r.seed) for r in reruns}))
    top = {r.trial_id for r in complete[: space.reevaluate.top]}
    wrong_reruns = sum(r.config_id not in top for r in reruns)
    promoted, stopped = (
        asha_replay(exp, space, {r.trial_id: r.epochs for r in done if r.status != "diverged"})
        if space.scheduler.type == "asha" and space.scheduler.brackets == 1
        else (0, 0)
    )
    return {
        "lost": lost,
        "repeated": repeated,
        "wrongly_promoted": promoted + wrong_reruns,
        "wrongly_promoted_by_asha": promoted,
        "wrongly_stopped_by_asha": stopped,
        "reruns_outside_top": wrong_reruns,
        "restarted_from_scratch": _restarted(exp),
        "search_trials": len(search),
        "finished_search_trials": len(done),
        "reruns": len(reruns),
        "unfinished_or_error": sum(r.status not in FINISHED for r in rows),
    }


def checkpoints_per_trial(exp: Path) -> float:
    """Checkpoints the trials reported (rows naming one), per trial."""
    files = list(exp.glob("train_trial_*/result.json"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    return sum(bool(r.get("checkpoint_dir_name")) for r in rows) / max(len(files), 1)


def uri_journal_copies(exp: Path, wall_s: float, every_s: float = 10.0) -> dict[str, float]:
    """For a URI experiment, the bytes of journal copies: one at every completion (a tell: a
    trial's state set to a finished one), as before, against at most one per `every_s` seconds
    of the search (now; Tune's state saves add one each, and are paced the same way). Computed
    from this experiment's journal, not run against an object store."""
    size, per_completion = 0, 0
    for line in (exp / "optuna.journal").read_bytes().splitlines(keepends=True):
        size += len(line)
        log = json.loads(line)
        if log.get("op_code") == 6 and log.get("state") not in (None, 0):  # set to a finished state
            per_completion += size
    return {"per_completion_bytes": per_completion, "paced_bytes_at_most": size * (wall_s / every_s + 1)}


def results_seconds(exp: Path) -> float:
    """`s9tune results EXPERIMENT`, as a user runs it."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "s9tune", "results", str(exp)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(f"s9tune results exited {proc.returncode}: {proc.stderr[-2000:]}")
    return time.monotonic() - t0


def journal_replay_seconds(exp: Path) -> float:
    """Reading the whole journal back, as `--resume` does before anything else."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    t0 = time.monotonic()
    JournalStorage(JournalFileBackend(str(exp / "optuna.journal")))
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sessions(port: int) -> int:
    body = {
        "startIndex": 0,
        "sliceSize": 1_000_000,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        groups = json.loads(resp.read()).get("sessionGroups", [])
    return sum(len(g.get("sessions", [])) for g in groups)


def tensorboard_seconds(exp: Path, *, timeout: float) -> float | None:
    """Seconds from starting a TensorBoard server on the experiment until its HParams view lists
    every trial folder that holds an event file; None if it did not within `timeout`."""
    want = len({f.parent for f in exp.glob("*/events.out.tfevents*")})
    port = _free_port()
    log = open(exp.parent / f"tensorboard-{exp.name}.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(exp), "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            try:
                if _sessions(port) >= want:
                    return time.monotonic() - t0
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        return None
    finally:
        proc.terminate()  # by its pid
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def project(rows: list[dict[str, Any]], configs: int = 10_000, slots: int = 2_500) -> dict[str, Any] | None:
    """10,000 configs on 2,500 slots, from the largest run's per-trial costs (projected)."""
    if not rows:
        return None
    big = rows[-1]
    epochs_per_trial = big["epochs_per_trial"]
    trial_s = epochs_per_trial * EPOCH_S_ON_GPU  # one trial on one slot, on a GPU
    need = slots / trial_s  # trials the driver must finish per second to keep the slots busy
    out = {
        "configs": configs,
        "slots": slots,
        "trial_s_on_gpu": trial_s,
        "driver_busy_share": need * big["driver_cpu_s_per_trial"],
        "baseline_busy_share": need * big["baseline_cpu_s_per_trial"],
        "driver_bound_above_slots": trial_s / big["driver_cpu_s_per_trial"],
        "baseline_bound_above_slots": trial_s / big["baseline_cpu_s_per_trial"],
        "journal_lines": big["journal_lines"] / big["configs"] * configs,
        "journal_replay_s": big["journal_replay_s"] / big["configs"] * configs,
        "results_s": big["results_s"] / big["configs"] * configs,
        "resume_to_first_trial_s": (big["resume_to_first_trial_s"] or math.nan) / big["configs"] * configs,
    }
    if len(rows) > 1:
        small = rows[0]
        slope = (big["peak_rss_mib"] - small["peak_rss_mib"]) / (big["configs"] - small["configs"])
        out["peak_rss_mib"] = big["peak_rss_mib"] + slope * (configs - big["configs"])
        out["rss_mib_per_config"] = slope
    return out


def tensorboard_available() -> bool:
    return shutil.which("tensorboard") is not None or _has_module("tensorboard")


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
