"""The IStore contract run against the SQL store: SQLite files, and the real PostgreSQL on this machine.

PostgreSQL tests create a database of their own (``jobhost_test_<random>``) on
127.0.0.1:5432 as user ``postgres`` (override with ``JOBHOST_TEST_POSTGRES``, a
libpq URL of a server where that user may create databases) and drop it
afterwards.  When no server answers they are skipped with the reason, except
under CI (``CI=true``), where a missing server is a failure: ``.ci/run`` starts it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from datetime import timedelta

import attrs
from store_contract import T0, StoreContractTests, make_account, make_certificate, make_domain
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, TestCase

from jobhost.certs import AriWindow
from jobhost.errors import BrokenRecord, StoreError
from jobhost.store import sql
from jobhost.store.records import ChangeKind, Challenge, DomainState
from jobhost.store.sql import CHANGES_KEPT, SCHEMA_VERSION, Engine, SqlStore

POSTGRES_URL = os.environ.get("JOBHOST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin_connection():
    import psycopg

    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            raise
        raise SkipTest(f"no PostgreSQL at {POSTGRES_URL}: {e}") from None


def create_database(case) -> str:
    """A fresh PostgreSQL database for ``case`` (dropped at cleanup); return its URL."""
    name = "jobhost_test_" + secrets.token_hex(6)
    with _admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with _admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    case.addCleanup(drop)
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{name}"


def execute(store: SqlStore, query: str, params=()):
    """Run ``query`` through ``store``'s pool, as another program writing the database would; fire with its rows."""

    def run(cursor):
        cursor.execute(store.engine.sql(query), params)
        return cursor.fetchall() if cursor.description else None

    return store.pool.runInteraction(run)


class Faults:
    """Makes ``store``'s next ``times`` database calls fail in the pool thread with ``make_error()``.

    The fault a dropped connection or a failing server causes, injected where the driver raises it.
    ``attempts`` counts the calls that reached the database thread.
    """

    def __init__(self, store: SqlStore, make_error, times: int):
        self.attempts = 0
        self.left = times
        run_interaction = store.pool.runInteraction

        def faulty_run(interaction, *args, **kwargs):
            def faulty(cursor, *a, **kw):
                self.attempts += 1
                if self.left > 0:
                    self.left -= 1
                    raise make_error()
                return interaction(cursor, *a, **kw)

            return run_interaction(faulty, *args, **kwargs)

        store.pool.runInteraction = faulty_run


class _SlowCursor:
    def __init__(self, cursor, fragment: str, seconds: float, paused: threading.Event):
        self._cursor, self._fragment, self._seconds, self._paused = cursor, fragment, seconds, paused

    def execute(self, query, *args):
        self._cursor.execute(query, *args)
        if self._fragment in query:
            self._paused.set()
            time.sleep(self._seconds)
        return self

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class SlowReads:
    """Makes ``store`` stall ``seconds`` after each query containing ``fragment``: a node pausing between its
    read and its write (a GC pause, a slow network), so another node's write lands in between.

    ``paused`` is set once the first such query has run.
    """

    def __init__(self, store: SqlStore, fragment: str, seconds: float = 0.8):
        self.paused = threading.Event()
        run_interaction = store.pool.runInteraction

        def slow_run(interaction, *args, **kwargs):
            def slow(cursor, *a, **kw):
                return interaction(_SlowCursor(cursor, fragment, seconds, self.paused), *a, **kw)

            return run_interaction(slow, *args, **kwargs)

        store.pool.runInteraction = slow_run

    async def wait(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        for _ in range(500):
            if self.paused.is_set():
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("the slow node never read")


class _FailingCursor:
    def __init__(self, cursor, fragment: str, make_error):
        self._cursor, self._fragment, self._make_error = cursor, fragment, make_error

    def execute(self, query, *args):
        if self._fragment in query:
            raise self._make_error()
        self._cursor.execute(query, *args)
        return self

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def fail_statements(store: SqlStore, fragment: str, make_error) -> None:
    """Make every statement of ``store`` containing ``fragment`` fail with ``make_error()`` (a full disk, a
    constraint the server enforces), after the statements before it in the transaction ran."""
    run_interaction = store.pool.runInteraction

    def failing_run(interaction, *args, **kwargs):
        def failing(cursor, *a, **kw):
            return interaction(_FailingCursor(cursor, fragment, make_error), *a, **kw)

        return run_interaction(failing, *args, **kwargs)

    store.pool.runInteraction = failing_run


def _log_texts(events, level: str) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e["log_level"].name == level]


class _SqlContract(StoreContractTests):
    counts_through_indexes = True

    def make_engine(self) -> Engine:
        raise NotImplementedError

    def statement_error(self) -> Exception:
        """An error the driver raises for a statement (not a lost connection: it is not retried)."""
        raise NotImplementedError

    def _store(self) -> SqlStore:
        store = SqlStore.create(self.engine)
        self.addCleanup(store.close)
        return store

    def make_store(self):
        self.engine = self.make_engine()
        return self._store()

    def make_second_store(self):
        return self._store()

    def make_interfering_store(self):
        return None  # one transaction holds the row from read to write: see the race tests below

    def test_update_domain_loses_no_update_between_pools(self):
        """Four pools incrementing their own counter in one record (20 times each) lose no increment."""
        stores = [self.make_store()] + [self.make_second_store() for _ in range(3)]

        async def bump_many(store, writer):
            def bump(record):
                page = dict(record.page or {})
                page[writer] = page.get(writer, 0) + 1
                return attrs.evolve(record, page=page)

            for _ in range(20):
                await store.update_domain("race.example.com", bump)

        async def run():
            await stores[0].add_domain(make_domain("race.example.com", page={}, version=0))
            await gatherResults([ensureDeferred(bump_many(s, f"w{i}")) for i, s in enumerate(stores)])
            return await stores[0].get_domain("race.example.com")

        def check(record):
            self.assertEqual(record.page, {f"w{i}": 20 for i in range(4)})
            self.assertEqual(record.version, 80)

        return ensureDeferred(run()).addCallback(check)

    async def test_newer_schema_is_refused(self):
        """A schema newer than the code is refused with a StoreError naming both versions."""
        store = self.make_store()
        await store.open()

        def bump(cursor):
            cursor.execute("UPDATE jobhost_schema SET version = 99 WHERE id = 1")

        await store.pool.runInteraction(bump)
        newer = self.make_second_store()
        failure = await self.assertFailure(newer.open(), StoreError)
        self.assertIn("99", str(failure))
        self.assertIn(str(SCHEMA_VERSION), str(failure))

    async def test_check_fails_when_the_schema_row_is_gone(self):
        """check() fails with StoreError once the schema row it opened is deleted."""
        store = self.make_store()
        self.assertIs(await store.check(), True)
        await store.pool.runInteraction(lambda cursor: cursor.execute("DELETE FROM jobhost_schema"))
        await self.assertFailure(store.check(), StoreError)

    # -- rows that cannot be used ----------------------------------------------------------

    async def test_an_unreadable_domain_row_is_a_broken_record_and_listed_only_on_request(self):
        """A domain row whose JSON does not parse fails get_domain with BrokenRecord naming it, is skipped
        (and logged) by a listing, listed in its place with include_broken, and never with a state filter."""
        store = self.make_store()
        for hostname in ("a.example.com", "b.example.com", "c.example.com"):
            await store.put_domain(make_domain(hostname))
        await execute(store, "UPDATE domains SET doc = ? WHERE hostname = ?", ("{not json", "b.example.com"))
        broken = await self.assertFailure(store.get_domain("b.example.com"), BrokenRecord)
        self.assertEqual(broken.key, "b.example.com")
        self.assertIn("the domain row for 'b.example.com' cannot be used", str(broken))
        self.assertTrue(broken.reason.startswith("JSONDecodeError: "), broken.reason)
        with capturedLogs() as events:
            listed = await store.list_domains()
        self.assertEqual([r.hostname for r in listed], ["a.example.com", "c.example.com"])
        errors = _log_texts(events, "error")
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("b.example.com", errors[0])
        with capturedLogs() as events:
            everything = await store.list_domains(include_broken=True)
        self.assertEqual([type(r).__name__ for r in everything], ["DomainRecord", "BrokenRecord", "DomainRecord"])
        self.assertEqual(everything[1].key, "b.example.com")
        self.assertEqual(_log_texts(events, "error"), [])
        pending = await store.list_domains(state=DomainState.PENDING, include_broken=True)
        self.assertEqual([r.hostname for r in pending], ["a.example.com", "c.example.com"])

    async def test_a_row_holding_another_hostnames_record_is_broken(self):
        """A row whose record names another hostname than its key is a BrokenRecord saying what it holds."""
        store = self.make_store()
        await store.put_domain(make_domain("a.example.com"))
        await execute(store, "UPDATE domains SET hostname = ? WHERE hostname = ?", ("z.example.com", "a.example.com"))
        broken = await self.assertFailure(store.get_domain("z.example.com"), BrokenRecord)
        self.assertEqual(broken.reason, "ValueError: it holds hostname 'a.example.com'")

    async def test_a_certificate_row_that_does_not_verify_is_broken_and_can_be_replaced(self):
        """A certificate row whose key does not match its certificate is a BrokenRecord with the certificate's
        own explanation; listed in its place on request; a put replaces it and is on the feed."""
        store = self.make_store()
        first = make_certificate("a.example.com")
        other = make_certificate("b.example.com")
        await store.put_certificate(first)
        await store.put_certificate(other)
        doc = json.loads((await execute(store, "SELECT doc FROM certificates WHERE hostname = ?", ("a.example.com",)))[0][0])
        doc["key_pem"] = other.key_pem.decode() if isinstance(other.key_pem, bytes) else other.key_pem
        await execute(store, "UPDATE certificates SET doc = ? WHERE hostname = ?", (json.dumps(doc), "a.example.com"))
        broken = await self.assertFailure(store.get_certificate("a.example.com"), BrokenRecord)
        self.assertIn("the certificate row for 'a.example.com' cannot be used", str(broken))
        self.assertTrue(broken.reason.startswith("invalid certificate material: "), broken.reason)
        listed = await store.list_certificates(include_broken=True)
        self.assertEqual([type(r).__name__ for r in listed], ["BrokenRecord", "CertificateRecord"])
        self.assertEqual(await store.list_certificates(), [other])
        cursor, _ = await store.changes(None)
        await store.put_certificate(first)
        self.assertEqual(await store.get_certificate("a.example.com"), first)
        _, changed = await store.changes(cursor)
        self.assertEqual(dict(changed), {"a.example.com": frozenset({ChangeKind.CERTIFICATE})})

    async def test_a_broken_domain_row_can_be_replaced_or_deleted(self):
        """put_domain overwrites a broken domain row and delete_domain removes one; both are on the feed."""
        store = self.make_store()
        for hostname in ("a.example.com", "b.example.com"):
            await store.put_domain(make_domain(hostname))
            await execute(store, "UPDATE domains SET doc = ? WHERE hostname = ?", ("[]", hostname))
        cursor, _ = await store.changes(None)
        await store.put_domain(make_domain("a.example.com"))
        self.assertEqual(await store.get_domain("a.example.com"), make_domain("a.example.com"))
        await store.delete_domain("b.example.com")
        await self.assertFailure(store.get_domain("b.example.com"), KeyError)
        _, changed = await store.changes(cursor)
        self.assertEqual(set(changed), {"a.example.com", "b.example.com"})

    async def test_broken_account_and_challenge_rows(self):
        """An unreadable account or challenge row is a BrokenRecord; list_accounts skips it and logs why."""
        store = self.make_store()
        good = make_account("https://a.example/dir")
        await store.put_account(good)
        await store.put_account(make_account("https://b.example/dir"))
        await store.put_challenge(Challenge("tok_en-1", "tok_en-1.thumb", "a.example.com", T0))
        await execute(store, "UPDATE accounts SET doc = ? WHERE directory_url = ?", ("{}", "https://b.example/dir"))
        await execute(store, "UPDATE challenges SET doc = ?", ("{}",))
        broken = await self.assertFailure(store.get_account("https://b.example/dir"), BrokenRecord)
        self.assertIn("the account row for 'https://b.example/dir'", str(broken))
        broken = await self.assertFailure(store.get_challenge("tok_en-1"), BrokenRecord)
        self.assertIn("the challenge row for 'tok_en-1'", str(broken))
        with capturedLogs() as events:
            self.assertEqual(await store.list_accounts(), [good])
        errors = _log_texts(events, "error")
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("https://b.example/dir", errors[0])

    # -- another node writing between a read and a write ---------------------------------------

    async def _race(self, fragment, slow_call, other_call, store=None):
        """Run ``slow_call(store)`` on a node that stalls after reading ``fragment``; while it stalls, run
        ``other_call(other)`` on another node; fire with both results."""
        store = store or self.make_store()
        other = self.make_second_store()
        await gatherResults([store.open(), other.open()])
        slow = SlowReads(store, fragment)
        first = slow_call(store)
        await slow.wait()
        second = other_call(other)
        return await gatherResults([first, second])

    async def test_a_lease_is_not_granted_twice_to_nodes_asking_at_once(self):
        """Two nodes asking for a free lease at once: the one that asked second is refused."""
        until = T0 + timedelta(seconds=60)
        results = await self._race(
            "FROM leases",
            lambda store: store.acquire_lease("issue:a.example.com", "node-a", until, T0),
            lambda other: other.acquire_lease("issue:a.example.com", "node-b", until, T0),
        )
        self.assertEqual(results, [True, False])

    async def test_the_order_budget_is_not_overspent_by_nodes_reserving_at_once(self):
        """Two nodes reserving the last slot of a budget at once: one gets it, the other is told when it frees."""
        window = timedelta(hours=3)
        results = await self._race(
            "SELECT taken_at FROM order_slots",
            lambda store: store.reserve_order("ca", T0, window, 1),
            lambda other: other.reserve_order("ca", T0 + timedelta(seconds=1), window, 1),
        )
        self.assertEqual(results, [None, T0 + window])

    async def test_a_renewal_window_never_brings_back_a_certificate_replaced_meanwhile(self):
        """A renewal window being stored for certificate A while another node stores certificate B: B stays."""
        old, new = make_certificate("ari.example.com"), make_certificate("ari.example.com")
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        store = self.make_store()
        await store.put_certificate(old)
        results = await self._race(
            "FROM certificates",
            lambda store: store.set_renewal_info("ari.example.com", old.fingerprint, window),
            lambda other: other.put_certificate(new),
            store,
        )
        self.assertEqual(results, [True, None])
        self.assertEqual(await store.get_certificate("ari.example.com"), new)

    async def test_a_renewal_window_never_brings_back_a_certificate_deleted_meanwhile(self):
        """A renewal window being stored while another node deletes the certificate: it stays deleted."""
        old = make_certificate("ari.example.com")
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        store = self.make_store()
        await store.put_certificate(old)
        await self._race(
            "FROM certificates",
            lambda store: store.set_renewal_info("ari.example.com", old.fingerprint, window),
            lambda other: other.delete_certificate("ari.example.com"),
            store,
        )
        await self.assertFailure(store.get_certificate("ari.example.com"), KeyError)

    async def test_a_certificate_stored_while_a_renewal_window_is_stored_is_kept(self):
        """A certificate being stored while another node stores a renewal window for the old one: the new
        certificate is what stays."""
        old, new = make_certificate("ari.example.com"), make_certificate("ari.example.com")
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        store = self.make_store()
        await store.put_certificate(old)
        results = await self._race(
            "FROM certificates",
            lambda store: store.put_certificate(new),
            lambda other: other.set_renewal_info("ari.example.com", old.fingerprint, window),
            store,
        )
        self.assertEqual(results, [None, False])
        self.assertEqual(await store.get_certificate("ari.example.com"), new)

    async def test_registrations_racing_each_other_create_one_record(self):
        """Two nodes registering one new hostname at once: one creates it, the other fires with that record and
        False, and the feed reports one change."""
        first, second = make_domain("race.example.com", DomainState.PENDING), make_domain("race.example.com", DomainState.ACTIVE)
        store = self.make_store()
        cursor, _ = await store.changes(None)
        results = await self._race(
            "FROM domains",
            lambda store: store.add_domain(first),
            lambda other: other.add_domain(second),
            store,
        )
        created = [record for record, was_created in results if was_created]
        self.assertEqual(len(created), 1, results)
        self.assertIn(created[0], (first, second))
        self.assertEqual([record for record, _ in results], created * 2)
        self.assertEqual(await store.get_domain("race.example.com"), created[0])
        self.assertEqual(await execute(store, "SELECT COUNT(*) FROM changes WHERE id > ?", (cursor,)), [(1,)])

    async def test_a_write_whose_change_cannot_be_recorded_changes_nothing(self):
        """When recording a change on the feed fails, the write it belongs to fails with StoreError and changes
        nothing: every write and its feed entry are one transaction."""
        store = self.make_store()
        old = make_certificate("c.example.com")
        await store.put_domain(make_domain("a.example.com"))
        await store.put_domain(make_domain("b.example.com"))
        await store.put_certificate(old)
        before = (await store.list_domains(), await store.list_certificates(), await store.changes(0))
        fail_statements(store, "INSERT INTO changes", self.statement_error)
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        for write in (
            lambda: store.add_domain(make_domain("new.example.com")),
            lambda: store.put_domain(make_domain("a.example.com", DomainState.ACTIVE)),
            lambda: store.update_domain("a.example.com", lambda r: attrs.evolve(r, attempts=9)),
            lambda: store.delete_domain("b.example.com"),
            lambda: store.put_certificate(make_certificate("c.example.com")),
            lambda: store.set_renewal_info("c.example.com", old.fingerprint, window),
            lambda: store.delete_certificate("c.example.com"),
        ):
            await self.assertFailure(write(), StoreError)
        after = (await store.list_domains(), await store.list_certificates(), await store.changes(0))
        self.assertEqual(after, before)

    # -- the table's own columns ----------------------------------------------------------------

    async def test_the_columns_beside_the_document_mirror_the_record(self):
        """The state, next-attempt and expiry columns (for indexes and operators' SQL) hold the record's values,
        times as Unix seconds, NULL for no next attempt."""
        store = self.make_store()
        await store.put_domain(make_domain("a.example.com", DomainState.FAILING))
        await store.add_domain(make_domain("b.example.com", next_attempt=None))
        await store.update_domain("a.example.com", lambda r: attrs.evolve(r, next_attempt=T0 + timedelta(hours=1)))
        certificate = make_certificate("a.example.com")
        await store.put_certificate(certificate)
        rows = await execute(store, "SELECT hostname, state, next_attempt, version FROM domains ORDER BY hostname")
        self.assertEqual(rows, [
            ("a.example.com", DomainState.FAILING, (T0 + timedelta(hours=1)).timestamp(), 1),
            ("b.example.com", DomainState.PENDING, None, 0),
        ])
        self.assertEqual(await store.get_domain("b.example.com"), make_domain("b.example.com", next_attempt=None))
        rows = await execute(store, "SELECT not_after, fingerprint FROM certificates")
        self.assertEqual(rows, [(certificate.not_after.timestamp(), certificate.fingerprint)])

    def test_repr_names_the_database_only(self):
        """A store's repr (in logs and tracebacks) is its engine: no pool, lock or reactor internals."""
        store = self.make_store()
        self.assertEqual(repr(store), f"SqlStore(engine={store.engine!r})")
        self.assertNotIn("pool_args", repr(store.engine))

    # -- listing, updating and the change feed ------------------------------------------------

    async def test_a_limit_of_zero_or_less_lists_nothing(self):
        """limit=0 or a negative limit gives an empty list (a negative LIMIT means "all" to SQLite)."""
        store = self.make_store()
        await store.put_domain(make_domain("a.example.com"))
        await store.put_certificate(make_certificate("a.example.com"))
        for limit in (0, -1):
            self.assertEqual(await store.list_domains(limit=limit), [])
            self.assertEqual(await store.list_certificates(limit=limit), [])
        self.assertEqual(len(await store.list_domains(limit=1)), 1)

    async def test_update_domain_returning_an_equal_copy_writes_nothing(self):
        """A change returning a new but equal record writes nothing: same version, nothing on the feed."""
        store = self.make_store()
        await store.add_domain(make_domain("same.example.com"))
        cursor, _ = await store.changes(None)
        got = await store.update_domain("same.example.com", lambda r: attrs.evolve(r))
        self.assertEqual(got.version, 0)
        self.assertEqual((await store.get_domain("same.example.com")).version, 0)
        _, changed = await store.changes(cursor)
        self.assertEqual(dict(changed), {})

    async def test_update_domain_refuses_a_record_for_another_hostname(self):
        """A change that returns another hostname's record fails with StoreError and writes nothing."""
        store = self.make_store()
        await store.add_domain(make_domain("a.example.com"))
        failure = await self.assertFailure(
            store.update_domain("a.example.com", lambda r: attrs.evolve(r, hostname="b.example.com")), StoreError
        )
        self.assertIn("'b.example.com'", str(failure))
        self.assertEqual(await store.get_domain("a.example.com"), make_domain("a.example.com"))
        await self.assertFailure(store.get_domain("b.example.com"), KeyError)

    async def test_records_under_a_hostname_that_is_not_normalised_are_refused(self):
        """add_domain, put_domain and put_certificate refuse a record keyed by a non-normalised hostname."""
        store = self.make_store()
        record = make_domain("Upper.Example.com")
        for d in (store.add_domain(record), store.put_domain(record)):
            failure = await self.assertFailure(d, StoreError)
            self.assertIn("not a normalised hostname", str(failure))
        certificate = attrs.evolve(make_certificate("a.example.com"), hostname="A.example.com")
        await self.assertFailure(store.put_certificate(certificate), StoreError)
        self.assertEqual(await store.list_domains(), [])
        self.assertEqual(await store.list_certificates(), [])

    async def test_putting_a_domain_record_unchanged_is_still_on_the_feed(self):
        """put_domain of the very record stored is reported (STATE), so a copy tool's rewrite reaches every cache."""
        store = self.make_store()
        await store.put_domain(make_domain("a.example.com"))
        cursor, _ = await store.changes(None)
        await store.put_domain(make_domain("a.example.com"))
        cursor, changed = await store.changes(cursor)
        self.assertEqual(dict(changed), {"a.example.com": frozenset({ChangeKind.STATE})})
        await store.put_domain(make_domain("a.example.com", page={"title": "new"}))
        _, changed = await store.changes(cursor)
        self.assertEqual(dict(changed), {"a.example.com": frozenset({ChangeKind.PAGE})})

    async def test_deleting_an_absent_certificate_is_not_on_the_feed(self):
        """delete_certificate of a hostname with no certificate reports no change."""
        store = self.make_store()
        cursor, _ = await store.changes(None)
        await store.delete_certificate("absent.example.com")
        self.assertEqual(await store.changes(cursor), (cursor, {}))

    async def test_a_cursor_the_feed_never_gave_means_everything_changed(self):
        """A cursor past the feed's end (another database's, or from before a restore) fires None."""
        store = self.make_store()
        await store.put_certificate(make_certificate("a.example.com"))
        cursor, _ = await store.changes(None)
        self.assertEqual(await store.changes(cursor + 1), (cursor, None))
        self.assertEqual(await store.changes(cursor - 1), (cursor, {"a.example.com": frozenset({ChangeKind.CERTIFICATE})}))

    async def test_a_change_kind_this_version_does_not_know_counts_as_every_kind(self):
        """A feed row with a kind from a newer jobhost makes readers drop everything for that hostname."""
        store = self.make_store()
        cursor, _ = await store.changes(None)
        await execute(store, "INSERT INTO changes (hostname, kinds) VALUES (?, ?)", ("a.example.com", "state,quota"))
        await execute(store, "INSERT INTO changes (hostname, kinds) VALUES (?, ?)", ("b.example.com", "state"))
        await execute(store, "INSERT INTO changes (hostname, kinds) VALUES (?, ?)", ("b.example.com", "page"))
        _, changed = await store.changes(cursor)
        self.assertEqual(
            dict(changed),
            {"a.example.com": ChangeKind.ALL, "b.example.com": frozenset({ChangeKind.STATE, ChangeKind.PAGE})},
        )

    async def test_the_feed_keeps_the_newest_changes_and_calls_older_cursors_unknown(self):
        """Once the feed passes CHANGES_KEPT rows (checked every 1,000th change) the oldest are deleted; a cursor
        from the deleted part fires None, one at its edge or later still reads the changes after it."""
        store = self.make_store()
        await store.open()
        # A long-running store: 100,999 changes already recorded.
        history = CHANGES_KEPT + 999
        if store.engine.name == "sqlite":
            fill = ("INSERT INTO changes (hostname, kinds) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                    "SELECT i + 1 FROM n WHERE i < ?) SELECT 'old.example.com', 'state' FROM n")
        else:
            fill = "INSERT INTO changes (hostname, kinds) SELECT 'old.example.com', 'state' FROM generate_series(1, ?)"
        await execute(store, fill, (history,))
        self.assertEqual(await store.changes(0), (history, {"old.example.com": frozenset({ChangeKind.STATE})}))
        await store.put_certificate(make_certificate("new.example.com"))  # change 101,000
        end = history + 1
        floor = end - CHANGES_KEPT
        self.assertEqual(await execute(store, "SELECT COUNT(*), MIN(id) FROM changes"), [(CHANGES_KEPT, floor + 1)])
        self.assertEqual(await store.changes(0), (end, None))
        self.assertEqual(await store.changes(floor - 1), (end, None))
        expected = {"old.example.com": frozenset({ChangeKind.STATE}), "new.example.com": frozenset({ChangeKind.CERTIFICATE})}
        self.assertEqual(await store.changes(floor), (end, expected))
        await store.put_certificate(make_certificate("newer.example.com"))  # change 101,001: nothing pruned
        self.assertEqual(await execute(store, "SELECT COUNT(*) FROM changes"), [(CHANGES_KEPT + 1,)])
        _, changed = await store.changes(floor)
        self.assertEqual(set(changed), {"old.example.com", "new.example.com", "newer.example.com"})

    # -- the schema ---------------------------------------------------------------------------

    async def test_an_older_schema_is_migrated_forward_once_keeping_the_data(self):
        """Opened by a jobhost whose schema is one version newer, the store runs that migration once, records
        the new version, logs it, and keeps its id and records."""
        store = self.make_store()
        store_id = await store.open()
        await store.put_domain(make_domain("kept.example.com"))
        self.patch(sql, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        self.patch(sql, "MIGRATIONS", {**sql.MIGRATIONS, SCHEMA_VERSION + 1: (
            "CREATE TABLE notes (hostname {key_text} PRIMARY KEY, note TEXT)",
        )})
        newer = self.make_second_store()
        with capturedLogs() as events:
            self.assertEqual(await newer.open(), store_id)
        migrated = [e for e in events if "migrated" in e.get("log_format", "")]
        self.assertEqual(len(migrated), 1, migrated)
        self.assertIn(f"version {SCHEMA_VERSION + 1}", _log_texts(migrated, "info")[0])
        self.assertEqual(await execute(newer, "SELECT version FROM jobhost_schema"), [(SCHEMA_VERSION + 1,)])
        await execute(newer, "INSERT INTO notes (hostname, note) VALUES (?, ?)", ("kept.example.com", "hi"))
        again = self.make_second_store()
        with capturedLogs() as events:
            self.assertEqual(await again.open(), store_id)
        self.assertEqual([e for e in events if "migrated" in e.get("log_format", "")], [])
        self.assertEqual(await again.get_domain("kept.example.com"), make_domain("kept.example.com"))

    async def test_migrate_now_creates_the_schema_once_before_the_reactor_runs(self):
        """migrate_now (blocking, its own connection) creates the schema and fires the id every pool then reads."""
        store = self.make_store()
        store_id = store.migrate_now()
        self.assertEqual(len(store_id), 32)
        self.assertEqual(store.migrate_now(), store_id)
        other = self.make_second_store()
        self.assertEqual(await other.open(), store_id)
        self.assertIs(await store.check(), True)

    async def test_migrate_now_refuses_a_newer_schema_and_changes_nothing(self):
        """migrate_now on a schema newer than the code raises StoreError naming the database and both versions."""
        store = self.make_store()
        await store.open()
        await execute(store, "UPDATE jobhost_schema SET version = 99 WHERE id = 1")
        with self.assertRaises(StoreError) as caught:
            self.make_second_store().migrate_now()
        self.assertIn(self.engine.description, str(caught.exception))
        self.assertIn(f"schema is version 99, newer than this jobhost understands ({SCHEMA_VERSION})",
                      str(caught.exception))
        self.assertEqual(await execute(store, "SELECT version FROM jobhost_schema"), [(99,)])

    async def test_a_database_it_cannot_use_is_one_store_error(self):
        """A database holding another program's jobhost_schema table: migrate_now and open() fail with one
        StoreError line naming the database and the driver's error, and nothing is created."""
        store = self.make_store()
        await execute(store, "CREATE TABLE jobhost_schema (id INTEGER PRIMARY KEY, name TEXT)")
        with self.assertRaises(StoreError) as caught:
            store.migrate_now()
        message = str(caught.exception)
        self.assertIn(self.engine.description + ": ", message)
        self.assertIn("version", message)
        self.assertNotIn("\n", message)
        failure = await self.assertFailure(store.open(), StoreError)
        self.assertIn(self.engine.description + ": ", str(failure))
        await self.assertFailure(execute(store, "SELECT 1 FROM domains"), Exception)

    async def test_database_errors_are_store_errors_naming_the_database(self):
        """A query the database refuses (here: a table dropped under the store) fails with StoreError naming
        the database and the driver's error; a missing record is still KeyError."""
        store = self.make_store()
        await store.open()
        await self.assertFailure(store.get_domain("a.example.com"), KeyError)
        await execute(store, "DROP TABLE domains")
        for d in (store.get_domain("a.example.com"), store.list_domains()):
            failure = await self.assertFailure(d, StoreError)
            self.assertTrue(str(failure).startswith(f"store error: {self.engine.description}: "), str(failure))
            self.assertIn("domains", str(failure))

    async def test_check_fails_when_the_schema_row_was_replaced(self):
        """check() fails once the schema row names another store (the database was restored from another one)."""
        store = self.make_store()
        await store.open()
        await execute(store, "UPDATE jobhost_schema SET store_id = ?", ("0" * 32,))
        failure = await self.assertFailure(store.check(), StoreError)
        self.assertIn("missing or was replaced", str(failure))

    async def test_a_store_given_a_reactor_creates_its_schema_when_the_reactor_runs(self):
        """SqlStore.create(engine, reactor) opens (creates the schema) by itself once the reactor runs."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        self.engine = self.make_engine()
        reader = self._store()
        store = SqlStore.create(self.engine, reactor)
        self.addCleanup(store.close)
        rows = []
        for _ in range(250):
            try:
                rows = await execute(reader, "SELECT store_id FROM jobhost_schema")
                break
            except Exception:  # not created yet
                await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len(rows), 1)
        self.assertEqual(await store.open(), rows[0][0])


class SqliteStoreContractTests(_SqlContract, TestCase):
    """The SQL store on an SQLite file keeps the IStore contract, also across two pools on one file."""

    def make_engine(self):
        directory = tempfile.mkdtemp(prefix="jobhost-sqlite-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        return Engine.sqlite(os.path.join(directory, "jobhost.db"))

    def statement_error(self):
        import sqlite3

        return sqlite3.OperationalError("disk I/O error")

    async def test_the_database_file_is_in_wal_mode(self):
        """The store puts its file in WAL mode (readers never wait for the writer; commits survive a crash)."""
        import sqlite3

        store = self.make_store()
        await store.open()
        path = self.engine.pool_args[1][0]
        with sqlite3.connect(path) as connection:
            self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone(), ("wal",))

    def test_migrate_now_puts_a_new_file_in_wal_mode(self):
        """migrate_now, the first to open a new file, leaves it in WAL mode as the pool would."""
        import sqlite3

        store = self.make_store()
        store.migrate_now()
        with sqlite3.connect(self.engine.pool_args[1][0]) as connection:
            self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone(), ("wal",))

    def test_migrate_now_names_a_file_it_cannot_open(self):
        """migrate_now on a file in a missing directory raises one StoreError line naming the file."""
        store = SqlStore.create(Engine.sqlite("/nonexistent/jobhost.db"))
        self.addCleanup(store.close)
        with self.assertRaises(StoreError) as caught:
            store.migrate_now()
        self.assertEqual(
            str(caught.exception),
            "store error: cannot connect to sqlite:/nonexistent/jobhost.db: OperationalError: unable to open database file",
        )

    def test_migrate_now_on_a_file_that_is_not_a_database_is_a_store_error(self):
        """A file that is not an SQLite database (a typo in the URL naming some other file) is one StoreError."""
        store = self.make_store()
        path = self.engine.pool_args[1][0]
        with open(path, "wb") as f:
            f.write(b"this is not an SQLite database, it is someone's notes\n" * 100)
        with self.assertRaises(StoreError) as caught:
            store.migrate_now()
        self.assertIn(f"sqlite:{path}: DatabaseError: file is not a database", str(caught.exception))

    async def test_a_store_that_cannot_open_at_start_logs_why(self):
        """A store given a reactor that cannot create its schema logs one error naming the database and cause."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        with capturedLogs() as events:
            store = SqlStore.create(Engine.sqlite("/nonexistent/jobhost.db"), reactor)
            self.addCleanup(store.close)
            for _ in range(250):
                if _log_texts(events, "error"):
                    break
                await deferLater(reactor, 0.02, lambda: None)
        errors = _log_texts(events, "error")
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("Cannot open the store sqlite:/nonexistent/jobhost.db: ", errors[0])
        self.assertIn("unable to open database file", errors[0])

    async def test_a_database_error_is_not_retried(self):
        """On SQLite nothing is a dropped connection: a failed call fails once, as StoreError."""
        import sqlite3

        store = self.make_store()
        await store.open()
        faults = Faults(store, lambda: sqlite3.OperationalError("database is locked"), times=1)
        failure = await self.assertFailure(store.list_domains(), StoreError)
        self.assertEqual(str(failure), f"store error: {self.engine.description}: OperationalError: database is locked")
        self.assertEqual(faults.attempts, 1)

    async def test_watch_changes_starts_nothing(self):
        """SQLite pushes nothing: watch_changes neither calls back nor complains, even after a change."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        store = self.make_store()
        calls = []
        with capturedLogs() as events:
            stop = store.watch_changes(lambda: calls.append(1))
            await store.put_certificate(make_certificate("a.example.com"))
            await deferLater(reactor, 0.3, lambda: None)
            stop()
        self.assertEqual(calls, [])
        self.assertEqual(_log_texts(events, "warn"), [])


class PostgresStoreContractTests(_SqlContract, TestCase):
    """The SQL store on the real PostgreSQL keeps the IStore contract, also across pools (nodes)."""

    def make_engine(self):
        url = create_database(self)
        return Engine.postgresql(url, url)

    def statement_error(self):
        import psycopg

        return psycopg.errors.CheckViolation("new row violates a check constraint")

    async def test_shutting_down_its_reactor_ends_the_stores_connections(self):
        """A store built for a reactor closes its connections when that reactor shuts down."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        self.engine = self.make_engine()
        shutdown = []

        class Reactor:
            """The running reactor, with its shutdown (what a store asked to do then) run by this test."""

            def addSystemEventTrigger(self, phase, event, f, *args, **kwargs):
                shutdown.append((f, args, kwargs))
                return len(shutdown) - 1

            def removeSystemEventTrigger(self, trigger_id):
                shutdown[trigger_id] = None

            def callWhenRunning(self, f, *args, **kwargs):
                return f(*args, **kwargs)

            def __getattr__(self, name):
                return getattr(reactor, name)

        store = SqlStore.create(self.engine, Reactor())
        await gatherResults([store.list_domains() for _ in range(4)])
        self.assertGreaterEqual(self._connections(), 1)
        for trigger in shutdown:
            if trigger is not None:
                f, args, kwargs = trigger
                f(*args, **kwargs)
        for _ in range(100):
            if self._connections() == 0:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self._connections(), 0)

    async def test_connections_the_server_dropped_cost_no_failed_call(self):
        """After the server ends every pooled connection (as a restart does), the next calls all succeed."""
        store = self.make_store()
        await store.open()
        # Several pool threads, so several connections exist.
        await gatherResults([store.list_domains() for _ in range(8)])
        database = self.engine.description.rsplit("/", 1)[1]
        with _admin_connection() as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchone()[0]
        self.assertGreaterEqual(ended, 2)
        for _ in range(8):
            self.assertEqual(await store.list_domains(), [])
        # adbapi itself logs each dead connection's failed rollback ("Rollback failed").
        import psycopg
        from twisted.enterprise.adbapi import ConnectionLost

        self.flushLoggedErrors(ConnectionLost, psycopg.OperationalError)

    async def test_a_change_by_another_node_is_pushed_within_a_second(self):
        """A certificate stored through another pool (node) calls the watcher within a second, then stops."""
        import time

        from store_contract import make_certificate
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        store = self.make_store()
        other = self.make_second_store()
        await store.open()
        calls = []
        stop = store.watch_changes(lambda: calls.append(time.monotonic()))
        self.addCleanup(stop)
        await deferLater(reactor, 0.3, lambda: None)  # the listener is connected
        written = time.monotonic()
        await other.put_certificate(make_certificate("pushed.example.com"))
        for _ in range(100):
            if calls:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(calls, "no push within a second")
        self.assertLess(calls[0] - written, 1.0)
        stop()
        await deferLater(reactor, 0.8, lambda: None)  # the thread sees the stop within its 0.5 s wait
        before = len(calls)
        await other.put_certificate(make_certificate("after-stop.example.com"))
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(len(calls), before, "a stopped watcher is not called")

    # -- dropped connections ------------------------------------------------------------------

    async def test_a_call_is_tried_again_once_per_pooled_connection(self):
        """A call that meets a dropped connection is tried again, up to once per pooled connection (4): four
        drops in a row cost nothing, a fifth fails the call with StoreError naming the database."""
        import psycopg

        store = self.make_store()
        await store.open()
        message = ("server closed the connection unexpectedly\n\tThis probably means the server terminated "
                   "abnormally\n\tbefore or while processing the request.\n")  # libpq's, newlines included
        lost = lambda: psycopg.OperationalError(message)  # noqa: E731
        faults = Faults(store, lost, times=4)
        self.assertEqual(await store.list_domains(), [])
        self.assertEqual(faults.attempts, 5)
        faults = Faults(store, lost, times=5)
        failure = await self.assertFailure(store.list_domains(), StoreError)
        self.assertEqual(faults.attempts, 5)
        self.assertEqual(str(failure), f"store error: {self.engine.description}: OperationalError: {message.strip()}")

    async def test_a_connection_adbapi_gave_up_on_is_tried_again(self):
        """adbapi's ConnectionLost (its rollback on a dead connection failed) is retried like a driver error,
        and once every retry met one, the call fails with StoreError like any other database failure."""
        from twisted.enterprise.adbapi import ConnectionLost

        store = self.make_store()
        await store.open()
        faults = Faults(store, ConnectionLost, times=2)
        await store.put_domain(make_domain("a.example.com"))
        self.assertEqual(faults.attempts, 3)
        self.assertEqual(await store.get_domain("a.example.com"), make_domain("a.example.com"))
        faults = Faults(store, ConnectionLost, times=5)
        failure = await self.assertFailure(store.get_domain("a.example.com"), StoreError)
        self.assertEqual(str(failure), f"store error: {self.engine.description}: ConnectionLost:")

    async def test_an_error_of_the_query_itself_is_not_retried(self):
        """A database error that is not a lost connection fails the call at once, as StoreError."""
        import psycopg

        store = self.make_store()
        await store.open()
        faults = Faults(store, lambda: psycopg.errors.UniqueViolation("duplicate key"), times=1)
        failure = await self.assertFailure(store.list_domains(), StoreError)
        self.assertEqual(faults.attempts, 1)
        self.assertIn("UniqueViolation: duplicate key", str(failure))

    def test_migrate_now_names_a_database_it_cannot_reach_in_one_line(self):
        """migrate_now on a database that does not exist raises one StoreError line naming the database."""
        url = POSTGRES_URL.rpartition("/")[0] + "/jobhost_test_absent"
        store = SqlStore.create(Engine.postgresql(url, "postgresql://db/absent"))
        self.addCleanup(store.close)
        with self.assertRaises(StoreError) as caught:
            store.migrate_now()
        message = str(caught.exception)
        self.assertTrue(message.startswith("store error: cannot connect to postgresql://db/absent: OperationalError: "),
                        message)
        self.assertIn('"jobhost_test_absent" does not exist', message)
        self.assertNotIn("\n", message)

    async def test_a_read_never_waits_for_a_node_holding_the_row(self):
        """While another node holds a domain row locked for its update (stalled mid-transaction), reading that
        record and listing records answer at once."""
        import psycopg

        store = self.make_store()
        await store.put_domain(make_domain("a.example.com"))
        holder = psycopg.connect(self.engine.pool_args[1][0])
        self.addCleanup(holder.close)
        holder.execute("SELECT doc FROM domains WHERE hostname = 'a.example.com' FOR UPDATE")
        started = time.monotonic()
        self.assertEqual(await store.get_domain("a.example.com"), make_domain("a.example.com"))
        self.assertEqual(len(await store.list_domains()), 1)
        self.assertLess(time.monotonic() - started, 5)
        holder.rollback()

    def _connections(self) -> int:
        with _admin_connection() as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.engine.description.rsplit("/", 1)[1],)
            ).fetchone()[0]

    async def test_closing_the_store_ends_its_connections(self):
        """close() ends every connection the store's pool opened on the server."""
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        self.engine = self.make_engine()
        store = SqlStore.create(self.engine)  # closed below, not at cleanup
        await gatherResults([store.list_domains() for _ in range(8)])
        self.assertGreaterEqual(self._connections(), 1)
        store.close()
        for _ in range(100):
            if self._connections() == 0:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self._connections(), 0)

    def test_migrate_now_closes_its_connection(self):
        """migrate_now's own connection is closed when it returns, also when it fails (no connection is left
        for the garbage collector to find open)."""
        import gc
        import warnings

        store = self.make_store()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            store.migrate_now()
            gc.collect()
        self.assertEqual([str(w.message) for w in caught if issubclass(w.category, ResourceWarning)], [])

    async def test_the_password_file_is_what_the_driver_connects_with(self):
        """A password given beside the URL (from [store] password_file) is the one the connections use."""
        from jobhost.store.factory import store_from_url

        url = create_database(self)
        directory = tempfile.mkdtemp(prefix="jobhost-password-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "db.password")
        with open(path, "w") as f:
            f.write("s3cret-pw\n")
        os.chmod(path, 0o600)
        from twisted.internet import reactor

        store = store_from_url(url, reactor, directory, path)
        self.addCleanup(store.close)
        await store.open()
        used = await store.pool.runInteraction(lambda cursor: cursor.connection.info.password)
        self.assertEqual(used, "s3cret-pw")
        without = store_from_url(url, reactor, directory)
        self.addCleanup(without.close)
        await without.open()
        self.assertEqual(await without.pool.runInteraction(lambda cursor: cursor.connection.info.password), "")

    # -- several nodes at once ----------------------------------------------------------------

    def _nodes(self, count: int) -> list[SqlStore]:
        return [self.make_store()] + [self.make_second_store() for _ in range(count - 1)]

    async def test_nodes_opening_a_new_database_at_once_agree_on_one_store(self):
        """Four nodes opening an empty database at the same moment create one schema and one store id."""
        ids = await gatherResults([store.open() for store in self._nodes(4) for _ in range(2)])
        self.assertEqual(len(set(ids)), 1, ids)

    # -- collation ----------------------------------------------------------------------------

    async def test_hostnames_list_in_byte_order_in_a_database_with_a_language_collation(self):
        """In a database whose default collation is Danish ("aa" sorts after "z"), hostnames still list and page
        in byte order."""
        name = "jobhost_test_" + secrets.token_hex(6)
        with _admin_connection() as conn:
            conn.execute(
                f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE ' + "'da' LOCALE 'C.UTF-8'"
            )

        def drop():
            with _admin_connection() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        self.addCleanup(drop)
        url = POSTGRES_URL.rpartition("/")[0] + "/" + name
        self.engine = Engine.postgresql(url, url)
        store = self._store()
        names = ["aa.example.com", "z.example.com", "ab.example.com", "b.example.com"]
        for hostname in names:
            await store.put_domain(make_domain(hostname))
            await store.put_certificate(make_certificate(hostname))
        self.assertEqual([r.hostname for r in await store.list_domains()], sorted(names))
        self.assertEqual([r.hostname for r in await store.list_certificates()], sorted(names))
        after = await store.list_domains(after="aa.example.com", limit=1)
        self.assertEqual([r.hostname for r in after], ["ab.example.com"])

    # -- the change watcher -------------------------------------------------------------------

    async def test_the_change_watcher_reconnects_and_calls_once_for_what_it_missed(self):
        """Started, the watcher calls nothing until a change; when its connection is killed it logs a warning,
        reconnects after a second, calls once (it may have missed changes), then pushes again.  Its thread never
        keeps the process from exiting."""
        import time

        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        store = self.make_store()
        other = self.make_second_store()
        await store.open()
        calls = []

        async def wait_for(predicate, seconds):
            deadline = time.monotonic() + seconds
            while not predicate() and time.monotonic() < deadline:
                await deferLater(reactor, 0.01, lambda: None)
            return predicate()

        def listeners():
            with _admin_connection() as conn:
                return [pid for pid, in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN%%'",
                    (self.engine.description.rsplit("/", 1)[1],),
                )]

        threads_before = set(threading.enumerate())
        with capturedLogs() as events:
            stop = store.watch_changes(lambda: calls.append(time.monotonic()))
            self.addCleanup(stop)
            started = set(threading.enumerate()) - threads_before
            self.assertTrue(started and all(t.daemon for t in started), "a watcher must not keep the process alive")
            self.assertTrue(await wait_for(lambda: listeners(), 5), "the watcher never listened")
            await deferLater(reactor, 0.3, lambda: None)
            self.assertEqual(calls, [], "called before any change")
            with _admin_connection() as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (listeners()[0],))
            killed = time.monotonic()
            self.assertTrue(await wait_for(lambda: calls, 3), "no call after reconnecting")
            self.assertTrue(0.9 < calls[0] - killed < 1.6, calls[0] - killed)  # it waits a second between tries
            await deferLater(reactor, 0.3, lambda: None)
            self.assertEqual(len(calls), 1)
            await other.put_certificate(make_certificate("pushed.example.com"))
            self.assertTrue(await wait_for(lambda: len(calls) > 1, 2), "no push after reconnecting")
        warnings = _log_texts(events, "warn")
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"Change notifications from {self.engine.description} interrupted: ", warnings[0])
        self.assertIn("reconnecting", warnings[0])



del _SqlContract


class PasswordFileTests(TestCase):
    """[store] password_file: the PostgreSQL password from a 0600 file, never in a message."""

    def _file(self, text: str, mode: int) -> str:
        directory = tempfile.mkdtemp(prefix="jobhost-password-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "db.password")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_reads_the_first_line_of_a_private_file(self):
        """The password is the file's first line, without its newline."""
        from jobhost.store.factory import read_password_file

        self.assertEqual(read_password_file(self._file("s3cret\nignored\n", 0o600)), "s3cret")

    def test_refuses_a_file_others_may_read_an_empty_or_missing_one(self):
        """A group- or world-readable, empty or missing file is a ConfigError at [store] password_file."""
        from jobhost.errors import ConfigError
        from jobhost.store.factory import read_password_file

        for path, problem in [
            (self._file("s3cret\n", 0o644), "readable by others"),
            (self._file("\n", 0o600), "is empty"),
            ("/nonexistent/db.password", "cannot read"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                read_password_file(path)
            self.assertIn(problem, str(caught.exception))
            self.assertEqual(caught.exception.path, ("store", "password_file"))
            self.assertNotIn("s3cret", str(caught.exception))

    def test_only_for_postgresql(self):
        """password_file with an SQLite URL is refused, naming the key."""
        from twisted.internet.testing import MemoryReactor

        from jobhost.errors import ConfigError
        from jobhost.store.factory import store_from_url

        with self.assertRaises(ConfigError) as caught:
            store_from_url("sqlite:x.db", MemoryReactor(), tempfile.gettempdir(), self._file("pw\n", 0o600))
        self.assertEqual(caught.exception.path, ("store", "password_file"))

    async def test_postgresql_store_opens_with_it_and_never_names_it(self):
        """A PostgreSQL store built with a password file opens and works; the password is in no description."""
        from twisted.internet import reactor

        from jobhost.store.factory import store_from_url

        url = create_database(self)
        store = store_from_url(url, reactor, tempfile.gettempdir(), self._file("s3cret-pw\n", 0o600))
        self.addCleanup(store.close)
        self.assertIs(await store.check(), True)
        self.assertNotIn("s3cret-pw", store.engine.description + repr(store) + repr(store.engine))
