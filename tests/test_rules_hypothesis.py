"""Rules over many orders and values, checked with hypothesis (derandomized: the same examples
on every run, no hash()-dependence): halving's promotion certainty, the re-evaluation pick, the
run-outcome rule shared by the searcher and the results, and what `--force` may replace."""

from __future__ import annotations

import fnmatch
import itertools
import os
import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s9tune import outdir
from s9tune.errors import OutputExistsError
from s9tune.search.execution.console import Plan, outcome
from s9tune.search.experiment.tune_files import TrialFiles, trial_status
from s9tune.search.outcome import OVER
from s9tune.search.searcher.halving import Rungs
from s9tune.search.searcher.journal import run_value
from s9tune.search.searcher.reeval import by_mean
from s9tune.search.space.sections import SchedulerSpec
from s9tune.search.space.space import BUDGET_KEY

RULES = settings(derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
# few distinct values, so that ties (common on a small validation set) are common here too
VALUES = st.sampled_from([0.1, 0.2, 0.3, 0.4])


# -- halving: a config starts its longer run only once its place is certain ---------------------
def synchronous(values: dict, fails: set, sizes: list[int], n: int) -> list[list[str]]:
    """The configs each rung runs under the synchronous rule: rank those that finished below,
    best first, ties to the earlier-started config; take them in order until `size` finish."""
    out = [[f"c{i}" for i in range(n)]]
    for r in range(1, len(sizes)):
        done = [c for c in out[r - 1] if (c, r - 1) not in fails]
        done.sort(key=lambda c: (-values[c, r - 1], int(c[1:])))
        took, ok = [], 0
        for c in done:
            if ok == sizes[r]:
                break
            took.append(c)
            ok += (c, r) not in fails
        out.append(took)
    return out


@RULES
@given(data=st.data())
def test_promotions_are_the_synchronous_rules_in_any_order_with_ties_and_failures(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 9), "configs")
    budgets = data.draw(st.sampled_from([(1, 2), (1, 2, 4)]), "budgets")
    sizes = SchedulerSpec("halving", budgets=budgets, keep=data.draw(st.sampled_from([0.34, 0.5, 0.7]))).rung_sizes(n)
    runs = [(f"c{i}", r) for i in range(n) for r in range(len(budgets))]
    values = {run: data.draw(VALUES) for run in runs}
    fails = {run for run in runs if data.draw(st.integers(0, 5), "fail?") == 0}
    slots = data.draw(st.integers(1, 4), "slots")
    rungs, live, started = Rungs(sizes), [], [[] for _ in budgets]
    while True:
        while len(live) < slots:  # what the searcher starts: the deepest promotion first
            nxt = next(((c, r) for r in range(len(budgets) - 1, 0, -1) if (c := rungs.promotable(r))), None)
            if nxt is None and len(rungs[0].started) < rungs[0].quota:
                nxt = (f"c{len(rungs[0].started)}", 0)
            if nxt is None:
                break
            rungs.start(nxt[1], nxt[0])
            started[nxt[1]].append(nxt[0])
            live.append(nxt)
        if not live:
            break
        cid, r = live.pop(data.draw(st.integers(0, len(live) - 1), "which ends"))
        if (cid, r) in fails:
            rungs.fail(r, cid)
        else:
            rungs.finish(r, cid, values[cid, r])
    assert rungs.finished()
    assert [sorted(s) for s in started] == [sorted(s) for s in synchronous(values, fails, sizes, n)]


# -- the re-evaluation pick ----------------------------------------------------------------------
@RULES
@given(data=st.data())
def test_the_pick_is_the_best_mean_then_the_better_search_run_then_the_earlier(data: st.DataObject) -> None:
    ids = [f"c{i}" for i in range(6)]
    # two values only, so that equal means with different search-run values come up often
    values = data.draw(st.dictionaries(st.sampled_from(ids), st.lists(st.sampled_from([0.2, 0.4]), max_size=3)))
    chosen = {c for c in values if data.draw(st.integers(0, 4), f"{c} re-evaluated?") > 0}
    ranked = by_mean(values, chosen)
    assert sorted(ranked) == sorted(c for c in values if c in chosen and values[c])

    def key(c: str) -> tuple[float, float]:
        return sum(values[c]) / len(values[c]), values[c][0]

    order = list(values)
    for a, b in itertools.pairwise(ranked):
        assert key(a) > key(b) or (key(a) == key(b) and order.index(a) < order.index(b)), (a, b, values)
    # without full ties the pick does not depend on the order the configs were listed in
    if len({key(c) for c in ranked}) == len(ranked):
        assert by_mean(dict(reversed(list(values.items()))), chosen) == ranked


# -- one run-outcome rule: the searcher's (run_value), the results' (trial_status), the console's --
@RULES
@given(
    budget=st.integers(1, 6),
    reached=st.integers(0, 6),
    diverged=st.booleans(),
    repeat=st.integers(0, 3),
    stopped=st.booleans(),
    failures=st.integers(0, 4),
)
def test_the_searcher_and_the_results_agree_on_every_run(
    budget: int, reached: int, diverged: bool, repeat: int, stopped: bool, failures: int
) -> None:
    """A run reports epochs 1..reached (a restored run repeats the last `repeat` of them; a
    diverged one ends on a diverged row). The searcher judges it by its last result, the results
    by its files: finished for one iff completed or diverged for the other, and the same value."""
    reached = min(reached, budget)
    epochs = [*range(1, reached + 1), *range(max(1, reached - repeat + 1), reached + 1)]
    rows = [{"training_iteration": e, "val_accuracy": 0.1 * e, "date": f"2026-12-07_10-00-{i:02d}"} for i, e in
            enumerate(epochs)]  # fmt: skip
    if diverged and rows:
        rows[-1].update(diverged=1, val_accuracy=0.0)
    # Tune writes done=true on a last row only when a scheduler ended the run early
    if stopped and rows and not diverged and reached < budget:
        rows[-1]["done"] = True
    status = trial_status(TrialFiles("t", 0, {}, rows, failures, "2026-12-07_09-00-00"), budget, max_failures=2)
    value, done = run_value(rows[-1] if rows else None, "val_accuracy", budget=budget)
    assert done == (status in ("completed", "diverged")), (rows, status)
    assert (status == "diverged") == (diverged and bool(rows))
    if done:
        assert value == rows[-1]["val_accuracy"]
    if not rows:
        assert status in ("error", "unfinished") and value is None
        assert (status == "error") == (failures > 2)
    if status in OVER:  # the console's word for a trial Tune ended without an error
        trial = types.SimpleNamespace(last_result=rows[-1], config={BUDGET_KEY: budget})
        assert outcome(trial, Plan("e", 1, budget, True, budget, ())) == status


# -- --force: every entry at every depth --------------------------------------------------------
def _names(spec: outdir.Spec, depth: int = 0) -> st.SearchStrategy[list[tuple[str, bool]]]:
    """Relative paths (and whether each is a folder) of a tree `spec` allows: each pattern's `*`
    filled with a name, folders filled in turn, down to the spec's own depth."""

    def entry(pattern: str) -> st.SearchStrategy[list[tuple[str, bool]]]:
        name = st.text("abcdef0123456789", min_size=1, max_size=4).map(lambda s: pattern.replace("*", s))
        sub = spec[pattern]
        if sub is None:
            return name.map(lambda n: [(n, False)])
        return st.tuples(name, _names(sub, depth + 1)).map(
            lambda t: [(t[0], True), *((f"{t[0]}/{p}", d) for p, d in t[1])]
        )

    return st.lists(st.sampled_from(sorted(spec)).flatmap(entry), max_size=4).map(
        lambda ls: list(itertools.chain.from_iterable(ls))
    )


FOREIGN = ["notes.txt", "x.csv", "s9tune_space.json", "last.pt.bak"]


def _spec_at(kind: str, folder: str) -> outdir.Spec:
    spec = outdir.KIND_SPECS[kind]
    for part in filter(None, folder.split("/")):
        spec = spec[next(p for p in spec if fnmatch.fnmatchcase(part, p))]  # type: ignore[assignment]
    return spec


@settings(derandomize=True, deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_force_replaces_a_folder_exactly_when_every_entry_at_every_depth_is_its_commands(
    data: st.DataObject,
) -> None:
    kind = data.draw(st.sampled_from(sorted(outdir.KIND_SPECS)), "kind")
    tree = data.draw(_names(outdir.KIND_SPECS[kind]), "tree")
    folders = sorted({p for p, is_dir in tree if is_dir} | {""})
    plant = data.draw(st.none() | st.tuples(st.sampled_from(folders), st.sampled_from(FOREIGN)), "plant")
    as_folder = data.draw(st.booleans(), "planted as a folder")
    if plant is not None and data.draw(st.booleans(), "a name of s9tune's, of the other type"):
        pattern = data.draw(st.sampled_from(sorted(_spec_at(kind, plant[0]))), "pattern")
        name = pattern.replace("*", "zz")
        plant, as_folder = (plant[0], name), _spec_at(kind, plant[0])[pattern] is None
        if any(p == f"{plant[0]}/{name}".lstrip("/") for p, _ in tree):
            plant = None  # the tree has that entry already, of the right type
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        (out / outdir.MARKER).write_text(outdir.marker_text(kind))
        for path, is_dir in tree:
            if is_dir:
                (out / path).mkdir(parents=True, exist_ok=True)
            elif not (out / path).exists():
                (out / path).parent.mkdir(parents=True, exist_ok=True)
                (out / path).write_text("s9tune's")
        if plant is not None:
            where = out / plant[0] / plant[1]
            where.mkdir() if as_folder else where.write_text("the user's")
        before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        if plant is None:
            outdir.prepare_out_dir(out, kind=kind, force=True)
            assert os.listdir(out) == [outdir.MARKER]
        else:
            with pytest.raises(OutputExistsError, match=r"also holds|holds a search experiment"):
                outdir.prepare_out_dir(out, kind=kind, force=True)
            assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
