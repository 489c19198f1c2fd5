"""The searchers on their own, driven the way Tune drives them (suggest, per-epoch results,
completion) but with made-up values and arrival orders, so every interleaving can be tried in
milliseconds. test_halving_search.py runs the real thing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import optuna
import pytest
from ray import tune
from ray.tune.search import Searcher

from s9tune.search.searchers import CompleteScheduleOptuna, HalvingSearch
from s9tune.search.space import BUDGET_KEY, CONFIG_KEY, SchedulerSpec

METRIC, MODE = "val_accuracy", "max"


def make(budgets: tuple[int, ...], keep: float, n: int, seed: int = 0) -> HalvingSearch:
    tpe = CompleteScheduleOptuna(metric=METRIC, mode=MODE, seed=seed, max_t=budgets[0])
    h = HalvingSearch(tpe, SchedulerSpec("halving", budgets=budgets, keep=keep), n, METRIC, MODE)
    assert h.set_search_properties(METRIC, MODE, {"x": tune.uniform(0.0, 1.0)})
    return h


def value(config: dict, budget: int) -> float:
    # a config's quality is its x; longer schedules score higher, ranks stay as at the first budget
    # except for the noise term, which makes the first budget an imperfect predictor
    return config["x"] * (1 + budget / 10) + 0.05 * ((hash(config[CONFIG_KEY]) % 7) - 3)


def drive(
    h: Searcher,
    slots: int,
    order_seed: int,
    fail: set[int] = frozenset(),
    stop_after: int | None = None,
    first_id: int = 0,
):
    """Run the searcher to FINISHED with `slots` parallel trials ending in a random order.
    Returns every started run as (trial id, config) in start order, and whether it finished;
    `h.overlaps` counts promotions started while a run of the budget below was still live."""
    rng = random.Random(order_seed)
    live: dict[str, dict] = {}
    started: list[tuple[str, dict]] = []
    n, completed = first_id, 0
    while True:
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
        cfg = live.pop(tid)
        budget = cfg[BUDGET_KEY]
        if int(tid[1:]) in fail:
            h.on_trial_complete(tid, None, error=True)
        else:
            for epoch in range(1, budget + 1):
                h.on_trial_result(tid, {METRIC: value(cfg, budget) * epoch / budget, "training_iteration": epoch})
            h.on_trial_complete(tid, {METRIC: value(cfg, budget), "training_iteration": budget})
        completed += 1
        if stop_after is not None and completed >= stop_after:
            return started, False


def rungs(started: list[tuple[str, dict]], budgets: tuple[int, ...]) -> list[list[str]]:
    return [[c[CONFIG_KEY] for _, c in started if c[BUDGET_KEY] == b] for b in budgets]


def top(started: list[tuple[str, dict]], budget: int, k: int) -> set[str]:
    vals = {c[CONFIG_KEY]: value(c, budget) for _, c in started if c[BUDGET_KEY] == budget}
    return set(sorted(vals, key=vals.get, reverse=True)[:k])


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
    assert set(ids[1]) == top(started, 2, 4)
    assert set(ids[2]) == top(started, 4, 2)
    # a promoted run trains the config it promotes: same searched values, a longer budget
    first = {c[CONFIG_KEY]: c["x"] for _, c in started if c[BUDGET_KEY] == 2}
    assert all(c["x"] == first[c[CONFIG_KEY]] for _, c in started)


def test_promotion_starts_before_the_rung_ends() -> None:
    """Asynchronous: a config whose place in the top half is already certain starts its longer
    run while first-budget runs are still running, not after a barrier."""
    h = make((2, 8), 0.5, 8)
    drive(h, 4, 0)
    assert getattr(h, "overlaps", 0) >= 1


def test_optuna_learns_only_first_budget_values() -> None:
    h = make((2, 8), 0.5, 6)
    started, _ = drive(h, 2, 5)
    trials = h.inner._ot_study.trials
    assert len(trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    by_x = {round(c["x"], 12): value(c, 2) for _, c in started if c[BUDGET_KEY] == 2}
    assert sorted(t.value for t in trials) == pytest.approx(sorted(by_x.values()))


def test_failed_configs_are_never_promoted_and_the_search_still_ends() -> None:
    h = make((2, 8), 0.5, 6)
    started, finished = drive(h, 2, 0, fail={0, 1, 2, 3})
    assert finished
    promoted = rungs(started, (2, 8))[1]
    failed = {c[CONFIG_KEY] for i, (_, c) in enumerate(started) if i in {0, 1, 2, 3}}
    assert promoted and not set(promoted) & failed


def test_state_survives_save_and_restore(tmp_path: Path) -> None:
    """Resume: a searcher restored from its saved state repeats no promotion and loses no run."""
    budgets = (2, 4)
    h = make(budgets, 0.5, 6)
    before, finished = drive(h, 2, 7, stop_after=5)
    assert not finished
    h.save(str(tmp_path / "s.pkl"))
    restored = make(budgets, 0.5, 6, seed=99)
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.runs == h.runs and restored.values == h.values
    live = [t for t, (cid, r) in restored.runs.items() if cid not in restored.values[r]]
    for tid in live:  # Tune requeues the unfinished runs under their own ids
        _cid, r = restored.runs[tid]
        restored.on_trial_complete(tid, {METRIC: 0.5 + 0.01 * r, "training_iteration": budgets[r]})
    after, finished = drive(restored, 2, 8, first_id=100)
    assert finished
    ids = rungs(before + after, budgets)
    assert [len(r) for r in ids] == [6, 3] and all(len(set(r)) == len(r) for r in ids)


def test_asha_stopped_trials_reach_optuna_as_pruned() -> None:
    tpe = CompleteScheduleOptuna(metric=METRIC, mode=MODE, seed=0, max_t=4)
    tpe.set_search_properties(METRIC, MODE, {"x": tune.uniform(0.0, 1.0)})
    for tid, last, diverged in (("done", 4, 0), ("stopped", 2, 0), ("nan", 1, 1)):
        tpe.suggest(tid)
        # as Tune does: the result on which ASHA stops a trial reaches only on_trial_complete
        for epoch in range(1, last + (1 if tid == "done" else 0)):
            tpe.on_trial_result(tid, {METRIC: 0.1 * epoch, "training_iteration": epoch})
        tpe.on_trial_complete(
            tid, {METRIC: 0.0 if diverged else 0.1 * last, "training_iteration": last, "diverged": diverged}
        )
    done, stopped, nan = tpe._ot_study.trials
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == pytest.approx(0.4)
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.last_step == 2
    assert stopped.value == pytest.approx(0.2)  # its value at the rung where it stopped
    assert nan.state == optuna.trial.TrialState.COMPLETE and nan.value == 0.0  # diverged: a verdict, scored worst


def test_importance_needs_enough_values_of_one_budget(tmp_path: Path) -> None:
    """fANOVA runs on first-budget values only (every config has one), and says n/a below 10."""
    import numpy as np
    import yaml

    from s9tune.search.export import importance
    from s9tune.search.space import load_space
    from s9tune.search.trials import Experiment, TrialRow

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
    space = load_space(tmp_path / "s.yaml")
    rng = np.random.default_rng(0)

    def row(i: int, budget: int, lr: float, aug: float) -> TrialRow:
        v = 0.9 - 0.3 * aug  # only aug_strength matters
        return TrialRow(
            f"t{i}-{budget}", {"max_lr": lr, "aug_strength": aug}, "completed", budget, v, v, 1.0, [v], f"c{i}", budget
        )

    points = [(float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.0, 2.0))) for _ in range(12)]
    rows = [row(i, 2, lr, aug) for i, (lr, aug) in enumerate(points)]
    rows += [row(i, 4, 0.5, 0.0) for i in range(6)]  # a second budget: must not enter the same fit
    imp, basis = importance(Experiment(str(tmp_path / "x"), space, rows))
    assert "12 configs' values at the first budget (2-epoch schedules)" in basis
    assert set(imp) == {"max_lr", "aug_strength"} and imp["aug_strength"] > 0.8
    few, why = importance(Experiment(str(tmp_path / "x"), space, rows[:9]))
    assert few == {} and why.startswith("n/a: 9 ") and "needs at least 10" in why


def write_experiment_state(folder: Path, trials: list[tuple[str, dict, str, dict]]) -> None:
    """An experiment_state file as Tune's controller writes it, holding these trials."""
    from ray.tune import PlacementGroupFactory
    from ray.tune.experiment.trial import Trial
    from ray.tune.utils.serialization import TuneFunctionEncoder

    data = []
    for tid, config, status, result in trials:
        t = Trial(
            "train_trial",
            config=config,
            trial_id=tid,
            stub=True,
            placement_group_factory=PlacementGroupFactory([{"CPU": 1}]),
        )
        t.create_placement_group_factory()
        t.set_status(status)
        t.run_metadata.last_result = result
        data.append(t.get_json_state())
    state = {"trial_data": data, "runner_data": {}, "stats": {}}
    (folder / "experiment_state-2026-11-25_00-00-00.json").write_text(json.dumps(state, cls=TuneFunctionEncoder))


def test_resume_reconciles_the_searcher_with_the_trials_tune_restores(tmp_path: Path) -> None:
    """The searcher's file and the trials' file are written one after the other, so a kill can
    leave them from different moments. On restore the searcher drops a run Tune lost and adopts
    a run it never heard of, so nothing is run twice and no promotion is repeated or missed."""
    budgets = (2, 4)
    h = make(budgets, 0.5, 4)
    started = []
    for i in range(4):  # 4 first-budget runs; 3 finish
        cfg = h.suggest(f"t{i}")
        started.append((f"t{i}", cfg))
    for tid, cfg in started[:3]:
        h.on_trial_complete(tid, {METRIC: value(cfg, 2), "training_iteration": 2})
    h.save_to_dir(str(tmp_path), "s")
    # what Tune saved a moment later: t3 finished too, and t4 (a promotion the saved searcher
    # never made) was running; the searcher's later run t5 is not in it at all
    promoted = max(started[:3], key=lambda tc: value(tc[1], 2))[1]
    t4 = {**promoted, BUDGET_KEY: 4}
    trials = [(tid, cfg, "TERMINATED", {METRIC: value(cfg, 2), "training_iteration": 2}) for tid, cfg in started]
    trials.append(("t4", t4, "RUNNING", {METRIC: 0.1, "training_iteration": 1}))
    write_experiment_state(tmp_path, trials)
    restored = make(budgets, 0.5, 4, seed=3)
    restored.restore_from_dir(str(tmp_path))
    assert restored.runs["t4"] == (promoted[CONFIG_KEY], 1)
    assert restored.values[0][started[3][1][CONFIG_KEY]] == pytest.approx(value(started[3][1], 2))
    assert restored.started[1] == [promoted[CONFIG_KEY]]  # adopted: not promoted a second time
    restored.on_trial_complete("t4", {METRIC: value(t4, 4), "training_iteration": 4})
    after, finished = drive(restored, 2, 1, first_id=10)
    assert finished
    ids = rungs([*started, ("t4", t4), *after], budgets)
    assert [len(r) for r in ids] == [4, 2] and len(set(ids[1])) == 2
    assert set(ids[1]) == top(started, 2, 2)
    # the inner TPE study: every first-budget run once, all complete
    assert [t.state for t in restored.inner._ot_study.trials].count(optuna.trial.TrialState.COMPLETE) == 4


def test_resume_reconciles_optuna_under_asha(tmp_path: Path) -> None:
    tpe = CompleteScheduleOptuna(metric=METRIC, mode=MODE, seed=0, max_t=3)
    tpe.set_search_properties(METRIC, MODE, {"x": tune.uniform(0.0, 1.0)})
    a, b = tpe.suggest("a"), tpe.suggest("b")
    tpe.save_to_dir(str(tmp_path), "s")
    write_experiment_state(
        tmp_path,
        [
            ("a", a, "TERMINATED", {METRIC: 0.5, "training_iteration": 3}),  # finished after the searcher's save
            ("c", {"x": 0.25}, "RUNNING", {METRIC: 0.2, "training_iteration": 1}),  # started after it
        ],
    )  # and b, which the searcher started, never made it into Tune's state
    restored = CompleteScheduleOptuna(metric=METRIC, mode=MODE, seed=0, max_t=3)
    restored.set_search_properties(METRIC, MODE, {"x": tune.uniform(0.0, 1.0)})
    restored.restore_from_dir(str(tmp_path))
    restored.on_trial_result("c", {METRIC: 0.3, "training_iteration": 2})  # a trial it adopted: no KeyError
    restored.on_trial_complete("c", {METRIC: 0.4, "training_iteration": 3})
    states = {t.params["x"]: (t.state, t.value) for t in restored._ot_study.trials}
    assert states[a["x"]] == (optuna.trial.TrialState.COMPLETE, 0.5)
    assert states[b["x"]][0] == optuna.trial.TrialState.FAIL
    assert states[0.25] == (optuna.trial.TrialState.COMPLETE, 0.4)
