"""
The HTTPS listener's protocol factory: hold each ClientHello until its certificate is in memory.

pyOpenSSL's servername callback cannot wait for a Deferred, so the decision
is made *before* OpenSSL sees a byte.  Each connection starts with a small
hold protocol that buffers the client's first bytes and parses them with
:func:`jobhost.tls.clienthello.parse_client_hello`::

    reading --hello, name cached------------------------------> handed over (served)
    reading --hello, name unknown to the cache--> loading --+--> handed over (served)
    reading --hello, no SNI / known absent / invalid name --+--> fallback: handed over
                                                            |    with the default
                                                            |    certificate, or an
                                                            |    unrecognized_name alert
    reading --not TLS / too big / silent for hello_timeout-----> closed
    reading --hello offering only acme-tls/1--> loading challenge --+--> handed over (challenge)
                                                                    +--> no_application_protocol alert

"Handed over" means: a ``TLSMemoryBIOProtocol`` is built from a
``TLSMemoryBIOFactory`` wrapping the web factory, connected to the same
transport, and given the buffered bytes; from then on the hold protocol only
forwards ``dataReceived`` and ``connectionLost`` to it.  The TLS protocol's own
transport is the real TCP transport, so ``getPeer``, ``getHost`` and the
producer API work unchanged, and the web layer sees the TLS protocol (with
``getPeerCertificate``, ``negotiatedProtocol``, ``ISSLTransport``) as its
transport, as with a plain ``listenSSL``.

A served connection starts in its hostname's session context
(:class:`~jobhost.tls.policy.SessionContexts`: the ticket key, no certificate)
and OpenSSL's servername callback switches it to the certificate's context that
the decision found, kept on the TLS protocol: no second lookup, and no window in
which the cache could change its mind.  A connection with no SNI or a name we do
not serve starts in the fallback context (the default certificate).  A client
whose ALPN offer has none of our protocols gets a ``no_application_protocol``
alert (RFC 7301) before any cryptography is done.

TLS-ALPN-01 (RFC 8737): a hello whose ALPN offer is ``acme-tls/1`` alone is a
CA validating a challenge.  It is decided apart from every other hello: the
store is asked for the name's pending challenge
(:class:`~jobhost.tls.alpn.ChallengeCertificates`); with one, the connection is
handed over to a TLS protocol that starts, and stays, in the challenge
certificate's own context (no servername switch, no session tickets) and whose
application protocol closes it after the handshake; without one (or without a
name) it gets the ``no_application_protocol`` alert.  Such a connection never
sees the hostname's certificate or the fallback, and a hello offering anything
else never sees a challenge certificate (``acme-tls/1`` is in no other
context's ALPN list).

Plain HTTP sent to the HTTPS port gets a minimal ``HTTP/1.0 400`` response
telling the user to use https, then the connection is closed: it costs a
few bytes and saves an operator a confused afternoon.  Everything else that
is not TLS is closed without a reply.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import TimeoutError
from OpenSSL import SSL
from twisted.internet.interfaces import IAddress, IOpenSSLServerConnectionCreator, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from jobhost.errors import InvalidHostname
from jobhost.hostnames import normalise_hostname
from jobhost.certs import ACME_TLS_1
from jobhost.tls.alpn import ChallengeCertificates, ChallengeOnlyFactory
from jobhost.tls.clienthello import MAX_HELLO_BYTES, ClientHello, NeedMore, NotTLS, parse_client_hello
from jobhost.tls.policy import SessionContexts, TlsPolicy
from jobhost.tls.sni import CertificateCache
from jobhost.web.limits import Deadlines

#: A fatal ``unrecognized_name`` (112) alert record (RFC 6066 section 3), TLS 1.2 record version.
UNRECOGNIZED_NAME_ALERT = b"\x15\x03\x03\x00\x02\x02\x70"

_BODY = b"This port speaks HTTPS. Use an https:// URL.\r\n"
#: What a plain HTTP request to the HTTPS port receives before the connection is closed.
PLAIN_HTTP_RESPONSE = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BODY)).encode("ascii") + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _BODY
)


#: A fatal ``no_application_protocol`` (120) alert record (RFC 7301 section 3.2).
NO_APPLICATION_PROTOCOL_ALERT = b"\x15\x03\x03\x00\x02\x02\x78"


def _switch_to_certificate(connection: SSL.Connection) -> None:
    """The servername callback of every session context: switch to the decided certificate."""
    # Only session contexts have this callback, and the hold sets both contexts together.
    connection.set_context(connection.get_app_data().jobhost_certificate_context)


@implementer(IOpenSSLServerConnectionCreator)
@attrs.define(eq=False)
class HeldConnectionCreator:
    """Makes each handed-over connection's ``SSL.Connection`` in the context the hold chose.

    Attributes:
        fallback: The context of connections with no SNI or a name we do not serve (the
            default certificate); None for a listener that rejects those.
    """

    fallback: SSL.Context | None

    def serverConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        context = getattr(protocol, "jobhost_session_context", None) or self.fallback
        connection = SSL.Connection(context, None)
        connection.set_app_data(protocol)
        return connection


def fallback_context(key_pem: bytes | None, cert_pem: bytes | None, policy: TlsPolicy) -> SSL.Context | None:
    """The context serving the fallback certificate, or None without one (``reject_unknown``)."""
    if key_pem is None or cert_pem is None:
        return None
    return policy.context(key_pem, cert_pem)


class _HelloHold(Protocol):
    """Buffers a connection's first bytes until its certificate is decided (module docstring)."""

    _READING, _LOADING, _HANDED_OVER, _CLOSED = "reading", "loading", "handed over", "closed"

    def __init__(self, factory: SNIServerFactory, address: IAddress) -> None:
        self._factory = factory
        self._address = address
        self._buffer = bytearray()
        self._progress: NeedMore | None = None
        self._state = self._READING
        self._tls: TLSMemoryBIOProtocol | None = None

    def logPrefix(self) -> str:
        return "HTTPS"

    def connectionMade(self) -> None:
        factory = self._factory
        factory.connections.add(self)
        held = factory.held
        if len(held) >= factory.max_held:
            # Full: drop the connection that has been sending its hello the longest.
            held.oldest()._drop("max_held")
        held.add(self)  # its hello deadline: _silent when it passes

    def dataReceived(self, data: bytes) -> None:
        if self._tls is not None:
            self._tls.dataReceived(data)
            return
        if self._state is self._CLOSED:
            return
        self._buffer += data
        limit = self._factory.max_hello_bytes
        if self._state is self._LOADING:
            # A client has no reason to send much before the ServerHello.
            if len(self._buffer) > limit:
                self._refuse(NotTLS(f"more than {limit} bytes before the ServerHello"))
            return
        if self._progress is not None and len(self._buffer) < self._progress.needed:
            return
        result = parse_client_hello(self._buffer, limit, self._progress)
        if isinstance(result, NeedMore):
            self._progress = result
        elif isinstance(result, NotTLS):
            self._refuse(result)
        else:
            self._hello(result)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._unhold()
        factory = self._factory
        factory.connections.discard(self)
        if factory.budget is not None:
            factory.budget.release(self._address)
        self._state = self._CLOSED
        if self._tls is not None:
            self._tls.connectionLost(reason)

    def _unhold(self) -> None:
        """The hello is complete or the connection is closing: no longer held."""
        self._factory.held.discard(self)

    def _silent(self) -> None:
        # The hello deadline passed: only held (still reading) connections have one.
        self._factory.timeout += 1
        self._factory.log.debug(
            "No ClientHello from {peer} within {timeout}s; closing",
            peer=self._address,
            timeout=self._factory.hello_timeout,
        )
        self._drop("hello_deadline")

    def _drop(self, limit: str) -> None:
        """Close a connection still sending its hello because of ``limit``."""
        self._unhold()
        self._state = self._CLOSED
        if self._factory.reporter is not None:
            self._factory.reporter.hit(limit, self._address)
        self.transport.abortConnection()

    def _refuse(self, result: NotTLS) -> None:
        self._unhold()
        self._state = self._CLOSED
        self._factory.not_tls += 1
        self._factory.log.debug("Closing {peer}: {reason}", peer=self._address, reason=result.reason)
        if result.http:
            self.transport.write(PLAIN_HTTP_RESPONSE)
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()

    def _hello(self, hello: ClientHello) -> None:
        self._unhold()
        factory = self._factory
        if hello.alpn == (ACME_TLS_1,):
            self._challenge(hello.server_name)
            return
        if hello.alpn and factory.policy.alpn_refused(hello.alpn):
            factory.alpn_refused += 1
            self._alert(NO_APPLICATION_PROTOCOL_ALERT)
            return
        cache = factory.cache
        name = hello.server_name
        if name is None:
            self._unknown(None)
            return
        # The hot path: one dictionary lookup of the name as sent.
        context = cache.lookup(name)
        if context is not None:
            self._hand_over(context, name)
            return
        try:
            hostname = normalise_hostname(name)
        except InvalidHostname:
            self._unknown(name)
            return
        if cache.known_absent(hostname):
            self._unknown(hostname)
            return
        self._state = self._LOADING
        d = cache.load(hostname)
        d.addTimeout(self._factory.load_timeout, self._factory.clock)
        d.addCallbacks(self._loaded, self._load_failed, callbackArgs=(hostname,), errbackArgs=(hostname,))
        d.addErrback(self._crashed)

    def _challenge(self, name: str | None) -> None:
        """A CA's TLS-ALPN-01 validation: the challenge certificate, or an alert (module docstring)."""
        try:
            hostname = normalise_hostname(name) if name is not None else None
        except InvalidHostname:
            hostname = None
        if hostname is None:
            self._no_challenge(name)
            return
        self._state = self._LOADING
        d = self._factory.challenges.context_for(hostname)
        d.addTimeout(self._factory.load_timeout, self._factory.clock)
        d.addErrback(self._challenge_failed, hostname)
        d.addCallback(self._challenge_loaded, hostname)
        d.addErrback(self._crashed)

    def _challenge_failed(self, failure: Failure, hostname: str) -> None:
        failure.trap(TimeoutError)
        self._factory.log.warn(
            "Reading the TLS-ALPN-01 challenge for {hostname} took over {timeout}s; refusing the handshake",
            hostname=hostname,
            timeout=self._factory.load_timeout,
        )
        return None

    def _challenge_loaded(self, context: SSL.Context | None, hostname: str) -> None:
        if self._state is not self._LOADING:
            return  # the client went away while we waited
        if context is None:
            self._no_challenge(hostname)
            return
        factory = self._factory
        factory.challenge_served += 1
        factory.log.debug("Answering the TLS-ALPN-01 challenge for {hostname}", hostname=hostname)
        tls = factory.challenge_tls_factory.buildProtocol(self._address)
        # The challenge context is the one the connection starts and ends in: it has no
        # servername callback, so nothing can switch it to a real certificate.
        tls.jobhost_session_context = context
        self._connect(tls)

    def _no_challenge(self, hostname: str | None) -> None:
        factory = self._factory
        factory.challenge_refused += 1
        factory.log.debug(
            "Refusing acme-tls/1 from {peer}: no TLS-ALPN-01 challenge pending for {hostname}",
            peer=self._address,
            hostname=hostname,
        )
        self._alert(NO_APPLICATION_PROTOCOL_ALERT)

    def _loaded(self, found: bool, hostname: str) -> None:
        if self._state is not self._LOADING:
            return  # the client went away while we waited
        context = self._factory.cache.peek(hostname)
        if context is not None:
            self._hand_over(context, hostname)
        else:
            self._unknown(hostname)

    def _load_failed(self, failure: Failure, hostname: str) -> None:
        if failure.check(TimeoutError):
            self._factory.log.warn(
                "Loading the certificate for {hostname} took over {timeout}s; serving the fallback",
                hostname=hostname,
                timeout=self._factory.load_timeout,
            )
        else:
            self._factory.log.failure(
                "Loading the certificate for {hostname} failed", failure, hostname=hostname
            )
        if self._state is self._LOADING:
            self._unknown(hostname)

    def _crashed(self, failure: Failure) -> None:
        self._factory.log.failure("Handing over a held connection failed", failure)
        self._state = self._CLOSED
        self.transport.abortConnection()

    def _unknown(self, hostname: str | None) -> None:
        factory = self._factory
        if factory.reject_unknown:
            factory.rejected += 1
            factory.log.debug(
                "Rejecting {peer}: no certificate for {hostname}", peer=self._address, hostname=hostname
            )
            self._alert(UNRECOGNIZED_NAME_ALERT)
        else:
            self._hand_over(None, None)

    def _alert(self, record: bytes) -> None:
        """Answer with a fatal alert ``record`` (before any handshake) and close."""
        self._state = self._CLOSED
        self.transport.write(record)
        self.transport.loseConnection()

    def _hand_over(self, context: SSL.Context | None, hostname: str | None) -> None:
        """Connect the TLS protocol: in ``hostname``'s session context switching to
        ``context`` (its certificate), or with both None in the fallback context."""
        factory = self._factory
        # Never None: a TLSMemoryBIOFactory always builds its wrapper (like Twisted's listenSSL).
        tls = factory.tls_factory.buildProtocol(self._address)
        if context is not None:
            factory.served += 1
            tls.jobhost_session_context = factory.sessions.get(hostname)
            tls.jobhost_certificate_context = context
        else:
            factory.fallback += 1
        self._connect(tls)

    def _connect(self, tls: TLSMemoryBIOProtocol) -> None:
        """Connect ``tls`` to the transport and give it the buffered hello."""
        self._state = self._HANDED_OVER
        self._tls = tls
        buffered, self._buffer, self._progress = bytes(self._buffer), bytearray(), None
        tls.makeConnection(self.transport)
        # Same reactor turn as the decision: the servername callback sees the same cache.
        tls.dataReceived(buffered)


@implementer(IProtocolFactory)
@attrs.define(eq=False, slots=False)
class SNIServerFactory(Factory):
    """Protocol factory for the HTTPS listener: per-hostname certificates chosen via SNI.

    Use :meth:`create` to build one from a web factory and the fallback
    certificate; the constructor only stores collaborators.

    Attributes:
        cache: The :class:`~jobhost.tls.sni.CertificateCache` names are looked up in and loaded into.
        tls_factory: A ``TLSMemoryBIOFactory(creator, False, web_factory)`` whose creator is
            a :class:`HeldConnectionCreator`.
        sessions: Each served hostname's session context.
        clock: Schedules the hello and load timeouts.
        reject_unknown: Send an ``unrecognized_name`` alert instead of the fallback certificate
            to clients with no SNI or a name jobhost does not serve.
        hello_timeout: Seconds a client may take to send its complete ClientHello.
        load_timeout: Seconds to wait for the store before serving the fallback.
        max_hello_bytes: The ClientHello must arrive within this many bytes.
        max_held: At most this many connections may be sending their ClientHello at once;
            a new one drops the oldest.
        budget: Counts this listener's connections against the public caps (None: uncapped).
        reporter: Counts and logs the limits hit (None: not counted).
        challenges: Finds the context answering a hostname's TLS-ALPN-01 challenge
            (by default, one reading the cache's store).
        challenge_tls_factory: The TLS factory of ``acme-tls/1`` connections (by default
            a :class:`HeldConnectionCreator` without fallback and a
            :class:`~jobhost.tls.alpn.ChallengeOnlyFactory` as the application).
        served, fallback, rejected, not_tls, timeout, alpn_refused: Connection outcomes.
        challenge_served, challenge_refused: ``acme-tls/1`` hellos given a challenge
            certificate, and refused (no challenge pending for the name, or no name).
        connections: The connections not yet closed (hold protocols).
        held: The connections still sending their ClientHello, oldest first, each with its
            ``hello_timeout`` deadline (one sweep for all, not a timer each).
    """

    cache: CertificateCache
    tls_factory: TLSMemoryBIOFactory
    clock: IReactorTime
    sessions: SessionContexts
    reject_unknown: bool = False
    hello_timeout: float = 10.0
    load_timeout: float = 5.0
    max_hello_bytes: int = MAX_HELLO_BYTES
    max_held: int = 1000
    budget: Any = None
    reporter: Any = None
    challenges: ChallengeCertificates = None  # type: ignore[assignment]  # made from the cache's store
    challenge_tls_factory: TLSMemoryBIOFactory = None  # type: ignore[assignment]  # made from tls_factory's creator
    served: int = attrs.field(default=0, init=False)
    fallback: int = attrs.field(default=0, init=False)
    rejected: int = attrs.field(default=0, init=False)
    not_tls: int = attrs.field(default=0, init=False)
    timeout: int = attrs.field(default=0, init=False)
    alpn_refused: int = attrs.field(default=0, init=False)
    challenge_served: int = attrs.field(default=0, init=False)
    challenge_refused: int = attrs.field(default=0, init=False)
    connections: set = attrs.field(factory=set, init=False, repr=False)
    held: Deadlines = attrs.field(init=False, repr=False)

    log = Logger()
    noisy = False

    def __attrs_post_init__(self) -> None:
        self.held = Deadlines(self.clock, self.hello_timeout, _HelloHold._silent)
        if self.challenges is None:
            self.challenges = ChallengeCertificates(self.cache.store, self.clock)
        if self.challenge_tls_factory is None:
            # Its connections always carry their challenge context: no fallback to start in.
            self.challenge_tls_factory = TLSMemoryBIOFactory(
                HeldConnectionCreator(None), False,
                ChallengeOnlyFactory(self.clock, timeout=self.hello_timeout), clock=self.clock,
            )

    @property
    def policy(self) -> TlsPolicy:
        """The TLS policy every context follows: the cache's (ALPN refusals are decided with it)."""
        return self.cache.policy

    @classmethod
    def create(
        cls,
        wrapped_factory: IProtocolFactory,
        cache: CertificateCache,
        clock: IReactorTime,
        key_pem: bytes | None = None,
        cert_pem: bytes | None = None,
        *,
        reject_unknown: bool = False,
        hello_timeout: float = 10.0,
        load_timeout: float = 5.0,
        max_hello_bytes: int = MAX_HELLO_BYTES,
        ticket_rotation: float = 86400.0,
        max_held: int = 1000,
        budget: Any = None,
        reporter: Any = None,
    ) -> SNIServerFactory:
        """Build the listener factory around ``wrapped_factory`` (e.g. a ``twisted.web`` Site).

        Args:
            wrapped_factory: Builds the application protocol for each TLS connection.
            cache: The certificate cache (shared with a :class:`~jobhost.tls.sni.ChangePoller`).
            clock: The reactor (or a ``Clock`` in tests); also given to the TLS factory.
            key_pem, cert_pem: The fallback certificate (see
                :func:`jobhost.tls.fallback.load_or_create_fallback`); may be None only
                with ``reject_unknown``.
            ticket_rotation: Seconds after which a hostname's session ticket key is replaced.

        The TLS policy is the cache's (:attr:`CertificateCache.policy`); TLS-ALPN-01
        challenges are read from the cache's store.

        Raises:
            ValueError: when no fallback certificate is given and ``reject_unknown`` is False.
        """
        if (key_pem is None or cert_pem is None) and not reject_unknown:
            raise ValueError("a fallback key and certificate are needed unless reject_unknown is set")
        policy = cache.policy
        creator = HeldConnectionCreator(fallback_context(key_pem, cert_pem, policy))
        tls_factory = TLSMemoryBIOFactory(creator, False, wrapped_factory, clock=clock)
        sessions = SessionContexts(
            policy, _switch_to_certificate, clock, max_entries=cache.max_contexts, rotate_after=ticket_rotation
        )
        return cls(
            cache=cache,
            tls_factory=tls_factory,
            clock=clock,
            sessions=sessions,

            reject_unknown=reject_unknown,
            hello_timeout=hello_timeout,
            load_timeout=load_timeout,
            max_hello_bytes=max_hello_bytes,
            max_held=max_held,
            budget=budget,
            reporter=reporter,
        )

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        """Every connection starts with a ClientHello hold (module docstring); None over a cap."""
        if self.budget is not None and not self.budget.admit(addr):
            return None  # the port closes the socket at once
        return _HelloHold(self, addr)

    def startFactory(self) -> None:
        """Start the TLS factory, and through it the web factory (e.g. a Site's log timer)."""
        self.tls_factory.doStart()
        self.challenge_tls_factory.doStart()

    def stopFactory(self) -> None:
        """Stop the TLS and web factories, and the hello deadline sweep."""
        self.held.stop()
        self.tls_factory.doStop()
        self.challenge_tls_factory.doStop()

    def logPrefix(self) -> str:
        """The web factory's log prefix, marked as TLS."""
        return self.tls_factory.logPrefix()


__all__ = [
    "HeldConnectionCreator",
    "NO_APPLICATION_PROTOCOL_ALERT",
    "PLAIN_HTTP_RESPONSE",
    "SNIServerFactory",
    "UNRECOGNIZED_NAME_ALERT",
    "fallback_context",
]
