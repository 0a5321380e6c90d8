"""
The issuing service: keeps every registered hostname covered by a valid certificate.

Driven by the store, not by traffic.  A hostname is worked on when

- it is registered (the admin API calls :meth:`IssuingService.kick`; a
  registration by another process, such as ``jobhost-store add-domain``, reaches
  it through the change feed and :class:`RegistrationWatcher`),
- its domain record's ``next_attempt`` has come (a renewal due time, or a
  backoff after a failure), found by a periodic scan and by a timer set for
  the earliest ``next_attempt`` seen, or
- an operator forces it (:meth:`IssuingService.renew_now`).

One attempt for one hostname (:meth:`IssuingService._attempt`)::

    take lease "issue:<hostname>" (else another process works on it: skip),
      kept fresh by a heartbeat every lease_duration / 3 while the attempt runs;
      a lost lease cancels the attempt
    re-read domain record and certificate (the lease holder before us may have finished)
    parked (a permanent error)? -> nothing until an operator asks for a renewal
    not due? -> confirm: active with next_attempt = due time; done
    order budget (kept in the store, shared by every process) spent? -> defer; done
    start: issuing/renewing -> preflight (DNS, CAA) -> account (created once)
      -> fresh key (RSA in a worker thread) + CSR -> take an order-budget slot
      -> ACME order (challenges in the store, self-check first)
      -> lease still ours? -> store certificate (key + chain, atomically) -> issued: active
    failure -> failing/paused, last_error, attempts + 1,
               next_attempt = now + backoff(attempts) (or the CA's Retry-After);
               a permanent error parks it (retryable: false, no next attempt)
    release lease

Every change of the domain record is an event applied by
:class:`jobhost.domains.DomainService`, atomically against the record as it is
in the store then: a page edited meanwhile is never overwritten.

The old certificate is served until a new one is stored, so a CA outage
never stops serving; the ``panic`` hook is told when renewal keeps failing
close to expiry.
"""

from __future__ import annotations

import hashlib
import random
import socket
from datetime import datetime, timedelta
from typing import Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, DeferredSemaphore, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from jobhost.acme.interfaces import IAcmeClient, IHTTP01Responder
from jobhost.acme.resources import ari_cert_id
from jobhost.certs import make_csr, private_key_pem, renewal_time
from jobhost.domains import DomainService, failure_is_news
from jobhost.events import IEventSink, NullEventSink
from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    AcmeUnsupported,
    AuthorizationFailed,
    BrokenRecord,
    InvalidCertificate,
    JobhostError,
    LeaseLost,
    PreflightFailed,
    SelfCheckFailed,
    TransitionForbidden,
    error_code,
)
from jobhost.keys import KeyGenerator, inline_keys
from jobhost.preflight import IPreflight
from jobhost.retry import backoff_delay, is_permanent
from jobhost.store.interfaces import IStore
from jobhost.store.records import (
    Account,
    CertificateRecord,
    ChangeKind,
    HTTP_01,
    TLS_ALPN_01,
    Challenge,
    tls_alpn01_key,
    DomainRecord,
    DomainState,
    certificate_record,
    is_due,
)
from jobhost.store.records import earliest as earlier_of
from jobhost.timeutil import now as clock_now
from jobhost.timeutil import to_iso

log = Logger()

#: Problem types after which retrying the same order soon is pointless.
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"

#: Due records read per store call during a scan.
SCAN_PAGE = 500



def _unpause_url(problem: AcmeProblem) -> str | None:
    for rel in ("help", "unpause"):
        for url in problem.links.get(rel, ()):
            return url
    for word in problem.detail.split():
        if word.startswith("https://") and "unpause" in word:
            return word.rstrip(".,;)")
    return None


def describe_failure(failure: Failure) -> dict[str, Any]:
    """The ``last_error`` document for a failed attempt: code, message, CA problem.

    The code is :func:`jobhost.errors.error_code` (detailed), the vocabulary the
    admin API's errors use too.
    """
    err = failure.value
    doc: dict[str, Any] = {"message": str(err) or err.__class__.__name__, "code": error_code(err, detailed=True)}
    if isinstance(err, AcmeProblem):
        doc["problem"] = err.as_document()
    elif isinstance(err, AuthorizationFailed):
        if err.problem is not None:
            doc["problem"] = err.problem.as_document()
    elif isinstance(err, PreflightFailed):
        doc["reasons"] = [r.to_json() for r in err.reasons]
    elif isinstance(err, SelfCheckFailed):
        doc["url"] = err.url
    return doc


def log_panic(hostname: str, certificate: CertificateRecord, failure: Failure) -> None:
    """The default panic hook: a CRITICAL log line naming the hostname and expiry."""
    log.critical(
        "Renewal for {hostname} keeps failing and its certificate expires at {not_after}: {error}",
        hostname=hostname,
        not_after=to_iso(certificate.not_after),
        error=str(failure.value),
    )


@implementer(IHTTP01Responder)
@attrs.define
class StoreResponder:
    """Answers HTTP-01 (or TLS-ALPN-01) by writing the key authorization to the shared store.

    Any jobhost process or node sharing the store then serves it: HTTP-01 from
    :class:`jobhost.acme.http01.ChallengeResource` (kept under its token), TLS-ALPN-01
    from the HTTPS listener (:mod:`jobhost.tls.alpn`; kept under
    :func:`~jobhost.store.records.tls_alpn01_key` of the hostname).
    """

    store: IStore
    clock: IReactorTime
    challenge_type: str = HTTP_01

    def _key(self, hostname: str, token: str) -> str:
        return tls_alpn01_key(hostname) if self.challenge_type == TLS_ALPN_01 else token

    def start_responding(self, hostname: str, token: str, key_authorization: str) -> Deferred:
        """Store the challenge; fires with None once stored."""
        return self.store.put_challenge(
            Challenge(token=self._key(hostname, token), key_authorization=key_authorization, hostname=hostname,
                      created_at=clock_now(self.clock), challenge_type=self.challenge_type)
        )

    def stop_responding(self, hostname: str, token: str) -> Deferred:
        """Forget the challenge; fires with None."""
        return self.store.delete_challenge(self._key(hostname, token))


class IIssuer(Interface):
    """What the admin API asks of the issuing service.  The real one is :class:`IssuingService`."""

    def kick(hostname):
        """Work on ``hostname`` soon (it was just registered); returns None at once, never raises."""

    def renew_now(hostname):
        """Ask for a new certificate now (clears the backoff and any parking).

        Fires with None once the request is recorded, not when a certificate is
        issued; fails with KeyError if the hostname is not registered.
        """

    def forget(hostname):
        """Stop working on ``hostname`` at once (its attempt in flight is cancelled); fires with None."""

    def revoke(hostname):
        """Revoke the stored certificate of ``hostname`` at the CA; fires with None.

        Fails with KeyError if there is no certificate, with the CA's error
        (:class:`jobhost.errors.AcmeProblem`, ...) if it refuses.
        """


def default_holder() -> str:
    """The lease holder name of this node: its host name (stable across restarts)."""
    return socket.gethostname()


@attrs.define(eq=False)
class Issuer:
    """One CA the issuing service orders from (``[[acme.issuers]]``), with its own account.

    Attributes:
        name: The configured name; certificate records keep it (``acme_issuer``).
        client: The :class:`jobhost.acme.interfaces.IAcmeClient` for its directory.
        directory_url: Its directory; the account, the account lease and the order
            budget are kept per directory.
        key_type: Key type of certificate keys; account_key_type: of the account key.
        eab: ``(kid, hmac_key)`` for external account binding, or None.
        profile: The ACME profile to ask for, or None.
    """

    name: str
    client: IAcmeClient
    directory_url: str
    key_type: str = "ecdsa-p256"
    account_key_type: str = "ecdsa-p256"
    eab: tuple[str, str] | None = None
    profile: str | None = None
    _account: Account | None = attrs.field(default=None, init=False)
    _account_lock: DeferredLock = attrs.field(factory=DeferredLock, init=False)


def falls_back(error: BaseException) -> bool:
    """Whether the next attempt should go to the next issuer after ``error`` at one.

    True when the CA is unreachable (no connection, or it did not finish in time), answers
    with a server error, rate-limits the name, or fails permanently for it (another CA may
    accept what this one refuses, e.g. a profile or key type it lacks).  False for what
    another CA would meet the same way: our DNS preflight and self-check, the store, and
    our own misuse (a bad CSR is ours whichever CA reads it).
    """
    if isinstance(error, (PreflightFailed, SelfCheckFailed)):
        return False
    if isinstance(error, (AcmeTransportError, AcmeTimeout, AcmeUnsupported)):
        return True
    if isinstance(error, AcmeProblem):
        if error.type == RATE_LIMITED or (error.status or 0) >= 500:
            return True
        return is_permanent(error) and error.code not in _OUR_MISUSE
    if isinstance(error, AuthorizationFailed):
        return is_permanent(error)
    return False


#: Permanent problems that are jobhost's own doing: every CA would refuse them alike.
_OUR_MISUSE = frozenset(("badCSR", "badSignatureAlgorithm", "badPublicKey"))


@implementer(IIssuer)
@attrs.define(eq=False)
class IssuingService(Service):
    """Obtains and renews a certificate for every registered hostname.

    Attributes:
        store: The IStore (certificates, challenges, accounts, leases, the order budget).
        domains: The owner of domain records; every state change goes through it.
        client: The :class:`jobhost.acme.interfaces.IAcmeClient`.
        clock: Time and scheduling.
        directory_url: The CA directory (accounts are kept per directory).
        preflight: The :class:`jobhost.preflight.IPreflight` run before every order (a pass
            from the last minute is reused), or None; told the account URI once known.
        self_check: ``(hostname, token, key_authorization) -> Deferred`` run
            before the CA is told to validate over HTTP-01, or None.
        tls_alpn_self_check: The same for TLS-ALPN-01
            (:class:`jobhost.selfcheck.TlsAlpnSelfCheck`), or None.
        challenges: The challenge types to answer, in order of preference.  An attempt
            uses the first, unless the hostname's last attempt failed validation (the CA
            said the authorization is invalid, or the self-check failed) with one: then
            the type after it (cycling).  ``last_error.challenge`` names the type that failed.
        key_type: Key type of certificate keys; account_key_type: of the account key.
        backoff: Delays after the 1st, 2nd, ... failure; the last repeats.
        max_in_flight: Orders worked on at once.
        orders_per_window, order_window: The new-order budget (Let's Encrypt: 300 / 3 h).
        panic_interval: Failing renewal closer than this to expiry calls ``panic``.
        panic: ``(hostname, certificate, failure) -> None``.
        on_certificate: Called with a hostname after its certificate is stored
            (the TLS cache invalidates it).
        metrics: An object with ``issuance_started/succeeded/failed``, ``rate_limited``, or None.
        events: The :class:`jobhost.events.IEventSink` (by default one that drops events).  Told ``active`` (first
            certificate, or back to active from failing/paused without a new one),
            ``renewed``, and ``failing``/``paused`` when a hostname starts failing or its
            error code changes (not for every repeated failure); it must not block.
        random: A ``() -> float in [0, 1)`` source for jitter.
        holder: This node's lease holder name.
        key_generator: ``key_type -> Deferred[key]`` (see :mod:`jobhost.keys`); the
            daemon passes one that makes RSA keys in a worker thread.
        lease_duration: Seconds a lease is taken for; renewed every third of it while
            an attempt runs.
        issuers: The CAs in order of preference (:class:`Issuer`).  Left empty, it is one
            issuer made of ``client``, ``directory_url``, ``key_type``, ``account_key_type``,
            ``eab`` and ``profile``; with several, ``client`` and ``directory_url`` are the
            first one's (the scan lease is named after it).

    Which issuer an attempt uses: the first, unless the hostname's last attempt failed
    in a way another CA may not (:func:`falls_back`: unreachable, rate-limited, permanent);
    then the next one, at once.  After the last one the next attempt goes back to the
    first, on the usual backoff (or parks, for a permanent error).  The issuer that failed
    and the one to try next are kept in ``last_error`` (``issuer``, ``next_issuer``), so
    any node picks up where the last left off.  A renewal starts with the first issuer
    again, so certificates go back to the preferred CA once it recovers; renewal
    information, ``replaces`` and revocation go to the CA that issued the certificate.
    """

    store: IStore
    domains: DomainService
    client: IAcmeClient
    clock: IReactorTime
    directory_url: str
    preflight: IPreflight | None = None
    self_check: Callable[[str, str, str], Deferred] | None = None
    tls_alpn_self_check: Callable[[str, str, str], Deferred] | None = None
    challenges: tuple[str, ...] = (HTTP_01,)
    key_type: str = "ecdsa-p256"
    account_key_type: str = "ecdsa-p256"
    contact: tuple[str, ...] = ()
    terms_agreed: bool = True
    eab: tuple[str, str] | None = None
    profile: str | None = None
    backoff: tuple[float, ...] = (60.0, 600.0, 6000.0, 86400.0)
    max_in_flight: int = 10
    orders_per_window: int = 300
    order_window: float = 10800.0
    scan_interval: float = 600.0
    lease_duration: float = 600.0
    panic_interval: float = 7 * 86400.0
    panic: Callable[[str, CertificateRecord, Failure], None] = log_panic
    on_certificate: Callable[[str], None] = lambda hostname: None
    metrics: Any = None
    random: Callable[[], float] = random.random
    holder: str = attrs.field(factory=default_holder)
    events: IEventSink = attrs.field(factory=NullEventSink)
    key_generator: KeyGenerator = inline_keys
    issuers: tuple[Issuer, ...] = ()

    _in_flight: dict[str, Deferred] = attrs.field(factory=dict, init=False)
    _semaphore: DeferredSemaphore = attrs.field(init=False)
    _scan_loop: LoopingCall | None = attrs.field(default=None, init=False)
    _wake_call: Any = attrs.field(default=None, init=False)
    _scanning: Deferred | None = attrs.field(default=None, init=False)
    _idle_waiters: list = attrs.field(factory=list, init=False)
    ca_reachable: bool | None = attrs.field(default=None, init=False)
    #: Hostnames whose domain record the last scan found unusable, and why (reported once per change).
    _broken: dict[str, str] = attrs.field(factory=dict, init=False)
    #: Hostnames to submit again as soon as their attempt in flight ends (it moved on to the next issuer).
    _again: set[str] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        self._semaphore = DeferredSemaphore(self.max_in_flight)
        if not self.issuers:
            self.issuers = (Issuer(
                name=self.directory_url, client=self.client, directory_url=self.directory_url,
                key_type=self.key_type, account_key_type=self.account_key_type, eab=self.eab, profile=self.profile,
            ),)

    def _issuer_named(self, name: Any) -> Issuer | None:
        return next((i for i in self.issuers if i.name == name), None)

    def issuer_of(self, certificate: CertificateRecord) -> Issuer:
        """The issuer a certificate came from: by its ``acme_issuer`` name, else by its
        directory (records from before issuers had names), else the first."""
        by_name = self._issuer_named(certificate.acme_issuer)
        if by_name is not None:
            return by_name
        return next((i for i in self.issuers if i.directory_url == certificate.directory_url), self.issuers[0])

    def issuer_for_attempt(self, record: DomainRecord) -> Issuer:
        """The issuer the next attempt for ``record`` uses (see the class docstring)."""
        if record.state in (DomainState.FAILING, DomainState.PAUSED):
            chosen = self._issuer_named((record.last_error or {}).get("next_issuer"))
            if chosen is not None:
                return chosen
        return self.issuers[0]

    def _set_ca_reachable(self, reachable: bool, error: str = "") -> None:
        """Remember whether the CA answered; log once when that changes (not on every order)."""
        was, self.ca_reachable = self.ca_reachable, reachable
        if reachable and was is False:
            log.info("The CA at {directory_url} is reachable again", directory_url=self.directory_url)
        elif not reachable and was is not False:
            log.warn("Cannot reach the CA at {directory_url}: {error}; orders are retried with backoff",
                     directory_url=self.directory_url, error=error)

    # -- service lifecycle -----------------------------------------------------------------

    def startService(self) -> None:
        """Start the periodic scan (its first run is immediate: catches up after a restart)."""
        super().startService()
        self._scan_loop = LoopingCall(self.scan)
        self._scan_loop.clock = self.clock
        self._scan_loop.start(self.scan_interval, now=True).addErrback(
            lambda f: log.failure("Scan loop stopped", f)
        )

    def stopService(self) -> Deferred:
        """Stop scanning and cancel work in flight (its pending authorizations are deactivated)."""
        super().stopService()
        if self._scan_loop is not None and self._scan_loop.running:
            self._scan_loop.stop()
        if self._wake_call is not None and self._wake_call.active():
            self._wake_call.cancel()
        self._wake_call = None
        for d in list(self._in_flight.values()):
            d.cancel()
        # Hand the scanning to another node at once rather than when the lease expires.
        released = self.store.release_lease(self._scan_lease, self.holder)
        released.addErrback(lambda f: log.failure("Could not release the scan lease", f))
        return released

    # -- what other components call --------------------------------------------------------

    def kick(self, hostname: str) -> None:
        """Work on ``hostname`` soon (it was just registered or changed)."""
        self._submit(hostname)

    def renew_now(self, hostname: str) -> Deferred:
        """Clear the backoff and force an attempt, even if the certificate is not due.

        Fires with None once the request is recorded (not when the certificate is issued);
        fails with KeyError if the hostname is not registered.
        """

        async def clear() -> None:
            # The request is kept in the record (renew_requested) until a certificate is
            # issued: the attempt reads it there, whichever node makes it.
            await self.domains.request_renewal(hostname)
            self._submit(hostname)

        return Deferred.fromCoroutine(clear())

    def forget(self, hostname: str) -> Deferred:
        """Stop working on ``hostname`` at once: cancel its attempt in flight.

        Cancelling makes the ACME client deactivate the order's pending authorizations.
        Fires with None.
        """
        d = self._in_flight.get(hostname)
        if d is not None:
            d.cancel()
        return succeed(None)

    def revoke(self, hostname: str) -> Deferred:
        """Revoke the stored certificate of ``hostname`` at the CA; fires with None.

        Fails with KeyError if there is no certificate.
        """

        async def run() -> None:
            record = await self.store.get_certificate(hostname)
            issuer = self.issuer_of(record)  # only the CA that issued it can revoke it
            await self._ensure_account(issuer)
            await issuer.client.revoke(record.chain_pem)
            log.info("Revoked certificate {serial} for {hostname}", serial=record.serial, hostname=hostname)

        return Deferred.fromCoroutine(run())

    def when_idle(self) -> Deferred:
        """Fire with None once no attempt and no scan is in flight (for tests and health checks)."""
        if not self._in_flight and self._scanning is None:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d

    # -- scheduling ------------------------------------------------------------------------

    def scan(self) -> Deferred:
        """Submit the hostnames whose ``next_attempt`` has come, read through the store's due index.

        Reads only the records due now (``IStore.due_domains``: on the SQL store an
        index range, so a start with 100,000 active hostnames reads none of them), page by
        page.  Only the node holding the lease ``scan:<directory URL>`` scans (0 submitted
        elsewhere): nodes sharing a store take turns.  Sets a timer for the earliest future
        ``next_attempt`` so backoffs and renewals shorter than the scan interval fire on
        time.  Fires with the number of hostnames submitted; a failure to read the store is
        logged and the next scan tries again.
        """
        if self._scanning is not None:
            return self._scanning
        d = Deferred.fromCoroutine(self._scan())

        def done(result):
            self._scanning = None
            self._maybe_idle()
            return result

        def failed(failure):
            log.failure("Scan of domain records failed; next scan will retry", failure)
            return 0

        d.addErrback(failed).addBoth(done)
        if not d.called:
            self._scanning = d
        return d

    @property
    def _scan_lease(self) -> str:
        return "scan:" + self.directory_url

    async def _scan(self) -> int:
        now = self._now()
        # One node scans at a time: every node sharing the store would otherwise contend for
        # the same hostnames.  The lease outlives two scan intervals, so a node that died is
        # replaced by another one's periodic scan soon after.
        expires = now + timedelta(seconds=2 * self.scan_interval)
        if not await self.store.acquire_lease(self._scan_lease, self.holder, expires, now):
            log.debug("Another node scans the store; this one only works on what it is asked to")
            return 0
        earliest: datetime | None = None
        submitted = 0
        cursor = None
        broken: dict[str, str] = {}
        while True:
            page = await self.store.due_domains(now, cursor, SCAN_PAGE)
            for record in page.records:
                if isinstance(record, BrokenRecord):
                    broken[record.key] = record.reason
                elif is_due(record, now):
                    self._submit(record.hostname)
                    submitted += 1
            earliest = earlier_of(earliest, page.earliest_later)
            if page.cursor is None:
                break
            cursor = page.cursor
        for hostname, reason in broken.items():
            if self._broken.get(hostname) != reason:
                log.error("Domain record of {hostname} is unusable and is not worked on: {reason}",
                          hostname=hostname, reason=reason)
        self._broken = broken
        if earliest is not None:
            self._wake_at(earliest)
        return submitted

    def _wake_at(self, when: datetime) -> None:
        """Make sure a scan runs at ``when`` (keeps only the earliest such timer)."""
        delay = max(0.0, (when - self._now()).total_seconds())
        if self._wake_call is not None and self._wake_call.active():
            if self._wake_call.getTime() <= self.clock.seconds() + delay:
                return
            self._wake_call.cancel()
        self._wake_call = self.clock.callLater(delay, self.scan)

    def _submit(self, hostname: str) -> None:
        """Queue one attempt for ``hostname``, unless one is already queued or running."""
        if hostname in self._in_flight:
            return
        d = self._semaphore.run(lambda: Deferred.fromCoroutine(self._attempt(hostname)))
        self._in_flight[hostname] = d

        def finished(result):
            self._in_flight.pop(hostname, None)
            if hostname in self._again and self.running:
                self._again.discard(hostname)
                self._submit(hostname)  # the next issuer, now that the lease is released
            self._maybe_idle()
            if isinstance(result, Failure):
                if result.check(CancelledError):
                    log.info("Stopped working on {hostname}", hostname=hostname)
                else:
                    log.failure("Attempt for {hostname} failed unexpectedly", result, hostname=hostname)
            return None

        d.addBoth(finished)

    def _maybe_idle(self) -> None:
        if not self._in_flight and self._scanning is None:
            waiters, self._idle_waiters = self._idle_waiters, []
            for w in waiters:
                w.callback(None)

    # -- one attempt -----------------------------------------------------------------------

    def _now(self) -> datetime:
        return clock_now(self.clock)

    def _budget(self, now: datetime, take: bool, issuer: Issuer) -> Deferred:
        """None when an order may be placed now at ``issuer`` (taking a slot if ``take``); else when one frees.

        Each CA has its own budget (its rate limits are its own).
        """
        return self.store.reserve_order(
            "orders:" + issuer.directory_url, now, timedelta(seconds=self.order_window), self.orders_per_window,
            take=take,
        )

    async def _attempt(self, hostname: str) -> None:
        now = self._now()
        lease = f"issue:{hostname}"
        expires = now + timedelta(seconds=self.lease_duration)
        if not await self.store.acquire_lease(lease, self.holder, expires, now):
            log.debug("Another process is working on {hostname}", hostname=hostname)
            return
        work = Deferred.fromCoroutine(self._attempt_leased(hostname, lease))
        heartbeat = LoopingCall(self._keep_lease, hostname, lease, work)
        heartbeat.clock = self.clock
        heartbeat.start(self.lease_duration / 3, now=False).addErrback(
            lambda f: log.failure("Lease heartbeat for {hostname} stopped", f, hostname=hostname)
        )
        try:
            await work
        except LeaseLost as e:
            log.warn("{error}; {hostname} is left to the new holder", error=str(e), hostname=hostname)
        finally:
            if heartbeat.running:
                heartbeat.stop()
            await self.store.release_lease(lease, self.holder)

    async def _keep_lease(self, hostname: str, lease: str, work: Deferred) -> None:
        """Extend ``lease`` (a heartbeat); cancel ``work`` if another holder has taken it."""
        try:
            held = await self._extend_lease(lease)
        except Exception as e:
            # The store is unreachable: the lease may still be ours; try again next beat.
            log.warn("Could not renew lease {lease}: {error}", lease=lease, error=str(e))
            return
        if not held and not work.called:
            log.warn("Lost lease {lease} while working on {hostname}; abandoning the attempt",
                     lease=lease, hostname=hostname)
            work.cancel()

    def _extend_lease(self, lease: str) -> Deferred:
        now = self._now()
        return self.store.acquire_lease(lease, self.holder, now + timedelta(seconds=self.lease_duration), now)

    async def _attempt_leased(self, hostname: str, lease: str) -> None:
        try:
            record = await self.store.get_domain(hostname)
        except KeyError:
            return
        if record.state == DomainState.REMOVED or record.parked:
            return
        now = self._now()
        # Backoff applies to requested renewals too: renew_now clears next_attempt itself.
        if record.next_attempt is not None and record.next_attempt > now:
            self._wake_at(record.next_attempt)
            return
        try:
            current = await self.store.get_certificate(hostname)
        except KeyError:
            current = None
        if current is not None and not record.renew_requested:
            current = await self._refresh_ari(current, now)
            due = self._due(current)
            if now < due and hostname in current.names and current.not_after > now:
                wake = self._next_check(current, due)
                recovered = record.state in (DomainState.FAILING, DomainState.PAUSED)
                record = await self.domains.confirm(hostname, wake)
                if recovered:
                    self._notify("active", record, current)
                self._wake_at(wake)
                return
        issuer = self.issuer_for_attempt(record)
        frees_at = await self._budget(now, take=False, issuer=issuer)
        if frees_at is not None:
            await self._defer_for_budget(hostname, frees_at)
            return
        renewing = current is not None
        challenge_type = self.challenge_for(record)
        record = await self.domains.start_attempt(hostname, renewing)
        started = self.clock.seconds()
        if self.metrics is not None:
            self.metrics.issuance_started(hostname)
        try:
            new = await self._obtain(hostname, current, issuer, challenge_type)
        except (CancelledError, LeaseLost):
            raise
        except _BudgetSpent as e:
            await self._defer_for_budget(hostname, e.frees_at)
            return
        except Exception:
            await self._record_failure(hostname, Failure(), current, record, issuer, challenge_type)
            return
        latest = await self._get_domain_or_none(hostname)
        if latest is None or latest.state == DomainState.REMOVED:
            log.info("{hostname} was removed while its certificate was ordered; discarding it", hostname=hostname)
            return
        done = self._now()
        new = await self._refresh_ari(new, done, store=False)
        # Only the lease holder stores: if another node took over meanwhile, its order wins.
        if not await self._extend_lease(lease):
            raise LeaseLost(name=lease, holder=self.holder)
        await self.store.put_certificate(new)
        self.on_certificate(hostname)
        due = self._due(new)
        try:
            active = await self.domains.issued(hostname, renewing, self._next_check(new, due))
        except (KeyError, TransitionForbidden):
            # Removed while the certificate was stored: the removal wins.
            log.info("{hostname} was removed while its certificate was stored; discarding it", hostname=hostname)
            await self.store.delete_certificate(hostname)
            return
        self._notify("renewed" if renewing else "active", active, new)
        self._wake_at(self._next_check(new, due))
        if self.metrics is not None:
            self.metrics.issuance_succeeded(hostname, self.clock.seconds() - started)
            self.metrics.acme_order(issuer.name, "issued")
        log.info(
            "{action} certificate for {hostname} from {issuer}, expires {not_after}, renewal due {due}",
            action="Renewed" if renewing else "Issued", hostname=hostname, issuer=issuer.name,
            not_after=to_iso(new.not_after), due=to_iso(due),
        )

    async def _defer_for_budget(self, hostname: str, frees_at: datetime) -> None:
        log.warn(
            "Order budget of {budget} per {window}s is spent; {hostname} waits until {next_attempt}",
            budget=self.orders_per_window, window=self.order_window, hostname=hostname,
            next_attempt=to_iso(frees_at),
        )
        await self.domains.defer(hostname, frees_at, "waiting for the order budget")
        self._wake_at(frees_at)

    async def _get_domain_or_none(self, hostname: str) -> DomainRecord | None:
        try:
            return await self.store.get_domain(hostname)
        except KeyError:
            return None

    def _due(self, certificate: CertificateRecord) -> datetime:
        return renewal_time(certificate)

    def _next_check(self, certificate: CertificateRecord, due: datetime) -> datetime:
        """When to look at an active certificate again: its due time, or sooner to re-ask ARI."""
        if certificate.ari is not None and certificate.ari.retry_after is not None:
            return min(due, certificate.ari.retry_after)
        return due

    async def _refresh_ari(self, current: CertificateRecord, now: datetime, store: bool = True) -> CertificateRecord:
        """Ask the CA for the certificate's renewal window (RFC 9773) when it is time to.

        It is time when no window is known yet or the last answer's Retry-After has
        passed.  A CA without ARI, or an ARI request that fails, leaves the record as it
        is (the lifetime rule applies).  The new window is stored unless ``store`` is False.
        """
        if current.ari_cert_id is None:
            return current
        if current.ari is not None and current.ari.retry_after is not None and current.ari.retry_after > now:
            return current
        try:
            answer = await self.issuer_of(current).client.renewal_info(current.chain_pem)
        except Exception as e:
            log.debug("No renewal information for {hostname}: {error}", hostname=current.hostname, error=str(e))
            return current
        if answer is None:
            return current
        window, retry_after = answer
        # When to ask again is counted on our clock from the seconds the CA gave.
        window = attrs.evolve(window, retry_after=now + timedelta(seconds=retry_after))
        updated = attrs.evolve(current, ari=window)
        if store and not await self.store.set_renewal_info(current.hostname, current.fingerprint, window):
            log.debug("The certificate of {hostname} changed while its renewal window was asked for",
                     hostname=current.hostname)
        return updated

    def challenge_for(self, record: DomainRecord) -> str:
        """The challenge type the next attempt for ``record`` answers (see :attr:`challenges`)."""
        failed = (record.last_error or {}).get("challenge")
        if failed in self.challenges:
            return self.challenges[(self.challenges.index(failed) + 1) % len(self.challenges)]
        return self.challenges[0]

    async def _obtain(
        self, hostname: str, current: CertificateRecord | None, issuer: Issuer, challenge_type: str = HTTP_01
    ) -> CertificateRecord:
        if self.preflight is not None:
            # A pass from moments ago (the admin API checked at registration) is reused.
            result = await self.preflight.recent_or_check(hostname)
            if not result.ok:
                raise PreflightFailed(hostname=hostname, reasons=tuple(result.reasons), retryable=result.retryable)
        account = await self._ensure_account(issuer)
        key = await self.key_generator(issuer.key_type)
        csr = make_csr(key, [hostname])
        frees_at = await self._budget(self._now(), take=True, issuer=issuer)
        if frees_at is not None:
            raise _BudgetSpent(frees_at)  # another process took the last slot since we looked
        replaces = None
        # RFC 9773 "replaces" names a certificate of the CA the order goes to; another CA's is unknown to it.
        if current is not None and current.ari is not None and self.issuer_of(current) is issuer:
            replaces = current.ari_cert_id
        for retry in (False, True):
            try:
                issued = await issuer.client.obtain_certificate(
                    [hostname], csr,
                    responder=StoreResponder(self.store, self.clock, challenge_type),
                    self_check=self.tls_alpn_self_check if challenge_type == TLS_ALPN_01 else self.self_check,
                    replaces=replaces,
                    profile=issuer.profile,
                    challenge_type=challenge_type,
                )
                break
            except AcmeProblem as e:
                if retry or not _account_unknown(e):
                    raise
                # The CA forgot our account (a reset test CA, a deactivated account):
                # register the same key again and retry this order once.
                log.warn("The CA does not know account {account_url}; registering again",
                         account_url=account.account_url)
                issuer._account = None
                account = await self._ensure_account(issuer)
        self._set_ca_reachable(True)
        try:
            cert_id = ari_cert_id(issued.chain_pem)
        except InvalidCertificate:  # a leaf without an authority key identifier has no ARI id
            cert_id = None
        return certificate_record(
            hostname, private_key_pem(key), issued.chain_pem,
            directory_url=issuer.directory_url, account_url=account.account_url, ari_cert_id=cert_id,
            acme_issuer=issuer.name,
        )

    async def _ensure_account(self, issuer: Issuer) -> Account:
        """Return the one :class:`Account` for ``issuer``'s directory, creating it only once.

        Concurrent attempts wait on one lock, so only the first registers.
        """
        async with issuer._account_lock:
            if issuer._account is None:
                issuer._account = await self._load_or_create_account(issuer)
            return issuer._account

    async def _load_or_create_account(self, issuer: Issuer) -> Account:
        """Load the account key (or make and store one), then find-or-create it at the CA.

        The key is stored *before* registering, so a crash between registering and storing
        the URL re-finds the same account (``onlyReturnExisting``) instead of creating a
        second one.  Registering again on every start also heals a CA that forgot us (a
        restarted Pebble): the same key gets a new URL, which is stored.
        """
        name = "account:" + hashlib.sha256(issuer.directory_url.encode()).hexdigest()[:16]
        now = self._now()
        while not await self.store.acquire_lease(name, self.holder, now + timedelta(seconds=60), now):
            await _sleep(self.clock, 1.0)
            now = self._now()
        try:
            try:
                account = await self.store.get_account(issuer.directory_url)
            except KeyError:
                account = Account(
                    directory_url=issuer.directory_url,
                    key_pem=private_key_pem(await self.key_generator(issuer.account_key_type)),
                    account_url="", created_at=now, contact=tuple(self.contact),
                )
                await self.store.put_account(account)
            url = await issuer.client.register(
                account_jwk(account.key_pem), contact=tuple(self.contact),
                terms_agreed=self.terms_agreed, eab=issuer.eab,
            )
            if url != account.account_url:
                account = attrs.evolve(account, account_url=url)
                await self.store.put_account(account)
            if self.preflight is not None:
                self.preflight.set_account_uri(url)  # CAA accounturi applies from now on
            log.info("Using ACME account {account_url} at {directory_url}",
                     account_url=url, directory_url=issuer.directory_url)
            return account
        finally:
            await self.store.release_lease(name, self.holder)

    async def _record_failure(
        self, hostname: str, failure: Failure, current: CertificateRecord | None, started: DomainRecord,
        issuer: Issuer | None = None,
        challenge_type: str | None = None,
    ) -> None:
        """Record a failed attempt: backoff (or the CA's Retry-After), or parking for a permanent error.

        ``started`` is the record as the attempt started it; ``issuer`` the CA it went to.
        When another issuer may succeed where this one failed (:func:`falls_back`) and one
        comes after it, the next attempt goes to that one at once instead.
        """
        err = failure.value
        now = self._now()
        attempts = started.attempts + 1
        issuer = issuer or self.issuers[0]
        position = self.issuers.index(issuer)
        fallback = falls_back(err)
        if fallback and position + 1 < len(self.issuers):
            await self._fall_back(hostname, failure, current, started, issuer, self.issuers[position + 1])
            return
        # The same issuer again for errors any CA would meet; after the last one, the first.
        next_issuer = self.issuers[0] if fallback else issuer
        delay = backoff_delay(attempts, self.backoff, self.random())
        paused = False
        unpause = None
        if isinstance(err, AcmeProblem) and err.type == RATE_LIMITED:
            paused = True
            unpause = _unpause_url(err)
            if self.metrics is not None:
                self.metrics.rate_limited()
            if err.retry_after is not None:
                delay = err.retry_after  # the CA said when: honour it to the second
        elif isinstance(err, AcmeProblem) and err.retry_after:
            delay = max(delay, err.retry_after)
        if isinstance(err, AcmeTransportError):
            self._set_ca_reachable(False, str(err))
        error_doc = describe_failure(failure)
        error_doc["at"] = to_iso(now)
        if challenge_type is not None and isinstance(err, (AuthorizationFailed, SelfCheckFailed)):
            error_doc["challenge"] = challenge_type  # validation failed: the next attempt tries the next type
        permanent = not paused and is_permanent(err)
        error_doc["retryable"] = not permanent
        error_doc["issuer"] = issuer.name
        error_doc["next_issuer"] = next_issuer.name
        next_attempt = None if permanent else now + timedelta(seconds=delay)
        state = DomainState.PAUSED if paused else DomainState.FAILING
        changed = failure_is_news(started, state, error_doc["code"])
        try:
            record = await self.domains.failed(
                hostname, error_doc, next_attempt, paused=paused, unpause_url=unpause
            )
        except (KeyError, TransitionForbidden):
            return  # removed meanwhile: nothing to record
        if changed:
            self._notify(state, record, current)
        if self.metrics is not None:
            self.metrics.issuance_failed(hostname, error_doc["code"])
            self._count_order(issuer, err)
        if permanent:
            log.error(
                "Certificate for {hostname} failed and cannot succeed by retrying: {error}; "
                "parked until an operator asks for a renewal",
                hostname=hostname, error=error_doc["message"],
            )
        else:
            log.warn(
                "Certificate for {hostname} failed (attempt {attempts}): {error}; next attempt at {next_attempt}",
                hostname=hostname, attempts=attempts, error=error_doc["message"],
                next_attempt=to_iso(next_attempt),
            )
        if not isinstance(err, JobhostError):
            log.failure("Unexpected error while working on {hostname}", failure, hostname=hostname)
        if current is not None and current.not_after - now < timedelta(seconds=self.panic_interval):
            try:
                self.panic(hostname, current, failure)
            except Exception:
                log.failure("panic hook failed for {hostname}", hostname=hostname)
        if next_attempt is not None:
            self._wake_at(next_attempt)

    async def _fall_back(
        self, hostname: str, failure: Failure, current: CertificateRecord | None, started: DomainRecord,
        issuer: Issuer, next_issuer: Issuer,
    ) -> None:
        """``issuer`` failed in a way ``next_issuer`` may not: record it, and try that one now.

        The hostname is ``failing`` (not ``paused``, even for a rate limit: it is not
        waiting for this CA) with the error kept as retryable.
        """
        err = failure.value
        if isinstance(err, AcmeTransportError):
            self._set_ca_reachable(False, str(err))
        error_doc = describe_failure(failure)
        error_doc.update(at=to_iso(self._now()), retryable=True, issuer=issuer.name, next_issuer=next_issuer.name)
        changed = failure_is_news(started, DomainState.FAILING, error_doc["code"])
        now = self._now()
        try:
            record = await self.domains.failed(hostname, error_doc, now)
        except (KeyError, TransitionForbidden):
            return
        if changed:
            self._notify(DomainState.FAILING, record, current)
        if self.metrics is not None:
            self.metrics.issuance_failed(hostname, error_doc["code"])
            if isinstance(err, AcmeProblem) and err.type == RATE_LIMITED:
                self.metrics.rate_limited()
            self._count_order(issuer, err)
        log.warn(
            "Certificate for {hostname} failed at {issuer}: {error}; trying {next_issuer} next",
            hostname=hostname, issuer=issuer.name, error=error_doc["message"], next_issuer=next_issuer.name,
        )
        self._again.add(hostname)

    def _count_order(self, issuer: Issuer, err: BaseException) -> None:
        """Count a failed attempt at ``issuer`` by outcome (``/metrics``)."""
        if isinstance(err, (PreflightFailed, SelfCheckFailed)):
            outcome = "not_ordered"  # nothing reached the CA's validation: not its doing
        elif isinstance(err, AcmeProblem) and err.type == RATE_LIMITED:
            outcome = "rate_limited"
        elif isinstance(err, (AcmeTransportError, AcmeTimeout)):
            outcome = "unreachable"
        elif is_permanent(err):
            outcome = "refused"
        else:
            outcome = "failed"
        self.metrics.acme_order(issuer.name, outcome)

    def _notify(self, event: str, record: DomainRecord, certificate: CertificateRecord | None) -> None:
        """Tell :attr:`events`; whatever it does, issuance goes on."""
        try:
            self.events.notify(event, record, certificate)
        except Exception:
            log.failure("Event {event} for {hostname} could not be sent", event=event, hostname=record.hostname)


@attrs.frozen
class _BudgetSpent(Exception):
    """The shared order budget was spent between the look before an attempt and the order."""

    frees_at: datetime


#: What the change feed reports for a hostname registered (or registered again, or removed):
#: whether its site is shown changed (PAGE) and its record changed beyond the page (STATE).
_REGISTRATION = frozenset((ChangeKind.PAGE, ChangeKind.STATE))


@attrs.define(eq=False)
class RegistrationWatcher:
    """Kicks the issuing service for hostnames the store's change feed says were registered.

    A hostname registered by another process (``jobhost-store add-domain``, another
    node's admin API) would otherwise wait for the next scan (``[renewal] scan_interval``,
    10 minutes by default): one that already has a valid certificate would stay
    ``pending`` that long, and one without would wait that long for its first order.
    Shaped like a cache (``invalidate``, ``invalidate_all``) so the change poller's
    fan-out tells it what changed.  Only changes of both the page's visibility and the
    record (registration, re-registration, removal) kick; a removed hostname's attempt
    finds it removed and does nothing.  (The feed merges what changed between two polls,
    so a page edit and another change then look alike: such a kick finds nothing due
    unless the hostname was due anyway.)  Changes the feed cannot name are left to the scan.

    Attributes:
        issuing: The service to kick (only while it runs).
    """

    issuing: IssuingService

    def invalidate(self, hostname: str, kinds: frozenset[str] | None = None) -> None:
        """The feed saw ``hostname`` change in ``kinds``; kick it when that looks like a registration."""
        if kinds is not None and _REGISTRATION <= kinds and self.issuing.running:
            self.issuing.kick(hostname)

    def invalidate_all(self) -> None:
        """Everything may have changed: the periodic scan looks at every hostname anyway."""


def _account_unknown(problem: AcmeProblem) -> bool:
    """True when the CA says it does not know (or no longer accepts) our account."""
    if problem.code == "accountDoesNotExist":
        return True
    return problem.code in ("unauthorized", "malformed") and "account" in problem.detail.lower()


def account_jwk(key_pem: bytes):
    """The josepy JWK the ACME library signs with, for a stored PEM account key."""
    import josepy
    from cryptography.hazmat.primitives.asymmetric import rsa

    from jobhost.certs import load_private_key

    key = load_private_key(key_pem)
    return josepy.JWKRSA(key=key) if isinstance(key, rsa.RSAPrivateKey) else josepy.JWKEC(key=key)


def _sleep(clock: IReactorTime, seconds: float) -> Deferred:
    from twisted.internet.task import deferLater

    return deferLater(clock, seconds, lambda: None)


__all__ = [
    "IIssuer",
    "Issuer",
    "IssuingService",
    "RegistrationWatcher",
    "falls_back",
    "StoreResponder",
    "default_holder",
    "describe_failure",
    "log_panic",
]
