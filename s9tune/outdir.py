"""Output folders (`--out` of train, lr-find, retrain and analyze): created, resumed or replaced,
and only ever replaced when s9tune made them.

Every folder s9tune creates holds `s9tune.json` ({"kind": "train", "s9tune": VERSION, ...}).
`--force` empties a folder only when that marker names the same kind *and* every entry, at
every depth, is one s9tune writes for that kind (KIND_SPECS: tb/ holds event files,
checkpoints/ *.pt, plots/ *.png, a retrain's seeds/seed-N/ a run, its tune/ Tune's experiment
of the seeds); never `/`, the home folder, the working folder or a folder
above it, the data dir (or above it), or an experiment. `--resume` continues only a folder whose
marker says `train`. Symbolic links are never followed at the folder or below it: the folder is
opened with O_NOFOLLOW, and everything after that (reading the marker, listing, removing) goes
through that open folder's descriptor, so a path swapped for a link mid-way cannot redirect it.
A symlink above the folder (a home on another disk) is followed, as any path is.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from s9tune import __version__
from s9tune.data import resolve_data_dir
from s9tune.errors import OutputExistsError
from s9tune.fileio import atomic_write_text

MARKER = "s9tune.json"
MARKER_MAX_BYTES = 64 * 1024
# What each kind's folder holds, at every depth: a name pattern (fnmatch) -> None for a file, or
# the spec of a folder's own entries. `--force` empties a folder only if every entry at every
# depth matches (so a notes.txt in tb/, or an experiment copied into checkpoints/, is refused).
Spec = dict[str, "Spec | None"]
_RUN: Spec = {
    "config.yaml": None,
    "run.json": None,
    "metrics.jsonl": None,
    "metrics.json": None,
    "tb": {"events.out.tfevents.*": None},  # TensorBoard's event files, one per writer
    "checkpoints": {"*.pt": None},
}
_ANALYSIS: Spec = {"analysis.json": None, "report.html": None, "report.md": None, "plots": {"*.png": None}}
# retrain's Tune experiment (retrain.TUNE_DIR, Ray 2.60's layout): Tune's state, and a folder per
# seed with Tune's files and checkpoints, each checkpoint a seed's run folder
_TUNE: Spec = {
    ".validate_storage_marker": None,
    "experiment_state-*.json": None,
    "basic-variant-state-*.json": None,
    "search_gen_state-*.json": None,
    "tuner.pkl": None,
    "train_seed_*": {
        **dict.fromkeys(("params.json", "params.pkl", "result.json", "progress.csv", "error.txt", "error.pkl")),
        "events.out.tfevents.*": None,
        "checkpoint_*": _RUN,
    },
}
KIND_SPECS: dict[str, Spec] = {
    "train": _RUN,
    # retrain.RECORD, retrain.LOG and retrain.TUNE_DIR (tests/test_outdir.py checks the names)
    "retrain": {
        **_RUN,
        **_ANALYSIS,
        "seeds": {"seed-*": _RUN},
        "s9tune_retrain.json": None,
        "retrain.log": None,
        "tune": _TUNE,
    },
    "analyze": _ANALYSIS,
    "lr-find": {"lr_find.png": None, "lr_find.json": None},
}
KIND_ENTRIES: dict[str, frozenset[str]] = {kind: frozenset(spec) for kind, spec in KIND_SPECS.items()}
_ATOMIC_TEMP = re.compile(r"^\..+\.tmp$")  # fileio.atomic_path's temp file, left by a crash
# what an experiment folder holds (s9tune's record, Tune's state): named here, since this module
# must not import the search package (train runs without Ray)
_EXPERIMENT_FILES = ("s9tune_space.json", "experiment_state", "tuner.pkl")


def prepare_out_dir(
    out: Path | str,
    *,
    kind: str,
    force: bool = False,
    resume: bool = False,
    protect: tuple[Path | str | None, ...] = (),
    check_only: bool = False,
) -> Path:
    """Return `out` as an absolute path, ready to write the `kind` command's files into.

    A missing or empty folder is used (and marked). `resume`: the folder must be an s9tune
    folder of this kind (or empty). `force`: a folder of the same kind is emptied. Anything else
    raises OutputExistsError and changes nothing. `protect`: more folders never to replace (data
    dirs). `check_only`: every check, nothing created or removed (to refuse before long work).
    """
    if kind not in KIND_SPECS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = Path(os.path.abspath(Path(out).expanduser()))
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputExistsError(f"{out}: cannot use this folder ({exc.strerror})") from None
    if st is None:
        return out if check_only else _create(out, kind)
    if stat.S_ISLNK(st.st_mode):
        raise OutputExistsError(f"{out}: is a symbolic link; s9tune writes only into a real folder (give its target)")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputExistsError(f"{out}: exists and is not a folder")
    with _open_dir(out) as fd:
        entries = sorted(os.listdir(fd))
        if not entries:
            if not check_only:
                _write_marker(out, kind)
            return out
        if resume:
            if _marker_kind(fd) != kind:
                raise OutputExistsError(
                    f"{out}: not an s9tune {kind} folder ({MARKER} missing or of another kind); nothing to resume here"
                )
            return out
        if not force:
            raise OutputExistsError(
                f"{out}: already holds a previous run or other files; choose another --out "
                f"(--force replaces only a folder that s9tune {kind} wrote)"
            )
        _check_replaceable(out, fd, kind, entries, protect)
        if check_only:
            return out
        try:
            _remove_entries(fd, entries)
        except OSError as exc:
            raise OutputExistsError(f"{out}: could not empty it for --force ({exc.strerror}: {exc.filename})") from None
    _write_marker(out, kind)
    return out


def _create(out: Path, kind: str) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir()  # not exist_ok: a folder that appeared meanwhile is not ours
    except FileExistsError:
        raise OutputExistsError(f"{out}: appeared while s9tune was creating it; run again") from None
    except OSError as exc:
        raise OutputExistsError(f"{out}: cannot create this folder ({exc.strerror})") from None
    _write_marker(out, kind)
    return out


def _write_marker(out: Path, kind: str) -> None:
    atomic_write_text(out / MARKER, marker_text(kind) + "\n")


class _open_dir:
    """The folder itself (O_NOFOLLOW), as a descriptor: all later steps go through it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:
            self.fd = os.open(self.path, flags)
        except OSError as exc:
            raise OutputExistsError(f"{self.path}: cannot open this folder ({exc.strerror})") from None
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _marker_kind(dir_fd: int) -> str | None:
    try:
        fd = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return None  # missing, or a link: not a marker s9tune wrote
    try:
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MARKER_MAX_BYTES + 1)
    except OSError:
        return None
    try:
        return marker_kind_of(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _protected(out: Path, protect: tuple[Path | str | None, ...]) -> str | None:
    """Why `out` may never be replaced, or None."""
    real = Path(os.path.realpath(out))
    if real == Path(real.anchor):
        return "the root folder"
    never = [
        ("the home folder", Path.home()),
        ("the working folder", Path.cwd()),
        ("the data dir", resolve_data_dir(None)),
        *(("the data dir", resolve_data_dir(p)) for p in protect if p is not None),
    ]
    for what, path in never:
        path = Path(os.path.realpath(path))
        if real == path:
            return what
        if real in path.parents:
            return f"a folder that holds {what} ({path})"
    return None


def _check_replaceable(out: Path, fd: int, kind: str, entries: list[str], protect: tuple) -> None:
    why = _protected(out, protect)
    if why is not None:
        raise OutputExistsError(f"{out}: is {why}; --force never replaces it")
    if any(e.startswith(_EXPERIMENT_FILES) for e in entries):
        raise OutputExistsError(f"{out}: holds a search experiment; --force never replaces it")
    check_listing(str(out), kind, _marker_kind(fd), list(_walk(fd, KIND_SPECS[kind])))


def _walk(dir_fd: int, spec: Spec, prefix: str = "") -> Iterator[tuple[str, bool | None]]:
    """Every entry below the open folder as (relative path, is a folder; None for a link),
    through descriptors and never through a link; a folder's entries only if the spec expects
    that folder, so a walk never goes deeper than s9tune writes."""
    for name in sorted(os.listdir(dir_fd)):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        is_dir = None if stat.S_ISLNK(st.st_mode) else stat.S_ISDIR(st.st_mode)
        yield prefix + name, is_dir
        sub = _pattern(spec, name)
        if is_dir and sub is not None and spec[sub] is not None:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                yield from _walk(fd, spec[sub], f"{prefix}{name}/")  # type: ignore[arg-type]
            finally:
                os.close(fd)


def _pattern(spec: Spec, name: str) -> str | None:
    return next((p for p in spec if fnmatch.fnmatchcase(name, p)), None)


def written_by(kind: str, path: str, is_dir: bool | None) -> bool:
    """Whether `kind` writes this entry (a relative path; is_dir None: a link, removed as one)."""
    spec: Spec | None = {**KIND_SPECS[kind], MARKER: None}
    parts = path.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if last and is_dir is False and _ATOMIC_TEMP.match(part):
            return True  # fileio.atomic_path's temp file, left by a crash
        pattern = _pattern(spec, part) if spec is not None else None
        if pattern is None:
            return False
        spec = spec[pattern]  # type: ignore[index]
        if not last and spec is None:
            return False  # something below a file
    return is_dir is None or is_dir == (spec is not None)


def check_listing(
    where: str, kind: str, marker_kind: str | None, entries: list[str] | list[tuple[str, bool | None]]
) -> None:
    """What --force may replace, from the folder's marker and every entry at every depth, as
    relative paths: (path, is a folder) for a local folder, the file paths of a storage URI
    (where a retrain's OUT may live, and folders are only prefixes)."""
    if marker_kind != kind:
        what = f"an s9tune {marker_kind} folder" if marker_kind else f"not a folder s9tune made ({MARKER} missing)"
        raise OutputExistsError(f"{where}: is {what}; --force replaces only an s9tune {kind} folder")
    listed = [(e, False) if isinstance(e, str) else e for e in entries]
    foreign = next((path for path, is_dir in listed if not written_by(kind, path, is_dir)), None)
    if foreign is not None:
        raise OutputExistsError(
            f"{where}: also holds {foreign!r}, which s9tune {kind} does not write; --force leaves it alone "
            "(move it, or choose another --out)"
        )


def marker_text(kind: str) -> str:
    return json.dumps({"kind": kind, "s9tune": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def marker_kind_of(text: str | None) -> str | None:
    """The kind a marker's text names, or None for anything that is not one."""
    if text is None or len(text) > MARKER_MAX_BYTES:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def _remove_entries(dir_fd: int, names: list[str]) -> None:
    """Remove `names` inside the open folder, never following a link (a link is removed itself)."""
    for name in names:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            continue
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            if not os.path.samestat(st, os.fstat(sub)):
                raise OutputExistsError(f"{name}: changed while s9tune was replacing its folder; stopped")
            _remove_entries(sub, os.listdir(sub))
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=dir_fd)
