"""Tests for jobhost.acme.resources: orders and authorizations parsed from the CA's answers, chain helpers."""

from __future__ import annotations

import json

import pytest
from twisted.web.http_headers import Headers

from jobhost.acme.resources import (
    AcmeAuthorization,
    AcmeOrder,
    authorization_from,
    normalise_all,
    order_from,
    select_chain,
)
from jobhost.acme.transport import AcmeResponse
from jobhost.errors import AcmeProblem, AcmeTransportError, InvalidHostname
from jobhost.testing import TestCA

ORDER_URL = "https://ca.test/order/7"
AUTHZ_URL = "https://ca.test/authz/7-0"
TOKEN = "secret-token-LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"


def _response(doc, url: str, retry_after: float | None = None) -> AcmeResponse:
    return AcmeResponse(url=url, code=200, headers=Headers(), body=json.dumps(doc).encode(), retry_after=retry_after)


def _order_doc(**extra):
    return {
        "status": "pending",
        "identifiers": [{"type": "dns", "value": "jobs.acme-corp.test"}, {"type": "dns", "value": "acme-corp.test"}],
        "authorizations": ["https://ca.test/authz/7-0", "https://ca.test/authz/7-1"],
        "finalize": "https://ca.test/order/7/finalize",
        **extra,
    }


def _authz_doc(**extra):
    return {
        "status": "pending",
        "identifier": {"type": "dns", "value": "jobs.acme-corp.test"},
        "challenges": [
            {"type": "dns-01", "url": "https://ca.test/chall/1", "status": "pending", "token": TOKEN},
            {"type": "http-01", "url": "https://ca.test/chall/2", "status": "pending", "token": TOKEN},
        ],
        **extra,
    }


def test_order_from_a_pending_order():
    """The order's status, names, authorizations, finalize URL and Retry-After are read from the answer."""
    order = order_from(ORDER_URL, _response(_order_doc(), ORDER_URL, retry_after=3.0))
    assert order == AcmeOrder(
        url=ORDER_URL,
        status="pending",
        hostnames=("jobs.acme-corp.test", "acme-corp.test"),
        authorizations=("https://ca.test/authz/7-0", "https://ca.test/authz/7-1"),
        finalize="https://ca.test/order/7/finalize",
        retry_after=3.0,
    ), "the parsed body is carried along but not compared"
    assert order.body is not None and order.certificate is None and order.error is None


def test_order_repr_leaves_out_the_body():
    """An order's repr (what a log line shows) names the order, not the whole parsed document."""
    order = order_from(ORDER_URL, _response(_order_doc(), ORDER_URL))
    assert ORDER_URL in repr(order)
    assert "body=" not in repr(order) and "Order(" not in repr(order).replace("AcmeOrder(", "")


def test_valid_and_invalid_orders():
    """A valid order has its certificate URL; an invalid one carries the CA's problem."""
    valid = order_from(ORDER_URL, _response(_order_doc(status="valid", certificate="https://ca.test/cert/7"), ORDER_URL))
    assert valid.status == "valid" and valid.certificate == "https://ca.test/cert/7"
    error = {"type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids issuance", "status": 403}
    invalid = order_from(ORDER_URL, _response(_order_doc(status="invalid", error=error), ORDER_URL))
    assert isinstance(invalid.error, AcmeProblem)
    assert invalid.error.type == "urn:ietf:params:acme:error:caa" and invalid.error.detail == "CAA forbids issuance"


def test_malformed_order_is_a_transport_error():
    """A body that is JSON but not an order is the CA not speaking ACME, naming what was malformed."""
    with pytest.raises(AcmeTransportError, match="malformed order from the CA"):
        order_from(ORDER_URL, _response({"identifiers": "not a list", "status": 7}, ORDER_URL))


def test_authorization_from_a_pending_authorization():
    """The authorization's status, hostname and challenges are read; http-01 is found among them."""
    authz = authorization_from(AUTHZ_URL, _response(_authz_doc(), AUTHZ_URL, retry_after=2.0))
    assert authz == AcmeAuthorization(
        url=AUTHZ_URL,
        status="pending",
        hostname="jobs.acme-corp.test",
        retry_after=2.0,
        challenges=tuple(_authz_doc()["challenges"]),
    ), "the parsed body is carried along but not compared"
    challenge = authz.http01()
    assert challenge is not None and challenge.chall.typ == "http-01" and challenge.uri == "https://ca.test/chall/2"
    assert authz.problem() is None


def test_authorization_repr_leaves_out_challenges_and_body():
    """An authorization's repr names it but not its challenge documents (tokens) or parsed body."""
    authz = authorization_from(AUTHZ_URL, _response(_authz_doc(), AUTHZ_URL))
    assert AUTHZ_URL in repr(authz)
    assert TOKEN not in repr(authz)
    assert "body=" not in repr(authz) and "challenges=" not in repr(authz)


def test_authorization_without_http01():
    """A CA that offers no http-01 challenge: http01() is None."""
    doc = _authz_doc(challenges=[{"type": "dns-01", "url": "https://ca.test/chall/1", "status": "pending",
                                  "token": TOKEN}])
    assert authorization_from(AUTHZ_URL, _response(doc, AUTHZ_URL)).http01() is None
    assert AcmeAuthorization(url=AUTHZ_URL, status="pending", hostname="x.test").http01() is None


def test_failed_authorization_names_the_challenge_problem():
    """An invalid authorization's problem is its challenge's error, with the challenge URL."""
    error = {"type": "urn:ietf:params:acme:error:connection", "detail": "Connection refused", "status": 400}
    doc = _authz_doc(status="invalid", challenges=[
        {"type": "dns-01", "url": "https://ca.test/chall/1", "status": "pending", "token": TOKEN},
        {"type": "http-01", "url": "https://ca.test/chall/2", "status": "invalid", "token": TOKEN, "error": error},
    ])
    authz = authorization_from(AUTHZ_URL, _response(doc, AUTHZ_URL))
    problem = authz.problem()
    assert problem.type == "urn:ietf:params:acme:error:connection" and problem.detail == "Connection refused"


def test_the_problem_of_one_challenge_and_the_states_of_all():
    """challenge_problem finds the error of the challenge at a URL (None without one); challenge_states
    lists every challenge as "<type> <status>", what is known when the CA gives no problem."""
    error = {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "wrong answer", "status": 403}
    doc = _authz_doc(status="pending", challenges=[
        {"type": "dns-01", "url": "https://ca.test/chall/1", "status": "pending", "token": TOKEN},
        {"type": "http-01", "url": "https://ca.test/chall/2", "status": "pending", "token": TOKEN, "error": error},
    ])
    authz = authorization_from(AUTHZ_URL, _response(doc, AUTHZ_URL))
    problem = authz.challenge_problem("https://ca.test/chall/2")
    assert (problem.code, problem.detail, problem.url) == ("unauthorized", "wrong answer", "https://ca.test/chall/2")
    assert authz.challenge_problem("https://ca.test/chall/1") is None
    assert authz.challenge_problem("https://ca.test/chall/9") is None
    assert authz.challenge_states() == ("dns-01 pending", "http-01 pending")


def test_malformed_authorization_is_a_transport_error():
    """A body that is not an authorization names what was malformed."""
    with pytest.raises(AcmeTransportError, match="malformed authorization from the CA"):
        authorization_from(AUTHZ_URL, _response({"identifier": 3}, AUTHZ_URL))


def test_normalise_all_keeps_order_and_drops_duplicates():
    """Names are normalised, duplicates (after normalising) dropped, the first one's place kept."""
    assert normalise_all(["Jobs.Acme-Corp.test.", "acme-corp.test", "jobs.acme-corp.test"]) == (
        "jobs.acme-corp.test", "acme-corp.test")
    with pytest.raises(ValueError, match="at least one hostname"):
        normalise_all([])
    with pytest.raises(InvalidHostname):
        normalise_all(["jobs.acme-corp.test", "not a hostname"])


def test_select_chain_by_issuer_common_name():
    """The first chain with a certificate issued by the preferred issuer wins; else the CA's default (0)."""
    first, second = TestCA.create("Alpha"), TestCA.create("Beta")
    chains = [first.issue("jobs.acme-corp.test")[1], second.issue("jobs.acme-corp.test")[1],
              second.issue("jobs.acme-corp.test")[1]]
    assert select_chain(chains, "Beta intermediate") == 1
    assert select_chain(chains, "Beta root") == 1, "any certificate in the chain counts"
    assert select_chain(chains, "Alpha intermediate") == 0
    assert select_chain(chains, "Gamma") == 0 and select_chain(chains, None) == 0 and select_chain(chains, "") == 0
