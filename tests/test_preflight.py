"""Unit tests for jobhost.preflight over a fake IResolver and a Clock."""

from __future__ import annotations

import ipaddress
import json
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.names import common, dns
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from jobhost.caa import CAA
from jobhost.errors import ConfigError, InvalidHostname
from jobhost.preflight import (
    IPreflight,
    MAX_CNAME_HOPS,
    RESOLV_CONF,
    Preflight,
    PreflightReason,
    PreflightResult,
    ReasonCode,
)

HOST = "jobs.acme-corp.com"
OURS = "203.0.113.10"
OURS6 = "2001:db8::10"
TARGET = "hosts.example.net"
ACCOUNT = "https://acme-v02.api.letsencrypt.org/acme/acct/1234"


class FakeCAARecord(dns.UnknownRecord):
    """A CAA record as twisted.names carries it: raw RDATA with type 257."""

    TYPE = CAA


def caa(flags: int, tag: str, value: str | bytes) -> FakeCAARecord:
    """Encode one CAA record's RDATA (flags, tag length, tag, value)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return FakeCAARecord(struct.pack("!BB", flags, len(tag)) + tag.encode("ascii") + raw)


def A(address: str) -> dns.Record_A:
    return dns.Record_A(address)


def AAAA(address: str) -> dns.Record_AAAA:
    return dns.Record_AAAA(address)


def CNAME(target: str) -> dns.Record_CNAME:
    return dns.Record_CNAME(target)


HANG = object()


class FakeResolver(common.ResolverBase):
    """An IResolver answering from a dict of records, the way a recursive resolver does.

    ``zone`` maps a name to its records; a name absent from it is NXDOMAIN.  In
    recursive mode CNAMEs are followed inside one answer (stopping when a name
    repeats); in authoritative mode an answer holds only the first CNAME.
    ``faults`` maps ``(name, type)`` to an exception to fail with, or to
    :data:`HANG` for a query that never answers.
    """

    def __init__(self, zone=None, faults=None, recursive=True):
        super().__init__()
        self.zone = {k.lower(): list(v) for k, v in (zone or {}).items()}
        self.faults = dict(faults or {})
        self.recursive = recursive
        self.queries: list[tuple[str, int]] = []

    def _lookup(self, name, cls, type, timeout):
        name = name.decode("ascii") if isinstance(name, bytes) else name
        self.queries.append((name, type))
        fault = self.faults.get((name, type))
        if fault is HANG:
            return defer.Deferred()
        if fault is not None:
            return defer.fail(fault)
        answers = []
        current, seen = name, {name}
        while True:
            records = self.zone.get(current)
            if records is None:
                message = dns.Message(rCode=dns.ENAME)
                message.answers = answers
                return defer.fail(dns_error.DNSNameError(message))
            cnames = [r for r in records if isinstance(r, dns.Record_CNAME)]
            if cnames and type != dns.CNAME:
                answers.append(dns.RRHeader(current, dns.CNAME, dns.IN, 60, cnames[0]))
                target = cnames[0].name.name.decode("ascii")
                if not self.recursive or target in seen:
                    return defer.succeed((answers, [], []))
                seen.add(target)
                current = target
                continue
            answers += [
                dns.RRHeader(current, r.TYPE, dns.IN, 60, r) for r in records if r.TYPE == type
            ]
            return defer.succeed((answers, [], []))


def make(zone=None, faults=None, *, recursive=True, **kwargs):
    """Return (preflight, resolver, clock) over a fake resolver."""
    resolver = FakeResolver(zone, faults, recursive)
    clock = Clock()
    options = dict(addresses=[OURS], cname_targets=[TARGET], account_uri=None)
    options.update(kwargs)
    return Preflight(resolver=resolver, clock=clock, timeout=5.0, **options), resolver, clock


class PreflightTestCase(SynchronousTestCase):
    """Helpers shared by the test classes below."""

    def check(self, zone=None, faults=None, hostname=HOST, **kwargs) -> PreflightResult:
        preflight, _, _ = make(zone, faults, **kwargs)
        return self.successResultOf(preflight.check(hostname))

    def only_reason(self, result: PreflightResult):
        self.assertFalse(result.ok)
        self.assertEqual(len(result.reasons), 1, result.reasons)
        return result.reasons[0]

    def check_named(self, result: PreflightResult, name: str):
        (check,) = [c for c in result.checks if c.name == name]
        return check


class AddressTests(PreflightTestCase):
    """The A/AAAA/CNAME part of preflight."""

    def test_fake_resolver_provides_iresolver(self):
        """The fake used throughout these tests provides IResolver."""
        self.assertTrue(verifyObject(IResolver, FakeResolver()))

    def test_preflight_provides_ipreflight(self):
        """Preflight provides IPreflight."""
        preflight, _, _ = make()
        self.assertTrue(verifyObject(IPreflight, preflight))

    def test_a_record_ours_passes(self):
        """A hostname whose only A record is ours passes both checks."""
        result = self.check({HOST: [A(OURS)]})
        self.assertTrue(result.ok)
        self.assertEqual(result.reasons, ())
        self.assertFalse(result.retryable)
        self.assertEqual([c.name for c in result.checks], ["dns", "caa"])
        self.assertTrue(all(c.passed for c in result.checks))
        self.assertIn(f"{HOST} A {OURS}", self.check_named(result, "dns").found)

    def test_points_elsewhere_message(self):
        """A foreign A record gives points_elsewhere with a sentence naming both addresses."""
        reason = self.only_reason(self.check({HOST: [A("198.51.100.7")]}))
        self.assertEqual(reason.code, ReasonCode.POINTS_ELSEWHERE)
        self.assertEqual(
            reason.message,
            "jobs.acme-corp.com has A 198.51.100.7, but must point at 203.0.113.10 (A) "
            "or be a CNAME to hosts.example.net.",
        )
        self.assertEqual(reason.found, (f"{HOST} A 198.51.100.7",))
        self.assertEqual(reason.expected, (f"{HOST} A {OURS}", f"{HOST} CNAME {TARGET}"))
        self.assertFalse(reason.retryable)
        self.assertIn(TARGET, reason.fix)

    def test_mixed_a_records_fail(self):
        """One foreign A record beside ours fails, naming the foreign address."""
        reason = self.only_reason(self.check({HOST: [A(OURS), A("198.51.100.7")]}))
        self.assertEqual(reason.code, ReasonCode.POINTS_ELSEWHERE)
        self.assertIn("198.51.100.7 is not ours", reason.message)
        self.assertIn(f"{HOST} A {OURS}", reason.found)

    def test_several_a_records_all_ours_pass(self):
        """Several A records pass when every one is ours."""
        result = self.check({HOST: [A(OURS), A("203.0.113.11")]}, addresses=[OURS, "203.0.113.11"])
        self.assertTrue(result.ok)

    def test_nxdomain(self):
        """A hostname that does not exist gives nxdomain, not retryable."""
        reason = self.only_reason(self.check({}))
        self.assertEqual(reason.code, ReasonCode.NXDOMAIN)
        self.assertEqual(
            reason.message,
            "jobs.acme-corp.com does not exist in DNS; it must point at 203.0.113.10 (A) "
            "or be a CNAME to hosts.example.net.",
        )
        self.assertFalse(reason.retryable)

    def test_no_records(self):
        """A hostname with records but no A/AAAA gives no_records."""
        reason = self.only_reason(self.check({HOST: [dns.Record_TXT(b"hello")]}))
        self.assertEqual(reason.code, ReasonCode.NO_RECORDS)
        self.assertIn("has no A or AAAA records", reason.message)

    def test_timeout_is_retryable(self):
        """A query that times out gives dns_timeout and a retryable result."""
        result = self.check(
            {HOST: [A(OURS)]}, {(HOST, dns.AAAA): dns_error.DNSQueryTimeoutError(1)}
        )
        reason = self.only_reason(result)
        self.assertEqual(reason.code, ReasonCode.DNS_TIMEOUT)
        self.assertTrue(reason.retryable)
        self.assertTrue(result.retryable)

    def test_hanging_query_times_out_on_the_clock(self):
        """A query that never answers becomes dns_timeout once the timeout passes on the clock."""
        preflight, _, clock = make({HOST: [A(OURS)]}, {(HOST, dns.A): HANG})
        d = preflight.check(HOST)
        self.assertNoResult(d)
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        reason = self.only_reason(self.successResultOf(d))
        self.assertEqual(reason.code, ReasonCode.DNS_TIMEOUT)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_servfail_is_retryable(self):
        """SERVFAIL gives servfail, retryable, naming the rcode."""
        result = self.check({HOST: [A(OURS)]}, {(HOST, dns.A): dns_error.DNSServerError()})
        reason = self.only_reason(result)
        self.assertEqual(reason.code, ReasonCode.SERVFAIL)
        self.assertIn("SERVFAIL", reason.message)
        self.assertTrue(result.retryable)

    def test_timeout_reported_over_servfail(self):
        """When one family times out and the other gets SERVFAIL, the timeout is reported, naming its type."""
        reason = self.only_reason(
            self.check(
                {HOST: [A(OURS)]},
                {
                    (HOST, dns.A): dns_error.DNSServerError(),
                    (HOST, dns.AAAA): dns_error.DNSQueryTimeoutError(1),
                },
            )
        )
        self.assertEqual(reason.code, ReasonCode.DNS_TIMEOUT)
        self.assertIn(f"{HOST} (AAAA)", reason.message)

    def test_refused_is_servfail(self):
        """REFUSED and other error rcodes are reported as servfail with their name."""
        reason = self.only_reason(
            self.check({HOST: [A(OURS)]}, {(HOST, dns.A): dns_error.DNSQueryRefusedError()})
        )
        self.assertEqual(reason.code, ReasonCode.SERVFAIL)
        self.assertIn("REFUSED", reason.message)

    def test_network_error_is_servfail(self):
        """A resolver that cannot reach its servers gives a retryable servfail."""
        reason = self.only_reason(
            self.check({HOST: [A(OURS)]}, {(HOST, dns.A): OSError("No domain name servers available")})
        )
        self.assertEqual(reason.code, ReasonCode.SERVFAIL)
        self.assertTrue(reason.retryable)

    def test_foreign_address_wins_over_transient_failure(self):
        """A foreign A record is reported even when AAAA times out, and the result is not retryable."""
        result = self.check(
            {HOST: [A("198.51.100.7")]}, {(HOST, dns.AAAA): dns_error.DNSQueryTimeoutError(1)}
        )
        self.assertEqual(self.only_reason(result).code, ReasonCode.POINTS_ELSEWHERE)
        self.assertFalse(result.retryable)

    def test_retryable_only_when_every_reason_is(self):
        """A DNS timeout together with a CAA refusal is not retryable."""
        result = self.check(
            {HOST: [A(OURS), caa(0, "issue", "digicert.com")]},
            {(HOST, dns.AAAA): dns_error.DNSQueryTimeoutError(1)},
        )
        self.assertEqual(
            {r.code for r in result.reasons}, {ReasonCode.DNS_TIMEOUT, ReasonCode.CAA_FORBIDS}
        )
        self.assertFalse(result.retryable)

    def test_programming_error_fails(self):
        """An error that is not about DNS (a bug) fails the Deferred instead of becoming a reason."""
        preflight, _, _ = make({HOST: [A(OURS)]}, {(HOST, dns.A): ZeroDivisionError()})
        self.failureResultOf(preflight.check(HOST), ZeroDivisionError)

    def test_invalid_hostname_fails(self):
        """A value that is not a hostname fails the Deferred with InvalidHostname."""
        preflight, resolver, _ = make({})
        self.failureResultOf(preflight.check("198.51.100.7"), InvalidHostname)
        self.assertEqual(resolver.queries, [])

    def test_hostname_is_normalised(self):
        """The hostname is normalised before it is asked about or reported."""
        preflight, resolver, _ = make({HOST: [A(OURS)]})
        result = self.successResultOf(preflight.check("JOBS.Acme-Corp.com."))
        self.assertEqual(result.hostname, HOST)
        self.assertIn((HOST, dns.A), resolver.queries)


class CnameTests(PreflightTestCase):
    """Following CNAME chains."""

    def test_cname_to_our_target_passes(self):
        """A CNAME straight to our target passes without asking for the target's addresses."""
        preflight, resolver, _ = make({HOST: [CNAME(TARGET)], TARGET: []})
        result = self.successResultOf(preflight.check(HOST))
        self.assertTrue(result.ok)
        self.assertIn(f"is a CNAME to {TARGET}", self.check_named(result, "dns").message)

    def test_two_hop_chain_to_our_target_passes(self):
        """A chain through a customer alias to our target passes."""
        result = self.check(
            {HOST: [CNAME("alias.acme-corp.com")], "alias.acme-corp.com": [CNAME(TARGET)]}
        )
        self.assertTrue(result.ok)

    def test_chain_to_target_authoritative_server(self):
        """A server answering one CNAME per query is asked again for each target."""
        preflight, resolver, _ = make(
            {HOST: [CNAME("alias.acme-corp.com")], "alias.acme-corp.com": [CNAME(TARGET)]},
            recursive=False,
        )
        self.assertTrue(self.successResultOf(preflight.check(HOST)).ok)
        self.assertIn(("alias.acme-corp.com", dns.A), resolver.queries)

    def test_authoritative_chain_to_foreign_addresses(self):
        """Through a non-recursive server, a chain ending at foreign addresses is cname_elsewhere."""
        reason = self.only_reason(
            self.check(
                {HOST: [CNAME("x.herokudns.com")], "x.herokudns.com": [A("192.0.2.1")]},
                recursive=False,
            )
        )
        self.assertEqual(reason.code, ReasonCode.CNAME_ELSEWHERE)
        self.assertIn("x.herokudns.com A 192.0.2.1", reason.found)

    def test_cname_elsewhere(self):
        """A CNAME to a foreign host gives cname_elsewhere naming the chain and its addresses."""
        reason = self.only_reason(
            self.check({HOST: [CNAME("x.herokudns.com")], "x.herokudns.com": [A("192.0.2.1")]})
        )
        self.assertEqual(reason.code, ReasonCode.CNAME_ELSEWHERE)
        self.assertEqual(
            reason.message,
            "jobs.acme-corp.com is a CNAME to x.herokudns.com (which has A 192.0.2.1), "
            "but must point at 203.0.113.10 (A) or be a CNAME to hosts.example.net.",
        )
        self.assertEqual(
            reason.found, (f"{HOST} CNAME x.herokudns.com", "x.herokudns.com A 192.0.2.1")
        )

    def test_cname_to_alias_with_our_address_passes(self):
        """A CNAME to a name whose A records are all ours passes."""
        result = self.check({HOST: [CNAME("lb.acme-corp.com")], "lb.acme-corp.com": [A(OURS)]})
        self.assertTrue(result.ok)

    def test_dangling_cname(self):
        """A CNAME to a name that does not exist is cname_elsewhere saying so."""
        reason = self.only_reason(self.check({HOST: [CNAME("gone.example.org")]}))
        self.assertEqual(reason.code, ReasonCode.CNAME_ELSEWHERE)
        self.assertIn("gone.example.org, which does not exist", reason.message)

    def test_cname_loop(self):
        """A CNAME loop is reported as cname_elsewhere, not retryable, showing the loop."""
        result = self.check({HOST: [CNAME("a.example.org")], "a.example.org": [CNAME(HOST)]})
        (reason,) = [r for r in result.reasons if r.code == ReasonCode.CNAME_ELSEWHERE]
        self.assertIn("loop", reason.message)
        self.assertIn(f"{HOST} -> a.example.org -> {HOST}", reason.message)
        self.assertFalse(reason.retryable)
        self.assertFalse(result.retryable)

    def test_self_cname_loop(self):
        """A name that is a CNAME to itself is a loop."""
        result = self.check({HOST: [CNAME(HOST)]})
        self.assertIn("loop", self.check_named(result, "dns").message)
        self.assertFalse(result.ok)

    def test_chain_too_long(self):
        """A chain of more than MAX_CNAME_HOPS CNAMEs fails even when it would end at our address."""
        zone = {HOST: [CNAME("h1.example.org")]}
        for i in range(1, MAX_CNAME_HOPS + 2):
            zone[f"h{i}.example.org"] = [CNAME(f"h{i + 1}.example.org")]
        zone[f"h{MAX_CNAME_HOPS + 2}.example.org"] = [A(OURS)]
        check = self.check_named(self.check(zone), "dns")
        self.assertFalse(check.passed)
        self.assertIn(f"longer than {MAX_CNAME_HOPS}", check.message)

    def test_chain_at_the_limit_passes(self):
        """A chain of exactly MAX_CNAME_HOPS CNAMEs to our address passes."""
        zone = {HOST: [CNAME("h1.example.org")]}
        for i in range(1, MAX_CNAME_HOPS):
            zone[f"h{i}.example.org"] = [CNAME(f"h{i + 1}.example.org")]
        zone[f"h{MAX_CNAME_HOPS}.example.org"] = [A(OURS)]
        result = self.check(zone)
        self.assertTrue(result.ok, result.reasons)

    def test_hops_beyond_our_target_do_not_count(self):
        """Reaching our target ends the walk, so CNAMEs behind our target do not count toward the limit."""
        zone = {HOST: [CNAME("h1.example.org")]}
        for i in range(1, MAX_CNAME_HOPS - 1):
            zone[f"h{i}.example.org"] = [CNAME(f"h{i + 1}.example.org")]
        zone[f"h{MAX_CNAME_HOPS - 1}.example.org"] = [CNAME(TARGET)]
        zone[TARGET] = [CNAME("lb1.provider.net")]
        zone["lb1.provider.net"] = [CNAME("lb2.provider.net")]
        zone["lb2.provider.net"] = [A("192.0.2.200")]
        check = self.check_named(self.check(zone), "dns")
        self.assertTrue(check.passed, check.message)
        self.assertEqual(check.found[-1], f"h{MAX_CNAME_HOPS - 1}.example.org CNAME {TARGET}")

    def test_chain_too_long_authoritative(self):
        """Against a one-hop-per-answer server the number of queries is bounded too."""
        zone = {HOST: [CNAME("h1.example.org")]}
        for i in range(1, 40):
            zone[f"h{i}.example.org"] = [CNAME(f"h{i + 1}.example.org")]
        preflight, resolver, _ = make(zone, recursive=False)
        result = self.successResultOf(preflight.check(HOST))
        self.assertFalse(self.check_named(result, "dns").passed)
        a_queries = [q for q in resolver.queries if q[1] == dns.A]
        self.assertLessEqual(len(a_queries), MAX_CNAME_HOPS + 1)


class IPv6Tests(PreflightTestCase):
    """AAAA records."""

    def test_both_families_ours(self):
        """A and AAAA records that are all ours pass."""
        result = self.check({HOST: [A(OURS), AAAA(OURS6)]}, addresses=[OURS, OURS6])
        self.assertTrue(result.ok)
        self.assertIn(f"{HOST} AAAA {OURS6}", self.check_named(result, "dns").found)

    def test_foreign_aaaa_when_we_have_ipv6(self):
        """A foreign AAAA record fails when we have IPv6 addresses ourselves."""
        reason = self.only_reason(
            self.check({HOST: [A(OURS), AAAA("2001:db8::99")]}, addresses=[OURS, OURS6])
        )
        self.assertEqual(reason.code, ReasonCode.POINTS_ELSEWHERE)
        self.assertIn("2001:db8::99 is not ours", reason.message)

    def test_any_aaaa_when_we_have_only_ipv4(self):
        """An AAAA record fails when we have only IPv4, because Let's Encrypt tries IPv6 first."""
        reason = self.only_reason(self.check({HOST: [A(OURS), AAAA("2001:db8::99")]}))
        self.assertEqual(reason.code, ReasonCode.POINTS_ELSEWHERE)
        self.assertIn("IPv6 first", reason.message)

    def test_no_aaaa_is_fine_when_we_have_ipv6(self):
        """A name with only our A record passes even though we also have IPv6."""
        self.assertTrue(self.check({HOST: [A(OURS)]}, addresses=[OURS, OURS6]).ok)

    def test_only_aaaa_ours(self):
        """A name with only our AAAA record passes."""
        self.assertTrue(self.check({HOST: [AAAA(OURS6)]}, addresses=[OURS6]).ok)

    def test_expectation_lists_both_families(self):
        """The message lists our IPv4 and IPv6 addresses with their record types."""
        reason = self.only_reason(self.check({HOST: [A("192.0.2.1")]}, addresses=[OURS6, OURS]))
        self.assertIn("point at 203.0.113.10 (A) or 2001:db8::10 (AAAA)", reason.message)


class CaaTests(PreflightTestCase):
    """CAA (RFC 8659)."""

    def caa_check(self, zone_extra, hostname=HOST, **kwargs):
        zone = {HOST: [A(OURS)], "acme-corp.com": [], "com": []}
        for name, records in zone_extra.items():
            zone.setdefault(name, [])
            zone[name] = zone[name] + list(records)
        return self.check(zone, hostname=hostname, **kwargs)

    def assert_allowed(self, result):
        self.assertTrue(self.check_named(result, "caa").passed, result.reasons)
        self.assertTrue(result.ok)

    def assert_forbidden(self, result):
        reason = self.only_reason(result)
        self.assertEqual(reason.code, ReasonCode.CAA_FORBIDS)
        self.assertFalse(reason.retryable)
        return reason

    def test_absent_allows(self):
        """No CAA records anywhere up the tree allow issuance."""
        result = self.caa_check({})
        self.assert_allowed(result)
        self.assertIn("No CAA records", self.check_named(result, "caa").message)

    def test_climbs_to_the_top_level_domain(self):
        """CAA is asked of the hostname, each parent, and the top-level domain."""
        preflight, resolver, _ = make({HOST: [A(OURS)]})
        self.successResultOf(preflight.check(HOST))
        self.assertEqual(
            [name for name, t in resolver.queries if t == CAA], [HOST, "acme-corp.com", "com"]
        )

    def test_allows_letsencrypt(self):
        """An issue property naming letsencrypt.org allows issuance."""
        self.assert_allowed(self.caa_check({HOST: [caa(0, "issue", "letsencrypt.org")]}))

    def test_issuer_match_ignores_case(self):
        """The issuer domain name matches without regard to case."""
        self.assert_allowed(self.caa_check({HOST: [caa(0, "ISSUE", "LetsEncrypt.ORG")]}))

    def test_names_another_ca(self):
        """An issue property naming only another CA forbids, with the records found and expected."""
        reason = self.assert_forbidden(self.caa_check({HOST: [caa(0, "issue", "digicert.com")]}))
        self.assertEqual(
            reason.message,
            'CAA at jobs.acme-corp.com does not allow letsencrypt.org to issue for '
            'jobs.acme-corp.com: "digicert.com" allows only digicert.com.',
        )
        self.assertEqual(reason.found, (f'{HOST} CAA 0 issue "digicert.com"',))
        self.assertEqual(reason.expected, (f'{HOST} CAA 0 issue "letsencrypt.org"',))
        self.assertIn('0 issue "letsencrypt.org"', reason.fix)

    def test_one_of_several_issue_records_suffices(self):
        """One matching issue property among others allows issuance."""
        self.assert_allowed(
            self.caa_check(
                {HOST: [caa(0, "issue", "digicert.com"), caa(0, "issue", "letsencrypt.org")]}
            )
        )

    def test_configured_identifiers(self):
        """Any of the configured CA identifiers is accepted."""
        self.assert_allowed(
            self.caa_check({HOST: [caa(0, "issue", "pki.goog")]}, ca_identifiers=["letsencrypt.org", "pki.goog"])
        )

    def test_accounturi_mismatch(self):
        """An accounturi naming another account forbids when we know ours."""
        value = "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/999"
        reason = self.assert_forbidden(
            self.caa_check({HOST: [caa(0, "issue", value)]}, account_uri=ACCOUNT)
        )
        self.assertIn("acct/999, not ours", reason.message)

    def test_accounturi_match(self):
        """An accounturi equal to ours allows issuance."""
        value = f"letsencrypt.org; accounturi={ACCOUNT}"
        self.assert_allowed(self.caa_check({HOST: [caa(0, "issue", value)]}, account_uri=ACCOUNT))

    def test_accounturi_unknown_account(self):
        """An accounturi is assumed to match when we do not know our account URL."""
        value = "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/999"
        self.assert_allowed(self.caa_check({HOST: [caa(0, "issue", value)]}))

    def test_accounturi_applies_once_the_account_uri_is_set(self):
        """A checker told our account URI refuses another account's accounturi and passes our own."""
        other = "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/999"
        ours = f"letsencrypt.org; accounturi={ACCOUNT}"
        zone = {HOST: [A(OURS), caa(0, "issue", other)], "acme-corp.com": [], "com": []}
        preflight, resolver, _ = make(zone)
        self.assert_allowed(self.successResultOf(preflight.check(HOST)))
        preflight.set_account_uri(ACCOUNT)
        reason = self.assert_forbidden(self.successResultOf(preflight.check(HOST)))
        self.assertIn("acct/999, not ours", reason.message)
        resolver.zone[HOST] = [A(OURS), caa(0, "issue", ours)]
        self.assert_allowed(self.successResultOf(preflight.check(HOST)))

    def test_setting_the_account_uri_forgets_remembered_passes(self):
        """A pass decided before the account URI was known is not reused after it is set."""
        other = "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/999"
        preflight, _, _ = make({HOST: [A(OURS), caa(0, "issue", other)], "acme-corp.com": [], "com": []})
        self.assertTrue(self.successResultOf(preflight.recent_or_check(HOST)).ok)
        self.assertTrue(self.successResultOf(preflight.recent_or_check(HOST)).ok)
        preflight.set_account_uri(ACCOUNT)
        self.assert_forbidden(self.successResultOf(preflight.recent_or_check(HOST)))

    def test_validationmethods_without_http01(self):
        """validationmethods without http-01 forbids."""
        reason = self.assert_forbidden(
            self.caa_check({HOST: [caa(0, "issue", "letsencrypt.org; validationmethods=dns-01")]})
        )
        self.assertIn("dns-01, not http-01", reason.message)

    def test_validationmethods_with_http01(self):
        """validationmethods listing http-01 among others allows issuance."""
        value = "letsencrypt.org; validationmethods=dns-01,http-01"
        self.assert_allowed(self.caa_check({HOST: [caa(0, "issue", value)]}))

    def test_unknown_parameters_are_ignored(self):
        """Parameters we do not know do not stop an otherwise matching issue property."""
        value = "letsencrypt.org; policy=ev; validationmethods=http-01"
        self.assert_allowed(self.caa_check({HOST: [caa(0, "issue", value)]}))

    def test_critical_unknown_tag(self):
        """A critical flag on a tag the CA does not understand forbids all issuance."""
        reason = self.assert_forbidden(
            self.caa_check(
                {HOST: [caa(0, "issue", "letsencrypt.org"), caa(128, "tbs", "unknown")]}
            )
        )
        self.assertIn("critical", reason.message)
        self.assertIn(f'{HOST} CAA 128 tbs "unknown"', reason.found)

    def test_flag_bit_one_counts_as_critical(self):
        """Flag value 1, a common misreading of the critical bit, is treated as critical as Let's Encrypt does."""
        self.assert_forbidden(
            self.caa_check({HOST: [caa(0, "issue", "letsencrypt.org"), caa(1, "tbs", "unknown")]})
        )

    def test_non_critical_unknown_tag_is_ignored(self):
        """A non-critical unknown tag without any issue property allows issuance."""
        self.assert_allowed(self.caa_check({HOST: [caa(0, "tbs", "unknown")]}))

    def test_critical_known_tag_is_fine(self):
        """A critical flag on a known tag such as iodef does not forbid."""
        self.assert_allowed(
            self.caa_check(
                {HOST: [caa(128, "iodef", "mailto:ops@acme-corp.com"), caa(0, "issue", "letsencrypt.org")]}
            )
        )

    def test_issue_semicolon_forbids(self):
        """issue ";" forbids every CA."""
        reason = self.assert_forbidden(self.caa_check({HOST: [caa(0, "issue", ";")]}))
        self.assertIn("forbids every CA", reason.message)

    def test_issuewild_only_is_ignored(self):
        """Only issuewild properties (we never ask for wildcards) allow any CA."""
        self.assert_allowed(self.caa_check({HOST: [caa(0, "issuewild", "digicert.com")]}))

    def test_iodef_only_allows(self):
        """An RRset without issue properties allows any CA."""
        result = self.caa_check({"acme-corp.com": [caa(0, "iodef", "mailto:ops@acme-corp.com")]})
        self.assert_allowed(result)
        self.assertIn("no issue property", self.check_named(result, "caa").message)

    def test_malformed_issue_value(self):
        """A malformed issue value allows nobody."""
        reason = self.assert_forbidden(
            self.caa_check({HOST: [caa(0, "issue", "letsencrypt.org; accounturi")]})
        )
        self.assertIn("malformed", reason.message)

    def test_malformed_rdata_forbids(self):
        """CAA RDATA that cannot be parsed forbids issuance."""
        self.assert_forbidden(self.caa_check({HOST: [FakeCAARecord(b"\x00\x09iss")]}))

    def test_parent_domain(self):
        """CAA on the parent domain applies when the hostname has none."""
        reason = self.assert_forbidden(
            self.caa_check({"acme-corp.com": [caa(0, "issue", "digicert.com")]})
        )
        self.assertIn("CAA at acme-corp.com", reason.message)
        self.assertEqual(reason.expected, ('acme-corp.com CAA 0 issue "letsencrypt.org"',))

    def test_parent_domain_allows(self):
        """CAA on the parent domain naming our CA allows issuance."""
        self.assert_allowed(self.caa_check({"acme-corp.com": [caa(0, "issue", "letsencrypt.org")]}))

    def test_closest_rrset_wins(self):
        """The hostname's own CAA RRset overrides its parent's."""
        self.assert_allowed(
            self.caa_check(
                {
                    HOST: [caa(0, "issue", "letsencrypt.org")],
                    "acme-corp.com": [caa(0, "issue", "digicert.com")],
                }
            )
        )

    def test_caa_via_cname(self):
        """CAA reached through the hostname's CNAME applies, and the message says where from."""
        result = self.caa_check(
            {
                HOST: [],
                "shop.acme-corp.com": [CNAME("cdn.other.net")],
                "cdn.other.net": [A(OURS), caa(0, "issue", "digicert.com")],
                "other.net": [],
                "net": [],
            },
            hostname="shop.acme-corp.com",
        )
        reason = self.assert_forbidden(result)
        self.assertIn("shop.acme-corp.com (via its CNAME to cdn.other.net)", reason.message)
        self.assertIn("cdn.other.net", reason.fix)

    def test_caa_climb_continues_from_original_parent(self):
        """Without CAA at a CNAME target, the climb goes on at the original name's parent, not the target's."""
        preflight, resolver, _ = make(
            {
                HOST: [CNAME("cdn.other.net")],
                "cdn.other.net": [A(OURS)],
                "other.net": [caa(0, "issue", "digicert.com")],
                "acme-corp.com": [],
                "com": [],
            }
        )
        result = self.successResultOf(preflight.check(HOST))
        self.assertTrue(self.check_named(result, "caa").passed, result.reasons)
        self.assertNotIn(("other.net", CAA), resolver.queries)

    def test_caa_via_cname_authoritative(self):
        """Against a non-recursive server the CNAME target is asked for its CAA."""
        zone = {
            HOST: [CNAME("cdn.other.net")],
            "cdn.other.net": [A(OURS), caa(0, "issue", "digicert.com")],
            "acme-corp.com": [],
            "com": [],
        }
        reason = self.only_reason(self.check(zone, recursive=False))
        self.assertEqual(reason.code, ReasonCode.CAA_FORBIDS)

    def test_caa_servfail(self):
        """SERVFAIL on a CAA query before the relevant RRset is a retryable servfail."""
        result = self.caa_check(
            {"acme-corp.com": [caa(0, "issue", "letsencrypt.org")]},
            faults={(HOST, CAA): dns_error.DNSServerError()},
        )
        reason = self.only_reason(result)
        self.assertEqual(reason.code, ReasonCode.SERVFAIL)
        self.assertIn("CAA", reason.message)
        self.assertTrue(result.retryable)

    def test_caa_timeout_on_parent(self):
        """A timeout on the parent's CAA query, with none at the hostname, is dns_timeout."""
        result = self.caa_check(
            {}, faults={("acme-corp.com", CAA): dns_error.DNSQueryTimeoutError(1)}
        )
        self.assertEqual(self.only_reason(result).code, ReasonCode.DNS_TIMEOUT)

    def test_failure_above_relevant_rrset_is_ignored(self):
        """A failure above the first non-empty CAA RRset does not matter."""
        result = self.caa_check(
            {HOST: [caa(0, "issue", "letsencrypt.org")]},
            faults={("com", CAA): dns_error.DNSServerError()},
        )
        self.assert_allowed(result)


class ResultShapeTests(PreflightTestCase):
    """JSON forms and logging."""

    def test_to_json(self):
        """A failed result renders as JSON with reasons and both checks."""
        result = self.check({HOST: [A("198.51.100.7")]})
        document = json.loads(json.dumps(result.to_json()))
        self.assertEqual(document["hostname"], HOST)
        self.assertFalse(document["ok"])
        self.assertFalse(document["retryable"])
        self.assertEqual(document["reasons"][0]["code"], "points_elsewhere")
        self.assertEqual(document["reasons"][0]["found"], [f"{HOST} A 198.51.100.7"])
        self.assertEqual(set(document["reasons"][0]), {"code", "message", "fix", "found", "expected", "retryable"})
        self.assertEqual([c["name"] for c in document["checks"]], ["dns", "caa"])
        self.assertEqual([c["passed"] for c in document["checks"]], [False, True])

    def test_reason_codes_are_strings(self):
        """Reason codes compare equal to their documented strings."""
        self.assertEqual(
            sorted(str(c) for c in ReasonCode),
            sorted(
                [
                    "nxdomain", "no_records", "points_elsewhere", "cname_elsewhere",
                    "caa_forbids", "dns_timeout", "servfail",
                ]
            ),
        )

    def test_failure_is_logged(self):
        """A failed preflight logs the hostname and reason codes as fields."""
        preflight, _, _ = make({})
        with capturedLogs() as events:
            self.successResultOf(preflight.check(HOST))
        (event,) = [e for e in events if e.get("hostname") == HOST]
        self.assertEqual(event["codes"], "nxdomain")


class _UDPReactor(MemoryReactorClock):
    """A MemoryReactorClock that binds UDP ports in memory (MemoryReactor has none): datagrams are kept."""

    def __init__(self):
        super().__init__()
        self.udpPorts = []
        self.transports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        transport = _UDPSink()
        self.udpPorts.append((port, protocol))
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return transport


class _UDPSink:
    """The transport of an in-memory UDP port: keeps what is sent."""

    def __init__(self):
        self.sent = []

    def write(self, datagram, address=None):
        self.sent.append((datagram, address))

    def stopListening(self):
        return None


class ConstructionTests(SynchronousTestCase):
    """The constructor's normalisation and the create() factory."""

    def test_inputs_are_normalised(self):
        """Addresses, CNAME targets and CA identifiers are normalised on the way in."""
        preflight = Preflight(
            resolver=FakeResolver(),
            addresses=["2001:DB8:0::0010", " 203.0.113.10"],
            cname_targets=["Hosts.Example.NET."],
            ca_identifiers=["LetsEncrypt.org", "letsencrypt.org"],
        )
        self.assertEqual(
            preflight.addresses,
            frozenset({ipaddress.ip_address(OURS6), ipaddress.ip_address(OURS)}),
        )
        self.assertEqual(preflight.cname_targets, frozenset({TARGET}))
        self.assertEqual(preflight.ca_identifiers, ("letsencrypt.org",))

    def test_bad_address(self):
        """An address that is not an IP address is a ConfigError naming the key."""
        with self.assertRaises(ConfigError) as e:
            Preflight(resolver=FakeResolver(), addresses=["hosts.example.net"], cname_targets=[])
        self.assertEqual(e.exception.path, ("preflight", "addresses"))

    def test_create_with_servers(self):
        """create() builds a client.Resolver over the given servers, on the given reactor."""
        reactor = MemoryReactorClock()
        preflight = Preflight.create(
            reactor, ["127.0.0.1:5353", "[::1]:53", "192.0.2.53"], [OURS], [TARGET], timeout=2.0
        )
        self.assertEqual(
            preflight.resolver.servers, [("127.0.0.1", 5353), ("::1", 53), ("192.0.2.53", 53)]
        )
        self.assertIs(preflight.clock, reactor)
        self.assertEqual(preflight.timeout, 2.0)
        self.assertLess(sum(preflight.resolver.timeout), 2.0)
        self.assertEqual(preflight.ca_identifiers, ("letsencrypt.org",))
        self.assertTrue(verifyObject(IResolver, preflight.resolver))

    def test_created_resolver_is_quiet_with_a_fresh_port_per_query(self):
        """Each query binds its own UDP port (source port randomisation kept); its protocol logs no start/stop."""
        reactor = _UDPReactor()
        preflight = Preflight.create(reactor, ["127.0.0.1:5353"], [OURS], [])
        with capturedLogs() as events:
            for name in ("a.example.test", "b.example.test"):
                preflight.resolver.lookupAddress(name)
            for _, protocol in reactor.udpPorts:
                protocol.doStop()
        protocols = [protocol for _, protocol in reactor.udpPorts]
        self.assertEqual(len(protocols), 2)
        self.assertIsNot(protocols[0], protocols[1])
        self.assertEqual([address for t in reactor.transports for _, address in t.sent],
                         [("127.0.0.1", 5353)] * 2)
        self.assertEqual(events, [])
        self.assertIsInstance(protocols[0], dns.DNSDatagramProtocol)

    def test_quiet_resolver_retries_a_taken_port_but_not_running_out_of_descriptors(self):
        """A port that cannot be bound is replaced by another random one; EMFILE is raised at once."""
        import errno
        import socket

        from twisted.internet.error import CannotListenError

        from jobhost.preflight import QuietResolver

        class Refusing(_UDPReactor):
            def __init__(self, errors):
                super().__init__()
                self.errors = list(errors)
                self.tries = 0

            def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
                self.tries += 1
                if self.errors:
                    raise CannotListenError(interface, port, self.errors.pop(0))
                return super().listenUDP(port, protocol, interface, maxPacketSize)

        taken = socket.error(errno.EADDRINUSE, "in use")
        reactor = Refusing([taken, taken])
        QuietResolver(servers=[("127.0.0.1", 53)], reactor=reactor)._connectedProtocol()
        self.assertEqual((reactor.tries, len(reactor.udpPorts)), (3, 1))
        reactor = Refusing([socket.error(errno.EMFILE, "too many open files")])
        with self.assertRaises(CannotListenError):
            QuietResolver(servers=[("127.0.0.1", 53)], reactor=reactor)._connectedProtocol()
        self.assertEqual(reactor.tries, 1)

    def test_create_without_servers_reads_resolv_conf(self):
        """create() with no resolvers uses the system's resolv.conf."""
        reactor = MemoryReactorClock()
        preflight = Preflight.create(reactor, [], [OURS], [])
        self.assertEqual(preflight.resolver.resolv, RESOLV_CONF)

    def test_create_bad_resolver(self):
        """A resolver that is not an IP address is a ConfigError naming the key."""
        for bad in ["dns.google:53", "127.0.0.1:99999", "[::1", "127.0.0.1:x"]:
            with self.assertRaises(ConfigError, msg=bad) as e:
                Preflight.create(MemoryReactorClock(), [bad], [OURS], [])
            self.assertEqual(e.exception.path, ("preflight", "resolvers"))

    def test_create_needs_something_to_point_at(self):
        """create() refuses a config with neither addresses nor CNAME targets."""
        with self.assertRaises(ConfigError):
            Preflight.create(MemoryReactorClock(), ["127.0.0.1"], [], [])


# ---------------------------------------------------------------- property test

NAMES = [HOST, "acme-corp.com", "com", TARGET, "a.example.org", "b.example.org"]
TYPES = [dns.A, dns.AAAA, CAA]

issue_values = st.builds(
    lambda issuer, parameters, spaces: issuer + spaces + "; ".join(parameters),
    st.sampled_from(["letsencrypt.org", "LetsEncrypt.org", "digicert.com", "", " ", "bad..name"]),
    st.lists(
        st.sampled_from(
            [
                "",
                f"accounturi={ACCOUNT}",
                "accounturi=https://example.com/acct/9",
                "validationmethods=http-01",
                "validationmethods=dns-01,tls-alpn-01",
                "policy=ev",
                "accounturi",
                "x=y z",
                "=",
                ";",
            ]
        ),
        max_size=3,
    ).map(lambda ps: [";"] + ps if ps else ps),
    st.sampled_from(["", " ", "\t"]),
)
caa_values = st.one_of(
    issue_values, st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
)


def raw_caa(flags: int, tag: bytes, value: bytes) -> FakeCAARecord:
    """CAA RDATA with an arbitrary tag, possibly with a tag length that lies."""
    return FakeCAARecord(struct.pack("!BB", flags, len(tag) & 0xFF) + tag + value)


payloads = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: dns.Record_A(str(ip))),
    st.sampled_from([OURS, "198.51.100.7"]).map(dns.Record_A),
    st.ip_addresses(v=6).map(lambda ip: dns.Record_AAAA(str(ip))),
    st.sampled_from(NAMES).map(dns.Record_CNAME),
    st.binary(max_size=40).map(FakeCAARecord),
    st.builds(
        caa,
        st.sampled_from([0, 1, 128, 255]),
        st.sampled_from(["issue", "issuewild", "iodef", "tbs", "Issue"]),
        caa_values,
    ),
    st.builds(raw_caa, st.integers(0, 255), st.binary(min_size=0, max_size=17), st.binary(max_size=20)),
    st.builds(dns.Record_TXT, st.binary(max_size=20)),
    st.binary(max_size=10).map(dns.UnknownRecord),
)


def rrheader(name, payload, rtype):
    """An RRHeader; the type only differs from the payload's for UnknownRecord payloads."""
    return dns.RRHeader(name, payload.TYPE if payload.TYPE is not None else rtype, dns.IN, 60, payload)


failures = st.sampled_from(
    [
        dns_error.DNSNameError(),
        dns_error.DNSNameError(dns.Message(rCode=dns.ENAME)),
        dns_error.DNSServerError(),
        dns_error.DNSQueryRefusedError(),
        dns_error.DNSFormatError(),
        dns_error.DNSUnknownError(),
        dns_error.DNSQueryTimeoutError(0),
        defer.TimeoutError(),
        ConnectionRefusedError(),
        HANG,
    ]
)


@st.composite
def scripts(draw):
    """A script: for some (name, type) questions, an answer or a failure.

    Answers mostly hold records owned by the name asked, so that CNAME chains,
    address sets and CAA RRsets are actually reached, and sometimes records
    owned by other names or of other types.
    """
    keys = draw(
        st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(TYPES)), max_size=12, unique=True)
    )
    script = {}
    for name, _ in keys:
        owners = st.one_of(st.just(name), st.just(name), st.sampled_from(NAMES))
        types = st.sampled_from([dns.A, dns.AAAA, dns.CNAME, CAA, 16])
        answer = st.lists(st.builds(rrheader, owners, payloads, types), max_size=6)
        script[(name, _)] = draw(st.one_of(answer, answer, failures))
    return script


class ScriptedResolver(common.ResolverBase):
    """An IResolver that answers each (name, type) with a scripted outcome."""

    def __init__(self, script):
        super().__init__()
        self.script = script

    def _lookup(self, name, cls, type, timeout):
        name = name.decode("ascii") if isinstance(name, bytes) else name
        outcome = self.script.get((name, type), [])
        if outcome is HANG:
            return defer.Deferred()
        if isinstance(outcome, BaseException):
            return defer.fail(outcome)
        return defer.succeed((list(outcome), [], []))


class PropertyTests(SynchronousTestCase):
    """check() over arbitrary DNS answers."""

    @given(
        script=scripts(),
        addresses=st.lists(st.sampled_from([OURS, OURS6, "198.51.100.7"]), max_size=2),
        account_uri=st.sampled_from([None, ACCOUNT]),
    )
    def test_check_never_errbacks(self, script, addresses, account_uri):
        """For any answers, failures and hangs, check() fires with a consistent result."""
        clock = Clock()
        preflight = Preflight(
            resolver=ScriptedResolver(script),
            addresses=addresses,
            cname_targets=[TARGET],
            account_uri=account_uri,
            clock=clock,
            timeout=5.0,
        )
        d = preflight.check(HOST)
        clock.advance(5.0)
        result = self.successResultOf(d)
        self.assertEqual(result.ok, not result.reasons)
        self.assertEqual([c.name for c in result.checks], ["dns", "caa"])
        self.assertEqual(result.ok, all(c.passed for c in result.checks))
        if result.retryable:
            self.assertFalse(result.ok)
        for reason in result.reasons:
            self.assertIsInstance(reason.code, ReasonCode)
            self.assertTrue(reason.message)
        json.dumps(result.to_json())
        self.assertEqual(clock.getDelayedCalls(), [])

    @given(
        records=st.lists(
            st.tuples(
                st.sampled_from([0, 0, 0, 1, 128]),
                st.sampled_from(["issue", "issue", "Issue", "issuewild", "iodef", "tbs"]),
                caa_values,
            ),
            min_size=1,
            max_size=5,
        ),
        account_uri=st.sampled_from([None, ACCOUNT]),
    )
    def test_caa_rrset_decides_like_rfc_8659(self, records, account_uri):
        """For any CAA RRset at the hostname, a plain issue "letsencrypt.org" allows and no mention of it forbids."""
        zone = {HOST: [A(OURS)] + [caa(f, t, v) for f, t, v in records], "acme-corp.com": [], "com": []}
        result = self.successResultOf(make(zone, account_uri=account_uri)[0].check(HOST))
        check = [c for c in result.checks if c.name == "caa"][0]
        critical_unknown = any(f & 129 and t.lower() not in ("issue", "issuewild", "iodef") for f, t, _ in records)
        issue_values = [v for _, t, v in records if t.lower() == "issue"]
        if critical_unknown:
            self.assertFalse(check.passed)
        elif not issue_values:
            self.assertTrue(check.passed)
        elif any(v.strip(" \t").lower() == "letsencrypt.org" for v in issue_values):
            self.assertTrue(check.passed, check.message)
        elif not any("letsencrypt.org" in v.lower() for v in issue_values):
            self.assertFalse(check.passed)
            self.assertEqual(result.reasons[-1].code, ReasonCode.CAA_FORBIDS)



class RecentPassTests(PreflightTestCase):
    def test_recent_pass_is_reused_but_failures_are_not(self):
        """recent_or_check reuses a pass for max_age seconds; failures and older passes are asked afresh."""
        preflight, resolver, clock = make({HOST: [dns.Record_A(OURS)]})
        first = self.successResultOf(preflight.check(HOST))
        self.assertTrue(first.ok)
        asked = len(resolver.queries)
        self.assertIs(self.successResultOf(preflight.recent_or_check(HOST)), first)
        self.assertEqual(len(resolver.queries), asked, "no DNS query for a recent pass")
        clock.advance(61)
        self.assertTrue(self.successResultOf(preflight.recent_or_check(HOST)).ok)
        self.assertGreater(len(resolver.queries), asked)
        resolver.zone[HOST] = [dns.Record_A("198.51.100.7")]
        self.assertFalse(self.successResultOf(preflight.check(HOST)).ok)
        asked = len(resolver.queries)
        self.assertFalse(self.successResultOf(preflight.recent_or_check(HOST)).ok)
        self.assertGreater(len(resolver.queries), asked, "a failure is never reused")


# ---------------------------------------------------------------- details an operator or customer sees


def answer(*records):
    """A scripted answer section: (owner, payload) pairs as RRHeaders."""
    return [rrheader(owner, payload, payload.TYPE) for owner, payload in records]


def scripted(script, **kwargs):
    """Return (preflight, clock) over a ScriptedResolver; unscripted questions get an empty answer."""
    clock = Clock()
    options = dict(addresses=[OURS], cname_targets=[TARGET], account_uri=None)
    options.update(kwargs)
    return Preflight(resolver=ScriptedResolver(script), clock=clock, timeout=5.0, **options), clock


class AnyNameResolver(common.ResolverBase):
    """Answers every A query with our address and every other query with nothing."""

    def __init__(self):
        super().__init__()
        self.queries = 0

    def _lookup(self, name, cls, type, timeout):
        self.queries += 1
        if type == dns.A:
            return defer.succeed(([dns.RRHeader(name, dns.A, dns.IN, 60, A(OURS))], [], []))
        return defer.succeed(([], [], []))


class LimitTests(PreflightTestCase):
    """The documented limits and defaults, as numbers."""

    def chain(self, hops, recursive=True):
        zone = {HOST: [CNAME("h1.example.org")]}
        for i in range(1, hops):
            zone[f"h{i}.example.org"] = [CNAME(f"h{i + 1}.example.org")]
        zone[f"h{hops}.example.org"] = [A(OURS)]
        return self.check(zone, recursive=recursive)

    def test_eight_cnames_are_followed(self):
        """A chain of 8 CNAMEs to our address passes, from a recursive and from an authoritative server."""
        self.assertTrue(self.chain(8).ok)
        self.assertTrue(self.chain(8, recursive=False).ok)

    def test_nine_cnames_are_too_many(self):
        """A chain of 9 CNAMEs fails, saying the limit of 8."""
        for recursive in (True, False):
            result = self.chain(9, recursive)
            self.assertEqual(result.reasons[0].code, ReasonCode.CNAME_ELSEWHERE)
            self.assertIn("CNAME chain is longer than 8 records", result.reasons[0].message)
            self.assertIn("too long a chain", self.check_named(result, "caa").message)

    def test_reason_and_result_are_not_retryable_unless_said(self):
        """A reason or result built without retryable is not retryable."""
        reason = PreflightReason(ReasonCode.NO_RECORDS, "no records")
        self.assertFalse(reason.to_json()["retryable"])
        self.assertFalse(PreflightResult(HOST, False, (reason,)).to_json()["retryable"])

    def test_default_timeouts(self):
        """One query may take 5 s unless configured otherwise."""
        self.assertEqual(Preflight(resolver=FakeResolver(), addresses=[OURS], cname_targets=[]).timeout, 5.0)
        self.assertEqual(Preflight.create(MemoryReactorClock(), ["127.0.0.1"], [OURS], []).timeout, 5.0)

    def test_memo_is_not_an_argument_or_shown(self):
        """The remembered passes can neither be handed in nor leak into the repr."""
        with self.assertRaises(TypeError):
            Preflight(resolver=FakeResolver(), addresses=[OURS], cname_targets=[], passed={})
        preflight, _, _ = make({HOST: [A(OURS)]})
        self.assertTrue(self.successResultOf(preflight.check(HOST)).ok)
        self.assertNotIn(HOST, repr(preflight))

    def test_timeout_must_be_positive(self):
        """A zero or negative timeout is a ConfigError at [preflight] timeout; half a second is fine."""
        for bad in (0, 0.0, -1):
            with self.assertRaises(ConfigError, msg=bad) as e:
                Preflight.create(MemoryReactorClock(), ["127.0.0.1"], [OURS], [], timeout=bad)
            self.assertEqual(e.exception.path, ("preflight", "timeout"))
        preflight = Preflight.create(MemoryReactorClock(), ["127.0.0.1"], [OURS], [], timeout=0.5)
        self.assertEqual(preflight.timeout, 0.5)

    def test_retry_schedule(self):
        """Under a second the server is asked once; from a second on, twice; always within the timeout."""
        def schedule(timeout):
            preflight = Preflight.create(MemoryReactorClock(), ["127.0.0.1"], [OURS], [], timeout=timeout)
            return preflight.resolver.timeout

        self.assertEqual(schedule(0.5), (0.45,))
        self.assertEqual(len(schedule(0.99)), 1)
        self.assertEqual(schedule(1.0), (0.3, 0.6))
        self.assertEqual(schedule(5.0), (1.5, 3.0))

    def test_bad_cname_target_and_ca_identifier(self):
        """A CNAME target or CA identifier that is not a hostname is a ConfigError naming its key."""
        with self.assertRaises(ConfigError) as e:
            Preflight(resolver=FakeResolver(), addresses=[], cname_targets=["not a host"])
        self.assertEqual(e.exception.path, ("preflight", "cname_targets"))
        with self.assertRaises(ConfigError) as e:
            Preflight(resolver=FakeResolver(), addresses=[OURS], cname_targets=[], ca_identifiers=["lets encrypt"])
        self.assertEqual(e.exception.path, ("preflight", "ca_identifiers"))


class ErrorKindTests(PreflightTestCase):
    """How each failure a resolver can report becomes a reason."""

    def a_reason(self, error):
        return self.only_reason(self.check({HOST: [A(OURS)]}, {(HOST, dns.A): error}))

    def test_authoritative_nxdomain(self):
        """An authoritative resolver's 'no such name' is nxdomain, not a retryable failure."""
        reason = self.a_reason(dns_error.AuthoritativeDomainError(HOST))
        self.assertEqual(reason.code, ReasonCode.NXDOMAIN)
        self.assertFalse(reason.retryable)

    def test_plain_domain_error_is_nxdomain(self):
        """A DomainError (hosts file, cache) is nxdomain."""
        self.assertEqual(self.a_reason(dns_error.DomainError(HOST)).code, ReasonCode.NXDOMAIN)

    def test_unknown_rcode_is_named(self):
        """An rcode without a name of its own is a servfail naming its number."""
        reason = self.a_reason(dns_error.DNSUnknownError(dns.Message(rCode=6)))
        self.assertEqual(reason.code, ReasonCode.SERVFAIL)
        self.assertIn("DNS failed (rcode 6)", reason.message)
        self.assertIn("(rcode ?)", self.a_reason(dns_error.DNSUnknownError()).message)

    def test_programming_error_keeps_its_type(self):
        """A bug in the resolver fails check() with the bug's own exception, not a wrapper."""
        preflight, _, _ = make({HOST: [A(OURS)]}, {(HOST, CAA): KeyError("bug")})
        failure = self.failureResultOf(preflight.check(HOST))
        self.assertIs(failure.type, KeyError)


class MessageTests(PreflightTestCase):
    """The sentences and records a customer is shown."""

    def test_uppercase_cname_target_is_ours(self):
        """DNS names compare without regard to case: a CNAME to HOSTS.Example.NET points at us."""
        result = self.check({HOST: [CNAME("HOSTS.Example.NET")]})
        self.assertTrue(self.check_named(result, "dns").passed, result.reasons)

    def test_own_cname_target(self):
        """Our own CNAME target passes as such."""
        result = self.check({TARGET: []}, hostname=TARGET)
        self.assertEqual(self.check_named(result, "dns").message, f"{TARGET} is one of our own CNAME targets.")

    def test_single_address_message(self):
        """One address of ours: the message says so, and a duplicate record is not listed twice."""
        result = self.check({HOST: [A(OURS), A(OURS)]})
        check = self.check_named(result, "dns")
        self.assertEqual(check.message, f"{HOST} has A {OURS} (ours).")
        self.assertEqual(check.found, (f"{HOST} A {OURS}",))

    def test_several_addresses_message(self):
        """Several addresses of ours are listed, all ours."""
        result = self.check({HOST: [A(OURS), AAAA(OURS6)]}, addresses=[OURS, OURS6])
        self.assertEqual(
            self.check_named(result, "dns").message, f"{HOST} has A {OURS}, AAAA {OURS6}, all ours."
        )

    def test_cname_to_our_address_message(self):
        """A CNAME to a name with our address names the chain."""
        result = self.check({HOST: [CNAME("lb.acme-corp.com")], "lb.acme-corp.com": [A(OURS)]})
        self.assertEqual(
            self.check_named(result, "dns").message,
            f"{HOST} is a CNAME to lb.acme-corp.com, which has A {OURS} (ours).",
        )

    def test_ipv6_note_only_when_we_have_no_ipv6(self):
        """The IPv6-first note appears for foreign AAAA records only when we have no IPv6 address."""
        with_v6 = self.only_reason(self.check({HOST: [AAAA("2001:db8::99")]}, addresses=[OURS, OURS6]))
        self.assertNotIn("IPv6 first", with_v6.message)
        foreign_a = self.only_reason(self.check({HOST: [A("198.51.100.7")]}))
        self.assertNotIn("IPv6 first", foreign_a.message)

    def test_records_of_other_owners_are_ignored(self):
        """Only records owned by the name asked count; extra records in the answer do not."""
        preflight, _ = scripted(
            {(HOST, dns.A): answer((HOST, A(OURS)), ("other.example.org", A("198.51.100.7")))}
        )
        self.assertTrue(self.successResultOf(preflight.check(HOST)).ok)

    def test_records_of_other_types_are_not_caa(self):
        """A non-CAA record in a CAA answer is not read as CAA."""
        preflight, _ = scripted(
            {(HOST, dns.A): answer((HOST, A(OURS))), (HOST, CAA): answer((HOST, dns.Record_TXT(b"\x00\x05issue")))}
        )
        result = self.successResultOf(preflight.check(HOST))
        self.assertTrue(result.ok, result.reasons)
        self.assertIn("No CAA records apply", self.check_named(result, "caa").message)

    def test_a_chain_is_shown_when_only_aaaa_has_it(self):
        """When the A query timed out, the AAAA answer's CNAME chain is the one shown."""
        reason = self.only_reason(
            self.check(
                {HOST: [CNAME("cdn.other.net")], "cdn.other.net": [AAAA("2001:db8::99")]},
                {(HOST, dns.A): dns_error.DNSQueryTimeoutError(1)},
            )
        )
        self.assertEqual(reason.code, ReasonCode.CNAME_ELSEWHERE)
        self.assertIn(f"{HOST} is a CNAME to cdn.other.net (which has AAAA 2001:db8::99)", reason.message)

    def test_a_chain_wins_a_tie(self):
        """When A and AAAA answers disagree on an equally long chain, the A chain is shown."""
        preflight, _ = scripted(
            {
                (HOST, dns.A): answer((HOST, CNAME("a.example.org")), ("a.example.org", A("198.51.100.7"))),
                (HOST, dns.AAAA): answer((HOST, CNAME("b.example.org"))),
            }
        )
        reason = self.only_reason(self.successResultOf(preflight.check(HOST)))
        self.assertEqual(reason.found, (f"{HOST} CNAME a.example.org", "a.example.org A 198.51.100.7"))

    def test_fix_names_first_target_and_our_addresses(self):
        """The fix names the first of our CNAME targets, then our addresses as the alternative."""
        reason = self.only_reason(
            self.check({HOST: [A("198.51.100.7")]}, cname_targets=[TARGET, "edge.example.net"])
        )
        self.assertEqual(
            reason.fix,
            f"In the DNS for {HOST}, replace its A, AAAA and CNAME records with one CNAME record "
            f"pointing to edge.example.net, or with A/AAAA records for {OURS} only.",
        )

    def test_fix_without_addresses(self):
        """With only CNAME targets the fix offers no addresses."""
        reason = self.only_reason(self.check({HOST: [A("198.51.100.7")]}, addresses=[]))
        self.assertEqual(
            reason.fix,
            f"In the DNS for {HOST}, replace its A, AAAA and CNAME records with one CNAME record "
            f"pointing to {TARGET}.",
        )

    def test_fix_without_cname_targets(self):
        """With only addresses the fix says which A/AAAA records to keep."""
        reason = self.only_reason(self.check({HOST: [A("198.51.100.7")]}, cname_targets=[]))
        self.assertEqual(
            reason.fix,
            f"In the DNS for {HOST}, set its A/AAAA records to {OURS} and remove any other A, AAAA or CNAME records.",
        )

    def test_both_families_timing_out_names_a(self):
        """When A and AAAA both time out the message names the A lookup."""
        reason = self.only_reason(
            self.check(
                {HOST: [A(OURS)]},
                {(HOST, dns.A): dns_error.DNSQueryTimeoutError(1), (HOST, dns.AAAA): dns_error.DNSQueryTimeoutError(1)},
            )
        )
        self.assertIn(f"when we looked up {HOST} (A);", reason.message)

    def test_transient_failure_names_the_cname_target(self):
        """A timeout or SERVFAIL at a CNAME target names the target, not the hostname."""
        zone = {HOST: [CNAME("cdn.other.net")], "cdn.other.net": [A(OURS)]}
        timeout = self.only_reason(
            self.check(zone, {("cdn.other.net", dns.A): dns_error.DNSQueryTimeoutError(1)}, recursive=False)
        )
        self.assertIn("when we looked up cdn.other.net (A);", timeout.message)
        servfail = self.only_reason(
            self.check(zone, {("cdn.other.net", dns.A): dns_error.DNSServerError()}, recursive=False)
        )
        self.assertIn("DNS failed (SERVFAIL) when we looked up cdn.other.net (A);", servfail.message)


class CaaDetailTests(PreflightTestCase):
    """What the CAA part shows."""

    ZONE = {"acme-corp.com": [], "com": [], "other.net": [], "net": []}

    def zone(self, **records):
        zone = dict(self.ZONE)
        zone.update({k.replace("_", "."): v for k, v in records.items()})
        return zone

    def test_allowed_message_names_the_issuer(self):
        """A pass names the issuer domain name of the record that allows it."""
        zone = dict(self.ZONE, **{HOST: [A(OURS), caa(0, "issue", "letsencrypt.org ; validationmethods=http-01")]})
        check = self.check_named(self.check(zone), "caa")
        self.assertTrue(check.passed)
        self.assertTrue(check.message.startswith(f"CAA at {HOST} allows letsencrypt.org ("), check.message)

    def test_fix_names_the_first_ca_identifier(self):
        """The fix asks for the first configured CA identifier, at the name or at the CNAME target."""
        identifiers = ["letsencrypt.org", "pki.goog"]
        zone = dict(self.ZONE, **{HOST: [A(OURS), caa(0, "issue", "digicert.com")]})
        reason = self.only_reason(self.check(zone, ca_identifiers=identifiers))
        self.assertEqual(
            reason.fix,
            f'Add a CAA record at {HOST}: 0 issue "letsencrypt.org" (or remove the records that forbid it).',
        )
        zone = dict(
            self.ZONE, **{HOST: [CNAME("cdn.other.net")], "cdn.other.net": [A(OURS), caa(0, "issue", "digicert.com")]}
        )
        reason = self.only_reason(self.check(zone, ca_identifiers=identifiers))
        self.assertEqual(
            reason.fix,
            f"The CAA records come from cdn.other.net, the CNAME target of {HOST}: ask its operator to add "
            '0 issue "letsencrypt.org", or change the CNAME.',
        )
        self.assertEqual(reason.found, (f"{HOST} CNAME cdn.other.net", 'cdn.other.net CAA 0 issue "digicert.com"'))

    def test_caa_failure_at_a_cname_target(self):
        """A CAA timeout or SERVFAIL at a CNAME target names the target, shows the CNAME, and fails the check."""
        zone = dict(self.ZONE, **{HOST: [CNAME("cdn.other.net")], "cdn.other.net": [A(OURS)]})
        for error, code in (
            (dns_error.DNSQueryTimeoutError(1), ReasonCode.DNS_TIMEOUT),
            (dns_error.DNSServerError(), ReasonCode.SERVFAIL),
        ):
            result = self.check(zone, {("cdn.other.net", CAA): error}, recursive=False)
            reason = self.only_reason(result)
            self.assertEqual(reason.code, code)
            self.assertIn("the CAA records of cdn.other.net;", reason.message)
            self.assertEqual(reason.found, (f"{HOST} CNAME cdn.other.net",))
            self.assertTrue(reason.retryable)
            self.assertTrue(result.retryable)
            self.assertFalse(self.check_named(result, "caa").passed)

    def test_caa_cname_loop_is_not_retryable(self):
        """A CNAME loop met while reading CAA is not retryable, and the CAA check fails."""
        zone = dict(self.ZONE, **{HOST: [CNAME("a.other.net")], "a.other.net": [CNAME(HOST)]})
        result = self.check(zone)
        (reason,) = [r for r in result.reasons if "CAA records cannot be read" in r.message]
        self.assertEqual(reason.code, ReasonCode.SERVFAIL)
        self.assertFalse(reason.retryable)
        self.assertEqual(reason.fix, f"Fix the CNAME records of {HOST}.")
        self.assertFalse(self.check_named(result, "caa").passed)


class MemoryTests(PreflightTestCase):
    """How long passes are remembered, and the log lines."""

    def test_reuse_is_measured_from_the_pass(self):
        """A pass is reused up to exactly max_age seconds after it, whatever the clock read when it passed."""
        preflight, resolver, clock = make({HOST: [A(OURS)]})
        clock.advance(100)
        self.assertTrue(self.successResultOf(preflight.check(HOST)).ok)
        asked = len(resolver.queries)
        clock.advance(60)
        self.successResultOf(preflight.recent_or_check(HOST))
        self.assertEqual(len(resolver.queries), asked)
        clock.advance(0.5)
        self.successResultOf(preflight.recent_or_check(HOST))
        self.assertGreater(len(resolver.queries), asked)

    def test_memo_drops_passes_older_than_ten_minutes_once_it_holds_a_thousand(self):
        """With 1000 passes remembered, the next pass drops those more than 600 s old, and only those."""
        # Each name is one of our CNAME targets, so its pass asks DNS only for CAA: 1000 passes stay fast.
        names = ["oldest.org", "new1.org", "new2.org"] + [f"h{i}.org" for i in range(998)]
        resolver = AnyNameResolver()
        clock = Clock()
        preflight = Preflight(resolver=resolver, addresses=[], cname_targets=names, clock=clock)

        def check(name):
            self.assertTrue(self.successResultOf(preflight.check(name)).ok)

        def reused(name):
            asked = resolver.queries
            self.successResultOf(preflight.recent_or_check(name, max_age=10**6))
            return resolver.queries == asked

        check("oldest.org")
        clock.advance(1)
        for name in names[3:]:
            check(name)
        clock.advance(600)
        check("new1.org")  # 999 remembered: nothing dropped
        self.assertTrue(reused("oldest.org"))
        check("new2.org")  # 1000 remembered: the one 601 s old goes, those 600 s old stay
        self.assertTrue(reused("h0.org"))
        self.assertTrue(reused("new1.org"))
        self.assertFalse(reused("oldest.org"))

    def test_log_lines(self):
        """A pass and a change of account URI are logged."""
        preflight, _, _ = make({HOST: [A(OURS)]})
        with capturedLogs() as events:
            self.successResultOf(preflight.check(HOST))
            preflight.set_account_uri(ACCOUNT)
        formats = [e["log_format"] for e in events]
        self.assertIn("Preflight passed for {hostname}", formats)
        (changed,) = [e for e in events if "accounturi" in e["log_format"]]
        self.assertEqual(changed["account_uri"], ACCOUNT)
