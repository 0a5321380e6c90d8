"""
TLS-ALPN-01 on the HTTPS listener (RFC 8737): real OpenSSL on both sides, joined in memory.

A hello offering only ``acme-tls/1`` for a name with a pending challenge in the store gets
the challenge certificate and nothing else; without one it gets an alert; every other
client keeps getting the hostname's certificate or the fallback.
"""

from __future__ import annotations

from datetime import datetime, timezone

import attrs
from OpenSSL import SSL
from tls_helpers import (
    Recorder,
    RecordingFactory,
    fallback_pems,
    pem_sha256,
    pyopenssl_client_hello,
    record_for,
    store_with,
)
from cryptography.hazmat.primitives import serialization
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from jobhost.certs import ACME_TLS_1, tls_alpn01_mismatch
from jobhost.errors import StoreError
from jobhost.store.records import HTTP_01, TLS_ALPN_01, Challenge, tls_alpn01_key
from jobhost.tls.listener import NO_APPLICATION_PROTOCOL_ALERT, SNIServerFactory
from jobhost.tls.sni import CertificateCache

SERVED, PENDING_ONLY, NOTHING = "served.example.com", "new.example.com", "nothing.example.com"
KEY_AUTH = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
T0 = datetime(2030, 1, 2, tzinfo=timezone.utc)
PEER = IPv4Address("TCP", "192.0.2.7", 50123)


@implementer(IOpenSSLClientConnectionCreator)
@attrs.define
class AlpnClient:
    """A TLS client offering ``protocols`` by ALPN for ``server_name``; it accepts any certificate."""

    server_name: bytes | None
    protocols: tuple[bytes, ...]

    def clientConnectionForTLS(self, tls_protocol):
        connection = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name)
        connection.set_alpn_protos(list(self.protocols))
        connection.set_connect_state()
        return connection


class PeerRecorder(Recorder):
    """Also keeps the server's leaf and the ALPN choice, read when the handshake completes."""

    leaf = protocol = None

    def handshakeCompleted(self):
        super().handshakeCompleted()
        self.leaf = self.transport.getPeerCertificate().to_cryptography()
        self.protocol = self.transport.negotiatedProtocol


class PeerRecordingFactory(RecordingFactory):
    protocol = PeerRecorder


def challenge(hostname: str, key_authorization: str = KEY_AUTH, challenge_type: str = TLS_ALPN_01) -> Challenge:
    return Challenge(tls_alpn01_key(hostname), key_authorization, hostname, T0, challenge_type=challenge_type)


class SlowStore:
    """Fault injection: challenge reads that never answer (the rest is ``inner``'s)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def get_challenge(self, token):
        return Deferred()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class BrokenStore(SlowStore):
    """Fault injection: challenge reads fail as a store outage does."""

    def get_challenge(self, token):
        from twisted.internet.defer import fail

        return fail(StoreError("the database is down"))


class TlsAlpnListenerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0.timestamp())
        self.served_record = record_for(SERVED)
        self.store = store_with(self.served_record)
        for hostname in (SERVED, PENDING_ONLY):
            self.store.put_challenge(challenge(hostname))
        self.server_app = RecordingFactory()

    def factory(self, store=None, **kwargs) -> SNIServerFactory:
        cache = CertificateCache(store=store or self.store, clock=self.clock)
        key_pem, cert_pem = fallback_pems()
        return SNIServerFactory.create(self.server_app, cache, self.clock, key_pem, cert_pem, **kwargs)

    def connect(self, factory: SNIServerFactory, hostname: str | None, *protocols: bytes):
        client_app = PeerRecordingFactory()
        creator = AlpnClient(hostname.encode() if hostname else None, protocols)
        client_tls = TLSMemoryBIOFactory(creator, True, client_app, clock=self.clock)
        client, server, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(PEER), lambda: client_tls.buildProtocol(None), clock=self.clock
        )
        pump.flush()
        return client, client_app.built[0], pump


    def held(self, factory: SNIServerFactory):
        server = factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        return server, transport

    # -- the CA's handshake ------------------------------------------------------------------

    def test_acme_tls_1_hello_gets_the_challenge_certificate_and_nothing_else(self):
        """An acme-tls/1-only hello for a name with a pending challenge negotiates acme-tls/1 with the
        challenge certificate, never reaches the web factory, and is closed by the server."""
        factory = self.factory()
        for hostname in (PENDING_ONLY, SERVED):
            client, client_app, _ = self.connect(factory, hostname, ACME_TLS_1)
            self.assertTrue(client_app.handshake_done)
            self.assertEqual(client_app.protocol, ACME_TLS_1)
            leaf = client_app.leaf
            self.assertIsNone(tls_alpn01_mismatch(leaf, hostname, KEY_AUTH))
            self.assertNotEqual(pem_sha256(leaf.public_bytes(serialization.Encoding.PEM)), self.served_record.fingerprint)
            self.assertIsNotNone(client_app.lost)  # the server closed it after the handshake
        self.assertEqual(self.server_app.built, [])
        self.assertEqual((factory.challenge_served, factory.served, factory.fallback), (2, 0, 0))

    def test_acme_tls_1_hello_without_a_pending_challenge_gets_an_alert(self):
        """An acme-tls/1-only hello for a name with no pending challenge, even one we serve, or with no
        name at all, gets the no_application_protocol alert and no certificate."""
        factory = self.factory()
        for hostname in (NOTHING, SERVED + ".", None):
            if hostname == SERVED + ".":
                self.store.delete_challenge(tls_alpn01_key(SERVED))
                hostname = SERVED
            server, transport = self.held(factory)
            server.dataReceived(pyopenssl_client_hello(hostname and hostname.encode(), alpn=[ACME_TLS_1]))
            self.assertEqual(transport.value(), NO_APPLICATION_PROTOCOL_ALERT)
            self.assertTrue(transport.disconnecting)
        self.assertEqual((factory.challenge_refused, factory.challenge_served, factory.served), (3, 0, 0))
        self.assertEqual(self.server_app.built, [])

    def test_an_http01_record_under_the_key_is_not_a_tls_alpn01_challenge(self):
        """A record of another challenge type stored under the hostname's key is not answered."""
        self.store.put_challenge(challenge(PENDING_ONLY, challenge_type=HTTP_01))
        server, transport = self.held(self.factory())
        server.dataReceived(pyopenssl_client_hello(PENDING_ONLY.encode(), alpn=[ACME_TLS_1]))
        self.assertEqual(transport.value(), NO_APPLICATION_PROTOCOL_ALERT)

    def test_a_challenge_answered_and_deleted_is_never_served_again(self):
        """Once the challenge leaves the store, the next acme-tls/1 hello is refused (no stale certificate)."""
        factory = self.factory()
        client, client_app, _ = self.connect(factory, PENDING_ONLY, ACME_TLS_1)
        self.assertTrue(client_app.handshake_done)
        self.store.delete_challenge(tls_alpn01_key(PENDING_ONLY))
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(PENDING_ONLY.encode(), alpn=[ACME_TLS_1]))
        self.assertEqual(transport.value(), NO_APPLICATION_PROTOCOL_ALERT)
        self.assertEqual(len(factory.challenges), 0)  # its certificate is forgotten too
        self.assertEqual(factory.challenges.built, 1)

    def test_the_challenge_certificate_is_built_once_per_key_authorization(self):
        """Repeated validations of one challenge reuse its certificate; a new key authorization gets a new one."""
        factory = self.factory()
        leaves = []
        for key_authorization in (KEY_AUTH, KEY_AUTH, "other-token.thumb"):
            self.store.put_challenge(challenge(PENDING_ONLY, key_authorization))
            client, client_app, _ = self.connect(factory, PENDING_ONLY, ACME_TLS_1)
            leaf = client_app.leaf
            self.assertIsNone(tls_alpn01_mismatch(leaf, PENDING_ONLY, key_authorization))
            leaves.append(leaf.serial_number)
        self.assertEqual(leaves[0], leaves[1])
        self.assertNotEqual(leaves[1], leaves[2])
        self.assertEqual(factory.challenges.built, 2)

    def test_a_slow_store_refuses_the_challenge_after_the_load_timeout(self):
        """A challenge read that outlasts load_timeout ends in the alert, with a warning."""
        factory = self.factory(store=SlowStore(self.store), load_timeout=2.0)
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(PENDING_ONLY.encode(), alpn=[ACME_TLS_1]))
        self.clock.advance(1.9)
        self.assertEqual(transport.value(), b"")
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertEqual(transport.value(), NO_APPLICATION_PROTOCOL_ALERT)
        self.assertTrue(any("took over" in e["log_format"] for e in events))

    def test_a_failing_store_refuses_the_challenge_and_logs(self):
        """A store outage while reading the challenge ends in the alert and a logged failure."""
        factory = self.factory(store=BrokenStore(self.store))
        server, transport = self.held(factory)
        with capturedLogs() as events:
            server.dataReceived(pyopenssl_client_hello(PENDING_ONLY.encode(), alpn=[ACME_TLS_1]))
        self.assertEqual(transport.value(), NO_APPLICATION_PROTOCOL_ALERT)
        self.assertTrue(any("TLS-ALPN-01" in e["log_format"] for e in events))
        self.flushLoggedErrors(StoreError)

    def test_an_acme_tls_1_connection_that_stays_open_is_cut_off(self):
        """A client that completes the challenge handshake but does not close is aborted after hello_timeout."""
        factory = self.factory(hello_timeout=3.0)
        server, transport = self.held(factory)
        server.dataReceived(pyopenssl_client_hello(PENDING_ONLY.encode(), alpn=[ACME_TLS_1]))
        self.assertFalse(transport.disconnected)
        self.clock.advance(3.0)
        self.assertTrue(transport.disconnected)

    # -- everyone else -------------------------------------------------------------------------

    def test_normal_clients_never_get_the_challenge_certificate(self):
        """During validation an h2/http1.1 client gets the hostname's certificate, or the fallback for a
        name not served yet; one also offering acme-tls/1 is a normal client too."""
        factory = self.factory()
        fallback_leaf = fallback_pems()[1]
        cases = [
            (SERVED, (b"h2", b"http/1.1"), self.served_record.fingerprint),
            (SERVED, (ACME_TLS_1, b"http/1.1"), self.served_record.fingerprint),
            (PENDING_ONLY, (b"http/1.1",), pem_sha256(fallback_leaf)),
        ]
        for hostname, protocols, expected in cases:
            client, client_app, _ = self.connect(factory, hostname, *protocols)
            self.assertTrue(client_app.handshake_done)
            self.assertEqual(client_app.protocol, b"http/1.1")
            leaf = client_app.leaf
            self.assertEqual(pem_sha256(leaf.public_bytes(serialization.Encoding.PEM)), expected)
            self.assertIsNotNone(tls_alpn01_mismatch(leaf, hostname, KEY_AUTH))
        self.assertEqual(factory.challenge_served, 0)
        self.assertEqual(len(self.server_app.built), 3)
