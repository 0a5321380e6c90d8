"""
Run ``twistd -n jobhost --config FILE`` as a subprocess, for tests that check it from outside.

Used by the daemon tests (embedded defaults, bad configs) and the end-to-end tests
against Pebble.  The process is killed whatever happens (``stop`` in a cleanup).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def twistd_command() -> list[str]:
    """The twistd of the Python running the tests (the one jobhost is installed into)."""
    candidate = Path(sys.executable).with_name("twistd")
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline: float, process: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:port accepts connections; raise if the deadline passes or the process dies."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"twistd exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Daemon:
    """One ``twistd -n jobhost`` process in ``workdir`` with a config written from ``config_text``."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "jobhost.toml"
        self.config_path.write_text(config_text)
        self.log_path = self.workdir / "twistd.log"
        self.env = dict(os.environ, **(env or {}))
        self.process: subprocess.Popen | None = None

    def start(self) -> Daemon:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            twistd_command() + ["-n", "--pidfile=", "jobhost", "--config", str(self.config_path)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        log.close()
        return self

    def wait_listening(self, *ports: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for port in ports:
            try:
                wait_for_port(port, deadline, self.process)
            except Exception as e:
                raise type(e)(f"{e}\n--- twistd log ---\n{self.log()}") from None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def source_for(slot: int, count: int) -> str:
    """A loopback client address (127.0.0.2 and up) that a daemon with ``[server] workers = count``
    and ``affinity = "address"`` hands to worker ``slot``: its kernel picks the worker by the IPv4
    source address modulo ``count`` (jobhost.workers.address_affinity_program)."""
    for last in range(2, 255):
        if (0x7F000000 + last) % count == slot:
            return f"127.0.0.{last}"
    raise ValueError(f"no loopback address for worker {slot} of {count}")


def listen_section(http: int, https: int, admin: int) -> str:
    """The ``[listen]`` table of a config with all three listeners on 127.0.0.1 ports."""
    return (
        "[listen]\n"
        f'http = "tcp:{http}:interface=127.0.0.1"\n'
        f'https = "tcp:{https}:interface=127.0.0.1"\n'
        f'admin = "tcp:{admin}:interface=127.0.0.1"\n'
    )


def https_request(port: int, hostname: str, path: str, context: ssl.SSLContext, timeout: float = 5) -> tuple[bytes, bytes]:
    """One ``GET`` over a new TLS connection to 127.0.0.1:port with SNI/Host ``hostname``.

    Returns the response head and body (``Connection: close``; read to the end).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def status_of(head: bytes) -> int:
    """The status code of a response head."""
    return int(head.split()[1])


def store_tool(workdir: Path, *args: str, store: str = "directory:var/store") -> subprocess.CompletedProcess:
    """Run ``jobhost-store --store STORE ARGS`` in ``workdir``; return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "jobhost.store.tool", "--store", store, *args],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )


def run_twistd(workdir: Path, config_path: Path, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run twistd to completion (for configs that must make it exit); capture its output."""
    return subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "jobhost", "--config", str(config_path)],
        cwd=workdir, capture_output=True, text=True, timeout=timeout,
    )


__all__ = [
    "Daemon",
    "REPO",
    "free_port",
    "https_request",
    "listen_section",
    "run_twistd",
    "source_for",
    "status_of",
    "store_tool",
    "twistd_command",
    "wait_for_port",
]
