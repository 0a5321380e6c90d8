"""Tests for jobhost.domains: the transition table, the events, and that nothing else writes a domain record."""

import itertools
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
from twisted.internet.task import Clock

from twisted.internet.defer import fail

from jobhost.domains import (
    SAME,
    TRANSITIONS,
    DomainEvent,
    DomainService,
    failure_is_news,
    next_state,
    transition,
)
from jobhost.errors import StoreError, TransitionForbidden
from jobhost.store.memory import MemoryStore
from jobhost.store.records import HISTORY_LIMIT, ChangeKind, DomainRecord, DomainState, StateChange

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
HOST = "jobs.acme-corp.test"
EVENTS = [v for k, v in vars(DomainEvent).items() if k.isupper()]
STATES = [None, *DomainState.ALL]


def record(state=DomainState.PENDING, **changes):
    return attrs.evolve(DomainRecord(HOST, state, T0, T0), **changes)


def service():
    clock = Clock()
    clock.advance(T0.timestamp())
    store = MemoryStore()
    return DomainService(store=store, clock=clock), store, clock


def ok(d):
    results, failures = [], []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "the Deferred did not fire"
    return results[0]


# -- the table ----------------------------------------------------------------------------------


S = DomainState
LIVE = (S.PENDING, S.ISSUING, S.ACTIVE, S.RENEWING, S.FAILING, S.PAUSED)
ATTEMPTING = (S.ISSUING, S.RENEWING)

#: The lifecycle as the module docstring draws it, written out independently of TRANSITIONS:
#: event -> {state before (None: no record) -> state after}.  Every pair not listed is forbidden.
DESIGN = {
    DomainEvent.REGISTERED: {None: S.PENDING, S.REMOVED: S.PENDING},
    DomainEvent.ORDER_STARTED: {s: S.ISSUING for s in LIVE},
    DomainEvent.RENEWAL_STARTED: {s: S.RENEWING for s in LIVE},
    DomainEvent.ISSUED: {s: S.ACTIVE for s in ATTEMPTING},
    DomainEvent.FAILED: {s: S.FAILING for s in ATTEMPTING},
    DomainEvent.PAUSED: {s: S.PAUSED for s in ATTEMPTING},
    DomainEvent.CONFIRMED: {s: S.ACTIVE for s in LIVE},
    DomainEvent.DEFERRED: {s: s for s in LIVE},
    DomainEvent.PAGE_CHANGED: {s: s for s in LIVE},
    DomainEvent.RENEW_REQUESTED: {s: s for s in LIVE},
    DomainEvent.REMOVED: {s: S.REMOVED for s in LIVE},
}


def test_the_design_names_every_event():
    """The written-out lifecycle covers every event there is (so the next test checks them all)."""
    assert sorted(DESIGN) == sorted(EVENTS)


@pytest.mark.parametrize("state,event", list(itertools.product(STATES, EVENTS)))
def test_each_event_leads_where_the_design_says_or_is_forbidden(state, event):
    """Every (state, event) pair the design allows leads to its state; every other pair raises, naming both."""
    if state in DESIGN[event]:
        assert next_state(HOST, state, event) == DESIGN[event][state]
    else:
        with pytest.raises(TransitionForbidden) as info:
            next_state(HOST, state, event)
        assert (info.value.hostname, info.value.state, info.value.event) == (HOST, state, event)
        assert event in str(info.value) and HOST in str(info.value)


@pytest.mark.parametrize("state,event", list(itertools.product(STATES, EVENTS)))
def test_the_table_agrees_with_the_design(state, event):
    """TRANSITIONS (what callers may read to plan) says the same as the design, SAME standing for "stays"."""
    target = TRANSITIONS.get(event, {}).get(state)
    expected = DESIGN[event].get(state)
    assert (state if target == SAME else target) == expected


def test_forbidden_transitions_named_in_the_design():
    """A removed hostname cannot be issued or edited, and an active one cannot be "issued" again."""
    for state, event in [
        (DomainState.REMOVED, DomainEvent.ISSUED),
        (DomainState.REMOVED, DomainEvent.ORDER_STARTED),
        (DomainState.REMOVED, DomainEvent.PAGE_CHANGED),
        (DomainState.ACTIVE, DomainEvent.ISSUED),
        (DomainState.ACTIVE, DomainEvent.FAILED),
        (DomainState.PENDING, DomainEvent.REGISTERED),
        (None, DomainEvent.REMOVED),
    ]:
        with pytest.raises(TransitionForbidden):
            next_state(HOST, state, event)


def test_transition_appends_history_only_on_change_or_reason():
    """A state change is appended to the history; a same-state event only when it gives a reason."""
    started = transition(record(), DomainEvent.ORDER_STARTED, T0 + timedelta(seconds=1))
    assert [c.state for c in started.history] == [DomainState.ISSUING]
    assert started.updated_at == T0 + timedelta(seconds=1)
    deferred = transition(started, DomainEvent.DEFERRED, T0, next_attempt=T0)
    assert deferred.history == started.history
    noted = transition(started, DomainEvent.DEFERRED, T0, "waiting", next_attempt=T0)
    assert noted.history[-1].reason == "waiting"


def test_only_page_events_may_change_the_page():
    """Issuing events cannot carry a page: the page is the admin's field."""
    with pytest.raises(ValueError):
        transition(record(DomainState.ISSUING), DomainEvent.ISSUED, T0, page={"title": "x"})
    edited = transition(record(), DomainEvent.PAGE_CHANGED, T0, page={"title": "x"})
    assert (edited.page, edited.state) == ({"title": "x"}, DomainState.PENDING)


# -- the service ----------------------------------------------------------------------------------


def test_register_then_register_again():
    """A new hostname is created pending; registering it again returns the stored record, not created."""
    domains, store, _ = service()
    created, was_created = ok(domains.register(HOST, {"title": "Jobs"}))
    assert was_created and created.state == DomainState.PENDING and created.page == {"title": "Jobs"}
    again, was_created = ok(domains.register(HOST, None))
    assert not was_created and again == created


def test_removed_hostname_registers_afresh_keeping_history():
    """Registering a removed hostname makes it pending with no error or attempts, and keeps its history."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    ok(domains.start_attempt(HOST, renewing=False))
    ok(domains.failed(HOST, {"code": "dns", "message": "no A record"}, T0 + timedelta(minutes=1)))
    ok(domains.remove(HOST, "removed by the operator"))
    revived, created = ok(domains.register(HOST, {"title": "Back"}))
    assert created
    assert (revived.state, revived.attempts, revived.last_error, revived.page) == (
        DomainState.PENDING, 0, None, {"title": "Back"},
    )
    assert [c.state for c in revived.history] == [
        DomainState.PENDING, DomainState.ISSUING, DomainState.FAILING, DomainState.REMOVED, DomainState.PENDING,
    ]


def test_events_on_a_removed_hostname_raise_and_write_nothing():
    """After removal, a late "issued" or page edit raises TransitionForbidden and the record stays removed."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    ok(domains.start_attempt(HOST, renewing=False))
    removed = ok(domains.remove(HOST, "gone"))
    for d in (domains.issued(HOST, False, T0), domains.set_page(HOST, {"title": "late"})):
        with pytest.raises(TransitionForbidden):
            ok(d)
    assert store.domains[HOST] == removed


def test_request_renewal_unparks():
    """A parked hostname (permanent error) is no longer parked once an operator asks for a renewal."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    ok(domains.start_attempt(HOST, renewing=False))
    parked = ok(domains.failed(HOST, {"code": "badCSR", "message": "bad", "retryable": False}, None))
    assert parked.parked and parked.next_attempt is None
    asked = ok(domains.request_renewal(HOST))
    assert not asked.parked and asked.renew_requested and asked.attempts == 0


def test_confirm_writes_nothing_when_nothing_changes():
    """Confirming an active hostname with the same next attempt writes nothing (no change-feed entry)."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    first = ok(domains.confirm(HOST, T0 + timedelta(days=60)))
    journal = len(store.journal)
    again = ok(domains.confirm(HOST, T0 + timedelta(days=60)))
    assert again == first and len(store.journal) == journal


def test_page_edit_reports_page_only_and_state_events_state_only():
    """The change feed says PAGE for a page edit and STATE for an issuing step, so caches keep what still holds."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    cursor, _ = ok(store.changes(None))
    ok(domains.set_page(HOST, {"title": "new"}))
    cursor, changed = ok(store.changes(cursor))
    assert changed == {HOST: frozenset({ChangeKind.PAGE})}
    ok(domains.start_attempt(HOST, renewing=False))
    _, changed = ok(store.changes(cursor))
    assert changed == {HOST: frozenset({ChangeKind.STATE})}


def test_history_keeps_the_latest_changes_up_to_its_limit():
    """A full history drops its oldest entry for the new one; it never grows past HISTORY_LIMIT."""
    full = record(
        DomainState.ACTIVE,
        history=tuple(StateChange(T0 + timedelta(seconds=i), DomainState.ACTIVE) for i in range(HISTORY_LIMIT)),
    )
    later = T0 + timedelta(days=1)
    renewing = transition(full, DomainEvent.RENEWAL_STARTED, later)
    assert len(renewing.history) == HISTORY_LIMIT
    assert renewing.history[:-1] == full.history[1:]
    assert renewing.history[-1] == StateChange(later, DomainState.RENEWING, None)


def test_an_event_keeps_what_it_does_not_change():
    """An event sets the state, updated_at and the fields it names; created_at, page and version stay."""
    before = record(DomainState.FAILING, page={"title": "Jobs"}, attempts=2, version=7,
                    last_error={"code": "dns"}, next_attempt=T0 + timedelta(hours=1))
    later = T0 + timedelta(minutes=5)
    after = transition(before, DomainEvent.ORDER_STARTED, later)
    assert after == attrs.evolve(before, state=DomainState.ISSUING, updated_at=later,
                                 history=(StateChange(later, DomainState.ISSUING),))


# -- what each service call keeps and clears ---------------------------------------------------------

ERROR = {"code": "dns", "message": "no A record for the hostname", "retryable": True}
LATER = T0 + timedelta(hours=1)


def attempting(renewing=False):
    """A service whose hostname has an attempt under way."""
    domains, store, clock = service()
    ok(domains.register(HOST, {"title": "Jobs"}))
    ok(domains.start_attempt(HOST, renewing=renewing))
    return domains, store, clock


def test_every_change_is_stamped_with_the_clock_and_bumps_the_version():
    """Each event stamps updated_at and its history entry with the service's clock; the store counts versions."""
    domains, store, clock = service()
    registered, _ = ok(domains.register(HOST, None))
    assert (registered.created_at, registered.updated_at, registered.version) == (T0, T0, 0)
    clock.advance(90)
    started = ok(domains.start_attempt(HOST, renewing=False))
    at = T0 + timedelta(seconds=90)
    assert (started.created_at, started.updated_at, started.version) == (T0, at, 1)
    assert started.history[-1] == StateChange(at, DomainState.ISSUING)


def test_start_attempt_issuing_or_renewing_keeps_the_last_outcome():
    """Starting an attempt only changes the state: attempts, last error and next attempt stay for the outcome to use."""
    domains, store, _ = attempting()
    failed = ok(domains.failed(HOST, ERROR, LATER))
    again = ok(domains.start_attempt(HOST, renewing=False))
    assert again.state == DomainState.ISSUING
    assert (again.attempts, again.last_error, again.next_attempt) == (1, ERROR, LATER)
    assert again.page == failed.page == {"title": "Jobs"}
    ok(domains.confirm(HOST, LATER))
    assert ok(domains.start_attempt(HOST, renewing=True)).state == DomainState.RENEWING


def test_each_failure_counts_one_more_attempt_and_records_the_error():
    """failed: failing, attempts + 1 each time, the error stored (a copy) with its message in the history."""
    domains, store, _ = attempting()
    error = dict(ERROR)
    first = ok(domains.failed(HOST, error, LATER))
    error["code"] = "changed by the caller afterwards"
    assert (first.state, first.attempts, first.last_error, first.next_attempt) == (
        DomainState.FAILING, 1, ERROR, LATER,
    )
    assert first.history[-1].reason == ERROR["message"]
    assert not first.parked
    ok(domains.start_attempt(HOST, renewing=False))
    second = ok(domains.failed(HOST, ERROR, LATER + timedelta(hours=1)))
    assert (second.attempts, second.next_attempt) == (2, LATER + timedelta(hours=1))


def test_a_rate_limit_pauses_with_the_unpause_link():
    """A rate-limited attempt is paused (not failing), counts as an attempt and keeps the CA's unpause link."""
    domains, store, _ = attempting(renewing=True)
    paused = ok(domains.failed(HOST, ERROR, LATER, paused=True, unpause_url="https://ca.test/unpause"))
    assert (paused.state, paused.attempts, paused.unpause_url) == (DomainState.PAUSED, 1, "https://ca.test/unpause")
    assert not paused.parked


def test_a_permanent_failure_parks_and_answers_the_renewal_request():
    """retryable false: failing with no next attempt, and an operator's pending request is used up: parked."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    ok(domains.request_renewal(HOST))
    ok(domains.start_attempt(HOST, renewing=False))
    parked = ok(domains.failed(HOST, dict(ERROR, retryable=False), None))
    assert (parked.state, parked.next_attempt, parked.renew_requested) == (DomainState.FAILING, None, False)
    assert parked.parked


@pytest.mark.parametrize("retryable", [True, None], ids=["retryable true", "retryable not said"])
def test_a_retryable_failure_keeps_an_operators_renewal_request(retryable):
    """A retryable failure (retryable true, or not said) keeps a pending renewal request for the next attempt."""
    error = {k: v for k, v in dict(ERROR, retryable=retryable).items() if v is not None}
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    ok(domains.request_renewal(HOST))
    ok(domains.start_attempt(HOST, renewing=False))
    kept = ok(domains.failed(HOST, error, LATER))
    assert kept.renew_requested and not kept.parked


def test_a_failure_does_not_invent_a_renewal_request():
    """Without an operator's request, neither a retryable nor a permanent failure marks one."""
    for retryable in (True, False):
        domains, store, _ = attempting()
        assert not ok(domains.failed(HOST, dict(ERROR, retryable=retryable), LATER)).renew_requested


@pytest.mark.parametrize("renewed,reason", [(False, "issued"), (True, "renewed")])
def test_issued_clears_errors_backoff_and_the_renewal_request(renewed, reason):
    """issued: active, attempts 0, no error or unpause link, the request answered, the next check set."""
    domains, store, _ = service()
    ok(domains.register(HOST, {"title": "Jobs"}))
    ok(domains.request_renewal(HOST))
    ok(domains.start_attempt(HOST, renewing=renewed))
    ok(domains.failed(HOST, ERROR, LATER, paused=True, unpause_url="https://ca.test/unpause"))
    ok(domains.start_attempt(HOST, renewing=renewed))
    check = T0 + timedelta(days=60)
    active = ok(domains.issued(HOST, renewed, check))
    assert (active.state, active.attempts, active.last_error, active.unpause_url, active.renew_requested) == (
        DomainState.ACTIVE, 0, None, None, False,
    )
    assert active.next_attempt == check
    assert active.history[-1].reason == reason
    assert active.page == {"title": "Jobs"}


def test_a_page_edit_during_an_attempt_survives_its_outcome():
    """A page edited while the attempt waits on the CA is kept when the attempt records success or failure."""
    for outcome in ("issued", "failed"):
        domains, store, _ = attempting()
        edited = ok(domains.set_page(HOST, {"title": "Edited"}))
        assert (edited.state, edited.attempts) == (DomainState.ISSUING, 0)
        if outcome == "issued":
            after = ok(domains.issued(HOST, False, LATER))
        else:
            after = ok(domains.failed(HOST, ERROR, LATER))
        assert after.page == {"title": "Edited"}


def test_request_renewal_clears_the_backoff_but_keeps_the_state_and_error():
    """An operator's request: attempts 0 and no wait, the state and last error as they were (until an outcome)."""
    domains, store, _ = attempting()
    ok(domains.failed(HOST, ERROR, LATER))
    asked = ok(domains.request_renewal(HOST))
    assert (asked.state, asked.attempts, asked.next_attempt, asked.renew_requested) == (
        DomainState.FAILING, 0, None, True,
    )
    assert asked.last_error == ERROR


def test_defer_sets_the_next_attempt_and_says_why():
    """defer: the state stays, the next attempt is set, and the reason is in the history."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    deferred = ok(domains.defer(HOST, LATER, "waiting for the order budget"))
    assert (deferred.state, deferred.next_attempt) == (DomainState.PENDING, LATER)
    assert deferred.history[-1] == StateChange(T0, DomainState.PENDING, "waiting for the order budget")


def test_remove_stops_the_schedule_and_says_why():
    """remove: removed, no next attempt, the reason in the history."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    ok(domains.defer(HOST, LATER, "later"))
    removed = ok(domains.remove(HOST, "customer left"))
    assert (removed.state, removed.next_attempt) == (DomainState.REMOVED, None)
    assert removed.history[-1] == StateChange(T0, DomainState.REMOVED, "customer left")


@pytest.mark.parametrize("state", [DomainState.PENDING, DomainState.FAILING, DomainState.PAUSED])
def test_confirm_makes_any_live_state_active(state):
    """confirm from pending, failing or paused (even with the same next attempt) makes it active."""
    domains, store, _ = service()
    store.domains[HOST] = record(state, next_attempt=LATER)
    confirmed = ok(domains.confirm(HOST, LATER))
    assert (confirmed.state, confirmed.next_attempt) == (DomainState.ACTIVE, LATER)
    assert store.domains[HOST] == confirmed


def test_confirm_moves_the_next_check_of_an_active_hostname():
    """confirm of an active hostname with another next attempt writes the new time."""
    domains, store, _ = service()
    store.domains[HOST] = record(DomainState.ACTIVE, next_attempt=LATER)
    moved = ok(domains.confirm(HOST, LATER + timedelta(days=1)))
    assert (moved.state, moved.next_attempt, moved.version) == (DomainState.ACTIVE, LATER + timedelta(days=1), 1)


class RefusingUpdates(MemoryStore):
    """A MemoryStore whose ``update_domain`` always fails (a store refusing writes)."""

    def update_domain(self, hostname, change):
        return fail(StoreError("refusing writes"))


def test_registering_a_registered_hostname_again_only_reads():
    """Re-registering a live hostname answers from the stored record without an update, so it works
    even while the store refuses writes."""
    clock = Clock()
    store = RefusingUpdates()
    domains = DomainService(store=store, clock=clock)
    first, created = ok(domains.register(HOST, {"title": "Jobs"}))
    assert created
    assert ok(domains.register(HOST, None)) == (first, False)


def test_a_removed_hostname_registered_meanwhile_by_another_writer_is_not_created_twice():
    """Two registrations of a removed hostname race: the one that loses reports not created and
    returns the winner's record."""
    domains, store, clock = service()
    ok(domains.register(HOST, None))
    ok(domains.remove(HOST, "gone"))
    other = DomainService(store=store, clock=clock)
    raced = []

    def other_writer(hostname):
        store.before_write = None  # the other writer comes in once, before our write
        raced.append(ok(other.register(HOST, {"title": "Theirs"})))

    store.before_write = other_writer
    stored, created = ok(domains.register(HOST, {"title": "Mine"}))
    assert raced[0][1] is True
    assert (stored, created) == (raced[0][0], False)
    assert stored.page == {"title": "Theirs"} and stored.state == DomainState.PENDING


def test_a_removed_hostname_registers_afresh_without_its_old_schedule():
    """Re-registration clears the renewal request, unpause link and attempts, and starts created_at anew."""
    domains, store, clock = service()
    ok(domains.register(HOST, None))
    ok(domains.request_renewal(HOST))
    ok(domains.start_attempt(HOST, renewing=False))
    ok(domains.failed(HOST, ERROR, LATER, paused=True, unpause_url="https://ca.test/unpause"))
    ok(domains.remove(HOST, "gone"))
    clock.advance(3600)
    revived, created = ok(domains.register(HOST, None, reason="back"))
    assert created
    assert (revived.renew_requested, revived.unpause_url, revived.attempts, revived.next_attempt) == (
        False, None, 0, None,
    )
    assert revived.created_at == T0 + timedelta(hours=1)
    assert revived.history[-1] == StateChange(T0 + timedelta(hours=1), DomainState.PENDING, "back")


# -- is a failure news? ----------------------------------------------------------------------------


def test_a_failure_is_news_when_the_state_or_the_error_changes():
    """The first failure is news; the same failure again is not; another error code or state is."""
    domains, store, _ = service()
    ok(domains.register(HOST, None))
    started = ok(domains.start_attempt(HOST, renewing=False))
    assert failure_is_news(started, DomainState.FAILING, "dns")
    ok(domains.failed(HOST, ERROR, LATER))
    started = ok(domains.start_attempt(HOST, renewing=False))
    assert not failure_is_news(started, DomainState.FAILING, "dns")
    assert failure_is_news(started, DomainState.FAILING, "caa")
    assert failure_is_news(started, DomainState.PAUSED, "dns")


def test_a_failure_after_a_pause_or_a_success_is_news():
    """Failing after being paused, or after being active, is news even with the same error code."""
    domains, store, _ = attempting()
    ok(domains.failed(HOST, ERROR, LATER, paused=True))
    started = ok(domains.start_attempt(HOST, renewing=False))
    assert not failure_is_news(started, DomainState.PAUSED, "dns")
    assert failure_is_news(started, DomainState.FAILING, "dns")
    ok(domains.issued(HOST, False, LATER))
    ok(domains.start_attempt(HOST, renewing=True))
    started = attrs.evolve(store.domains[HOST], last_error=ERROR)  # an error kept from before (old record)
    assert failure_is_news(started, DomainState.FAILING, "dns")


def test_a_failure_with_no_error_on_record_is_news():
    """A record that says failing but keeps no error (written before errors were kept) makes any failure news."""
    started = record(DomainState.ISSUING, history=(StateChange(T0, DomainState.FAILING),))
    assert failure_is_news(started, DomainState.FAILING, "dns")


# -- ownership ---------------------------------------------------------------------------------------

JOBHOST = Path(__file__).resolve().parent.parent / "jobhost"
_WRITES = re.compile(r"\.(put_domain|update_domain|add_domain|delete_domain)\(|\.with_state\(")


def test_only_domains_py_and_the_stores_write_domain_records():
    """No module but jobhost/domains.py and the stores (jobhost/store/) writes a domain record."""
    offenders = []
    for path in sorted(JOBHOST.rglob("*.py")):
        relative = path.relative_to(JOBHOST).as_posix()
        if relative == "domains.py" or relative.startswith("store/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _WRITES.search(line):
                offenders.append(f"jobhost/{relative}:{number}: {line.strip()}")
    assert offenders == []


def test_the_ownership_check_finds_a_write():
    """The pattern the ownership test uses matches the writes it must catch (so it can fail)."""
    for line in ("await self.store.put_domain(record)", "store.update_domain(h, f)", "r.with_state(x)"):
        assert _WRITES.search(line)
    assert not _WRITES.search("await self.store.get_domain(hostname)")
