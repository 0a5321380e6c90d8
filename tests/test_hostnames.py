"""Tests for jobhost.hostnames: one normal form, and a reason for every refusal."""

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobhost.errors import InvalidHostname
from jobhost.hostnames import is_normalised_hostname, normalise_hostname, parse_resolver, to_unicode

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
        # UTS 46 reads ideographic and full-width full stops as dots, a trailing one too
        ("Bücher.Example\u3002", "xn--bcher-kva.example"),
        ("jobs\u3002example\uff0e", "jobs.example"),
        ("jobs.example\uff61", "jobs.example"),
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
        # one number is an IPv4 address to inet_aton (and browsers): not "a single label"
        ("2130706433", "IP address"),
        ("0X7F000001", "IP address"),
        ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "IP address"),  # full-width digits map to 127.0.0.1
        ("*.acme-corp.com", "wildcard"),
        ("localhost", "localhost"),
        ("foo.localhost", "localhost"),
        ("a..b.com", "empty label"),
        (".a.com", "empty label"),
        ("a.com..", "empty label"),
        ("a.com.\u3002", "empty label"),
        ("bücher..com", "empty label"),
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


# 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 octets, the most a hostname may have
LONGEST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


def test_name_of_exactly_253_octets_is_accepted_with_or_without_trailing_dot():
    """253 octets is the longest hostname; its absolute form with the trailing dot is 254 characters."""
    assert len(LONGEST) == 253
    assert normalise_hostname(LONGEST) == LONGEST
    assert normalise_hostname(LONGEST.upper() + ".") == LONGEST


def test_name_of_254_octets_is_refused():
    """One octet more than 253 is refused as too long."""
    with pytest.raises(InvalidHostname, match="longer than 253 octets"):
        normalise_hostname(LONGEST + "d")


def test_name_over_253_octets_only_as_a_labels_is_refused():
    """The limit applies to the A-label form: a unicode name shorter than 253 characters can exceed it."""
    label = "日本語ドメイン名例" * 2  # 18 characters, 50 octets as an A-label
    unicode_name = ".".join([label] * 5 + ["com"])  # 98 characters, 258 octets
    assert len(unicode_name) < 253
    with pytest.raises(InvalidHostname, match="(?i)too long|longer than 253 octets"):
        normalise_hostname(unicode_name)


def test_overlong_label_is_quoted_by_its_first_20_characters():
    """The refusal of a label over 63 octets names the label by its beginning, not all of it."""
    label = "abcdefghijklmnopqrstuvwxyz" * 3
    with pytest.raises(InvalidHostname) as info:
        normalise_hostname(label + ".com")
    assert info.value.reason == "label 'abcdefghijklmnopqrst'... is longer than 63 octets"


@pytest.mark.parametrize("blank", ["", "   ", " \t\r\n"])
def test_blank_input_is_refused_as_empty(blank):
    """Nothing but white space is refused as empty, not as some malformed name."""
    with pytest.raises(InvalidHostname) as info:
        normalise_hostname(blank)
    assert info.value.reason == "empty"


def padded(length: int) -> str:
    """jobs.example.com padded to ``length`` characters with soft hyphens, which UTS 46 maps to nothing."""
    return "jobs" + "\u00ad" * (length - len("jobs.example.com")) + ".example.com"


def test_input_of_1024_characters_is_still_read():
    """Up to 1024 characters (after surrounding white space) are read, whatever they map to."""
    assert len(padded(1024)) == 1024
    assert normalise_hostname(padded(1024)) == "jobs.example.com"
    assert normalise_hostname("  " + padded(1024) + "\n") == "jobs.example.com"


def test_input_over_1024_characters_is_refused_before_it_is_read():
    """Longer input is refused as too long without mapping it, even if it would map to a short name."""
    with pytest.raises(InvalidHostname, match="longer than 253 octets"):
        normalise_hostname(padded(1025))
    with pytest.raises(InvalidHostname, match="longer than 253 octets"):
        normalise_hostname("*." * 600 + "com")


def test_refusal_of_huge_input_quotes_only_its_first_300_characters():
    """The refusal carries the start of the input, not all of it, into logs and API responses."""
    huge = "x" * 100_000
    with pytest.raises(InvalidHostname) as info:
        normalise_hostname(huge)
    assert info.value.value == "x" * 300


@pytest.mark.parametrize(
    "value, expected",
    [
        ("jobs.acme-corp.com", True),
        ("xn--bcher-kva.example", True),
        ("Jobs.acme-corp.com", False),
        ("jobs.acme-corp.com.", False),
        (" jobs.acme-corp.com", False),
        ("bücher.example", False),
        ("1.2.3.4", False),
        ("localhost", False),
        (b"jobs.acme-corp.com", False),
        (None, False),
    ],
)
def test_only_the_normal_form_counts_as_normalised(value, expected):
    """is_normalised_hostname is True only for text normalise_hostname gives back unchanged."""
    assert is_normalised_hostname(value) is expected


def test_display_form_is_unicode_or_the_name_as_stored():
    """to_unicode shows the U-label form, and a name it cannot decode as it is, without raising."""
    assert to_unicode("xn--bcher-kva.example") == "bücher.example"
    assert to_unicode("jobs.acme-corp.com") == "jobs.acme-corp.com"
    assert to_unicode("xn--invalid-punycode-.com") == "xn--invalid-punycode-.com"


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
        ("192.0.2.53:1", ("192.0.2.53", 1)),
        ("[2001:db8::53]:65535", ("2001:db8::53", 65535)),
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


@pytest.mark.parametrize("value", [None, 8.8, b"192.0.2.53"])
def test_parse_resolver_refuses_what_is_not_text(value):
    """A resolver that is not text (a TOML number, bytes) raises ValueError, not TypeError."""
    with pytest.raises(ValueError, match='expected "IP:port"'):
        parse_resolver(value)
