"""An in-memory :class:`IStore` for callers' unit tests and single-process experiments."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from jobhost.store.interfaces import IStore
from jobhost.store.records import Account, CertificateRecord, Challenge, DomainRecord, Lease


def _page(items: dict, after, limit, keep=lambda r: True) -> list:
    if limit is not None and limit <= 0:
        return []
    keys = sorted(k for k in items if after is None or k > after)
    out = []
    for k in keys:
        if keep(items[k]):
            out.append(items[k])
            if limit is not None and len(out) >= limit:
                break
    return out


@implementer(IStore)
class MemoryStore:
    """Keeps every record in dictionaries; each call completes synchronously.

    The change feed is a list of hostnames; the cursor is its length.
    """

    def __init__(self) -> None:
        self.domains: dict[str, DomainRecord] = {}
        self.certificates: dict[str, CertificateRecord] = {}
        self.challenges: dict[str, Challenge] = {}
        self.accounts: dict[str, Account] = {}
        self.leases: dict[str, Lease] = {}
        self.journal: list[str] = []

    @staticmethod
    def _get(items: dict, key: str) -> Deferred:
        try:
            return succeed(items[key])
        except KeyError:
            return fail(KeyError(key))

    def get_domain(self, hostname):
        return self._get(self.domains, hostname)

    def add_domain(self, record):
        existing = self.domains.get(record.hostname)
        if existing is not None:
            return succeed((existing, False))
        self.domains[record.hostname] = record
        self.journal.append(record.hostname)
        return succeed((record, True))

    def put_domain(self, record):
        self.domains[record.hostname] = record
        self.journal.append(record.hostname)
        return succeed(None)

    def delete_domain(self, hostname):
        if hostname not in self.domains:
            return fail(KeyError(hostname))
        del self.domains[hostname]
        self.journal.append(hostname)
        return succeed(None)

    def list_domains(self, state=None, after=None, limit=None):
        return succeed(
            _page(self.domains, after, limit, lambda r: state is None or r.state == state)
        )

    def get_certificate(self, hostname):
        return self._get(self.certificates, hostname)

    def put_certificate(self, record):
        self.certificates[record.hostname] = record
        self.journal.append(record.hostname)
        return succeed(None)

    def delete_certificate(self, hostname):
        if self.certificates.pop(hostname, None) is not None:
            self.journal.append(hostname)
        return succeed(None)

    def list_certificates(self, after=None, limit=None):
        return succeed(_page(self.certificates, after, limit))

    def changes(self, cursor):
        end = len(self.journal)
        if cursor is None:
            return succeed((end, frozenset()))
        if cursor > end:
            return succeed((end, None))
        return succeed((end, frozenset(self.journal[cursor:])))

    def put_challenge(self, challenge):
        self.challenges[challenge.token] = challenge
        return succeed(None)

    def get_challenge(self, token):
        return self._get(self.challenges, token)

    def delete_challenge(self, token):
        self.challenges.pop(token, None)
        return succeed(None)

    def get_account(self, directory_url):
        return self._get(self.accounts, directory_url)

    def put_account(self, account):
        self.accounts[account.directory_url] = account
        return succeed(None)

    def acquire_lease(self, name, holder, expires_at, now):
        current = self.leases.get(name)
        if current is None or current.holder == holder or current.expires_at <= now:
            self.leases[name] = Lease(name=name, holder=holder, expires_at=expires_at)
            return succeed(True)
        return succeed(False)

    def release_lease(self, name, holder):
        current = self.leases.get(name)
        if current is not None and current.holder == holder:
            del self.leases[name]
        return succeed(None)


__all__ = ["MemoryStore"]
