"""
Certificates, keys and the renewal rule: the sans-IO heart of jobhost.

This module owns turning PEM bytes into a :class:`CertificateRecord`
(checking that key and leaf belong together), making keys and CSRs, making
the self-signed fallback certificate, and deciding *when* a certificate is
due for renewal.  It does no I/O and never reads the wall clock: every
function that needs the time takes ``now``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from jobhost.errors import InvalidCertificate
from jobhost.store.records import AriWindow, CertificateRecord

#: Key types jobhost can make; the config's ``[acme] key_type`` picks one.
KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-4096")


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
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as e:
        raise InvalidCertificate(f"cannot parse certificate PEM ({e})") from None
    if not certs:
        raise InvalidCertificate("no certificate in the PEM data")
    return certs


def load_private_key(key_pem: bytes):
    """Parse an unencrypted PEM private key; raise InvalidCertificate otherwise."""
    try:
        return serialization.load_pem_private_key(key_pem, password=None)
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


def certificate_record(
    hostname: str,
    key_pem: bytes,
    chain_pem: bytes,
    *,
    directory_url: str | None = None,
    account_url: str | None = None,
    ari_cert_id: str | None = None,
    ari: AriWindow | None = None,
) -> CertificateRecord:
    """Parse and check key + chain into a :class:`CertificateRecord`.

    The chain's first certificate is the leaf.  The key must match the leaf.
    The PEM is re-serialised canonically, so whatever was stored is exactly
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
    canonical_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return CertificateRecord(
        hostname=hostname,
        key_pem=private_key_pem(key),
        chain_pem=canonical_chain,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        names=dns_names(leaf),
        directory_url=directory_url,
        account_url=account_url,
        ari_cert_id=ari_cert_id,
        ari=ari,
    )


def self_signed_certificate(
    common_name: str, now: datetime, key_type: str = "ecdsa-p256", days: int = 3650
) -> tuple[bytes, bytes]:
    """Make a self-signed certificate for the fallback; return ``(key_pem, cert_pem)``."""
    key = generate_private_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


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

    Args:
        not_before, not_after: The certificate's validity (aware datetimes).
        ari: The CA's renewal window, if known.
        jitter: A number in [0, 1) from an injected random source.
    """
    if ari is not None and ari.end > ari.start:
        return ari.start + (ari.end - ari.start) * jitter
    lifetime = not_after - not_before
    remaining_fraction = 0.5 if lifetime < timedelta(days=10) else 1 / 3
    due = not_after - lifetime * remaining_fraction
    return due - (lifetime / 20) * jitter


def renewal_time(record: CertificateRecord) -> datetime:
    """When jobhost renews ``record``: :func:`renewal_due_at` with a per-certificate jitter.

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


def needs_renewal(record: CertificateRecord, now: datetime, jitter: float = 0.0) -> bool:
    """True when ``record`` is due for renewal at ``now`` (see :func:`renewal_due_at`)."""
    return now >= renewal_due_at(record.not_before, record.not_after, record.ari, jitter)


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


__all__ = [
    "KEY_TYPES",
    "certificate_record",
    "dns_names",
    "generate_private_key",
    "load_private_key",
    "make_csr",
    "needs_renewal",
    "private_key_pem",
    "renewal_due_at",
    "renewal_time",
    "self_signed_certificate",
    "split_pem_chain",
    "utc",
]
