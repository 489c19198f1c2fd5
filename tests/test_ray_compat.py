"""s9tune/search/execution/ray_compat.py holds the only uses of Ray beyond its public API. These tests fail
loudly when the installed Ray is not the release they were checked on, or no longer has what
the module uses, so that a Ray upgrade is a decision and not a surprise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from s9tune.search.execution import ray_compat

REPO = Path(__file__).resolve().parents[1]


def test_installed_ray_is_the_release_the_compat_module_was_checked_on() -> None:
    import ray

    assert ray.__version__.startswith(ray_compat.TESTED_RAY + "."), (
        f"Ray {ray.__version__} is installed, but s9tune/search/execution/ray_compat.py was checked on "
        f"{ray_compat.TESTED_RAY}: re-check its two uses of Ray, then move TESTED_RAY and the pin"
    )
    pin = re.search(r'"ray\[tune\]>=([\d.]+),<([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pin is not None and pin.group(1) == ray_compat.TESTED_RAY, "pyproject.toml must pin the tested Ray"


def test_what_the_compat_module_uses_is_still_there() -> None:
    import ray.exceptions
    from ray._raylet import GcsClient

    assert callable(GcsClient) and issubclass(ray.exceptions.AuthenticationError, Exception)
    missing = ray_compat.dashboard_missing()
    assert missing is None or isinstance(missing, ImportError)


def test_the_address_file_is_where_ray_puts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._common.utils import get_ray_address_file  # Ray's rule; this test fails if it moves

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert ray_compat.ray_address_file() == Path(get_ray_address_file(None))


def test_ray_dials_a_loopback_address_as_this_machines_own() -> None:
    from ray._private.services import canonicalize_bootstrap_address  # Ray's rule; this test fails if it moves

    assert ray_compat.dialled_address("127.0.0.1:6379") == canonicalize_bootstrap_address("127.0.0.1:6379")
    assert ray_compat.dialled_address("127.0.0.1:6379").endswith(":6379")
    assert ray_compat.dialled_address("10.1.2.3:6379") == "10.1.2.3:6379"  # only loopback is rewritten


@pytest.mark.slow
def test_the_auth_probe_names_a_refused_token_on_a_real_cluster() -> None:
    """Against a token cluster, without the opt-in, Ray's GCS client refuses at once (ray.init
    would retry for ~20 s and then say only "Failed to connect"); with the token it answers None."""
    from ray_cluster import running_cluster

    code = (
        "import sys; from s9tune.search.execution.ray_compat import gcs_auth_error; e = gcs_auth_error(sys.argv[1]); "
        "print(type(e).__name__)"
    )
    with running_cluster() as c:
        env = {k: v for k, v in c.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        res = subprocess.run(
            [sys.executable, "-c", code, c.address], env=env, capture_output=True, text=True, timeout=120
        )
        right = subprocess.run(
            [sys.executable, "-c", code, c.address], env=c.env, capture_output=True, text=True, timeout=120
        )
    assert res.stdout.strip().splitlines()[-1] == "AuthenticationError", res.stderr[-2000:]
    assert right.stdout.strip().splitlines()[-1] == "NoneType", right.stderr[-2000:]


@pytest.mark.slow
def test_tune_state_reads_what_tune_writes(tmp_path: Path) -> None:
    """The --resume check reads Tune's experiment_state-*.json as JSON through `tune_state`:
    the metric (the controller's private `_metric`) and each trial's trainable and config. A real
    tune.run writes the file this reads; a Ray that changes its shape fails here, not on a
    user's resume."""
    import json

    import ray
    from ray import tune

    def _one_iteration(config: dict) -> None:  # defined here: Ray pickles it by value to its workers
        tune.report({"val_accuracy": 0.5})

    try:
        tune.run(
            _one_iteration,
            name="e",
            storage_path=str(tmp_path),
            config={"max_lr": tune.grid_search([0.1, 0.2])},
            metric="val_accuracy",
            mode="max",
            verbose=0,
        )
    finally:
        ray.shutdown()
    (state_file,) = (tmp_path / "e").glob("experiment_state-*.json")
    state = ray_compat.tune_state(json.loads(state_file.read_text()))
    assert state.metric == "val_accuracy"
    assert sorted(c["max_lr"] for _, c in state.trials) == [0.1, 0.2]
    assert {name for name, _ in state.trials} == {"_one_iteration"}
    with pytest.raises(ValueError):
        ray_compat.tune_state({"runner_data": {}, "trial_data": [["not json"]]})
