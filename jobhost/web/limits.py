"""
Limits that keep one client from starving the others: connection caps and request deadlines.

- :class:`ConnectionBudget` counts open connections on the public listeners
  (HTTP and HTTPS together), overall and per peer address, and refuses a new
  one over either cap: the listener closes it before any protocol object is
  made.  The overall cap stays below the process's file-descriptor limit, so
  the admin listener (not counted) can always accept, and a flood never turns
  into ``EMFILE`` for every listener.
- :class:`GuardedHTTPChannel` is twisted.web's ``HTTPChannel`` with a *total*
  deadline for each request (request line, headers and body): Twisted's idle
  timeout restarts on every byte, so a client sending one header byte every
  few seconds (slowloris), or a body byte, would hold the connection forever.  It also answers
  an over-long request line with 414 and over-long or too many header lines
  with 431 (RFC 6585) instead of closing without a word.
- :class:`LimitReporter` counts every limit hit (for ``/metrics``) and logs at
  most one line per limit per minute, never one per connection.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Hashable

import attrs
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

#: Every limit a connection can hit, as counted in ``jobhost_connection_limit_total``.
LIMITS = (
    "max_connections",  # the public listeners' overall cap
    "max_per_peer",  # one peer address's cap
    "max_held",  # HTTPS connections still sending their ClientHello: the oldest was dropped
    "hello_deadline",  # no complete ClientHello in time
    "request_deadline",  # no complete request (head and body) in time
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


@attrs.define(eq=False)
class Deadlines:
    """Many connections, one timeout each, the same length for all: one sweep instead of a timer each.

    A ``callLater`` per connection (made, then cancelled on almost every
    connection) costs more than the work it guards; here :meth:`add` is a dict
    insert.  Entries expire in the order they were added (equal timeouts, a
    monotonic clock), so a sweep every ``granularity`` seconds looks only at the
    front.  An entry is expired at most ``granularity`` seconds late.  The
    sweep stops itself when it finds no entries left, so an idle process wakes
    at most once more; :meth:`discard` never stops it, because under load the
    set empties and refills with nearly every connection, and starting and
    stopping a ``LoopingCall`` each time (a timer, a Deferred) cost ~6 us per
    deadline, more than the sweep does every ``granularity`` seconds.

    Attributes:
        clock: Time and the sweep's timer.
        timeout: Seconds from :meth:`add` to ``expire(key)``.
        expire: Called with each key whose deadline passed (after it is removed).
        granularity: Seconds between sweeps.
    """

    clock: IReactorTime
    timeout: float
    expire: Callable[[Any], None]
    granularity: float = 0.5
    #: Set by :func:`drain`: entries (idle keep-alive connections) are expired at once.
    draining: bool = attrs.field(default=False, init=False)
    _due: dict[Hashable, float] = attrs.field(factory=dict, init=False, repr=False)
    _sweeper: LoopingCall | None = attrs.field(default=None, init=False, repr=False)

    def add(self, key: Hashable) -> None:
        """Start (or restart) ``key``'s deadline."""
        self._due.pop(key, None)
        self._due[key] = self.clock.seconds() + self.timeout
        if self._sweeper is None:
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(self.granularity, now=False)

    def discard(self, key: Hashable) -> None:
        """``key`` is done in time (or gone): forget its deadline (the next sweep that
        finds none left stops)."""
        self._due.pop(key, None)

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._due

    def __iter__(self):
        """The keys, oldest first."""
        return iter(list(self._due))

    def oldest(self) -> Any:
        """The key added longest ago (the first to expire)."""
        return next(iter(self._due))

    def stop(self) -> None:
        """Stop sweeping (the listener stopped); the entries stay."""
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    def _sweep(self) -> None:
        now = self.clock.seconds()
        due = self._due
        while due:
            key = next(iter(due))
            if due[key] > now:
                break
            del due[key]
            self.expire(key)
        if not due:
            self.stop()


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
    """``HTTPChannel`` with a total per-request deadline and 414/431 answers (module docstring).

    Class attributes, set by :func:`guarded_channel_class`'s subclass:

    Attributes:
        request_deadlines: The site's :class:`Deadlines` (its ``timeout``: seconds from the
            connection, or from the first byte after a kept-alive response, until the
            request has arrived whole: head and body).
        idle_deadlines: The site's :class:`Deadlines` for kept-alive connections waiting
            for the first byte of their next request (its ``timeout``: the keep-alive time).
        reporter: Counts and logs the limits hit (None: not counted).
        budget: Released when the connection closes (None: not counted here).
    """

    request_deadlines: Deadlines
    idle_deadlines: Deadlines
    reporter: LimitReporter | None = None
    budget: ConnectionBudget | None = None
    _peer: Any = None
    _idle = False

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.budget is not None:
            self._peer = self.transport.getPeer()
        self.request_deadlines.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self._idle:
            # the next request starts: from now on it has the request deadline
            self._idle = False
            self.idle_deadlines.discard(self)
            self.request_deadlines.add(self)
        super().dataReceived(data)

    def _idle_deadline_passed(self) -> None:
        self.transport.loseConnection()  # an idle keep-alive connection: a normal close

    def _request_deadline_passed(self) -> None:
        if self.reporter is not None:
            self.reporter.hit("request_deadline", self.transport.getPeer())
        self.transport.abortConnection()

    def allContentReceived(self) -> None:
        self.request_deadlines.discard(self)  # the request is whole: now it is ours to answer
        super().allContentReceived()

    def requestDone(self, request) -> None:
        if self.idle_deadlines.draining:
            self.persistent = False  # the process is stopping: close once this response is out
        if self.persistent and len(self.requests) == 1:
            # A kept-alive connection now waits for the next request.  Set before Twisted
            # parses what the client already sent (pipelined), which may start it at once:
            # buffered bytes go through dataReceived too.
            self._idle = True
            self.idle_deadlines.add(self)
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
        self.request_deadlines.discard(self)
        if self.reporter is not None:
            self.reporter.hit(limit, self.transport.getPeer())
        self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.loseConnection()

    def connectionLost(self, reason) -> None:
        self.request_deadlines.discard(self)
        self.idle_deadlines.discard(self)
        if self.budget is not None and self._peer is not None:
            self.budget.release(self._peer)
            self._peer = None
        super().connectionLost(reason)


def drain(channel_class: type[GuardedHTTPChannel]) -> int:
    """The process is stopping: close ``channel_class``'s idle kept-alive connections now,
    and every other one after the response it is sending (no new request starts on it).

    Returns how many idle connections were closed.
    """
    idle = channel_class.idle_deadlines
    idle.draining = True
    closed = 0
    for channel in idle:
        idle.discard(channel)
        channel.transport.loseConnection()
        closed += 1
    return closed


def guarded_channel_class(
    clock: IReactorTime,
    request_timeout: float,
    reporter: LimitReporter | None = None,
    budget: ConnectionBudget | None = None,
    keepalive_timeout: float = 60.0,
) -> type[GuardedHTTPChannel]:
    """A :class:`GuardedHTTPChannel` subclass with these settings and its own deadline sweeps."""
    return type(
        "GuardedHTTPChannel",
        (GuardedHTTPChannel,),
        {
            "request_deadlines": Deadlines(clock, request_timeout, GuardedHTTPChannel._request_deadline_passed),
            "idle_deadlines": Deadlines(clock, keepalive_timeout, GuardedHTTPChannel._idle_deadline_passed),
            "reporter": reporter,
            "budget": budget,
        },
    )


class _GuardedGenericProtocol(_GenericHTTPChannelProtocol):
    """Twisted's HTTP/1.1-or-HTTP/2 switch, aware of the guarded channel's deadlines.

    When ALPN chose ``h2``, Twisted replaces the HTTP/1.1 channel by an
    ``H2Connection`` without telling the old one: its request deadline must go
    (it would abort the HTTP/2 connection), and the HTTP/2 connection gets the
    keep-alive time as its idle timeout (twisted.web's own, reset by each frame).
    """

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            channel = self._channel
            if getattr(channel.transport, "negotiatedProtocol", None) == b"h2":
                channel.request_deadlines.discard(channel)
                channel.idle_deadlines.discard(channel)
                self._timeOut = channel.idle_deadlines.timeout
        super().dataReceived(data)


def channel_protocol_factory(channel_class: type[GuardedHTTPChannel]):
    """What a ``Site``'s ``protocol`` attribute (set on the instance) should be to use ``channel_class``.

    Twisted wraps each channel in the proxy that switches to HTTP/2 when ALPN chose ``h2``.
    """

    def build() -> _GenericHTTPChannelProtocol:
        return _GuardedGenericProtocol(channel_class())

    return build


__all__ = [
    "LIMITS",
    "ConnectionBudget",
    "Deadlines",
    "GuardedHTTPChannel",
    "LimitReporter",
    "channel_protocol_factory",
    "drain",
    "guarded_channel_class",
]
