"""
Webhooks: tell an operator's endpoint when a hostname's certificate state changes.

Configured by ``[events] webhook_url`` (empty: no webhooks).  The issuing service and
the admin API call :meth:`WebhookNotifier.notify`, which returns at once: delivery
happens in the background and never blocks or fails issuance (the :class:`IEventSink`
contract; :class:`NullEventSink` is the sink that drops everything).

Events (the ``event`` field and the ``X-Jobhost-Event`` header):

======== =================================================================================
active   a hostname got its first certificate (or went back to active without a new one
         after failing, e.g. when the CA's renewal window moved later)
renewed  a hostname's certificate was replaced by a new one
failing  an attempt failed and the hostname is now failing: sent when it starts failing
         and again when the error's ``code`` changes, not for every repeated failure
paused   the CA rate-limited the hostname (``urn:ietf:params:acme:error:rateLimited``);
         same rule as ``failing``
removed  an operator deleted the hostname (sent once, not for a repeated DELETE)
======== =================================================================================

One delivery is one ``POST`` of this JSON (UTF-8, ASCII-only)::

    {"id": "<uuid4, the same in every retry>",
     "event": "active",
     "at": "2030-01-15T12:00:00Z",            # when the event happened (RFC 3339)
     "hostname": "jobs.acme-corp.com",
     "domain": {...},                         # the domain record, as the admin API shows it
     "certificate": {...} | null}             # the certificate's public facts, never the key

with the headers::

    Content-Type: application/json
    User-Agent: jobhost/<version>
    X-Jobhost-Event: active
    X-Jobhost-Delivery: <id>
    X-Jobhost-Timestamp: <unix seconds when this attempt was sent>
    X-Jobhost-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">

Verifying a delivery (what a receiver must do; :func:`verify_signature` does it):

1. Take the raw request body bytes (before any JSON parsing) and ``X-Jobhost-Timestamp``.
2. Compute ``HMAC-SHA256(key=secret, msg=timestamp + "." + body)`` in hex, where the secret
   is the text of ``[events] webhook_secret_file`` without its trailing newline, as bytes.
3. Compare ``"sha256=" + hex`` with ``X-Jobhost-Signature`` in constant time
   (``hmac.compare_digest``).
4. Refuse a timestamp more than five minutes from the receiver's clock: a captured
   request cannot be replayed later, because changing the timestamp breaks the signature.
   Every retry is signed afresh with its own timestamp.
5. Deduplicate by ``X-Jobhost-Delivery`` (= ``id``): a retry after a lost answer sends the
   same delivery again.  Deliveries may arrive out of order; order by ``at``.

Answer 2xx to accept.  5xx, 408, 429, a timeout or a failed connection are retried after
``backoff`` (5 s, 30 s, 2 min, 10 min, 1 h by default; a ``Retry-After`` header is honoured),
then given up with an error log.  Any other status is final (logged, not retried), and so
is a redirect: webhooks are never sent to another URL than the configured one.

At most ``concurrency`` deliveries are in flight; at most ``max_queue`` more wait to be
sent or retried, and when that is full the oldest waiting one is dropped with an error
log.  :meth:`WebhookNotifier.close` (at shutdown) abandons whatever is not yet delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from collections import deque
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from zope.interface import Interface, implementer

from jobhost.errors import describe_exception
from jobhost import __version__
from jobhost.retry import backoff_delay, retry_after_seconds
from jobhost.store.records import CertificateRecord, DomainRecord
from jobhost.timeutil import now as clock_now
from jobhost.timeutil import to_iso

log = Logger()

#: The events a notifier sends.
EVENTS = ("active", "renewed", "failing", "paused", "removed")

#: Delays before the 1st, 2nd, ... retry; after the last one the delivery is given up.
DEFAULT_BACKOFF = (5.0, 30.0, 120.0, 600.0, 3600.0)
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_QUEUE = 1000
DEFAULT_CONCURRENCY = 4

#: How far from the receiver's clock a signed timestamp may be (see :func:`verify_signature`).
SIGNATURE_TOLERANCE = 300.0

#: A ``Retry-After`` longer than this is cut to it.
MAX_RETRY_AFTER = 86400.0

#: Statuses below 500 that are worth retrying (Request Timeout, Too Many Requests).
RETRY_STATUSES = (408, 429)

#: How much of a receiver's answer is kept for the log.
_SNIPPET_BYTES = 200

USER_AGENT = f"jobhost/{__version__}"


class IEventSink(Interface):
    """Where the issuing service and the admin API report a hostname's certificate events.

    The real one is :class:`WebhookNotifier`; :class:`NullEventSink` drops everything.
    """

    def notify(event, record, certificate=None):
        """Report ``event`` about ``record``, and return None at once.

        Must not block and must not raise: callers call it in the middle of issuing or
        of an API request, and an event that cannot be delivered must never fail or
        delay either.  Delivery (if any) happens later, in the background; what cannot
        be delivered is logged and dropped, as is an unknown event.

        Args:
            event: One of :data:`EVENTS` (``active``, ``renewed``, ``failing``,
                ``paused``, ``removed``).
            record: The :class:`~jobhost.store.records.DomainRecord` as it is now.
            certificate: The :class:`~jobhost.store.records.CertificateRecord` the
                hostname holds, or None.
        """


@implementer(IEventSink)
class NullEventSink:
    """An :class:`IEventSink` that drops every event (no ``[events] webhook_url``)."""

    def notify(self, event: str, record: DomainRecord, certificate: CertificateRecord | None = None) -> None:
        """Drop the event."""
        return None


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Jobhost-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret, str(int(timestamp)).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str | bytes | None,
    body: bytes,
    signature: str | bytes | None,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent.

    Args:
        secret: The shared secret (the secret file's text, stripped, as bytes).
        timestamp: The ``X-Jobhost-Timestamp`` header.
        body: The raw request body.
        signature: The ``X-Jobhost-Signature`` header.
        now: The receiver's current Unix time.
        tolerance: Largest accepted distance between ``timestamp`` and ``now``, in seconds.

    Returns:
        True only for an authentic delivery signed within ``tolerance`` of ``now``.
    """
    if timestamp is None or signature is None:
        return False
    if isinstance(timestamp, bytes):
        timestamp = timestamp.decode("ascii", "replace")
    if isinstance(signature, str):
        signature = signature.encode("ascii", "replace")
    try:
        when = int(timestamp.strip())
    except ValueError:
        return False
    if abs(now - when) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, when, body).encode("ascii"), signature.strip())


def redact_url(url: str) -> str:
    """``url`` without user info and query, for logs (either may carry a credential)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def payload(
    delivery_id: str, event: str, at: str, record: DomainRecord, certificate: CertificateRecord | None
) -> bytes:
    """The JSON body of one delivery (see the module docstring); never holds a private key."""
    doc = {
        "id": delivery_id,
        "event": event,
        "at": at,
        "hostname": record.hostname,
        "domain": record.to_json(),
        "certificate": certificate.public_json() if certificate is not None else None,
    }
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


class _Collect(Protocol):
    """Reads a response body: keeps its first bytes for the log, discards the rest."""

    def __init__(self, finished: Deferred) -> None:
        self.finished: Deferred | None = finished
        self.kept = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self.kept) < _SNIPPET_BYTES:
            self.kept += data[: _SNIPPET_BYTES - len(self.kept)]

    def connectionLost(self, reason: Failure) -> None:
        finished, self.finished = self.finished, None
        if finished is None:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(self.kept)
        else:
            finished.errback(reason)


def _read_snippet(response: Any) -> Deferred:
    """Fire with the first bytes of ``response``'s body once it is read; cancelling aborts it."""
    protocol: _Collect

    def cancel(d: Deferred) -> None:
        protocol.finished = None
        if protocol.transport is not None:
            protocol.transport.stopProducing()

    finished: Deferred = Deferred(cancel)
    protocol = _Collect(finished)
    response.deliverBody(protocol)
    return finished


@attrs.define(eq=False)
class _Delivery:
    """One event on its way: its body is fixed, its signature is made per attempt."""

    id: str
    seq: int
    event: str
    hostname: str
    body: bytes
    #: Attempts made so far.
    attempts: int = 0
    #: The pending retry, while waiting for it.
    timer: Any = None


@attrs.frozen
class _Outcome:
    """How one attempt ended: ``delivered``, ``final`` (not retried) or ``retry``."""

    kind: str
    status: int | None = None
    reason: str = ""
    retry_after: float | None = None


@implementer(IEventSink)
@attrs.define(eq=False)
class WebhookNotifier:
    """Sends signed webhook deliveries to one URL in the background, with retries.

    Attributes:
        http: A treq ``HTTPClient`` (or ``StubTreq``); only ``request`` is used.
        clock: Time for timestamps, timeouts and retries.
        url: Where deliveries are POSTed (http or https).
        secret: The HMAC key.  Never logged.
        backoff: Delays before the 1st, 2nd, ... retry; after the last the delivery is given up.
        timeout: Seconds for one attempt (connect, send, read the answer).
        max_queue: How many deliveries may wait to be sent or retried (in-flight ones not
            counted); when full, the oldest waiting one is dropped.
        concurrency: Deliveries in flight at once.
        random: A ``() -> float in [0, 1)`` source stretching each backoff by up to 10%.
        user_agent: The ``User-Agent`` header.
        pool: The connection pool :meth:`close` closes, when this notifier owns one.
        delivered / failed / dropped / retries: Counters: deliveries accepted by the
            receiver, given up (final answer or retries spent), dropped (queue full or
            abandoned by :meth:`close`), and retries scheduled.
    """

    http: Any
    clock: IReactorTime
    url: str
    secret: bytes = attrs.field(repr=False)
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    timeout: float = DEFAULT_TIMEOUT
    max_queue: int = DEFAULT_MAX_QUEUE
    concurrency: int = DEFAULT_CONCURRENCY
    random: Callable[[], float] = random.random
    user_agent: str = USER_AGENT
    pool: Any = None

    delivered: int = attrs.field(default=0, init=False)
    failed: int = attrs.field(default=0, init=False)
    dropped: int = attrs.field(default=0, init=False)
    retries: int = attrs.field(default=0, init=False)
    _seq: int = attrs.field(default=0, init=False)
    _waiting: dict[str, _Delivery] = attrs.field(factory=dict, init=False)
    _ready: deque = attrs.field(factory=deque, init=False)
    _in_flight: dict[str, Deferred] = attrs.field(factory=dict, init=False)
    _idle_waiters: list[Deferred] = attrs.field(factory=list, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    @classmethod
    def create(
        cls, reactor: Any, url: str, secret: bytes, timeout: float = DEFAULT_TIMEOUT, **options: Any
    ) -> WebhookNotifier:
        """Build a notifier on a treq ``HTTPClient`` with its own persistent connection pool.

        HTTPS URLs are verified against the system's trusted roots.

        Args:
            reactor: The reactor (TCP, TLS, time).
            url: The webhook URL.
            secret: The HMAC key.
            timeout: Seconds per attempt (also the TCP connect timeout).
            options: Further attributes (``backoff``, ``max_queue``, ``concurrency``, ...).
        """
        from jobhost.httpclient import outgoing_http

        http = outgoing_http(reactor, timeout)
        return cls(http=http.client, clock=reactor, url=url, secret=secret, timeout=timeout, pool=http.pool,
                   **options)

    # -- what callers use --------------------------------------------------------------------

    def notify(self, event: str, record: DomainRecord, certificate: CertificateRecord | None = None) -> None:
        """Queue one delivery of ``event`` about ``record`` and return at once.

        Never raises: a wrong event or record, or a closed notifier, is logged.

        Args:
            event: One of :data:`EVENTS`.
            record: The domain record as it is now.
            certificate: The certificate it holds, when there is one (only its public
                facts are sent).
        """
        try:
            hostname = getattr(record, "hostname", None)
            if event not in EVENTS:
                raise ValueError(f"unknown webhook event {event!r}")
            if self._closed:
                self.dropped += 1
                log.warn("Webhook {event} for {hostname} not sent: the notifier is stopped",
                         event=event, hostname=hostname)
                return
            delivery_id = str(uuid.uuid4())
            body = payload(delivery_id, event, to_iso(clock_now(self.clock)), record, certificate)
            self._seq += 1
            delivery = _Delivery(id=delivery_id, seq=self._seq, event=event, hostname=record.hostname, body=body)
            self._wait(delivery)
            self._ready.append(delivery)
            self._pump()
        except Exception:
            log.failure("Could not queue webhook {event} for {hostname}", event=event,
                        hostname=getattr(record, "hostname", None))

    def when_idle(self) -> Deferred:
        """Fire with None once nothing waits to be delivered or is in flight."""
        if not self._waiting and not self._in_flight:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d

    def close(self) -> Deferred:
        """Stop: cancel pending retries and requests in flight, close pooled connections.

        What is not yet delivered is abandoned (counted as dropped, logged).  Later
        :meth:`notify` calls are logged and dropped.

        Returns:
            Deferred firing with None when every cached connection is closed.
        """
        self._closed = True
        abandoned = len(self._waiting) + len(self._in_flight)
        for delivery in self._waiting.values():
            if delivery.timer is not None and delivery.timer.active():
                delivery.timer.cancel()
        self._waiting.clear()
        self._ready.clear()
        for d in list(self._in_flight.values()):
            d.cancel()
        if abandoned:
            self.dropped += abandoned
            log.warn("Stopping: {count} webhook deliveries to {url} abandoned", count=abandoned,
                     url=redact_url(self.url))
        self._maybe_idle()
        if self.pool is None:
            return succeed(None)
        return self.pool.closeCachedConnections()

    # -- the queue ---------------------------------------------------------------------------

    def _wait(self, delivery: _Delivery) -> None:
        """Add ``delivery`` to the waiting ones, dropping the oldest while over ``max_queue``."""
        self._waiting[delivery.id] = delivery
        while len(self._waiting) > self.max_queue:
            oldest = min(self._waiting.values(), key=lambda d: d.seq)
            del self._waiting[oldest.id]
            if oldest.timer is not None and oldest.timer.active():
                oldest.timer.cancel()
            oldest.timer = None
            try:
                self._ready.remove(oldest)
            except ValueError:
                pass
            self.dropped += 1
            log.error(
                "Webhook queue is full ({max_queue} waiting); dropped {event} for {hostname} "
                "(delivery {delivery_id}, {attempts} attempts made)",
                max_queue=self.max_queue, event=oldest.event, hostname=oldest.hostname,
                delivery_id=oldest.id, attempts=oldest.attempts,
            )

    def _pump(self) -> None:
        """Start waiting deliveries that are due while there is room in flight."""
        while self._ready and len(self._in_flight) < self.concurrency and not self._closed:
            delivery = self._ready.popleft()
            if self._waiting.pop(delivery.id, None) is None:
                continue  # dropped meanwhile
            d = Deferred.fromCoroutine(self._attempt(delivery))
            self._in_flight[delivery.id] = d
            d.addBoth(self._settled, delivery)

    def _due(self, delivery: _Delivery) -> None:
        delivery.timer = None
        if delivery.id in self._waiting:
            self._ready.append(delivery)
            self._pump()

    def _maybe_idle(self) -> None:
        if not self._waiting and not self._in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, delivery: _Delivery) -> _Outcome:
        timestamp = int(self.clock.seconds())
        headers = Headers(
            {
                b"Content-Type": [b"application/json"],
                b"User-Agent": [self.user_agent.encode("ascii")],
                b"X-Jobhost-Event": [delivery.event.encode("ascii")],
                b"X-Jobhost-Delivery": [delivery.id.encode("ascii")],
                b"X-Jobhost-Timestamp": [str(timestamp).encode("ascii")],
                b"X-Jobhost-Signature": [sign(self.secret, timestamp, delivery.body).encode("ascii")],
            }
        )
        delivery.attempts += 1
        try:
            d = self.http.request("POST", self.url, data=delivery.body, headers=headers, allow_redirects=False)
        except Exception as e:  # a URL the HTTP client cannot use at all: retrying will not help
            return _Outcome("final", reason=describe_exception(e))
        d.addCallback(lambda response: _read_snippet(response).addCallback(lambda kept: (response, kept)))
        # Not addTimeout: the Agent turns a cancellation into ResponseNeverReceived.
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.timeout, time_out)
        try:
            response, kept = await d
        except Exception as e:
            if timed_out:
                return _Outcome("retry", reason=f"no answer within {self.timeout:g} s")
            if self._closed:
                raise CancelledError() from None
            return _Outcome("retry", reason=describe_exception(e))
        finally:
            if timer.active():
                timer.cancel()
        code = response.code
        if 200 <= code < 300:
            return _Outcome("delivered", code)
        reason = f"HTTP {code}: " + kept.decode("utf-8", "replace").strip()
        if code >= 500 or code in RETRY_STATUSES:
            retry_after = retry_after_seconds(response.headers.getRawHeaders(b"retry-after"), clock_now(self.clock))
            return _Outcome("retry", code, reason, retry_after)
        return _Outcome("final", code, reason)

    def _settled(self, outcome: _Outcome | Failure, delivery: _Delivery) -> None:
        self._in_flight.pop(delivery.id, None)
        url = redact_url(self.url)
        if isinstance(outcome, Failure):
            if not outcome.check(CancelledError):
                self.failed += 1
                log.failure("Webhook {event} for {hostname} to {url} failed unexpectedly", outcome,
                            event=delivery.event, hostname=delivery.hostname, url=url)
        elif outcome.kind == "delivered":
            self.delivered += 1
            log.info(
                "Webhook {event} for {hostname} delivered to {url} (HTTP {status}, attempt {attempts}, "
                "delivery {delivery_id})",
                event=delivery.event, hostname=delivery.hostname, url=url, status=outcome.status,
                attempts=delivery.attempts, delivery_id=delivery.id,
            )
        elif outcome.kind == "final":
            self.failed += 1
            log.error(
                "Webhook {event} for {hostname} refused by {url} ({reason}); not retried (delivery {delivery_id})",
                event=delivery.event, hostname=delivery.hostname, url=url, reason=outcome.reason,
                status=outcome.status, delivery_id=delivery.id,
            )
        elif delivery.attempts > len(self.backoff):
            self.failed += 1
            log.error(
                "Webhook {event} for {hostname} to {url} given up after {attempts} attempts: {reason} "
                "(delivery {delivery_id})",
                event=delivery.event, hostname=delivery.hostname, url=url, attempts=delivery.attempts,
                reason=outcome.reason, status=outcome.status, delivery_id=delivery.id,
            )
        elif not self._closed:
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, MAX_RETRY_AFTER)
            else:
                delay = backoff_delay(delivery.attempts, self.backoff, self.random())
            self.retries += 1
            log.warn(
                "Webhook {event} for {hostname} to {url} failed ({reason}); retry {retry} in {delay:.1f} s "
                "(delivery {delivery_id})",
                event=delivery.event, hostname=delivery.hostname, url=url, reason=outcome.reason,
                status=outcome.status, retry=delivery.attempts, delay=delay, delivery_id=delivery.id,
            )
            delivery.timer = self.clock.callLater(delay, self._due, delivery)
            self._wait(delivery)
        self._pump()
        self._maybe_idle()
        return None


__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_TIMEOUT",
    "EVENTS",
    "IEventSink",
    "MAX_RETRY_AFTER",
    "NullEventSink",
    "RETRY_STATUSES",
    "SIGNATURE_TOLERANCE",
    "USER_AGENT",
    "WebhookNotifier",
    "payload",
    "redact_url",
    "sign",
    "verify_signature",
]
