"""Tests for jobhost.errors: the sentence each error reads as, and the error codes the API and records use."""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    AcmeUnsupported,
    AuthorizationFailed,
    BrokenRecord,
    ConfigError,
    InvalidCertificate,
    InvalidHostname,
    JobhostError,
    LeaseLost,
    LocalError,
    PageInvalid,
    PreflightFailed,
    RemoteError,
    SelfCheckFailed,
    StoreConflict,
    StoreError,
    TransitionForbidden,
    describe_exception,
    error_code,
)
from jobhost.preflight import PreflightReason, ReasonCode

ACME = "urn:ietf:params:acme:error:"
RATE_LIMITED = AcmeProblem(
    ACME + "rateLimited", "too many certificates already issued for example.com", 429, retry_after=3600.0
)
POINTS_ELSEWHERE = PreflightReason(
    ReasonCode.POINTS_ELSEWHERE, "jobs.example.com has A 198.51.100.7, but must point at 203.0.113.10 (A)."
)
DNS_TIMEOUT = PreflightReason(ReasonCode.DNS_TIMEOUT, "the DNS did not answer for jobs.example.com", retryable=True)


# -- str(): one sentence naming the cause ------------------------------------------------------


@pytest.mark.parametrize(
    "error,sentence",
    [
        (ConfigError("expected a positive integer, got 'ten'"), "expected a positive integer, got 'ten'"),
        (ConfigError("not a table", path=("tls",)), "[tls]: not a table"),
        (
            ConfigError("expected a positive integer", path=("tls", "cache", "size"), file="/etc/jobhost.toml"),
            "/etc/jobhost.toml: [tls] cache.size: expected a positive integer",
        ),
        (ConfigError("unreadable", file="/etc/jobhost.toml"), "/etc/jobhost.toml: unreadable"),
        (
            InvalidHostname("192.0.2.1", "IP addresses are not hostnames"),
            "invalid hostname '192.0.2.1': IP addresses are not hostnames",
        ),
        (StoreError("disk full"), "store error: disk full"),
        (StoreConflict("jobs.example.com kept changing"), "store conflict: jobs.example.com kept changing"),
        (
            BrokenRecord("domains/jobs.example.com.json is not valid JSON", key="jobs.example.com", reason="x"),
            "store error: domains/jobs.example.com.json is not valid JSON",
        ),
        (
            TransitionForbidden("jobs.example.com", "removed", "issued"),
            "jobs.example.com: 'issued' is not allowed in state removed",
        ),
        (
            TransitionForbidden("jobs.example.com", None, "issued"),
            "jobs.example.com: 'issued' is not allowed when it is not registered",
        ),
        (
            LeaseLost("issue:jobs.example.com", "node-b"),
            "lease 'issue:jobs.example.com' was lost by node-b; the attempt was abandoned",
        ),
        (InvalidCertificate("the key does not match"), "invalid certificate material: the key does not match"),
        (
            RATE_LIMITED,
            "CA problem rateLimited (HTTP 429): too many certificates already issued for example.com",
        ),
        (AcmeTransportError("connection refused"), "cannot talk to the CA: connection refused"),
        (
            AcmeTransportError("connection refused", url="https://ca.test/dir"),
            "cannot talk to the CA at https://ca.test/dir: connection refused",
        ),
        (AuthorizationFailed("jobs.example.com", "deactivated"),
         "authorization for jobs.example.com is deactivated: the CA gave no reason"),
        (AuthorizationFailed("jobs.example.com", "invalid", challenges=("http-01 invalid", "dns-01 pending")),
         "authorization for jobs.example.com is invalid: the CA gave no reason (challenges: http-01 invalid, dns-01 pending)"),
        (
            AuthorizationFailed(
                "jobs.example.com", "invalid", AcmeProblem(ACME + "connection", "no answer on port 80", 400)
            ),
            "authorization for jobs.example.com is invalid: CA problem connection (HTTP 400): no answer on port 80",
        ),
        (AcmeTimeout("https://ca.test/authz/1", "pending", 30.0), "https://ca.test/authz/1 still pending after 30 s"),
        (AcmeTimeout("https://ca.test/order/1", "processing", 2.5), "https://ca.test/order/1 still processing after 2.5 s"),
        (
            AcmeUnsupported("profile", "shortlived"),
            "the CA does not offer profile 'shortlived' (offered: none)",
        ),
        (
            AcmeUnsupported("profile", "shortlived", ("classic", "tlsserver"), "https://ca.test/dir"),
            "the CA at https://ca.test/dir does not offer profile 'shortlived' (offered: classic, tlsserver)",
        ),
        (PreflightFailed("jobs.example.com"), "preflight failed for jobs.example.com"),
        (PreflightFailed("jobs.example.com", (POINTS_ELSEWHERE, DNS_TIMEOUT)), POINTS_ELSEWHERE.message),
        (
            SelfCheckFailed("jobs.example.com", "http://jobs.example.com/.well-known/acme-challenge/x", "timed out"),
            "self-check of http://jobs.example.com/.well-known/acme-challenge/x failed: timed out",
        ),
        (
            PageInvalid({"": "a careers page must be a JSON object"}),
            "invalid careers page: (page): a careers page must be a JSON object",
        ),
        (
            PageInvalid({"jobs[2].title": "required", "jobs[10].id": "duplicate"}),
            "invalid careers page: jobs[2].title: required; jobs[10].id: duplicate",
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_str_of_each_error_is_the_sentence_naming_its_cause(error, sentence):
    """str() of an error (what logs, records and API messages show) is its sentence, not a field dump."""
    assert str(error) == sentence


def test_an_error_without_its_own_sentence_reads_as_its_class_name():
    """A jobhost error that does not describe itself still reads as something: its class name."""

    class ListenerDown(LocalError):
        pass

    assert str(ListenerDown()) == "ListenerDown"
    assert str(JobhostError()) == "JobhostError"


def test_errors_are_local_or_remote():
    """Callers tell retryable remote failures from local misuse by the two families."""
    remote = [RATE_LIMITED, AcmeTransportError("x"), AcmeTimeout("u", "pending", 1.0), PreflightFailed("h")]
    local = [ConfigError("x"), InvalidHostname("x", "y"), StoreError("x"), LeaseLost("l", "h"), PageInvalid({})]
    assert all(isinstance(e, RemoteError) and not isinstance(e, LocalError) for e in remote)
    assert all(isinstance(e, LocalError) and not isinstance(e, RemoteError) for e in local)
    assert all(isinstance(e, JobhostError) for e in remote + local)


# -- the CA's problem document ---------------------------------------------------------------


def test_acme_problem_code_is_the_last_part_of_its_type():
    """The short code is what follows the last colon of the problem type (the whole type when there is none)."""
    assert RATE_LIMITED.code == "rateLimited"
    assert AcmeProblem("about:blank").code == "blank"
    assert AcmeProblem("serverInternal").code == "serverInternal"


def test_acme_problem_document_has_subproblems_only_when_the_ca_gave_some():
    """as_document() is type, detail and status, plus the subproblems when there are any."""
    assert RATE_LIMITED.as_document() == {
        "type": ACME + "rateLimited",
        "detail": "too many certificates already issued for example.com",
        "status": 429,
    }
    sub = {"type": ACME + "rejectedIdentifier", "identifier": {"type": "dns", "value": "a.example"}}
    problem = AcmeProblem(ACME + "compound", "two names refused", 403, subproblems=(sub,))
    assert problem.as_document() == {
        "type": ACME + "compound",
        "detail": "two names refused",
        "status": 403,
        "subproblems": [sub],
    }


def test_a_problem_jobhost_makes_itself_has_no_http_status():
    """A problem no HTTP response carried (e.g. an order without a certificate URL) shows status 0."""
    problem = AcmeProblem("urn:jobhost:error:orderInvalid", "order has no certificate URL")
    assert str(problem) == "CA problem orderInvalid (HTTP 0): order has no certificate URL"
    assert problem.as_document()["status"] == 0


# -- error codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error,code",
    [
        (ConfigError("x"), "config_error"),
        (InvalidHostname("x", "y"), "invalid_hostname"),
        (PageInvalid({"": "x"}), "invalid_page"),
        (StoreError("x"), "store_unavailable"),
        (StoreConflict("x"), "store_unavailable"),  # a subclass has its base's code
        (BrokenRecord("x", key="k"), "broken_record"),  # unless it is listed itself
        (InvalidCertificate("x"), "invalid_certificate"),
        (RATE_LIMITED, "ca_error"),
        (AcmeTransportError("x"), "ca_unreachable"),
        (AcmeTimeout("u", "pending", 1.0), "ca_timeout"),
        (AcmeUnsupported("profile", "x"), "ca_unsupported"),
        (AuthorizationFailed("h", "invalid"), "authorization_failed"),
        (PreflightFailed("h", (POINTS_ELSEWHERE,)), "preflight_failed"),
        (SelfCheckFailed("h", "u", "r"), "self_check_failed"),
        (TransitionForbidden("h", "removed", "issued"), "conflict"),
        (LeaseLost("l", "h"), "lease_lost"),  # not in the table: its class name in snake case
        (RuntimeError("boom"), "internal"),  # not one of jobhost's errors
        (KeyError("k"), "internal"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_error_code_is_the_general_code(error, code):
    """Without detailed=True every error answers its general code."""
    assert error_code(error) == code


def test_detailed_error_code_names_the_cause_for_ca_problems_and_preflight():
    """detailed=True gives a CA problem's short type and preflight's first reason; others keep their code."""
    assert error_code(RATE_LIMITED, detailed=True) == "rateLimited"
    assert error_code(PreflightFailed("h", (DNS_TIMEOUT, POINTS_ELSEWHERE)), detailed=True) == "dns_timeout"
    assert error_code(PreflightFailed("h"), detailed=True) == "preflight_failed"
    assert error_code(AcmeTransportError("x"), detailed=True) == "ca_unreachable"
    assert error_code(StoreConflict("x"), detailed=True) == "store_unavailable"
    assert error_code(RuntimeError("x"), detailed=True) == "internal"


def test_unlisted_error_codes_are_snake_case_of_the_class_name():
    """A jobhost error outside the table gets its class name in snake case, without a leading underscore."""

    class HTTPSListenerDown(LocalError):
        def describe(self) -> str:
            return "down"

    class Quota(RemoteError):
        def describe(self) -> str:
            return "over"

    assert error_code(HTTPSListenerDown()) == "h_t_t_p_s_listener_down"
    assert error_code(Quota()) == "quota"
    assert error_code(LeaseLost("l", "h"), detailed=True) == "lease_lost"


# -- describe_exception ----------------------------------------------------------------------------


def test_describe_exception_names_the_type_and_the_message():
    """A plain exception reads 'Type: message', or just the type when it has no message."""
    assert describe_exception(ValueError("bad value")) == "ValueError: bad value"
    assert describe_exception(ConnectionResetError()) == "ConnectionResetError"
    assert describe_exception(StoreError("disk full")) == "StoreError: store error: disk full"


def test_describe_exception_unwraps_twisted_reasons():
    """Twisted's wrapped causes (Failures or exceptions, nested) are shown inside the wrapper's name."""

    class ResponseNeverReceived(Exception):
        def __init__(self, reasons):
            super().__init__(reasons)
            self.reasons = reasons

    inner = ResponseNeverReceived([Failure(ConnectionResetError("reset by peer"))])
    outer = ResponseNeverReceived([Failure(TimeoutError()), inner, ValueError("odd")])
    assert describe_exception(inner) == "ResponseNeverReceived(ConnectionResetError: reset by peer)"
    assert describe_exception(outer) == (
        "ResponseNeverReceived(TimeoutError; ResponseNeverReceived(ConnectionResetError: reset by peer); "
        "ValueError: odd)"
    )
    empty = ResponseNeverReceived([])
    assert describe_exception(empty) == "ResponseNeverReceived: []"
