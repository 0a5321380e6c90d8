"""
The README's walk-throughs, run as a new user would: their commands as written, in a fresh directory.

Only the ports change (free ones on 127.0.0.1, so tests never clash), and ``jobhost-store`` and
``twistd`` are the ones of the Python running the tests.  tests/test_readme.py checks the README's
claims statically.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon import REPO, Daemon, free_port, twistd_command, wait_for_port
from readme_blocks import commands, shell_block
from test_daemon import config_text

from jobhost.testing import TestCA

FIRST = "Walk-through: serve a certificate you made yourself"
PEBBLE = "Walk-through: certificates from a local ACME CA (Pebble)"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None,
                                reason="the walk-through needs openssl and curl")


def _bash(workdir: Path, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``script`` in bash in ``workdir``, with jobhost-store and jobhost-admin from this Python."""
    prelude = (
        f'jobhost-store() {{ {shlex.quote(sys.executable)} -m jobhost.store.tool "$@"; }}\n'
        f'jobhost-admin() {{ {shlex.quote(sys.executable)} -m jobhost.admin.cli "$@"; }}\n'
        "set -e\n"
    )
    return subprocess.run(["bash", "-c", prelude + script], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout)


def test_the_first_walk_through_serves_the_page_and_leaves_files_only_under_var(tmp_path):
    """The first walk-through's commands, as written, against the quick-start daemon: curl gets the careers
    page over HTTPS, the hostname turns active, and nothing is left beside the daemon's own files but var/."""
    http, https, admin = free_port(), free_port(), free_port()
    (tmp_path / "etc").mkdir()
    shutil.copy(REPO / "etc" / "example-page.json", tmp_path / "etc")
    daemon = Daemon(tmp_path, config_text(http, https, admin, "\n[server]\nworkers = 1\n"))
    daemon.start()
    try:
        daemon.wait_listening(https, admin)
        before = set(os.listdir(tmp_path))
        steps = [c.replace(":8443", f":{https}") for c in commands(shell_block(FIRST))]
        fetch = steps.pop()
        assert fetch.startswith("curl "), fetch
        done = _bash(tmp_path, "\n".join(steps))
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 15
        while True:
            fetched = _bash(tmp_path, fetch + " --silent --show-error")
            if fetched.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert fetched.returncode == 0, fetched.stderr
        assert "ACME Corp" in fetched.stdout
        while True:  # the daemon confirms the certificate it found (after asking the CA for its renewal window)
            shown = _bash(tmp_path, "jobhost-store --store sqlite:var/jobhost.db show jobs.acme-corp.test")
            if '"state": "active"' in shown.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert '"state": "active"' in shown.stdout, shown.stdout
        assert set(os.listdir(tmp_path)) - before == set(), "the walk-through left files outside var/"
        assert {"demo-ca.key", "demo-ca.pem", "demo-ca.srl", "jobs.key", "jobs.csr", "jobs.pem"} <= set(
            os.listdir(tmp_path / "var" / "demo"))
    finally:
        daemon.stop()


def _start(command: list[str], workdir: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_the_pebble_walk_through_daemon_starts_beside_the_quick_start_daemon(tmp_path):
    """The quick start's twistd (its default pid file, twistd.pid) runs; the Pebble walk-through's twistd, as
    written, starts beside it in the same directory (its own --pidfile) instead of refusing."""
    quick_ports = free_port(), free_port(), free_port()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "jobhost.toml").write_text(config_text(*quick_ports, "\n[server]\nworkers = 1\n"))
    quick_start = commands(shell_block("Quick start"))[-1]
    assert quick_start == "twistd -n jobhost --config etc/jobhost.toml"
    first = _start(twistd_command() + shlex.split(quick_start)[1:], tmp_path, tmp_path / "quick.log")
    processes = [first]
    try:
        wait_for_port(quick_ports[2], time.monotonic() + 30, first)
        assert (tmp_path / "twistd.pid").exists()

        steps = commands(shell_block(PEBBLE))
        write_config = next(s for s in steps if s.startswith("cat > var/pebble/jobhost.toml"))
        run_daemon = next(s for s in steps if s.startswith("twistd "))
        ports = {"5002": str(free_port()), "5443": str(free_port()), "5081": str(free_port())}
        for fixed, free in ports.items():
            write_config = write_config.replace(f"tcp:{fixed}:", f"tcp:{free}:").replace(f"= {fixed}", f"= {free}")
        (tmp_path / "var" / "pebble").mkdir(parents=True)
        # devpebble.py writes Pebble's CA bundle; any CA will do for starting up.
        (tmp_path / "var" / "pebble" / "acme-ca.pem").write_bytes(TestCA.create("stand-in").root_pem)
        written = _bash(tmp_path, write_config + "\n")
        assert written.returncode == 0, written.stderr
        second = _start(twistd_command() + shlex.split(run_daemon)[1:], tmp_path, tmp_path / "pebble.log")
        processes.append(second)
        try:
            wait_for_port(int(ports["5081"]), time.monotonic() + 30, second)
        except RuntimeError:
            pytest.fail("the walk-through's twistd did not start:\n" + (tmp_path / "pebble.log").read_text())
        assert first.poll() is None and second.poll() is None
    finally:
        for process in reversed(processes):
            _stop(process)
