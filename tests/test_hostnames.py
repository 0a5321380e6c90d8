"""Tests for jobhost.hostnames: one normal form, and a reason for every refusal."""

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobhost.errors import InvalidHostname
from jobhost.hostnames import normalise_hostname, parse_resolver, to_unicode

label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=20).filter(
    lambda s: not s.isdigit()
)
# The last label may not read as a number: inet_aton takes "a.7" and "a.0x1f" as addresses, and
# normalise_hostname rightly refuses them (see test_refuses).
hostnames = st.lists(label, min_size=2, max_size=5).map(".".join).filter(
    lambda h: not re.fullmatch(r"[0-9]+|0x[0-9a-f]*", h.rsplit(".", 1)[-1])
    and "localhost" not in h.split(".")[-1:]
)


@pytest.mark.parametrize(
    "given_name, expected",
    [
        ("jobs.acme-corp.com", "jobs.acme-corp.com"),
        ("JOBS.Acme-Corp.COM", "jobs.acme-corp.com"),
        ("jobs.acme-corp.com.", "jobs.acme-corp.com"),
        ("  jobs.acme-corp.com ", "jobs.acme-corp.com"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
        ("ｊｏｂｓ.example", "jobs.example"),  # UTS 46 maps full-width letters
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalises(given_name, expected):
    """Accepted names come out as lower-case A-labels without a trailing dot."""
    assert normalise_hostname(given_name) == expected


@pytest.mark.parametrize(
    "bad, reason_part",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1.2.3.4", "IP address"),
        ("::1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("127.1", "IP address"),
        ("a.0x", "IP address"),  # inet_aton reads a hex last label as a number
        ("jobs.0x1f", "IP address"),
        ("*.acme-corp.com", "wildcard"),
        ("localhost", "localhost"),
        ("foo.localhost", "localhost"),
        ("a..b.com", "empty label"),
        (".a.com", "empty label"),
        ("a.com..", "empty label"),
        ("../x", "not allowed"),
        ("../../etc/passwd", "not allowed"),
        ("a/b.com", "not allowed"),
        ("a\\b.com", "not allowed"),
        ("a b.com", "not allowed"),
        ("a\x00.com", "not allowed"),
        ("host.com:443", "not allowed"),
        ("a" * 64 + ".com", "63 octets"),
        (".".join(["a" * 60] * 5), "253 octets"),
        ("x" * 300, "octets"),
        ("com", "single label"),
        ("under_score.com", "letters, digits"),
        ("-lead.com", "letters, digits"),
        ("trail-.com", "letters, digits"),
        ("xn--invalid-punycode-.com", "IDNA"),
        (b"\xff.com", "ASCII"),
        (42, "text"),
        (None, "text"),
    ],
)
def test_refuses_with_reason(bad, reason_part):
    """Every refused input raises InvalidHostname whose reason names the cause."""
    with pytest.raises(InvalidHostname) as info:
        normalise_hostname(bad)
    assert reason_part.lower() in info.value.reason.lower()
    assert reason_part.lower() in str(info.value).lower()


@given(hostnames)
def test_idempotent(name):
    """Normalising a normalised name gives it back unchanged."""
    once = normalise_hostname(name)
    assert normalise_hostname(once) == once


@given(hostnames)
def test_case_and_trailing_dot_insensitive(name):
    """Upper case and a trailing dot name the same hostname."""
    assert normalise_hostname(name.upper() + ".") == normalise_hostname(name)


@given(st.text(max_size=300))
def test_arbitrary_text_normalises_or_refuses(text):
    """Any text either normalises to a safe LDH name or raises InvalidHostname, nothing else."""
    try:
        result = normalise_hostname(text)
    except InvalidHostname:
        return
    assert len(result) <= 253
    assert set(result) <= set(string.ascii_lowercase + string.digits + "-.")
    assert ".." not in result and not result.startswith(".") and not result.endswith(".")
    assert "/" not in result and "\\" not in result


@given(st.text(alphabet="abcü日本-.", min_size=1, max_size=40))
def test_unicode_round_trip(text):
    """A unicode name that normalises has a U-label form that normalises back to it."""
    try:
        result = normalise_hostname(text)
    except InvalidHostname:
        return
    assert normalise_hostname(to_unicode(result)) == result


@pytest.mark.parametrize(
    "text, server",
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        (" 192.0.2.53:53\n", ("192.0.2.53", 53)),
        ("[2001:DB8::53]:5353", ("2001:db8::53", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
        ("::1:53", ("::1:53", 53)),
    ],
)
def test_parse_resolver(text, server):
    """IPv4:port, [IPv6]:port and bare addresses parse to a canonical (ip, port); port 53 by default."""
    assert parse_resolver(text) == server


@pytest.mark.parametrize(
    "text", ["dns.google", "dns.google:53", "[192.0.2.53]:53", "192.0.2.53:0", "192.0.2.53:65536", "[::1",
             "[::1]:", "192.0.2.53:+53", "192.0.2.53:\u0665\u0663", "", "1.2.3.4:53:53"]
)
def test_parse_resolver_refuses(text):
    """Names, IPv4 in brackets, bad ports and broken brackets raise ValueError saying what is expected."""
    with pytest.raises(ValueError, match='expected "IP:port"'):
        parse_resolver(text)
