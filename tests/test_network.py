"""Where s9tune's Ray connects: `--address auto` only through an address file no other user
could have written (Ray makes its temp folder world-writable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s9tune.search.execution import cluster, ray_compat


@pytest.fixture
def ray_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):  # set first, so that undo removes what the code sets
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "no-token"))
    (tmp_path / "ray").mkdir()
    os.chmod(tmp_path / "ray", 0o777)  # as Ray leaves it
    return tmp_path / "ray"


def test_auto_needs_an_address_file(ray_tmp: Path) -> None:
    with pytest.raises(cluster.ClusterError, match="no cluster started on this machine"):
        cluster.trusted_local_address()


def test_auto_refuses_a_file_others_could_write(ray_tmp: Path) -> None:
    f = ray_tmp / "ray_current_cluster"
    f.write_text("10.6.6.6:6379")
    os.chmod(f, 0o666)
    with pytest.raises(cluster.ClusterError, match="could have been written by another user"):
        cluster.trusted_local_address()
    f.unlink()
    f.symlink_to(ray_tmp / "elsewhere")
    with pytest.raises(cluster.ClusterError, match="could have been written by another user"):
        cluster.trusted_local_address()


def test_auto_reads_the_users_own_file_and_turns_on_the_token(ray_tmp: Path) -> None:
    f = ray_tmp / "ray_current_cluster"
    f.write_text("127.0.0.1:6379\n")
    os.chmod(f, 0o644)
    assert cluster.trusted_local_address() == "127.0.0.1:6379"
    assert "RAY_AUTH_MODE" not in os.environ  # no token here: nothing to turn on
    (ray_tmp.parent / "no-token").write_text("secret")
    assert cluster.trusted_local_address() == "127.0.0.1:6379"
    assert os.environ["RAY_AUTH_MODE"] == "token"  # as Ray's own auto does when a token exists
    f.write_text("not an address")
    with pytest.raises(cluster.ClusterError, match="holds no HOST:PORT"):
        cluster.trusted_local_address()


def test_a_cluster_that_wants_a_token_is_one_line_without_ray_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe asks the GCS once and answers; ray.init (and its 20 retries) is never tried.
    Counted, not timed: a wall-clock limit would stand in for "no retries" and flake."""
    import socket

    import ray
    from ray.exceptions import AuthenticationError

    asked: list[str] = []

    def gcs_client(address: str):
        asked.append(address)
        raise AuthenticationError("InvalidAuthToken: Unauthenticated")

    monkeypatch.setattr("ray._raylet.GcsClient", gcs_client)
    monkeypatch.setattr(cluster, "_speaks_grpc", lambda address, timeout: True)
    # the stand-in listens on loopback only; a real head listens on every interface, so the
    # address Ray dials for 127.0.0.1 (this machine's IP) reaches it too
    monkeypatch.setattr(ray_compat, "dialled_address", lambda address: address)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init was tried"))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "x")
    monkeypatch.delenv("RAY_AUTH_MODE")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(cluster.ClusterError, match="uses token authentication: set RAY_AUTH_MODE=token"):
            cluster.init_ray(address)
    assert asked == [address]
