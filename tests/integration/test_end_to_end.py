"""
End to end, from the outside: twistd jobhost + a real Pebble CA, checked over real TLS.

Covers the ACME issue's acceptance: registration to a served certificate chaining to
Pebble's root, concurrent hostnames, badNonce at 5% and 50%, a CA outage and recovery,
the self-check sparing the CA, one account across restarts, and SIGKILLs during issuance.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from cryptography import x509

from acme_servers import _stop_process
from jobhost.store.records import certificate_record
from stack import Stack

PAGE = {
    "company": "ACME Corp",
    "intro": "We build rockets.",
    "jobs": [{"id": "eng-1", "title": "Rocket Engineer", "location": "Mojave", "employment_type": "FULL_TIME"}],
}


def names(leaf: x509.Certificate) -> list[str]:
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


@pytest.fixture
def stack(tmp_path):
    s = Stack.start(tmp_path)
    yield s
    s.stop()


def test_registration_to_served_certificate_and_page(stack):
    """A registered hostname is served, within seconds, a Pebble certificate and its careers page."""
    started = time.monotonic()
    stack.register("jobs.acme-corp.test", page=PAGE)
    leaf = stack.wait_served("jobs.acme-corp.test", timeout=20)
    assert names(leaf) == ["jobs.acme-corp.test"]
    assert time.monotonic() - started < 20
    status, body = stack.https_get("jobs.acme-corp.test", "/")
    assert status == 200 and b"Rocket Engineer" in body
    status, body = stack.https_get("jobs.acme-corp.test", "/jobs.json")
    assert status == 200 and json.loads(body)
    # A page update through the admin API is served at once (the rendered page is cached).
    updated = dict(PAGE, jobs=[{"id": "ops-9", "title": "Anvil Tester"}])
    status, _ = stack.api("PUT", "/api/v1/domains/jobs.acme-corp.test/page", updated)
    assert status == 200
    status, body = stack.https_get("jobs.acme-corp.test", "/")
    assert status == 200 and b"Anvil Tester" in body and b"Rocket Engineer" not in body
    doc = stack.wait_state("jobs.acme-corp.test", ("active",))
    assert doc["certificate"]["names"] == ["jobs.acme-corp.test"]
    assert "key_pem" not in json.dumps(doc)
    # Then a second and a third hostname, registered at once.
    stack.register("careers.beta.test")
    stack.register("jobs.gamma.test")
    for hostname in ("careers.beta.test", "jobs.gamma.test"):
        assert names(stack.wait_served(hostname, timeout=20)) == [hostname]
    # The first is still served its own certificate.
    assert names(stack.verified_leaf("jobs.acme-corp.test")) == ["jobs.acme-corp.test"]


def test_fifty_percent_bad_nonces(tmp_path):
    """With Pebble rejecting half of all nonces, issuance still succeeds (badNonce retried)."""
    s = Stack.start(tmp_path, nonce_reject=50)
    try:
        for hostname in ("a.nonce.test", "b.nonce.test", "c.nonce.test"):
            s.register(hostname)
        for hostname in ("a.nonce.test", "b.nonce.test", "c.nonce.test"):
            assert names(s.wait_served(hostname, timeout=30)) == [hostname]
    finally:
        s.stop()


def test_ca_outage_keeps_serving_and_recovers(stack):
    """With Pebble down, serving continues and the record says failing with a reason; it recovers."""
    stack.register("jobs.acme-corp.test")
    first = stack.wait_served("jobs.acme-corp.test")
    _stop_process(stack.pebble.process)
    status, doc = stack.api("POST", "/api/v1/domains/jobs.acme-corp.test/renew")
    assert status == 202, doc
    doc = stack.wait_state("jobs.acme-corp.test", ("failing",))
    assert doc["last_error"]["code"] == "ca_unreachable"
    assert doc["next_attempt"] is not None and doc["attempts"] >= 1
    # Serving continues with the old certificate (its chain is checked against the old root).
    assert stack.verified_leaf("jobs.acme-corp.test").serial_number == first.serial_number
    stack.register("new.acme-corp.test")
    stack.wait_state("new.acme-corp.test", ("failing",))
    # Pebble comes back (a new Pebble: new roots, and it forgot our account).
    stack.pebble.restart()
    stack.refresh_root()
    doc = stack.wait_state("new.acme-corp.test", ("active",), timeout=30)
    assert names(stack.verified_leaf("new.acme-corp.test")) == ["new.acme-corp.test"]
    doc = stack.wait_state("jobs.acme-corp.test", ("active",), timeout=30,
                           check=lambda d: d["certificate"]["serial"] != format(first.serial_number, "x"))


def test_self_check_failure_spends_no_validation(stack):
    """A hostname whose challenge we cannot serve fails the self-check; the CA is never asked."""
    stack.pebble.dns.add_a("elsewhere.acme-corp.test", ["127.0.0.2"])
    status, doc = stack.api("POST", "/api/v1/domains", {"hostname": "elsewhere.acme-corp.test"})
    assert status == 422, doc
    assert doc["error"]["code"] == "preflight_failed"
    assert "127.0.0.2" in json.dumps(doc)
    status, doc = stack.api("GET", "/api/v1/domains/elsewhere.acme-corp.test")
    assert status == 404, "a refused registration stores nothing"


def test_one_account_across_many_hostnames_and_restarts(stack):
    """Ten hostnames and two restarts leave exactly one account, in the store and at the CA."""
    hostnames = [f"h{i}.many.test" for i in range(10)]
    for hostname in hostnames:
        stack.register(hostname)
    for hostname in hostnames:
        stack.wait_state(hostname, ("active",))
    for _ in range(2):
        stack.restart_daemon()
        status, _ = stack.api("POST", f"/api/v1/domains/{hostnames[0]}/renew")
        assert status == 202
        stack.wait_state(hostnames[0], ("active",), check=lambda d: d["attempts"] == 0 and any(
            h["reason"] == "renewed" for h in d["history"]))
    accounts = list((stack.workdir / "var" / "store" / "accounts").glob("*.json"))
    assert len(accounts) == 1
    account_url = json.loads(accounts[0].read_text())["account_url"]
    certificates = list((stack.workdir / "var" / "store" / "certificates").glob("*.json"))
    assert len(certificates) == 10
    assert {json.loads(c.read_text())["account_url"] for c in certificates} == {account_url}


def test_sigkill_during_issuance(tmp_path):
    """SIGKILL at random moments during issuance, 20 times: afterwards every hostname is active with a valid key."""
    s = Stack.start(tmp_path)
    rng = random.Random(8555)
    hostnames = [f"k{i}.kill.test" for i in range(6)]
    try:
        for hostname in hostnames:
            s.register(hostname)
        for _ in range(20):
            time.sleep(rng.uniform(0.0, 0.4))
            s.daemon.kill(signal.SIGKILL)
            s.daemon.start()
            s.daemon.wait_listening(s.http, s.https, s.admin_port)
            # Force fresh orders so kills keep landing mid-issuance.
            s.api("POST", f"/api/v1/domains/{rng.choice(hostnames)}/renew")
        for hostname in hostnames:
            s.wait_state(hostname, ("active",), timeout=60)
            assert names(s.wait_served(hostname)) == [hostname]
        for path in (s.workdir / "var" / "store" / "certificates").glob("*.json"):
            doc = json.loads(path.read_text())
            record = certificate_record(doc["hostname"], doc["key_pem"].encode(), doc["chain_pem"].encode())
            assert record.hostname in record.names
            assert os.stat(path).st_mode & 0o777 == 0o600
        assert len(list((s.workdir / "var" / "store" / "accounts").glob("*.json"))) == 1
    finally:
        s.stop()
