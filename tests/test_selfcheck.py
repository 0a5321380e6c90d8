"""The HTTP-01 self-check against a real HTTP listener on loopback; DNS answers are faked."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.names import dns
from twisted.names.error import DNSNameError, DNSServerError
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from jobhost.errors import ConfigError, SelfCheckFailed
from jobhost.selfcheck import CHALLENGE_PATH, HttpSelfCheck
from jobhost.store.memory import MemoryStore

HOST = "jobs.acme-corp.test"
TOKEN = "tok-123"
KEY_AUTH = "tok-123.thumbprint"
URL = f"http://{HOST}/.well-known/acme-challenge/{TOKEN}"


def a(name, address):
    return dns.RRHeader(name=name, type=dns.A, payload=dns.Record_A(address))


def aaaa(name, address):
    return dns.RRHeader(name=name, type=dns.AAAA, payload=dns.Record_AAAA(address))


def cname(name, target):
    return dns.RRHeader(name=name, type=dns.CNAME, payload=dns.Record_CNAME(target))


class FakeResolver:
    """Answers A and AAAA lookups from a table: a list of records, or an exception to fail with."""

    def __init__(self, a_answer=(), aaaa_answer=()):
        self.answers = {dns.A: a_answer, dns.AAAA: aaaa_answer}
        self.asked = []

    def _answer(self, name, type, timeout):
        self.asked.append((name, type, timeout))
        answer = self.answers[type]
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed((list(answer), [], []))

    def lookupAddress(self, name, timeout=None):
        return self._answer(name, dns.A, timeout)

    def lookupIPV6Address(self, name, timeout=None):
        return self._answer(name, dns.AAAA, timeout)


class ChallengeResource(Resource):
    """Answers challenge URLs from a store, as our HTTP listener does; ``reply`` overrides it."""

    isLeaf = True

    def __init__(self, store):
        super().__init__()
        self.store = store
        self.reply = None
        self.requests = []
        self.served = []

    def render_GET(self, request):
        self.requests.append(
            {"host": request.getHeader("host"), "path": request.path.decode(), "local": request.getHost()}
        )
        if self.reply is not None:
            return self.reply(request)
        token = request.path.decode().removeprefix(CHALLENGE_PATH)
        challenge = self.store.challenges.get(token)
        if challenge is None:
            request.setResponseCode(404)
            return b"no such token"
        self.served.append(challenge)
        return challenge.key_authorization.encode("ascii")


class CountingSite(Site):
    """A Site that counts the TCP connections made to it."""

    connections = 0

    def buildProtocol(self, addr):
        self.connections += 1
        return super().buildProtocol(addr)


class SelfCheckTests(TestCase):
    timeout = 10

    def setUp(self):
        self.store = MemoryStore()
        self.resource = ChallengeResource(self.store)
        self.site = CountingSite(self.resource)
        self.listening = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.listening.stopListening)
        self.port = self.listening.getHost().port

    def self_check(self, resolver=None, port=None, clock=reactor, timeout=2.0):
        check = HttpSelfCheck.create(
            reactor, port=self.port if port is None else port, timeout=timeout,
            resolver=resolver if resolver is not None else FakeResolver([a(HOST, "127.0.0.1")]),
        )
        check.clock = clock
        return check

    def serve(self, token=TOKEN, key_authorization=KEY_AUTH):
        from jobhost.store.records import Challenge

        self.store.challenges[token] = Challenge(
            token, key_authorization, HOST, datetime(2024, 1, 1, tzinfo=timezone.utc)
        )

    async def failure(self, check, token=TOKEN, key_authorization=KEY_AUTH):
        with self.assertRaises(SelfCheckFailed) as cm:
            await check(HOST, token, key_authorization)
        error = cm.exception
        self.assertEqual(error.hostname, HOST)
        self.assertEqual(error.url, f"http://{HOST}/.well-known/acme-challenge/{token}")
        return error.reason

    # ------------------------------------------------------------ passing

    async def test_passes_when_the_challenge_is_served(self):
        """The URL answering exactly the key authorization passes, asked with the hostname as Host."""
        self.serve()
        self.assertIsNone(await self.self_check()(HOST, TOKEN, KEY_AUTH))
        (request,) = self.resource.requests
        self.assertEqual(request["host"], HOST)
        self.assertEqual(request["path"], f"/.well-known/acme-challenge/{TOKEN}")
        self.assertEqual(request["local"].port, self.port)

    async def test_surrounding_whitespace_is_ignored(self):
        """A body with the key authorization and a trailing newline passes, as it does at the CA."""
        self.resource.reply = lambda request: f"  {KEY_AUTH}\r\n".encode()
        await self.self_check()(HOST, TOKEN, KEY_AUTH)

    async def test_a_record_after_a_cname_is_used(self):
        """A CNAME in the A answer is followed to the address record after it."""
        self.serve()
        resolver = FakeResolver([cname(HOST, "lb.example.test"), a("lb.example.test", "127.0.0.1")])
        await self.self_check(resolver)(HOST, TOKEN, KEY_AUTH)
        self.assertEqual([type for _, type, _ in resolver.asked], [dns.A], "AAAA is not asked when A answers")

    async def test_lookups_are_bounded_by_the_timeout(self):
        """A failed A lookup falls back to AAAA; each lookup is given the self-check's timeout."""
        resolver = FakeResolver(DNSServerError(), DNSServerError())
        reason = await self.failure(self.self_check(resolver, timeout=1.5))
        self.assertEqual(reason, f"cannot resolve {HOST}: DNSServerError")
        self.assertEqual(resolver.asked, [(HOST, dns.A, (1.5,)), (HOST, dns.AAAA, (1.5,))])

    async def test_ipv6_only_hostname(self):
        """With no A record the AAAA address is used, in brackets in the URL."""
        self.serve()
        listening = reactor.listenTCP(0, self.site, interface="::1")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        resolver = FakeResolver([cname(HOST, "v6.example.test")], [aaaa(HOST, "::1")])
        await self.self_check(resolver, port=port)(HOST, TOKEN, KEY_AUTH)
        (request,) = self.resource.requests
        self.assertEqual(request["local"].host, "::1")
        self.assertEqual(request["host"], HOST)

    async def test_a_record_is_preferred_to_aaaa(self):
        """With both A and AAAA records the IPv4 address is asked, and AAAA is not looked up."""
        self.serve()
        resolver = FakeResolver([a(HOST, "127.0.0.1")], [aaaa(HOST, "::1")])
        await self.self_check(resolver)(HOST, TOKEN, KEY_AUTH)
        self.assertEqual(self.resource.requests[0]["local"].host, "127.0.0.1")
        self.assertEqual(len(resolver.asked), 1)

    async def test_each_check_makes_a_fresh_connection(self):
        """Like the CA's validations, every check opens a connection of its own."""
        self.serve()
        check = self.self_check()
        await check(HOST, TOKEN, KEY_AUTH)
        await check(HOST, TOKEN, KEY_AUTH)
        self.assertEqual(self.site.connections, 2)

    # ------------------------------------------------------------ failing

    async def test_wrong_body_fails(self):
        """A 200 with some other body fails, suggesting another server answers for the hostname."""
        self.serve(key_authorization="tok-123.someone-else")
        reason = await self.failure(self.self_check())
        self.assertEqual(
            reason,
            f"127.0.0.1 answered, but not with our key authorization: is {HOST} served by another server?",
        )

    async def test_http_status_fails(self):
        """An unknown token's 404 fails, naming the address and the status."""
        reason = await self.failure(self.self_check())
        self.assertEqual(reason, "127.0.0.1 answered HTTP 404, not 200")

    async def test_redirect_is_not_followed(self):
        """A redirect is reported as such, not followed to wherever it points."""
        self.serve()

        def redirect(request):
            request.redirect(f"http://127.0.0.1:{self.port}{CHALLENGE_PATH}{TOKEN}".encode())
            return b""

        self.resource.reply = redirect
        reason = await self.failure(self.self_check())
        self.assertEqual(reason, "127.0.0.1 answered HTTP 302, not 200")
        self.assertEqual(len(self.resource.requests), 1)

    async def test_nxdomain_fails(self):
        """A hostname that does not exist fails before any request, naming the error."""
        resolver = FakeResolver(DNSNameError(HOST), DNSNameError(HOST))
        reason = await self.failure(self.self_check(resolver))
        self.assertEqual(reason, f"cannot resolve {HOST}: DNSNameError")
        self.assertEqual(self.resource.requests, [])

    async def test_no_address_records_fails(self):
        """A hostname with neither A nor AAAA records fails before any request."""
        resolver = FakeResolver([cname(HOST, "elsewhere.test")], [])
        reason = await self.failure(self.self_check(resolver))
        self.assertEqual(reason, f"{HOST} has no A or AAAA record")
        self.assertEqual(self.resource.requests, [])

    async def test_refused_connection_fails(self):
        """Nothing listening at the address fails with "no answer", naming address and port."""
        port = self.port
        await self.listening.stopListening()
        reason = await self.failure(self.self_check(port=port))
        self.assertTrue(reason.startswith(f"no answer from 127.0.0.1:{port} (ConnectionRefusedError: "), reason)

    async def test_slow_answer_times_out(self):
        """A server that never answers fails within the timeout, with "no answer"."""
        pending = []

        def hang(request):
            pending.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return NOT_DONE_YET

        self.resource.reply = hang
        started = reactor.seconds()
        reason = await self.failure(self.self_check(timeout=0.2))
        self.assertLess(reactor.seconds() - started, 2)
        self.assertTrue(reason.startswith(f"no answer from 127.0.0.1:{self.port} ("), reason)
        self.assertEqual(len(pending), 1)

    # ------------------------------------------------------------ probe

    async def test_probe_serves_and_removes_a_throwaway_challenge(self):
        """A probe writes a challenge for the hostname, is served it, and removes it afterwards."""
        clock = Clock()
        clock.advance(1_700_000_000)
        await self.self_check(clock=clock).probe(self.store, HOST)
        (served,) = self.resource.served
        self.assertEqual(served.hostname, HOST)
        self.assertEqual(served.created_at, datetime.fromtimestamp(1_700_000_000, tz=timezone.utc))
        self.assertEqual(served.key_authorization, f"{served.token}.jobhost-probe")
        self.assertEqual(len(served.token), 32, "24 random bytes, base64url-encoded")
        self.assertEqual(self.store.challenges, {})

    async def test_probe_tokens_differ(self):
        """Each probe uses a token of its own."""
        check = self.self_check()
        await check.probe(self.store, HOST)
        await check.probe(self.store, HOST)
        first, second = self.resource.served
        self.assertNotEqual(first.token, second.token)

    async def test_failed_probe_still_removes_its_challenge(self):
        """A probe that fails reports why and leaves no challenge behind."""
        self.resource.reply = lambda request: b"something else"
        with self.assertRaises(SelfCheckFailed) as cm:
            await self.self_check().probe(self.store, HOST)
        self.assertIn("not with our key authorization", cm.exception.reason)
        self.assertEqual(self.store.challenges, {})

    async def test_failure_describes_url_and_reason(self):
        """The error an operator sees names the URL and what went wrong."""
        error = SelfCheckFailed(HOST, URL, "127.0.0.1 answered HTTP 404, not 200")
        self.assertEqual(error.describe(), f"self-check of {URL} failed: 127.0.0.1 answered HTTP 404, not 200")


class CreateTests(TestCase):
    """HttpSelfCheck.create()'s choice of resolver and settings."""

    def test_configured_servers(self):
        """Configured resolvers are the servers asked, on the given reactor."""
        clock = MemoryReactorClock()
        check = HttpSelfCheck.create(clock, ("127.0.0.1:5353", "[::1]:53", "192.0.2.53"), port=8080, timeout=3.0)
        self.assertEqual(check.resolver.servers, [("127.0.0.1", 5353), ("::1", 53), ("192.0.2.53", 53)])
        self.assertIsNone(check.resolver.resolv)
        self.assertIs(check.resolver._reactor, clock)
        self.assertIs(check.clock, clock)
        self.assertEqual((check.port, check.timeout), (8080, 3.0))

    def test_defaults(self):
        """Without resolvers the system's resolv.conf is read; the CA's port 80 and 5 s are the defaults."""
        check = HttpSelfCheck.create(MemoryReactorClock())
        self.assertEqual(check.resolver.resolv, "/etc/resolv.conf")
        self.assertEqual((check.port, check.timeout), (80, 5.0))

    def test_constructor_defaults(self):
        """Built directly, a self-check asks port 80, where the CA connects, and gives DNS 5 s."""
        resolver = FakeResolver(DNSNameError(HOST), DNSNameError(HOST))
        check = HttpSelfCheck(resolver=resolver, http=None, clock=MemoryReactorClock())
        self.failureResultOf(check(HOST, TOKEN, KEY_AUTH), SelfCheckFailed)
        self.assertEqual([timeout for _, _, timeout in resolver.asked], [(5.0,), (5.0,)])
        self.assertEqual(check.port, 80)

    def test_shared_resolver(self):
        """A resolver passed in is used as it is."""
        resolver = FakeResolver()
        self.assertIs(HttpSelfCheck.create(MemoryReactorClock(), ("127.0.0.1",), resolver=resolver).resolver, resolver)

    def test_bad_resolver(self):
        """A resolver entry that is not an address is a ConfigError at [preflight] resolvers."""
        with self.assertRaises(ConfigError) as cm:
            HttpSelfCheck.create(MemoryReactorClock(), ("dns.google",))
        self.assertEqual(cm.exception.path, ("preflight", "resolvers"))
