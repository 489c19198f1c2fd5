"""The docs stay a user's: the README short, every link in it and in docs/ pointing at a file
that exists, and the reference naming every flag of every command, every key of the space file
and every TrainConfig value, so none can be added without a line saying what it does."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from s9tune.cli import build_parser
from s9tune.config import TrainConfig
from s9tune.search.space.space import TOP_KEYS

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250


def test_readme_is_a_users_page() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the rest into docs/"


def test_every_relative_link_points_at_a_file() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    orphans = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme]
    assert not orphans, orphans


def test_the_reference_names_every_flag_key_and_value() -> None:
    ref = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {
        f"{cmd} {flag}"
        for cmd, parser in sub.choices.items()
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }
    missing = sorted(f for f in flags if f.split()[1] not in ref)
    assert not missing, f"flags the reference does not name: {missing}"
    missing = sorted(k for k in TOP_KEYS if f"`{k}`" not in ref)
    assert not missing, f"space-file keys the reference does not name: {missing}"
    missing = sorted(f.name for f in dataclasses.fields(TrainConfig) if f"`{f.name}`" not in ref)
    assert not missing, f"TrainConfig values the reference does not name: {missing}"
