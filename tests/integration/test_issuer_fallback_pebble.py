"""
Issuer fallback against two real Pebble instances with different roots.

The first issuer ("a") is either rate-limiting through the directory proxy or
stopped; the hostname must then get its certificate from the second ("b"),
chaining to b's root, with the certificate record naming "b"; once "a" is back,
the renewal goes to "a" again.  Both Pebbles resolve through one
pebble-challtestsrv and validate HTTP-01 against the same jobhost listener.
The scheduler runs on a ``Clock``; the ACME clients, the listener and Pebble on
the real reactor.
"""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from acme_proxy import AcmeDirectoryProxy
from acme_servers import ChallTestServer, PebbleServer, free_port
from test_issuing_pebble import eventually
from jobhost.acme.client import AcmeClient
from jobhost.domains import DomainService
from jobhost.issuing import Issuer, IssuingService
from jobhost.metrics import Metrics
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainRecord, DomainState
from jobhost.web.site import HttpRootResource, make_site

HOST = "jobs.fallback-corp.test"
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def chains_to(chain_pem: bytes, root_pem: bytes) -> bool:
    """Whether every certificate in ``chain_pem`` is signed by the next, and the last by ``root_pem``."""
    certs = x509.load_pem_x509_certificates(chain_pem) + [x509.load_pem_x509_certificate(root_pem)]
    try:
        for child, parent in zip(certs, certs[1:]):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class IssuerFallbackTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        http_port = free_port()
        self.dns = ChallTestServer.start()
        self.addCleanup(self.dns.stop)
        self.pebble_a = PebbleServer.start(http_port=http_port, dns=self.dns)
        self.addCleanup(self.pebble_a.stop)
        self.pebble_b = PebbleServer.start(http_port=http_port, dns=self.dns)
        self.addCleanup(self.pebble_b.stop)
        self.store = MemoryStore()
        port = reactor.listenTCP(http_port, make_site(HttpRootResource(self.store)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.clock = Clock()
        self.clock.advance(T0.timestamp())
        self.metrics = Metrics()
        self.store.domains[HOST] = DomainRecord(HOST, DomainState.PENDING, T0, T0)

    def service(self, directory_a: str) -> IssuingService:
        client_a = AcmeClient.create(reactor, directory_a, self.pebble_a.ca_bundle_path, timeout=5)
        self.addCleanup(client_a.close)
        client_b = AcmeClient.create(reactor, self.pebble_b.directory_url, self.pebble_b.ca_bundle_path, timeout=5)
        self.addCleanup(client_b.close)
        service = IssuingService(
            store=self.store, domains=DomainService(store=self.store, clock=self.clock),
            client=client_a, clock=self.clock, directory_url=directory_a,
            issuers=(
                Issuer(name="a", client=client_a, directory_url=directory_a),
                Issuer(name="b", client=client_b, directory_url=self.pebble_b.directory_url),
            ),
            random=lambda: 0.0, holder="test", metrics=self.metrics,
        )
        self.addCleanup(service.stopService)
        return service

    def orders(self, issuer: str, outcome: str) -> float | None:
        return self.metrics.registry.get_sample_value("jobhost_acme_orders_total", {"issuer": issuer, "outcome": outcome})

    def assert_issued_by(self, name: str, root_pem: bytes, other_root_pem: bytes) -> None:
        certificate = self.store.certificates[HOST]
        self.assertEqual(certificate.acme_issuer, name)
        self.assertTrue(chains_to(certificate.chain_pem, root_pem), "chains to the issuing Pebble's root")
        self.assertFalse(chains_to(certificate.chain_pem, other_root_pem), "not to the other Pebble's root")

    async def renew_and_wait(self, service: IssuingService) -> None:
        before = self.store.certificates[HOST].serial
        await service.renew_now(HOST)
        await eventually(lambda: self.store.certificates[HOST].serial != before and service.when_idle().called)

    async def test_rate_limited_first_issuer_falls_back_to_the_second_and_renewal_goes_back(self) -> None:
        """The first CA answers newOrder with rateLimited: the hostname is issued by the second (its root, its
        name in the record) at once, and once the first no longer refuses, the renewal comes from the first."""
        proxy = AcmeDirectoryProxy.start(reactor, self.pebble_a)
        self.addCleanup(proxy.stop)
        proxy.inject_rate_limit(1, retry_after=3600)
        service = self.service(proxy.directory_url)
        service.startService()
        await eventually(lambda: self.store.domains[HOST].state == DomainState.ACTIVE)
        self.assert_issued_by("b", self.pebble_b.root_pem(), self.pebble_a.root_pem())
        self.assertEqual((self.orders("a", "rate_limited"), self.orders("b", "issued")), (1, 1))
        await self.renew_and_wait(service)
        self.assert_issued_by("a", self.pebble_a.root_pem(), self.pebble_b.root_pem())
        self.assertEqual(self.orders("a", "issued"), 1)

    async def test_stopped_first_issuer_falls_back_to_the_second_and_renewal_goes_back_when_it_returns(self) -> None:
        """The first CA is down (connection refused): the second issues; after the first is started again,
        the renewal comes from it (a new account on the restarted CA, chaining to its new root)."""
        root_a = self.pebble_a.root_pem()
        self.pebble_a.process.terminate()
        self.pebble_a.process.wait(5)
        service = self.service(self.pebble_a.directory_url)
        service.startService()
        await eventually(lambda: self.store.domains[HOST].state == DomainState.ACTIVE)
        self.assert_issued_by("b", self.pebble_b.root_pem(), root_a)
        self.assertEqual((self.orders("a", "unreachable"), self.orders("b", "issued")), (1, 1))
        self.pebble_a.restart()  # same ports, a new root
        await self.renew_and_wait(service)
        self.assert_issued_by("a", self.pebble_a.root_pem(), self.pebble_b.root_pem())
