"""The parts of a search whose cost had to stop growing with the trials, each checked on its own:
halving's bookkeeping against the rule as first written, the console's summary, the HParams
event files, the journal's unsynced reports, and ASHA's rungs after a resume."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import halving_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from s9tune.search.searcher.halving import Rungs


# -- halving: the incremental bookkeeping answers as the rule as first written ------------------
def questions(rungs: Any, n: int) -> list[Any]:
    return [
        rungs.live_runs(),
        rungs.finished(),
        *[rungs.pending(r) for r in range(n)],
        *[rungs.promotable(r) for r in range(n)],
        *[rungs.ranked(r) for r in range(n)],
        *[rungs.replaces(r) for r in range(n)],
    ]


def events(data: st.DataObject, sizes: list[int]) -> list[tuple]:
    """A valid history: configs start at the first budget, a config starts at a budget only
    after a value below, runs finish (ties on purpose), fail, are rerun after a resume, or are
    lost with the driver."""
    ref = halving_reference.Rungs(sizes)
    out: list[tuple] = []
    fresh = 0
    for _ in range(data.draw(st.integers(0, 40))):
        live = [(r, c) for r in range(len(sizes)) for c in ref[r].live()]
        failed = [(r, c) for r in range(len(sizes)) for c in ref[r].failed]
        promotable = [
            (r, c) for r in range(1, len(sizes)) for c in ref[r - 1].values if c not in ref[r].started
        ]
        kinds = ["start0"] + ["finish", "fail", "forget"] * bool(live) + ["promote"] * bool(promotable)
        kind = data.draw(st.sampled_from(kinds + ["rerun"] * bool(failed)))
        if kind == "start0":
            ev: tuple = ("start", 0, f"c{fresh}")
            fresh += 1
        elif kind == "promote":
            ev = ("start", *data.draw(st.sampled_from(promotable)))
        elif kind == "finish":
            ev = ("finish", *data.draw(st.sampled_from(live)), data.draw(st.sampled_from([0.1, 0.2, 0.3, 0.5])))
        elif kind == "rerun":
            ev = ("rerun", *data.draw(st.sampled_from(failed)))
        else:
            ev = (kind, *data.draw(st.sampled_from(live)))
        getattr(ref, ev[0])(*ev[1:])
        out.append(ev)
    return out


@settings(derandomize=True, max_examples=300, deadline=None)
@given(data=st.data())
def test_incremental_rungs_answer_as_the_rule_as_first_written(data: st.DataObject) -> None:
    sizes = data.draw(st.sampled_from([[6], [6, 3], [8, 4, 2], [5, 2, 1]]))
    history = events(data, sizes)
    ref, new = halving_reference.Rungs(sizes), Rungs(sizes)
    for ev in history:
        getattr(ref, ev[0])(*ev[1:])
        getattr(new, ev[0])(*ev[1:])
        assert questions(new, len(sizes)) == questions(ref, len(sizes)), (ev, history)
