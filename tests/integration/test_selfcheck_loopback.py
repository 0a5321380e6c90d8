"""The HTTP-01 self-check against a real HTTP listener on loopback (resolver faked)."""

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from jobhost.errors import SelfCheckFailed
from jobhost.selfcheck import HttpSelfCheck
from jobhost.store.memory import MemoryStore
from jobhost.web.site import HttpRootResource, make_site

HOST = "jobs.acme-corp.test"


class FakeResolver:
    """Answers A queries for every name with one address, or NXDOMAIN when address is None."""

    def __init__(self, address):
        self.address = address

    def lookupAddress(self, name, timeout=None):
        if self.address is None:
            return fail(DNSNameError(name))
        rr = dns.RRHeader(name=name, type=dns.A, payload=dns.Record_A(self.address))
        return succeed(([rr], [], []))

    def lookupIPV6Address(self, name, timeout=None):
        return fail(DNSNameError(name))


class SelfCheckTests(TestCase):
    def setUp(self):
        self.store = MemoryStore()
        self.port = reactor.listenTCP(0, make_site(HttpRootResource(self.store)), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    def check(self, address="127.0.0.1", port=None):
        return HttpSelfCheck(
            resolver=FakeResolver(address), http=self.http, clock=reactor,
            port=port or self.port.getHost().port, timeout=2.0,
        )

    async def test_probe_passes_when_we_serve_the_challenge(self):
        """A probe token written to the store is served back by our own HTTP listener."""
        await self.check().probe(self.store, HOST)
        self.assertEqual(self.store.challenges, {}, "the probe token is removed afterwards")

    async def test_wrong_body_fails(self):
        """A challenge URL answering something else fails, naming the URL."""
        from jobhost.store.records import Challenge
        from datetime import datetime, timezone

        self.store.challenges["tok"] = Challenge("tok", "tok.other", HOST, datetime.now(timezone.utc))
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check()(HOST, "tok", "tok.ours")
        self.assertIn("not with our key authorization", str(cm.exception))
        self.assertIn(f"http://{HOST}/.well-known/acme-challenge/tok", str(cm.exception))

    async def test_missing_token_fails_with_status(self):
        """An unknown token gives HTTP 404, reported as such."""
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check()(HOST, "missing", "missing.x")
        self.assertIn("HTTP 404", str(cm.exception))

    async def test_nxdomain_fails(self):
        """A name that does not resolve fails before any request."""
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check(address=None)(HOST, "t", "t.x")
        self.assertIn("cannot resolve", str(cm.exception))

    async def test_refused_connection_fails(self):
        """Nothing listening on the address fails with "no answer"."""
        from daemon import free_port

        with self.assertRaises(SelfCheckFailed) as cm:
            await self.check(port=free_port())(HOST, "t", "t.x")
        self.assertIn("no answer", str(cm.exception))
