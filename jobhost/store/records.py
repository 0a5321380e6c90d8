"""
The records a store holds, and their one JSON form.

Every store (directory, SQLite, PostgreSQL, memory) keeps exactly these
records and serialises them with :func:`to_json`/``from_json`` here, so that
a record written by one implementation reads the same from another.
Pure: no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

import attrs

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

    def with_state(self, state: str, at: datetime, reason: str | None = None, **changes: Any) -> DomainRecord:
        """Return a copy in ``state`` with the change appended to its history."""
        history = self.history
        if state != self.state or reason:
            history = (history + (StateChange(at=at, state=state, reason=reason),))[-HISTORY_LIMIT:]
        return attrs.evolve(self, state=state, updated_at=at, history=history, **changes)

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
        )


@attrs.frozen
class AriWindow:
    """An ACME Renewal Information (RFC 9773) suggestion for one certificate."""

    start: datetime
    end: datetime
    #: When to ask the CA again (its ``Retry-After``).
    retry_after: datetime | None = None
    explanation_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "start": to_iso(self.start),
            "end": to_iso(self.end),
            "retry_after": to_iso(self.retry_after),
            "explanation_url": self.explanation_url,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AriWindow:
        return cls(
            start=from_iso(doc["start"]),
            end=from_iso(doc["end"]),
            retry_after=from_iso(doc.get("retry_after")),
            explanation_url=doc.get("explanation_url"),
        )


@attrs.frozen
class CertificateRecord:
    """Key, leaf and chain for one hostname, with facts parsed from them.

    Build one with :func:`jobhost.certs.certificate_record`, which parses and
    checks the PEM; the derived fields (``not_before`` ... ``fingerprint``)
    always agree with ``chain_pem``.

    Attributes:
        hostname: The normalised hostname this record is stored under.
        key_pem: The private key, PEM (PKCS#8).  Secret: never log or return it.
        chain_pem: The leaf certificate first, then the intermediates, PEM.
        not_before / not_after: The leaf's validity (aware UTC).
        issuer: The leaf issuer's RFC 4514 name.
        serial: The leaf's serial number as lower-case hex.
        fingerprint: SHA-256 of the leaf's DER, lower-case hex.
        names: The leaf's DNS subjectAltNames.
        directory_url: The ACME directory that issued it, when jobhost did.
        account_url: The ACME account that ordered it, when jobhost did.
        ari_cert_id: The RFC 9773 certificate identifier, when computed.
        ari: The CA's latest renewal window, when it offers ARI.
    """

    hostname: str
    key_pem: bytes = attrs.field(repr=False)
    chain_pem: bytes
    not_before: datetime
    not_after: datetime
    issuer: str
    serial: str
    fingerprint: str
    names: tuple[str, ...]
    directory_url: str | None = None
    account_url: str | None = None
    ari_cert_id: str | None = None
    ari: AriWindow | None = None

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
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CertificateRecord:
        from jobhost.certs import certificate_record

        return certificate_record(
            hostname=doc["hostname"],
            key_pem=doc["key_pem"].encode("ascii"),
            chain_pem=doc["chain_pem"].encode("ascii"),
            directory_url=doc.get("directory_url"),
            account_url=doc.get("account_url"),
            ari_cert_id=doc.get("ari_cert_id"),
            ari=AriWindow.from_json(doc["ari"]) if doc.get("ari") else None,
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
            "ari": self.ari.to_json() if self.ari else None,
        }


@attrs.frozen
class Challenge:
    """An HTTP-01 token and its key authorization, so any process can answer the CA."""

    token: str
    key_authorization: str
    hostname: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "key_authorization": self.key_authorization,
            "hostname": self.hostname,
            "created_at": to_iso(self.created_at),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Challenge:
        return cls(
            token=doc["token"],
            key_authorization=doc["key_authorization"],
            hostname=doc["hostname"],
            created_at=from_iso(doc["created_at"]),
        )


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


__all__ = [
    "Account",
    "AriWindow",
    "CertificateRecord",
    "Challenge",
    "DomainRecord",
    "DomainState",
    "HISTORY_LIMIT",
    "Lease",
    "StateChange",
]
