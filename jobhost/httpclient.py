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

import attrs
from treq.client import HTTPClient
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool


@attrs.frozen
class OutgoingHTTP:
    """A treq client and the connection pool behind it (None when connections are not kept).

    Attributes:
        client: The ``treq.HTTPClient``.
        pool: Close it (``closeCachedConnections``) when the owner stops; or None.
    """

    client: HTTPClient
    pool: HTTPConnectionPool | None


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
    return OutgoingHTTP(client=HTTPClient(agent), pool=pool)


__all__ = ["OutgoingHTTP", "outgoing_http"]
