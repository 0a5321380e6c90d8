"""The IStore contract run against MemoryStore, and its hook for playing the other writer."""

import attrs
from store_contract import StoreContractTests, make_domain
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jobhost.errors import StoreConflict
from jobhost.store.memory import MemoryStore


class MemoryStoreContractTests(StoreContractTests, TestCase):
    """MemoryStore keeps the IStore contract (it has no shared data, so no second-store tests)."""

    def make_store(self):
        return MemoryStore()


class BeforeWriteTests(SynchronousTestCase):
    """``before_write`` lets a test be the writer that comes between update_domain's read and its write."""

    def setUp(self):
        self.store = MemoryStore()
        self.successResultOf(self.store.add_domain(make_domain("a.example.com", page={"title": "old"})))

    def test_a_write_from_before_write_is_not_lost(self):
        """A page written from before_write survives: update_domain re-reads and re-applies its change on top of it."""
        calls = []

        def other_writer(hostname):
            calls.append(hostname)
            if len(calls) == 1:
                record = self.store.domains[hostname]
                self.store.put_domain(attrs.evolve(record, page={"title": "new"}, version=record.version + 1))

        self.store.before_write = other_writer
        stored = self.successResultOf(self.store.update_domain("a.example.com", lambda r: attrs.evolve(r, attempts=9)))
        self.assertEqual(calls, ["a.example.com", "a.example.com"])
        self.assertEqual((stored.page, stored.attempts, stored.version), ({"title": "new"}, 9, 2))

    def test_a_writer_before_every_write_makes_update_domain_give_up(self):
        """When before_write writes every time, update_domain fails with StoreConflict and its change is never stored."""

        def other_writer(hostname):
            record = self.store.domains[hostname]
            self.store.put_domain(attrs.evolve(record, version=record.version + 1))

        self.store.before_write = other_writer
        self.failureResultOf(
            self.store.update_domain("a.example.com", lambda r: attrs.evolve(r, attempts=9)), StoreConflict
        )
        self.assertNotEqual(self.store.domains["a.example.com"].attempts, 9)
