"""
Test helpers that ship with jobhost: a throwaway certificate authority.

Certificates are made when a test asks for them, never at import time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobhost.certs import generate_private_key, private_key_pem


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@attrs.define
class TestCA:
    """A root CA and one intermediate that issue leaf certificates for tests.

    Use :meth:`create`; then :meth:`issue` returns ``(key_pem, chain_pem)``
    where the chain is leaf + intermediate (the root is in :attr:`root_pem`).
    """

    __test__ = False  # not a pytest test class

    name: str
    root_key: object = attrs.field(repr=False)
    root: x509.Certificate = attrs.field(repr=False)
    intermediate_key: object = attrs.field(repr=False)
    intermediate: x509.Certificate = attrs.field(repr=False)

    @classmethod
    def create(cls, name: str = "jobhost test CA", key_type: str = "ecdsa-p256") -> TestCA:
        now = datetime.now(timezone.utc)
        root_key = generate_private_key(key_type)
        root = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} root"))
            .issuer_name(_name(f"{name} root"))
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        int_key = generate_private_key(key_type)
        intermediate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} intermediate"))
            .issuer_name(root.subject)
            .public_key(int_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(int_key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        return cls(name, root_key, root, int_key, intermediate)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def intermediate_pem(self) -> bytes:
        return self.intermediate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        hostname: str,
        *,
        key_type: str = "ecdsa-p256",
        not_before: datetime | None = None,
        lifetime: timedelta = timedelta(days=90),
        extra_names: tuple[str, ...] = (),
    ) -> tuple[bytes, bytes]:
        """Issue a leaf for ``hostname``; return ``(key_pem, chain_pem)`` (leaf + intermediate)."""
        key = generate_private_key(key_type)
        start = not_before or (datetime.now(timezone.utc) - timedelta(minutes=5))
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(hostname))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in (hostname, *extra_names)]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .sign(self.intermediate_key, hashes.SHA256())
        )
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.intermediate_pem
        return private_key_pem(key), chain


__all__ = ["TestCA"]
