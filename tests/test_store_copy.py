"""jobhost-store copy: every record from a directory store into SQLite and PostgreSQL, byte for byte, rerunnable."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import termios

from store_contract import make_account, make_domain, shared_ca
from test_store_sql import create_database
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jobhost.store.copy import Progress, copy_store
from jobhost.store.directory import DirectoryStore
from jobhost.store.records import DomainState, certificate_record
from jobhost.store.sql import Engine, SqlStore

#: Hostnames in the source store (each with a domain record and a certificate).
COUNT = 1000


def _canonical(records) -> list[str]:
    return [json.dumps(r.to_json(), sort_keys=True) for r in records]


class CopyTests(TestCase):
    """A directory store with 1,000 hostnames, one broken certificate file and two accounts, copied."""

    timeout = 300

    @classmethod
    def setUpClass(cls):
        # One source for the whole class: writing 2,000 files with fsync takes a few seconds.
        cls.root = tempfile.mkdtemp(prefix="jobhost-copy-source-")
        source = DirectoryStore(os.path.join(cls.root, "store"), lambda f, *a: _now(f, *a))
        ca = shared_ca()
        for i in range(COUNT):
            hostname = f"h{i:04d}.acme-corp.test"
            state = (DomainState.ACTIVE, DomainState.FAILING, DomainState.PENDING)[i % 3]
            source._add_domain_sync(make_domain(hostname, state, version=i % 7))
            key_pem, chain_pem = ca.issue(hostname)
            source._put_certificate_sync(certificate_record(hostname, key_pem, chain_pem))
        source._put_account_sync(make_account("https://ca.example/dir"))
        source._put_account_sync(make_account("https://other.example/dir", "https://other.example/acct/2"))
        with open(os.path.join(cls.root, "store", "certificates", "broken.acme-corp.test.json"), "w") as f:
            f.write("{not json")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, True)

    def setUp(self):
        pool = ThreadPool(minthreads=0, maxthreads=4, name="copy-source")
        pool.start()
        self.addCleanup(pool.stop)
        self.source = DirectoryStore.create(reactor, os.path.join(self.root, "store"), threadpool=pool)

    async def _everything(self, store):
        domains = await store.list_domains()
        certificates = await store.list_certificates()
        accounts = await store.list_accounts()
        return _canonical(domains), _canonical(certificates), _canonical(accounts)

    async def _copy_and_compare(self, target):
        stream = io.StringIO()
        report = await copy_store(self.source, target, Progress(stream, "copied"))
        self.assertEqual((report.domains, report.certificates, report.accounts), (COUNT, COUNT, 2))
        self.assertEqual(report.copied, 2 * COUNT + 2)
        self.assertEqual([what for what, _ in report.skipped], ["certificate broken.acme-corp.test"])
        self.assertIn(f"copied: {2 * COUNT + 2}/{2 * COUNT + 2} records", stream.getvalue())
        expected = await self._everything(self.source)
        self.assertEqual(await self._everything(target), expected)
        again = await copy_store(self.source, target)
        self.assertEqual(again.copied, report.copied)
        self.assertEqual(await self._everything(target), expected, "a second run adds nothing and loses nothing")

    def _sql(self, engine: Engine) -> SqlStore:
        store = SqlStore.create(engine)
        self.addCleanup(store.close)
        return store

    async def test_copy_into_sqlite(self):
        """Every domain, certificate and account reads back from SQLite exactly as from the directory store."""
        directory = tempfile.mkdtemp(prefix="jobhost-copy-sqlite-")
        self.addCleanup(shutil.rmtree, directory, True)
        await self._copy_and_compare(self._sql(Engine.sqlite(os.path.join(directory, "jobhost.db"))))

    async def test_copy_into_postgresql(self):
        """Every domain, certificate and account reads back from PostgreSQL exactly as from the directory store."""
        url = create_database(self)
        await self._copy_and_compare(self._sql(Engine.postgresql(url, url)))

    def test_command_line(self):
        """jobhost-store copy --from --to copies, names the unreadable record, exits 2 for it, and prints progress."""
        workdir = tempfile.mkdtemp(prefix="jobhost-copy-cli-")
        self.addCleanup(shutil.rmtree, workdir, True)
        done = subprocess.run(
            [sys.executable, "-m", "jobhost.store.tool", "copy",
             "--from", "directory:" + os.path.join(self.root, "store"), "--to", "sqlite:var/jobhost.db"],
            cwd=workdir, capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(done.returncode, 2, done.stderr)
        self.assertIn(f"copied {COUNT} domains, {COUNT} certificates and 2 accounts to sqlite:var/jobhost.db",
                      done.stdout)
        self.assertIn("skipped certificate broken.acme-corp.test", done.stderr)
        self.assertIn(f"copied: {2 * COUNT + 2}/{2 * COUNT + 2} records", done.stderr)
        self.assertEqual(os.stat(os.path.join(workdir, "var", "jobhost.db")).st_mode & 0o777, 0o600)
        listed = subprocess.run(
            [sys.executable, "-m", "jobhost.store.tool", "--store", "sqlite:var/jobhost.db", "show",
             "h0001.acme-corp.test"],
            cwd=workdir, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual(json.loads(listed.stdout)["domain"]["state"], DomainState.FAILING)


def _now(f, *args):
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(f, *args)


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ProgressTests(SynchronousTestCase):
    """Progress: a redrawn line on a terminal, one line at the end elsewhere."""

    def terminal(self):
        """A real pseudo-terminal: (the stream Progress writes to, a function reading what arrived).

        The stream is block-buffered (as a program's reopened stderr may be): what Progress does not flush
        does not arrive."""
        import select

        master, slave = os.openpty()
        attributes = termios.tcgetattr(slave)
        attributes[1] &= ~termios.OPOST  # no "\n" -> "\r\n": read back exactly what was written
        termios.tcsetattr(slave, termios.TCSANOW, attributes)
        stream = open(slave, "w", encoding="utf-8", buffering=65536)
        self.addCleanup(stream.close)
        self.addCleanup(os.close, master)

        def written() -> str:
            data = b""
            while select.select([master], [], [], 0.05)[0]:
                data += os.read(master, 4096)
            return data.decode()

        return stream, written

    def test_on_a_terminal_the_line_is_redrawn_at_most_every_interval(self):
        """On a terminal each advance redraws the line in place, unless the last redraw is under `every` ago."""
        stream, written = self.terminal()
        clock = _Clock()
        progress = Progress(stream, "copied", every=0.25, clock=clock)
        progress.start(10)
        clock.now += 0.125
        progress.advance()
        self.assertEqual(written(), "")
        clock.now += 0.125
        progress.advance()
        self.assertEqual(written(), "\rcopied: 2/10 records, 8/s, 1 s left\033[K")
        clock.now += 0.125
        progress.advance()
        self.assertEqual(written(), "")
        clock.now += 0.625
        progress.advance(2)
        self.assertEqual(written(), "\rcopied: 5/10 records, 5/s, 1 s left\033[K")
        clock.now += 1.5
        progress.finish()
        self.assertEqual(written(), "\rcopied: 5/10 records, 2/s, 2 s left\033[K\n")

    def test_on_a_terminal_the_line_is_redrawn_several_times_a_second_by_default(self):
        """Without `every`, a quarter of a second after the last redraw is long enough for the next."""
        stream, written = self.terminal()
        clock = _Clock()
        progress = Progress(stream, "copied", clock=clock)
        progress.start(4)
        clock.now += 0.25
        progress.advance()
        self.assertEqual(written(), "\rcopied: 1/4 records, 4/s, 1 s left\033[K")

    def test_elsewhere_only_the_last_line_is_written(self):
        """Not on a terminal (a log file), advancing writes nothing and finish writes one plain line, at once."""
        directory = tempfile.mkdtemp(prefix="jobhost-progress-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "copy.log")
        stream = open(path, "w", encoding="utf-8")
        self.addCleanup(stream.close)

        def written() -> str:
            with open(path, encoding="utf-8") as f:
                return f.read()

        clock = _Clock()
        progress = Progress(stream, "imported", clock=clock)
        progress.start(4000)
        for _ in range(3000):
            clock.now += 0.001
            progress.advance()
        self.assertEqual(written(), "")
        progress.finish()
        self.assertEqual(written(), "imported: 3000/4000 records, 1,000/s, 1 s left\n")

    def test_nothing_done_yet_has_no_rate_and_no_estimate(self):
        """Before any record (or at the very start) the rate is 0 and the time left is shown as 0."""
        stream = io.StringIO()
        clock = _Clock()
        progress = Progress(stream, "copied", clock=clock)
        progress.start(5)
        self.assertEqual(progress.line(), "copied: 0/5 records, 0/s, 0 s left")
        progress.start(0)
        progress.finish()
        self.assertEqual(stream.getvalue(), "copied: 0/0 records, 0/s, 0 s left\n")
        self.assertEqual(Progress(stream, "never started", clock=clock).line(), "never started: 0/0 records, 0/s, 0 s left")

    def test_under_one_record_a_second_the_time_left_is_still_estimated(self):
        """One record in two seconds: the rate shows as 0/s (rounded) but the time left is 18 s, not 0."""
        clock = _Clock()
        progress = Progress(io.StringIO(), "copied", clock=clock)
        progress.start(10)
        clock.now += 2
        progress.advance()
        self.assertEqual(progress.line(), "copied: 1/10 records, 0/s, 18 s left")


class CopyFailureTests(TestCase):
    """A write the target refuses fails the copy with that error."""

    async def test_a_target_that_refuses_writes_fails_the_copy_with_its_error(self):
        """Copying into an SQLite store whose domains table is gone fails with the store's own StoreError, and
        the other writes that failed with it are not left as unhandled errors."""
        from jobhost.errors import StoreError
        from jobhost.store.memory import MemoryStore

        source = MemoryStore()
        for i in range(20):
            await source.put_domain(make_domain(f"h{i:02d}.example.com"))
        directory = tempfile.mkdtemp(prefix="jobhost-copy-fail-")
        self.addCleanup(shutil.rmtree, directory, True)
        target = SqlStore.create(Engine.sqlite(os.path.join(directory, "jobhost.db")))
        self.addCleanup(target.close)
        await target.open()
        await target.pool.runInteraction(lambda cursor: cursor.execute("DROP TABLE domains"))
        failure = await self.assertFailure(ensureDeferred(copy_store(source, target)), StoreError)
        self.assertIn("no such table: domains", str(failure))
        import gc

        gc.collect()  # a failed write left unhandled would be logged now ("Unhandled error in Deferred"), failing the test
