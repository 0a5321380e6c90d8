"""
The in-memory certificate cache that the SNI callback reads, and what keeps it fresh.

pyOpenSSL's servername callback is synchronous and runs in the middle of a
handshake on the reactor thread, so it may only do a dictionary lookup
(DESIGN.md, "TLS: choosing the certificate without blocking").  This module
owns that dictionary:

- :class:`CertificateCache` maps a normalised hostname to its TLS material
  and hands out a ready ``OpenSSL.SSL.Context`` (key, leaf and chain loaded,
  ALPN configured).  It is filled asynchronously by
  :meth:`CertificateCache.load`, which the listener calls while it holds a
  ClientHello, never from the callback.  Material is indexed by a fingerprint
  of the certificate chain plus a hostname -> fingerprint map (certmagic's
  ``cache.go``), so a certificate stored under several hostnames is held once.

  Two tiers, because what is cached is chosen by its measured cost
  (``python bench/scale.py memory``, docs/benchmarks.md): a built
  ``SSL.Context`` costs ~27 KB of RSS and ~0.27 ms to build, the PEM key and
  chain ~2 KB.  So the hostname map (an LRU capped at ``max_entries``) keeps
  the PEM bytes, and only the ``max_contexts`` most recently used
  certificates keep a built context (a second LRU); a hostname whose context
  was dropped gets it rebuilt from memory on its next lookup (no store read).
  Names the store does not know get a short-lived negative entry (at most
  ``max_negative`` of them) so a flood of unknown names does not become a
  flood of store reads.  :attr:`CertificateCache.bytes` estimates what it all
  holds from the measured per-item costs.  A stored certificate that cannot be used (it does not parse,
  or its key does not match its leaf) gets the same negative entry and is
  remembered as broken: it is logged once, as one line naming the hostname
  and the reason, and not again until the change feed reports that the
  hostname's certificate changed (a re-read after the negative entry expires
  that finds the same fault stays silent).
- :class:`ChangePoller` asks the store's change feed every ``interval``
  seconds which hostnames changed (in any process sharing the store) and
  invalidates them, so a new certificate is served on the next connection.

Lookup order (STYLE.md section 4): normalise the name, exact match, then the
default.  The one-label wildcard step does not apply: the store holds
certificates under normalised hostnames, and those are never wildcards.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable

import attrs
from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from jobhost.errors import BrokenRecord, InvalidCertificate, InvalidHostname, StoreError
from jobhost.hostnames import normalise_hostname
from jobhost.store.interfaces import IStore
from jobhost.store.records import CertificateRecord, ChangeKind
from jobhost.tls.policy import TlsPolicy


def chain_fingerprint(record: CertificateRecord) -> str:
    """The SHA-256 of the record's canonical chain PEM: one key per distinct served chain.

    The leaf fingerprint alone is not enough: the same leaf can be served with
    different intermediates (an ACME alternate chain), and each is its own context.
    """
    return hashlib.sha256(record.chain_pem).hexdigest()


#: Measured RSS of one built ``SSL.Context`` with a P-256 key, leaf and intermediate
#: (``python bench/scale.py memory``: 26,914 bytes per context over 3,000).
CONTEXT_BYTES = 27_000

#: Measured RSS of one hostname's entries beside its material (the LRU map's node, the name, a
#: material record shared by fingerprint, less the PEM bytes counted exactly).
ENTRY_BYTES = 400


@attrs.define(eq=False)
class _Material:
    """One certificate chain's PEM, its context when built, and how many hostnames point at it."""

    key_pem: bytes
    chain_pem: bytes
    context: SSL.Context | None = None
    references: int = 0

    @property
    def size(self) -> int:
        return len(self.key_pem) + len(self.chain_pem)


@attrs.define(eq=False)
class _PendingLoad:
    """One store read in flight and everyone waiting for it."""

    waiters: list[Deferred] = attrs.field(factory=list)


def _fire(waiter: Deferred, value: bool) -> None:
    # A waiter may already have been cancelled (the listener's bounded wait).
    if not waiter.called:
        waiter.callback(value)


@attrs.define(eq=False)
class CertificateCache:
    """Hostname -> ready ``SSL.Context``, bounded, filled from the store off the callback path.

    Attributes:
        store: The :class:`~jobhost.store.interfaces.IStore` to read certificates from.
        clock: Time source for negative entries.
        max_entries: At most this many hostnames keep their material (PEM key and chain) in
            memory (least recently used go first).
        max_contexts: At most this many certificates keep a built ``SSL.Context`` (least
            recently used go first; rebuilt from the material on their next lookup).
        max_negative: At most this many "no usable certificate" entries are kept.
        negative_ttl: Seconds a "the store has no usable certificate for this name" answer is
            trusted (absent, or broken).
        policy: How every context is configured (versions, suites, ALPN, tickets).
        hits, misses: :meth:`lookup` outcomes (a hit may have rebuilt the context).
        loads: Store reads started (shared loads count once).
        evictions: Hostnames dropped to honour ``max_entries``.
        context_builds: Contexts built (after a store read, or again after being dropped).
        context_evictions: Built contexts dropped to honour ``max_contexts``.
        negative_evictions: Negative entries dropped to honour ``max_negative``.
        load_failures: Store reads that failed with something other than "absent" or "broken".
        broken_reports: Times a stored certificate was found unusable and logged (once per
            change of that hostname's certificate).
    """

    store: IStore
    clock: IReactorTime
    max_entries: int = attrs.field(default=10000, validator=attrs.validators.ge(1))
    negative_ttl: float = 60.0
    max_contexts: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    max_negative: int = attrs.field(default=10000, validator=attrs.validators.ge(1))
    policy: TlsPolicy = attrs.field(factory=TlsPolicy)
    hits: int = attrs.field(default=0, init=False)
    misses: int = attrs.field(default=0, init=False)
    loads: int = attrs.field(default=0, init=False)
    evictions: int = attrs.field(default=0, init=False)
    context_builds: int = attrs.field(default=0, init=False)
    context_evictions: int = attrs.field(default=0, init=False)
    negative_evictions: int = attrs.field(default=0, init=False)
    material_bytes: int = attrs.field(default=0, init=False, repr=False)
    load_failures: int = attrs.field(default=0, init=False)
    broken_reports: int = attrs.field(default=0, init=False)
    _names: OrderedDict[str, str] = attrs.field(factory=OrderedDict, init=False, repr=False)
    _materials: dict[str, _Material] = attrs.field(factory=dict, init=False, repr=False)
    _contexts: OrderedDict[str, _Material] = attrs.field(factory=OrderedDict, init=False, repr=False)
    _negative: OrderedDict[str, float] = attrs.field(factory=OrderedDict, init=False, repr=False)
    _inflight: dict[str, _PendingLoad] = attrs.field(factory=dict, init=False, repr=False)
    _broken: OrderedDict[str, str] = attrs.field(factory=OrderedDict, init=False, repr=False)

    log = Logger()

    # -- the synchronous side (servername callback, ClientHello hold) -----------

    def lookup(self, hostname: str | bytes | None) -> SSL.Context | None:
        """Return the cached context for ``hostname``, counting a hit or a miss.

        Memory only, never blocks: safe inside the servername callback.

        Args:
            hostname: A hostname as the client sent it (normalised on an exact-match miss).
        """
        context = self.peek(hostname)
        if context is None:
            self.misses += 1
        else:
            self.hits += 1
        return context

    def peek(self, hostname: str | bytes | None) -> SSL.Context | None:
        """Like :meth:`lookup` but without counting; what the servername callback calls.

        The fast path is one dictionary lookup of the name as sent; only a miss
        pays for :func:`~jobhost.hostnames.normalise_hostname`.
        """
        if hostname is None:
            return None
        if isinstance(hostname, bytes):
            try:
                hostname = hostname.decode("ascii")
            except UnicodeDecodeError:
                return None
        fingerprint = self._names.get(hostname)
        if fingerprint is None:
            try:
                normalised = normalise_hostname(hostname)
            except InvalidHostname:
                return None
            fingerprint = self._names.get(normalised)
            if fingerprint is None:
                return None
            hostname = normalised
        self._names.move_to_end(hostname)
        material = self._materials[fingerprint]
        if material.context is not None:
            self._contexts.move_to_end(fingerprint)
            return material.context
        # Dropped from the context tier: rebuild it from memory (~0.3 ms, no store read).
        # It was built from the same PEM before, so it builds again.
        try:
            context = self.policy.context(material.key_pem, material.chain_pem)
        except InvalidCertificate:  # pragma: no cover - the PEM built a context before
            return None
        self._keep_context(fingerprint, material, context)
        return context

    def known_absent(self, hostname: str) -> bool:
        """True while a fresh negative entry says the store has no usable certificate for ``hostname``.

        "No usable certificate": none at all, or a broken one (see :meth:`broken_reason`).
        """
        expires = self._negative.get(hostname)
        if expires is None:
            return False
        if expires <= self.clock.seconds():
            del self._negative[hostname]
            return False
        return True

    def broken_reason(self, hostname: str) -> str | None:
        """Why ``hostname``'s stored certificate was found unusable, or None if it was not.

        Kept until the change feed reports the hostname's certificate changed,
        even after the negative entry expires.
        """
        return self._broken.get(hostname)

    @property
    def broken_count(self) -> int:
        """How many hostnames' stored certificates are known to be unusable."""
        return len(self._broken)

    @property
    def size(self) -> int:
        """How many hostnames are cached."""
        return len(self._names)

    @property
    def context_count(self) -> int:
        """How many built contexts are held."""
        return len(self._contexts)

    @property
    def negative_count(self) -> int:
        """How many negative entries are held (some may have expired)."""
        return len(self._negative)

    @property
    def bytes(self) -> int:
        """An estimate of the memory the cache holds, from measured per-item costs.

        The PEM bytes exactly, plus :data:`CONTEXT_BYTES` per built context and
        :data:`ENTRY_BYTES` per hostname and per negative or broken entry.
        """
        entries = len(self._names) + len(self._negative) + len(self._broken)
        return self.material_bytes + CONTEXT_BYTES * len(self._contexts) + ENTRY_BYTES * entries

    @property
    def certificate_count(self) -> int:
        """How many distinct certificate chains (materials) are held."""
        return len(self._materials)

    # -- the asynchronous side ---------------------------------------------------

    def load(self, hostname: str) -> Deferred:
        """Read ``hostname``'s certificate from the store and cache a context for it.

        Concurrent loads of one name share one store read; each caller gets its
        own Deferred, which it may cancel without disturbing the others.

        Args:
            hostname: A normalised hostname.

        Returns:
            A Deferred firing with True when a context is now cached, False when
            the store has none (a negative entry is kept), the record is unusable
            (logged once per change; a negative entry is kept) or the store failed
            (logged; no negative entry, so the next connection tries again).  It
            never fails.
        """
        waiter: Deferred = Deferred()
        pending = self._inflight.get(hostname)
        if pending is not None:
            pending.waiters.append(waiter)
        else:
            self._begin(hostname, [waiter])
        return waiter

    def _begin(self, hostname: str, waiters: list[Deferred]) -> None:
        pending = _PendingLoad(waiters)
        self._inflight[hostname] = pending
        self.loads += 1
        d = maybeDeferred(self.store.get_certificate, hostname)
        d.addCallback(self._material_for)
        d.addBoth(self._loaded, hostname, pending)
        d.addErrback(self._bug, hostname)

    def _bug(self, failure: Failure, hostname: str) -> None:
        self.log.failure("Caching the certificate for {hostname} failed", failure, hostname=hostname)

    def _material_for(self, record: CertificateRecord) -> tuple[str, _Material, SSL.Context | None]:
        fingerprint = chain_fingerprint(record)
        existing = self._materials.get(fingerprint)
        if existing is not None:
            return fingerprint, existing, None
        # Built now, not at the first lookup: a key or chain OpenSSL refuses is found here,
        # and the held connection's lookup right after finds the context ready.
        context = self.policy.context(record.key_pem, record.chain_pem)
        return fingerprint, _Material(record.key_pem, record.chain_pem), context

    def _loaded(self, result: Any, hostname: str, pending: _PendingLoad) -> None:
        if self._inflight.get(hostname) is not pending:
            # Invalidated while the store was read: what we read may be the old
            # certificate.  Read again for the same waiters rather than cache it.
            current = self._inflight.get(hostname)
            if current is not None:
                current.waiters.extend(pending.waiters)
            else:
                self._begin(hostname, pending.waiters)
            return
        del self._inflight[hostname]
        found = False
        if not isinstance(result, Failure):
            fingerprint, material, context = result
            self._insert(hostname, fingerprint, material, context)
            self._broken.pop(hostname, None)
            found = True
        elif result.check(KeyError):
            self._broken.pop(hostname, None)
            self._remember_absent(hostname)
        elif result.check(BrokenRecord):
            self._remember_broken(hostname, result.value.message)
        elif result.check(InvalidCertificate):
            # The store verified less than TlsPolicy.context does (or not at all).
            self._remember_broken(hostname, result.value.describe())
        elif result.check(StoreError):
            # The store as a whole failed: no negative entry, the next connection retries.
            self.load_failures += 1
            self.log.error(
                "Reading the certificate for {hostname} failed; serving the fallback: {reason}",
                hostname=hostname,
                reason=result.value.message,
            )
        else:
            self.load_failures += 1
            self.log.failure(
                "Reading the certificate for {hostname} failed; serving the fallback",
                result,
                hostname=hostname,
            )
        for waiter in pending.waiters:
            _fire(waiter, found)

    def _insert(self, hostname: str, fingerprint: str, material: _Material, context: SSL.Context | None) -> None:
        self._negative.pop(hostname, None)
        previous = self._names.pop(hostname, None)
        if previous is not None:
            self._release(previous)
        material = self._materials.setdefault(fingerprint, material)
        if material.references == 0:
            self.material_bytes += material.size
        if context is not None and material.context is None:
            self._keep_context(fingerprint, material, context)
        material.references += 1
        self._names[hostname] = fingerprint
        while len(self._names) > self.max_entries:
            _, evicted = self._names.popitem(last=False)
            self._release(evicted)
            self.evictions += 1

    def _keep_context(self, fingerprint: str, material: _Material, context: SSL.Context) -> None:
        """Put a freshly built context in the context tier, dropping the least recently used."""
        self.context_builds += 1
        material.context = context
        self._contexts[fingerprint] = material
        while len(self._contexts) > self.max_contexts:
            _, dropped = self._contexts.popitem(last=False)
            dropped.context = None
            self.context_evictions += 1

    def _release(self, fingerprint: str) -> None:
        material = self._materials[fingerprint]
        material.references -= 1
        if material.references <= 0:
            del self._materials[fingerprint]
            self.material_bytes -= material.size
            self._contexts.pop(fingerprint, None)

    def _remember_broken(self, hostname: str, reason: str) -> None:
        """Keep a negative entry for ``hostname`` and report it, unless this fault was reported already."""
        self._remember_absent(hostname)
        if self._broken.get(hostname) == reason:
            return  # re-read after the negative entry expired: the same fault, already reported
        self._broken.pop(hostname, None)
        self._broken[hostname] = reason
        while len(self._broken) > self.max_entries:
            self._broken.popitem(last=False)
        self.broken_reports += 1
        self.log.error(
            "The stored certificate for {hostname} is unusable; serving the fallback until it changes: {reason}",
            hostname=hostname,
            reason=reason,
        )

    def _remember_absent(self, hostname: str) -> None:
        self._negative.pop(hostname, None)
        self._negative[hostname] = self.clock.seconds() + self.negative_ttl
        while len(self._negative) > self.max_negative:
            self._negative.popitem(last=False)
            self.negative_evictions += 1

    # -- invalidation ------------------------------------------------------------

    def invalidate(self, hostname: str, kinds: frozenset[str] | None = None) -> None:
        """Forget ``hostname``: its context, its negative or broken entry and any load in flight.

        Args:
            kinds: What changed (:class:`jobhost.store.records.ChangeKind`); nothing is
                forgotten unless it includes ``certificate``.  None: assume it does.
        """
        if kinds is not None and ChangeKind.CERTIFICATE not in kinds:
            return
        fingerprint = self._names.pop(hostname, None)
        if fingerprint is not None:
            self._release(fingerprint)
        self._negative.pop(hostname, None)
        self._broken.pop(hostname, None)
        self._inflight.pop(hostname, None)

    def invalidate_all(self) -> None:
        """Forget every hostname (used when the change feed cannot say what changed)."""
        self._names.clear()
        self._materials.clear()
        self._contexts.clear()
        self.material_bytes = 0
        self._negative.clear()
        self._broken.clear()
        self._inflight.clear()


@attrs.define(eq=False, slots=False)
class ChangePoller(Service):
    """Every ``interval`` seconds, invalidate the hostnames the store's change feed reports.

    The first poll only takes the feed's current cursor (and clears the cache,
    which may predate it).  A feed answer of None ("cannot tell") clears the
    whole cache.  A failed poll is logged and the next one retries from the
    same cursor: the loop never stops on an error.

    Attributes:
        cache: The :class:`CertificateCache` to invalidate.
        store: The store whose ``changes`` feed to read.
        clock: Schedules the polls.
        interval: Seconds between polls.
        watch: ``callback -> stop``: the store's push (``IStore.watch_changes``), which makes
            it poll at once when another process records a change; or None (poll only).
        polls, failures: How many polls completed and failed.
    """

    cache: CertificateCache
    store: IStore
    clock: IReactorTime
    interval: float = 5.0
    watch: Callable[[Callable[[], None]], Callable[[], None]] | None = None
    polls: int = attrs.field(default=0, init=False)
    failures: int = attrs.field(default=0, init=False)
    _cursor: Any = attrs.field(default=None, init=False, repr=False)
    _loop: LoopingCall | None = attrs.field(default=None, init=False, repr=False)
    _done: Deferred | None = attrs.field(default=None, init=False, repr=False)
    _unwatch: Any = attrs.field(default=None, init=False, repr=False)
    _polling: bool = attrs.field(default=False, init=False, repr=False)
    _again: bool = attrs.field(default=False, init=False, repr=False)

    log = Logger()

    def startService(self) -> None:
        """Start polling at once, then every ``interval`` seconds (and when the store pushes)."""
        super().startService()
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._done = self._loop.start(self.interval, now=True)
        if self.watch is not None:
            self._unwatch = self.watch(self.poll_soon)

    def stopService(self) -> Deferred | None:
        """Stop polling; fires once a poll in progress has finished."""
        super().stopService()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        loop, done = self._loop, self._done
        self._loop = self._done = None
        if loop is not None and loop.running:
            loop.stop()
        return done

    def poll_soon(self) -> None:
        """Poll now, or right after the poll in progress (pushes arriving meanwhile make one more)."""
        if not self.running:
            return
        if self._polling:
            self._again = True
            return
        self.poll()

    def poll(self) -> Deferred:
        """Read the change feed once and invalidate what changed.

        Returns:
            A Deferred firing with None when done; it never fails (failures are logged).
        """
        self._polling = True
        d = maybeDeferred(self.store.changes, self._cursor)
        d.addCallback(self._apply)
        d.addErrback(self._failed)
        d.addBoth(self._polled)
        return d

    def _polled(self, _: None) -> None:
        # _apply and _failed both return None: the poll's Deferred fires with None.
        self._polling = False
        if self._again:
            self._again = False
            self.poll_soon()

    def _apply(self, answer: tuple[Any, frozenset[str] | None]) -> None:
        cursor, hostnames = answer
        first = self._cursor is None
        self._cursor = cursor
        self.polls += 1
        if first or hostnames is None:
            self.cache.invalidate_all()
            return
        for hostname in hostnames:
            self.cache.invalidate(hostname, hostnames[hostname])
        if hostnames:
            self.log.debug(
                "Certificates changed for {count} hostnames", count=len(hostnames)
            )

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        self.log.failure(
            "Polling the store's change feed failed; retrying in {interval}s",
            failure,
            interval=self.interval,
        )


__all__ = ["CONTEXT_BYTES", "CertificateCache", "ChangePoller", "ENTRY_BYTES", "chain_fingerprint"]
