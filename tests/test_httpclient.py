"""Tests for jobhost.httpclient: kept-alive connections, HTTPS verification, on real loopback sockets."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from zope.interface import implementer

from jobhost.httpclient import AgentRequester, outgoing_http
from jobhost.testing import TestCA


class _Peer(Resource):
    """Answers every GET with the client's source port: one port per TCP connection."""

    isLeaf = True

    def render_GET(self, request):
        return str(request.getClientAddress().port).encode()


@implementer(IOpenSSLContextFactory)
class _Echo(Resource):
    """POST echoes method, Content-Length and body; GET /old redirects to /new; GET /new says "new"."""

    isLeaf = True

    def render_POST(self, request):
        if request.path == b"/old":
            request.redirect(b"/new")
            return b""
        return b"%s %s %s" % (request.method, request.getHeader(b"content-length"), request.content.read())

    def render_GET(self, request):
        if request.path == b"/old":
            request.redirect(b"/new")
            return b""
        return request.path + b" " + (request.getHeader(b"x-test") or b"-")


@implementer(IOpenSSLContextFactory)
class _ServerTLS:
    """A server context serving ``key_pem`` and ``chain_pem`` (leaf first)."""

    def __init__(self, key_pem: bytes, chain_pem: bytes) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
        self.context.use_certificate(leaf)
        for certificate in intermediates:
            self.context.add_extra_chain_cert(certificate)
        self.context.use_privatekey(load_pem_private_key(key_pem, None))

    def getContext(self) -> SSL.Context:
        return self.context


class OutgoingHTTPTests(TestCase):
    """outgoing_http against a twisted.web server on 127.0.0.1."""

    def _serve(self, tls: _ServerTLS | None = None) -> int:
        site = Site(_Peer())
        if tls is None:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def _client(self, **kwargs):
        http = outgoing_http(reactor, 5, **kwargs)
        if http.pool is not None:
            self.addCleanup(http.pool.closeCachedConnections)
        return http

    async def _peer_ports(self, http, url: str) -> list[bytes]:
        ports = []
        for _ in range(2):
            response = await http.client.get(url)
            self.assertEqual(response.code, 200)
            ports.append(await response.content())
        return ports

    async def test_connections_are_kept_by_default(self):
        """By default two requests in a row go over one connection, kept in the client's own pool."""
        port = self._serve()
        http = self._client()
        self.assertIsNotNone(http.pool)
        first, second = await self._peer_ports(http, f"http://127.0.0.1:{port}/")
        self.assertEqual(first, second, "the second request reused the first connection")

    async def _concurrent_ports(self, http, url: str, count: int) -> set[bytes]:
        async def one() -> bytes:
            response = await http.client.get(url)
            return await response.content()

        return set(await gatherResults([Deferred.fromCoroutine(one()) for _ in range(count)]))

    async def test_the_pool_keeps_max_per_host_connections(self):
        """Five requests at once, then five more: with max_per_host=5 the second five reuse all five connections."""
        port = self._serve()
        url = f"http://127.0.0.1:{port}/"
        http = self._client(max_per_host=5)
        first = await self._concurrent_ports(http, url, 5)
        self.assertEqual(len(first), 5, "five connections at once")
        self.assertEqual(await self._concurrent_ports(http, url, 5), first)

    async def test_the_default_pool_closes_connections_beyond_two(self):
        """Twisted's default keeps two idle connections: of five at once, three are closed and made anew."""
        port = self._serve()
        url = f"http://127.0.0.1:{port}/"
        http = self._client()
        first = await self._concurrent_ports(http, url, 5)
        second = await self._concurrent_ports(http, url, 5)
        self.assertEqual(len(first & second), 2)

    def test_max_per_host_must_be_positive(self):
        """A pool that keeps no connection is refused with a clear error."""
        with self.assertRaisesRegex(ValueError, "max_per_host must be at least 1"):
            outgoing_http(reactor, 5, max_per_host=0)

    async def _requester_body(self, response) -> bytes:
        import treq

        return await treq.content(response)

    async def test_agent_requester_sends_body_and_headers(self):
        """AgentRequester POSTs the body with its length and sends the given headers."""
        site = Site(_Echo())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        http = self._client()
        requester = AgentRequester(http.agent)
        response = await requester.request("POST", base + "/x", data=b'{"a": 1}',
                                           headers=Headers({"Content-Type": ["application/jose+json"]}))
        self.assertEqual((response.code, await self._requester_body(response)), (200, b'POST 8 {"a": 1}'))
        response = await requester.request("GET", base + "/new", headers=Headers({"X-Test": ["yes"]}))
        self.assertEqual(await self._requester_body(response), b"/new yes")

    async def test_agent_requester_follows_redirects_only_when_allowed(self):
        """A GET with allow_redirects follows a redirect; with allow_redirects=False it gets the 302 itself."""
        site = Site(_Echo())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        requester = AgentRequester(self._client().agent)
        followed = await requester.request("GET", base + "/old")
        self.assertEqual((followed.code, await self._requester_body(followed)), (200, b"/new -"))
        kept = await requester.request("POST", base + "/old", data=b"", allow_redirects=False)
        self.assertEqual(kept.code, 302)
        await self._requester_body(kept)

    async def test_not_persistent_opens_a_connection_per_request(self):
        """persistent=False: no pool, each request on a new connection (nothing left open to close)."""
        port = self._serve()
        http = self._client(persistent=False)
        self.assertIsNone(http.pool)
        first, second = await self._peer_ports(http, f"http://127.0.0.1:{port}/")
        self.assertNotEqual(first, second)

    async def test_https_verified_against_the_given_root(self):
        """HTTPS to a server whose chain ends at trust_root works; with the system roots it is refused."""
        ca = TestCA.create("httpclient test CA")
        key_pem, chain_pem = ca.issue("localhost")
        url = f"https://localhost:{self._serve(_ServerTLS(key_pem, chain_pem))}/"

        trusted = self._client(trust_root=trustRootFromCertificates([Certificate.loadPEM(ca.root_pem)]))
        response = await trusted.client.get(url)
        self.assertEqual(response.code, 200)
        await response.content()

        untrusted = self._client(persistent=False)
        with self.assertRaises(ResponseNeverReceived):
            await untrusted.client.get(url)
