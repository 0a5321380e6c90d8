"""The TLS-ALPN-01 self-check against the real HTTPS listener on loopback (resolver faked)."""

from datetime import datetime, timezone

from tls_helpers import RecordingFactory, fallback_pems, record_for, store_with
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from jobhost.errors import SelfCheckFailed
from jobhost.selfcheck import TlsAlpnSelfCheck
from jobhost.store.records import TLS_ALPN_01, Challenge, tls_alpn01_key
from jobhost.tls.listener import SNIServerFactory
from jobhost.tls.sni import CertificateCache
from test_selfcheck_loopback import FakeResolver

HOST = "jobs.acme-corp.test"
KEY_AUTH = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class TlsAlpnSelfCheckTests(TestCase):
    def setUp(self):
        self.store = store_with(record_for(HOST))
        cache = CertificateCache(store=self.store, clock=reactor)
        key_pem, cert_pem = fallback_pems()
        factory = SNIServerFactory.create(RecordingFactory(), cache, reactor, key_pem, cert_pem)
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    def check(self, address="127.0.0.1", port=None):
        return TlsAlpnSelfCheck(
            resolver=FakeResolver(address), reactor=reactor, port=port or self.port.getHost().port, timeout=2.0
        )

    def pending(self, key_authorization=KEY_AUTH):
        self.store.put_challenge(
            Challenge(tls_alpn01_key(HOST), key_authorization, HOST, datetime.now(timezone.utc), TLS_ALPN_01)
        )

    async def test_passes_when_the_listener_serves_our_challenge(self):
        """With the challenge in the store, the listener's acme-tls/1 handshake shows our certificate."""
        self.pending()
        await self.check()(HOST, "token", KEY_AUTH)

    async def test_fails_without_a_pending_challenge(self):
        """Without a challenge the listener sends an alert (never the real certificate): the check fails naming it."""
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check()(HOST, "token", KEY_AUTH)
        self.assertIn("no TLS-ALPN-01 handshake", str(cm.exception))
        self.assertIn(f"tls-alpn-01://{HOST}:", cm.exception.url)

    async def test_fails_for_another_key_authorization(self):
        """A challenge certificate for another key authorization does not pass."""
        self.pending("other-token.thumb")
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check()(HOST, "token", KEY_AUTH)
        self.assertIn("acmeIdentifier", str(cm.exception))

    async def test_fails_when_nothing_listens(self):
        """A closed port fails with the address and port named."""
        closed = self.port.getHost().port
        await self.port.stopListening()
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check(port=closed)(HOST, "token", KEY_AUTH)
        self.assertIn(f"127.0.0.1:{closed}", str(cm.exception))

    async def test_fails_without_an_address(self):
        """A hostname with no A or AAAA record fails before connecting."""
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check(address=None)(HOST, "token", KEY_AUTH)
        self.assertIn("cannot resolve", str(cm.exception))
