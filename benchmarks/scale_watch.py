"""One driver process of the scale benchmark (scale.py), watched from outside: its open file
descriptors, RSS and CPU seconds sampled with psutil, its experiment folder's trial folders
counted (the first trial, the first new one after a resume, the moment to kill it), and, when
asked, a SIGKILL of the driver and every process of its Ray, as a crash would leave them.

Each driver gets a Ray temp folder of its own, so its Ray is found by that folder and by the
driver's process tree, never by a process name; every process is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.2


@dataclass
class Watch:
    wall_s: float  # from the process start to its exit (or to the kill)
    cpu_at_first_trial: float  # the driver's CPU seconds when its first new trial folder appeared
    first_new_trial_s: float | None  # seconds from the start to that folder
    peak_fds: int
    peak_rss_mib: float  # sampled; the driver's own getrusage is exact
    killed: bool
    cpu_last: float  # the driver's CPU seconds at its last sample (for a killed one: at the kill)


def ray_processes(pid: int, ray_tmp: Path) -> list[psutil.Process]:
    """The driver, its descendants, and any process that names its Ray temp folder."""
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter(["cmdline"]):
        if str(ray_tmp) in " ".join(p.info["cmdline"] or []):
            procs[p.pid] = p
    return list(procs.values())


def kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _trial_folders(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.name.startswith("train_trial_")]
    except FileNotFoundError:
        return []


def launch(
    spec: dict[str, Any],
    work: Path,
    *,
    watch: Path,
    log: Path,
    kill_at: int | None = None,
    known: set[str] | None = None,
    timeout_s: float = 3600.0,
) -> Watch:
    """Run one driver (`scale.py --driver SPEC`) with stdout at LOG.console.txt; kill it and
    its Ray once `watch` holds `kill_at` trial folders. `known`: folders that are not new."""
    spec_path = Path(f"{log}.spec.json")
    spec_path.write_text(json.dumps(spec))
    ray_tmp = Path(tempfile.mkdtemp(prefix="s9s", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {**os.environ, **spec.get("env", {}), "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).with_name("scale.py")), "--driver", str(spec_path)]
    known = known or set()
    first_s, cpu, cpu_first, peak_fds, peak_rss, killed = None, 0.0, 0.0, 0, 0.0, False
    with open(f"{log}.console.txt", "a") as out, open(f"{log}.stderr.txt", "a") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True)
        t0 = time.monotonic()
        me = psutil.Process(proc.pid)
        try:
            while proc.poll() is None and time.monotonic() - t0 < timeout_s:
                try:
                    with me.oneshot():
                        peak_fds = max(peak_fds, me.num_fds())
                        peak_rss = max(peak_rss, me.memory_info().rss / 2**20)
                        cpu = sum(me.cpu_times()[:2])
                except psutil.NoSuchProcess:
                    break
                names = _trial_folders(watch)
                if first_s is None and any(n not in known for n in names):
                    first_s, cpu_first = time.monotonic() - t0, cpu
                if kill_at is not None and len(names) >= kill_at:
                    kill_all(ray_processes(proc.pid, ray_tmp))
                    killed = True
                    break
                time.sleep(POLL_S)
        finally:
            wall = time.monotonic() - t0
            kill_all(ray_processes(proc.pid, ray_tmp))  # nothing, after a normal exit
            rc = proc.wait()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    if not killed and rc != 0:
        tail = Path(f"{log}.stderr.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"driver {spec['name']} exited {rc}:\n{tail}")
    return Watch(wall, cpu_first, first_s, peak_fds, peak_rss, killed, cpu)
