"""
The daemon's log from the outside: a full issuance against Pebble writes at most five lines.

``twistd -n jobhost`` with default logging, two worker processes (whose events reach the
main process's log as JSON and must be filtered like its own), Pebble issuing a
certificate; then the log file and JSON lines of ``twistd --logfile`` with ``[log] format``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest

from daemon import free_port, twistd_command, wait_for_port
from stack import Stack

#: Lines that must never appear at the default level (Twisted's factories, ports, resolver).
NOISE = ("Starting factory", "Stopping factory", "starting on", "Port ", "Closed)", "resolv.conf",
         "Resolver added", "Query of unknown type", "DNSDatagramProtocol", "twistd ", "reactor class",
         "Main loop terminated", "Server Shut Down")


def log_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def stack(tmp_path):
    s = Stack.start(tmp_path, extra_config="[server]\nworkers = 2\n")
    yield s
    s.stop()


def test_full_issuance_writes_at_most_five_lines(stack):
    """Start, register, issue and serve (two workers) with default logging: at most 5 lines, none of them chatter."""
    # Register once both workers serve, so the self-check does not time out on a worker still
    # starting (on a loaded machine): that would add a (meaningful) failure line.
    _wait_for(lambda: stack.api("GET", "/healthz")[1]["components"]["workers"]["message"].startswith("2 of 2"),
              timeout=60)
    stack.register("jobs.quiet.test")
    stack.wait_state("jobs.quiet.test", ("active",), timeout=60)
    stack.wait_served("jobs.quiet.test")
    time.sleep(1.0)  # the workers' change-poller lines (debug) would arrive by now
    lines = log_lines(stack.daemon.log())
    assert len(lines) <= 5, "\n".join(lines)
    assert any("jobhost " in line and " serving: " in line and "2 worker processes" in line for line in lines), lines
    assert any("Issued certificate for jobs.quiet.test" in line for line in lines), lines
    for line in lines:
        assert not any(noise in line for noise in NOISE), line
    stack.daemon.stop()
    for line in log_lines(stack.daemon.log()):
        assert not any(noise in line for noise in NOISE), line


def test_log_level_debug_shows_the_detail(tmp_path):
    """--log-level debug writes what the default hides: Twisted's lines and jobhost's debug lines (workers' too)."""
    http, https, admin = free_port(), free_port(), free_port()
    config = tmp_path / "jobhost.toml"
    config.write_text(_config(http, https, admin, tmp_path, "[server]\nworkers = 2\n"))
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            twistd_command() + ["-n", "--pidfile=", "jobhost", "--config", str(config), "--log-level", "debug"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        for port in (http, https, admin):
            wait_for_port(port, deadline, process)
        _wait_for(lambda: "Started 2 worker processes" in log.read_text())
        time.sleep(2.0)  # the workers start up
    finally:
        _stop(process)
    text = log.read_text()
    assert "twistd " in text and "starting up" in text, text
    assert "[worker-0/jobhost.workers#debug] Received SIGTERM" in text, text


def test_log_file_is_0640_and_json_lines(tmp_path):
    """twistd --logfile with [log] format = "json": the file is created 0640 and each line is one JSON object."""
    http, https, admin = free_port(), free_port(), free_port()
    config = tmp_path / "jobhost.toml"
    config.write_text(_config(http, https, admin, tmp_path, '[server]\nworkers = 1\n[log]\nformat = "json"\n'))
    process = subprocess.Popen(
        twistd_command() + ["-n", "--pidfile=", "--logfile=var/jobhost.log", "jobhost", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    log = tmp_path / "var" / "jobhost.log"
    try:
        deadline = time.monotonic() + 30
        for port in (http, https, admin):
            wait_for_port(port, deadline, process)
        _wait_for(lambda: log.exists() and "serving" in log.read_text())
    finally:
        _stop(process)
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    records = [json.loads(line) for line in log_lines(log.read_text())]
    assert records, "something was logged"
    serving = [r for r in records if r.get("log_namespace") == "jobhost.tap"]
    assert serving and serving[0]["http"] == f"tcp:{http}:interface=127.0.0.1", "fields survive as JSON fields"
    assert not [r for r in records if r.get("log_namespace", "").startswith("twisted.")
                and r["log_level"]["name"] in ("debug", "info")]


def _config(http: int, https: int, admin: int, workdir, extra: str) -> str:
    return (
        f'[listen]\nhttp = "tcp:{http}:interface=127.0.0.1"\nhttps = "tcp:{https}:interface=127.0.0.1"\n'
        f'admin = "tcp:{admin}:interface=127.0.0.1"\n[store]\nurl = "sqlite:var/jobhost.db"\n'
        '[preflight]\naddresses = ["127.0.0.1"]\n' + extra
    )


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
