"""
The directory store: every record is one JSON file an operator can read and back up.

Layout under the store's root (directories are created 0700 on first use)::

    domains/<hostname>.json          domain records
    certificates/<hostname>.json     certificate records (0600: they hold the key)
    challenges/<token>.json          HTTP-01 challenges
    accounts/<sha256 of URL>.json    ACME accounts, one per CA directory URL (0600)
    leases/<name>.json               leases; leases/<name>.lock is their flock file
    budgets/<name>.json              order budgets (times of recent orders); <name>.lock
    locks/<hostname>.lock            flock file of every writer of that domain record
    changes.log                      the change feed (see below)
    changes.log.1                    the previous change feed, after compaction
    changes.lock                     flock file serialising appends and compaction
    jobhost-store.json               the marker: format, layout version and store id (see below)

Rules this module keeps:

- Every write goes to a sibling temp file (``.<name>.<random>.tmp``, created
  with its final mode), is flushed and fsynced, renamed over the target, and
  the directory is fsynced.  Readers see the old file or the new one, never a
  part.  Leftover temp files (a writer killed mid-write) start with a dot and
  are ignored by every reader.
- A file that cannot be parsed is never served: ``get_*`` fails with
  :class:`BrokenRecord` (a :class:`StoreError`) naming the file; ``list_*``
  skips it and logs an error naming it (or, with ``include_broken``, lists
  the BrokenRecord in its place), so one bad file does not stop every other
  hostname being served.
- Hostnames and tokens are re-validated before they become part of a path, so
  nothing can name a file outside the store.
- Every blocking call runs through the injected ``run_in_thread``, never on
  the reactor thread.
- Every write of a domain record (``update_domain``'s compare-and-set,
  ``put_domain``, ``delete_domain``) holds ``flock`` on
  ``locks/<hostname>.lock``, so a compare-and-set sees every other writer.

The marker: :meth:`DirectoryStore.open` (which :meth:`DirectoryStore.create`
runs when the reactor starts) creates the root and ``jobhost-store.json``
unless present and remembers the store id it holds; :meth:`DirectoryStore.check`
then fails, naming what is missing, when the directory or the marker is gone
or the marker names another store.  Writes never create the marker, so a
store directory deleted under a running daemon is not silently replaced by
an empty one that looks healthy.

The change feed: each put/delete of a certificate or domain record appends
the hostname to ``changes.log``; cursors are virtual byte offsets that survive
compaction.  The log's format, appending and compaction, and every other
file-level step (atomic write, exclusive create, ``flock``, reading a record)
are :mod:`jobhost.store.files`; this module owns the layout and the
:class:`DirectoryStore` built on them.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from jobhost.errors import BrokenRecord, StoreError
from jobhost.hostnames import is_normalised_hostname
from jobhost.store.files import (
    PUBLIC_MODE,
    SECRET_MODE,
    append_change,
    create_exclusively,
    encode_record,
    ensure_directory,
    flocked,
    fsync_directory,
    read_changes,
    read_record,
    write_atomically,
)
from jobhost.store.interfaces import IStore
from jobhost.timeutil import from_iso, to_iso
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

DOMAINS = "domains"
CERTIFICATES = "certificates"
CHALLENGES = "challenges"
ACCOUNTS = "accounts"
LEASES = "leases"
BUDGETS = "budgets"
LOCKS = "locks"


#: The marker file in the store's root (see the module docstring).
MARKER = "jobhost-store.json"
#: What the marker's ``format`` field says.
MARKER_FORMAT = "jobhost-directory-store"
#: The layout described in the module docstring; a marker naming a newer one is refused.
LAYOUT_VERSION = 1

#: Compact the change log once it grows past this many bytes.
DEFAULT_MAX_LOG_BYTES = 1 << 20

_JSON = ".json"
_TOKEN = re.compile(r"\A[A-Za-z0-9_-]{1,256}\Z")
_LEASE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:@=+-]{0,199}\Z")


def _as_filepath(value: FilePath | str) -> FilePath:
    if isinstance(value, FilePath):
        return value
    return FilePath(os.fspath(value))


def is_token(value: object) -> bool:
    """True when ``value`` is base64url text (what an HTTP-01 token must be)."""
    return isinstance(value, str) and _TOKEN.match(value) is not None


def lease_file_stem(name: str) -> str:
    """The file name (without extension) a lease called ``name`` is kept under.

    Readable names (letters, digits and ``._:@=+-``, starting with a letter or
    digit) are used as they are; anything else becomes ``_`` plus the SHA-256
    of the name, which cannot collide with a readable one.
    """
    if _LEASE_NAME.match(name):
        return name
    return "_" + hashlib.sha256(name.encode("utf-8")).hexdigest()


def _parse_marker(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("format") != MARKER_FORMAT:
        raise ValueError(f"its format is {doc.get('format')!r}, not {MARKER_FORMAT!r}")
    if not isinstance(doc.get("store_id"), str) or not doc["store_id"]:
        raise ValueError("it has no store_id")
    version = doc.get("layout_version")
    if not isinstance(version, int) or version > LAYOUT_VERSION:
        raise ValueError(f"its layout_version {version!r} is not one this jobhost reads (up to {LAYOUT_VERSION})")
    return doc


def account_file_stem(directory_url: str) -> str:
    """The file name (without extension) of the account for ``directory_url``."""
    return hashlib.sha256(directory_url.encode("utf-8")).hexdigest()


@implementer(IStore)
@attrs.define
class DirectoryStore:
    """An :class:`IStore` kept as JSON files in one directory tree (see the module docstring).

    Several processes may share one directory: writes are atomic renames,
    ``add_domain`` uses an exclusive hard link, leases and the change log are
    serialised with ``flock``.

    Attributes:
        path: The store's root directory (created 0700 on first write).
        run_in_thread: ``f, *args -> Deferred`` running blocking ``f`` off the
            reactor thread; tests may pass one that calls ``f`` at once.
        max_log_bytes: Compact ``changes.log`` once it grows past this size.
    """

    path: FilePath = attrs.field(converter=_as_filepath)
    run_in_thread: Callable[..., Deferred]
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES
    _store_id: str | None = attrs.field(default=None, init=False, repr=False)
    _opening: list[Deferred] | None = attrs.field(default=None, init=False, repr=False)

    _log = Logger()

    @classmethod
    def create(
        cls,
        reactor,
        path: FilePath | str,
        threadpool: ThreadPool | None = None,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
    ) -> DirectoryStore:
        """Build a store whose disk I/O runs in ``threadpool``.

        Without a thread pool, a small one is made; it starts when the reactor
        runs (not before: ``twistd`` may fork after building the service and
        threads do not survive a fork) and stops at reactor shutdown.  When the
        reactor runs the store is also opened (:meth:`open`); a failure to open
        it is logged, and :meth:`check` then reports it.

        Args:
            reactor: Provides ``callFromThread``, ``callWhenRunning`` and
                ``addSystemEventTrigger``.
            path: The store's root directory.
            threadpool: An already managed pool to use instead.
        """
        if threadpool is None:
            threadpool = ThreadPool(minthreads=0, maxthreads=4, name="jobhost-directory-store")
            reactor.callWhenRunning(threadpool.start)
            reactor.addSystemEventTrigger("during", "shutdown", threadpool.stop)
        store = cls(path, partial(deferToThreadPool, reactor, threadpool), max_log_bytes)
        reactor.callWhenRunning(store._open_at_start)
        return store

    # -- the marker: is the store really there? -------------------------------------------

    def _marker_path(self) -> str:
        return os.path.join(self._root, MARKER)

    def _open_sync(self) -> tuple[str, bool]:
        """Create the root and the marker unless present; return ``(store id, created)``."""
        ensure_directory(self._root)
        doc = {"format": MARKER_FORMAT, "layout_version": LAYOUT_VERSION, "store_id": secrets.token_hex(16)}
        # Exclusive creation: two processes opening a new store at once agree on one id.
        created = create_exclusively(self._marker_path(), encode_record(doc), PUBLIC_MODE)
        return read_record(self._marker_path(), _parse_marker, MARKER)["store_id"], created

    def open(self) -> Deferred:
        """Make sure the store exists and carries its marker; fire with the store id.

        Creates the root directory (0700) and ``jobhost-store.json`` when they are
        missing (a new store, or one made before markers existed) and remembers the
        store id, so that :meth:`check` can tell this store from a replacement.
        Fails with StoreError naming the file when the marker cannot be written,
        or with BrokenRecord when the file there is not a marker this jobhost reads.
        """
        waiters: list[Deferred] = []
        self._opening = waiters

        def opened(result: tuple[str, bool]) -> str:
            store_id, created = result
            self._store_id = store_id
            self._log.debug(
                "{action} the directory store at {path} (store id {store_id})",
                action="Created" if created else "Opened",
                path=self._root,
                store_id=store_id,
            )
            return store_id

        def done(result: Any) -> Any:
            if self._opening is waiters:
                self._opening = None
            for waiter in waiters:
                waiter.callback(None)
            return result

        return self.run_in_thread(self._open_sync).addCallback(opened).addBoth(done)

    def _open_at_start(self) -> None:
        def failed(failure) -> None:
            self._log.error(
                "Cannot open the directory store at {path}: {reason}", path=self._root, reason=str(failure.value)
            )

        self.open().addErrback(failed)

    def _check_sync(self, store_id: str | None) -> bool:
        if not os.path.isdir(self._root):
            raise StoreError(f"the store directory {self._root} is missing")
        try:
            marker = read_record(self._marker_path(), _parse_marker, MARKER)
        except KeyError:
            raise StoreError(
                f"{self._marker_path()} is missing: the store directory was deleted or replaced, "
                "or the store was never opened"
            ) from None
        if store_id is not None and marker["store_id"] != store_id:
            raise StoreError(
                f"{self._marker_path()} names store {marker['store_id']}, not {store_id}: "
                "the store directory was replaced"
            )
        return True

    def check(self) -> Deferred:
        """Fire with True when the store directory and its marker are in place (see ``IStore.check``).

        Fails with StoreError naming what is missing: the directory, the marker, or
        (after :meth:`open`) the store id it had.  Waits for an :meth:`open` in progress.
        """
        if self._opening is not None:
            waiter: Deferred = Deferred()
            self._opening.append(waiter)
            return waiter.addCallback(lambda _: self.run_in_thread(self._check_sync, self._store_id))
        return self.run_in_thread(self._check_sync, self._store_id)

    # -- paths ---------------------------------------------------------------------------

    @property
    def _root(self) -> str:
        return os.fsdecode(self.path.path)

    def _dir(self, kind: str) -> str:
        return os.path.join(self._root, kind)

    def _file(self, kind: str, stem: str) -> str:
        return os.path.join(self._root, kind, stem + _JSON)

    def _ensure(self, kind: str) -> str:
        """Create the root and ``kind`` directories (0700) if missing; return the latter."""
        ensure_directory(self._root)
        directory = self._dir(kind)
        ensure_directory(directory)
        return directory

    def _write(self, kind: str, stem: str, doc: dict[str, Any], mode: int) -> None:
        directory = self._ensure(kind)
        write_atomically(os.path.join(directory, stem + _JSON), encode_record(doc), mode)

    def _checked_hostname_for_write(self, hostname: object) -> str:
        if not is_normalised_hostname(hostname):
            raise StoreError(f"refusing to store a record under {hostname!r}: not a normalised hostname")
        return hostname  # type: ignore[return-value]

    # -- generic record operations (worker thread) --------------------------------------

    @staticmethod
    def _parser(cls_, key_field: str, key: str) -> Callable[[dict[str, Any]], Any]:
        def parse(doc: dict[str, Any]) -> Any:
            record = cls_.from_json(doc)
            if getattr(record, key_field) != key:
                raise ValueError(f"it holds {key_field} {getattr(record, key_field)!r}, not {key!r}")
            return record

        return parse

    def _list_sync(
        self, kind: str, cls_, after: str | None, limit: int | None, keep, include_broken: bool,
        prefix: str | None = None,
    ) -> tuple[list[Any], list[tuple[str, str]]]:
        """Return ``(records, problems)``: records by hostname, and files skipped with why.

        With ``include_broken``, a file that was read but does not parse or verify
        is listed in its place as its :class:`BrokenRecord` (not filtered by ``keep``)
        instead of being a problem.
        """
        directory = self._dir(kind)
        if limit is not None and limit <= 0:
            return [], []
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return [], []
        except OSError as e:
            raise StoreError(f"cannot list {directory}: {e.strerror}") from None
        stems = sorted(
            n[: -len(_JSON)]
            for n in names
            if n.endswith(_JSON) and not n.startswith(".") and (not prefix or n.startswith(prefix))
        )
        records: list[Any] = []
        problems: list[tuple[str, str]] = []
        for stem in stems:
            if after is not None and stem <= after:
                continue
            path = os.path.join(directory, stem + _JSON)
            if not is_normalised_hostname(stem):
                problems.append((path, f"{path}: the file name is not a normalised hostname"))
                continue
            try:
                record = read_record(path, self._parser(cls_, "hostname", stem), stem)
            except KeyError:
                continue  # deleted while we were listing
            except BrokenRecord as e:
                if not include_broken:
                    problems.append((path, e.message))
                    continue
                record = e
            except StoreError as e:
                problems.append((path, e.message))
                continue
            if keep is not None and not isinstance(record, BrokenRecord) and not keep(record):
                continue
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
        return records, problems

    def _report_problems(self, result: tuple[list[Any], list[tuple[str, str]]]) -> list[Any]:
        records, problems = result
        for path, reason in problems:
            # ``reason`` names the file too; ``file`` keeps it as a field for JSON logs.
            self._log.error("Skipping a store file: {reason}", file=path, reason=reason)
        return records

    def _report_change_failure(self, failure_message: str | None) -> None:
        if failure_message is not None:
            self._log.error(
                "Stored the change but could not record it in the change feed: {reason}",
                reason=failure_message,
            )
        return None

    # -- domain records -----------------------------------------------------------------

    def _get_domain_sync(self, hostname: str) -> DomainRecord:
        if not is_normalised_hostname(hostname):
            raise KeyError(hostname)
        return read_record(
            self._file(DOMAINS, hostname), self._parser(DomainRecord, "hostname", hostname), hostname
        )

    def get_domain(self, hostname: str) -> Deferred:
        """Fire with the :class:`DomainRecord` for ``hostname``.

        Fails with KeyError when there is none (or ``hostname`` is not a
        normalised hostname), BrokenRecord naming the file when it is corrupt,
        StoreError when it cannot be read.
        """
        return self.run_in_thread(self._get_domain_sync, hostname)

    def _add_domain_sync(self, record: DomainRecord) -> tuple[tuple[DomainRecord, bool], str | None]:
        hostname = self._checked_hostname_for_write(record.hostname)
        self._ensure(DOMAINS)
        path = self._file(DOMAINS, hostname)
        if create_exclusively(path, encode_record(record.to_json()), PUBLIC_MODE):
            return (record, True), self._record_change(hostname, domain_change_kinds(None, record))
        try:
            existing = self._get_domain_sync(hostname)
        except KeyError:
            # Deleted between our link attempt and the read: that is a lost race, not an error.
            raise StoreError(f"{path} was deleted while registering {hostname}; try again") from None
        return (existing, False), None

    def add_domain(self, record: DomainRecord) -> Deferred:
        """Store ``record`` unless its hostname has one, atomically across processes.

        Fires with ``(stored_record, created)``.  Fails with StoreError when
        the hostname is not normalised or the disk refuses.
        """
        d = self.run_in_thread(self._add_domain_sync, record)

        def report(result):
            outcome, change_failure = result
            self._report_change_failure(change_failure)
            return outcome

        return d.addCallback(report)

    @contextmanager
    def _domain_locked(self, hostname: str) -> Iterator[None]:
        """Hold the lock every writer of ``hostname``'s domain record takes."""
        directory = self._ensure(LOCKS)
        with flocked(os.path.join(directory, hostname + ".lock")):
            yield

    def _read_domain_or_none(self, hostname: str) -> DomainRecord | None:
        try:
            return self._get_domain_sync(hostname)
        except KeyError:
            return None

    def _put_domain_sync(self, record: DomainRecord) -> str | None:
        hostname = self._checked_hostname_for_write(record.hostname)
        with self._domain_locked(hostname):
            old = self._read_domain_or_none(hostname)
            self._write(DOMAINS, hostname, record.to_json(), PUBLIC_MODE)
        return self._record_change(hostname, domain_change_kinds(old, record) or frozenset((ChangeKind.STATE,)))

    def put_domain(self, record: DomainRecord) -> Deferred:
        """Create or replace the domain record as it is (for tools copying stores); fire with None."""
        return self.run_in_thread(self._put_domain_sync, record).addCallback(self._report_change_failure)

    def _update_domain_sync(
        self, hostname: str, change: Callable[[DomainRecord], DomainRecord]
    ) -> tuple[DomainRecord, str | None]:
        """Read, change and write the record under its lock; return it and any change-log failure."""
        if not is_normalised_hostname(hostname):
            raise KeyError(hostname)
        with self._domain_locked(hostname):
            old = self._get_domain_sync(hostname)
            new = change(old)
            if new is old or new == old:
                return old, None
            if new.hostname != hostname:
                raise StoreError(f"a change to {hostname} returned a record for {new.hostname!r}")
            new = attrs.evolve(new, version=old.version + 1)
            self._write(DOMAINS, hostname, new.to_json(), PUBLIC_MODE)
        return new, self._record_change(hostname, domain_change_kinds(old, new))

    def update_domain(self, hostname: str, change: Callable[[DomainRecord], DomainRecord]) -> Deferred:
        """Apply the pure ``change`` to the stored record atomically (see ``IStore.update_domain``).

        Read, ``change`` and write all happen in one worker-thread call holding
        the record's ``flock``, which every writer of the record takes in every
        process: no other write can come between, so there is nothing to retry
        and ``change`` is called exactly once (in the worker thread: it must be
        pure).  The record's ``version`` still goes up by one per write, so
        stores and tools that compare versions see every change.
        """

        def report(result: tuple[DomainRecord, str | None]) -> DomainRecord:
            record, change_failure = result
            self._report_change_failure(change_failure)
            return record

        return self.run_in_thread(self._update_domain_sync, hostname, change).addCallback(report)

    def _unlink(self, kind: str, stem: str) -> bool:
        """Delete one record file durably; False when it was not there."""
        path = self._file(kind, stem)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreError(f"cannot delete {path}: {e.strerror}") from None
        fsync_directory(self._dir(kind))
        return True

    def _delete_domain_sync(self, hostname: str) -> str | None:
        if not is_normalised_hostname(hostname):
            raise KeyError(hostname)
        with self._domain_locked(hostname):
            old = self._read_domain_or_none(hostname)
            if not self._unlink(DOMAINS, hostname):
                raise KeyError(hostname)
        return self._record_change(hostname, domain_change_kinds(old, None))

    def delete_domain(self, hostname: str) -> Deferred:
        """Delete the domain record; fire with None, or fail with KeyError if none."""
        return self.run_in_thread(self._delete_domain_sync, hostname).addCallback(
            self._report_change_failure
        )

    def list_domains(
        self,
        state: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        include_broken: bool = False,
        prefix: str | None = None,
    ) -> Deferred:
        """Fire with DomainRecords ordered by hostname (see :meth:`IStore.list_domains`).

        Unreadable files are skipped and logged as errors naming the file, except
        that with ``include_broken`` (and no ``state``) a file that was read but does
        not parse is listed as its :class:`BrokenRecord` and not logged.
        """
        keep = None if state is None else (lambda r: r.state == state)
        broken = include_broken and state is None
        return self.run_in_thread(
            self._list_sync, DOMAINS, DomainRecord, after, limit, keep, broken, prefix
        ).addCallback(self._report_problems)

    def _due_sync(self, now, cursor: str | None, limit: int) -> tuple[DuePage, list[tuple[str, str]]]:
        soonest = None

        def keep(record: DomainRecord) -> bool:
            nonlocal soonest
            soonest = earliest(soonest, later_attempt(record, now))
            return is_due(record, now)

        records, problems = self._list_sync(DOMAINS, DomainRecord, cursor, limit, keep, True)
        more = bool(records) and len(records) >= limit
        last = records[-1] if more else None
        next_cursor = None if last is None else (last.key if isinstance(last, BrokenRecord) else last.hostname)
        return DuePage(tuple(records), next_cursor, soonest), problems

    def due_domains(self, now, cursor: str | None = None, limit: int = 500) -> Deferred:
        """Fire with a :class:`DuePage` (see :meth:`IStore.due_domains`).

        No index: every domain file is read once over the pages of a walk (the
        cursor is the last hostname listed).  A file that does not parse is listed
        as its BrokenRecord.
        """

        def report(result):
            page, problems = result
            self._report_problems(([], problems))
            return page

        return self.run_in_thread(self._due_sync, now, cursor, limit).addCallback(report)

    def record_counts(self, now, windows) -> Deferred:
        """Fire with None: without an index, counting means reading every file (the caller walks)."""
        from twisted.internet.defer import succeed

        return succeed(None)

    # -- certificate records ----------------------------------------------------------------

    def _get_certificate_sync(self, hostname: str) -> CertificateRecord:
        if not is_normalised_hostname(hostname):
            raise KeyError(hostname)
        return read_record(
            self._file(CERTIFICATES, hostname),
            self._parser(CertificateRecord, "hostname", hostname),
            hostname,
        )

    def get_certificate(self, hostname: str) -> Deferred:
        """Fire with the :class:`CertificateRecord`.

        Fails with KeyError when there is none, BrokenRecord naming the file when
        it is corrupt or its key does not match its leaf, StoreError when it cannot be read.
        """
        return self.run_in_thread(self._get_certificate_sync, hostname)

    @contextmanager
    def _certificate_locked(self, hostname: str) -> Iterator[None]:
        """Hold the lock every writer of ``hostname``'s certificate record takes."""
        directory = self._ensure(LOCKS)
        with flocked(os.path.join(directory, hostname + ".certificate.lock")):
            yield

    def _put_certificate_sync(self, record: CertificateRecord) -> str | None:
        hostname = self._checked_hostname_for_write(record.hostname)
        with self._certificate_locked(hostname):
            try:
                old = self._get_certificate_sync(hostname)
            except (KeyError, StoreError):
                old = None  # absent or unreadable: either way the material changes
            self._write(CERTIFICATES, hostname, record.to_json(), SECRET_MODE)
        return self._record_change(hostname, certificate_change_kinds(old, record))

    def _set_renewal_info_sync(self, hostname: str, fingerprint: str, ari) -> tuple[bool, str | None]:
        if not is_normalised_hostname(hostname):
            return False, None
        with self._certificate_locked(hostname):
            try:
                current = self._get_certificate_sync(hostname)
            except KeyError:
                return False, None
            if current.fingerprint != fingerprint:
                return False, None
            self._write(CERTIFICATES, hostname, attrs.evolve(current, ari=ari).to_json(), SECRET_MODE)
        return True, self._record_change(hostname, frozenset((ChangeKind.RENEWAL_INFO,)))

    def set_renewal_info(self, hostname: str, fingerprint: str, ari) -> Deferred:
        """Store ``ari`` on the certificate if it is still the one with ``fingerprint``; fire True/False."""

        def report(result: tuple[bool, str | None]) -> bool:
            written, change_failure = result
            self._report_change_failure(change_failure)
            return written

        return self.run_in_thread(self._set_renewal_info_sync, hostname, fingerprint, ari).addCallback(report)

    def put_certificate(self, record: CertificateRecord) -> Deferred:
        """Atomically create or replace the certificate (file mode 0600); fire with None."""
        return self.run_in_thread(self._put_certificate_sync, record).addCallback(
            self._report_change_failure
        )

    def _delete_certificate_sync(self, hostname: str) -> str | None:
        if not is_normalised_hostname(hostname):
            return None
        with self._certificate_locked(hostname):
            if not self._unlink(CERTIFICATES, hostname):
                return None
        return self._record_change(hostname, frozenset((ChangeKind.CERTIFICATE,)))

    def delete_certificate(self, hostname: str) -> Deferred:
        """Delete the certificate and record the change; fire with None (also when absent)."""
        return self.run_in_thread(self._delete_certificate_sync, hostname).addCallback(
            self._report_change_failure
        )

    def list_certificates(
        self, after: str | None = None, limit: int | None = None, include_broken: bool = False
    ) -> Deferred:
        """Fire with CertificateRecords ordered by hostname.

        Unreadable files (and leftover temp files) are skipped; the former are
        logged as errors naming the file, except that with ``include_broken`` a
        file that was read but does not parse or verify is listed as its
        :class:`BrokenRecord` and not logged.
        """
        return self.run_in_thread(
            self._list_sync, CERTIFICATES, CertificateRecord, after, limit, None, include_broken
        ).addCallback(self._report_problems)

    def list_certificates_by_expiry(self, after=None, limit: int | None = None) -> Deferred:
        """Fire with CertificateRecords ordered by ``(not_after, hostname)`` (see the contract).

        Reads every certificate file on each call (in a worker thread): the directory
        store keeps no index.
        """
        def run():
            records, problems = self._list_sync(CERTIFICATES, CertificateRecord, None, None, None, False)
            return by_expiry(records, after, limit), problems

        return self.run_in_thread(run).addCallback(self._report_problems)

    # -- change feed -----------------------------------------------------------------------

    def _record_change(self, hostname: str, kinds: frozenset[str]) -> str | None:
        """Append ``hostname`` and ``kinds`` to the change log; None, or why it failed (see :func:`append_change`)."""
        return append_change(self._root, hostname, kinds, self.max_log_bytes)

    def changes(self, cursor: int | None) -> Deferred:
        """Report hostnames whose certificate or domain record changed since ``cursor``.

        Fires with ``(new_cursor, changed)``: cursors are ints (virtual byte
        offsets into the change log, see :mod:`jobhost.store.files`); ``changed``
        maps hostname -> frozenset of kinds, or None when the store cannot tell (cursor from before
        the last two logs, past the end, or an unreadable line).
        """
        return self.run_in_thread(read_changes, self._root, cursor)

    def watch_changes(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Nothing is pushed (callers poll :meth:`changes`); returns a no-op stopper."""
        return lambda: None

    # -- challenges --------------------------------------------------------------------------

    def _put_challenge_sync(self, challenge: Challenge) -> None:
        if not is_token(challenge.token):
            raise StoreError(f"refusing to store a challenge under {challenge.token!r}: not a base64url token")
        self._write(CHALLENGES, challenge.token, challenge.to_json(), PUBLIC_MODE)

    def put_challenge(self, challenge: Challenge) -> Deferred:
        """Store an HTTP-01 challenge under its token; fire with None (StoreError if not base64url)."""
        return self.run_in_thread(self._put_challenge_sync, challenge)

    def _get_challenge_sync(self, token: str) -> Challenge:
        if not is_token(token):
            raise KeyError(token)
        return read_record(self._file(CHALLENGES, token), self._parser(Challenge, "token", token), token)

    def get_challenge(self, token: str) -> Deferred:
        """Fire with the :class:`Challenge`; fail with KeyError if none (or not a token)."""
        return self.run_in_thread(self._get_challenge_sync, token)

    def _delete_challenge_sync(self, token: str) -> None:
        if is_token(token):
            self._unlink(CHALLENGES, token)

    def delete_challenge(self, token: str) -> Deferred:
        """Forget a challenge; fire with None (also when absent)."""
        return self.run_in_thread(self._delete_challenge_sync, token)

    # -- accounts ------------------------------------------------------------------------------

    def _get_account_sync(self, directory_url: str) -> Account:
        path = self._file(ACCOUNTS, account_file_stem(directory_url))
        return read_record(path, self._parser(Account, "directory_url", directory_url), directory_url)

    def _list_accounts_sync(self) -> list[Account]:
        directory = self._dir(ACCOUNTS)
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(_JSON) and not n.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"cannot list {directory}: {e.strerror}") from None
        accounts = []
        for name in names:
            path = os.path.join(directory, name)
            try:
                account = read_record(path, Account.from_json, name)
            except KeyError:
                continue  # deleted meanwhile
            except StoreError as e:
                self._log.error("Skipping a store file: {reason}", file=path, reason=e.message)
                continue
            accounts.append(account)
        return sorted(accounts, key=lambda a: a.directory_url)

    def list_accounts(self) -> Deferred:
        """Fire with every readable Account, ordered by directory URL."""
        return self.run_in_thread(self._list_accounts_sync)

    def get_account(self, directory_url: str) -> Deferred:
        """Fire with the :class:`Account` for that CA directory; fail with KeyError if none."""
        return self.run_in_thread(self._get_account_sync, directory_url)

    def _put_account_sync(self, account: Account) -> None:
        self._write(ACCOUNTS, account_file_stem(account.directory_url), account.to_json(), SECRET_MODE)

    def put_account(self, account: Account) -> Deferred:
        """Create or replace the account for its directory URL (file mode 0600); fire with None."""
        return self.run_in_thread(self._put_account_sync, account)

    # -- leases ----------------------------------------------------------------------------------

    @contextmanager
    def _lease_file(self, name: str) -> Iterator[str]:
        directory = self._ensure(LEASES)
        stem = lease_file_stem(name)
        with flocked(os.path.join(directory, stem + ".lock")):
            yield os.path.join(directory, stem + _JSON)

    def _read_lease(self, path: str, name: str) -> Lease | None:
        try:
            return read_record(path, self._parser(Lease, "name", name), name)
        except KeyError:
            return None

    def _acquire_lease_sync(self, name, holder, expires_at, now) -> bool:
        with self._lease_file(name) as path:
            current = self._read_lease(path, name)
            if current is not None and current.holder != holder and current.expires_at > now:
                return False
            lease = Lease(name=name, holder=holder, expires_at=expires_at)
            write_atomically(path, encode_record(lease.to_json()), PUBLIC_MODE)
            return True

    def acquire_lease(self, name: str, holder: str, expires_at, now) -> Deferred:
        """Try to take lease ``name`` for ``holder`` until ``expires_at``; fire True or False.

        Serialised across processes by ``flock`` on ``leases/<name>.lock``.
        """
        return self.run_in_thread(self._acquire_lease_sync, name, holder, expires_at, now)

    def _release_lease_sync(self, name: str, holder: str) -> None:
        with self._lease_file(name) as path:
            current = self._read_lease(path, name)
            if current is None or current.holder != holder:
                return
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
            except OSError as e:
                raise StoreError(f"cannot delete {path}: {e.strerror}") from None

    def release_lease(self, name: str, holder: str) -> Deferred:
        """Give up ``name`` if ``holder`` holds it; fire with None."""
        return self.run_in_thread(self._release_lease_sync, name, holder)

    # -- order budgets --------------------------------------------------------------------------

    def _reserve_order_sync(self, budget: str, now, window, limit: int, take: bool):
        directory = self._ensure(BUDGETS)
        stem = lease_file_stem(budget)
        path = os.path.join(directory, stem + _JSON)
        with flocked(os.path.join(directory, stem + ".lock")):
            try:
                doc = read_record(path, lambda d: d, budget)
            except KeyError:
                doc = {"name": budget, "orders": []}
            taken = sorted(t for t in (from_iso(x) for x in doc.get("orders", ())) if t > now - window)
            if len(taken) >= limit:
                return taken[0] + window
            if not take:
                return None
            taken.append(now)
            write_atomically(
                path, encode_record({"name": budget, "orders": [to_iso(t) for t in taken]}), PUBLIC_MODE
            )
            return None

    def reserve_order(self, budget: str, now, window, limit: int, take: bool = True) -> Deferred:
        """Take a slot of the shared order budget ``budget`` (see ``IStore.reserve_order``).

        Kept in ``budgets/<name>.json`` and serialised across processes by ``flock``.
        """
        return self.run_in_thread(self._reserve_order_sync, budget, now, window, limit, take)


__all__ = [
    "ACCOUNTS",
    "BUDGETS",
    "CERTIFICATES",
    "CHALLENGES",
    "DEFAULT_MAX_LOG_BYTES",
    "DOMAINS",
    "DirectoryStore",
    "LAYOUT_VERSION",
    "LEASES",
    "LOCKS",
    "MARKER",
    "MARKER_FORMAT",
    "account_file_stem",
    "is_token",
    "lease_file_stem",
]
