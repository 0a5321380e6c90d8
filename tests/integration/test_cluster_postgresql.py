"""
Two jobhost nodes sharing one PostgreSQL database and one Pebble, from the outside.

Two ``twistd jobhost`` processes on different ports, ``[store] url`` the same
(fresh) PostgreSQL database.  Pebble validates HTTP-01 on node B's HTTP port
only, so an order placed by node A succeeds only because B answers from the
shared challenge row.  Orders are counted by what both nodes report in
``jobhost_acme_requests_total{endpoint="newOrder"}``.
"""

from __future__ import annotations

import re
from pathlib import Path
import time

import pytest

from acme_servers import PebbleServer
from daemon import Daemon, free_port
from stack import Stack, stack_config
from test_store_sql import create_database


class _Case:
    """Just enough of a trial TestCase for :func:`create_database`'s cleanup."""

    def __init__(self) -> None:
        self.cleanups: list = []

    def addCleanup(self, f, *args) -> None:  # noqa: N802 (trial's name)
        self.cleanups.append((f, args))


def _node_config(url: str, node: str, self_check_port: int, extra: str = ""):
    def make(http: int, https: int, admin: int, pebble: PebbleServer) -> str:
        text = stack_config(http, https, admin, pebble, extra=extra)
        text = text.replace('url = "directory:var/store"', f'url = "{url}"')
        text = text.replace('node_id = "test-node"', f'node_id = "{node}"')
        return text.replace(f"self_check_port = {http}", f"self_check_port = {self_check_port}")

    return make


def _cluster(tmp_path, pebble_env=None, extra=""):
    case = _Case()
    url = create_database(case)
    a_ports = (free_port(), free_port(), free_port())
    b_ports = (free_port(), free_port(), free_port())
    pebble = PebbleServer.start(http_port=b_ports[0], nonce_reject=5, env_extra=pebble_env)
    nodes = []
    try:
        for name, ports in (("node-a", a_ports), ("node-b", b_ports)):
            workdir = tmp_path / name
            workdir.mkdir()
            daemon = Daemon(workdir, _node_config(url, name, b_ports[0], extra)(*ports, pebble))
            daemon.start()
            nodes.append(Stack(workdir, pebble, daemon, ports))
            daemon.wait_listening(*ports)
        yield nodes, url
    finally:
        for node in nodes:
            node.daemon.stop()
        pebble.stop()
        for f, args in reversed(case.cleanups):
            f(*args)


@pytest.fixture
def cluster(tmp_path):
    for nodes, _ in _cluster(tmp_path):
        yield nodes


def _metric(node: Stack, series: str) -> float:
    status, body = node.api_raw("GET", "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {series} in /metrics")


def _orders(node: Stack) -> int:
    status, body = node.api_raw("GET", "/metrics")
    assert status == 200
    text = body.decode()
    return int(sum(
        float(m.group(1))
        for m in re.finditer(r'jobhost_acme_requests_total\{[^}]*endpoint="newOrder"[^}]*status="201"[^}]*\} (\S+)', text)
    ))


def test_two_nodes_share_challenges_certificates_and_pages(cluster):
    """A name registered on A is validated through B's HTTP port, served by both within a second, and a page
    edit on A reaches B."""
    a, b = cluster
    a.register("jobs.acme-corp.test", page={"company": "Acme", "jobs": []})
    served: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(served) < 2 and time.monotonic() < deadline:
        for name, node in (("a", a), ("b", b)):
            if name not in served:
                try:
                    node.verified_leaf("jobs.acme-corp.test")
                    served[name] = time.monotonic()
                except OSError:
                    pass
        time.sleep(0.02)
    assert set(served) == {"a", "b"}, f"served by {sorted(served)}\n{a.daemon.log()[-3000:]}\n{b.daemon.log()[-3000:]}"
    assert abs(served["a"] - served["b"]) < 1.0, served
    assert a.verified_leaf("jobs.acme-corp.test").serial_number == b.verified_leaf("jobs.acme-corp.test").serial_number
    b.https_get("jobs.acme-corp.test")  # B's TLS context for the name is cached now
    misses = _metric(b, 'jobhost_cert_cache_total{result="miss"}')
    status, _ = a.api("PUT", "/api/v1/domains/jobs.acme-corp.test/page", {"company": "Acme Renamed", "jobs": []})
    assert status == 200
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if b"Acme Renamed" in b.https_get("jobs.acme-corp.test")[1]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("node B did not serve the edited page within a second")
    # The feed said "page", not "certificate": B served the new page without rebuilding its context.
    assert _metric(b, 'jobhost_cert_cache_total{result="miss"}') == misses
    assert _orders(a) + _orders(b) == 1


def test_fifty_names_across_two_nodes_get_one_order_each(cluster):
    """50 hostnames registered alternately on both nodes: each is issued, with exactly one order each in total."""
    a, b = cluster
    names = [f"n{i:02d}.acme-corp.test" for i in range(50)]
    for i, name in enumerate(names):
        (a, b)[i % 2].register(name)
    for name in names:
        (a, b)[hash(name) % 2].wait_state(name, ("active",), timeout=120)
    assert _orders(a) + _orders(b) == 50
    # And as Pebble counts them: one "Added order" per order it accepted.
    pebble_log = Path(a.pebble.workdir, "pebble.log").read_text()
    assert pebble_log.count("Added order") == 50
    for name in names[:5]:
        assert a.verified_leaf(name).serial_number == b.verified_leaf(name).serial_number



def test_a_killed_node_s_hostnames_are_finished_by_the_other_after_its_leases_expire(tmp_path):
    """SIGKILL node A while it holds issuing leases (Pebble validating slowly): node B issues those names
    once the leases expire.  (A registration on A reaches B through the change feed at once, so either
    node may take a name's lease first: A must hold at least one when it is killed.  A is the node
    killed because Pebble validates through B's HTTP port.)"""
    import psycopg

    slow_pebble = {"PEBBLE_VA_NOSLEEP": "0"}  # Pebble's VA sleeps before validating: orders wait
    short_leases = 'lease_duration = "3s"'  # appended to the stack config's [renewal] section
    for (a, b), url in _cluster(tmp_path, pebble_env=slow_pebble, extra=short_leases):
        names = [f"k{i}.acme-corp.test" for i in range(6)]
        for name in names:
            a.register(name)
        deadline = time.monotonic() + 10
        held: list = []
        while time.monotonic() < deadline and len(held) < len(names):
            with psycopg.connect(url) as connection:
                held = connection.execute("SELECT name, holder FROM leases WHERE name LIKE 'issue:%'").fetchall()
            time.sleep(0.05)
        assert len(held) == len(names), f"leases held: {held}"
        left = [name for name, holder in held if holder == "node-a"]
        assert left, f"node A holds none of them: {held}"
        a.daemon.kill()
        for name in names:
            b.wait_state(name, ("active",), timeout=90)
            assert b.verified_leaf(name)
        assert _orders(b) >= 1, "node B ordered what node A left unfinished"


def _pg_cluster(action: str) -> None:
    import subprocess

    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast"]
                   if action == "stop" else ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, capture_output=True, timeout=60)
    if action == "start":
        deadline = time.monotonic() + 30
        while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not come back"
            time.sleep(0.2)


def _admin(port: int, token: str, path: str) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.skipif(not Path("/etc/postgresql").is_dir(), reason="needs the machine's PostgreSQL cluster to stop")
def test_postgresql_outage_keeps_serving_and_recovers(tmp_path):
    """With PostgreSQL stopped, cached hostnames keep their TLS handshakes and admin calls answer 503; once it is
    back, everything works again without restarting jobhost."""
    import ssl

    from daemon import https_request, status_of, store_tool
    from jobhost.testing import TestCA
    from test_daemon import config_text

    case = _Case()
    url = create_database(case)
    http, https, admin = free_port(), free_port(), free_port()
    config = config_text(http, https, admin, store=url)
    daemon = Daemon(tmp_path, config.replace('poll_interval = "2s"', 'poll_interval = "0.5s"'))
    ca = TestCA.create("outage CA")
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    def put(hostname: str) -> None:
        key, chain = ca.issue(hostname)
        (tmp_path / f"{hostname}.key").write_bytes(key)
        (tmp_path / f"{hostname}.pem").write_bytes(chain)
        done = store_tool(tmp_path, "put-certificate", hostname, "--key", f"{hostname}.key",
                          "--chain", f"{hostname}.pem", store=url)
        assert done.returncode == 0, done.stderr
        done = store_tool(tmp_path, "add-domain", hostname, store=url)
        assert done.returncode == 0, done.stderr

    def served(hostname: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return status_of(https_request(https, hostname, "/", verify)[0]) in (200, 404)
            except (ssl.SSLError, OSError):
                time.sleep(0.1)
        return False

    stopped = False
    try:
        daemon.start()
        daemon.wait_listening(http, https, admin)
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        put("before.acme-corp.test")
        assert served("before.acme-corp.test", 10), daemon.log()[-3000:]
        _pg_cluster("stop")
        stopped = True
        for _ in range(20):
            assert served("before.acme-corp.test", 2), "a cached hostname's handshake failed during the outage"
        assert _admin(admin, token, "/api/v1/domains/before.acme-corp.test") == 503
        assert _admin(admin, token, "/healthz") == 503
        _pg_cluster("start")
        stopped = False
        # The pool's connections all died with the server: the first call after it is back
        # still succeeds (each dead connection fails once and the call is tried again).
        assert _admin(admin, token, "/api/v1/domains/before.acme-corp.test") == 200, daemon.log()[-3000:]
        put("after.acme-corp.test")
        assert served("after.acme-corp.test", 10), daemon.log()[-3000:]
    finally:
        if stopped:
            _pg_cluster("start")
        daemon.stop()
        for f, args in reversed(case.cleanups):
            f(*args)
