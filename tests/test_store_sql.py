"""The IStore contract run against the SQL store: SQLite files, and the real PostgreSQL on this machine.

PostgreSQL tests create a database of their own (``jobhost_test_<random>``) on
127.0.0.1:5432 as user ``postgres`` (override with ``JOBHOST_TEST_POSTGRES``, a
libpq URL of a server where that user may create databases) and drop it
afterwards.  When no server answers they are skipped with the reason, except
under CI (``CI=true``), where a missing server is a failure: ``.ci/run`` starts it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import attrs
from store_contract import StoreContractTests, make_domain
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import SkipTest, TestCase

from jobhost.errors import StoreError
from jobhost.store.sql import SCHEMA_VERSION, Engine, SqlStore

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


class _SqlContract(StoreContractTests):
    def make_engine(self) -> Engine:
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


class SqliteStoreContractTests(_SqlContract, TestCase):
    """The SQL store on an SQLite file keeps the IStore contract, also across two pools on one file."""

    def make_engine(self):
        directory = tempfile.mkdtemp(prefix="jobhost-sqlite-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        return Engine.sqlite(os.path.join(directory, "jobhost.db"))


class PostgresStoreContractTests(_SqlContract, TestCase):
    """The SQL store on the real PostgreSQL keeps the IStore contract, also across pools (nodes)."""

    def make_engine(self):
        url = create_database(self)
        return Engine.postgresql(url, url)

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
