"""The listener's TLS policy over real loopback connections: resumption, ALPN, suites, versions.

Clients are Python's ``ssl`` module (the system OpenSSL, not the one jobhost's
pyOpenSSL uses) in threads; one client ``SSLContext`` per test, so sessions it
received can be offered again.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time

import attrs
from tls_helpers import h2_get, https_get, read_to_eof
from test_tls_loopback import ALPHA, BETA, HELLO_TIMEOUT, POLL_INTERVAL, HelloResource, LoopbackHelpers, materials
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from jobhost.store.memory import MemoryStore
from jobhost.tls.listener import SNIServerFactory
from jobhost.tls.policy import TlsPolicy
from jobhost.tls.sni import CertificateCache, ChangePoller

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@attrs.frozen
class Visit:
    certificate_sha256: str
    resumed: bool
    session: ssl.SSLSession
    response: bytes


def visit(port: int, hostname: str, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> Visit:
    """Blocking: handshake (offering ``session``), GET /, read to EOF (TLS 1.3 tickets come with the data)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname, session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: " + hostname.encode() + b"\r\nConnection: close\r\n\r\n")
            response = read_to_eof(tls)
            der = tls.getpeercert(binary_form=True)
            return Visit(hashlib.sha256(der).hexdigest() if der else "", tls.session_reused, tls.session, response)


def handshake_error(port: int, hostname: str, context: ssl.SSLContext) -> str:
    """Blocking: a handshake expected to fail; the client's reason."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=hostname):
                pass
    except ssl.SSLError as e:
        return f"{e.reason} {e}"
    raise AssertionError("the handshake succeeded")


class TlsPolicyLoopbackTests(LoopbackHelpers, TestCase):
    timeout = 30

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.m = materials()
        self.store = MemoryStore()
        for record in self.m.records.values():
            self.store.put_certificate(record)

    def listen(self, policy: TlsPolicy | None = None, ticket_rotation: float = 86400.0):
        cache = CertificateCache(store=self.store, clock=self.reactor, max_entries=100, policy=policy or TlsPolicy())
        poller = ChangePoller(cache=cache, store=self.store, clock=self.reactor, interval=POLL_INTERVAL)
        poller.startService()
        self.addCleanup(poller.stopService)
        factory = SNIServerFactory.create(
            Site(HelloResource()), cache, self.reactor, *self.m.fallback,
            hello_timeout=HELLO_TIMEOUT, ticket_rotation=ticket_rotation,
        )
        return factory, self.serve(factory)

    def client(self, version=None, alpn=("http/1.1",), ciphers: str | None = None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=self.m.cadata.decode("ascii"))
        if version is not None:
            context.minimum_version = context.maximum_version = version
        if alpn:
            context.set_alpn_protocols(list(alpn))
        if ciphers is not None:
            context.set_ciphers(ciphers)
        return context

    @inlineCallbacks
    def test_a_returning_visitor_resumes_over_tls13_and_tls12(self):
        """The second connection with the session of the first is resumed (no certificate sent) and served."""
        _, port = self.listen()
        for version in (TLS13, TLS12):
            context = self.client(version)
            first = yield deferToThread(visit, port, ALPHA, context)
            self.assertFalse(first.resumed)
            self.assertEqual(first.certificate_sha256, self.m.records[ALPHA].fingerprint)
            again = yield deferToThread(visit, port, ALPHA, context, first.session)
            self.assertTrue(again.resumed, version)
            self.assertTrue(again.response.endswith(b"hello " + ALPHA.encode() + b" secure"), again.response[-60:])

    @inlineCallbacks
    def test_a_session_never_resumes_into_another_hostname(self):
        """ALPHA's session offered to BETA gets a full handshake with BETA's own certificate."""
        _, port = self.listen()
        for version in (TLS13, TLS12):
            context = self.client(version)
            first = yield deferToThread(visit, port, ALPHA, context)
            other = yield deferToThread(visit, port, BETA, context, first.session)
            self.assertFalse(other.resumed, version)
            self.assertEqual(other.certificate_sha256, self.m.records[BETA].fingerprint)
            self.assertTrue(other.response.endswith(b"hello " + BETA.encode() + b" secure"))

    @inlineCallbacks
    def test_resumption_survives_a_certificate_change_and_new_visitors_get_the_new_one(self):
        """After BETA's certificate is replaced, an old session still resumes; a new visitor gets the new leaf."""
        _, port = self.listen()
        context = self.client(TLS13)
        first = yield deferToThread(visit, port, BETA, context)
        yield self.store.put_certificate(self.m.replacement)
        yield deferToThread(self.served_within, port, BETA, self.m.replacement.fingerprint, True, 3)
        again = yield deferToThread(visit, port, BETA, context, first.session)
        self.assertTrue(again.resumed)
        fresh = yield deferToThread(visit, port, BETA, self.client(TLS13))
        self.assertEqual(fresh.certificate_sha256, self.m.replacement.fingerprint)

    @inlineCallbacks
    def test_ticket_keys_rotate(self):
        """A session issued before its hostname's ticket key was rotated gets a full handshake."""
        factory, port = self.listen(ticket_rotation=0.5)
        context = self.client(TLS13)
        first = yield deferToThread(visit, port, ALPHA, context)
        yield deferToThread(time.sleep, 0.6)
        after = yield deferToThread(visit, port, ALPHA, context, first.session)
        self.assertFalse(after.resumed)
        self.assertEqual(after.certificate_sha256, self.m.records[ALPHA].fingerprint)
        self.assertEqual(factory.sessions.rotated, 1)

    @inlineCallbacks
    def test_no_common_application_protocol_gets_alert_120(self):
        """A client offering only h2 gets no_application_protocol (RFC 7301); one offering no ALPN is served."""
        factory, port = self.listen()
        reason = yield deferToThread(handshake_error, port, ALPHA, self.client(alpn=("h2",)))
        self.assertIn("alert no application protocol", reason)
        self.assertEqual(factory.alpn_refused, 1)
        served = yield deferToThread(visit, port, ALPHA, self.client(alpn=()))
        self.assertTrue(served.response.startswith(b"HTTP/1.1 200"))

    @inlineCallbacks
    def test_intermediate_profile_refuses_cbc_suites_and_modern_refuses_tls12(self):
        """TLS 1.2 with only CBC suites is refused; AEAD is served; the modern profile refuses TLS 1.2."""
        _, port = self.listen()
        cbc = self.client(TLS12, ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384")
        reason = yield deferToThread(handshake_error, port, ALPHA, cbc)
        self.assertIn("HANDSHAKE_FAILURE", reason)
        aead = yield deferToThread(visit, port, ALPHA, self.client(TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
        self.assertTrue(aead.response.startswith(b"HTTP/1.1 200"))
        _, modern = self.listen(TlsPolicy(profile="modern"))
        reason = yield deferToThread(handshake_error, modern, ALPHA, self.client(TLS12))
        self.assertIn("VERSION", reason)
        served = yield deferToThread(visit, modern, ALPHA, self.client(TLS13))
        self.assertTrue(served.response.startswith(b"HTTP/1.1 200"))

    @inlineCallbacks
    def test_http2_and_http11_clients_get_the_same_pages(self):
        """With h2 offered, an HTTP/2 client fetches several paths on one connection; HTTP/1.1 gets the same."""
        _, port = self.listen(TlsPolicy(alpn=(b"h2", b"http/1.1")))
        paths = ["/", "/jobs/1", "/jobs/2"]
        alpn, pages = yield deferToThread(h2_get, port, ALPHA, paths, self.m.cadata)
        self.assertEqual(alpn, "h2")
        self.assertEqual(set(pages), set(paths))
        for path in paths:
            status, body = pages[path]
            self.assertEqual(status, 200)
            self.assertEqual(body, b"hello " + ALPHA.encode() + b" secure")
            http11 = yield deferToThread(https_get, port, ALPHA, self.m.cadata)
            self.assertEqual(http11.alpn, "http/1.1")
            self.assertTrue(http11.response.endswith(body))
        # without h2 in the policy an h2-first client falls back to HTTP/1.1
        _, plain = self.listen()
        alpn, pages = yield deferToThread(h2_get, plain, ALPHA, paths, self.m.cadata)
        self.assertEqual((alpn, pages), ("http/1.1", {}))
