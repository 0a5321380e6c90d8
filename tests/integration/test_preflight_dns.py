"""Preflight over real DNS packets: a twisted.names server on 127.0.0.1 and the real reactor."""

from __future__ import annotations

import struct

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.names import authority, common, dns, server
from twisted.names import error as dns_error
from twisted.trial.unittest import TestCase

from jobhost.caa import CAA
from jobhost.preflight import Preflight, ReasonCode

OURS = "203.0.113.10"
TARGET = "hosts.example.test"


class CAARecord(dns.UnknownRecord):
    """CAA RDATA (RFC 8659) for the test server to send; twisted.names has no CAA class."""

    TYPE = CAA

    @classmethod
    def make(cls, flags: int, tag: str, value: str) -> "CAARecord":
        return cls(struct.pack("!BB", flags, len(tag)) + tag.encode() + value.encode())


class MemoryAuthority(authority.FileAuthority):
    """An authoritative zone held in memory: ``(zone, {name: [records]})`` instead of a file."""

    def loadFile(self, zone_and_records):
        zone, records = zone_and_records
        self.soa = (
            zone.encode(),
            dns.Record_SOA(mname=f"ns.{zone}", rname=f"hostmaster.{zone}", serial=1, minimum=60, expire=60),
        )
        self.records = {name.lower().encode(): list(rs) for name, rs in records.items()}


class BrokenAuthority(common.ResolverBase):
    """Fails every query under ``zone`` with an internal error, which the server sends as SERVFAIL."""

    def __init__(self, zone: str):
        super().__init__()
        self.zone = zone.encode()

    def _lookup(self, name, cls, type, timeout):
        if name.lower() == self.zone or name.lower().endswith(b"." + self.zone):
            return defer.fail(BrokenZone(name))
        return defer.fail(dns_error.DomainError(name))


class BrokenZone(Exception):
    """The failure BrokenAuthority raises inside the server."""


class TruncatingServerFactory(server.DNSServerFactory):
    """Sends UDP answers over 512 octets truncated (TC set), as real servers do, so clients retry over TCP."""

    def sendReply(self, protocol, message, address):
        if address is not None:
            message.maxSize = 512
        super().sendReply(protocol, message, address)


def zones():
    many = [dns.Record_A(f"203.0.113.{i}") for i in range(1, 61)]
    return [
        BrokenAuthority("broken.test"),
        MemoryAuthority(
            (
                "acme-corp.test",
                {
                    "acme-corp.test": [dns.Record_A(OURS)],
                    "jobs.acme-corp.test": [dns.Record_A(OURS)],
                    "shop.acme-corp.test": [dns.Record_CNAME(TARGET)],
                    "old.acme-corp.test": [dns.Record_A("198.51.100.7")],
                    "cdn.acme-corp.test": [dns.Record_CNAME("edge.cdn-provider.test")],
                    "big.acme-corp.test": many,
                },
            )
        ),
        MemoryAuthority(
            (
                "strict-corp.test",
                {
                    "strict-corp.test": [CAARecord.make(0, "issue", "digicert.com")],
                    "jobs.strict-corp.test": [dns.Record_A(OURS)],
                    "careers.strict-corp.test": [
                        dns.Record_A(OURS),
                        CAARecord.make(0, "issue", "letsencrypt.org; validationmethods=http-01"),
                    ],
                },
            )
        ),
        MemoryAuthority(
            (
                "cdn-provider.test",
                {"edge.cdn-provider.test": [dns.Record_A(OURS), CAARecord.make(0, "issue", ";")]},
            )
        ),
        MemoryAuthority(("example.test", {TARGET: [dns.Record_A(OURS)]})),
    ]


class PreflightOverDNSTests(TestCase):
    """Preflight against a real DNS server listening on UDP and TCP on 127.0.0.1."""

    def setUp(self):
        self.factory = TruncatingServerFactory(authorities=zones())
        # UDP and TCP must share one port number; another process may take the TCP side of
        # the number the kernel gave us for UDP, so try again with a fresh number.
        for _ in range(20):
            udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(self.factory), interface="127.0.0.1")
            self.port = udp.getHost().port
            try:
                tcp = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")
            except CannotListenError:
                udp.stopListening()
                continue
            break
        else:
            self.fail("no port number free for both UDP and TCP")
        self.addCleanup(udp.stopListening)
        self.addCleanup(tcp.stopListening)
        self.preflight = Preflight.create(
            reactor, [f"127.0.0.1:{self.port}"], [OURS], [TARGET], timeout=5.0
        )
        self.addCleanup(self.close_tcp)

    @defer.inlineCallbacks
    def close_tcp(self):
        """Close TCP connections the resolver kept open after a truncated answer."""
        for protocol in list(self.factory.connections):
            protocol.transport.loseConnection()
        for _ in range(100):
            if not self.preflight.resolver.connections and not self.factory.connections:
                return
            yield deferLater(reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_ours(self):
        """A hostname whose A record is ours passes over real DNS."""
        result = yield self.preflight.check("jobs.acme-corp.test")
        self.assertTrue(result.ok, result.reasons)
        self.assertEqual([c.passed for c in result.checks], [True, True])

    @defer.inlineCallbacks
    def test_cname_to_our_target(self):
        """A CNAME to our target passes over real DNS."""
        result = yield self.preflight.check("shop.acme-corp.test")
        self.assertTrue(result.ok, result.reasons)

    @defer.inlineCallbacks
    def test_elsewhere(self):
        """A hostname pointing at another address is points_elsewhere with the address found."""
        result = yield self.preflight.check("old.acme-corp.test")
        (reason,) = result.reasons
        self.assertEqual(reason.code, ReasonCode.POINTS_ELSEWHERE)
        self.assertEqual(
            reason.message,
            "old.acme-corp.test has A 198.51.100.7, but must point at 203.0.113.10 (A) "
            "or be a CNAME to hosts.example.test.",
        )
        self.assertFalse(result.retryable)

    @defer.inlineCallbacks
    def test_nxdomain(self):
        """A hostname the server does not know is nxdomain."""
        result = yield self.preflight.check("missing.acme-corp.test")
        (reason,) = result.reasons
        self.assertEqual(reason.code, ReasonCode.NXDOMAIN)

    @defer.inlineCallbacks
    def test_caa_on_parent_forbids(self):
        """CAA on the zone apex naming another CA is caa_forbids, read from real CAA RDATA."""
        result = yield self.preflight.check("jobs.strict-corp.test")
        (reason,) = result.reasons
        self.assertEqual(reason.code, ReasonCode.CAA_FORBIDS)
        self.assertEqual(reason.found, ('strict-corp.test CAA 0 issue "digicert.com"',))
        self.assertTrue(result.checks[0].passed)

    @defer.inlineCallbacks
    def test_caa_on_hostname_allows(self):
        """The hostname's own CAA allowing our CA overrides its parent's."""
        result = yield self.preflight.check("careers.strict-corp.test")
        self.assertTrue(result.ok, result.reasons)

    @defer.inlineCallbacks
    def test_caa_via_cname_forbids(self):
        """CAA at a CNAME target is found through a server that answers one CNAME at a time."""
        result = yield self.preflight.check("cdn.acme-corp.test")
        (reason,) = result.reasons
        self.assertEqual(reason.code, ReasonCode.CAA_FORBIDS)
        self.assertIn("via its CNAME to edge.cdn-provider.test", reason.message)
        self.assertIn("forbids every CA", reason.message)

    @defer.inlineCallbacks
    def test_servfail(self):
        """A server answering SERVFAIL gives retryable servfail reasons."""
        result = yield self.preflight.check("jobs.broken.test")
        self.assertEqual({r.code for r in result.reasons}, {ReasonCode.SERVFAIL})
        self.assertTrue(result.retryable)
        self.assertTrue(self.flushLoggedErrors(BrokenZone))

    @defer.inlineCallbacks
    def test_truncated_answer_retried_over_tcp(self):
        """An answer too big for UDP arrives over TCP and every address in it is judged."""
        many = [f"203.0.113.{i}" for i in range(1, 61)]
        preflight = Preflight.create(reactor, [f"127.0.0.1:{self.port}"], many, [TARGET])
        self.preflight = preflight
        result = yield preflight.check("big.acme-corp.test")
        self.assertTrue(result.ok, result.reasons)
        self.assertEqual(len([f for f in result.checks[0].found if " A " in f]), 60)
        self.assertTrue(self.factory.connections or preflight.resolver.connections)
        # Our single address among sixty is not enough.
        self.preflight = Preflight.create(reactor, [f"127.0.0.1:{self.port}"], [OURS], [TARGET])
        result = yield self.preflight.check("big.acme-corp.test")
        self.assertEqual(result.reasons[0].code, ReasonCode.POINTS_ELSEWHERE)
        self.preflight = preflight


class SilentServerTests(TestCase):
    """Preflight against a UDP port that never answers."""

    @defer.inlineCallbacks
    def test_timeout(self):
        """Queries that get no answer become retryable dns_timeout reasons within the timeout."""
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        preflight = Preflight.create(
            reactor, [f"127.0.0.1:{silent.getHost().port}"], [OURS], [TARGET], timeout=0.5
        )
        started = reactor.seconds()
        result = yield preflight.check("jobs.acme-corp.test")
        self.assertLess(reactor.seconds() - started, 2.0)
        self.assertFalse(result.ok)
        self.assertEqual({r.code for r in result.reasons}, {ReasonCode.DNS_TIMEOUT})
        self.assertTrue(result.retryable)
        self.assertTrue(all(r.retryable for r in result.reasons))
