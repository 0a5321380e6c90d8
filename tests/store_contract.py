"""
The IStore contract, as a test mixin every store implementation runs.

A test module subclasses :class:`StoreContractTests` together with
``twisted.trial.unittest.TestCase`` and says how to make a fresh, empty store
(:meth:`StoreContractTests.make_store`) and, when the store's data can be
shared, a second store over the same data
(:meth:`StoreContractTests.make_second_store`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from zope.interface.verify import verifyObject

from jobhost.certs import AriWindow, generate_private_key, private_key_pem
from jobhost.store.interfaces import IStore
from jobhost.errors import StoreConflict, StoreError
from jobhost.store.records import (
    HTTP_01,
    TLS_ALPN_01,
    tls_alpn01_key,
    Account,
    ChangeKind,
    Challenge,
    DomainRecord,
    DomainState,
    StateChange,
    certificate_record,
)
from jobhost.testing import TestCA

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)

_shared_ca: list[TestCA] = []


def shared_ca() -> TestCA:
    """One throwaway CA for the whole test run, made on first use (never at import)."""
    if not _shared_ca:
        _shared_ca.append(TestCA.create("store contract CA"))
    return _shared_ca[0]


def make_certificate(hostname: str, **extra):
    """A valid CertificateRecord for ``hostname`` issued by :func:`shared_ca`."""
    key_pem, chain_pem = shared_ca().issue(hostname)
    return certificate_record(hostname, key_pem, chain_pem, **extra)


def make_domain(hostname: str, state: str = DomainState.PENDING, **changes) -> DomainRecord:
    """A DomainRecord for ``hostname`` with every field filled in."""
    record = DomainRecord(
        hostname=hostname,
        state=state,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=1),
        page={"title": "Careers at Acme", "jobs": [{"title": "Engineer", "remote": True}]},
        last_error={"code": "dns", "message": "no A record", "at": "2030-01-02T03:04:05Z"},
        attempts=2,
        next_attempt=T0 + timedelta(minutes=10),
        unpause_url="https://ca.example/unpause?x=1",
        history=(
            StateChange(at=T0, state=DomainState.PENDING),
            StateChange(at=T0 + timedelta(seconds=1), state=state, reason="test"),
        ),
    )
    return attrs.evolve(record, **changes)


def make_account(directory_url: str, account_url: str = "https://ca.example/acct/1") -> Account:
    """An Account for ``directory_url`` with a fresh key."""
    return Account(
        directory_url=directory_url,
        key_pem=private_key_pem(generate_private_key()),
        account_url=account_url,
        created_at=T0,
        contact=("mailto:ops@example.com",),
    )


class StoreContractTests:
    """What every IStore promises; mix into a ``twisted.trial.unittest.TestCase``."""

    #: True for a store whose ``record_counts`` counts (through indexes) rather than firing None.
    counts_through_indexes = False

    def make_store(self):
        """Return a new, empty store (its own data, cleaned up by the test case)."""
        raise NotImplementedError

    def make_second_store(self):
        """Return another store over the same data as the last :meth:`make_store`, or None.

        None (the default) skips the tests that need two stores sharing data.
        """
        return None

    def make_interfering_store(self):
        """Return a store over the same data whose calls complete before they return.

        The optimistic-update tests write through it from inside a change function, to
        be "the other writer" at a chosen moment.  By default the store itself (which
        must then be synchronous).  None skips those tests: a store that holds a lock
        from read to write cannot be interrupted so, and proves its atomicity with
        racing threads and processes instead.
        """
        return self._last_store

    def _interfering(self):
        other = self.make_interfering_store()
        if other is None:
            from twisted.trial.unittest import SkipTest

            raise SkipTest(f"{type(self).__name__} locks from read to write")
        return other

    def _second(self):
        second = self.make_second_store()
        if second is None:
            from twisted.trial.unittest import SkipTest

            raise SkipTest(f"{type(self).__name__} has no shared backing data")
        return second

    # -- the interface -----------------------------------------------------------------

    def test_provides_istore(self):
        """The store provides every IStore method with the declared signatures."""
        self.assertTrue(verifyObject(IStore, self.make_store()))

    # -- health --------------------------------------------------------------------------

    def opened(self, store):
        """Fire with ``store`` once it has been opened as the daemon opens it (default: at once)."""
        return succeed(store)

    @inlineCallbacks
    def test_check_fires_true_for_an_opened_store(self):
        """check() fires True for a store that was opened, also once it holds records."""
        store = yield self.opened(self.make_store())
        self.assertIs((yield store.check()), True)
        yield store.put_certificate(make_certificate("a.example.com"))
        self.assertIs((yield store.check()), True)

    # -- domain records ------------------------------------------------------------------

    @inlineCallbacks
    def test_get_domain_absent(self):
        """Getting a domain record that was never stored fails with KeyError."""
        store = self.make_store()
        yield self.assertFailure(store.get_domain("absent.example.com"), KeyError)

    @inlineCallbacks
    def test_put_get_domain_round_trip(self):
        """A domain record put with every field set reads back equal."""
        store = self.make_store()
        record = make_domain("jobs.acme-corp.com", DomainState.FAILING)
        result = yield store.put_domain(record)
        self.assertIsNone(result)
        got = yield store.get_domain("jobs.acme-corp.com")
        self.assertEqual(got, record)

    @inlineCallbacks
    def test_put_domain_replaces(self):
        """Putting a domain record again replaces the stored one."""
        store = self.make_store()
        yield store.put_domain(make_domain("a.example.com"))
        newer = make_domain("a.example.com", DomainState.ACTIVE, attempts=0, page=None)
        yield store.put_domain(newer)
        got = yield store.get_domain("a.example.com")
        self.assertEqual(got, newer)

    @inlineCallbacks
    def test_add_domain_creates(self):
        """add_domain of a new hostname stores it and fires with (record, True)."""
        store = self.make_store()
        record = make_domain("new.example.com")
        stored, created = yield store.add_domain(record)
        self.assertEqual((stored, created), (record, True))
        got = yield store.get_domain("new.example.com")
        self.assertEqual(got, record)

    @inlineCallbacks
    def test_add_domain_idempotent(self):
        """add_domain of a registered hostname keeps the existing record and fires with (existing, False)."""
        store = self.make_store()
        first = make_domain("twice.example.com", DomainState.ACTIVE)
        yield store.add_domain(first)
        stored, created = yield store.add_domain(make_domain("twice.example.com", DomainState.PENDING))
        self.assertEqual((stored, created), (first, False))
        got = yield store.get_domain("twice.example.com")
        self.assertEqual(got, first)

    @inlineCallbacks
    def test_delete_domain(self):
        """A deleted domain record is gone; deleting an absent one fails with KeyError."""
        store = self.make_store()
        yield store.put_domain(make_domain("gone.example.com"))
        result = yield store.delete_domain("gone.example.com")
        self.assertIsNone(result)
        yield self.assertFailure(store.get_domain("gone.example.com"), KeyError)
        yield self.assertFailure(store.delete_domain("gone.example.com"), KeyError)

    @inlineCallbacks
    def _fill_domains(self, store):
        states = {
            "d.example.com": DomainState.ACTIVE,
            "a.example.com": DomainState.PENDING,
            "e.example.com": DomainState.ACTIVE,
            "b.example.com": DomainState.ACTIVE,
            "c.example.org": DomainState.FAILING,
        }
        for hostname, state in states.items():
            yield store.put_domain(make_domain(hostname, state))
        return states

    @inlineCallbacks
    def test_list_domains_ordered(self):
        """list_domains fires with every record, ordered by hostname."""
        store = self.make_store()
        empty = yield store.list_domains()
        self.assertEqual(empty, [])
        states = yield self._fill_domains(store)
        records = yield store.list_domains()
        self.assertEqual([r.hostname for r in records], sorted(states))
        self.assertEqual([r.state for r in records], [states[h] for h in sorted(states)])

    @inlineCallbacks
    def test_list_domains_state_filter(self):
        """list_domains(state=...) keeps only records in that state."""
        store = self.make_store()
        yield self._fill_domains(store)
        active = yield store.list_domains(state=DomainState.ACTIVE)
        self.assertEqual([r.hostname for r in active], ["b.example.com", "d.example.com", "e.example.com"])
        removed = yield store.list_domains(state=DomainState.REMOVED)
        self.assertEqual(removed, [])

    @inlineCallbacks
    def test_list_domains_paging(self):
        """after= starts strictly after a hostname and limit= caps the count, after filtering."""
        store = self.make_store()
        yield self._fill_domains(store)
        page1 = yield store.list_domains(limit=2)
        self.assertEqual([r.hostname for r in page1], ["a.example.com", "b.example.com"])
        page2 = yield store.list_domains(after=page1[-1].hostname, limit=2)
        self.assertEqual([r.hostname for r in page2], ["c.example.org", "d.example.com"])
        page3 = yield store.list_domains(after=page2[-1].hostname, limit=2)
        self.assertEqual([r.hostname for r in page3], ["e.example.com"])
        active = yield store.list_domains(state=DomainState.ACTIVE, after="b.example.com", limit=1)
        self.assertEqual([r.hostname for r in active], ["d.example.com"])
        between = yield store.list_domains(after="b.example.co")
        self.assertEqual(between[0].hostname, "b.example.com")

    @inlineCallbacks
    def test_list_domains_prefix(self):
        """prefix= keeps only hostnames starting with it, combined with state, after and limit."""
        store = self.make_store()
        yield self._fill_domains(store)
        for name in ("b.example.co", "b-x.example.com", "bz.example.com", "ba.example.com"):
            yield store.put_domain(make_domain(name, DomainState.ACTIVE))
        found = yield store.list_domains(prefix="b.")
        self.assertEqual([r.hostname for r in found], ["b.example.co", "b.example.com"])
        found = yield store.list_domains(prefix="b")
        self.assertEqual(
            [r.hostname for r in found],
            ["b-x.example.com", "b.example.co", "b.example.com", "ba.example.com", "bz.example.com"],
        )
        found = yield store.list_domains(prefix="b", after="b.example.co", limit=2)
        self.assertEqual([r.hostname for r in found], ["b.example.com", "ba.example.com"])
        found = yield store.list_domains(prefix="c", state=DomainState.FAILING)
        self.assertEqual([r.hostname for r in found], ["c.example.org"])
        self.assertEqual((yield store.list_domains(prefix="c", state=DomainState.ACTIVE)), [])
        self.assertEqual((yield store.list_domains(prefix="zz")), [])
        everything = yield store.list_domains(prefix=None)
        self.assertEqual(len(everything), 9)

    @inlineCallbacks
    def test_list_certificates_by_expiry(self):
        """Certificates list soonest expiry first (ties by hostname), and page strictly after (not_after, hostname)."""
        store = self.make_store()
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
        expiries = {"d.example.com": 5, "a.example.com": 30, "b.example.com": 5, "c.example.com": 2}
        for hostname, days in expiries.items():
            key_pem, chain_pem = shared_ca().issue(hostname, not_before=start, lifetime=timedelta(days=days))
            yield store.put_certificate(certificate_record(hostname, key_pem, chain_pem))
        everything = yield store.list_certificates_by_expiry()
        order = ["c.example.com", "b.example.com", "d.example.com", "a.example.com"]
        self.assertEqual([r.hostname for r in everything], order)
        first = yield store.list_certificates_by_expiry(limit=2)
        self.assertEqual([r.hostname for r in first], order[:2])
        rest = yield store.list_certificates_by_expiry(after=(first[-1].not_after, first[-1].hostname), limit=5)
        self.assertEqual([r.hostname for r in rest], order[2:])
        self.assertEqual((yield store.list_certificates_by_expiry(limit=0)), [])

    @inlineCallbacks
    def _fill_due(self, store):
        """Records due and not due at T0; returns the hostnames due, and the earliest later attempt."""
        parked_error = {"code": "badCSR", "message": "refused", "retryable": False}
        plan = [
            ("a-removed.test", DomainState.REMOVED, {"next_attempt": None}),
            ("b-pending.test", DomainState.PENDING, {"next_attempt": None}),
            ("c-later.test", DomainState.FAILING, {"next_attempt": T0 + timedelta(seconds=300)}),
            ("d-sooner.test", DomainState.ACTIVE, {"next_attempt": T0 + timedelta(seconds=120)}),
            ("e-now.test", DomainState.FAILING, {"next_attempt": T0}),
            ("f-past.test", DomainState.ACTIVE, {"next_attempt": T0 - timedelta(days=1)}),
            ("g-past.test", DomainState.ACTIVE, {"next_attempt": T0 - timedelta(days=1)}),
            ("h-pending.test", DomainState.PENDING, {"next_attempt": None}),
            ("i-parked.test", DomainState.FAILING, {"next_attempt": None, "last_error": parked_error}),
            ("j-removed-later.test", DomainState.REMOVED, {"next_attempt": T0 + timedelta(seconds=60)}),
        ]
        for hostname, state, changes in plan:
            yield store.put_domain(make_domain(hostname, state, **changes))
        due = {"b-pending.test", "e-now.test", "f-past.test", "g-past.test", "h-pending.test"}
        return due, T0 + timedelta(seconds=120)

    @inlineCallbacks
    def _walk_due(self, store, now, limit):
        seen, soonest, cursor, pages = [], None, None, 0
        while True:
            page = yield store.due_domains(now, cursor, limit)
            pages += 1
            self.assertLessEqual(len(page.records), limit)
            seen += [r.hostname for r in page.records if not r.parked]
            if page.earliest_later is not None:
                soonest = page.earliest_later if soonest is None else min(soonest, page.earliest_later)
            if page.cursor is None:
                return seen, soonest, pages
            cursor = page.cursor
            self.assertLess(pages, 20, "due_domains keeps returning a cursor")

    @inlineCallbacks
    def test_due_domains_lists_what_is_due_once_and_the_earliest_later_attempt(self):
        """due_domains lists every record due at now once (not removed, not later) and the earliest later attempt."""
        store = self.make_store()
        empty = yield store.due_domains(T0)
        self.assertEqual((empty.records, empty.cursor, empty.earliest_later), ((), None, None))
        due, soonest = yield self._fill_due(store)
        for limit in (500, 1, 2, 3):
            seen, earliest, pages = yield self._walk_due(store, T0, limit)
            self.assertEqual(sorted(seen), sorted(due), f"limit {limit}")
            self.assertEqual(len(seen), len(set(seen)), f"limit {limit}: listed twice")
            self.assertEqual(earliest, soonest, f"limit {limit}")
            if limit == 1:
                self.assertGreaterEqual(pages, len(due))

    @inlineCallbacks
    def test_due_domains_follows_now(self):
        """A record becomes due when now reaches its next attempt; nothing later is left once all are due."""
        store = self.make_store()
        due, _ = yield self._fill_due(store)
        seen, earliest, _ = yield self._walk_due(store, T0 + timedelta(seconds=120), 2)
        self.assertEqual(sorted(seen), sorted(due | {"d-sooner.test"}))
        self.assertEqual(earliest, T0 + timedelta(seconds=300))
        seen, earliest, _ = yield self._walk_due(store, T0 + timedelta(days=1), 2)
        self.assertEqual(sorted(seen), sorted(due | {"d-sooner.test", "c-later.test"}))
        self.assertIsNone(earliest)

    @inlineCallbacks
    def test_record_counts_are_none_or_match_the_records(self):
        """record_counts fires with None (the caller walks) or with the counts a walk of the records would give."""
        store = self.make_store()
        states = yield self._fill_domains(store)
        now = datetime.now(timezone.utc)
        for name, days in [("a.example.com", 3), ("b.example.com", 10), ("d.example.com", 60)]:
            key_pem, chain_pem = shared_ca().issue(name, not_before=now - timedelta(days=1),
                                                   lifetime=timedelta(days=days + 1))
            yield store.put_certificate(certificate_record(name, key_pem, chain_pem))
        windows = {"7d": timedelta(days=7), "14d": timedelta(days=14)}
        counted = yield store.record_counts(now, windows)
        self.assertEqual(counted is not None, self.counts_through_indexes)
        if counted is None:
            return
        expected_states: dict = {}
        for state in states.values():
            expected_states[state] = expected_states.get(state, 0) + 1
        self.assertEqual(dict(counted.domains), expected_states)
        self.assertEqual(counted.certificates, 3)
        self.assertEqual(dict(counted.expiring), {"7d": 1, "14d": 2})

    @inlineCallbacks
    def test_list_with_limit_zero_is_empty(self):
        """limit=0 asks for nothing and gets nothing, broken records or not."""
        store = self.make_store()
        yield self._fill_domains(store)
        yield store.put_certificate(make_certificate("a.example.com"))
        self.assertEqual((yield store.list_domains(limit=0)), [])
        self.assertEqual((yield store.list_domains(limit=0, include_broken=True)), [])
        self.assertEqual((yield store.list_domains(state=DomainState.ACTIVE, limit=0)), [])
        self.assertEqual((yield store.list_certificates(limit=0)), [])

    # -- certificate records ---------------------------------------------------------------

    @inlineCallbacks
    def test_get_certificate_absent(self):
        """Getting a certificate that was never stored fails with KeyError."""
        store = self.make_store()
        yield self.assertFailure(store.get_certificate("absent.example.com"), KeyError)

    @inlineCallbacks
    def test_put_get_certificate_round_trip(self):
        """A certificate record with every optional field reads back equal, key included."""
        store = self.make_store()
        record = make_certificate(
            "jobs.acme-corp.com",
            directory_url="https://ca.example/dir",
            account_url="https://ca.example/acct/7",
            ari_cert_id="aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
            ari=AriWindow(
                start=T0,
                end=T0 + timedelta(days=2),
                retry_after=T0 + timedelta(hours=6),
                explanation_url="https://ca.example/why",
            ),
        )
        result = yield store.put_certificate(record)
        self.assertIsNone(result)
        got = yield store.get_certificate("jobs.acme-corp.com")
        self.assertEqual(got, record)
        self.assertEqual(got.key_pem, record.key_pem)

    @inlineCallbacks
    def test_put_certificate_replaces(self):
        """Putting a certificate again replaces the stored one."""
        store = self.make_store()
        yield store.put_certificate(make_certificate("a.example.com"))
        newer = make_certificate("a.example.com")
        yield store.put_certificate(newer)
        got = yield store.get_certificate("a.example.com")
        self.assertEqual(got.fingerprint, newer.fingerprint)
        self.assertEqual(got, newer)

    @inlineCallbacks
    def test_delete_certificate(self):
        """A deleted certificate is gone; deleting an absent one fires with None."""
        store = self.make_store()
        yield store.put_certificate(make_certificate("gone.example.com"))
        result = yield store.delete_certificate("gone.example.com")
        self.assertIsNone(result)
        yield self.assertFailure(store.get_certificate("gone.example.com"), KeyError)
        again = yield store.delete_certificate("gone.example.com")
        self.assertIsNone(again)

    @inlineCallbacks
    def test_list_certificates_paging(self):
        """list_certificates orders by hostname and pages with after= and limit=."""
        store = self.make_store()
        hostnames = ["c.example.com", "a.example.com", "b.example.com"]
        for hostname in hostnames:
            yield store.put_certificate(make_certificate(hostname))
        everything = yield store.list_certificates()
        self.assertEqual([r.hostname for r in everything], sorted(hostnames))
        page = yield store.list_certificates(after="a.example.com", limit=1)
        self.assertEqual([r.hostname for r in page], ["b.example.com"])
        rest = yield store.list_certificates(after="b.example.com")
        self.assertEqual([r.hostname for r in rest], ["c.example.com"])

    # -- change feed ---------------------------------------------------------------------------

    @inlineCallbacks
    def test_changes_start(self):
        """changes(None) fires with a cursor and an empty set, and that cursor sees nothing new."""
        store = self.make_store()
        yield store.put_certificate(make_certificate("before.example.com"))
        cursor, names = yield store.changes(None)
        self.assertEqual(frozenset(names), frozenset())
        again, names = yield store.changes(cursor)
        self.assertEqual(frozenset(names), frozenset())
        self.assertEqual(again, cursor)

    @inlineCallbacks
    def test_changes_report_writes(self):
        """Puts and deletes of certificates and domain records appear once on the feed after the cursor."""
        store = self.make_store()
        cursor, _ = yield store.changes(None)
        yield store.put_certificate(make_certificate("cert.example.com"))
        cursor, names = yield store.changes(cursor)
        self.assertEqual(frozenset(names), frozenset({"cert.example.com"}))
        yield store.put_domain(make_domain("put.example.com"))
        yield store.add_domain(make_domain("added.example.com"))
        yield store.delete_domain("put.example.com")
        yield store.delete_certificate("cert.example.com")
        cursor, names = yield store.changes(cursor)
        self.assertEqual(frozenset(names), frozenset({"put.example.com", "added.example.com", "cert.example.com"})
        )
        cursor, names = yield store.changes(cursor)
        self.assertEqual(frozenset(names), frozenset())

    @inlineCallbacks
    def test_put_and_delete_domain_report_what_changed(self):
        """Each domain write on its own: a put changing only the page is PAGE; an identical put still STATE; a delete both."""
        store = self.make_store()
        yield store.put_domain(make_domain("p.example.com"))
        cursor, _ = yield store.changes(None)
        yield store.put_domain(make_domain("p.example.com", page={"title": "edited"}))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"p.example.com": frozenset({ChangeKind.PAGE})})
        yield store.put_domain(make_domain("p.example.com", page={"title": "edited"}))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"p.example.com": frozenset({ChangeKind.STATE})})
        yield store.delete_domain("p.example.com")
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"p.example.com": frozenset({ChangeKind.PAGE, ChangeKind.STATE})})

    @inlineCallbacks
    def test_certificate_change_kinds(self):
        """Re-putting the same key and chain with only new facts is RENEWAL_INFO; a different chain for the same key is CERTIFICATE."""
        store = self.make_store()
        certificate = make_certificate("k.example.com")
        yield store.put_certificate(certificate)
        cursor, _ = yield store.changes(None)
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        yield store.put_certificate(attrs.evolve(certificate, ari=window))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"k.example.com": frozenset({ChangeKind.RENEWAL_INFO})})
        end = b"-----END CERTIFICATE-----\n"
        leaf_only = certificate.chain_pem[: certificate.chain_pem.index(end) + len(end)]
        yield store.put_certificate(certificate_record("k.example.com", certificate.key_pem, leaf_only))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"k.example.com": frozenset({ChangeKind.CERTIFICATE})})

    @inlineCallbacks
    def test_changes_past_the_end_is_none(self):
        """A cursor past the feed's end (from a store that was since replaced or reset) fires None: reload everything."""
        store = self.make_store()
        yield store.put_domain(make_domain("a.example.com"))
        cursor, _ = yield store.changes(None)
        end, changed = yield store.changes(cursor + 1000)
        self.assertIsNone(changed)
        again, changed = yield store.changes(end)
        self.assertEqual((again, dict(changed)), (end, {}))

    @inlineCallbacks
    def test_changes_seen_by_second_store(self):
        """A change written through one store is on another store's feed over the same data."""
        store = self.make_store()
        other = self._second()
        cursor, _ = yield other.changes(None)
        yield store.put_certificate(make_certificate("shared.example.com"))
        yield store.put_domain(make_domain("domain.example.com"))
        cursor, names = yield other.changes(cursor)
        self.assertEqual(frozenset(names), frozenset({"shared.example.com", "domain.example.com"}))
        got = yield other.get_certificate("shared.example.com")
        self.assertEqual(got.hostname, "shared.example.com")
        cursor, names = yield other.changes(cursor)
        self.assertEqual(frozenset(names), frozenset())

    @inlineCallbacks
    def test_second_store_shares_records(self):
        """Every record kind written through one store reads back through another over the same data."""
        store = self.make_store()
        other = self._second()
        yield store.put_domain(make_domain("a.example.com"))
        account = make_account("https://ca.example/dir")
        yield store.put_account(account)
        yield store.put_challenge(Challenge("tok_en-1", "tok_en-1.thumb", "a.example.com", T0))
        got = yield other.get_domain("a.example.com")
        self.assertEqual(got, make_domain("a.example.com"))
        got_account = yield other.get_account("https://ca.example/dir")
        self.assertEqual(got_account, account)
        challenge = yield other.get_challenge("tok_en-1")
        self.assertEqual(challenge.key_authorization, "tok_en-1.thumb")
        stored, created = yield other.add_domain(make_domain("a.example.com", DomainState.ACTIVE))
        self.assertFalse(created)

    @inlineCallbacks
    def test_listing_is_in_byte_order(self):
        """Hostnames list in byte order (``-`` < ``.`` < digits < letters), in every store and collation."""
        store = self.make_store()
        names = ["ab.example.com", "a-b.example.com", "a.example.com", "a0.example.com", "b.example.com"]
        for name in names:
            yield store.put_domain(make_domain(name))
            yield store.put_certificate(make_certificate(name))
        domains = yield store.list_domains()
        self.assertEqual([r.hostname for r in domains], sorted(names))
        certificates = yield store.list_certificates()
        self.assertEqual([r.hostname for r in certificates], sorted(names))
        after = yield store.list_domains(after="a-b.example.com", limit=2)
        self.assertEqual([r.hostname for r in after], sorted(names)[1:3])

    # -- atomic updates ----------------------------------------------------------------------------

    @inlineCallbacks
    def test_update_domain_applies_and_bumps_version(self):
        """update_domain stores the change's result with the version one higher and fires with it."""
        store = self.make_store()
        yield store.add_domain(make_domain("u.example.com", version=0))
        stored = yield store.update_domain("u.example.com", lambda r: attrs.evolve(r, attempts=7))
        self.assertEqual((stored.attempts, stored.version), (7, 1))
        got = yield store.get_domain("u.example.com")
        self.assertEqual(got, stored)
        again = yield store.update_domain("u.example.com", lambda r: attrs.evolve(r, attempts=8))
        self.assertEqual(again.version, 2)

    @inlineCallbacks
    def test_update_domain_absent(self):
        """update_domain of a hostname with no record fails with KeyError and calls nothing."""
        store = self.make_store()
        called = []
        yield self.assertFailure(store.update_domain("absent.example.com", called.append), KeyError)
        self.assertEqual(called, [])

    @inlineCallbacks
    def test_update_domain_unchanged_writes_nothing(self):
        """A change that returns the record as it was, or an equal copy, writes nothing: same version, nothing on the feed."""
        store = self.make_store()
        yield store.add_domain(make_domain("same.example.com"))
        cursor, _ = yield store.changes(None)
        got = yield store.update_domain("same.example.com", lambda r: r)
        self.assertEqual(got.version, 0)
        copy = yield store.update_domain("same.example.com", lambda r: attrs.evolve(r, attempts=r.attempts))
        self.assertEqual(copy.version, 0)
        _, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {})
        got = yield store.get_domain("same.example.com")
        self.assertEqual(got.version, 0)

    @inlineCallbacks
    def test_update_domain_refuses_a_record_for_another_hostname(self):
        """A change returning a record for another hostname fails with StoreError; neither record is written."""
        store = self.make_store()
        yield store.add_domain(make_domain("a.example.com"))
        yield self.assertFailure(
            store.update_domain("a.example.com", lambda r: attrs.evolve(r, hostname="b.example.com", attempts=9)),
            StoreError,
        )
        got = yield store.get_domain("a.example.com")
        self.assertEqual(got, make_domain("a.example.com"))
        yield self.assertFailure(store.get_domain("b.example.com"), KeyError)

    @inlineCallbacks
    def test_update_domain_error_writes_nothing(self):
        """An exception raised by the change reaches the caller and the record stays as it was."""
        store = self.make_store()
        yield store.add_domain(make_domain("err.example.com"))

        def refuse(record):
            raise ValueError("no")

        yield self.assertFailure(store.update_domain("err.example.com", refuse), ValueError)
        got = yield store.get_domain("err.example.com")
        self.assertEqual(got, make_domain("err.example.com"))

    @inlineCallbacks
    def test_update_domain_recomputes_after_a_concurrent_write(self):
        """A write that lands between update_domain's read and its write makes it re-read and re-apply, losing nothing."""
        store = self._last_store = self.make_store()
        other = self._interfering()
        yield store.add_domain(make_domain("race.example.com", page={"title": "old"}))
        seen = []

        def set_state(record):
            seen.append(record.page)
            if len(seen) == 1:
                # Another writer changes the page after this change was computed from the old record.
                d = other.update_domain("race.example.com", lambda r: attrs.evolve(r, page={"title": "new"}))
                self.assertEqual(self.successResultOf(d).page, {"title": "new"})
            return attrs.evolve(record, state=DomainState.ACTIVE)

        stored = yield store.update_domain("race.example.com", set_state)
        self.assertEqual(seen, [{"title": "old"}, {"title": "new"}])
        got = yield store.get_domain("race.example.com")
        self.assertEqual((got.state, got.page, got.version), (DomainState.ACTIVE, {"title": "new"}, 2))
        self.assertEqual(stored, got)

    @inlineCallbacks
    def test_update_domain_gives_up_on_endless_conflicts(self):
        """A record rewritten before every write attempt makes update_domain fail with StoreConflict, writing nothing of its own."""
        store = self._last_store = self.make_store()
        other = self._interfering()
        yield store.add_domain(make_domain("busy.example.com"))
        calls = []

        def change(record):
            calls.append(record.version)
            d = other.update_domain("busy.example.com", lambda r: attrs.evolve(r, attempts=r.attempts + 100))
            self.successResultOf(d)
            return attrs.evolve(record, state=DomainState.PAUSED)

        yield self.assertFailure(store.update_domain("busy.example.com", change), StoreConflict)
        got = yield store.get_domain("busy.example.com")
        self.assertNotEqual(got.state, DomainState.PAUSED)
        self.assertEqual(got.version, len(calls))
        self.assertGreater(len(calls), 1)

    @inlineCallbacks
    def test_set_renewal_info_only_on_the_same_certificate(self):
        """A renewal window is stored on the certificate it was asked for, never on (or instead of) a newer one."""
        store = self.make_store()
        old = make_certificate("ari.example.com")
        yield store.put_certificate(old)
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        written = yield store.set_renewal_info("ari.example.com", old.fingerprint, window)
        self.assertTrue(written)
        got = yield store.get_certificate("ari.example.com")
        self.assertEqual((got.fingerprint, got.ari), (old.fingerprint, window))
        new = make_certificate("ari.example.com")
        yield store.put_certificate(new)
        written = yield store.set_renewal_info("ari.example.com", old.fingerprint, window)
        self.assertFalse(written)
        got = yield store.get_certificate("ari.example.com")
        self.assertEqual((got.fingerprint, got.ari), (new.fingerprint, None))
        yield store.delete_certificate("ari.example.com")
        written = yield store.set_renewal_info("ari.example.com", new.fingerprint, window)
        self.assertFalse(written)
        yield self.assertFailure(store.get_certificate("ari.example.com"), KeyError)

    @inlineCallbacks
    def test_change_kinds(self):
        """The feed says what changed: a page edit is PAGE only, a state change STATE only, an ARI-only certificate update RENEWAL_INFO."""
        store = self.make_store()
        yield store.add_domain(make_domain("k.example.com"))
        certificate = make_certificate("k.example.com")
        yield store.put_certificate(certificate)
        cursor, _ = yield store.changes(None)
        yield store.update_domain("k.example.com", lambda r: attrs.evolve(r, page={"title": "edited"}))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"k.example.com": frozenset({ChangeKind.PAGE})})
        yield store.update_domain("k.example.com", lambda r: attrs.evolve(r, state=DomainState.ACTIVE))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"k.example.com": frozenset({ChangeKind.STATE})})
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        yield store.set_renewal_info("k.example.com", certificate.fingerprint, window)
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"k.example.com": frozenset({ChangeKind.RENEWAL_INFO})})
        yield store.put_certificate(make_certificate("k.example.com"))
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(dict(changed), {"k.example.com": frozenset({ChangeKind.CERTIFICATE})})
        yield store.update_domain("k.example.com", lambda r: attrs.evolve(r, state=DomainState.REMOVED))
        yield store.delete_certificate("k.example.com")
        cursor, changed = yield store.changes(cursor)
        self.assertEqual(
            dict(changed),
            {"k.example.com": frozenset({ChangeKind.PAGE, ChangeKind.STATE, ChangeKind.CERTIFICATE})},
        )

    # -- order budget --------------------------------------------------------------------------------

    @inlineCallbacks
    def test_reserve_order_sliding_window(self):
        """The budget grants ``limit`` slots per window, then names when the oldest frees; others share it."""
        store = self.make_store()
        other = self.make_second_store() or store
        window = timedelta(hours=3)
        first = yield store.reserve_order("ca", T0, window, 2)
        second = yield other.reserve_order("ca", T0 + timedelta(minutes=1), window, 2)
        self.assertEqual((first, second), (None, None))
        spent = yield store.reserve_order("ca", T0 + timedelta(minutes=2), window, 2)
        self.assertEqual(spent, T0 + window)
        peek = yield store.reserve_order("ca", T0 + window + timedelta(seconds=1), window, 2, take=False)
        self.assertIsNone(peek)
        elsewhere = yield store.reserve_order("other-ca", T0 + timedelta(minutes=2), window, 2)
        self.assertIsNone(elsewhere)
        freed = yield other.reserve_order("ca", T0 + window + timedelta(seconds=1), window, 2)
        self.assertIsNone(freed)
        spent_again = yield store.reserve_order("ca", T0 + window + timedelta(seconds=2), window, 2)
        self.assertEqual(spent_again, T0 + timedelta(minutes=1) + window)

    @inlineCallbacks
    def test_reserve_order_frees_a_slot_when_it_says(self):
        """A spent budget names when its oldest slot frees, and at exactly that time the slot is free again."""
        store = self.make_store()
        window = timedelta(hours=3)
        self.assertIsNone((yield store.reserve_order("ca", T0, window, 1)))
        frees_at = yield store.reserve_order("ca", T0 + timedelta(minutes=1), window, 1)
        self.assertEqual(frees_at, T0 + window)
        self.assertIsNone((yield store.reserve_order("ca", frees_at, window, 1, take=False)))
        self.assertIsNone((yield store.reserve_order("ca", frees_at, window, 1)))
        self.assertEqual((yield store.reserve_order("ca", frees_at, window, 1)), frees_at + window)

    @inlineCallbacks
    def test_every_call_returns_a_deferred(self):
        """Every IStore method returns a Deferred, whatever path it takes (callers chain callbacks on it)."""
        store = yield self.opened(self.make_store())
        certificate = make_certificate("a.example.com")
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        challenge = Challenge("tok", "tok.k", "a.example.com", T0)
        calls = [
            lambda: store.check(),
            lambda: store.put_domain(make_domain("a.example.com")),
            lambda: store.add_domain(make_domain("a.example.com")),
            lambda: store.add_domain(make_domain("b.example.com")),
            lambda: store.get_domain("a.example.com"),
            lambda: store.update_domain("a.example.com", lambda r: r),
            lambda: store.update_domain("a.example.com", lambda r: attrs.evolve(r, attempts=5)),
            lambda: store.list_domains(),
            lambda: store.delete_domain("b.example.com"),
            lambda: store.put_certificate(certificate),
            lambda: store.get_certificate("a.example.com"),
            lambda: store.set_renewal_info("a.example.com", certificate.fingerprint, window),
            lambda: store.set_renewal_info("a.example.com", "0" * 64, window),
            lambda: store.list_certificates(),
            lambda: store.delete_certificate("a.example.com"),
            lambda: store.delete_certificate("a.example.com"),
            lambda: store.changes(None),
            lambda: store.changes(0),
            lambda: store.put_challenge(challenge),
            lambda: store.get_challenge("tok"),
            lambda: store.delete_challenge("tok"),
            lambda: store.delete_challenge("tok"),
            lambda: store.put_account(make_account("https://ca.example/dir")),
            lambda: store.get_account("https://ca.example/dir"),
            lambda: store.list_accounts(),
            lambda: store.acquire_lease("l", "node-a", T0 + timedelta(seconds=60), T0),
            lambda: store.acquire_lease("l", "node-b", T0 + timedelta(seconds=60), T0),
            lambda: store.release_lease("l", "node-b"),
            lambda: store.release_lease("l", "node-a"),
            lambda: store.reserve_order("ca", T0, timedelta(hours=1), 1),
            lambda: store.reserve_order("ca", T0, timedelta(hours=1), 1),
            lambda: store.reserve_order("other", T0, timedelta(hours=1), 1, take=False),
        ]
        for call in calls:
            d = call()
            self.assertIsInstance(d, Deferred)
            yield d
        failing = [
            lambda: store.get_domain("absent.example.com"),
            lambda: store.update_domain("absent.example.com", lambda r: r),
            lambda: store.delete_domain("absent.example.com"),
            lambda: store.get_certificate("absent.example.com"),
            lambda: store.get_challenge("absent"),
            lambda: store.get_account("https://absent.example/dir"),
        ]
        for call in failing:
            d = call()
            self.assertIsInstance(d, Deferred)
            yield self.assertFailure(d, KeyError)

    def test_watch_changes_returns_a_stopper(self):
        """watch_changes returns a function that stops it (pushing is optional: callers still poll)."""
        store = self.make_store()
        stop = store.watch_changes(lambda: None)
        self.assertTrue(callable(stop))
        stop()

    # -- challenges --------------------------------------------------------------------------------

    @inlineCallbacks
    def test_challenge_put_get_delete(self):
        """A challenge reads back by token until deleted; deleting again fires with None."""
        store = self.make_store()
        challenge = Challenge(
            token="LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
            key_authorization="LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
            hostname="jobs.acme-corp.com",
            created_at=T0,
        )
        yield self.assertFailure(store.get_challenge(challenge.token), KeyError)
        result = yield store.put_challenge(challenge)
        self.assertIsNone(result)
        got = yield store.get_challenge(challenge.token)
        self.assertEqual(got, challenge)
        result = yield store.delete_challenge(challenge.token)
        self.assertIsNone(result)
        yield self.assertFailure(store.get_challenge(challenge.token), KeyError)
        again = yield store.delete_challenge(challenge.token)
        self.assertIsNone(again)

    @inlineCallbacks
    def test_tls_alpn01_challenge_is_kept_by_hostname_with_its_type(self):
        """A TLS-ALPN-01 challenge stored under its hostname's key reads back with its type, beside an HTTP-01 one."""
        store = self.make_store()
        alpn = Challenge(
            token=tls_alpn01_key("jobs.acme-corp.com"),
            key_authorization="evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI",
            hostname="jobs.acme-corp.com",
            created_at=T0,
            challenge_type=TLS_ALPN_01,
        )
        http = attrs.evolve(alpn, token="evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", challenge_type=HTTP_01)
        yield store.put_challenge(alpn)
        yield store.put_challenge(http)
        got = yield store.get_challenge(tls_alpn01_key("jobs.acme-corp.com"))
        self.assertEqual(got, alpn)
        self.assertEqual(got.challenge_type, TLS_ALPN_01)
        self.assertEqual((yield store.get_challenge(http.token)).challenge_type, HTTP_01)
        yield self.assertFailure(store.get_challenge(tls_alpn01_key("other.acme-corp.com")), KeyError)
        yield store.delete_challenge(alpn.token)
        yield self.assertFailure(store.get_challenge(alpn.token), KeyError)
        self.assertEqual((yield store.get_challenge(http.token)), http)

    # -- accounts ------------------------------------------------------------------------------------

    @inlineCallbacks
    def test_list_accounts(self):
        """list_accounts gives every stored account, ordered by directory URL."""
        store = self.make_store()
        self.assertEqual((yield store.list_accounts()), [])
        b = make_account("https://b.example/dir", "https://b.example/acct/1")
        a = make_account("https://a.example/dir", "https://a.example/acct/1")
        yield store.put_account(b)
        yield store.put_account(a)
        self.assertEqual((yield store.list_accounts()), [a, b])

    @inlineCallbacks
    def test_account_per_directory(self):
        """Accounts are kept per directory URL and replaced by a later put for the same URL."""
        store = self.make_store()
        yield self.assertFailure(store.get_account("https://ca.example/dir"), KeyError)
        first = make_account("https://ca.example/dir", "https://ca.example/acct/1")
        second = make_account("https://other-ca.example/directory", "https://other-ca.example/acct/9")
        result = yield store.put_account(first)
        self.assertIsNone(result)
        yield store.put_account(second)
        got_first = yield store.get_account("https://ca.example/dir")
        got_second = yield store.get_account("https://other-ca.example/directory")
        self.assertEqual((got_first, got_second), (first, second))
        replacement = make_account("https://ca.example/dir", "https://ca.example/acct/2")
        yield store.put_account(replacement)
        got = yield store.get_account("https://ca.example/dir")
        self.assertEqual(got, replacement)

    # -- leases --------------------------------------------------------------------------------------

    @inlineCallbacks
    def test_lease_exclusive_until_expiry(self):
        """A held lease is denied to another holder until it expires, then granted."""
        store = self.make_store()
        name = "issue:jobs.acme-corp.com"
        ok = yield store.acquire_lease(name, "node-a", T0 + timedelta(seconds=60), T0)
        self.assertTrue(ok)
        ok = yield store.acquire_lease(name, "node-b", T0 + timedelta(seconds=90), T0 + timedelta(seconds=59))
        self.assertFalse(ok)
        ok = yield store.acquire_lease(name, "node-b", T0 + timedelta(seconds=120), T0 + timedelta(seconds=60))
        self.assertTrue(ok)
        ok = yield store.acquire_lease(name, "node-a", T0 + timedelta(seconds=180), T0 + timedelta(seconds=61))
        self.assertFalse(ok)

    @inlineCallbacks
    def test_lease_reentrant_extends(self):
        """The holder re-acquires its lease, which moves the expiry to the new time."""
        store = self.make_store()
        name = "renew"
        yield store.acquire_lease(name, "node-a", T0 + timedelta(seconds=60), T0)
        ok = yield store.acquire_lease(name, "node-a", T0 + timedelta(seconds=300), T0 + timedelta(seconds=30))
        self.assertTrue(ok)
        ok = yield store.acquire_lease(name, "node-b", T0 + timedelta(seconds=400), T0 + timedelta(seconds=120))
        self.assertFalse(ok)

    @inlineCallbacks
    def test_lease_release(self):
        """Release by a non-holder does nothing; release by the holder frees the lease."""
        store = self.make_store()
        name = "issue:a.example.com"
        yield store.acquire_lease(name, "node-a", T0 + timedelta(seconds=60), T0)
        result = yield store.release_lease(name, "node-b")
        self.assertIsNone(result)
        ok = yield store.acquire_lease(name, "node-b", T0 + timedelta(seconds=60), T0)
        self.assertFalse(ok)
        yield store.release_lease(name, "node-a")
        ok = yield store.acquire_lease(name, "node-b", T0 + timedelta(seconds=60), T0)
        self.assertTrue(ok)
        nothing = yield store.release_lease("never-held", "node-a")
        self.assertIsNone(nothing)

    @inlineCallbacks
    def test_leases_independent(self):
        """Leases with different names do not exclude each other."""
        store = self.make_store()
        first = yield store.acquire_lease("issue:a.example.com", "node-a", T0 + timedelta(seconds=60), T0)
        second = yield store.acquire_lease("issue:b.example.com", "node-b", T0 + timedelta(seconds=60), T0)
        self.assertEqual((first, second), (True, True))

    @inlineCallbacks
    def test_lease_seen_by_second_store(self):
        """A lease taken through one store is denied through another over the same data."""
        store = self.make_store()
        other = self._second()
        ok = yield store.acquire_lease("issue:a.example.com", "node-a", T0 + timedelta(seconds=60), T0)
        self.assertTrue(ok)
        ok = yield other.acquire_lease("issue:a.example.com", "node-b", T0 + timedelta(seconds=60), T0)
        self.assertFalse(ok)


__all__ = ["StoreContractTests", "T0", "make_account", "make_certificate", "make_domain", "shared_ca"]
