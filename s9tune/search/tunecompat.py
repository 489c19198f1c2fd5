"""The one place s9tune reaches into Ray Tune's private API; tests/test_seeds.py fails loudly
when a Ray upgrade moves it."""

from __future__ import annotations

from typing import Any


def attach_callback(tuner: Any, callback: Any) -> None:
    """Give a Tuner a console callback in place of any of the same type it already holds.

    `Tuner.restore` rebuilds the run config from the experiment and has no parameter to change
    it; the stored callbacks are silent copies (their console belonged to the process that
    wrote them), so a restored run attaches this process's console here."""
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, type(callback))] + [callback]
