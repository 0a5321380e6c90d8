"""
Read just enough of a TLS ClientHello to choose a certificate before the handshake.

This module owns one pure function, :func:`parse_client_hello`, which looks
at the first bytes a client sent on a connection and says one of three
things: :class:`NeedMore` (a valid beginning; call again with more bytes),
:class:`ClientHello` (the complete hello, with its ``server_name``, ALPN
protocols and versions), or :class:`NotTLS` (not a TLS handshake, plain
HTTP, malformed, or larger than the caller allows).  It does no I/O, never
raises on any input, and never decides anything OpenSSL will not check again:
the bytes are replayed to OpenSSL unchanged after the decision.

Two rules shape it:

- The hello may be split anywhere by TCP (the caller calls again with the
  grown buffer) and across any number of TLS records (handshake message
  fragmentation, RFC 8446 section 5.1): records are joined before the
  message is read.
- A buffer is judged only on complete facts.  Any strict prefix of a valid
  hello gives :class:`NeedMore`; :class:`NotTLS` is only returned for bytes
  no continuation can make valid, or when the hello cannot fit in
  ``max_size`` bytes.

Calling again with the whole buffer is quadratic in the number of records;
pass the previous :class:`NeedMore` as ``resume`` (and call only once the
buffer reaches its ``needed`` length) to make the total work linear, which
keeps a client that sends one-byte records from burning CPU.
"""

from __future__ import annotations

import re

import attrs

#: The default cap on how many bytes a ClientHello may take to arrive.
MAX_HELLO_BYTES = 16384

_HANDSHAKE_RECORD = 22
_CLIENT_HELLO = 1
_MAX_FRAGMENT = 2**14  # TLSPlaintext.length limit (RFC 8446 section 5.1)
_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4

EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

# The start of an HTTP request line: a method token, then a space (or the end so far).  Anchored
# and bounded, so a match reads at most 13 bytes however long the buffer is.
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,12}(?: |\Z)")
# Fewer letters than a method has: wait for the next byte before judging ("GE" may become "GET ").
_HTTP_START = re.compile(rb"[A-Z]{1,2}\Z")


@attrs.frozen
class NeedMore:
    """The bytes so far are a valid beginning of a ClientHello; call again with more.

    Attributes:
        needed: The buffer length below which another call cannot change the answer.
        consumed: Offset just past the last complete record read (for ``resume``).
        message: The handshake bytes those records carried (for ``resume``).
    """

    needed: int = 1
    consumed: int = 0
    message: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen
class ClientHello:
    """A complete ClientHello, as far as certificate selection cares.

    Attributes:
        server_name: The SNI ``host_name`` exactly as sent (ASCII), or None when absent.
        alpn: The ALPN protocol names offered, in the client's order.
        legacy_version: The ``legacy_version`` field (0x0303 for TLS 1.2 and 1.3).
        supported_versions: The ``supported_versions`` extension's list, if sent.
        extensions: Extension types in the order sent.
        length: How many bytes of the buffer the records holding the hello span.
    """

    server_name: str | None
    alpn: tuple[bytes, ...] = ()
    legacy_version: int = 0x0303
    supported_versions: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    length: int = 0


@attrs.frozen
class NotTLS:
    """The bytes are not (or cannot become) a ClientHello jobhost accepts.

    Attributes:
        reason: A short sentence for debug logs.
        http: True when the bytes look like a plain HTTP request line.
    """

    reason: str
    http: bool = False


ParseResult = NeedMore | ClientHello | NotTLS


class _Malformed(Exception):
    """Internal: the complete hello breaks its own length rules."""


class _Reader:
    """Bounds-checked reads from one byte string."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def done(self) -> bool:
        return self._pos == len(self._data)

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise _Malformed(f"truncated {what}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def opaque(self, length_size: int, what: str) -> bytes:
        """A length-prefixed byte string (a TLS vector's contents)."""
        return self.take(self.uint(length_size, what + " length"), what)

    def vector(self, length_size: int, what: str) -> _Reader:
        return _Reader(self.opaque(length_size, what))


_Extensions = tuple[str | None, tuple[bytes, ...], tuple[int, ...], tuple[int, ...]]


def _parse_extensions(data: bytes) -> _Extensions:
    # Walked with plain indexing: a browser's hello has 15-20 extensions and this loop is on
    # every connection's path; only the three we read get a _Reader.
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    seen: list[int] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 2:
            raise _Malformed("truncated extension type")
        if end - pos < 4:
            raise _Malformed("truncated extension length")
        ext_type = data[pos] << 8 | data[pos + 1]
        start = pos + 4
        pos = start + (data[pos + 2] << 8 | data[pos + 3])
        if pos > end:
            raise _Malformed("truncated extension")
        if ext_type in seen:
            raise _Malformed(f"extension {ext_type} sent twice")
        seen.append(ext_type)
        if ext_type == EXT_SERVER_NAME:
            body = _Reader(data[start:pos])
            names = body.vector(2, "server_name list")
            if names.done() or not body.done():
                raise _Malformed("bad server_name extension")
            while not names.done():
                name_type = names.uint(1, "server_name type")
                name = names.opaque(2, "server_name")
                if name_type != 0:
                    continue  # only host_name (0) is defined; skip others as OpenSSL does
                if server_name is not None or not name or not name.isascii():
                    raise _Malformed("bad host_name in server_name")
                server_name = name.decode("ascii")
        elif ext_type == EXT_ALPN:
            body = _Reader(data[start:pos])
            protocols = body.vector(2, "ALPN list")
            if protocols.done() or not body.done():
                raise _Malformed("bad ALPN extension")
            names_ = []
            while not protocols.done():
                proto = protocols.opaque(1, "ALPN protocol")
                if not proto:
                    raise _Malformed("empty ALPN protocol name")
                names_.append(proto)
            alpn = tuple(names_)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            body = _Reader(data[start:pos])
            listed = body.opaque(1, "supported_versions")
            if not listed or len(listed) % 2 or not body.done():
                raise _Malformed("bad supported_versions extension")
            versions = tuple(int.from_bytes(listed[i : i + 2], "big") for i in range(0, len(listed), 2))
    return server_name, alpn, versions, tuple(seen)


def _parse_body(body: bytes, length: int) -> ClientHello | NotTLS:
    r = _Reader(body)
    try:
        legacy_version = r.uint(2, "legacy_version")
        r.take(32, "random")
        if len(r.opaque(1, "legacy_session_id")) > 32:
            raise _Malformed("session id longer than 32 bytes")
        suites = r.opaque(2, "cipher_suites")
        if not suites or len(suites) % 2:
            raise _Malformed("bad cipher_suites")
        if not r.opaque(1, "compression_methods"):
            raise _Malformed("no compression method")
        server_name, alpn, versions, types = None, (), (), ()
        if not r.done():
            server_name, alpn, versions, types = _parse_extensions(r.opaque(2, "extensions"))
            if not r.done():
                raise _Malformed("bytes after the extensions")
    except _Malformed as e:
        return NotTLS(f"malformed ClientHello: {e}")
    return ClientHello(server_name, alpn, legacy_version, versions, types, length)


def _check_head(message: bytes, max_size: int) -> NotTLS | int | None:
    """Judge the handshake header: NotTLS, or the message's total length once known."""
    if message and message[0] != _CLIENT_HELLO:
        return NotTLS(f"first handshake message is type {message[0]}, not ClientHello")
    if len(message) < _HANDSHAKE_HEADER:
        return None
    total = _HANDSHAKE_HEADER + int.from_bytes(message[1:4], "big")
    if total + _RECORD_HEADER > max_size:
        return NotTLS(f"ClientHello of {total} bytes does not fit in {max_size}")
    return total


def parse_client_hello(
    data: bytes, max_size: int = MAX_HELLO_BYTES, resume: NeedMore | None = None
) -> ParseResult:
    """Say whether ``data`` starts with a complete, well-formed TLS ClientHello.

    Args:
        data: Every byte received on the connection so far.
        max_size: The hello (with its record headers) must arrive within this many bytes.
        resume: The :class:`NeedMore` an earlier call returned for a prefix of
            ``data``; lets this call skip the records already read.

    Returns:
        :class:`NeedMore`, :class:`ClientHello` or :class:`NotTLS`; never raises.
    """
    data = bytes(data)
    if not data:
        return NeedMore()
    if data[0] != _HANDSHAKE_RECORD:
        if _HTTP_REQUEST.match(data):
            return NotTLS("plain HTTP request", http=True)
        if _HTTP_START.match(data):
            return NeedMore(len(data) + 1)
        if data[0] & 0x80:
            return NotTLS("SSLv2-style record header")
        return NotTLS(f"not a TLS handshake record (first byte {data[0]:#04x})")
    pos, message = 0, b""
    if resume is not None and resume.consumed <= len(data):
        pos, message = resume.consumed, resume.message
    while True:
        header = data[pos : pos + _RECORD_HEADER]
        if header and header[0] != _HANDSHAKE_RECORD:
            return NotTLS(f"record of type {header[0]} inside the ClientHello")
        if len(header) >= 2 and header[1] != 3:
            return NotTLS(f"unknown record version {header[1]}.x")
        if len(header) < _RECORD_HEADER:
            # each header byte can refuse the connection (type, version): look at the next one
            needed, minimum, partial = pos + len(header) + 1, pos + _RECORD_HEADER, b""
            break
        length = int.from_bytes(header[3:], "big")
        if length == 0 or length > _MAX_FRAGMENT:
            return NotTLS(f"handshake record of {length} bytes")
        end = pos + _RECORD_HEADER + length
        if end > max_size:
            return NotTLS(f"no complete ClientHello within {max_size} bytes")
        if end > len(data):
            needed, minimum, partial = end, end, data[pos + _RECORD_HEADER :]
            if len(message) + len(partial) < _HANDSHAKE_HEADER:
                # the handshake header (type, length) is still arriving: each byte can refuse
                needed = len(data) + 1
            break
        message += data[pos + _RECORD_HEADER : end]
        pos = end
        total = _check_head(message, max_size)
        if isinstance(total, NotTLS):
            return total
        if total is not None and len(message) >= total:
            return _parse_body(message[_HANDSHAKE_HEADER:total], pos)
    verdict = _check_head(message + partial[:_HANDSHAKE_HEADER], max_size)
    if isinstance(verdict, NotTLS):
        return verdict
    if minimum > max_size:
        return NotTLS(f"no complete ClientHello within {max_size} bytes")
    return NeedMore(needed, pos, message)


__all__ = [
    "EXT_ALPN",
    "EXT_SERVER_NAME",
    "EXT_SUPPORTED_VERSIONS",
    "MAX_HELLO_BYTES",
    "ClientHello",
    "NeedMore",
    "NotTLS",
    "ParseResult",
    "parse_client_hello",
]
