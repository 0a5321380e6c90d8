"""
CAA (RFC 8659) records and the decision whether they let our CA issue.

This module owns the pure part of the CAA check: parsing CAA RDATA (flags,
tag, value) and ``issue`` property values, the flag and tag rules, and the
allow/forbid decision over the relevant RRset.  It does no I/O: finding the
relevant RRset (climbing towards the top-level domain, following CNAMEs) and
turning the decision into words for the customer are
:mod:`jobhost.preflight`'s job.

The decision, given the relevant RRset (rules 2 and 3 of
:mod:`jobhost.preflight`):

1. A record whose RDATA cannot be parsed forbids all issuance; so does a
   record with the critical flag (bit 128, and bit 1 which many zones set by
   mistake and Let's Encrypt honours too) on a tag other than those in
   :data:`KNOWN_CAA_TAGS`.
2. With no ``issue`` property any CA may issue (``issuewild`` is ignored:
   jobhost never asks for wildcards).  Otherwise one ``issue`` property must
   name one of our CA identifiers and its parameters must allow us:
   ``accounturi`` must equal our account URI (assumed to when we do not know
   ours) and ``validationmethods`` must include :data:`HTTP_01`; other
   parameters are ignored.  ``issue ";"`` names no CA and so allows none.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import attrs

#: RR type of CAA (RFC 8659); twisted.names has no record class for it and
#: hands its RDATA over as :class:`twisted.names.dns.UnknownRecord`.
CAA = 257

#: The ACME challenge jobhost answers; CAA ``validationmethods`` must allow it.
HTTP_01 = "http-01"

#: CAA tags Let's Encrypt understands; a critical record with any other tag forbids issuance.
KNOWN_CAA_TAGS = frozenset({"issue", "issuewild", "iodef"})

_CAA_CRITICAL_BITS = 128 | 1
_CAA_TAG = re.compile(r"^[A-Za-z0-9]{1,15}$")
_ISSUER_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ISSUER = re.compile(rf"^{_ISSUER_LABEL}(?:\.{_ISSUER_LABEL})*$")
_PARAMETER_TAG = re.compile(r"^[A-Za-z0-9](?:-*[A-Za-z0-9])*$")
_PARAMETER_VALUE = re.compile(r"^[\x21-\x3a\x3c-\x7e]*$")


@attrs.frozen
class CaaRecord:
    """One CAA resource record, parsed (RFC 8659 section 4.1).

    Attributes:
        owner: The name that owns the record (after any CNAMEs).
        flags: The flags octet.
        tag: The property tag, lower-cased.
        value: The property value, decoded as Latin-1.
    """

    owner: str
    flags: int
    tag: str
    value: str

    @property
    def critical(self) -> bool:
        """Whether the record has the critical flag (bit 128, or bit 1)."""
        return bool(self.flags & _CAA_CRITICAL_BITS)

    def presentation(self) -> str:
        """The record in presentation form, e.g. ``'example.com CAA 0 issue "letsencrypt.org"'``."""
        return f"{self.owner} CAA {self.flags} {self.tag} {quote_caa_value(self.value)}"


def quote_caa_value(value: str) -> str:
    """``value`` as a quoted zone-file string (``"`` and ``\\`` escaped, others as ``\\DDD``)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append(f"\\{ord(char):03d}")
    return '"' + "".join(out) + '"'


def parse_caa_record(owner: str, rr: Any) -> CaaRecord | None:
    """Parse CAA RDATA: flags byte, tag length byte, tag, value; None if malformed.

    Args:
        owner: The name owning the record.
        rr: A resource record whose ``payload.data`` holds the raw RDATA (a
            ``twisted.names.dns.RRHeader`` around an ``UnknownRecord``).
    """
    data = getattr(getattr(rr, "payload", None), "data", None)
    if not isinstance(data, bytes) or len(data) < 2:
        return None
    flags, tag_length = data[0], data[1]
    tag_bytes = data[2 : 2 + tag_length]
    if len(tag_bytes) != tag_length:
        return None
    tag = tag_bytes.decode("latin-1")
    if not _CAA_TAG.match(tag):
        return None
    return CaaRecord(owner, flags, tag.lower(), data[2 + tag_length :].decode("latin-1"))


@attrs.frozen
class IssueValue:
    """An ``issue`` property value, parsed.

    Attributes:
        issuer: The issuer domain name, lower-cased; empty when none is named.
        parameters: Parameter tag (lower-cased) to value; the first of a repeated tag wins.
    """

    issuer: str
    parameters: dict[str, str]


def parse_issue_value(value: str) -> IssueValue | None:
    """Parse an ``issue`` property value (RFC 8659 section 4.2); None if malformed.

    A ``";"`` may end the issuer with nothing after it, but every ``";"`` after that must
    separate two parameters: an empty one (``"ca.example; a=b;"``, ``"ca.example;; a=b"``)
    is malformed, by the RFC's grammar and to Let's Encrypt.
    """
    issuer_part, _, rest = value.partition(";")
    issuer = issuer_part.strip(" \t")
    if issuer and not _ISSUER.match(issuer):
        return None
    parameters: dict[str, str] = {}
    if rest.strip(" \t"):
        for piece in rest.split(";"):
            key, equals, parameter_value = piece.partition("=")
            key, parameter_value = key.strip(" \t"), parameter_value.strip(" \t")
            if not equals or not _PARAMETER_TAG.match(key) or not _PARAMETER_VALUE.match(parameter_value):
                return None
            parameters.setdefault(key.lower(), parameter_value)
    return IssueValue(issuer.lower(), parameters)


def issue_refusal(record: CaaRecord, ca_identifiers: Sequence[str], account_uri: str | None) -> str | None:
    """Why this ``issue`` record does not allow us; None when it does.

    Args:
        record: An ``issue`` record.
        ca_identifiers: CAA issuer domain names of the CA(s) we order from.
        account_uri: Our ACME account URL; None when unknown (then any
            ``accounturi`` is assumed to be ours).

    Returns:
        A phrase completing ``'"<value>" ...'``, e.g. ``"allows only digicert.com"``, or None.
    """
    value = parse_issue_value(record.value)
    if value is None:
        return "is malformed"
    if not value.issuer:
        return "forbids every CA"
    if value.issuer not in ca_identifiers:
        return f"allows only {value.issuer}"
    account = value.parameters.get("accounturi")
    if account is not None and account_uri is not None and account != account_uri:
        return f"allows only the ACME account {account}, not ours ({account_uri})"
    methods = value.parameters.get("validationmethods")
    # a parameter value has no white space (parse_issue_value): "dns-01, http-01" is malformed
    if methods is not None and HTTP_01 not in methods.split(","):
        return f"allows only the validation methods {methods}, not {HTTP_01}"
    return None


@attrs.frozen
class CaaDecision:
    """Whether a relevant CAA RRset lets us issue, and on what grounds.

    Exactly one ground is set when issuance is forbidden: ``malformed``,
    ``critical``, or ``refusals``.  When it is allowed, ``allowed_by`` is the
    ``issue`` record that allows us, or None when the RRset has no ``issue``
    property at all.

    Attributes:
        allowed: Whether our CA may issue.
        malformed: True when a record's RDATA could not be parsed.
        critical: The first critical record whose tag the CA does not understand.
        allowed_by: The ``issue`` record that allows us.
        refusals: Each ``issue`` record with why it does not allow us (see
            :func:`issue_refusal`), in RRset order.
    """

    allowed: bool
    malformed: bool = False
    critical: CaaRecord | None = None
    allowed_by: CaaRecord | None = None
    refusals: tuple[tuple[CaaRecord, str], ...] = ()


def decide_caa(
    records: Sequence[CaaRecord | None], ca_identifiers: Sequence[str], account_uri: str | None
) -> CaaDecision:
    """Decide whether the relevant CAA RRset allows our CA to issue (see the module docstring).

    Args:
        records: The relevant RRset, each record as :func:`parse_caa_record`
            returned it (None for one that could not be parsed).
        ca_identifiers: CAA issuer domain names of the CA(s) we order from.
        account_uri: Our ACME account URL; None when unknown.

    Returns:
        The :class:`CaaDecision`.
    """
    if any(r is None for r in records):
        return CaaDecision(allowed=False, malformed=True)
    critical = [r for r in records if r.critical and r.tag not in KNOWN_CAA_TAGS]
    if critical:
        return CaaDecision(allowed=False, critical=critical[0])
    issue = [r for r in records if r.tag == "issue"]
    if not issue:
        return CaaDecision(allowed=True)
    refusals = []
    for record in issue:
        refusal = issue_refusal(record, ca_identifiers, account_uri)
        if refusal is None:
            return CaaDecision(allowed=True, allowed_by=record)
        refusals.append((record, refusal))
    return CaaDecision(allowed=False, refusals=tuple(refusals))


__all__ = [
    "CAA",
    "HTTP_01",
    "KNOWN_CAA_TAGS",
    "CaaDecision",
    "CaaRecord",
    "IssueValue",
    "decide_caa",
    "issue_refusal",
    "parse_caa_record",
    "parse_issue_value",
    "quote_caa_value",
]
