"""Real TLS on 127.0.0.1: the SNI listener in front of a twisted.web Site, checked by real clients.

Clients are Python's ``ssl`` module (its own OpenSSL build) running in
threads via ``deferToThread``, trusting only the two test CAs.
"""

from __future__ import annotations

import functools
import ssl
import threading
import time

from tls_helpers import (
    as_records,
    https_get,
    pem_sha256,
    raw_probe,
    stdlib_client_hello,
    tls_error,
    trickled_https_get,
    with_padding,
)
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from jobhost.certs import self_signed_certificate
from jobhost.store.records import certificate_record
from jobhost.store.memory import MemoryStore
from jobhost.testing import TestCA
from jobhost.tls.listener import SNIServerFactory
from jobhost.tls.sni import CertificateCache, ChangePoller

ALPHA, BETA, GAMMA = "alpha.example.com", "beta.example.com", "gamma.example.net"
UNKNOWN = "unknown.example.org"
POLL_INTERVAL = 0.2
HELLO_TIMEOUT = 5.0  # generous: a loaded machine must not time out the slow-but-valid clients
SHORT_HELLO_TIMEOUT = 1.0  # for the test that waits for it
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


class Materials:
    """Two CAs (RSA and ECDSA), three hostnames' certificates, a fallback; made on first use."""

    def __init__(self) -> None:
        from datetime import datetime, timezone

        self.rsa_ca = TestCA.create("loopback RSA CA", key_type="rsa-2048")
        self.ec_ca = TestCA.create("loopback ECDSA CA")
        self.records = {
            ALPHA: certificate_record(ALPHA, *self.rsa_ca.issue(ALPHA, key_type="rsa-2048")),
            BETA: certificate_record(BETA, *self.ec_ca.issue(BETA)),
            GAMMA: certificate_record(GAMMA, *self.ec_ca.issue(GAMMA)),
        }
        self.replacement = certificate_record(BETA, *self.rsa_ca.issue(BETA, key_type="rsa-2048"))
        self.cadata = self.rsa_ca.root_pem + self.ec_ca.root_pem
        self.fallback = self_signed_certificate("fallback.jobhost.invalid", datetime.now(timezone.utc))
        self.fallback_sha = pem_sha256(self.fallback[1])


@functools.cache
def materials() -> Materials:
    return Materials()


class HelloResource(Resource):
    """Answers every GET with the Host it was asked for and whether the request came over TLS."""

    isLeaf = True

    def render_GET(self, request):
        secure = b"secure" if request.isSecure() else b"insecure"
        return b"hello " + request.getRequestHostname() + b" " + secure


class LoopbackHelpers:
    """What every loopback test case uses; needs ``self.reactor`` and ``self.m`` (:class:`Materials`)."""

    def serve(self, factory: SNIServerFactory) -> int:
        """Listen with ``factory`` on a 127.0.0.1 port until the test ends (then drain); return the port."""
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.drained, factory)
        return port.getHost().port

    @inlineCallbacks
    def drained(self, factory: SNIServerFactory):
        """Wait until the server side of every connection is closed (clean reactor)."""
        for _ in range(100):
            if not factory.connections:
                return
            yield deferLater(self.reactor, 0.05, lambda: None)
        self.fail(f"connections still open: {factory.connections}")

    def served_within(self, port, hostname, sha, verify, seconds):
        """Blocking: fetch until ``sha`` is served; return how long it took."""
        cadata = self.m.cadata if verify else None
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if https_get(port, hostname, cadata).certificate_sha256 == sha:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"{hostname} was not served {sha} within {seconds}s")


class TLSLoopbackTests(LoopbackHelpers, TestCase):
    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.m = materials()
        self.store = MemoryStore()
        for record in self.m.records.values():
            self.store.put_certificate(record)
        self.cache = CertificateCache(store=self.store, clock=reactor, max_entries=100)
        self.poller = ChangePoller(cache=self.cache, store=self.store, clock=reactor, interval=POLL_INTERVAL)
        self.poller.startService()
        self.addCleanup(self.poller.stopService)

    def listen(
        self, reject_unknown: bool = False, hello_timeout: float = HELLO_TIMEOUT
    ) -> tuple[SNIServerFactory, int]:
        key_pem, cert_pem = (None, None) if reject_unknown else self.m.fallback
        factory = SNIServerFactory.create(
            Site(HelloResource()),
            self.cache,
            self.reactor,
            key_pem,
            cert_pem,
            reject_unknown=reject_unknown,
            hello_timeout=hello_timeout,
        )
        return factory, self.serve(factory)

    def fetch(self, port: int, hostname: str | None, verify: bool = True, version=None):
        cadata = self.m.cadata if verify else None
        return deferToThread(https_get, port, hostname, cadata, version)

    def assert_served(self, fetched, hostname: str, sha: str) -> None:
        self.assertEqual(fetched.certificate_sha256, sha)
        self.assertEqual(fetched.alpn, "http/1.1")
        self.assertTrue(fetched.response.startswith(b"HTTP/1.1 200"), fetched.response[:40])
        self.assertTrue(fetched.response.endswith(b"hello " + hostname.encode() + b" secure"))

    @inlineCallbacks
    def test_each_hostname_gets_its_certificate_over_tls12_and_tls13(self):
        """Three hostnames from two CAs are each served their own leaf and chain over TLS 1.2 and 1.3."""
        factory, port = self.listen()
        cases = [(h, v) for h in (ALPHA, BETA, GAMMA) for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)]
        results = yield gatherResults([self.fetch(port, h, version=v) for h, v in cases])
        for (hostname, version), fetched in zip(cases, results):
            # Verification against the roots alone proves the intermediate was sent.
            self.assert_served(fetched, hostname, self.m.records[hostname].fingerprint)
            self.assertEqual(fetched.version, VERSION_NAMES[version])
        self.assertEqual(factory.served, 6)

    @inlineCallbacks
    def test_unknown_name_and_no_sni_get_the_fallback(self):
        """An unknown hostname and a hello without SNI are served the self-signed fallback."""
        factory, port = self.listen()
        unknown, no_sni = yield gatherResults([self.fetch(port, UNKNOWN, False), self.fetch(port, None, False)])
        self.assertEqual(unknown.certificate_sha256, self.m.fallback_sha)
        self.assertEqual(no_sni.certificate_sha256, self.m.fallback_sha)
        self.assertEqual(factory.fallback, 2)

    @inlineCallbacks
    def test_reject_unknown_sends_an_alert(self):
        """With reject_unknown an unknown name gets an unrecognized_name alert; known names still work."""
        factory, port = self.listen(reject_unknown=True)
        reason = yield deferToThread(tls_error, port, UNKNOWN)
        self.assertIn("UNRECOGNIZED_NAME", reason)
        fetched = yield self.fetch(port, GAMMA)
        self.assert_served(fetched, GAMMA, self.m.records[GAMMA].fingerprint)
        self.assertEqual((factory.rejected, factory.served), (1, 1))

    @inlineCallbacks
    def test_replaced_certificate_is_served_without_restart(self):
        """A certificate replaced in the store is served within the poll interval; a deleted one falls back."""
        _, port = self.listen()
        before = yield self.fetch(port, BETA)
        self.assertEqual(before.certificate_sha256, self.m.records[BETA].fingerprint)
        yield self.store.put_certificate(self.m.replacement)
        took = yield deferToThread(self.served_within, port, BETA, self.m.replacement.fingerprint, True, 3)
        self.assertLess(took, POLL_INTERVAL + 1)
        yield self.store.delete_certificate(BETA)
        took = yield deferToThread(self.served_within, port, BETA, self.m.fallback_sha, False, 3)
        self.assertLess(took, POLL_INTERVAL + 1)

    @inlineCallbacks
    def test_one_byte_writes_beside_a_normal_client(self):
        """A hello sent in one-byte TCP writes is served; a normal client is served meanwhile."""
        factory, port = self.listen()
        halfway, resume = threading.Event(), threading.Event()
        slow = deferToThread(trickled_https_get, port, ALPHA, self.m.cadata, halfway, resume)
        reached = yield deferToThread(halfway.wait, 5)
        self.assertTrue(reached)
        fast = yield self.fetch(port, GAMMA)
        self.assert_served(fast, GAMMA, self.m.records[GAMMA].fingerprint)
        resume.set()
        trickled = yield slow
        self.assert_served(trickled, ALPHA, self.m.records[ALPHA].fingerprint)
        self.assertEqual(factory.served, 2)

    @inlineCallbacks
    def bad_client_beside_good(self, payload: bytes, hello_timeout: float = HELLO_TIMEOUT):
        """Connect a bad client, serve a good one while it is held, then let it send ``payload``."""
        factory, port = self.listen(hello_timeout=hello_timeout)
        connected, go = threading.Event(), threading.Event()
        bad = deferToThread(raw_probe, port, payload, connected, go)
        yield deferToThread(connected.wait, 5)
        fetched = yield self.fetch(port, BETA)
        self.assert_served(fetched, BETA, self.m.records[BETA].fingerprint)
        go.set()
        probed = yield bad
        return factory, probed

    @inlineCallbacks
    def test_silent_client_is_closed_after_the_hello_timeout(self):
        """A client that sends nothing is closed after hello_timeout; others are served meanwhile."""
        factory, probed = yield self.bad_client_beside_good(b"", SHORT_HELLO_TIMEOUT)
        self.assertEqual(probed.received, b"")
        self.assertTrue(SHORT_HELLO_TIMEOUT - 0.1 < probed.connected_for < SHORT_HELLO_TIMEOUT + 2, probed)
        self.assertEqual(factory.timeout, 1)

    @inlineCallbacks
    def test_plain_http_gets_a_400(self):
        """Plain HTTP to the HTTPS port gets a 400 telling it to use https, then is closed."""
        factory, probed = yield self.bad_client_beside_good(b"GET / HTTP/1.1\r\nHost: beta.example.com\r\n\r\n")
        self.assertTrue(probed.received.startswith(b"HTTP/1.0 400 "), probed.received)
        self.assertIn(b"https://", probed.received)
        self.assertEqual(factory.not_tls, 1)

    @inlineCallbacks
    def test_garbage_is_closed(self):
        """Garbage bytes are closed at once without a reply."""
        factory, probed = yield self.bad_client_beside_good(b"\x00\x01\x02\x03 definitely not TLS")
        self.assertEqual(probed.received, b"")
        self.assertLess(probed.seconds, HELLO_TIMEOUT)
        self.assertEqual((factory.not_tls, factory.timeout), (1, 0))

    @inlineCallbacks
    def test_oversized_hello_is_closed(self):
        """A real hello padded past 16 KiB is closed without a ServerHello, before the hello timeout."""
        oversized = as_records(with_padding(stdlib_client_hello(ALPHA), 20000), 16384)
        self.assertGreater(len(oversized), 16384)
        factory, probed = yield self.bad_client_beside_good(oversized)
        self.assertEqual(probed.received, b"")
        self.assertLess(probed.seconds, HELLO_TIMEOUT)
        self.assertEqual((factory.not_tls, factory.timeout), (1, 0))


class BrokenRecordLoopbackTests(LoopbackHelpers, TestCase):
    """Real handshakes against a directory store holding one corrupt and one mismatched certificate."""

    timeout = 30

    @inlineCallbacks
    def setUp(self):
        import json
        import os
        import shutil
        import tempfile

        from twisted.internet import reactor
        from twisted.python.threadpool import ThreadPool

        from jobhost.store.directory import DirectoryStore

        self.reactor = reactor
        self.m = materials()
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-broken-records")
        pool.start()
        self.addCleanup(pool.stop)
        root = tempfile.mkdtemp(prefix="jobhost-broken-")
        self.addCleanup(shutil.rmtree, root, True)
        self.store = DirectoryStore.create(reactor, os.path.join(root, "store"), threadpool=pool)
        for record in self.m.records.values():
            yield self.store.put_certificate(record)
        certificates = os.path.join(root, "store", "certificates")

        def rewrite(hostname, change):
            path = os.path.join(certificates, hostname + ".json")
            with open(path) as f:
                doc = json.load(f)
            change(doc)
            with open(path, "w") as f:
                json.dump(doc, f)

        # ALPHA: a chain cut off in the middle; BETA: GAMMA's key beside BETA's leaf.
        rewrite(ALPHA, lambda doc: doc.update(chain_pem=doc["chain_pem"][:300]))
        rewrite(BETA, lambda doc: doc.update(key_pem=self.m.records[GAMMA].key_pem.decode("ascii")))
        self.cache = CertificateCache(store=self.store, clock=reactor, max_entries=100)
        self.poller = ChangePoller(cache=self.cache, store=self.store, clock=reactor, interval=POLL_INTERVAL)
        self.poller.startService()
        self.addCleanup(self.poller.stopService)

    def listen(self) -> tuple[SNIServerFactory, int]:
        key_pem, cert_pem = self.m.fallback
        factory = SNIServerFactory.create(
            Site(HelloResource()), self.cache, self.reactor, key_pem, cert_pem, hello_timeout=HELLO_TIMEOUT
        )
        return factory, self.serve(factory)

    def fetch(self, port: int, hostname: str, verify: bool = True):
        return deferToThread(https_get, port, hostname, self.m.cadata if verify else None)

    @staticmethod
    def problems_naming(events, hostname: str) -> list:
        """Warnings and worse that name ``hostname``, in a field or in their text."""
        from twisted.logger import LogLevel, formatEvent

        return [
            e for e in events
            if e["log_level"] >= LogLevel.warn and (hostname in formatEvent(e) or e.get("hostname") == hostname)
        ]

    @inlineCallbacks
    def test_broken_certificates_stay_local_and_log_once(self):
        """Others serve; 20 handshakes to each broken name get the fallback with one log line each; a fix is served."""
        from twisted.logger import capturedLogs

        factory, port = self.listen()
        with capturedLogs() as events:
            for _ in range(20):
                for hostname in (ALPHA, BETA):
                    fetched = yield self.fetch(port, hostname, verify=False)
                    self.assertEqual(fetched.certificate_sha256, self.m.fallback_sha)
                good = yield self.fetch(port, GAMMA)
                self.assertEqual(good.certificate_sha256, self.m.records[GAMMA].fingerprint)
        for hostname, reason in ((ALPHA, "cannot parse"), (BETA, "does not match")):
            [line] = self.problems_naming(events, hostname)
            self.assertNotIn("log_failure", line)
            self.assertIn(reason, line["reason"])
        self.assertEqual([e for e in events if "log_failure" in e], [])
        self.assertEqual((factory.served, factory.fallback), (20, 40))
        # Each broken name was read once: the other 19 handshakes were answered from memory.
        self.assertEqual((self.cache.loads, self.cache.broken_reports, self.cache.broken_count), (3, 2, 2))
        yield self.store.put_certificate(self.m.records[ALPHA])
        took = yield deferToThread(self.served_within, port, ALPHA, self.m.records[ALPHA].fingerprint, False, 3)
        self.assertLess(took, POLL_INTERVAL + 1)
        fixed = yield self.fetch(port, ALPHA)  # verified against the test CAs
        self.assertEqual(fixed.certificate_sha256, self.m.records[ALPHA].fingerprint)
        self.assertIsNone(self.cache.broken_reason(ALPHA))
        self.assertIsNotNone(self.cache.broken_reason(BETA))
