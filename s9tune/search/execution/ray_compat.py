"""The five things s9tune needs of Ray that its public API does not offer, kept here alone and
held to the Ray release that pyproject.toml pins by tests/test_ray_compat.py.

* `gcs_auth_error(address)`: against a cluster that wants a token, `ray.init` retries for about
  20 s and then says only "Failed to connect to Ray cluster" (measured on Ray 2.60, 2026-11-29);
  the reason, a missing or refused token, appears only in the C++ log lines it prints meanwhile.
  Ray's own GCS client (`ray._raylet.GcsClient`) raises `AuthenticationError` at once.
* `dashboard_missing()`: whether `ray[default]`'s packages are importable, checked as Ray checks
  it before it starts a dashboard (`ray.dashboard.optional_deps`), so that `--dashboard` fails
  with one line instead of a Ray without a dashboard.
* `ray_address_file()`: where `ray start` records this machine's cluster address, the file
  `--address auto` reads; Ray's rule for it lives in a private module (`ray._common.utils`).
* `tune_state(state)`: what a Tune experiment's `experiment_state-*.json` (read as plain JSON,
  never unpickled) says of the search, for the `--resume` check: the metric it optimises (the
  controller's private `_metric`) and each trial's trainable and config (`trial_data`, each
  entry a JSON string Tune writes beside its pickles).
* `dialled_address(address)`: the address `ray.init` really connects to. Ray turns a loopback
  host (127.0.0.1, localhost) into this machine's own IP (`ray._private.services`), so a
  forward that listens on loopback only is never reached, and ray.init retries without end
  (measured on Ray 2.60, 2026-12-07: still retrying after 150 s); s9tune probes that address
  first.

Each degrades safely when Ray changes it: the probes then report nothing and `ray.init` says
what failed; an address file elsewhere is not found; a state of another shape refuses the
resume with one line. The test is what notices, loudly.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TESTED_RAY = "2.60"  # the minor release these were read from and tested on; pyproject pins it


def gcs_auth_error(address: str) -> Exception | None:
    """The cluster's refusal of this process's token settings, or None (accepted, or not known)."""
    # imported here: Ray-private, perhaps absent from another release (then None); and this
    # module is on `s9tune results`' path (tune_files), which must not load Ray (~0.9 s CPU)
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    try:
        GcsClient(address=address)
    except AuthenticationError as exc:
        return exc
    except Exception:  # noqa: BLE001 - anything but a refused token is ray.init's to report
        return None
    return None


def dashboard_missing() -> ImportError | None:
    """The import error that says Ray's dashboard packages are missing, or None."""
    # imported here: whether it imports is the answer
    try:
        import ray.dashboard.optional_deps  # noqa: F401 - importable exactly when ray[default] is installed
    except ImportError as exc:
        return exc
    return None


def ray_address_file() -> Path:
    """Where `ray start` records the address of this machine's cluster (Ray's own rule:
    $RAY_TMPDIR, else $TMPDIR on Linux, else /tmp; then ray/ray_current_cluster)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(base or "/tmp") / "ray" / "ray_current_cluster"


@dataclass(frozen=True)
class TuneState:
    """What s9tune reads of a Tune experiment's saved state: the metric it optimises, and each
    trial's trainable name and config."""

    metric: Any
    trials: list[tuple[Any, Any]]  # (trainable name, config) per trial


def tune_state(state: Any) -> TuneState:
    """`state`: an `experiment_state-*.json` parsed as JSON. Raises ValueError if it is not the
    shape Ray writes (the caller turns that into one line)."""
    runner = state.get("runner_data") if isinstance(state, dict) else None
    entries = state.get("trial_data") if isinstance(state, dict) else None
    if not isinstance(runner, dict) or not isinstance(entries, list):
        raise ValueError("no runner_data or trial_data")
    trials = []
    for entry in entries:
        try:
            trial = json.loads(entry[0])
        except (TypeError, IndexError, KeyError, ValueError, RecursionError):
            raise ValueError("a trial entry is not Tune's JSON") from None
        if not isinstance(trial, dict):
            raise ValueError("a trial entry is not a mapping")
        trials.append((trial.get("trainable_name"), trial.get("config")))
    return TuneState(runner.get("_metric"), trials)


def dialled_address(address: str) -> str | None:
    """HOST:PORT as ray.init connects to it (a loopback host becomes this machine's IP), or
    None if this Ray does not say."""
    # imported here for the reasons gcs_auth_error gives
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        return None
    try:
        return canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - a malformed address is the probe's to report
        return None
