"""Tests for jobhost.issuing over a MemoryStore, a FakeAcmeClient and a Clock."""

import hashlib
import socket
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import attrs
import pytest
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobhost.acme.resources import ari_cert_id
from jobhost.certs import AriWindow, load_private_key, renewal_time
from jobhost.config import AcmeConfig, RenewalConfig
from jobhost.domains import DomainService
from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    AcmeUnsupported,
    AuthorizationFailed,
    PreflightFailed,
    SelfCheckFailed,
    StoreError,
)
from jobhost.issuing import Issuer, IssuingService, StoreResponder, falls_back, default_holder, describe_failure, log_panic
from jobhost.metrics import Metrics
from jobhost.preflight import IPreflight, PreflightReason, PreflightResult, ReasonCode
from jobhost.retry import backoff_delay
from jobhost.store.directory import DirectoryStore
from jobhost.store.memory import MemoryStore
from jobhost.store.records import (
    Challenge,
    ChangeKind,
    DomainRecord,
    DomainState,
    Lease,
    certificate_record,
)
from jobhost.testing import FakeAcmeClient, TestCA
from jobhost.timeutil import to_iso

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAY = 86400.0
HOST = "jobs.acme-corp.test"
ACME = "urn:ietf:params:acme:error:"


@pytest.fixture(scope="module")
def ca():
    return TestCA.create()


@implementer(IPreflight)
@attrs.define
class FakePreflight:
    """Preflight stand-in: every check fails with one canned reason when ``failing``.

    It remembers nothing, so ``recent_or_check`` always checks afresh (the contract allows it).
    """

    failing: bool = False
    checked: list = attrs.field(factory=list)
    account_uri: str | None = None
    #: When set, checks wait for it (a slow DNS lookup).
    gate: Deferred | None = None

    def set_account_uri(self, account_uri):
        self.account_uri = account_uri

    def check(self, hostname):
        self.checked.append(hostname)
        if not self.failing:
            result = PreflightResult(hostname=hostname, ok=True)
        else:
            reason = PreflightReason(
                ReasonCode.POINTS_ELSEWHERE, f"{hostname} has A 198.51.100.7, but must point at 203.0.113.10"
            )
            result = PreflightResult(hostname=hostname, ok=False, reasons=(reason,))
        if self.gate is not None:
            return self.gate.addCallback(lambda _: result)
        return succeed(result)

    def recent_or_check(self, hostname, max_age=60.0):
        return self.check(hostname)


def test_fake_preflight_provides_ipreflight():
    """The preflight stand-in provides IPreflight."""
    assert verifyObject(IPreflight, FakePreflight())


class Harness:
    """A store, a fake CA client and a clock, wired into an IssuingService."""

    def __init__(self, ca, store=None, clock=None, **kwargs):
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(T0.timestamp())
        self.store = store or MemoryStore()
        self.client = kwargs.pop("client", None) or FakeAcmeClient(ca=ca, clock=self.clock)
        self.panics = []
        self.stored = []
        self.domains = DomainService(store=self.store, clock=self.clock)
        settings = dict(
            store=self.store,
            domains=self.domains,
            client=self.client,
            clock=self.clock,
            directory_url=self.client.directory_url,
            panic=lambda h, c, f: self.panics.append((h, f.value)),
            on_certificate=self.stored.append,
            random=lambda: 0.0,
            holder="node-a",
        )
        self.service = IssuingService(**{**settings, **kwargs})

    def register(self, hostname=HOST):
        now = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
        self.store.domains[hostname] = DomainRecord(hostname, DomainState.PENDING, now, now)

    def record(self, hostname=HOST):
        return self.store.domains[hostname]

    def now(self):
        return datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)


def clock_at_t0():
    clock = Clock()
    clock.advance(T0.timestamp())
    return clock


def messages(events, level=None):
    """The formatted log lines of captured ``events`` (of ``level`` only, when given)."""
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


def unexpected_failures(events):
    """The captured events that logged a traceback."""
    return [e for e in events if e.get("log_failure") is not None]


def certificate_changes(store):
    """The hostnames whose certificate the MemoryStore's change feed says changed."""
    return [hostname for hostname, kinds in store.journal if ChangeKind.CERTIFICATE in kinds]


def rate_limited(seconds):
    return AcmeProblem(type=ACME + "rateLimited", detail="too many", status=429, retry_after=seconds)


def _play(fault, real, *args, **kwargs):
    """An exception fails the call; a Deferred delays it until fired."""
    if isinstance(fault, BaseException):
        return fail(fault)
    return fault.addCallback(lambda _: real(*args, **kwargs))


class FaultyStore(MemoryStore):
    """A MemoryStore with injected faults: ``faults[method]`` lists what its next calls do instead.

    An exception makes the call fail with it; a Deferred makes it wait until fired, then run.
    """

    def __init__(self):
        super().__init__()
        self.faults = defaultdict(list)

    def _call(self, name, *args, **kwargs):
        real = getattr(MemoryStore, name).__get__(self)
        if self.faults[name]:
            return _play(self.faults[name].pop(0), real, *args, **kwargs)
        return real(*args, **kwargs)

    def acquire_lease(self, *args, **kwargs):
        return self._call("acquire_lease", *args, **kwargs)

    def release_lease(self, *args, **kwargs):
        return self._call("release_lease", *args, **kwargs)

    def due_domains(self, *args, **kwargs):
        return self._call("due_domains", *args, **kwargs)

    def get_domain(self, *args, **kwargs):
        return self._call("get_domain", *args, **kwargs)

    def put_challenge(self, *args, **kwargs):
        return self._call("put_challenge", *args, **kwargs)


@attrs.define
class FaultyClient(FakeAcmeClient):
    """A fake CA whose next registrations fail or wait, as listed in :attr:`register_faults` (see FaultyStore)."""

    register_faults: list = attrs.field(factory=list)

    def register(self, account_key, contact=(), terms_agreed=True, eab=None):
        real = super().register
        if self.register_faults:
            return _play(self.register_faults.pop(0), real, account_key, contact, terms_agreed, eab)
        return real(account_key, contact, terms_agreed, eab)


def test_new_hostname_is_issued(ca):
    """A registered hostname gets a certificate and becomes active on start."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.ACTIVE
    assert record.attempts == 0 and record.last_error is None
    cert = h.store.certificates[HOST]
    assert cert.names == (HOST,)
    assert cert.account_url == h.client.account_url
    assert h.stored == [HOST]
    assert [c.state for c in record.history] == [DomainState.ISSUING, DomainState.ACTIVE]
    assert h.store.challenges == {}, "challenge tokens are deleted after the order"


def test_kick_issues_without_waiting_for_scan(ca):
    """kick() works on a hostname registered after start at once."""
    h = Harness(ca)
    h.service.startService()
    h.register()
    h.service.kick(HOST)
    assert h.record().state == DomainState.ACTIVE


def test_one_account_for_many_hostnames_and_restarts(ca):
    """Ten hostnames and two restarts create exactly one account, stored once."""
    h = Harness(ca)
    for i in range(10):
        h.register(f"h{i}.acme-corp.test")
    h.service.startService()
    h.service.stopService()
    for _ in range(2):
        h2 = Harness(ca, store=h.store, clock=h.clock, client=h.client)
        h2.service.startService()
        h2.service.renew_now("h0.acme-corp.test")
        h2.service.stopService()
    assert len(h.client.accounts) == 1
    assert len(h.store.accounts) == 1
    assert all(r.state == DomainState.ACTIVE for r in h.store.domains.values())


def test_ninety_day_certificate_renews_after_sixty_days(ca):
    """A 90-day certificate is renewed between day 55.5 (jitter bound) and day 60, not before."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    first = h.store.certificates[HOST]
    due = h.record().next_attempt
    assert T0 + timedelta(days=55.5) <= due <= T0 + timedelta(days=60)
    h.clock.advance((due - T0).total_seconds() - 1)
    assert h.store.certificates[HOST].fingerprint == first.fingerprint
    h.clock.advance(1)
    second = h.store.certificates[HOST]
    assert second.fingerprint != first.fingerprint
    assert h.record().state == DomainState.ACTIVE
    assert h.record().history[-2].state == DomainState.RENEWING


def test_six_day_certificate_renews_after_three_days(ca):
    """A 6-day certificate is renewed at half its lifetime (within the jitter bound)."""
    h = Harness(ca)
    h.client.lifetime = timedelta(days=6)
    h.register()
    h.service.startService()
    due = h.record().next_attempt
    assert T0 + timedelta(days=2.7) <= due <= T0 + timedelta(days=3)
    first = h.store.certificates[HOST].fingerprint
    h.clock.advance((due - T0).total_seconds())
    assert h.store.certificates[HOST].fingerprint != first


def test_ari_window_wins(ca):
    """When the CA offers an ARI window, renewal happens inside it, with `replaces`, not at day 60."""
    h = Harness(ca)
    window = AriWindow(start=T0 + timedelta(days=20), end=T0 + timedelta(days=21))
    # The CA offers the window for the first certificate only.
    h.client.renewal_window = lambda chain: window if len(h.client.orders) == 1 else None
    h.register()
    h.service.startService()
    cert = h.store.certificates[HOST]
    assert cert.ari.start == T0 + timedelta(days=20)
    assert cert.ari.retry_after == T0 + timedelta(hours=6), "no Retry-After given: ask again in 6 h"
    assert h.record().next_attempt == T0 + timedelta(hours=6)
    h.clock.advance(6 * 3600)
    assert h.record().next_attempt == T0 + timedelta(hours=12)
    h.clock.advance((T0 + timedelta(days=20) - h.now()).total_seconds() - 1)
    assert h.store.certificates[HOST].fingerprint == cert.fingerprint, "not renewed before the window"
    h.clock.advance((T0 + timedelta(days=21) - h.now()).total_seconds())
    assert h.store.certificates[HOST].fingerprint != cert.fingerprint
    assert h.client.orders[-1]["replaces"] == cert.ari_cert_id


def test_ari_window_moved_by_ca(ca):
    """When a later ARI answer moves the window earlier (e.g. revocation), renewal follows it."""
    h = Harness(ca)
    h.client.renewal_window = AriWindow(
        start=T0 + timedelta(days=60), end=T0 + timedelta(days=62), retry_after=T0 + timedelta(days=1)
    )
    later = AriWindow(start=T0 + timedelta(days=2), end=T0 + timedelta(days=2, seconds=1))
    h.register()
    h.service.startService()
    first = h.store.certificates[HOST].fingerprint
    h.client.renewal_window = lambda chain: later if len(h.client.orders) == 1 else None
    h.clock.advance(DAY)
    assert h.store.certificates[HOST].ari.start == T0 + timedelta(days=2)
    h.clock.advance(DAY + 1)
    assert h.store.certificates[HOST].fingerprint != first


def test_backoff_follows_schedule(ca):
    """Consecutive failures wait 1 min, 10 min, 100 min, then 24 h, and keep the reason."""
    h = Harness(ca)
    h.client.failures = [AcmeTransportError("connection refused", url="https://ca")] * 5
    h.register()
    h.service.startService()
    delays = []
    for _ in range(5):
        record = h.record()
        assert record.state == DomainState.FAILING
        assert "connection refused" in record.last_error["message"]
        assert record.last_error["code"] == "ca_unreachable"
        delay = (record.next_attempt - h.now()).total_seconds()
        delays.append(delay)
        h.clock.advance(delay)
    assert delays == [60.0, 600.0, 6000.0, 86400.0, 86400.0]
    assert h.record().state == DomainState.ACTIVE
    assert h.record().attempts == 0


def test_backoff_delay_jitter_is_bounded():
    """Jitter stretches a delay by at most 10%."""
    assert backoff_delay(1, (60.0, 600.0)) == 60.0
    assert backoff_delay(9, (60.0, 600.0)) == 600.0
    assert 60.0 <= backoff_delay(1, (60.0,), 0.999) < 66.0


def test_rate_limited_retry_after_honoured_to_the_second(ca):
    """A rateLimited problem with Retry-After pauses the hostname exactly that long."""
    h = Harness(ca)
    h.client.failures = [
        AcmeProblem(type="urn:ietf:params:acme:error:rateLimited", detail="too many", status=429,
                    retry_after=1234.0, links={"help": ("https://ca.invalid/unpause?x=1",)})
    ]
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.PAUSED
    assert record.next_attempt == T0 + timedelta(seconds=1234)
    assert record.unpause_url == "https://ca.invalid/unpause?x=1"
    assert record.last_error["problem"]["type"].endswith("rateLimited")
    h.clock.advance(1233)
    assert len(h.client.orders) == 1
    h.clock.advance(1)
    assert len(h.client.orders) == 2
    assert h.record().state == DomainState.ACTIVE


def test_restart_keeps_next_attempt(ca):
    """A new service on the same store waits for the stored next attempt, not earlier."""
    h = Harness(ca)
    h.client.failures = [AcmeTransportError("down")] * 2
    h.register()
    h.service.startService()
    h.clock.advance(60)
    next_attempt = h.record().next_attempt
    assert next_attempt == h.now() + timedelta(seconds=600)
    h.service.stopService()
    h2 = Harness(ca, store=h.store, clock=h.clock, client=h.client)
    h2.service.startService()
    assert len(h.client.orders) == 2
    h.clock.advance(599)
    assert len(h.client.orders) == 2
    h.clock.advance(1)
    assert len(h.client.orders) == 3
    assert h.record().state == DomainState.ACTIVE


def test_failed_renewal_keeps_old_certificate_and_panics_near_expiry(ca):
    """A failing renewal leaves the old certificate stored; inside the panic interval the hook fires."""
    h = Harness(ca, panic_interval=30 * DAY)
    h.client.lifetime = timedelta(days=90)
    h.register()
    h.service.startService()
    old = h.store.certificates[HOST]
    h.client.failures = [AcmeTransportError("down")] * 100
    h.clock.advance((h.record().next_attempt - h.now()).total_seconds())
    assert h.store.certificates[HOST] == old
    assert h.record().state == DomainState.FAILING
    assert h.panics == []  # ~30+ days left: not yet
    h.clock.advance(5 * DAY)
    h.clock.advance(DAY)
    assert h.panics and h.panics[-1][0] == HOST
    assert h.store.certificates[HOST] == old


def test_preflight_failure_spends_no_order(ca):
    """A hostname that does not point at us is marked failing with the reason; nothing is ordered."""
    preflight = FakePreflight(failing=True)
    h = Harness(ca, preflight=preflight)
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.FAILING
    assert record.last_error["code"] == "points_elsewhere"
    assert "198.51.100.7" in record.last_error["message"]
    assert h.client.orders == []
    preflight.failing = False
    h.clock.advance(60)
    assert h.record().state == DomainState.ACTIVE


def test_self_check_failure_recorded(ca):
    """A failing self-check is recorded with its own code (the fake CA is never asked to validate)."""
    from twisted.internet.defer import fail

    from jobhost.errors import SelfCheckFailed

    def self_check(hostname, token, key_authorization):
        return fail(SelfCheckFailed(hostname, f"http://{hostname}/.well-known/acme-challenge/{token}", "HTTP 404"))

    h = Harness(ca, self_check=self_check)
    h.register()
    h.service.startService()
    assert h.record().last_error["code"] == "self_check_failed"
    assert h.record().last_error["url"] == f"http://{HOST}/.well-known/acme-challenge/token1-0", "the URL that failed"
    assert HOST not in h.store.certificates


def test_order_budget_defers_work(ca):
    """With a budget of 2 orders per hour, a third hostname waits until the window frees."""
    h = Harness(ca, orders_per_window=2, order_window=3600.0)
    for name in ("a.acme-corp.test", "b.acme-corp.test", "c.acme-corp.test"):
        h.register(name)
    with capturedLogs() as events:
        h.service.startService()
    assert len(h.client.orders) == 2
    assert messages(events, LogLevel.warn) == [
        f"Order budget of 2 per 3600.0s is spent; c.acme-corp.test waits until {to_iso(T0 + timedelta(hours=1))}"
    ]
    waiting = h.record("c.acme-corp.test")
    assert waiting.next_attempt == T0 + timedelta(hours=1)
    assert waiting.state == DomainState.PENDING
    h.clock.advance(3600)
    assert len(h.client.orders) == 3
    assert h.record("c.acme-corp.test").state == DomainState.ACTIVE


def test_max_in_flight(ca):
    """No more than max_in_flight orders run at once."""
    h = Harness(ca, max_in_flight=2)
    h.client.pause()
    for i in range(5):
        h.register(f"h{i}.acme-corp.test")
    h.service.startService()
    assert len(h.client.orders) == 2
    h.client.resume(keep_paused=True)
    assert len(h.client.orders) == 4
    h.client.resume()
    assert all(r.state == DomainState.ACTIVE for r in h.store.domains.values())


def test_removed_while_ordering_discards_certificate(ca):
    """A hostname removed while its order runs gets no certificate stored."""
    h = Harness(ca)
    h.client.pause()
    h.register()
    h.service.startService()
    h.store.domains[HOST] = attrs.evolve(h.record(), state=DomainState.REMOVED)
    with capturedLogs() as events:
        h.client.resume()
    assert f"{HOST} was removed while its certificate was ordered; discarding it" in messages(events)
    assert HOST not in h.store.certificates
    assert h.stored == [] and certificate_changes(h.store) == [], "not even stored for a moment"


def test_forget_cancels_in_flight(ca):
    """forget() cancels the attempt in flight; no certificate is stored afterwards."""
    h = Harness(ca)
    h.client.pause()
    h.register()
    h.service.startService()
    assert HOST in h.service._in_flight
    h.service.forget(HOST)
    assert HOST not in h.service._in_flight
    h.client.resume()
    assert HOST not in h.store.certificates
    assert h.store.challenges == {}


def test_lease_held_elsewhere_skips(ca):
    """When another node holds the hostname's lease, this node does not order."""
    h = Harness(ca)
    h.register()
    h.store.acquire_lease(f"issue:{HOST}", "node-b", T0 + timedelta(minutes=10), T0)
    with capturedLogs() as events:
        h.service.startService()
    assert h.client.orders == []
    assert f"Another process is working on {HOST}" in messages(events, LogLevel.debug)
    h.clock.advance(600)  # lease expired; the next scan takes over
    assert len(h.client.orders) == 1


def test_renew_now_forces_early_renewal(ca):
    """renew_now clears backoff and renews even though the certificate is not due."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    first = h.store.certificates[HOST].fingerprint
    h.service.renew_now(HOST)
    assert h.store.certificates[HOST].fingerprint != first


def test_revoke(ca):
    """revoke() sends the stored chain to the CA."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    with capturedLogs() as events:
        h.service.revoke(HOST)
    revoked = h.store.certificates[HOST]
    assert h.client.revoked == [revoked.chain_pem]
    assert messages(events) == [f"Revoked certificate {revoked.serial} for {HOST}"]


def test_past_ari_window_for_new_certificate_does_not_loop(ca):
    """A CA that keeps answering with a window in the past gets at most one order per day."""
    h = Harness(ca)
    h.client.renewal_window = lambda chain: AriWindow(start=T0 - timedelta(days=2), end=T0 - timedelta(days=1))
    h.register()
    h.service.startService()
    for _ in range(3 * 24 * 6):
        h.clock.advance(600)
    assert len(h.client.orders) == 4, "issued at day 0, then renewed once a day (the 1-day floor)"


def test_forced_renewal_survives_failure(ca):
    """A forced renewal that fails is retried with backoff until a new certificate is issued."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    first = h.store.certificates[HOST].fingerprint
    h.client.failures = [AcmeTransportError("down")] * 2
    h.service.renew_now(HOST)
    assert h.record().state == DomainState.FAILING
    assert h.record().renew_requested
    h.clock.advance(59)
    assert len(h.client.orders) == 2, "backoff is honoured"
    h.clock.advance(1)
    h.clock.advance(600)
    assert h.store.certificates[HOST].fingerprint != first
    assert not h.record().renew_requested
    assert h.record().state == DomainState.ACTIVE


def test_forgotten_account_is_registered_again_in_the_same_attempt(ca):
    """When the CA no longer knows the account, it is registered again and the order retried at once."""
    h = Harness(ca)
    h.client.failures = [AcmeProblem(type="urn:ietf:params:acme:error:accountDoesNotExist", detail="no account", status=400)]
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    assert h.record().state == DomainState.ACTIVE
    assert len(h.client.orders) == 2
    assert len(h.client.registrations) == 2
    assert len(h.store.accounts) == 1
    assert f"The CA does not know account {h.client.account_url}; registering again" in messages(events, LogLevel.warn)


# -- one owner, atomic updates, leases kept fresh, permanent errors ------------------------------


def test_page_edit_during_an_attempt_keeps_page_and_outcome(ca):
    """A page PUT while the attempt waits on the CA keeps the new page, and the attempt still records active."""
    h = Harness(ca)
    h.client.pause()
    h.register()
    h.service.startService()
    assert h.record().state == DomainState.ISSUING
    edited = h.domains.set_page(HOST, {"title": "Edited while ordering"})
    assert edited.called and edited.result.page == {"title": "Edited while ordering"}
    h.client.resume()
    record = h.record()
    assert record.state == DomainState.ACTIVE
    assert record.page == {"title": "Edited while ordering"}
    assert HOST in h.store.certificates


def test_page_edit_during_a_failing_attempt_keeps_page_and_failure(ca):
    """A page PUT while the attempt waits keeps the page when the attempt then fails, and the failure is recorded."""
    h = Harness(ca)
    h.client.pause()
    h.client.failures.append(AcmeProblem(type="urn:ietf:params:acme:error:serverInternal", detail="oops", status=500))
    h.register()
    h.service.startService()
    h.domains.set_page(HOST, {"title": "Kept"})
    h.client.resume()
    record = h.record()
    assert (record.state, record.page, record.attempts) == (DomainState.FAILING, {"title": "Kept"}, 1)


def test_attempt_longer_than_its_lease_keeps_the_lease(ca):
    """An attempt that runs for longer than lease_duration keeps its lease: no other holder can take it meanwhile."""
    h = Harness(ca, lease_duration=600.0)
    h.client.pause()
    h.register()
    h.service.startService()
    for step in [1] + [250] * 6:  # from its first second to 1,500 s: two and a half lease durations
        h.clock.advance(step)
        taken = h.store.acquire_lease(f"issue:{HOST}", "node-b", h.now() + timedelta(seconds=600), h.now())
        assert taken.result is False, f"node-b took the lease after {h.clock.seconds() - T0.timestamp()} s"
    h.client.resume()
    assert h.record().state == DomainState.ACTIVE
    assert f"issue:{HOST}" not in h.store.leases, "the lease is released after the attempt"
    h.clock.advance(600)
    assert f"issue:{HOST}" not in h.store.leases, "the heartbeat stopped with the attempt"


def test_lost_lease_abandons_the_attempt(ca):
    """When another holder takes the lease (ours expired unseen), the next heartbeat cancels the attempt: no certificate."""
    h = Harness(ca, lease_duration=600.0)
    h.client.pause()
    h.register()
    h.service.startService()
    h.store.leases[f"issue:{HOST}"] = Lease(f"issue:{HOST}", "node-b", h.now() + timedelta(hours=1))
    h.clock.advance(199)
    assert HOST in h.service._in_flight, "no heartbeat yet"
    with capturedLogs() as events:
        h.clock.advance(1)  # the heartbeat at a third of the duration finds node-b holding it
    assert HOST not in h.service._in_flight
    assert f"Lost lease issue:{HOST} while working on {HOST}; abandoning the attempt" in messages(events, LogLevel.warn)
    h.client.resume()
    assert HOST not in h.store.certificates
    assert h.store.leases[f"issue:{HOST}"].holder == "node-b", "node-b keeps the lease it took"


def test_lease_lost_before_storing_stores_nothing(ca):
    """An order that completes after another holder took the lease is not stored (that holder's order wins)."""
    h = Harness(ca, lease_duration=600.0)
    h.client.pause()
    h.register()
    h.service.startService()
    h.store.leases[f"issue:{HOST}"] = Lease(f"issue:{HOST}", "node-b", h.now() + timedelta(hours=1))
    with capturedLogs() as events:
        h.client.resume()  # before any heartbeat: the check just before storing finds the lease gone
    assert HOST not in h.store.certificates
    assert h.record().state == DomainState.ISSUING, "left to the new holder as it was"
    assert any(m.endswith(f"; {HOST} is left to the new holder") for m in messages(events, LogLevel.warn))
    assert unexpected_failures(events) == [], "losing the lease is not an unexpected error"


@pytest.mark.parametrize("problem_type", ["badCSR", "rejectedIdentifier"])
def test_permanent_error_parks_until_renew(ca, problem_type):
    """A CA refusal that retrying cannot fix parks the domain (retryable false, no next attempt) until renew_now."""
    h = Harness(ca)
    h.client.failures.append(
        AcmeProblem(type=f"urn:ietf:params:acme:error:{problem_type}", detail="refused", status=400)
    )
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    record = h.record()
    assert record.state == DomainState.FAILING and record.parked
    assert record.last_error["retryable"] is False and record.next_attempt is None
    assert messages(events, LogLevel.error) == [
        f"Certificate for {HOST} failed and cannot succeed by retrying: {record.last_error['message']}; "
        "parked until an operator asks for a renewal"
    ]
    h.clock.advance(30 * DAY)
    h.service.kick(HOST)
    assert len(h.client.orders) == 1, "no further order while parked, even when kicked"
    h.service.renew_now(HOST)
    assert len(h.client.orders) == 2
    assert h.record().state == DomainState.ACTIVE


def test_transient_error_is_retryable(ca):
    """A CA error that may pass (serverInternal) backs off with retryable true and a next attempt."""
    h = Harness(ca)
    h.client.failures.append(AcmeProblem(type="urn:ietf:params:acme:error:serverInternal", detail="x", status=500))
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    record = h.record()
    assert record.last_error["retryable"] is True and record.next_attempt is not None
    assert not record.parked
    assert messages(events, LogLevel.warn) == [
        f"Certificate for {HOST} failed (attempt 1): {record.last_error['message']}; "
        f"next attempt at {to_iso(T0 + timedelta(seconds=60))}"
    ]
    assert messages(events, LogLevel.error) == []


def test_order_budget_is_shared_through_the_store(ca):
    """Two services on one store share one order budget: the second finds it spent by the first."""
    h = Harness(ca, orders_per_window=1, order_window=3600.0)
    other = Harness(ca, store=h.store, clock=h.clock, orders_per_window=1, order_window=3600.0)
    h.register("a.acme-corp.test")
    h.service.startService()
    assert len(h.client.orders) == 1
    other.register("b.acme-corp.test")
    other.service.kick("b.acme-corp.test")
    assert other.client.orders == []
    assert h.record("b.acme-corp.test").next_attempt == T0 + timedelta(hours=1)


@attrs.define
class GatedAriClient(FakeAcmeClient):
    """A fake CA whose renewal-information answers wait on :attr:`gate` when it is set."""

    gate: Deferred | None = None

    def renewal_info(self, leaf_pem):
        if self.gate is None:
            return super().renewal_info(leaf_pem)
        return self.gate.addCallback(lambda _: super(GatedAriClient, self).renewal_info(leaf_pem))


def waiting_on_ari(ca):
    """An active hostname whose next check is waiting on the CA's renewal-information answer.

    Returns the harness and the Deferred that releases the answer.
    """
    clock = Clock()
    clock.advance(T0.timestamp())
    client = GatedAriClient(ca=ca, clock=clock)
    h = Harness(ca, clock=clock, client=client)
    h.client.renewal_window = AriWindow(start=T0 + timedelta(days=50), end=T0 + timedelta(days=51))
    h.register()
    h.service.startService()
    assert h.record().state == DomainState.ACTIVE
    gate = client.gate = Deferred()
    h.clock.advance(6 * 3600)  # time to ask the CA again: the attempt now waits on `gate`
    assert HOST in h.service._in_flight
    return h, gate


def test_page_edit_while_asking_the_ca_for_renewal_information_is_kept(ca):
    """A page PUT while the "not due" path waits on the ARI request survives that path's write (the reported lost update)."""
    h, gate = waiting_on_ari(ca)
    h.domains.set_page(HOST, {"title": "Edited during ARI"})
    with capturedLogs() as events:
        gate.callback(None)
    assert not [m for m in messages(events) if "changed while" in m], "the window was stored with its certificate"
    record = h.record()
    assert record.page == {"title": "Edited during ARI"}
    assert record.state == DomainState.ACTIVE and record.next_attempt == T0 + timedelta(hours=12)


def test_certificate_replaced_while_asking_for_renewal_information_is_kept(ca):
    """A certificate put by an operator while the ARI request waits is not overwritten by the old one with its window."""
    h, gate = waiting_on_ari(ca)
    key_pem, chain_pem = ca.issue(HOST)
    imported = certificate_record(HOST, key_pem, chain_pem)
    h.store.put_certificate(imported)
    with capturedLogs() as events:
        gate.callback(None)
    assert h.store.certificates[HOST].fingerprint == imported.fingerprint
    assert f"The certificate of {HOST} changed while its renewal window was asked for" in messages(events)


def test_preflight_learns_the_account_uri(ca):
    """Once the account is registered, preflight is told its URL, so CAA accounturi applies."""
    preflight = FakePreflight()
    h = Harness(ca, preflight=preflight)
    h.register()
    h.service.startService()
    assert preflight.account_uri == h.client.account_url
    assert preflight.account_uri is not None


def test_unreadable_domain_record_is_reported_once_and_others_are_issued(ca, tmp_path):
    """A corrupt domain file is logged once over many scans (again only when its fault changes); the others are issued."""
    from twisted.internet.defer import maybeDeferred
    from twisted.logger import capturedLogs

    from jobhost.store.directory import DirectoryStore

    store = DirectoryStore(str(tmp_path / "store"), lambda f, *a: maybeDeferred(f, *a))
    h = Harness(ca, store=store, scan_interval=600.0)
    now = h.now()
    store.add_domain(DomainRecord("good.acme-corp.test", DomainState.PENDING, now, now))
    store.add_domain(DomainRecord("bad.acme-corp.test", DomainState.PENDING, now, now))
    (tmp_path / "store" / "domains" / "bad.acme-corp.test.json").write_text("{not json")
    with capturedLogs() as events:
        h.service.startService()
        for _ in range(3):
            h.clock.advance(600)
        (tmp_path / "store" / "domains" / "bad.acme-corp.test.json").write_text('{"hostname": "x"}')
        h.clock.advance(600)
    about_bad = [e for e in events if "bad.acme-corp.test" in str(e.get("hostname", "")) + str(e.get("file", ""))]
    assert len(about_bad) == 2, [e.get("log_format") for e in about_bad]
    assert all("Traceback" not in str(e) for e in about_bad)
    good = []
    store.get_domain("good.acme-corp.test").addCallback(good.append)
    assert good[0].state == DomainState.ACTIVE


def test_one_node_scans_a_shared_store_and_another_takes_over_when_it_stops(ca):
    """Of two nodes on one store only the scan lease holder scans; once it stops, the other's next scan does."""
    h = Harness(ca, scan_interval=600.0)
    other = Harness(ca, store=h.store, clock=h.clock, scan_interval=600.0, holder="node-b")
    h.register("a.acme-corp.test")
    h.service.startService()
    other.service.startService()
    assert len(h.client.orders) == 1 and other.client.orders == []
    other.register("b.acme-corp.test")
    with capturedLogs() as events:
        assert other.service.scan().result == 0, "node-b leaves scanning to node-a"
    assert messages(events) == ["Another node scans the store; this one only works on what it is asked to"]
    assert other.client.orders == []
    h.clock.advance(600)
    assert len(h.client.orders) == 2 and other.client.orders == []
    h.service.stopService()
    other.register("c.acme-corp.test")
    h.clock.advance(600)
    assert [o["hostnames"] for o in other.client.orders] == [["c.acme-corp.test"]]


# -- what the service is made of ------------------------------------------------------------------


def unconfigured_service(ca, **kwargs):
    """An IssuingService given only what it cannot do without (as a test or a tool builds one)."""
    clock = clock_at_t0()
    store = MemoryStore()
    client = FakeAcmeClient(ca=ca, clock=clock)
    return IssuingService(store=store, domains=DomainService(store=store, clock=clock), client=client,
                          clock=clock, directory_url=client.directory_url, **kwargs)


def test_service_defaults_are_the_daemons_configuration_defaults(ca):
    """A service built without settings (tests, tools) follows the policy of the daemon's default configuration."""
    service = unconfigured_service(ca)
    renewal, acme = RenewalConfig(), AcmeConfig()
    for name in ("scan_interval", "backoff", "max_in_flight", "orders_per_window", "order_window",
                 "panic_interval", "lease_duration"):
        assert getattr(service, name) == getattr(renewal, name), name
    for name in ("key_type", "account_key_type", "contact", "terms_agreed", "profile"):
        assert getattr(service, name) == getattr(acme, name), name


def test_runtime_state_is_not_a_constructor_argument(ca):
    """Only configuration is passed in: what the service holds or learns while running cannot be preset."""
    assert unconfigured_service(ca).ca_reachable is None, "not known before the first order"
    for name in ("in_flight", "account", "account_lock", "scan_loop", "wake_call", "scanning", "idle_waiters",
                 "ca_reachable", "broken"):
        with pytest.raises(TypeError):
            unconfigured_service(ca, **{name: None})


def test_two_services_configured_alike_are_still_two_services(ca):
    """Services are told apart by identity, as Twisted's are: a parent removes the one it is given; both hash."""
    from twisted.application.service import MultiService

    h = Harness(ca)
    twin = IssuingService(**{a.name: getattr(h.service, a.name) for a in attrs.fields(IssuingService) if a.init})
    parent = MultiService()
    h.service.setServiceParent(parent)
    twin.setServiceParent(parent)
    parent.removeService(twin)
    assert [s is h.service for s in parent] == [True]
    assert len({h.service, twin}) == 2


def test_the_default_lease_holder_is_this_machines_host_name(ca):
    """Leases are held under the host name unless told otherwise, so a restarted node takes its own leases back."""
    assert unconfigured_service(ca).holder == default_holder() == socket.gethostname()


# -- what is recorded and logged for a failure ------------------------------------------------------


def test_last_error_documents_carry_the_cause():
    """A failure's document names the CA's problem (also inside an authorization), the failing URL, or the reasons."""
    caa = AcmeProblem(type=ACME + "caa", detail="CAA forbids", status=403)
    doc = describe_failure(Failure(AuthorizationFailed(HOST, "invalid", caa)))
    assert doc["problem"] == {"type": ACME + "caa", "detail": "CAA forbids", "status": 403}
    assert "problem" not in describe_failure(Failure(AuthorizationFailed(HOST, "invalid")))
    url = f"http://{HOST}/.well-known/acme-challenge/t"
    assert describe_failure(Failure(SelfCheckFailed(HOST, url, "HTTP 404")))["url"] == url
    reason = PreflightReason(ReasonCode.POINTS_ELSEWHERE, "points at 198.51.100.7")
    assert describe_failure(Failure(PreflightFailed(HOST, (reason,))))["reasons"] == [reason.to_json()]
    assert describe_failure(Failure(RuntimeError())) == {"message": "RuntimeError", "code": "internal"}


@pytest.mark.parametrize(
    "links, detail, unpause",
    [
        ({"unpause": ("https://ca.invalid/unpause/1",)}, "too many", "https://ca.invalid/unpause/1"),
        ({}, "see https://ca.invalid/docs/rate-limits or https://ca.invalid/sfe/unpause?jwt=x).",
         "https://ca.invalid/sfe/unpause?jwt=x"),
        ({}, "too many certificates (5) already issued for this exact set of domains", None),
    ],
)
def test_rate_limited_hostname_records_where_to_unpause(ca, links, detail, unpause):
    """A rate limit's unpause URL comes from its Link header or from the first https unpause link in its detail."""
    h = Harness(ca)
    h.client.failures = [AcmeProblem(type=ACME + "rateLimited", detail=detail, status=429, links=links)]
    h.register()
    h.service.startService()
    assert h.record().state == DomainState.PAUSED
    assert h.record().unpause_url == unpause


def test_default_panic_hook_logs_critical_naming_hostname_and_expiry(ca):
    """Without a panic hook, a renewal failing close to expiry is a CRITICAL log line an operator can alert on."""
    key_pem, chain_pem = ca.issue(HOST, not_before=T0, lifetime=timedelta(days=6))
    certificate = certificate_record(HOST, key_pem, chain_pem)
    with capturedLogs() as events:
        log_panic(HOST, certificate, Failure(RuntimeError("CA down")))
    assert [(e["log_level"], formatEvent(e)) for e in events] == [(
        LogLevel.critical,
        f"Renewal for {HOST} keeps failing and its certificate expires at {to_iso(T0 + timedelta(days=6))}: CA down",
    )]


@pytest.mark.parametrize("left, panics", [(7 * DAY, False), (7 * DAY - 1, True)])
def test_panic_starts_inside_the_panic_interval(ca, left, panics):
    """A failing renewal panics when less than panic_interval of the certificate is left, not at exactly that much."""
    h = Harness(ca, panic_interval=7 * DAY)
    not_after = T0 + timedelta(seconds=left)
    key_pem, chain_pem = ca.issue(HOST, not_before=not_after - timedelta(days=90), lifetime=timedelta(days=90))
    h.register()
    h.store.certificates[HOST] = certificate_record(HOST, key_pem, chain_pem)
    h.client.failures = [AcmeTransportError("down")]
    h.service.kick(HOST)
    assert h.record().state == DomainState.FAILING
    assert [hostname for hostname, _ in h.panics] == ([HOST] if panics else [])


def test_a_failing_panic_hook_is_logged_and_the_retry_still_happens(ca):
    """A panic hook that raises is logged; the failure is recorded and retried as usual."""

    def panic(hostname, certificate, failure):
        raise RuntimeError("pager unreachable")

    h = Harness(ca, panic=panic, panic_interval=100 * DAY)
    h.register()
    h.service.startService()
    h.client.failures = [AcmeTransportError("down")]
    with capturedLogs() as events:
        h.service.renew_now(HOST)
    assert h.record().state == DomainState.FAILING
    assert h.record().next_attempt == T0 + timedelta(seconds=60)
    assert [formatEvent(e) for e in unexpected_failures(events)] == [f"panic hook failed for {HOST}"]
    h.clock.advance(60)
    assert h.record().state == DomainState.ACTIVE


def test_an_unexpected_error_is_logged_with_its_traceback_and_retried(ca):
    """An error that is not jobhost's own (a library's) is logged with its traceback; the hostname backs off."""
    h = Harness(ca)
    h.client.failures = [RuntimeError("bug in a library")]
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    record = h.record()
    assert (record.state, record.last_error["code"], record.last_error["retryable"]) == (
        DomainState.FAILING, "internal", True)
    [logged] = unexpected_failures(events)
    assert formatEvent(logged) == f"Unexpected error while working on {HOST}"
    assert logged["log_failure"].check(RuntimeError)


def test_a_known_error_is_logged_without_a_traceback(ca):
    """A CA outage is logged as one warning line, not as an unexpected error."""
    h = Harness(ca)
    h.client.failures = [AcmeTransportError("connection refused")]
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    assert h.record().state == DomainState.FAILING
    assert unexpected_failures(events) == []


def test_an_events_sink_that_raises_is_logged(ca):
    """An events sink that raises is logged naming the event and hostname; the certificate is stored."""

    class Raising:
        def notify(self, event, record, certificate):
            raise RuntimeError("webhook queue full")

    h = Harness(ca, events=Raising())
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    assert HOST in h.store.certificates
    assert [formatEvent(e) for e in unexpected_failures(events)] == [f"Event active for {HOST} could not be sent"]


def test_metrics_count_attempts_successes_failures_and_rate_limits(ca):
    """The metrics see every attempt, each failure by its code, rate limits, and how long a success took."""
    metrics = Metrics()
    h = Harness(ca, metrics=metrics)
    h.client.failures = [AcmeTransportError("down"), rate_limited(100.0)]
    h.register()
    h.service.startService()
    h.clock.advance(60)
    h.client.pause()
    h.clock.advance(100)
    h.clock.advance(30)  # the third order takes 30 s
    h.client.resume()
    assert h.record().state == DomainState.ACTIVE
    value = metrics.registry.get_sample_value
    assert value("jobhost_issuance_attempts_total") == 3
    assert value("jobhost_issuance_failures_total", {"reason": "ca_unreachable"}) == 1
    assert value("jobhost_issuance_failures_total", {"reason": "rateLimited"}) == 1
    assert value("jobhost_rate_limited_total") == 1
    assert value("jobhost_issuance_success_total") == 1
    assert value("jobhost_issuance_seconds_sum") == 30.0


def test_issuance_and_renewal_are_logged_for_the_operator(ca):
    """A first certificate and a renewal each leave one line saying what happened; nothing else is logged."""
    h = Harness(ca)
    h.client.renewal_window = AriWindow(start=T0 + timedelta(days=50), end=T0 + timedelta(days=51))
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    new = h.store.certificates[HOST]
    assert messages(events) == [
        f"Using ACME account {h.client.account_url} at {h.client.directory_url}",
        f"Issued certificate for {HOST} from {h.client.directory_url}, expires {to_iso(new.not_after)}, "
        f"renewal due {to_iso(renewal_time(new))}",
    ]
    with capturedLogs() as events:
        h.service.renew_now(HOST)
    renewed = h.store.certificates[HOST]
    assert messages(events) == [
        f"Renewed certificate for {HOST} from {h.client.directory_url}, expires {to_iso(renewed.not_after)}, "
        f"renewal due {to_iso(renewal_time(renewed))}",
    ]


# -- lifecycle ---------------------------------------------------------------------------------------


def test_start_and_stop_follow_the_service_contract(ca):
    """running is true between start and stop; stopping fires once the scan lease is handed back to the store."""
    store = FaultyStore()
    h = Harness(ca, store=store)
    h.service.startService()
    assert h.service.running
    scan_lease = f"scan:{h.client.directory_url}"
    assert scan_lease in store.leases
    gate = Deferred()
    store.faults["release_lease"].append(gate)
    stopped = h.service.stopService()
    assert not h.service.running
    assert not stopped.called, "waits for the store"
    gate.callback(None)
    assert stopped.called and stopped.result is None
    assert scan_lease not in store.leases


def test_stopping_a_service_never_started_or_stopping_twice_is_harmless(ca):
    """stopService before startService, or a second time, fires with None and raises nothing."""
    h = Harness(ca)
    assert h.service.stopService().result is None
    h.service.startService()
    assert h.service.stopService().result is None
    assert h.service.stopService().result is None


def test_a_stopped_service_leaves_no_timers_and_orders_nothing_more(ca):
    """After stopService no scan and no retry is pending: a failed hostname is not retried by this service."""
    h = Harness(ca)
    h.client.failures = [AcmeTransportError("down")]
    h.register()
    h.service.startService()
    assert h.record().next_attempt == T0 + timedelta(seconds=60)
    h.service.stopService()
    assert h.clock.getDelayedCalls() == []
    h.clock.advance(DAY)
    assert len(h.client.orders) == 1


def test_stopping_cancels_the_attempt_in_flight(ca):
    """An attempt in flight at stop is cancelled: nothing is stored, its challenge and leases are released."""
    h = Harness(ca)
    h.client.pause()
    h.register()
    h.service.startService()
    h.service.stopService()
    h.client.resume()
    assert HOST not in h.store.certificates
    assert h.store.challenges == {}
    assert h.store.leases == {}


def test_stop_fires_even_when_the_scan_lease_cannot_be_released(ca):
    """A store that fails to release the scan lease is logged; stopping still completes (the lease lapses)."""
    store = FaultyStore()
    h = Harness(ca, store=store)
    h.service.startService()
    store.faults["release_lease"].append(StoreError("database away"))
    with capturedLogs() as events:
        stopped = h.service.stopService()
    assert stopped.result is None
    assert [formatEvent(e) for e in unexpected_failures(events)] == ["Could not release the scan lease"]


def test_when_idle_waits_for_attempts_and_scans(ca):
    """when_idle fires at once when nothing runs, else once the last attempt and the scan have finished."""
    store = FaultyStore()
    h = Harness(ca, store=store)
    assert h.service.when_idle().result is None
    h.client.pause()
    h.register()
    h.service.startService()
    idle = h.service.when_idle()
    assert not idle.called
    h.client.resume()
    assert idle.called, "the attempt finished"
    h.client.pause()
    h.register("b.acme-corp.test")
    h.service.kick("b.acme-corp.test")
    gate = Deferred()
    store.faults["due_domains"].append(gate)
    h.clock.advance(600)  # the next scan waits on the store
    idle = h.service.when_idle()
    h.client.resume()
    assert not idle.called, "the scan still runs"
    gate.callback(None)
    assert idle.called


# -- what callers ask -----------------------------------------------------------------------------------


def test_kick_on_a_hostname_with_a_valid_certificate_orders_nothing(ca):
    """kick() works on a hostname; one whose certificate is valid and not due is only confirmed."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    h.service.kick(HOST)
    assert len(h.client.orders) == 1
    assert h.record().state == DomainState.ACTIVE


def test_kick_during_backoff_waits_for_the_next_attempt_even_between_scans(ca):
    """A hostname kicked while it backs off is not ordered early, and is ordered at its next attempt."""
    h = Harness(ca, scan_interval=DAY)
    h.service.startService()
    h.store.domains[HOST] = DomainRecord(HOST, DomainState.FAILING, T0, T0, attempts=1,
                                         next_attempt=T0 + timedelta(seconds=100))
    h.service.kick(HOST)
    h.clock.advance(99)
    assert h.client.orders == []
    h.clock.advance(1)
    assert len(h.client.orders) == 1
    assert h.record().state == DomainState.ACTIVE


def test_forget_fires_at_once_and_logs_the_stop_as_such(ca):
    """forget() fires with None at once (also for a hostname not being worked on); the stop is no error."""
    h = Harness(ca)
    h.client.pause()
    h.register()
    h.service.startService()
    with capturedLogs() as events:
        forgotten = h.service.forget(HOST)
    assert forgotten.called and forgotten.result is None
    assert f"Stopped working on {HOST}" in messages(events, LogLevel.info)
    assert unexpected_failures(events) == []
    assert h.service.forget("other.acme-corp.test").result is None


def test_revoke_right_after_a_restart_registers_the_account_first(ca):
    """revoke() as the first thing after a restart finds the account at the CA before it asks to revoke."""
    h = Harness(ca)
    h.register()
    h.service.startService()
    h.service.stopService()
    chain_pem = h.store.certificates[HOST].chain_pem
    h.client.account_key = h.client.account_url = None  # a new process: its ACME client has no account yet
    restarted = Harness(ca, store=h.store, clock=h.clock, client=h.client)
    assert restarted.service.revoke(HOST).result is None
    assert h.client.revoked == [chain_pem]


def test_a_renewal_request_answered_by_another_nodes_certificate_is_not_repeated(ca):
    """renew_now is answered by the next certificate issued, whichever node issues it: no second order."""
    h = Harness(ca, max_in_flight=1)
    h.register("a.acme-corp.test")
    h.register("b.acme-corp.test")
    h.service.startService()
    h.client.pause()
    h.service.renew_now("a.acme-corp.test")  # holds the only slot, waiting on the CA
    h.service.renew_now("b.acme-corp.test")  # waits for the slot
    h.domains.start_attempt("b.acme-corp.test", renewing=True)  # meanwhile another node renews b
    key_pem, chain_pem = ca.issue("b.acme-corp.test", not_before=h.now())
    renewed_elsewhere = certificate_record("b.acme-corp.test", key_pem, chain_pem)
    h.store.put_certificate(renewed_elsewhere)
    h.domains.issued("b.acme-corp.test", True, renewal_time(renewed_elsewhere))
    h.client.resume()
    assert [o["hostnames"] for o in h.client.orders[2:]] == [["a.acme-corp.test"]]
    assert h.store.certificates["b.acme-corp.test"].fingerprint == renewed_elsewhere.fingerprint
    assert h.record("b.acme-corp.test").state == DomainState.ACTIVE


def test_an_attempt_that_cannot_read_the_store_is_logged_as_unexpected(ca):
    """An attempt that fails outside the CA conversation (the store) is logged with its traceback; its lease is released."""
    store = FaultyStore()
    store.faults["get_domain"].append(StoreError("database away"))
    h = Harness(ca, store=store)
    h.register()
    with capturedLogs() as events:
        h.service.kick(HOST)
    [logged] = unexpected_failures(events)
    assert formatEvent(logged) == f"Attempt for {HOST} failed unexpectedly"
    assert h.service.when_idle().called
    assert h.store.leases == {}


def test_store_responder_publishes_the_challenge_for_every_node_and_withdraws_it():
    """The HTTP-01 answer is written to the shared store (when, for whom) and deleted afterwards."""
    clock = clock_at_t0()
    store = MemoryStore()
    responder = StoreResponder(store, clock)
    assert responder.start_responding(HOST, "tok", "tok.thumb").result is None
    assert store.challenges == {"tok": Challenge(token="tok", key_authorization="tok.thumb", hostname=HOST,
                                                 created_at=T0)}
    assert responder.stop_responding(HOST, "tok").result is None
    assert store.challenges == {}


def test_store_responder_reports_a_challenge_it_could_not_store():
    """When the store cannot take the answer, the ACME client is told (before it asks the CA to validate)."""
    store = FaultyStore()
    store.faults["put_challenge"].append(StoreError("disk full"))
    failures = []
    StoreResponder(store, clock_at_t0()).start_responding(HOST, "tok", "tok.thumb").addErrback(failures.append)
    assert [f.check(StoreError) for f in failures] == [StoreError]


# -- scanning ---------------------------------------------------------------------------------------------


def test_scan_submits_due_hostnames_and_wakes_for_the_earliest_later_one(ca):
    """A scan submits what is due (not removed or parked ones), and the earliest later one is ordered on time."""
    h = Harness(ca, scan_interval=DAY)
    parked_error = {"code": "badCSR", "message": "refused", "retryable": False}
    for name, state, extra in [
        ("a-removed", DomainState.REMOVED, {}),
        ("b-parked", DomainState.FAILING, {"last_error": parked_error}),
        ("c-due", DomainState.PENDING, {}),
        ("d-later", DomainState.FAILING, {"next_attempt": T0 + timedelta(seconds=300)}),
        ("e-sooner", DomainState.FAILING, {"next_attempt": T0 + timedelta(seconds=120)}),
        ("f-due-now", DomainState.FAILING, {"next_attempt": T0}),
    ]:
        h.store.domains[f"{name}.test"] = DomainRecord(f"{name}.test", state, T0, T0, **extra)
    assert h.service.scan().result == 2
    assert [o["hostnames"] for o in h.client.orders] == [["c-due.test"], ["f-due-now.test"]]
    h.clock.advance(119)
    assert len(h.client.orders) == 2
    h.clock.advance(1)
    assert h.client.orders[-1]["hostnames"] == ["e-sooner.test"]
    h.clock.advance(180)
    assert h.client.orders[-1]["hostnames"] == ["d-later.test"]


def test_scan_reads_every_page_of_a_large_store(ca):
    """More hostnames than one page of the store are all submitted, each once."""
    h = Harness(ca, max_in_flight=1)
    h.client.pause()  # the attempts queue behind the first
    for i in range(1001):
        h.register(f"h{i:04d}.acme-corp.test")
    assert h.service.scan().result == 1001


def test_scan_pages_past_an_unreadable_record_at_the_end_of_a_page(ca, tmp_path):
    """An unusable record that ends a page of the store does not stop the scan: the records after it are submitted."""
    store = DirectoryStore(str(tmp_path / "store"), lambda f, *a: maybeDeferred(f, *a))
    h = Harness(ca, store=store, max_in_flight=1)
    h.client.pause()
    names = [f"h{i:04d}.acme-corp.test" for i in range(501)]
    store.add_domain(DomainRecord(names[0], DomainState.PENDING, T0, T0))
    folder = tmp_path / "store" / "domains"
    stored = (folder / f"{names[0]}.json").read_bytes()
    for name in names[1:]:  # copies of the first file, as the store writes them (without its fsyncs: faster)
        (folder / f"{name}.json").write_bytes(stored.replace(names[0].encode(), name.encode()))
    (folder / f"{names[499]}.json").write_text("{not json")
    assert h.service.scan().result == 500


def test_a_scan_asked_for_while_one_runs_is_that_scan(ca):
    """scan() while a scan runs returns that scan (the store is read once); the next scan after it reads afresh."""
    store = FaultyStore()
    h = Harness(ca, store=store)
    h.register()
    gate = Deferred()
    store.faults["due_domains"].append(gate)
    first = h.service.scan()
    second = h.service.scan()
    assert not second.called
    gate.callback(None)
    assert first.result == second.result == 1
    assert len(h.client.orders) == 1
    h.register("b.acme-corp.test")
    h.register("c.acme-corp.test")
    assert h.service.scan().result == 2


def test_a_scan_that_cannot_read_the_store_submits_nothing_and_the_next_one_does(ca):
    """A store failure during a scan is logged and counts 0; the next scan works."""
    store = FaultyStore()
    store.faults["due_domains"].append(StoreError("database away"))
    h = Harness(ca, store=store)
    h.register()
    with capturedLogs() as events:
        assert h.service.scan().result == 0
    assert [formatEvent(e) for e in unexpected_failures(events)] == [
        "Scan of domain records failed; next scan will retry"
    ]
    assert h.client.orders == []
    assert h.service.scan().result == 1


def test_a_node_that_stopped_scanning_unannounced_is_replaced_after_two_scan_intervals(ca):
    """The scan lease outlives two scan intervals: another node's scan takes over exactly then, not sooner."""
    h = Harness(ca, scan_interval=600.0)
    other = Harness(ca, store=h.store, clock=h.clock, scan_interval=600.0, holder="node-b")
    h.service.scan()  # node-a scans once, then dies without a word
    other.service.startService()
    other.register("b.acme-corp.test")
    h.clock.advance(1199)
    assert other.client.orders == []
    h.clock.advance(1)
    assert [o["hostnames"] for o in other.client.orders] == [["b.acme-corp.test"]]


def test_only_the_earliest_retry_timer_is_kept(ca):
    """With several hostnames backing off, one timer is pending, for the earliest retry, and each is retried on time."""
    h = Harness(ca, scan_interval=DAY)
    h.client.failures = [rate_limited(1000.0), AcmeTransportError("down"), rate_limited(6000.0)]
    for name in ("a.acme-corp.test", "b.acme-corp.test", "c.acme-corp.test"):
        h.register(name)
    h.service.startService()  # a waits 1000 s, b 60 s, c 6000 s
    assert len(h.clock.getDelayedCalls()) == 2, "the scan loop and one retry timer"
    h.clock.advance(60)
    assert h.record("b.acme-corp.test").state == DomainState.ACTIVE
    h.clock.advance(939)
    assert h.record("a.acme-corp.test").state == DomainState.PAUSED
    h.clock.advance(1)
    assert h.record("a.acme-corp.test").state == DomainState.ACTIVE
    h.clock.advance(5000)
    assert h.record("c.acme-corp.test").state == DomainState.ACTIVE
    assert len(h.client.orders) == 6


def test_retry_after_zero_retries_at_once(ca):
    """A rate limit whose Retry-After is 0 (or a date already past) is retried at once, not a second later."""
    h = Harness(ca, scan_interval=DAY)
    h.client.failures = [rate_limited(0.0)]
    h.register()
    h.service.startService()
    assert len(h.client.orders) == 1
    h.clock.advance(0)
    assert len(h.client.orders) == 2
    assert h.record().state == DomainState.ACTIVE


# -- leases -----------------------------------------------------------------------------------------------


def test_a_store_hiccup_during_a_heartbeat_does_not_abandon_the_attempt(ca):
    """A heartbeat that cannot reach the store is logged and tried again next beat; the attempt goes on."""
    store = FaultyStore()
    h = Harness(ca, store=store)
    h.client.pause()
    h.register()
    h.service.startService()
    store.faults["acquire_lease"].append(StoreError("database restarting"))
    with capturedLogs() as events:
        h.clock.advance(200)
    assert HOST in h.service._in_flight
    assert any(m.startswith(f"Could not renew lease issue:{HOST}: ") for m in messages(events, LogLevel.warn))
    h.client.resume()
    assert HOST in h.store.certificates


def account_lease(directory_url):
    """The registration lease every node takes for ``directory_url`` (its name is shared by every version)."""
    return "account:" + hashlib.sha256(directory_url.encode()).hexdigest()[:16]


def test_registration_waits_for_another_node_registering_and_releases_its_lease(ca):
    """While another node registers (holds the registration lease), this one polls each second, then registers."""
    h = Harness(ca)
    name = account_lease(h.client.directory_url)
    h.store.acquire_lease(name, "node-b", T0 + timedelta(seconds=5), T0)
    h.register()
    h.service.startService()
    h.clock.advance(4)
    assert h.client.registrations == []
    h.clock.advance(1)
    assert len(h.client.registrations) == 1
    assert h.record().state == DomainState.ACTIVE
    assert name not in h.store.leases, "released once registered"


def test_the_registration_lease_keeps_other_nodes_out_for_a_minute(ca):
    """A registration holds its lease for 60 s: a node that died registering blocks the others no longer."""
    clock = clock_at_t0()
    gate = Deferred()
    client = FaultyClient(ca=ca, clock=clock, register_faults=[gate])
    h = Harness(ca, clock=clock, client=client)
    name = account_lease(h.client.directory_url)
    h.register()
    h.service.startService()

    def node_b_takes_it():
        return h.store.acquire_lease(name, "node-b", h.now() + timedelta(seconds=60), h.now()).result

    h.clock.advance(59)
    assert not node_b_takes_it()
    h.clock.advance(1)
    assert node_b_takes_it()


def test_a_failed_registration_keeps_its_key_and_the_next_one_stores_the_url(ca):
    """The account key is stored before registering, so the retry registers the same key; then its URL is stored."""
    clock = clock_at_t0()
    client = FaultyClient(ca=ca, clock=clock, register_faults=[AcmeTransportError("connection refused")])
    h = Harness(ca, clock=clock, client=client)
    h.register()
    h.service.startService()
    assert h.record().state == DomainState.FAILING
    assert h.service.ca_reachable is False
    before = h.store.accounts[h.client.directory_url]
    assert before.account_url == ""
    h.clock.advance(60)
    assert h.record().state == DomainState.ACTIVE
    after = h.store.accounts[h.client.directory_url]
    assert after.key_pem == before.key_pem
    assert after.account_url == h.client.account_url
    assert h.service.ca_reachable is True
    h.client.failures = [AcmeProblem(type=ACME + "serverInternal", detail="oops", status=500)]
    h.service.renew_now(HOST)
    assert h.record().state == DomainState.FAILING
    assert h.service.ca_reachable is True, "a CA that answers with a problem is reachable"


def test_ca_unreachable_and_back_are_logged_once_each(ca):
    """Losing the CA logs one warning (not one per retry) and its return one info line."""
    clock = clock_at_t0()
    client = FaultyClient(ca=ca, clock=clock, register_faults=[
        AcmeTransportError("connection refused"), AcmeTransportError("connection refused")])
    h = Harness(ca, clock=clock, client=client)
    h.register()
    with capturedLogs() as events:
        h.service.startService()
        h.clock.advance(60)
        assert h.record().state == DomainState.FAILING, "the second attempt failed too"
        h.clock.advance(3600)
        assert h.record().state == DomainState.ACTIVE
    lost = [m for m in messages(events, LogLevel.warn) if m.startswith("Cannot reach the CA at ")]
    back = [m for m in messages(events, LogLevel.info) if m.startswith("The CA at ")]
    assert len(lost) == 1 and "connection refused" in lost[0]
    assert back == [f"The CA at {h.client.directory_url} is reachable again"]


@pytest.mark.parametrize(
    "code, detail, registers_again",
    [
        ("unauthorized", 'Account is not valid, has status "deactivated"', True),
        ("malformed", "Unknown Account key", True),
        ("unauthorized", "Unable to validate the order", False),
        ("serverInternal", "the account database is down", False),
    ],
)
def test_only_a_ca_that_forgot_the_account_is_answered_by_registering_again(ca, code, detail, registers_again):
    """unauthorized or malformed about the account registers again and retries; other refusals are failures."""
    h = Harness(ca)
    h.client.failures = [AcmeProblem(type=ACME + code, detail=detail, status=403)]
    h.register()
    h.service.startService()
    assert len(h.client.registrations) == (2 if registers_again else 1)
    assert h.record().state == (DomainState.ACTIVE if registers_again else DomainState.FAILING)


def test_a_ca_that_forgets_the_account_again_right_after_registering_fails_the_attempt(ca):
    """The order is retried once after registering again; a second refusal is recorded as the failure."""
    h = Harness(ca)
    forgot = AcmeProblem(type=ACME + "accountDoesNotExist", detail="no account", status=400)
    h.client.failures = [forgot, forgot]
    h.register()
    h.service.startService()
    assert (len(h.client.registrations), len(h.client.orders)) == (2, 2)
    assert h.record().state == DomainState.FAILING
    assert h.record().last_error["code"] == "accountDoesNotExist"


# -- due or not ------------------------------------------------------------------------------------------


def test_a_certificate_at_the_end_of_its_validity_is_renewed_even_if_the_ca_says_later(ca):
    """A certificate with no validity left is renewed at once, whatever its renewal window says."""
    h = Harness(ca)
    key_pem, chain_pem = ca.issue(HOST, not_before=T0 - timedelta(days=90), lifetime=timedelta(days=90))
    later = AriWindow(start=T0 + timedelta(days=1), end=T0 + timedelta(days=2), retry_after=T0 + timedelta(days=1))
    h.register()
    h.store.certificates[HOST] = certificate_record(HOST, key_pem, chain_pem, ari=later)
    h.service.kick(HOST)
    assert len(h.client.orders) == 1
    assert h.store.certificates[HOST].not_after > T0


def test_hostname_deleted_while_ordering_gets_no_certificate(ca):
    """A hostname whose record is deleted while its order runs gets no certificate, not even for a moment."""
    h = Harness(ca)
    h.client.pause()
    h.register()
    h.service.startService()
    h.store.delete_domain(HOST)
    h.client.resume()
    assert HOST not in h.store.certificates
    assert h.stored == [] and certificate_changes(h.store) == []


def test_hostname_removed_while_its_certificate_is_stored_keeps_no_certificate(ca):
    """A removal that lands between ordering and recording the certificate wins: the certificate is deleted."""
    clock = clock_at_t0()
    client = GatedAriClient(ca=ca, clock=clock, gate=Deferred())
    h = Harness(ca, clock=clock, client=client)
    h.register()
    h.service.startService()  # ordered; waits on the CA's renewal information for the new certificate
    assert h.record().state == DomainState.ISSUING
    h.domains.remove(HOST, "removed by the customer")
    with capturedLogs() as events:
        client.gate.callback(None)
    assert HOST not in h.store.certificates
    assert h.record().state == DomainState.REMOVED
    assert f"{HOST} was removed while its certificate was stored; discarding it" in messages(events)


def test_renewal_information_is_asked_again_when_the_ca_says_even_between_scans(ca):
    """The CA's Retry-After for renewal information is followed to the second, however long the scan interval."""
    h = Harness(ca, scan_interval=30 * DAY)
    asked = []
    window = AriWindow(start=T0 + timedelta(days=50), end=T0 + timedelta(days=51))
    h.client.renewal_window = lambda chain: asked.append(h.now()) or window
    h.register()
    h.service.startService()
    for hours in (6, 12):
        h.clock.advance(6 * 3600 - 1)
        assert asked[-1] == T0 + timedelta(hours=hours - 6)
        h.clock.advance(1)
        assert asked[-1] == T0 + timedelta(hours=hours)
    assert len(h.client.orders) == 1


def test_a_renewal_window_still_fresh_is_not_asked_for_again(ca):
    """A stored certificate whose renewal window's Retry-After has not come is scheduled by it without asking the CA."""
    h = Harness(ca)
    asked = []
    h.client.renewal_window = lambda chain: asked.append(chain)
    key_pem, chain_pem = ca.issue(HOST, not_before=T0, lifetime=timedelta(days=90))
    window = AriWindow(start=T0 + timedelta(days=50), end=T0 + timedelta(days=51), retry_after=T0 + timedelta(hours=6))
    stored = certificate_record(HOST, key_pem, chain_pem, ari_cert_id=ari_cert_id(chain_pem), ari=window)
    h.register()
    h.store.certificates[HOST] = stored
    with capturedLogs() as events:
        h.service.kick(HOST)
    assert asked == [] and h.client.orders == []
    assert unexpected_failures(events) == []
    assert h.record().state == DomainState.ACTIVE
    assert h.record().next_attempt == T0 + timedelta(hours=6)


def test_a_certificate_without_an_ari_id_follows_its_lifetime_without_asking_the_ca(ca):
    """A stored certificate the CA cannot be asked about (no ARI ID, e.g. imported) is renewed by its lifetime."""
    h = Harness(ca)
    asked = []
    h.client.renewal_window = lambda chain: asked.append(chain)
    key_pem, chain_pem = ca.issue(HOST, not_before=T0, lifetime=timedelta(days=90))
    imported = certificate_record(HOST, key_pem, chain_pem)
    h.register()
    h.store.certificates[HOST] = imported
    with capturedLogs() as events:
        h.service.kick(HOST)
    assert asked == [] and h.client.orders == []
    assert h.record().state == DomainState.ACTIVE
    assert h.record().next_attempt == renewal_time(imported)
    assert unexpected_failures(events) == []


def test_a_failing_renewal_information_request_falls_back_to_the_lifetime_rule(ca):
    """When the CA's renewal-information request fails, the certificate is kept and renewed by its lifetime."""
    h = Harness(ca)

    def refuse(chain):
        raise AcmeTransportError("renewalInfo endpoint down")

    h.client.renewal_window = refuse
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    certificate = h.store.certificates[HOST]
    assert certificate.ari is None
    assert h.record().state == DomainState.ACTIVE
    assert h.record().next_attempt == renewal_time(certificate)
    assert any(m.startswith(f"No renewal information for {HOST}: ") for m in messages(events, LogLevel.debug))


# -- the order budget --------------------------------------------------------------------------------------


def test_a_hostname_waiting_for_the_order_budget_is_ordered_when_a_slot_frees_even_between_scans(ca):
    """A hostname deferred for the budget is ordered the moment the window frees a slot, not at the next scan."""
    h = Harness(ca, orders_per_window=1, order_window=3600.0, scan_interval=DAY)
    h.register("a.acme-corp.test")
    h.register("b.acme-corp.test")
    h.service.startService()
    assert len(h.client.orders) == 1
    h.clock.advance(3599)
    assert len(h.client.orders) == 1
    h.clock.advance(1)
    assert len(h.client.orders) == 2
    assert h.record("b.acme-corp.test").state == DomainState.ACTIVE


def test_an_order_slot_taken_by_another_process_meanwhile_defers_the_attempt(ca):
    """When another process takes the last order slot while this attempt prepares, nothing is ordered until it frees."""
    preflight = FakePreflight(gate=Deferred())
    h = Harness(ca, preflight=preflight, orders_per_window=1, order_window=3600.0, scan_interval=DAY)
    h.register()
    h.service.startService()  # a slot was free when it looked; now it waits on DNS
    budget = f"orders:{h.client.directory_url}"
    assert h.store.reserve_order(budget, h.now(), timedelta(hours=1), 1).result is None, "another process's order"
    gate, preflight.gate = preflight.gate, None
    gate.callback(None)
    assert h.client.orders == []
    assert h.record().next_attempt == T0 + timedelta(hours=1)
    h.clock.advance(3600)
    assert len(h.client.orders) == 1
    assert h.record().state == DomainState.ACTIVE


# -- registrations by other processes -----------------------------------------------------------


def _store_tool(clock, store, *argv):
    """Run one ``jobhost-store`` command against ``store`` (as another process would); return its exit status."""
    import io

    from twisted.internet.defer import ensureDeferred

    from jobhost.store.tool import build_parser, run

    out, err = io.StringIO(), io.StringIO()
    done = ensureDeferred(run(clock, build_parser().parse_args(["--store", "memory:", *argv]), store, out, err))
    assert done.called, "a memory store answers at once"
    assert done.result == 0, err.getvalue()
    return out.getvalue()


def _watched(h):
    """Start ``h``'s service and a change poller that tells a RegistrationWatcher (as the daemon wires them)."""
    from jobhost.issuing import RegistrationWatcher
    from jobhost.tls.sni import ChangePoller

    h.service.startService()
    poller = ChangePoller(cache=RegistrationWatcher(h.service), store=h.store, clock=h.clock, interval=2.0)
    poller.startService()
    return poller


def test_a_hostname_added_by_another_process_with_a_certificate_becomes_active_before_the_next_scan(ca, tmp_path):
    """jobhost-store put-certificate then add-domain: the change feed kicks the hostname, which is confirmed
    active within a poll interval (no order), its history keeping the registration."""
    h = Harness(ca)
    _watched(h)
    key, chain = ca.issue(HOST)
    (tmp_path / "jobs.key").write_bytes(key)
    (tmp_path / "jobs.pem").write_bytes(chain)
    _store_tool(h.clock, h.store, "put-certificate", HOST, "--key", str(tmp_path / "jobs.key"),
                "--chain", str(tmp_path / "jobs.pem"))
    assert "registered" in _store_tool(h.clock, h.store, "add-domain", HOST)
    assert h.record().state == DomainState.PENDING
    h.clock.advance(2.0)  # one poll of the change feed; the next scan is 600 s away
    record = h.record()
    assert record.state == DomainState.ACTIVE
    assert h.client.orders == [], "a valid certificate is confirmed, not replaced"
    assert [(c.state, c.reason) for c in record.history] == [
        (DomainState.PENDING, "registered with jobhost-store"),
        (DomainState.ACTIVE, None),
    ]


def test_a_hostname_added_by_another_process_without_a_certificate_is_ordered_before_the_next_scan(ca):
    """A registration on the change feed with no certificate gets its first order within a poll interval."""
    h = Harness(ca)
    _watched(h)
    _store_tool(h.clock, h.store, "add-domain", HOST)
    h.clock.advance(2.0)
    assert len(h.client.orders) == 1
    assert h.record().state == DomainState.ACTIVE


def test_only_registrations_on_the_change_feed_kick(ca):
    """A page edit or a state change on the feed kicks nothing (the scan and the timers cover them), nor does a
    registration once the issuing service has stopped."""
    h = Harness(ca)
    poller = _watched(h)
    # Written without a change (as if before the poller's cursor): due, but left to the scan.
    h.store.domains[HOST] = DomainRecord(HOST, DomainState.PENDING, h.now(), h.now())
    h.store.update_domain(HOST, lambda r: attrs.evolve(r, page={"company": "ACME", "jobs": []}))
    h.clock.advance(2.0)
    h.store.update_domain(HOST, lambda r: attrs.evolve(r, attempts=1))
    h.clock.advance(2.0)
    assert [kinds for _, kinds in h.store.journal] == [
        frozenset((ChangeKind.PAGE,)), frozenset((ChangeKind.STATE,))
    ]
    assert h.client.orders == []
    h.service.stopService()
    _store_tool(h.clock, h.store, "add-domain", "careers.acme-corp.test")
    h.clock.advance(2.0)
    assert h.client.orders == [] and poller.polls == 4


# -- issuer fallback ([[acme.issuers]]) ----------------------------------------------------------------

A_URL = "https://ca-a.invalid/directory"
B_URL = "https://ca-b.invalid/directory"


@pytest.fixture(scope="module")
def ca_b():
    return TestCA.create("second test CA")


class TwoIssuers(Harness):
    """A harness whose service has two issuers: "a" (the preferred) and "b", each its own fake CA."""

    def __init__(self, ca, ca_b, **kwargs):
        clock = clock_at_t0()
        self.a = FakeAcmeClient(ca=ca, clock=clock, directory_url=A_URL)
        self.b = FakeAcmeClient(ca=ca_b, clock=clock, directory_url=B_URL)
        self.ca_a, self.ca_b = ca, ca_b
        self.metrics = Metrics()
        issuers = (
            Issuer(name="a", client=self.a, directory_url=A_URL),
            Issuer(name="b", client=self.b, directory_url=B_URL, key_type="ecdsa-p384", profile="tlsserver"),
        )
        super().__init__(ca, clock=clock, client=self.a, issuers=issuers, metrics=self.metrics, **kwargs)

    def issued_by(self, ca) -> bool:
        """Whether the stored certificate chains to ``ca``'s intermediate."""
        return self.store.certificates[HOST].issuer == ca.intermediate.subject.rfc4514_string()

    def orders(self, issuer, outcome):
        return self.metrics.registry.get_sample_value("jobhost_acme_orders_total", {"issuer": issuer, "outcome": outcome})


@pytest.mark.parametrize(
    "error, outcome",
    [
        (AcmeTransportError("connection refused", url=A_URL), "unreachable"),
        (rate_limited(3600.0), "rate_limited"),
        (AcmeProblem(type=ACME + "rejectedIdentifier", detail="policy forbids this name", status=400), "refused"),
        (AcmeProblem(type=ACME + "serverInternal", detail="down for maintenance", status=503), "failed"),
    ],
)
def test_a_failure_another_ca_may_not_have_sends_the_next_attempt_to_the_next_issuer_at_once(ca, ca_b, error, outcome):
    """Unreachable, rate-limited, refused for good or erroring at the first issuer: the hostname is issued by the
    second right away, with that issuer's settings, and its certificate names that issuer."""
    h = TwoIssuers(ca, ca_b)
    h.a.failures = [error]
    h.register()
    h.service.startService()
    assert h.record().state == DomainState.ACTIVE
    certificate = h.store.certificates[HOST]
    assert (certificate.acme_issuer, certificate.directory_url) == ("b", B_URL)
    assert h.issued_by(ca_b)
    assert load_private_key(certificate.key_pem).curve.name == "secp384r1"
    assert h.b.orders[-1]["profile"] == "tlsserver"
    assert h.store.accounts[B_URL].account_url == h.b.account_url  # an account per issuer
    assert [c.state for c in h.record().history][-4:] == [
        DomainState.ISSUING, DomainState.FAILING, DomainState.ISSUING, DomainState.ACTIVE]
    assert (h.orders("a", outcome), h.orders("b", "issued")) == (1, 1)
    assert len(h.a.orders) == 1 and len(h.b.orders) == 1


def test_the_failed_issuer_and_the_next_one_are_kept_in_last_error(ca, ca_b):
    """While the second issuer works, the record says which issuer failed, with what, and which one is next."""
    h = TwoIssuers(ca, ca_b)
    h.a.failures = [rate_limited(3600.0)]
    h.b.pause()
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.ISSUING
    assert (record.last_error["issuer"], record.last_error["next_issuer"]) == ("a", "b")
    assert record.last_error["code"] == "rateLimited" and record.last_error["retryable"] is True
    assert record.unpause_url is None  # not paused: it is not waiting for the first CA
    h.b.resume()
    assert h.record().state == DomainState.ACTIVE and h.record().last_error is None


def test_errors_every_ca_would_meet_stay_with_the_same_issuer_on_the_usual_backoff(ca, ca_b):
    """A failed self-check says nothing about the CA: the next attempt goes to the same issuer, after the backoff."""
    h = TwoIssuers(ca, ca_b)
    h.a.failures = [rate_limited(5.0)]
    h.b.failures = [SelfCheckFailed(hostname=HOST, url="http://x/", reason="connection refused")]
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.FAILING
    assert (record.last_error["issuer"], record.last_error["next_issuer"]) == ("b", "b")
    assert record.next_attempt == h.now() + timedelta(seconds=backoff_delay(2, h.service.backoff, 0.0))
    assert h.orders("b", "not_ordered") == 1
    h.clock.advance((record.next_attempt - h.now()).total_seconds())
    assert h.record().state == DomainState.ACTIVE and h.issued_by(ca_b)
    assert len(h.a.orders) == 1


def test_after_the_last_issuer_the_first_is_tried_again_after_the_backoff(ca, ca_b):
    """Both CAs unreachable: no tight loop; the next attempt goes back to the first issuer on the backoff."""
    h = TwoIssuers(ca, ca_b)
    h.a.failures = [AcmeTransportError("down", url=A_URL)]
    h.b.failures = [AcmeTransportError("down", url=B_URL)]
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.FAILING and record.attempts == 2
    assert (record.last_error["issuer"], record.last_error["next_issuer"]) == ("b", "a")
    assert record.next_attempt == h.now() + timedelta(seconds=backoff_delay(2, h.service.backoff, 0.0))
    assert (len(h.a.orders), len(h.b.orders)) == (1, 1)
    h.clock.advance((record.next_attempt - h.now()).total_seconds())
    assert h.record().state == DomainState.ACTIVE and h.issued_by(ca)
    assert h.store.certificates[HOST].acme_issuer == "a"


def test_a_permanent_failure_at_the_last_issuer_parks_the_hostname(ca, ca_b):
    """Refused for good by both CAs: parked as with one CA, and an operator's renewal starts with the first again."""
    refused = AcmeProblem(type=ACME + "rejectedIdentifier", detail="no", status=400)
    h = TwoIssuers(ca, ca_b)
    h.a.failures = [refused]
    h.b.failures = [refused]
    h.register()
    h.service.startService()
    record = h.record()
    assert record.parked and record.next_attempt is None
    assert record.last_error["next_issuer"] == "a"
    h.service.renew_now(HOST)
    assert h.record().state == DomainState.ACTIVE and h.issued_by(ca)


def test_renewal_goes_back_to_the_first_issuer_and_asks_the_issuing_ca_for_renewal_info(ca, ca_b):
    """A certificate from the second CA: its ARI window comes from that CA, and its renewal is ordered from
    the first one again (without ``replaces``, which names a certificate the first CA never issued)."""
    h = TwoIssuers(ca, ca_b)
    h.b.renewal_window = AriWindow(start=T0 + timedelta(days=40), end=T0 + timedelta(days=41))
    h.a.failures = [AcmeTransportError("down", url=A_URL)]
    h.register()
    h.service.startService()
    from_b = h.store.certificates[HOST]
    assert from_b.acme_issuer == "b" and from_b.ari is not None and from_b.ari.start == T0 + timedelta(days=40)
    h.service.renew_now(HOST)
    renewed = h.store.certificates[HOST]
    assert renewed.acme_issuer == "a" and h.issued_by(ca)
    assert h.a.orders[-1]["replaces"] is None
    assert renewed.ari is None  # the first fake CA offers no renewal information


def test_issuer_of_a_record_from_before_issuers_had_names(ca, ca_b):
    """A certificate record without ``acme_issuer`` belongs to the issuer with its directory, else the first."""
    h = TwoIssuers(ca, ca_b)
    key_pem, chain_pem = ca.issue(HOST)
    base = certificate_record(HOST, key_pem, chain_pem, directory_url=B_URL)
    assert h.service.issuer_of(base).name == "b"
    assert h.service.issuer_of(attrs.evolve(base, directory_url=None)).name == "a"
    assert h.service.issuer_of(attrs.evolve(base, directory_url="https://gone.invalid/dir")).name == "a"
    assert h.service.issuer_of(attrs.evolve(base, acme_issuer="b", directory_url=None)).name == "b"


def test_one_issuer_behaves_as_before(ca):
    """Without issuers the service makes one from its own settings: a rate limit still pauses the hostname."""
    h = Harness(ca)
    assert [i.name for i in h.service.issuers] == [h.client.directory_url]
    h.client.failures = [rate_limited(100.0)]
    h.register()
    h.service.startService()
    assert h.record().state == DomainState.PAUSED
    assert h.record().last_error["next_issuer"] == h.client.directory_url


@pytest.mark.parametrize(
    "error, expected",
    [
        (AcmeTransportError("connection refused"), True),
        (AcmeTimeout(url="https://ca/authz/1", status="pending", seconds=300.0), True),
        (AcmeUnsupported("profile", "shortlived", ("classic",), A_URL), True),
        (rate_limited(60.0), True),
        (AcmeProblem(type=ACME + "serverInternal", detail="oops", status=500), True),
        (AcmeProblem(type=ACME + "serverInternal", detail="odd", status=499), False),
        (AcmeProblem(type=ACME + "badNonce", detail="stale", status=400), False),
        (AcmeProblem(type=ACME + "rejectedIdentifier", detail="policy", status=400), True),
        (AcmeProblem(type=ACME + "badCSR", detail="our CSR", status=400), False),
        (AcmeProblem(type=ACME + "caa", detail="CAA forbids", status=403), False),
        (AuthorizationFailed(HOST, "invalid", AcmeProblem(type=ACME + "rejectedIdentifier", status=400)), True),
        (AuthorizationFailed(HOST, "invalid", AcmeProblem(type=ACME + "connection", status=400)), False),
        (AuthorizationFailed(HOST, "invalid"), False),
        (SelfCheckFailed(hostname=HOST, url="http://x/", reason="refused"), False),
        (PreflightFailed(hostname=HOST), False),
        (StoreError("disk full"), False),
    ],
    ids=lambda v: getattr(v, "type", type(v).__name__).rpartition(":")[2] + str(getattr(v, "status", ""))
    if isinstance(v, Exception) else str(v),
)
def test_which_failures_send_the_next_attempt_to_the_next_issuer(error, expected):
    """Unreachable, slow, erroring (5xx), rate-limiting or refusing-for-good CAs fall back; what every CA
    would meet alike (our CSR, the customer's DNS, CAA, the self-check, the store, a transient problem) does not."""
    assert falls_back(error) is expected


def test_falling_back_is_reported_like_a_failure(ca, ca_b):
    """Moving on to the next issuer tells the events sink (failing), counts the failure and the rate limit,
    marks the CA unreachable when it was, and logs one warning naming both issuers."""
    sent = []

    class Sink:
        def notify(self, event, record, certificate):
            sent.append((event, (record.last_error or {}).get("code")))

    h = TwoIssuers(ca, ca_b, events=Sink())
    h.a.failures = [rate_limited(60.0)]
    h.b.pause()
    h.register()
    with capturedLogs() as events:
        h.service.startService()
    assert sent == [("failing", "rateLimited")]
    value = h.metrics.registry.get_sample_value
    assert value("jobhost_issuance_failures_total", {"reason": "rateLimited"}) == 1
    assert value("jobhost_rate_limited_total") == 1
    assert h.service.ca_reachable is None
    assert messages(events, LogLevel.warn) == [
        f"Certificate for {HOST} failed at a: CA problem rateLimited (HTTP 429): too many; trying b next"]
    h.b.resume()
    assert sent[-1][0] == "active"
    h2 = TwoIssuers(ca, ca_b)
    h2.a.failures = [AcmeTransportError("down", url=A_URL)]
    h2.b.pause()
    h2.register()
    h2.service.startService()
    assert h2.service.ca_reachable is False
    assert h2.metrics.registry.get_sample_value("jobhost_rate_limited_total") == 0


class DueOnlyStore(MemoryStore):
    """A MemoryStore that counts what a scan reads and refuses to list every record."""

    def __init__(self):
        super().__init__()
        self.listed = 0

    def list_domains(self, *args, **kwargs):
        raise AssertionError("the scan listed every domain record")

    def due_domains(self, now, cursor=None, limit=500):
        d = super().due_domains(now, cursor, limit)
        d.addCallback(self._count)
        return d

    def _count(self, page):
        self.listed += len(page.records)
        return page


def test_scan_reads_only_the_due_records(ca):
    """A scan over many hostnames that are not due reads none of them, submits nothing and wakes for the first."""
    store = DueOnlyStore()
    h = Harness(ca, store=store, scan_interval=DAY)
    for i in range(1200):
        name = f"h{i:04d}.acme-corp.test"
        store.domains[name] = DomainRecord(name, DomainState.ACTIVE, T0, T0,
                                           next_attempt=T0 + timedelta(hours=1, seconds=i))
    store.domains["due.acme-corp.test"] = DomainRecord("due.acme-corp.test", DomainState.FAILING, T0, T0,
                                                       next_attempt=T0)
    assert h.service.scan().result == 1
    assert store.listed == 1
    assert [o["hostnames"] for o in h.client.orders] == [["due.acme-corp.test"]]
    h.clock.advance(3599)
    assert len(h.client.orders) == 1
    h.clock.advance(1)
    assert h.client.orders[-1]["hostnames"] == ["h0000.acme-corp.test"]


def test_a_failed_validation_makes_the_next_attempt_try_the_next_challenge_type(ca):
    """With challenges http-01 then tls-alpn-01, an HTTP-01 attempt the CA invalidates is followed by a
    TLS-ALPN-01 attempt (its key authorization stored under the hostname's key, its own self-check run),
    and a failed TLS-ALPN-01 self-check sends the next attempt back to HTTP-01."""
    from jobhost.errors import SelfCheckFailed
    from jobhost.store.records import Challenge, tls_alpn01_key

    checks = []

    def http_check(hostname, token, key_authorization):
        checks.append(("http-01", h.store.challenges.get(token)))
        return succeed(None)

    def tls_check(hostname, token, key_authorization):
        checks.append(("tls-alpn-01", h.store.challenges.get(tls_alpn01_key(hostname))))
        if len(checks) == 2:
            return fail(SelfCheckFailed(hostname, f"tls-alpn-01://{hostname}:443", "alert"))
        return succeed(None)

    h = Harness(ca, challenges=("http-01", "tls-alpn-01"), self_check=http_check, tls_alpn_self_check=tls_check,
                backoff=(10.0,))
    h.client.failures.append(AuthorizationFailed(HOST, "invalid"))
    h.register()
    h.service.startService()
    assert h.client.orders[-1]["challenge_type"] == "http-01"
    assert h.record().last_error["challenge"] == "http-01"
    assert checks[0][1].challenge_type == "http-01"
    h.clock.advance(10)
    assert h.client.orders[-1]["challenge_type"] == "tls-alpn-01"
    kind, stored = checks[1]
    assert kind == "tls-alpn-01"
    assert stored == Challenge(tls_alpn01_key(HOST), stored.key_authorization, HOST, stored.created_at, "tls-alpn-01")
    assert stored.key_authorization.startswith("token2-0.")
    assert h.record().last_error["challenge"] == "tls-alpn-01"
    assert h.store.challenges == {}, "every challenge is withdrawn"
    h.clock.advance(10)
    assert [o["challenge_type"] for o in h.client.orders] == ["http-01", "tls-alpn-01", "http-01"]
    assert h.record().state == DomainState.ACTIVE


def test_a_failure_other_than_validation_keeps_the_preferred_challenge_type(ca):
    """An attempt failing for another reason (the CA unreachable) names no challenge: the next attempt
    uses the first type again; one type alone is always used."""
    from jobhost.errors import AcmeTransportError

    h = Harness(ca, challenges=("tls-alpn-01", "http-01"), backoff=(10.0,))
    h.client.failures.append(AcmeTransportError("connection refused", url="https://ca.test/dir"))
    h.register()
    h.service.startService()
    assert "challenge" not in h.record().last_error
    h.clock.advance(10)
    assert [o["challenge_type"] for o in h.client.orders] == ["tls-alpn-01", "tls-alpn-01"]
    single = Harness(ca, challenges=("http-01",))
    record = attrs.evolve(h.record(), last_error={"code": "authorization_failed", "challenge": "http-01"})
    assert single.service.challenge_for(record) == "http-01"
