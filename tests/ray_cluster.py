"""A real multi-process Ray cluster on 127.0.0.1, started as Ray's docs show: `ray start --head`,
then `ray start --address` for a second node, with token authentication on (current Ray's
default for a cluster with a token). Every process gets its own temp dir and is stopped by pid
(never `ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.port = 0  # the head's GCS port, chosen by Ray itself (--port 0) at start
        self.head_tmp, self.worker_tmp = root / "h", root / "w"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, head_env: dict[str, str]) -> None:
        common = ["--num-cpus", "1", "--object-store-memory", "80000000", "--disable-usage-stats"]
        for _ in range(3):
            # Ray refuses port 0 for its client server, so that one is picked here; if another
            # process takes it before Ray binds it, the start fails and is tried on a new port
            head = subprocess.run(
                [
                    RAY,
                    "start",
                    "--head",
                    "--port",
                    "0",
                    "--temp-dir",
                    str(self.head_tmp),
                    "--include-dashboard=false",
                    "--ray-client-server-port",
                    str(free_port()),
                    *common,
                ],
                env=head_env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            if head.returncode == 0:
                break
            self.stop()
        assert head.returncode == 0, head.stderr[-3000:]
        self.port = int(re.search(r"--address='[^']*:(\d+)'", head.stdout + head.stderr).group(1))
        subprocess.run(
            [
                RAY,
                "start",
                "--address",
                self.address,
                "--temp-dir",
                str(self.worker_tmp),
                "--resources",
                '{"second_node": 1}',
                *common,
            ],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=180,
        )

    def processes(self, where: Path | None = None) -> list[psutil.Process]:
        """This cluster's processes: command lines naming its temp dirs (or its client server),
        with their children (Ray's workers rename themselves, so only their parent tells)."""
        marks = [str(where)] if where else [str(self.head_tmp), str(self.worker_tmp)]
        if not where and self.port:  # before the head is up its port is unknown (0): never match ":0"
            marks.append(f":{self.port}")
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if any(m in cmd for m in marks) and ("ray" in cmd):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        found.pop(os.getpid(), None)
        return list(found.values())

    def worker_raylet(self) -> tuple[psutil.Process, str]:
        for p in self.processes(self.worker_tmp):
            cmd = p.cmdline()
            if cmd and Path(cmd[0]).name == "raylet":
                node = next(a.split("=", 1)[1] for a in cmd if a.startswith("--node_id="))
                return p, node
        raise AssertionError("no raylet of the worker node")

    def stop(self) -> None:
        for p in self.processes():
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


@contextlib.contextmanager
def running_cluster(extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """The README's cluster recipe: a token, the head, a worker node that opts in to token auth.
    `extra_env`: what every node needs besides (storage credentials)."""
    root = Path(tempfile.mkdtemp(prefix="s9c", dir="/tmp"))  # short: Ray's socket paths have a length limit
    base = {
        **os.environ,
        **(extra_env or {}),
        "RAY_USAGE_STATS_ENABLED": "0",
        # a dead node is noticed in ~2 s instead of ~15 s
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "3",
        "RAY_health_check_timeout_ms": "500",
    }
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        base.pop(k, None)
    head_env = {**base, "HOME": str(root / "head-home")}  # its ~/.ray/auth_token turns auth on
    subprocess.run([RAY, "get-auth-token", "--generate"], env=head_env, check=True, capture_output=True, timeout=60)
    token = subprocess.run(
        [RAY, "get-auth-token"], env=head_env, check=True, capture_output=True, text=True
    ).stdout.strip()
    # another machine: no token file, the token and the opt-in from the environment
    env = {**base, "HOME": str(root / "other-home"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    c = Cluster(root, env)
    try:
        c.start(head_env)
        yield c
    finally:
        c.stop()
        deadline = time.time() + 30
        while c.processes() and time.time() < deadline:
            time.sleep(0.5)
        leftover = [p.pid for p in c.processes()]
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes of the test cluster still alive: {leftover}"
