"""Tests for jobhost.caa: parsing CAA RDATA and issue values, and whether a relevant RRset lets us issue.

The DNS side (which RRset is relevant, CNAMEs, failures) and the words the customer reads are
tested in tests/test_preflight.py; here the records come from real DNS wire format parsed by
twisted.names, or are built with the module's own types.
"""

import struct

import pytest
from twisted.names import dns

from jobhost.caa import (
    CAA,
    CaaDecision,
    CaaRecord,
    IssueValue,
    decide_caa,
    issue_refusal,
    parse_caa_record,
    parse_issue_value,
    quote_caa_value,
)

OWNER = "acme-corp.com"
OURS = ["letsencrypt.org"]
ACCOUNT = "https://acme-v02.api.letsencrypt.org/acme/acct/1234"


def rdata(flags: int, tag: bytes, value: bytes) -> bytes:
    """CAA RDATA as RFC 8659 section 4.1 lays it out: flags, tag length, tag, value."""
    return struct.pack("!BB", flags, len(tag)) + tag + value


def answer_from_the_wire(*records: bytes) -> dns.Message:
    """A DNS response for ``OWNER`` CAA with ``records`` as RDATA, encoded by hand and parsed by twisted."""
    name = b"".join(bytes([len(label)]) + label.encode() for label in OWNER.split(".")) + b"\x00"
    wire = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, len(records), 0, 0)
    wire += name + struct.pack("!HH", 257, 1)  # question: OWNER, type CAA (257), class IN
    for data in records:  # each answer names the question's owner by a pointer to offset 12
        wire += struct.pack("!HHHIH", 0xC00C, 257, 1, 300, len(data)) + data
    message = dns.Message()
    message.fromStr(wire)
    return message


def record(raw: bytes):
    """One CAA answer, as twisted.names hands it over (an RRHeader around an UnknownRecord)."""
    (rr,) = answer_from_the_wire(raw).answers
    return rr


def issue(value: str, flags: int = 0) -> CaaRecord:
    return CaaRecord(OWNER, flags, "issue", value)


# -- RDATA ---------------------------------------------------------------------------------------


def test_caa_answer_from_the_wire_is_found_by_its_type_and_parsed():
    """A CAA answer as a DNS server sends it (type 257) is picked out by type and parsed into its parts."""
    message = answer_from_the_wire(rdata(0, b"issue", b"letsencrypt.org"), rdata(128, b"iodef", b"mailto:x@y"))
    caa = [rr for rr in message.answers if rr.type == CAA]
    assert [parse_caa_record(OWNER, rr) for rr in caa] == [
        CaaRecord(OWNER, 0, "issue", "letsencrypt.org"),
        CaaRecord(OWNER, 128, "iodef", "mailto:x@y"),
    ]


def test_tag_is_read_without_regard_to_case():
    """The property tag is case-insensitive; the value keeps its case."""
    assert parse_caa_record(OWNER, record(rdata(0, b"IsSuE", b"LetsEncrypt.org"))) == CaaRecord(
        OWNER, 0, "issue", "LetsEncrypt.org"
    )


def test_value_may_be_empty_and_tag_up_to_15_characters():
    """The shortest well-formed RDATA has a one-letter tag and no value; a tag may have 15 characters."""
    assert parse_caa_record(OWNER, record(b"\x00\x01a")) == CaaRecord(OWNER, 0, "a", "")
    assert parse_caa_record(OWNER, record(rdata(0, b"x" * 15, b"v"))).tag == "x" * 15


def test_value_octets_outside_ascii_are_kept_one_character_each():
    """The value is read octet by octet (Latin-1): no octet makes the record unreadable."""
    parsed = parse_caa_record(OWNER, record(rdata(0, b"issue", b"ca.example; note=\xff\x00")))
    assert parsed.value == "ca.example; note=\xff\x00"


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # nothing
        b"\x00",  # flags only
        b"\x00\x00",  # a tag of length 0
        b"\x00\x00issue",  # a tag of length 0, then what would be the value
        b"\x00\x09iss",  # a tag length past the end
        rdata(0, b"x" * 16, b"v"),  # a tag over 15 characters
        rdata(0, b"is-sue", b"v"),  # a tag with a character other than a letter or digit
        rdata(0, b"iss\xfc", b"v"),  # a tag with a letter outside ASCII
    ],
    ids=["empty", "flags-only", "empty-tag", "empty-tag-with-value", "tag-past-end", "tag-too-long",
         "tag-hyphen", "tag-non-ascii"],
)
def test_malformed_rdata_is_none(raw):
    """RDATA that is not flags, tag length, a 1-15 character alphanumeric tag and a value parses to None."""
    assert parse_caa_record(OWNER, record(raw)) is None


def test_answer_without_raw_rdata_is_none():
    """A record twisted.names decoded as some other type (no raw RDATA) parses to None, not an error."""
    rr = dns.RRHeader(name=OWNER, type=dns.A, payload=dns.Record_A("192.0.2.1"))
    assert parse_caa_record(OWNER, rr) is None
    assert parse_caa_record(OWNER, object()) is None


@pytest.mark.parametrize("flags, critical", [(0, False), (128, True), (1, True), (129, True), (2, False),
                                             (64, False), (254, True), (126, False)])
def test_critical_flag_is_bit_128_or_bit_1(flags, critical):
    """Bit 128 is the critical flag; bit 1, a common misreading of it, counts too; other bits do not."""
    assert CaaRecord(OWNER, flags, "tbs", "x").critical is critical


# -- presentation --------------------------------------------------------------------------------


def test_value_is_quoted_as_a_zone_file_string():
    """Quotes and backslashes are escaped, printable ASCII kept (space and tilde too), the rest as \\DDD."""
    assert quote_caa_value('say "hi" \\ ~ok') == '"say \\"hi\\" \\\\ ~ok"'
    assert quote_caa_value("a\x00b\x1f\x7f\xe9") == '"a\\000b\\031\\127\\233"'
    assert quote_caa_value("") == '""'


def test_presentation_is_the_record_as_a_zone_file_line():
    """A record reads as it would be written in a zone file."""
    assert CaaRecord(OWNER, 128, "tbs", 'x "y"').presentation() == 'acme-corp.com CAA 128 tbs "x \\"y\\""'


# -- issue values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, issuer, parameters",
    [
        ("letsencrypt.org", "letsencrypt.org", {}),
        ("  LetsEncrypt.ORG\t", "letsencrypt.org", {}),
        (";", "", {}),
        ("letsencrypt.org;", "letsencrypt.org", {}),
        ("letsencrypt.org ; \t", "letsencrypt.org", {}),
        ("letsencrypt.org; validationmethods=http-01", "letsencrypt.org", {"validationmethods": "http-01"}),
        ("letsencrypt.org ;  validationmethods =\thttp-01 ", "letsencrypt.org", {"validationmethods": "http-01"}),
        ("letsencrypt.org; a=1; b=", "letsencrypt.org", {"a": "1", "b": ""}),
        ("letsencrypt.org; AccountURI=https://ca/acct/1", "letsencrypt.org", {"accounturi": "https://ca/acct/1"}),
        ("letsencrypt.org; a=first; A=second", "letsencrypt.org", {"a": "first"}),
        ("letsencrypt.org; policy=x=y", "letsencrypt.org", {"policy": "x=y"}),
    ],
)
def test_issue_value_parses_into_issuer_and_parameters(value, issuer, parameters):
    """The issuer and parameter tags come out lower case, white space around them ignored; the first
    of a repeated tag wins; a value may contain "=" or be empty."""
    assert parse_issue_value(value) == IssueValue(issuer, parameters)


@pytest.mark.parametrize(
    "value",
    [
        "letsencrypt.org; accounturi",  # a parameter without "="
        "letsencrypt.org; =x",  # a parameter without a tag
        "letsencrypt.org; -a=x",  # a tag starting with a hyphen
        "letsencrypt.org; a_b=x",  # a tag with an underscore
        "letsencrypt.org; validationmethods=dns-01, http-01",  # white space inside a value
        "letsencrypt.org; a=\x7f",  # a value with a control character
        "letsencrypt.org; validationmethods=http-01;",  # an empty parameter at the end
        "letsencrypt.org;; validationmethods=dns-01",  # an empty parameter in between
        "letsencrypt.org; ; validationmethods=dns-01",
        "lets encrypt.org",  # an issuer that is not a domain name
        "letsencrypt.org.",
        "-letsencrypt.org",
    ],
)
def test_issue_value_off_the_grammar_is_malformed(value):
    """Anything outside RFC 8659's issue-value grammar is malformed, and so allows nobody."""
    assert parse_issue_value(value) is None
    assert issue_refusal(issue(value), OURS, None) == "is malformed"


# -- issue records -------------------------------------------------------------------------------


def test_issue_naming_our_ca_allows_us():
    """An issue property naming our CA (any case), without parameters against us, allows us."""
    assert issue_refusal(issue("letsencrypt.org"), OURS, ACCOUNT) is None
    assert issue_refusal(issue("LETSENCRYPT.org; policy=ev"), OURS, ACCOUNT) is None
    assert issue_refusal(issue("pki.goog"), ["letsencrypt.org", "pki.goog"], None) is None


@pytest.mark.parametrize("issuer", ["encrypt.org", "letsencrypt.org.example", "www.letsencrypt.org", "letsencrypt"])
def test_issuer_must_be_one_of_ours_exactly(issuer):
    """The issuer domain must equal one of our CA identifiers: no parent, child, prefix or suffix of it."""
    assert issue_refusal(issue(issuer), OURS, None) == f"allows only {issuer}"


def test_issue_naming_no_ca_forbids_every_ca():
    """issue ";" (or an empty value) names no CA, and so allows none."""
    assert issue_refusal(issue(";"), OURS, None) == "forbids every CA"
    assert issue_refusal(issue(""), OURS, None) == "forbids every CA"
    assert issue_refusal(issue("; validationmethods=http-01"), OURS, None) == "forbids every CA"


def test_accounturi_must_be_ours_when_we_know_ours():
    """accounturi naming another account refuses us; ours, or any when we do not know ours, allows."""
    other = "https://acme-v02.api.letsencrypt.org/acme/acct/999"
    value = f"letsencrypt.org; accounturi={other}"
    assert issue_refusal(issue(value), OURS, ACCOUNT) == f"allows only the ACME account {other}, not ours ({ACCOUNT})"
    assert issue_refusal(issue(value), OURS, None) is None
    assert issue_refusal(issue(f"letsencrypt.org; accounturi={ACCOUNT}"), OURS, ACCOUNT) is None


def test_parameter_names_are_read_without_regard_to_case():
    """AccountURI and ValidationMethods are the accounturi and validationmethods parameters."""
    assert issue_refusal(issue("letsencrypt.org; AccountURI=https://ca/acct/9"), OURS, ACCOUNT) == (
        f"allows only the ACME account https://ca/acct/9, not ours ({ACCOUNT})"
    )
    assert issue_refusal(issue("letsencrypt.org; ValidationMethods=dns-01"), OURS, None) == (
        "allows only the validation methods dns-01, not http-01"
    )


@pytest.mark.parametrize(
    "methods, allowed",
    [
        ("http-01", True),
        ("dns-01,http-01", True),
        ("http-01,tls-alpn-01", True),
        ("dns-01", False),
        ("dns-01,tls-alpn-01", False),
        ("HTTP-01", False),  # method names are compared exactly
        ("http-011", False),
        ("", False),
    ],
)
def test_validationmethods_must_list_http_01(methods, allowed):
    """validationmethods allows us only when http-01 is one of its comma-separated methods."""
    refusal = issue_refusal(issue(f"letsencrypt.org; validationmethods={methods}"), OURS, None)
    if allowed:
        assert refusal is None
    else:
        assert refusal == f"allows only the validation methods {methods}, not http-01"


def test_an_empty_parameter_does_not_hide_the_ones_after_it():
    """letsencrypt.org;; validationmethods=dns-01 does not allow us: it is malformed, not unrestricted."""
    assert issue_refusal(issue("letsencrypt.org;; validationmethods=dns-01"), OURS, None) is not None


# -- the decision over an RRset ------------------------------------------------------------------


def test_no_issue_property_allows_any_ca():
    """An RRset with only iodef, issuewild or unknown non-critical tags allows us, naming no record."""
    records = [CaaRecord(OWNER, 0, "iodef", "mailto:x@y"), CaaRecord(OWNER, 0, "issuewild", "digicert.com"),
               CaaRecord(OWNER, 0, "tbs", "x")]
    decision = decide_caa(records, OURS, None)
    assert decision == CaaDecision(allowed=True)
    assert (decision.malformed, decision.critical, decision.allowed_by, decision.refusals) == (False, None, None, ())


def test_one_allowing_issue_record_is_named():
    """The first issue record that allows us is the one the decision names."""
    ours, also_ours = issue("letsencrypt.org"), issue("letsencrypt.org; policy=ev")
    assert decide_caa([issue("digicert.com"), ours, also_ours], OURS, None) == CaaDecision(
        allowed=True, allowed_by=ours
    )


def test_every_refusing_issue_record_is_listed_with_its_reason():
    """When no issue record allows us, each one is listed, in RRset order, with why not."""
    digicert, nobody = issue("digicert.com"), issue(";")
    records = [digicert, CaaRecord(OWNER, 0, "iodef", "mailto:x@y"), nobody]
    decision = decide_caa(records, OURS, None)
    assert decision == CaaDecision(
        allowed=False, refusals=((digicert, "allows only digicert.com"), (nobody, "forbids every CA"))
    )
    assert (decision.malformed, decision.critical) == (False, None)


def test_unparsable_record_forbids_whatever_else_is_there():
    """One record whose RDATA could not be parsed forbids issuance, even beside one that allows us."""
    assert decide_caa([issue("letsencrypt.org"), None], OURS, None) == CaaDecision(allowed=False, malformed=True)


def test_critical_unknown_tag_forbids_and_the_first_is_named():
    """A critical record with a tag the CA does not know forbids issuance; the decision names the first."""
    first, second = CaaRecord(OWNER, 128, "tbs", "one"), CaaRecord(OWNER, 1, "future", "two")
    records = [issue("letsencrypt.org"), first, second]
    assert decide_caa(records, OURS, None) == CaaDecision(allowed=False, critical=first)


def test_critical_known_tags_are_understood():
    """The critical flag on issue, issuewild or iodef does not forbid: the CA understands them."""
    records = [issue("letsencrypt.org", flags=128), CaaRecord(OWNER, 128, "iodef", "mailto:x@y"),
               CaaRecord(OWNER, 129, "issuewild", ";")]
    assert decide_caa(records, OURS, None) == CaaDecision(allowed=True, allowed_by=records[0])


def test_empty_rrset_allows_any_ca():
    """With no records at all, nothing restricts issuance."""
    assert decide_caa([], OURS, None) == CaaDecision(allowed=True)
