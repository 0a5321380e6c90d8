"""Tests for jobhost.events (webhooks) and where the issuing service, admin API and tap use it.

Deliveries go to a real twisted.web receiver on 127.0.0.1 over the real reactor; exact
delays (Retry-After, jitter, timeouts) are checked with a Clock and treq's StubTreq, which
runs the real HTTP client against a resource in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone

import attrs
import pytest
from admin_helpers import ApiClient, make_domain
from event_sink_contract import EventSinkContractTests
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from jobhost.domains import DomainService
from jobhost import __version__
from jobhost.certs import AriWindow
from jobhost.config import parse_config
from jobhost.errors import AcmeProblem, AcmeTransportError
from jobhost.events import IEventSink, NullEventSink, WebhookNotifier, redact_url, sign, verify_signature
from jobhost.issuing import IssuingService
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainRecord, DomainState, StateChange, certificate_record
from jobhost.testing import FakeAcmeClient, TestCA

SECRET = b"s3cret-0123456789-abcdefghijklmnop"
HOST = "jobs.acme-corp.test"
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)
DAY = 86400.0
FAST = (0.02, 0.02, 0.02)


def domain(hostname: str = HOST, state: str = DomainState.ACTIVE) -> DomainRecord:
    """A domain record created at T0."""
    return DomainRecord(hostname, state, T0, T0, history=(StateChange(T0, state, "test"),))


# -- a receiver that records what it gets ---------------------------------------------------------


@attrs.frozen
class Received:
    """One request as the receiver saw it."""

    method: bytes
    path: bytes
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver(Resource):
    """Records every request; answers each with the next scripted ``(status, headers)``, then 200.

    With ``hold`` set, requests are kept unanswered (for timeouts).
    """

    isLeaf = True

    def __init__(self, clock, script=(), hold: bool = False) -> None:
        super().__init__()
        self.clock = clock
        self.script = list(script)
        self.hold = hold
        self.received: list[Received] = []
        self.held: list = []

    def render(self, request):
        self.received.append(
            Received(
                request.method,
                request.path,
                {k.decode().lower(): v[-1].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
                request.content.read(),
                self.clock.seconds(),
            )
        )
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        status, headers = self.script.pop(0) if self.script else (200, {})
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, value)
        return b"ok" if status < 300 else b"receiver says no"


def expected_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature, computed here independently of jobhost.events."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class RealReceiverTests(TestCase):
    """Deliveries over real sockets on 127.0.0.1 and the real reactor."""

    timeout = 20

    def listen(self, script=()) -> str:
        self.receiver = Receiver(reactor, script)
        port = reactor.listenTCP(0, Site(self.receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/hooks/jobhost"

    def notifier(self, url: str, **options) -> WebhookNotifier:
        options.setdefault("backoff", FAST)
        notifier = WebhookNotifier.create(reactor, url, SECRET, timeout=5.0, **options)
        self.addCleanup(notifier.close)
        return notifier

    @inlineCallbacks
    def test_body_and_headers(self):
        """One delivery: a POST with the documented JSON body and headers, signed with the secret."""
        ca = TestCA.create()
        key_pem, chain_pem = ca.issue(HOST)
        certificate = certificate_record(HOST, key_pem, chain_pem)
        record = domain()
        notifier = self.notifier(self.listen())
        before = int(time.time())
        self.assertIsNone(notifier.notify("active", record, certificate))
        yield notifier.when_idle()
        after = int(time.time())

        [got] = self.receiver.received
        self.assertEqual((got.method, got.path), (b"POST", b"/hooks/jobhost"))
        self.assertEqual(got.headers["content-type"], "application/json")
        self.assertEqual(got.headers["user-agent"], f"jobhost/{__version__}")
        self.assertEqual(got.headers["x-jobhost-event"], "active")
        doc = got.json
        self.assertEqual(set(doc), {"id", "event", "at", "hostname", "domain", "certificate"})
        self.assertEqual(got.headers["x-jobhost-delivery"], doc["id"])
        self.assertEqual(uuid.UUID(doc["id"]).version, 4)
        self.assertEqual(doc["event"], "active")
        self.assertEqual(doc["hostname"], HOST)
        self.assertTrue(doc["at"].endswith("Z"))
        self.assertEqual(doc["domain"], json.loads(json.dumps(record.to_json())))
        self.assertEqual(doc["certificate"], json.loads(json.dumps(certificate.public_json())))
        self.assertNotIn(b"PRIVATE KEY", got.body)
        self.assertNotIn(key_pem.split(b"\n")[1], got.body)

        timestamp = got.headers["x-jobhost-timestamp"]
        self.assertTrue(before <= int(timestamp) <= after)
        signature = got.headers["x-jobhost-signature"]
        self.assertEqual(signature, expected_signature(SECRET, timestamp, got.body))
        self.assertTrue(verify_signature(SECRET, timestamp, got.body, signature, now=time.time()))
        self.assertFalse(verify_signature(b"another-secret-entirely", timestamp, got.body, signature, now=time.time()))
        self.assertFalse(verify_signature(SECRET, timestamp, got.body + b" ", signature, now=time.time()))
        self.assertEqual((notifier.delivered, notifier.failed, notifier.retries, notifier.dropped), (1, 0, 0, 0))

    @inlineCallbacks
    def test_retries_after_server_errors_then_succeeds(self):
        """500, 429 and 408 are retried with the same delivery id and body, each attempt signed afresh."""
        url = self.listen(script=[(500, {}), (429, {}), (408, {})])
        notifier = self.notifier(url)
        notifier.notify("renewed", domain())
        yield notifier.when_idle()
        got = self.receiver.received
        self.assertEqual(len(got), 4)
        self.assertEqual({r.headers["x-jobhost-delivery"] for r in got}, {got[0].json["id"]})
        self.assertEqual({r.body for r in got}, {got[0].body})
        for r in got:
            self.assertEqual(r.headers["x-jobhost-signature"],
                             expected_signature(SECRET, r.headers["x-jobhost-timestamp"], r.body))
        self.assertGreaterEqual(got[1].at - got[0].at, 0.02 * 0.9)
        self.assertEqual((notifier.delivered, notifier.failed, notifier.retries), (1, 0, 3))

    @inlineCallbacks
    def test_client_error_is_final(self):
        """A 400 answer is logged and not retried."""
        notifier = self.notifier(self.listen(script=[(400, {})]))
        notifier.notify("failing", domain(state=DomainState.FAILING))
        yield notifier.when_idle()
        self.assertEqual(len(self.receiver.received), 1)
        self.assertEqual((notifier.delivered, notifier.failed, notifier.retries), (0, 1, 0))

    @inlineCallbacks
    def test_given_up_after_backoff_is_spent(self):
        """A receiver that keeps answering 503 gets one attempt plus one per backoff entry, then none."""
        notifier = self.notifier(self.listen(script=[(503, {})] * 10), backoff=(0.01, 0.01))
        notifier.notify("paused", domain(state=DomainState.PAUSED))
        yield notifier.when_idle()
        self.assertEqual(len(self.receiver.received), 3)
        self.assertEqual((notifier.delivered, notifier.failed, notifier.retries), (0, 1, 2))

    @inlineCallbacks
    def test_refused_connection_never_raises(self):
        """With nothing listening, notify still returns None at once; the delivery is retried, then given up."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        notifier = self.notifier(f"http://127.0.0.1:{port}/hooks", backoff=(0.01, 0.01))
        started = time.monotonic()
        self.assertIsNone(notifier.notify("removed", domain(state=DomainState.REMOVED)))
        self.assertLess(time.monotonic() - started, 0.5)
        yield notifier.when_idle()
        self.assertEqual((notifier.delivered, notifier.failed, notifier.retries), (0, 1, 2))

    @inlineCallbacks
    def test_queue_is_bounded_and_drops_the_oldest(self):
        """With one in flight and room for two waiting, a fourth event drops the oldest waiting one."""
        notifier = self.notifier(self.listen(), concurrency=1, max_queue=2)
        for i in range(4):
            notifier.notify("active", domain(f"h{i}.acme-corp.test"))
        self.assertEqual(notifier.dropped, 1)
        yield notifier.when_idle()
        self.assertEqual([r.json["hostname"] for r in self.receiver.received],
                         ["h0.acme-corp.test", "h2.acme-corp.test", "h3.acme-corp.test"])
        self.assertEqual(notifier.delivered, 3)

    @inlineCallbacks
    def test_close_waits_for_the_pooled_connections(self):
        """close() on a notifier that owns a connection pool returns a Deferred that fires once its kept-alive connections are closed."""
        notifier = self.notifier(self.listen())
        notifier.notify("active", domain())
        yield notifier.when_idle()
        closing = notifier.close()
        self.assertIsInstance(closing, Deferred)
        yield closing
        self.assertEqual(notifier.delivered, 1)


# -- exact timing with a Clock -------------------------------------------------------------------


def clocked(script=(), hold: bool = False, **options):
    """A notifier on StubTreq + Clock, and its receiver."""
    clock = Clock()
    clock.advance(T0.timestamp())
    receiver = Receiver(clock, script, hold=hold)
    stub = StubTreq(receiver)
    options.setdefault("random", lambda: 0.0)
    notifier = WebhookNotifier(http=stub, clock=clock, url="http://hooks.invalid/x", secret=SECRET, **options)
    return notifier, receiver, stub, clock


def test_retry_after_is_honoured_to_the_second():
    """A 503 with Retry-After: 42 is retried exactly 42 s later, not after the backoff's 5 s."""
    notifier, receiver, stub, clock = clocked([(503, {"Retry-After": "42"})], backoff=(5.0,))
    notifier.notify("active", domain())
    stub.flush()
    assert len(receiver.received) == 1
    clock.advance(41.9)
    stub.flush()
    assert len(receiver.received) == 1
    clock.advance(0.1)
    stub.flush()
    assert len(receiver.received) == 2
    assert receiver.received[1].at - receiver.received[0].at == pytest.approx(42.0)
    assert int(receiver.received[1].headers["x-jobhost-timestamp"]) == int(T0.timestamp()) + 42
    assert (notifier.delivered, notifier.retries) == (1, 1)


def test_retry_after_as_http_date():
    """Retry-After given as an HTTP date waits until that date."""
    when = T0 + timedelta(seconds=90)
    notifier, receiver, stub, clock = clocked(
        [(429, {"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")})], backoff=(5.0,)
    )
    notifier.notify("active", domain())
    stub.flush()
    clock.advance(89)
    stub.flush()
    assert len(receiver.received) == 1
    clock.advance(1)
    stub.flush()
    assert len(receiver.received) == 2


def test_backoff_with_jitter():
    """Without Retry-After the n-th retry waits backoff[n] stretched by the jitter (at most 10%)."""
    notifier, receiver, stub, clock = clocked([(500, {}), (500, {})], backoff=(10.0, 100.0), random=lambda: 0.5)
    notifier.notify("active", domain())
    stub.flush()
    assert [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()] == [pytest.approx(10.5)]
    clock.advance(10.5)
    stub.flush()
    assert [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()] == [pytest.approx(105.0)]
    clock.advance(105.0)
    stub.flush()
    assert len(receiver.received) == 3 and notifier.delivered == 1


def test_timeout_is_retried():
    """A receiver that never answers is given up on after ``timeout`` and retried."""
    notifier, receiver, stub, clock = clocked(hold=True, backoff=(1.0,), timeout=3.0)
    notifier.notify("active", domain())
    stub.flush()
    assert len(receiver.received) == 1
    clock.advance(2.9)
    stub.flush()
    assert notifier.retries == 0
    clock.advance(0.1)
    stub.flush()
    assert notifier.retries == 1
    clock.advance(1.0)
    stub.flush()
    assert len(receiver.received) == 2


def test_close_cancels_pending_retries():
    """close() cancels the scheduled retry; nothing is sent afterwards and notify still does not raise."""
    notifier, receiver, stub, clock = clocked([(500, {})], backoff=(5.0,))
    notifier.notify("active", domain())
    stub.flush()
    assert len(clock.getDelayedCalls()) == 1
    idle = []
    notifier.when_idle().addCallback(idle.append)
    notifier.close()
    assert clock.getDelayedCalls() == []
    assert notifier.dropped == 1
    assert idle == [None], "nothing is left to deliver once close() abandoned the retry"
    notifier.notify("renewed", domain())
    clock.advance(10)
    stub.flush()
    assert len(receiver.received) == 1
    assert notifier.dropped == 2


def test_bad_arguments_are_logged_not_raised():
    """An unknown event or something that is not a record is logged; notify returns None."""
    notifier, receiver, stub, clock = clocked()
    assert notifier.notify("exploded", domain()) is None
    assert notifier.notify("active", object()) is None
    stub.flush()
    assert receiver.received == []


def test_signature_helpers():
    """sign() matches an independent HMAC; verify_signature refuses stale, future and malformed input."""
    body = b'{"event":"active"}'
    signature = sign(SECRET, 1700000000, body)
    assert signature == expected_signature(SECRET, "1700000000", body)
    assert verify_signature(SECRET, "1700000000", body, signature, now=1700000100)
    assert verify_signature(SECRET, b"1700000000", body, signature.encode(), now=1700000000)
    assert not verify_signature(SECRET, "1700000000", body, signature, now=1700000301), "replayed too late"
    assert not verify_signature(SECRET, "1700000000", body, signature, now=1699999699), "from the future"
    assert not verify_signature(SECRET, "1700000001", body, signature, now=1700000000), "timestamp changed"
    assert not verify_signature(SECRET, "soon", body, signature, now=1700000000)
    assert not verify_signature(SECRET, None, body, signature, now=1700000000)
    assert not verify_signature(SECRET, "1700000000", body, None, now=1700000000)


# -- the issuing service tells its events object ----------------------------------------------------


@implementer(IEventSink)
@attrs.define
class RecordingEvents:
    """Records every notify call as (event, hostname, state, certificate serial or None).

    With ``raises`` it breaks the IEventSink contract on purpose (callers must survive that).
    """

    calls: list = attrs.field(factory=list)
    raises: bool = False

    def notify(self, event, record, certificate=None):
        self.calls.append((event, record.hostname, record.state, certificate.serial if certificate else None))
        if self.raises:
            raise RuntimeError("the event sink is broken")


class WebhookNotifierSinkContractTests(EventSinkContractTests, TestCase):
    """WebhookNotifier keeps the IEventSink contract, even when its receiver never answers."""

    def make_sink(self) -> WebhookNotifier:
        never = StubTreq(Receiver(Clock(), hold=True))
        notifier = WebhookNotifier(http=never, clock=Clock(), url="http://hooks.invalid/x", secret=SECRET)
        self.addCleanup(notifier.close)
        return notifier


class NullEventSinkContractTests(EventSinkContractTests, TestCase):
    """NullEventSink keeps the IEventSink contract."""

    def make_sink(self) -> NullEventSink:
        return NullEventSink()


class RecordingEventsContractTests(EventSinkContractTests, TestCase):
    """The recording stand-in keeps the IEventSink contract (unless told to raise)."""

    def make_sink(self) -> RecordingEvents:
        return RecordingEvents()


@pytest.fixture(scope="module")
def ca():
    return TestCA.create()


def issuing(ca, **kwargs):
    """An IssuingService over a MemoryStore, a FakeAcmeClient and a Clock at T0, HOST registered."""
    clock = Clock()
    clock.advance(T0.timestamp())
    store = MemoryStore()
    client = FakeAcmeClient(ca=ca, clock=clock)
    events = RecordingEvents()
    service = IssuingService(
        store=store, domains=DomainService(store=store, clock=clock), client=client, clock=clock,
        directory_url=client.directory_url,
        random=lambda: 0.0, holder="node-a", events=events, **kwargs,
    )
    store.domains[HOST] = DomainRecord(HOST, DomainState.PENDING, T0, T0)
    return service, store, client, clock, events


RATE_LIMITED = AcmeProblem(type="urn:ietf:params:acme:error:rateLimited", detail="too many", status=429,
                           retry_after=100.0)


def test_issuing_notifies_active_failing_paused_renewed(ca):
    """active on issuance; failing once for repeated failures; paused on a rate limit; renewed on renewal."""
    service, store, client, clock, events = issuing(ca)
    service.startService()
    first = store.certificates[HOST]
    assert events.calls == [("active", HOST, DomainState.ACTIVE, first.serial)]

    client.failures = [AcmeTransportError("down")] * 3 + [RATE_LIMITED]
    clock.advance((store.domains[HOST].next_attempt - T0).total_seconds())
    assert store.domains[HOST].state == DomainState.FAILING
    assert events.calls[1:] == [("failing", HOST, DomainState.FAILING, first.serial)]
    for _ in range(2):  # the same error again: no news
        clock.advance(86400)
        assert store.domains[HOST].state == DomainState.FAILING
    assert len(client.orders) == 4
    assert len(events.calls) == 2
    clock.advance(86400)
    assert store.domains[HOST].state == DomainState.PAUSED
    assert events.calls[2:] == [("paused", HOST, DomainState.PAUSED, first.serial)]
    clock.advance(100)
    renewed = store.certificates[HOST]
    assert renewed.serial != first.serial
    assert events.calls[3:] == [("renewed", HOST, DomainState.ACTIVE, renewed.serial)]


def test_issuing_notifies_again_when_the_error_changes(ca):
    """A failing hostname whose error code changes is reported again; the first success is active."""
    service, store, client, clock, events = issuing(ca)
    client.failures = [
        AcmeTransportError("down"),
        AcmeTransportError("still down"),
        AcmeProblem(type="urn:ietf:params:acme:error:serverInternal", detail="oops", status=500),
    ]
    service.startService()
    clock.advance(60)
    clock.advance(600)
    assert store.domains[HOST].state == DomainState.FAILING
    clock.advance(6000)
    assert [(e, state) for e, _, state, _ in events.calls] == [
        ("failing", DomainState.FAILING),
        ("failing", DomainState.FAILING),
        ("active", DomainState.ACTIVE),
    ]
    assert events.calls[0][3] is None, "no certificate yet"


def test_issuing_notifies_active_when_recovering_without_a_new_certificate(ca):
    """A failing renewal that the CA's renewal window later postpones goes back to active, and says so."""
    service, store, client, clock, events = issuing(ca)
    early = AriWindow(start=T0 + timedelta(days=2), end=T0 + timedelta(days=2, seconds=1),
                      retry_after=T0 + timedelta(days=2, seconds=30))
    late = AriWindow(start=T0 + timedelta(days=60), end=T0 + timedelta(days=61),
                     retry_after=T0 + timedelta(days=30))
    client.renewal_window = early
    service.startService()
    first = store.certificates[HOST]
    client.failures = [AcmeTransportError("down")]
    clock.advance(2 * DAY + 1)
    assert store.domains[HOST].state == DomainState.FAILING
    client.renewal_window = late
    clock.advance(60)
    assert store.domains[HOST].state == DomainState.ACTIVE
    assert store.certificates[HOST].serial == first.serial
    assert [e for e, *_ in events.calls] == ["active", "failing", "active"]
    assert events.calls[-1] == ("active", HOST, DomainState.ACTIVE, first.serial)


def test_broken_events_object_does_not_stop_issuance(ca):
    """An events object that raises is logged; the certificate is still stored and the record active."""
    service, store, client, clock, events = issuing(ca)
    events.raises = True
    service.startService()
    assert store.domains[HOST].state == DomainState.ACTIVE
    assert HOST in store.certificates
    assert [e for e, *_ in events.calls] == ["active"]


# -- the admin API tells it about removals -------------------------------------------------------


def test_admin_delete_notifies_removed_once():
    """DELETE of a hostname notifies removed with the removed record; a repeated DELETE does not."""
    events = RecordingEvents()
    api = ApiClient.create(events=events)
    api.store.domains[HOST] = make_domain(HOST)
    answer = api.request("DELETE", f"/api/v1/domains/{HOST}")
    assert answer.status == 200
    assert events.calls == [("removed", HOST, DomainState.REMOVED, None)]
    assert api.request("DELETE", f"/api/v1/domains/{HOST}").status == 200
    assert len(events.calls) == 1


def test_admin_delete_survives_a_broken_events_object():
    """A raising events object does not turn a DELETE into an error."""
    api = ApiClient.create(events=RecordingEvents(raises=True))
    api.store.domains[HOST] = make_domain(HOST)
    assert api.request("DELETE", f"/api/v1/domains/{HOST}").status == 200
    assert api.store.domains[HOST].state == DomainState.REMOVED


# -- tap wiring --------------------------------------------------------------------------------------


def test_tap_builds_the_notifier_when_a_url_is_set(tmp_path):
    """With [events] webhook_url the tree gets an events service (stopped after issuing and admin),
    the secret file is created 0600, and issuing and admin share the notifier."""
    config = parse_config(
        {
            "listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0:interface=127.0.0.1"},
            "preflight": {"addresses": ["127.0.0.1"]},
            "events": {"webhook_url": "https://hooks.example.com/jobhost", "backoff": ["1s", "2s"], "timeout": "4s"},
        },
        tmp_path,
    )
    from jobhost.tap import build_parts

    parts = build_parts(MemoryReactorClock(), config)
    names = [s.name for s in parts.root]
    assert names.index("acme-client") < names.index("events") < names.index("issuing") < names.index("admin")
    secret_file = tmp_path / "var" / "webhook.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    notifier = parts.events
    assert isinstance(notifier, WebhookNotifier)
    assert notifier.secret == secret_file.read_text().strip().encode()
    assert (notifier.url, notifier.backoff, notifier.timeout) == ("https://hooks.example.com/jobhost", (1.0, 2.0), 4.0)
    assert parts.issuing.events is notifier
    admin = parts.root.getServiceNamed("admin").factory.resource
    assert admin is parts.admin.resource and admin.events is notifier


def test_tap_without_a_url_builds_no_notifier(tmp_path):
    """Without a webhook URL there is no events service and no secret file."""
    config = parse_config({"preflight": {"addresses": ["127.0.0.1"]}, "events": {"webhook_url": ""}}, tmp_path)
    from jobhost.tap import build_parts

    parts = build_parts(MemoryReactorClock(), config)
    assert "events" not in [s.name for s in parts.root]
    assert isinstance(parts.events, NullEventSink)
    assert parts.issuing.events is parts.events and parts.admin.resource.events is parts.events
    assert not (tmp_path / "var" / "webhook.secret").exists()


# -- what an operator sees: defaults, answers, logs, shutdown -------------------------------------


def logged(events: list) -> list[tuple[str, str]]:
    """Captured log events as ``(level name, formatted message)``."""
    return [(e["log_level"].name, formatEvent(e)) for e in events]


class Answering(Resource):
    """Answers every request with ``status``, ``headers`` and ``body``; with ``finish=False`` it sends
    the status and the body so far and then keeps the request open (``requests`` has them)."""

    isLeaf = True

    def __init__(self, status: int, body: bytes = b"", headers=None, finish: bool = True) -> None:
        super().__init__()
        self.status, self.body, self.headers, self.finish = status, body, headers or {}, finish
        self.requests: list = []

    def render(self, request):
        self.requests.append(request)
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        if self.finish:
            return self.body
        request.write(self.body)
        return NOT_DONE_YET


def answering(resource: Resource, **options):
    """A notifier on StubTreq + Clock that POSTs to ``resource``."""
    clock = Clock()
    clock.advance(T0.timestamp())
    stub = StubTreq(resource)
    options.setdefault("random", lambda: 0.0)
    notifier = WebhookNotifier(http=stub, clock=clock, url="http://hooks.invalid/x", secret=SECRET, **options)
    return notifier, stub, clock


def pending_delays(clock: Clock) -> list[float]:
    return [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()]


def test_default_backoff_is_5s_30s_2min_10min_1h_then_given_up():
    """Without a backoff option a failing receiver is retried after 5 s, 30 s, 2 min, 10 min and 1 h, then given up with an error."""
    notifier, receiver, stub, clock = clocked([(500, {})] * 10)
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
        delays = []
        while clock.getDelayedCalls():
            [delay] = pending_delays(clock)
            delays.append(delay)
            clock.advance(delay)
            stub.flush()
    assert delays == [5.0, 30.0, 120.0, 600.0, 3600.0]
    assert len(receiver.received) == 6
    assert (notifier.delivered, notifier.failed, notifier.retries) == (0, 1, 5)
    assert logged(events)[-1][0] == "error"
    assert f"active for {HOST} to http://hooks.invalid/x given up after 6 attempts: HTTP 500" in logged(events)[-1][1]
    assert [message for level, message in logged(events)].count(f"Webhook active for {HOST} to http://hooks.invalid/x failed "
                                                               f"(HTTP 500: receiver says no); retry 1 in 5.0 s "
                                                               f"(delivery {receiver.received[0].json['id']})") == 1


def test_default_timeout_is_ten_seconds_and_the_log_says_so():
    """A receiver that never answers is given up on after 10 s by default, logged as no answer within 10 s, and retried."""
    notifier, receiver, stub, clock = clocked(hold=True)
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
        clock.advance(9.9)
        stub.flush()
        assert notifier.retries == 0
        clock.advance(0.1)
        stub.flush()
    assert notifier.retries == 1
    assert [(level, "no answer within 10 s" in message) for level, message in logged(events)] == [("warn", True)]


def test_default_concurrency_is_four_and_default_queue_holds_a_thousand():
    """By default four deliveries are in flight and a thousand more may wait; the next one drops the oldest waiting."""
    notifier, receiver, stub, clock = clocked(hold=True)
    record = domain()
    for _ in range(1004):
        notifier.notify("active", record)
    stub.flush()
    assert len(receiver.received) == 4
    assert notifier.dropped == 0
    with capturedLogs():
        notifier.notify("active", record)
    assert notifier.dropped == 1


def test_a_huge_retry_after_is_cut_to_one_day():
    """A Retry-After beyond a day is honoured as one day."""
    notifier, receiver, stub, clock = clocked([(503, {"Retry-After": "999999"})], backoff=(5.0,))
    notifier.notify("active", domain())
    stub.flush()
    assert pending_delays(clock) == [86400.0]


def test_2xx_is_accepted_and_everything_else_below_500_is_final():
    """299 is an acceptance (logged with its status); 300, 302 (never followed) and 499 are final: one attempt, an error log."""
    with capturedLogs() as events:
        notifier, stub, clock = answering(Answering(299))
        notifier.notify("active", domain())
        stub.flush()
    assert (notifier.delivered, notifier.failed, notifier.retries) == (1, 0, 0)
    assert logged(events)[0][0] == "info"
    assert f"Webhook active for {HOST} delivered to http://hooks.invalid/x (HTTP 299, attempt 1, delivery" in logged(events)[0][1]
    for status in (300, 302, 499):
        resource = Answering(status, b"go away", {"Location": "http://hooks.invalid/elsewhere", "Retry-After": "1"})
        notifier, stub, clock = answering(resource)
        with capturedLogs() as events:
            notifier.notify("renewed", domain())
            stub.flush()
            clock.advance(3600)
            stub.flush()
        assert [r.path for r in resource.requests] == [b"/x"], status
        assert (notifier.delivered, notifier.failed, notifier.retries) == (0, 1, 0), status
        [(level, message)] = logged(events)
        assert level == "error"
        assert f"Webhook renewed for {HOST} refused by http://hooks.invalid/x (HTTP {status}: go away); not retried" in message


def test_the_answer_is_logged_trimmed_and_cut_to_200_bytes():
    """The receiver's answer in the log is stripped of surrounding whitespace and at most its first 200 bytes, even when it arrives in pieces."""
    resource = Answering(400, b"  " + b"a" * 148, finish=False)
    notifier, stub, clock = answering(resource)
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
        resource.requests[0].write(b"b" * 150)
        stub.flush()
        resource.requests[0].finish()
        stub.flush()
    [(level, message)] = logged(events)
    assert f"(HTTP 400: {'a' * 148}{'b' * 50}); not retried" in message
    resource = Answering(404, b"\n  nothing here \r\n")
    notifier, stub, clock = answering(resource)
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
    assert "(HTTP 404: nothing here); not retried" in logged(events)[0][1]


def test_a_connection_lost_while_reading_the_answer_is_retried_at_once():
    """A receiver that drops the connection in the middle of its answer is retried without waiting for the timeout."""
    resource = Answering(200, b"partial", finish=False)
    notifier, stub, clock = answering(resource, backoff=(1.0,))
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
        resource.requests[0].transport.loseConnection()
        stub.flush()
    assert (notifier.delivered, notifier.retries) == (0, 1)
    [(level, message)] = logged(events)
    assert level == "warn" and "no answer within" not in message and "retry 1 in 1.0 s" in message


def test_a_timeout_while_reading_the_answer_closes_the_connection():
    """When the receiver sends its status but never finishes the body, the timeout drops the connection and retries."""
    resource = Answering(200, b"partial", finish=False)
    notifier, stub, clock = answering(resource, backoff=(1.0,), timeout=3.0)
    notifier.notify("active", domain())
    stub.flush()
    closed = []
    resource.requests[0].notifyFinish().addBoth(closed.append)
    with capturedLogs():
        clock.advance(3.0)
        stub.flush()
    assert notifier.retries == 1
    assert len(closed) == 1, "the receiver sees its connection closed"


def test_a_url_the_client_cannot_parse_is_final_and_redacted_in_the_log():
    """A webhook URL the HTTP client refuses outright is not retried; the log names the cause and no credential."""
    notifier, stub, clock = answering(Answering(200))
    notifier.url = "http://user:hunter2@[::1/x?token=abc"
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
        clock.advance(3600)
    assert (notifier.delivered, notifier.failed, notifier.retries) == (0, 1, 0)
    [(level, message)] = logged(events)
    assert level == "error" and "refused by <unparsable URL>" in message and "not retried" in message
    assert "hunter2" not in message.split("(")[0] and "token" not in message.split("(")[0]


def test_a_delivery_that_breaks_unexpectedly_is_counted_failed_and_logged():
    """A delivery that raises inside the notifier (here a User-Agent that is not ASCII) is counted failed, logged with its traceback, and the notifier goes on."""
    notifier, receiver, stub, clock = clocked(user_agent="jöbhost")
    with capturedLogs() as events:
        notifier.notify("active", domain())
        stub.flush()
    assert (notifier.delivered, notifier.failed, notifier.retries) == (0, 1, 0)
    [event] = events
    assert event.get("log_failure") is not None
    assert f"Webhook active for {HOST} to http://hooks.invalid/x failed unexpectedly" == formatEvent(event)
    idle = []
    notifier.when_idle().addCallback(idle.append)
    assert idle == [None]


def test_when_idle_fires_at_once_on_an_idle_notifier():
    """when_idle() on a notifier with nothing to do has already fired, with None."""
    notifier, receiver, stub, clock = clocked()
    fired = []
    notifier.when_idle().addCallback(fired.append)
    assert fired == [None]


def test_close_abandons_waiting_and_in_flight_deliveries():
    """close() drops what waits and cancels what is in flight: all counted dropped (none failed), logged once,
    no timer left behind, and when_idle() fires."""
    notifier, receiver, stub, clock = clocked(hold=True, concurrency=1, backoff=())
    notifier.url = "http://user:hunter2@hooks.invalid/x?token=abc"
    for _ in range(3):
        notifier.notify("active", domain())
    stub.flush()
    assert len(receiver.received) == 1
    idle = []
    notifier.when_idle().addCallback(idle.append)
    closed = []
    with capturedLogs() as events:
        notifier.close().addCallback(closed.append)
    assert (notifier.dropped, notifier.failed) == (3, 0)
    assert logged(events) == [("warn", "Stopping: 3 webhook deliveries to http://hooks.invalid/x abandoned")]
    assert idle == [None] and closed == [None]
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    stub.flush()
    assert len(receiver.received) == 1


def test_notify_after_close_is_logged():
    """An event after close() is dropped with a warning that names it."""
    notifier, receiver, stub, clock = clocked()
    notifier.close()
    with capturedLogs() as events:
        notifier.notify("removed", domain())
    assert notifier.dropped == 1
    assert logged(events) == [("warn", f"Webhook removed for {HOST} not sent: the notifier is stopped")]


def test_a_full_queue_drops_the_oldest_event_even_when_it_is_a_retry():
    """A retry re-queued into a full queue is itself the oldest event: it is dropped (logged), its timer cancelled."""
    notifier, receiver, stub, clock = clocked(hold=True, concurrency=1, max_queue=2, timeout=3.0, backoff=(1.0,))
    for i in range(3):
        notifier.notify("active", domain(f"h{i}.acme-corp.test"))
    stub.flush()
    with capturedLogs() as events:
        clock.advance(3.0)
        stub.flush()
    assert (notifier.dropped, notifier.retries) == (1, 1)
    errors = [message for level, message in logged(events) if level == "error"]
    assert len(errors) == 1
    assert "Webhook queue is full (2 waiting); dropped active for h0.acme-corp.test" in errors[0]
    assert "1 attempts made" in errors[0]
    assert pending_delays(clock) == [3.0], "only the next delivery's timeout; no retry of the dropped one"
    assert [r.json["hostname"] for r in receiver.received] == ["h0.acme-corp.test", "h1.acme-corp.test"]


def test_bad_arguments_name_the_event_in_the_log():
    """notify with an unknown event logs a failure naming the event and the hostname."""
    notifier, receiver, stub, clock = clocked()
    with capturedLogs() as events:
        notifier.notify("exploded", domain())
    [event] = events
    assert event.get("log_failure") is not None
    assert formatEvent(event) == f"Could not queue webhook exploded for {HOST}"


def test_signature_tolerance_is_inclusive_and_whitespace_is_ignored():
    """A timestamp exactly five minutes off is still accepted; header values with surrounding whitespace verify."""
    body = b'{"event":"active"}'
    signature = sign(SECRET, 1700000000, body)
    assert verify_signature(SECRET, "1700000000", body, signature, now=1700000300)
    assert verify_signature(SECRET, "1700000000", body, signature, now=1699999700)
    assert verify_signature(SECRET, " 1700000000\r\n", body, f" {signature}\r\n".encode(), now=1700000000)
    assert verify_signature(SECRET, "1700000000", body, signature + " ", now=1700000000)
    assert not verify_signature(SECRET, "1700000000", body, "sha256=" + "0" * 64, now=1700000000)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://user:pw@hooks.example.com:8443/in/jobhost?token=abc#x", "https://hooks.example.com:8443/in/jobhost"),
        ("http://hooks.example.com/in", "http://hooks.example.com/in"),
        ("http://[2001:db8::1]:8080/in?k=v", "http://[2001:db8::1]:8080/in"),
        ("http:///in", "http:///in"),
        ("http://[::1/in", "<unparsable URL>"),
        ("http://hooks.example.com:99999/in", "<unparsable URL>"),
    ],
)
def test_redact_url_keeps_what_identifies_the_endpoint_only(url, shown):
    """Logged URLs keep scheme, host, port and path, and lose user info, query and fragment."""
    assert redact_url(url) == shown


def test_notifier_repr_hides_the_secret_and_notifiers_compare_by_identity():
    """The secret never shows in a notifier's repr; notifiers are hashable and equal only to themselves;
    the constructor takes the documented attributes only (the counters start at zero)."""
    notifier, receiver, stub, clock = clocked()
    notifier.notify("active", domain())
    stub.flush()
    assert notifier.delivered == 1
    assert SECRET.decode() not in repr(notifier) and "secret" not in repr(notifier)
    other = WebhookNotifier(http=stub, clock=clock, url=notifier.url, secret=SECRET, random=notifier.random)
    assert other != notifier and len({notifier, other}) == 2
    assert list(inspect.signature(WebhookNotifier).parameters) == [
        "http", "clock", "url", "secret", "backoff", "timeout", "max_queue", "concurrency", "random",
        "user_agent", "pool",
    ]
    assert (other.delivered, other.failed, other.dropped, other.retries) == (0, 0, 0, 0)
