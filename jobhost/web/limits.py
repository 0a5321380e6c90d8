"""
Limits that keep one client from starving the others: connection caps and request-head deadlines.

- :class:`ConnectionBudget` counts open connections on the public listeners
  (HTTP and HTTPS together), overall and per peer address, and refuses a new
  one over either cap: the listener closes it before any protocol object is
  made.  The overall cap stays below the process's file-descriptor limit, so
  the admin listener (not counted) can always accept, and a flood never turns
  into ``EMFILE`` for every listener.
- :class:`GuardedHTTPChannel` is twisted.web's ``HTTPChannel`` with a *total*
  deadline for each request head (request line and headers): Twisted's idle
  timeout restarts on every byte, so a client sending one header byte every
  few seconds (slowloris) would hold the connection forever.  It also answers
  an over-long request line with 414 and over-long or too many header lines
  with 431 (RFC 6585) instead of closing without a word.
- :class:`LimitReporter` counts every limit hit (for ``/metrics``) and logs at
  most one line per limit per minute, never one per connection.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

#: Every limit a connection can hit, as counted in ``jobhost_connection_limit_total``.
LIMITS = (
    "max_connections",  # the public listeners' overall cap
    "max_per_peer",  # one peer address's cap
    "max_held",  # HTTPS connections still sending their ClientHello: the oldest was dropped
    "hello_deadline",  # no complete ClientHello in time
    "head_deadline",  # no complete request head in time
    "uri_too_long",  # 414
    "headers_too_large",  # 431
)


@attrs.define(eq=False)
class LimitReporter:
    """Counts limit hits; logs the first hit of each limit, then at most one line a minute.

    Attributes:
        clock: For the once-a-minute rule.
        interval: Seconds between two log lines about the same limit.
        counts: Hits per limit since start (``/metrics``).
    """

    clock: IReactorTime
    interval: float = 60.0
    counts: Counter = attrs.field(factory=Counter, init=False)
    _logged_at: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _unlogged: Counter = attrs.field(factory=Counter, init=False, repr=False)

    log = Logger()

    def hit(self, limit: str, peer: Any = None) -> None:
        """Count one hit of ``limit`` (one of :data:`LIMITS`), caused by ``peer``."""
        self.counts[limit] += 1
        self._unlogged[limit] += 1
        now = self.clock.seconds()
        last = self._logged_at.get(limit)
        if last is not None and now - last < self.interval:
            return
        count, self._unlogged[limit] = self._unlogged[limit], 0
        self._logged_at[limit] = now
        self.log.warn(
            "Connection limit {limit} hit {count} time(s) since the last report (latest: {peer})",
            limit=limit,
            count=count,
            peer=_host(peer) or "?",
        )


def _host(address: IAddress | None) -> str | None:
    return getattr(address, "host", None)


@attrs.define(eq=False)
class ConnectionBudget:
    """Open connections on the public listeners, overall and per peer address (module docstring).

    Attributes:
        max_connections: At most this many open at once.
        max_per_peer: At most this many from one address.
        reporter: Counts and logs refusals.
        open: Connections open now.
    """

    max_connections: int = attrs.field(validator=attrs.validators.ge(1))
    max_per_peer: int = attrs.field(validator=attrs.validators.ge(1))
    reporter: LimitReporter
    open: int = attrs.field(default=0, init=False)
    _per_peer: Counter = attrs.field(factory=Counter, init=False, repr=False)

    def admit(self, address: IAddress) -> bool:
        """Count a new connection from ``address``, or refuse it (False) over a cap."""
        if self.open >= self.max_connections:
            self.reporter.hit("max_connections", address)
            return False
        host = _host(address)
        if host is not None and self._per_peer[host] >= self.max_per_peer:
            self.reporter.hit("max_per_peer", address)
            return False
        self.open += 1
        if host is not None:
            self._per_peer[host] += 1
        return True

    def release(self, address: IAddress) -> None:
        """A connection :meth:`admit` counted has closed."""
        self.open -= 1
        host = _host(address)
        if host is not None:
            left = self._per_peer[host] - 1
            if left > 0:
                self._per_peer[host] = left
            else:
                del self._per_peer[host]

    def peers(self) -> int:
        """How many distinct addresses have a connection open."""
        return len(self._per_peer)


class GuardedHTTPChannel(HTTPChannel):
    """``HTTPChannel`` with a total request-head deadline and 414/431 answers (module docstring).

    Class attributes set by :func:`guarded_channel_factory`'s subclass:

    Attributes:
        head_timeout: Seconds from the connection (or the end of the previous response)
            to the end of the next request's head.
        reporter: Counts and logs the limits hit (None: not counted).
        budget: Released when the connection closes (None: not counted here).
    """

    head_timeout: float = 10.0
    reporter: LimitReporter | None = None
    budget: ConnectionBudget | None = None
    _head_call: Any = None
    _peer: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.budget is not None:
            self._peer = self.transport.getPeer()
        self._start_head_deadline()

    def _start_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_call = self.callLater(self.head_timeout, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        call, self._head_call = self._head_call, None
        if call is not None and call.active():
            call.cancel()

    def _head_deadline_passed(self) -> None:
        self._head_call = None
        if self.reporter is not None:
            self.reporter.hit("head_deadline", self.transport.getPeer())
        self.transport.abortConnection()

    def allHeadersReceived(self) -> None:
        self._cancel_head_deadline()
        super().allHeadersReceived()

    def requestDone(self, request) -> None:
        if self.persistent and len(self.requests) == 1:
            # A kept-alive connection now waits for the next head.  Started before Twisted
            # parses what the client already sent, which may complete that head at once.
            self._start_head_deadline()
        super().requestDone(request)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line longer than ``MAX_LENGTH``: 414 if it is the request line, else 431."""
        if getattr(self, "_HTTPChannel__first_line", 1):  # HTTPChannel's "next line is a request line"
            self._refuse(b"414 URI Too Long", "uri_too_long")
        else:
            self._refuse(b"431 Request Header Fields Too Large", "headers_too_large")

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's answer to every malformed head; a head over totalHeadersSize, or with
        # more than maxHeaders lines, is too large rather than malformed.
        if self._receivedHeaderSize > self.totalHeadersSize or self._receivedHeaderCount > self.maxHeaders:
            self._refuse(b"431 Request Header Fields Too Large", "headers_too_large")
        else:
            super()._respondToBadRequestAndDisconnect()

    def _refuse(self, status: bytes, limit: str) -> None:
        self._cancel_head_deadline()
        if self.reporter is not None:
            self.reporter.hit(limit, self.transport.getPeer())
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.loseConnection()

    def connectionLost(self, reason) -> None:
        self._cancel_head_deadline()
        if self.budget is not None and self._peer is not None:
            self.budget.release(self._peer)
            self._peer = None
        super().connectionLost(reason)


def guarded_channel_class(
    head_timeout: float, reporter: LimitReporter | None, budget: ConnectionBudget | None
) -> type[GuardedHTTPChannel]:
    """A :class:`GuardedHTTPChannel` subclass with these settings (one per site)."""
    return type(
        "GuardedHTTPChannel",
        (GuardedHTTPChannel,),
        {"head_timeout": head_timeout, "reporter": reporter, "budget": budget},
    )


def channel_protocol_factory(channel_class: type[GuardedHTTPChannel]):
    """What a ``Site``'s ``protocol`` attribute (set on the instance) should be to use ``channel_class``.

    Twisted wraps each channel in the proxy that switches to HTTP/2 when ALPN chose ``h2``.
    """

    def build() -> _GenericHTTPChannelProtocol:
        return _GenericHTTPChannelProtocol(channel_class())

    return build


__all__ = [
    "LIMITS",
    "ConnectionBudget",
    "GuardedHTTPChannel",
    "LimitReporter",
    "channel_protocol_factory",
    "guarded_channel_class",
]
