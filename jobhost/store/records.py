"""
The records a store holds, and their one JSON form.

Every store (directory, SQLite, PostgreSQL, memory) keeps exactly these
records and serialises them with :func:`to_json`/``from_json`` here, so that
a record written by one implementation reads the same from another.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any, Mapping

import attrs

# AriWindow lives in jobhost.certs (pure; the ACME client makes it); re-exported here for old imports.
from jobhost.certs import AriWindow, ParsedCertificate, parse_certificate
from jobhost.timeutil import from_iso, to_iso


class DomainState:
    """The states of a domain record (see DESIGN.md, "The path of one hostname").

    ::

        pending --> issuing --> active --> renewing --> active
                       |                      |
                       v                      v
                    failing  <------------ failing --> paused
        (any) --> removed
    """

    PENDING = "pending"
    ISSUING = "issuing"
    ACTIVE = "active"
    RENEWING = "renewing"
    FAILING = "failing"
    PAUSED = "paused"
    REMOVED = "removed"

    ALL = (PENDING, ISSUING, ACTIVE, RENEWING, FAILING, PAUSED, REMOVED)


class ChangeKind:
    """What a change-feed entry says changed for a hostname (see ``IStore.changes``).

    Caches drop an entry only for the kinds that concern them: the SNI cache for
    ``CERTIFICATE``, the rendered-page cache for ``PAGE``.
    """

    #: The certificate's key or chain was stored, replaced or deleted.
    CERTIFICATE = "certificate"
    #: Only facts kept beside an unchanged key and chain (the ARI window) changed.
    RENEWAL_INFO = "renewal_info"
    #: What the hostname's HTTPS site shows changed: its page, or whether it is registered at all.
    PAGE = "page"
    #: Any other domain-record field (state, attempts, next attempt, history...).
    STATE = "state"

    ALL = frozenset((CERTIFICATE, RENEWAL_INFO, PAGE, STATE))


@attrs.frozen
class StateChange:
    """One entry of a domain record's history."""

    at: datetime
    state: str
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": to_iso(self.at), "state": self.state, "reason": self.reason}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StateChange:
        return cls(at=from_iso(doc["at"]), state=doc["state"], reason=doc.get("reason"))


#: How many history entries a domain record keeps (oldest dropped first).
HISTORY_LIMIT = 50


@attrs.frozen
class DomainRecord:
    """What jobhost knows of one registered hostname.

    Attributes:
        hostname: The normalised hostname (the record's key).
        state: One of :class:`DomainState`.
        created_at: When it was registered.
        updated_at: When the record last changed.
        page: The careers page document (see :mod:`jobhost.web.pages`), or None.
        last_error: ``{"code", "message", "problem"?, "at"}`` of the last failure, or None.
        attempts: Consecutive failed attempts since the last success.
        next_attempt: When the issuing service will next try, or None.
        unpause_url: The CA's link to lift a pause, when it gave one.
        renew_requested: An operator asked for a new certificate before it is due; kept until
            one is issued, so a forced renewal survives failures and restarts.
        history: The latest state changes, oldest first (at most :data:`HISTORY_LIMIT`).
        version: Incremented by the store on every ``update_domain``; a write based on an
            older version is refused (compare-and-set), so no update is lost.
    """

    hostname: str
    state: str
    created_at: datetime
    updated_at: datetime
    page: Mapping[str, Any] | None = None
    last_error: Mapping[str, Any] | None = None
    attempts: int = 0
    next_attempt: datetime | None = None
    unpause_url: str | None = None
    history: tuple[StateChange, ...] = ()
    renew_requested: bool = False
    version: int = 0

    @property
    def parked(self) -> bool:
        """True when the last error can never succeed by retrying: wait for an operator."""
        return (
            self.state == DomainState.FAILING
            and not self.renew_requested
            and (self.last_error or {}).get("retryable") is False
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "state": self.state,
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "page": self.page,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "next_attempt": to_iso(self.next_attempt),
            "unpause_url": self.unpause_url,
            "history": [h.to_json() for h in self.history],
            "renew_requested": self.renew_requested,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DomainRecord:
        return cls(
            hostname=doc["hostname"],
            state=doc["state"],
            created_at=from_iso(doc["created_at"]),
            updated_at=from_iso(doc["updated_at"]),
            page=doc.get("page"),
            last_error=doc.get("last_error"),
            attempts=int(doc.get("attempts", 0)),
            next_attempt=from_iso(doc.get("next_attempt")),
            unpause_url=doc.get("unpause_url"),
            history=tuple(StateChange.from_json(h) for h in doc.get("history", ())),
            renew_requested=bool(doc.get("renew_requested", False)),
            version=int(doc.get("version", 0)),
        )


@attrs.frozen
class DuePage:
    """One page of :meth:`jobhost.store.interfaces.IStore.due_domains`.

    Attributes:
        records: Due :class:`DomainRecord` s (a record that cannot be used: its
            :class:`jobhost.errors.BrokenRecord` in its place).
        cursor: Pass to the next call for the next page; None when this page is the last.
        earliest_later: The earliest ``next_attempt`` later than ``now`` of a record
            that is not removed, among those this page covered (the SQL store: of all);
            the least of every page's value is the earliest of the whole store.
    """

    records: tuple[Any, ...]
    cursor: Any
    earliest_later: datetime | None


@attrs.frozen
class RecordCounts:
    """What :meth:`jobhost.store.interfaces.IStore.record_counts` counted through indexes.

    Attributes:
        domains: ``state -> number`` of domain records (only states that occur).
        certificates: Certificate records stored.
        expiring: ``window name -> number`` of certificates whose ``not_after`` is at most
            ``now`` + that window.
        broken: ``record kind -> number`` of unusable records, or None: not counted (that
            needs every record read; a broken record is reported when it is read).
    """

    domains: Mapping[str, int]
    certificates: int
    expiring: Mapping[str, int]
    broken: Mapping[str, int] | None = None


def is_due(record: DomainRecord, now: datetime) -> bool:
    """True when the issuing service should look at ``record`` at ``now``.

    Not removed, not parked, and its ``next_attempt`` is unset or has come.
    """
    if record.state == DomainState.REMOVED or record.parked:
        return False
    return record.next_attempt is None or record.next_attempt <= now


def later_attempt(record: DomainRecord, now: datetime) -> datetime | None:
    """``record.next_attempt`` when it is later than ``now`` and the record is not removed; else None."""
    if record.state == DomainState.REMOVED or record.next_attempt is None or record.next_attempt <= now:
        return None
    return record.next_attempt


def earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The earlier of two optional times (None counts as "never")."""
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


def domain_change_kinds(old: DomainRecord | None, new: DomainRecord | None) -> frozenset[str]:
    """The :class:`ChangeKind` s a domain write from ``old`` to ``new`` reports (None: absent).

    ``PAGE`` when what the hostname's site shows changed (the page, or whether the
    hostname is registered and not removed); ``STATE`` when any other field changed.
    """
    def shown(record: DomainRecord | None):
        if record is None or record.state == DomainState.REMOVED:
            return None
        return ("registered", record.page)

    kinds = set()
    if shown(old) != shown(new):
        kinds.add(ChangeKind.PAGE)
    if old is None or new is None:
        kinds.add(ChangeKind.STATE)
    elif attrs.evolve(old, page=None, version=0) != attrs.evolve(new, page=None, version=0):
        kinds.add(ChangeKind.STATE)
    return frozenset(kinds)


def certificate_change_kinds(old: CertificateRecord | None, new: CertificateRecord | None) -> frozenset[str]:
    """``RENEWAL_INFO`` when ``new`` keeps ``old``'s key and chain, else ``CERTIFICATE``."""
    if old is not None and new is not None and old.key_pem == new.key_pem and old.chain_pem == new.chain_pem:
        return frozenset((ChangeKind.RENEWAL_INFO,))
    return frozenset((ChangeKind.CERTIFICATE,))


@attrs.frozen
class CertificateRecord(ParsedCertificate):
    """Key, leaf and chain for one hostname, with facts parsed from them.

    The key, chain and facts (``key_pem``, ``chain_pem``, ``not_before`` ...
    ``names``) are those of :class:`jobhost.certs.ParsedCertificate`; ``key_pem``
    is secret: never log or return it.  Build one with :func:`certificate_record`,
    which parses and checks the PEM, so the facts always agree with ``chain_pem``.

    Attributes:
        hostname: The normalised hostname this record is stored under (keyword only).
        directory_url: The ACME directory that issued it, when jobhost did.
        account_url: The ACME account that ordered it, when jobhost did.
        ari_cert_id: The RFC 9773 certificate identifier, when computed.
        ari: The CA's latest renewal window, when it offers ARI.
        acme_issuer: The name of the configured issuer (``[[acme.issuers]] name``) it came
            from; None in records written before issuers had names, which means the
            issuer whose directory is ``directory_url``, else the first one.
    """

    hostname: str = attrs.field(kw_only=True)
    directory_url: str | None = None
    account_url: str | None = None
    ari_cert_id: str | None = None
    ari: AriWindow | None = None
    acme_issuer: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form: only the PEM and the facts that cannot be derived from it."""
        return {
            "hostname": self.hostname,
            "key_pem": self.key_pem.decode("ascii"),
            "chain_pem": self.chain_pem.decode("ascii"),
            "directory_url": self.directory_url,
            "account_url": self.account_url,
            "ari_cert_id": self.ari_cert_id,
            "ari": self.ari.to_json() if self.ari else None,
            "acme_issuer": self.acme_issuer,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CertificateRecord:
        return certificate_record(
            hostname=doc["hostname"],
            key_pem=doc["key_pem"].encode("ascii"),
            chain_pem=doc["chain_pem"].encode("ascii"),
            directory_url=doc.get("directory_url"),
            account_url=doc.get("account_url"),
            ari_cert_id=doc.get("ari_cert_id"),
            ari=AriWindow.from_json(doc["ari"]) if doc.get("ari") else None,
            acme_issuer=doc.get("acme_issuer"),
        )

    def public_json(self) -> dict[str, Any]:
        """What the admin API may show: every fact, never the key."""
        return {
            "hostname": self.hostname,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": to_iso(self.not_before),
            "not_after": to_iso(self.not_after),
            "fingerprint_sha256": self.fingerprint,
            "names": list(self.names),
            "directory_url": self.directory_url,
            "acme_issuer": self.acme_issuer,
            "ari": self.ari.to_json() if self.ari else None,
        }


def certificate_record(
    hostname: str,
    key_pem: bytes,
    chain_pem: bytes,
    *,
    directory_url: str | None = None,
    account_url: str | None = None,
    ari_cert_id: str | None = None,
    ari: AriWindow | None = None,
    acme_issuer: str | None = None,
) -> CertificateRecord:
    """Parse and check key + chain into a :class:`CertificateRecord` for ``hostname``.

    The PEM is checked and re-serialised by :func:`jobhost.certs.parse_certificate`
    (the leaf first; the key must match it), so whatever is stored is exactly what
    is served.

    Raises:
        InvalidCertificate: naming what is wrong (unparsable PEM, no
            certificate, key does not match the leaf).
    """
    return CertificateRecord(
        **attrs.asdict(parse_certificate(key_pem, chain_pem), recurse=False),
        hostname=hostname,
        directory_url=directory_url,
        account_url=account_url,
        ari_cert_id=ari_cert_id,
        ari=ari,
        acme_issuer=acme_issuer,
    )


#: The challenge types jobhost answers (RFC 8555 section 8.3, RFC 8737).
HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
CHALLENGE_TYPES = (HTTP_01, TLS_ALPN_01)


@attrs.frozen
class Challenge:
    """A challenge's key authorization, so any process can answer the CA.

    An HTTP-01 challenge is kept under its token (the CA asks for the token's URL); a
    TLS-ALPN-01 challenge under :func:`tls_alpn01_key` of its hostname (the CA's
    handshake names only the hostname), with ``challenge_type`` saying which it is.
    """

    token: str
    key_authorization: str
    hostname: str
    created_at: datetime
    challenge_type: str = HTTP_01

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "key_authorization": self.key_authorization,
            "hostname": self.hostname,
            "created_at": to_iso(self.created_at),
            "type": self.challenge_type,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Challenge:
        return cls(
            token=doc["token"],
            key_authorization=doc["key_authorization"],
            hostname=doc["hostname"],
            created_at=from_iso(doc["created_at"]),
            challenge_type=doc.get("type", HTTP_01),  # written before TLS-ALPN-01: HTTP-01
        )


def tls_alpn01_key(hostname: str) -> str:
    """The key a TLS-ALPN-01 challenge for ``hostname`` is stored under (a base64url "token").

    ``alpn-`` and the unpadded base64url SHA-256 of the hostname: every store accepts it
    where it accepts a token, so TLS-ALPN-01 needs no new table or directory.  A CA's
    random token equal to it is as likely as a SHA-256 collision; the HTTP-01 responder
    answers only records whose ``challenge_type`` is HTTP-01 anyway.
    """
    digest = hashlib.sha256(hostname.encode("ascii")).digest()
    return "alpn-" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@attrs.frozen
class Account:
    """One ACME account per CA directory, reused for every hostname."""

    directory_url: str
    key_pem: bytes = attrs.field(repr=False)
    account_url: str
    created_at: datetime
    contact: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "directory_url": self.directory_url,
            "key_pem": self.key_pem.decode("ascii"),
            "account_url": self.account_url,
            "created_at": to_iso(self.created_at),
            "contact": list(self.contact),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Account:
        return cls(
            directory_url=doc["directory_url"],
            key_pem=doc["key_pem"].encode("ascii"),
            account_url=doc["account_url"],
            created_at=from_iso(doc["created_at"]),
            contact=tuple(doc.get("contact", ())),
        )


@attrs.frozen
class Lease:
    """A time-limited lock: "``holder`` alone works on ``name`` until ``expires_at``"."""

    name: str
    holder: str
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "holder": self.holder, "expires_at": to_iso(self.expires_at)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Lease:
        return cls(name=doc["name"], holder=doc["holder"], expires_at=from_iso(doc["expires_at"]))


def by_expiry(records, after=None, limit=None) -> list:
    """Certificate ``records`` ordered by (not_after, hostname), strictly after ``after``, at most ``limit``
    (how the memory and directory stores answer ``list_certificates_by_expiry``)."""
    if limit is not None and limit <= 0:
        return []
    ordered = sorted(records, key=lambda r: (r.not_after, r.hostname))
    if after is not None:
        ordered = [r for r in ordered if (r.not_after, r.hostname) > tuple(after)]
    return ordered if limit is None else ordered[:limit]


__all__ = [
    "by_expiry",
    "Account",
    "AriWindow",
    "CHALLENGE_TYPES",
    "CertificateRecord",
    "ChangeKind",
    "Challenge",
    "DomainRecord",
    "DomainState",
    "DuePage",
    "HISTORY_LIMIT",
    "HTTP_01",
    "Lease",
    "RecordCounts",
    "StateChange",
    "TLS_ALPN_01",
    "certificate_record",
    "certificate_change_kinds",
    "domain_change_kinds",
    "earliest",
    "is_due",
    "later_attempt",
    "tls_alpn01_key",
]

