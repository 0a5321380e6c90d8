"""
TLS-ALPN-01 end to end: twistd jobhost + Pebble validating on jobhost's HTTPS listener only.

Pebble's HTTP-01 port is one nothing listens on, so the first attempt (HTTP-01, preferred)
fails validation and the next one answers TLS-ALPN-01 from the store; with two worker
processes too.  While a challenge is pending, normal clients keep the normal certificate
and an ``acme-tls/1`` hello for a name without a challenge gets an alert.
"""

from __future__ import annotations

import socket
import ssl
from datetime import datetime, timezone

import pytest
from cryptography import x509

from jobhost.certs import tls_alpn01_mismatch
from jobhost.store.files import encode_record
from jobhost.store.records import TLS_ALPN_01, Challenge, tls_alpn01_key
from stack import Stack, stack_config
from test_workers import slots, source_for, wait_for

KEY_AUTH = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def alpn_config(workers: int):
    def make(http, https, admin, pebble):
        text = stack_config(http, https, admin, pebble, f"\n[server]\nworkers = {workers}\n" if workers > 1 else "")
        text = text.replace('timeout = "10s"\n', 'timeout = "10s"\nchallenges = ["http-01", "tls-alpn-01"]\n', 1)
        return text.replace(f"self_check_port = {http}\n", f"self_check_port = {http}\ntls_self_check_port = {https}\n")

    return make


def handshake(port: int, hostname: str, protocols: list[str], root_pem: str | None = None, source: str = "127.0.0.1"):
    """A handshake with SNI ``hostname`` offering ``protocols``: (leaf, negotiated protocol)."""
    context = ssl.create_default_context(cadata=root_pem) if root_pem else ssl._create_unverified_context()
    context.set_alpn_protocols(protocols)
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)), tls.selected_alpn_protocol()


def put_challenge(stack: Stack, hostname: str) -> None:
    """Write a pending TLS-ALPN-01 challenge into the daemon's directory store, as the issuing service does."""
    challenge = Challenge(tls_alpn01_key(hostname), KEY_AUTH, hostname, datetime.now(timezone.utc), TLS_ALPN_01)
    path = stack.workdir / "var" / "store" / "challenges" / f"{challenge.token}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_record(challenge.to_json()))


@pytest.mark.parametrize("workers", [1, 2])
def test_issued_over_tls_alpn01_when_pebble_cannot_reach_http(tmp_path, workers):
    """HTTP-01 fails validation, the next attempt is issued over TLS-ALPN-01 and served; during a pending
    challenge every worker answers acme-tls/1 with the challenge certificate, normal clients get the
    normal certificate, and acme-tls/1 for a name without a challenge gets an alert."""
    stack = Stack.start_with(tmp_path, alpn_config(workers), tls_alpn=True)
    try:
        sources = ["127.0.0.1"]
        if workers > 1:
            wait_for(lambda: len(slots(stack.daemon.process.pid)) == workers, 20, "the workers")
            sources = [source_for(slot, workers) for slot in range(workers)]
        hostname = "jobs.alpn.test"
        stack.register(hostname)
        doc = stack.wait_state(hostname, ("active",), timeout=60)
        leaf = stack.verified_leaf(hostname)
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        ) == [hostname]
        # Pebble's HTTP-01 port is closed: the certificate can only have come over TLS-ALPN-01.
        assert doc["last_error"] is None
        # A challenge pending for the served name (as during a renewal):
        put_challenge(stack, hostname)
        for source in sources:
            challenge_leaf, protocol = handshake(stack.https, hostname, ["acme-tls/1"], source=source)
            assert protocol == "acme-tls/1"
            assert tls_alpn01_mismatch(challenge_leaf, hostname, KEY_AUTH) is None
            for protocols in (["h2", "http/1.1"], ["http/1.1"]):
                normal, _ = handshake(stack.https, hostname, protocols, root_pem=stack.root_pem, source=source)
                assert normal.fingerprint(normal.signature_hash_algorithm) == leaf.fingerprint(leaf.signature_hash_algorithm)
            with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
                handshake(stack.https, "nothing-pending.alpn.test", ["acme-tls/1"], source=source)
    finally:
        stack.stop()
