"""Tests for jobhost.tls.listener: the HTTPS listener that holds each ClientHello.

Real OpenSSL throughout; no sockets: both TLS ends run over memory BIOs joined
by ``twisted.test.iosim`` with a ``Clock``, or the listener is fed bytes over a
``StringTransport``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from tls_helpers import (
    CountingStore,
    GatedStore,
    RecordingFactory,
    UncheckedClient,
    as_records,
    ca,
    fallback_pems,
    handshake_message,
    pem_sha256,
    pyopenssl_client_hello,
    record_for,
    store_with,
)
from twisted.internet.address import IPv4Address
from twisted.internet.defer import fail
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from jobhost.tls.listener import (
    PLAIN_HTTP_RESPONSE,
    UNRECOGNIZED_NAME_ALERT,
    HeldConnectionCreator,
    SNIServerFactory,
    _switch_to_certificate,
    fallback_context,
)
from jobhost.tls.policy import SessionContexts
from jobhost.tls.sni import CertificateCache
from jobhost.web.limits import ConnectionBudget, LimitReporter

ALPHA, BETA = "alpha.example.com", "beta.example.com"
PEER = IPv4Address("TCP", "192.0.2.7", 50123)
SERVER_HELLO = b"\x16\x03"  # the start of the handshake record a server answers with


class FailingLoadCache(CertificateCache):
    """Fault injection: a cache whose store reads fail in a way ``load`` never reports."""

    def load(self, hostname):
        return fail(RuntimeError("the cache is broken"))


class RefusingFactory(RecordingFactory):
    """Fault injection: a web factory that blows up when asked for a protocol."""

    def buildProtocol(self, addr):
        raise RuntimeError("no protocol for you")


class ListenerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.records = {name: record_for(name) for name in (ALPHA, BETA)}
        self.store = CountingStore(store_with(*self.records.values()))
        self.cache = CertificateCache(store=self.store, clock=self.clock)
        self.server_app = RecordingFactory()

    def factory(self, **kwargs) -> SNIServerFactory:
        key_pem, cert_pem = fallback_pems()
        if kwargs.get("reject_unknown"):
            key_pem = cert_pem = None
        return SNIServerFactory.create(self.server_app, self.cache, self.clock, key_pem, cert_pem, **kwargs)

    def gate_the_store(self) -> GatedStore:
        store = GatedStore(store_with(*self.records.values()))
        self.cache = CertificateCache(store=store, clock=self.clock)
        return store

    def connect(self, factory: SNIServerFactory, creator):
        client_app = RecordingFactory()
        client_tls = TLSMemoryBIOFactory(creator, True, client_app, clock=self.clock)
        client, server, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None),
            lambda: client_tls.buildProtocol(None),
            clock=self.clock,
        )
        pump.flush()
        return client, client_app.built[0], pump

    def held(self, factory: SNIServerFactory):
        """A hold protocol on a StringTransport, as from a connection from PEER."""
        server = factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        return server, transport

    def verified(self, hostname: str):
        return optionsForClientTLS(
            hostname, trustRoot=Certificate.loadPEM(ca().root_pem), acceptableProtocols=[b"http/1.1"]
        )

    def served_leaf(self, client) -> str:
        leaf = client.getHandle().get_peer_certificate(as_cryptography=True)
        return pem_sha256(leaf.public_bytes(serialization.Encoding.PEM))

    # -- choosing the certificate ---------------------------------------------------

    def test_provides_iprotocolfactory(self):
        """SNIServerFactory is a protocol factory."""
        verifyObject(IProtocolFactory, self.factory())

    def test_each_hostname_gets_its_own_certificate(self):
        """A client sending SNI is served that hostname's leaf and intermediate, verified by the CA."""
        factory = self.factory()
        for hostname in (ALPHA, BETA):
            client, client_app, _ = self.connect(factory, self.verified(hostname))
            self.assertTrue(client_app.handshake_done)
            chain = client.getHandle().get_peer_cert_chain(as_cryptography=True)
            served = [c.public_bytes(serialization.Encoding.PEM) for c in chain]
            self.assertEqual(b"".join(served), self.records[hostname].chain_pem)
            self.assertEqual(pem_sha256(served[0]), self.records[hostname].fingerprint)
        self.assertEqual((factory.served, factory.fallback), (2, 0))

    def test_second_connection_is_a_cache_hit(self):
        """The first connection for a name loads it from the store; the next is a cache hit, served the same certificate."""
        factory = self.factory()
        for _ in range(2):
            client, client_app, _ = self.connect(factory, self.verified(ALPHA))
            self.assertTrue(client_app.handshake_done)
            self.assertEqual(self.served_leaf(client), self.records[ALPHA].fingerprint)
        self.assertEqual(self.store.calls, [ALPHA])
        self.assertEqual((self.cache.misses, self.cache.hits), (1, 1))
        self.assertEqual((factory.served, factory.fallback), (2, 0))

    def test_alpn_negotiated_after_the_context_switch(self):
        """http/1.1 is negotiated via ALPN on a connection switched to a hostname's context."""
        factory = self.factory()
        client, client_app, _ = self.connect(factory, self.verified(ALPHA))
        self.assertEqual(client.negotiatedProtocol, b"http/1.1")
        server_app = self.server_app.built[-1]
        self.assertEqual(server_app.transport.negotiatedProtocol, b"http/1.1")
        self.assertIsNotNone(server_app.transport.getPeer())

    def test_application_data_and_close_reach_the_web_protocol(self):
        """After the hand-over, the client's request reaches the web protocol, its answer the client, and a close both."""
        factory = self.factory()
        client, client_app, pump = self.connect(factory, self.verified(ALPHA))
        server_app = self.server_app.built[-1]
        client_app.transport.write(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        pump.flush()
        self.assertEqual(server_app.received, b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        server_app.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        pump.flush()
        self.assertEqual(client_app.received, b"HTTP/1.1 204 No Content\r\n\r\n")
        client_app.transport.loseConnection()
        pump.flush()
        self.assertIsNotNone(server_app.lost)
        self.assertEqual(factory.connections, set())

    def test_unknown_name_and_no_sni_get_the_fallback(self):
        """A name the store lacks, and a hello without SNI, are served the fallback certificate."""
        factory = self.factory()
        fallback_sha = pem_sha256(fallback_pems()[1])
        for name in (b"unknown.example.com", None, b"not_a_hostname"):
            client, client_app, _ = self.connect(factory, UncheckedClient(name))
            self.assertTrue(client_app.handshake_done)
            self.assertEqual(self.served_leaf(client), fallback_sha)
            self.assertEqual(client.negotiatedProtocol, b"http/1.1")
        self.assertEqual((factory.served, factory.fallback), (0, 3))
        self.assertEqual(self.store.calls, ["unknown.example.com"])

    def test_known_absent_name_gets_the_fallback_without_the_store(self):
        """A second connection for an unknown name within negative_ttl gets the fallback without reading the store."""
        factory = self.factory()
        fallback_sha = pem_sha256(fallback_pems()[1])
        for _ in range(2):
            client, client_app, _ = self.connect(factory, UncheckedClient(b"unknown.example.com"))
            self.assertTrue(client_app.handshake_done)
            self.assertEqual(self.served_leaf(client), fallback_sha)
        self.assertEqual(self.store.calls, ["unknown.example.com"])
        self.assertEqual((factory.served, factory.fallback), (0, 2))

    def test_reject_unknown_sends_unrecognized_name(self):
        """With reject_unknown an unknown name gets a fatal unrecognized_name alert, no certificate."""
        factory = self.factory(reject_unknown=True)
        client, client_app, _ = self.connect(factory, UncheckedClient(b"unknown.example.com"))
        self.assertFalse(client_app.handshake_done)
        self.assertIsNotNone(client_app.lost)
        self.assertIn("unrecognized name", str(client_app.lost.value))
        self.assertEqual(factory.rejected, 1)

    def test_reject_unknown_still_serves_known_names(self):
        """With reject_unknown (and no fallback certificate) known names are served normally."""
        factory = self.factory(reject_unknown=True)
        client, client_app, _ = self.connect(factory, self.verified(BETA))
        self.assertTrue(client_app.handshake_done)

    def test_reject_alert_bytes(self):
        """The rejection is exactly one fatal unrecognized_name alert record, then close."""
        factory = self.factory(reject_unknown=True)
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello())
        self.assertEqual(transport.value(), UNRECOGNIZED_NAME_ALERT)
        self.assertTrue(transport.disconnecting)

    # -- waiting for the store -----------------------------------------------------------

    def test_slow_store_times_out_to_the_fallback(self):
        """If the store does not answer within load_timeout the client gets the fallback, with one warning naming the host."""
        store = self.gate_the_store()
        factory = self.factory(load_timeout=2)
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        self.assertEqual(transport.value(), b"")
        with capturedLogs() as events:
            self.clock.advance(2)
        self.assertTrue(transport.value().startswith(SERVER_HELLO))
        self.assertEqual(factory.fallback, 1)
        [event] = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual((event["log_level"], event["hostname"], event["timeout"]), (LogLevel.warn, ALPHA, 2))
        self.assertNotIn("log_failure", event)
        store.release()  # the late answer is cached for the next connection
        self.assertIsNotNone(self.cache.peek(ALPHA))

    def test_failed_load_serves_the_fallback_and_is_logged(self):
        """If loading fails outright (a bug, not a slow store), the client gets the fallback and the error is logged."""
        self.cache = FailingLoadCache(store=self.store, clock=self.clock)
        factory = self.factory()
        server, transport = self.held(factory)
        with capturedLogs() as events:
            server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        self.assertTrue(transport.value().startswith(SERVER_HELLO))
        self.assertEqual((factory.served, factory.fallback), (0, 1))
        [event] = [e for e in events if "log_failure" in e]
        self.assertEqual(event["hostname"], ALPHA)
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_client_gone_before_the_load_finished(self):
        """A client that disconnects while its certificate loads is not handed over afterwards."""
        store = self.gate_the_store()
        factory = self.factory()
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        server.connectionLost(None)
        store.release()
        self.assertEqual(transport.value(), b"")
        self.assertEqual((factory.served, factory.fallback), (0, 0))
        self.assertEqual(factory.connections, set())

    def test_client_gone_before_the_load_timed_out(self):
        """A client that disconnects while the store is slow is not handed the fallback at the timeout."""
        self.gate_the_store()
        factory = self.factory(load_timeout=2)
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        server.connectionLost(None)
        with capturedLogs():
            self.clock.advance(2)
        self.assertEqual(transport.value(), b"")
        self.assertEqual((factory.served, factory.fallback), (0, 0))

    def test_too_many_bytes_while_loading_are_refused(self):
        """While its certificate loads a client may send up to max_hello_bytes in all; one byte more closes it."""
        store = self.gate_the_store()
        hello = pyopenssl_client_hello(ALPHA.encode())
        factory = self.factory(max_hello_bytes=len(hello) + 10)
        server, transport = self.held(factory)
        server.dataReceived(hello)
        server.dataReceived(b"\x17" * 10)
        self.assertFalse(transport.disconnecting)
        server.dataReceived(b"\x17")
        self.assertTrue(transport.disconnected)
        self.assertEqual(factory.not_tls, 1)
        store.release()
        self.assertEqual(transport.value(), b"")
        self.assertEqual((factory.served, factory.fallback), (0, 0))

    def test_crash_while_handing_over_is_logged_and_aborted(self):
        """If handing a loaded connection over fails, the error is logged and the connection aborted, not left hanging."""
        store = self.gate_the_store()
        self.server_app = RefusingFactory()
        factory = self.factory()
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        store.release()
        self.assertTrue(transport.disconnected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        server.dataReceived(b"\x16\x03\x01")  # later bytes are ignored
        self.assertEqual(transport.value(), b"")

    # -- the hold itself -----------------------------------------------------------------

    def test_hello_in_one_byte_pieces(self):
        """A hello in one-byte records delivered one byte at a time is held, then handed over."""
        factory = self.factory()
        server, transport = self.held(factory)
        wire = as_records(handshake_message(pyopenssl_client_hello(BETA.encode())), 1)
        for i in range(len(wire) - 1):
            server.dataReceived(wire[i : i + 1])
        self.assertEqual(transport.value(), b"")
        server.dataReceived(wire[-1:])
        self.assertTrue(transport.value().startswith(SERVER_HELLO))
        self.assertEqual(factory.served, 1)

    def test_hello_completed_by_exactly_the_missing_bytes(self):
        """A hello whose second piece brings exactly the bytes its record header announced is handed over at once."""
        factory = self.factory()
        server, transport = self.held(factory)
        wire = pyopenssl_client_hello(BETA.encode())
        self.assertEqual(int.from_bytes(wire[3:5], "big") + 5, len(wire), "one record")
        server.dataReceived(wire[:10])
        self.assertEqual(transport.value(), b"")
        server.dataReceived(wire[10:])
        self.assertTrue(transport.value().startswith(SERVER_HELLO))
        self.assertEqual(factory.served, 1)

    def test_silent_client_is_closed_after_hello_timeout(self):
        """A client that sends nothing (or half a hello) is aborted after hello_timeout, with a debug line naming it."""
        factory = self.factory(hello_timeout=3)
        for data in (b"", pyopenssl_client_hello(ALPHA.encode())[:40]):
            server, transport = self.held(factory)
            server.dataReceived(data)
            self.clock.advance(2.9)
            self.assertFalse(transport.disconnecting)
            with capturedLogs() as events:
                self.clock.advance(0.1)
            self.assertTrue(transport.disconnected)
            [event] = events
            self.assertEqual((event["log_level"], event["peer"], event["timeout"]), (LogLevel.debug, PEER, 3))
            server.connectionLost(None)
        self.assertEqual(factory.timeout, 2)

    def test_held_connections_are_capped_and_the_oldest_is_dropped(self):
        """Over max_held connections still sending their hello, the one that has waited longest goes."""
        reporter = LimitReporter(self.clock)
        factory = self.factory(max_held=2, reporter=reporter)
        first, first_transport = self.held(factory)
        self.clock.advance(1)
        second, second_transport = self.held(factory)
        with capturedLogs():
            third, third_transport = self.held(factory)
        self.assertTrue(first_transport.disconnected)
        self.assertFalse(second_transport.disconnected or third_transport.disconnected)
        self.assertEqual(len(factory.held), 2)
        self.assertEqual(reporter.counts["max_held"], 1)
        # a connection whose hello is complete is no longer held: it does not count
        second.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        self.assertEqual(list(factory.held), [third])
        fourth, fourth_transport = self.held(factory)
        self.assertFalse(third_transport.disconnected or fourth_transport.disconnected)
        first.connectionLost(None)
        self.assertEqual(len(factory.held), 2)

    def test_the_budget_refuses_connections_over_its_caps_and_is_released_on_close(self):
        reporter = LimitReporter(self.clock)
        budget = ConnectionBudget(max_connections=2, max_per_peer=1, reporter=reporter)
        factory = self.factory(budget=budget, reporter=reporter)
        server, _ = self.held(factory)
        with capturedLogs():
            self.assertIsNone(factory.buildProtocol(PEER))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.8", 1)))
        with capturedLogs():
            self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", 1)))
        self.assertEqual(reporter.counts, {"max_per_peer": 1, "max_connections": 1})
        server.connectionLost(None)
        self.assertEqual(budget.open, 1)
        self.assertIsNotNone(factory.buildProtocol(PEER))

    def test_hello_deadline_is_reported(self):
        reporter = LimitReporter(self.clock)
        factory = self.factory(hello_timeout=3, reporter=reporter)
        server, transport = self.held(factory)
        hello = pyopenssl_client_hello(ALPHA.encode())
        for i in range(5):  # a valid byte a second does not extend the deadline
            server.dataReceived(hello[i : i + 1])
            with capturedLogs():
                self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(reporter.counts["hello_deadline"], 1)
        self.assertEqual(self.clock.seconds(), 5)

    def test_bytes_that_cannot_begin_a_hello_are_refused_at_once_however_they_are_split(self):
        """Found by bench/fuzz_hello.py: a bad record or handshake header byte is seen as it arrives."""
        for data, split in [
            (b"\x16\x16", 1),  # record version byte
            (b"\x16\x03\x01\x00\xd2\x01\xd0\x03\x03", 5),  # a 13.6 MB ClientHello announced
            (b"\x16\x03\x01\x00\xd2\x02\x00\x00\x10", 5),  # a ServerHello
        ]:
            factory = self.factory()
            server, transport = self.held(factory)
            server.dataReceived(data[:split])
            self.assertFalse(transport.disconnecting)
            for i in range(split, len(data)):
                server.dataReceived(data[i : i + 1])
            self.assertTrue(transport.disconnected, data)
            self.assertEqual(factory.not_tls, 1)

    def test_plain_http_gets_a_400(self):
        """Plain HTTP to the HTTPS port gets a minimal 400 response telling it to use https, logged at debug."""
        factory = self.factory()
        server, transport = self.held(factory)
        with capturedLogs() as events:
            server.dataReceived(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(transport.value(), PLAIN_HTTP_RESPONSE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 400 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.not_tls, 1)
        [event] = events
        self.assertEqual((event["log_level"], event["peer"], event["reason"]), (LogLevel.debug, PEER, "plain HTTP request"))

    def test_garbage_is_closed_without_reply(self):
        """Bytes that are not TLS are closed without a reply and without touching the store."""
        factory = self.factory()
        server, transport = self.held(factory)
        server.dataReceived(b"\x00\x01\x02garbage")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)
        self.assertEqual((factory.not_tls, self.store.calls), (1, []))

    def test_oversized_hello_is_closed(self):
        """A ClientHello over max_hello_bytes is closed as soon as its header says so."""
        factory = self.factory(max_hello_bytes=2048)
        server, transport = self.held(factory)
        server.dataReceived(b"\x16\x03\x01\x10\x00\x01\x00\x0f\xfc")
        self.assertTrue(transport.disconnected)
        self.assertEqual(factory.not_tls, 1)

    def test_rejection_is_logged_at_debug(self):
        """A rejected unknown name is logged at debug with the peer and the name."""
        factory = self.factory(reject_unknown=True)
        server, transport = self.held(factory)
        with capturedLogs() as events:
            server.dataReceived(pyopenssl_client_hello(b"Unknown.Example.COM"))
        [event] = [e for e in events if "peer" in e]
        self.assertEqual(
            (event["log_level"], event["peer"], event["hostname"]), (LogLevel.debug, PEER, "unknown.example.com")
        )

    def test_no_timer_is_left_once_a_connection_is_decided(self):
        """Whatever happens to a connection (served, fallback, rejected, refused, gone), no timer stays behind for it."""
        self.successResultOf(self.cache.load(ALPHA))
        fallback, rejecting = self.factory(), self.factory(reject_unknown=True)
        cases = [
            (fallback, pyopenssl_client_hello(ALPHA.encode())),
            (fallback, pyopenssl_client_hello(BETA.encode())),
            (fallback, pyopenssl_client_hello()),
            (rejecting, pyopenssl_client_hello(b"unknown.example.com")),
            (fallback, b"GET / HTTP/1.1\r\n\r\n"),
            (fallback, b"\x00garbage"),
        ]
        granule = fallback.held.granularity  # the hello sweep stops at its next run with nothing held
        for factory, data in cases:
            server, transport = self.held(factory)
            server.dataReceived(data)
            self.clock.advance(granule)
            self.assertEqual(self.clock.getDelayedCalls(), [], data[:20])
        server, transport = self.held(fallback)
        server.connectionLost(None)
        self.clock.advance(granule)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connections_lists_the_open_connections(self):
        """factory.connections holds each connection from connect until it is lost."""
        factory = self.factory()
        first, _ = self.held(factory)
        second, _ = self.held(factory)
        self.assertEqual(factory.connections, {first, second})
        first.connectionLost(None)
        self.assertEqual(factory.connections, {second})

    # -- building the factory ---------------------------------------------------------------

    def test_create_requires_a_fallback_unless_rejecting(self):
        """create refuses to build a listener without a whole fallback (key and certificate) unless reject_unknown."""
        key_pem, cert_pem = fallback_pems()
        for key, cert in ((None, None), (key_pem, None), (None, cert_pem)):
            self.assertRaises(ValueError, SNIServerFactory.create, self.server_app, self.cache, self.clock, key, cert)

    def test_rejecting_listener_ignores_half_a_fallback(self):
        """With reject_unknown, a key without its certificate is ignored: unknown names are still rejected."""
        key_pem, _ = fallback_pems()
        factory = SNIServerFactory.create(self.server_app, self.cache, self.clock, key_pem, None, reject_unknown=True)
        client, client_app, _ = self.connect(factory, UncheckedClient(b"unknown.example.com"))
        self.assertFalse(client_app.handshake_done)
        self.assertEqual(factory.rejected, 1)
        client, client_app, _ = self.connect(factory, self.verified(ALPHA))
        self.assertTrue(client_app.handshake_done)

    def direct_factory(self) -> SNIServerFactory:
        key_pem, cert_pem = fallback_pems()
        creator = HeldConnectionCreator(fallback_context(key_pem, cert_pem, self.cache.policy))
        tls_factory = TLSMemoryBIOFactory(creator, False, self.server_app, clock=self.clock)
        sessions = SessionContexts(self.cache.policy, _switch_to_certificate, self.clock)
        return SNIServerFactory(
            cache=self.cache, tls_factory=tls_factory, clock=self.clock, sessions=sessions
        )

    def test_default_timeouts(self):
        """By default (from create or the constructor) a client has 10 s for its hello and the store 5 s before the fallback."""
        store = self.gate_the_store()
        for make in (self.factory, self.direct_factory):
            factory = make()
            silent, silent_transport = self.held(factory)
            waiting, waiting_transport = self.held(factory)
            waiting.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
            self.clock.advance(4.9)
            self.assertEqual(waiting_transport.value(), b"")
            with capturedLogs():
                self.clock.advance(0.1)
            self.assertTrue(waiting_transport.value().startswith(SERVER_HELLO))
            self.assertEqual(factory.fallback, 1)
            self.clock.advance(4.9)
            self.assertFalse(silent_transport.disconnecting)
            with capturedLogs():
                self.clock.advance(0.1)
            self.assertTrue(silent_transport.disconnected)
            store.release()
            self.cache.invalidate_all()

    def test_constructor_serves_the_fallback_by_default(self):
        """A factory made with the constructor serves unknown names the fallback rather than rejecting them."""
        factory = self.direct_factory()
        client, client_app, _ = self.connect(factory, UncheckedClient(None))
        self.assertTrue(client_app.handshake_done)
        self.assertEqual((factory.fallback, factory.rejected), (1, 0))

    def test_starting_and_stopping_reach_the_web_factory(self):
        """Starting and stopping the listener start and stop the web factory; the listener logs as the web factory over TLS."""
        factory = self.factory()
        with capturedLogs() as events:
            factory.doStart()
            self.assertEqual((self.server_app.starts, self.server_app.stops), (1, 0))
            factory.doStop()
            self.assertEqual((self.server_app.starts, self.server_app.stops), (1, 1))
        self.assertEqual([e for e in events if e.get("factory") is factory], [], "the listener itself is not noisy")
        self.assertEqual(factory.logPrefix(), "RecordingFactory (TLS)")
