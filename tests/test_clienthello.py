"""Tests for jobhost.tls.clienthello: the pure ClientHello parser."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from tls_helpers import (
    alpn_extension,
    as_records,
    build_client_hello,
    handshake_message,
    pyopenssl_client_hello,
    sni_extension,
    stdlib_client_hello,
    vector,
    with_padding,
)

from jobhost.tls.clienthello import (
    EXT_ALPN,
    EXT_SERVER_NAME,
    EXT_SUPPORTED_VERSIONS,
    ClientHello,
    NeedMore,
    NotTLS,
    parse_client_hello,
)

RESULT_TYPES = (NeedMore, ClientHello, NotTLS)


@functools.cache
def real_hellos() -> dict[str, bytes]:
    """First flights from real clients, made once per test session (not at import)."""
    return {
        "sni": pyopenssl_client_hello(b"jobs.acme-corp.com"),
        "no_sni": pyopenssl_client_hello(),
        "alpn": pyopenssl_client_hello(b"careers.example.org", [b"h2", b"http/1.1"]),
        "tls12": pyopenssl_client_hello(b"old.example.net", max_version=SSL.TLS1_2_VERSION),
        "stdlib": stdlib_client_hello("stdlib.example.com"),
    }


hello_names = st.sampled_from(["sni", "no_sni", "alpn", "tls12", "stdlib"])


def records(message: bytes) -> bytes:
    return as_records(message, 16384)


# -- real clients ------------------------------------------------------------------------


def test_pyopenssl_hello_with_sni():
    """A real pyOpenSSL hello with SNI gives its server_name exactly as sent, and TLS 1.3 offered."""
    result = parse_client_hello(real_hellos()["sni"])
    assert isinstance(result, ClientHello)
    assert result.server_name == "jobs.acme-corp.com"
    assert result.alpn == ()
    assert 0x0304 in result.supported_versions
    assert result.length == len(real_hellos()["sni"])


def test_pyopenssl_hello_without_sni():
    """A real hello without SNI parses with server_name None."""
    result = parse_client_hello(real_hellos()["no_sni"])
    assert isinstance(result, ClientHello)
    assert result.server_name is None
    assert EXT_SERVER_NAME not in result.extensions


def test_pyopenssl_hello_with_alpn():
    """A real hello offering ALPN gives the protocols in the client's order."""
    result = parse_client_hello(real_hellos()["alpn"])
    assert isinstance(result, ClientHello)
    assert result.server_name == "careers.example.org"
    assert result.alpn == (b"h2", b"http/1.1")
    assert EXT_ALPN in result.extensions


def test_tls12_only_hello():
    """A client capped at TLS 1.2 offers no TLS 1.3 in supported_versions and still parses."""
    result = parse_client_hello(real_hellos()["tls12"])
    assert isinstance(result, ClientHello)
    assert result.server_name == "old.example.net"
    assert 0x0304 not in result.supported_versions
    assert result.legacy_version == 0x0303


def test_stdlib_hello():
    """A hello from Python's ssl module (another OpenSSL build) parses too."""
    result = parse_client_hello(real_hellos()["stdlib"])
    assert isinstance(result, ClientHello)
    assert result.server_name == "stdlib.example.com"


def test_server_name_kept_as_sent():
    """The host_name is returned as sent (upper case, trailing dot), not normalised."""
    message = build_client_hello([sni_extension(b"Jobs.Example.COM.")])
    result = parse_client_hello(records(message))
    assert isinstance(result, ClientHello)
    assert result.server_name == "Jobs.Example.COM."


def test_bytes_after_the_hello_are_ignored():
    """Bytes after the records holding the hello do not change the result; length marks the end."""
    hello = real_hellos()["sni"]
    result = parse_client_hello(hello + b"\x17\x03\x03\x00\x05early")
    assert isinstance(result, ClientHello)
    assert result.server_name == "jobs.acme-corp.com"
    assert result.length == len(hello)


# -- fragmentation and splitting -------------------------------------------------------


@given(name=hello_names)
def test_one_byte_records(name):
    """A real hello re-fragmented into one-byte TLS records parses to the same ClientHello."""
    hello = real_hellos()[name]
    fragmented = as_records(handshake_message(hello), 1)
    whole, pieces = parse_client_hello(hello), parse_client_hello(fragmented)
    assert isinstance(pieces, ClientHello)
    assert (pieces.server_name, pieces.alpn, pieces.extensions) == (
        whole.server_name,
        whole.alpn,
        whole.extensions,
    )
    assert pieces.length == len(fragmented)


@given(name=hello_names, sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_any_record_sizes(name, sizes):
    """A real hello split across records of arbitrary sizes parses to the same server_name."""
    hello = real_hellos()[name]
    result = parse_client_hello(as_records(handshake_message(hello), sizes))
    assert isinstance(result, ClientHello)
    assert result.server_name == parse_client_hello(hello).server_name


@given(name=hello_names, data=st.data())
def test_every_prefix_needs_more(name, data):
    """Every strict prefix of a valid hello (in any record layout) gives NeedMore."""
    message = handshake_message(real_hellos()[name])
    fragmented = as_records(message, data.draw(st.sampled_from([1, 7, 300, 16384])))
    cut = data.draw(st.integers(0, len(fragmented) - 1))
    result = parse_client_hello(fragmented[:cut])
    assert isinstance(result, NeedMore)
    assert result.needed > cut


@given(name=hello_names, data=st.data())
def test_tcp_splits_with_resume(name, data):
    """Feeding a hello in arbitrary TCP-sized pieces, resuming each time, gives the same result."""
    message = handshake_message(real_hellos()[name])
    wire = as_records(message, data.draw(st.sampled_from([1, 5, 16384])))
    cuts = sorted(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=20)))
    buffer, progress, result = b"", None, None
    for start, end in zip([0, *cuts], [*cuts, len(wire)]):
        buffer += wire[start:end]
        if progress is not None and len(buffer) < progress.needed:
            continue
        result = parse_client_hello(buffer, resume=progress)
        if isinstance(result, NeedMore):
            progress = result
    assert result == parse_client_hello(wire)


def test_resume_reads_only_new_records():
    """NeedMore carries the records already read, so a resumed call does not re-read them."""
    wire = as_records(handshake_message(real_hellos()["sni"]), 1)
    progress = parse_client_hello(wire[:600])
    assert isinstance(progress, NeedMore)
    assert progress.consumed == 600 and len(progress.message) == 100
    # Corrupting the already-consumed part is invisible to a resumed call: it was not re-read.
    corrupted = b"\x16" + b"\xff" * 599 + wire[600:]
    assert isinstance(parse_client_hello(corrupted, resume=progress), ClientHello)


def test_need_more_prints_without_the_bytes_it_holds():
    """A NeedMore carrying a kilobyte of handshake bytes prints short: logs and test failures stay readable."""
    wire = as_records(handshake_message(real_hellos()["sni"]), 1000)
    progress = parse_client_hello(wire[:1010])
    assert isinstance(progress, NeedMore) and len(progress.message) == 1000
    assert len(repr(progress)) < 100


# -- not TLS ---------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_bytes(data):
    """Arbitrary bytes always give one of the three results, never an exception."""
    assert isinstance(parse_client_hello(data), RESULT_TYPES)


@given(payload=st.binary(max_size=400), version=st.integers(0, 0xFFFF))
def test_never_raises_on_handshake_like_records(payload, version):
    """Arbitrary payloads inside well-formed handshake record headers never raise."""
    data = b"\x16" + version.to_bytes(2, "big") + vector(2, payload)
    assert isinstance(parse_client_hello(data), RESULT_TYPES)


@given(name=hello_names, data=st.data())
def test_never_raises_on_mutated_hellos(name, data):
    """A real hello with bytes overwritten anywhere never raises (truncated lengths included)."""
    hello = bytearray(handshake_message(real_hellos()[name]))
    for _ in range(data.draw(st.integers(1, 4))):
        hello[data.draw(st.integers(0, len(hello) - 1))] = data.draw(st.integers(0, 255))
    result = parse_client_hello(as_records(bytes(hello), data.draw(st.sampled_from([3, 16384]))))
    assert isinstance(result, RESULT_TYPES)


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"POST /api HTTP/1.1\r\n", b"HEAD ", b"OPTIONS * HTTP/1.1\r\n"],
)
def test_plain_http(data):
    """A plain HTTP request line is NotTLS and flagged as HTTP."""
    result = parse_client_hello(data)
    assert isinstance(result, NotTLS) and result.http


def test_sslv2_hello():
    """An SSLv2-style record header (high bit set) is NotTLS."""
    result = parse_client_hello(b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10")
    assert isinstance(result, NotTLS) and not result.http


@pytest.mark.parametrize(
    "data", [b"\x00", b"garbage\x00\x01", b"\x17\x03\x03\x00\x01x", b"\x15\x03\x01\x00\x02\x02\x28"]
)
def test_garbage_and_other_record_types(data):
    """Bytes that are not a handshake record are NotTLS from the first byte on."""
    result = parse_client_hello(data[:1])
    assert isinstance(result, NotTLS) and not result.http
    assert isinstance(parse_client_hello(data), NotTLS)


def test_other_record_inside_the_hello():
    """A non-handshake record between the hello's fragments is NotTLS."""
    message = handshake_message(real_hellos()["sni"])
    first, rest = as_records(message[:50], 50), as_records(message[50:], 16384)
    result = parse_client_hello(first + b"\x17\x03\x03\x00\x01x" + rest)
    assert isinstance(result, NotTLS)
    assert isinstance(parse_client_hello(first + b"\x17"), NotTLS)


@pytest.mark.parametrize(
    "header",
    [b"\x16\x02\x00\x00\x10", b"\x16\x03\x01\x00\x00", b"\x16\x03\x01\x48\x01"],
    ids=["record version 2.x", "empty record", "record over 2^14"],
)
def test_bad_record_headers(header):
    """A bad record version, an empty handshake record or an oversized record is NotTLS."""
    assert isinstance(parse_client_hello(header + b"\x01" * 20), NotTLS)


def test_first_message_not_client_hello():
    """A handshake record whose message is not a ClientHello (a ServerHello) is NotTLS at once."""
    assert isinstance(parse_client_hello(b"\x16\x03\x03\x00\x40\x02"), NotTLS)


# -- malformed hellos ------------------------------------------------------------------


def ext(ext_type: int, data: bytes) -> tuple[int, bytes]:
    return ext_type, data


@pytest.mark.parametrize(
    "extensions",
    [
        [ext(0, vector(2, b"\x00\x00\x20abc"))],  # host_name longer than its data
        [ext(0, b"\x00\x10\x00")],  # server_name list longer than the extension
        [ext(0, b"")],  # empty server_name extension
        [sni_extension(b"")],  # empty host_name
        [sni_extension("bücher.example".encode())],  # not ASCII
        [sni_extension(b"a.example", b"b.example")],  # two host_names
        [sni_extension(b"a.example"), sni_extension(b"a.example")],  # extension twice
        [ext(16, vector(2, b"\x00"))],  # empty ALPN protocol name
        [ext(16, vector(2, b"\x08http"))],  # ALPN name longer than its data
        [ext(43, vector(1, b"\x03"))],  # supported_versions of odd length
        [ext(0, vector(2, b""))],  # server_name list with no entry
        [ext(0, sni_extension(b"a.example")[1] + b"\x00")],  # bytes after the server_name list
        [ext(16, vector(2, b""))],  # ALPN list with no protocol
        [ext(16, alpn_extension(b"h2")[1] + b"\x00")],  # bytes after the ALPN list
        [ext(43, vector(1, b""))],  # supported_versions listing nothing
        [ext(43, vector(1, b"\x03\x04") + b"\x00")],  # bytes after the supported_versions list
    ],
)
def test_malformed_extensions(extensions):
    """Extensions whose inner lengths or contents break RFC 6066/7301/8446 rules are NotTLS."""
    result = parse_client_hello(records(build_client_hello(extensions)))
    assert isinstance(result, NotTLS)
    assert "malformed" in result.reason


def test_extension_block_truncated():
    """An extensions block whose last extension claims more bytes than remain is NotTLS."""
    raw = vector(2, (0).to_bytes(2, "big") + b"\x00\x40" + b"\x00" * 10)
    assert isinstance(parse_client_hello(records(build_client_hello(raw_extensions=raw))), NotTLS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session_id": b"\x00" * 33},
        {"cipher_suites": b""},
        {"cipher_suites": b"\x13"},
        {"compression": b""},
        {"raw_extensions": b"\x00"},
        {"raw_extensions": vector(2, b"") + b"junk"},
    ],
)
def test_malformed_body(kwargs):
    """A ClientHello body that breaks its own field rules is NotTLS."""
    assert isinstance(parse_client_hello(records(build_client_hello([], **kwargs))), NotTLS)


def test_non_host_name_entries_are_skipped():
    """server_name entries of an unknown type are skipped; the host_name entry is returned."""
    data = vector(2, b"\x05" + vector(2, b"other") + b"\x00" + vector(2, b"a.example.com"))
    result = parse_client_hello(records(build_client_hello([ext(0, data)])))
    assert isinstance(result, ClientHello) and result.server_name == "a.example.com"


def test_hello_without_extensions():
    """A minimal hello with no extensions block at all parses with no server_name."""
    message = b"\x01" + vector(3, b"\x03\x03" + b"\x00" * 32 + b"\x00" + vector(2, b"\x00\x2f") + b"\x01\x00")
    result = parse_client_hello(records(message))
    assert result == ClientHello(server_name=None, length=len(message) + 5)


def test_alpn_and_sni_from_built_hello():
    """A hand-built hello returns its SNI and ALPN list."""
    message = build_client_hello([sni_extension(b"x.example"), alpn_extension(b"http/1.1")])
    result = parse_client_hello(records(message))
    assert isinstance(result, ClientHello)
    assert (result.server_name, result.alpn) == ("x.example", (b"http/1.1",))


# -- size cap ----------------------------------------------------------------------------


def test_oversized_hello_rejected_from_its_header():
    """A hello whose declared length exceeds max_size is NotTLS as soon as its header arrives."""
    padded = as_records(with_padding(real_hellos()["sni"], 20000), 16384)
    assert isinstance(parse_client_hello(padded[:9]), NotTLS)
    assert isinstance(parse_client_hello(padded), NotTLS)


def test_large_hello_within_the_cap():
    """A hello over one record (padded to 15000 bytes, two records) parses under the default cap."""
    padded = as_records(with_padding(real_hellos()["sni"], 13000), 8000)
    result = parse_client_hello(padded)
    assert isinstance(result, ClientHello) and result.server_name == "jobs.acme-corp.com"


def test_max_size_counts_record_headers():
    """The cap applies to bytes on the wire: a small hello in one-byte records can exceed it."""
    hello = real_hellos()["sni"]
    fragmented = as_records(handshake_message(hello), 1)
    assert isinstance(parse_client_hello(fragmented, max_size=len(fragmented)), ClientHello)
    result = parse_client_hello(fragmented, max_size=len(fragmented) - 1)
    assert isinstance(result, NotTLS)
    assert isinstance(parse_client_hello(fragmented[:1000], max_size=1000), NotTLS)


def padded_message(length: int) -> bytes:
    """A real hello re-made with a padding extension so its handshake message is ``length`` bytes."""
    hello = real_hellos()["sni"]
    message = with_padding(hello, length - len(with_padding(hello, 0)))
    assert len(message) == length
    return message


def test_by_default_a_16_kib_hello_fits_and_one_byte_more_does_not():
    """The default cap is 16 KiB on the wire: a hello of exactly 16384 bytes parses, 16385 is refused."""
    fits, too_big = records(padded_message(16384 - 5)), records(padded_message(16384 - 4))
    assert (len(fits), len(too_big)) == (16384, 16385)
    assert isinstance(parse_client_hello(fits), ClientHello)
    assert isinstance(parse_client_hello(too_big), NotTLS)


def test_a_hello_exactly_max_size_bytes_long_fits():
    """A hello taking exactly max_size bytes parses (its last byte awaited); one byte less of cap refuses it."""
    hello = real_hellos()["sni"]
    assert len(handshake_message(hello)) + 5 == len(hello)  # one record
    assert isinstance(parse_client_hello(hello, max_size=len(hello)), ClientHello)
    assert isinstance(parse_client_hello(hello[:-1], max_size=len(hello)), NeedMore)
    assert isinstance(parse_client_hello(hello, max_size=len(hello) - 1), NotTLS)


def test_a_hello_too_big_for_the_cap_is_refused_from_its_header_whatever_the_records():
    """Even in small records, a hello that cannot fit in max_size is refused once its 4-byte header is in."""
    message = handshake_message(real_hellos()["sni"])
    wire = as_records(message, 100)
    assert isinstance(parse_client_hello(wire[:9], max_size=len(message) + 4), NotTLS)
    assert isinstance(parse_client_hello(wire[:9], max_size=len(message) + 5), NeedMore)
    assert isinstance(parse_client_hello(wire[:105], max_size=len(message) + 4), NotTLS)


def test_an_oversized_declared_length_is_refused_before_the_first_record_ends():
    """A hello declaring more than the default cap is refused from record and handshake headers alone."""
    wire = as_records(with_padding(real_hellos()["sni"], 20000), 100)
    assert isinstance(parse_client_hello(wire[:8]), NeedMore)  # the 3-byte length is not all there yet
    assert isinstance(parse_client_hello(wire[:9]), NotTLS)
    assert isinstance(parse_client_hello(wire[:105]), NotTLS)


def test_a_64_kib_declaration_is_refused_from_its_four_byte_header():
    """The 24-bit length counts its high byte: a hello declaring 65552 bytes is refused once a record
    carrying just its 4-byte handshake header is complete (and awaited when the cap allows it)."""
    wire = b"\x16\x03\x01\x00\x04" + b"\x01" + (65552).to_bytes(3, "big")
    assert isinstance(parse_client_hello(wire), NotTLS)
    assert isinstance(parse_client_hello(wire, max_size=70000), NeedMore)


def test_a_hello_with_an_empty_body_is_refused():
    """A complete ClientHello message whose body is empty is malformed, not a reason to wait."""
    result = parse_client_hello(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
    assert isinstance(result, NotTLS) and "malformed" in result.reason


def test_refused_when_not_even_the_next_record_header_fits():
    """In one-byte records, the hello is refused as soon as the cap leaves no room for another record header."""
    message = build_client_hello([sni_extension(b"x.example")])
    wire = as_records(message, 1)
    read = len(message) // 2 * 6  # half the records, complete
    assert isinstance(parse_client_hello(wire[:read], max_size=len(wire)), NeedMore)
    assert isinstance(parse_client_hello(wire[:read], max_size=read + 4), NotTLS)
    assert isinstance(parse_client_hello(wire[: read + 4], max_size=read + 4), NotTLS)


# -- record boundaries -------------------------------------------------------------------


def test_a_record_carries_at_most_2_14_bytes():
    """RFC 8446 caps a record at 2^14 bytes: one of 16384 is read, one of 16385 refused from its header,
    however large max_size is."""
    message = padded_message(16385)
    one_record, split = as_records(message, 16385), as_records(message, 16384)
    assert isinstance(parse_client_hello(one_record[:5], max_size=40000), NotTLS)
    assert isinstance(parse_client_hello(one_record, max_size=40000), NotTLS)
    result = parse_client_hello(split, max_size=40000)
    assert isinstance(result, ClientHello) and result.length == len(split)


def test_an_empty_handshake_record_is_refused():
    """RFC 8446 forbids zero-length handshake fragments: an empty record is refused even before a valid hello."""
    assert isinstance(parse_client_hello(b"\x16\x03\x01\x00\x00" + real_hellos()["sni"]), NotTLS)


def test_a_bad_record_version_is_refused_as_soon_as_its_byte_arrives():
    """The record version's major byte is judged as soon as it is in, in the first record or a later one."""
    assert isinstance(parse_client_hello(b"\x16"), NeedMore)
    assert isinstance(parse_client_hello(b"\x16\x03"), NeedMore)
    assert isinstance(parse_client_hello(b"\x16\x02"), NotTLS)
    first = as_records(handshake_message(real_hellos()["sni"])[:50], 50)
    assert isinstance(parse_client_hello(first + b"\x16\x03"), NeedMore)
    assert isinstance(parse_client_hello(first + b"\x16\x04"), NotTLS)


def test_an_empty_buffer_needs_one_byte_and_resumes_cleanly():
    """Nothing received yet: one byte is enough for an answer, and resuming from there reads everything."""
    progress = parse_client_hello(b"")
    assert isinstance(progress, NeedMore) and progress.needed == 1
    hello = real_hellos()["sni"]
    assert parse_client_hello(hello, resume=progress) == parse_client_hello(hello)


def test_resume_without_new_bytes_reads_nothing_again():
    """Resuming on a buffer that has not grown past the records read gives the same NeedMore, unread."""
    wire = as_records(handshake_message(real_hellos()["sni"]), 1)
    progress = parse_client_hello(wire[:600])
    assert isinstance(progress, NeedMore) and progress.consumed == 600
    corrupted = b"\x16" + b"\xff" * 599  # the part already read, now garbage: a resumed call never looks
    assert parse_client_hello(corrupted, resume=progress) == progress


# -- extensions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extensions",
    [
        [alpn_extension(b"h2"), alpn_extension(b"http/1.1")],
        [ext(43, vector(1, b"\x03\x04")), ext(43, vector(1, b"\x03\x03"))],
        [ext(21, b"\x00" * 4), ext(21, b"")],
        [sni_extension(b"a.example"), alpn_extension(b"h2"), sni_extension(b"b.example")],
    ],
    ids=["ALPN", "supported_versions", "padding", "server_name apart"],
)
def test_a_hello_with_an_extension_sent_twice_is_refused(extensions):
    """RFC 8446 section 4.2: no extension type may appear twice, whichever it is (OpenSSL refuses it too)."""
    result = parse_client_hello(records(build_client_hello(extensions)))
    assert isinstance(result, NotTLS) and "twice" in result.reason


def test_supported_versions_listed_in_the_clients_order():
    """supported_versions gives every 2-byte version offered, in order."""
    message = build_client_hello([ext(43, vector(1, b"\x03\x04\x03\x03\x7f\x1c"))])
    result = parse_client_hello(records(message))
    assert isinstance(result, ClientHello)
    assert result.supported_versions == (0x0304, 0x0303, 0x7F1C)
    assert result.extensions == (EXT_SUPPORTED_VERSIONS,)


# -- reasons for the debug log ---------------------------------------------------------


@pytest.mark.parametrize(
    "data,says",
    [
        (b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", "SSLv2"),
        (b"\x01\x03\x80", "first byte 0x01"),
        (b"\x17\x03\x03\x00\x01x", "first byte 0x17"),
        (b"\x16\x03\x03\x00\x40\x02\x00\x00\x3c", "type 2,"),
        (b"\x16\x03\x01\x00\x01\x01\x17\x03\x03\x00\x01x", "record of type 23"),
        (b"\x16\x02\x00\x00\x10", "version 2.x"),
        (records(build_client_hello([ext(16, vector(2, b"\x08http"))])), "truncated ALPN protocol"),
    ],
    ids=["SSLv2", "high bit clear", "application data", "ServerHello", "record type", "version", "truncated"],
)
def test_the_reason_says_what_was_wrong(data, says):
    """NotTLS.reason goes to the debug log: it names the offending byte, message, record or field."""
    result = parse_client_hello(data)
    assert isinstance(result, NotTLS)
    assert says in result.reason
    assert ("SSLv2" in result.reason) == (says == "SSLv2")


def test_a_plain_http_request_split_after_one_or_two_letters_is_still_recognised():
    """Found by bench/fuzz_hello.py: "GE" then "T / ..." must get the 400 that tells the user to use https."""
    for first in (b"G", b"GE"):
        waiting = parse_client_hello(first)
        assert waiting == NeedMore(len(first) + 1)
        assert parse_client_hello(b"GET / HTTP/1.1\r\n", resume=waiting) == NotTLS("plain HTTP request", http=True)
    assert isinstance(parse_client_hello(b"G\x00"), NotTLS) and not parse_client_hello(b"G\x00").http
    assert isinstance(parse_client_hello(b"g"), NotTLS)
