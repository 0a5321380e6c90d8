"""
The one owner of a domain's life: which state may follow which, and the service that applies it.

Every change to a domain record (registration, page edits, each step of an
issuing attempt, removal) is an *event* applied here.  The admin API and the
issuing service call :class:`DomainService`; neither writes a domain record
itself.  Two parts:

- :func:`next_state` and :func:`transition` are pure: the transition table
  and the record an event makes of the current one.  A transition the table
  does not allow raises :class:`jobhost.errors.TransitionForbidden`.
- :class:`DomainService` applies events through the store's atomic
  ``update_domain`` (or ``add_domain`` for a new hostname), so every change is
  computed from the record as it is *now* in the store, whoever wrote it last.
  A page edit that lands while an issuing attempt waits on the CA is therefore
  kept when the attempt records its outcome, and the attempt's outcome is kept
  too: the page is its own field, and no issuing event touches it.

The states (see DESIGN.md, "The path of one hostname")::

                 registered
    (none|removed) -------> pending
    pending|active|failing|paused --order_started---> issuing   (no certificate yet)
    pending|active|failing|paused --renewal_started-> renewing  (a certificate to replace)
    issuing|renewing --issued--> active
    issuing|renewing --failed--> failing      (retryable, or parked: retryable false)
    issuing|renewing --paused--> paused       (the CA rate-limited us)
    any live state --confirmed--> active      (its certificate is valid and not due)
    any live state --deferred|page_changed|renew_requested--> the same state
    any live state --removed--> removed

"Live" is every state but ``removed``.  ``order_started`` and
``renewal_started`` are also allowed from ``issuing``/``renewing`` themselves:
an attempt cut short by a crash or a lost lease left the record there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from jobhost.errors import TransitionForbidden
from jobhost.store.interfaces import IStore
from jobhost.store.records import HISTORY_LIMIT, DomainRecord, DomainState, StateChange
from jobhost.timeutil import now as clock_now

log = Logger()


class DomainEvent:
    """The events that change a domain record."""

    REGISTERED = "registered"
    PAGE_CHANGED = "page_changed"
    ORDER_STARTED = "order_started"
    RENEWAL_STARTED = "renewal_started"
    ISSUED = "issued"
    FAILED = "failed"
    PAUSED = "paused"
    CONFIRMED = "confirmed"
    DEFERRED = "deferred"
    RENEW_REQUESTED = "renew_requested"
    REMOVED = "removed"


_S = DomainState
_LIVE = (_S.PENDING, _S.ISSUING, _S.ACTIVE, _S.RENEWING, _S.FAILING, _S.PAUSED)
_ATTEMPTING = (_S.ISSUING, _S.RENEWING)
#: Stands for "the state the record is in" in :data:`TRANSITIONS`.
SAME = "(same)"

#: event -> {state before (None: no record) -> state after}.  Anything missing is forbidden.
TRANSITIONS: Mapping[str, Mapping[str | None, str]] = {
    DomainEvent.REGISTERED: {None: _S.PENDING, _S.REMOVED: _S.PENDING},
    DomainEvent.PAGE_CHANGED: {s: SAME for s in _LIVE},
    DomainEvent.ORDER_STARTED: {s: _S.ISSUING for s in _LIVE},
    DomainEvent.RENEWAL_STARTED: {s: _S.RENEWING for s in _LIVE},
    DomainEvent.ISSUED: {s: _S.ACTIVE for s in _ATTEMPTING},
    DomainEvent.FAILED: {s: _S.FAILING for s in _ATTEMPTING},
    DomainEvent.PAUSED: {s: _S.PAUSED for s in _ATTEMPTING},
    DomainEvent.CONFIRMED: {s: _S.ACTIVE for s in _LIVE},
    DomainEvent.DEFERRED: {s: SAME for s in _LIVE},
    DomainEvent.RENEW_REQUESTED: {s: SAME for s in _LIVE},
    DomainEvent.REMOVED: {s: _S.REMOVED for s in _LIVE},
}


def next_state(hostname: str, state: str | None, event: str) -> str:
    """The state ``event`` leads to from ``state``; TransitionForbidden if the table has none."""
    target = TRANSITIONS.get(event, {}).get(state)
    if target is None:
        raise TransitionForbidden(hostname=hostname, state=state, event=event)
    return state if target == SAME else target  # type: ignore[return-value]


def transition(
    record: DomainRecord, event: str, at: datetime, reason: str | None = None, **changes: Any
) -> DomainRecord:
    """The record ``event`` makes of ``record`` at ``at`` (pure).

    The state follows :data:`TRANSITIONS`; a change of state, or any event given
    a ``reason``, is appended to the history (at most :data:`HISTORY_LIMIT`
    entries).  ``changes`` sets other fields; ``page`` only on ``page_changed``
    and ``registered``, so no other event can overwrite a page.

    Raises:
        TransitionForbidden: the table does not allow ``event`` in ``record.state``.
    """
    if "page" in changes and event not in (DomainEvent.PAGE_CHANGED, DomainEvent.REGISTERED):
        raise ValueError(f"{event!r} may not change the page")
    state = next_state(record.hostname, record.state, event)
    history = record.history
    if state != record.state or reason:
        history = (history + (StateChange(at=at, state=state, reason=reason),))[-HISTORY_LIMIT:]
    return attrs.evolve(record, state=state, updated_at=at, history=history, **changes)


def new_record(hostname: str, at: datetime, page: Mapping[str, Any] | None, reason: str) -> DomainRecord:
    """A just-registered hostname's record (``registered`` from no record)."""
    state = next_state(hostname, None, DomainEvent.REGISTERED)
    return DomainRecord(
        hostname=hostname, state=state, created_at=at, updated_at=at, page=page,
        history=(StateChange(at=at, state=state, reason=reason),),
    )


def failure_is_news(previous: DomainRecord, state: str, code: Any) -> bool:
    """Whether a failure is worth telling: the hostname was not in ``state`` before this
    attempt, or it was but with another error code.

    ``previous`` is the record as the attempt started it (issuing/renewing; its
    history and ``last_error`` still say how the attempt before ended).
    """
    before = next(
        (c.state for c in reversed(previous.history) if c.state not in _ATTEMPTING),
        None,
    )
    if before != state:
        return True
    return (previous.last_error or {}).get("code") != code


@attrs.define
class DomainService:
    """Applies domain events through the store, atomically (see the module docstring).

    Every method fires with the record as stored after the event (or fails with
    KeyError when the hostname has no record, TransitionForbidden when its state
    does not allow the event, StoreError when the store fails; nothing is
    written then).

    Attributes:
        store: The store holding the records.
        clock: The time every change is stamped with.
    """

    store: IStore
    clock: IReactorTime

    def _now(self) -> datetime:
        return clock_now(self.clock)

    def _apply(self, hostname: str, change: Callable[[DomainRecord], DomainRecord]) -> Deferred:
        return self.store.update_domain(hostname, change)

    def _event(self, hostname: str, event: str, reason: str | None = None, **changes: Any) -> Deferred:
        at = self._now()
        return self._apply(hostname, lambda r: transition(r, event, at, reason, **changes))

    # -- what the admin API asks -------------------------------------------------------------

    def register(self, hostname: str, page: Mapping[str, Any] | None, reason: str = "registered") -> Deferred:
        """Register ``hostname`` (pending), or re-register it after a removal.

        Fires with ``(record, created)``: ``created`` is False when it was
        already registered and not removed (the stored record is returned as it
        is).  A removed hostname starts afresh (no error, no attempts, the new
        page) and keeps its history.
        """
        at = self._now()
        record = new_record(hostname, at, page, reason)

        async def run() -> tuple[DomainRecord, bool]:
            stored, created = await self.store.add_domain(record)
            if created or stored.state != DomainState.REMOVED:
                return stored, created
            # Set on every call of revive (the store may call it again after losing a race; the
            # last call is the one written); update_domain fails rather than not calling it.
            revived: dict[str, bool] = {}

            def revive(current: DomainRecord) -> DomainRecord:
                if current.state != DomainState.REMOVED:
                    revived["created"] = False
                    return current  # registered again by someone else meanwhile
                revived["created"] = True
                return attrs.evolve(
                    transition(current, DomainEvent.REGISTERED, at, reason, page=page),
                    created_at=at, last_error=None, attempts=0, next_attempt=None,
                    unpause_url=None, renew_requested=False,
                )

            stored = await self._apply(hostname, revive)
            return stored, revived["created"]

        return Deferred.fromCoroutine(run())

    def set_page(self, hostname: str, page: Mapping[str, Any] | None) -> Deferred:
        """Replace the careers page (``page_changed``); the state and everything else stay."""
        return self._event(hostname, DomainEvent.PAGE_CHANGED, page=page)

    def request_renewal(self, hostname: str) -> Deferred:
        """An operator asks for a new certificate now: clears the backoff and any parking.

        The request (``renew_requested``) is kept until a certificate is issued.
        """
        return self._event(
            hostname, DomainEvent.RENEW_REQUESTED, attempts=0, next_attempt=None, renew_requested=True
        )

    def remove(self, hostname: str, reason: str) -> Deferred:
        """Stop serving and renewing ``hostname`` (``removed``)."""
        return self._event(hostname, DomainEvent.REMOVED, reason, next_attempt=None)

    # -- what the issuing service asks -------------------------------------------------------

    def start_attempt(self, hostname: str, renewing: bool) -> Deferred:
        """An order is about to be placed: ``issuing`` (first certificate) or ``renewing``."""
        event = DomainEvent.RENEWAL_STARTED if renewing else DomainEvent.ORDER_STARTED
        return self._event(hostname, event)

    def issued(self, hostname: str, renewed: bool, next_attempt: datetime) -> Deferred:
        """A certificate was stored: ``active``, errors and the renewal request cleared."""
        return self._event(
            hostname, DomainEvent.ISSUED, "renewed" if renewed else "issued",
            attempts=0, last_error=None, next_attempt=next_attempt, unpause_url=None,
            renew_requested=False,
        )

    def failed(
        self,
        hostname: str,
        error: Mapping[str, Any],
        next_attempt: datetime | None,
        paused: bool = False,
        unpause_url: str | None = None,
    ) -> Deferred:
        """The attempt failed: ``failing`` (or ``paused`` when rate limited), attempts + 1.

        Args:
            error: The ``last_error`` document; ``"retryable": False`` in it parks
                the hostname (no further order until an operator asks for one).
            next_attempt: When to try again (None when parked).
        """
        event = DomainEvent.PAUSED if paused else DomainEvent.FAILED
        at = self._now()

        def change(record: DomainRecord) -> DomainRecord:
            return transition(
                record, event, at, error.get("message"), attempts=record.attempts + 1,
                last_error=dict(error), next_attempt=next_attempt, unpause_url=unpause_url,
                # A request is answered by this attempt; parking waits for the next one.
                renew_requested=record.renew_requested and error.get("retryable") is not False,
            )

        return self._apply(hostname, change)

    def confirm(self, hostname: str, next_attempt: datetime) -> Deferred:
        """Its certificate is valid and not due: ``active`` until ``next_attempt``.

        Writes nothing when the record already says exactly that.
        """
        at = self._now()

        def change(record: DomainRecord) -> DomainRecord:
            if record.state == DomainState.ACTIVE and record.next_attempt == next_attempt:
                return record
            return transition(record, DomainEvent.CONFIRMED, at, next_attempt=next_attempt)

        return self._apply(hostname, change)

    def defer(self, hostname: str, next_attempt: datetime, reason: str) -> Deferred:
        """Nothing is ordered now (e.g. the order budget is spent): try at ``next_attempt``."""
        return self._event(hostname, DomainEvent.DEFERRED, reason, next_attempt=next_attempt)


__all__ = [
    "DomainEvent",
    "DomainService",
    "SAME",
    "TRANSITIONS",
    "failure_is_news",
    "new_record",
    "next_state",
    "transition",
]
