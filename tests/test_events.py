"""Tests for jobhost.events (webhooks) and where the issuing service, admin API and tap use it.

Deliveries go to a real twisted.web receiver on 127.0.0.1 over the real reactor; exact
delays (Retry-After, jitter, timeouts) are checked with a Clock and treq's StubTreq, which
runs the real HTTP client against a resource in memory.
"""

from __future__ import annotations

import hashlib
import hmac
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
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
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
from jobhost.events import IEventSink, NullEventSink, WebhookNotifier, sign, verify_signature
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
    notifier.close()
    assert clock.getDelayedCalls() == []
    assert notifier.dropped == 1
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
