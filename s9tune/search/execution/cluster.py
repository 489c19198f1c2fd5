"""Ray itself: start it in-process or join a cluster, and check before launch that the cluster
can run the trials (a trial that fits no node is an error, not a hang; a local storage path
must be visible to every node)."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import s9tune
from s9tune.errors import S9Error, shown
from s9tune.search.execution import ray_compat
from s9tune.search.space.space import SearchSpace
from s9tune.storage import is_uri

logger = logging.getLogger(__name__)


class ClusterError(S9Error):
    """The cluster cannot run this search as asked (resources, storage), or cannot be reached."""

    def __init__(self, message: str, why: str = "") -> None:
        super().__init__(message)
        self.why = why or message  # the reason alone, for a message that says more around it


AUTH_HINT = (
    "set RAY_AUTH_MODE=token, and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token "
    "(`ray get-auth-token` on the head node prints it)"
)


def init_ray(address: str | None, dashboard: bool = False) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS, which `ray job submit` sets), or start
    Ray in-process: a new, private instance even when a cluster runs on this machine
    (`--address auto` joins that one)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # trials report (and often checkpoint) every epoch by design (resume, ASHA); Tune's
    # "snapshotting too often" warning would repeat all search long
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # the checks come before the early return below, so that they answer the same whether or
    # not this process already runs a Ray
    if dashboard and address:
        raise ClusterError(
            "--dashboard is for the Ray that s9tune starts; a cluster has its own "
            "(ray start --head --include-dashboard=true)"
        )
    options: dict[str, Any] = {"include_dashboard": False}
    if dashboard:
        if ray_compat.dashboard_missing() is not None:
            raise ClusterError("--dashboard needs Ray's dashboard packages: pip install 'ray[default]'")
        if ray.is_initialized():
            raise ClusterError("--dashboard: Ray already runs in this process, started without s9tune's dashboard")
        # never on all interfaces: the dashboard can submit jobs
        options = {"include_dashboard": True, "dashboard_host": "127.0.0.1"}
    if ray.is_initialized():
        return
    if address:
        if address == "auto":
            address = trusted_local_address()
        check_reachable(address)
        # ship this package to the cluster's workers; their Python needs the dependencies
        runtime_env = {"py_modules": [str(Path(s9tune.__file__).resolve().parent)]}
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(connect_error(address, exc)) from None
        return
    ray.init(address="local", log_to_driver=True, **options)


def connect_error(address: str, exc: BaseException) -> str:
    """One line: what failed, and for a token-authenticated cluster what to set."""
    text = f"{exc} {exc.__cause__ or ''}"
    if any(s in text for s in ("InvalidAuthToken", "Unauthenticated", "AuthenticationError", "authentication token")):
        if os.environ.get("RAY_AUTH_MODE") == "token":
            return (
                f"the Ray cluster at {shown(address)} rejected this machine's token; set the head's token in "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
            )
        return f"the Ray cluster at {shown(address)} uses token authentication: {AUTH_HINT}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot connect to the Ray cluster at {shown(address)}: {first}"


HANDSHAKE_S = 10.0
RAY_CLIENT_PORT = 10001  # Ray Client's default, for ray://HOST


def trusted_local_address() -> str:
    """`--address auto`, resolved by s9tune from the file `ray start` wrote, and only if no other
    user could have written it: Ray makes its temp folder world-writable (0777), so anyone on the
    machine can put a file there that points at a cluster of theirs, which would then get this
    search's code, data and token. Ray's own `auto` would also fall back to any Ray process it
    finds running, whoever started it. The file must be a regular file owned by this user (or
    root) that nobody else may write."""
    path = ray_compat.ray_address_file()
    hint = "give the head's HOST:PORT with --address instead of auto"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ClusterError(f"--address auto: no cluster started on this machine ({path} is missing); {hint}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.getuid(), 0) or st.st_mode & 0o022:
        raise ClusterError(
            f"--address auto: {path} could have been written by another user (owner uid {st.st_uid}, "
            f"mode {stat.S_IMODE(st.st_mode):o}); {hint}"
        )
    with open(path, encoding="utf-8", errors="replace") as fh:
        address = fh.read(256).strip()
    if not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+:\d+", address):
        raise ClusterError(f"--address auto: {path} holds no HOST:PORT; {hint}")
    # Ray turns token authentication on by itself for `auto` when a token exists; the address
    # now being explicit, do what it would have done
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
    return address


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def _speaks_grpc(address: str, timeout: float) -> bool:
    """Whether something at `address` completes a gRPC (HTTP/2) handshake within `timeout`:
    a port that accepts TCP but is not Ray would otherwise hang ray.init for minutes."""
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def check_reachable(address: str) -> None:
    """Fail within seconds, not after Ray's retries: nothing listening, not Ray, a loopback
    address Ray cannot use, or a token needed. Each probe (TCP, then a gRPC handshake) is bounded
    by HANDSHAKE_S, so a bad address is one line within 2 * HANDSHAKE_S.

    `ray://HOST:PORT` (Ray Client) gets the same TCP and handshake probe. Ray dials a loopback
    address as this machine's own IP, so that address is probed too. Ray enables token
    authentication by itself only for `auto`; for an explicit address the user opts in
    (RAY_AUTH_MODE=token), so that a local token is never sent to a host they did not choose.
    The last probe asks the cluster's GCS with this process's settings, so it fails exactly
    when ray.init would, and says why."""
    if address.startswith("ray://"):
        target = address.removeprefix("ray://").rstrip("/")
        _probe(target if re.search(r":\d+$", target) else f"{target}:{RAY_CLIENT_PORT}", address)
        return
    if "://" in address:
        return
    _probe(address, address)
    dialled = ray_compat.dialled_address(address) or address
    if dialled != address:
        try:
            _probe(dialled, address)
        except ClusterError as exc:
            raise ClusterError(
                f"--address {address}: Ray connects to a loopback address through this machine's own address, "
                f"{dialled}, where {exc.why}; a forward that listens on loopback only "
                "(ssh -L, kubectl port-forward) cannot carry a Ray driver: run s9tune on a node of the cluster, "
                "or forward the head's Ray Client port and use --address ray://127.0.0.1:PORT"
            ) from None
    refused = ray_compat.gcs_auth_error(address)
    if refused is not None:
        raise ClusterError(connect_error(address, refused))


def _probe(hostport: str, given: str) -> None:
    """TCP, then a gRPC handshake, at HOST:PORT, within HANDSHAKE_S in all."""
    started = time.monotonic()
    host, _, port = hostport.rpartition(":")
    try:
        if not host or not 0 < int(port) < 65536:
            raise ValueError(port)
        socket.create_connection((host.strip("[]"), int(port)), timeout=HANDSHAKE_S / 2).close()
    except (ValueError, OverflowError):
        raise ClusterError(f"--address {shown(given)}: expected HOST:PORT or auto") from None
    except OSError as exc:
        raise ClusterError(
            f"nothing answers at {hostport} ({exc.strerror or exc}); "
            f"is the head running (ray start --head --port {port})?",
            why=f"nothing answers ({exc.strerror or exc})",
        ) from None
    left = max(1.0, HANDSHAKE_S - (time.monotonic() - started))
    if os.environ.get("RAY_USE_TLS", "0") in ("0", "") and not _speaks_grpc(hostport, left):
        raise ClusterError(
            f"{hostport} accepts connections but did not answer as a Ray cluster within {HANDSHAKE_S:g} s "
            "(no gRPC handshake); check the host and port of the head",
            why=f"no Ray cluster answered within {HANDSHAKE_S:g} s",
        )


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def preflight(space: SearchSpace, storage: str, exp_name: str) -> int:
    """Check that the cluster can run the trials; returns how many can run at once."""
    return check_cluster(space.cpus_per_trial, space.gpus_per_trial, storage, exp_name, unit="trial")


def check_cluster(cpus: float, gpus: float, storage: str, exp_name: str, *, unit: str, flag: str = "--storage") -> int:
    """Check that a node can hold one `unit` (a trial, a run) with these resources and, on
    several nodes, that a local `storage` path is one they all see; returns how many units fit
    at once. `flag` names the option that set `storage`."""
    nodes = _alive_nodes()
    max_cpu = max(n["Resources"].get("CPU", 0) for n in nodes)
    max_gpu = max(n["Resources"].get("GPU", 0) for n in nodes)
    if cpus > max_cpu:
        raise ClusterError(
            f"a {unit} asks for {cpus:g} CPUs but the largest node has {max_cpu:g}; lower --cpus-per-{unit}"
        )
    if gpus > max_gpu:
        raise ClusterError(
            f"a {unit} asks for {gpus:g} GPUs but the largest node has {max_gpu:g}; "
            f"lower --gpus-per-{unit} (0 runs on CPUs)"
        )
    slots = sum(_fits(n, cpus, gpus) for n in nodes)
    if slots == 0:
        raise ClusterError(
            f"no node has {cpus:g} CPUs and {gpus:g} GPUs at once for a {unit}; "
            f"lower --cpus-per-{unit} or --gpus-per-{unit}"
        )
    if len(nodes) > 1 and not is_uri(storage):
        _check_storage_visible(storage, exp_name, nodes, flag)
    return slots


def _fits(node: dict[str, Any], cpus: float, gpus: float) -> int:
    """How many units of (cpus, gpus) the node holds, in whole units as Ray's scheduler packs them."""
    res = node["Resources"]
    per_node = math.floor(res.get("CPU", 0) / cpus + 1e-9) if cpus > 0 else 1 << 20
    if gpus > 0:
        per_node = min(per_node, math.floor(res.get("GPU", 0) / gpus + 1e-9))
    return per_node


def default_run_resources() -> tuple[float, float]:
    """(CPUs, GPUs) for one run where the user gave none: one GPU where the cluster has GPUs,
    with the CPUs that go with a GPU on the least-provisioned GPU node; else every CPU of the
    smallest node that has CPUs (a CPU run uses every core it gets, and then fits every node)."""
    nodes = _alive_nodes()
    gpu_nodes = [n["Resources"] for n in nodes if n["Resources"].get("GPU", 0) >= 1]
    if gpu_nodes:
        return float(min(max(1, math.floor(r.get("CPU", 0) / r["GPU"])) for r in gpu_nodes)), 1.0
    cpus = [n["Resources"]["CPU"] for n in nodes if n["Resources"].get("CPU", 0) >= 1]
    return float(math.floor(min(cpus))) if cpus else 1.0, 0.0


def _check_storage_visible(storage: str, exp_name: str, nodes: list[dict[str, Any]], flag: str) -> None:
    """A local storage path works on several nodes only if it is a shared filesystem."""
    marker = Path(storage) / exp_name / f".s9tune-probe-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("probe")
    try:
        blind = nodes_not_seeing(marker, nodes)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ClusterError(
            f"{flag} {storage} is a local path that node(s) {', '.join(blind)} cannot see; "
            f"on a multi-node cluster use a shared filesystem or a URI (s3://..., gs://...) for {flag}"
        )


def nodes_not_seeing(path: Path, nodes: list[dict[str, Any]]) -> list[str]:
    """Ask a zero-CPU task pinned to each node whether `path` exists there."""

    @ray.remote(num_cpus=0)
    def sees(p: str) -> bool:
        return Path(p).exists()

    refs = {
        f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(path))
        for n in nodes
    }
    return [node for node, ref in refs.items() if not ray.get(ref, timeout=60)]
