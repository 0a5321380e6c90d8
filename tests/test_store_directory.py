"""DirectoryStore: the IStore contract, its on-disk layout and safety, the store factory and jobhost-store."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import attrs
from store_contract import T0, StoreContractTests, make_account, make_certificate, make_domain, shared_ca
from jobhost.certs import AriWindow
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jobhost.errors import BrokenRecord, ConfigError, StoreError
from jobhost.store.directory import (
    LAYOUT_VERSION,
    MARKER,
    MARKER_FORMAT,
    DirectoryStore,
    account_file_stem,
    lease_file_stem,
)
from jobhost.store.factory import store_from_url
from jobhost.store import directory as directory_module
from jobhost.store.files import CHANGES_LOCK, CHANGES_LOG, CHANGES_LOG_OLD
from jobhost.store.memory import MemoryStore
from jobhost.store.records import Challenge, DomainRecord, DomainState
from jobhost.store.tool import EXIT_ERROR, build_parser, run
from jobhost.timeutil import now

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def temp_dir(case) -> str:
    """A fresh directory outside the repository, removed when ``case`` finishes."""
    path = tempfile.mkdtemp(prefix="jobhost-store-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def run_now(f, *args):
    """A ``run_in_thread`` that calls ``f`` at once, for synchronous tests."""
    return maybeDeferred(f, *args)


class DirectoryStoreContractTests(StoreContractTests, TestCase):
    """DirectoryStore keeps the IStore contract, also between two instances on one directory."""

    def make_store(self):
        self.root = os.path.join(temp_dir(self), "store")
        return DirectoryStore(self.root, run_now)

    def opened(self, store):
        return store.open().addCallback(lambda _: store)

    def make_second_store(self):
        return DirectoryStore(FilePath(self.root), run_now)

    def make_interfering_store(self):
        return None  # it holds the record's lock from read to write: see ConcurrencyTests


class ThreadedDirectoryStoreContractTests(StoreContractTests, TestCase):
    """DirectoryStore keeps the IStore contract with its disk I/O in a real thread pool."""

    def setUp(self):
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="test-directory-store")
        self.pool.start()
        self.addCleanup(self.pool.stop)

    def make_store(self):
        self.root = os.path.join(temp_dir(self), "store")
        return DirectoryStore.create(reactor, self.root, threadpool=self.pool)

    def opened(self, store):
        return store.open().addCallback(lambda _: store)

    def make_second_store(self):
        return DirectoryStore.create(reactor, self.root, threadpool=self.pool)

    def make_interfering_store(self):
        return None  # it holds the record's lock from read to write: see ConcurrencyTests


class _Base(SynchronousTestCase):
    def setUp(self):
        self.root = os.path.join(temp_dir(self), "store")
        self.store = DirectoryStore(self.root, run_now)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def ok(self, d):
        return self.successResultOf(d)

    def mode(self, *parts):
        return stat.S_IMODE(os.stat(self.path(*parts)).st_mode)


class LayoutTests(_Base):
    """Where and how DirectoryStore keeps its files."""

    def test_layout(self):
        """Each record kind is one readable JSON file at its documented path."""
        self.ok(self.store.put_domain(make_domain("jobs.acme-corp.com")))
        self.ok(self.store.put_certificate(make_certificate("jobs.acme-corp.com")))
        self.ok(self.store.put_challenge(Challenge("tok-en_1", "tok-en_1.x", "jobs.acme-corp.com", T0)))
        self.ok(self.store.put_account(make_account("https://ca.example/dir")))
        self.ok(self.store.acquire_lease("issue:jobs.acme-corp.com", "node-a", T0, T0))
        expected = {
            ("domains", "jobs.acme-corp.com.json"): "hostname",
            ("certificates", "jobs.acme-corp.com.json"): "chain_pem",
            ("challenges", "tok-en_1.json"): "key_authorization",
            ("accounts", account_file_stem("https://ca.example/dir") + ".json"): "account_url",
            ("leases", "issue:jobs.acme-corp.com.json"): "holder",
        }
        for parts, field in expected.items():
            with open(self.path(*parts)) as f:
                self.assertIn(field, json.load(f), parts)
        self.assertEqual(
            account_file_stem("https://ca.example/dir"), hashlib.sha256(b"https://ca.example/dir").hexdigest()
        )
        with open(self.path(CHANGES_LOG), "rb") as f:
            self.assertTrue(
                f.read().endswith(b"\njobs.acme-corp.com page,state\njobs.acme-corp.com certificate\n")
            )

    def test_secret_files_are_0600_and_directories_0700(self):
        """Certificate and account files are mode 0600 and every directory the store makes is 0700."""
        self.ok(self.store.put_certificate(make_certificate("a.example.com")))
        self.ok(self.store.put_account(make_account("https://ca.example/dir")))
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.ok(self.store.put_challenge(Challenge("t", "t.k", "a.example.com", T0)))
        self.ok(self.store.acquire_lease("x", "h", T0, T0))
        self.assertEqual(self.mode("certificates", "a.example.com.json"), 0o600)
        self.assertEqual(self.mode("accounts", account_file_stem("https://ca.example/dir") + ".json"), 0o600)
        for directory in ("", "domains", "certificates", "challenges", "accounts", "leases"):
            self.assertEqual(self.mode(directory), 0o700, directory)

    def umask(self, mask):
        self.addCleanup(os.umask, os.umask(mask))

    def test_secret_mode_ignores_umask(self):
        """Certificate and account files are exactly 0600 (readable by the daemon) whatever the umask, a permissive one or one removing owner bits."""
        account = make_account("https://ca.example/dir")
        for mask in (0o000, 0o277):
            self.umask(mask)
            self.ok(self.store.put_certificate(make_certificate("a.example.com")))
            self.ok(self.store.put_account(account))
            self.assertEqual(self.mode("certificates", "a.example.com.json"), 0o600, oct(mask))
            self.assertEqual(self.mode("accounts", account_file_stem(account.directory_url) + ".json"), 0o600, oct(mask))

    def test_other_files_are_0644_unless_the_umask_is_stricter(self):
        """Domain, challenge and lease files are 0644 under the usual umask, and follow a stricter umask (077: 0600)."""
        self.umask(0o022)
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.ok(self.store.put_challenge(Challenge("tok", "tok.k", "a.example.com", T0)))
        self.ok(self.store.acquire_lease("x", "h", T0, T0))
        for parts in (("domains", "a.example.com.json"), ("challenges", "tok.json"), ("leases", "x.json")):
            self.assertEqual(self.mode(*parts), 0o644, parts)
        self.umask(0o077)
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.assertEqual(self.mode("domains", "a.example.com.json"), 0o600)

    def test_no_temp_files_left(self):
        """Successful writes, replacements and registrations leave no temp files behind."""
        for _ in range(2):
            self.ok(self.store.put_certificate(make_certificate("a.example.com")))
            self.ok(self.store.put_domain(make_domain("a.example.com")))
            self.ok(self.store.add_domain(make_domain("b.example.com")))
        for directory in ("domains", "certificates"):
            self.assertEqual(
                [n for n in os.listdir(self.path(directory)) if n.startswith(".")], [], directory
            )

    def test_leftover_temp_files_ignored(self):
        """A half-written temp file from a killed writer is ignored by gets and lists."""
        good = make_certificate("a.example.com")
        self.ok(self.store.put_certificate(good))
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        for directory in ("certificates", "domains"):
            with open(self.path(directory, ".a.example.com.json.0123456789abcdef.tmp"), "w") as f:
                f.write('{"hostname": "a.exa')
            with open(self.path(directory, ".b.example.com.json"), "w") as f:
                f.write("{")
        self.assertEqual(self.ok(self.store.get_certificate("a.example.com")), good)
        self.assertEqual([r.hostname for r in self.ok(self.store.list_certificates())], ["a.example.com"])
        self.assertEqual([r.hostname for r in self.ok(self.store.list_domains())], ["a.example.com"])

    def test_create_wires_thread_pool_to_reactor(self):
        """create() without a pool starts its own pool when the reactor runs, then opens the store, and stops the pool at shutdown."""
        memory = MemoryReactor()
        store = DirectoryStore.create(memory, self.root)
        self.assertIsInstance(store, DirectoryStore)
        [(start, _, _), (open_store, _, _)] = memory.whenRunningHooks
        self.assertEqual(open_store, store._open_at_start)
        [(stop, _, _)] = memory.triggers["during"]["shutdown"]
        pool = start.__self__
        self.assertFalse(pool.started)
        start()
        self.assertTrue(pool.started)
        stop()
        self.assertFalse(pool.started)


class MarkerTests(_Base):
    """open() writes jobhost-store.json; check() fails, naming what is missing, once the store is gone."""

    def marker(self) -> dict:
        with open(self.path(MARKER)) as f:
            return json.load(f)

    def check_error(self, store=None) -> str:
        return self.failureResultOf((store or self.store).check(), StoreError).value.message

    def test_open_creates_the_store_and_its_marker(self):
        """open() makes the root (0700) and a marker naming the format, layout version and a store id."""
        store_id = self.ok(self.store.open())
        self.assertEqual(self.mode(), 0o700)
        self.assertEqual(
            self.marker(), {"format": MARKER_FORMAT, "layout_version": LAYOUT_VERSION, "store_id": store_id}
        )
        self.assertEqual(len(store_id), 32)
        self.assertIs(self.ok(self.store.check()), True)

    def test_open_keeps_an_existing_store_id(self):
        """Opening an existing store (another process, a restart) keeps its id; a store made before markers gets one."""
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.assertFalse(os.path.exists(self.path(MARKER)))
        first = self.ok(self.store.open())
        second = DirectoryStore(self.root, run_now)
        self.assertEqual(self.ok(second.open()), first)
        self.assertIs(self.ok(second.check()), True)

    def test_check_names_a_deleted_directory(self):
        """With the store directory deleted, check() fails naming the directory (not just its marker)."""
        self.ok(self.store.open())
        shutil.rmtree(self.root)
        self.assertEqual(self.check_error(), f"the store directory {self.root} is missing")

    def write_marker(self, **doc):
        os.makedirs(self.root, exist_ok=True)
        with open(self.path(MARKER), "w") as f:
            json.dump(doc, f)

    def test_open_reads_layout_1_and_refuses_layout_2(self):
        """A layout 1 marker (what every jobhost so far wrote) opens with its id; a layout 2 marker (a newer jobhost's) is refused."""
        self.write_marker(format="jobhost-directory-store", layout_version=1, store_id="0123abcd")
        self.assertEqual(self.ok(self.store.open()), "0123abcd")
        self.write_marker(format="jobhost-directory-store", layout_version=2, store_id="0123abcd")
        failure = self.failureResultOf(DirectoryStore(self.root, run_now).open(), BrokenRecord)
        self.assertEqual(failure.value.reason, "its layout_version 2 is not one this jobhost reads (up to 1)")

    def test_open_says_why_a_marker_is_not_one(self):
        """A marker of another format, or without a store id, makes open() fail saying which."""
        cases = [
            ({"format": "other-store", "layout_version": 1, "store_id": "x"}, "its format is 'other-store', not 'jobhost-directory-store'"),
            ({"format": MARKER_FORMAT, "layout_version": 1}, "it has no store_id"),
            ({"format": MARKER_FORMAT, "layout_version": 1, "store_id": ""}, "it has no store_id"),
            ({"format": MARKER_FORMAT, "layout_version": 1, "store_id": 7}, "it has no store_id"),
            ({"format": MARKER_FORMAT, "store_id": "x"}, "its layout_version None is not one this jobhost reads (up to 1)"),
        ]
        for doc, reason in cases:
            self.write_marker(**doc)
            failure = self.failureResultOf(DirectoryStore(self.root, run_now).open(), BrokenRecord)
            self.assertEqual(failure.value.reason, reason, doc)

    def test_open_logs_whether_it_created_or_found_the_store(self):
        """open() logs, with the path and store id, that it created a new store or opened an existing one."""
        with capturedLogs() as events:
            store_id = self.ok(self.store.open())
            self.ok(DirectoryStore(self.root, run_now).open())
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"Created the directory store at {self.root} (store id {store_id})",
                f"Opened the directory store at {self.root} (store id {store_id})",
            ],
        )

    def test_the_open_at_reactor_start_creates_the_store_or_logs_why_not(self):
        """The open run when the reactor starts creates the marker; when it fails the error is logged, naming the store and the cause."""
        self.store._open_at_start()
        self.assertIs(self.ok(self.store.check()), True)
        self.write_marker(format="other-store", layout_version=1, store_id="x")
        with capturedLogs() as events:
            DirectoryStore(self.root, run_now)._open_at_start()
        [error] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn(f"Cannot open the directory store at {self.root}: ", formatEvent(error))
        self.assertIn("its format is 'other-store'", formatEvent(error))

    def test_writes_do_not_recreate_a_healthy_store(self):
        """A write after the directory was deleted recreates folders but not the marker: check() still fails."""
        self.ok(self.store.open())
        shutil.rmtree(self.root)
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        message = self.check_error()
        self.assertIn(self.path(MARKER), message)
        self.assertIn("missing", message)

    def test_check_names_a_replaced_store(self):
        """A marker naming another store (the directory was replaced by a new store) fails check()."""
        self.ok(self.store.open())
        shutil.rmtree(self.root)
        self.ok(DirectoryStore(self.root, run_now).open())
        self.assertIn("replaced", self.check_error())

    def test_a_store_never_opened_needs_the_marker(self):
        """A store object that did not open the store itself passes check() only while the marker is there."""
        self.assertIn("missing", self.check_error())
        self.ok(DirectoryStore(self.root, run_now).open())
        self.assertIs(self.ok(self.store.check()), True)

    def test_open_refuses_a_marker_it_cannot_read(self):
        """A marker from a newer layout (or not a marker at all) makes open() fail naming the file."""
        os.makedirs(self.root)
        with open(self.path(MARKER), "w") as f:
            json.dump({"format": MARKER_FORMAT, "layout_version": LAYOUT_VERSION + 1, "store_id": "x"}, f)
        failure = self.failureResultOf(self.store.open(), BrokenRecord)
        self.assertIn(self.path(MARKER), failure.value.message)
        self.assertIn("layout_version", failure.value.reason)

    def test_check_waits_for_open(self):
        """check() asked while open() is still in its worker answers only once the store is open."""
        worker = HeldWorker()
        store = DirectoryStore(self.root, worker)
        opening = store.open()
        checking = store.check()
        self.assertNoResult(checking)
        self.assertEqual(len(worker.queue), 1, "the check waits; it is not queued beside the open")
        worker.run_next()
        self.ok(opening)
        worker.run_next()
        self.assertIs(self.ok(checking), True)


class HeldWorker:
    """A ``run_in_thread`` that runs each call only when the test says so, in order."""

    def __init__(self) -> None:
        self.queue: list = []

    def __call__(self, f, *args):
        from twisted.internet.defer import Deferred

        d = Deferred()
        self.queue.append((f, args, d))
        return d

    def run_next(self) -> None:
        f, args, d = self.queue.pop(0)
        maybeDeferred(f, *args).chainDeferred(d)


class BrokenListingTests(_Base):
    """include_broken lists an unparsable record as its BrokenRecord instead of logging it."""

    def setUp(self):
        super().setUp()
        for hostname in ("a.example.com", "b.example.com", "c.example.com"):
            self.ok(self.store.put_domain(make_domain(hostname, state=DomainState.ACTIVE)))
            self.ok(self.store.put_certificate(make_certificate(hostname)))
        with open(self.path("domains", "b.example.com.json"), "w") as f:
            f.write("{not json")
        certificate = self.path("certificates", "c.example.com.json")
        with open(certificate) as f:
            doc = json.load(f)
        doc["key_pem"] = self.ok(self.store.get_certificate("a.example.com")).key_pem.decode("ascii")
        with open(certificate, "w") as f:
            json.dump(doc, f)

    def test_broken_records_are_listed_in_place(self):
        """With include_broken the broken domain and certificate records appear, by hostname, as BrokenRecords; nothing is logged."""
        with capturedLogs() as events:
            domains = self.ok(self.store.list_domains(include_broken=True))
            certificates = self.ok(self.store.list_certificates(include_broken=True))
        self.assertEqual(events, [])
        self.assertEqual([type(r).__name__ for r in domains], ["DomainRecord", "BrokenRecord", "DomainRecord"])
        self.assertEqual(domains[1].key, "b.example.com")
        self.assertIn("not valid JSON", domains[1].reason)
        self.assertEqual(
            [type(r).__name__ for r in certificates], ["CertificateRecord", "CertificateRecord", "BrokenRecord"]
        )
        self.assertIn("does not match", certificates[2].reason)
        self.assertIn(self.path("certificates", "c.example.com.json"), certificates[2].message)
        paged = self.ok(self.store.list_domains(after="a.example.com", limit=1, include_broken=True))
        self.assertEqual([r.key for r in paged], ["b.example.com"])

    def test_without_include_broken_they_are_skipped_and_logged(self):
        """By default, and under a state filter, broken records are skipped (and logged as before)."""
        with capturedLogs() as events:
            domains = self.ok(self.store.list_domains())
            active = self.ok(self.store.list_domains(state=DomainState.ACTIVE, include_broken=True))
            certificates = self.ok(self.store.list_certificates())
        self.assertEqual([r.hostname for r in domains], ["a.example.com", "c.example.com"])
        self.assertEqual([r.hostname for r in active], ["a.example.com", "c.example.com"])
        self.assertEqual([r.hostname for r in certificates], ["a.example.com", "b.example.com"])
        self.assertEqual(len(events), 3)

    def test_reading_a_broken_record_fails_with_broken_record(self):
        """get_domain and get_certificate of a broken record fail with BrokenRecord naming the hostname."""
        failure = self.failureResultOf(self.store.get_domain("b.example.com"), BrokenRecord)
        self.assertEqual(failure.value.key, "b.example.com")
        failure = self.failureResultOf(self.store.get_certificate("c.example.com"), BrokenRecord)
        self.assertEqual(failure.value.key, "c.example.com")
        self.assertIn("does not match", failure.value.reason)


class CorruptFileTests(_Base):
    """Unparsable files are reported, never served."""

    def corrupt(self, *parts, content="{not json"):
        with open(self.path(*parts), "w") as f:
            f.write(content)

    def assert_store_error_names(self, d, *parts):
        failure = self.failureResultOf(d, StoreError)
        self.assertIn(self.path(*parts), str(failure.value))
        return failure.value

    def test_corrupt_certificate(self):
        """A truncated certificate file fails get_certificate with a StoreError naming it."""
        self.ok(self.store.put_certificate(make_certificate("a.example.com")))
        with open(self.path("certificates", "a.example.com.json")) as f:
            text = f.read()
        self.corrupt("certificates", "a.example.com.json", content=text[: len(text) // 2])
        self.assert_store_error_names(self.store.get_certificate("a.example.com"), "certificates", "a.example.com.json")

    def test_certificate_key_mismatch(self):
        """A certificate file whose key does not match its leaf is a StoreError, never served."""
        self.ok(self.store.put_certificate(make_certificate("a.example.com")))
        other_key, _ = shared_ca().issue("a.example.com")
        with open(self.path("certificates", "a.example.com.json")) as f:
            doc = json.load(f)
        doc["key_pem"] = other_key.decode("ascii")
        self.corrupt("certificates", "a.example.com.json", content=json.dumps(doc))
        error = self.assert_store_error_names(
            self.store.get_certificate("a.example.com"), "certificates", "a.example.com.json"
        )
        self.assertIn("does not match", str(error))
        self.assertNotIn("PRIVATE KEY", str(error))

    def test_record_under_wrong_name(self):
        """A file holding another hostname's record (a misplaced copy) is a StoreError."""
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        os.rename(self.path("domains", "a.example.com.json"), self.path("domains", "b.example.com.json"))
        error = self.assert_store_error_names(self.store.get_domain("b.example.com"), "domains", "b.example.com.json")
        self.assertIn("a.example.com", str(error))

    def test_corrupt_domain_challenge_account_lease(self):
        """Every record kind reports a corrupt file as a StoreError naming it, not KeyError."""
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.ok(self.store.put_challenge(Challenge("tok", "tok.k", "a.example.com", T0)))
        self.ok(self.store.put_account(make_account("https://ca.example/dir")))
        self.ok(self.store.acquire_lease("issue", "node-a", T0, T0))
        account = account_file_stem("https://ca.example/dir") + ".json"
        self.corrupt("domains", "a.example.com.json", content="[1, 2]")
        self.corrupt("challenges", "tok.json", content='{"token": "tok"}')
        self.corrupt("accounts", account, content="")
        self.corrupt("leases", "issue.json", content='{"name": "issue", "holder": "x", "expires_at": "soon"}')
        self.assert_store_error_names(self.store.get_domain("a.example.com"), "domains", "a.example.com.json")
        self.assert_store_error_names(self.store.get_challenge("tok"), "challenges", "tok.json")
        self.assert_store_error_names(self.store.get_account("https://ca.example/dir"), "accounts", account)
        self.assert_store_error_names(self.store.acquire_lease("issue", "node-b", T0, T0), "leases", "issue.json")
        self.assert_store_error_names(
            self.store.add_domain(make_domain("a.example.com")), "domains", "a.example.com.json"
        )

    def test_list_skips_and_logs_corrupt_files(self):
        """list_certificates and list_domains skip corrupt files and log an error naming each."""
        for hostname in ("a.example.com", "b.example.com", "c.example.com"):
            self.ok(self.store.put_certificate(make_certificate(hostname)))
            self.ok(self.store.put_domain(make_domain(hostname)))
        self.corrupt("certificates", "b.example.com.json")
        self.corrupt("domains", "c.example.com.json")
        self.corrupt("domains", "Not A Hostname.json", content="{}")
        with capturedLogs() as events:
            certificates = self.ok(self.store.list_certificates())
            domains = self.ok(self.store.list_domains())
        self.assertEqual([r.hostname for r in certificates], ["a.example.com", "c.example.com"])
        self.assertEqual([r.hostname for r in domains], ["a.example.com", "b.example.com"])
        logged = sorted(e["file"] for e in events if e["log_level"].name == "error")
        self.assertEqual(
            logged,
            sorted(
                [
                    self.path("certificates", "b.example.com.json"),
                    self.path("domains", "c.example.com.json"),
                    self.path("domains", "Not A Hostname.json"),
                ]
            ),
        )
        for event in events:
            self.assertNotIn("PRIVATE KEY", repr(event))


class PathSafetyTests(_Base):
    """Nothing outside the store's directory can be named."""

    BAD_HOSTNAMES = ["../../etc/passwd", "..", "a.example.com/../../x", "A.Example.COM", "a.example.com.", "", ".hidden.example.com"]
    BAD_TOKENS = ["../x", "a/b", "..", "tok.en", "", "tok en", "x" * 300]

    def test_bad_hostnames_rejected(self):
        """Reads of non-normalised hostnames are KeyError, writes are StoreError, and nothing is written."""
        for hostname in self.BAD_HOSTNAMES:
            self.failureResultOf(self.store.get_domain(hostname), KeyError)
            self.failureResultOf(self.store.get_certificate(hostname), KeyError)
            self.failureResultOf(self.store.delete_domain(hostname), KeyError)
            self.assertIsNone(self.ok(self.store.delete_certificate(hostname)))
            record = DomainRecord(hostname=hostname, state=DomainState.PENDING, created_at=T0, updated_at=T0)
            self.failureResultOf(self.store.put_domain(record), StoreError)
            self.failureResultOf(self.store.add_domain(record), StoreError)
        certificate = make_certificate("a.example.com")
        self.failureResultOf(
            self.store.put_certificate(attrs.evolve(certificate, hostname="../../x")), StoreError
        )
        self.assertFalse(os.path.exists(self.path("domains")) and os.listdir(self.path("domains")))
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.root), "x.json")))

    def test_bad_tokens_rejected(self):
        """Challenge tokens that are not base64url read as absent and cannot be stored."""
        for token in self.BAD_TOKENS:
            self.failureResultOf(self.store.get_challenge(token), KeyError)
            self.assertIsNone(self.ok(self.store.delete_challenge(token)))
            self.failureResultOf(self.store.put_challenge(Challenge(token, "k", "a.example.com", T0)), StoreError)
        self.assertFalse(os.path.exists(self.path("challenges")) and os.listdir(self.path("challenges")))

    def test_reads_never_leave_their_folder(self):
        """A name leading into another folder reads as absent, even where the file it names exists."""
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.ok(self.store.put_certificate(make_certificate("a.example.com")))
        self.ok(self.store.put_challenge(Challenge("tok", "tok.k", "a.example.com", T0)))
        self.failureResultOf(self.store.get_domain("../certificates/a.example.com"), KeyError)
        self.failureResultOf(self.store.get_certificate("../domains/a.example.com"), KeyError)
        self.failureResultOf(self.store.get_challenge("../domains/a.example.com"), KeyError)

    def test_updates_of_bad_hostnames_touch_nothing(self):
        """update_domain and set_renewal_info of a non-normalised hostname change nothing and create no file, also outside the store."""
        called = []
        self.failureResultOf(self.store.update_domain("../../escape", called.append), KeyError)
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        self.assertIs(self.ok(self.store.set_renewal_info("../../escape", "0" * 64, window)), False)
        self.assertEqual(called, [])
        self.assertEqual(os.listdir(os.path.dirname(self.root)), [])

    def test_lease_names_stay_inside(self):
        """Lease names with path characters are kept under a hashed file name inside leases/."""
        name = "../../escape/lease"
        self.assertTrue(self.ok(self.store.acquire_lease(name, "node-a", T0 + timedelta(seconds=5), T0)))
        self.assertFalse(self.ok(self.store.acquire_lease(name, "node-b", T0 + timedelta(seconds=5), T0)))
        stem = lease_file_stem(name)
        self.assertTrue(stem.startswith("_") and "/" not in stem)
        self.assertTrue(os.path.exists(self.path("leases", stem + ".json")))
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(self.root), "escape")))


class ListingTests(_Base):
    """Listing a folder shows every record in it and nothing else, whatever else lies there."""

    def setUp(self):
        super().setUp()
        for hostname in ("a.example.com", "b.example.com", "c.example.com"):
            self.ok(self.store.put_domain(make_domain(hostname)))
        self.accounts = [make_account(f"https://ca{i}.example/dir") for i in range(3)]
        for account in self.accounts:
            self.ok(self.store.put_account(account))

    def account_path(self, account):
        return self.path("accounts", account_file_stem(account.directory_url) + ".json")

    def errors(self, events):
        return [e for e in events if e["log_level"] == LogLevel.error]

    def test_files_that_are_not_records_are_skipped_silently(self):
        """Hidden files, editor backups and other non-JSON files beside the records are neither listed nor logged."""
        for folder in ("domains", "accounts"):
            for name in (".b.example.com.json", "a.example.com.json~", "README"):
                with open(self.path(folder, name), "w") as f:
                    f.write("{")
        with capturedLogs() as events:
            domains = self.ok(self.store.list_domains(include_broken=True))
            accounts = self.ok(self.store.list_accounts())
        self.assertEqual([r.hostname for r in domains], ["a.example.com", "b.example.com", "c.example.com"])
        self.assertEqual(accounts, self.accounts)
        self.assertEqual(self.errors(events), [])

    def test_a_record_deleted_while_listing_is_left_out(self):
        """A record deleted between reading the folder and reading the file is left out without an error; the rest are listed."""
        real_listdir = os.listdir
        first_account = min(self.accounts, key=lambda a: account_file_stem(a.directory_url))
        doomed = [self.path("domains", "b.example.com.json"), self.account_path(first_account)]

        def listdir(path):
            names = real_listdir(path)
            for victim in doomed:
                if os.path.dirname(victim) == path:
                    os.unlink(victim)  # another process deletes it just now
            return names

        self.patch(os, "listdir", listdir)
        with capturedLogs() as events:
            domains = self.ok(self.store.list_domains())
            accounts = self.ok(self.store.list_accounts())
        self.assertEqual([r.hostname for r in domains], ["a.example.com", "c.example.com"])
        self.assertEqual(len(accounts), 2)
        self.assertEqual(self.errors(events), [])

    def test_an_unreadable_record_is_logged_and_the_rest_listed(self):
        """A record file that cannot be read (here a folder) is skipped and logged naming it; the records after it are listed."""
        os.unlink(self.path("domains", "b.example.com.json"))
        os.mkdir(self.path("domains", "b.example.com.json"))
        os.mkdir(self.path("accounts", "0.json"))
        with capturedLogs() as events:
            domains = self.ok(self.store.list_domains(include_broken=True))
            accounts = self.ok(self.store.list_accounts())
        self.assertEqual([r.hostname for r in domains], ["a.example.com", "c.example.com"])
        self.assertEqual(accounts, self.accounts)
        self.assertEqual(
            sorted(e["file"] for e in self.errors(events)),
            [self.path("accounts", "0.json"), self.path("domains", "b.example.com.json")],
        )

    def test_a_folder_that_cannot_be_listed_fails_naming_it(self):
        """When a record folder is not a folder, listing it fails with StoreError naming it."""
        for folder in ("domains", "accounts"):
            shutil.rmtree(self.path(folder))
            with open(self.path(folder), "w"):
                pass
        failure = self.failureResultOf(self.store.list_domains(), StoreError)
        self.assertEqual(failure.value.message, f"cannot list {self.path('domains')}: Not a directory")
        failure = self.failureResultOf(self.store.list_accounts(), StoreError)
        self.assertEqual(failure.value.message, f"cannot list {self.path('accounts')}: Not a directory")


class FaultTests(_Base):
    """What the store does when the disk, the change log or another process gets in the way."""

    def test_deletes_sync_the_directory_after_the_unlink(self):
        """Deleting a domain, certificate or challenge is durable: its folder is fsynced after the unlink."""
        self.ok(self.store.put_domain(make_domain("a.example.com")))
        self.ok(self.store.put_certificate(make_certificate("a.example.com")))
        self.ok(self.store.put_challenge(Challenge("tok", "tok.k", "a.example.com", T0)))
        events = []
        real_fsync, real_unlink = os.fsync, os.unlink

        def fsync(fd):
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            return real_fsync(fd)

        def unlink(path):
            real_unlink(path)
            events.append(("unlink", os.path.realpath(os.path.dirname(path)), os.path.basename(path)))

        self.patch(os, "fsync", fsync)
        self.patch(os, "unlink", unlink)
        deletes = [
            ("domains", "a.example.com.json", lambda: self.store.delete_domain("a.example.com")),
            ("certificates", "a.example.com.json", lambda: self.store.delete_certificate("a.example.com")),
            ("challenges", "tok.json", lambda: self.store.delete_challenge("tok")),
        ]
        for folder, name, delete in deletes:
            del events[:]
            self.ok(delete())
            folder = os.path.realpath(self.path(folder))
            self.assertEqual(events, [("unlink", folder, name), ("fsync", folder)])

    def test_a_record_that_cannot_be_deleted_fails_naming_it(self):
        """When the record file cannot be unlinked (here a folder is in its place) the delete fails naming it."""
        os.makedirs(self.path("certificates", "a.example.com.json"))
        failure = self.failureResultOf(self.store.delete_certificate("a.example.com"), StoreError)
        self.assertEqual(
            failure.value.message, f"cannot delete {self.path('certificates', 'a.example.com.json')}: Is a directory"
        )

    def test_a_lease_that_cannot_be_deleted_fails_the_release(self):
        """Releasing a lease on a read-only disk fails with StoreError naming the lease file, rather than seeming done."""
        self.ok(self.store.acquire_lease("l", "node-a", T0 + timedelta(seconds=60), T0))
        lease = self.path("leases", "l.json")
        real_unlink = os.unlink

        def unlink(path):
            if path == lease:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real_unlink(path)

        self.patch(os, "unlink", unlink)
        failure = self.failureResultOf(self.store.release_lease("l", "node-a"), StoreError)
        self.assertEqual(failure.value.message, f"cannot delete {lease}: Read-only file system")

    def test_add_domain_racing_a_delete_asks_to_try_again(self):
        """When the record add_domain found is deleted before it can be read, it fails with StoreError saying to try again."""
        self.ok(self.store.add_domain(make_domain("a.example.com")))
        real_create = directory_module.create_exclusively

        def create_then_lose(path, data, mode):
            created = real_create(path, data, mode)
            os.unlink(path)  # another process deletes the record just after our attempt
            return created

        self.patch(directory_module, "create_exclusively", create_then_lose)
        failure = self.failureResultOf(self.store.add_domain(make_domain("a.example.com")), StoreError)
        self.assertIn("was deleted while registering a.example.com; try again", failure.value.message)

    def test_writes_whose_change_cannot_be_logged_are_kept_and_the_failure_logged(self):
        """When the change log is unusable every write still succeeds, and each logs one error naming the log."""
        os.makedirs(self.path(CHANGES_LOCK))
        certificate = make_certificate("a.example.com")
        window = AriWindow(start=T0, end=T0 + timedelta(days=1))
        with capturedLogs() as events:
            self.ok(self.store.put_domain(make_domain("a.example.com")))
            self.ok(self.store.add_domain(make_domain("b.example.com")))
            self.ok(self.store.update_domain("a.example.com", lambda r: attrs.evolve(r, attempts=7)))
            self.ok(self.store.delete_domain("b.example.com"))
            self.ok(self.store.put_certificate(certificate))
            self.assertIs(self.ok(self.store.set_renewal_info("a.example.com", certificate.fingerprint, window)), True)
            self.ok(self.store.delete_certificate("a.example.com"))
        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 7, errors)
        for message in errors:
            self.assertIn("Stored the change but could not record it in the change feed: ", message)
            self.assertIn(self.path(CHANGES_LOG), message)
        self.assertEqual(self.ok(self.store.get_domain("a.example.com")).attempts, 7)
        self.failureResultOf(self.store.get_domain("b.example.com"), KeyError)


class ChangeLogTests(_Base):
    """The change feed across instances, truncation and compaction."""

    def setUp(self):
        super().setUp()
        self.store = DirectoryStore(self.root, run_now, max_log_bytes=200)
        self.other = DirectoryStore(self.root, run_now, max_log_bytes=200)

    def touch(self, hostname, store=None):
        self.ok((store or self.store).put_domain(make_domain(hostname)))

    def test_empty_store(self):
        """A store that never changed starts its feed at 0 and reports nothing."""
        self.assertEqual(self.ok(self.store.changes(None)), (0, {}))
        self.assertEqual(self.ok(self.store.changes(0)), (0, {}))

    def test_cursor_from_one_instance_works_on_another(self):
        """Cursors are positions in the shared log, valid on any instance over the directory."""
        cursor, _ = self.ok(self.store.changes(None))
        self.touch("a.example.com", self.other)
        cursor, names = self.ok(self.other.changes(cursor))
        self.assertEqual(frozenset(names), frozenset({"a.example.com"}))
        self.touch("b.example.com", self.other)
        self.assertEqual(frozenset(self.ok(self.store.changes(cursor))[1]), frozenset({"b.example.com"}))

    def test_reader_keeping_up_sees_every_change_across_compactions(self):
        """A reader polling after every write gets exactly that hostname, through several compactions."""
        cursor, _ = self.ok(self.other.changes(None))
        cursors = [cursor]
        for i in range(60):
            self.touch(f"h{i}.example.com")
            cursor, names = self.ok(self.other.changes(cursor))
            self.assertEqual(frozenset(names), frozenset({f"h{i}.example.com"}))
            cursors.append(cursor)
        self.assertEqual(cursors, sorted(set(cursors)))
        self.assertLessEqual(os.path.getsize(self.path(CHANGES_LOG)), 200 + 20)
        self.assertTrue(os.path.exists(self.path(CHANGES_LOG_OLD)))

    def test_reader_one_compaction_behind_gets_names(self):
        """A cursor from before the latest compaction still gets exact names from changes.log.1."""
        self.touch("first.example.com")
        cursor, _ = self.ok(self.other.changes(None))
        written = set()
        i = 0
        while not os.path.exists(self.path(CHANGES_LOG_OLD)):
            name = f"n{i}.example.com"
            self.touch(name)
            written.add(name)
            i += 1
        self.touch("after.example.com")
        _, names = self.ok(self.other.changes(cursor))
        self.assertEqual(frozenset(names), frozenset(written | {"after.example.com"}))

    def test_reader_two_compactions_behind_gets_none(self):
        """A cursor older than the previous log fires None: the reader must reload everything."""
        cursor, _ = self.ok(self.other.changes(None))
        for i in range(40):
            self.touch(f"h{i}.example.com")
        new_cursor, names = self.ok(self.other.changes(cursor))
        self.assertIsNone(names)
        self.assertGreater(new_cursor, cursor)
        self.touch("fresh.example.com")
        self.assertEqual(frozenset(self.ok(self.other.changes(new_cursor))[1]), frozenset({"fresh.example.com"}))

    def test_log_removed_or_truncated(self):
        """A cursor past the end of a removed or truncated log fires None and a usable new cursor."""
        self.touch("a.example.com")
        cursor, _ = self.ok(self.store.changes(None))
        os.unlink(self.path(CHANGES_LOG))
        new_cursor, names = self.ok(self.store.changes(cursor))
        self.assertIsNone(names)
        self.touch("b.example.com")
        self.assertEqual(frozenset(self.ok(self.store.changes(new_cursor))[1]), frozenset({"b.example.com"}))
        cursor, _ = self.ok(self.store.changes(None))
        with open(self.path(CHANGES_LOG), "w"):
            pass
        new_cursor, names = self.ok(self.store.changes(cursor))
        self.assertEqual((new_cursor, names), (0, None))
        self.touch("c.example.com")
        self.assertEqual(frozenset(self.ok(self.store.changes(new_cursor))[1]), frozenset({"c.example.com"}))

    def test_partial_line_waits(self):
        """A line still being written is not reported until it is complete."""
        self.touch("a.example.com")
        cursor, _ = self.ok(self.store.changes(None))
        with open(self.path(CHANGES_LOG), "ab") as f:
            f.write(b"half.exam")
        cursor, names = self.ok(self.store.changes(cursor))
        self.assertEqual(frozenset(names), frozenset())
        with open(self.path(CHANGES_LOG), "ab") as f:
            f.write(b"ple.com\n")
        self.assertEqual(frozenset(self.ok(self.store.changes(cursor))[1]), frozenset({"half.example.com"}))

    def test_garbage_line_means_everything_changed(self):
        """A line that is not a hostname makes the feed report None rather than guess."""
        self.touch("a.example.com")
        cursor, _ = self.ok(self.store.changes(None))
        with open(self.path(CHANGES_LOG), "ab") as f:
            f.write(b"../not a hostname\n")
        self.assertIsNone(self.ok(self.store.changes(cursor))[1])

    def test_absent_delete_records_no_change(self):
        """Deleting a certificate that is not there leaves the feed unchanged."""
        cursor, _ = self.ok(self.store.changes(None))
        self.ok(self.store.delete_certificate("absent.example.com"))
        self.assertEqual(self.ok(self.store.changes(cursor)), (cursor, {}))


class ConcurrencyTests(TestCase):
    """add_domain and leases stay exclusive when many threads race on one directory."""

    def setUp(self):
        self.pool = ThreadPool(minthreads=8, maxthreads=8, name="test-directory-race")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.root = os.path.join(temp_dir(self), "store")
        # A store per racer, as separate processes would have.
        self.stores = [DirectoryStore.create(reactor, self.root, threadpool=self.pool) for _ in range(8)]

    async def _race_add(self):
        results = await gatherResults(
            [s.add_domain(make_domain("race.example.com", DomainState.PENDING, attempts=i)) for i, s in enumerate(self.stores)]
        )
        return results

    def test_add_domain_creates_once(self):
        """Of eight concurrent add_domain calls for one hostname exactly one creates it; all see that record."""

        def check(results):
            created = [record for record, was_created in results if was_created]
            self.assertEqual(len(created), 1)
            self.assertEqual({record.attempts for record, _ in results}, {created[0].attempts})

        return ensureDeferred(self._race_add()).addCallback(check)

    def test_lease_granted_once(self):
        """Of eight concurrent acquire_lease calls by different holders exactly one succeeds."""
        d = gatherResults(
            [
                s.acquire_lease("issue:race.example.com", f"node-{i}", T0 + timedelta(seconds=60), T0)
                for i, s in enumerate(self.stores)
            ]
        )
        return d.addCallback(lambda results: self.assertEqual(sorted(results), [False] * 7 + [True]))

    async def _bump_many(self, store, writer, count):
        def bump(record):
            page = dict(record.page or {})
            page[writer] = page.get(writer, 0) + 1
            return attrs.evolve(record, page=page)

        for _ in range(count):
            await store.update_domain("race.example.com", bump)

    def test_update_domain_loses_no_update_between_threads(self):
        """Eight stores incrementing their own counter in one record through worker threads lose no increment."""
        first = self.stores[0]

        async def run():
            await first.add_domain(make_domain("race.example.com", page={}, version=0))
            await gatherResults(
                [ensureDeferred(self._bump_many(s, f"w{i}", 15)) for i, s in enumerate(self.stores)]
            )
            return await first.get_domain("race.example.com")

        def check(record):
            self.assertEqual(record.page, {f"w{i}": 15 for i in range(8)})
            self.assertEqual(record.version, 8 * 15)

        return ensureDeferred(run()).addCallback(check)


class ProcessRaceTests(SynchronousTestCase):
    """update_domain is a compare-and-set across processes sharing one directory."""

    def test_update_domain_loses_no_update_between_processes(self):
        """Two processes incrementing their own counter in one record 150 times each lose no increment."""
        root = os.path.join(temp_dir(self), "store")
        store = DirectoryStore(root, run_now)
        self.successResultOf(store.add_domain(make_domain("race.example.com", page={}, version=0)))
        helper = os.path.join(os.path.dirname(__file__), "store_update_helper.py")
        writers = [
            subprocess.Popen(
                [sys.executable, helper, root, "race.example.com", name, "150"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for name in ("a", "b")
        ]
        for writer in writers:
            writer.stdin.write(b"go\n")
            writer.stdin.flush()
        for writer in writers:
            out, err = writer.communicate(timeout=60)
            self.assertEqual((writer.returncode, out.strip()), (0, b"done"), err.decode("utf-8", "replace"))
        record = self.successResultOf(store.get_domain("race.example.com"))
        self.assertEqual(record.page, {"a": 150, "b": 150})
        self.assertEqual(record.version, 300)


class FactoryTests(SynchronousTestCase):
    """store_from_url builds the configured store or names what is wrong."""

    def test_directory_relative_to_base(self):
        """directory:PATH is a DirectoryStore at PATH under the base directory."""
        base = temp_dir(self)
        store = store_from_url("directory:var/store", MemoryReactor(), FilePath(base))
        self.assertIsInstance(store, DirectoryStore)
        self.assertEqual(store.path, FilePath(os.path.join(base, "var", "store")))
        store = store_from_url("directory:/srv/jobhost", MemoryReactor(), base)
        self.assertEqual(store.path, FilePath("/srv/jobhost"))

    def test_memory(self):
        """memory: is a fresh MemoryStore."""
        self.assertIsInstance(store_from_url("memory:", MemoryReactor(), "."), MemoryStore)

    def test_unsupported(self):
        """Other URLs raise ConfigError at [store] url listing the supported forms, without passwords."""
        for url in ("mysql://jobhost:s3cret@db/jobhost", "var/store", "directory:"):
            with self.assertRaises(ConfigError) as caught:
                store_from_url(url, MemoryReactor(), ".")
            self.assertEqual(caught.exception.path, ("store", "url"))
            self.assertNotIn("s3cret", str(caught.exception))
            self.assertIn("directory:", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            store_from_url("postgresql://jobhost:s3cret@db:port/x", MemoryReactor(), ".")
        self.assertIn("not a PostgreSQL URL", str(caught.exception))
        self.assertNotIn("s3cret", str(caught.exception))


class ToolTests(SynchronousTestCase):
    """jobhost-store commands against a directory store."""

    def setUp(self):
        self.dir = temp_dir(self)
        self.store = DirectoryStore(os.path.join(self.dir, "store"), run_now)
        self.clock = Clock()
        self.clock.advance(time.time())

    def run_tool(self, *argv):
        """Run one command; return (exit status, stdout, stderr)."""
        args = build_parser().parse_args(["--store", "directory:store", *argv])
        out, err = io.StringIO(), io.StringIO()
        code = self.successResultOf(ensureDeferred(run(self.clock, args, self.store, out, err)))
        return code, out.getvalue(), err.getvalue()

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def issue_files(self, hostname):
        key_pem, chain_pem = shared_ca().issue(hostname)
        return self.write("key.pem", key_pem), self.write("fullchain.pem", chain_pem)

    def test_put_certificate(self):
        """put-certificate stores the key and chain, records a change and prints no key material."""
        cursor, _ = self.successResultOf(self.store.changes(None))
        key, chain = self.issue_files("jobs.acme-corp.com")
        code, out, err = self.run_tool("put-certificate", "Jobs.Acme-Corp.com", "--key", key, "--chain", chain)
        self.assertEqual((code, err), (0, ""))
        record = self.successResultOf(self.store.get_certificate("jobs.acme-corp.com"))
        self.assertIn(record.fingerprint, out)
        self.assertNotIn("PRIVATE", out)
        self.assertEqual(frozenset(self.successResultOf(self.store.changes(cursor))[1]), frozenset({"jobs.acme-corp.com"}))

    def test_put_expired_certificate_warns(self):
        """An expired certificate is stored, with a one-line warning on stderr."""
        key, chain = self.issue_files("a.example.com")
        self.clock.advance(timedelta(days=365).total_seconds())
        code, _, err = self.run_tool("put-certificate", "a.example.com", "--key", key, "--chain", chain)
        self.assertEqual(code, 0)
        self.assertIn("warning", err)
        self.assertIn("expired", err)
        self.successResultOf(self.store.get_certificate("a.example.com"))

    def assert_one_line_error(self, result, *fragments):
        code, out, err = result
        self.assertEqual(code, EXIT_ERROR)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertNotIn("Traceback", err)
        for fragment in fragments:
            self.assertIn(fragment, err)

    def test_put_certificate_errors(self):
        """A mismatched key, a bad hostname, an unreadable file or a certificate for another name exit 2 with one line."""
        key, chain = self.issue_files("a.example.com")
        other_key = self.write("other.pem", shared_ca().issue("a.example.com")[0])
        self.assert_one_line_error(
            self.run_tool("put-certificate", "a.example.com", "--key", other_key, "--chain", chain), "does not match"
        )
        self.assert_one_line_error(
            self.run_tool("put-certificate", "../a", "--key", key, "--chain", chain), "invalid hostname"
        )
        self.assert_one_line_error(
            self.run_tool("put-certificate", "a.example.com", "--key", "/nonexistent/key.pem", "--chain", chain),
            "/nonexistent/key.pem",
        )
        self.assert_one_line_error(
            self.run_tool("put-certificate", "b.example.com", "--key", key, "--chain", chain), "a.example.com"
        )
        self.failureResultOf(self.store.get_certificate("a.example.com"), KeyError)

    def test_add_domain(self):
        """add-domain registers a hostname once, and --page stores the validated page."""
        code, out, _ = self.run_tool("add-domain", "jobs.acme-corp.com")
        self.assertEqual(code, 0)
        self.assertIn("registered jobs.acme-corp.com", out)
        record = self.successResultOf(self.store.get_domain("jobs.acme-corp.com"))
        self.assertEqual((record.state, record.created_at), (DomainState.PENDING, now(self.clock)))
        page = self.write("page.json", json.dumps({"company": "  Acme  ", "jobs": []}).encode())
        code, out, _ = self.run_tool("add-domain", "jobs.acme-corp.com", "--page", page)
        self.assertEqual(code, 0)
        self.assertIn("already registered", out)
        record = self.successResultOf(self.store.get_domain("jobs.acme-corp.com"))
        self.assertEqual(record.page, {"company": "Acme", "jobs": [], "version": 2})

    def test_add_domain_bad_page(self):
        """A page file that is not JSON or breaks the schema exits 2 naming the file; nothing is stored."""
        not_json = self.write("page.json", b"{")
        self.assert_one_line_error(self.run_tool("add-domain", "a.example.com", "--page", not_json), not_json)
        invalid = self.write("invalid.json", b'{"jobs": 3}')
        self.assert_one_line_error(self.run_tool("add-domain", "a.example.com", "--page", invalid), invalid, "company")
        self.failureResultOf(self.store.get_domain("a.example.com"), KeyError)

    def test_list_and_show(self):
        """list shows every hostname with state and expiry; show prints the facts but never the key."""
        key, chain = self.issue_files("a.example.com")
        self.assertEqual(self.run_tool("put-certificate", "a.example.com", "--key", key, "--chain", chain)[0], 0)
        self.assertEqual(self.run_tool("add-domain", "b.example.com")[0], 0)
        code, out, _ = self.run_tool("list")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual([line.split()[:2] for line in lines[1:]], [["a.example.com", "-"], ["b.example.com", "pending"]])
        code, out, _ = self.run_tool("show", "a.example.com")
        self.assertEqual(code, 0)
        doc = json.loads(out)
        record = self.successResultOf(self.store.get_certificate("a.example.com"))
        self.assertEqual(doc["certificate"]["fingerprint_sha256"], record.fingerprint)
        self.assertIsNone(doc["domain"])
        self.assertNotIn("PRIVATE", out)
        self.assertNotIn("key_pem", out)
        self.assert_one_line_error(self.run_tool("show", "absent.example.com"), "absent.example.com")

    def test_delete_certificate(self):
        """delete-certificate removes a stored (even corrupt) certificate and exits 2 when there is none."""
        key, chain = self.issue_files("a.example.com")
        self.run_tool("put-certificate", "a.example.com", "--key", key, "--chain", chain)
        code, out, _ = self.run_tool("delete-certificate", "a.example.com")
        self.assertEqual(code, 0)
        self.failureResultOf(self.store.get_certificate("a.example.com"), KeyError)
        self.assert_one_line_error(self.run_tool("delete-certificate", "a.example.com"), "no certificate")
        self.run_tool("put-certificate", "a.example.com", "--key", key, "--chain", chain)
        with open(os.path.join(self.dir, "store", "certificates", "a.example.com.json"), "w") as f:
            f.write("{")
        self.assertEqual(self.run_tool("delete-certificate", "a.example.com")[0], 0)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "store", "certificates", "a.example.com.json")))

    def test_command_line(self):
        """The real entry point works on a relative directory store and reports errors in one line with status 2."""
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        tool = [sys.executable, "-m", "jobhost.store.tool", "--store", "directory:var/store"]
        added = subprocess.run(
            [*tool, "add-domain", "jobs.acme-corp.com"], cwd=self.dir, env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual((added.returncode, added.stderr), (0, ""))
        store = DirectoryStore(os.path.join(self.dir, "var", "store"), run_now)
        self.assertEqual(self.successResultOf(store.get_domain("jobs.acme-corp.com")).state, DomainState.PENDING)
        bad = subprocess.run(
            [*tool, "show", "not a hostname"], cwd=self.dir, env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(bad.returncode, EXIT_ERROR)
        self.assertEqual(bad.stderr.count("\n"), 1, bad.stderr)
        self.assertIn("invalid hostname", bad.stderr)
        bad_url = subprocess.run(
            [sys.executable, "-m", "jobhost.store.tool", "--store", "mysql://db/x", "list"],
            cwd=self.dir, env=env, capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(bad_url.returncode, EXIT_ERROR)
        self.assertIn("unsupported store URL", bad_url.stderr)
        self.assertNotIn("Traceback", bad_url.stderr)
