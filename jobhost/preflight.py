"""
DNS and CAA preflight: before any ACME order is spent, ask DNS whether a
customer's hostname points at us and whether CAA lets our CA issue for it, and
when it does not, say why in words the customer can act on.

All lookups go through an injected :class:`twisted.names` ``IResolver``
(never ``socket.getaddrinfo``), so nothing here blocks the reactor.  A check
never fails because of DNS: NXDOMAIN, SERVFAIL and timeouts become
:class:`PreflightReason` values; only programming errors fail the Deferred.

The rules, decided here for operators
=====================================

Addresses (check ``"dns"``):

1. The CNAME chain is followed for A and for AAAA separately, at most
   :data:`MAX_CNAME_HOPS` CNAMEs; a name seen twice is a loop.  If any name in
   the chain is one of our ``cname_targets`` the hostname points at us, and
   nothing else is asked.
2. Otherwise the A and AAAA records at the end of the chain decide: **every**
   one of them must be one of our ``addresses``.  The CA may connect to any of
   them, so one foreign A record makes validation fail some of the time, which
   is worse than failing always.  A name with no A/AAAA at all is
   ``no_records``; a name that does not exist is ``nxdomain``.
3. IPv6: a foreign AAAA record is a failure, whether or not we have IPv6
   addresses ourselves.  Let's Encrypt connects over IPv6 first when a name has
   AAAA records and falls back to IPv4 only when the connection cannot be made,
   not when the wrong server answers; so a name with AAAA records that are not
   ours fails validation even when its A records are ours.  Having no AAAA
   record is fine, even when we have IPv6 addresses.
4. When the chain has CNAMEs and does not reach us, the code is
   ``cname_elsewhere`` (the customer has to change the CNAME), whatever is at
   its end; without CNAMEs it is ``points_elsewhere``.

CAA (check ``"caa"``, RFC 8659 section 3):

1. Climb from the hostname towards the top-level domain; at each name ask for
   CAA, following CNAMEs as DNS resolution does (the target's RRset counts, but
   the climb goes on from the original name's parent).  The first non-empty
   RRset is the relevant one; none anywhere means any CA may issue.
2. A record with the critical flag (bit 128, and bit 1 which many zones set by
   mistake and Let's Encrypt honours too) on a tag other than ``issue``,
   ``issuewild`` or ``iodef`` forbids all issuance; so does a record whose
   RDATA cannot be parsed.
3. With no ``issue`` property in the relevant RRset any CA may issue (we never
   ask for wildcards, so ``issuewild`` is ignored).  Otherwise one ``issue``
   property must name one of our ``ca_identifiers`` and its parameters must
   allow us: ``accounturi`` must equal our ``account_uri`` (when we do not know
   our account URI we cannot tell, and assume it does), and
   ``validationmethods`` must include ``http-01``; other parameters are
   ignored.  ``issue ";"`` names no CA and so allows none.
4. A timeout or SERVFAIL on any name up to the relevant one is a retryable
   failure: the CA refuses to issue when it cannot read CAA.

Rules 2 and 3 (parsing the records and deciding) are :mod:`jobhost.caa`,
which does no I/O; this module asks DNS and puts the answer into words.

:attr:`PreflightResult.retryable` is true only when every reason is retryable:
a result that also needs a DNS change from the customer is not worth retrying
unchanged.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
from typing import Any, Iterable, Sequence

import attrs
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names import error as dns_error
from zope.interface import Interface, implementer

from jobhost.caa import CAA, decide_caa, parse_caa_record, quote_caa_value
from jobhost.errors import ConfigError, InvalidHostname
from jobhost.hostnames import normalise_hostname, parse_resolver

#: The most CNAME records followed from one name before we give up.
MAX_CNAME_HOPS = 8

#: CAA issuer domain names accepted when the operator configures none.
DEFAULT_CA_IDENTIFIERS = ("letsencrypt.org",)

#: Where the system's resolvers are listed when none are configured.
RESOLV_CONF = "/etc/resolv.conf"

# Failure kinds of one lookup (internal): the first two are retryable.
_TIMEOUT = "timeout"
_SERVFAIL = "servfail"
_NXDOMAIN = "nxdomain"
_LOOP = "loop"
_TOO_LONG = "too_long"

_RCODE_NAMES = {
    dns_error.DNSFormatError: "FORMERR",
    dns_error.DNSServerError: "SERVFAIL",
    dns_error.DNSNotImplementedError: "NOTIMP",
    dns_error.DNSQueryRefusedError: "REFUSED",
}

class ReasonCode(enum.StrEnum):
    """Why a hostname failed preflight; stable strings for the API and the domain record."""

    NXDOMAIN = "nxdomain"
    NO_RECORDS = "no_records"
    POINTS_ELSEWHERE = "points_elsewhere"
    CNAME_ELSEWHERE = "cname_elsewhere"
    CAA_FORBIDS = "caa_forbids"
    DNS_TIMEOUT = "dns_timeout"
    SERVFAIL = "servfail"


@attrs.frozen
class PreflightReason:
    """One reason a hostname failed preflight.

    Attributes:
        code: What went wrong, as a :class:`ReasonCode`.
        message: A sentence for the customer, e.g. ``"jobs.acme-corp.com has A
            198.51.100.7, but must point at 203.0.113.10 (A) or be a CNAME to
            hosts.example.net."``
        found: What DNS holds, as records in presentation form
            (``"jobs.acme-corp.com A 198.51.100.7"``).
        expected: Records that would pass, in the same form.
        retryable: True when asking again later may pass without any change
            by the customer (timeouts, SERVFAIL).
        fix: What to do about it, one sentence.
    """

    code: ReasonCode
    message: str
    found: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()
    retryable: bool = False
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the reason as a JSON-able mapping."""
        return {
            "code": str(self.code),
            "message": self.message,
            "fix": self.fix,
            "found": list(self.found),
            "expected": list(self.expected),
            "retryable": self.retryable,
        }


@attrs.frozen
class Check:
    """The outcome of one part of preflight, passed or not, for a diagnostics page.

    Attributes:
        name: ``"dns"`` (A/AAAA/CNAME) or ``"caa"``.
        passed: Whether this part allows issuance.
        message: What was found, one sentence.
        fix: What to do when it did not pass; empty when it did.
        found: Records found, in presentation form.
        expected: Records that would pass, in presentation form.
    """

    name: str
    passed: bool
    message: str
    fix: str = ""
    found: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the check as a JSON-able mapping."""
        return {
            "name": self.name,
            "passed": self.passed,
            "message": self.message,
            "fix": self.fix,
            "found": list(self.found),
            "expected": list(self.expected),
        }


@attrs.frozen
class PreflightResult:
    """Everything one preflight found out about a hostname.

    Attributes:
        hostname: The normalised hostname checked.
        ok: True when no reason stands in the way of issuance.
        reasons: Why not, when not ``ok``; empty when ``ok``.
        checks: One :class:`Check` per part (``"dns"``, ``"caa"``), passed or not.
        retryable: True when every reason is retryable, so asking again later
            without any DNS change may pass; false when ``ok``.
    """

    hostname: str
    ok: bool
    reasons: tuple[PreflightReason, ...] = ()
    checks: tuple[Check, ...] = ()
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-able mapping."""
        return {
            "hostname": self.hostname,
            "ok": self.ok,
            "retryable": self.retryable,
            "reasons": [r.to_json() for r in self.reasons],
            "checks": [c.to_json() for c in self.checks],
        }


# ---------------------------------------------------------------- normalising inputs


def _to_addresses(values: Iterable[Any]) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if isinstance(values, (str, bytes)):
        values = [values]
    out = set()
    for value in values:
        try:
            out.add(ipaddress.ip_address(value if not isinstance(value, str) else value.strip()))
        except ValueError:
            raise ConfigError(
                f"{value!r} is not an IPv4 or IPv6 address", ("preflight", "addresses")
            ) from None
    return frozenset(out)


def _to_hostnames(values: Iterable[Any], key: str) -> frozenset[str]:
    if isinstance(values, (str, bytes)):
        values = [values]
    out = set()
    for value in values:
        try:
            out.add(normalise_hostname(value))
        except InvalidHostname as e:
            raise ConfigError(e.describe(), ("preflight", key)) from None
    return frozenset(out)


def _to_cname_targets(values: Iterable[Any]) -> frozenset[str]:
    return _to_hostnames(values, "cname_targets")


def _to_ca_identifiers(values: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)):
        values = [values]
    out: list[str] = []
    for value in values:
        try:
            name = normalise_hostname(value)
        except InvalidHostname as e:
            raise ConfigError(e.describe(), ("preflight", "ca_identifiers")) from None
        if name not in out:
            out.append(name)
    return tuple(out)


class _QuietDNSDatagramProtocol(dns.DNSDatagramProtocol):
    """A DNS client protocol that does not log "Starting protocol" / "Stopping protocol"."""

    noisy = False


class QuietResolver(client.Resolver):
    """``twisted.names.client.Resolver``, one fresh UDP port per query as before, minus two log lines each.

    The resolver binds a new randomly chosen source port for every query (a defence
    against spoofed answers, kept here).  Its protocol logs its start and stop, so a
    preflight (about six queries: A, AAAA, CAA up the tree) wrote a dozen lines of
    "Starting protocol <...>" to the log per hostname, each formatted and written on
    the reactor thread.
    """

    def _connectedProtocol(self, interface: str = "") -> dns.DNSDatagramProtocol:
        failures = 0
        proto = _QuietDNSDatagramProtocol(self, reactor=self._reactor)
        while True:
            try:
                self._reactor.listenUDP(dns.randomSource(), proto, interface=interface)
            except net_error.CannotListenError as e:
                failures += 1
                if getattr(e.socketError, "errno", None) == errno.EMFILE or failures >= 1000:
                    raise  # out of file descriptors, or no free port: as client.Resolver does
            else:
                return proto


def resolver_servers(resolvers: Iterable[str]) -> list[tuple[str, int]]:
    """The ``(ip, port)`` of each ``[preflight] resolvers`` entry, for ``twisted.names``.

    Parsed by :func:`jobhost.hostnames.parse_resolver`, as the config checks them,
    so every value the config accepts is accepted here (and by the self-check).

    Raises:
        ConfigError: at ``[preflight] resolvers`` for an entry that is not an address.
    """
    servers = []
    for i, text in enumerate(resolvers):
        try:
            servers.append(parse_resolver(text))
        except ValueError as e:
            raise ConfigError(f"item {i}: {e}", ("preflight", "resolvers")) from None
    return servers


def _retry_schedule(timeout: float) -> tuple[float, ...]:
    """Per-server attempt timeouts for ``client.Resolver``, ending inside ``timeout``.

    With one server the resolver gives up (cleanly, closing its socket) just
    before :class:`Preflight`'s own guard would cancel the query.
    """
    if timeout >= 1.0:
        return (timeout * 0.3, timeout * 0.6)
    return (timeout * 0.9,)


# ---------------------------------------------------------------- reading records


def _name_text(name: Any) -> str:
    raw = getattr(name, "name", name)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "backslashreplace")
    return str(raw).lower().rstrip(".")


def _rtype(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return "A" if address.version == 4 else "AAAA"


def _ip_of(payload: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(payload, (dns.Record_A, dns.Record_AAAA)):
        try:
            return ipaddress.ip_address(payload.address)
        except ValueError:
            return None
    return None


def _cname_map(answers: Sequence[Any]) -> dict[str, str]:
    cnames: dict[str, str] = {}
    for rr in answers:
        payload = getattr(rr, "payload", None)
        if isinstance(payload, dns.Record_CNAME):
            cnames.setdefault(_name_text(rr.name), _name_text(payload.name))
    return cnames


def _matches(rr: Any, qtype: int) -> bool:
    payload = getattr(rr, "payload", None)
    if qtype == dns.A:
        return isinstance(payload, dns.Record_A)
    if qtype == dns.AAAA:
        return isinstance(payload, dns.Record_AAAA)
    return getattr(rr, "type", None) == qtype and payload is not None


# ---------------------------------------------------------------- one lookup, CNAMEs followed


@attrs.frozen
class _Lookup:
    """The outcome of asking one name for one type, CNAMEs followed.

    ``chain`` is the name asked followed by each CNAME target; ``records`` the
    records of the asked type owned by the chain's last name; ``failure`` one
    of the internal failure kinds or None; ``detail`` the rcode or error name.
    """

    chain: tuple[str, ...]
    records: tuple[Any, ...] = ()
    failure: str | None = None
    detail: str = ""

    @property
    def transient(self) -> bool:
        return self.failure in (_TIMEOUT, _SERVFAIL)


@attrs.frozen
class _QueryFailed:
    kind: str
    detail: str
    answers: tuple[Any, ...] = ()


def _classify(reason: Any) -> _QueryFailed:
    """Turn a failed query into a failure kind, or re-raise a programming error."""
    value = reason.value
    if isinstance(value, dns_error.DNSNameError):
        message = value.args[0] if value.args else None
        answers = tuple(getattr(message, "answers", ()) or ())
        return _QueryFailed(_NXDOMAIN, "NXDOMAIN", answers)
    if isinstance(value, dns_error.AuthoritativeDomainError) or type(value) is dns_error.DomainError:
        return _QueryFailed(_NXDOMAIN, "NXDOMAIN")
    if isinstance(value, (defer.TimeoutError, net_error.TimeoutError, TimeoutError)):
        return _QueryFailed(_TIMEOUT, "timeout")
    if isinstance(value, dns_error.DomainError):
        for kind, name in _RCODE_NAMES.items():
            if isinstance(value, kind):
                return _QueryFailed(_SERVFAIL, name)
        message = value.args[0] if value.args else None
        return _QueryFailed(_SERVFAIL, f"rcode {getattr(message, 'rCode', '?')}")
    if isinstance(value, (OSError, net_error.ConnectError, dns_error.ResolverError)):
        return _QueryFailed(_SERVFAIL, type(value).__name__)
    reason.raiseException()
    raise AssertionError("unreachable")  # pragma: no cover


async def _gather(deferreds: list[defer.Deferred]) -> list[Any]:
    try:
        return await defer.gatherResults(deferreds, consumeErrors=True)
    except defer.FirstError as e:
        e.subFailure.raiseException()
        raise  # pragma: no cover


# ---------------------------------------------------------------- the checker


class IPreflight(Interface):
    """Asks, before an order is spent, whether a hostname can be issued for: DNS and CAA.

    The real one is :class:`Preflight`.  Neither method fails because of DNS: lookups
    that time out, SERVFAIL or NXDOMAIN are reasons in the result.
    """

    def check(hostname):
        """Check ``hostname`` afresh.

        Args:
            hostname: The customer's hostname; normalised here.

        Returns:
            Deferred firing with a :class:`PreflightResult` for the normalised
            hostname (``ok`` with no reasons, or not ``ok`` with at least one
            :class:`PreflightReason`; ``retryable`` true only when every reason is);
            failing only with :class:`jobhost.errors.InvalidHostname` for a name that
            is not a hostname (or for a programming error).
        """

    def set_account_uri(account_uri):
        """Learn our ACME account URL (or None), so CAA ``accounturi`` parameters apply.

        Called by the issuing service once it has registered or loaded the
        account.  Returns None; an implementation that checks no CAA may ignore it.
        """

    def recent_or_check(hostname, max_age=60.0):
        """A passing result from the last ``max_age`` seconds, else a fresh :meth:`check`.

        For a caller that may have checked moments ago (the admin API at registration,
        then the issuing service before ordering).  Only passes are reused, never a
        failure; an implementation that remembers nothing always checks afresh.

        Returns:
            Deferred firing and failing as :meth:`check`'s.
        """


@implementer(IPreflight)
@attrs.define
class Preflight:
    """Checks that a hostname points at us and that CAA allows our CA.

    Attributes:
        resolver: The ``IResolver`` every query goes through.
        addresses: Our IPv4/IPv6 addresses; a hostname's A/AAAA records must all be among them.
        cname_targets: Hostnames a customer may CNAME to instead.
        ca_identifiers: CAA issuer domain names of the CA(s) we order from.
        account_uri: Our ACME account URL, for CAA ``accounturi``; None when unknown.  The
            config cannot say it (the account is made at run time): the issuing service
            tells it with :meth:`set_account_uri` once the account exists.
        clock: Enforces ``timeout`` on each query.
        timeout: Seconds one DNS query may take before it counts as ``dns_timeout``.
    """

    log = Logger()

    resolver: IResolver
    addresses: frozenset = attrs.field(converter=_to_addresses)
    cname_targets: frozenset = attrs.field(converter=_to_cname_targets)
    ca_identifiers: tuple[str, ...] = attrs.field(
        default=DEFAULT_CA_IDENTIFIERS, converter=_to_ca_identifiers
    )
    account_uri: str | None = None
    clock: IReactorTime | None = None
    timeout: float = 5.0
    _passed: dict = attrs.field(factory=dict, init=False, repr=False)

    @classmethod
    def create(
        cls,
        reactor: Any,
        resolvers: Sequence[str],
        addresses: Iterable[str],
        cname_targets: Iterable[str],
        ca_identifiers: Iterable[str] = DEFAULT_CA_IDENTIFIERS,
        account_uri: str | None = None,
        timeout: float = 5.0,
    ) -> "Preflight":
        """Build a :class:`Preflight` over a ``twisted.names.client.Resolver``.

        Args:
            reactor: Provides ``IReactorUDP``, ``IReactorTCP`` and ``IReactorTime``.
            resolvers: ``"host:port"`` (or ``"[v6]:port"``, or a bare address
                for port 53) of the DNS servers to ask; empty means those in
                ``/etc/resolv.conf``, which the resolver re-reads when it changes.
            addresses: Our IPv4/IPv6 addresses.
            cname_targets: Hostnames customers may CNAME to.
            ca_identifiers: CAA issuer domain names we accept.
            account_uri: Our ACME account URL, when known.
            timeout: Seconds one query may take (per server, including one retry).

        Returns:
            The Preflight.

        Raises:
            ConfigError: naming the ``[preflight]`` key that is wrong, or when
                neither ``addresses`` nor ``cname_targets`` is given.
        """
        if timeout <= 0:
            raise ConfigError("timeout must be positive", ("preflight", "timeout"))
        servers = resolver_servers(resolvers)
        addresses = _to_addresses(addresses)
        cname_targets = _to_cname_targets(cname_targets)
        if not addresses and not cname_targets:
            raise ConfigError(
                "set addresses or cname_targets: nothing can point at us", ("preflight",)
            )
        schedule = _retry_schedule(timeout)
        if servers:
            resolver = QuietResolver(servers=servers, timeout=schedule, reactor=reactor)
        else:
            resolver = QuietResolver(resolv=RESOLV_CONF, timeout=schedule, reactor=reactor)
        return cls(
            resolver=resolver,
            addresses=addresses,
            cname_targets=cname_targets,
            ca_identifiers=ca_identifiers,
            account_uri=account_uri,
            clock=reactor,
            timeout=timeout,
        )

    def check(self, hostname: str) -> defer.Deferred[PreflightResult]:
        """Check ``hostname``'s A/AAAA/CNAME records and its CAA records, concurrently.

        Args:
            hostname: The customer's hostname; normalised here.

        Returns:
            A Deferred firing with a :class:`PreflightResult`.  It fails only
            with :class:`jobhost.errors.InvalidHostname` for a name that is not
            a hostname, or for a programming error; DNS trouble is a reason.
        """
        return defer.Deferred.fromCoroutine(self._check(hostname))

    def recent_or_check(self, hostname: str, max_age: float = 60.0) -> defer.Deferred[PreflightResult]:
        """A pass from the last ``max_age`` seconds, else a fresh :meth:`check`.

        The admin API checks a hostname when it is registered and the issuing
        service orders moments later: it need not ask DNS the same ten questions
        again.  Only passes are reused (a failure is always checked afresh), and
        only for a short while, so a customer who moves away still stops costing
        orders.  Without a clock every call is fresh.
        """
        remembered = self._passed.get(normalise_hostname(hostname))
        if remembered is not None and self.clock is not None:
            at, result = remembered
            if self.clock.seconds() - at <= max_age:
                return defer.succeed(result)
        return self.check(hostname)

    def set_account_uri(self, account_uri: str | None) -> None:
        """Learn our ACME account URL, so that CAA ``accounturi`` parameters apply from now on.

        Called by whoever creates or loads the account (the issuing service).  A
        change forgets the passes :meth:`recent_or_check` would reuse: they were
        decided without this URI (or with another one).

        Args:
            account_uri: The account URL the CA gave, or None when it is unknown again.
        """
        if account_uri == self.account_uri:
            return
        self.account_uri = account_uri
        self._passed.clear()
        self.log.debug("Preflight checks CAA accounturi against {account_uri}", account_uri=account_uri)

    def _remember_pass(self, hostname: str, result: PreflightResult) -> None:
        if self.clock is None:
            return
        now = self.clock.seconds()
        if len(self._passed) >= 1000:  # keep the memo small: drop what is too old to reuse
            self._passed = {h: v for h, v in self._passed.items() if now - v[0] <= 600}
        self._passed[hostname] = (now, result)

    async def _check(self, hostname: str) -> PreflightResult:
        hostname = normalise_hostname(hostname)
        (dns_check, dns_reason), (caa_check, caa_reason) = await _gather(
            [
                defer.Deferred.fromCoroutine(self._check_dns(hostname)),
                defer.Deferred.fromCoroutine(self._check_caa(hostname)),
            ]
        )
        reasons = tuple(r for r in (dns_reason, caa_reason) if r is not None)
        result = PreflightResult(
            hostname=hostname,
            ok=not reasons,
            reasons=reasons,
            checks=(dns_check, caa_check),
            retryable=bool(reasons) and all(r.retryable for r in reasons),
        )
        if result.ok:
            self.log.debug("Preflight passed for {hostname}", hostname=hostname)
            self._remember_pass(hostname, result)
        else:
            self._passed.pop(hostname, None)
            self.log.info(
                "Preflight failed for {hostname}: {codes} (retryable: {retryable})",
                hostname=hostname,
                codes=",".join(str(r.code) for r in reasons),
                retryable=result.retryable,
            )
        return result

    # ------------------------------------------------------------ querying

    def _query(self, name: str, qtype: int) -> defer.Deferred:
        """Ask one question; fires with the answer section or a :class:`_QueryFailed`."""
        if qtype == dns.A:
            d = defer.maybeDeferred(self.resolver.lookupAddress, name)
        elif qtype == dns.AAAA:
            d = defer.maybeDeferred(self.resolver.lookupIPV6Address, name)
        else:
            d = defer.maybeDeferred(self.resolver.query, dns.Query(name, qtype, dns.IN))
        if self.clock is not None:
            d.addTimeout(self.timeout, self.clock)
        return d.addCallbacks(lambda result: tuple(result[0]), _classify)

    async def _follow(self, name: str, qtype: int, stop_at: frozenset[str] = frozenset()) -> _Lookup:
        """Resolve ``name`` for ``qtype``, following CNAMEs; stop early at any of ``stop_at``."""
        chain = [name]
        current = name
        # Each round either ends or moves at least one CNAME further, so
        # MAX_CNAME_HOPS + 1 rounds suffice.
        for _ in range(MAX_CNAME_HOPS + 1):
            if current in stop_at:
                return _Lookup(tuple(chain))
            asked = current
            outcome = await self._query(asked, qtype)
            failed = outcome if isinstance(outcome, _QueryFailed) else None
            answers = failed.answers if failed else outcome
            cnames = _cname_map(answers)
            while current in cnames:
                current = cnames[current]
                looped = current in chain
                chain.append(current)
                if looped:
                    return _Lookup(tuple(chain), failure=_LOOP)
                if len(chain) - 1 > MAX_CNAME_HOPS:
                    return _Lookup(tuple(chain), failure=_TOO_LONG)
                if current in stop_at:
                    return _Lookup(tuple(chain))
            if failed is not None:
                return _Lookup(tuple(chain), failure=failed.kind, detail=failed.detail)
            records = tuple(
                rr for rr in answers if _name_text(rr.name) == current and _matches(rr, qtype)
            )
            if records or current == asked:
                return _Lookup(tuple(chain), records)
            # The answer stopped at a CNAME target it did not resolve (an
            # authoritative, non-recursive server does this): ask the target.
        return _Lookup(tuple(chain), failure=_TOO_LONG)

    # ------------------------------------------------------------ addresses

    def _expected_records(self, hostname: str) -> tuple[str, ...]:
        out = [
            f"{hostname} {_rtype(a)} {a}"
            for a in sorted(self.addresses, key=lambda a: (a.version, a))
        ]
        out += [f"{hostname} CNAME {t}" for t in sorted(self.cname_targets)]
        return tuple(out)

    def _expectation(self) -> str:
        """E.g. ``"point at 203.0.113.10 (A) or be a CNAME to hosts.example.net"``."""
        parts = []
        if self.addresses:
            listed = [
                f"{a} ({_rtype(a)})"
                for a in sorted(self.addresses, key=lambda a: (a.version, a))
            ]
            parts.append("point at " + " or ".join(listed))
        if self.cname_targets:
            parts.append("be a CNAME to " + " or ".join(sorted(self.cname_targets)))
        return " or ".join(parts) if parts else "point at this service"

    def _fix(self, hostname: str) -> str:
        listed = ", ".join(str(a) for a in sorted(self.addresses, key=lambda a: (a.version, a)))
        if self.cname_targets:
            target = sorted(self.cname_targets)[0]
            alternative = f", or with A/AAAA records for {listed} only" if listed else ""
            return (
                f"In the DNS for {hostname}, replace its A, AAAA and CNAME records with "
                f"one CNAME record pointing to {target}{alternative}."
            )
        return (
            f"In the DNS for {hostname}, set its A/AAAA records to {listed} and remove "
            "any other A, AAAA or CNAME records."
        )

    async def _check_dns(self, hostname: str) -> tuple[Check, PreflightReason | None]:
        a, aaaa = await _gather(
            [
                defer.Deferred.fromCoroutine(self._follow(hostname, dns.A, self.cname_targets)),
                defer.Deferred.fromCoroutine(self._follow(hostname, dns.AAAA, self.cname_targets)),
            ]
        )
        expected = self._expected_records(hostname)
        chain = a.chain if len(a.chain) >= len(aaaa.chain) else aaaa.chain
        found = [f"{owner} CNAME {target}" for owner, target in zip(chain, chain[1:])]
        via = f"is a CNAME to {' -> '.join(chain[1:])}"  # used only when len(chain) > 1

        def reason(code: ReasonCode, message: str, *, retryable: bool = False) -> tuple[Check, PreflightReason]:
            fix = "Try again in a few minutes." if retryable else self._fix(hostname)
            r = PreflightReason(code, message, tuple(found), expected, retryable, fix)
            return Check("dns", False, message, fix, r.found, expected), r

        for lookup in (a, aaaa):
            if any(name in self.cname_targets for name in lookup.chain):
                ours = [f"{x} CNAME {y}" for x, y in zip(lookup.chain, lookup.chain[1:])]
                if len(lookup.chain) > 1:
                    message = f"{hostname} is a CNAME to {' -> '.join(lookup.chain[1:])}, which is ours."
                else:
                    message = f"{hostname} is one of our own CNAME targets."
                return Check("dns", True, message, "", tuple(ours), expected), None
        for lookup in (a, aaaa):
            if lookup.failure in (_LOOP, _TOO_LONG):
                what = (
                    "CNAME records form a loop"
                    if lookup.failure == _LOOP
                    else f"CNAME chain is longer than {MAX_CNAME_HOPS} records"
                )
                return reason(
                    ReasonCode.CNAME_ELSEWHERE,
                    f"{hostname}'s {what} ({' -> '.join(lookup.chain)}), "
                    f"but it must {self._expectation()}.",
                )

        final = chain[-1]
        seen: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for lookup in (a, aaaa):
            if lookup.failure is None:
                for rr in lookup.records:
                    address = _ip_of(rr.payload)
                    if address is not None and address not in seen:
                        seen.append(address)
        found += [f"{final} {_rtype(ip)} {ip}" for ip in seen]
        described = ", ".join(f"{_rtype(ip)} {ip}" for ip in seen)
        foreign = [ip for ip in seen if ip not in self.addresses]
        if foreign:
            notes = []
            if len(foreign) < len(seen):
                notes.append(
                    f"{', '.join(map(str, foreign))} {'is' if len(foreign) == 1 else 'are'} not ours, "
                    "and the CA may connect to any of the addresses"
                )
            if any(ip.version == 6 for ip in foreign) and not any(
                ip.version == 6 for ip in self.addresses
            ):
                notes.append(
                    "Let's Encrypt connects over IPv6 first when a name has AAAA records, "
                    "so the AAAA records must go"
                )
            note = ("; " + "; ".join(notes)) if notes else ""
            if len(chain) > 1:
                return reason(
                    ReasonCode.CNAME_ELSEWHERE,
                    f"{hostname} {via} (which has {described}), but must "
                    f"{self._expectation()}{note}.",
                )
            return reason(
                ReasonCode.POINTS_ELSEWHERE,
                f"{hostname} has {described}, but must {self._expectation()}{note}.",
            )
        transient = [lookup for lookup in (a, aaaa) if lookup.transient]
        if transient:
            timed_out = [t for t in transient if t.failure == _TIMEOUT]
            lookup = (timed_out or transient)[0]
            qtype = "A" if lookup is a else "AAAA"
            if timed_out:
                return reason(
                    ReasonCode.DNS_TIMEOUT,
                    f"DNS did not answer in time when we looked up {lookup.chain[-1]} ({qtype}); "
                    "this is usually temporary.",
                    retryable=True,
                )
            return reason(
                ReasonCode.SERVFAIL,
                f"DNS failed ({lookup.detail}) when we looked up {lookup.chain[-1]} ({qtype}); "
                "this is usually temporary, or a broken zone (e.g. DNSSEC) at the DNS provider.",
                retryable=True,
            )
        if not seen:
            missing = any(lookup.failure == _NXDOMAIN for lookup in (a, aaaa))
            if len(chain) > 1:
                what = "which does not exist" if missing else "which has no A or AAAA records"
                return reason(
                    ReasonCode.CNAME_ELSEWHERE,
                    f"{hostname} {via}, {what}; it must {self._expectation()}.",
                )
            if missing:
                return reason(
                    ReasonCode.NXDOMAIN,
                    f"{hostname} does not exist in DNS; it must {self._expectation()}.",
                )
            return reason(
                ReasonCode.NO_RECORDS,
                f"{hostname} has no A or AAAA records; it must {self._expectation()}.",
            )
        prefix = f"{hostname} {via}, which" if len(chain) > 1 else hostname
        message = f"{prefix} has {described}{' (ours)' if len(seen) == 1 else ', all ours'}."
        return Check("dns", True, message, "", tuple(found), expected), None

    # ------------------------------------------------------------ CAA

    async def _check_caa(self, hostname: str) -> tuple[Check, PreflightReason | None]:
        labels = hostname.split(".")
        names = [".".join(labels[i:]) for i in range(len(labels))]
        lookups = await _gather(
            [defer.Deferred.fromCoroutine(self._follow(name, CAA)) for name in names]
        )
        identifiers = " or ".join(self.ca_identifiers)
        expected = tuple(f'{hostname} CAA 0 issue "{ident}"' for ident in self.ca_identifiers)
        for name, lookup in zip(names, lookups):
            if lookup.failure in (_TIMEOUT, _SERVFAIL, _LOOP, _TOO_LONG):
                return self._caa_lookup_failed(name, lookup, expected)
            if lookup.failure is None and lookup.records:
                break
        else:
            message = f"No CAA records apply to {hostname}, so any CA may issue for it."
            return Check("caa", True, message, "", (), expected), None

        owner = lookup.chain[-1]
        found = [f"{a} CNAME {b}" for a, b in zip(lookup.chain, lookup.chain[1:])]
        parsed = [parse_caa_record(owner, rr) for rr in lookup.records]
        found += [
            r.presentation() if r is not None else f"{owner} CAA (malformed RDATA)" for r in parsed
        ]
        where = name if owner == name else f"{name} (via its CNAME to {owner})"
        expected = tuple(f'{name} CAA 0 issue "{ident}"' for ident in self.ca_identifiers)
        if owner != name:
            fix = (
                f"The CAA records come from {owner}, the CNAME target of {name}: ask its "
                f"operator to add 0 issue \"{self.ca_identifiers[0]}\", or change the CNAME."
            )
        else:
            fix = (
                f'Add a CAA record at {name}: 0 issue "{self.ca_identifiers[0]}" '
                "(or remove the records that forbid it)."
            )

        def forbid(why: str, fix: str = fix) -> tuple[Check, PreflightReason]:
            message = f"CAA at {where} does not allow {identifiers} to issue for {hostname}: {why}."
            r = PreflightReason(ReasonCode.CAA_FORBIDS, message, tuple(found), expected, False, fix)
            return Check("caa", False, message, fix, r.found, expected), r

        decision = decide_caa(parsed, self.ca_identifiers, self.account_uri)
        if decision.malformed:
            return forbid("a CAA record there cannot be parsed, and the CA refuses to issue")
        if decision.critical is not None:
            record = decision.critical
            return forbid(
                f"{record.presentation()} marks the property {record.tag!r} critical, "
                "and the CA does not understand it, so it must not issue at all",
                f"Remove the CAA record {record.flags} {record.tag} {quote_caa_value(record.value)} at "
                f"{owner}, or set its flags to 0.",
            )
        if decision.allowed and decision.allowed_by is None:
            message = f"CAA at {where} has no issue property, so any CA may issue for {hostname}."
            return Check("caa", True, message, "", tuple(found), expected), None
        if decision.allowed:
            record = decision.allowed_by
            message = f"CAA at {where} allows {record.value.split(';')[0].strip()} ({record.presentation()})."
            return Check("caa", True, message, "", tuple(found), expected), None
        return forbid("; ".join(f"{quote_caa_value(record.value)} {refusal}" for record, refusal in decision.refusals))

    def _caa_lookup_failed(
        self, name: str, lookup: _Lookup, expected: tuple[str, ...]
    ) -> tuple[Check, PreflightReason]:
        found = tuple(f"{a} CNAME {b}" for a, b in zip(lookup.chain, lookup.chain[1:]))
        if lookup.failure == _TIMEOUT:
            code = ReasonCode.DNS_TIMEOUT
            message = (
                f"DNS did not answer in time when we looked up the CAA records of "
                f"{lookup.chain[-1]}; the CA will not issue until it can read them."
            )
            retryable, fix = True, "Try again in a few minutes."
        elif lookup.failure == _SERVFAIL:
            code = ReasonCode.SERVFAIL
            message = (
                f"DNS failed ({lookup.detail}) when we looked up the CAA records of "
                f"{lookup.chain[-1]}; the CA will not issue until it can read them."
            )
            retryable = True
            fix = (
                "Try again in a few minutes; if it persists, the DNS provider must answer "
                "CAA queries (an empty answer is fine)."
            )
        else:
            code = ReasonCode.SERVFAIL
            message = (
                f"The CNAME records of {name} form a loop or too long a chain "
                f"({' -> '.join(lookup.chain)}), so its CAA records cannot be read."
            )
            retryable, fix = False, f"Fix the CNAME records of {name}."
        r = PreflightReason(code, message, found, expected, retryable, fix)
        return Check("caa", False, message, fix, found, expected), r


__all__ = [
    "DEFAULT_CA_IDENTIFIERS",
    "MAX_CNAME_HOPS",
    "RESOLV_CONF",
    "Check",
    "IPreflight",
    "Preflight",
    "PreflightReason",
    "PreflightResult",
    "ReasonCode",
    "QuietResolver",
    "resolver_servers",
]
