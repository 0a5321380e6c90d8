"""
The IAcmeClient contract, as a test mixin every ACME client runs.

The real :class:`jobhost.acme.client.AcmeClient` runs it against a real Pebble
(``tests/integration/test_acme_client_contract_pebble.py``) and
:class:`jobhost.testing.FakeAcmeClient` runs it on its own
(``tests/test_acme_client_contract_fake.py``), so that code tested against the
fake meets the same answers, shapes and errors from the real client.

A test module subclasses :class:`AcmeClientContractTests` together with
``twisted.trial.unittest.TestCase`` and provides:

- :meth:`~AcmeClientContractTests.make_client`: a fresh client with no account,
  for a CA that offers renewal information (RFC 9773) when ``ari`` is true and
  none otherwise; every client one test makes talks to the same CA.
- :meth:`~AcmeClientContractTests.make_responder`: an ``IHTTP01Responder`` whose
  answers the CA really fetches (for the fake, any responder).
- :meth:`~AcmeClientContractTests.trusted_roots`: root certificates (PEM) that
  issued chains must verify against.
- :meth:`~AcmeClientContractTests.now`: the clients' clock, as an aware datetime.

What is checked is only what callers may rely on (see
:class:`jobhost.acme.interfaces.IAcmeClient`); where CAs differ (the exact
problem type for a CSR the CA refuses), only the kind of answer is.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import attrs
import josepy as jose
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store
from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobhost.acme.client import ARI_RETRY_AFTER_BOUNDS
from jobhost.acme.interfaces import IAcmeClient, IHTTP01Responder
from jobhost.certs import dns_names, generate_private_key, make_csr, split_pem_chain
from jobhost.errors import AcmeProblem, InvalidCertificate, InvalidHostname

ACME_ERROR = "urn:ietf:params:acme:error:"


@implementer(IHTTP01Responder)
@attrs.define
class RecordingResponder:
    """Passes every call on to ``responder`` and records it, to check what a client published."""

    responder: Any
    started: list[tuple[str, str, str]] = attrs.field(factory=list)
    stopped: list[tuple[str, str]] = attrs.field(factory=list)

    def start_responding(self, hostname: str, token: str, key_authorization: str) -> Deferred:
        self.started.append((hostname, token, key_authorization))
        return maybeDeferred(self.responder.start_responding, hostname, token, key_authorization)

    def stop_responding(self, hostname: str, token: str) -> Deferred:
        self.stopped.append((hostname, token))
        return maybeDeferred(self.responder.stop_responding, hostname, token)

    def serving(self) -> set[tuple[str, str]]:
        """The (hostname, token) pairs started and not stopped."""
        return {(h, t) for h, t, _ in self.started} - set(self.stopped)


def new_account_key() -> jose.JWK:
    """A fresh ECDSA P-256 account key."""
    return jose.JWKEC(key=generate_private_key("ecdsa-p256"))


def key_authorization(token: str, account_key: jose.JWK) -> str:
    """RFC 8555 section 8.1: ``token || "." || base64url(JWK thumbprint)``."""
    return token + "." + jose.b64encode(account_key.thumbprint()).decode("ascii")


def verify_chain(chain_pem: bytes, roots_pem: list[bytes], hostname: str) -> list[x509.Certificate]:
    """Verify leaf + intermediates up to one of ``roots_pem`` for ``hostname``, at the leaf's start."""
    leaf, *intermediates = split_pem_chain(chain_pem)
    roots = [x509.load_pem_x509_certificate(pem) for pem in roots_pem]
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(leaf.not_valid_before_utc + timedelta(minutes=1))
        .build_server_verifier(x509.DNSName(hostname))
    )
    return verifier.verify(leaf, intermediates)


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class AcmeClientContractTests:
    """What every IAcmeClient does; mix into a trial ``TestCase`` with the harness methods."""

    # -- what a test module provides ---------------------------------------------------------

    def make_client(self, ari: bool = False) -> Any:
        """A fresh IAcmeClient without an account (cleaned up by the test module)."""
        raise NotImplementedError

    def make_responder(self) -> Any:
        """An IHTTP01Responder the CA of :meth:`make_client` validates against."""
        raise NotImplementedError

    def trusted_roots(self) -> list[bytes]:
        """Root certificates (PEM) the CA's chains lead to."""
        raise NotImplementedError

    def now(self) -> datetime:
        """The clients' clock, aware."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------

    def responder(self) -> RecordingResponder:
        return RecordingResponder(self.make_responder())

    async def registered(self, ari: bool = False) -> tuple[Any, jose.JWK]:
        """A fresh client with a fresh account."""
        client = self.make_client(ari=ari)
        account_key = new_account_key()
        await client.register(account_key, contact=("mailto:ops@example.com",))
        return client, account_key

    async def obtain(self, client: Any, hostnames: list[str], responder: RecordingResponder | None = None,
                     **kwargs: Any) -> tuple[Any, Any]:
        """Obtain a certificate for ``hostnames`` with a fresh key; return ``(issued, key)``."""
        key = generate_private_key("ecdsa-p256")
        csr = make_csr(key, [h.lower() for h in hostnames])
        issued = await client.obtain_certificate(hostnames, csr, responder or self.responder(), **kwargs)
        return issued, key

    # -- the interface -----------------------------------------------------------------------

    def test_provides_interface(self) -> None:
        """The client provides IAcmeClient, with the directory URL it talks to."""
        client = self.make_client()
        self.assertTrue(verifyObject(IAcmeClient, client))
        self.assertIsInstance(client.directory_url, str)

    # -- accounts ------------------------------------------------------------------------------

    async def test_register_same_key_same_account(self) -> None:
        """The same key registered twice (on two clients) fires with one account URL; another key, another."""
        account_key = new_account_key()
        first = await self.make_client().register(account_key, contact=("mailto:ops@example.com",))
        second = await self.make_client().register(account_key)
        other = await self.make_client().register(new_account_key())
        self.assertIsInstance(first, str)
        self.assertTrue(first.startswith("https://"), first)
        self.assertEqual(first, second)
        self.assertNotEqual(first, other)

    # -- obtaining certificates ----------------------------------------------------------------

    async def test_obtain_certificate(self) -> None:
        """A certificate names the (normalised) hostnames, certifies the CSR's key and chains to the CA's root."""
        client, account_key = await self.registered()
        responder = self.responder()
        issued, key = await self.obtain(client, ["Jobs.Contract.test", "careers.contract.test"], responder)
        self.assertIsInstance(issued.chain_pem, bytes)
        self.assertIsInstance(issued.alternates, tuple)
        self.assertIsInstance(issued.order_url, str)
        self.assertIsInstance(issued.cert_url, str)
        leaf, *intermediates = split_pem_chain(issued.chain_pem)
        self.assertGreaterEqual(len(intermediates), 1, "the chain carries the intermediate")
        self.assertEqual(set(dns_names(leaf)), {"jobs.contract.test", "careers.contract.test"})
        self.assertEqual(_public_der(leaf.public_key()), _public_der(key.public_key()))
        verify_chain(issued.chain_pem, self.trusted_roots(), "jobs.contract.test")
        for alternate in issued.alternates:
            self.assertEqual(split_pem_chain(alternate)[0].serial_number, leaf.serial_number)

    async def test_answers_are_published_and_withdrawn(self) -> None:
        """Each hostname's key authorization (token "." thumbprint) is published, then withdrawn."""
        client, account_key = await self.registered()
        responder = self.responder()
        await self.obtain(client, ["publish.contract.test", "withdraw.contract.test"], responder)
        self.assertEqual({h for h, _, _ in responder.started}, {"publish.contract.test", "withdraw.contract.test"})
        for hostname, token, answer in responder.started:
            self.assertEqual(answer, key_authorization(token, account_key))
        self.assertEqual(responder.serving(), set(), "every answer started is stopped")

    async def test_self_check_sees_the_published_answer(self) -> None:
        """The self-check is called for each hostname with the answer already being served."""
        client, account_key = await self.registered()
        responder = self.responder()
        checked: list[tuple[str, str, str, bool]] = []

        def self_check(hostname: str, token: str, answer: str) -> None:
            checked.append((hostname, token, answer, (hostname, token) in responder.serving()))

        await self.obtain(client, ["checked.contract.test"], responder, self_check=self_check)
        ((hostname, token, answer, serving),) = checked
        self.assertEqual((hostname, answer, serving), ("checked.contract.test", key_authorization(token, account_key), True))

    async def test_failing_self_check_aborts(self) -> None:
        """A self-check failure fails the order with that very exception, and the answer is withdrawn."""
        client, _ = await self.registered()
        responder = self.responder()

        class NotServing(Exception):
            pass

        def self_check(hostname: str, token: str, answer: str) -> None:
            raise NotServing(hostname)

        error = await self.assertFailure(
            Deferred.fromCoroutine(self.obtain(client, ["unserved.contract.test"], responder, self_check=self_check)),
            NotServing,
        )
        self.assertEqual(error.args, ("unserved.contract.test",))
        self.assertEqual(responder.serving(), set())

    async def test_csr_for_other_names_is_refused(self) -> None:
        """A CSR that does not name the order's hostnames is refused by the CA: an AcmeProblem with a type."""
        client, _ = await self.registered()
        responder = self.responder()
        csr = make_csr(generate_private_key("ecdsa-p256"), ["elsewhere.contract.test"])
        problem = await self.assertFailure(
            client.obtain_certificate(["ordered.contract.test"], csr, responder), AcmeProblem
        )
        self.assertTrue(problem.type.startswith(ACME_ERROR), problem.type)
        self.assertTrue(400 <= problem.status < 500, problem.status)
        self.assertEqual(responder.serving(), set())

    async def test_invalid_hostname_sends_nothing(self) -> None:
        """A name that is not a hostname fails with InvalidHostname before anything is published."""
        client, _ = await self.registered()
        responder = self.responder()
        csr = make_csr(generate_private_key("ecdsa-p256"), ["valid.contract.test"])
        await self.assertFailure(client.obtain_certificate(["not a hostname"], csr, responder), InvalidHostname)
        self.assertEqual(responder.started, [])

    async def test_obtain_without_account(self) -> None:
        """Ordering before any register() fails with RuntimeError (our misuse), publishing nothing."""
        client = self.make_client()
        responder = self.responder()
        csr = make_csr(generate_private_key("ecdsa-p256"), ["early.contract.test"])
        await self.assertFailure(client.obtain_certificate(["early.contract.test"], csr, responder), RuntimeError)
        self.assertEqual(responder.started, [])

    # -- renewal information -------------------------------------------------------------------

    async def test_renewal_info_shape(self) -> None:
        """With ARI the answer is (window, seconds): an aware window, seconds within the bounds, retry_after = now + seconds."""
        client, _ = await self.registered(ari=True)
        issued, _ = await self.obtain(client, ["ari.contract.test"])
        before = self.now()
        answer = await client.renewal_info(issued.chain_pem)
        after = self.now()
        self.assertIsInstance(answer, tuple)
        window, seconds = answer
        self.assertIsInstance(seconds, float)
        low, high = ARI_RETRY_AFTER_BOUNDS
        self.assertTrue(low <= seconds <= high, seconds)
        for moment in (window.start, window.end, window.retry_after):
            self.assertIsInstance(moment, datetime)
            self.assertIsNotNone(moment.tzinfo)
        self.assertLessEqual(window.start, window.end)
        self.assertTrue(
            before + timedelta(seconds=seconds) - timedelta(seconds=1)
            <= window.retry_after
            <= after + timedelta(seconds=seconds) + timedelta(seconds=1)
        )
        self.assertTrue(window.explanation_url is None or isinstance(window.explanation_url, str))

    async def test_renewal_info_without_ari(self) -> None:
        """A CA that offers no renewal information: renewal_info fires with None."""
        client, _ = await self.registered(ari=False)
        issued, _ = await self.obtain(client, ["no-ari.contract.test"])
        self.assertIsNone(await client.renewal_info(issued.chain_pem))

    async def test_renewal_info_of_garbage(self) -> None:
        """Bytes that hold no certificate fail with InvalidCertificate."""
        client, _ = await self.registered(ari=True)
        await self.assertFailure(client.renewal_info(b"not a certificate"), InvalidCertificate)

    # -- revocation ----------------------------------------------------------------------------

    async def test_revoke(self) -> None:
        """Revoking fires with None; revoking the same certificate again is alreadyRevoked."""
        client, _ = await self.registered()
        issued, _ = await self.obtain(client, ["revoked.contract.test"])
        self.assertIsNone(await client.revoke(issued.chain_pem, reason=4))
        problem = await self.assertFailure(client.revoke(issued.chain_pem), AcmeProblem)
        self.assertEqual(problem.type, ACME_ERROR + "alreadyRevoked")

    async def test_revoke_another_accounts_certificate(self) -> None:
        """An account may not revoke a certificate another account ordered: unauthorized."""
        client, _ = await self.registered()
        issued, _ = await self.obtain(client, ["theirs.contract.test"])
        await client.register(new_account_key())
        problem = await self.assertFailure(client.revoke(issued.chain_pem), AcmeProblem)
        self.assertEqual(problem.type, ACME_ERROR + "unauthorized")

    async def test_revoke_with_unused_reason(self) -> None:
        """CRLReason 7 does not exist: badRevocationReason, and the certificate stays revocable."""
        client, _ = await self.registered()
        issued, _ = await self.obtain(client, ["reason.contract.test"])
        problem = await self.assertFailure(client.revoke(issued.chain_pem, reason=7), AcmeProblem)
        self.assertEqual(problem.type, ACME_ERROR + "badRevocationReason")
        self.assertIsNone(await client.revoke(issued.chain_pem, reason=1))


__all__ = [
    "ACME_ERROR",
    "AcmeClientContractTests",
    "RecordingResponder",
    "key_authorization",
    "new_account_key",
    "verify_chain",
]
