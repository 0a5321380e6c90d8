"""Tests for jobhost.certs: parsing key + chain, and the renewal rule (pure), and records.certificate_record."""

from datetime import datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobhost.certs import (
    AriWindow,
    generate_private_key,
    make_csr,
    parse_certificate,
    renewal_due_at,
    renewal_time,
    self_signed_certificate,
)
from jobhost.errors import InvalidCertificate
from jobhost.store.records import CertificateRecord, certificate_record
from jobhost.testing import TestCA

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ca():
    return TestCA.create()


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048"])
def test_record_from_pem(ca, key_type):
    """A key + chain parse into a record whose facts match the leaf."""
    key, chain = ca.issue("jobs.acme-corp.test", key_type=key_type, not_before=T0)
    record = certificate_record("jobs.acme-corp.test", key, chain)
    assert record.not_before == T0
    assert record.not_after == T0 + timedelta(days=90)
    assert record.names == ("jobs.acme-corp.test",)
    assert "intermediate" in record.issuer
    assert len(record.fingerprint) == 64
    assert record.chain_pem.count(b"BEGIN CERTIFICATE") == 2


def test_json_round_trip(ca):
    """A record survives to_json/from_json unchanged, ARI window included."""
    key, chain = ca.issue("jobs.acme-corp.test")
    ari = AriWindow(start=T0, end=T0 + timedelta(days=1), retry_after=T0, explanation_url=None)
    record = certificate_record("jobs.acme-corp.test", key, chain, ari=ari, account_url="https://ca/acct/1")
    assert CertificateRecord.from_json(record.to_json()) == record
    assert "key_pem" not in record.public_json()
    assert b"PRIVATE" not in repr(record).encode()


def test_mismatched_key_refused(ca):
    """A key that does not belong to the leaf is refused, naming the mismatch."""
    key, _ = ca.issue("a.test")
    _, chain = ca.issue("b.test")
    with pytest.raises(InvalidCertificate, match="does not match"):
        certificate_record("b.test", key, chain)


@pytest.mark.parametrize("chain", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_garbage_chain_refused(ca, chain):
    """Unparsable certificate PEM raises InvalidCertificate."""
    key, _ = ca.issue("a.test")
    with pytest.raises(InvalidCertificate):
        certificate_record("a.test", key, chain)


def test_garbage_key_refused(ca):
    """Unparsable key PEM raises InvalidCertificate."""
    _, chain = ca.issue("a.test")
    with pytest.raises(InvalidCertificate, match="private key"):
        certificate_record("a.test", b"not a key", chain)


def test_csr_names():
    """The CSR carries every hostname as a SAN."""
    from cryptography import x509

    csr = x509.load_pem_x509_csr(make_csr(generate_private_key(), ["a.test", "b.test"]))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.test", "b.test"]


def test_self_signed_fallback():
    """The fallback certificate is self-signed for its name and parses as a record."""
    key, cert = self_signed_certificate("jobhost-fallback.invalid", T0)
    record = certificate_record("jobhost-fallback.invalid", key, cert)
    assert record.issuer == "CN=jobhost-fallback.invalid"


def test_ninety_day_renews_after_sixty_days():
    """A 90-day certificate is due when a third of its lifetime is left (day 60)."""
    assert renewal_due_at(T0, T0 + timedelta(days=90)) == T0 + timedelta(days=60)


def test_six_day_renews_after_three_days():
    """A 6-day certificate is due at half its lifetime (day 3)."""
    assert renewal_due_at(T0, T0 + timedelta(days=6)) == T0 + timedelta(days=3)


def test_ari_window_wins():
    """With an ARI window the due time lies inside it, whatever the lifetime says."""
    ari = AriWindow(start=T0 + timedelta(days=10), end=T0 + timedelta(days=12))
    assert renewal_due_at(T0, T0 + timedelta(days=90), ari, jitter=0.0) == ari.start
    assert renewal_due_at(T0, T0 + timedelta(days=90), ari, jitter=0.5) == T0 + timedelta(days=11)


@given(
    lifetime_hours=st.integers(min_value=1, max_value=400 * 24),
    jitter=st.floats(min_value=0, max_value=0.999),
)
def test_due_time_inside_lifetime(lifetime_hours, jitter):
    """The due time always lies inside the validity period, and jitter only moves it earlier."""
    not_after = T0 + timedelta(hours=lifetime_hours)
    due = renewal_due_at(T0, not_after, None, jitter)
    assert T0 < due < not_after
    assert due <= renewal_due_at(T0, not_after, None, 0.0)


def test_renewal_time(ca):
    """A 90-day certificate renews at day 60 moved earlier by its own fingerprint's jitter, the same every time."""
    key, chain = ca.issue("a.test", not_before=T0)
    record = certificate_record("a.test", key, chain)
    due = renewal_time(record)
    assert T0 + timedelta(days=60) - timedelta(days=90) / 20 < due <= T0 + timedelta(days=60)
    assert renewal_time(certificate_record("a.test", key, chain)) == due
    seed = int(record.fingerprint[:8], 16) / 0x100000000
    assert due == renewal_due_at(record.not_before, record.not_after, None, seed)


@attrs.frozen
class Facts:
    """Only what renewal_time reads, not a stored record."""

    not_before: datetime
    not_after: datetime
    fingerprint: str = ""
    ari: AriWindow | None = None


def test_renewal_time_takes_only_what_it_needs():
    """renewal_time reads validity, fingerprint and ARI window from any object that has them."""
    assert renewal_time(Facts(T0, T0 + timedelta(days=90))) == T0 + timedelta(days=60)


def test_renewal_time_never_in_first_tenth_of_life():
    """An ARI window already past for a new certificate moves renewal to a tenth of its life, at most a day."""
    past = AriWindow(start=T0 - timedelta(days=2), end=T0 - timedelta(days=1))
    assert renewal_time(Facts(T0, T0 + timedelta(days=90), ari=past)) == T0 + timedelta(days=1)
    assert renewal_time(Facts(T0, T0 + timedelta(days=6), ari=past)) == T0 + timedelta(days=0.6)


def test_parse_certificate_is_the_record_facts(ca):
    """parse_certificate gives the facts certificate_record stores, with canonical PEM."""
    key, chain = ca.issue("a.test", not_before=T0)
    parsed = parse_certificate(key, chain)
    record = certificate_record("a.test", key, chain)
    assert (parsed.not_before, parsed.not_after, parsed.fingerprint, parsed.names) == (
        record.not_before, record.not_after, record.fingerprint, record.names
    )
    assert parsed.key_pem == record.key_pem and parsed.chain_pem == record.chain_pem
    assert b"PRIVATE" not in repr(parsed).encode()
