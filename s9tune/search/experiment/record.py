"""The experiment on storage: where it lives (a folder or a URI), how s9tune's record of it is
written and read, and what its trials hold, read from Tune's JSON files (search/experiment/tune_files.py).

`STORAGE/NAME` is one Tune experiment plus s9tune's record (`s9tune_space.json`: the
validated search space, so resume and results never depend on today's YAML file).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s9tune.errors import ConfigError, S9Error, shown
from s9tune.search.experiment import journal_rows, tune_files
from s9tune.search.experiment.trials import Experiment
from s9tune.search.searcher.journal import JOURNAL, read_studies
from s9tune.search.space.checks import number
from s9tune.search.space.space import SearchSpace
from s9tune.storage import Folder, StorageError, is_uri

SPACE_RECORD = "s9tune_space.json"
SEARCH_LOG = "search.log"
DEFAULT_MAX_FAILURES = 2  # retries of a failed trial, when an older record does not say
MAX_FAILURES = 1000
RECORD_MAX_BYTES = 1024 * 1024  # a record is a few KB
# one path component: no "/", no "..", nothing a shell or a URI would read differently
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def resolve_storage(storage: str | None) -> str:
    """Absolute local path or a URI. Tune changes each trial's working directory, so a relative
    path would point somewhere else inside a trial."""
    if storage is None:
        return str((Path.cwd() / "searches").resolve())
    if is_uri(storage):
        base, sep, query = _check_uri(storage).partition("?")
        return base.rstrip("/") + sep + query
    return str(Path(storage).expanduser().resolve())


def _check_uri(uri: str) -> str:
    """A URI must name a bucket (or, for file://, a folder): `s3://` alone would otherwise lose
    its slashes and become the local folder `s3:`."""
    scheme, _, rest = uri.partition("?")[0].partition("://")
    if not scheme or not rest.strip("/"):
        raise StorageError(f"{shown(uri)}: names no bucket; write {scheme or 's3'}://BUCKET/PREFIX")
    return uri


def default_name(space: SearchSpace) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", space.path.stem).strip("-.") or "search"
    return f"{stem[:100]}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_name(name: str) -> str:
    """An experiment name is one folder name: STORAGE/NAME must never reach outside STORAGE."""
    if not NAME_PATTERN.fullmatch(name) or name.endswith("."):
        raise S9Error(
            f"--name {shown(name)}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(one folder name, no '/')"
        )
    return name


def already_exists(path: str) -> ConfigError:
    return ConfigError(f"{path}: already exists; pass --resume to continue it or choose another --name")


@dataclass(frozen=True)
class ExperimentRef:
    """STORAGE/NAME, with the file operations s9tune needs on it (local or a pyarrow URI such as
    s3://bucket/prefix, optionally with ?endpoint_override=host:port&scheme=http)."""

    storage: str
    name: str

    @classmethod
    def parse(cls, experiment: str) -> ExperimentRef:
        if is_uri(experiment):
            _check_uri(experiment)
        base, sep, query = experiment.partition("?")
        base = base.rstrip("/")
        if not is_uri(base):
            base = str(Path(base).expanduser().resolve())
        storage, _, name = base.rpartition("/")
        return cls(storage + sep + query, name)

    @property
    def path(self) -> str:
        base, sep, query = self.storage.partition("?")
        return f"{base}/{self.name}{sep}{query}"

    @property
    def folder(self) -> Folder:
        return Folder.parse(self.path)

    def exists(self) -> bool:
        return self.folder.exists()

    def check_writable(self) -> None:
        """A missing bucket, refused credentials or a read-only folder become one line here,
        before Ray starts, not a traceback from a trial (nothing is created for a local path)."""
        self.folder.check_writable()

    def create(self, space: SearchSpace, *, max_failures: int) -> list[Path]:
        """Start a new experiment: its folder is made here (locally: refusing one that exists,
        atomically), then the record is written into it. Returns the storage folders this made
        (for `discard`), deepest first."""
        made: list[Path] = []
        if not is_uri(self.storage):
            folder = Path(self.storage)
            while not folder.exists() and folder != folder.parent:
                made.append(folder)
                folder = folder.parent
            try:
                Path(self.storage).mkdir(parents=True, exist_ok=True)
                Path(self.path).mkdir()
            except FileExistsError:
                raise already_exists(self.path) from None
            except OSError as exc:
                raise StorageError(f"{self.path}: cannot create the experiment folder ({exc.strerror})") from None
        elif self.read_text(SPACE_RECORD) is not None:
            raise already_exists(self.path)
        self.write_record(space, max_failures=max_failures)
        return made

    def discard(self, made: Sequence[Path] = ()) -> None:
        """Undo `create` for a search refused before launch: remove the files s9tune wrote
        before Tune started (the record, Ray's log, the journal), then the folder only if nothing else is in
        it, then the storage folders `create` made, if empty. Nothing else is ever removed, so a
        folder that existed before, or that holds anything, survives."""
        fs, root = self.folder.fs()
        for name in (SPACE_RECORD, SEARCH_LOG, JOURNAL, f"{JOURNAL}.lock"):
            try:
                fs.delete_file(f"{root}/{name}")
            except (FileNotFoundError, OSError):
                pass
        try:
            left = self.folder.listing(dirs=True) or self.folder.listing(dirs=False)
            if not left and is_uri(self.storage):
                fs.delete_dir(root)  # an object store's "folder" is only the prefix s9tune wrote
            elif not left:
                os.rmdir(root)  # rmdir, not rmtree: fails rather than remove anything it did not see
                for folder in made:
                    os.rmdir(folder)
        except (OSError, S9Error):
            pass

    def tune_started(self) -> bool:
        """Whether Tune wrote its state here, which is what --resume continues."""
        try:
            return any(n.startswith("experiment_state-") for n in self.list_files())
        except S9Error:
            return False

    def list_dirs(self) -> list[str]:
        """The names of the folders directly inside the experiment."""
        return self._listing(dirs=True)

    def list_files(self) -> list[str]:
        """The names of the files directly inside the experiment."""
        return self._listing(dirs=False)

    def _listing(self, *, dirs: bool) -> list[str]:
        names = self.folder.listing(dirs=dirs)
        if names is None:
            raise S9Error(f"{self.path}: no such experiment")
        return names

    def read_bytes(self, relpath: str, limit: int) -> bytes | None:
        return self.folder.read_bytes(relpath, limit)

    def write_text(self, relpath: str, text: str) -> None:
        self.folder.write_text(relpath, text)

    def read_text(self, relpath: str, limit: int = RECORD_MAX_BYTES) -> str | None:
        """The file's text, or None if it does not exist (storage.Folder.read_text)."""
        return self.folder.read_text(relpath, limit)

    def write_record(self, space: SearchSpace, *, max_failures: int = DEFAULT_MAX_FAILURES) -> None:
        record = {**space.to_record(), "max_failures": max_failures}
        self.write_text(SPACE_RECORD, json.dumps(record, indent=2))

    def read_record_dict(self) -> dict[str, Any]:
        """s9tune's record, checked as a space file is (SearchSpace.from_record): one line naming
        the file and the key if it is damaged or edited."""
        where = f"{self.path}/{SPACE_RECORD}"
        raw = self.read_text(SPACE_RECORD, RECORD_MAX_BYTES)
        if raw is None:
            raise S9Error(
                f"{self.path}: no such s9tune experiment (no {SPACE_RECORD}); pass the STORAGE/NAME a search printed"
            )
        try:
            record = json.loads(raw)
            SearchSpace.from_record(record, where)
            max_failures(record, where)
        except ConfigError as exc:
            detail = str(exc).removeprefix(f"{where}: ")
            raise S9Error(f"{where}: not a valid s9tune record (damaged or edited): {detail}") from None
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise S9Error(f"{where}: not a valid s9tune record (damaged or edited)") from None
        return record

    def read_record(self) -> SearchSpace:
        return SearchSpace.from_record(self.read_record_dict(), f"{self.path}/{SPACE_RECORD}")


def max_failures(record: dict[str, Any], where: str) -> int:
    """The retries the search allowed a failed trial (what makes a trial's status `error`)."""
    value = record.get("max_failures", DEFAULT_MAX_FAILURES)
    number(Path(where), "max_failures", value, integer=True)
    if not 0 <= value <= MAX_FAILURES:
        raise ConfigError(f"{where}: max_failures: must lie in [0, {MAX_FAILURES:,}]")
    return int(value)


def check_resumable(ref: ExperimentRef) -> SearchSpace:
    """The experiment's own space, if its record and Tune's state describe the same search
    (search/tune_files.check_resumable); else one line saying why it is not resumed."""
    try:
        record = ref.read_record_dict()
    except S9Error as exc:
        raise S9Error(f"{ref.path}: not an s9tune experiment, so not resumed ({exc})") from None
    space = SearchSpace.from_record(record, f"{ref.path}/{SPACE_RECORD}")
    tune_files.check_resumable(ref, record, {d.key for d in space.dists})
    return space


def load_experiment(experiment: str) -> Experiment:
    """Read STORAGE/NAME through JSON and text only: s9tune's record, then each trial's
    params.json, result.json and error.txt (search/experiment/tune_files.py), and the runs the journal
    shows further on than those files (search/experiment/journal_rows.py). No pickle is opened, so an
    experiment someone else wrote runs none of their code here."""
    ref = ExperimentRef.parse(experiment)
    record = ref.read_record_dict()
    where = f"{ref.path}/{SPACE_RECORD}"
    space = SearchSpace.from_record(record, where)
    keys = [d.key for d in space.dists]
    trials = tune_files.read_trials(ref)
    for t in trials:
        tune_files.check_trial(t, space, ref.path)
    rows = [tune_files.trial_row(t, keys, space.max_t, max_failures(record, where)) for t in trials]
    rows = journal_rows.fill_from_journal(rows, read_studies(ref.folder), space, ref.path)
    return Experiment(ref.path, space, rows)
