"""
The real IssuingService with the real ACME client, through the directory proxy in front of Pebble.

The scheduler runs on a ``Clock`` (so "to the second" can be checked), while the
ACME client, the HTTP-01 listener (jobhost's own challenge resource, answering from
the store) and Pebble run on the real reactor.
"""

from __future__ import annotations

import os

from datetime import datetime, timedelta, timezone

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from acme_proxy import AcmeDirectoryProxy
from acme_servers import PebbleServer, free_port
from jobhost.domains import DomainService
from jobhost.acme.client import AcmeClient
from jobhost.issuing import IssuingService
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainRecord, DomainState
from jobhost.web.site import HttpRootResource, make_site

HOST = "jobs.acme-corp.test"
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


async def eventually(predicate, timeout: float = 20.0, interval: float = 0.05) -> None:
    """Wait on the real reactor until ``predicate()`` is true."""
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, interval, lambda: None)
        waited += interval


class ProxiedIssuingTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        http_port = free_port()
        self.pebble = PebbleServer.start(http_port=http_port)
        self.addCleanup(self.pebble.stop)
        self.proxy = AcmeDirectoryProxy.start(reactor, self.pebble)
        self.addCleanup(self.proxy.stop)
        self.store = MemoryStore()
        port = reactor.listenTCP(http_port, make_site(HttpRootResource(self.store)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.client = AcmeClient.create(reactor, self.proxy.directory_url, self.pebble.ca_bundle_path, timeout=10)
        self.addCleanup(self.client.close)
        self.clock = Clock()
        self.clock.advance(T0.timestamp())
        self.service = IssuingService(
            store=self.store, domains=DomainService(store=self.store, clock=self.clock),
            client=self.client, clock=self.clock,
            directory_url=self.proxy.directory_url, random=lambda: 0.0, holder="test",
            profile="shortlived",
        )
        self.addCleanup(self.service.stopService)
        now = T0
        self.store.domains[HOST] = DomainRecord(HOST, DomainState.PENDING, now, now)

    def record(self) -> DomainRecord:
        return self.store.domains[HOST]

    def orders_created(self) -> int:
        """Orders Pebble accepted so far (its log names each one it adds)."""
        with open(os.path.join(self.pebble.workdir, "pebble.log")) as f:
            return f.read().count("Added order")

    async def test_rate_limited_retry_after_honoured_to_the_second(self) -> None:
        """The CA's rateLimited + Retry-After pauses the hostname exactly that long, then it is issued."""
        self.proxy.inject_rate_limit(1, retry_after=1234)
        self.service.startService()
        await eventually(lambda: self.record().state == DomainState.PAUSED)
        record = self.record()
        self.assertEqual(record.next_attempt, T0 + timedelta(seconds=1234))
        self.assertEqual(record.last_error["code"], "rateLimited")
        self.assertEqual(record.last_error["problem"]["status"], 429)
        self.assertEqual(record.unpause_url, self.proxy.base_url + "/docs/rate-limits")
        orders = len(self.proxy.new_orders)
        self.clock.advance(1233)
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(len(self.proxy.new_orders), orders, "no order before Retry-After has passed")
        created = self.orders_created()
        self.clock.advance(1)
        await eventually(lambda: self.record().state == DomainState.ACTIVE)
        # Exactly one order, as Pebble counts them (the proxy also sees a badNonce resend).
        self.assertEqual(self.orders_created(), created + 1)
        self.assertEqual(self.proxy.new_orders[-1]["profile"], "shortlived")

    async def test_ari_window_read_and_replaces_sent(self) -> None:
        """After issuance the CA's ARI window is stored, and the renewal order names the replaced certificate."""
        self.service.startService()
        await eventually(lambda: self.record().state == DomainState.ACTIVE)
        certificate = self.store.certificates[HOST]
        self.assertIsNotNone(certificate.ari)
        start, end = self.proxy.ari_window
        self.assertEqual((certificate.ari.start, certificate.ari.end), (start.replace(microsecond=0), end.replace(microsecond=0)))
        self.assertEqual(self.proxy.renewal_info_requests[-1], certificate.ari_cert_id)
        # Next look at the certificate: when the CA said to ask again (Retry-After), before the window.
        self.assertEqual(self.record().next_attempt, T0 + timedelta(seconds=self.proxy.ari_retry_after))
        done: Deferred = self.service.renew_now(HOST)
        await done
        await eventually(lambda: self.store.certificates[HOST].serial != certificate.serial)
        self.assertEqual(self.proxy.new_orders[-1]["replaces"], certificate.ari_cert_id)

    async def test_ari_window_ending_at_expiry_is_not_followed_past_the_lifetime_rule(self) -> None:
        """A CA whose renewal window ends at expiry (83 minutes before it): the stored window is the CA's,
        but the renewal is scheduled by the lifetime rule, not in the last 83 minutes."""
        from jobhost.certs import renewal_due_at, renewal_time

        self.service.startService()
        await eventually(lambda: self.record().state == DomainState.ACTIVE)
        issued = self.store.certificates[HOST]
        self.proxy.ari_window = (issued.not_after - timedelta(hours=1, minutes=23), issued.not_after)
        asked = len(self.proxy.renewal_info_requests)
        self.clock.advance(self.proxy.ari_retry_after)  # when the CA said to ask again
        await eventually(lambda: len(self.proxy.renewal_info_requests) > asked and self.service.when_idle().called)
        await eventually(lambda: self.store.certificates[HOST].ari.end == issued.not_after.replace(microsecond=0))
        stored = self.store.certificates[HOST]
        self.assertEqual(stored.serial, issued.serial)
        seed = int(stored.fingerprint[:8], 16) / 0x100000000
        self.assertEqual(renewal_time(stored), renewal_due_at(stored.not_before, stored.not_after, None, seed))
        self.assertLess(renewal_time(stored), stored.ari.start)
