"""
Answering ACME TLS-ALPN-01 challenges (RFC 8737) on the HTTPS listener, from the store.

The issuing service stores a pending TLS-ALPN-01 challenge's key authorization
under :func:`jobhost.store.records.tls_alpn01_key` of its hostname, so any
process or node sharing the store can answer.  When the ClientHello hold sees a
hello offering only ``acme-tls/1`` it asks :class:`ChallengeCertificates` for
that name: a store read (every time, so a challenge that was answered and
deleted is never served again from memory), then a context serving the
challenge certificate (:func:`jobhost.certs.tls_alpn01_certificate`) that
negotiates ``acme-tls/1`` and nothing else.  The certificate is built once per
key authorization and kept while the same key authorization is read back; the
cache is bounded.  Such a connection gets :class:`ChallengeOnlyFactory`'s
protocol, which closes it after the handshake: no page is ever served on it,
and the hostname's real certificate and the fallback are never shown to it.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jobhost.certs import ACME_TLS_1, tls_alpn01_certificate
from jobhost.store.interfaces import IStore
from jobhost.store.records import TLS_ALPN_01, Challenge, tls_alpn01_key
from jobhost.timeutil import now as clock_now
from jobhost.tls.policy import TlsPolicy

#: Every challenge context negotiates exactly this (RFC 8737 section 3: the CA offers only it).
_CHALLENGE_POLICY = TlsPolicy(profile="intermediate", alpn=(ACME_TLS_1,), session_tickets=False)


@attrs.define(eq=False)
class ChallengeCertificates:
    """Hostname -> the context answering its pending TLS-ALPN-01 challenge (module docstring).

    Attributes:
        store: Where the issuing service keeps challenges.
        clock: Dates the challenge certificates.
        max_entries: At most this many hostnames' challenge contexts are kept.
        built: How many challenge certificates were made.
    """

    store: IStore
    clock: IReactorTime
    max_entries: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    built: int = attrs.field(default=0, init=False)
    _contexts: OrderedDict[str, tuple[str, SSL.Context]] = attrs.field(factory=OrderedDict, init=False, repr=False)

    log = Logger()

    def context_for(self, hostname: str) -> Deferred:
        """Find ``hostname``'s pending TLS-ALPN-01 challenge and the context answering it.

        Args:
            hostname: A normalised hostname.

        Returns:
            A Deferred firing with the ``SSL.Context`` serving the challenge
            certificate, or with None when no TLS-ALPN-01 challenge is pending for
            ``hostname`` or the store failed (logged).  It fails only with
            ``CancelledError``, when cancelled.
        """
        d = maybeDeferred(self.store.get_challenge, tls_alpn01_key(hostname))
        d.addCallbacks(self._found, self._missing, callbackArgs=(hostname,), errbackArgs=(hostname,))
        return d

    def _found(self, challenge: Challenge, hostname: str) -> SSL.Context | None:
        if challenge.challenge_type != TLS_ALPN_01 or challenge.hostname != hostname:
            return None
        cached = self._contexts.get(hostname)
        if cached is not None and cached[0] == challenge.key_authorization:
            self._contexts.move_to_end(hostname)
            return cached[1]
        key_pem, cert_pem = tls_alpn01_certificate(hostname, challenge.key_authorization, clock_now(self.clock))
        context = _CHALLENGE_POLICY.context(key_pem, cert_pem)
        self.built += 1
        self._contexts[hostname] = (challenge.key_authorization, context)
        self._contexts.move_to_end(hostname)
        while len(self._contexts) > self.max_entries:
            self._contexts.popitem(last=False)
        return context

    def _missing(self, failure: Failure, hostname: str) -> Failure | None:
        if failure.check(CancelledError):
            return failure  # the caller gave up waiting (its timeout): it says so itself
        self._contexts.pop(hostname, None)  # answered or abandoned: forget its certificate
        if not failure.check(KeyError):
            self.log.failure(
                "Reading the TLS-ALPN-01 challenge for {hostname} failed; refusing the handshake",
                failure,
                hostname=hostname,
            )
        return None

    def __len__(self) -> int:
        return len(self._contexts)


@implementer(IHandshakeListener)
class _ChallengeOnly(Protocol):
    """What an ``acme-tls/1`` connection talks to: nothing.  Closed after the handshake."""

    def __init__(self, factory: ChallengeOnlyFactory) -> None:
        self._factory = factory
        self._deadline = None

    def connectionMade(self) -> None:
        # A CA closes at once after the handshake (RFC 8737 section 3); anyone else is cut off.
        self._deadline = self._factory.clock.callLater(self._factory.timeout, self.transport.abortConnection)

    def handshakeCompleted(self) -> None:
        self._factory.answered += 1
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        # RFC 8737: the client must not send application data; there is nothing to serve.
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None


@attrs.define(eq=False, slots=False)
class ChallengeOnlyFactory(Factory):
    """Builds the application protocol of ``acme-tls/1`` connections (module docstring).

    Attributes:
        clock: Schedules the cut-off of a connection still open after ``timeout`` seconds.
        timeout: Seconds an ``acme-tls/1`` connection may stay open.
        answered: Challenge handshakes completed.
    """

    clock: IReactorTime
    timeout: float = 10.0
    answered: int = attrs.field(default=0, init=False)

    noisy = False

    def buildProtocol(self, addr) -> Protocol:
        return _ChallengeOnly(self)


__all__ = ["ChallengeCertificates", "ChallengeOnlyFactory"]
