"""
The IEventSink contract, as a test mixin every event sink runs.

A test module subclasses :class:`EventSinkContractTests` together with
``twisted.trial.unittest.TestCase`` and provides :meth:`make_sink` (cleaned up by
the test module).  Runs: :class:`jobhost.events.WebhookNotifier` (to a receiver that
never answers), :class:`jobhost.events.NullEventSink` and the tests' recording sink,
all in ``tests/test_events.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from zope.interface.verify import verifyObject

from jobhost.events import EVENTS, IEventSink
from jobhost.store.records import DomainRecord, DomainState, StateChange, certificate_record
from jobhost.testing import TestCA

HOST = "events.contract.test"
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)

_shared_ca: list[TestCA] = []


def _certificate() -> Any:
    if not _shared_ca:
        _shared_ca.append(TestCA.create("event sink contract CA"))
    key_pem, chain_pem = _shared_ca[0].issue(HOST)
    return certificate_record(HOST, key_pem, chain_pem)


def _record(state: str = DomainState.ACTIVE) -> DomainRecord:
    return DomainRecord(HOST, state, T0, T0, history=(StateChange(T0, state, "contract"),))


class EventSinkContractTests:
    """What every IEventSink does; mix into a trial ``TestCase`` with :meth:`make_sink`."""

    def make_sink(self) -> Any:
        """A fresh IEventSink (cleaned up by the test module)."""
        raise NotImplementedError

    def test_provides_interface(self) -> None:
        """The sink provides IEventSink."""
        self.assertTrue(verifyObject(IEventSink, self.make_sink()))

    def test_notify_returns_none_at_once(self) -> None:
        """Every event, with and without a certificate, is taken synchronously: notify returns None."""
        sink = self.make_sink()
        certificate = _certificate()
        for event in EVENTS:
            self.assertIsNone(sink.notify(event, _record(), certificate))
            self.assertIsNone(sink.notify(event, _record(DomainState.FAILING)))

    def test_unknown_event_does_not_raise(self) -> None:
        """An event that is not one of EVENTS is dropped (maybe logged), never raised."""
        self.assertIsNone(self.make_sink().notify("exploded", _record()))
        self.flushLoggedErrors()  # a sink may log the refusal as an error: that is allowed


__all__ = ["EventSinkContractTests"]
