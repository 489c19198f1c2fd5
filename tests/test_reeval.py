"""The re-evaluation step: once every config has its value, the top ones train again on more
seeds, and the pick is the best mean. The searcher on its own (as test_halving.py drives it),
the scheduler that never stops a rerun, the pick in the results, the space file, and one real
search through the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher
from test_halving import METRIC, drive, journal, space

from s9tune.search.searcher.reeval import Reeval, best_mean
from s9tune.search.searcher.searcher import StudySearch, TrialView
from s9tune.search.space.sections import ReevalSpec
from s9tune.search.space.space import BUDGET_KEY, CONFIG_KEY, SEED_KEY, SchedulerSpec, SearchSpace

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def with_reeval(s: SearchSpace, top: int, seeds: int) -> SearchSpace:
    return dataclasses.replace(s, reevaluate=ReevalSpec(top, seeds))


def searched_runs(started: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(t, c) for t, c in started if SEED_KEY not in c]


@pytest.mark.parametrize("slots", [1, 2, 4])
@pytest.mark.parametrize("order", range(8))
def test_exactly_the_top_configs_rerun_on_more_seeds_in_any_order(slots: int, order: int) -> None:
    """Reruns start as soon as a config is certain to be in the top, so whatever order runs
    end in, the reruns are exactly the final top's, each with every seed once."""
    h = StudySearch(with_reeval(space((2, 4), 0.5, 6), top=2, seeds=2), name="t")
    started, finished = drive(h, slots, order_seed=order)
    assert finished
    search = searched_runs(started)
    reruns = [c for _, c in started if SEED_KEY in c]
    assert len(search) == 6 + 3 and len(reruns) == 2 * 2
    final = {c[CONFIG_KEY]: h.rungs[1].values[c[CONFIG_KEY]] for _, c in search if c[BUDGET_KEY] == 4}
    started = [c[CONFIG_KEY] for _, c in search if c[BUDGET_KEY] == 2]
    top = sorted(final, key=lambda c: (-final[c], started.index(c)))[:2]  # ties: the earlier-started config
    assert sorted((c[CONFIG_KEY], c[SEED_KEY]) for c in reruns) == sorted((t, j) for t in top for j in (1, 2))
    for c in reruns:  # the config's values on a complete full-length schedule, with another seed
        assert c[BUDGET_KEY] == 4
        assert c["x"] == next(s["x"] for _, s in search if s[CONFIG_KEY] == c[CONFIG_KEY])
    study = h.reruns.study
    assert [t.state for t in study.trials] == [COMPLETE] * 4 and study.user_attrs["reruns"] is True
    assert h.suggest("more") == Searcher.FINISHED


def test_a_rerun_fills_a_free_slot_once_its_config_is_certain() -> None:
    """ASHA, top 2: with one search run still going, the best complete config is certain to
    stay in the top 2 and reruns at once; the second is certain only when the last run ends."""
    h = StudySearch(with_reeval(space((4,), 1.0, 3, asha=True), top=2, seeds=1), name="a")
    for tid in ("a", "b", "c"):
        h.suggest(tid)
    h.on_trial_complete("a", {METRIC: 0.9, "training_iteration": 4})
    h.on_trial_complete("c", {METRIC: 0.5, "training_iteration": 4})
    first = h.suggest("r1")  # b still runs: c may yet fall to third, a cannot
    assert first[CONFIG_KEY] == "a" and h.suggest("r2") is None
    h.on_trial_complete("b", {METRIC: 0.7, "training_iteration": 4})
    assert h.suggest("r2")[CONFIG_KEY] == "b"
    assert h.suggest("r3") is None and not h.is_finished()
    for tid in ("r1", "r2"):
        h.on_trial_complete(tid, {METRIC: 0.6, "training_iteration": 4})
    assert h.suggest("r3") == Searcher.FINISHED and h.is_finished()


def test_under_asha_only_complete_schedules_are_ranked_and_reruns_name_their_trial() -> None:
    h = StudySearch(with_reeval(space((4,), 1.0, 3, asha=True), top=2, seeds=1), name="a")
    # "stopped" would rank first on its value, but ASHA stopped it at epoch 2: not a final value
    for tid, last, value in (("done", 4, 0.5), ("stopped", 2, 0.9), ("also", 4, 0.6)):
        cfg = h.suggest(tid)
        assert SEED_KEY not in cfg
        h.on_trial_complete(tid, {METRIC: value, "training_iteration": last})
    first, second = h.suggest("r1"), h.suggest("r2")
    assert (first[CONFIG_KEY], second[CONFIG_KEY]) == ("also", "done")  # Tune's trial ids, best first
    assert first[SEED_KEY] == second[SEED_KEY] == 1 and BUDGET_KEY not in first
    assert h.suggest("r3") is None  # waits for the reruns
    h.on_trial_complete("r1", {METRIC: 0.55, "training_iteration": 4})
    h.on_trial_complete("r2", {METRIC: 0.1, "training_iteration": 2}, error=True)  # failed part-way
    assert [t.state for t in h.reruns.study.trials] == [COMPLETE, FAIL]
    assert h.suggest("r3") == Searcher.FINISHED and h.is_finished()


def test_no_rerun_is_repeated_or_lost_across_a_restart(tmp_path: Path) -> None:
    s = with_reeval(space((2, 4), 0.5, 4), top=2, seeds=2)
    for stop in range(4, 12):  # the first stop with a rerun finished and another running
        tmp = tmp_path / str(stop)
        tmp.mkdir()
        h = StudySearch(s, store=journal(tmp), name="t")
        started, _ = drive(h, 2, order_seed=3, stop_after=stop)
        live = {t: c for t, c in started if t in h.open or t in h.reruns.open}
        if h.reruns.plan.values and any(SEED_KEY in c for c in live.values()):
            break
    else:
        pytest.fail("no stop left a rerun finished and another running")
    restored = StudySearch(s, store=journal(tmp), name="t")
    assert restored.reruns.plan.values == h.reruns.plan.values and restored.final == h.final
    restored.reconcile([TrialView(t, c, "PENDING" if t in live else "TERMINATED", {}) for t, c in started])
    after, finished = drive(restored, 2, order_seed=4, first_id=100, live=live)
    assert finished
    reruns = [(c[CONFIG_KEY], c[SEED_KEY]) for _, c in started + after if SEED_KEY in c]
    assert len(reruns) == len(set(reruns)) == 4
    assert len(restored.reruns.plan.values) == 4


def test_a_rerun_tune_lost_is_planned_again(tmp_path: Path) -> None:
    s = with_reeval(space((4,), 1.0, 2, asha=True), top=1, seeds=1)
    h = StudySearch(s, store=journal(tmp_path), name="t")
    for tid in ("a", "b"):
        h.suggest(tid)
        h.on_trial_complete(tid, {METRIC: 0.5 if tid == "a" else 0.4, "training_iteration": 4})
    lost = h.suggest("lost")  # asked, journaled, but Tune never saved it
    assert lost[CONFIG_KEY] == "a"
    restored = StudySearch(s, store=journal(tmp_path), name="t")
    done = {METRIC: 0.5, "training_iteration": 4}
    # and one rerun Tune has whose search run neither knows (a foreign or damaged state): ignored
    ghost = TrialView("ghost", {"x": 0.0, CONFIG_KEY: "nobody", SEED_KEY: 1}, "TERMINATED", done)
    restored.reconcile([*(TrialView(t, {"x": 0.0}, "TERMINATED", done) for t in ("a", "b")), ghost])
    assert "ghost" not in restored.reruns.runs
    again = restored.suggest("again")
    assert again[CONFIG_KEY] == "a" and again[SEED_KEY] == lost[SEED_KEY]
    assert restored.reruns.study.trials[0].user_attrs["lost"] is True


def test_asha_never_stops_a_rerun() -> None:
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from s9tune.search.searcher.asha import scheduler_for

    s = dataclasses.replace(space((8,), 1.0, 4, asha=True), scheduler=SchedulerSpec("asha", 2, 2.0, 1))
    sched = scheduler_for(s)
    sched.set_search_properties(METRIC, "max")
    trials = {
        name: Trial("t", config=cfg, trial_id=name, stub=True)
        for name, cfg in (("good", {"x": 1}), ("bad", {"x": 0}), ("rerun", {"x": 0, CONFIG_KEY: "bad", SEED_KEY: 1}))
    }
    for t in trials.values():
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, trials["good"], {METRIC: 0.9, "training_iteration": 2}) == "CONTINUE"
    assert sched.on_trial_result(None, trials["bad"], {METRIC: 0.1, "training_iteration": 2}) == TrialScheduler.STOP
    assert sched.on_trial_result(None, trials["rerun"], {METRIC: 0.1, "training_iteration": 2}) == "CONTINUE"
    # a rerun's last value never joins a rung's cutoff. Ray records a completed trial's value at
    # the highest rung at or below its last epoch (milestones 8, 4, 2 here): a rerun that diverged
    # in epoch 3 would be recorded at rung 2 with 0.0, lowering the cutoff there from 0.5 (the
    # median of 0.9 and 0.1) to 0.1, so a late search trial at 0.3 would go on instead of stopping
    sched.on_trial_complete(None, trials["rerun"], {METRIC: 0.0, "training_iteration": 3, "diverged": 1})
    late = Trial("t", config={"x": 2}, trial_id="late", stub=True)
    sched.on_trial_add(None, late)
    assert sched.on_trial_result(None, late, {METRIC: 0.3, "training_iteration": 2}) == TrialScheduler.STOP
    # nor is a rerun one of its trials when Tune removes it (after an error)
    sched.on_trial_remove(None, Trial("t", config={"x": 0, CONFIG_KEY: "bad", SEED_KEY: 2}, trial_id="r2", stub=True))


def test_bookkeeping_plans_the_certain_configs_and_keeps_what_was_started() -> None:
    r = Reeval(ReevalSpec(top=2, seeds=2))
    r.start(("old", 1))  # a resumed search had started it when its config was certain
    r.add(["new", "other"])  # at most `top` configs
    assert r.planned == [("old", 1), ("new", 1), ("new", 2)] and r.configs == ["old", "new"]
    assert r.next_run() == ("new", 1) and not r.finished()
    assert ReevalSpec(3, 2).runs(2) == 4 and ReevalSpec().runs(10) == 0


def test_the_pick_is_the_best_mean_not_the_best_single_run() -> None:
    lucky, steady = [0.80, 0.70, 0.71], [0.78, 0.77, 0.78]
    assert best_mean({"lucky": lucky, "steady": steady}, {"lucky", "steady"}) == "steady"
    assert best_mean({"lucky": lucky, "steady": steady}, {"lucky"}) == "lucky"  # only among re-evaluated
    assert best_mean({"a": [0.5]}, set()) is None
    assert best_mean({"a": [0.6, 0.5], "b": [0.5, 0.6]}, {"a", "b"}) == "a"  # tie: the better search run


def test_results_pick_by_mean_and_say_so(tmp_path: Path) -> None:
    from s9tune.search.experiment.export import format_results, seed_mean_rows
    from s9tune.search.experiment.trials import Experiment, TrialRow
    from s9tune.search.space.dists import Dist

    s = with_reeval(space((4,), 1.0, 3, asha=True), top=2, seeds=2)
    s = dataclasses.replace(s, dists=(Dist("max_lr", "uniform", 0.05, 2.0),))

    def row(tid: str, value: float, *, cid: str = "", seed: int | None = None, status: str = "completed") -> TrialRow:
        return TrialRow(tid, {"max_lr": 0.1}, status, 4, value, value, 1.0, config_id=cid or tid, budget=4, seed=seed)

    rows = [row("lucky", 0.80), row("steady", 0.78), row("third", 0.60)]
    reruns = [row("r1", 0.70, cid="lucky", seed=1), row("r2", 0.71, cid="lucky", seed=2)]
    reruns += [row("r3", 0.77, cid="steady", seed=1), row("r4", 0.78, cid="steady", seed=2)]
    exp = Experiment(str(tmp_path), s, rows + reruns)
    best = exp.best()
    assert best.trial_id == "steady" and best.seeds == 3 and best.val_accuracy == pytest.approx(0.7767, abs=1e-4)
    assert not exp.interrupted()
    assert [m["config"] for m in seed_mean_rows(exp)] == ["steady", "lucky"]
    printed = format_results(exp)
    assert "steady       mean 77.67% over 3 (78.00%, 77.00%, 78.00%)  <- picked" in printed
    assert "rerun of" in printed.splitlines()[0] and "lucky, seed 2" in printed
    # parameter importance counts each config once: the reruns repeat its values
    assert "n/a: 3 trials that completed the schedule" in printed
    # a rerun missing (the search was stopped before it) is an interrupted search
    assert Experiment(str(tmp_path), s, rows + reruns[:3]).interrupted()
    # without reruns, the best single run, as before
    assert Experiment(str(tmp_path), s, rows).best().trial_id == "lucky"


def test_space_file_parses_checks_and_records_the_step(tmp_path: Path) -> None:
    from conftest import SEARCH_SPACE

    from s9tune.errors import ConfigError
    from s9tune.search.space.space import load_space

    def load(extra: dict) -> SearchSpace:
        import yaml

        p = tmp_path / "s.yaml"
        p.write_text(yaml.safe_dump({**SEARCH_SPACE, **extra}))
        return load_space(p)

    sp = load({"reevaluate": {"top": 3, "seeds": 2}})
    assert sp.reevaluate == ReevalSpec(3, 2)
    assert sp.max_trials == 6 + 6
    assert SearchSpace.from_record(json.loads(json.dumps(sp.to_record()))).reevaluate == ReevalSpec(3, 2)
    old = sp.to_record()
    del old["reevaluate"]  # recorded before the step existed
    assert not SearchSpace.from_record(old).reevaluate.on
    assert not load({}).reevaluate.on
    for bad, msg in (
        ({"top": 3}, "reevaluate.seeds: missing"),
        ({"top": 0, "seeds": 2}, "reevaluate.top: must lie in"),
        ({"top": 2, "seeds": 101}, "reevaluate.seeds: must lie in"),
        ({"top": 2, "seeds": 1, "k": 1}, "reevaluate.k: unknown key"),
        ({"top": "3", "seeds": 1}, "reevaluate.top: expected an integer"),
    ):
        with pytest.raises(ConfigError, match=msg):
            load({"reevaluate": bad})


def test_a_rerun_trains_with_its_seed() -> None:
    from s9tune.search.execution.trainable import trial_config

    base = {"epochs": 4, "seed": 7}
    assert trial_config({"max_lr": 0.3, CONFIG_KEY: "t1", SEED_KEY: 9}, base).seed == 9
    assert trial_config({"max_lr": 0.3}, base).seed == 7


@pytest.mark.slow
def test_a_search_reruns_its_top_config_and_retrain_takes_the_pick(mini: Path, tmp_path: Path) -> None:
    """Through the CLI: ASHA over 3 configs, then the best complete one on 1 more seed; the
    rerun trains with that seed, runs to the end, and results, leaderboard and best_config
    follow the mean."""
    import yaml
    from conftest import SEARCH_SPACE, search_cmd, trial_runs

    space_d = {
        **SEARCH_SPACE,
        "num_samples": 3,
        "fixed": {**SEARCH_SPACE["fixed"], "epochs": 2, "train_subset": 384},
        "reevaluate": {"top": 1, "seeds": 1},
    }
    res = subprocess.run(search_cmd(tmp_path, mini, "r", space_d), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    exp = tmp_path / "st" / "r"
    runs = trial_runs(exp)
    reruns = [r for r in runs.values() if SEED_KEY in r["params"]]
    assert len(runs) == 4 and len(reruns) == 1
    rerun = reruns[0]
    assert rerun["params"][SEED_KEY] == 1 and [row["training_iteration"] for row in rerun["rows"]] == [1, 2]
    of = next(r for r in runs.values() if r["rows"] and r["rows"][0]["trial_id"] == rerun["params"][CONFIG_KEY])
    assert {k: of["params"][k] for k in SEARCH_SPACE["space"]} == {k: rerun["params"][k] for k in SEARCH_SPACE["space"]}
    board = json.loads((exp / "leaderboard.json").read_text())
    (picked,) = board["reevaluated"]
    values = [of["rows"][-1][METRIC], rerun["rows"][-1][METRIC]]
    assert picked["values"] == pytest.approx(values) and picked["mean"] == pytest.approx(sum(values) / 2)
    header = (exp / "best_config.yaml").read_text()
    assert "picked by its mean over 2 seeds" in header
    assert yaml.safe_load(header)["max_lr"] == pytest.approx(of["params"]["max_lr"])
    assert "Re-evaluated on 1 more seed(s)" in res.stdout


def test_the_console_plans_the_reruns_and_names_them() -> None:
    import io
    from types import SimpleNamespace

    from test_progress import FakeTrial

    from s9tune.search.execution.console import SearchProgress
    from s9tune.search.execution.runner import _plan

    s = with_reeval(space((4,), 1.0, 2, asha=True), top=1, seeds=1)
    plan = _plan(s, SimpleNamespace(name="exp"))
    assert (plan.trials, plan.epochs) == (3, 12)
    halving = _plan(with_reeval(space((2, 4), 0.5, 4), top=3, seeds=2), SimpleNamespace(name="exp"))
    assert (halving.trials, halving.epochs) == (4 + 2 + 2 * 2, 4 * 2 + 2 * 4 + 4 * 4)  # top 3 of a rung of 2
    out = io.StringIO()
    progress = SearchProgress(plan, out, live=False)
    trials: list = []
    for t in (
        FakeTrial("a", {"x": 0.1}),
        FakeTrial("b", {"x": 0.2}),
        FakeTrial("r", {"x": 0.2, CONFIG_KEY: "b", SEED_KEY: 1}),
    ):
        trials.append(t)
        progress.on_trial_start(0, trials, t)
        t.status, t.last_result = "RUNNING", {"training_iteration": 4, "val_accuracy": 0.5}
        progress.on_trial_complete(0, trials, t)
        t.status = "TERMINATED"
    lines = out.getvalue().splitlines()
    assert "trial r started" in lines[-2] and "(rerun of trial b with seed 1)" in lines[-2], lines
    assert "(3/3 done, 0 running)" in lines[-1], lines


def test_a_diverged_run_is_never_rerun(tmp_path: Path) -> None:
    """A diverged run is a finished run valued 0 (TPE learns to avoid it), but not a config worth
    another seed: with room for two configs in the top, only the one that completed reruns,
    also for a searcher rebuilt from the journal."""
    s = with_reeval(space((4,), 1.0, 2, asha=True), top=2, seeds=1)
    h = StudySearch(s, store=journal(tmp_path), name="t")
    for tid in ("a", "b"):
        h.suggest(tid)
    h.on_trial_complete("a", {METRIC: 0.5, "training_iteration": 4})
    h.on_trial_complete("b", {METRIC: 0.0, "training_iteration": 4, "diverged": 1})  # at its last epoch
    assert h.studies[0].trials[1].state == COMPLETE and h.studies[0].trials[1].value == 0.0
    restored = StudySearch(s, store=journal(tmp_path), name="t")
    for searcher in (h, restored):
        rerun = searcher.suggest("r1")
        assert rerun[CONFIG_KEY] == "a" and rerun[SEED_KEY] == 1
        assert searcher.suggest("r2") is None  # b gets none, and nothing else is planned
        searcher.on_trial_complete("r1", {METRIC: 0.6, "training_iteration": 4})
        assert searcher.suggest("r3") == Searcher.FINISHED
