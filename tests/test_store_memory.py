"""The IStore contract run against MemoryStore."""

from store_contract import StoreContractTests
from twisted.trial.unittest import TestCase

from jobhost.store.memory import MemoryStore


class MemoryStoreContractTests(StoreContractTests, TestCase):
    """MemoryStore keeps the IStore contract (it has no shared data, so no second-store tests)."""

    def make_store(self):
        return MemoryStore()
