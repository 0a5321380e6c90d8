"""
Shared pieces of jobhost's benchmarks: paths, machine facts, statistics, process CPU.

The benchmarks reuse the integration-test harness rather than copying it:
importing this module puts ``tests/integration`` (for ``acme_servers``,
``daemon`` and ``stack``) and the repository root (for ``jobhost``) at the
front of ``sys.path``.  Nothing here imports pytest.

Everything a benchmark starts (Pebble, challtestsrv, ``twistd``, nginx, load
generators) runs in its own session so it can be killed by process group, and
only ever listens on or connects to 127.0.0.1.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
INTEGRATION = REPO / "tests" / "integration"
for _path in (str(REPO), str(INTEGRATION)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

#: Clock ticks per second of /proc/<pid>/stat's utime and stime.
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _pyopenssl_version() -> str:
    try:
        from OpenSSL import SSL

        return SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    except Exception as e:  # noqa: BLE001 - a fact to report, not a failure
        return f"unknown ({e})"


def machine() -> dict:
    """Facts about the machine and the software a figure was measured with."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan,) * 3
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "jobhost"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "unknown", []
    return {
        "git_commit": commit,
        "jobhost_files_modified_since_commit": sorted(line[3:] for line in dirty if line.strip()),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl_python_ssl": ssl.OPENSSL_VERSION,  # the benchmarks' clients
        "openssl_pyopenssl": _pyopenssl_version(),  # jobhost's TLS (cryptography's bundled OpenSSL)
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation between closest ranks.

    The same definition as ``numpy.percentile``'s default and
    ``statistics.quantiles(method="inclusive")``; NaN for no values.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict:
    """Count, min, median, p90, max and mean of ``values``."""
    return {
        "count": len(values),
        "min": min(values) if values else math.nan,
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    # After the name, fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc/<pid>/stat."""
    return sum(cpu_times(pid))


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """The sum of :func:`cpu_seconds` over ``pids``."""
    return sum(cpu_seconds(pid) for pid in pids)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(x) for x in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (or raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (e.g. from ``timeout``) into SystemExit, so ``finally`` blocks stop the servers."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with one decimal, for tables."""
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f}"


__all__ = [
    "CLK_TCK",
    "INTEGRATION",
    "REPO",
    "children",
    "cpu_seconds",
    "cpu_times",
    "exit_on_sigterm",
    "fmt_ms",
    "free_port",
    "machine",
    "percentile",
    "summary",
    "total_cpu_seconds",
    "wait_for_port",
]
