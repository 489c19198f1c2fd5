"""Behaviours the mutation run (benchmarks/MUTATION.md) found no test pinned: each test here
failed under a surviving mutant of the module it names, and passes on the real code."""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from test_halving import METRIC, journal, space

from s9tune import outdir
from s9tune.errors import OutputExistsError
from s9tune.search.searcher.asha import scheduler_for
from s9tune.search.searcher.journal import StudyStore
from s9tune.search.searcher.searcher import StudySearch, TrialView
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, SEED_KEY, SchedulerSpec


# -- outdir: the --out folder rules, at the module (no training needed) ------------------------
def s9tune_folder(folder: Path, kind: str = "train", marker: str | None = None) -> Path:
    """A folder as s9tune `kind` leaves it: its marker and two of its files (plain names only:
    a pattern or a folder in the kind's spec is left out)."""
    folder.mkdir(parents=True)
    (folder / outdir.MARKER).write_text(json.dumps({"kind": kind}) if marker is None else marker)
    files = sorted(k for k, v in outdir.KIND_SPECS[kind].items() if v is None and "*" not in k)
    for name in files[:2]:
        (folder / name).write_text("s9tune output")
    return folder


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every entry below `folder`: a file's bytes, a link's target text (never followed)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "/"
    return out


def marker_kind(folder: Path) -> str:
    return json.loads((folder / outdir.MARKER).read_text())["kind"]


def test_out_is_created_with_every_missing_parent_and_marked(tmp_path: Path) -> None:
    out = outdir.prepare_out_dir(tmp_path / "runs" / "today" / "first", kind="train")
    assert out.is_dir() and marker_kind(out) == "train"


def test_check_only_creates_writes_and_removes_nothing(tmp_path: Path) -> None:
    """What a command checks before long work: every rule, no change on disk."""
    missing = tmp_path / "missing"
    assert outdir.prepare_out_dir(missing, kind="train", check_only=True) == missing
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert outdir.prepare_out_dir(empty, kind="train", check_only=True) == empty
    assert listing(empty) == {}
    run = s9tune_folder(tmp_path / "run")
    before = listing(run)
    assert outdir.prepare_out_dir(run, kind="train", force=True, check_only=True) == run
    assert listing(run) == before


def test_an_empty_folder_becomes_a_folder_of_its_kind(tmp_path: Path) -> None:
    """An empty --out is used and marked, so a later --resume or --force knows it as s9tune's."""
    out = tmp_path / "out"
    out.mkdir()
    assert outdir.prepare_out_dir(out, kind="lr-find") == out
    assert marker_kind(out) == "lr-find"
    (out / "lr_find.json").write_text("{}")
    assert outdir.prepare_out_dir(out, kind="lr-find", force=True) == out
    assert listing(out).keys() == {outdir.MARKER}


def test_a_run_is_replaced_only_with_force_and_continued_only_with_resume(tmp_path: Path) -> None:
    run = s9tune_folder(tmp_path / "run")
    before = listing(run)
    with pytest.raises(OutputExistsError, match="already holds a previous run"):
        outdir.prepare_out_dir(run, kind="train")  # force is opt-in
    assert listing(run) == before
    assert outdir.prepare_out_dir(run, kind="train", resume=True) == run
    assert listing(run) == before  # resuming keeps every file
    assert outdir.prepare_out_dir(run, kind="train", force=True) == run
    assert listing(run).keys() == {outdir.MARKER} and marker_kind(run) == "train"
    # the replaced folder is still a train folder: it can be resumed and replaced again
    assert outdir.prepare_out_dir(run, kind="train", resume=True) == run


def test_a_linked_marker_is_not_a_marker(tmp_path: Path) -> None:
    """A marker that is a link is never followed, even to a genuine marker of the same kind:
    the folder is not s9tune's to resume or to replace."""
    real = s9tune_folder(tmp_path / "real")
    out = s9tune_folder(tmp_path / "out")
    (out / outdir.MARKER).unlink()
    (out / outdir.MARKER).symlink_to(real / outdir.MARKER)
    before = listing(out)
    with pytest.raises(OutputExistsError, match="nothing to resume"):
        outdir.prepare_out_dir(out, kind="train", resume=True)
    with pytest.raises(OutputExistsError, match=r"s9tune\.json missing"):
        outdir.prepare_out_dir(out, kind="train", force=True)
    assert listing(out) == before and listing(real)[outdir.MARKER] == b'{"kind": "train"}'


@pytest.mark.parametrize("marker", ["[]", '"train"', '{"kind": ["train"]}', '{"kind": 5}', "{", "\udcff"])
def test_a_marker_that_names_no_kind_is_refused_in_one_line(tmp_path: Path, marker: str) -> None:
    out = tmp_path / "out"
    s9tune_folder(out, marker="")
    (out / outdir.MARKER).write_bytes(marker.encode("utf-8", "surrogateescape"))
    before = listing(out)
    for kw in ({"force": True}, {"resume": True}):
        with pytest.raises(OutputExistsError) as err:
            outdir.prepare_out_dir(out, kind="train", **kw)
        assert "missing" in str(err.value) and str(out) in str(err.value)
    assert listing(out) == before


def test_every_refusal_names_the_folder(tmp_path: Path) -> None:
    """One line that says which folder: under a file, not s9tune's, another kind, a user's file."""
    (tmp_path / "file").write_text("x")
    cases = [
        (tmp_path / "file" / "run", {}),
        (tmp_path / "notes", {"force": True}),
        (s9tune_folder(tmp_path / "lr", kind="lr-find"), {"force": True}),
        (s9tune_folder(tmp_path / "run"), {}),
    ]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "run" / "mine.txt").write_text("mine")
    cases.append((tmp_path / "run", {"force": True}))
    for out, kw in cases:
        with pytest.raises(OutputExistsError) as err:
            outdir.prepare_out_dir(out, kind="train", **kw)
        assert str(err.value).startswith(f"{out}: "), err.value


# -- halving: ties, and what a resume's reruns leave behind -----------------------------------
def halving(budgets: tuple[int, ...], n: int, store: StudyStore | None = None) -> StudySearch:
    return StudySearch(space(budgets, 0.5, n, startup=n), store=store, name="t")


def session(
    h: StudySearch,
    values: dict,
    rng: random.Random,
    fails: set,
    *,
    name: str,
    live: dict | None = None,
    stop: int | None = None,
) -> dict:
    """Tune's calls until the searcher says FINISHED, runs ending in a random order: each run's
    value is `values[config id, budget]`, drawn once; a run in `fails` fails part-way (each
    once); new trial ids start with `name`; `stop`:
    the driver dies after that many runs ended. Returns every run started (trial id -> config),
    the trial ids that failed, those still running, and whether the searcher said FINISHED."""
    live, runs, failed = dict(live or {}), dict(live or {}), set()
    while stop is None or stop > 0:
        stop = None if stop is None else stop - 1
        while len(live) < 3:
            tid = f"{name}-{len(runs)}"
            cfg = h.suggest(tid)
            if not isinstance(cfg, dict):
                break
            live[tid] = runs[tid] = cfg
        if not live:
            assert cfg == Searcher.FINISHED
            return {"runs": runs, "failed": failed, "live": {}, "finished": True}
        tid = rng.choice(sorted(live))
        cfg = live.pop(tid)
        key = (cfg[CONFIG_KEY], cfg[BUDGET_KEY])
        if key in fails:
            fails.discard(key)
            failed.add(tid)
            h.on_trial_complete(tid, None, error=True)
        else:
            v = values.setdefault(key, round(rng.random(), 1))  # one decimal: ties are common
            h.on_trial_complete(tid, {METRIC: v, "training_iteration": cfg[BUDGET_KEY]})
    return {"runs": runs, "failed": failed, "live": live, "finished": False}


def test_tied_values_promote_the_config_that_started_first() -> None:
    """The documented tie rule (start order), even when the later config finishes first."""
    h = halving((2, 4), 2)
    first, second = h.suggest("a"), h.suggest("b")
    h.on_trial_complete("b", {METRIC: 0.5, "training_iteration": 2})
    h.on_trial_complete("a", {METRIC: 0.5, "training_iteration": 2})
    assert h.suggest("c")[CONFIG_KEY] == first[CONFIG_KEY] != second[CONFIG_KEY]


def assert_cuts_taken(h: StudySearch, n: int, failed: list[tuple[str, int]]) -> None:
    """Every config inside a rung's cut (the best quota + one per config whose run there failed,
    by the values so far) ran at that rung; beyond the cut a rung took at most one config per
    rerun at a budget below (a promotion made before a resume relied on its failure, and the
    rerun's config may enter each cut above it)."""
    sizes = SchedulerSpec("halving", budgets=h.budgets, keep=0.5).rung_sizes(n)
    for r in range(1, len(h.budgets)):
        took, ranked = h.rungs[r].started, h.rungs.ranked(r - 1)
        cut = sizes[r] + len({cid for cid, b in failed if b == h.budgets[r]})
        assert len(took) == len(set(took)) and set(ranked[:cut]) <= set(took), (r, cut, took, ranked)
        reruns_below = len({(cid, b) for cid, b in failed if b < h.budgets[r]})
        assert len(took) <= cut + reruns_below, (r, cut, took, failed)


@pytest.mark.parametrize("seed", range(40))
def test_after_resumes_rerun_failed_runs_no_config_inside_a_cut_is_left_out(tmp_path: Path, seed: int) -> None:
    """Three budgets; runs fail in the first session, which is killed part-way in odd seeds;
    each resume reruns the failed ones (one may fail again, and a config failing twice frees
    one place, not two) and continues the unfinished. Every session that ends has every cut
    taken (assert_cuts_taken)."""
    rng = random.Random(seed)
    budgets, n = (1, 2, 4), 8
    store = journal(tmp_path)
    h, values, runs, failed = halving(budgets, n, store), {}, {}, []
    fails = {(f"c{rng.randrange(n)}", rng.choice(budgets)) for _ in range(3)}
    again = set(rng.sample(sorted(fails), 1))  # fails again on the first resume
    out = session(h, values, rng, set(fails), name="s", stop=8 + seed % 5 if seed % 2 else None)
    for resume in range(2):
        runs.update(out["runs"])
        failed += [(runs[t][CONFIG_KEY], runs[t][BUDGET_KEY]) for t in out["failed"]]
        if out["finished"]:
            assert_cuts_taken(h, n, failed)
        h = halving(budgets, n, store)  # Tune reruns its errored trials under their own ids
        rerun = {t: runs[t] for t in [*out["failed"], *out["live"]]}
        h.reconcile([TrialView(t, c, "PENDING" if t in rerun else "TERMINATED", {}) for t, c in runs.items()])
        out = session(h, values, rng, set(again) if resume == 0 else set(), name=f"r{resume}", live=rerun)
    assert out["finished"] and not out["failed"]
    assert_cuts_taken(h, n, failed)


# -- asha: Ray's ASHA for the search's trials, nothing for the reruns ---------------------------
def asha_decisions(sched: TrialScheduler, trials: list[tuple[str, dict]], max_t: int) -> dict[str, list[str]]:
    """Tune's calls to a scheduler, epoch by epoch in lockstep: each trial added, one result per
    epoch until the scheduler stops it or its schedule ends (then its completion), and one
    pending trial of each kind removed before it ran. Each trial's decisions, in order."""
    np.random.seed(0)  # ASHA draws each trial's bracket
    objs = {tid: Trial("t", config=cfg, trial_id=tid, stub=True) for tid, cfg in trials}
    for obj in objs.values():
        sched.on_trial_add(None, obj)
    for tid in [t for t in objs if t.startswith("pending")]:
        sched.on_trial_remove(None, objs.pop(tid))
    decisions: dict[str, list[str]] = {tid: [] for tid in objs}
    for epoch in range(1, max_t + 1):
        for tid, obj in list(objs.items()):
            quality = (int(tid[-1]) * 7 % 10) / 10  # a fixed, mixed order of the trials
            result = {METRIC: quality * epoch / max_t, "training_iteration": epoch}
            action = sched.on_trial_result(None, obj, result)
            decisions[tid].append(action)
            if action == TrialScheduler.STOP or epoch == max_t:
                sched.on_trial_complete(None, obj, result)
                del objs[tid]
    return decisions


@pytest.mark.parametrize(
    "grace, factor, brackets, max_t", [(1, 2.0, 1, 8), (2, 3.0, 1, 18), (1, 2.0, 3, 8), (2, 2.0, 1, 120)]
)
def test_search_trials_are_judged_as_rays_asha_would_and_reruns_never_stopped(
    grace: int, factor: float, brackets: int, max_t: int
) -> None:
    """SearchASHA with the space's settings stops exactly the search trials Ray's ASHA with
    those settings stops, whatever reruns (even better ones) run beside them; it never stops
    a rerun; and removing a pending trial of either kind is fine."""
    s = dataclasses.replace(
        space((max_t,), 1.0, 6, asha=True), scheduler=SchedulerSpec("asha", grace, factor, brackets)
    )
    ours = scheduler_for(s)
    rays = ASHAScheduler(
        time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=factor, brackets=brackets
    )
    for sched in (ours, rays):
        sched.set_search_properties(METRIC, "max")
    search = [(f"s{i}", {"x": i}) for i in range(6)] + [("pending-s9", {"x": 9})]
    reruns = [(f"r{i}", {"x": 0, CONFIG_KEY: "s0", SEED_KEY: i}) for i in (9, 8)]
    reruns.append(("pending-r7", {"x": 0, CONFIG_KEY: "s0", SEED_KEY: 7}))
    mixed = [search[0], reruns[0], *search[1:4], reruns[1], *search[4:], reruns[2]]
    got, expected = asha_decisions(ours, mixed, max_t), asha_decisions(rays, search, max_t)
    assert {t: d for t, d in got.items() if t.startswith("s")} == expected
    assert any(len(d) < max_t for d in expected.values())  # ASHA did stop some before their end
    for tid in ("r9", "r8"):
        assert got[tid] == [TrialScheduler.CONTINUE] * max_t


def test_under_halving_no_scheduler_stops_a_run() -> None:
    assert scheduler_for(space((2, 4), 0.5, 4)) is None


def test_a_resumed_asha_judges_new_runs_against_the_rungs_it_held() -> None:
    """Tune saves no scheduler: `restore` replays each restored run's reported values through
    ASHA's hook, so a run reaching a rung after a resume meets the cutoff the uninterrupted
    search had there: finished and failed runs count, running ones the journal has running
    count, ones Tune restores to run on but the journal has finished are left out (they report
    again), a rerun never enters a rung, and a run with no values is no error."""
    s = dataclasses.replace(space((4,), 1.0, 6, asha=True), scheduler=SchedulerSpec("asha", 1, 2.0, 1))

    def trial(tid: str, status: str, **cfg) -> Trial:
        t = Trial("t", config={"x": 0, **cfg}, trial_id=tid, stub=True)
        t.set_status(status)
        return t

    curves = {"a": [(1, 0.9), (2, 0.9)], "b": [(1, 0.8)], "c": [(1, 0.1)], "d": [(1, 0.85)], "r": [(1, 1.0)]}

    def decision(value: float) -> str:
        trials = [
            trial("a", Trial.TERMINATED),
            trial("d", Trial.RUNNING),  # the journal has it finished: left out, and the rest still read
            trial("b", Trial.ERROR),
            trial("f", Trial.TERMINATED),  # no values reported
            trial("c", Trial.RUNNING),  # the journal has it running too: its rung value counts
            trial("r", Trial.TERMINATED, **{CONFIG_KEY: "a", SEED_KEY: 1}),
        ]
        sched = scheduler_for(s)
        sched.set_search_properties(METRIC, "max")
        for t in trials:
            sched.on_trial_add(None, t)
        sched.restore(trials, curves, running={"c"})
        late = trial("e", Trial.RUNNING)
        sched.on_trial_add(None, late)
        return sched.on_trial_result(None, late, {"training_iteration": 1, METRIC: value})

    # the rung at epoch 1 holds a 0.9, b 0.8, c 0.1: their median 0.8 stops 0.7 (without a or b
    # the cutoff would be 0.5 or lower) and lets 0.82 go on (without c, or with d's 0.85, it
    # would be 0.825 or higher)
    assert decision(0.7) == TrialScheduler.STOP
    assert decision(0.82) == TrialScheduler.CONTINUE
