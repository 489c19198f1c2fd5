"""Ray's and Tune's output goes to a log file, not the user's console.

Ray writes from many places: Python logging, `print` from its log monitor thread (the workers'
output it forwards), and C++ warnings written straight to file descriptor 2. Only redirecting
the file descriptors catches all of them, so that is what `ray_output_to` does, for both the
descriptors and Python's sys.stdout/sys.stderr; the stream it yields still reaches the console.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from s9tune.errors import S9Error


def _console_stream() -> tuple[TextIO, bool]:
    """A stream to the console that survives the redirect, and whether we own (must close) it."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return sys.stdout, False  # not a real file (pytest's capsys): it is unaffected by dup2
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


def open_log(path: Path) -> TextIO:
    """Append to `path`, created 0600; a symbolic link there is refused, never followed, so a
    planted link cannot send Ray's output (or, once uploaded, a file it points to) elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if path.is_symlink():
            raise S9Error(f"{path}: is a symbolic link; s9tune does not write its log through one") from None
        raise S9Error(f"{path}: cannot write the search log ({exc.strerror})") from None
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")


@contextlib.contextmanager
def ray_output_to(log_path: Path | None) -> Iterator[TextIO]:
    """Within the block, this process's stdout and stderr go to `log_path` (appended); yields
    the console. `None` leaves everything on the console (`-v`)."""
    if log_path is None:
        yield sys.stdout
        return
    log = open_log(log_path)
    sys.stdout.flush()
    sys.stderr.flush()
    console, owned = _console_stream()
    saved = (os.dup(1), os.dup(2))
    with log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield console
        finally:
            for stream in (sys.stdout, sys.stderr, log):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if owned:
                console.close()
