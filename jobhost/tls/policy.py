"""
What every TLS context of the HTTPS listener offers: versions, suites, groups, ALPN, resumption.

One :class:`TlsPolicy` makes all of them, so a connection sees the same
configuration whichever context it started in and whichever the servername
callback switched it to (OpenSSL takes the versions, suites, groups and
options from the context a connection starts with, the certificate and the
ALPN choice from the one it is switched to).

Profiles follow Mozilla's server-side TLS guidelines (version 5.7):

- ``intermediate`` (the default): TLS 1.2 and 1.3; only ECDHE key exchange
  with AEAD suites (AES-GCM, ChaCha20-Poly1305) in TLS 1.2; groups X25519,
  P-256, P-384; the client's suite order.  Mozilla's list also has three
  DHE-RSA suites, left out here: they need finite-field parameters and every
  client that has them also has ECDHE.
- ``modern``: TLS 1.3 only, same groups.

Resumption is by session tickets only (RFC 5077 in TLS 1.2, RFC 8446 PSK
tickets in 1.3): the server keeps no per-session state, so a flood of
handshakes cannot grow memory.  OpenSSL's stateful session-ID cache stays off
because its size cannot be set from here: pyOpenSSL 26.4's ``Context`` offers
``set_session_cache_mode``, ``set_session_id`` and ``set_timeout`` only, and
cryptography 50's bindings have no ``SSL_CTX_ctrl`` (which
``SSL_CTX_sess_set_cache_size`` and ``SSL_CTX_sess_number`` are macros over),
no ``SSL_CTX_flush_sessions`` and none of the ``SSL_CTX_sess_set_new_cb`` /
``get_cb`` / ``remove_cb`` callbacks of an external cache; the OpenSSL linked
into cryptography's Rust extension exports no symbols, so ``ctypes`` cannot
reach them either.  Turned on, each session context (one per hostname,
:class:`SessionContexts`) would keep up to OpenSSL's compiled-in default of
20,480 sessions until they time out (``set_timeout``) or the context is
rotated: a time bound, not a size bound.  TLS 1.2 clients that offer no ticket
get a full handshake; those that do resume (checked with Go's and OpenSSL's
clients).

Ticket keys are OpenSSL's own, generated per ``SSL.Context``: a ticket is
valid only on the session context that issued it (OpenSSL itself would resume
a ticket offered with another SNI name in both TLS 1.2 and 1.3 if the key
matched).  :class:`SessionContexts` keeps one per hostname (so a ticket issued
for one hostname can never resume a connection to another) and replaces each
after ``rotate_after`` seconds (the key rotation; outstanding tickets then get
a full handshake).  The certificate lives in a separate context that the
servername callback switches to, so a renewed certificate does not invalidate
tickets.  The keys cannot be set or exported (no ``SSL_CTX_set_tlsext_ticket_keys``,
ticket key callback or ``SSL_CTX_set_session_ticket_cb`` in the bindings), so
each worker process has its own and a ticket resumes only on the worker that
issued it.

A resumed TLS 1.3 handshake still does a full X25519 exchange (clients offer
only ``psk_dhe_ke``); it saves the ECDSA signature, the Certificate message and
one of the two tickets: about 0.7x a full handshake's OpenSSL work
(``bench/connpath.py --resume``), while the per-connection work around OpenSSL
is the same for both.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import attrs
from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import IReactorTime

from jobhost.certs import load_private_key, split_pem_chain
from jobhost.errors import InvalidCertificate

#: TLS 1.2 suites of Mozilla's intermediate profile with ECDHE key exchange, in its order.
INTERMEDIATE_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
#: TLS 1.3 suites (both profiles): no CCM.
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#: Key exchange groups (both profiles), in preference order.
GROUPS = b"X25519:P-256:P-384"
PROFILES = ("intermediate", "modern")

#: The session ID context every jobhost context shares: a session made after the
#: servername callback switched contexts must match the context it started in.
SESSION_ID_CONTEXT = b"jobhost"

_OPTIONS = (
    SSL.OP_NO_COMPRESSION  # CRIME
    | SSL.OP_NO_RENEGOTIATION  # a client-initiated renegotiation is a free CPU sink
    | SSL.OP_SINGLE_ECDH_USE
)


class _NoOverlap(SSL.Error):
    """Raised from the ALPN callback when no offered protocol is ours: OpenSSL sends alert 120."""


@attrs.frozen
class TlsPolicy:
    """How jobhost's TLS contexts are configured (module docstring).

    Attributes:
        profile: ``"intermediate"`` or ``"modern"``.
        alpn: Application protocols we speak, in our order of preference.
        session_tickets: Issue and accept session tickets.
        session_lifetime: Seconds a ticket is valid for (its lifetime hint).
    """

    profile: str = attrs.field(default="intermediate", validator=attrs.validators.in_(PROFILES))
    alpn: tuple[bytes, ...] = attrs.field(default=(b"http/1.1",), converter=tuple)
    session_tickets: bool = True
    session_lifetime: float = 7200.0

    def alpn_refused(self, offered: tuple[bytes, ...]) -> bool:
        """True when a client offered ALPN protocols and none of them is ours.

        RFC 7301 section 3.2: the server then answers with a fatal
        ``no_application_protocol`` alert.  A client offering no ALPN at all is served.
        """
        return bool(offered) and self._choose(offered) is None

    def select_alpn(self, connection: SSL.Connection, offered: list[bytes]) -> bytes:
        """Our most preferred protocol the client offered (the ALPN select callback)."""
        chosen = self._choose(offered)
        if chosen is None:
            raise _NoOverlap("no common application protocol")
        return chosen

    def _choose(self, offered) -> bytes | None:
        return next((protocol for protocol in self.alpn if protocol in offered), None)

    def context(self, key_pem: bytes | None = None, chain_pem: bytes | None = None) -> SSL.Context:
        """A server context with this policy, serving ``chain_pem`` (leaf first) with ``key_pem``.

        Without key and chain: a session context (:class:`SessionContexts`), which
        holds the ticket key and switches to a certificate's context by SNI.

        Raises:
            InvalidCertificate: when the PEM does not parse or the key does not match.
        """
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_min_proto_version(SSL.TLS1_3_VERSION if self.profile == "modern" else SSL.TLS1_2_VERSION)
        options = _OPTIONS if self.session_tickets else _OPTIONS | SSL.OP_NO_TICKET
        context.set_options(options)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)  # idle connections hold no record buffers
        if self.profile == "intermediate":
            context.set_cipher_list(INTERMEDIATE_TLS12_CIPHERS.encode("ascii"))
        context.set_tls13_ciphersuites(TLS13_CIPHERSUITES.encode("ascii"))
        if not _lib.SSL_CTX_set1_curves_list(context._context, GROUPS):  # pyOpenSSL binds no setter
            raise RuntimeError(f"OpenSSL refused the groups {GROUPS!r}")
        context.set_session_id(SESSION_ID_CONTEXT)
        context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        context.set_timeout(int(self.session_lifetime))
        context.set_alpn_select_callback(self.select_alpn)
        if key_pem is not None and chain_pem is not None:
            certificates = split_pem_chain(chain_pem)
            try:
                context.use_certificate(certificates[0])
                context.use_privatekey(load_private_key(key_pem))  # after: OpenSSL checks it matches
                for extra in certificates[1:]:
                    context.add_extra_chain_cert(extra)
                context.check_privatekey()
            except SSL.Error as e:
                raise InvalidCertificate(f"OpenSSL refused the key or chain ({e})") from None
        return context


@attrs.define(eq=False)
class _SessionEntry:
    context: SSL.Context
    created: float


@attrs.define(eq=False)
class SessionContexts:
    """Hostname -> the session context its connections start in (module docstring).

    A session context has no certificate; its servername callback calls
    ``switch(connection)`` to move the connection to its certificate's context.
    Bounded to ``max_entries`` hostnames (least recently used go first); an entry older
    than ``rotate_after`` seconds is replaced, which rotates its ticket key.

    Attributes:
        policy: Makes the contexts.
        switch: The servername callback of every session context.
        clock: For the rotation.
        created, rotated: How many contexts were made, and how many of those replaced an old one.
    """

    policy: TlsPolicy
    switch: Callable[[SSL.Connection], None]
    clock: IReactorTime
    max_entries: int = attrs.field(default=10000, validator=attrs.validators.ge(1))
    rotate_after: float = 86400.0
    created: int = attrs.field(default=0, init=False)
    rotated: int = attrs.field(default=0, init=False)
    _entries: OrderedDict[str, _SessionEntry] = attrs.field(factory=OrderedDict, init=False, repr=False)

    def get(self, hostname: str) -> SSL.Context:
        """The session context for ``hostname``, made (or rotated) now if need be."""
        now = self.clock.seconds()
        entry = self._entries.get(hostname)
        if entry is not None:
            if now - entry.created < self.rotate_after:
                self._entries.move_to_end(hostname)
                return entry.context
            self.rotated += 1
            del self._entries[hostname]
        context = self.policy.context()
        context.set_tlsext_servername_callback(self.switch)
        self._entries[hostname] = _SessionEntry(context, now)
        self.created += 1
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return context

    def __len__(self) -> int:
        return len(self._entries)


__all__ = [
    "GROUPS",
    "INTERMEDIATE_TLS12_CIPHERS",
    "PROFILES",
    "SESSION_ID_CONTEXT",
    "SessionContexts",
    "TLS13_CIPHERSUITES",
    "TlsPolicy",
]
