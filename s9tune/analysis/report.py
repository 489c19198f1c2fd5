"""report.md (images by relative path) and report.html (self-contained: every image inlined).

The HTML file is meant to be mailed or attached to an issue as one file, so it holds no
external reference at all: PNGs become data: URIs and the CSS is inline.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s9tune.analysis.seedlog import class_table
from s9tune.fileio import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFigure:
    section: str  # heading the figure goes under; consecutive figures share it
    caption: str
    path: str  # relative to the report folder, e.g. "plots/confusion_matrix.png"
    wide: bool = True  # False: half the page width, so two such figures sit side by side


@dataclass
class ReportData:
    title: str
    test_line: str | None  # the seed's "Test set: Average loss: ..." line
    classes: Sequence[str]
    per_class_accuracy: Sequence[float | None]
    per_class_counts: Sequence[int]
    per_class_correct: Sequence[int]
    config: Mapping[str, Any] = field(default_factory=dict)
    summary: Sequence[tuple[str, Any]] = ()  # (label, value) facts shown under the title
    figures: Sequence[ReportFigure] = ()
    leaderboard: Sequence[Mapping[str, Any]] | None = None
    notes: Sequence[str] = ()


# -- value formatting -----------------------------------------------------------------
def _is_acc_key(key: str) -> bool:
    return "acc" in key.lower()


def fmt_value(value: Any, key: str = "") -> str:
    """Compact text for a table cell; accuracies in [0, 1] become percentages."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if _is_acc_key(key) and 0.0 <= value <= 1.0:
            return f"{100 * value:.2f}%"
        return f"{value:.4g}"
    return str(value)


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{name}/"))
        else:
            out[name] = v
    return out


def leaderboard_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Columns in first-seen order over all rows (nested dicts flattened as a/b), formatted cells."""
    flat = [_flatten(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        columns.extend(k for k in r if k not in columns)
    cells = [[fmt_value(r.get(c), c) for c in columns] for r in flat]
    return columns, cells


def _acc_pct(acc: float | None) -> float | None:
    return None if acc is None or not math.isfinite(acc) else 100 * acc


# -- Markdown -------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> list[str]:
    right = right or [False] * len(header)
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(data: ReportData) -> str:
    out = [f"# {data.title}", ""]
    if data.test_line:
        out += ["```", data.test_line, "```", ""]
    out += [f"- **{label}:** {fmt_value(value, label)}" for label, value in data.summary]
    if data.summary:
        out.append("")
    out += [f"> {n}" for n in data.notes] + ([""] if data.notes else [])
    if data.leaderboard:
        cols, cells = leaderboard_table(data.leaderboard)
        out += ["## Leaderboard", "", *_md_table(cols, cells), ""]
    out += ["## Class-wise accuracy", "", "```", *class_table(data.classes, data.per_class_accuracy), "```", ""]
    rows = []
    for name, acc, n, c in zip(
        data.classes, data.per_class_accuracy, data.per_class_counts, data.per_class_correct, strict=True
    ):
        pct = _acc_pct(acc)
        rows.append([name, str(c), str(n), "—" if pct is None else f"{pct:.2f}%"])
    out += [*_md_table(["class", "correct", "images", "accuracy"], rows, [False, True, True, True]), ""]
    if data.config:
        out += ["## Config", ""]
        out += [*_md_table(["key", "value"], [[k, fmt_value(v, k)] for k, v in data.config.items()]), ""]
    section = None
    for fig in data.figures:
        if fig.section != section:
            section = fig.section
            out += [f"## {section}", ""]
        out += [f"![{fig.caption}]({fig.path})", "", f"*{fig.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


# -- HTML -----------------------------------------------------------------------------
CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-alt: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body {
  margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
  background: #fff;
}
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.testline { font: 600 17px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--bg-alt);
            border: 1px solid var(--line); border-left: 4px solid var(--accent); padding: 10px 14px; margin: 12px 0;
            overflow-x: auto; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 10px; margin: 10px 0 4px; padding: 0; list-style: none; }
.facts li {
  background: var(--bg-alt); border: 1px solid var(--line); border-radius: 6px; padding: 3px 10px;
  font-size: 13.5px;
}
.facts b { color: var(--muted); font-weight: 600; }
.note { color: var(--muted); font-size: 13.5px; margin: 6px 0; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: middle; }
th { background: var(--bg-alt); font-weight: 600; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
.two { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 28px; align-items: start; }
.two > div > h2 { margin-top: 26px; }
.bar { width: 160px; height: 10px; background: #eaeef2; border-radius: 5px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--accent); }
.cfg td:first-child { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
pre.classes {
  background: var(--bg-alt); border: 1px solid var(--line); padding: 8px 12px; font-size: 12.5px; margin: 8px 0 0;
}
.figs { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.figs figure { flex: 1 1 100%; min-width: 0; }
.figs figure.half { flex: 1 1 calc(50% - 14px); }
details { margin: 8px 0 0; }
summary { cursor: pointer; color: var(--muted); font-size: 13px; }
.cfg td:nth-child(3) {
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
  border-left: 2px solid var(--line);
}
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.lead tbody tr:first-child { background: #dafbe1; font-weight: 600; }
@media (max-width: 860px) { .two { grid-template-columns: 1fr; } .figs figure.half { flex-basis: 100%; } }
"""

PAGE = string.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
</head>
<body>
<main>
<h1>$title</h1>
$test_line
$facts
$notes
$leaderboard
<div class="two">
<div>
<h2>Class-wise accuracy</h2>
$class_table
</div>
<div>
<h2>Config</h2>
$config_table
</div>
</div>
$figures
</main>
</body>
</html>
"""
)


def _data_uri(png: Path) -> str | None:
    try:
        raw = png.read_bytes()
    except OSError as exc:
        logger.warning("report: cannot read %s (%s); figure left out", png, exc.strerror)
        return None
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool], cls: str = "") -> str:
    def cell(tag: str, text: str, num: bool) -> str:
        attr = ' class="num"' if num else ""
        return f"<{tag}{attr}>{text}</{tag}>"

    head = "".join(cell("th", html.escape(h), n) for h, n in zip(header, numeric, strict=True))
    body = "\n".join(
        "<tr>" + "".join(cell("td", html.escape(c), n) for c, n in zip(row, numeric, strict=True)) + "</tr>"
        for row in rows
    )
    klass = f' class="{cls}"' if cls else ""
    return f'<div class="scroll"><table{klass}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'


def _class_table_html(data: ReportData) -> str:
    rows = []
    for name, acc, n, c in zip(
        data.classes, data.per_class_accuracy, data.per_class_counts, data.per_class_correct, strict=True
    ):
        pct = _acc_pct(acc)
        width = 0.0 if pct is None else pct
        shown = "—" if pct is None else f"{pct:.2f}%"
        bar = f'<div class="bar"><span style="width:{width:.1f}%"></span></div>'
        rows.append(
            f'<tr><td>{html.escape(name)}</td><td class="num">{c}</td><td class="num">{n}</td>'
            f'<td class="num">{shown}</td><td>{bar}</td></tr>'
        )
    seed = html.escape("\n".join(class_table(data.classes, data.per_class_accuracy)))
    return (
        '<table><thead><tr><th>class</th><th class="num">correct</th><th class="num">images</th>'
        '<th class="num">accuracy</th><th></th></tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>\n"
        + f'<details><summary>in the seed\'s format</summary><pre class="classes">{seed}</pre></details>'
    )


def render_html(data: ReportData, root: Path) -> str:
    """The whole page; figure paths are read relative to `root` and inlined."""
    facts = ""
    if data.summary:
        items = "".join(
            f"<li><b>{html.escape(label)}</b> {html.escape(fmt_value(value, label))}</li>"
            for label, value in data.summary
        )
        facts = f'<ul class="facts">{items}</ul>'
    leaderboard = ""
    if data.leaderboard:
        cols, cells = leaderboard_table(data.leaderboard)
        numeric = [all(_looks_numeric(row[i]) for row in cells) for i in range(len(cols))]
        leaderboard = "<h2>Leaderboard</h2>\n" + _html_table(cols, cells, numeric, cls="lead")
    pairs = [(k, fmt_value(v, k)) for k, v in data.config.items()]
    # two key/value pairs per row: the config is long and narrow, this halves its height
    half = (len(pairs) + 1) // 2
    config_rows = [[*pairs[i], *(pairs[i + half] if i + half < len(pairs) else ("", ""))] for i in range(half)]
    config_table = "<p>—</p>"
    if config_rows:
        config_table = _html_table(["key", "value", "key", "value"], config_rows, [False] * 4, cls="cfg")
    parts: list[str] = []
    section = None
    for fig in data.figures:
        uri = _data_uri(Path(root) / fig.path)
        if uri is None:
            continue
        if fig.section != section:
            if section is not None:
                parts.append("</div>")
            section = fig.section
            parts.append(f'<h2>{html.escape(section)}</h2>\n<div class="figs">')
        cap = html.escape(fig.caption)
        klass = "" if fig.wide else ' class="half"'
        parts.append(f'<figure{klass}><img src="{uri}" alt="{cap}"><figcaption>{cap}</figcaption></figure>')
    if section is not None:
        parts.append("</div>")
    return PAGE.substitute(
        title=html.escape(data.title),
        css=CSS,
        test_line=f'<div class="testline">{html.escape(data.test_line)}</div>' if data.test_line else "",
        facts=facts,
        notes="\n".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes),
        leaderboard=leaderboard,
        class_table=_class_table_html(data),
        config_table=config_table,
        figures="\n".join(parts),
    )


def _looks_numeric(text: str) -> bool:
    t = text.rstrip("%")
    try:
        float(t)
    except ValueError:
        return text == "—"
    return True


def write_report(data: ReportData, out_dir: Path) -> tuple[Path, Path]:
    """Write report.md and report.html into `out_dir` (figures must already be there)."""
    out_dir = Path(out_dir)
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, render_markdown(data))
    atomic_write_text(page, render_html(data, out_dir))
    logger.info("wrote %s and %s", md, page)
    return md, page


__all__ = [
    "ReportData",
    "ReportFigure",
    "fmt_value",
    "leaderboard_table",
    "render_html",
    "render_markdown",
    "write_report",
]
