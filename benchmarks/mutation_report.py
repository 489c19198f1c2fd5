"""The per-module table of benchmarks/MUTATION.md, from what benchmarks/mutation.sh left in
mutants/: mutants, killed, survived, timeout/suspicious, % killed, and the survivors by name.

    python benchmarks/mutation_report.py                 # every module mutmut mutated
    python benchmarks/mutation_report.py --functions     # one row per function as well

Run from the repository root (where mutants/ is). "% killed" is of the mutants checked; it
counts a timeout as killed (the mutant made the tests hang, which a user notices), as mutmut's
own score does, and a mutant no selected test reaches ("no tests") against it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("mutants", "killed", "survived", "timeout", "suspicious", "no tests", "not checked")
DECIDED = ("killed", "timeout", "not checked")  # what the survivor list leaves out


def modules() -> list[str]:
    """The files mutmut mutated (it writes a .meta beside each when it makes the mutants)."""
    return sorted(str(p.relative_to(REPO / "mutants"))[: -len(".meta")] for p in (REPO / "mutants").rglob("*.py.meta"))


def results(path: str) -> dict[str, str]:
    """Mutant name -> its status, as mutmut recorded it (empty if the module was never run)."""
    meta = REPO / "mutants" / f"{path}.meta"
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def function_of(mutant: str) -> str:
    """`s9tune.data.x_make_splits__mutmut_3` -> `make_splits`; a method -> `Class.method`."""
    name = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    return name[2:] if name.startswith("x_") else ".".join(p for p in name[1:].split("ǁ") if p)


def row(label: str, statuses: list[str]) -> str:
    c = Counter(statuses)
    total = len(statuses)
    killed, checked = c["killed"] + c["timeout"], total - c["not checked"]
    pct = f"{100 * killed / checked:.1f}%" if checked else "-"
    cells = [
        total,
        c["killed"],
        c["survived"],
        c["timeout"],
        c["suspicious"] + c["segfault"],
        c["no tests"],
        c["not checked"],
    ]
    return f"| {label} | " + " | ".join(str(x) for x in cells) + f" | {pct} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--functions", action="store_true", help="one row per function under each module")
    args = ap.parse_args()
    print("| module | " + " | ".join(COLUMNS) + " | % killed |")
    print("|---|" + "---:|" * (len(COLUMNS) + 1))
    survivors: list[str] = []
    everything: list[str] = []
    for path in modules():
        res = results(path)
        if not res:
            print(f"| {path} | not run yet |" + " |" * len(COLUMNS))
            continue
        everything += res.values()
        print(row(f"`{path}`", list(res.values())))
        if args.functions:
            by_function: dict[str, list[str]] = {}
            for name, status in res.items():
                by_function.setdefault(function_of(name), []).append(status)
            for fn, statuses in sorted(by_function.items()):
                print(row(f"&nbsp;&nbsp;`{fn}`", statuses))
        survivors += [f"{name} ({status})" for name, status in sorted(res.items()) if status not in DECIDED]
    print(row("**all run**", everything))
    print()
    print("Not killed (survived, no tests, suspicious):")
    for name in survivors:
        print(f"- {name}")


if __name__ == "__main__":
    main()
