"""Connection caps, request-head deadlines and 414/431 (jobhost.web.limits), over a Clock and StringTransport."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.web.resource import Resource
from twisted.web.server import Site

from jobhost.web.limits import (
    LIMITS,
    ConnectionBudget,
    Deadlines,
    LimitReporter,
    channel_protocol_factory,
    guarded_channel_class,
)


def peer(host: str = "192.0.2.1", port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


def make(request_timeout: float = 10.0, budget: ConnectionBudget | None = None):
    clock = Clock()
    reporter = LimitReporter(clock)
    site = Site(Hello(), reactor=clock)
    site.protocol = channel_protocol_factory(guarded_channel_class(clock, request_timeout, reporter, budget))
    return clock, reporter, site


def connect(site, address=None):
    protocol = site.buildProtocol(address or peer())
    transport = StringTransport(peerAddress=address or peer())
    protocol.makeConnection(transport)
    return protocol, transport


# -- the reporter ------------------------------------------------------------------------


def test_reporter_logs_the_first_hit_then_once_a_minute_with_the_count():
    clock = Clock()
    reporter = LimitReporter(clock)
    with capturedLogs() as events:
        for _ in range(5):
            reporter.hit("max_per_peer", peer("198.51.100.7"))
        clock.advance(59.9)
        reporter.hit("max_per_peer", peer())
        reporter.hit("request_deadline", peer())  # another limit: its own first line
        clock.advance(0.1)
        reporter.hit("max_per_peer", peer("203.0.113.9"))
    lines = [(e["limit"], e["count"], e["peer"]) for e in events]
    assert lines == [
        ("max_per_peer", 1, "198.51.100.7"),
        ("request_deadline", 1, "192.0.2.1"),
        ("max_per_peer", 6, "203.0.113.9"),
    ]
    assert reporter.counts == {"max_per_peer": 7, "request_deadline": 1}
    assert set(reporter.counts) <= set(LIMITS)


# -- the budget --------------------------------------------------------------------------


def test_budget_caps_overall_and_per_peer_and_frees_on_release():
    reporter = LimitReporter(Clock())
    budget = ConnectionBudget(max_connections=3, max_per_peer=2, reporter=reporter)
    a, b = peer("192.0.2.1"), peer("192.0.2.2")
    with capturedLogs():
        assert budget.admit(a) and budget.admit(a)
        assert not budget.admit(a)  # third from one peer
        assert budget.admit(b)
        assert not budget.admit(peer("192.0.2.3"))  # overall cap
        assert (budget.open, budget.peers()) == (3, 2)
        budget.release(a)
        assert budget.admit(a)
        budget.release(b)
        assert budget.peers() == 1
        assert budget.admit(peer("192.0.2.3"))
    assert reporter.counts == {"max_per_peer": 1, "max_connections": 1}


def test_budget_refuses_nonsense_caps():
    with pytest.raises(ValueError):
        ConnectionBudget(max_connections=0, max_per_peer=1, reporter=LimitReporter(Clock()))
    with pytest.raises(ValueError):
        ConnectionBudget(max_connections=1, max_per_peer=0, reporter=LimitReporter(Clock()))


# -- the channel -------------------------------------------------------------------------


def test_a_request_head_dribbled_byte_by_byte_is_cut_at_its_deadline():
    """Each byte would restart Twisted's idle timeout; the head deadline is total."""
    clock, reporter, site = make(request_timeout=10)
    protocol, transport = connect(site)
    head = b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Slow: " + b"x" * 40
    with capturedLogs():
        for i in range(len(head)):
            protocol.dataReceived(head[i : i + 1])
            clock.advance(0.2)
            if transport.disconnecting or getattr(transport, "disconnected", False):
                break
    assert clock.seconds() == pytest.approx(10.0, abs=0.21)
    assert transport.value() == b""
    assert reporter.counts["request_deadline"] == 1


def test_a_kept_alive_connection_waits_keepalive_timeout_then_its_next_request_has_the_deadline():
    clock, reporter, site = make(request_timeout=10)  # keep-alive: 60 s
    protocol, transport = connect(site)
    clock.advance(9)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert b"HTTP/1.1 200 OK" in transport.value() and transport.value().endswith(b"hello")
    transport.clear()
    clock.advance(59.4)  # idle between requests: the keep-alive time, not the request deadline
    assert not transport.disconnecting
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.exa")  # the next request starts...
    clock.advance(9.4)
    assert not transport.disconnecting
    with capturedLogs():
        clock.advance(0.6)  # ...and has 10 s to arrive whole
    assert reporter.counts["request_deadline"] == 1
    assert transport.value() == b""


def test_an_idle_kept_alive_connection_is_closed_quietly_after_keepalive_timeout():
    clock = Clock()
    reporter = LimitReporter(clock)
    site = Site(Hello(), reactor=clock)
    site.protocol = channel_protocol_factory(guarded_channel_class(clock, 10, reporter, None, keepalive_timeout=30))
    protocol, transport = connect(site)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2  # pipelined: both answered
    clock.advance(29.5)
    assert not transport.disconnecting
    clock.advance(0.5)
    assert transport.disconnecting
    assert not reporter.counts  # not a limit: an ordinary keep-alive expiry
    protocol.connectionLost(None)
    clock.advance(0.5)  # the sweeps stop at their next run with nothing left
    assert clock.getDelayedCalls() == []  # no sweep left behind


def test_an_over_long_request_line_gets_414():
    _, reporter, site = make()
    protocol, transport = connect(site)
    with capturedLogs():
        protocol.dataReceived(b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n")
    assert transport.value().startswith(b"HTTP/1.1 414 URI Too Long\r\n")
    assert transport.disconnecting
    assert reporter.counts["uri_too_long"] == 1


def test_an_over_long_header_line_or_head_gets_431():
    _, reporter, site = make()
    protocol, transport = connect(site)
    with capturedLogs():
        protocol.dataReceived(b"GET / HTTP/1.1\r\nCookie: " + b"c" * 17000 + b"\r\n")
    assert transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    # many short headers adding up to more than Twisted's 16 KiB total
    protocol, transport = connect(site)
    with capturedLogs():
        protocol.dataReceived(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200)))
    assert transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert reporter.counts["headers_too_large"] == 2


def test_a_malformed_head_still_gets_400():
    _, reporter, site = make()
    protocol, transport = connect(site)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request")
    assert not reporter.counts


def test_the_channel_releases_its_budget_when_closed():
    clock = Clock()
    budget = ConnectionBudget(max_connections=10, max_per_peer=10, reporter=LimitReporter(clock))
    assert budget.admit(peer())
    _, _, site = make(budget=budget)
    protocol, transport = connect(site)
    assert budget.open == 1
    protocol.connectionLost(None)
    assert (budget.open, budget.peers()) == (0, 0)


# -- one sweep for many deadlines ----------------------------------------------------------


def test_deadlines_expire_in_order_at_most_a_granule_late_and_stop_when_empty():
    clock = Clock()
    expired = []
    deadlines = Deadlines(clock, timeout=2.0, expire=expired.append, granularity=0.5)
    deadlines.add("a")
    clock.advance(0.3)
    deadlines.add("b")
    deadlines.add("c")
    assert (len(deadlines), deadlines.oldest(), list(deadlines)) == (3, "a", ["a", "b", "c"])
    clock.advance(1.7)  # t=2.0: a's deadline
    assert expired == ["a"]
    deadlines.add("b")  # restarted: now due at 4.0, after c
    clock.advance(0.5)  # t=2.5: c (due 2.3) swept
    assert expired == ["a", "c"] and "b" in deadlines and "c" not in deadlines
    clock.advance(1.5)  # t=4.0
    assert expired == ["a", "c", "b"]
    assert clock.getDelayedCalls() == []  # nothing left: no sweep


def test_deadlines_discard_and_stop():
    """Discarding keeps the one sweep (no timer made and cancelled per key); the sweep that
    finds nothing left stops; stop() stops it with entries left."""
    clock = Clock()
    expired = []
    deadlines = Deadlines(clock, timeout=1.0, expire=expired.append, granularity=0.5)
    deadlines.add("a")
    deadlines.add("b")
    (sweep,) = clock.getDelayedCalls()
    deadlines.discard("a")
    deadlines.discard("missing")
    deadlines.discard("b")
    deadlines.add("d")
    assert clock.getDelayedCalls() == [sweep]  # the same timer all along
    deadlines.discard("d")
    clock.advance(0.5)  # the sweep finds nothing: stops
    assert clock.getDelayedCalls() == [] and expired == []
    deadlines.add("c")
    deadlines.stop()
    clock.advance(5)
    assert expired == [] and list(deadlines) == ["c"]


def test_a_dribbled_body_is_cut_at_the_request_deadline_too():
    clock, reporter, site = make(request_timeout=10)
    protocol, transport = connect(site)
    protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100\r\n\r\n")
    with capturedLogs():
        for _ in range(40):
            protocol.dataReceived(b"x")
            clock.advance(0.5)
    assert transport.value() == b""
    assert reporter.counts["request_deadline"] == 1


# -- make_site: the guarded channel, the budget, the access log --------------------------------


def test_make_site_counts_its_connections_against_the_budget():
    from jobhost.web.site import make_site

    clock = Clock()
    reporter = LimitReporter(clock)
    budget = ConnectionBudget(max_connections=10, max_per_peer=1, reporter=reporter)
    site = make_site(Hello(), clock, reporter=reporter, budget=budget)
    protocol, transport = connect(site)
    with capturedLogs():
        assert site.buildProtocol(peer()) is None  # a second one from the same peer
    assert reporter.counts == {"max_per_peer": 1}
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
    assert transport.value().endswith(b"hello")
    protocol.connectionLost(None)
    assert budget.open == 0
    assert site.buildProtocol(peer()) is not None


def test_no_access_log_by_default_and_no_timer_for_it(tmp_path):
    from jobhost.web.site import make_site

    clock = Clock()
    site = make_site(Hello(), clock)
    site.doStart()
    protocol, transport = connect(site)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
    assert transport.value().endswith(b"hello")
    protocol.connectionLost(None)
    clock.advance(0.5)  # the request deadline sweep stops at its next run (Twisted's timer is 1 s)
    assert clock.getDelayedCalls() == []  # Twisted's log timestamp timer is not started
    site.doStop()


def test_the_access_log_is_buffered_and_flushed_every_second(tmp_path):
    from jobhost.web.site import make_site

    clock = Clock()
    path = tmp_path / "access.log"
    site = make_site(Hello(), clock, access_log=str(path))
    site.doStart()
    for _ in range(3):
        protocol, transport = connect(site)
        protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
        protocol.connectionLost(None)
    assert path.read_text() == ""  # buffered: no write(2) per request
    clock.advance(1)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all('"GET /x HTTP/1.1" 200 5' in line for line in lines)
    site.doStop()
    assert clock.getDelayedCalls() == []


class _H2Transport(StringTransport):
    negotiatedProtocol = b"h2"


def test_a_connection_switching_to_http2_leaves_the_http11_deadlines_and_gets_an_idle_timeout():
    from jobhost.web.site import make_site

    clock = Clock()
    site = make_site(Hello(), clock, request_timeout=10, keepalive_timeout=30)
    protocol = site.buildProtocol(peer())
    transport = _H2Transport(peerAddress=peer())
    protocol.makeConnection(transport)
    first = protocol._channel
    assert first in first.request_deadlines
    protocol.dataReceived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the HTTP/2 preface
    assert protocol._channel is not first
    assert first not in first.request_deadlines and first not in first.idle_deadlines
    assert protocol._channel.timeOut == 30
    clock.advance(10)  # the old request deadline would have aborted the connection here
    assert not transport.disconnecting
    protocol.connectionLost(None)


def test_host_normalisation_is_cached_and_bounded(monkeypatch):
    from jobhost.web import site as site_module

    calls = []
    real = site_module.normalise_hostname

    def counting(text):
        calls.append(text)
        return real(text)

    monkeypatch.setattr(site_module, "normalise_hostname", counting)
    monkeypatch.setattr(site_module, "_NORMALISED", {})
    monkeypatch.setattr(site_module, "_NORMALISED_MAX", 3)
    assert site_module._normalised("Jobs.Example.COM") == "jobs.example.com"
    assert site_module._normalised("Jobs.Example.COM") == "jobs.example.com"
    assert site_module._normalised("not a name") is None
    assert site_module._normalised("not a name") is None
    assert calls == ["Jobs.Example.COM", "not a name"]
    site_module._normalised("b.example")
    site_module._normalised("c.example")  # full: cleared, then c is kept
    assert site_module._NORMALISED == {"c.example": "c.example"}
