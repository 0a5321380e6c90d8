"""
Certificates, keys and the renewal rule: the sans-IO heart of jobhost.

This module owns turning PEM bytes into checked facts (:func:`parse_certificate`:
key and leaf belong together, validity, names, fingerprint), making keys and
CSRs, making the self-signed fallback certificate, the CA's renewal window
(:class:`AriWindow`), and deciding *when* a certificate is due for renewal
(:func:`renewal_time`, the one renewal rule).  It does no I/O and never reads
the wall clock: every function that needs the time takes it.

It imports nothing from the store: :func:`jobhost.store.records.certificate_record`
builds the stored record from :func:`parse_certificate`'s facts, and the ACME
client builds :class:`AriWindow` without knowing the store.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Protocol

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from jobhost.errors import InvalidCertificate
from jobhost.timeutil import from_iso, to_iso

#: Key types jobhost can make; the config's ``[acme] key_type`` picks one.
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-4096")


@attrs.frozen
class AriWindow:
    """An ACME Renewal Information (RFC 9773) suggestion for one certificate.

    It lives here, beside the renewal rule that reads it, rather than with the
    ACME resources: the store keeps it in certificate records, and the store
    importing :mod:`jobhost.acme` would drag josepy and the ACME library into
    every store (and make this pure module depend on the ACME package).
    """

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
class ParsedCertificate:
    """Key + chain checked to belong together, with the facts read from the leaf.

    Made by :func:`parse_certificate`; :func:`jobhost.store.records.certificate_record`
    adds the hostname and what jobhost knows of the issuance to make a stored record.

    Attributes:
        key_pem: The private key, canonical PKCS#8 PEM.  Secret: never log it.
        chain_pem: The leaf first, then the intermediates, canonical PEM.
        not_before / not_after: The leaf's validity (aware UTC).
        issuer: The leaf issuer's RFC 4514 name.
        serial: The leaf's serial number as lower-case hex.
        fingerprint: SHA-256 of the leaf's DER, lower-case hex.
        names: The leaf's DNS subjectAltNames.
    """

    key_pem: bytes = attrs.field(repr=False)
    chain_pem: bytes
    not_before: datetime
    not_after: datetime
    issuer: str
    serial: str
    fingerprint: str
    names: tuple[str, ...]


def generate_private_key(key_type: str = "ecdsa-p256"):
    """Make a fresh private key of ``key_type`` (one of :data:`KEY_TYPES`)."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def private_key_pem(key) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key, hostnames: Iterable[str]) -> bytes:
    """Return a PEM CSR for ``hostnames`` (all as SANs, the first as CN) signed by ``key``."""
    names = list(hostnames)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    ).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def split_pem_chain(chain_pem: bytes) -> list[x509.Certificate]:
    """Parse every certificate in a PEM bundle, in order; raise InvalidCertificate if none."""
    try:
        # raises ValueError for PEM data without a certificate, too: never returns an empty list
        return x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise InvalidCertificate(f"cannot parse certificate PEM ({e})") from None


def load_private_key(key_pem: bytes):
    """Parse an unencrypted PEM private key; raise InvalidCertificate otherwise.

    RSA keys are loaded without cryptography's consistency check of the primes
    (``unsafe_skip_rsa_key_validation``): it costs ~0.7 s for an RSA-4096 key, on
    whatever thread loads it (the reactor, when the SNI cache or a store read does).
    What the check guards against, a key whose parts do not fit together, is
    still caught: every record compares the key's public half with its leaf
    (:func:`parse_certificate`), and OpenSSL checks the pair again when a
    context is built.
    """
    try:
        return serialization.load_pem_private_key(key_pem, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError) as e:
        raise InvalidCertificate(f"cannot parse private key PEM ({e})") from None


def _public_bytes(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The certificate's DNS subjectAltNames (lower case), in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower() for n in san.value.get_values_for_type(x509.DNSName))


def parse_certificate(key_pem: bytes, chain_pem: bytes) -> ParsedCertificate:
    """Parse and check key + chain into a :class:`ParsedCertificate`.

    The chain's first certificate is the leaf.  The key must match the leaf.
    The PEM is re-serialised canonically, so whatever is stored is exactly
    what is served.

    Raises:
        InvalidCertificate: naming what is wrong (unparsable PEM, no
            certificate, key does not match the leaf).
    """
    certs = split_pem_chain(chain_pem)
    key = load_private_key(key_pem)
    leaf = certs[0]
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise InvalidCertificate("the private key does not match the leaf certificate")
    return ParsedCertificate(
        key_pem=private_key_pem(key),
        chain_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        names=dns_names(leaf),
    )


def self_signed_certificate(
    common_name: str, now: datetime, key_type: str = "ecdsa-p256", days: int = 3650
) -> tuple[bytes, bytes]:
    """Make a self-signed certificate for the fallback; return ``(key_pem, cert_pem)``."""
    key = generate_private_key(key_type)
    return _self_signed(key, common_name, now, timedelta(days=days),
                        x509.BasicConstraints(ca=False, path_length=None))


def _self_signed(key, hostname: str, now: datetime, lifetime: timedelta, critical_extension) -> tuple[bytes, bytes]:
    """``(key_pem, cert_pem)``: ``key``'s self-signed certificate naming only ``hostname`` (CN and
    SAN), valid from an hour before ``now`` for ``lifetime``, with one more critical extension."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(critical_extension, critical=True)
        .sign(key, hashes.SHA256())
    )
    return private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


#: The TLS-ALPN-01 challenge's ALPN protocol name (RFC 8737 section 6.2).
ACME_TLS_1 = b"acme-tls/1"
#: ``id-pe-acmeIdentifier`` (RFC 8737 section 6.1): the extension holding SHA-256(key authorization).
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def _acme_identifier_value(key_authorization: str) -> bytes:
    """The extension's DER value: ``Authorization ::= OCTET STRING (SIZE (32))`` of the digest."""
    return b"\x04\x20" + hashlib.sha256(key_authorization.encode("ascii")).digest()


def tls_alpn01_certificate(hostname: str, key_authorization: str, now: datetime) -> tuple[bytes, bytes]:
    """The TLS-ALPN-01 challenge certificate for ``hostname`` (RFC 8737 section 3).

    A fresh P-256 key and a self-signed certificate whose only SAN is ``hostname`` and
    which carries the critical ``acmeIdentifier`` extension holding the SHA-256 of
    ``key_authorization``.  About a millisecond of CPU (the listener caches it per
    pending challenge).

    Returns:
        ``(key_pem, cert_pem)``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return _self_signed(key, hostname, now, timedelta(days=7),
                        x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, _acme_identifier_value(key_authorization)))


def tls_alpn01_mismatch(cert: x509.Certificate, hostname: str, key_authorization: str) -> str | None:
    """Why ``cert`` does not answer ``hostname``'s TLS-ALPN-01 challenge, or None when it does.

    What the CA checks (RFC 8737 section 3): the only SAN is ``hostname``, and a critical
    ``acmeIdentifier`` extension holds SHA-256(``key_authorization``).
    """
    names = dns_names(cert)
    if names != (hostname,):
        return f"the certificate names {list(names)}, not only {hostname!r}"
    try:
        extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except x509.ExtensionNotFound:
        return "the certificate has no acmeIdentifier extension"
    if not extension.critical:
        return "the acmeIdentifier extension is not critical"
    value = extension.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else None
    if raw != _acme_identifier_value(key_authorization):
        return "the acmeIdentifier extension does not hold our key authorization's digest"
    return None


def renewal_due_at(
    not_before: datetime,
    not_after: datetime,
    ari: AriWindow | None = None,
    jitter: float = 0.0,
) -> datetime:
    """When a certificate should be renewed.

    Inside the CA's ARI window when it gave one (``jitter`` in [0, 1) picks the
    point in the window, as RFC 9773 section 4.2 asks); otherwise when a third
    of the lifetime is left, or half of it for lifetimes under 10 days (so a
    6-day certificate renews after 3 days), moved earlier by up to ``jitter``
    times a twentieth of the lifetime so renewals of a batch spread out.

    An ARI window never makes a renewal later than that lifetime rule: some CAs
    suggest a window ending at expiry, and following it literally leaves no time
    for a failed attempt to be retried before the certificate lapses.  A window
    earlier than the rule (the CA wants it replaced soon, e.g. before a
    revocation) is followed.

    Args:
        not_before, not_after: The certificate's validity (aware datetimes).
        ari: The CA's renewal window, if known.
        jitter: A number in [0, 1) from an injected random source.
    """
    lifetime = not_after - not_before
    remaining_fraction = 0.5 if lifetime < timedelta(days=10) else 1 / 3
    due = not_after - lifetime * remaining_fraction - (lifetime / 20) * jitter
    if ari is not None and ari.end > ari.start:
        return min(ari.start + (ari.end - ari.start) * jitter, due)
    return due


class RenewalFacts(Protocol):
    """What :func:`renewal_time` reads of a certificate (a ``CertificateRecord`` has it all)."""

    not_before: datetime
    not_after: datetime
    fingerprint: str
    ari: AriWindow | None


def renewal_time(record: RenewalFacts) -> datetime:
    """When jobhost renews ``record``: :func:`renewal_due_at` with a per-certificate jitter.

    This is the one renewal rule: the issuing service schedules by it and the
    admin API shows it.

    The jitter is derived from the certificate's fingerprint, not drawn afresh, so
    one certificate's time is the same across scans, restarts and processes (the
    admin API shows the time the issuing service will use) while a batch issued
    together still spreads out.  A certificate is never renewed in its first tenth
    of life (at most its first day) on the CA's word alone: an ARI window already
    past for a brand-new certificate would otherwise loop orders.  Operators can
    still force a renewal.
    """
    seed = int(record.fingerprint[:8], 16) / 0x100000000 if record.fingerprint else 0.0
    due = renewal_due_at(record.not_before, record.not_after, record.ari, seed)
    lifetime = record.not_after - record.not_before
    return max(due, record.not_before + min(lifetime / 10, timedelta(days=1)))


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


__all__ = [
    "ACME_IDENTIFIER_OID",
    "ACME_TLS_1",
    "KEY_TYPES",
    "AriWindow",
    "ParsedCertificate",
    "RenewalFacts",
    "dns_names",
    "generate_private_key",
    "load_private_key",
    "make_csr",
    "parse_certificate",
    "private_key_pem",
    "renewal_due_at",
    "renewal_time",
    "self_signed_certificate",
    "split_pem_chain",
    "tls_alpn01_certificate",
    "tls_alpn01_mismatch",
    "utc",
]
