"""Worker processes' parts that need no process: [server] config, drain, metrics sums, the control lines.

The processes themselves (spawn, restart, roll, SIGTERM) are tested for real in
tests/integration/test_workers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, eventAsJSON, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Site

from jobhost.config import ServerConfig, parse_config
from jobhost.errors import ConfigError
from jobhost.metrics import Metrics
from jobhost.web.limits import ConnectionBudget, LimitReporter, channel_protocol_factory, drain, guarded_channel_class
from jobhost.tap import ListenerService
from jobhost.workers import (
    CONTROL_FD,
    DrainService,
    ReusePortListenerService,
    WorkerSupervisor,
    _Worker,
    address_affinity_program,
)

NO_PREFLIGHT = {"preflight": {"enabled": False}}


# -- [server] ----------------------------------------------------------------------------------


def test_workers_default_to_one_per_core_and_one_for_a_memory_store(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    config = parse_config(NO_PREFLIGHT, Path("/srv"))
    assert config.server == ServerConfig(workers=0, drain_timeout=30.0)
    assert config.server.worker_count("sqlite:var/jobhost.db") == 3
    assert config.server.worker_count("memory:") == 1
    assert config.server.worker_count(" MEMORY:") == 1
    assert ServerConfig(workers=5).worker_count("memory:") == 5  # explicit wins (refused at parse time)
    assert ServerConfig(workers=1).worker_count("sqlite:x") == 1


def test_server_section_parses_and_names_the_key_on_errors():
    config = parse_config({**NO_PREFLIGHT, "server": {"workers": 4, "drain_timeout": "5s"}}, Path("/srv"))
    assert config.server.workers == 4 and config.server.drain_timeout == 5.0
    with pytest.raises(ConfigError, match=r"\[server\] workers"):
        parse_config({**NO_PREFLIGHT, "server": {"workers": -1}}, Path("/srv"))
    with pytest.raises(ConfigError, match=r"\[server\] drain_timeout"):
        parse_config({**NO_PREFLIGHT, "server": {"drain_timeout": "0s"}}, Path("/srv"))
    with pytest.raises(ConfigError, match=r"\[server\] unknown_key"):
        parse_config({**NO_PREFLIGHT, "server": {"unknown_key": 1}}, Path("/srv"))


def test_a_memory_store_cannot_be_shared_by_workers():
    with pytest.raises(ConfigError, match=r"\[server\] workers: a memory: store cannot be shared"):
        parse_config({**NO_PREFLIGHT, "server": {"workers": 2}, "store": {"url": "memory:"}}, Path("/srv"))
    config = parse_config({**NO_PREFLIGHT, "server": {"workers": 1}, "store": {"url": "memory:"}}, Path("/srv"))
    assert config.server.worker_count(config.store.url) == 1


# -- draining connections --------------------------------------------------------------------


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


def site_with_budget():
    clock = Clock()
    reporter = LimitReporter(clock)
    budget = ConnectionBudget(max_connections=10, max_per_peer=10, reporter=reporter)
    site = Site(Hello(), reactor=clock)
    channel = guarded_channel_class(clock, 10.0, reporter, budget)
    site.protocol = channel_protocol_factory(channel)
    site.channel_class = channel
    return clock, budget, site


def connect(site, budget):
    address = IPv4Address("TCP", "192.0.2.7", 40000)
    assert budget.admit(address)
    protocol = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def test_drain_closes_idle_connections_now_and_busy_ones_after_their_response():
    clock, budget, site = site_with_budget()
    idle, idle_transport = connect(site, budget)
    idle.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert idle_transport.value().endswith(b"hello") and not idle_transport.disconnecting
    busy, busy_transport = connect(site, budget)
    busy.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n")  # the head is not complete
    assert drain(site.channel_class) == 1
    assert idle_transport.disconnecting  # a normal close, not an abort
    assert not busy_transport.disconnecting
    busy.dataReceived(b"\r\n")
    assert busy_transport.value().endswith(b"hello")
    assert busy_transport.disconnecting  # not kept alive: the process is stopping
    assert drain(site.channel_class) == 0


def test_without_drain_a_kept_alive_connection_stays_open():
    clock, budget, site = site_with_budget()
    protocol, transport = connect(site, budget)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert not transport.disconnecting


def test_drain_service_waits_for_open_connections_up_to_its_timeout():
    clock, budget, site = site_with_budget()
    protocol, transport = connect(site, budget)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n")
    service = DrainService(clock=clock, budget=budget, sites=(site,), timeout=5.0)
    service.startService()
    with capturedLogs() as events:
        stopped = service.stopService()
        results = []
        stopped.addCallback(results.append)
        clock.advance(1.0)
        assert results == []
        protocol.dataReceived(b"\r\n")  # answered, then closed
        protocol.connectionLost(None)
        clock.advance(0.05)
    assert results == [None]
    assert budget.open == 0
    assert any("Draining: 1 connections open" in e["log_format"].format(**e) for e in events)


def test_drain_service_gives_up_at_its_timeout():
    clock, budget, site = site_with_budget()
    protocol, transport = connect(site, budget)
    protocol.dataReceived(b"GET / HTTP/1.1\r\n")
    service = DrainService(clock=clock, budget=budget, sites=(site,), timeout=5.0)
    service.startService()
    with capturedLogs() as events:
        results = []
        service.stopService().addCallback(results.append)
        clock.advance(4.9)
        assert results == []
        clock.advance(0.2)
    assert results == [None]
    assert any(e.get("log_level").name == "warn" and "Drain timeout" in e["log_format"] for e in events)


def test_drain_service_with_nothing_open_stops_at_once():
    clock, budget, site = site_with_budget()
    service = DrainService(clock=clock, budget=budget, sites=(site,), timeout=5.0)
    service.startService()
    results = []
    service.stopService().addCallback(results.append)
    assert results == [None]


# -- metrics from other processes -------------------------------------------------------------


def test_a_snapshot_is_json_and_remote_values_are_added_to_the_sources_of_the_same_name():
    metrics = Metrics()
    metrics.register_counter_source("jobhost_things_total", "Things.", ("outcome",), lambda: {("ok",): 2})
    metrics.register_gauge_source("jobhost_open", "Open.", (), lambda: 3)
    snapshot = metrics.snapshot()
    assert json.loads(json.dumps(snapshot)) == {
        "jobhost_things": {"kind": "counter", "values": {'["ok"]': 2.0}},
        "jobhost_open": {"kind": "gauge", "values": {"[]": 3.0}},
    }
    metrics.add_remote_source(lambda: {"jobhost_things": {("ok",): 5.0, ("failed",): 1.0}, "jobhost_open": {(): 4.0}})
    metrics.add_remote_source(lambda: {"jobhost_open": {(): 1.0}, "jobhost_unknown": {(): 9.0}})
    text = metrics.exposition().decode()
    assert 'jobhost_things_total{outcome="ok"} 7.0' in text
    assert 'jobhost_things_total{outcome="failed"} 1.0' in text
    assert "jobhost_open 8.0" in text
    assert "jobhost_unknown" not in text  # only what this process exports too


def test_a_failing_remote_source_is_logged_and_skipped():
    metrics = Metrics()
    metrics.register_gauge_source("jobhost_open", "Open.", (), lambda: 3)

    def broken():
        raise RuntimeError("boom")

    metrics.add_remote_source(broken)
    with capturedLogs() as events:
        text = metrics.exposition().decode()
    assert "jobhost_open 3.0" in text
    assert any("Remote metric source" in e["log_format"] for e in events)


def supervisor(count: int = 2, metrics=None) -> WorkerSupervisor:
    """A supervisor over a Clock (never started here: no process is spawned)."""
    return WorkerSupervisor(reactor=Clock(), config_file="jobhost.toml", count=count, listeners=(),
                            drain_timeout=30.0, metrics=metrics)


class _Pipes:
    """What a process transport's stdin end records (no process behind it)."""

    pid = 4242

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd == 0
        self.sent.extend(json.loads(line) for line in data.splitlines())


def connected(sup: WorkerSupervisor, slot: int, ready: bool = True) -> _Worker:
    worker = _Worker(sup, slot)
    worker.makeConnection(_Pipes())
    if ready:
        worker.ready.callback(worker)
    sup.workers[slot] = worker
    return worker


def test_a_scrape_asks_every_worker_and_waits_for_the_answers_at_most_half_a_second():
    metrics = Metrics()
    metrics.register_counter_source("jobhost_tls_total", "TLS.", ("outcome",), lambda: {("served",): 1})
    sup = supervisor(2, metrics)
    first, second = connected(sup, 0), connected(sup, 1)
    done = []
    metrics.refresh_remote().addCallback(done.append)
    assert first.transport.sent == [{"report": True}] and second.transport.sent == [{"report": True}]
    report = {"metrics": {"jobhost_tls": {"kind": "counter", "values": {'["served"]': 4}}}}
    first.childDataReceived(CONTROL_FD, json.dumps(report).encode() + b"\n")
    assert done == []
    second.childDataReceived(CONTROL_FD, json.dumps(report).encode() + b"\n")
    assert len(done) == 1
    assert 'jobhost_tls_total{outcome="served"} 9.0' in metrics.exposition().decode()
    # A worker that does not answer delays a scrape by half a second, no more.
    late = []
    sup.refresh().addCallback(late.append)
    sup.reactor.advance(0.49)
    assert late == []
    sup.reactor.advance(0.02)
    assert late == [None]
    assert not sup.reactor.getDelayedCalls()


def test_invalidations_go_to_every_worker():
    sup = supervisor(2)
    first, second = connected(sup, 0), connected(sup, 1, ready=False)
    sup.invalidate("jobs.example", frozenset({"page", "certificate"}))
    sup.invalidate("b.example")
    sup.invalidate_all()
    expected = [{"invalidate": "jobs.example", "kinds": ["certificate", "page"]},
                {"invalidate": "b.example", "kinds": None}, {"invalidate_all": True}]
    assert first.transport.sent == expected and second.transport.sent == expected


def test_workers_counters_are_summed_and_kept_when_a_worker_exits_but_gauges_are_not():
    sup = supervisor()
    first, second = _Worker(sup, 0), _Worker(sup, 1)
    sup.workers = [first, second]
    first.childDataReceived(CONTROL_FD, json.dumps({"metrics": {
        "jobhost_tls": {"kind": "counter", "values": {'["served"]': 3}},
        "jobhost_open": {"kind": "gauge", "values": {"[]": 2}},
    }}).encode() + b"\n")
    second.childDataReceived(CONTROL_FD, json.dumps({"metrics": {
        "jobhost_tls": {"kind": "counter", "values": {'["served"]': 4, '["fallback"]': 1}},
        "jobhost_open": {"kind": "gauge", "values": {"[]": 5}},
    }}).encode() + b"\n")
    assert sup.remote_metrics() == {"jobhost_tls": {("served",): 7.0, ("fallback",): 1.0}, "jobhost_open": {(): 7.0}}
    sup._retire(first)
    sup.workers = [None, second]
    assert sup.remote_metrics() == {"jobhost_tls": {("served",): 7.0, ("fallback",): 1.0}, "jobhost_open": {(): 5.0}}


def test_control_lines_may_arrive_in_pieces_and_ready_fires_once():
    sup = supervisor(1)
    worker = _Worker(sup, 0)
    ready = []
    worker.ready.addCallback(ready.append)
    line = json.dumps({"ready": True, "pid": 1}).encode() + b"\n"
    worker.childDataReceived(CONTROL_FD, line[:5])
    assert ready == []
    worker.childDataReceived(CONTROL_FD, line[5:] + line)
    assert ready == [worker]
    with capturedLogs() as events:
        worker.childDataReceived(CONTROL_FD, b"not json\n")
    assert any("not JSON" in e["log_format"] for e in events)


def test_worker_log_records_are_re_emitted_with_their_level_and_worker():
    sup = supervisor(1)
    worker = _Worker(sup, 1)
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        event = {"log_format": "Served {name}", "name": "jobs.example", "log_namespace": "jobhost.tls.sni",
                 "log_level": LogLevel.warn, "log_time": 0.0}
        worker.childDataReceived(1, b"\x1e" + eventAsJSON(event).encode() + b"\n")
        worker.childDataReceived(2, b"Traceback (most recent call last):\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    relayed = [e for e in seen if e.get("worker") == 1]
    assert relayed and relayed[0]["log_level"].name == "warn"
    assert relayed[0]["log_namespace"] == "worker-1/jobhost.tls.sni"
    assert relayed[0]["name"] == "jobs.example"
    crash = [e for e in seen if "Traceback" in str(e.get("line", ""))]
    assert crash and crash[0]["log_level"].name == "error"


def test_status_counts_ready_workers_and_restarts():
    sup = supervisor(2)
    first, second = _Worker(sup, 0), _Worker(sup, 1)
    sup.workers = [first, second]
    assert sup.status() == {"ok": False, "message": "0 of 2 worker processes serving", "critical": True}
    first.ready.callback(first)
    sup.restarts = 1
    assert sup.status() == {"ok": True, "message": "1 of 2 worker processes serving; 1 restarted since start",
                            "critical": False}


# -- the main process's tree -----------------------------------------------------------------


def build(tmp_path, server: dict, listen: dict | None = None, file: bool = True):
    from twisted.internet.testing import MemoryReactorClock

    from jobhost.tap import build_parts

    document = {
        **NO_PREFLIGHT,
        "store": {"url": "sqlite:var/jobhost.db"},
        "server": server,
        "listen": listen or {"http": "tcp:0:interface=127.0.0.1", "https": "tcp:0:interface=127.0.0.1",
                             "admin": "tcp:0:interface=127.0.0.1"},
    }
    (tmp_path / "var").mkdir(exist_ok=True)
    config = parse_config(document, tmp_path, str(tmp_path / "jobhost.toml") if file else None)
    return build_parts(MemoryReactorClock(), config)


def test_with_workers_the_main_process_binds_one_socket_per_worker_for_each_public_listener(tmp_path):
    parts = build(tmp_path, {"workers": 3, "drain_timeout": "7s"})
    assert isinstance(parts.workers, WorkerSupervisor)
    assert parts.workers.count == 3 and parts.workers.drain_timeout == 7.0
    http, https, admin = parts.listeners
    assert isinstance(http, ReusePortListenerService) and isinstance(https, ReusePortListenerService)
    assert (http.name, https.name, http.count, https.count) == ("http", "https", 3, 3)
    assert isinstance(admin, ListenerService) and admin.accept
    assert parts.workers.listeners == parts.listeners[:2]


def test_without_affinity_the_main_process_binds_one_shared_socket_but_does_not_accept(tmp_path):
    parts = build(tmp_path, {"workers": 3, "drain_timeout": "7s", "affinity": "none"})
    assert [(s.name, s.accept) for s in parts.listeners] == [("http", False), ("https", False), ("admin", True)]
    assert parts.workers.listeners == parts.listeners[:2]
    assert list(parts.root)[-1] is parts.workers  # started last, stopped first
    sent = []
    parts.workers.invalidate = lambda hostname, kinds=None: sent.append((hostname, kinds))
    parts.caches.fanout.invalidate("jobs.example")
    assert sent == [("jobs.example", None)]
    assert "workers" in parts.health()


def test_one_worker_is_one_process_doing_everything(tmp_path):
    parts = build(tmp_path, {"workers": 1})
    assert parts.workers is None
    assert all(s.accept for s in parts.listeners)
    assert "workers" not in parts.health()


def test_one_per_core_needs_a_config_file_and_explicit_workers_without_one_are_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert build(tmp_path, {}, file=False).workers is None
    assert build(tmp_path, {}, file=True).workers.count == 2
    with pytest.raises(ConfigError, match=r"\[server\] workers: worker processes read the config file"):
        build(tmp_path, {"workers": 2}, file=False)


def test_workers_share_tcp_listeners_only(tmp_path):
    listen = {"http": "tcp:0:interface=127.0.0.1", "https": f"unix:{tmp_path}/https.sock",
              "admin": "tcp:0:interface=127.0.0.1"}
    with pytest.raises(ConfigError, match=r"\[listen\] https: worker processes share TCP listeners only"):
        build(tmp_path, {"workers": 2}, listen=listen)



# -- address affinity: real sockets on loopback ---------------------------------------------------


def test_the_kernel_gives_one_client_address_always_to_the_same_worker_socket():
    import select
    import socket

    from twisted.internet.endpoints import TCP4ServerEndpoint

    listener = ReusePortListenerService("https", TCP4ServerEndpoint(None, 0, 16, "127.0.0.1"), 3)
    listener.privilegedStartService()
    try:
        port = listener.sockets[0].getsockname()[1]
        assert {s.getsockname()[1] for s in listener.sockets} == {port}
        for s in listener.sockets:
            s.setblocking(False)
        chosen: dict[str, set[int]] = {}
        for source in [f"127.0.0.{n}" for n in range(1, 7)] * 3:
            with socket.socket() as client:
                client.bind((source, 0))
                client.connect(("127.0.0.1", port))
                ready, _, _ = select.select(listener.sockets, [], [], 2)
                assert len(ready) == 1
                ready[0].accept()[0].close()
                chosen.setdefault(source, set()).add(listener.sockets.index(ready[0]))
        assert all(len(slots) == 1 for slots in chosen.values()), chosen  # always the same worker
        assert {next(iter(slots)) for slots in chosen.values()} == {0, 1, 2}  # and every worker gets some
        # source address mod 3: 127.0.0.1 is 0x7f000001
        assert chosen["127.0.0.1"] == {0x7F000001 % 3}
    finally:
        listener.stopService()
    assert listener.sockets == [] and not listener.listening


@pytest.mark.parametrize("reuseport, name", [
    (False, "http"),  # an ordinary listener on the port
    (True, "https"),  # e.g. a second daemon's listener, which SO_REUSEPORT would otherwise join
])
def test_a_taken_port_is_a_config_error_naming_the_key_and_nothing_stays_bound(reuseport, name):
    import socket

    from twisted.internet.endpoints import TCP4ServerEndpoint

    with socket.socket() as other:
        if reuseport:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        listener = ReusePortListenerService(name, TCP4ServerEndpoint(None, port, 16, "127.0.0.1"), 2)
        with pytest.raises(ConfigError, match=rf"\[listen\] {name}: cannot listen on .*Address already in use"):
            listener.privilegedStartService()
        assert listener.sockets == []


def test_the_affinity_program_is_eight_instructions_ending_in_return_a():
    import struct

    program = address_affinity_program(5)
    instructions = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert len(instructions) == 8
    assert instructions[6] == (0x94, 0, 0, 5)  # A %= count
    assert instructions[-1] == (0x16, 0, 0, 0)  # return A
