"""Flood resistance of the real daemon: deadlines a byte at a time cannot extend, and connection caps.

Garbage and slow clients connect from other loopback addresses (127.0.x.y, which
Linux lets a socket bind to), the good client from 127.0.0.1, so per-peer caps
apply to each as they would on the Internet.  All traffic stays on 127.0.0.0/8,
bounded in count and time.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
import threading
import time
import urllib.request

import pytest
from daemon import Daemon, free_port
from test_daemon import config_text
from tls_helpers import stdlib_client_hello

DEADLINE = 2.0  # the request deadline and the hello deadline, in these tests
SLACK = 1.5  # the sweep's granularity, scheduling on a loaded machine


def flood_config(http, https, admin, limits: str = "") -> str:
    text = config_text(http, https, admin)
    assert "cache_size = 10000\n" in text
    text = text.replace("cache_size = 10000\n", f'cache_size = 10000\nhello_timeout = "{DEADLINE}s"\n')
    # One process: the caps are each process's own ([server] workers > 1 gives each worker its own).
    return text + f'\n[server]\nworkers = 1\n\n[limits]\nrequest_timeout = "{DEADLINE}s"\n' + limits


@pytest.fixture
def ports():
    return free_port(), free_port(), free_port()


def start(tmp_path, ports, limits: str = "") -> Daemon:
    daemon = Daemon(tmp_path, flood_config(*ports, limits))
    daemon.start()
    daemon.wait_listening(*ports)
    return daemon


def source(i: int) -> str:
    return f"127.0.{1 + i // 200}.{2 + i % 200}"


def open_from(port: int, count: int, sources=source) -> list[tuple[socket.socket, float]]:
    opened = []
    for i in range(count):
        s = socket.socket()
        s.bind((sources(i), 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        opened.append((s, time.monotonic()))
    return opened


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(65536) == b"" or False
    except BlockingIOError:
        return False
    except OSError:
        return True


class GoodClient(threading.Thread):
    """Fetches over HTTPS (fallback certificate, a 404 page) and the admin /healthz until stopped."""

    def __init__(self, https: int, admin: int) -> None:
        super().__init__(daemon=True)
        self.https, self.admin = https, admin
        self.stop = threading.Event()
        self.worst = 0.0
        self.done = 0
        self.errors: list[str] = []

    def run(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.https), timeout=5) as raw:
                    with context.wrap_socket(raw, server_hostname="good.example.test") as tls:
                        tls.sendall(b"GET / HTTP/1.1\r\nHost: good.example.test\r\nConnection: close\r\n\r\n")
                        head = tls.recv(65536)
                assert head.startswith(b"HTTP/1.1 404"), head[:40]
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz", timeout=5) as response:
                    assert response.status == 200
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                self.errors.append(repr(e))
            self.worst = max(self.worst, time.monotonic() - started)
            self.done += 1
            time.sleep(0.05)


def test_two_thousand_dribblers_are_closed_at_their_deadlines_while_a_good_client_is_served(tmp_path, ports):
    http, https, admin = ports
    daemon = start(tmp_path, ports, "max_held = 2000\n")  # the default 1000 would drop the oldest
    good = GoodClient(https, admin)
    try:
        head = b"GET / HTTP/1.1\r\nHost: slow.example.test\r\nX-Slow: " + b"a" * 200
        hello = stdlib_client_hello("slow.example.test")
        plain = open_from(http, 1000)
        tls = open_from(https, 1000, lambda i: source(i + 1000))
        good.start()
        open_ = {s: (started, data, 0) for (s, started), data in
                 [(p, head) for p in plain] + [(t, hello) for t in tls]}
        closed_after = {}
        until = time.monotonic() + DEADLINE + SLACK + 3
        while open_ and time.monotonic() < until:
            for s, (started, data, sent) in list(open_.items()):
                if closed_by_server(s):
                    closed_after[s] = time.monotonic() - started
                    del open_[s]
                    continue
                try:
                    s.send(data[sent : sent + 1])  # one byte every ~0.4 s
                    open_[s] = (started, data, min(sent + 1, len(data) - 1))
                except OSError as e:
                    assert e.errno in (errno.EPIPE, errno.ECONNRESET, errno.EAGAIN), e
            time.sleep(0.4)
        assert not open_, f"{len(open_)} dribblers still open after {DEADLINE + SLACK + 3} s"
        late = sorted(t for t in closed_after.values() if t > DEADLINE + SLACK)
        assert not late, f"closed late: {late[:10]}"
        early = sorted(t for t in closed_after.values() if t < DEADLINE - 0.1)
        assert not early, f"closed before the deadline: {early[:10]}"
    finally:
        good.stop.set()
        good.join(10)
        for s in list(closed_after) + [s for s, _ in plain + tls]:
            s.close()
        log = daemon.log()
        daemon.stop()
    assert not good.errors, good.errors[:5]
    assert good.done >= 5, good.done
    assert good.worst < 1.0, f"a good request took {good.worst:.2f} s"
    assert "Connection limit request_deadline hit" in log and "Connection limit hello_deadline hit" in log
    # one log line per limit per minute, not one per connection
    assert log.count("Connection limit request_deadline hit") == 1, log[-3000:]


def test_per_peer_and_held_caps_close_what_they_should_and_the_good_client_is_served(tmp_path, ports):
    http, https, admin = ports
    daemon = start(tmp_path, ports, "max_per_peer = 20\nmax_held = 30\n")
    good = GoodClient(https, admin)
    good.start()
    try:
        # one address opens 25 HTTP connections: the last 5 are closed at once
        same = open_from(http, 25, lambda i: "127.0.9.9")
        time.sleep(0.5)
        refused = [s for s, _ in same if closed_by_server(s)]
        assert len(refused) == 5, len(refused)
        # 40 silent HTTPS connections from distinct addresses: the 10 oldest are dropped (one or
        # two more when the good client's connection was held at that moment)
        silent = open_from(https, 40, lambda i: source(i + 300))
        time.sleep(0.5)
        dropped = [i for i, (s, _) in enumerate(silent) if closed_by_server(s)]
        assert 10 <= len(dropped) <= 12 and dropped == list(range(len(dropped))), dropped
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            metrics = response.read().decode()
    finally:
        good.stop.set()
        good.join(10)
        for s, _ in same + silent:
            s.close()
        daemon.stop()
    assert not good.errors, good.errors[:5]
    assert 'jobhost_connection_limit_total{limit="max_per_peer"} 5.0' in metrics, metrics
    held = re.search(r'jobhost_connection_limit_total\{limit="max_held"\} ([0-9.]+)', metrics)
    assert held and float(held.group(1)) == len(dropped), metrics


def test_an_oversized_request_line_gets_414_from_the_daemon(tmp_path, ports):
    http, https, admin = ports
    daemon = start(tmp_path, ports)
    try:
        with socket.create_connection(("127.0.0.1", http), timeout=5) as s:
            s.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x.example\r\n\r\n")
            answer = s.recv(65536)
    finally:
        daemon.stop()
    assert answer.startswith(b"HTTP/1.1 414 URI Too Long"), answer[:60]
