"""
Fuzz the HTTPS listener's ClientHello hold and parser with generated and mutated ClientHellos.

Drives the real listener factory (``SNIServerFactory.create``: the hold, the
parser, the certificate cache over a ``MemoryStore`` with a few real
certificates, the hand-over to pyOpenSSL, a trivial ``twisted.web`` Site
behind it) on in-memory transports with a ``Clock``.  For each input:

1. a connection is built (``buildProtocol`` + ``makeConnection``) on a
   ``StringTransport``;
2. the bytes go in as ``dataReceived`` calls, split at fuzzer-chosen TCP boundaries;
3. the clock is advanced past the hello deadline (``hello_timeout`` plus the sweep
   granularity): the connection must now be closed, or handed over to TLS;
4. ``connectionLost`` is delivered: nothing may stay in ``factory.connections`` or
   ``factory.held``.

A *finding* is: an exception escaping any of those calls; a log event carrying a
``log_failure`` or at error level or above; a connection neither closed nor handed
over after its deadline; a connection left in ``connections`` / ``held``; an
outcome that disagrees with ``parse_client_hello`` run once on the whole input
(NeedMore -> timed out, NotTLS -> closed as not TLS, ClientHello -> served /
fallback / rejected / ALPN-refused as the policy and the known names say); the
parser raising; memory not flat (rule below).  Findings are saved with
``--findings DIR`` (``<kind>-<sha>.bin`` holds the bytes, ``.json`` the TCP cuts and
the listener variant) and replayed with ``--replay FILE.bin``.  Exit status 1 on any.

Inputs: seeds are real ClientHellos (pyOpenSSL and the stdlib ``ssl`` module, with and
without SNI/ALPN, TLS 1.2-only) and crafted ones (``tests/tls_helpers.py``), plus plain
HTTP, SSLv2 and empty inputs.  The built-in engine (seeded, needs nothing extra) mutates
them: extensions duplicated, dropped, reordered, added (SNI with odd names, ALPN lists,
supported_versions, padding up to past the size cap), length fields set to boundary
values (0, 1, max, real +-1, ...), re-framing into many records with odd versions and
stray records, then bit flips, byte insert/delete/replace, record lengths at their
boundaries, truncation, appended bytes; and cuts the result into TCP segments (none,
random, every byte, at record boundaries +-1, inside the first 13 bytes).  One input in
eight goes to a ``reject_unknown`` listener.  With ``--atheris`` (``pip install atheris``)
libFuzzer drives instead, coverage-guided over ``jobhost``, with this engine as a
custom mutator for half the mutations; the TCP cuts and the listener variant are
derived from a hash of the input.

Memory: every ``--sample-every`` inputs, VmRSS (``/proc/self/status``), the number of
objects the garbage collector tracks (after ``gc.collect()``), the clock's pending calls
and the cache sizes are recorded.  Rule: with at least 8 samples, memory is flat when
the median RSS of the last quarter of the samples is within max(5%, 2 MiB) of the
median of the second quarter, and the same for the gc object count within
max(5%, 2,000 objects) (the first quarter is warm-up: the negative cache fills up).

Usage (from the repository root)::

    python bench/fuzz_hello.py --inputs 1000000 --seed 1 [--json] [--findings DIR]
    python bench/fuzz_hello.py --atheris -runs=200000 [libFuzzer flags]
    python bench/fuzz_hello.py --replay DIR/exception-0123abcd.bin
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import statistics
import sys
import time
import traceback
import zlib
from collections import Counter, deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO), str(REPO / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

#: Names the store holds certificates for (the listener serves these; others get the fallback).
KNOWN = ("alpha.fuzz.test", "beta.fuzz.test", "xn--bcher-kva.fuzz.test")
OUTCOMES = ("served", "fallback", "rejected", "not_tls", "timeout", "alpn_refused")

# -- memory ------------------------------------------------------------------------------


def rss_kib() -> int:
    """This process's resident set size in KiB (VmRSS), 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_verdict(samples: list[dict]) -> dict:
    """Apply the flatness rule (module docstring) to the memory samples."""
    if len(samples) < 8:
        return {"flat": None, "rule": "needs at least 8 samples"}
    q = len(samples) // 4
    second, last = samples[q : 2 * q], samples[-q:]
    verdict = {"flat": True}
    for key, slack in (("rss_kib", 2048), ("gc_objects", 2000)):
        base = statistics.median(s[key] for s in second)
        end = statistics.median(s[key] for s in last)
        allowed = max(base * 0.05, slack)
        verdict[key] = {"second_quarter_median": base, "last_quarter_median": end, "allowed_growth": allowed}
        if end - base > allowed:
            verdict["flat"] = False
    verdict["rule"] = ("last-quarter median within max(5%, 2 MiB) of the second-quarter median (RSS), "
                       "max(5%, 2000) (gc objects)")
    return verdict


# -- ClientHello structure -----------------------------------------------------------------


def _u(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos : pos + size], "big")


def split_message(message: bytes):
    """A ClientHello message as (fixed part of the body, [(type, data)], has_extensions), or None."""
    if len(message) < 4 or message[0] != 1:
        return None
    body = message[4 : 4 + _u(message, 1, 3)]
    pos = 2 + 32
    if pos >= len(body):
        return None
    pos += 1 + body[pos]
    if pos + 2 > len(body):
        return None
    pos += 2 + _u(body, pos, 2)
    if pos >= len(body):
        return None
    pos += 1 + body[pos]
    if pos > len(body):
        return None
    fixed, rest = body[:pos], body[pos:]
    if not rest:
        return fixed, [], False
    if len(rest) < 2:
        return None
    data, exts, i = rest[2 : 2 + _u(rest, 0, 2)], [], 0
    while i + 4 <= len(data):
        length = _u(data, i + 2, 2)
        exts.append((_u(data, i, 2), data[i + 4 : i + 4 + length]))
        i += 4 + length
    return fixed, exts, True


def join_message(fixed: bytes, exts: list[tuple[int, bytes]], has_extensions: bool = True) -> bytes:
    body = fixed
    if has_extensions or exts:
        body += _vec(2, b"".join(t.to_bytes(2, "big") + _vec(2, d) for t, d in exts))
    return b"\x01" + _vec(3, body)


def length_fields(message: bytes) -> list[tuple[int, int, int]]:
    """(offset, size, value) of the length fields of a ClientHello message, as far as they parse."""
    out = [(1, 3, _u(message, 1, 3))] if len(message) >= 4 else []
    pos = 4 + 2 + 32

    def field(size: int) -> int | None:
        nonlocal pos
        if pos + size > len(message):
            return None
        value = _u(message, pos, size)
        out.append((pos, size, value))
        pos += size
        return value

    for size in (1, 2, 1):  # session id, cipher suites, compression methods
        value = field(size)
        if value is None:
            return out
        pos += value
    total = field(2)
    if total is None:
        return out
    end = min(len(message), pos + total)
    while pos + 4 <= end:
        ext_type = _u(message, pos, 2)
        pos += 2
        length = field(2)
        start = pos
        if ext_type in (0, 16) and length and length >= 2:
            field(2)  # server_name list / ALPN list
            inner_end = min(start + length, len(message))
            while pos < inner_end:
                if ext_type == 0:
                    pos += 1
                    value = field(2)
                else:
                    value = field(1)
                if value is None:
                    break
                pos += value
        elif ext_type == 43 and length:
            field(1)
        pos = start + (length or 0)
    return out


def records_of(wire: bytes) -> tuple[bytes, int] | None:
    """Join the handshake records at the start of ``wire``: (message, bytes used), or None."""
    message, pos = b"", 0
    while pos + 5 <= len(wire) and wire[pos] == 22:
        length = _u(wire, pos + 3, 2)
        if length == 0 or pos + 5 + length > len(wire):
            break
        message += wire[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(message) >= 4 and len(message) >= 4 + _u(message, 1, 3):
            break
    return (message, pos) if message else None


# -- inputs --------------------------------------------------------------------------------

INTERESTING_NAMES = [
    *(n.encode() for n in KNOWN), b"ALPHA.Fuzz.TEST", b"alpha.fuzz.test.", b"unknown.fuzz.test",
    b"b\xc3\xbccher.fuzz.test", b"xn--bcher-kva.fuzz.test.", b"*.fuzz.test", b"a..fuzz.test", b"-a.fuzz.test",
    b"127.0.0.1", b"[::1]", b"localhost", b"a", b".", b"alpha.fuzz.test\x00.evil", b"a_b.fuzz.test",
    b"a" * 63 + b".test", b"a" * 64 + b".test", (b"a" * 62 + b".") * 4 + b"a", (b"a" * 62 + b".") * 4 + b"ab",
    b"x" * 1000, b"alpha fuzz test", b"\xff\xfe", b"alpha.fuzz.test:443", b"ALPHA.FUZZ.TEST",
]
INTERESTING_ALPN = [
    [b"h2"], [b"http/1.1"], [b"h2", b"http/1.1"], [b"spdy/3"], [b"h3", b"spdy/1"], [b"x" * 255],
    [b"http/1.1"] * 20, [bytes([i]) for i in range(1, 100)], [b"HTTP/1.1"], [b"http/1.0"],
]
VERSIONS = [0x0301, 0x0301, 0x0303, 0x0303, 0x0300, 0x0302, 0x0304, 0x0200, 0x03FF, 0x0000]
EXT_TYPES = [0, 16, 43, 21, 10, 11, 13, 35, 41, 45, 51, 0xFF01, 0xFFFF, 0x1A1A]


def _vec(size: int, data: bytes) -> bytes:
    return (len(data) % (1 << (8 * size))).to_bytes(size, "big") + data  # wraps: lengths may lie


def sni_data(names: list[bytes], name_type: int = 0) -> bytes:
    return _vec(2, b"".join(bytes([name_type]) + _vec(2, n) for n in names))


def alpn_data(protocols: list[bytes]) -> bytes:
    return _vec(2, b"".join(_vec(1, p) for p in protocols))


def make_seeds() -> list[tuple[str, bytes]]:
    """("msg", a ClientHello handshake message) and ("raw", bytes sent as they are)."""
    from OpenSSL import SSL
    from tls_helpers import (
        alpn_extension, as_records, build_client_hello, handshake_message, pyopenssl_client_hello,
        sni_extension, stdlib_client_hello, with_padding,
    )

    seeds: list[tuple[str, bytes]] = []
    real = []
    for name, alpn, version in (
        (b"alpha.fuzz.test", [b"http/1.1"], None), (b"beta.fuzz.test", [b"h2", b"http/1.1"], None),
        (b"unknown.fuzz.test", None, None), (None, None, None), (b"alpha.fuzz.test", [b"spdy/3"], None),
        (b"alpha.fuzz.test", None, SSL.TLS1_2_VERSION), (b"xn--bcher-kva.fuzz.test", [b"h2"], None),
    ):
        real.append(pyopenssl_client_hello(name, alpn, version))
    real += [stdlib_client_hello("beta.fuzz.test"), stdlib_client_hello(None)]
    for wire in real:
        seeds.append(("raw", wire))
        seeds.append(("msg", handshake_message(wire)))
    seeds.append(("raw", as_records(handshake_message(real[0]), 1)))
    seeds.append(("raw", as_records(handshake_message(real[1]), [3, 100, 7])))
    seeds.append(("msg", with_padding(real[0], 512)))
    seeds.append(("msg", with_padding(real[1], 16000)))  # over the 16 KiB cap
    for extensions in (
        [sni_extension(b"alpha.fuzz.test")],
        [sni_extension(b"beta.fuzz.test"), alpn_extension(b"h2", b"http/1.1")],
        [alpn_extension(b"spdy/1")],
        [sni_extension(b"other", name_type=1), sni_extension(b"alpha.fuzz.test")][1:],
        [(0, sni_data([b"other"], 1) )],
        [(43, _vec(1, b"\x03\x04\x03\x03")), sni_extension(b"alpha.fuzz.test")],
        [],
        None,
    ):
        seeds.append(("msg", build_client_hello(extensions)))
    seeds.append(("msg", build_client_hello([sni_extension(b"alpha.fuzz.test")], session_id=b"")))
    seeds += [
        ("raw", b"GET / HTTP/1.1\r\nHost: alpha.fuzz.test\r\n\r\n"),
        ("raw", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("raw", b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + bytes(37)),
        ("raw", b""),
        ("raw", b"\x16\x03\x01"),
    ]
    return seeds


class Mutator:
    """The built-in engine: seeded, structure-aware mutations of ClientHellos (module docstring)."""

    def __init__(self, seeds: list[tuple[str, bytes]]) -> None:
        self.seeds = seeds
        self.recent: deque[bytes] = deque(maxlen=256)  # mutated messages that still parsed: stacked on

    # structure-aware, on the handshake message (lengths kept consistent)
    def structural(self, rng: random.Random, message: bytes) -> bytes:
        parts = split_message(message)
        if parts is None:
            return message
        fixed, exts, has = parts
        exts = list(exts)
        op = rng.randrange(9)
        if op == 0 and exts:  # duplicate an extension
            exts.insert(rng.randrange(len(exts) + 1), rng.choice(exts))
        elif op == 1 and exts:  # reorder
            rng.shuffle(exts)
        elif op == 2 and exts:  # drop one
            del exts[rng.randrange(len(exts))]
        elif op in (3, 4):  # set the SNI (one or more names, odd types)
            names = [rng.choice(INTERESTING_NAMES) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
            data = sni_data(names, rng.choice((0, 0, 0, 1, 255)))
            if rng.random() < 0.2:
                data = sni_data(names[:1]) + sni_data(names[-1:], 1)[2:]  # mixed types
            exts = [e for e in exts if e[0] != 0]
            exts.insert(rng.randrange(len(exts) + 1), (0, data))
        elif op == 5:  # set the ALPN offer
            exts = [e for e in exts if e[0] != 16]
            data = alpn_data(rng.choice(INTERESTING_ALPN))
            if rng.random() < 0.1:
                data = alpn_data([b"h2", b""])
            exts.insert(rng.randrange(len(exts) + 1), (16, data))
        elif op == 6:  # add an extension with random contents
            ext_type = rng.choice(EXT_TYPES)
            if ext_type == 43:
                data = _vec(1, rng.choice((b"\x03\x04\x03\x03", b"\x03", b"", b"\x03\x04" * 128)))
            else:
                data = rng.randbytes(rng.choice((0, 1, 2, 5, rng.randrange(300))))
            exts.insert(rng.randrange(len(exts) + 1), (ext_type, data))
        elif op == 7:  # padding, up to past the size cap
            size = rng.choice((0, 1, 100, 512, 16000, 16300, rng.randrange(17000)))
            exts.append((21, bytes(size)))
        else:  # the fixed part: session id, cipher suites, compression
            version = rng.choice((b"\x03\x03", b"\x03\x01", b"\x03\x04", b"\x02\x00", b"\xfe\xfd"))
            session = rng.choice((b"", bytes(32), bytes(33), bytes(255)))
            suites = rng.choice((b"", b"\x13", b"\x13\x01", b"\x13\x01\xc0\x2b", bytes(rng.randrange(0, 600, 2))))
            compression = rng.choice((b"", b"\x00", b"\x01", b"\x01\x00"))
            fixed = version + fixed[2:34] + _vec(1, session) + _vec(2, suites) + _vec(1, compression)
            has = has or rng.random() < 0.5
        return join_message(fixed, exts, has)

    def length_field(self, rng: random.Random, message: bytes) -> bytes:
        """Set one length field inside the message to a boundary value (the rest left as it is)."""
        fields = length_fields(message)
        if not fields:
            return message
        offset, size, value = rng.choice(fields)
        top = (1 << (8 * size)) - 1
        new = rng.choice((0, 1, top, value - 1, value + 1, value * 2, top - 1, rng.randrange(top + 1)))
        new = min(max(new, 0), top)
        return message[:offset] + new.to_bytes(size, "big") + message[offset + size :]

    def frame(self, rng: random.Random, message: bytes) -> tuple[bytes, list[int]]:
        """Put a message in handshake records; returns the wire bytes and the records' offsets."""
        mode = rng.random()
        version = 0x0301 if rng.random() < 0.6 else rng.choice(VERSIONS)
        if mode < 0.6 and len(message) <= 16384 and rng.random() < 0.95:  # the common case: one record
            return b"\x16" + version.to_bytes(2, "big") + _vec(2, message), [0]
        fixed = None
        if 0.7 <= mode < 0.95 and rng.random() < 0.7:  # one size for all records
            fixed = rng.choice((1, 2, 3, 4, 5, 50, 100, 255, 1000, rng.randrange(1, 2000)))
            if len(message) > 2048:
                fixed = max(fixed, 100)
        out, starts, pos = bytearray(), [], 0
        while pos < len(message) or not starts:
            if fixed is not None:
                size = fixed
            elif mode < 0.6:
                size = 16384
            elif mode < 0.7:
                size = 1 if len(message) <= 2048 else 64  # tiny records only for ordinary-sized hellos
            elif mode < 0.95:
                size = rng.choice((1, 2, 3, 4, 5, 50, 100, 255, 1000, rng.randrange(1, 2000)))
                if len(message) > 2048:
                    size = max(size, 100)
            else:
                size = rng.choice((16384, 16385, 20000))
            chunk = message[pos : pos + size]
            if mode >= 0.95 and rng.random() < 0.3:
                record_version = rng.choice(VERSIONS)
            else:
                record_version = version
            if rng.random() < 0.01:  # a stray record: alert, change_cipher_spec, data, empty handshake
                stray_type = rng.choice((20, 21, 23, 22, 24, 0))
                starts.append(len(out))
                out += bytes([stray_type]) + record_version.to_bytes(2, "big") + b"\x00\x02\x01\x00"[: 2 + 2 * (stray_type != 22)]
            starts.append(len(out))
            out += b"\x16" + record_version.to_bytes(2, "big") + len(chunk).to_bytes(2, "big") + chunk
            pos += len(chunk)
            if not chunk:
                break
        return bytes(out), starts

    def wire_ops(self, rng: random.Random, wire: bytes, starts: list[int]) -> bytes:
        data = bytearray(wire)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
            op = rng.randrange(9)
            n = len(data)
            if op == 0 and n:  # bit flip
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1:  # insert a byte
                data.insert(rng.randrange(n + 1), rng.choice((0, 0xFF, 0x16, 0x03, 0x80, 0x7F, rng.randrange(256))))
            elif op == 2 and n:  # delete bytes
                i = rng.randrange(n)
                del data[i : i + rng.choice((1, 1, 2, 4, 32))]
            elif op == 3 and n:  # replace a byte
                data[rng.randrange(n)] = rng.choice((0, 0xFF, 0x16, 0x03, 0x80, 0x01, rng.randrange(256)))
            elif op in (4, 5) and starts:  # a record length at a boundary
                s = rng.choice(starts)
                if s + 5 <= n:
                    real = _u(data, s + 3, 2)
                    new = rng.choice((0, 1, 0xFFFF, 16384, 16385, real - 1, real + 1, 0x4001))
                    data[s + 3 : s + 5] = max(0, min(new, 0xFFFF)).to_bytes(2, "big")
            elif op == 6 and n:  # truncate
                del data[rng.randrange(n) :]
            elif op == 7:  # append: application data, another hello, junk
                data += rng.choice((b"\x17\x03\x03\x00\x05hello", bytes(wire[:200]), rng.randbytes(rng.randrange(64))))
            elif op == 8 and n:  # duplicate a chunk in place
                i = rng.randrange(n)
                j = min(n, i + rng.randrange(1, 64))
                data[i:i] = data[i:j]
        return bytes(data)

    def cuts(self, rng: random.Random, wire: bytes, starts: list[int] | None = None) -> list[int]:
        """Offsets at which the bytes are cut into TCP segments (sorted, within 1..len-1)."""
        n = len(wire)
        if n < 2:
            return []
        mode = rng.random()
        if mode < 0.3:
            return []
        if mode < 0.7:
            points = {rng.randrange(1, n) for _ in range(rng.randrange(1, 9))}
        elif mode < 0.75:
            points = set(range(1, n)) if n <= 4096 else set(range(1, n, rng.randrange(1, 64)))
        elif mode < 0.9:
            bounds = starts[1:] if starts and len(starts) > 1 else [5, 9, n // 2]
            points = {b + rng.choice((-1, 0, 1)) for b in bounds[:200]}
            points |= {5 + rng.choice((-1, 0, 1))}
        else:
            points = {rng.randrange(1, min(n, 14))}
        return sorted(p for p in points if 0 < p < n)

    def generate(self, rng: random.Random) -> tuple[bytes, list[int], str]:
        """One input: (wire bytes, TCP cuts, listener variant)."""
        variant = "reject" if rng.random() < 0.125 else "fallback"
        kind, seed = rng.choice(self.seeds)
        if self.recent and rng.random() < 0.2:
            kind, seed = "msg", rng.choice(self.recent)
        if kind == "raw":
            starts = [0]
            wire = seed if rng.random() < 0.3 else self.wire_ops(rng, seed, starts)
            return wire, self.cuts(rng, wire, starts), variant
        message = seed
        roll = rng.random()
        if roll < 0.08:
            pass  # the seed as it is (re-framed, re-cut)
        else:
            if roll < 0.7:
                for _ in range(rng.choice((1, 1, 2, 3))):
                    message = self.structural(rng, message)
                if len(message) < 20000 and split_message(message) is not None:
                    self.recent.append(message)
            if rng.random() < 0.2:
                message = self.length_field(rng, message)
        wire, starts = self.frame(rng, message)
        if roll >= 0.08 and rng.random() < 0.45:
            wire = self.wire_ops(rng, wire, starts)
        return wire, self.cuts(rng, wire, starts), variant

    def mutate_wire(self, rng: random.Random, wire: bytes) -> bytes:
        """For atheris: a structure-aware mutation of arbitrary bytes (re-framed when they parse)."""
        joined = records_of(wire)
        if joined is None or rng.random() < 0.25:
            return self.wire_ops(rng, wire, [0])
        message, used = joined
        if rng.random() < 0.7:
            message = self.structural(rng, message)
        else:
            message = self.length_field(rng, message)
        framed, starts = self.frame(rng, message)
        if rng.random() < 0.3:
            framed = self.wire_ops(rng, framed, starts)
        return framed + wire[used:] if rng.random() < 0.1 else framed


# -- the harness ------------------------------------------------------------------------------


class Finding(Exception):
    pass


class Harness:
    """The real listener on in-memory transports; :meth:`run` checks one input (module docstring)."""

    def __init__(self, hello_timeout: float = 10.0, strict: bool = False) -> None:
        from datetime import datetime, timezone

        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.logger import LogLevel, globalLogPublisher
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        from jobhost.certs import self_signed_certificate
        from jobhost.store.memory import MemoryStore
        from jobhost.store.records import certificate_record
        from jobhost.testing import TestCA
        from jobhost.tls.listener import PLAIN_HTTP_RESPONSE, SNIServerFactory
        from jobhost.tls.sni import CertificateCache
        from jobhost.web.limits import LimitReporter

        global _Transport
        if _Transport is None:
            _Transport = _transport_class()
        self.strict = strict
        self.peer = IPv4Address("TCP", "192.0.2.7", 50123)
        self.clock = Clock()
        ca = TestCA.create("fuzz_hello CA")
        store = MemoryStore()
        for hostname in KNOWN:
            store.put_certificate(certificate_record(hostname, *ca.issue(hostname)))
        self.cache = CertificateCache(store=store, clock=self.clock)
        self.reporter = LimitReporter(self.clock)
        class Ok(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"ok\n"

        self.site = Site(Ok(), reactor=self.clock)
        key_pem, cert_pem = self_signed_certificate("fallback.jobhost.invalid", datetime.now(timezone.utc))
        common = dict(hello_timeout=hello_timeout, reporter=self.reporter)
        self.factories = {
            "fallback": SNIServerFactory.create(self.site, self.cache, self.clock, key_pem, cert_pem, **common),
            "reject": SNIServerFactory.create(self.site, self.cache, self.clock, reject_unknown=True, **common),
        }
        for factory in self.factories.values():
            factory.doStart()
        self.plain_http_response = PLAIN_HTTP_RESPONSE
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        from jobhost.errors import InvalidHostname
        from jobhost.hostnames import normalise_hostname
        from jobhost.tls.clienthello import ClientHello, NeedMore, parse_client_hello

        self._parser = ClientHello, NeedMore, parse_client_hello
        self._hostnames = InvalidHostname, normalise_hostname
        self._lost = Failure(ConnectionDone("fuzz: connection closed"))
        self.outcomes: Counter = Counter()
        self.notes: Counter = Counter()
        self.warnings: Counter = Counter()
        self._error = LogLevel.error
        self._warn = LogLevel.warn
        self._events: list = []
        self._observer = self._observe
        globalLogPublisher.addObserver(self._observer)

    def close(self) -> None:
        from twisted.logger import globalLogPublisher

        globalLogPublisher.removeObserver(self._observer)
        for factory in self.factories.values():
            factory.doStop()

    def _observe(self, event: dict) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= self._error):
            self._events.append(event)
        elif level is self._warn:
            self.warnings[event.get("log_namespace", "?")] += 1

    def expected(self, wire: bytes, variant: str) -> str:
        """What the listener should do with ``wire``, judged from one parse of all of it."""
        ClientHello, NeedMore, parse_client_hello = self._parser
        InvalidHostname, normalise_hostname = self._hostnames
        factory = self.factories[variant]
        verdict = parse_client_hello(wire, factory.max_hello_bytes)
        if isinstance(verdict, NeedMore):
            return "timeout"
        if not isinstance(verdict, ClientHello):
            return "not_tls"
        if verdict.alpn and factory.policy.alpn_refused(verdict.alpn):
            return "alpn_refused"
        unknown = "rejected" if factory.reject_unknown else "fallback"
        if verdict.server_name is None:
            return unknown
        try:
            return "served" if normalise_hostname(verdict.server_name) in KNOWN else unknown
        except InvalidHostname:
            return unknown

    def run(self, wire: bytes, cuts: list[int], variant: str = "fallback") -> tuple[str, list[dict]]:
        """Feed one input; returns (outcome, findings), each finding a dict with kind and detail."""
        factory = self.factories[variant]
        before = [getattr(factory, name) for name in OUTCOMES]
        findings: list[dict] = []
        events = self._events
        events.clear()
        transport = _Transport(peerAddress=self.peer)
        hold = None
        stage = "buildProtocol"
        try:
            hold = factory.buildProtocol(self.peer)
            stage = "makeConnection"
            hold.makeConnection(transport)
            previous = 0
            for cut in [*cuts, len(wire)]:
                if cut > previous:
                    stage = f"dataReceived[{previous}:{cut}]"
                    hold.dataReceived(wire[previous:cut])
                    previous = cut
            stage = "clock.advance past the hello deadline"
            self.clock.advance(factory.hello_timeout + factory.held.granularity)
        except Exception:  # noqa: BLE001 - that is the finding
            findings.append({"kind": "exception", "stage": stage, "detail": traceback.format_exc()})
        changed = [name for name, was in zip(OUTCOMES, before) if getattr(factory, name) != was]
        outcome = changed[0] if len(changed) == 1 else ("+".join(changed) or "none")
        self.outcomes[outcome] += 1
        handed_over = outcome in ("served", "fallback")
        if hold is not None and not handed_over and not transport.disconnecting:
            findings.append({"kind": "open_past_deadline", "stage": "after the deadline",
                             "detail": f"outcome {outcome}, connection neither closed nor handed over"})
        if len(changed) > 1:
            findings.append({"kind": "outcome", "stage": "counters", "detail": f"several outcomes: {changed}"})
        if hold is not None:
            try:
                hold.connectionLost(self._lost)
            except Exception:  # noqa: BLE001
                findings.append({"kind": "exception", "stage": "connectionLost", "detail": traceback.format_exc()})
            if hold in factory.connections or hold in factory.held:
                findings.append({"kind": "leak", "stage": "after connectionLost",
                                 "detail": f"in connections: {hold in factory.connections}, "
                                           f"held: {hold in factory.held}"})
                factory.connections.discard(hold)
                factory.held.discard(hold)
        try:
            expected = self.expected(wire, variant)
        except Exception:  # noqa: BLE001
            findings.append({"kind": "parser_exception", "stage": "parse_client_hello(whole input)",
                             "detail": traceback.format_exc()})
            expected = None
        if expected is not None and outcome != expected and not findings:
            finding = {"kind": "disagreement", "stage": "outcome",
                       "detail": f"listener: {outcome}; parse of the whole input: {expected}"}
            if (outcome, expected) == ("timeout", "not_tls") and not self.strict:
                # Held until the deadline although its bytes were already known not to be a
                # hello: the deadline still closed it (a note; a finding with --strict).
                finding.update(kind="closed_at_deadline_not_at_once", note=True)
            findings.append(finding)
        if expected == "not_tls" and outcome == "not_tls":
            if transport.value() == self.plain_http_response:
                self.notes["plain_http_answered_400"] += 1
            elif self._looks_http(wire):
                # An HTTP request whose first segment is too short for the request-line check.
                self.notes["plain_http_closed_without_400"] += 1
        for event in events:
            from twisted.logger import formatEvent

            failure = event.get("log_failure")
            detail = formatEvent(event)
            if failure is not None:
                detail += "\n" + failure.getTraceback()
            findings.append({"kind": "log", "stage": str(event.get("log_namespace")), "detail": detail})
        events.clear()
        return outcome, findings

    @staticmethod
    def _looks_http(wire: bytes) -> bool:
        from jobhost.tls.clienthello import parse_client_hello

        result = parse_client_hello(wire)
        return bool(getattr(result, "http", False))

    def sample(self) -> dict:
        gc.collect()
        return {
            "rss_kib": rss_kib(),
            "gc_objects": len(gc.get_objects()),
            "clock_calls": len(self.clock.getDelayedCalls()),
            "cache_entries": self.cache.size,
            "open_connections": sum(len(f.connections) for f in self.factories.values()),
            "held": sum(len(f.held) for f in self.factories.values()),
        }


def _transport_class():
    from twisted.internet.testing import StringTransport

    class Transport(StringTransport):
        """A StringTransport the TLS layer can use (TLSMemoryBIOProtocol calls these)."""

        def setTcpNoDelay(self, enabled):
            pass

        def getTcpNoDelay(self):
            return True

    return Transport


_Transport = None  # made on first use (keeps Twisted out of the import, for atheris)


# -- running ----------------------------------------------------------------------------------


class Run:
    """Counts, findings and memory samples of one fuzzing run."""

    def __init__(self, harness: Harness, findings_dir: Path | None, max_saved: int = 100) -> None:
        self.harness = harness
        self.findings_dir = findings_dir
        self.max_saved = max_saved
        self.inputs = 0
        self.bytes = 0
        self.segments = 0
        self.findings: Counter = Counter()
        self.examples: list[dict] = []
        self.noted: Counter = Counter()  # disagreements that are not findings (without --strict)
        self.note_examples: list[dict] = []
        self.saved = 0
        self.samples: list[dict] = []
        self.started = time.monotonic()
        self._signatures: Counter = Counter()

    def one(self, wire: bytes, cuts: list[int], variant: str, origin: str = "") -> list[dict]:
        outcome, findings = self.harness.run(wire, cuts, variant)
        self.inputs += 1
        self.bytes += len(wire)
        self.segments += len(cuts) + 1
        for finding in findings:
            self.record(finding, wire, cuts, variant, origin)
        return findings

    def record(self, finding: dict, wire: bytes, cuts: list[int], variant: str, origin: str) -> None:
        (self.noted if finding.get("note") else self.findings)[finding["kind"]] += 1
        last_line = finding["detail"].strip().splitlines()[-1] if finding["detail"].strip() else ""
        signature = (finding["kind"], finding["stage"].split("[")[0], last_line)
        self._signatures[signature] += 1
        if self._signatures[signature] > 3:
            return
        entry = dict(finding, input_number=self.inputs, variant=variant, cuts=cuts, length=len(wire),
                     origin=origin, hex_head=wire[:64].hex())
        if self.findings_dir is not None and self.saved < self.max_saved:
            self.findings_dir.mkdir(parents=True, exist_ok=True)
            name = f"{finding['kind']}-{hashlib.sha1(wire + repr(cuts).encode()).hexdigest()[:12]}"
            (self.findings_dir / f"{name}.bin").write_bytes(wire)
            (self.findings_dir / f"{name}.json").write_text(json.dumps(dict(entry, detail=finding["detail"]), indent=1))
            entry["file"] = str(self.findings_dir / f"{name}.bin")
            self.saved += 1
        examples = self.note_examples if finding.get("note") else self.examples
        if len(examples) < 20:
            examples.append(entry)

    def sample(self) -> None:
        self.samples.append(dict(self.harness.sample(), inputs=self.inputs,
                                 seconds=round(time.monotonic() - self.started, 2)))

    def report(self, extra: dict | None = None) -> dict:
        elapsed = time.monotonic() - self.started
        memory = memory_verdict(self.samples)
        findings = dict(self.findings)
        if memory.get("flat") is False:
            findings["memory_growth"] = 1
        return {
            "inputs": self.inputs,
            "seconds": round(elapsed, 1),
            "inputs_per_second": round(self.inputs / elapsed, 1) if elapsed else None,
            "bytes": self.bytes,
            "tcp_segments": self.segments,
            "outcomes": dict(self.harness.outcomes),
            "handed_over": self.harness.outcomes["served"] + self.harness.outcomes["fallback"],
            "notes": dict(self.harness.notes, **self.noted),
            "note_examples": self.note_examples,
            "warnings_by_namespace": dict(self.harness.warnings),
            "findings": findings,
            "finding_examples": self.examples,
            "memory": {"verdict": memory, "first": self.samples[:3], "last": self.samples[-3:],
                       "series": self.samples},
            **(extra or {}),
        }


def setup(hello_timeout: float = 10.0, strict: bool = False) -> Harness:
    return Harness(hello_timeout=hello_timeout, strict=strict)


def fuzz(inputs: int, seed: int, findings_dir: Path | None = None, sample_every: int | None = None,
         harness: Harness | None = None, max_seconds: float | None = None, progress=None,
         strict: bool = False) -> dict:
    """The built-in engine: ``inputs`` generated inputs from ``seed``; returns the report."""
    own = harness is None
    harness = harness or setup(strict=strict)
    try:
        rng = random.Random(seed)
        mutator = Mutator(make_seeds())
        run = Run(harness, findings_dir)
        every = sample_every or max(500, inputs // 40)
        run.sample()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        for i in range(inputs):
            wire, cuts, variant = mutator.generate(rng)
            run.one(wire, cuts, variant, origin=f"seed {seed} input {i}")
            if (i + 1) % every == 0:
                run.sample()
                if progress is not None:
                    progress(run)
                if deadline is not None and time.monotonic() > deadline:
                    break
        if run.inputs % every:
            run.sample()
        return run.report({"engine": "builtin", "seed": seed, "sample_every": every})
    finally:
        if own:
            harness.close()


def _progress(run: Run) -> None:
    s = run.samples[-1]
    rate = run.inputs / max(1e-9, time.monotonic() - run.started)
    print(f"  {run.inputs} inputs, {rate:.0f}/s, rss {s['rss_kib']} KiB, gc objects {s['gc_objects']}, "
          f"findings {sum(run.findings.values())}", file=sys.stderr, flush=True)


def print_report(report: dict) -> None:
    print(f"{report['inputs']} inputs in {report['seconds']} s ({report['inputs_per_second']} inputs/s), "
          f"{report['bytes']} bytes in {report['tcp_segments']} TCP segments")
    o = report["outcomes"]
    print(f"  handed over {report['handed_over']} (served {o.get('served', 0)}, fallback {o.get('fallback', 0)}), "
          f"rejected {o.get('rejected', 0)}, closed as not TLS {o.get('not_tls', 0)}, "
          f"timed out {o.get('timeout', 0)}, ALPN refused {o.get('alpn_refused', 0)}"
          + "".join(f", {k} {v}" for k, v in o.items() if k not in OUTCOMES))
    if report["notes"]:
        print(f"  notes (not findings): {report['notes']}")
        for example in report["note_examples"][:3]:
            print(f"    {example['kind']}: input {example['input_number']}, {example['length']} bytes "
                  f"{example['hex_head'][:40]}..., cuts {example['cuts'][:10]} {example.get('file', '')}")
    mem = report["memory"]
    first, last = (mem["series"][0], mem["series"][-1]) if mem["series"] else ({}, {})
    print(f"  memory: rss first {first.get('rss_kib')} KiB, last {last.get('rss_kib')} KiB; "
          f"gc objects first {first.get('gc_objects')}, last {last.get('gc_objects')}; "
          f"flat: {mem['verdict'].get('flat')} ({mem['verdict'].get('rule')})")
    print("  rss series (KiB): " + " ".join(str(s["rss_kib"]) for s in mem["series"]))
    if report["findings"]:
        print(f"FINDINGS: {report['findings']}")
        for example in report["finding_examples"]:
            print(f"--- {example['kind']} at {example['stage']} (input {example['input_number']}, "
                  f"{example['variant']}, {example['length']} bytes, cuts {example['cuts'][:20]}) "
                  f"{example.get('file', '')}\n{example['detail'].rstrip()}")
    else:
        print("  no findings")


def replay(path: Path, strict: bool = False) -> int:
    harness = setup(strict=strict)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    wire = path.read_bytes()
    outcome, findings = harness.run(wire, meta.get("cuts", []), meta.get("variant", "fallback"))
    print(f"{path}: {len(wire)} bytes, cuts {meta.get('cuts', [])}, variant {meta.get('variant', 'fallback')}: "
          f"outcome {outcome}")
    for finding in findings:
        print(f"--- {finding['kind']} at {finding['stage']}\n{finding['detail'].rstrip()}")
    harness.close()
    return 1 if any(not f.get("note") for f in findings) else 0


def run_atheris(args, rest: list[str]) -> int:
    import tempfile

    import atheris

    import importlib

    with atheris.instrument_imports(include=["jobhost"]):  # before anything else imports them
        for module in ("jobhost.tls.clienthello", "jobhost.tls.listener", "jobhost.tls.sni", "jobhost.hostnames"):
            importlib.import_module(module)
    harness = setup(strict=args.strict)
    mutator = Mutator(make_seeds())
    run = Run(harness, Path(args.findings) if args.findings else None)
    every = args.sample_every or 20000
    runs = next((int(a.split("=", 1)[1]) for a in rest if a.startswith("-runs=")), -1)
    done: list[bool] = []
    run.sample()

    def test_one(data: bytes) -> None:
        rng = random.Random(zlib.crc32(data))
        variant = "reject" if rng.random() < 0.125 else "fallback"
        cuts = mutator.cuts(rng, data, None)
        findings = run.one(data, cuts, variant, origin="atheris")
        if run.inputs % every == 0:
            run.sample()
            _progress(run)
        if run.inputs == runs:  # libFuzzer exits without running Python's atexit handlers
            finish()
        findings = [f for f in findings if not f.get("note")]
        if findings:
            print_report(run.report({"engine": "atheris"}))
            raise Finding(f"{findings[0]['kind']} at {findings[0]['stage']}: {findings[0]['detail'][-2000:]}")

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return mutator.mutate_wire(rng, data)[:max_size]

    def finish() -> None:
        if done:
            return
        done.append(True)
        run.sample()
        report = run.report({"engine": "atheris", "libfuzzer_args": rest})
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_report(report)
        sys.stdout.flush()

    import atexit

    atexit.register(finish)
    corpus = [a for a in rest if not a.startswith("-")]
    if not corpus:
        seed_dir = tempfile.mkdtemp(prefix="fuzz_hello_corpus_")
        for i, (kind, seed) in enumerate(make_seeds()):
            if kind == "raw":
                (Path(seed_dir) / f"seed-{i}").write_bytes(seed)
            else:
                (Path(seed_dir) / f"seed-{i}").write_bytes(mutator.frame(random.Random(i), seed)[0])
        rest = [*rest, seed_dir]
    if not any(a.startswith("-max_len=") for a in rest):
        rest = ["-max_len=20000", *rest]
    atheris.Setup([sys.argv[0], *rest], test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100000, help="inputs to run (built-in engine)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the built-in engine")
    parser.add_argument("--atheris", action="store_true",
                        help="libFuzzer via atheris; unknown flags (-runs=N, corpus dirs) go to libFuzzer")
    parser.add_argument("--findings", metavar="DIR", help="save each finding's input (.bin) and details (.json)")
    parser.add_argument("--sample-every", type=int, help="inputs between memory samples (default inputs/40)")
    parser.add_argument("--max-seconds", type=float, help="stop early after this long (built-in engine)")
    parser.add_argument("--replay", metavar="FILE", help="run one saved input (FILE.bin, cuts from FILE.json)")
    parser.add_argument("--progress", action="store_true", help="a line on stderr at each memory sample")
    parser.add_argument("--strict", action="store_true",
                        help="count a connection closed at its deadline although its bytes were already "
                             "known not to be TLS as a finding (a note by default)")
    parser.add_argument("--json", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.replay:
        return replay(Path(args.replay), args.strict)
    if args.atheris:
        return run_atheris(args, rest)
    if rest:
        parser.error(f"unknown arguments {rest} (libFuzzer flags need --atheris)")
    from twisted.logger import globalLogBeginner

    # No log files, and no history buffer of every event: the harness's own observer sees them.
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    report = fuzz(args.inputs, args.seed, Path(args.findings) if args.findings else None, args.sample_every,
                  max_seconds=args.max_seconds, progress=_progress if args.progress else None, strict=args.strict)
    try:
        from _harness import machine

        report["machine"] = machine()
    except Exception as e:  # noqa: BLE001 - a fact to report
        report["machine"] = {"error": str(e)}
    report["command"] = " ".join(["python", "bench/fuzz_hello.py", *(argv if argv is not None else sys.argv[1:])])
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
