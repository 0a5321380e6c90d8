"""Tests for jobhost.domains: the transition table, the events, and that nothing else writes a domain record."""

import itertools
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
from twisted.internet.task import Clock

from jobhost.domains import (
    SAME,
    TRANSITIONS,
    DomainEvent,
    DomainService,
    next_state,
    transition,
)
from jobhost.errors import TransitionForbidden
from jobhost.store.memory import MemoryStore
from jobhost.store.records import ChangeKind, DomainRecord, DomainState

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


@pytest.mark.parametrize("state,event", list(itertools.product(STATES, EVENTS)))
def test_table_is_the_only_way(state, event):
    """Every (state, event) pair the table lists leads where it says; every other pair raises."""
    allowed = TRANSITIONS.get(event, {})
    if state in allowed:
        expected = state if allowed[state] == SAME else allowed[state]
        assert next_state(HOST, state, event) == expected
    else:
        with pytest.raises(TransitionForbidden) as info:
            next_state(HOST, state, event)
        assert (info.value.state, info.value.event) == (state, event)
        assert event in str(info.value) and HOST in str(info.value)


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
