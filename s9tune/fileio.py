"""Atomic file writes: a temp file in the same folder, then `os.replace`, so a reader (or a
resumed run) never sees half a file, and results keep the user's umask permissions.

`write_inside` is the same for a folder s9tune reads from someone else (an experiment): it
never goes through a symbolic link, neither at the file nor in a folder on the way to it."""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s9tune.errors import S9Error


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class LinkRefusedError(S9Error):
    """A file s9tune would write is a symbolic link (or lies below one)."""


def _open_folder(parent_fd: int, name: str, where: Path) -> int:
    """The sub-folder `name` of an open folder (made if missing), never through a link."""
    try:
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError:
        if stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            raise LinkRefusedError(f"{where}: is a symbolic link; s9tune writes only into real folders") from None
        raise


def write_inside(root: Path, relpath: str, data: bytes) -> None:
    """Write `root/relpath` atomically, creating its folders, without following any link below
    `root` (opened O_NOFOLLOW, then each step through the descriptor of the one before). A
    link where the file goes is refused, not replaced: someone planted it, and should know."""
    parts = [p for p in relpath.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"not a relative file path: {relpath!r}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for i, name in enumerate(parts[:-1]):
            sub = _open_folder(fd, name, root.joinpath(*parts[: i + 1]))
            os.close(fd)
            fd = sub
        name = parts[-1]
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                linked = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            except FileNotFoundError:
                linked = False
            if linked:
                raise LinkRefusedError(
                    f"{root.joinpath(*parts)}: is a symbolic link; s9tune does not write through one "
                    "(remove it, or read a copy of the folder without links)"
                )
            # rename replaces a link swapped in meanwhile itself, never the file it points to
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(fd)


LINKED = "is a symbolic link; s9tune reads a folder's own files only, never through a link"


def list_inside(root: Path, *, dirs: bool) -> list[str]:
    """The folders (or files) directly inside `root`, never through a link: a link to a folder
    is refused (reading it would leave `root`); a link to a file is no entry."""
    names = []
    for e in os.scandir(root):
        if e.is_symlink():
            if dirs and e.is_dir():
                raise LinkRefusedError(f"{root}/{e.name}: {LINKED} (put the folder itself there)")
        elif e.is_dir(follow_symlinks=False) if dirs else e.is_file(follow_symlinks=False):
            names.append(e.name)
    return sorted(names)


def read_inside(root: Path, relpath: str, limit: int) -> bytes:
    """`limit + 1` bytes at most of root/relpath, opened one component at a time with
    O_NOFOLLOW: a link anywhere below `root` is OSError(ELOOP) naming its relative path."""
    parts = relpath.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | (0 if last else os.O_DIRECTORY), dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
                    os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                ):
                    raise OSError(errno.ELOOP, "a symbolic link", "/".join(parts[: i + 1])) from None
                raise
            os.close(fd)
            fd = nfd
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return fh.read(limit + 1)
    finally:
        if fd >= 0:
            os.close(fd)
