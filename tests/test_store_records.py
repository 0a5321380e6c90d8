"""jobhost.store.records: what a record means, its stored form, and what a change to it reports."""

from __future__ import annotations

import attrs
import pytest
from store_contract import T0, make_account, make_certificate, shared_ca

from jobhost.certs import AriWindow
from jobhost.store.records import (
    Account,
    CertificateRecord,
    ChangeKind,
    DomainRecord,
    DomainState,
    certificate_change_kinds,
    certificate_record,
)

CERTIFICATE = frozenset((ChangeKind.CERTIFICATE,))
RENEWAL_INFO = frozenset((ChangeKind.RENEWAL_INFO,))


def registered(**changes) -> DomainRecord:
    """A record as registration makes it: only the hostname, state and times given."""
    return attrs.evolve(DomainRecord(hostname="a.example.com", state=DomainState.PENDING, created_at=T0, updated_at=T0), **changes)


def test_a_new_domain_record_starts_clean():
    """A record made with only hostname, state and times has no page, error, attempts, history or renewal request, version 0."""
    record = registered()
    assert (record.page, record.last_error, record.next_attempt, record.unpause_url) == (None, None, None, None)
    assert (record.attempts, record.history, record.renew_requested, record.version) == (0, (), False, 0)


def test_a_domain_document_from_an_older_jobhost_reads_with_the_same_defaults():
    """A stored document without the fields added later (attempts, history, renew_requested, version...) reads as a new record."""
    doc = {"hostname": "a.example.com", "state": "pending", "created_at": "2030-01-02T03:04:05.678901Z", "updated_at": "2030-01-02T03:04:05.678901Z"}
    assert DomainRecord.from_json(doc) == registered()


def test_a_domain_record_round_trips_through_its_document():
    """Every field of a domain record survives to_json/from_json."""
    record = registered(
        state=DomainState.FAILING,
        page={"title": "Jobs"},
        last_error={"code": "dns", "retryable": False},
        attempts=3,
        next_attempt=T0,
        unpause_url="https://ca.example/unpause",
        renew_requested=True,
        version=7,
    )
    assert DomainRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    "changes, parked",
    [
        ({"state": DomainState.FAILING, "last_error": {"code": "caa", "retryable": False}}, True),
        ({"state": DomainState.FAILING, "last_error": {"code": "dns", "retryable": True}}, False),
        ({"state": DomainState.FAILING, "last_error": {"code": "dns"}}, False),
        ({"state": DomainState.FAILING, "last_error": None}, False),
        ({"state": DomainState.FAILING, "last_error": {"code": "caa", "retryable": False}, "renew_requested": True}, False),
        ({"state": DomainState.ACTIVE, "last_error": {"code": "caa", "retryable": False}}, False),
    ],
)
def test_parked_means_failing_for_good_with_nobody_asking_again(changes, parked):
    """A record is parked only when failing with an error marked not retryable and no renewal was asked for."""
    assert registered(**changes).parked is parked


def test_certificate_change_kinds():
    """Same key and chain (only facts beside them changed) is RENEWAL_INFO; anything else, absence included, is CERTIFICATE."""
    old = make_certificate("a.example.com")
    with_window = attrs.evolve(old, ari=AriWindow(start=T0, end=T0))
    end = b"-----END CERTIFICATE-----\n"
    other_chain = certificate_record("a.example.com", old.key_pem, old.chain_pem[: old.chain_pem.index(end) + len(end)])
    assert certificate_change_kinds(old, with_window) == RENEWAL_INFO
    assert certificate_change_kinds(old, other_chain) == CERTIFICATE
    assert certificate_change_kinds(old, make_certificate("a.example.com")) == CERTIFICATE
    assert certificate_change_kinds(None, old) == CERTIFICATE
    assert certificate_change_kinds(old, None) == CERTIFICATE


def test_a_certificate_record_lists_the_leaf_names_as_a_tuple():
    """certificate_record reads the leaf's DNS names into an immutable tuple, so the record stays a hashable value."""
    key_pem, chain_pem = shared_ca().issue("a.example.com", extra_names=("www.a.example.com",))
    record = certificate_record("a.example.com", key_pem, chain_pem)
    assert sorted(record.names) == ["a.example.com", "www.a.example.com"]
    assert isinstance(record.names, tuple)
    assert hash(record) == hash(certificate_record("a.example.com", key_pem, chain_pem))


def test_private_keys_never_show_in_a_repr():
    """The repr of an account or a certificate record (what a log line or traceback shows) leaves the private key out."""
    account = make_account("https://ca.example/dir")
    certificate = make_certificate("a.example.com")
    for record in (account, certificate):
        assert b"PRIVATE KEY" in record.key_pem
        assert "PRIVATE KEY" not in repr(record)
        assert "key_pem" not in repr(record)
    assert Account.from_json(account.to_json()) == account


def test_a_certificate_record_keeps_its_issuer_and_old_records_without_one_still_load():
    """``acme_issuer`` survives to_json/from_json and shows in the public facts; a record written before
    issuers had names (no such key) loads with None, which the issuing service reads as the first issuer."""
    record = attrs.evolve(make_certificate("a.example.com"), acme_issuer="second-ca", directory_url="https://b/dir")
    doc = record.to_json()
    assert doc["acme_issuer"] == "second-ca"
    assert CertificateRecord.from_json(doc) == record
    assert record.public_json()["acme_issuer"] == "second-ca"
    del doc["acme_issuer"]
    assert CertificateRecord.from_json(doc).acme_issuer is None
