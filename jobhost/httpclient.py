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


def outgoing_http(reactor, connect_timeout: float, persistent: bool = True, trust_root=None) -> OutgoingHTTP:
    """Build an HTTP client.

    Args:
        reactor: TCP, TLS and time.
        connect_timeout: Seconds a TCP connect may take.
        persistent: Keep connections open between requests (a pool of its own).
        trust_root: An ``IOpenSSLTrustRoot`` HTTPS servers must chain to; None for
            the system's trusted roots.
    """
    pool = HTTPConnectionPool(reactor, persistent=True) if persistent else None
    agent = Agent(
        reactor,
        contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust_root),
        pool=pool,
        connectTimeout=connect_timeout,
    )
    return OutgoingHTTP(client=HTTPClient(agent), pool=pool)


__all__ = ["OutgoingHTTP", "outgoing_http"]
