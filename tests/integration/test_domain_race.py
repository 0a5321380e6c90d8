"""A page edit from another process while an issuing attempt waits on the CA: both survive (directory store)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from daemon import store_tool
from jobhost.domains import DomainService
from jobhost.issuing import IssuingService
from jobhost.store.directory import DirectoryStore
from jobhost.store.records import DomainState
from jobhost.testing import FakeAcmeClient, TestCA

HOST = "jobs.acme-corp.test"


class CrossProcessPageRaceTests(TestCase):
    """The issuing service in this process, the page edit in a ``jobhost-store`` process, one directory store."""

    timeout = 60

    def setUp(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="jobhost-race-"))
        pool = ThreadPool(minthreads=0, maxthreads=4, name="race-store")
        pool.start()
        self.addCleanup(pool.stop)
        self.store = DirectoryStore.create(reactor, self.workdir / "var" / "store", threadpool=pool)
        self.domains = DomainService(store=self.store, clock=reactor)
        self.client = FakeAcmeClient(ca=TestCA.create("race CA"), clock=reactor)
        self.service = IssuingService(
            store=self.store, domains=self.domains, client=self.client, clock=reactor,
            directory_url=self.client.directory_url, holder="node-a", random=lambda: 0.0,
        )
        self.addCleanup(self.service.stopService)

    async def _wait_for(self, condition, what):
        for _ in range(500):
            if condition():
                return
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"timed out waiting for {what}")

    async def test_page_edit_by_another_process_during_an_attempt(self):
        """jobhost-store replaces the page while the order is paused; the page and the issued state are both stored."""
        await self.domains.register(HOST, {"company": "Old Name", "jobs": []})
        self.client.pause()
        self.service.startService()
        await self._wait_for(lambda: self.client._paused, "the order to reach the CA")
        started = await self.store.get_domain(HOST)
        self.assertEqual(started.state, DomainState.ISSUING)
        page_file = self.workdir / "page.json"
        page_file.write_text(json.dumps({"company": "New Name", "jobs": []}))
        done = store_tool(self.workdir, "add-domain", HOST, "--page", str(page_file))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("page replaced", done.stdout)
        self.client.resume()
        await self.service.when_idle()
        record = await self.store.get_domain(HOST)
        self.assertEqual(record.state, DomainState.ACTIVE)
        self.assertEqual(record.page["company"], "New Name")
        self.assertGreater(record.version, started.version + 1, "the tool's write and the attempt's both counted")
        certificate = await self.store.get_certificate(HOST)
        self.assertEqual(certificate.names, (HOST,))
