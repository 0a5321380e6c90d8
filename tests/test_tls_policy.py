"""TlsPolicy and SessionContexts without sockets (the loopback behaviour: tests/integration/test_tls_policy_loopback.py)."""

from __future__ import annotations

import pytest
from OpenSSL import SSL
from tls_helpers import fallback_pems, record_for
from twisted.internet.task import Clock

from jobhost.errors import InvalidCertificate
from jobhost.tls.policy import PROFILES, SessionContexts, TlsPolicy


def test_alpn_refused_only_when_offers_exist_and_none_is_ours():
    policy = TlsPolicy(alpn=(b"h2", b"http/1.1"))
    assert policy.alpn_refused((b"spdy/3", b"h3"))
    assert not policy.alpn_refused(())
    assert not policy.alpn_refused((b"h3", b"http/1.1"))
    assert not TlsPolicy().alpn_refused((b"http/1.1",))
    assert TlsPolicy().alpn_refused((b"h2",))


def test_select_alpn_prefers_our_order_and_refuses_no_overlap():
    policy = TlsPolicy(alpn=(b"h2", b"http/1.1"))
    assert policy.select_alpn(None, [b"http/1.1", b"h2"]) == b"h2"
    assert policy.select_alpn(None, [b"http/1.1"]) == b"http/1.1"
    with pytest.raises(SSL.Error, match="no common application protocol"):
        policy.select_alpn(None, [b"h3"])


def test_unknown_profile_is_refused():
    assert PROFILES == ("intermediate", "modern")
    with pytest.raises(ValueError):
        TlsPolicy(profile="old")


def test_context_with_a_certificate_checks_the_key():
    record = record_for("alpha.example.com")
    other = record_for("beta.example.com")
    context = TlsPolicy().context(record.key_pem, record.chain_pem)
    assert isinstance(context, SSL.Context)
    with pytest.raises(InvalidCertificate, match="OpenSSL refused the key or chain"):
        TlsPolicy().context(other.key_pem, record.chain_pem)


def test_context_settings():
    """Tickets on by default (no OP_NO_TICKET), off on request; no stateful session cache; lifetime set."""
    key_pem, cert_pem = fallback_pems()
    on = TlsPolicy(session_lifetime=600).context(key_pem, cert_pem)
    off = TlsPolicy(session_tickets=False).context()
    assert on.get_timeout() == 600
    assert on.get_session_cache_mode() == SSL.SESS_CACHE_OFF
    from OpenSSL._util import lib

    assert not lib.SSL_CTX_get_options(on._context) & SSL.OP_NO_TICKET
    assert lib.SSL_CTX_get_options(off._context) & SSL.OP_NO_TICKET
    assert lib.SSL_CTX_get_options(on._context) & SSL.OP_NO_COMPRESSION
    assert lib.SSL_CTX_get_options(on._context) & SSL.OP_NO_RENEGOTIATION


def switch(connection):  # never called without a handshake
    raise AssertionError("not reached")


def test_session_contexts_are_per_hostname_bounded_and_rotated():
    clock = Clock()
    sessions = SessionContexts(TlsPolicy(), switch, clock, max_entries=2, rotate_after=100)
    a = sessions.get("a.example")
    assert sessions.get("a.example") is a
    b = sessions.get("b.example")
    assert b is not a
    assert (sessions.created, len(sessions)) == (2, 2)
    sessions.get("a.example")  # a is now the most recently used
    sessions.get("c.example")  # evicts b
    assert len(sessions) == 2
    assert sessions.get("b.example") is not b
    assert sessions.created == 4
    clock.advance(99.9)
    assert sessions.get("b.example") is sessions.get("b.example")
    assert sessions.rotated == 0
    clock.advance(0.1)
    rotated = sessions.get("b.example")
    assert sessions.rotated == 1
    assert sessions.get("b.example") is rotated


def test_session_contexts_need_a_positive_bound():
    with pytest.raises(ValueError):
        SessionContexts(TlsPolicy(), switch, Clock(), max_entries=0)
