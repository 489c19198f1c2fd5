"""The design table builder and the replay of the shipped searchers, at a tiny scale, so the
scripts cannot rot: the table's shape, resume and reproduction; the replay's picks, compute and
statistics on synthetic tables whose answer is known."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BENCH, REPO, benchmarks_on_path, run_script

SPACE = REPO / "search_spaces" / "default.yaml"


run_script = functools.partial(run_script, timeout=300)


@pytest.fixture
def bench() -> Iterator[None]:
    with benchmarks_on_path():
        yield


def fake_table(path: Path, quality: Any, *, configs: int = 24, seeds: int = 3, noise: float = 0.0) -> Path:
    """A table in design_table.py's format whose values are `quality(unit point)` (+ noise), the
    same at every budget and every epoch of the longest schedule: a known answer."""
    with benchmarks_on_path():
        from design_table import sample_configs
        from replay_table import unit_coords
    from s9tune.search.space.space import load_space

    space = load_space(SPACE)
    dists = [d.to_record() for d in space.dists]
    cfgs = sample_configs(space, configs - 1, seed=0)
    budgets, rng = [1, 2, 8], np.random.default_rng(0)
    q = np.array([quality(unit_coords(dists, c["params"])) for c in cfgs])
    val = q[:, None, None] + noise * rng.standard_normal((len(cfgs), seeds, len(budgets)))
    ev = q[:, None, None] + noise * rng.standard_normal((len(cfgs), seeds, len(budgets)))
    curve = np.repeat(val[:, :, -1:], budgets[-1], axis=2)
    table = {
        "format": 1,
        "complete": True,
        "setup": {"budgets": budgets, "dists": dists, "seeds": list(range(seeds))},
        "configs": [{"id": i, **c} for i, c in enumerate(cfgs)],
        "val": val.tolist(),
        "eval": ev.tolist(),
        "val_curve": curve.tolist(),
        "train_s": (np.ones((len(cfgs), seeds, 1)) * np.array(budgets)).tolist(),
        "status": [[["completed"] * len(budgets)] * seeds] * len(cfgs),
    }
    path.write_text(json.dumps(table), encoding="utf-8")
    return path


def test_table_builds_resumes_and_reproduces(tmp_path: Path, tiny_cifar: Path) -> None:
    out = tmp_path / "table.json"
    args = [str(BENCH / "design_table.py"), "--data-dir", str(tiny_cifar), "--out", str(out), "--configs", "2"]
    args += ["--seeds", "2", "--budgets", "1,3", "--width", "4", "--train-subset", "64", "--batch-size", "16"]
    run_script([*args, "--workers", "2"])
    table = json.loads(out.read_text())
    assert table["complete"] and len(table["configs"]) == 3 and table["configs"][0]["kind"] == "baseline"
    for key in ("val", "eval"):
        cells = np.asarray(table[key], dtype=float)
        assert cells.shape == (3, 2, 2) and np.all((cells >= 0) & (cells <= 1))
    curves = np.asarray(table["val_curve"], dtype=float)
    assert curves.shape == (3, 2, 3)
    assert np.array_equal(curves[:, :, -1], np.asarray(table["val"])[:, :, -1])  # the curve ends at the value
    session = table["meta"]["sessions"][0]
    assert "design_table.py" in session["command"] and session["machine"]["cpus"] and session["started"]

    runs = out.with_suffix(".runs.jsonl")
    lines = runs.read_text().splitlines()
    assert sum('"config"' in line for line in lines) == 12
    # an interrupted build: the last record half-written, then a restart reruns only that run
    runs.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20] + "\n")
    run_script([*args, "--assemble"])
    partial = json.loads(out.read_text())
    assert not partial["complete"] and partial["meta"]["runs"] == 11
    with benchmarks_on_path():
        from replay_table import Table
    assert Table.load(out).configs == 2  # the last config lost a run: the replay leaves it out
    proc = run_script([*args, "--workers", "1"])
    assert "11 done, 1 to go" in proc.stderr
    assert json.loads(out.read_text())["val"] == table["val"]  # CPU runs are deterministic per seed

    proc = run_script([*args, "--check", "3"])
    assert "3 of 3 retrained runs reproduce the table exactly" in proc.stderr


def test_replay_finds_a_best_baseline_in_every_design(tmp_path: Path) -> None:
    """The baseline is every search's first trial; when it is far best at every budget and epoch,
    every design must pick it: zero regret, whatever the scheduler stops or promotes, and
    whatever its re-evaluation step reruns. (The nearest-neighbour surrogate answers it exactly;
    a smooth one would spread its lead.)"""
    table = fake_table(tmp_path / "t.json", lambda u: 0.3 + 0.1 * u[1], noise=0.002)
    data = json.loads(table.read_text())
    for key in ("val", "eval", "val_curve"):
        data[key][0] = (np.asarray(data[key][0]) + 0.5).tolist()
    table.write_text(json.dumps(data))
    out = tmp_path / "r.json"
    args = ["--table", str(table), "--grid", "--reps", "3", "--totals", "4", "--workers", "1", "--surrogates", "nn"]
    run_script([str(BENCH / "design_replay.py"), *args, "--noise-scales", "1", "--tables", "0", "--json", str(out)])
    res = json.loads(out.read_text())
    assert len(res["cells"]) >= 20
    for cell in res["cells"]:
        assert cell["reps"] == 3 and cell["failed"] == 0, cell["design"]
        assert cell["regret_mean"] == 0.0, cell["design"]
        assert abs(cell["epochs_vs_target"]) <= 0.25, cell["design"]  # the fewest configs may not fit exactly


def test_replay_statistics_pairing_and_the_commands_json(tmp_path: Path) -> None:
    """A smooth, noisy table: the JSON has the keys the command promises; regrets are
    non-negative and CIs hold their means; the shipped default is paired with itself exactly;
    compute is matched (the same expected epochs); the CI with the table is no narrower than
    the replay's; and with little noise random search at more compute does no worse than at less."""
    table = fake_table(tmp_path / "t.json", lambda u: 0.5 - 0.2 * float(np.sum((u - 0.4) ** 2)), noise=0.01)
    out = tmp_path / "r.json"
    args = ["--table", str(table), "--grid", "--reps", "16", "--totals", "6,12", "--designs", "random"]
    args += ["--noise-scales", "0.1", "--surrogates", "rbf,nn", "--tables", "3", "--table-reps", "4"]
    run_script([str(BENCH / "design_replay.py"), *args, "--workers", "2", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["oracle"] == "independent" and res["default"].startswith("shipped: ")
    keys = {"design", "surrogate", "noise_scale", "total_runs", "epochs", "regret_mean", "regret_ci", "vs_default"}
    cells = {(c["design"], c["surrogate"], c["noise_scale"], c["total_runs"]): c for c in res["cells"]}
    assert len(cells) == 2 * 2 * 2
    from s9tune.search.space.space import load_space

    # the shipped design is default.yaml's, its epochs scaled to the table's schedule
    sched = load_space(SPACE).scheduler
    assert ("full schedules" if sched.type == "halving" and len(sched.budgets) == 1 else sched.type) in res["default"]
    for c in cells.values():
        assert keys <= set(c) and {"diff", "ci", "ci_with_table"} <= set(c["vs_default"])
        lo, hi = c["regret_ci"]
        assert c["regret_mean"] >= 0 and lo <= c["regret_mean"] <= hi
        assert abs(c["expected_epochs"] / c["epochs_target"] - 1) <= 0.02, c  # matched compute
        d = c["vs_default"]
        assert d["ci_with_table"][0] <= d["ci"][0] + 1e-12 and d["ci_with_table"][1] >= d["ci"][1] - 1e-12
        if c["is_default"]:
            assert d["diff"] == 0.0 and d["ci_with_table"] == [0.0, 0.0]
    # the 12-config searches draw the 6-config ones' configs first (same seeds), and more
    gains = [
        cells[("random, full schedules", kind, 0.1, 6.0)]["regret_mean"]
        - cells[("random, full schedules", kind, 0.1, 12.0)]["regret_mean"]
        for kind in ("rbf", "nn")
    ]
    assert min(gains) >= 0 and max(gains) > 0
    sur = res["table"]["surrogate"]
    # a smooth function, little noise: both surrogates rank held-out configs well, the fitted one better
    assert sur["nn"]["loo_spearman_val"] > 0.5 and sur["rbf"]["loo_spearman_val"] > sur["nn"]["loo_spearman_val"]


def test_the_plans_candidates_replay_and_auto_is_checked_against_the_best_fixed_design(tmp_path: Path) -> None:
    """The pre-registered plan's candidates run from the plan file; each auto design is paired
    with the best design without auto in its group, and its rerun spend is reported."""
    table = fake_table(tmp_path / "t.json", lambda u: 0.5 - 0.2 * float(np.sum((u - 0.4) ** 2)), noise=0.01)
    out = tmp_path / "r.json"
    # the auto designs, and a fixed one to pair them with (the shipped default is itself an auto design)
    designs = "auto,top-3 re-evaluated on 1 seed"
    args = ["--table", str(table), "--reps", "6", "--totals", "12", "--designs", designs, "--noise-scales", "0.1"]
    args += ["--surrogates", "nn", "--tables", "2", "--table-reps", "3", "--workers", "1", "--json", str(out)]
    run_script([str(BENCH / "design_replay.py"), *args])
    res = json.loads(out.read_text())
    plan = json.loads((BENCH / "design_plan.json").read_text())
    autos = [c["name"] for c in plan["candidates"] if "auto" in c["name"]]
    assert {c["design"] for c in res["cells"]} >= set(autos) and res["plan"]["commit"]
    checks = {a["design"]: a for a in res["auto"]}
    assert set(checks) == set(autos)
    for a in checks.values():
        assert "auto" not in a["best_fixed"] and a["within_half_of_top3"] in (True, False)
        assert a["ci_with_table"][0] <= a["diff"] <= a["ci_with_table"][1] and a["rerun_runs"] >= 1


def test_a_rerun_is_an_independent_draw_at_the_measured_level(bench: None) -> None:
    """The oracle's noise on the real table: a config's 2-run mean (its search run and one
    rerun) has variance σ²/2, σ its config's level, within sampling error; answered with the
    config's other measured seeds it would be σ²/6 (their residuals sum to zero), and a rerun
    that repeated the search run's draw would give σ². At noise scale 0.1 it is σ²/200. And the
    levels pool to the table's measured seed σ."""
    from replay_sim import Oracle
    from replay_table import Surrogate, Table

    from s9tune.search.space.space import CONFIG_KEY, SEED_KEY

    sur = Surrogate(Table.load(BENCH / "design_table.json"), "nn")
    vl, table = sur.val_longest, sur.table
    pooled = np.sqrt((sur.noise.sd[:, vl] ** 2).mean())
    assert pooled == pytest.approx(table.seed_sigma("val"), rel=1e-9)
    order = np.argsort(-sur.mean[:, vl])
    for c, scale in ((int(order[0]), 1.0), (int(order[len(order) // 2]), 1.0), (int(order[0]), 0.1)):
        config = table.params[c]
        means = []
        for rep in range(3000):
            o = Oracle(sur, np.random.default_rng(rep), noise_scale=scale, key=rep)
            first = o.assign("t", config).values[vl]
            second = o.assign("r", {**config, CONFIG_KEY: "t", SEED_KEY: 1}).values[vl]
            means.append((first + second) / 2)
        m = np.asarray(means) - sur.mean[c, vl]
        var, se = m.var(ddof=1), np.sqrt(((m**2 - m.var()) ** 2).mean() / len(m))  # se of a variance
        sigma2 = (scale * sur.noise.sd[c, vl]) ** 2
        assert abs(var - sigma2 / 2) < 4 * se, (c, scale, var, sigma2)
        assert abs(var - sigma2 / 6) > 4 * se and abs(var - sigma2) > 4 * se
        assert abs(m.mean()) < 4 * np.sqrt(var / len(m))  # unbiased: the config's mean


def test_a_bootstrap_table_draws_configs_with_replacement(bench: None) -> None:
    from replay_table import Surrogate, Table

    table = Table.load(BENCH / "design_table.json")
    boot = table.resample(7)
    assert boot.mult.sum() == table.configs and boot.configs == len(boot.mult) < table.configs
    assert len({tuple(x) for x in boot.coords}) == boot.configs  # each distinct config once
    assert table.resample(7).params == boot.params and table.resample(8).params != boot.params
    sur = Surrogate(boot, "rbf")  # refitted: its own optimum, its own noise pooled with the draws' weights
    assert sur.best_quality != Surrogate(table, "rbf").best_quality
    assert np.isfinite(sur.noise.sd).all()


def test_the_ci_with_the_table_adds_the_tables_variance(bench: None) -> None:
    from replay_stats import with_table

    rng = np.random.default_rng(0)
    d = 0.1 + rng.standard_normal(400)  # replay noise 1: se 0.05
    tables = 0.2 * rng.standard_normal(60)  # each bootstrap table shifts the difference, sd 0.2
    boot = tables[:, None] + rng.standard_normal((60, 50))
    out = with_table(d, boot)
    half, half_replay = (out["ci_with_table"][1] - out["ci_with_table"][0]) / 2, (out["ci"][1] - out["ci"][0]) / 2
    assert half_replay == pytest.approx(1.96 * 0.05, rel=0.15)
    assert half == pytest.approx(1.96 * np.sqrt(0.05**2 + 0.2**2), rel=0.25)
    assert 0.1 < out["table_sd"] < 0.3
    same = with_table(d, rng.standard_normal((60, 50)))  # no table effect: about the replay CI
    assert (same["ci_with_table"][1] - same["ci_with_table"][0]) / 2 < 1.5 * half_replay


def test_the_selection_rule_takes_the_simplest_design_not_resolved_worse(bench: None) -> None:
    from replay_stats import select

    def cell(design: str, group: str, lo: float, hi: float) -> dict:
        return {
            "design": design,
            "surrogate": group,
            "noise_scale": 1.0,
            "total_runs": 19.0,
            "vs_best": {"ci_with_table": [lo, hi]},
            "vs_default": {"ci_with_table": [lo, hi]},
        }

    cells = [cell("simple", "rbf", 0.1, 0.5), cell("simple", "nn", -0.2, 0.3)]
    cells += [cell("middle", "rbf", -0.1, 0.2), cell("middle", "nn", -0.1, 0.2)]
    cells += [cell("fancy", "rbf", 0.0, 0.0), cell("fancy", "nn", 0.0, 0.0)]
    out = select(cells)
    assert out["selected"] == "middle" and out["eligible"] == ["middle", "fancy"]
    assert out["resolved_worse_than_best"]["simple"] == ["rbf noise 1 @ 19"]
    assert out["fallback"] is None


def test_without_an_eligible_design_the_fallback_takes_the_simplest_of_the_fewest(bench: None) -> None:
    """The plan's second amendment: no design clear of 'resolved worse' everywhere (each was, in
    1-4 of 16 groups, on the selection seeds)."""
    from replay_stats import decide, select

    def stage(worse: dict[str, int]) -> dict:
        cells = []
        for design, n in worse.items():
            for g in range(4):
                lo = 0.1 if g < n else -0.1
                c = {"design": design, "surrogate": f"g{g}", "noise_scale": 1.0, "total_runs": 19.0}
                cells.append({**c, "vs_best": {"ci_with_table": [lo, 0.3]}, "vs_default": None})
        return select(cells)

    sel = stage({"simple": 2, "middle": 1, "fancy": 1})
    assert sel["selected"] is None and sel["fewest"] == ["middle", "fancy"] and sel["fallback"] == "middle"
    # confirmed: eligible there, or none is and it is again among the fewest
    assert decide(sel, stage({"simple": 0, "middle": 0, "fancy": 1}))["default"] == "middle"
    assert decide(sel, stage({"simple": 1, "middle": 1, "fancy": 2}))["default"] == "middle"
    # not confirmed: the fewest over both stages, the simpler first on a tie
    assert decide(sel, stage({"simple": 1, "middle": 3, "fancy": 2}))["default"] == "simple"
    assert decide(sel, stage({"simple": 2, "middle": 2, "fancy": 1}))["default"] == "fancy"
    # the original rule where the selection has an eligible design
    ok = stage({"simple": 1, "middle": 0, "fancy": 0})
    assert decide(ok, stage({"simple": 0, "middle": 1, "fancy": 0}))["default"] == "fancy"
    assert decide(ok, stage({"simple": 0, "middle": 0, "fancy": 1}))["default"] == "middle"


def test_asha_in_the_replay_stops_trials_below_the_rung_cutoff(tmp_path: Path, bench: None) -> None:
    import design_replay as dr
    from replay_sim import Oracle, TableController
    from replay_table import Surrogate, Table

    from s9tune.search.space.space import load_space

    table = Table.load(fake_table(tmp_path / "t.json", lambda u: 0.2 + 0.3 * u[0], noise=0.02))
    space = load_space(SPACE)
    design = next(
        d for d in dr.designs(8, dr.shipped_scheduler(space, 8)) if d.name == "ASHA r2 grace E/4 1 bracket(s)"
    )
    space = dr.design_space(space, design, configs=16, seed=0, longest=8)
    searcher, scheduler, trials = dr.build_search(space, slots=1)
    out = TableController(
        searcher, scheduler, Oracle(Surrogate(table, "rbf"), np.random.default_rng(0)), slots=1, max_trials=trials
    ).run()
    reached = sorted(r.epoch for r in out.runs)
    assert len(out.runs) == 16 and reached[0] == 2 and reached[-1] == 8  # stopped at the first rung, and completed
    assert out.epochs == sum(reached) and out.busy == pytest.approx(1.0)  # one slot, never idle
    # every stopped trial was below a completed one at its stop epoch (ASHA's cutoff)
    best_final = max(r.last["val_accuracy"] for r in out.runs if r.epoch == 8)
    assert all(r.last["val_accuracy"] < best_final for r in out.runs if r.epoch < 8)


def test_halving_in_the_replay_waits_for_certain_promotions(tmp_path: Path, bench: None) -> None:
    import design_replay as dr
    from replay_sim import Oracle, TableController
    from replay_table import Surrogate, Table

    from s9tune.search.space.space import load_space

    table = Table.load(fake_table(tmp_path / "t.json", lambda u: 0.2 + 0.3 * u[2], noise=0.01))
    space = load_space(SPACE)
    halving = {"type": "halving", "budgets": (2, 8), "keep": 0.34}
    design = next(d for d in dr.designs(8, halving) if d.shipped)
    space = dr.design_space(space, design, configs=12, seed=0, longest=8)
    searcher, scheduler, trials = dr.build_search(space, slots=4)
    out = TableController(
        searcher, scheduler, Oracle(Surrogate(table, "rbf"), np.random.default_rng(0)), slots=4, max_trials=trials
    ).run()
    first = {r.trial.config["config_id"]: r for r in out.runs if r.budget == 2}
    second = [r for r in out.runs if r.budget == 8]
    assert len(first) == 12 and len(second) == 5  # ceil(0.34 * 12) promoted
    top = sorted(first.values(), key=lambda r: r.last["val_accuracy"], reverse=True)[:5]
    assert {r.trial.config["config_id"] for r in second} == {r.trial.config["config_id"] for r in top}
    assert out.epochs == 12 * 2 + 5 * 8 and not out.stalled
    assert out.idle["waiting"] + out.idle["draining"] == pytest.approx(1 - out.busy)


def test_scale_replay_reports_driver_costs(tmp_path: Path) -> None:
    table = fake_table(tmp_path / "t.json", lambda u: 0.3 + 0.1 * u[0], noise=0.01)
    out = tmp_path / "s.json"
    args = ["--table", str(table), "--sizes", "32", "--spreads", "1,0", "--memory", "--json", str(out)]
    proc = run_script([str(BENCH / "replay_scale.py"), *args])
    rows = json.loads(out.read_text())["rows"]
    # the shipped design and each of the three others not equal to it, at both spreads
    names = {r["design"] for r in rows}
    assert any(n.startswith("shipped") for n in names) and 3 <= len(names) <= 4
    assert sorted((r["configs"], r["spread"]) for r in rows) == sorted([(32, 1.0), (32, 0.0)] * len(names))
    assert "ms/run" in proc.stdout
    for r in rows:
        assert r["slots"] == 8 and r["runs"] >= 32 and ("peak_bytes" in r) == (r["spread"] == 1.0)
        assert 0 < r["busy"] <= 1 and r["driver_s_per_finished_run"] > 0 and r["driver_limit_slots"] > 0
        assert r["by_call"]["searcher.suggest"]["calls"] >= 32
        assert r["busy"] + r["idle_waiting"] + r["idle_draining"] == pytest.approx(1.0)


def test_scale_replay_on_a_journal_makes_the_same_decisions(tmp_path: Path, bench: None) -> None:
    """--journal puts the searcher's studies on a file, as a real search keeps them: it costs
    driver time, not decisions."""
    import replay_scale
    from replay_table import Surrogate, Table

    from s9tune.search.space.space import load_space

    sur = Surrogate(Table.load(fake_table(tmp_path / "t.json", lambda u: 0.3 + 0.1 * u[0], noise=0.01)), "rbf")
    base = load_space(SPACE)
    design = next(d for d in replay_scale.scale_designs(base, sur.table.longest) if d.shipped)
    kw = {"configs": 16, "slots": 4, "seed": 3}
    memory = replay_scale.simulate(sur, base, design, **kw)
    journal = replay_scale.simulate(sur, base, design, journal=True, **kw)
    assert memory["studies"] == "memory" and memory["journal_bytes"] == 0
    assert journal["studies"] == "journal" and journal["journal_bytes"] > 0
    for key in ("runs", "epochs", "makespan_epochs", "busy"):
        assert journal[key] == memory[key], key
