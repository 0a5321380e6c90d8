"""A writer killed with SIGKILL at random moments never leaves a partial certificate visible."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.internet.defer import maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from jobhost.store.directory import CERTIFICATES, DirectoryStore
from jobhost.store.records import CertificateRecord, certificate_record
from jobhost.testing import TestCA

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
HELPER = os.path.join(TESTS, "store_crash_helper.py")
HOSTNAMES = ("a.example.com", "b.example.com", "c.example.com")
KILLS = 20


class KilledWriterTests(SynchronousTestCase):
    """DirectoryStore's writes are atomic even when the writing process dies mid-write."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="jobhost-store-crash-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.root = os.path.join(self.dir, "store")
        ca = TestCA.create("crash test CA")
        self.records = {
            hostname: [certificate_record(hostname, *ca.issue(hostname)) for _ in range(2)]
            for hostname in HOSTNAMES
        }
        self.records_file = os.path.join(self.dir, "records.json")
        fd = os.open(self.records_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({h: [r.to_json() for r in pair] for h, pair in self.records.items()}, f)
        self.store = DirectoryStore(self.root, lambda f, *args: maybeDeferred(f, *args))

    def start_writers(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        parent = subprocess.Popen(
            [sys.executable, HELPER, self.root, self.records_file],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

        def stop():
            parent.kill()
            parent.communicate(timeout=30)

        self.addCleanup(stop)
        self.assertEqual(parent.stdout.readline(), b"loaded\n")
        return parent

    def kill_writer_at_random(self, parent: subprocess.Popen, rng: random.Random) -> None:
        """Start one writer, SIGKILL it after a random moment, and check it died of that."""
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        ready = parent.stdout.readline().split()
        self.assertEqual(ready[:1], [b"ready"])
        time.sleep(rng.uniform(0.0, 0.06))
        os.kill(int(ready[1]), signal.SIGKILL)
        status = int(parent.stdout.readline().split()[1])
        self.assertTrue(os.WIFSIGNALED(status), f"writer exited with status {status}, see stderr")
        self.assertEqual(os.WTERMSIG(status), signal.SIGKILL)

    def check_store(self, context: str) -> int:
        """Every visible certificate file is one of the complete records; return the temp files seen."""
        directory = os.path.join(self.root, CERTIFICATES)
        names = os.listdir(directory) if os.path.isdir(directory) else []
        temps = [n for n in names if n.startswith(".")]
        visible = sorted(n for n in names if not n.startswith("."))
        for name in visible:
            hostname = name[: -len(".json")]
            self.assertIn(hostname, HOSTNAMES, context)
            with open(os.path.join(directory, name)) as f:
                record = CertificateRecord.from_json(json.load(f))  # checks key matches leaf
            self.assertIn(record, self.records[hostname], context)
            self.assertEqual(self.successResultOf(self.store.get_certificate(hostname)), record, context)
        listed = self.successResultOf(self.store.list_certificates())
        self.assertEqual([r.hostname + ".json" for r in listed], visible, context)
        _, changed = self.successResultOf(self.store.changes(0))
        if changed is not None:
            self.assertLessEqual(frozenset(changed), frozenset(HOSTNAMES), context)
        return len(temps)

    def test_sigkill_never_exposes_partial_files(self):
        """After each of 20 SIGKILLs mid-loop, every certificate file parses, matches its key and is a record written."""
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        parent = self.start_writers()
        temps = 0
        for kill in range(KILLS):
            self.kill_writer_at_random(parent, rng)
            temps += self.check_store(f"seed {seed}, after kill {kill + 1}")
        print(f"{KILLS} kills, {temps} leftover temp files seen (seed {seed})")
        # The writers got far enough to write every hostname at least once.
        self.assertEqual(
            sorted(r.hostname for r in self.successResultOf(self.store.list_certificates())),
            sorted(HOSTNAMES),
            f"seed {seed}",
        )
