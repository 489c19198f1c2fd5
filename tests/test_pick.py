"""The pick's certainty and `reevaluate: auto`: the statistics (search/searcher/pick.py), the rule
inside the searcher (when it reruns, what, and when it stops; the same after a restart and in
any end order), and what `results`, leaderboard.json and best_config.yaml state about the pick."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.search import Searcher
from test_halving import METRIC, journal, space

from s9tune.search.searcher.pick import auto_reruns, by_mean, certainty, interval, noise, posterior, ranked
from s9tune.search.searcher.searcher import StudySearch, TrialView
from s9tune.search.space.sections import ReevalSpec
from s9tune.search.space.space import CONFIG_KEY, SEED_KEY, SearchSpace

PICK_KEYS = {
    "config",
    "mean",
    "ci95",
    "runs",
    "sigma",
    "sigma_from",
    "runner_up",
    "p_beats_runner_up",
    "p_beats_baseline",
}
values_lists = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=4)


def auto(s: SearchSpace, confidence: float = 0.9, cap: float = 0.15, margin: float = 0.25) -> SearchSpace:
    return dataclasses.replace(s, reevaluate=ReevalSpec(auto=True, confidence=confidence, cap=cap, margin=margin))


# -- the statistics --------------------------------------------------------------------
def test_noise_is_pooled_over_repeated_configs_and_unmeasured_without_any() -> None:
    v = {"a": [0.80, 0.78], "b": [0.70], "c": [0.60, 0.62, 0.64]}
    nz = noise(v)
    ss = (0.01**2 * 2) + (0.02**2 * 2)
    assert nz.df == 3 and nz.configs == 2 and nz.runs == 5 and nz.sigma == pytest.approx(math.sqrt(ss / 3))
    assert not noise({"a": [0.8], "b": [0.7]}).measured and noise({}).sigma is None
    assert posterior({"a": [0.8], "b": [0.7]}) is None


@settings(derandomize=True, max_examples=60, deadline=None)
@given(values_lists, values_lists, st.floats(0.001, 0.2))
def test_p_better_is_a_probability_symmetric_and_grows_with_the_gap(a: list[float], b: list[float], sd: float) -> None:
    """Two configs (too few to estimate a spread from: no shrinking), b's runs measuring σ."""
    v = {"a": a, "b": [*b, b[0] + sd]}
    post = posterior(v)
    p, q = post.p_better("a", "b"), post.p_better("b", "a")
    assert 0.0 <= p <= 1.0 and p + q == pytest.approx(1.0)
    better = posterior({**v, "a": [x + 0.05 for x in a]})
    assert better.p_better("a", "b") >= p  # a better a is more surely better
    nz = noise(v)
    lo, hi = interval(a, nz)
    assert lo < sum(a) / len(a) < hi and hi - lo == pytest.approx(2 * (sum(a) / len(a) - lo))
    lo4, hi4 = interval(a[:1] * 4, noise({**v, "a": a[:1] * 4}))  # more runs of one value: narrower
    lo1, hi1 = interval(a[:1], noise({**v, "a": a[:1]}))
    assert hi4 - lo4 < hi1 - lo1


def test_without_a_spread_to_shrink_towards_p_better_is_about_students_t() -> None:
    from scipy import stats

    post = posterior({"a": [0.80, 0.78], "b": [0.76]})  # 2 configs: a flat prior
    sigma = math.sqrt(2 * 0.01**2)
    expected = stats.t.cdf((0.79 - 0.76) / (sigma * math.sqrt(1 / 2 + 1)), 1)
    assert post.p_better("a", "b") == pytest.approx(expected, abs=2e-3)  # σ's posterior on a grid of 64
    _, hi = interval([0.80, 0.78], noise({"a": [0.80, 0.78]}))
    assert hi - 0.79 == pytest.approx(stats.t.ppf(0.975, 1) * sigma / math.sqrt(2))


def test_a_lucky_single_run_is_shrunk_more_than_a_mean_of_two() -> None:
    """The winner's curse: b's one run beats a's mean of two, but with seed noise as large as
    this (σ 7 points against configs that differ by a few) b's one run says less; the posterior
    ranks a first, and neither is surely better."""
    v = {"a": [0.80, 0.70], "b": [0.76], "c": [0.66, 0.64], "d": [0.62], "e": [0.70], "f": [0.65]}
    assert by_mean(v, set(v))[0] == "b" and ranked(v)[0] == "a"
    post = posterior(v)
    assert post.est["b"] < 0.76 and post.est["a"] < 0.75 and post.var("b") > post.var("a")
    assert 0.5 < post.p_better("a", "b") < 0.9
    # with little noise against the spread, the means speak for themselves
    quiet = {"a": [0.80, 0.799], "b": [0.76], "c": [0.66, 0.661], "d": [0.62], "e": [0.70], "f": [0.65]}
    assert ranked(quiet) == by_mean(quiet, set(quiet)) and posterior(quiet).p_better("a", "b") > 0.99


def test_auto_rule_reruns_the_leader_first_then_the_closest_contender_until_separated() -> None:
    assert auto_reruns({"a": [0.8], "b": [0.7]}, confidence=0.9, left=3) == ["a"]  # σ unmeasured: the leader
    assert auto_reruns({"a": [0.8], "b": [0.7]}, confidence=0.9, left=0) == []  # the cap is spent
    # σ from a's pair (0.01): b is far below, c is close; c has fewer runs, so c runs again
    v = {"a": [0.80, 0.79], "b": [0.60], "c": [0.79]}
    assert auto_reruns(v, confidence=0.9, left=3) == ["c"]
    # as many runs each: both run again, the leader first (one if the cap allows one)
    v = {"a": [0.80, 0.79], "c": [0.795, 0.79]}
    assert auto_reruns(v, confidence=0.9, left=3) == ["a", "c"] and auto_reruns(v, confidence=0.9, left=1) == ["a"]
    # the contender has more runs than the leader: the leader runs again
    assert auto_reruns({"a": [0.81], "c": [0.80, 0.79]}, confidence=0.9, left=3) == ["a"]
    # separated from everyone at the confidence: stop
    assert auto_reruns({"a": [0.90, 0.91], "b": [0.60]}, confidence=0.9, left=3) == []
    # a near-tie with noise small against the configs' spread: not worth reruns with a margin
    tie = {"a": [0.800, 0.801], "b": [0.800, 0.799], "c": [0.60], "d": [0.70], "e": [0.50]}
    assert auto_reruns(tie, confidence=0.9, left=3) == ["a", "b"]
    assert auto_reruns(tie, confidence=0.9, left=3, margin=0.25) == []
    # the leader is by mean, not by its first run: "a" fell below "b" on its rerun
    assert by_mean({"a": [0.80, 0.60], "b": [0.75]}, {"a", "b"}) == ["b", "a"]
    assert auto_reruns({"a": [0.80, 0.60], "b": [0.75]}, confidence=0.9, left=3) == ["b"]


def test_certainty_names_the_runner_up_and_the_baseline_or_says_why_not() -> None:
    v = {"a": [0.80, 0.78], "b": [0.76], "base": [0.60, 0.61]}
    c = certainty(v, "a", baseline="base")
    block = c.to_json()
    assert set(block) >= PICK_KEYS and block["runner_up"] == "b" and block["runs"] == 2
    assert block["mean"] == pytest.approx(0.79) and block["ci95"][0] < 0.79 < block["ci95"][1]
    assert 0.5 < block["p_beats_runner_up"] < 1 and block["p_beats_baseline"] > 0.99
    assert "2 configs that ran more than once" in block["sigma_from"]
    text = "\n".join(c.lines())
    assert "95% interval" in text and "runner-up, b" in text and "P(truly better than the baseline) > 0.99" in text
    assert "the pick is the baseline" in "\n".join(certainty(v, "base", baseline="base").lines())
    no_base = certainty(v, "a", baseline=None, baseline_note="the search had no baseline").to_json()
    assert no_base["p_beats_baseline"] is None and no_base["baseline_note"] == "the search had no baseline"


def test_unmeasured_noise_is_said_in_words_not_numbers() -> None:
    c = certainty({"a": [0.80], "b": [0.79]}, "a", baseline="b")
    block = c.to_json()
    assert block["sigma"] is None and block["ci95"] is None and block["p_beats_runner_up"] is None
    assert block["p_beats_baseline"] is None and block["sigma_from"].startswith("unmeasured")
    (line,) = c.lines()
    assert "unmeasured" in line and "how sure: unknown" in line and "interval" not in line.split("unknown")[0]
    assert "P(" not in line and "σ" not in line


# -- the rule inside the searcher ------------------------------------------------------
def quality(cfg: dict) -> float:
    return 0.5 + 0.4 * cfg["x"]


def rerun_value(cfg: dict, spread: float) -> float:
    """A rerun's value: its config's quality plus noise fixed by (config, seed)."""
    rng = random.Random(f"{cfg[CONFIG_KEY]}/{cfg[SEED_KEY]}")
    return quality(cfg) + spread * rng.gauss(0, 1)


def run_search(h: StudySearch, *, slots: int, order_seed: int, spread: float, search_noise: float = 0.0):
    """Drive an ASHA-less search (`asha` spaces here have no scheduler) to FINISHED: runs end in
    a random order; every run reports its whole 4-epoch schedule. Returns the runs in start order."""
    rng = random.Random(order_seed)
    live: dict[str, dict] = {}
    started: list[tuple[str, dict]] = []
    n = 0
    while True:
        cfg = None
        while len(live) < slots:
            cfg = h.suggest(f"t{n:03d}")
            if cfg is None or cfg == Searcher.FINISHED:
                break
            live[f"t{n:03d}"] = cfg
            started.append((f"t{n:03d}", cfg))
            n += 1
        if cfg == Searcher.FINISHED and not live:
            return started
        assert live, "the searcher waits although nothing runs"
        tid = rng.choice(sorted(live))
        cfg = live.pop(tid)
        if SEED_KEY in cfg:
            v = rerun_value(cfg, spread)
        else:
            v = quality(cfg) + search_noise * random.Random(tid).gauss(0, 1)
        for e in range(1, 5):
            h.on_trial_result(tid, {METRIC: v, "training_iteration": e})
        h.on_trial_complete(tid, {METRIC: v, "training_iteration": 4})


def test_auto_waits_for_the_last_search_run_then_reruns_the_leader() -> None:
    h = StudySearch(auto(space((4,), 1.0, 3, asha=True), cap=0.5), name="a")  # 3 x 4 epochs: 2 reruns
    for tid in ("a", "b", "c"):
        h.suggest(tid)
    for tid, v in (("a", 0.9), ("c", 0.5)):
        h.on_trial_complete(tid, {METRIC: v, "training_iteration": 4})
    assert h.suggest("r1") is None and not h.is_finished()  # b may yet lead: nothing is certain
    h.on_trial_complete("b", {METRIC: 0.7, "training_iteration": 4})
    first = h.suggest("r1")
    assert first[CONFIG_KEY] == "a" and first[SEED_KEY] == 1
    assert h.suggest("r2") is None  # the next round waits for this rerun's value
    h.on_trial_complete("r1", {METRIC: 0.88, "training_iteration": 4})
    # a's two runs put σ at 1.4 points: a is separated from b (0.70) and c (0.50), so no more
    assert h.suggest("r2") == Searcher.FINISHED and h.is_finished()
    capped = StudySearch(auto(space((4,), 1.0, 3, asha=True), cap=0.15), name="c")  # one rerun
    for tid, v in (("a", 0.9), ("b", 0.89), ("c", 0.5)):
        capped.suggest(tid)
        capped.on_trial_complete(tid, {METRIC: v, "training_iteration": 4})
    assert capped.suggest("r1")[CONFIG_KEY] == "a"
    capped.on_trial_complete("r1", {METRIC: 0.80, "training_iteration": 4})  # not separated from b
    assert capped.suggest("r2") == Searcher.FINISHED  # but the cap is spent


@pytest.mark.parametrize("spread", [0.0001, 0.05])
def test_auto_spends_reruns_only_while_the_leader_is_not_separated(spread: float) -> None:
    """20 configs x 4 epochs, cap 0.3: at most 6 reruns. With little seed noise the leader
    separates after its first rerun; with noise about the spread it runs to the cap."""
    h = StudySearch(auto(space((4,), 1.0, 20, asha=True), cap=0.3, margin=0.0), name="a")
    started = run_search(h, slots=4, order_seed=0, spread=spread, search_noise=spread)
    reruns = [c for _, c in started if SEED_KEY in c]
    if spread < 0.01:
        assert len(reruns) == 1
    else:
        assert len(reruns) == 6
    seeds = [(c[CONFIG_KEY], c[SEED_KEY]) for c in reruns]
    assert len(set(seeds)) == len(seeds)  # a config's reruns each have a new seed
    for cid in {c for c, _ in seeds}:
        assert sorted(j for c, j in seeds if c == cid) == list(range(1, 1 + sum(c == cid for c, _ in seeds)))
    assert [t.state.name for t in h.reruns.study.trials] == ["COMPLETE"] * len(reruns)


def expected_reruns(h: StudySearch) -> list[tuple[str, int]]:
    """The reruns the rule asks for, applied round by round to the search's final values with
    the reruns' values known in advance (rerun_value): what the searcher must have run."""
    spec = h.reruns.plan.spec
    order = {c: i for i, c in enumerate(h.rungs[0].started)}
    values = {c: [h.final[c]] for c in sorted(h.final, key=order.get)}
    row = {c: next(t for t, (cc, r) in h.runs.items() if cc == c and r == 0) for c in values}
    cap = spec.runs(0, search_epochs=4 * len(h.rungs[0].started), max_t=4)
    out: list[tuple[str, int]] = []
    while nxt := auto_reruns(values, confidence=spec.confidence, margin=spec.margin, left=cap - len(out)):
        for c in nxt:
            seed = len(values[c])
            values[c].append(rerun_value({"x": h.params[c]["x"], CONFIG_KEY: row[c], SEED_KEY: seed}, 0.03))
            out.append((row[c], seed))
    return sorted(out)


def reruns_of(started: list[tuple[str, dict]]) -> list[tuple[str, int]]:
    return sorted((c[CONFIG_KEY], c[SEED_KEY]) for _, c in started if SEED_KEY in c)


@settings(derandomize=True, max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1, 2, 4]))
def test_auto_decides_by_the_rule_on_final_values_in_any_end_order(order_seed: int, slots: int) -> None:
    """Its rounds start only once every input is final, so in any end order the reruns are the
    rule's on the search's final values."""
    h = StudySearch(auto(space((4,), 1.0, 12, asha=True), cap=0.5, margin=0.0), name="a")
    got = reruns_of(run_search(h, slots=slots, order_seed=order_seed, spread=0.03, search_noise=0.03))
    assert got == expected_reruns(h) and got


def test_auto_after_a_restart_goes_on_where_it_stopped(tmp_path: Path) -> None:
    s = auto(space((4,), 1.0, 12, asha=True), cap=0.5, margin=0.0)
    h = StudySearch(s, store=journal(tmp_path), name="a")
    started = run_search_until(h, first_rerun_done=True)
    restored = StudySearch(s, store=journal(tmp_path), name="a")
    restored.reconcile([TrialView(t, c, "TERMINATED", {METRIC: 0.0, "training_iteration": 4}) for t, c in started])
    assert restored.reruns.plan.values == h.reruns.plan.values and restored.final == h.final
    after = run_search(restored, slots=2, order_seed=1, spread=0.03)
    got = reruns_of(started + after)
    assert got == expected_reruns(restored) and len(got) >= 2 and len(set(got)) == len(got)


def run_search_until(h: StudySearch, *, first_rerun_done: bool) -> list[tuple[str, dict]]:
    """Run one config at a time until the first rerun has finished; the runs started."""
    started: list[tuple[str, dict]] = []
    n = 0
    while True:
        tid = f"t{n:03d}"
        cfg = h.suggest(tid)
        assert cfg not in (None, Searcher.FINISHED)
        n += 1
        started.append((tid, cfg))
        v = rerun_value(cfg, 0.03) if SEED_KEY in cfg else quality(cfg) + 0.03 * random.Random(tid).gauss(0, 1)
        for e in range(1, 5):
            h.on_trial_result(tid, {METRIC: v, "training_iteration": e})
        h.on_trial_complete(tid, {METRIC: v, "training_iteration": 4})
        if SEED_KEY in cfg and first_rerun_done:
            return started


def test_space_file_takes_auto() -> None:
    import yaml
    from conftest import SEARCH_SPACE

    from s9tune.errors import ConfigError
    from s9tune.search.space.space import load_space

    def load(tmp: Path, extra: dict) -> SearchSpace:
        p = tmp / "s.yaml"
        p.write_text(yaml.safe_dump({**SEARCH_SPACE, **extra}))
        return load_space(p)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sp = load(tmp, {"reevaluate": "auto"})
        assert sp.reevaluate == ReevalSpec(auto=True) and sp.reevaluate.on
        assert SearchSpace.from_record(json.loads(json.dumps(sp.to_record()))).reevaluate == sp.reevaluate
        sp = load(tmp, {"reevaluate": {"auto": True, "confidence": 0.95, "cap": 0.1}})
        assert sp.reevaluate == ReevalSpec(auto=True, confidence=0.95, cap=0.1)
        # Tune's trial count: each config once, and at most the cap's reruns (15% of 6 configs: 1)
        assert load(tmp, {"reevaluate": "auto"}).max_trials == 6 + 1
        for bad, msg in (
            ({"auto": False}, "reevaluate.auto: must be true"),
            ({"auto": True, "confidence": 1.0}, "reevaluate.confidence: must lie in"),
            ({"auto": True, "cap": 0}, "reevaluate.cap: must lie in"),
            ({"auto": True, "top": 3}, "reevaluate.top: unknown key"),
            ("sometimes", "reevaluate: expected a mapping"),
        ):
            with pytest.raises(ConfigError, match=msg):
                load(tmp, {"reevaluate": bad})


# -- what the results state ------------------------------------------------------------
def synthetic(tmp_path: Path, rows: list, reevaluate: ReevalSpec, baseline: dict | None = None):
    from s9tune.search.experiment.trials import Experiment
    from s9tune.search.space.dists import Dist

    s = dataclasses.replace(space((4,), 1.0, 3, asha=True), reevaluate=reevaluate, baseline=baseline)
    s = dataclasses.replace(s, dists=(Dist("max_lr", "uniform", 0.05, 2.0),))
    return Experiment(str(tmp_path), s, rows)


def row(tid: str, value: float, lr: float, *, cid: str = "", seed: int | None = None):
    from s9tune.search.experiment.trials import TrialRow

    return TrialRow(tid, {"max_lr": lr}, "completed", 4, value, value, 1.0, config_id=cid or tid, budget=4, seed=seed)


def test_results_state_the_picks_certainty(tmp_path: Path) -> None:
    from s9tune.search.experiment.export import format_results, pick_block

    rows = [row("base", 0.60, 0.4), row("good", 0.80, 0.1), row("close", 0.79, 0.2)]
    rows += [row("r1", 0.78, 0.1, cid="good", seed=1), row("r2", 0.77, 0.2, cid="close", seed=1)]
    exp = synthetic(tmp_path, rows, ReevalSpec(auto=True), baseline={"max_lr": 0.4})
    assert exp.best().trial_id == "good" and exp.baseline_id() == "base"
    block = pick_block(exp)
    assert set(block) >= PICK_KEYS and block["config"] == "good" and block["runner_up"] == "close"
    assert block["runs"] == 2 and block["sigma"] == pytest.approx(math.sqrt(4 * 0.01**2 / 2))
    printed = format_results(exp)
    assert "Pick good: 79.00% (mean of 2 runs), 95% interval" in printed and "allowing for the luck" in printed
    assert "P(truly better than the runner-up, close) = " in printed and "P(truly better than the baseline)" in printed
    assert "good         mean 79.00% over 2 (80.00%, 78.00%)  <- picked" in printed
    # one run per config: no σ, said in words
    plain = synthetic(tmp_path, rows[:3], ReevalSpec(), baseline={"max_lr": 0.4})
    assert pick_block(plain)["sigma"] is None and "how sure: unknown" in format_results(plain)


def test_under_auto_the_pick_is_the_posterior_leader_not_a_lucky_single_run(tmp_path: Path) -> None:
    """b's one run beats a's mean of two, but seed noise this large says b is likely lucky: the
    pick (Experiment.best, what retrain takes) is a, as the searcher's rule ranks them."""
    vals = {"a": [0.80, 0.70], "b": [0.76], "c": [0.66, 0.64], "d": [0.62], "e": [0.70], "f": [0.65]}
    rows = []
    for i, (cid, v) in enumerate(vals.items()):
        rows.append(row(cid, v[0], 0.1 + 0.1 * i))
        rows += [row(f"{cid}{j}", x, 0.1 + 0.1 * i, cid=cid, seed=j) for j, x in enumerate(v[1:], 1)]
    exp = synthetic(tmp_path, rows, ReevalSpec(auto=True))
    assert exp.best().trial_id == "a" and exp.best().seeds == 2
    # a fixed step picks among the configs it re-evaluated, by their mean, as before
    assert synthetic(tmp_path, rows, ReevalSpec(2, 1)).best().trial_id == "a"


def test_best_config_yaml_and_leaderboard_carry_the_pick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s9tune.search.experiment import export

    rows = [row("base", 0.60, 0.4), row("good", 0.80, 0.1), row("r1", 0.78, 0.1, cid="good", seed=1)]
    exp = synthetic(tmp_path, rows, ReevalSpec(auto=True), baseline={"max_lr": 0.4})
    monkeypatch.setattr(export, "load_experiment", lambda _: exp)
    (tmp_path / "st" / "e").mkdir(parents=True)
    exp.path = str(tmp_path / "st" / "e")
    export.export_experiment(exp.path)
    board = json.loads((tmp_path / "st" / "e" / "leaderboard.json").read_text())
    assert board["pick"]["config"] == "good" and board["pick"]["p_beats_baseline"] > 0.9
    header = (tmp_path / "st" / "e" / "best_config.yaml").read_text().split("\nwidth")[0]
    assert (
        "# Pick good: 79.00% (mean of 2 runs), 95% interval" in header
        and "# P(truly better than the baseline)" in header
    )


@pytest.mark.slow
def test_a_search_with_auto_reevaluation_states_its_certainty(mini: Path, tmp_path: Path) -> None:
    """Through the CLI: 3 configs under ASHA with `reevaluate: auto`: the leader reruns once (the
    cap's one rerun), `results` prints the certainty line and leaderboard.json has the pick."""
    from conftest import SEARCH_SPACE, search_cmd

    space_d = {
        **SEARCH_SPACE,
        "num_samples": 3,
        "fixed": {**SEARCH_SPACE["fixed"], "epochs": 2, "train_subset": 384},
        "reevaluate": "auto",
    }
    res = subprocess.run(search_cmd(tmp_path, mini, "a", space_d), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    board = json.loads((tmp_path / "st" / "a" / "leaderboard.json").read_text())
    pick = board["pick"]
    assert set(pick) >= PICK_KEYS and pick["runs"] == 2 and pick["sigma"] is not None
    assert len(pick["ci95"]) == 2 and pick["ci95"][0] <= pick["mean"] <= pick["ci95"][1]
    assert f"Pick {pick['config']}: " in res.stdout and "95% interval" in res.stdout
    assert "# Pick " in (tmp_path / "st" / "a" / "best_config.yaml").read_text()
    # ASHA may stop both other configs at its rung: then no config is a runner-up to beat
    if pick["runner_up"] is None:
        assert pick["p_beats_runner_up"] is None
    else:
        assert 0.0 <= pick["p_beats_runner_up"] <= 1.0


def test_auto_reruns_train_with_seeds_the_experiment_check_accepts() -> None:
    """Every seed auto can hand a rerun (one config may take every rerun of the cap) is one the
    check of an experiment's params.json accepts, and the next one is not."""
    from dataclasses import replace

    from s9tune.search.space.sections import ReevalSpec
    from s9tune.search.space.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml")
    auto = replace(space, reevaluate=ReevalSpec(auto=True, confidence=0.9, cap=0.2, margin=0.25))
    most = auto.max_trials - space.max_trials  # the cap's reruns at most
    assert most >= 1 and list(auto.rerun_seeds) == [auto.fixed.seed + j for j in range(1, most + 1)]
    fixed = replace(space, reevaluate=ReevalSpec(3, 2))
    assert list(fixed.rerun_seeds) == [fixed.fixed.seed + 1, fixed.fixed.seed + 2]
    assert list(space.rerun_seeds) == []
    # what `results` checks in a rerun's params.json
    from s9tune.errors import S9Error
    from s9tune.search.experiment.tune_files import TrialFiles, check_trial

    params = {"max_lr": 0.4, "pct_start": 0.2, "aug_strength": 1.0, "budget": auto.max_t, "config_id": "c3"}
    for seed in auto.rerun_seeds:
        check_trial(TrialFiles("t", 0, {**params, "rerun_seed": seed}), auto, "exp")
    with pytest.raises(S9Error, match="is not a seed of this search's reruns"):
        check_trial(TrialFiles("t", 0, {**params, "rerun_seed": auto.rerun_seeds[-1] + 1}), auto, "exp")
