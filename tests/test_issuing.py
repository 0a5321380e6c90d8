"""Tests for jobhost.issuing over a MemoryStore, a FakeAcmeClient and a Clock."""

from datetime import datetime, timedelta, timezone

import attrs
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobhost.certs import AriWindow
from jobhost.errors import AcmeProblem, AcmeTransportError
from jobhost.domains import DomainService
from jobhost.issuing import IssuingService
from jobhost.preflight import IPreflight, PreflightReason, PreflightResult, ReasonCode
from jobhost.retry import backoff_delay
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainRecord, DomainState, Lease, certificate_record
from jobhost.testing import FakeAcmeClient, TestCA

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAY = 86400.0
HOST = "jobs.acme-corp.test"


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

    def set_account_uri(self, account_uri):
        self.account_uri = account_uri

    def check(self, hostname):
        self.checked.append(hostname)
        if not self.failing:
            return succeed(PreflightResult(hostname=hostname, ok=True))
        reason = PreflightReason(
            ReasonCode.POINTS_ELSEWHERE, f"{hostname} has A 198.51.100.7, but must point at 203.0.113.10"
        )
        return succeed(PreflightResult(hostname=hostname, ok=False, reasons=(reason,)))

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
        self.service = IssuingService(
            store=self.store,
            domains=self.domains,
            client=self.client,
            clock=self.clock,
            directory_url=self.client.directory_url,
            panic=lambda h, c, f: self.panics.append((h, f.value)),
            on_certificate=self.stored.append,
            random=lambda: 0.0,
            **{"holder": "node-a", **kwargs},
        )

    def register(self, hostname=HOST):
        now = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
        self.store.domains[hostname] = DomainRecord(hostname, DomainState.PENDING, now, now)

    def record(self, hostname=HOST):
        return self.store.domains[hostname]

    def now(self):
        return datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)


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
    assert HOST not in h.store.certificates


def test_order_budget_defers_work(ca):
    """With a budget of 2 orders per hour, a third hostname waits until the window frees."""
    h = Harness(ca, orders_per_window=2, order_window=3600.0)
    for name in ("a.acme-corp.test", "b.acme-corp.test", "c.acme-corp.test"):
        h.register(name)
    h.service.startService()
    assert len(h.client.orders) == 2
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
    h.client.resume()
    assert HOST not in h.store.certificates


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
    h.service.startService()
    assert h.client.orders == []
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
    h.service.revoke(HOST)
    assert h.client.revoked == [h.store.certificates[HOST].chain_pem]


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
    h.service.startService()
    assert h.record().state == DomainState.ACTIVE
    assert len(h.client.orders) == 2
    assert len(h.client.registrations) == 2
    assert len(h.store.accounts) == 1


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
    for _ in range(6):  # 1,500 s: two and a half lease durations
        h.clock.advance(250)
        taken = h.store.acquire_lease(f"issue:{HOST}", "node-b", h.now() + timedelta(seconds=600), h.now())
        assert taken.result is False, f"node-b took the lease after {h.clock.seconds() - T0.timestamp()} s"
    h.client.resume()
    assert h.record().state == DomainState.ACTIVE
    assert f"issue:{HOST}" not in h.store.leases, "the lease is released after the attempt"


def test_lost_lease_abandons_the_attempt(ca):
    """When another holder takes the lease (ours expired unseen), the next heartbeat cancels the attempt: no certificate."""
    h = Harness(ca, lease_duration=600.0)
    h.client.pause()
    h.register()
    h.service.startService()
    h.store.leases[f"issue:{HOST}"] = Lease(f"issue:{HOST}", "node-b", h.now() + timedelta(hours=1))
    h.clock.advance(200)  # the heartbeat at a third of the duration finds node-b holding it
    assert HOST not in h.service._in_flight
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
    h.client.resume()  # before any heartbeat: the check just before storing finds the lease gone
    assert HOST not in h.store.certificates
    assert h.record().state == DomainState.ISSUING, "left to the new holder as it was"


@pytest.mark.parametrize("problem_type", ["badCSR", "rejectedIdentifier"])
def test_permanent_error_parks_until_renew(ca, problem_type):
    """A CA refusal that retrying cannot fix parks the domain (retryable false, no next attempt) until renew_now."""
    h = Harness(ca)
    h.client.failures.append(
        AcmeProblem(type=f"urn:ietf:params:acme:error:{problem_type}", detail="refused", status=400)
    )
    h.register()
    h.service.startService()
    record = h.record()
    assert record.state == DomainState.FAILING and record.parked
    assert record.last_error["retryable"] is False and record.next_attempt is None
    h.clock.advance(30 * DAY)
    assert len(h.client.orders) == 1, "no further order while parked"
    h.service.renew_now(HOST)
    assert len(h.client.orders) == 2
    assert h.record().state == DomainState.ACTIVE


def test_transient_error_is_retryable(ca):
    """A CA error that may pass (serverInternal) backs off with retryable true and a next attempt."""
    h = Harness(ca)
    h.client.failures.append(AcmeProblem(type="urn:ietf:params:acme:error:serverInternal", detail="x", status=500))
    h.register()
    h.service.startService()
    record = h.record()
    assert record.last_error["retryable"] is True and record.next_attempt is not None
    assert not record.parked


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
    gate.callback(None)
    record = h.record()
    assert record.page == {"title": "Edited during ARI"}
    assert record.state == DomainState.ACTIVE and record.next_attempt == T0 + timedelta(hours=12)


def test_certificate_replaced_while_asking_for_renewal_information_is_kept(ca):
    """A certificate put by an operator while the ARI request waits is not overwritten by the old one with its window."""
    h, gate = waiting_on_ari(ca)
    key_pem, chain_pem = ca.issue(HOST)
    imported = certificate_record(HOST, key_pem, chain_pem)
    h.store.put_certificate(imported)
    gate.callback(None)
    assert h.store.certificates[HOST].fingerprint == imported.fingerprint


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
    assert other.service.scan().result == 0, "node-b leaves scanning to node-a"
    assert other.client.orders == []
    h.clock.advance(600)
    assert len(h.client.orders) == 2 and other.client.orders == []
    h.service.stopService()
    other.register("c.acme-corp.test")
    h.clock.advance(600)
    assert [o["hostnames"] for o in other.client.orders] == [["c.acme-corp.test"]]
