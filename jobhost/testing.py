"""
Test helpers that ship with jobhost: a throwaway certificate authority and a fake ACME client.

Certificates are made when a test asks for them, never at import time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from zope.interface import implementer

from jobhost.acme.client import ARI_RETRY_AFTER_BOUNDS
from jobhost.acme.interfaces import IAcmeClient, IHTTP01Responder
from jobhost.acme.resources import IssuedChain, ari_cert_id, normalise_all
from jobhost.certs import generate_private_key, private_key_pem, split_pem_chain
from jobhost.errors import AcmeProblem, InvalidCertificate


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


#: Revocation reasons a CA accepts (RFC 5280 CRLReason; 7 is unused).
_REVOCATION_REASONS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10})

_ACME_ERROR = "urn:ietf:params:acme:error:"


@implementer(IHTTP01Responder)
class MemoryResponder:
    """An HTTP-01 responder that keeps published answers in :attr:`answers`.

    ``answers`` maps ``(hostname, token)`` to the key authorization while it is
    published.  Tests that must serve the answers (to a real CA) subclass it and
    read the dict from their HTTP handler.
    """

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], str] = {}

    def start_responding(self, hostname: str, token: str, key_authorization: str) -> Deferred:
        """Publish the answer; fires with None."""
        self.answers[(hostname, token)] = key_authorization
        return succeed(None)

    def stop_responding(self, hostname: str, token: str) -> Deferred:
        """Withdraw the answer; fires with None."""
        self.answers.pop((hostname, token), None)
        return succeed(None)


@implementer(IAcmeClient)
@attrs.define
class FakeAcmeClient:
    """Stands in for :class:`jobhost.acme.client.AcmeClient` in unit tests of its callers.

    Keeps the :class:`~jobhost.acme.interfaces.IAcmeClient` contract (it runs the same
    contract suite as the real client on Pebble, ``tests/acme_client_contract.py``):
    accounts are found or created per key, hostnames are normalised, every key
    authorization is published through the responder and self-checked before the
    "CA" is told, the CSR must name exactly the order's hostnames, and the answers are
    :class:`~jobhost.acme.resources.IssuedChain` and ``(AriWindow, seconds)`` as the real
    client gives them.  Certificates come from a :class:`TestCA`, valid from the
    clock's now for ``lifetime``.  Account URLs are named after their key, so every
    fake client finds the same account for a key; which certificates were issued and
    revoked is remembered per client.

    Controls: :meth:`pause` makes orders wait until :meth:`resume`; :attr:`failures`
    is a list of exceptions raised by the next orders, in turn (after the answers
    were published and self-checked, as a CA's refusal would come).  Records every
    call in :attr:`orders`, :attr:`registrations`, :attr:`revoked`.

    Attributes:
        ca: Issues the certificates.
        clock: The time certificates start at and ``renewal_info`` counts from.
        directory_url: Names the fake CA.
        lifetime: Of every certificate.
        renewal_window: None when the fake CA offers no renewal information
            (``renewal_info`` fires with None, as the real client does for a
            directory without ``renewalInfo``); else an ``AriWindow``, or a callable
            ``chain_pem -> AriWindow | None`` (None: fire with None for that
            certificate).  A window's ``retry_after``, when set, is when the CA says
            to ask again; otherwise :attr:`ari_retry_after` seconds from now.
        ari_retry_after: The fake CA's ``Retry-After`` for renewal information.
    """

    ca: TestCA
    clock: object
    directory_url: str = "https://fake-ca.invalid/directory"
    lifetime: timedelta = timedelta(days=90)
    renewal_window: object = None
    ari_retry_after: float = 6 * 3600.0
    failures: list = attrs.field(factory=list)
    orders: list = attrs.field(factory=list)
    registrations: list = attrs.field(factory=list)
    revoked: list = attrs.field(factory=list)
    accounts: dict = attrs.field(factory=dict)
    account_key: object = attrs.field(default=None, repr=False)
    account_url: str | None = None
    _paused: list | None = None
    #: serial -> account URL that ordered it; serials revoked.
    _issued_by: dict = attrs.field(factory=dict, repr=False)
    _revoked_serials: set = attrs.field(factory=set, repr=False)

    def pause(self) -> None:
        """Hold every following order until :meth:`resume`."""
        self._paused = []

    def resume(self, keep_paused: bool = False) -> None:
        """Let held orders complete; with ``keep_paused`` the orders they free up are held too."""
        held, self._paused = self._paused or [], ([] if keep_paused else None)
        for d in held:
            d.callback(None)

    def register(self, account_key, contact=(), terms_agreed=True, eab=None) -> Deferred:
        """Find-or-create the account for ``account_key`` (a josepy JWK), as the real client does."""
        thumb = account_key.thumbprint()
        self.registrations.append({"contact": tuple(contact), "terms_agreed": terms_agreed})
        if thumb not in self.accounts:
            # Named after the key, so another client of the fake CA finds the same account.
            self.accounts[thumb] = "https://fake-ca.invalid/acct/" + jose.b64encode(thumb).decode("ascii")[:16]
        self.account_key, self.account_url = account_key, self.accounts[thumb]
        return succeed(self.account_url)

    def obtain_certificate(
        self, hostnames, csr_pem, responder, self_check=None, replaces=None, profile=None, challenge_type="http-01"
    ) -> Deferred:
        """Publish, self-check and "validate" every hostname, then issue for the CSR's key."""

        async def run():
            if self.account_key is None:
                raise RuntimeError("FakeAcmeClient has no account: call register() first")
            names = normalise_all(hostnames)
            self.orders.append(
                {"hostnames": list(names), "replaces": replaces, "profile": profile, "challenge_type": challenge_type}
            )
            thumbprint = jose.b64encode(self.account_key.thumbprint()).decode("ascii")
            answers = [(name, f"token{len(self.orders)}-{i}") for i, name in enumerate(names)]
            started = []
            try:
                for name, token in answers:
                    await maybeDeferred(responder.start_responding, name, token, f"{token}.{thumbprint}")
                    started.append((name, token))
                if self_check is not None:
                    for name, token in answers:
                        await maybeDeferred(self_check, name, token, f"{token}.{thumbprint}")
                if self._paused is not None:
                    wait: Deferred = Deferred()
                    self._paused.append(wait)
                    await wait
                if self.failures:
                    raise self.failures.pop(0)
            finally:
                for name, token in started:
                    await maybeDeferred(responder.stop_responding, name, token)
            chain_pem = self._issue_matching(csr_pem, names)
            self._issued_by[split_pem_chain(chain_pem)[0].serial_number] = self.account_url
            n = len(self.orders)
            return IssuedChain(
                chain_pem=chain_pem,
                alternates=(),
                order_url=f"https://fake-ca.invalid/order/{n}",
                cert_url=f"https://fake-ca.invalid/cert/{n}",
            )

        return Deferred.fromCoroutine(run())

    def _issue_matching(self, csr_pem: bytes, hostnames) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            csr_names = set(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            csr_names = set()
        if not csr.is_signature_valid or {n.lower() for n in csr_names} != set(hostnames):
            raise AcmeProblem(
                type=_ACME_ERROR + "badCSR",
                detail=f"the CSR names {sorted(csr_names)}, the order {sorted(hostnames)}",
                status=400,
            )
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
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.intermediate_key.public_key()),
                critical=False,
            )
            .sign(self.ca.intermediate_key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self.ca.intermediate_pem

    def renewal_info(self, leaf_pem) -> Deferred:
        """``(window, retry_after_seconds)`` from :attr:`renewal_window`, or None; as the real client."""
        try:
            ari_cert_id(leaf_pem)  # the real client needs the certificate's ID to ask
        except InvalidCertificate as e:
            return fail(e)
        window = self.renewal_window
        if callable(window):
            window = window(leaf_pem)
        if window is None:
            return succeed(None)
        now = datetime.fromtimestamp(self.clock.seconds(), tz=timezone.utc)
        if window.retry_after is not None:
            seconds = (window.retry_after - now).total_seconds()
        else:
            seconds = float(self.ari_retry_after)
        low, high = ARI_RETRY_AFTER_BOUNDS
        seconds = min(max(seconds, low), high)
        return succeed((attrs.evolve(window, retry_after=now + timedelta(seconds=seconds)), seconds))

    def revoke(self, cert_pem, reason=0, cert_key=None) -> Deferred:
        """Revoke the leaf; refuses a second revocation, another account's certificate, a bad reason."""
        try:
            serial = split_pem_chain(cert_pem)[0].serial_number
        except InvalidCertificate as e:
            return fail(e)
        if cert_key is None and self.account_key is None:
            return fail(RuntimeError("FakeAcmeClient has no account: call register() first"))
        problem = None
        if int(reason) not in _REVOCATION_REASONS:
            problem = ("badRevocationReason", f"invalid revocation reason: {reason}")
        elif serial not in self._issued_by:
            problem = ("malformed", "unable to find specified certificate")
        elif cert_key is None and self._issued_by[serial] != self.account_url:
            problem = ("unauthorized", "the certificate being revoked is not associated with this account")
        elif serial in self._revoked_serials:
            problem = ("alreadyRevoked", "certificate has already been revoked")
        if problem is not None:
            code = 403 if problem[0] == "unauthorized" else 400
            return fail(AcmeProblem(type=_ACME_ERROR + problem[0], detail=problem[1], status=code))
        self._revoked_serials.add(serial)
        self.revoked.append(cert_pem)
        return succeed(None)


__all__ = ["FakeAcmeClient", "MemoryResponder", "TestCA"]
