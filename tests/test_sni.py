"""Tests for jobhost.tls.sni: the certificate cache the SNI callback reads, and its change poller.

Real OpenSSL contexts and a real MemoryStore; time is a ``Clock``.  The listener
and the fallback certificate have their own test modules.
"""

from __future__ import annotations

import attrs
from OpenSSL import SSL
from tls_helpers import CountingStore, GatedStore, record_for, store_with
from twisted.application.service import IService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from jobhost.errors import BrokenRecord, StoreError
from jobhost.store.memory import MemoryStore
from jobhost.store.records import ChangeKind
from jobhost.tls.sni import CertificateCache, ChangePoller

ALPHA, BETA, GAMMA = "alpha.example.com", "beta.example.com", "gamma.example.net"


@attrs.define
class ScriptedFeed:
    """A store whose change feed answers from a script (a failure, or an answer)."""

    answers: list
    inner: MemoryStore = attrs.field(factory=MemoryStore)

    def changes(self, cursor):
        answer = self.answers.pop(0) if self.answers else (cursor, {})
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    def get_certificate(self, hostname):
        return self.inner.get_certificate(hostname)


class GatedFeed:
    """A store whose change feed answers only when the test says so (certificates from ``inner``)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cursors: list = []
        self._pending: list[Deferred] = []

    def changes(self, cursor):
        self.cursors.append(cursor)
        d: Deferred = Deferred()
        self._pending.append(d)
        return d

    def answer(self, cursor, hostnames) -> None:
        self._pending.pop(0).callback((cursor, hostnames))

    def get_certificate(self, hostname):
        return self.inner.get_certificate(hostname)


# -- CertificateCache ------------------------------------------------------------------------


class CertificateCacheTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def cache(self, store, **kwargs) -> CertificateCache:
        return CertificateCache(store=store, clock=self.clock, **kwargs)

    def test_load_then_lookup(self):
        """A loaded hostname's context is found by lookup (a hit); an unloaded one is a miss."""
        cache = self.cache(store_with(record_for(ALPHA)))
        self.assertIsNone(cache.lookup(ALPHA))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertIsInstance(cache.lookup(ALPHA), SSL.Context)
        self.assertIsInstance(cache.lookup(ALPHA), SSL.Context)
        self.assertEqual((cache.hits, cache.misses, cache.loads), (2, 1, 1))

    def test_max_entries_must_be_positive(self):
        """A cache that could hold no name is refused; max_entries=1 holds the latest name."""
        self.assertRaises(ValueError, self.cache, MemoryStore(), max_entries=0)
        cache = self.cache(store_with(record_for(ALPHA), record_for(BETA)), max_entries=1)
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        self.assertEqual((cache.size, cache.evictions), (1, 1))
        self.assertIsNotNone(cache.peek(BETA))

    def test_repr_shows_settings_not_contents(self):
        """A cache's repr does not grow with what it holds (names, contexts, negative and broken entries, loads)."""
        good, other = record_for(ALPHA), record_for(BETA)
        store = GatedStore(store_with(good, attrs.evolve(other, key_pem=good.key_pem)))
        cache = self.cache(store)
        for name in (ALPHA, BETA, GAMMA):
            cache.load(name)
        store.release()
        cache.load("delta.example.com")  # left in flight
        self.assertEqual((cache.size, cache.broken_count, cache.known_absent(GAMMA)), (1, 1, True))
        full = repr(cache)
        for name in (ALPHA, BETA, GAMMA, "delta.example.com"):
            self.assertNotIn(name, full)
        cache.invalidate_all()
        self.assertEqual(repr(cache), full)

    def test_lookup_normalises_the_name(self):
        """lookup finds a cached name given in another case, with a trailing dot, or as bytes."""
        cache = self.cache(store_with(record_for(ALPHA)))
        self.successResultOf(cache.load(ALPHA))
        context = cache.peek(ALPHA)
        self.assertIs(cache.lookup("Alpha.Example.COM."), context)
        self.assertIs(cache.lookup(ALPHA.encode("ascii")), context)
        self.assertIsNone(cache.lookup(b"\xff.example.com"))
        self.assertIsNone(cache.lookup(None))

    def test_lru_cap_evicts_least_recently_used(self):
        """With max_entries=2 a third name evicts the least recently looked-up one."""
        cache = self.cache(store_with(*(record_for(h) for h in (ALPHA, BETA, GAMMA))), max_entries=2)
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        cache.lookup(ALPHA)  # ALPHA is now more recent than BETA
        self.successResultOf(cache.load(GAMMA))
        self.assertIsNotNone(cache.peek(ALPHA))
        self.assertIsNone(cache.peek(BETA))
        self.assertIsNotNone(cache.peek(GAMMA))
        self.assertEqual((cache.size, cache.certificate_count, cache.evictions), (2, 2, 1))

    def test_negative_entry_expires(self):
        """A name the store lacks is known absent for negative_ttl seconds, then not."""
        cache = self.cache(MemoryStore(), negative_ttl=30)
        self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        self.assertTrue(cache.known_absent(ALPHA))
        self.clock.advance(29)
        self.assertTrue(cache.known_absent(ALPHA))
        self.clock.advance(1)
        self.assertFalse(cache.known_absent(ALPHA))

    def test_negative_entries_are_bounded_by_recency(self):
        """A name found absent again counts as recent: the bound drops the name recorded longest ago."""
        cache = self.cache(MemoryStore(), max_negative=2, negative_ttl=60)
        self.successResultOf(cache.load(ALPHA))
        self.clock.advance(10)
        self.successResultOf(cache.load(BETA))
        self.clock.advance(51)  # ALPHA's entry is stale (not yet removed), BETA's still fresh
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(GAMMA))
        self.assertEqual([cache.known_absent(n) for n in (ALPHA, BETA, GAMMA)], [True, False, True])

    def test_found_name_is_no_longer_absent(self):
        """A name the store lacked is no longer known absent once a load finds its certificate."""
        store = MemoryStore()
        cache = self.cache(store)
        self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        store.put_certificate(record_for(ALPHA))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertFalse(cache.known_absent(ALPHA))

    def test_negative_entries_are_bounded(self):
        """Negative entries are capped at max_negative (not max_entries), oldest dropped first, and counted."""
        cache = self.cache(MemoryStore(), max_negative=2, max_entries=1)
        for name in (ALPHA, BETA, GAMMA):
            self.successResultOf(cache.load(name))
        self.assertEqual([cache.known_absent(n) for n in (ALPHA, BETA, GAMMA)], [False, True, True])
        self.assertEqual((cache.negative_count, cache.negative_evictions), (2, 1))

    def test_contexts_are_a_smaller_lru_rebuilt_from_memory(self):
        """Only max_contexts contexts stay built (least recently used dropped); a dropped one is rebuilt on lookup without a store read."""
        store = CountingStore(store_with(record_for(ALPHA), record_for(BETA), record_for(GAMMA)))
        cache = self.cache(store, max_entries=3, max_contexts=2)
        for name in (ALPHA, BETA, GAMMA):
            self.assertIs(self.successResultOf(cache.load(name)), True)
        self.assertEqual((cache.size, cache.context_count, cache.context_builds, cache.context_evictions), (3, 2, 3, 1))
        beta = cache.lookup(BETA)
        alpha = cache.lookup(ALPHA)  # dropped when GAMMA came: rebuilt, and GAMMA (least recent) goes
        self.assertIsInstance(alpha, SSL.Context)
        self.assertIs(cache.lookup(BETA), beta, "a context kept in the tier is the same object")
        self.assertEqual((cache.context_count, cache.context_builds, cache.context_evictions), (2, 4, 2))
        self.assertEqual(store.calls, [ALPHA, BETA, GAMMA], "a rebuild reads nothing from the store")
        self.assertIsNot(cache.lookup(GAMMA), None)
        self.assertEqual((cache.hits, cache.misses, cache.context_builds), (4, 0, 5))
        self.assertIs(cache.lookup(ALPHA), cache.lookup(ALPHA))

    def test_hostname_lru_evicts_least_recently_looked_up(self):
        """Past max_entries the hostname looked up longest ago is dropped (its material too) and counted."""
        cache = self.cache(store_with(record_for(ALPHA), record_for(BETA), record_for(GAMMA)), max_entries=2)
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        cache.lookup(ALPHA)
        self.successResultOf(cache.load(GAMMA))
        self.assertEqual([cache.peek(n) is not None for n in (ALPHA, BETA, GAMMA)], [True, False, True])
        self.assertEqual((cache.size, cache.certificate_count, cache.evictions), (2, 2, 1))

    def test_bytes_accounts_pem_contexts_and_entries(self):
        """bytes is the PEM held plus the measured cost of each context and entry, and returns to 0 when emptied."""
        from jobhost.tls.sni import CONTEXT_BYTES, ENTRY_BYTES

        alpha, beta = record_for(ALPHA), record_for(BETA)
        cache = self.cache(store_with(alpha, beta), max_contexts=1)
        self.assertEqual(cache.bytes, 0)
        self.successResultOf(cache.load(ALPHA))
        pem_alpha = len(alpha.key_pem) + len(alpha.chain_pem)
        self.assertEqual(cache.bytes, pem_alpha + CONTEXT_BYTES + ENTRY_BYTES)
        self.successResultOf(cache.load(BETA))
        pem_beta = len(beta.key_pem) + len(beta.chain_pem)
        self.assertEqual(cache.bytes, pem_alpha + pem_beta + CONTEXT_BYTES + 2 * ENTRY_BYTES)
        self.successResultOf(cache.load(GAMMA))  # absent: a negative entry
        self.assertEqual(cache.bytes, pem_alpha + pem_beta + CONTEXT_BYTES + 3 * ENTRY_BYTES)
        cache.invalidate(BETA)
        self.assertEqual(cache.bytes, pem_alpha + 2 * ENTRY_BYTES)
        cache.invalidate(ALPHA)
        cache.invalidate(GAMMA)
        self.assertEqual((cache.bytes, cache.material_bytes), (0, 0))

    def test_bytes_counts_broken_entries_and_invalidate_all_empties_every_tier(self):
        """A broken entry counts in bytes like a negative one; invalidate_all leaves no context, entry or byte."""
        from jobhost.tls.sni import CONTEXT_BYTES, ENTRY_BYTES

        good, other = record_for(ALPHA), record_for(BETA)
        cache = self.cache(store_with(good, attrs.evolve(other, key_pem=good.key_pem)))
        self.successResultOf(cache.load(ALPHA))
        with capturedLogs():
            self.successResultOf(cache.load(BETA))  # its key does not match its leaf: broken
        pem = len(good.key_pem) + len(good.chain_pem)
        self.assertEqual((cache.size, cache.negative_count, cache.broken_count), (1, 1, 1))
        self.assertEqual(cache.bytes, pem + CONTEXT_BYTES + 3 * ENTRY_BYTES)
        cache.invalidate_all()
        self.assertEqual((cache.size, cache.context_count, cache.negative_count, cache.bytes), (0, 0, 0, 0))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertEqual((cache.context_count, cache.bytes), (1, pem + CONTEXT_BYTES + ENTRY_BYTES))

    def test_a_shared_certificate_whose_context_was_dropped_is_not_rebuilt_at_load(self):
        """A second name of a certificate whose context was dropped gets the material only; the context is rebuilt once, at lookup."""
        shared = record_for(ALPHA, BETA)
        cache = self.cache(store_with(shared, attrs.evolve(shared, hostname=BETA), record_for(GAMMA)),
                           max_contexts=1)
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(GAMMA))  # drops ALPHA's context
        self.assertEqual((cache.context_count, cache.context_builds), (1, 2))
        self.successResultOf(cache.load(BETA))  # same chain as ALPHA: no build now
        self.assertEqual((cache.context_count, cache.context_builds, cache.certificate_count), (1, 2, 2))
        context = cache.lookup(BETA)
        self.assertIs(cache.lookup(ALPHA), context)
        self.assertEqual((cache.context_count, cache.context_builds), (1, 3))

    def test_one_certificate_under_two_names_is_accounted_once(self):
        """A chain stored under two hostnames holds one material and one context, counted once in bytes."""
        from jobhost.tls.sni import CONTEXT_BYTES, ENTRY_BYTES

        shared = record_for(ALPHA, BETA)
        cache = self.cache(store_with(shared, attrs.evolve(shared, hostname=BETA)))
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        pem = len(shared.key_pem) + len(shared.chain_pem)
        self.assertEqual(cache.bytes, pem + CONTEXT_BYTES + 2 * ENTRY_BYTES)
        self.assertEqual((cache.certificate_count, cache.context_count, cache.context_builds), (1, 1, 1))
        cache.invalidate(ALPHA)
        self.assertEqual(cache.bytes, pem + CONTEXT_BYTES + ENTRY_BYTES)
        self.assertIsNotNone(cache.peek(BETA))

    def test_invalidate(self):
        """invalidate drops a name's context and its negative entry; invalidate_all drops all."""
        cache = self.cache(store_with(record_for(ALPHA), record_for(BETA)))
        for name in (ALPHA, BETA, GAMMA):
            self.successResultOf(cache.load(name))
        cache.invalidate(ALPHA)
        cache.invalidate(GAMMA)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertFalse(cache.known_absent(GAMMA))
        self.assertIsNotNone(cache.peek(BETA))
        cache.invalidate_all()
        self.assertEqual((cache.size, cache.certificate_count), (0, 0))

    def test_invalidate_all_forgets_absent_and_broken_names(self):
        """After invalidate_all no name is known absent or broken: the next connection reads the store again."""
        good, other = record_for(ALPHA), record_for(BETA)
        cache = self.cache(store_with(attrs.evolve(good, key_pem=other.key_pem)))
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(GAMMA))
        self.assertEqual((cache.known_absent(GAMMA), cache.broken_count), (True, 1))
        cache.invalidate_all()
        self.assertEqual((cache.known_absent(ALPHA), cache.known_absent(GAMMA)), (False, False))
        self.assertEqual((cache.broken_reason(ALPHA), cache.broken_count), (None, 0))

    def test_invalidate_all_during_load_reads_again(self):
        """A load in flight when everything is invalidated discards that read and reads again."""
        old = record_for(ALPHA)
        inner = store_with(old)
        store = GatedStore(inner)
        cache = self.cache(store)
        waiter = cache.load(ALPHA)
        new = record_for(ALPHA)
        inner.put_certificate(new)
        cache.invalidate_all()
        store.release()
        self.assertNoResult(waiter)
        store.release()
        self.assertIs(self.successResultOf(waiter), True)
        self.assertEqual(store.calls, [ALPHA, ALPHA])

    def test_invalidated_load_joins_a_newer_load(self):
        """Callers of a load that was invalidated get the answer of the load started after the invalidation."""
        store = GatedStore(store_with(record_for(ALPHA)))
        cache = self.cache(store)
        first = cache.load(ALPHA)
        cache.invalidate(ALPHA)
        second = cache.load(ALPHA)
        store.release()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (True, True))
        self.assertEqual(store.calls, [ALPHA, ALPHA])
        self.assertEqual(cache.loads, 2)

    def test_concurrent_loads_share_one_read(self):
        """Two loads of one name while the store is slow cause one read and both fire True."""
        store = GatedStore(store_with(record_for(ALPHA)))
        cache = self.cache(store)
        first, second = cache.load(ALPHA), cache.load(ALPHA)
        self.assertNoResult(first)
        store.release()
        self.assertEqual(store.calls, [ALPHA])
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (True, True))
        self.assertEqual(cache.loads, 1)

    def test_cancelled_waiter_leaves_others(self):
        """Cancelling one caller's load Deferred does not disturb another waiting for the same read."""
        store = GatedStore(store_with(record_for(ALPHA)))
        cache = self.cache(store)
        first, second = cache.load(ALPHA), cache.load(ALPHA)
        first.cancel()
        self.failureResultOf(first)
        store.release()
        self.assertIs(self.successResultOf(second), True)

    def test_invalidate_during_load_reads_again(self):
        """A load invalidated while the store is read discards that read and reads again."""
        old, new = record_for(ALPHA), record_for(ALPHA)
        inner = store_with(old)
        store = GatedStore(inner)
        cache = self.cache(store)
        waiter = cache.load(ALPHA)
        inner.put_certificate(new)
        cache.invalidate(ALPHA)
        store.release()  # answers the first read (now with `new`, but it is discarded)
        self.assertNoResult(waiter)
        self.assertEqual(store.calls, [ALPHA, ALPHA])
        store.release()
        self.assertIs(self.successResultOf(waiter), True)

    def test_store_failure_is_logged_without_negative_entry(self):
        """A store error makes load fire False, is logged as one line without a traceback, and leaves no negative entry."""
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(StoreError("disk on fire"))
        cache = self.cache(store)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = events
        self.assertEqual((event["log_level"], event["hostname"], event["reason"]), (LogLevel.error, ALPHA, "disk on fire"))
        self.assertNotIn("log_failure", event)
        self.assertFalse(cache.known_absent(ALPHA))
        self.assertEqual(cache.load_failures, 1)

    def test_unexpected_store_error_is_logged_with_traceback(self):
        """A store failing with something unexpected (a bug) makes load fire False, logs a traceback naming the host, and leaves no negative entry."""
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(RuntimeError("bug in the store"))
        cache = self.cache(store)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = events
        self.assertEqual(event["hostname"], ALPHA)
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(cache.known_absent(ALPHA))
        self.assertEqual((cache.load_failures, cache.broken_count), (1, 0))

    def test_failure_while_caching_an_answer_is_logged_with_the_host(self):
        """If recording a load's answer itself fails (here: the clock), the error is logged naming the host, not lost."""

        class BrokenClock(Clock):
            def seconds(self):
                raise RuntimeError("the clock is broken")

        cache = CertificateCache(store=MemoryStore(), clock=BrokenClock())
        with capturedLogs() as events:
            cache.load(ALPHA)
        [event] = events
        self.assertEqual(event["hostname"], ALPHA)
        self.assertIn("Caching the certificate", event["log_format"])
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unusable_record_gets_negative_entry(self):
        """A stored record whose key does not match its chain is not cached and is known absent."""
        good, other = record_for(ALPHA), record_for(BETA)
        cache = self.cache(store_with(attrs.evolve(good, key_pem=other.key_pem)))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertTrue(cache.known_absent(ALPHA))

    def broken_events(self, events, hostname: str) -> list:
        return [e for e in events if e.get("hostname") == hostname and e["log_level"] >= LogLevel.warn]

    def test_broken_record_is_reported_once_per_change(self):
        """A record whose key does not match its leaf is logged once, re-read silently after the TTL, and forgotten when its certificate changes."""
        good, other = record_for(ALPHA), record_for(BETA)
        store = CountingStore(store_with(attrs.evolve(good, key_pem=other.key_pem)))
        cache = self.cache(store, negative_ttl=60)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
            self.assertTrue(cache.known_absent(ALPHA))
            self.clock.advance(61)
            self.assertFalse(cache.known_absent(ALPHA))
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = self.broken_events(events, ALPHA)
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertNotIn("log_failure", event)
        self.assertIn("key values mismatch", event["reason"])
        self.assertEqual(event["reason"], cache.broken_reason(ALPHA))
        self.assertEqual((store.calls, cache.broken_reports, cache.broken_count), ([ALPHA, ALPHA], 1, 1))
        self.assertEqual(cache.load_failures, 0)
        cache.invalidate(ALPHA, frozenset((ChangeKind.PAGE,)))
        self.assertTrue(cache.known_absent(ALPHA), "a page edit does not make the certificate usable")
        store.inner.put_certificate(good)
        cache.invalidate(ALPHA, frozenset((ChangeKind.CERTIFICATE,)))
        self.assertIsNone(cache.broken_reason(ALPHA))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertIsNotNone(cache.peek(ALPHA))
        self.assertEqual(cache.broken_count, 0)

    def test_broken_record_from_the_store_is_remembered_not_retried(self):
        """A BrokenRecord from the store gets a negative entry and one log line, unlike a store failure."""
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(
            BrokenRecord(
                f"cannot parse /store/certificates/{hostname}.json: not valid JSON",
                key=hostname,
                reason="not valid JSON",
            )
        )
        cache = self.cache(store)
        with capturedLogs() as events:
            self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        [event] = self.broken_events(events, ALPHA)
        self.assertIn(f"/store/certificates/{ALPHA}.json", event["reason"])
        self.assertTrue(cache.known_absent(ALPHA))
        self.assertEqual((cache.broken_reports, cache.load_failures), (1, 0))

    def test_a_different_fault_is_reported_again(self):
        """After a re-read finds a different fault (the record was changed by hand), it is reported again."""
        reasons = ["not valid JSON", "missing field 'key_pem'"]
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(BrokenRecord(reasons[0], key=hostname, reason=reasons[0]))
        cache = self.cache(store, negative_ttl=10)
        with capturedLogs() as events:
            self.successResultOf(cache.load(ALPHA))
            reasons.pop(0)
            self.clock.advance(11)
            self.successResultOf(cache.load(ALPHA))
        self.assertEqual(
            [e["reason"] for e in self.broken_events(events, ALPHA)], ["not valid JSON", "missing field 'key_pem'"]
        )
        self.assertEqual(cache.broken_count, 1)

    def test_broken_record_fixed_in_the_store_is_served_after_the_ttl(self):
        """A broken record repaired in the store (the feed not yet told) is served after the negative TTL and no longer counted broken."""
        good, other = record_for(ALPHA), record_for(BETA)
        store = store_with(attrs.evolve(good, key_pem=other.key_pem))
        cache = self.cache(store, negative_ttl=60)
        self.successResultOf(cache.load(ALPHA))
        self.assertEqual(cache.broken_count, 1)
        store.put_certificate(good)
        self.clock.advance(60)
        self.assertFalse(cache.known_absent(ALPHA))
        self.assertIs(self.successResultOf(cache.load(ALPHA)), True)
        self.assertEqual((cache.broken_reason(ALPHA), cache.broken_count), (None, 0))

    def test_broken_record_deleted_is_no_longer_counted(self):
        """A broken record deleted from the store is, after the negative TTL, just absent: not counted broken."""
        good, other = record_for(ALPHA), record_for(BETA)
        store = store_with(attrs.evolve(good, key_pem=other.key_pem))
        cache = self.cache(store, negative_ttl=60)
        self.successResultOf(cache.load(ALPHA))
        store.delete_certificate(ALPHA)
        self.clock.advance(60)
        self.assertIs(self.successResultOf(cache.load(ALPHA)), False)
        self.assertTrue(cache.known_absent(ALPHA))
        self.assertEqual((cache.broken_reason(ALPHA), cache.broken_count), (None, 0))

    def test_broken_names_are_bounded(self):
        """At most max_entries broken names are remembered; the one reported longest ago is forgotten first."""
        reasons = {ALPHA: "not valid JSON", BETA: "not valid JSON", GAMMA: "not valid JSON"}
        store = MemoryStore()
        store.get_certificate = lambda hostname: fail(BrokenRecord(reasons[hostname], key=hostname, reason=reasons[hostname]))
        cache = self.cache(store, max_entries=2, negative_ttl=10)
        with capturedLogs():
            self.successResultOf(cache.load(ALPHA))
            self.successResultOf(cache.load(BETA))
            self.assertEqual(cache.broken_count, 2)
            self.clock.advance(10)
            reasons[ALPHA] = "missing field 'key_pem'"  # ALPHA is reported again: now the most recent
            self.successResultOf(cache.load(ALPHA))
            self.successResultOf(cache.load(GAMMA))
        self.assertEqual(
            [cache.broken_reason(n) for n in (ALPHA, BETA, GAMMA)], ["missing field 'key_pem'", None, "not valid JSON"]
        )
        self.assertEqual((cache.broken_count, cache.broken_reports), (2, 4))

    def test_one_certificate_held_once(self):
        """A certificate stored under two hostnames is held as one context for both."""
        shared = record_for(ALPHA, BETA)
        cache = self.cache(store_with(shared, attrs.evolve(shared, hostname=BETA)))
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        self.assertIs(cache.peek(ALPHA), cache.peek(BETA))
        self.assertEqual((cache.size, cache.certificate_count), (2, 1))
        cache.invalidate(ALPHA)
        self.assertIsNotNone(cache.peek(BETA))
        cache.invalidate(BETA)
        self.assertEqual(cache.certificate_count, 0)

    def test_replacement_releases_old_context(self):
        """Reloading a name with a new certificate drops the old context."""
        store = store_with(record_for(ALPHA))
        cache = self.cache(store)
        self.successResultOf(cache.load(ALPHA))
        before = cache.peek(ALPHA)
        store.put_certificate(record_for(ALPHA))
        self.successResultOf(cache.load(ALPHA))
        self.assertIsNot(cache.peek(ALPHA), before)
        self.assertEqual(cache.certificate_count, 1)


# -- ChangePoller ----------------------------------------------------------------------------


class ChangePollerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_provides_iservice(self):
        """ChangePoller is a Twisted service."""
        poller = ChangePoller(cache=None, store=MemoryStore(), clock=self.clock)
        verifyObject(IService, poller)

    def test_changed_hostnames_are_invalidated(self):
        """A certificate replaced in the store is invalidated after one interval, others kept."""
        store = store_with(record_for(ALPHA), record_for(BETA))
        cache = CertificateCache(store=store, clock=self.clock)
        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=2)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.successResultOf(cache.load(BETA))
        store.put_certificate(record_for(ALPHA))
        self.clock.advance(1)
        self.assertIsNotNone(cache.peek(ALPHA))
        self.clock.advance(1)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertIsNotNone(cache.peek(BETA))
        self.assertEqual(poller.polls, 2)
        self.successResultOf(poller.stopService())

    def test_a_push_polls_at_once_and_stopping_unwatches(self):
        """The store's push makes the poller read the feed before its interval; stopping the poller unwatches."""
        store = ScriptedFeed([(1, {}), (2, {ALPHA: ChangeKind.ALL})], store_with(record_for(ALPHA)))
        cache = CertificateCache(store=store, clock=self.clock)
        pushes, stopped = [], []

        def watch(callback):
            pushes.append(callback)
            return lambda: stopped.append(True)

        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=60, watch=watch)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.assertEqual((len(pushes), poller.polls), (1, 1))
        pushes[0]()  # another node stored a certificate: no need to wait 60 s
        self.assertEqual(poller.polls, 2)
        self.assertIsNone(cache.lookup(ALPHA))
        poller.stopService()
        self.assertEqual(stopped, [True])
        pushes[0]()
        self.assertEqual(poller.polls, 2, "a push after stopping does nothing")

    def test_unknown_changes_invalidate_everything(self):
        """When the feed cannot tell what changed (None), the whole cache is cleared."""
        store = ScriptedFeed([(1, {}), (2, None)], store_with(record_for(ALPHA)))
        cache = CertificateCache(store=store, clock=self.clock)
        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=1)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.clock.advance(1)
        self.assertEqual(cache.size, 0)
        poller.stopService()

    def test_failures_are_logged_and_polling_continues(self):
        """A failing poll is logged and the next poll still invalidates what changed."""
        store = ScriptedFeed(
            [(1, {}), StoreError("feed down"), (2, {ALPHA: ChangeKind.ALL})],
            store_with(record_for(ALPHA)),
        )
        cache = CertificateCache(store=store, clock=self.clock)
        poller = ChangePoller(cache=cache, store=store, clock=self.clock, interval=1)
        poller.startService()
        self.successResultOf(cache.load(ALPHA))
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        self.assertIsNotNone(cache.peek(ALPHA))
        self.clock.advance(1)
        self.assertIsNone(cache.peek(ALPHA))
        self.assertEqual((poller.polls, poller.failures), (2, 1))
        poller.stopService()
        self.clock.advance(10)
        self.assertEqual(poller.polls, 2)

    def test_a_push_during_a_poll_makes_one_more_poll_after_it(self):
        """Pushes arriving while a poll is in progress start no second concurrent read; one more poll follows it."""
        store = GatedFeed(store_with(record_for(ALPHA)))
        cache = CertificateCache(store=store, clock=self.clock)
        pushes = []
        poller = ChangePoller(
            cache=cache, store=store, clock=self.clock, interval=60, watch=lambda cb: pushes.append(cb) or (lambda: None)
        )
        poller.startService()
        store.answer(1, {})
        self.successResultOf(cache.load(ALPHA))
        pushes[0]()
        pushes[0]()
        pushes[0]()
        self.assertEqual(store.cursors, [None, 1])
        store.answer(2, {ALPHA: ChangeKind.ALL})
        self.assertIsNone(cache.peek(ALPHA))
        self.assertEqual(store.cursors, [None, 1, 2])
        store.answer(2, {})
        self.assertEqual(store.cursors, [None, 1, 2], "no poll without a new push")
        self.assertEqual(poller.polls, 3)
        poller.stopService()

    def test_stopping_waits_for_the_poll_in_progress(self):
        """stopService's Deferred fires only once the poll in progress has finished; then no more polls."""
        store = GatedFeed(MemoryStore())
        poller = ChangePoller(cache=CertificateCache(store=store, clock=self.clock), store=store, clock=self.clock, interval=5)
        poller.startService()
        store.answer(1, {})
        self.clock.advance(5)
        self.assertEqual(store.cursors, [None, 1])
        stopped = poller.stopService()
        self.assertNoResult(stopped)
        store.answer(1, {})
        self.successResultOf(stopped)
        self.clock.advance(50)
        self.assertEqual((store.cursors, poller.polls), ([None, 1], 2))

    def test_stopping_twice_is_harmless(self):
        """Stopping a stopped poller (or one never started) does nothing and does not raise."""
        poller = ChangePoller(cache=CertificateCache(store=MemoryStore(), clock=self.clock), store=MemoryStore(), clock=self.clock)
        self.assertIsNone(poller.stopService())
        poller.startService()
        self.successResultOf(poller.stopService())
        self.assertIsNone(poller.stopService())
        self.assertFalse(poller.running)

    def test_changes_are_logged_at_debug(self):
        """A poll that invalidates hostnames logs one debug line with their count; a poll with no changes logs nothing."""
        store = ScriptedFeed([(1, {}), (2, {ALPHA: ChangeKind.ALL, BETA: ChangeKind.ALL}), (3, {})])
        poller = ChangePoller(cache=CertificateCache(store=store, clock=self.clock), store=store, clock=self.clock, interval=1)
        poller.startService()
        with capturedLogs() as events:
            self.clock.advance(1)
        [event] = events
        self.assertEqual((event["log_level"], event["count"]), (LogLevel.debug, 2))
        with capturedLogs() as events:
            self.clock.advance(1)
        self.assertEqual(events, [])
        poller.stopService()
