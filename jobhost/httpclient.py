"""
The one way jobhost makes an outgoing HTTP client: treq over a Twisted ``Agent``.

The ACME client, the webhook notifier and the self-check each need one; they
differ only in whether connections are kept (a pool) and which roots HTTPS is
verified against.  Every client has a TCP connect timeout; HTTPS is verified
(``BrowserLikePolicyForHTTPS``: hostname and chain) against the system's roots
or the given ones.  Per-request timeouts stay with each caller, which knows
what a request may take.
"""

from __future__ import annotations

from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, succeed
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, RedirectAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


@attrs.frozen
class OutgoingHTTP:
    """A treq client and the connection pool behind it (None when connections are not kept).

    Attributes:
        client: The ``treq.HTTPClient``.
        pool: Close it (``closeCachedConnections``) when the owner stops; or None.
        agent: The ``Agent`` under ``client`` (for :class:`AgentRequester`).
    """

    client: HTTPClient
    pool: HTTPConnectionPool | None
    agent: Agent | None = None


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written in one go (no cooperator task, no timer)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@attrs.frozen
class AgentRequester:
    """treq's ``request(method, url, data=, headers=, allow_redirects=)`` straight on an ``Agent``.

    For a client that sends many small requests of its own making (the ACME
    client: ten or so per certificate): treq parses every URL with hyperlink
    (IDNA checks included), wraps the agent in cookie, content-decoding and
    redirect agents per request and feeds the body through a cooperator task;
    on loopback that is about 40% more CPU per request than the ``Agent``
    alone.  Responses are the ``Agent``'s (``code``, ``headers``,
    ``deliverBody``), which is all the ACME transport reads.

    Attributes:
        agent: The ``Agent`` (with its pool) requests go through.
    """

    agent: Agent

    def request(self, method: str, url: str, data: bytes | None = None, headers: Headers | None = None,
                allow_redirects: bool = True) -> Deferred:
        """Send one request; Deferred firing with the ``IResponse`` (body not read).

        Args:
            method: ``"GET"``, ``"HEAD"``, ``"POST"``, ...
            url: An absolute ``http`` or ``https`` URL (ASCII).
            data: The request body, or None for none.
            headers: The request headers.
            allow_redirects: Follow 301/302/303/307/308 (``RedirectAgent``).
        """
        agent = RedirectAgent(self.agent) if allow_redirects else self.agent
        body = _BytesProducer(data) if data is not None else None
        return agent.request(method.encode("ascii"), url.encode("ascii"), headers, body)


def outgoing_http(
    reactor, connect_timeout: float, persistent: bool = True, trust_root=None, max_per_host: int = 2
) -> OutgoingHTTP:
    """Build an HTTP client.

    Args:
        reactor: TCP, TLS and time.
        connect_timeout: Seconds a TCP connect may take.
        persistent: Keep connections open between requests (a pool of its own).
        trust_root: An ``IOpenSSLTrustRoot`` HTTPS servers must chain to; None for
            the system's trusted roots.
        max_per_host: Idle connections kept per server (Twisted's default is 2).  A
            client with more requests in flight than that closes the surplus as they
            finish and opens new ones for the next requests: for HTTPS a full TLS
            handshake (and a fresh ``SSL.Context`` with the trust roots) each time.
    """
    if max_per_host < 1:
        raise ValueError(f"max_per_host must be at least 1, not {max_per_host!r}")
    pool = None
    if persistent:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = max_per_host
    agent = Agent(
        reactor,
        contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust_root),
        pool=pool,
        connectTimeout=connect_timeout,
    )
    return OutgoingHTTP(client=HTTPClient(agent), pool=pool, agent=agent)


__all__ = ["AgentRequester", "OutgoingHTTP", "outgoing_http"]
