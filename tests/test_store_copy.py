"""jobhost-store copy: every record from a directory store into SQLite and PostgreSQL, byte for byte, rerunnable."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from store_contract import make_account, make_domain, shared_ca
from test_store_sql import create_database
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

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
