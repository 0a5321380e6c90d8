"""
The store contract: what every store (directory, SQLite, PostgreSQL, memory) promises.

Every method returns a Deferred and never blocks the reactor thread on disk or
network I/O.  "Absent" is always signalled by failing with :class:`KeyError`;
any other failure is a :class:`jobhost.errors.StoreError` and means the call
changed nothing.  Hostnames passed in are already normalised
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
        """Create or replace the record for ``record.hostname``; fire with None."""

    def delete_domain(hostname):
        """Delete the domain record; fire with None, or fail with KeyError if none."""

    def list_domains(state=None, after=None, limit=None):
        """Fire with a list of DomainRecords ordered by hostname.

        Args:
            state: Only records in this state, when given.
            after: Only hostnames sorting strictly after this one (paging cursor).
            limit: At most this many, when given.
        """

    # -- certificate records -----------------------------------------------------

    def get_certificate(hostname):
        """Fire with the :class:`CertificateRecord`; fail with KeyError if none."""

    def put_certificate(record):
        """Atomically create or replace the certificate for ``record.hostname``.

        A reader never sees a partial record: it sees the old one or the new one.
        Records a change (see :meth:`changes`).  Fires with None.
        """

    def delete_certificate(hostname):
        """Delete the certificate; record a change; fire with None (also when absent)."""

    def list_certificates(after=None, limit=None):
        """Fire with a list of CertificateRecords ordered by hostname (paging as list_domains)."""

    # -- change feed -----------------------------------------------------------

    def changes(cursor):
        """Report which hostnames' certificates or domain records changed.

        Args:
            cursor: None to start, or a cursor returned by an earlier call.

        Fires with ``(new_cursor, hostnames)`` where ``hostnames`` is a frozenset
        of hostnames changed since ``cursor`` by *any* process sharing the
        store, or None when the store cannot tell (the caller must then treat
        everything as changed).  With ``cursor=None`` it fires with the current
        cursor and an empty set.
        """

    # -- challenges ------------------------------------------------------------

    def put_challenge(challenge):
        """Store an HTTP-01 :class:`Challenge` under its token; fire with None."""

    def get_challenge(token):
        """Fire with the :class:`Challenge` for ``token``; fail with KeyError if none.

        ``token`` has already been checked to be base64url text.
        """

    def delete_challenge(token):
        """Forget a challenge; fire with None (also when absent)."""

    # -- accounts --------------------------------------------------------------

    def get_account(directory_url):
        """Fire with the :class:`Account` for that CA directory; fail with KeyError if none."""

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


class IStoreService(Interface):
    """A store that must be opened and closed (pools, files, connections)."""

    store = Attribute("The IStore, usable after startService.")


__all__ = ["IStore", "IStoreService"]
