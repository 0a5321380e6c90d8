"""
The self-checks: answer our own challenge the way the CA will ask, before telling the CA.

Let's Encrypt allows only 5 failed validations per hostname per hour, so a
hostname whose challenge we cannot serve must fail here, with a reason, and
spend nothing at the CA.  The check resolves the hostname through the
configured resolvers (``twisted.names``, never the blocking system call) and
GETs ``http://{address}:{port}/.well-known/acme-challenge/{token}`` with the
hostname as ``Host``.  The TLS-ALPN-01 self-check (:class:`TlsAlpnSelfCheck`)
resolves the same way and makes the CA's handshake to ``{address}:{port}``
(443): SNI the hostname, ALPN ``acme-tls/1`` alone, and the certificate must
name only the hostname and carry the ``acmeIdentifier`` of our key
authorization (RFC 8737 section 3).
"""

from __future__ import annotations

import secrets
import socket
from typing import Any

import attrs
from hyperlink import EncodedURL
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer
from twisted.logger import Logger

from jobhost.certs import ACME_TLS_1, tls_alpn01_mismatch
from jobhost.errors import SelfCheckFailed
from jobhost.preflight import resolver_servers
from jobhost.store.records import Challenge
from jobhost.timeutil import now as clock_now

log = Logger()

CHALLENGE_PATH = "/.well-known/acme-challenge/"


class _AddressURL(EncodedURL):
    """A URL to an IP address, passed to treq as it is.

    treq turns every URL into a URI with hyperlink's ``to_uri()``, which IDNA-encodes the host
    and so fails for an IPv6 address (``InvalidCodepoint``): an IPv6-only hostname could never
    pass.  The host here is an address and the path is ASCII already, so there is nothing to encode.
    """

    def to_uri(self) -> EncodedURL:
        return self


@attrs.define
class HttpSelfCheck:
    """Checks that ``http://{hostname}{CHALLENGE_PATH}{token}`` answers ``key_authorization``.

    Attributes:
        resolver: A twisted.names IResolver (``getHostByName``).
        http: A treq HTTPClient.
        clock: For timeouts.
        port: The port the CA will connect to (80 in production; tests use the HTTP listener's).
        timeout: Seconds for the lookup and the request together.
    """

    resolver: Any
    http: Any
    clock: IReactorTime
    port: int = 80
    timeout: float = 5.0

    @classmethod
    def create(
        cls, reactor, resolvers: tuple[str, ...] = (), port: int = 80, timeout: float = 5.0, resolver=None
    ) -> HttpSelfCheck:
        """Build a self-check resolving through ``resolver``, else through ``resolvers``.

        Args:
            resolvers: ``[preflight] resolvers`` entries ("IP:port", "[IPv6]:port" or an
                address; see :func:`jobhost.hostnames.parse_resolver`); empty means the
                servers in /etc/resolv.conf.
            resolver: An existing twisted.names resolver to share (the preflight's).

        Raises:
            ConfigError: at ``[preflight] resolvers`` for an entry that is not an address.
        """
        from twisted.names import client

        from jobhost.httpclient import outgoing_http

        if resolver is None:
            servers = resolver_servers(resolvers)
            # Like the CA, ask DNS (not /etc/hosts): the configured servers, else resolv.conf's.
            resolver = client.Resolver(
                resolv=None if servers else "/etc/resolv.conf", servers=servers or None, reactor=reactor
            )
        # A fresh connection per probe, as the CA's validation makes one.
        http = outgoing_http(reactor, timeout, persistent=False).client
        return cls(resolver=resolver, http=http, clock=reactor, port=port, timeout=timeout)

    def __call__(self, hostname: str, token: str, key_authorization: str) -> Deferred:
        """Return a Deferred that fires with None when the URL answers exactly ``key_authorization``.

        Fails with SelfCheckFailed naming the URL and what went wrong (no address,
        connection refused, timeout, HTTP status, wrong body).
        """
        return Deferred.fromCoroutine(self._check(hostname, token, key_authorization))

    async def _check(self, hostname: str, token: str, key_authorization: str) -> None:
        display_url = f"http://{hostname}{CHALLENGE_PATH}{token}"
        try:
            address = await self._address(hostname)
        except Exception as e:
            raise SelfCheckFailed(hostname, display_url, f"cannot resolve {hostname}: {e.__class__.__name__}") from None
        if address is None:
            raise SelfCheckFailed(hostname, display_url, f"{hostname} has no A or AAAA record")
        host = f"[{address}]" if ":" in address else address
        url = _AddressURL.from_text(f"http://{host}:{self.port}{CHALLENGE_PATH}{token}")
        try:
            response = await self.http.get(
                url, headers={"Host": hostname}, timeout=self.timeout, allow_redirects=False
            )
            body = await response.content()
        except Exception as e:
            raise SelfCheckFailed(
                hostname, display_url, f"no answer from {address}:{self.port} ({e.__class__.__name__}: {e})"
            ) from None
        if response.code != 200:
            raise SelfCheckFailed(hostname, display_url, f"{address} answered HTTP {response.code}, not 200")
        if body.strip() != key_authorization.encode("ascii"):
            raise SelfCheckFailed(
                hostname, display_url,
                f"{address} answered, but not with our key authorization: is {hostname} served by another server?",
            )

    async def _address(self, hostname: str) -> str | None:
        return await _first_address(self.resolver, hostname, self.timeout)

    def probe(self, store, hostname: str) -> Deferred:
        """Self-check with a throwaway challenge written to ``store`` (for diagnostics).

        Fails with SelfCheckFailed as :meth:`__call__` does; the probe token is always removed.
        """
        return Deferred.fromCoroutine(self._probe(store, hostname))

    async def _probe(self, store, hostname: str) -> None:
        token = secrets.token_urlsafe(24)
        key_authorization = f"{token}.jobhost-probe"
        await store.put_challenge(
            Challenge(token=token, key_authorization=key_authorization, hostname=hostname,
                      created_at=clock_now(self.clock))
        )
        try:
            await self._check(hostname, token, key_authorization)
        finally:
            await store.delete_challenge(token)


async def _first_address(resolver: Any, hostname: str, timeout: float) -> str | None:
    """The first IPv4 address of ``hostname`` (else IPv6), following CNAMEs as the answer gives them.

    Asks A and AAAA explicitly: ``getHostByName`` sends an ANY query, which many servers
    (and pebble-challtestsrv) refuse.
    """
    from twisted.names import dns

    for lookup, record_type in ((resolver.lookupAddress, dns.A), (resolver.lookupIPV6Address, dns.AAAA)):
        try:
            answers, _, _ = await lookup(hostname, timeout=(timeout,))
        except Exception:
            if record_type == dns.AAAA:
                raise
            continue
        for rr in answers:
            if rr.type == record_type:
                return rr.payload.dottedQuad() if record_type == dns.A else socket.inet_ntop(
                    socket.AF_INET6, rr.payload.address
                )
    return None


@implementer(IOpenSSLClientConnectionCreator)
@attrs.define
class _ChallengeHello:
    """The CA's side of a TLS-ALPN-01 handshake: SNI ``hostname``, ALPN ``acme-tls/1`` only, any certificate."""

    hostname: str

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)  # RFC 8737 section 4
        connection = SSL.Connection(context, None)
        connection.set_tlsext_host_name(self.hostname.encode("ascii"))
        connection.set_alpn_protos([ACME_TLS_1])
        connection.set_connect_state()
        return connection


@implementer(IHandshakeListener)
class _Handshake(Protocol):
    """Fires ``done`` with ``(leaf, negotiated protocol)`` once the handshake completes, then closes."""

    def __init__(self, done: Deferred) -> None:
        self.done = done
        self.closed: Deferred = Deferred()

    def handshakeCompleted(self) -> None:
        peer = self.transport.getPeerCertificate()
        result = (peer.to_cryptography() if peer is not None else None, self.transport.negotiatedProtocol)
        self.transport.loseConnection()
        if not self.done.called:
            self.done.callback(result)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(reason)
        self.closed.callback(None)


@attrs.define
class TlsAlpnSelfCheck:
    """Checks that ``{hostname}:{port}`` answers ``key_authorization``'s TLS-ALPN-01 challenge.

    Attributes:
        resolver: A twisted.names IResolver (A and AAAA lookups).
        reactor: Connects (TCP) and times out.
        port: The port the CA will connect to (443 in production; tests use the HTTPS listener's).
        timeout: Seconds for the lookup and the handshake together.
    """

    resolver: Any
    reactor: Any
    port: int = 443
    timeout: float = 5.0

    def __call__(self, hostname: str, token: str, key_authorization: str) -> Deferred:
        """Return a Deferred firing with None when the handshake shows our challenge certificate.

        Fails with SelfCheckFailed naming ``tls-alpn-01://hostname:port`` and what went
        wrong (no address, no connection, an alert, the wrong protocol or certificate).
        """
        return Deferred.fromCoroutine(self._check(hostname, key_authorization))

    async def _check(self, hostname: str, key_authorization: str) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS

        display_url = f"tls-alpn-01://{hostname}:{self.port}"
        try:
            address = await _first_address(self.resolver, hostname, self.timeout)
        except Exception as e:
            raise SelfCheckFailed(hostname, display_url, f"cannot resolve {hostname}: {e.__class__.__name__}") from None
        if address is None:
            raise SelfCheckFailed(hostname, display_url, f"{hostname} has no A or AAAA record")
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = wrapClientTLS(
            _ChallengeHello(hostname), endpoint_type(self.reactor, address, self.port, timeout=self.timeout)
        )
        done: Deferred = Deferred()
        try:
            protocol = await endpoint.connect(Factory.forProtocol(lambda: _Handshake(done)))
        except Exception as e:
            raise SelfCheckFailed(
                hostname, display_url, f"no connection to {address}:{self.port} ({e.__class__.__name__}: {e})"
            ) from None
        done.addTimeout(self.timeout, self.reactor)
        try:
            leaf, negotiated = await done
        except Exception as e:
            protocol.transport.abortConnection()
            raise SelfCheckFailed(
                hostname, display_url,
                f"no TLS-ALPN-01 handshake with {address}:{self.port} ({e.__class__.__name__}: {e})",
            ) from None
        finally:
            await protocol.closed  # a check leaves no connection behind
        if negotiated != ACME_TLS_1:
            raise SelfCheckFailed(hostname, display_url, f"{address}:{self.port} did not negotiate acme-tls/1")
        problem = tls_alpn01_mismatch(leaf, hostname, key_authorization) if leaf is not None else "no certificate"
        if problem is not None:
            raise SelfCheckFailed(
                hostname, display_url,
                f"{address}:{self.port} answered, but not with our challenge certificate ({problem}): "
                f"is {hostname} served by another server?",
            )


__all__ = ["CHALLENGE_PATH", "HttpSelfCheck", "TlsAlpnSelfCheck"]
