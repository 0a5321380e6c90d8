"""
The HTTP-01 self-check: fetch our own challenge URL the way the CA will, before telling the CA.

Let's Encrypt allows only 5 failed validations per hostname per hour, so a
hostname whose challenge we cannot serve must fail here, with a reason, and
spend nothing at the CA.  The check resolves the hostname through the
configured resolvers (``twisted.names``, never the blocking system call) and
GETs ``http://{address}:{port}/.well-known/acme-challenge/{token}`` with the
hostname as ``Host``.
"""

from __future__ import annotations

import secrets
import socket
from typing import Any

import attrs
from hyperlink import EncodedURL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

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
        """The first IPv4 address of ``hostname`` (else IPv6), following CNAMEs as the answer gives them.

        Asks A and AAAA explicitly: ``getHostByName`` sends an ANY query, which many servers
        (and pebble-challtestsrv) refuse.
        """
        from twisted.names import dns

        for lookup, record_type in ((self.resolver.lookupAddress, dns.A), (self.resolver.lookupIPV6Address, dns.AAAA)):
            try:
                answers, _, _ = await lookup(hostname, timeout=(self.timeout,))
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


__all__ = ["CHALLENGE_PATH", "HttpSelfCheck"]
