"""An in-memory :class:`IStore` for callers' unit tests and single-process experiments."""

from __future__ import annotations

from datetime import datetime

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from jobhost.errors import StoreConflict, StoreError
from jobhost.store.interfaces import IStore
from jobhost.store.records import (
    by_expiry,
    Account,
    CertificateRecord,
    ChangeKind,
    Challenge,
    DomainRecord,
    DuePage,
    Lease,
    certificate_change_kinds,
    domain_change_kinds,
    earliest,
    is_due,
    later_attempt,
)

#: How often ``update_domain`` re-reads and re-applies a change after losing a race.
UPDATE_ATTEMPTS = 10


def _page(items: dict, after, limit, keep=lambda r: True, prefix=None) -> list:
    if limit is not None and limit <= 0:
        return []
    keys = sorted(
        k for k in items if (after is None or k > after) and (prefix is None or k.startswith(prefix))
    )
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

    The change feed is a list of ``(hostname, kinds)``; the cursor is its length.
    ``update_domain`` applies its change synchronously, so no other writer can
    come between its read and its write; ``before_write`` lets a test be that
    other writer (it is called, once per attempt, after the change was computed
    and before the version is checked).
    """

    def __init__(self) -> None:
        self.domains: dict[str, DomainRecord] = {}
        self.certificates: dict[str, CertificateRecord] = {}
        self.challenges: dict[str, Challenge] = {}
        self.accounts: dict[str, Account] = {}
        self.leases: dict[str, Lease] = {}
        self.budgets: dict[str, list[datetime]] = {}
        self.journal: list[tuple[str, frozenset[str]]] = []
        self.before_write = None

    def _journal(self, hostname: str, kinds: frozenset[str]) -> None:
        if kinds:
            self.journal.append((hostname, kinds))

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
        self._journal(record.hostname, domain_change_kinds(None, record))
        return succeed((record, True))

    def put_domain(self, record):
        old = self.domains.get(record.hostname)
        self.domains[record.hostname] = record
        self._journal(record.hostname, domain_change_kinds(old, record) or frozenset((ChangeKind.STATE,)))
        return succeed(None)

    def update_domain(self, hostname, change):
        for _ in range(UPDATE_ATTEMPTS):
            old = self.domains.get(hostname)
            if old is None:
                return fail(KeyError(hostname))
            try:
                new = change(old)
            except Exception:
                return fail()
            if new is old or new == old:
                return succeed(old)
            if new.hostname != hostname:
                return fail(StoreError(f"a change to {hostname} returned a record for {new.hostname!r}"))
            if self.before_write is not None:
                self.before_write(hostname)
            if self.domains.get(hostname) is not old:
                continue  # someone wrote meanwhile: compute again from what they stored
            new = attrs.evolve(new, version=old.version + 1)
            self.domains[hostname] = new
            self._journal(hostname, domain_change_kinds(old, new))
            return succeed(new)
        return fail(StoreConflict(f"{hostname} kept changing; gave up after {UPDATE_ATTEMPTS} attempts"))

    def delete_domain(self, hostname):
        if hostname not in self.domains:
            return fail(KeyError(hostname))
        old = self.domains.pop(hostname)
        self._journal(hostname, domain_change_kinds(old, None))
        return succeed(None)

    def list_domains(self, state=None, after=None, limit=None, include_broken=False, prefix=None):
        # Records are kept as objects, never as bytes that could fail to parse: none is broken.
        return succeed(
            _page(self.domains, after, limit, lambda r: state is None or r.state == state, prefix)
        )

    def due_domains(self, now, cursor=None, limit=500):
        # Looks at every record, in memory: pages by hostname.
        soonest = None
        for record in self.domains.values():
            soonest = earliest(soonest, later_attempt(record, now))
        page = _page(self.domains, cursor, limit, lambda r: is_due(r, now))
        more = limit is not None and len(page) >= limit
        return succeed(DuePage(tuple(page), page[-1].hostname if more and page else None, soonest))

    def record_counts(self, now, windows):
        # Nothing to gain over a walk of what is in memory: the caller walks.
        return succeed(None)

    def get_certificate(self, hostname):
        return self._get(self.certificates, hostname)

    def put_certificate(self, record):
        old = self.certificates.get(record.hostname)
        self.certificates[record.hostname] = record
        self._journal(record.hostname, certificate_change_kinds(old, record))
        return succeed(None)

    def set_renewal_info(self, hostname, fingerprint, ari):
        current = self.certificates.get(hostname)
        if current is None or current.fingerprint != fingerprint:
            return succeed(False)
        self.certificates[hostname] = attrs.evolve(current, ari=ari)
        self._journal(hostname, frozenset((ChangeKind.RENEWAL_INFO,)))
        return succeed(True)

    def delete_certificate(self, hostname):
        if self.certificates.pop(hostname, None) is not None:
            self._journal(hostname, frozenset((ChangeKind.CERTIFICATE,)))
        return succeed(None)

    def list_certificates(self, after=None, limit=None, include_broken=False):
        return succeed(_page(self.certificates, after, limit))

    def list_certificates_by_expiry(self, after=None, limit=None):
        return succeed(by_expiry(self.certificates.values(), after, limit))

    def changes(self, cursor):
        end = len(self.journal)
        if cursor is None:
            return succeed((end, {}))
        if cursor > end:
            return succeed((end, None))
        changed: dict[str, frozenset[str]] = {}
        for hostname, kinds in self.journal[cursor:]:
            changed[hostname] = changed.get(hostname, frozenset()) | kinds
        return succeed((end, changed))

    def watch_changes(self, callback):
        return lambda: None  # callers poll; nothing to push

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

    def list_accounts(self):
        return succeed([self.accounts[url] for url in sorted(self.accounts)])

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

    def check(self):
        # Nothing here can vanish from under the process.
        return succeed(True)

    def reserve_order(self, budget, now, window, limit, take=True):
        taken = [t for t in self.budgets.get(budget, []) if t > now - window]
        if len(taken) >= limit:
            self.budgets[budget] = taken
            return succeed(min(taken) + window)
        if take:
            self.budgets[budget] = taken + [now]
        return succeed(None)


__all__ = ["MemoryStore", "UPDATE_ATTEMPTS"]
