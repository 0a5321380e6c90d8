"""Tests for jobhost.retry: backoff delays, Retry-After, and which errors are permanent (pure)."""

import json
from datetime import datetime, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.python.failure import Failure

from jobhost.certs import generate_private_key
from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    AcmeUnsupported,
    AuthorizationFailed,
    ConfigError,
    InvalidCertificate,
    InvalidHostname,
    LocalError,
    PreflightFailed,
    SelfCheckFailed,
    StoreError,
)
from jobhost.retry import (
    PERMANENT_PROBLEM_TYPES,
    Permanent,
    backoff_delay,
    is_permanent,
    parse_retry_after,
    retry_after_seconds,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ACME = "urn:ietf:params:acme:error:"


# ---------------------------------------------------------------- backoff


def test_backoff_delay_follows_the_schedule_and_repeats_the_last():
    """The n-th failure waits the n-th delay; past the end the last one repeats."""
    schedule = (60.0, 600.0, 6000.0)
    assert [backoff_delay(n, schedule) for n in (0, 1, 2, 3, 4, 99)] == [60.0, 60.0, 600.0, 6000.0, 6000.0, 6000.0]


@given(attempts=st.integers(min_value=-3, max_value=50), jitter=st.floats(min_value=0, max_value=0.999))
def test_backoff_delay_jitter_stretches_by_at_most_a_tenth(attempts, jitter):
    """Jitter only lengthens a delay, and by less than 10%."""
    schedule = (60.0, 600.0)
    plain = backoff_delay(attempts, schedule)
    assert plain <= backoff_delay(attempts, schedule, jitter) < plain * 1.1


# ---------------------------------------------------------------- Retry-After


def test_retry_after_seconds_value():
    """Delay-seconds parse to that many seconds, from str or bytes."""
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(b" 0 ", NOW) == 0.0


def test_retry_after_http_date():
    """An HTTP date parses to the seconds from now until then, and a past date to 0."""
    assert parse_retry_after("Sun, 01 Mar 2026 12:01:30 GMT", NOW) == 90.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "1.5", "\u00b2", "\u0663", "Sun, 01 Mar 2026", "Sun, 01 Mar 2026 12:01:30 -0000"],
)
def test_retry_after_garbage(value):
    """Missing, empty, negative, fractional, non-ASCII, unparsable or zone-less ("-0000") values give None, never raise."""
    assert parse_retry_after(value, NOW) is None


def test_retry_after_from_raw_header_values():
    """retry_after_seconds reads the first raw header value, and None when there is none."""
    assert retry_after_seconds([b"30", b"60"], NOW) == 30.0
    assert retry_after_seconds(["Sun, 01 Mar 2026 12:00:10 GMT"], NOW) == 10.0
    assert retry_after_seconds(None, NOW) is None
    assert retry_after_seconds([], NOW) is None


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_retry_after_never_raises(value):
    """Whatever a server sends, the answer is None or a non-negative number of seconds."""
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0


# ---------------------------------------------------------------- permanent errors


def problem(name, detail="", **kwargs):
    return AcmeProblem(type=ACME + name, detail=detail, status=400, **kwargs)


@pytest.mark.parametrize(
    "name", ["badCSR", "rejectedIdentifier", "unsupportedIdentifier", "badSignatureAlgorithm", "badPublicKey"]
)
def test_problems_refusing_what_we_sent_are_permanent(name):
    """A CA problem refusing the CSR, identifier or key for what it is can never succeed by retrying."""
    assert ACME + name in PERMANENT_PROBLEM_TYPES
    assert is_permanent(problem(name, "refused"))


@pytest.mark.parametrize(
    "name",
    ["caa", "rateLimited", "badNonce", "serverInternal", "connection", "dns", "unauthorized",
     "accountDoesNotExist", "orderNotReady", "incorrectResponse", "tls"],
)
def test_transient_or_fixable_problems_are_not_permanent(name):
    """CAA (the customer can fix DNS), rate limits, nonces, CA outages and validation failures are retried."""
    assert not is_permanent(problem(name, "try again"))


@pytest.mark.parametrize(
    "detail, permanent",
    [
        ("Error finalizing order :: CSR contains a public key of an unsupported type", True),
        ("Domain name contains an invalid character", True),
        ("Account is not valid, has status \"deactivated\"", False),
        ("No Key ID in JWS header", False),
        ("Unable to validate JWS :: Invalid nonce", False),
        ("Order's status (\"valid\") is not acceptable for finalization", False),
    ],
)
def test_malformed_is_permanent_unless_about_account_nonce_jws_or_status(detail, permanent):
    """malformed is permanent for what we asked for, not for the account, nonce, JWS or an order-state race."""
    assert is_permanent(problem("malformed", detail)) is permanent


def test_compound_is_permanent_only_when_every_subproblem_is():
    """A compound problem is permanent when all its subproblems are, and retried otherwise."""
    rejected = {"type": ACME + "rejectedIdentifier", "detail": "blocked name"}
    caa = {"type": ACME + "caa", "detail": "CAA forbids"}
    assert is_permanent(problem("compound", subproblems=(rejected, rejected)))
    assert not is_permanent(problem("compound", subproblems=(rejected, caa)))
    assert not is_permanent(problem("compound"))


def test_authorization_failed_follows_its_problem():
    """A failed authorization is permanent only when the CA's problem is (and not when it gave none)."""
    assert is_permanent(AuthorizationFailed("a.test", "invalid", problem("rejectedIdentifier")))
    assert not is_permanent(AuthorizationFailed("a.test", "invalid", problem("connection")))
    assert not is_permanent(AuthorizationFailed("a.test", "invalid"))


def test_local_misuse_is_permanent():
    """jobhost's own misuse errors (config, hostname, an unsupported CA feature) are permanent."""
    assert is_permanent(ConfigError("bad", ("acme", "profile")))
    assert is_permanent(InvalidHostname("x", "not a hostname"))
    assert is_permanent(AcmeUnsupported("profile", "shortlived"))


@pytest.mark.parametrize(
    "error",
    [
        StoreError("disk full"),
        InvalidCertificate("the private key does not match the leaf certificate"),
        AcmeTransportError("connection refused"),
        AcmeTimeout("https://ca/order/1", "processing", 300.0),
        PreflightFailed("a.test"),
        SelfCheckFailed("a.test", "http://a.test/x", "timeout"),
        ValueError("bad"),
        KeyError("status"),
        RuntimeError("?"),
    ],
)
def test_other_errors_are_not_permanent(error):
    """Store hiccups, bad chains, CA outages, DNS and self-check failures and unknown errors are retried."""
    assert not is_permanent(error)


def test_permanent_base_and_mixin():
    """A Permanent subclass, or a jobhost error with Permanent mixed in, is permanent."""

    class CannotEver(Permanent):
        pass

    @attrs.define(eq=False, str=False)
    class Refused(LocalError, Permanent):
        reason: str

    assert is_permanent(CannotEver())
    assert is_permanent(Refused("no"))
    assert not is_permanent(LocalError())


def test_failure_is_unwrapped():
    """A Failure is judged by the exception it carries."""
    assert is_permanent(Failure(problem("badCSR")))
    assert not is_permanent(Failure(problem("caa")))


def test_programming_error_in_jobhost_code_is_permanent():
    """A TypeError raised inside jobhost's own code is a bug: retrying fails the same way."""
    with pytest.raises(TypeError) as info:
        backoff_delay(1, None)
    assert is_permanent(info.value)
    assert is_permanent(Failure(info.value))


def test_programming_error_elsewhere_is_not_permanent():
    """TypeErrors raised by a library, by this test, or never raised at all are not judged permanent."""
    with pytest.raises(TypeError) as library:
        json.loads(None)
    assert not is_permanent(library.value)
    try:
        raise AttributeError("ours? no: the test's")
    except AttributeError as e:
        assert not is_permanent(e)
    assert not is_permanent(TypeError("never raised"))


def test_value_error_in_jobhost_code_is_not_permanent():
    """ValueError and KeyError are left retryable even from jobhost's code (mostly remote data)."""
    with pytest.raises(ValueError) as info:
        generate_private_key("dsa-1024")
    assert not is_permanent(info.value)
