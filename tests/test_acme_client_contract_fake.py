"""The IAcmeClient contract run against FakeAcmeClient (the real client runs it on Pebble)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from acme_client_contract import AcmeClientContractTests
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from jobhost.certs import AriWindow
from jobhost.testing import FakeAcmeClient, MemoryResponder, TestCA

_shared_ca: list[TestCA] = []


def shared_ca() -> TestCA:
    """One throwaway CA for this module, made on first use (never at import)."""
    if not _shared_ca:
        _shared_ca.append(TestCA.create("fake ACME CA"))
    return _shared_ca[0]


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
