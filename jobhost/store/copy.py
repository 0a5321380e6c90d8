"""
Copy every record from one store to another (``jobhost-store copy``).

Domain records, certificate records and ACME accounts are copied as they are
(a domain keeps its ``version`` and history); challenges, leases and the order
budget are not: they only mean something while a daemon runs.  Every write is
an upsert, so a copy that was interrupted can simply be run again: it
overwrites what it wrote before and adds nothing twice.  A record the source
cannot read is not copied; it is counted and named in the report.

:class:`Progress` reports ``done/total, rate, time left`` on a terminal, and
one line at the end otherwise.
"""

from __future__ import annotations

import time
from typing import Callable, TextIO

import attrs
from twisted.internet.defer import gatherResults

from jobhost.errors import BrokenRecord
from jobhost.store.interfaces import IStore

#: Records read from the source per request.
PAGE_SIZE = 500
#: Writes in flight at once (the target's pool or thread pool queues the rest).
CONCURRENCY = 16


@attrs.define
class CopyReport:
    """What a copy did: records copied by kind, and those skipped with why."""

    domains: int
    certificates: int
    accounts: int
    skipped: list[tuple[str, str]] = attrs.field(factory=list)

    @property
    def copied(self) -> int:
        return self.domains + self.certificates + self.accounts


@attrs.define
class Progress:
    """Shows ``done/total``, the rate and the time left on ``stream``.

    On a terminal the line is redrawn at most ``every`` seconds; elsewhere only
    :meth:`finish` writes (one line), so logs stay short.
    """

    stream: TextIO
    what: str
    every: float = 0.2
    clock: Callable[[], float] = time.monotonic
    total: int = 0
    done: int = 0
    _started: float = attrs.field(init=False, default=0.0)
    _shown: float = attrs.field(init=False, default=0.0)

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        self._started = self._shown = self.clock()

    def line(self) -> str:
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"{self.what}: {self.done}/{self.total} records, {rate:,.0f}/s, {left:,.0f} s left"

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        if self.stream.isatty() and now - self._shown >= self.every:
            self._shown = now
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def finish(self) -> None:
        prefix = "\r" if self.stream.isatty() else ""
        self.stream.write(prefix + self.line() + ("\033[K" if prefix else "") + "\n")
        self.stream.flush()


async def read_all(list_page) -> list:
    """Every record of a paged listing: ``list_page(after)`` asks for :data:`PAGE_SIZE` after a hostname."""
    out: list = []
    after = None
    while True:
        batch = await list_page(after)
        out.extend(batch)
        if len(batch) < PAGE_SIZE:
            return out
        last = batch[-1]
        after = last.key if isinstance(last, BrokenRecord) else last.hostname


async def _in_batches(records: list, write, progress: Progress | None) -> None:
    for start in range(0, len(records), CONCURRENCY):
        chunk = records[start : start + CONCURRENCY]
        await gatherResults([write(r) for r in chunk], consumeErrors=True).addErrback(
            lambda f: f.value.subFailure
        )
        if progress is not None:
            progress.advance(len(chunk))


async def copy_store(source: IStore, target: IStore, progress: Progress | None = None) -> CopyReport:
    """Copy every domain, certificate and account from ``source`` to ``target``.

    Returns:
        The :class:`CopyReport`.  A failed write fails the copy (what was written
        stays written; running it again completes it).
    """
    domains = await read_all(lambda after: source.list_domains(after=after, limit=PAGE_SIZE, include_broken=True))
    certificates = await read_all(
        lambda after: source.list_certificates(after=after, limit=PAGE_SIZE, include_broken=True)
    )
    accounts = await source.list_accounts()
    skipped = [
        (f"{kind} {record.key}", record.reason)
        for kind, records in (("domain", domains), ("certificate", certificates))
        for record in records
        if isinstance(record, BrokenRecord)
    ]
    domains = [r for r in domains if not isinstance(r, BrokenRecord)]
    certificates = [r for r in certificates if not isinstance(r, BrokenRecord)]
    if progress is not None:
        progress.start(len(domains) + len(certificates) + len(accounts))
    await _in_batches(domains, target.put_domain, progress)
    await _in_batches(certificates, target.put_certificate, progress)
    await _in_batches(accounts, target.put_account, progress)
    if progress is not None:
        progress.finish()
    return CopyReport(len(domains), len(certificates), len(accounts), skipped)


__all__ = ["CONCURRENCY", "CopyReport", "PAGE_SIZE", "Progress", "copy_store", "read_all"]
