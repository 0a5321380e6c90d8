"""Tests for jobhost.certs: parsing key + chain, and the renewal rule (pure), and records.certificate_record."""

from datetime import datetime, timedelta, timezone

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from jobhost.certs import (
    KEY_TYPES,
    AriWindow,
    generate_private_key,
    load_private_key,
    make_csr,
    parse_certificate,
    private_key_pem,
    renewal_due_at,
    renewal_time,
    self_signed_certificate,
    split_pem_chain,
    utc,
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
    csr = x509.load_pem_x509_csr(make_csr(generate_private_key(), ["a.test", "b.test"]))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.test", "b.test"]


def test_csr_names_the_first_hostname_as_its_subject():
    """The CSR's common name is the first hostname, and its SAN is not critical (the subject is not empty)."""
    csr = x509.load_pem_x509_csr(make_csr(generate_private_key(), ["a.test", "b.test", "c.test"]))
    assert [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["a.test"]
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical is False
    assert csr.is_signature_valid


@pytest.mark.parametrize(
    "key_type, kind, size",
    [
        ("ecdsa-p256", ec.EllipticCurvePrivateKey, 256),
        ("ecdsa-p384", ec.EllipticCurvePrivateKey, 384),
        ("rsa-2048", rsa.RSAPrivateKey, 2048),
        ("rsa-4096", rsa.RSAPrivateKey, 4096),
    ],
)
def test_each_key_type_makes_that_kind_of_key(key_type, kind, size):
    """Every key type the config offers makes a key of that algorithm and size."""
    assert key_type in KEY_TYPES
    key = generate_private_key(key_type)
    assert isinstance(key, kind)
    assert key.key_size == size


def test_unknown_key_type_is_refused_naming_the_choices():
    """A key type jobhost cannot make raises ValueError listing the ones it can."""
    with pytest.raises(ValueError, match="rsa-3072.*ecdsa-p256, ecdsa-p384, rsa-2048, rsa-4096"):
        generate_private_key("rsa-3072")


def test_pem_without_a_certificate_is_refused(ca):
    """PEM data holding only a key, no certificate, raises InvalidCertificate."""
    key, _ = ca.issue("a.test")
    with pytest.raises(InvalidCertificate, match="certificate PEM"):
        split_pem_chain(key)


def test_rsa_keys_load_without_the_slow_consistency_check():
    """RSA keys load without cryptography's check of the primes (~0.7 s for RSA-4096 on the reactor).

    A key whose CRT coefficient is wrong shows it: the checked loader refuses it, load_private_key
    takes it, with its public half intact (what parse_certificate compares with the leaf).
    """
    good = generate_private_key("rsa-2048").private_numbers()
    wrong_iqmp = (good.iqmp + 1) % good.p
    broken = rsa.RSAPrivateNumbers(
        good.p, good.q, good.d, good.dmp1, good.dmq1, wrong_iqmp, good.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    pem = private_key_pem(broken)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=None)
    assert load_private_key(pem).public_key().public_numbers() == good.public_numbers


def test_certificate_names_are_lower_case(ca):
    """Names in the leaf's subjectAltName come out lower case, in order, so they match hostnames."""
    key, chain = ca.issue("Jobs.Acme-Corp.TEST", extra_names=("WWW.Acme-Corp.Test",))
    assert parse_certificate(key, chain).names == ("jobs.acme-corp.test", "www.acme-corp.test")


def test_certificate_without_subject_alt_names_has_no_names():
    """A certificate naming its host only in the common name (no SAN) has no names, and still parses."""
    key = generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    parsed = parse_certificate(private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))
    assert parsed.names == ()


def test_self_signed_fallback():
    """The fallback certificate is self-signed for its name and parses as a record."""
    key, cert = self_signed_certificate("jobhost-fallback.invalid", T0)
    record = certificate_record("jobhost-fallback.invalid", key, cert)
    assert record.issuer == "CN=jobhost-fallback.invalid"


def test_fallback_certificate_is_valid_from_an_hour_ago_for_ten_years():
    """The fallback starts an hour before now (clients whose clock is behind accept it) and lasts 3650 days."""
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    _, cert_pem = self_signed_certificate("jobhost-fallback.invalid", now)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.not_valid_before_utc == now - timedelta(hours=1)
    assert cert.not_valid_after_utc == now + timedelta(days=3650)


def test_fallback_certificate_is_an_end_entity_certificate_for_its_name():
    """The fallback cannot sign other certificates (critical basic constraints, not a CA) and names its host."""
    _, cert_pem = self_signed_certificate("jobhost-fallback.invalid", T0, days=30)
    cert = x509.load_pem_x509_certificate(cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical is True
    assert constraints.value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical is False
    assert san.value.get_values_for_type(x509.DNSName) == ["jobhost-fallback.invalid"]
    assert cert.not_valid_after_utc == T0 + timedelta(days=30)


def test_ninety_day_renews_after_sixty_days():
    """A 90-day certificate is due when a third of its lifetime is left (day 60)."""
    assert renewal_due_at(T0, T0 + timedelta(days=90)) == T0 + timedelta(days=60)


def test_six_day_renews_after_three_days():
    """A 6-day certificate is due at half its lifetime (day 3)."""
    assert renewal_due_at(T0, T0 + timedelta(days=6)) == T0 + timedelta(days=3)


@pytest.mark.parametrize(
    "lifetime, due",
    [
        # under 10 days: half the lifetime
        (timedelta(days=10) - timedelta(seconds=1), timedelta(days=5) - timedelta(seconds=0.5)),
        # 10 days and more: when a third is left
        (timedelta(days=10), timedelta(days=6, hours=16)),
    ],
    ids=["just-under-10-days", "exactly-10-days"],
)
def test_ten_day_lifetime_is_where_renewal_moves_from_half_to_two_thirds(lifetime, due):
    """Certificates shorter than 10 days renew at half their life; a 10-day one when a third is left."""
    assert renewal_due_at(T0, T0 + lifetime) == T0 + due


@pytest.mark.parametrize(
    "lifetime, due",
    [
        # day 40 moved earlier by half of 60/20 = 3 days
        (timedelta(days=60), timedelta(days=38, hours=12)),
        # day 3 moved earlier by half of 6/20 days = 0.15 days
        (timedelta(days=6), timedelta(days=2, hours=20, minutes=24)),
    ],
)
def test_jitter_moves_renewal_earlier_by_its_share_of_a_twentieth_of_the_lifetime(lifetime, due):
    """Jitter 0.5 moves the due time earlier by half a twentieth of the lifetime."""
    assert renewal_due_at(T0, T0 + lifetime, None, jitter=0.5) == T0 + due


@pytest.mark.parametrize("start, end", [(20, 20), (21, 20)], ids=["empty", "reversed"])
def test_ari_window_without_any_time_in_it_is_ignored(start, end):
    """An ARI window whose end is not after its start is ignored: the lifetime rule decides."""
    ari = AriWindow(start=T0 + timedelta(days=start), end=T0 + timedelta(days=end))
    assert renewal_due_at(T0, T0 + timedelta(days=90), ari, jitter=0.0) == T0 + timedelta(days=60)


def test_ari_window_ending_at_expiry_never_makes_renewal_later_than_the_lifetime_rule():
    """A CA's window ending at expiry (1 h 23 min before a 30-day certificate lapses) is not followed
    literally: the renewal comes no later than the lifetime rule's, leaving time to retry a failure."""
    not_after = T0 + timedelta(days=30)
    ari = AriWindow(start=not_after - timedelta(hours=1, minutes=23), end=not_after)
    for jitter in (0.0, 0.5, 0.99):
        assert renewal_due_at(T0, not_after, ari, jitter) == renewal_due_at(T0, not_after, None, jitter)
    assert renewal_due_at(T0, not_after, ari, 0.0) == T0 + timedelta(days=20)


def test_ari_window_wins():
    """With an ARI window before the lifetime rule's time the due time lies inside it."""
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


def test_utc_reads_a_naive_time_as_utc_and_converts_an_aware_one():
    """A naive datetime is taken to be UTC; an aware one is converted to UTC."""
    naive = utc(datetime(2026, 1, 1, 12))
    assert (naive.hour, naive.tzinfo) == (12, timezone.utc)
    converted = utc(datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1))))
    assert (converted.hour, converted.tzinfo) == (12, timezone.utc)
