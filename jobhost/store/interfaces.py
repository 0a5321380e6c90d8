"""
The store contract: what every store (directory, SQLite, PostgreSQL, memory) promises.

Every method returns a Deferred and never blocks the reactor thread on disk or
network I/O.  "Absent" is always signalled by failing with :class:`KeyError`;
any other failure is a :class:`jobhost.errors.StoreError` and means the call
changed nothing.  A record that is stored but cannot be used (it does not
parse, or a certificate's key does not match its leaf) fails its read with
:class:`jobhost.errors.BrokenRecord`, a StoreError that concerns that one
record only: callers go on with every other record.  Hostnames passed in are already normalised
(:func:`jobhost.hostnames.normalise_hostname`); stores may rely on that to
build file names or keys.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IStore(Interface):
    """Domain records, certificate records, challenges, accounts and leases."""

    # -- domain records --------------------------------------------------------

    def get_domain(hostname):
        """Fire with the :class:`DomainRecord` for ``hostname``; fail with KeyError if none."""

    def add_domain(record):
        """Store ``record`` unless a record for its hostname exists.

        Fires with ``(stored_record, created)``: the new record and True, or the
        record already stored and False (idempotent registration).
        """

    def put_domain(record):
        """Create or replace the record for ``record.hostname`` as it is; fire with None.

        An unconditional write, for tools that copy whole stores.  Services never
        call it: they change records with :meth:`update_domain`, through
        :mod:`jobhost.domains`, so that no update is lost.
        """

    def update_domain(hostname, change):
        """Atomically apply ``change`` to the stored record; fire with the record now stored.

        ``change`` is a pure function ``DomainRecord -> DomainRecord`` (it may be
        called in a worker thread, and more than once) applied to the latest
        stored record.  The result is written with ``version`` one more than the
        record it was computed from, and only if no other write came between the
        read and the write, across every process sharing the store: a store either
        holds a lock from read to write (directory, SQL ``FOR UPDATE``) or
        compares versions and, when another writer came first, reads again and
        calls ``change`` again, a bounded number of times, then fails with
        :class:`jobhost.errors.StoreConflict`.

        When ``change`` returns its argument unchanged (the same object, or an
        equal record) nothing is written and the Deferred fires with it.  An
        exception raised by ``change`` is passed on and nothing is written.
        Records the change in the change feed with the kinds it touched
        (:func:`jobhost.store.records.domain_change_kinds`).  Fails with
        KeyError when there is no record for ``hostname``.
        """

    def delete_domain(hostname):
        """Delete the domain record; fire with None, or fail with KeyError if none."""

    def list_domains(state=None, after=None, limit=None, include_broken=False, prefix=None):
        """Fire with a list of DomainRecords ordered by hostname.

        Args:
            state: Only records in this state, when given.
            after: Only hostnames sorting strictly after this one (paging cursor).
            limit: At most this many, when given (counted after every filter).
            prefix: Only hostnames starting with this text, when given (a search box;
                lower-case ASCII).  Stores seek to it (an index range, a sorted file
                list), so a page of a prefix costs about what a page of everything does.
            include_broken: When true and no ``state`` is given, a record that is
                stored but cannot be used is listed in its place as its
                :class:`jobhost.errors.BrokenRecord` (``key`` is the hostname).
                Otherwise such records are skipped (and may be logged).
        """

    def due_domains(now, cursor=None, limit=500):
        """Fire with a :class:`jobhost.store.records.DuePage` of the records due at ``now``.

        What the issuing service's scan reads instead of every record: due means
        not removed and ``next_attempt`` unset or not later than ``now``
        (:func:`jobhost.store.records.is_due`).  A page holds at most ``limit``
        records; pass its ``cursor`` back for the next page (None: no more).  Over
        the pages of one walk every record due at ``now`` and unchanged meanwhile is
        listed exactly once.  Parked records may be listed (callers skip them), and a
        record that cannot be used is listed as its :class:`jobhost.errors.BrokenRecord`
        when the store cannot tell whether it is due.  The page's ``earliest_later``
        lets the caller wake for the first record that is not due yet.

        Cost: the SQL store reads only the due rows, through its ``next_attempt``
        index, plus one indexed ``MIN``; the memory store looks at every record in
        memory; the directory store reads every domain file once per walk (it has no
        index: it suits thousands of hostnames, not hundreds of thousands).
        """

    def record_counts(now, windows):
        """Fire with a :class:`jobhost.store.records.RecordCounts`, or None when counting means reading every record.

        For the store metrics: domain records per state, certificate records, and
        certificates whose ``not_after`` is at most ``now`` + each of ``windows``
        (``name -> timedelta``).  The SQL store counts through its indexes and does
        not count unusable rows (``broken`` is None); the directory and memory stores
        fire with None and the caller walks :meth:`list_domains` and
        :meth:`list_certificates` instead.
        """

    # -- certificate records -----------------------------------------------------

    def get_certificate(hostname):
        """Fire with the :class:`CertificateRecord`; fail with KeyError if none."""

    def put_certificate(record):
        """Atomically create or replace the certificate for ``record.hostname``.

        A reader never sees a partial record: it sees the old one or the new one.
        Records a change (see :meth:`changes`).  Fires with None.
        """

    def set_renewal_info(hostname, fingerprint, ari):
        """Store the CA's renewal window ``ari`` on the certificate whose leaf has ``fingerprint``.

        Atomic with respect to every other write of the certificate record: when
        the stored certificate is no longer that one (replaced or deleted
        meanwhile) nothing is written, so a renewal window learnt for an old
        certificate never brings it back.  Fires with True when written, else
        False.  Records a ``renewal_info`` change.
        """

    def delete_certificate(hostname):
        """Delete the certificate; record a change; fire with None (also when absent)."""

    def list_certificates(after=None, limit=None, include_broken=False):
        """Fire with a list of CertificateRecords ordered by hostname (paging and broken records as list_domains)."""

    def list_certificates_by_expiry(after=None, limit=None):
        """Fire with a list of CertificateRecords ordered by ``(not_after, hostname)``, soonest first.

        Args:
            after: None, or a ``(not_after, hostname)`` pair (the last record of the
                previous page): only records sorting strictly after it.
            limit: At most this many, when given.

        Records that cannot be used are skipped (and may be logged).  The SQL stores
        seek on their ``not_after`` index; the directory store reads every
        certificate file for each call (it has no index).
        """

    # -- change feed -----------------------------------------------------------

    def changes(cursor):
        """Report which hostnames' certificates or domain records changed, and how.

        Args:
            cursor: None to start, or a cursor returned by an earlier call.

        Fires with ``(new_cursor, changed)`` where ``changed`` maps each hostname
        changed since ``cursor`` by *any* process sharing the store to the
        frozenset of :class:`jobhost.store.records.ChangeKind` s it saw, or is
        None when the store cannot tell (the caller must then treat everything
        as changed).  Iterating ``changed`` gives the hostnames.  With
        ``cursor=None`` it fires with the current cursor and an empty mapping.
        """

    def watch_changes(callback):
        """Call ``callback()`` (on the reactor thread) soon after any process records a change.

        A push, so that caches learn of changes sooner than their poll interval;
        it says only "read the feed now" and may be late, coalesced or lost (e.g.
        while a connection is down: it then calls once after reconnecting), so
        callers keep polling :meth:`changes` as the safety net.  A store that
        cannot push does nothing.  Returns a no-argument function that stops it.
        """

    # -- challenges ------------------------------------------------------------

    def put_challenge(challenge):
        """Store a :class:`Challenge` under its ``token``; fire with None.

        An HTTP-01 challenge's token is the CA's; a TLS-ALPN-01 challenge's is
        :func:`jobhost.store.records.tls_alpn01_key` of its hostname.  The record,
        ``challenge_type`` included, reads back as it was written.
        """

    def get_challenge(token):
        """Fire with the :class:`Challenge` for ``token``; fail with KeyError if none.

        ``token`` has already been checked to be base64url text.
        """

    def delete_challenge(token):
        """Forget a challenge; fire with None (also when absent)."""

    # -- accounts --------------------------------------------------------------

    def get_account(directory_url):
        """Fire with the :class:`Account` for that CA directory; fail with KeyError if none."""

    def list_accounts():
        """Fire with every stored :class:`Account`, ordered by directory URL (for copying stores).

        An account that cannot be read is skipped and logged.
        """

    def put_account(account):
        """Create or replace the account for ``account.directory_url``; fire with None."""

    # -- leases ----------------------------------------------------------------

    def acquire_lease(name, holder, expires_at, now):
        """Try to take the lease ``name`` for ``holder`` until ``expires_at``.

        Succeeds (fires True) when nobody holds it, the holder's lease expired
        (``expires_at <= now``), or ``holder`` already holds it (extended).
        Otherwise fires False.  Callers must re-read the work after acquiring:
        another holder may have finished it meanwhile.
        """

    def release_lease(name, holder):
        """Give up ``name`` if ``holder`` holds it; fire with None."""

    # -- order budget --------------------------------------------------------------

    def reserve_order(budget, now, window, limit, take=True):
        """Take one slot of a sliding-window budget shared by every process.

        Args:
            budget: The budget's name (one per CA directory).
            now: The current time (aware UTC).
            window: A ``timedelta``: a slot is used for this long after it is taken.
            limit: At most this many slots inside any window.
            take: False only asks whether a slot is free, recording nothing.

        Fires with None when a slot was free (and, with ``take``, was taken and
        recorded at ``now``), or with the ``datetime`` at which the oldest slot
        frees when the budget is spent (nothing recorded).
        """


    # -- health ----------------------------------------------------------------------

    def check():
        """Fire with True when the store is really there; fail with StoreError naming what is missing.

        Meant for health probes: cheap, and reads no records.  It proves that the
        store this process opened still answers, e.g. that the directory store's
        root and marker file (an SQL store: its schema row) are in place and name
        the store opened, so that a store deleted or replaced under a running
        daemon is reported rather than looking empty.  A store with nothing that
        can vanish (memory) always fires True.
        """


class IStoreService(Interface):
    """A store that must be opened and closed (pools, files, connections)."""

    store = Attribute("The IStore, usable after startService.")


__all__ = ["IStore", "IStoreService"]
