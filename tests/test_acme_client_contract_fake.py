"""The IAcmeClient contract run against FakeAcmeClient (the real client runs it on Pebble)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from acme_client_contract import AcmeClientContractTests
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from jobhost.acme.interfaces import IHTTP01Responder
from jobhost.certs import AriWindow
from jobhost.testing import FakeAcmeClient, TestCA

_shared_ca: list[TestCA] = []


def shared_ca() -> TestCA:
    """One throwaway CA for this module, made on first use (never at import)."""
    if not _shared_ca:
        _shared_ca.append(TestCA.create("fake ACME CA"))
    return _shared_ca[0]


@implementer(IHTTP01Responder)
class MemoryResponder:
    """Keeps published answers in a dict (nothing fetches them from the fake CA)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], str] = {}

    def start_responding(self, hostname: str, token: str, key_authorization: str) -> Any:
        self.answers[(hostname, token)] = key_authorization
        return succeed(None)

    def stop_responding(self, hostname: str, token: str) -> Any:
        self.answers.pop((hostname, token), None)
        return succeed(None)


class FakeAcmeClientContractTests(AcmeClientContractTests, TestCase):
    """FakeAcmeClient keeps the IAcmeClient contract."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(datetime.now(timezone.utc).timestamp())

    def make_client(self, ari: bool = False) -> FakeAcmeClient:
        window = None
        if ari:
            start = self.now() + timedelta(days=60)
            window = AriWindow(start=start, end=start + timedelta(days=2))
        return FakeAcmeClient(ca=shared_ca(), clock=self.clock, renewal_window=window)

    def make_responder(self) -> MemoryResponder:
        return MemoryResponder()

    def trusted_roots(self) -> list[bytes]:
        return [shared_ca().root_pem]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
