"""The searcher on its own, driven the way Tune drives it (suggest, per-epoch results,
completion) but with made-up values, arrival orders and failures, so every interleaving can be
tried in milliseconds. test_halving_search.py and test_search_faults.py run the real thing."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher

from s9tune.config import TrainConfig
from s9tune.search.experiment.record import ExperimentRef
from s9tune.search.searcher.journal import StudyStore
from s9tune.search.searcher.searcher import StudySearch, TrialView
from s9tune.search.space.dists import Dist
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, REPLACES_KEY, SchedulerSpec, SearchSpace

METRIC = "val_accuracy"
COMPLETE, PRUNED, FAIL = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def space(
    budgets: tuple[int, ...], keep: float, n: int, seed: int = 0, asha: bool = False, startup: int | None = None
) -> SearchSpace:
    sched = SchedulerSpec("asha") if asha else SchedulerSpec("halving", budgets=budgets, keep=keep)
    dists = (Dist("x", "uniform", 0.0, 1.0),)
    return SearchSpace(
        Path("t.yaml"), n, TrainConfig(epochs=budgets[-1]), dists, None, sched, seed, 1, 0, startup_trials=startup
    )


def make(
    budgets: tuple[int, ...],
    keep: float,
    n: int,
    seed: int = 0,
    store: StudyStore | None = None,
    startup: int | None = None,
) -> StudySearch:
    return StudySearch(space(budgets, keep, n, seed, startup=startup), store=store, name="t")


def journal(tmp_path: Path) -> StudyStore:
    (tmp_path / "e").mkdir(exist_ok=True)
    return StudyStore(ExperimentRef(str(tmp_path), "e").folder)


def value(config: dict, budget: int) -> float:
    # a config's quality is its x; longer schedules score higher, ranks stay as at the first budget
    # except for the noise term, which makes the first budget an imperfect predictor. The noise
    # comes from the config's number, never hash(), which changes with PYTHONHASHSEED
    number = int(config[CONFIG_KEY].lstrip("c").rstrip("+"))
    return config["x"] * (1 + budget / 10) + 0.05 * ((number * 5 + budget) % 7 - 3)


def finish(h: Searcher, tid: str, cfg: dict, fails: set[tuple[str, int]] = frozenset()) -> None:
    """Tune's calls for one run: a result per epoch, then its completion (or, if the run is
    in `fails`, a failure part-way: Tune passes no result with error=True)."""
    budget = cfg[BUDGET_KEY]
    failing = (cfg[CONFIG_KEY], budget) in fails
    for epoch in range(1, (budget // 2 if failing else budget) + 1):
        h.on_trial_result(tid, {METRIC: value(cfg, budget) * epoch / budget, "training_iteration": epoch})
    if failing:
        h.on_trial_complete(tid, None, error=True)
    else:
        h.on_trial_complete(tid, {METRIC: value(cfg, budget), "training_iteration": budget})


def drive(h: Searcher, slots: int, order_seed: int, fails=frozenset(), stop_after=None, first_id=0, live=None):
    """Run the searcher to FINISHED with `slots` parallel trials ending in a random order.
    Returns every started run as (trial id, config) in start order, and whether it finished;
    `h.overlaps` counts promotions started while a run of the budget below was still live."""
    rng = random.Random(order_seed)
    live = dict(live or {})
    started: list[tuple[str, dict]] = []
    n, completed = first_id, 0
    while True:
        cfg = None
        while len(live) < slots:
            tid = f"t{n:03d}"
            cfg = h.suggest(tid)
            if cfg is None or cfg == Searcher.FINISHED:
                break
            n += 1
            below = [b for b in h.budgets if b < cfg[BUDGET_KEY]]
            if below and any(c[BUDGET_KEY] == below[-1] for c in live.values()):
                h.overlaps = getattr(h, "overlaps", 0) + 1
            live[tid] = cfg
            started.append((tid, cfg))
        if cfg == Searcher.FINISHED and not live:
            return started, True
        assert live, "the searcher waits although nothing runs: it would hang Tune"
        tid = rng.choice(sorted(live))
        finish(h, tid, live.pop(tid), fails)
        completed += 1
        if stop_after is not None and completed >= stop_after:
            return started, False


def rungs(started: list[tuple[str, dict]], budgets: tuple[int, ...]) -> list[list[str]]:
    return [[c[CONFIG_KEY] for _, c in started if c[BUDGET_KEY] == b] for b in budgets]


def synchronous(started: list[tuple[str, dict]], budgets: tuple[int, ...], sizes: list[int], fails=frozenset()):
    """The configs each budget runs under the synchronous rule: rank the configs that finished
    the budget below, take them in order until `size` of them finish (a failed one's place goes
    to the next in line). Ties go to the earlier config."""
    first = [c for _, c in started if c[BUDGET_KEY] == budgets[0]]
    order = {c[CONFIG_KEY]: i for i, c in enumerate(first)}
    out = [[c[CONFIG_KEY] for c in first]]
    for r in range(1, len(budgets)):
        done = [c for c in first if c[CONFIG_KEY] in out[r - 1] and (c[CONFIG_KEY], budgets[r - 1]) not in fails]
        done.sort(key=lambda c: (-value(c, budgets[r - 1]), order[c[CONFIG_KEY]]))
        took, ok = [], 0
        for c in done:
            if ok == sizes[r]:
                break
            took.append(c[CONFIG_KEY])
            ok += (c[CONFIG_KEY], budgets[r]) not in fails
        out.append(took)
    return out


def test_rung_sizes() -> None:
    assert SchedulerSpec("halving", budgets=(6, 24), keep=0.34).rung_sizes(32) == [32, 11]
    assert SchedulerSpec("halving", budgets=(2, 4, 8), keep=0.5).rung_sizes(8) == [8, 4, 2]
    assert SchedulerSpec("halving", budgets=(2, 8), keep=0.1).rung_sizes(3) == [3, 1]  # never 0
    assert SchedulerSpec("halving", budgets=(8,)).rung_sizes(5) == [5]


@pytest.mark.parametrize("slots,order", [(1, 0), (3, 1), (3, 2), (8, 3)])
def test_promotes_exactly_the_top_of_each_budget_in_any_order(slots: int, order: int) -> None:
    budgets = (2, 4, 8)
    h = make(budgets, 0.5, 8)
    started, finished = drive(h, slots, order)
    assert finished
    ids = rungs(started, budgets)
    assert [len(r) for r in ids] == [8, 4, 2]
    assert all(len(set(r)) == len(r) for r in ids), "a config was promoted twice"
    assert [set(r) for r in ids] == [set(r) for r in synchronous(started, budgets, [8, 4, 2])]
    # a promoted run trains the config it promotes: same searched values, a longer budget
    first = {c[CONFIG_KEY]: c["x"] for _, c in started if c[BUDGET_KEY] == 2}
    assert all(c["x"] == first[c[CONFIG_KEY]] for _, c in started)


def test_a_tie_goes_to_the_config_that_started_first() -> None:
    """Small validation sets tie often (126 of 814 images twice). The later-started config ends
    first with the same value: the earlier-started one is promoted, as the synchronous rule says."""
    h = make((2, 4), 0.5, 2)
    first, second = h.suggest("t0"), h.suggest("t1")
    h.on_trial_complete("t1", {METRIC: 0.15479, "training_iteration": 2})
    assert h.suggest("t2") is None  # t0 may still beat it
    h.on_trial_complete("t0", {METRIC: 0.15479, "training_iteration": 2})
    promoted = h.suggest("t2")
    assert promoted[CONFIG_KEY] == first[CONFIG_KEY] != second[CONFIG_KEY] and promoted[BUDGET_KEY] == 4


def test_promotion_starts_before_the_rung_ends() -> None:
    """Asynchronous: a config whose place in the top half is already certain starts its longer
    run while first-budget runs are still running, not after a barrier."""
    h = make((2, 8), 0.5, 8)
    drive(h, 4, 0)
    assert getattr(h, "overlaps", 0) >= 1


def test_concurrency_is_capped_by_the_searcher() -> None:
    h = StudySearch(space((2, 8), 0.5, 8), name="t", max_concurrent=3)
    assert [h.suggest(f"t{i}") is not None for i in range(5)] == [True, True, True, False, False]
    finish(h, "t0", {**h.params["c0"], BUDGET_KEY: 2, CONFIG_KEY: "c0"})
    assert h.suggest("t5") is not None


def test_optuna_learns_only_first_budget_values(tmp_path: Path) -> None:
    """The first budget's study holds one COMPLETE trial per config with its first-budget value
    (read back with optuna.load_study from the journal); longer budgets have studies of their own."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    h = make((2, 8), 0.5, 6, store=journal(tmp_path))
    started, _ = drive(h, 2, 5)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "e" / "optuna.journal")))
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert len(trials) == 6 and all(t.state == COMPLETE for t in trials)
    by_id = {c[CONFIG_KEY]: value(c, 2) for _, c in started if c[BUDGET_KEY] == 2}
    assert {t.user_attrs["config_id"]: t.value for t in trials} == pytest.approx(by_id)
    longer = optuna.load_study(study_name="t@8", storage=storage).trials
    assert sorted(t.user_attrs["config_id"] for t in longer) == sorted(rungs(started, (2, 8))[1])
    assert all(t.state == COMPLETE and t.intermediate_values for t in longer)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_failed_runs_leave_the_ranking_and_their_places_go_to_the_next_in_line(order: int) -> None:
    """A config whose run fails is left out of that budget's ranking; a promoted run that fails
    gives its place to the next config in line (named in the new run's `replaces`). The search
    still ends, with exactly the configs the synchronous rule would run."""
    budgets, sizes = (2, 4, 8), [8, 4, 2]
    # every config a random start-up draw: the same seed draws the same 8 whatever the order
    probe = make(budgets, 0.5, 8, startup=8)
    ranked = [c[CONFIG_KEY] for _, c in sorted(drive(probe, 8, 0)[0][:8], key=lambda tc: -value(tc[1], 2))]
    top = [cid for cid in ranked if cid != "c1"]
    fails = {("c1", 2), (top[0], 4), (top[1], 4)}
    h = make(budgets, 0.5, 8, startup=8)
    started, finished = drive(h, 3, order, fails=fails)
    assert finished
    ids = rungs(started, budgets)
    assert [set(r) for r in ids] == [set(r) for r in synchronous(started, budgets, sizes, fails)]
    assert "c1" not in ids[1] and len(ids[1]) == 4 + 2  # two failed in rung 2: two more promoted
    assert sorted(c.get(REPLACES_KEY) for _, c in started if REPLACES_KEY in c) == sorted(
        cid for cid, b in fails if b == 4
    )


@pytest.mark.parametrize("seed", range(24))
def test_random_plans_orders_and_failures_end_with_the_synchronous_rule(seed: int) -> None:
    rng = random.Random(seed)
    budgets = rng.choice([(2, 4), (2, 4, 8), (1, 2, 4, 8)])
    keep, n = rng.choice([0.34, 0.5, 0.7]), rng.randint(3, 10)
    fails = {(f"c{rng.randrange(n)}", rng.choice(budgets)) for _ in range(rng.randint(0, 4))}
    h = make(budgets, keep, n, seed=seed)
    started, finished = drive(h, rng.randint(1, 5), seed, fails=fails)
    assert finished
    ids = rungs(started, budgets)
    assert all(len(set(r)) == len(r) for r in ids)
    sizes = SchedulerSpec("halving", budgets=budgets, keep=keep).rung_sizes(n)
    assert [set(r) for r in ids] == [set(r) for r in synchronous(started, budgets, sizes, fails)]


def test_diverged_run_is_a_finished_run_valued_zero_and_a_partial_result_with_an_error_is_no_value() -> None:
    h = make((2, 4), 0.5, 3)
    a, _, c = (h.suggest(t) for t in "abc")
    h.on_trial_complete("a", {METRIC: 0.0, "training_iteration": 1, "diverged": 1})
    h.on_trial_complete("b", {METRIC: 0.9, "training_iteration": 2}, error=True)  # a result, then it failed
    h.on_trial_complete("c", {METRIC: 0.5, "training_iteration": 2})
    trials = h.studies[0].trials
    assert [(t.state, t.value) for t in trials] == [(COMPLETE, 0.0), (FAIL, None), (COMPLETE, 0.5)]
    assert h.rungs[0].values == {a[CONFIG_KEY]: 0.0, c[CONFIG_KEY]: 0.5}


def test_asha_stopped_trials_reach_optuna_as_pruned() -> None:
    tpe = StudySearch(space((4,), 1.0, 3, asha=True), name="a")
    for tid, last, diverged in (("done", 4, 0), ("stopped", 2, 0), ("nan", 1, 1)):
        assert BUDGET_KEY not in tpe.suggest(tid)  # an ASHA trial's config is its searched values
        # as Tune does: the result on which ASHA stops a trial reaches only on_trial_complete
        for epoch in range(1, last + (1 if tid == "done" else 0)):
            tpe.on_trial_result(tid, {METRIC: 0.1 * epoch, "training_iteration": epoch})
        tpe.on_trial_complete(
            tid, {METRIC: 0.0 if diverged else 0.1 * last, "training_iteration": last, "diverged": diverged}
        )
    done, stopped, nan = tpe.studies[0].trials
    assert done.state == COMPLETE and done.value == pytest.approx(0.4)
    assert stopped.state == PRUNED and stopped.last_step == 2
    assert stopped.value == pytest.approx(0.2)  # its value at the rung where it stopped
    assert nan.state == COMPLETE and nan.value == 0.0  # diverged: a verdict, scored worst
    assert tpe.suggest("more") == Searcher.FINISHED


def test_a_restarted_searcher_rebuilds_its_rungs_from_the_journal(tmp_path: Path) -> None:
    """After a SIGKILL: a new searcher on the same journal, told which trials Tune restored
    (the unfinished ones pending again), repeats no promotion and loses no run."""
    budgets = (2, 4)
    h = make(budgets, 0.5, 6, store=journal(tmp_path))
    before, finished = drive(h, 2, 7, stop_after=5)
    assert not finished
    restored = make(budgets, 0.5, 6, seed=99, store=journal(tmp_path))
    assert restored.runs == h.runs and restored.rungs[0].values == h.rungs[0].values
    assert restored.params == h.params
    live = {tid: cfg for tid, cfg in before if tid in h.open}
    restored.reconcile([TrialView(t, c, "TERMINATED" if t not in live else "PENDING", {}) for t, c in before])
    after, finished = drive(restored, 2, 8, first_id=100, live=live)
    assert finished
    ids = rungs(before + after, budgets)
    assert [len(r) for r in ids] == [6, 3] and all(len(set(r)) == len(r) for r in ids)
    assert [set(r) for r in ids] == [set(r) for r in synchronous(before + after, budgets, [6, 3])]
    assert len({c["x"] for _, c in before + after}) == 6  # TPE, reseeded, drew no config twice


def test_resume_reconciles_the_searcher_with_the_trials_tune_restores(tmp_path: Path) -> None:
    """The journal and Tune's state are written at different moments (for an s3:// experiment
    the journal is copied up between Tune's uploads), so a crash can leave either a step
    ahead. The searcher drops a run Tune lost and adopts a run it never heard of, so nothing
    is run twice and no promotion is repeated or missed."""
    budgets = (2, 4)
    h = make(budgets, 0.5, 4, store=journal(tmp_path))
    started = [(f"t{i}", h.suggest(f"t{i}")) for i in range(4)]  # 4 first-budget runs; 3 finish
    for tid, cfg in started[:3]:
        finish(h, tid, cfg)
    best = max(started[:3], key=lambda tc: value(tc[1], 2))[1]
    t5 = h.suggest("t5")  # a promotion Tune never saved
    assert t5[CONFIG_KEY] == best[CONFIG_KEY]
    # Tune's state: t3 finished (the journal missed it), t4 runs the same promotion under its own id
    t4 = {**best, BUDGET_KEY: 4}
    view = [TrialView(t, c, "TERMINATED", {METRIC: value(c, 2), "training_iteration": 2}) for t, c in started]
    view.append(TrialView("t4", t4, "PENDING", {METRIC: 0.1, "training_iteration": 1}))
    restored = make(budgets, 0.5, 4, seed=3, store=journal(tmp_path))
    restored.reconcile(view)
    assert restored.runs["t4"] == (best[CONFIG_KEY], 1) and "t5" not in restored.runs
    assert restored.rungs[0].values[started[3][1][CONFIG_KEY]] == pytest.approx(value(started[3][1], 2))
    assert restored.rungs[1].started == [best[CONFIG_KEY]]  # adopted: not promoted a second time
    finish(restored, "t4", t4)
    after, finished = drive(restored, 2, 1, first_id=10)
    assert finished
    ids = rungs([*started, ("t4", t4), *after], budgets)
    assert [len(r) for r in ids] == [4, 2] and len(set(ids[1])) == 2
    assert [set(r) for r in ids] == [set(r) for r in synchronous(started, budgets, [4, 2])]
    # the first budget's study: every first-budget run once, all complete
    assert [t.state for t in restored.studies[0].trials].count(COMPLETE) == 4
    lost = [t for t in restored.studies[1].trials if t.user_attrs.get("lost")]
    assert [t.user_attrs["tune_trial_id"] for t in lost] == ["t5"] and lost[0].state == FAIL


def best_fails(tmp_path: Path) -> tuple[StudySearch, list[tuple[str, dict]], tuple[str, dict]]:
    """Four configs on budgets (2, 4), keep 1/2, on a journal; the run of the best first-budget
    config fails. (searcher, the started runs, the failed run)."""
    h = make((2, 4), 0.5, 4, store=journal(tmp_path))
    started = [(f"t{i}", h.suggest(f"t{i}")) for i in range(4)]
    best = max(started, key=lambda tc: value(tc[1], 2))
    for tid, cfg in started:
        finish(h, tid, cfg, fails={(best[1][CONFIG_KEY], 2)})
    return h, started, best


def test_a_rerun_of_a_failed_run_is_pending_again(tmp_path: Path) -> None:
    """A resume reruns errored trials: until the rerun ends, no promotion may count on the
    failure (it could still finish at the top), and its value then enters the ranking."""
    budgets = (2, 4)
    h, started, best = best_fails(tmp_path)
    assert h.rungs[0].failed == {best[1][CONFIG_KEY]}
    restored = make(budgets, 0.5, 4, store=journal(tmp_path))
    view = [TrialView(t, c, "PENDING" if t == best[0] else "TERMINATED", {}) for t, c in started]
    restored.reconcile(view)
    assert restored.rungs.pending(0) == 1
    # the second-best is certain (only one value can still beat it); the third is not
    second = restored.suggest("t9")
    assert restored.suggest("t10") is None
    finish(restored, best[0], best[1])
    third = restored.suggest("t11")
    assert {second[CONFIG_KEY], third[CONFIG_KEY]} == set(synchronous(started, budgets, [4, 2])[1])
    assert best[1][CONFIG_KEY] in {second[CONFIG_KEY], third[CONFIG_KEY]}
    trials = [t for t in restored.studies[0].trials if t.user_attrs["config_id"] == best[1][CONFIG_KEY]]
    assert [t.state for t in trials] == [FAIL, COMPLETE]  # the failure kept, the rerun's value added


def test_a_rerun_that_finishes_inside_the_cut_is_promoted_too(tmp_path: Path) -> None:
    """The first run of the search relied on a failure (it promoted the best of the others and
    ended); --resume reruns the failed run and it finishes first. Its config is then promoted as
    well: the synchronous rule replayed over these events takes it too."""
    budgets = (2, 4)
    h, started, best = best_fails(tmp_path)
    first_run, finished = drive(h, 2, 0, first_id=10)
    assert finished and len(first_run) == 2 and best[1][CONFIG_KEY] not in rungs(first_run, budgets)[1]
    restored = make(budgets, 0.5, 4, store=journal(tmp_path))
    restored.reconcile(
        [TrialView(t, c, "PENDING" if t == best[0] else "TERMINATED", {}) for t, c in started + first_run]
    )
    assert restored.suggest("t20") is None and not restored.is_finished()  # waits for the rerun
    finish(restored, best[0], best[1])
    after, finished = drive(restored, 2, 0, first_id=30)
    assert finished and rungs(after, budgets)[1] == [best[1][CONFIG_KEY]]
    without = [tc for tc in started if tc[0] != best[0]]
    expected = set(synchronous(without, budgets, [3, 2])[1]) | set(synchronous(started, budgets, [4, 2])[1])
    assert set(rungs(first_run + after, budgets)[1]) == expected and len(expected) == 3


def test_tpe_takes_over_after_the_spaces_start_up_count() -> None:
    """The same seed and the same told values: the third config is a random draw while the
    start-up count is above two, and TPE's own pick once it is two."""

    def third(startup: int) -> float:
        h = make((2,), 1.0, 8, startup=startup)
        for i in range(2):
            cfg = h.suggest(f"t{i}")
            h.on_trial_complete(f"t{i}", {METRIC: cfg["x"], "training_iteration": 2})
        return h.suggest("t2")["x"]

    assert third(10) == third(9)  # both still random: the start-up count is what differs
    assert third(2) != third(10)


def test_importance_needs_enough_values_of_one_budget(tmp_path: Path) -> None:
    """fANOVA runs on first-budget values only (every config has one), and says n/a below 10."""
    import numpy as np
    import yaml

    from s9tune.search.experiment.export import importance
    from s9tune.search.experiment.trials import Experiment, TrialRow
    from s9tune.search.space.space import load_space

    doc = {
        "num_samples": 12,
        "fixed": {"epochs": 4},
        "space": {
            "max_lr": {"type": "loguniform", "low": 0.05, "high": 2.0},
            "aug_strength": {"type": "uniform", "low": 0.0, "high": 2.0},
        },
        "scheduler": {"type": "halving", "budgets": [2, 4], "keep": 0.5},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    sp = load_space(tmp_path / "s.yaml")
    rng = np.random.default_rng(0)

    def row(i: int, budget: int, lr: float, aug: float) -> TrialRow:
        v = 0.9 - 0.3 * aug  # only aug_strength matters
        return TrialRow(
            f"t{i}-{budget}", {"max_lr": lr, "aug_strength": aug}, "completed", budget, v, v, 1.0, [v], f"c{i}", budget
        )

    points = [(float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.0, 2.0))) for _ in range(12)]
    rows = [row(i, 2, lr, aug) for i, (lr, aug) in enumerate(points)]
    rows += [row(i, 4, 0.5, 0.0) for i in range(6)]  # a second budget: must not enter the same fit
    imp, basis = importance(Experiment(str(tmp_path / "x"), sp, rows))
    assert "12 configs' values at the first budget (2-epoch schedules)" in basis
    assert set(imp) == {"max_lr", "aug_strength"} and imp["aug_strength"] > 0.8
    few, why = importance(Experiment(str(tmp_path / "x"), sp, rows[:9]))
    assert few == {} and why.startswith("n/a: 9 ") and "needs at least 10" in why
