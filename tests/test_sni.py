"""Tests for jobhost.tls.sni (cache, change poller), jobhost.tls.listener and jobhost.tls.fallback.

Real OpenSSL throughout; no sockets: both TLS ends run over memory BIOs joined
by ``twisted.test.iosim`` with a ``Clock``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import stat
from datetime import datetime, timedelta, timezone

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from tls_helpers import as_records, handshake_message, pem_sha256, pyopenssl_client_hello
from twisted.application.service import IService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobhost.store.records import ChangeKind
from jobhost.store.records import certificate_record
from jobhost.errors import BrokenRecord, InvalidCertificate, StoreError
from jobhost.store.memory import MemoryStore
from jobhost.testing import TestCA
from jobhost.timeutil import now
from jobhost.tls.fallback import load_or_create_fallback
from jobhost.tls.listener import PLAIN_HTTP_RESPONSE, UNRECOGNIZED_NAME_ALERT, SNIServerFactory
from jobhost.tls.sni import CertificateCache, ChangePoller

ALPHA, BETA, GAMMA = "alpha.example.com", "beta.example.com", "gamma.example.net"


@functools.cache
def ca() -> TestCA:
    """One test CA per test session, made on first use (never at import)."""
    return TestCA.create("sni unit test CA")


@functools.cache
def fallback_pems() -> tuple[bytes, bytes]:
    from jobhost.certs import self_signed_certificate

    return self_signed_certificate("fallback.jobhost.invalid", datetime.now(timezone.utc))


def record_for(hostname: str, *extra_names: str, stored_as: str | None = None):
    key_pem, chain_pem = ca().issue(hostname, extra_names=extra_names)
    return certificate_record(stored_as or hostname, key_pem, chain_pem)


class GatedStore:
    """A MemoryStore whose certificate reads wait until the test releases them."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self._waiting: list[tuple[str, Deferred]] = []

    def get_certificate(self, hostname):
        self.calls.append(hostname)
        d: Deferred = Deferred()
        self._waiting.append((hostname, d))
        return d

    def release(self) -> None:
        waiting, self._waiting = self._waiting, []
        for hostname, d in waiting:
            self.inner.get_certificate(hostname).chainDeferred(d)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CountingStore(GatedStore):
    """A MemoryStore that counts certificate reads and answers at once."""

    def get_certificate(self, hostname):
        self.calls.append(hostname)
        return self.inner.get_certificate(hostname)


@attrs.define
class ScriptedFeed:
    """A store whose change feed answers from a script (a failure, or an answer)."""

    answers: list
    inner: MemoryStore = attrs.field(factory=MemoryStore)

    def changes(self, cursor):
        answer = self.answers.pop(0) if self.answers else (cursor, {})
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    def get_certificate(self, hostname):
        return self.inner.get_certificate(hostname)


def store_with(*records) -> MemoryStore:
    store = MemoryStore()
    for record in records:
        store.put_certificate(record)
    return store


# -- CertificateCache ------------------------------------------------------------------------


class CertificateCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def cache(self, store, **kwargs) -> CertificateCache:
        return CertificateCache(store=store, clock=self.clock, **kwargs)

    def test_load_then_lookup(self):
        """A loaded hostname's context is found by lookup (a hit); an unloaded one is a miss."""
        cache = self.cache(store_with(record_for(ALPHA)))
        self.assertIsNone(cache.lookup(ALPHA))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertIsInstance(cache.lookup(ALPHA), SSL.Context)
        self.assertEqual((cache.hits, cache.misses, cache.loads), (1, 1, 1))

    def test_lookup_normalises_the_name(self):
        """lookup finds a cached name given in another case, with a trailing dot, or as bytes."""
        cache = self.cache(store_with(record_for(ALPHA)))
        self.successResultOf(cache.load(ALPHA))
        context = cache.peek(ALPHA)
        self.assertIs(cache.lookup("Alpha.Example.COM."), context)
        self.assertIs(cache.lookup(ALPHA.encode("ascii")), context)
        self.assertIsNone(cache.lookup(b"\xff.example.com"))
        self.assertIsNone(cache.lookup(None))

    def test_lru_cap_evicts_least_recently_used(self):
        """With max_entries=2 a third name evicts the least recently looked-up one."""
        cache = self.cache(store_with(*(record_for(h) for h in (ALPHA, BETA, GAMMA))), max_entries=2)
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        cache.lookup(ALPHA)  # ALPHA is now more recent than BETA
        self.successResultOf(cache.load(GAMMA))
        self.assertIsNotNone(cache.peek(ALPHA))
        self.assertIsNone(cache.peek(BETA))
        self.assertIsNotNone(cache.peek(GAMMA))
        self.assertEqual((cache.size, cache.certificate_count, cache.evictions), (2, 2, 1))

    def test_negative_entry_expires(self):
        """A name the store lacks is known absent for negative_ttl seconds, then not."""
        cache = self.cache(MemoryStore(), negative_ttl=30)
        self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        self.assertTrue(cache.known_absent(ALPHA))
        self.clock.advance(29)
        self.assertTrue(cache.known_absent(ALPHA))
        self.clock.advance(1)
        self.assertFalse(cache.known_absent(ALPHA))

    def test_negative_entries_are_bounded(self):
        """Negative entries are capped at max_entries, oldest dropped first."""
        cache = self.cache(MemoryStore(), max_entries=2)
        for name in (ALPHA, BETA, GAMMA):
            self.successResultOf(cache.load(name))
        self.assertEqual([cache.known_absent(n) for n in (ALPHA, BETA, GAMMA)], [False, True, True])

    def test_invalidate(self):
        """invalidate drops a name's context and its negative entry; invalidate_all drops all."""
        cache = self.cache(store_with(record_for(ALPHA), record_for(BETA)))
        for name in (ALPHA, BETA, GAMMA):
            self.successResultOf(cache.load(name))
        cache.invalidate(ALPHA)
        cache.invalidate(GAMMA)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertFalse(cache.known_absent(GAMMA))
        self.assertIsNotNone(cache.peek(BETA))
        cache.invalidate_all()
        self.assertEqual((cache.size, cache.certificate_count), (0, 0))

    def test_concurrent_loads_share_one_read(self):
        """Two loads of one name while the store is slow cause one read and both fire True."""
        store = GatedStore(store_with(record_for(ALPHA)))
        cache = self.cache(store)
        first, second = cache.load(ALPHA), cache.load(ALPHA)
        self.assertNoResult(first)
        store.release()
        self.assertEqual(store.calls, [ALPHA])
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (True, True))
        self.assertEqual(cache.loads, 1)

    def test_cancelled_waiter_leaves_others(self):
        """Cancelling one caller's load Deferred does not disturb another waiting for the same read."""
        store = GatedStore(store_with(record_for(ALPHA)))
        cache = self.cache(store)
        first, second = cache.load(ALPHA), cache.load(ALPHA)
        first.cancel()
        self.failureResultOf(first)
        store.release()
        self.assertIs(self.successResultOf(second), True)

    def test_invalidate_during_load_reads_again(self):
        """A load invalidated while the store is read discards that read and reads again."""
        old, new = record_for(ALPHA), record_for(ALPHA)
        inner = store_with(old)
        store = GatedStore(inner)
        cache = self.cache(store)
        waiter = cache.load(ALPHA)
        inner.put_certificate(new)
        cache.invalidate(ALPHA)
        store.release()  # answers the first read (now with `new`, but it is discarded)
        self.assertNoResult(waiter)
        self.assertEqual(store.calls, [ALPHA, ALPHA])
        store.release()
        self.assertIs(self.successResultOf(waiter), True)

    def test_store_failure_is_logged_without_negative_entry(self):
        """A store error makes load fire False, is logged as one line without a traceback, and leaves no negative entry."""
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(StoreError("disk on fire"))
        cache = self.cache(store)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = events
        self.assertEqual((event["log_level"], event["hostname"], event["reason"]), (LogLevel.error, ALPHA, "disk on fire"))
        self.assertNotIn("log_failure", event)
        self.assertFalse(cache.known_absent(ALPHA))
        self.assertEqual(cache.load_failures, 1)

    def test_unusable_record_gets_negative_entry(self):
        """A stored record whose key does not match its chain is not cached and is known absent."""
        good, other = record_for(ALPHA), record_for(BETA)
        cache = self.cache(store_with(attrs.evolve(good, key_pem=other.key_pem)))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertTrue(cache.known_absent(ALPHA))

    def broken_events(self, events, hostname: str) -> list:
        return [e for e in events if e.get("hostname") == hostname and e["log_level"] >= LogLevel.warn]

    def test_broken_record_is_reported_once_per_change(self):
        """A record whose key does not match its leaf is logged once, re-read silently after the TTL, and forgotten when its certificate changes."""
        good, other = record_for(ALPHA), record_for(BETA)
        store = CountingStore(store_with(attrs.evolve(good, key_pem=other.key_pem)))
        cache = self.cache(store, negative_ttl=60)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
            self.assertTrue(cache.known_absent(ALPHA))
            self.clock.advance(61)
            self.assertFalse(cache.known_absent(ALPHA))
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = self.broken_events(events, ALPHA)
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertNotIn("log_failure", event)
        self.assertIn("key values mismatch", event["reason"])
        self.assertEqual(event["reason"], cache.broken_reason(ALPHA))
        self.assertEqual((store.calls, cache.broken_reports, cache.broken_count), ([ALPHA, ALPHA], 1, 1))
        self.assertEqual(cache.load_failures, 0)
        cache.invalidate(ALPHA, frozenset((ChangeKind.PAGE,)))
        self.assertTrue(cache.known_absent(ALPHA), "a page edit does not make the certificate usable")
        store.inner.put_certificate(good)
        cache.invalidate(ALPHA, frozenset((ChangeKind.CERTIFICATE,)))
        self.assertIsNone(cache.broken_reason(ALPHA))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertIsNotNone(cache.peek(ALPHA))
        self.assertEqual(cache.broken_count, 0)

    def test_broken_record_from_the_store_is_remembered_not_retried(self):
        """A BrokenRecord from the store gets a negative entry and one log line, unlike a store failure."""
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(
            BrokenRecord(
                f"cannot parse /store/certificates/{hostname}.json: not valid JSON",
                key=hostname,
                reason="not valid JSON",
            )
        )
        cache = self.cache(store)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = self.broken_events(events, ALPHA)
        self.assertIn(f"/store/certificates/{ALPHA}.json", event["reason"])
        self.assertTrue(cache.known_absent(ALPHA))
        self.assertEqual((cache.broken_reports, cache.load_failures), (1, 0))

    def test_a_different_fault_is_reported_again(self):
        """After a re-read finds a different fault (the record was changed by hand), it is reported again."""
        reasons = ["not valid JSON", "missing field 'key_pem'"]
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(BrokenRecord(reasons[0], key=hostname, reason=reasons[0]))
        cache = self.cache(store, negative_ttl=10)
        with capturedLogs() as events:
            self.successResultOf(cache.load(ALPHA))
            reasons.pop(0)
            self.clock.advance(11)
            self.successResultOf(cache.load(ALPHA))
        self.assertEqual(
            [e["reason"] for e in self.broken_events(events, ALPHA)], ["not valid JSON", "missing field 'key_pem'"]
        )
        self.assertEqual(cache.broken_count, 1)

    def test_one_certificate_held_once(self):
        """A certificate stored under two hostnames is held as one context for both."""
        shared = record_for(ALPHA, BETA)
        cache = self.cache(store_with(shared, attrs.evolve(shared, hostname=BETA)))
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        self.assertIs(cache.peek(ALPHA), cache.peek(BETA))
        self.assertEqual((cache.size, cache.certificate_count), (2, 1))
        cache.invalidate(ALPHA)
        self.assertIsNotNone(cache.peek(BETA))
        cache.invalidate(BETA)
        self.assertEqual(cache.certificate_count, 0)

    def test_replacement_releases_old_context(self):
        """Reloading a name with a new certificate drops the old context."""
        store = store_with(record_for(ALPHA))
        cache = self.cache(store)
        self.successResultOf(cache.load(ALPHA))
        before = cache.peek(ALPHA)
        store.put_certificate(record_for(ALPHA))
        self.successResultOf(cache.load(ALPHA))
        self.assertIsNot(cache.peek(ALPHA), before)
        self.assertEqual(cache.certificate_count, 1)


# -- ChangePoller ----------------------------------------------------------------------------


class ChangePollerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_provides_iservice(self):
        """ChangePoller is a Twisted service."""
        poller = ChangePoller(cache=None, store=MemoryStore(), clock=self.clock)
        verifyObject(IService, poller)

    def test_changed_hostnames_are_invalidated(self):
        """A certificate replaced in the store is invalidated after one interval, others kept."""
        store = store_with(record_for(ALPHA), record_for(BETA))
        cache = CertificateCache(store=store, clock=self.clock)
        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=2)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        store.put_certificate(record_for(ALPHA))
        self.clock.advance(1)
        self.assertIsNotNone(cache.peek(ALPHA))
        self.clock.advance(1)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertIsNotNone(cache.peek(BETA))
        self.assertEqual(poller.polls, 2)
        self.successResultOf(poller.stopService())

    def test_a_push_polls_at_once_and_stopping_unwatches(self):
        """The store's push makes the poller read the feed before its interval; stopping the poller unwatches."""
        store = ScriptedFeed([(1, {}), (2, {ALPHA: ChangeKind.ALL})], store_with(record_for(ALPHA)))
        cache = CertificateCache(store=store, clock=self.clock)
        pushes, stopped = [], []

        def watch(callback):
            pushes.append(callback)
            return lambda: stopped.append(True)

        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=60, watch=watch)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.assertEqual((len(pushes), poller.polls), (1, 1))
        pushes[0]()  # another node stored a certificate: no need to wait 60 s
        self.assertEqual(poller.polls, 2)
        self.assertIsNone(cache.lookup(ALPHA))
        poller.stopService()
        self.assertEqual(stopped, [True])
        pushes[0]()
        self.assertEqual(poller.polls, 2, "a push after stopping does nothing")

    def test_unknown_changes_invalidate_everything(self):
        """When the feed cannot tell what changed (None), the whole cache is cleared."""
        store = ScriptedFeed([(1, {}), (2, None)], store_with(record_for(ALPHA)))
        cache = CertificateCache(store=store, clock=self.clock)
        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=1)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.clock.advance(1)
        self.assertEqual(cache.size, 0)
        poller.stopService()

    def test_failures_are_logged_and_polling_continues(self):
        """A failing poll is logged and the next poll still invalidates what changed."""
        store = ScriptedFeed(
            [(1, {}), StoreError("feed down"), (2, {ALPHA: ChangeKind.ALL})],
            store_with(record_for(ALPHA)),
        )
        cache = CertificateCache(store=store, clock=self.clock)
        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=1)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        self.assertIsNotNone(cache.peek(ALPHA))
        self.clock.advance(1)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertEqual((poller.polls, poller.failures), (2, 1))
        poller.stopService()
        self.clock.advance(10)
        self.assertEqual(poller.polls, 2)


# -- the listener over memory BIOs ------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
@attrs.define
class UncheckedClient:
    """A TLS client that sends ``server_name`` (or no SNI) and accepts any certificate."""

    server_name: bytes | None

    def clientConnectionForTLS(self, tls_protocol):
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        connection = SSL.Connection(context, None)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name)
        connection.set_alpn_protos([b"http/1.1"])
        connection.set_connect_state()
        return connection


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """Remembers whether the handshake completed and how the connection ended."""

    handshake_done = False
    lost = None

    def handshakeCompleted(self):
        self.handshake_done = True

    def connectionLost(self, reason):
        self.lost = reason


class RecordingFactory(Factory):
    protocol = Recorder

    def __init__(self):
        self.built: list[Recorder] = []

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        self.built.append(p)
        return p


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

    def verified(self, hostname: str):
        return optionsForClientTLS(
            hostname, trustRoot=Certificate.loadPEM(ca().root_pem), acceptableProtocols=[b"http/1.1"]
        )

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
        """The first connection for a name loads it from the store; the next is a cache hit."""
        factory = self.factory()
        self.connect(factory, self.verified(ALPHA))
        self.connect(factory, self.verified(ALPHA))
        self.assertEqual(self.store.calls, [ALPHA])
        self.assertEqual((self.cache.misses, self.cache.hits), (1, 1))

    def test_alpn_negotiated_after_the_context_switch(self):
        """http/1.1 is negotiated via ALPN on a connection switched to a hostname's context."""
        factory = self.factory()
        client, client_app, _ = self.connect(factory, self.verified(ALPHA))
        self.assertEqual(client.negotiatedProtocol, b"http/1.1")
        server_app = self.server_app.built[-1]
        self.assertEqual(server_app.transport.negotiatedProtocol, b"http/1.1")
        self.assertIsNotNone(server_app.transport.getPeer())

    def test_unknown_name_and_no_sni_get_the_fallback(self):
        """A name the store lacks, and a hello without SNI, are served the fallback certificate."""
        factory = self.factory()
        fallback_sha = pem_sha256(fallback_pems()[1])
        for name in (b"unknown.example.com", None, b"not_a_hostname"):
            client, client_app, _ = self.connect(factory, UncheckedClient(name))
            self.assertTrue(client_app.handshake_done)
            leaf = client.getHandle().get_peer_certificate(as_cryptography=True)
            self.assertEqual(pem_sha256(leaf.public_bytes(serialization.Encoding.PEM)), fallback_sha)
            self.assertEqual(client.negotiatedProtocol, b"http/1.1")
        self.assertEqual((factory.served, factory.fallback), (0, 3))
        self.assertEqual(self.store.calls, ["unknown.example.com"])

    def test_known_absent_name_skips_the_store(self):
        """A second connection for an unknown name within negative_ttl does not read the store."""
        factory = self.factory()
        self.connect(factory, UncheckedClient(b"unknown.example.com"))
        self.connect(factory, UncheckedClient(b"unknown.example.com"))
        self.assertEqual(self.store.calls, ["unknown.example.com"])

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

    def test_slow_store_times_out_to_the_fallback(self):
        """If the store does not answer within load_timeout the client gets the fallback certificate."""
        store = GatedStore(store_with(*self.records.values()))
        self.cache = CertificateCache(store=store, clock=self.clock)
        factory = self.factory(load_timeout=2)
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        self.assertEqual(transport.value(), b"")
        self.clock.advance(2)
        self.assertTrue(transport.value().startswith(b"\x16\x03"))  # a ServerHello went out
        self.assertEqual(factory.fallback, 1)
        store.release()  # the late answer is cached for the next connection
        self.assertIsNotNone(self.cache.peek(ALPHA))
        self.flushLoggedErrors()

    def test_client_gone_before_the_load_finished(self):
        """A client that disconnects while its certificate loads is not handed over afterwards."""
        store = GatedStore(store_with(*self.records.values()))
        self.cache = CertificateCache(store=store, clock=self.clock)
        factory = self.factory()
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(pyopenssl_client_hello(ALPHA.encode()))
        server.connectionLost(None)
        store.release()
        self.assertEqual(transport.value(), b"")
        self.assertEqual((factory.served, factory.fallback), (0, 0))
        self.assertEqual(factory.connections, set())

    def test_hello_in_one_byte_pieces(self):
        """A hello in one-byte records delivered one byte at a time is held, then handed over."""
        factory = self.factory()
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        wire = as_records(handshake_message(pyopenssl_client_hello(BETA.encode())), 1)
        for i in range(len(wire) - 1):
            server.dataReceived(wire[i : i + 1])
        self.assertEqual(transport.value(), b"")
        server.dataReceived(wire[-1:])
        self.assertTrue(transport.value().startswith(b"\x16\x03"))
        self.assertEqual(factory.served, 1)

    def test_silent_client_is_closed_after_hello_timeout(self):
        """A client that sends nothing (or half a hello) is aborted after hello_timeout."""
        factory = self.factory(hello_timeout=3)
        for data in (b"", pyopenssl_client_hello(ALPHA.encode())[:40]):
            server = factory.buildProtocol(None)
            transport = StringTransport()
            server.makeConnection(transport)
            server.dataReceived(data)
            self.clock.advance(2.9)
            self.assertFalse(transport.disconnecting)
            self.clock.advance(0.1)
            self.assertTrue(transport.disconnected)
            server.connectionLost(None)
        self.assertEqual(factory.timeout, 2)

    def test_plain_http_gets_a_400(self):
        """Plain HTTP to the HTTPS port gets a minimal 400 response telling it to use https."""
        factory = self.factory()
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: alpha.example.com\r\n\r\n")
        self.assertEqual(transport.value(), PLAIN_HTTP_RESPONSE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 400 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.not_tls, 1)

    def test_garbage_is_closed_without_reply(self):
        """Bytes that are not TLS are closed without a reply and without touching the store."""
        factory = self.factory()
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"\x00\x01\x02garbage")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)
        self.assertEqual((factory.not_tls, self.store.calls), (1, []))

    def test_oversized_hello_is_closed(self):
        """A ClientHello over max_hello_bytes is closed as soon as its header says so."""
        factory = self.factory(max_hello_bytes=2048)
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"\x16\x03\x01\x10\x00\x01\x00\x0f\xfc")
        self.assertTrue(transport.disconnected)
        self.assertEqual(factory.not_tls, 1)

    def test_reject_alert_bytes(self):
        """The rejection is exactly one fatal unrecognized_name alert record, then close."""
        factory = self.factory(reject_unknown=True)
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(pyopenssl_client_hello())
        self.assertEqual(transport.value(), UNRECOGNIZED_NAME_ALERT)
        self.assertTrue(transport.disconnecting)

    def test_create_requires_a_fallback_unless_rejecting(self):
        """create refuses to build a listener with neither a fallback certificate nor reject_unknown."""
        self.assertRaises(ValueError, SNIServerFactory.create, self.server_app, self.cache, self.clock)


# -- fallback certificate -----------------------------------------------------------------


class FallbackTests(SynchronousTestCase):
    def setUp(self) -> None:
        # tempfile, not self.mktemp(): under pytest, mktemp() is relative to the repository.
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = FilePath(directory).child("tls").child("fallback.pem")
        self.now = now(Clock())

    def test_created_private_and_reused(self):
        """The fallback is made once, stored 0600, and the same certificate is returned later."""
        key_pem, cert_pem = load_or_create_fallback(self.path, self.now)
        self.assertEqual(stat.S_IMODE(os.stat(self.path.path).st_mode), 0o600)
        self.assertEqual(load_or_create_fallback(self.path, self.now), (key_pem, cert_pem))
        leaf = x509.load_pem_x509_certificate(cert_pem)
        self.assertEqual(leaf.subject, leaf.issuer)

    def test_loose_permissions_are_tightened(self):
        """An existing fallback file readable by others is made 0600 again."""
        load_or_create_fallback(self.path, self.now)
        os.chmod(self.path.path, 0o644)
        load_or_create_fallback(self.path, self.now)
        self.assertEqual(stat.S_IMODE(os.stat(self.path.path).st_mode), 0o600)

    def test_expired_fallback_is_replaced(self):
        """A fallback whose certificate has expired is replaced by a new one."""
        _, old = load_or_create_fallback(self.path, self.now)
        _, new = load_or_create_fallback(self.path, self.now + timedelta(days=3651))
        self.assertNotEqual(hashlib.sha256(old).digest(), hashlib.sha256(new).digest())

    def test_corrupt_file_is_refused_not_overwritten(self):
        """A fallback file that is not a matching key and certificate raises and is left alone."""
        self.path.parent().makedirs()
        self.path.setContent(b"not pem")
        self.assertRaises(InvalidCertificate, load_or_create_fallback, self.path, self.now)
        self.assertEqual(self.path.getContent(), b"not pem")
