"""
Worker processes (``[server] workers = 2``), from the outside: real ``twistd`` processes.

A certificate the main process issues reaches every worker within a second (the
control pipe, not the store's change feed, which is slowed down here); a worker
killed with SIGKILL is replaced and connections keep being served; SIGTERM lets
in-flight requests finish and closes idle keep-alive connections cleanly; SIGHUP
replaces the workers one at a time without a failed connection.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from daemon import Daemon, free_port, listen_section, source_for
from stack import Stack, stack_config

pytestmark = pytest.mark.timeout(120)


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def exactly(pid: int, count: int, without: int | None = None):
    """``pid``'s children if there are ``count`` of them (and ``without`` is not one), else None."""
    found = children(pid)
    return found if len(found) == count and without not in found else None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def slots(main: int) -> dict[int, int]:
    """``{slot: pid}`` of ``main``'s workers (from their command lines)."""
    found = {}
    for pid in children(main):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--slot" in argv:
            found[int(argv[argv.index(b"--slot") + 1])] = pid
    return found


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def leaf(port: int, hostname: str, root_pem: str | None = None, source: str = "127.0.0.1") -> x509.Certificate:
    context = ssl.create_default_context(cadata=root_pem) if root_pem else ssl._create_unverified_context()
    with connect(port, source) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def healthz(admin_port: int, token: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/healthz",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:  # 503 while no worker serves yet
        return json.loads(e.read())


def worker_config(http: int, https: int, admin: int, extra: str = "") -> str:
    """Two workers over SQLite; no CA reachable (these tests serve the fallback certificate)."""
    return listen_section(http, https, admin) + f"""
[store]
url = "sqlite:var/jobhost.db"

[acme]
directory = "https://127.0.0.1:9/directory"

[preflight]
enabled = false

[server]
workers = 2
drain_timeout = "20s"
{extra}
"""


@pytest.fixture
def workers_daemon(tmp_path):
    ports = free_port(), free_port(), free_port()
    daemon = Daemon(tmp_path, worker_config(*ports))
    daemon.start()
    daemon.ports = ports
    try:
        daemon.wait_listening(*ports)
        wait_for(lambda: len(children(daemon.process.pid)) == 2, 20, "two workers")
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        daemon.token = token
        wait_for(lambda: healthz(ports[2], token)["components"]["workers"]["message"].startswith("2 of 2"),
                 20, "both workers serving")
        yield daemon
    finally:
        daemon.stop(timeout=30)


def fallback_handshake(port: int, source: str = "127.0.0.1") -> bool:
    """One TLS handshake + GET on a new connection (the fallback certificate); True if answered."""
    context = ssl._create_unverified_context()
    with connect(port, source) as raw:
        with context.wrap_socket(raw, server_hostname="unknown.example") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data.startswith(b"HTTP/1.1 ")


def test_a_certificate_issued_by_the_main_process_is_served_by_every_worker_within_a_second(tmp_path):
    def config(http, https, admin, pebble):
        text = stack_config(http, https, admin, pebble, "\n[server]\nworkers = 2\n")
        # The store's change feed is polled every 30 s here: only the control pipe is fast enough.
        return text.replace('poll_interval = "0.2s"', 'poll_interval = "30s"\nnegative_ttl = "60s"')

    stack = Stack.start_with(tmp_path, config)
    try:
        main = stack.daemon.process.pid
        wait_for(lambda: len(slots(main)) == 2, 20, "two workers")
        hostname = "jobs.workers.test"
        # Each worker (reached by a client address it owns) has looked the name up and
        # remembers that it is unknown (negative entries, 60 s).
        for slot in (0, 1):
            cert = leaf(stack.https, hostname, source=source_for(slot, 2))
            assert cert.issuer == cert.subject  # the self-signed fallback
        stack.register(hostname)
        stack.wait_state(hostname, ("active",), timeout=30)
        issued = time.monotonic()
        for slot in (0, 1):
            def real(slot=slot):
                cert = leaf(stack.https, hostname, source=source_for(slot, 2))
                return cert if cert.issuer != cert.subject else None

            wait_for(real, 1.0, f"worker {slot} to serve the new certificate")
        assert time.monotonic() - issued < 1.5
        # And the chain verifies against the CA's root from every worker.
        for slot in (0, 1):
            leaf(stack.https, hostname, root_pem=stack.root_pem, source=source_for(slot, 2))
    finally:
        stack.stop()


def test_a_worker_killed_with_sigkill_is_replaced_and_connections_keep_being_served(workers_daemon):
    http, https, admin = workers_daemon.ports
    main = workers_daemon.process.pid
    before = children(main)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    answered = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert fallback_handshake(https)  # never refused: the other worker (and the queue) take it
        answered += 1
    assert answered > 10
    after = wait_for(lambda: exactly(main, 2, without=victim), 10, "a replacement worker")
    assert before - {victim} <= after
    wait_for(lambda: healthz(admin, workers_daemon.token)["components"]["workers"]["message"].startswith("2 of 2"),
             10, "the replacement serving")
    assert "1 restarted" in healthz(admin, workers_daemon.token)["components"]["workers"]["message"]
    # The replacement serves (the addresses of its slot), and so does the survivor.
    replacement_slot = next(slot for slot, pid in slots(main).items() if pid not in before)
    assert fallback_handshake(https, source_for(replacement_slot, 2))
    assert fallback_handshake(https, source_for(1 - replacement_slot, 2))


def test_sigterm_finishes_in_flight_requests_and_closes_idle_connections(workers_daemon):
    http, https, admin = workers_daemon.ports
    main = workers_daemon.process.pid
    workers = children(main)
    # An idle kept-alive connection (one request answered) and one whose request is half sent.
    idle = socket.create_connection(("127.0.0.1", http), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: jobs.example\r\n\r\n")
    first = idle.recv(65536)
    assert first.startswith(b"HTTP/1.1 ")
    busy = socket.create_connection(("127.0.0.1", http), timeout=10)
    busy.sendall(b"GET /page HTTP/1.1\r\nHost: jobs.example\r\n")
    time.sleep(0.3)  # accepted and parsed up to here
    os.kill(main, signal.SIGTERM)  # the main process only: it tells its workers
    # The idle connection is closed cleanly (end of file, not a reset).
    assert idle.recv(65536) == b""
    # The half-sent request is still answered, in full, then the connection closes.
    time.sleep(0.5)
    busy.sendall(b"\r\n")
    data = b""
    while chunk := busy.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data
    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    assert length and len(body) == length[0]
    workers_daemon.process.wait(timeout=30)
    # twistd ends with the signal it stopped for, after a clean shutdown
    assert workers_daemon.process.returncode in (0, -signal.SIGTERM)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), 5, "the workers to exit")
    log = workers_daemon.log()
    assert "Draining" in log


def test_sighup_rolls_the_workers_without_a_failed_connection(workers_daemon):
    http, https, admin = workers_daemon.ports
    main = workers_daemon.process.pid
    before = children(main)
    failures: list[BaseException] = []
    answered = [0]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                assert fallback_handshake(https)
                answered[0] += 1
            except BaseException as e:  # noqa: BLE001 - any failure fails the test
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        os.kill(main, signal.SIGHUP)
        wait_for(lambda: "Rolled the worker processes" in workers_daemon.log(), 60, "the roll to finish")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    after = children(main)
    assert len(after) == 2 and not (after & before), (before, after)
    assert failures == [], failures[:3]
    assert answered[0] > 20


def test_with_one_process_sighup_drops_the_caches_and_the_daemon_keeps_serving(tmp_path):
    ports = free_port(), free_port(), free_port()
    daemon = Daemon(tmp_path, worker_config(*ports).replace("workers = 2", "workers = 1"))
    daemon.start()
    try:
        daemon.wait_listening(*ports)
        assert children(daemon.process.pid) == set()
        assert fallback_handshake(ports[1])
        os.kill(daemon.process.pid, signal.SIGHUP)
        wait_for(lambda: "SIGHUP: dropping the certificate and page caches" in daemon.log(), 10, "the reload")
        assert daemon.process.poll() is None
        assert fallback_handshake(ports[1])
    finally:
        daemon.stop()


def resumed_run(port: int, source: str, count: int) -> list[bool]:
    """``count`` connections from ``source``, each offering the session of the one before."""
    context = ssl._create_unverified_context()
    session = None
    reused = []
    for _ in range(count):
        with connect(port, source) as raw:
            with context.wrap_socket(raw, server_hostname="unknown.example", session=session) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass
                reused.append(tls.session_reused)
                session = tls.session
    return reused


def test_a_returning_visitor_resumes_whichever_worker_would_take_a_new_connection(workers_daemon):
    """Ticket keys are each worker's own: affinity by client address sends the visitor back to the same one."""
    http, https, admin = workers_daemon.ports
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        reused = resumed_run(https, source, 6)
        assert reused == [False] + [True] * 5, (source, reused)
