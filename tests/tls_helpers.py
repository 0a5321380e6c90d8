"""
Helpers for jobhost's TLS tests: real and hand-built ClientHellos, certificates and stores,
in-memory TLS peers, and blocking TLS clients.

The blocking clients are meant to run in a thread (``deferToThread``) while
the reactor serves the other end; they talk only to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import threading
import time

import functools
from datetime import datetime, timezone

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

# -- ClientHello bytes -------------------------------------------------------------


def pyopenssl_client_hello(
    server_name: bytes | None = None,
    alpn: list[bytes] | None = None,
    max_version: int | None = None,
) -> bytes:
    """The first flight a real pyOpenSSL client sends (one or more TLS records)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    connection = SSL.Connection(context, None)
    if server_name is not None:
        connection.set_tlsext_host_name(server_name)
    if alpn:
        connection.set_alpn_protos(alpn)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def stdlib_client_hello(server_name: str | None = None) -> bytes:
    """The first flight Python's ``ssl`` module sends (a different OpenSSL build than pyOpenSSL's)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def handshake_message(records: bytes) -> bytes:
    """Join the payloads of a run of handshake records (the ClientHello message)."""
    message, pos = b"", 0
    while pos < len(records):
        length = struct.unpack("!H", records[pos + 3 : pos + 5])[0]
        message += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return message


def as_records(message: bytes, sizes: int | list[int], version: int = 0x0301) -> bytes:
    """Split a handshake message into handshake records of the given payload size(s)."""
    out, pos, i = [], 0, 0
    while pos < len(message):
        size = sizes if isinstance(sizes, int) else sizes[i % len(sizes)]
        chunk = message[pos : pos + max(1, size)]
        out.append(struct.pack("!BHH", 22, version, len(chunk)) + chunk)
        pos += len(chunk)
        i += 1
    return b"".join(out)


def vector(length_size: int, data: bytes) -> bytes:
    """A TLS vector: big-endian length of ``length_size`` bytes, then ``data``."""
    return len(data).to_bytes(length_size, "big") + data


def sni_extension(*names: bytes, name_type: int = 0) -> tuple[int, bytes]:
    """A server_name extension listing ``names`` (host_name entries by default)."""
    return 0, vector(2, b"".join(bytes([name_type]) + vector(2, n) for n in names))


def alpn_extension(*protocols: bytes) -> tuple[int, bytes]:
    """An ALPN extension offering ``protocols``."""
    return 16, vector(2, b"".join(vector(1, p) for p in protocols))


def build_client_hello(
    extensions: list[tuple[int, bytes]] | None = None,
    *,
    raw_extensions: bytes | None = None,
    legacy_version: int = 0x0303,
    session_id: bytes = b"\x01" * 32,
    cipher_suites: bytes = b"\x13\x01\xc0\x2b",
    compression: bytes = b"\x00",
) -> bytes:
    """A ClientHello handshake message (not yet in records) from its parts."""
    body = (
        legacy_version.to_bytes(2, "big")
        + b"\x42" * 32
        + vector(1, session_id)
        + vector(2, cipher_suites)
        + vector(1, compression)
    )
    if raw_extensions is not None:
        body += raw_extensions
    elif extensions is not None:
        body += vector(2, b"".join(t.to_bytes(2, "big") + vector(2, d) for t, d in extensions))
    return b"\x01" + vector(3, body)


def with_padding(records: bytes, padding: int) -> bytes:
    """Re-make a real hello with an extra ``padding`` (type 21) extension of ``padding`` bytes.

    Returned as a handshake message; put it in records with :func:`as_records`.
    """
    message = handshake_message(records)
    body = message[4:]
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    extensions = body[pos + 2 :] + (21).to_bytes(2, "big") + vector(2, b"\x00" * padding)
    return b"\x01" + vector(3, body[:pos] + vector(2, extensions))


# -- certificates and stores -----------------------------------------------------------


def pem_sha256(pem: bytes) -> str:
    """SHA-256 (hex) of the DER of the first certificate in ``pem``."""
    certificate = x509.load_pem_x509_certificates(pem)[0]
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


@functools.cache
def ca():
    """One :class:`jobhost.testing.TestCA` per test session, made on first use (never at import)."""
    from jobhost.testing import TestCA

    return TestCA.create("sni unit test CA")


@functools.cache
def fallback_pems() -> tuple[bytes, bytes]:
    """A self-signed fallback ``(key_pem, cert_pem)``, made once per test session."""
    from jobhost.certs import self_signed_certificate

    return self_signed_certificate("fallback.jobhost.invalid", datetime.now(timezone.utc))


def record_for(hostname: str, *extra_names: str, stored_as: str | None = None):
    """A certificate record for ``hostname`` (leaf + intermediate from :func:`ca`)."""
    from jobhost.store.records import certificate_record

    key_pem, chain_pem = ca().issue(hostname, extra_names=extra_names)
    return certificate_record(stored_as or hostname, key_pem, chain_pem)


def store_with(*records):
    """A :class:`jobhost.store.memory.MemoryStore` holding ``records``."""
    from jobhost.store.memory import MemoryStore

    store = MemoryStore()
    for record in records:
        store.put_certificate(record)
    return store


class GatedStore:
    """A store whose certificate reads wait until the test releases them (the rest is ``inner``'s)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self._waiting: list[tuple[str, Deferred]] = []

    def get_certificate(self, hostname):
        self.calls.append(hostname)
        d: Deferred = Deferred()
        self._waiting.append((hostname, d))
        return d

    def release(self) -> None:
        """Answer every read waiting so far, with what ``inner`` holds now."""
        waiting, self._waiting = self._waiting, []
        for hostname, d in waiting:
            self.inner.get_certificate(hostname).chainDeferred(d)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CountingStore(GatedStore):
    """A store that counts certificate reads and answers at once."""

    def get_certificate(self, hostname):
        self.calls.append(hostname)
        return self.inner.get_certificate(hostname)


# -- in-memory TLS peers (for twisted.test.iosim) ----------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
@attrs.define
class UncheckedClient:
    """A TLS client that sends ``server_name`` (or no SNI) and accepts any certificate."""

    server_name: bytes | None

    def clientConnectionForTLS(self, tls_protocol):
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        connection = SSL.Connection(context, None)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name)
        connection.set_alpn_protos([b"http/1.1"])
        connection.set_connect_state()
        return connection


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """Remembers whether the handshake completed, what arrived, and how the connection ended."""

    handshake_done = False
    lost = None

    def connectionMade(self):
        self.received = b""

    def handshakeCompleted(self):
        self.handshake_done = True

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = reason


class RecordingFactory(Factory):
    """Builds :class:`Recorder` protocols and keeps them; counts starts and stops."""

    protocol = Recorder

    def __init__(self):
        self.built: list[Recorder] = []
        self.starts = self.stops = 0

    def startFactory(self):
        self.starts += 1

    def stopFactory(self):
        self.stops += 1

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        self.built.append(p)
        return p


# -- blocking clients for threads ------------------------------------------------------


@attrs.frozen
class Fetched:
    """What a TLS client saw: the server's leaf, version, ALPN and HTTP response."""

    certificate_sha256: str
    version: str
    alpn: str | None
    response: bytes


def client_context(cadata: bytes | None, tls_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context trusting only ``cadata`` (None: verifying nothing), pinned to a version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=cadata.decode("ascii"))
    if tls_version is not None:
        context.minimum_version = context.maximum_version = tls_version
    context.set_alpn_protocols(["http/1.1"])
    return context


def _request(server_name: str | None) -> bytes:
    host = (server_name or "127.0.0.1").encode("ascii")
    return b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"


def https_get(
    port: int,
    server_name: str | None,
    cadata: bytes | None = None,
    tls_version: ssl.TLSVersion | None = None,
    timeout: float = 5.0,
) -> Fetched:
    """Handshake (verifying against ``cadata`` when given), GET /, read to EOF."""
    context = client_context(cadata, tls_version)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            version, alpn = tls.version(), tls.selected_alpn_protocol()
            tls.sendall(_request(server_name))
            response = read_to_eof(tls)
    return Fetched(hashlib.sha256(der).hexdigest(), version, alpn, response)


def read_to_eof(tls: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes (close_notify or a bare EOF)."""
    response = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        response += chunk
    return response


def tls_error(port: int, server_name: str | None, timeout: float = 5.0) -> str:
    """Attempt a handshake that is expected to fail; return the ``ssl.SSLError`` reason."""
    try:
        https_get(port, server_name, None, timeout=timeout)
    except ssl.SSLError as e:
        return str(e.reason)
    raise AssertionError("the handshake succeeded")


def trickled_https_get(
    port: int,
    server_name: str,
    cadata: bytes,
    halfway: threading.Event | None = None,
    resume: threading.Event | None = None,
    delay: float = 0.0005,
    timeout: float = 5.0,
) -> Fetched:
    """Like :func:`https_get`, but the ClientHello goes out in one-byte TCP writes.

    Uses ``ssl.SSLObject`` over memory BIOs so the first flight can be sent
    byte by byte (TCP_NODELAY, a short sleep between writes).  Halfway
    through, sets ``halfway`` and waits for ``resume`` when given.
    """
    context = client_context(cadata)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first_flight = True
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if first_flight:
                    first_flight = False
                    for i in range(len(pending)):
                        sock.send(pending[i : i + 1])
                        time.sleep(delay)
                        if i == len(pending) // 2 and halfway is not None:
                            halfway.set()
                            if resume is not None:
                                resume.wait(timeout)
                elif pending:
                    sock.sendall(pending)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed the connection during the handshake")
                incoming.write(data)
        obj.write(_request(server_name))
        sock.sendall(outgoing.read())
        response = b""
        while True:
            try:
                chunk = obj.read(65536)
                if not chunk:
                    break
                response += chunk
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                break
            data = sock.recv(65536)
            if not data:
                break
            incoming.write(data)
        der = obj.getpeercert(binary_form=True)
        return Fetched(hashlib.sha256(der).hexdigest(), obj.version(), obj.selected_alpn_protocol(), response)


@attrs.frozen
class Probed:
    """What a raw client got back before the server closed the connection."""

    received: bytes
    reset: bool
    seconds: float
    connected_for: float


def raw_probe(
    port: int,
    payload: bytes,
    connected: threading.Event | None = None,
    go: threading.Event | None = None,
    timeout: float = 5.0,
) -> Probed:
    """Connect, signal ``connected``, wait for ``go``, send ``payload``, read until closed.

    ``seconds`` runs from the end of sending, ``connected_for`` from the connect,
    until the server closed (EOF or reset).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        connected_at = time.monotonic()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if connected is not None:
            connected.set()
        if go is not None:
            go.wait(timeout)
        reset = False
        try:
            if payload:
                sock.sendall(payload)
        except (ConnectionResetError, BrokenPipeError):
            reset = True
        start = time.monotonic()
        received = b""
        while not reset:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            received += chunk
        end = time.monotonic()
        return Probed(received, reset, end - start, end - connected_at)


def h2_get(
    port: int, server_name: str, paths: list[str], cadata: bytes, timeout: float = 5.0
) -> tuple[str | None, dict[str, tuple[int, bytes]]]:
    """HTTP/2 over one TLS connection (ALPN h2 first): GET every path as its own stream.

    Returns the negotiated ALPN protocol and ``{path: (status, body)}``.
    """
    import h2.config
    import h2.connection
    import h2.events

    context = client_context(cadata)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            alpn = tls.selected_alpn_protocol()
            if alpn != "h2":
                return alpn, {}
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            streams = {}
            for path in paths:
                stream_id = connection.get_next_available_stream_id()
                connection.send_headers(
                    stream_id,
                    [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", server_name)],
                    end_stream=True,
                )
                streams[stream_id] = path
            tls.sendall(connection.data_to_send())
            statuses, bodies, done = {}, {sid: b"" for sid in streams}, set()
            deadline = time.monotonic() + timeout
            while len(done) < len(streams) and time.monotonic() < deadline:
                data = tls.recv(65536)
                if not data:
                    break
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        done.add(event.stream_id)
                tls.sendall(connection.data_to_send())
            return alpn, {streams[sid]: (statuses.get(sid, 0), bodies[sid]) for sid in streams}


__all__ = [
    "h2_get",
    "read_to_eof",
    "CountingStore",
    "Fetched",
    "GatedStore",
    "Probed",
    "Recorder",
    "RecordingFactory",
    "UncheckedClient",
    "alpn_extension",
    "as_records",
    "build_client_hello",
    "ca",
    "client_context",
    "fallback_pems",
    "handshake_message",
    "https_get",
    "pem_sha256",
    "pyopenssl_client_hello",
    "raw_probe",
    "record_for",
    "sni_extension",
    "stdlib_client_hello",
    "store_with",
    "tls_error",
    "trickled_https_get",
    "vector",
    "with_padding",
]
