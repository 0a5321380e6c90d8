"""Tests for jobhost.testing: the throwaway CA and the fake ACME client's own controls.

What the fake shares with the real client is checked by the contract suite
(``tests/test_acme_client_contract_fake.py``); this file checks the certificates
:class:`TestCA` makes and what tests drive the fake with (pause, failures, the
records it keeps), and the fake's answers in detail.
"""

from __future__ import annotations

import functools
import inspect
from datetime import datetime, timedelta, timezone

import josepy as jose
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from jobhost.acme.client import AcmeClient
from jobhost.acme.interfaces import IAcmeClient
from jobhost.certs import AriWindow, generate_private_key, load_private_key, make_csr, split_pem_chain
from jobhost.errors import AcmeProblem, InvalidCertificate, InvalidHostname
from jobhost.testing import FakeAcmeClient, MemoryResponder, TestCA

HOST = "jobs.acme-corp.test"
ACME_ERROR = "urn:ietf:params:acme:error:"
#: Slack for "now" read by the code under test and by the test.
SLACK = timedelta(seconds=10)
CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)


@functools.cache
def shared_ca() -> TestCA:
    """One CA for this module's fake clients, made on first use (never at import)."""
    return TestCA.create("testing module CA")


def _result(d: Deferred):
    """The result of a Deferred that has already fired (raising its failure)."""
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def _near(actual: datetime, expected: datetime) -> bool:
    return abs(actual - expected) <= SLACK


def _ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


# -- TestCA -----------------------------------------------------------------------------------------


def test_root_and_intermediate_are_a_real_ca():
    """The root is self-signed; both are critical-basic-constraints CAs that may sign certificates and CRLs only."""
    now = datetime.now(timezone.utc)
    ca = TestCA.create("Acme Test")
    root, intermediate = ca.root, ca.intermediate
    assert root.subject == root.issuer == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme Test root")])
    assert intermediate.subject.rfc4514_string() == "CN=Acme Test intermediate"
    assert intermediate.issuer == root.subject
    intermediate.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)

    for cert, path_length in ((root, None), (intermediate, 0)):
        constraints = _ext(cert, x509.BasicConstraints)
        assert constraints.critical and constraints.value == x509.BasicConstraints(ca=True, path_length=path_length)
        usage = _ext(cert, x509.KeyUsage)
        assert usage.critical and usage.value == CA_USAGE
        ski = _ext(cert, x509.SubjectKeyIdentifier)
        assert not ski.critical and ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = _ext(intermediate, x509.AuthorityKeyIdentifier)
    assert not aki.critical and aki.value.key_identifier == _ext(root, x509.SubjectKeyIdentifier).value.digest

    assert _near(root.not_valid_before_utc, now - timedelta(days=1))
    assert _near(root.not_valid_after_utc, now + timedelta(days=3650))
    assert _near(intermediate.not_valid_before_utc, now - timedelta(days=1))
    assert _near(intermediate.not_valid_after_utc, now + timedelta(days=1825))
    assert ca.root_pem == root.public_bytes(serialization.Encoding.PEM)
    assert ca.intermediate_pem == intermediate.public_bytes(serialization.Encoding.PEM)


def test_ca_stays_out_of_test_output():
    """A TestCA's repr is its name, not keys or certificates; pytest does not collect it (named like a test class)."""
    ca = TestCA.create("repr CA")
    assert repr(ca) == "TestCA(name='repr CA')"
    assert TestCA.__test__ is False, "pytest's flag: not a test class, wherever it is imported"


def test_issue_makes_a_server_certificate_for_the_names():
    """issue: a 90-day leaf from five minutes ago, for the hostname and extra names, chained to the intermediate."""
    now = datetime.now(timezone.utc)
    ca = shared_ca()
    key_pem, chain_pem = ca.issue(HOST, extra_names=("acme-corp.test",))
    leaf, intermediate = split_pem_chain(chain_pem)
    assert intermediate == ca.intermediate and chain_pem.endswith(ca.intermediate_pem)
    leaf.verify_directly_issued_by(ca.intermediate)
    assert leaf.subject.rfc4514_string() == f"CN={HOST}"
    san = _ext(leaf, x509.SubjectAlternativeName)
    assert not san.critical and san.value.get_values_for_type(x509.DNSName) == [HOST, "acme-corp.test"]
    constraints = _ext(leaf, x509.BasicConstraints)
    assert constraints.critical and constraints.value == x509.BasicConstraints(ca=False, path_length=None)
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    assert not eku.critical and list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = _ext(leaf, x509.AuthorityKeyIdentifier)
    assert not aki.critical and aki.value.key_identifier == _ext(intermediate, x509.SubjectKeyIdentifier).value.digest
    assert _near(leaf.not_valid_before_utc, now - timedelta(minutes=5))
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=90)
    assert load_private_key(key_pem).public_key() == leaf.public_key()


def test_issue_with_start_lifetime_and_key_type():
    """not_before, lifetime and key_type shape the leaf."""
    start = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    key_pem, chain_pem = shared_ca().issue(HOST, not_before=start, lifetime=timedelta(days=7), key_type="ecdsa-p384")
    leaf = split_pem_chain(chain_pem)[0]
    assert leaf.not_valid_before_utc == start and leaf.not_valid_after_utc == start + timedelta(days=7)
    assert leaf.public_key().curve.name == "secp384r1" and load_private_key(key_pem).public_key() == leaf.public_key()


# -- MemoryResponder --------------------------------------------------------------------------------


def test_memory_responder_publishes_and_withdraws():
    """Answers are kept while published; both calls give Deferreds that have fired; withdrawing twice is fine."""
    responder = MemoryResponder()
    started = responder.start_responding(HOST, "tok", "tok.thumb")
    assert isinstance(started, Deferred) and _result(started) is None
    assert responder.answers == {(HOST, "tok"): "tok.thumb"}
    stopped = responder.stop_responding(HOST, "tok")
    assert isinstance(stopped, Deferred) and _result(stopped) is None
    assert responder.answers == {}
    assert _result(responder.stop_responding(HOST, "tok")) is None


# -- FakeAcmeClient ---------------------------------------------------------------------------------


def _client(**kwargs) -> FakeAcmeClient:
    clock = Clock()
    clock.advance(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc).timestamp())
    return FakeAcmeClient(ca=shared_ca(), clock=clock, **kwargs)


def _now(client: FakeAcmeClient) -> datetime:
    return datetime.fromtimestamp(client.clock.seconds(), tz=timezone.utc)


def _account_key() -> jose.JWK:
    return jose.JWKEC(key=generate_private_key("ecdsa-p256"))


def _registered(**kwargs) -> FakeAcmeClient:
    client = _client(**kwargs)
    _result(client.register(_account_key()))
    return client


def _obtain(client: FakeAcmeClient, *names: str, responder=None, **kwargs) -> Deferred:
    csr = make_csr(generate_private_key("ecdsa-p256"), names)
    return client.obtain_certificate(list(names), csr, responder or MemoryResponder(), **kwargs)


def test_interface_defaults_are_the_implementations():
    """IAcmeClient documents the defaults the real client and the fake use: terms agreed, reason 0 (unspecified)."""
    for method in ("register", "obtain_certificate", "renewal_info", "revoke"):
        documented = IAcmeClient[method].getSignatureInfo()["optional"]
        for implementation in (AcmeClient, FakeAcmeClient):
            parameters = inspect.signature(getattr(implementation, method)).parameters
            actual = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
            assert actual == documented, (implementation.__name__, method)
    assert IAcmeClient["register"].getSignatureInfo()["optional"]["terms_agreed"] is True
    assert IAcmeClient["revoke"].getSignatureInfo()["optional"]["reason"] == 0
    client = _registered()
    assert client.registrations == [{"contact": (), "terms_agreed": True}], "the fake records the default"


def test_register_records_and_names_accounts_after_the_key():
    """Registrations are recorded; the account URL is named after the key's thumbprint, the same for every client."""
    key = _account_key()
    client = _client()
    url = _result(client.register(key, contact=["mailto:ops@acme-corp.test"], terms_agreed=False))
    assert url == "https://fake-ca.invalid/acct/" + jose.b64encode(key.thumbprint()).decode("ascii")[:16]
    assert client.registrations == [{"contact": ("mailto:ops@acme-corp.test",), "terms_agreed": False}]
    assert client.account_url == url and client.account_key is key
    assert _result(_client().register(key)) == url


def test_client_repr_hides_the_account_key_and_serials():
    """The fake's repr does not print the account's private key or the serials it issued and revoked."""
    client = _registered()
    chain = _result(_obtain(client, HOST)).chain_pem
    _result(client.revoke(chain))
    text = repr(client)
    assert client.account_url in text
    assert "JWK" not in text and "_issued_by" not in text and "_revoked_serials" not in text
    assert str(split_pem_chain(chain)[0].serial_number) not in text


def test_orders_are_recorded_and_certificates_last_the_lifetime():
    """Each order is recorded with its names, replaces and profile; the leaf starts at the clock's now."""
    client = _registered()
    issued = _result(_obtain(client, "Jobs.Acme-Corp.TEST", "acme-corp.test", replaces="aki.serial", profile="short"))
    assert client.orders == [
        {"hostnames": [HOST, "acme-corp.test"], "replaces": "aki.serial", "profile": "short",
         "challenge_type": "http-01"}
    ]
    assert issued.order_url == "https://fake-ca.invalid/order/1" and issued.cert_url == "https://fake-ca.invalid/cert/1"
    assert issued.alternates == ()
    leaf, intermediate = split_pem_chain(issued.chain_pem)
    assert intermediate == shared_ca().intermediate
    assert leaf.subject.rfc4514_string() == f"CN={HOST}", "named after the order's first hostname"
    assert leaf.not_valid_before_utc == _now(client)
    assert leaf.not_valid_after_utc == _now(client) + timedelta(days=90)
    constraints = _ext(leaf, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    week = _registered(lifetime=timedelta(days=7))
    leaf = split_pem_chain(_result(_obtain(week, HOST)).chain_pem)[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=7)


def test_csr_names_are_compared_without_case():
    """A CSR naming the order's hostnames in other letter case is accepted (DNS names have no case)."""
    client = _registered()
    key = generate_private_key("ecdsa-p256")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "JOBS.ACME-CORP.TEST")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("JOBS.ACME-CORP.TEST")]), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    issued = _result(client.obtain_certificate([HOST], csr, MemoryResponder()))
    leaf = split_pem_chain(issued.chain_pem)[0]
    assert _ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [HOST]


def test_csr_for_other_names_is_bad_csr():
    """A CSR whose names differ from the order's is refused with a 400 badCSR naming both."""
    client = _registered()
    csr = make_csr(generate_private_key("ecdsa-p256"), ["other.acme-corp.test"])
    with pytest.raises(AcmeProblem) as info:
        _result(client.obtain_certificate([HOST], csr, MemoryResponder()))
    assert info.value.type == ACME_ERROR + "badCSR" and info.value.status == 400
    assert "other.acme-corp.test" in info.value.detail and HOST in info.value.detail


def test_failures_are_raised_by_the_next_orders_in_turn():
    """Each queued failure fails one order, first queued first, after the answers were published and withdrawn."""
    client = _registered()
    first, second = AcmeProblem(type=ACME_ERROR + "rateLimited", detail="slow down"), RuntimeError("second")
    client.failures.extend([first, second])
    responder = MemoryResponder()
    checked = []
    with pytest.raises(AcmeProblem) as info:
        _result(_obtain(client, HOST, responder=responder, self_check=lambda *args: checked.append(args)))
    assert info.value is first
    assert len(checked) == 1 and responder.answers == {}, "self-checked, then withdrawn"
    with pytest.raises(RuntimeError, match="second"):
        _result(_obtain(client, HOST, responder=responder))
    assert client.failures == []
    assert _result(_obtain(client, HOST)).order_url == "https://fake-ca.invalid/order/3"


def test_pause_holds_orders_until_resume():
    """Paused, orders wait (answers published) until resume(); later orders are not held."""
    client = _registered()
    client.pause()
    responder = MemoryResponder()
    held = _obtain(client, HOST, responder=responder)
    assert not held.called and len(responder.answers) == 1
    client.resume()
    assert _result(held).order_url == "https://fake-ca.invalid/order/1"
    assert responder.answers == {}
    assert _obtain(client, HOST).called, "no longer paused"


def test_resume_keeping_paused_holds_the_next_orders():
    """resume(keep_paused=True) frees the held orders but holds the ones after them."""
    client = _registered()
    client.pause()
    first = _obtain(client, HOST)
    client.resume(keep_paused=True)
    assert first.called
    second = _obtain(client, HOST)
    assert not second.called
    client.resume()
    assert second.called
    client.resume()  # nothing held: nothing happens
    assert _obtain(client, HOST).called


def test_order_without_account_or_with_a_bad_name():
    """No account: RuntimeError; a name that is not a hostname: InvalidHostname; neither is recorded as an order."""
    with pytest.raises(RuntimeError, match="register"):
        _result(_obtain(_client(), HOST))
    client = _registered()
    with pytest.raises(InvalidHostname):
        _result(client.obtain_certificate(["not a hostname"], b"", MemoryResponder()))
    assert client.orders == []


def test_renewal_info_retry_after_from_the_window_is_clamped():
    """A window's own retry_after is used, clamped to the real client's bounds (a minute to a day)."""
    chain = _result(_obtain(_registered(), HOST)).chain_pem
    for asked, seconds in ((3600.0, 3600.0), (5.0, 60.0), (3 * 86400.0, 86400.0)):
        client = _client()
        start = _now(client) + timedelta(days=60)
        client.renewal_window = AriWindow(
            start=start, end=start + timedelta(days=1), retry_after=_now(client) + timedelta(seconds=asked)
        )
        window, after = _result(client.renewal_info(chain))
        assert after == seconds and window.retry_after == _now(client) + timedelta(seconds=seconds)
        assert (window.start, window.end) == (start, start + timedelta(days=1))


def test_renewal_info_default_retry_after_is_six_hours():
    """A window without retry_after: the fake CA's Retry-After, six hours unless set."""
    chain = _result(_obtain(_registered(), HOST)).chain_pem
    client = _client()
    start = _now(client) + timedelta(days=60)
    client.renewal_window = AriWindow(start=start, end=start + timedelta(days=1))
    window, after = _result(client.renewal_info(chain))
    assert after == 6 * 3600.0 and window.retry_after == _now(client) + timedelta(hours=6)
    client.ari_retry_after = 120
    assert _result(client.renewal_info(chain))[1] == 120.0


def test_renewal_info_per_certificate_and_refusals():
    """A callable window decides per certificate (None: no information); a non-certificate is refused."""
    chain = _result(_obtain(_registered(), HOST)).chain_pem
    client = _client()
    assert _result(client.renewal_info(chain)) is None
    client.renewal_window = lambda pem: None
    assert _result(client.renewal_info(chain)) is None
    with pytest.raises(InvalidCertificate):
        _result(client.renewal_info(b"not a certificate"))


@pytest.mark.parametrize("reason", [0, 1, 2, 3, 4, 5, 6, 8, 9, 10])
def test_revoke_accepts_every_crl_reason(reason):
    """Every RFC 5280 CRLReason but the unused 7 is accepted; the revoked chain is recorded."""
    client = _registered()
    chain = _result(_obtain(client, HOST)).chain_pem
    assert _result(client.revoke(chain, reason=reason)) is None
    assert client.revoked == [chain]


@pytest.mark.parametrize("reason", [7, 11, -1])
def test_revoke_refuses_other_reasons(reason):
    """Reason 7 and codes outside 0-10 are a 400 badRevocationReason naming the reason; nothing is revoked."""
    client = _registered()
    chain = _result(_obtain(client, HOST)).chain_pem
    with pytest.raises(AcmeProblem) as info:
        _result(client.revoke(chain, reason=reason))
    assert info.value.type == ACME_ERROR + "badRevocationReason" and info.value.status == 400
    assert info.value.detail == f"invalid revocation reason: {reason}"
    assert client.revoked == []
    assert _result(client.revoke(chain)) is None, "then revoked with the default reason"


def test_revoke_refusals_name_the_cause():
    """Twice: 400 alreadyRevoked; another account's: 403 unauthorized; unknown: 400 malformed."""
    client = _registered()
    chain = _result(_obtain(client, HOST)).chain_pem
    first_account = client.account_key
    _result(client.register(_account_key()))
    with pytest.raises(AcmeProblem) as info:
        _result(client.revoke(chain))
    assert (info.value.type, info.value.status) == (ACME_ERROR + "unauthorized", 403)
    assert info.value.detail == "the certificate being revoked is not associated with this account"
    _result(client.register(first_account))
    _result(client.revoke(chain))
    with pytest.raises(AcmeProblem) as info:
        _result(client.revoke(chain))
    assert (info.value.type, info.value.status) == (ACME_ERROR + "alreadyRevoked", 400)
    assert info.value.detail == "certificate has already been revoked"
    with pytest.raises(AcmeProblem) as info:
        _result(client.revoke(shared_ca().issue(HOST)[1]))
    assert (info.value.type, info.value.status) == (ACME_ERROR + "malformed", 400)
    assert info.value.detail == "unable to find specified certificate"
    assert client.revoked == [chain]


def test_revoke_with_the_certificate_key_needs_no_account():
    """Signed with the certificate's own key no account is needed; without it, no account is a RuntimeError."""
    owner = _registered()
    key = generate_private_key("ecdsa-p256")
    chain = _result(owner.obtain_certificate([HOST], make_csr(key, [HOST]), MemoryResponder())).chain_pem
    stranger = _client()
    with pytest.raises(RuntimeError, match="register"):
        _result(stranger.revoke(chain))
    with pytest.raises(AcmeProblem) as info:  # the CA is asked (this fake CA did not issue it)
        _result(stranger.revoke(chain, cert_key=jose.JWKEC(key=key)))
    assert info.value.type == ACME_ERROR + "malformed"
    assert _result(owner.revoke(chain, cert_key=jose.JWKEC(key=key))) is None
    assert owner.revoked == [chain]
    with pytest.raises(InvalidCertificate):
        _result(owner.revoke(b"not a certificate"))
