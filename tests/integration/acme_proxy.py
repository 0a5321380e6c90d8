"""
An HTTPS reverse proxy in front of Pebble that adds what Pebble 2.4 lacks.

Debian's Pebble has no ACME Renewal Information (RFC 9773), no certificate
profiles and no rate limits.  :class:`AcmeDirectoryProxy` sits in front of it
and:

- adds ``renewalInfo`` and ``meta.profiles`` (``classic``, ``tlsserver``,
  ``shortlived``) to the directory;
- answers ``GET renewalInfo/{certID}`` itself with a configurable window and
  ``Retry-After``, recording the certificate IDs asked for;
- records every ``newOrder`` payload (to check ``replaces`` and ``profile``)
  and can answer the next K of them with a ``rateLimited`` problem and
  ``Retry-After: N`` instead of forwarding them;
- plays other CAs' habits: :attr:`~AcmeDirectoryProxy.rewrite_json` rewrites
  Pebble's JSON answers (a challenge left ``pending`` with an ``error``, an
  ``invalid`` authorization without a problem), and
  :attr:`~AcmeDirectoryProxy.answer_post` answers chosen POSTs itself (a CA
  that refuses deactivation as ``malformed``);
- forwards everything else, bodies unchanged.

Why the JWS signatures stay valid: Pebble builds every URL it hands out from
the request's ``Host`` header and checks a JWS's ``url`` against
``https://{Host}{path}``.  The proxy serves HTTPS (with the harness CA, so
the same ``ca_bundle_path`` works) and forwards the client's ``Host``
unchanged, so Pebble itself names the proxy in the directory, ``Location``
and ``Link`` headers and order bodies, the client signs proxy URLs, and
Pebble accepts them.  Any Pebble base URL that still appears in a body or
header is rewritten to the proxy's as a safety net.

Usable from trial and pytest: ``proxy = AcmeDirectoryProxy.start(reactor,
pebble)``; ``yield proxy.stop()`` (or ``addCleanup(proxy.stop)``).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import attrs
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from acme_servers import PebbleServer

#: Profiles the proxy advertises (the names Let's Encrypt uses).
DEFAULT_PROFILES = {
    "classic": "The same profile you're accustomed to",
    "tlsserver": "Certificates for TLS server authentication only",
    "shortlived": "Six-day certificates",
}

_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
}


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _ProxyResource(Resource):
    isLeaf = True

    def __init__(self, proxy: AcmeDirectoryProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def render(self, request: Any) -> Any:
        d = self.proxy._handle(request)

        def failed(failure: Any) -> None:
            self.proxy.log.failure("Proxying {uri} failed", failure=failure, uri=request.uri)
            if not request.finished:
                request.setResponseCode(502)
                request.setHeader(b"Content-Type", b"text/plain")
                request.write(b"proxy error\n")
                request.finish()

        d.addErrback(failed)
        return NOT_DONE_YET


@attrs.define
class AcmeDirectoryProxy:
    """The proxy; build it with :meth:`start`.

    Attributes:
        pebble: The Pebble behind it.
        port: The listening port (``.getHost().port``).
        profiles: What ``meta.profiles`` advertises.
        ari_window: ``(start, end)`` served for every certificate ID.
        ari_retry_after: Seconds sent as ``Retry-After`` with renewal info.
        ari_explanation_url: Sent as ``explanationURL`` when set.
        new_orders: Every ``newOrder`` payload received, decoded, in order.
        renewal_info_requests: Every certificate ID asked about, in order.
        rewrite_json: ``(path, doc) -> doc`` applied to every JSON object Pebble answers
            with (before URLs are rewritten), or None.
        answer_post: ``(path, payload) -> (status, problem document) | None``: called
            for every POST with its decoded JWS payload (None for POST-as-GET); a
            tuple is answered as a problem instead of forwarding, None forwards.
    """

    log = Logger()

    pebble: PebbleServer
    http: Any = attrs.field(repr=False)
    port: Any = attrs.field(default=None, repr=False)
    profiles: dict[str, str] = attrs.field(factory=lambda: dict(DEFAULT_PROFILES))
    ari_window: tuple[datetime, datetime] = attrs.field(
        factory=lambda: (
            datetime.now(timezone.utc) + timedelta(days=10),
            datetime.now(timezone.utc) + timedelta(days=12),
        )
    )
    ari_retry_after: int = 3600
    ari_explanation_url: str | None = None
    new_orders: list[dict[str, Any]] = attrs.field(factory=list)
    renewal_info_requests: list[str] = attrs.field(factory=list)
    rewrite_json: Any = None
    answer_post: Any = None
    _new_order_path: bytes | None = attrs.field(default=None, repr=False)
    _rate_limited: int = attrs.field(default=0, repr=False)
    _rate_limit_retry_after: int = attrs.field(default=0, repr=False)

    @classmethod
    def start(cls, reactor: Any, pebble: PebbleServer, **options: Any) -> AcmeDirectoryProxy:
        """Listen with TLS on ``127.0.0.1:0`` and forward to ``pebble``.

        Args:
            reactor: Listens and connects.
            pebble: The running Pebble.
            options: Initial values of the configurable attributes.
        """
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pebble.tls.ca.root_pem)])
        # Not persistent: nothing stays open after a test, so trial's reactor stays clean.
        agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        proxy = cls(pebble=pebble, http=HTTPClient(agent), **options)
        proxy.port = reactor.listenSSL(0, Site(_ProxyResource(proxy)), pebble.tls.server_options(), interface="127.0.0.1")
        return proxy

    def stop(self) -> Deferred:
        """Stop listening; Deferred firing when the port is closed."""
        return self.port.stopListening()

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:{port}``."""
        return f"https://127.0.0.1:{self.port.getHost().port}"

    @property
    def directory_url(self) -> str:
        """The directory through the proxy."""
        return self.base_url + "/dir"

    @property
    def pebble_base_url(self) -> str:
        """Pebble's own base URL (rewritten to :attr:`base_url` wherever it appears)."""
        return f"https://127.0.0.1:{self.pebble.listen_port}"

    def inject_rate_limit(self, count: int, retry_after: int) -> None:
        """Answer the next ``count`` newOrder requests with ``rateLimited`` and ``Retry-After: retry_after``."""
        self._rate_limited = count
        self._rate_limit_retry_after = retry_after

    def _rewrite(self, data: bytes) -> bytes:
        return data.replace(self.pebble_base_url.encode(), self.base_url.encode())

    def _respond(self, request: Any, code: int, headers: dict[bytes, list[bytes]], body: bytes) -> None:
        request.setResponseCode(code)
        for name, values in headers.items():
            request.responseHeaders.setRawHeaders(name, values)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        if body:
            request.write(body)
        request.finish()

    def _renewal_info(self, request: Any, cert_id: str) -> None:
        self.renewal_info_requests.append(cert_id)
        start, end = self.ari_window
        doc: dict[str, Any] = {
            "suggestedWindow": {
                "start": start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": end.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        }
        if self.ari_explanation_url:
            doc["explanationURL"] = self.ari_explanation_url
        headers = {b"Content-Type": [b"application/json"], b"Retry-After": [b"%d" % self.ari_retry_after]}
        self._respond(request, 200, headers, json.dumps(doc).encode())

    def _rate_limit(self, request: Any) -> None:
        self._rate_limited -= 1
        doc = {
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders (injected by the test proxy)",
            "status": 429,
        }
        headers = {
            b"Content-Type": [b"application/problem+json"],
            b"Retry-After": [b"%d" % self._rate_limit_retry_after],
            b"Link": [f'<{self.base_url}/docs/rate-limits>;rel="help"'.encode()],
        }
        self._respond(request, 429, headers, json.dumps(doc).encode())

    @inlineCallbacks
    def _handle(self, request: Any) -> Any:
        body = request.content.read()
        path = request.uri
        if request.method == b"GET" and path.startswith(b"/renewalInfo/"):
            self._renewal_info(request, path[len(b"/renewalInfo/"):].decode("ascii"))
            return
        if request.method == b"POST" and self.answer_post is not None:
            encoded = json.loads(body).get("payload", "")
            answer = self.answer_post(path.decode("ascii"), json.loads(_b64decode(encoded)) if encoded else None)
            if answer is not None:
                status, problem = answer
                self._respond(request, status, {b"Content-Type": [b"application/problem+json"]}, json.dumps(problem).encode())
                return
        if request.method == b"POST" and self._new_order_path is not None and path == self._new_order_path:
            jws = json.loads(body)
            self.new_orders.append(json.loads(_b64decode(jws["payload"])))
            if self._rate_limited > 0:
                self._rate_limit(request)
                return
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                headers.setRawHeaders(name, values)
        response = yield self.http.request(
            request.method.decode("ascii"),
            self.pebble_base_url + path.decode("ascii"),
            data=body or None,
            headers=headers,
            allow_redirects=False,
        )
        content = yield response.content()
        if request.method == b"GET" and path == b"/dir" and response.code == 200:
            directory = json.loads(content)
            self._new_order_path = urlsplit(directory["newOrder"]).path.encode("ascii")
            directory["renewalInfo"] = self.base_url + "/renewalInfo/"
            directory.setdefault("meta", {})["profiles"] = dict(self.profiles)
            content = json.dumps(directory, indent=2).encode()
        elif self.rewrite_json is not None and content[:1] == b"{":
            doc = json.loads(content)
            content = json.dumps(self.rewrite_json(path.decode("ascii"), doc)).encode()
        out: dict[bytes, list[bytes]] = {}
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                out[name] = [self._rewrite(v) for v in values]
        self._respond(request, response.code, out, self._rewrite(content))


__all__ = ["DEFAULT_PROFILES", "AcmeDirectoryProxy"]
