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


@attrs.define
class FakeIssuedChain:
    """What :meth:`FakeAcmeClient.obtain_certificate` fires with (as the real client's result)."""

    chain_pem: bytes
    alternates: tuple = ()
    order_url: str = ""
    cert_url: str = ""


@attrs.define
class FakeAcmeClient:
    """Stands in for :class:`jobhost.acme.client.AcmeClient` in unit tests of its callers.

    Issues from a :class:`TestCA` with certificates valid from the clock's now for
    ``lifetime``.  Controls: :meth:`pause` makes orders wait until :meth:`resume`;
    :attr:`failures` is a list of exceptions raised by the next orders, in turn.
    Records every call in :attr:`orders`, :attr:`registrations`, :attr:`revoked`.
    """

    ca: TestCA
    clock: object
    directory_url: str = "https://fake-ca.invalid/directory"
    lifetime: timedelta = timedelta(days=90)
    #: An AriWindow (or a callable ``chain_pem -> AriWindow | None``) for renewal_info.
    renewal_window: object = None
    failures: list = attrs.field(factory=list)
    orders: list = attrs.field(factory=list)
    registrations: list = attrs.field(factory=list)
    revoked: list = attrs.field(factory=list)
    accounts: dict = attrs.field(factory=dict)
    _paused: list | None = None

    def pause(self) -> None:
        """Hold every following order until :meth:`resume`."""
        self._paused = []

    def resume(self, keep_paused: bool = False) -> None:
        """Let held orders complete; with ``keep_paused`` the orders they free up are held too."""
        held, self._paused = self._paused or [], ([] if keep_paused else None)
        for d in held:
            d.callback(None)

    def register(self, account_key, contact=(), terms_agreed=True, eab=None):
        """Find-or-create the account for ``account_key`` (a josepy JWK), as the real client does."""
        from twisted.internet.defer import succeed

        thumb = account_key.thumbprint()
        self.registrations.append({"contact": tuple(contact), "terms_agreed": terms_agreed})
        if thumb not in self.accounts:
            self.accounts[thumb] = f"https://fake-ca.invalid/acct/{len(self.accounts) + 1}"
        return succeed(self.accounts[thumb])

    def obtain_certificate(self, hostnames, csr_pem, responder, self_check=None, replaces=None, profile=None):
        from twisted.internet.defer import Deferred

        async def run():
            self.orders.append({"hostnames": list(hostnames), "replaces": replaces, "profile": profile})
            token = f"token{len(self.orders)}"
            await responder.start_responding(hostnames[0], token, token + ".thumb")
            try:
                if self_check is not None:
                    await self_check(hostnames[0], token, token + ".thumb")
                if self._paused is not None:
                    wait: Deferred = Deferred()
                    self._paused.append(wait)
                    await wait
                if self.failures:
                    raise self.failures.pop(0)
            finally:
                await responder.stop_responding(hostnames[0], token)
            return FakeIssuedChain(chain_pem=self._issue_matching(csr_pem, hostnames))

        return Deferred.fromCoroutine(run())

    def _issue_matching(self, csr_pem: bytes, hostnames) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        start = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(hostnames[0]))
            .issuer_name(self.ca.intermediate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + self.lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in hostnames]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.intermediate_key.public_key()),
                critical=False,
            )
            .sign(self.ca.intermediate_key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self.ca.intermediate_pem

    def renewal_info(self, chain_pem):
        from twisted.internet.defer import succeed

        window = self.renewal_window
        return succeed(window(chain_pem) if callable(window) else window)

    def revoke(self, chain_pem, reason=0):
        from twisted.internet.defer import succeed

        self.revoked.append(chain_pem)
        return succeed(None)


__all__ = ["FakeAcmeClient", "FakeIssuedChain", "TestCA"]
