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


def _node_config(url: str, node: str, self_check_port: int):
    def make(http: int, https: int, admin: int, pebble: PebbleServer) -> str:
        text = stack_config(http, https, admin, pebble, extra="")
        text = text.replace('url = "directory:var/store"', f'url = "{url}"')
        text = text.replace('node_id = "test-node"', f'node_id = "{node}"')
        return text.replace(f"self_check_port = {http}", f"self_check_port = {self_check_port}")

    return make


@pytest.fixture
def cluster(tmp_path):
    case = _Case()
    url = create_database(case)
    a_ports = (free_port(), free_port(), free_port())
    b_ports = (free_port(), free_port(), free_port())
    pebble = PebbleServer.start(http_port=b_ports[0], nonce_reject=5)
    nodes = []
    try:
        for name, ports in (("node-a", a_ports), ("node-b", b_ports)):
            workdir = tmp_path / name
            workdir.mkdir()
            daemon = Daemon(workdir, _node_config(url, name, b_ports[0])(*ports, pebble))
            daemon.start()
            nodes.append(Stack(workdir, pebble, daemon, ports))
            daemon.wait_listening(*ports)
        yield nodes
    finally:
        for node in nodes:
            node.daemon.stop()
        pebble.stop()
        for f, args in reversed(case.cleanups):
            f(*args)


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
    status, _ = a.api("PUT", "/api/v1/domains/jobs.acme-corp.test/page", {"company": "Acme Renamed", "jobs": []})
    assert status == 200
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if b"Acme Renamed" in b.https_get("jobs.acme-corp.test")[1]:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("node B did not serve the edited page within a second")
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
    for name in names[:5]:
        assert a.verified_leaf(name).serial_number == b.verified_leaf(name).serial_number

