"""Tests for jobhost.admin.api: the real AdminResource over StubTreq, every route and every refusal."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import attrs
import pytest
from admin_helpers import (
    INVALID_PATH_HOSTNAMES,
    T0,
    TOKEN,
    ApiClient,
    FakeIssuer,
    FakePreflight,
    RecordingEvents,
    RecordingStore,
    assert_error,
    make_domain,
    spec,
)
from openapi_spec_validator import validate as validate_openapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobhost.domains import DomainService
from jobhost.admin.api import ROUTES, AdminResource, admin_site, decode_cursor, encode_cursor
from jobhost.admin.errors import ApiError, domain_not_found, error_response
from jobhost.errors import AcmeProblem, AcmeTimeout, AcmeTransportError, SelfCheckFailed
from jobhost.preflight import IPreflight
from jobhost.store.memory import MemoryStore
from jobhost.store.records import ChangeKind, DomainState, certificate_record
from jobhost.testing import TestCA

HOST = "jobs.acme-corp.example"
PAGE = {"company": "Acme Corp", "jobs": [{"id": "eng-1", "title": "Engineer"}]}

#: (method, path template, JSON body or None) for every route that needs the token.
TOKEN_ROUTES = [
    ("POST", "/api/v1/domains", {"hostname": "new.example.com"}),
    ("GET", "/api/v1/domains", None),
    ("GET", "/api/v1/domains/{hostname}", None),
    ("DELETE", "/api/v1/domains/{hostname}", None),
    ("POST", "/api/v1/domains/{hostname}/renew", None),
    ("GET", "/api/v1/domains/{hostname}/page", None),
    ("PUT", "/api/v1/domains/{hostname}/page", PAGE),
    ("GET", "/api/v1/domains/{hostname}/diagnostics", None),
    ("GET", "/api/v1/check?hostname=new.example.com", None),
    ("GET", "/metrics", None),
]
HOSTNAME_ROUTES = [r for r in TOKEN_ROUTES if "{hostname}" in r[1]]
BODY_ROUTES = [r for r in TOKEN_ROUTES if r[2] is not None]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    """One throwaway CA for the module (made when first asked for, not at import)."""
    return TestCA.create()


def add_certificate(api: ApiClient, ca: TestCA, hostname: str, lifetime=timedelta(days=90)):
    """Store a real certificate for ``hostname``, valid from T0 - 1 day."""
    key_pem, chain_pem = ca.issue(hostname, not_before=T0 - timedelta(days=1), lifetime=lifetime)
    record = certificate_record(hostname, key_pem, chain_pem)
    api.store.certificates[hostname] = record
    return record


def registered(**options) -> ApiClient:
    """A client whose store holds HOST (active, with PAGE)."""
    api = ApiClient.create(**options)
    api.store.domains[HOST] = make_domain(HOST, page=dict(PAGE, jobs=list(PAGE["jobs"])))
    return api


def send(api: ApiClient, method: str, template: str, body, hostname: str = HOST, **kwargs):
    path = template.replace("{hostname}", hostname)
    return api.request(method, path, json_body=body, **kwargs)


# -- the document ----------------------------------------------------------------------------


def test_openapi_document_is_valid_openapi_3_1():
    """openapi.json is a valid OpenAPI 3.1 document."""
    document = spec()
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)


def test_every_route_is_documented_and_every_documented_route_is_served():
    """The routes the resource serves and the operations openapi.json documents are the same set."""
    served = {(method.lower(), route.template) for route in ROUTES for method in route.methods}
    documented = {
        (method, path)
        for path, item in spec()["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    }
    assert served == documented


def test_openapi_is_served_without_a_token():
    """GET /api/v1/openapi.json answers the document itself, with no token."""
    api = ApiClient.create()
    answer = api.request("GET", "/api/v1/openapi.json", token=None)
    assert answer.status == 200
    assert answer.json == spec()


def test_every_error_code_the_api_can_raise_is_in_the_error_enum():
    """Each code in jobhost.admin.errors appears in the documented Error schema."""
    import re

    import jobhost.admin.errors as module

    from jobhost.errors import ERROR_CODES

    source = open(module.__file__).read()
    codes = set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', source))
    # jobhost's own exceptions get their code from the one table in jobhost.errors.
    mapped = {ERROR_CODES[klass] for klass in module._MAPPING if klass is not module.ApiError}
    enum = set(spec()["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert codes and mapped and codes | mapped <= enum


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("method,template,body", TOKEN_ROUTES)
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", ""])
def test_token_routes_refuse_missing_or_wrong_token(method, template, body, token):
    """Every token route answers 401 with WWW-Authenticate and touches neither store nor issuer."""
    api = registered()
    before = api.store.snapshot()
    answer = send(api, method, template, body, token=token)
    assert_error(answer, 401, "unauthorized")
    assert answer.header("www-authenticate") == 'Bearer realm="jobhost"'
    assert api.store.snapshot() == before
    assert api.store.calls == []
    assert api.issuer.calls == []


def test_basic_auth_with_the_right_token_is_refused():
    """Only the Bearer scheme is accepted, even with the right secret."""
    api = registered()
    answer = api.request("GET", "/api/v1/domains", token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert_error(answer, 401, "unauthorized")


@pytest.mark.parametrize("values", [
    [f"Bearer {TOKEN}", "Bearer wrong-token-0123456789"],
    ["Bearer wrong-token-0123456789", f"Bearer {TOKEN}"],
    [f"Bearer {TOKEN}", f"Bearer {TOKEN}"],
])
def test_two_authorization_headers_are_refused_naming_the_header(values):
    """Two Authorization headers answer 400 duplicate_header, whichever holds the token, and touch nothing."""
    api = registered()
    before = api.store.snapshot()
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": "new.example.com"}, token=None,
                         headers={"Authorization": values})
    error = assert_error(answer, 400, "duplicate_header")
    assert "Authorization" in error["message"] and error["details"] == {"header": "Authorization"}
    assert api.store.snapshot() == before and api.issuer.calls == []


def test_unknown_api_path_needs_the_token_before_saying_not_found():
    """Unknown /api/v1 paths answer 401 without a token (no probing) and 404 with one."""
    api = ApiClient.create()
    assert_error(api.request("GET", "/api/v1/nothing", token=None), 401, "unauthorized")
    assert_error(api.request("GET", "/api/v1/nothing"), 404, "not_found")
    assert_error(api.request("GET", "/nothing", token=None), 404, "not_found")


def test_metrics_needs_the_token_unless_public():
    """/metrics is token-protected by default and open when metrics_public is set."""
    assert_error(ApiClient.create().request("GET", "/metrics", token=None), 401, "unauthorized")
    answer = ApiClient.create(metrics_public=True).request("GET", "/metrics", token=None)
    assert answer.status == 200
    assert b"jobhost_domains" in answer.body


def test_metrics_is_404_when_the_daemon_keeps_none():
    """Without a metrics registry /metrics answers 404 not_found."""
    api = ApiClient.create(metrics=None, metrics_public=True)
    assert_error(api.request("GET", "/metrics", token=None), 404, "not_found")


def test_every_answer_is_marked_no_store_and_nosniff():
    """Successes and errors alike tell caches not to keep them and browsers not to guess their type."""
    api = registered()
    answers = [
        api.request("GET", f"/api/v1/domains/{HOST}"),
        api.request("GET", "/api/v1/domains", token=None),
        api.request("GET", "/healthz", token=None),
        api.request("GET", "/api/v1/openapi.json", token=None),
    ]
    assert [a.status for a in answers] == [200, 401, 200, 200]
    for answer in answers:
        assert answer.header("cache-control") == "no-store"
        assert answer.header("x-content-type-options") == "nosniff"


def test_the_resource_repr_does_not_show_the_token():
    """What a log line or a traceback shows of the resource never carries the admin token."""
    assert TOKEN not in repr(ApiClient.create().resource)


# -- hostnames in the path ---------------------------------------------------------------------


@pytest.mark.parametrize("method,template,body", HOSTNAME_ROUTES)
@pytest.mark.parametrize("label", sorted(INVALID_PATH_HOSTNAMES))
def test_invalid_hostname_in_path_is_422_and_never_reaches_the_store(method, template, body, label):
    """IPs, wildcards, ../etc (plain or encoded), 300 characters and empty names answer 422."""
    api = registered()
    before = api.store.snapshot()
    answer = send(api, method, template, body, hostname=INVALID_PATH_HOSTNAMES[label])
    error = assert_error(answer, 422, "invalid_hostname")
    assert error["details"]["reason"]
    assert api.store.calls == []
    assert api.store.snapshot() == before
    assert api.issuer.calls == []


@pytest.mark.parametrize("method,template,body", HOSTNAME_ROUTES)
def test_unknown_hostname_is_404(method, template, body):
    """Every hostname route answers 404 not_found for a hostname that is not registered."""
    api = registered()
    before = api.store.snapshot()
    answer = send(api, method, template, body, hostname="unknown.example.com")
    error = assert_error(answer, 404, "not_found")
    assert error["details"] == {"hostname": "unknown.example.com"}
    assert api.store.snapshot() == before
    assert api.issuer.calls == []


def test_hostname_in_path_that_is_not_utf8_is_422():
    """Path bytes that are not UTF-8 answer 422 invalid_hostname, echoing at most 300 characters of them."""
    api = registered()
    error = assert_error(api.request("GET", "/api/v1/domains/%FF%FE"), 422, "invalid_hostname")
    assert error["details"] == {"value": repr(b"\xff\xfe"), "reason": "not UTF-8 text"}
    error = assert_error(api.request("GET", "/api/v1/domains/" + "%FF" * 200), 422, "invalid_hostname")
    assert error["details"]["value"].startswith("b'\\xff\\xff") and len(error["details"]["value"]) <= 300
    assert api.store.calls == []


def test_unicode_hostname_in_path_finds_the_punycode_record():
    """A URL-encoded unicode hostname is normalised to its A-label before the lookup."""
    api = ApiClient.create()
    api.store.domains["xn--bcher-kva.example"] = make_domain("xn--bcher-kva.example")
    answer = api.request("GET", "/api/v1/domains/B%C3%BCcher.Example")
    assert answer.status == 200
    assert answer.json["hostname"] == "xn--bcher-kva.example"
    assert answer.json["hostname_unicode"] == "bücher.example"


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,template,body", BODY_ROUTES)
@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"a": NaN}', b'{"a": 1, "a": 2}', b"\xff\xfe", b"", b"[" * 3000],
    ids=["truncated", "nan", "duplicate-key", "not-utf8", "empty", "deep"],
)
def test_malformed_json_is_400_bad_json(method, template, body, raw):
    """Unparsable, non-UTF-8, empty, NaN, duplicate-key and absurdly nested bodies answer 400 bad_json."""
    api = registered()
    before = api.store.snapshot()
    answer = send(api, method, template, None, data=raw, headers={"Content-Type": "application/json"})
    assert_error(answer, 400, "bad_json")
    assert api.store.snapshot() == before
    assert api.issuer.calls == []


@pytest.mark.parametrize("method,template,body", BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"]
)
def test_wrong_content_type_is_415(method, template, body, content_type):
    """POST and PUT bodies must be application/json (UTF-8); anything else answers 415."""
    api = registered()
    before = api.store.snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    answer = send(api, method, template, None, data=json.dumps(body).encode(), headers=headers)
    assert_error(answer, 415, "unsupported_media_type")
    assert api.store.snapshot() == before
    assert api.issuer.calls == []


def test_json_with_charset_utf8_is_accepted():
    """application/json; charset=utf-8 is application/json."""
    api = ApiClient.create()
    answer = api.request(
        "POST",
        "/api/v1/domains",
        data=json.dumps({"hostname": HOST}).encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert answer.status == 201


@pytest.mark.parametrize("method,template,body", BODY_ROUTES)
def test_body_over_the_limit_is_413(method, template, body):
    """A body over max_body_bytes answers 413 before it is parsed."""
    api = registered(max_body_bytes=100)
    before = api.store.snapshot()
    big = dict(body, padding="x" * 200)
    answer = send(api, method, template, big)
    error = assert_error(answer, 413, "body_too_large")
    assert error["details"] == {"max_body_bytes": 100}
    assert api.store.snapshot() == before
    assert api.issuer.calls == []


def test_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413():
    """max_body_bytes is the largest body taken."""
    api = ApiClient.create(max_body_bytes=200)
    doc = json.dumps({"hostname": HOST}).encode()
    json_type = {"Content-Type": "application/json"}
    over = api.request("POST", "/api/v1/domains", data=doc.ljust(201), headers=json_type)
    assert_error(over, 413, "body_too_large")
    assert api.store.domains == {}
    assert api.request("POST", "/api/v1/domains", data=doc.ljust(200), headers=json_type).status == 201


def test_default_body_limit_is_one_mebibyte():
    """A resource not told otherwise takes a body of 1 MiB (the config's default) and refuses one byte more."""
    api = ApiClient.create(max_body_bytes=None)
    doc = json.dumps({"hostname": HOST}).encode()
    json_type = {"Content-Type": "application/json"}
    over = api.request("POST", "/api/v1/domains", data=doc.ljust(1024 * 1024 + 1), headers=json_type)
    assert assert_error(over, 413, "body_too_large")["details"] == {"max_body_bytes": 1024 * 1024}
    assert api.request("POST", "/api/v1/domains", data=doc.ljust(1024 * 1024), headers=json_type).status == 201


def test_content_type_is_matched_regardless_of_case_and_spaces():
    """'Application/JSON ; Charset="UTF-8"' is application/json."""
    api = ApiClient.create()
    answer = api.request(
        "POST",
        "/api/v1/domains",
        data=json.dumps({"hostname": HOST}).encode(),
        headers={"Content-Type": 'Application/JSON ; Charset="UTF-8"'},
    )
    assert answer.status == 201


@pytest.mark.parametrize("raw", [b"", b" \r\n\t "], ids=["nothing", "whitespace"])
def test_empty_body_is_400_saying_it_is_empty(raw):
    """A body with nothing but whitespace answers 400 bad_json saying so, not a parser's complaint."""
    api = ApiClient.create()
    answer = api.request("POST", "/api/v1/domains", data=raw, headers={"Content-Type": "application/json"})
    assert assert_error(answer, 400, "bad_json")["message"] == "the body is empty; send a JSON document"


@pytest.mark.parametrize(
    "body,field",
    [
        ([HOST], None),
        (5, None),
        ("jobs.example.com", None),
        ({}, "hostname"),
        ({"hostname": 5}, "hostname"),
        ({"hostname": HOST, "skip_preflight": "yes"}, "skip_preflight"),
        ({"hostname": HOST, "colour": "red"}, "colour"),
        ({"hostname": HOST, "size": 1, "colour": "red"}, "colour"),  # the first in alphabetical order
    ],
)
def test_register_with_wrong_fields_is_400(body, field):
    """A registration body that is not {hostname, page?, skip_preflight?} answers 400 bad_request."""
    api = ApiClient.create()
    error = assert_error(api.request("POST", "/api/v1/domains", json_body=body), 400, "bad_request")
    if field:
        assert error["details"]["field"] == field and field in error["message"]
    else:
        assert error == {"code": "bad_request", "message": "the body must be a JSON object", "details": {}}
    assert api.store.domains == {}


# -- registering -------------------------------------------------------------------------------


def test_register_runs_preflight_stores_pending_and_kicks_the_issuer():
    """POST /api/v1/domains normalises, preflights, stores a pending record, answers 201 and kicks."""
    api = ApiClient.create()
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": "Jobs.Acme-Corp.Example.", "page": PAGE})
    assert answer.status == 201
    assert answer.header("location") == f"/api/v1/domains/{HOST}"
    doc = answer.json
    assert doc["hostname"] == HOST
    assert doc["state"] == "pending"
    assert doc["certificate"] is None
    assert doc["page"] == {"version": 2, "company": "Acme Corp", "jobs": [{"id": "eng-1", "title": "Engineer"}]}
    assert api.preflight.asked == [HOST]
    stored = api.store.domains[HOST]
    assert stored.state == DomainState.PENDING
    assert stored.created_at == T0
    assert stored.page == doc["page"]
    assert api.issuer.calls == [("kick", HOST)]


def test_register_accepts_a_unicode_hostname():
    """A unicode hostname is stored under its A-label form."""
    api = ApiClient.create()
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": "Bücher.example"})
    assert answer.status == 201
    assert list(api.store.domains) == ["xn--bcher-kva.example"]


@pytest.mark.parametrize("hostname", ["192.0.2.1", "*.example.com", "../etc", "a" * 300, "", "localhost"])
def test_register_invalid_hostname_is_422_and_stores_nothing(hostname):
    """An invalid hostname in the body answers 422 invalid_hostname before preflight or the store."""
    api = ApiClient.create()
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": hostname})
    error = assert_error(answer, 422, "invalid_hostname")
    assert error["details"]["reason"]
    assert api.store.calls == []
    assert api.preflight.asked == []
    assert api.issuer.calls == []


def test_fake_preflight_provides_ipreflight():
    """The preflight stand-in provides IPreflight."""
    assert verifyObject(IPreflight, FakePreflight())


def test_failed_preflight_is_422_with_reasons_and_stores_nothing():
    """When DNS points elsewhere the answer carries the first reason's message and all reasons."""
    api = ApiClient.create(preflight=FakePreflight(passes=False))
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST})
    error = assert_error(answer, 422, "preflight_failed")
    assert error["message"] == f"{HOST} has A 198.51.100.7, but must point at 203.0.113.10 (A)."
    (reason,) = error["details"]["reasons"]
    assert reason["code"] == "points_elsewhere"
    assert reason["found"] == [f"{HOST} A 198.51.100.7"]
    assert reason["retryable"] is False
    assert api.store.domains == {}
    assert api.issuer.calls == []


def test_skip_preflight_registers_without_asking_dns():
    """skip_preflight: true registers even when preflight would fail, and records why in history."""
    api = ApiClient.create(preflight=FakePreflight(passes=False))
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST, "skip_preflight": True})
    assert answer.status == 201
    assert api.preflight.asked == []
    assert "preflight skipped" in answer.json["history"][-1]["reason"]


def test_disabled_preflight_registers_without_asking_dns():
    """With no preflight configured a registration goes straight to the store."""
    api = ApiClient.create(preflight=None)
    assert api.request("POST", "/api/v1/domains", json_body={"hostname": HOST}).status == 201


def test_invalid_page_on_register_is_422_before_preflight():
    """A bad page answers 422 invalid_page with every field error; no DNS query, nothing stored."""
    api = ApiClient.create()
    body = {"hostname": HOST, "page": {"company": "", "jobs": [{"title": "x"}], "extra": 1}}
    error = assert_error(api.request("POST", "/api/v1/domains", json_body=body), 422, "invalid_page")
    assert set(error["details"]["errors"]) == {"company", "jobs[0].id", "extra"}
    assert api.preflight.asked == []
    assert api.store.domains == {}


def test_registering_twice_is_idempotent():
    """A second identical registration answers 200 with the stored record and changes nothing."""
    api = ApiClient.create()
    first = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST, "page": PAGE})
    before = api.store.snapshot()
    calls = list(api.issuer.calls)
    again = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST.upper(), "page": PAGE})
    assert again.status == 200
    assert again.json == first.json
    assert api.store.snapshot() == before
    assert api.issuer.calls == calls
    without_page = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST})
    assert without_page.status == 200
    assert api.store.snapshot() == before
    assert api.preflight.asked == [HOST], "a repeat spends no DNS query"


def test_registering_again_with_a_different_page_is_409():
    """A registration whose page differs from the stored one answers 409 conflict."""
    api = registered()
    before = api.store.snapshot()
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST, "page": {"company": "Other"}})
    error = assert_error(answer, 409, "conflict")
    assert error["details"] == {"hostname": HOST}
    assert api.store.snapshot() == before
    assert api.issuer.calls == []


def test_registering_a_removed_hostname_starts_afresh_and_keeps_history():
    """A removed record is replaced by a fresh pending one whose history follows the old one."""
    api = ApiClient.create()
    api.store.domains[HOST] = make_domain(HOST, state=DomainState.REMOVED, attempts=3)
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST})
    assert answer.status == 201
    stored = api.store.domains[HOST]
    assert stored.state == DomainState.PENDING
    assert stored.attempts == 0
    assert [h.state for h in stored.history] == ["removed", "pending"]
    assert api.issuer.calls == [("kick", HOST)]


def test_registration_stands_when_the_issuer_cannot_start():
    """If telling the issuer fails the registration is still stored and answered 201; the failure is logged."""
    api = ApiClient.create(issuer=FakeIssuer(kick_error=RuntimeError("issuer stopped")))
    with capturedLogs() as events:
        answer = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST})
    assert answer.status == 201
    assert api.store.domains[HOST].state == DomainState.PENDING
    failures = [e for e in events if e.get("log_failure") is not None]
    assert [str(e["log_failure"].value) for e in failures] == ["issuer stopped"]
    assert failures[0]["hostname"] == HOST


@attrs.define
class RacingPreflight(FakePreflight):
    """Passes, but another request registers the hostname (with ``page``) while it looks."""

    domains: Any = None
    page: Any = None

    def check(self, hostname: str) -> Deferred:
        self.domains.register(hostname, self.page, "registered by another request")
        return super().check(hostname)


@pytest.mark.parametrize("page,status", [(PAGE, 200), ({"company": "Other Co"}, 409)])
def test_registration_racing_another_answers_as_a_repeat(page, status):
    """Registered by another request while preflight ran: the same page answers 200 with that record, another 409."""
    api = ApiClient.create(preflight=RacingPreflight(page=page))
    api.preflight.domains = api.resource.domains
    answer = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST, "page": PAGE})
    assert answer.status == status
    if status == 200:
        assert answer.json["history"][-1]["reason"] == "registered by another request"
    assert api.store.domains[HOST].page == page
    assert api.issuer.calls == [], "the other request started issuance"


def test_registering_replacing_a_page_and_removing_are_logged():
    """Each change an operator makes leaves an info line naming the hostname."""
    api = ApiClient.create()
    with capturedLogs() as events:
        api.request("POST", "/api/v1/domains", json_body={"hostname": HOST})
        api.request("PUT", f"/api/v1/domains/{HOST}/page", json_body=PAGE)
        api.request("DELETE", f"/api/v1/domains/{HOST}")
    lines = [formatEvent(e) for e in events if e["log_level"] == LogLevel.info]
    for line in (f"Registered {HOST}", f"Careers page of {HOST} replaced", f"Removed {HOST} (revoked: False)"):
        assert line in lines


# -- listing -----------------------------------------------------------------------------------


def test_list_pages_with_a_cursor_until_null():
    """GET /api/v1/domains pages through every record in hostname order."""
    api = ApiClient.create()
    names = [f"host{i:02}.example.com" for i in range(7)]
    for name in reversed(names):
        api.store.domains[name] = make_domain(name)
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        doc = api.request("GET", "/api/v1/domains" + query).json
        seen += [d["hostname"] for d in doc["domains"]]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3


def test_list_filters_by_state_and_prefix():
    """state= and q= narrow the listing."""
    api = ApiClient.create()
    for name, state in [
        ("a.example.com", "active"),
        ("jobs.a.example", "failing"),
        ("jobs.b.example", "active"),
        ("jobsite.example", "active"),
        ("z.example.com", "active"),
    ]:
        api.store.domains[name] = make_domain(name, state=state)
    listed = lambda q: [d["hostname"] for d in api.request("GET", "/api/v1/domains" + q).json["domains"]]
    assert listed("?state=failing") == ["jobs.a.example"]
    assert listed("?q=jobs.") == ["jobs.a.example", "jobs.b.example"]
    assert listed("?q=JOBS&state=active") == ["jobs.b.example", "jobsite.example"]
    assert listed("?q=nothing") == []


def test_list_filters_by_expiry_and_shows_certificates(ca):
    """expires_before= keeps hostnames whose certificate ends before that time, with the certificate."""
    api = ApiClient.create()
    for name in ("short.example.com", "long.example.com", "none.example.com"):
        api.store.domains[name] = make_domain(name)
    add_certificate(api, ca, "short.example.com", lifetime=timedelta(days=6))
    add_certificate(api, ca, "long.example.com", lifetime=timedelta(days=90))
    doc = api.request("GET", "/api/v1/domains?expires_before=2030-01-30T00:00:00Z").json
    assert [d["hostname"] for d in doc["domains"]] == ["short.example.com"]
    assert doc["domains"][0]["certificate"]["not_after"] == "2030-01-20T12:00:00Z"
    lower_case = api.request("GET", "/api/v1/domains?expires_before=2030-01-30t00:00:00z").json
    assert [d["hostname"] for d in lower_case["domains"]] == ["short.example.com"]
    everything = api.request("GET", "/api/v1/domains").json["domains"]
    assert [d["certificate"] is not None for d in everything] == [True, False, True]


def test_list_without_a_limit_answers_100_at_a_time():
    """The default page is 100 entries."""
    api = ApiClient.create()
    names = [f"host{i:03}.example.com" for i in range(101)]
    for name in names:
        api.store.domains[name] = make_domain(name)
    first = api.request("GET", "/api/v1/domains").json
    assert [d["hostname"] for d in first["domains"]] == names[:100]
    second = api.request("GET", f"/api/v1/domains?cursor={first['next_cursor']}").json
    assert [d["hostname"] for d in second["domains"]] == names[100:]
    assert second["next_cursor"] is None


def test_list_limit_can_be_500():
    """limit=500, the largest, is taken (501 is a 400)."""
    api = ApiClient.create()
    names = [f"host{i:03}.example.com" for i in range(501)]
    for name in names:
        api.store.domains[name] = make_domain(name)
    doc = api.request("GET", "/api/v1/domains?limit=500").json
    assert [d["hostname"] for d in doc["domains"]] == names[:500]
    assert decode_cursor(doc["next_cursor"]) == names[499]


def test_list_whose_last_page_is_full_ends_with_a_null_cursor():
    """When the hostnames fill the last page exactly, that page says there is no next one."""
    api = ApiClient.create()
    names = [f"host{i}.example.com" for i in range(6)]
    for name in names:
        api.store.domains[name] = make_domain(name)
    first = api.request("GET", "/api/v1/domains?limit=3").json
    assert first["next_cursor"] is not None
    second = api.request("GET", f"/api/v1/domains?limit=3&cursor={first['next_cursor']}").json
    assert [d["hostname"] for d in second["domains"]] == names[3:]
    assert second["next_cursor"] is None


def test_a_page_of_an_unfiltered_listing_is_one_store_read():
    """Without filters a page costs one list_domains call, however many hostnames follow it."""
    api = ApiClient.create()
    for i in range(10):
        api.store.domains[f"host{i}.example.com"] = make_domain(f"host{i}.example.com")
    assert len(api.request("GET", "/api/v1/domains?limit=3").json["domains"]) == 3
    assert api.store.calls.count("list_domains") == 1


def test_list_uses_the_first_of_a_repeated_parameter():
    """?state=failing&state=active filters by failing."""
    api = ApiClient.create()
    api.store.domains["a.example.com"] = make_domain("a.example.com", state=DomainState.FAILING)
    api.store.domains["b.example.com"] = make_domain("b.example.com")
    doc = api.request("GET", "/api/v1/domains?state=failing&state=active").json
    assert [d["hostname"] for d in doc["domains"]] == ["a.example.com"]


def test_list_prefix_is_trimmed_lower_cased_and_unicode_aware():
    """q is matched as a hostname would be: spaces trimmed, any case, unicode labels in their A-label form."""
    api = ApiClient.create()
    for name in ("b.example", "jobs.example.com", "xn--bcher-kva.example"):
        api.store.domains[name] = make_domain(name)
    listed = lambda q: [d["hostname"] for d in api.request("GET", "/api/v1/domains?q=" + q).json["domains"]]
    assert listed("%20JOBS.%20") == ["jobs.example.com"]
    assert listed("B%C3%BCcher") == ["xn--bcher-kva.example"]
    assert listed("%EF%BD%82%C3%BCcher.") == ["xn--bcher-kva.example"]  # a full-width b, as UTS 46 maps it
    assert listed("b.") == ["b.example"]


@pytest.mark.parametrize("q", ["%E2%98%83", "b%C3%BC-", "%FF"], ids=["snowman", "idna-hyphen", "not-utf8"])
def test_list_prefix_that_cannot_start_a_hostname_is_400(q):
    """A q that no hostname can start with (or that is not UTF-8) answers 400 naming q."""
    api = ApiClient.create()
    error = assert_error(api.request("GET", "/api/v1/domains?q=" + q), 400, "bad_request")
    assert error["details"] == {"parameter": "q"}


def test_list_prefix_is_at_most_253_characters():
    """A prefix as long as the longest hostname is taken; one character more is a 400."""
    api = ApiClient.create()
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    api.store.domains[longest] = make_domain(longest)
    doc = api.request("GET", "/api/v1/domains?q=" + longest).json
    assert [d["hostname"] for d in doc["domains"]] == [longest]
    error = assert_error(api.request("GET", "/api/v1/domains?q=" + longest + "d"), 400, "bad_request")
    assert error["details"] == {"parameter": "q"}


def test_prefix_search_reads_only_the_stored_range_of_the_prefix():
    """A prefix search finds matches past the first hundred candidates, reads the store from just before
    the prefix in pages of a hundred, and stops at the first hostname past it: two reads here."""
    api = ApiClient.create()
    names = (
        [f"a{i:03}.example" for i in range(150)]
        + [f"jobs-{i:03}.example" for i in range(150)]
        + [f"jobs.a{i:03}.example" for i in range(150)]
        + ["jobs.b.example"]
        + [f"zz{i:03}.example" for i in range(150)]
    )
    for name in names:
        api.store.domains[name] = make_domain(name)
    doc = api.request("GET", "/api/v1/domains?q=jobs.b&limit=1").json
    assert [d["hostname"] for d in doc["domains"]] == ["jobs.b.example"]
    assert doc["next_cursor"] is None
    assert api.store.calls.count("list_domains") == 2
    api.store.calls.clear()
    doc = api.request("GET", "/api/v1/domains?q=zz&limit=1").json
    assert [d["hostname"] for d in doc["domains"]] == ["zz000.example"]
    assert api.store.calls.count("list_domains") == 1


def test_expiry_filter_finds_a_match_past_the_first_hundred_hostnames(ca):
    """expires_before reads the store in pages of a hundred until it has a page of matches."""
    api = ApiClient.create()
    for i in range(150):
        api.store.domains[f"a{i:03}.example"] = make_domain(f"a{i:03}.example")
    api.store.domains["b.example"] = make_domain("b.example")
    add_certificate(api, ca, "b.example", lifetime=timedelta(days=6))
    doc = api.request("GET", "/api/v1/domains?limit=1&expires_before=2030-01-30T00:00:00Z").json
    assert [d["hostname"] for d in doc["domains"]] == ["b.example"]
    assert api.store.calls.count("list_domains") == 2


def test_expires_before_is_strict(ca):
    """A certificate that ends exactly at expires_before is not listed; one second later it is."""
    api = ApiClient.create()
    api.store.domains["short.example.com"] = make_domain("short.example.com")
    add_certificate(api, ca, "short.example.com", lifetime=timedelta(days=6))  # ends 2030-01-20T12:00:00Z
    listed = lambda when: [
        d["hostname"] for d in api.request("GET", "/api/v1/domains?expires_before=" + when).json["domains"]
    ]
    assert listed("2030-01-20T12:00:00Z") == []
    assert listed("2030-01-20T12:00:01Z") == ["short.example.com"]
    assert listed("%202030-01-20T12:00:01Z%20") == ["short.example.com"]


@pytest.mark.parametrize(
    "query,parameter",
    [
        ("state=bogus", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%21%21", "cursor"),
        ("cursor={tampered}", "cursor"),
        ("expires_before=yesterday", "expires_before"),
        ("q=%3Cscript%3E", "q"),
    ],
)
def test_list_with_a_bad_query_is_400(query, parameter):
    """Each malformed query parameter answers 400 bad_request naming it."""
    api = ApiClient.create()
    query = query.format(tampered=encode_cursor("ok.example.com")[:-2] + "AA")
    error = assert_error(api.request("GET", "/api/v1/domains?" + query), 400, "bad_request")
    assert error["details"]["parameter"] == parameter


def test_cursor_round_trips_and_rejects_non_hostnames():
    """encode_cursor/decode_cursor round-trip a hostname of any length and refuse anything else."""
    for n in range(1, 30):
        hostname = "a" * n + ".example"
        assert decode_cursor(encode_cursor(hostname)) == hostname
    with pytest.raises(ApiError):
        decode_cursor(encode_cursor("A.Example.com"))


# -- one domain --------------------------------------------------------------------------------


def test_show_domain_has_the_certificate_facts_but_never_the_key(ca):
    """GET /api/v1/domains/{hostname} shows issuer, serial, validity and fingerprint, not key_pem."""
    api = registered()
    record = add_certificate(api, ca, HOST)
    doc = api.request("GET", f"/api/v1/domains/{HOST}").json
    certificate = doc["certificate"]
    assert certificate["serial"] == record.serial
    assert certificate["fingerprint_sha256"] == record.fingerprint
    assert certificate["issuer"] == record.issuer
    assert certificate["not_after"] == "2030-04-14T12:00:00Z"
    assert "key_pem" not in certificate and "chain_pem" not in certificate
    assert doc["history"][0]["state"] == "active"
    assert doc["attempts"] == 0 and doc["next_attempt"] is None and doc["last_error"] is None


def test_remove_stops_serving_and_renewing(ca):
    """DELETE marks the record removed (history kept), forgets it, deletes and uncaches the certificate."""
    api = registered()
    add_certificate(api, ca, HOST)
    answer = api.request("DELETE", f"/api/v1/domains/{HOST}")
    assert answer.status == 200
    assert answer.json["state"] == "removed"
    assert answer.json["certificate"] is None
    assert HOST not in api.store.certificates
    stored = api.store.domains[HOST]
    assert stored.state == DomainState.REMOVED
    assert [h.state for h in stored.history] == ["active", "removed"]
    assert stored.history[-1].reason == "removed by the operator"
    assert api.cache.invalidated == [HOST]
    assert api.issuer.calls == [("forget", HOST)]


def test_remove_twice_is_harmless():
    """Removing a removed hostname answers 200 and adds no history entry."""
    api = registered()
    api.request("DELETE", f"/api/v1/domains/{HOST}")
    before = api.store.snapshot()
    assert api.request("DELETE", f"/api/v1/domains/{HOST}").status == 200
    assert api.store.snapshot() == before


def test_remove_with_revoke_revokes_before_deleting(ca):
    """revoke=true asks the issuer to revoke while the certificate is still stored, then removes."""
    api = registered()
    add_certificate(api, ca, HOST)
    answer = api.request("DELETE", f"/api/v1/domains/{HOST}?revoke=true")
    assert answer.status == 200
    assert api.issuer.calls == [("revoke", HOST), ("forget", HOST)]
    assert api.issuer.certificate_at_revoke == [True]
    assert "certificate revoked" in api.store.domains[HOST].history[-1].reason


@pytest.mark.parametrize(
    "flag,revoked",
    [("true", True), ("True", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("No", False),
     ("", False)],
)
def test_remove_reads_the_revoke_flag_in_any_case(ca, flag, revoked):
    """revoke takes true/1/yes and false/0/no (or nothing) in any case."""
    api = registered()
    add_certificate(api, ca, HOST)
    assert api.request("DELETE", f"/api/v1/domains/{HOST}?revoke={flag}").status == 200
    assert (("revoke", HOST) in api.issuer.calls) is revoked
    assert ("certificate revoked" in api.store.domains[HOST].history[-1].reason) is revoked


def test_remove_tells_the_event_sink_once():
    """A removal is reported as the event 'removed' with the removed record; removing again reports nothing."""
    events = RecordingEvents()
    api = registered(events=events)
    api.request("DELETE", f"/api/v1/domains/{HOST}")
    api.request("DELETE", f"/api/v1/domains/{HOST}")
    assert events.calls == [("removed", HOST, DomainState.REMOVED)]


def test_remove_stands_when_the_steps_after_it_fail(ca):
    """If the issuer, the caches or the event sink fail after the record is removed, the answer is still 200,
    the certificate is deleted, and each failure is logged."""
    api = registered(events=RecordingEvents(raises=True))
    add_certificate(api, ca, HOST)
    api.issuer.forget_error = RuntimeError("the issuer is gone")
    api.cache.error = RuntimeError("the cache is gone")
    with capturedLogs() as events:
        answer = api.request("DELETE", f"/api/v1/domains/{HOST}")
    assert answer.status == 200 and answer.json["state"] == "removed"
    assert HOST not in api.store.certificates
    assert api.store.domains[HOST].state == DomainState.REMOVED
    failures = sorted(str(e["log_failure"].value) for e in events if e.get("log_failure") is not None)
    assert failures == ["the cache is gone", "the event sink is broken", "the issuer is gone"]


class VanishingStore(RecordingStore):
    """Another request deletes a domain record right after this one reads it."""

    def get_domain(self, hostname):
        d = super().get_domain(hostname)
        self.domains.pop(hostname, None)
        return d


@pytest.mark.parametrize(
    "method,template,body",
    [("DELETE", "/api/v1/domains/{hostname}", None), ("PUT", "/api/v1/domains/{hostname}/page", PAGE)],
)
def test_record_deleted_while_a_request_runs_is_404(method, template, body):
    """A record that disappears between reading and changing it answers 404, not a 500."""
    api = ApiClient.create(store=VanishingStore())
    api.store.domains[HOST] = make_domain(HOST)
    error = assert_error(send(api, method, template, body), 404, "not_found")
    assert error["details"] == {"hostname": HOST}
    assert api.cache.invalidated == []


def test_remove_with_revoke_refused_by_the_ca_changes_nothing(ca):
    """When the CA refuses the revocation the answer is 502 ca_error and the hostname is still served."""
    api = registered()
    add_certificate(api, ca, HOST)
    api.issuer.revoke_error = AcmeProblem("urn:ietf:params:acme:error:unauthorized", "no", 403)
    before = api.store.snapshot()
    error = assert_error(api.request("DELETE", f"/api/v1/domains/{HOST}?revoke=true"), 502, "ca_error")
    assert error["details"]["problem"]["status"] == 403
    assert api.store.snapshot() == before
    assert api.cache.invalidated == []


@pytest.mark.parametrize(
    "error, code",
    [
        (AcmeTransportError("connection refused", url="https://ca.test/revoke"), "ca_unreachable"),
        (AcmeTimeout("https://ca.test/revoke", "pending", 30.0), "ca_timeout"),
    ],
)
def test_remove_with_revoke_when_the_ca_cannot_answer_changes_nothing(ca, error, code):
    """A CA that cannot be reached (or does not finish) is 502 with the code last_error uses, not ca_error."""
    api = registered()
    add_certificate(api, ca, HOST)
    api.issuer.revoke_error = error
    before = api.store.snapshot()
    assert_error(api.request("DELETE", f"/api/v1/domains/{HOST}?revoke=true"), 502, code)
    assert api.store.snapshot() == before


def test_remove_with_an_unreadable_revoke_flag_is_400(ca):
    """revoke=perhaps is a 400 naming the parameter, with nothing removed and nothing revoked."""
    api = registered()
    add_certificate(api, ca, HOST)
    before = api.store.snapshot()
    assert_error(api.request("DELETE", f"/api/v1/domains/{HOST}?revoke=perhaps"), 400, "bad_request")
    assert api.store.snapshot() == before
    assert [c for c in api.issuer.calls if c[0] != "kick"] == []


def test_issuers_provide_iissuer():
    """The issuing service and the admin tests' stand-in both provide IIssuer."""
    from zope.interface.verify import verifyClass

    from jobhost.issuing import IIssuer, IssuingService

    assert verifyClass(IIssuer, IssuingService)
    assert verifyObject(IIssuer, FakeIssuer())


def test_renew_is_202_and_asks_the_issuer():
    """POST .../renew answers 202 with the record and calls renew_now."""
    api = registered()
    answer = api.request("POST", f"/api/v1/domains/{HOST}/renew")
    assert answer.status == 202
    assert answer.json["hostname"] == HOST
    assert api.issuer.calls == [("renew_now", HOST)]


def test_renew_of_a_hostname_the_issuer_does_not_know_is_404():
    """When the issuer no longer knows the hostname (deleted meanwhile) the renewal answers 404."""
    api = registered()
    api.issuer.renew_error = KeyError(HOST)
    error = assert_error(api.request("POST", f"/api/v1/domains/{HOST}/renew"), 404, "not_found")
    assert error["details"] == {"hostname": HOST}


def test_renew_a_removed_hostname_is_409():
    """A removed hostname cannot be renewed."""
    api = ApiClient.create()
    api.store.domains[HOST] = make_domain(HOST, state=DomainState.REMOVED)
    assert_error(api.request("POST", f"/api/v1/domains/{HOST}/renew"), 409, "conflict")
    assert api.issuer.calls == []


# -- pages -------------------------------------------------------------------------------------


def test_put_page_validates_stores_and_returns_the_normalised_page():
    """PUT .../page stores the normalised page and answers it; GET answers the same."""
    api = registered()
    body = {"company": "  New Co ", "jobs": [{"id": "a", "title": "T", "employment_type": "full_time"}]}
    answer = api.request("PUT", f"/api/v1/domains/{HOST}/page", json_body=body)
    assert answer.status == 200
    expected = {"version": 2, "company": "New Co", "jobs": [{"id": "a", "title": "T", "employment_type": "FULL_TIME"}]}
    assert answer.json == expected
    assert api.store.domains[HOST].page == expected
    assert api.request("GET", f"/api/v1/domains/{HOST}/page").json == expected
    assert api.cache.invalidated == [HOST]
    assert api.cache.kinds == [frozenset({ChangeKind.PAGE})], "the SNI cache keeps the certificate"


def test_put_invalid_page_is_422_with_field_errors():
    """Every problem in the page is reported; the stored page is untouched."""
    api = registered()
    before = api.store.snapshot()
    body = {"company": "Co", "jobs": [{"id": "a", "title": "T"}, {"id": "a", "title": ""}]}
    error = assert_error(api.request("PUT", f"/api/v1/domains/{HOST}/page", json_body=body), 422, "invalid_page")
    assert set(error["details"]["errors"]) == {"jobs[1].id", "jobs[1].title"}
    assert api.store.snapshot() == before


def test_put_page_that_is_not_an_object_is_422():
    """A JSON array is not a page."""
    api = registered()
    error = assert_error(api.request("PUT", f"/api/v1/domains/{HOST}/page", json_body=[1]), 422, "invalid_page")
    assert error["details"]["errors"] == {"": "a careers page must be a JSON object"}


def test_get_page_when_there_is_none_is_404_no_page():
    """A registered hostname without a page answers 404 no_page."""
    api = ApiClient.create()
    api.store.domains[HOST] = make_domain(HOST)
    assert_error(api.request("GET", f"/api/v1/domains/{HOST}/page"), 404, "no_page")


def test_put_page_on_a_removed_hostname_is_409():
    """A removed hostname's page cannot be set."""
    api = ApiClient.create()
    api.store.domains[HOST] = make_domain(HOST, state=DomainState.REMOVED)
    before = api.store.snapshot()
    assert_error(api.request("PUT", f"/api/v1/domains/{HOST}/page", json_body=PAGE), 409, "conflict")
    assert api.store.snapshot() == before


# -- diagnostics -------------------------------------------------------------------------------


def test_diagnostics_all_passing(ca):
    """An active hostname pointing at us with a valid certificate passes every check."""
    api = registered(self_check=lambda hostname: succeed(None))
    add_certificate(api, ca, HOST)
    doc = api.request("GET", f"/api/v1/domains/{HOST}/diagnostics").json
    assert doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == ["state", "dns", "caa", "self_check", "certificate"]
    assert all(c["passed"] is True for c in doc["checks"])
    assert doc["checks"][0]["details"]["last_error"] is None
    assert "89 days left" in doc["checks"][-1]["message"]


def test_diagnostics_explain_failures():
    """Failing DNS, a failing self-check and a missing certificate each fail with a hint."""

    def self_check(hostname):
        return fail(SelfCheckFailed(hostname, f"http://{hostname}/.well-known/acme-challenge/x", "connection refused"))

    api = ApiClient.create(preflight=FakePreflight(passes=False), self_check=self_check)
    api.store.domains[HOST] = make_domain(
        HOST, state=DomainState.FAILING, last_error={"code": "ca_unreachable", "message": "timed out"}
    )
    doc = api.request("GET", f"/api/v1/domains/{HOST}/diagnostics").json
    assert doc["ok"] is False
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["state"]["passed"] is False and "timed out" in checks["state"]["message"]
    assert checks["state"]["details"]["last_error"] == {"code": "ca_unreachable", "message": "timed out"}
    assert checks["state"]["hint"] is None, "no attempt is scheduled"
    assert checks["dns"]["passed"] is False and "203.0.113.10" in checks["dns"]["hint"]
    assert checks["dns"]["message"] == f"{HOST} has A 198.51.100.7, but must point at 203.0.113.10 (A)."
    assert checks["dns"]["details"] == {"found": [f"{HOST} A 198.51.100.7"], "expected": [f"{HOST} A 203.0.113.10"]}
    assert checks["caa"]["passed"] is True
    assert checks["self_check"]["passed"] is False and "connection refused" in checks["self_check"]["message"]
    assert checks["certificate"]["passed"] is False


def diagnose(api: ApiClient, hostname: str = HOST) -> dict:
    """The diagnostics checks of ``hostname`` by name."""
    return {c["name"]: c for c in api.request("GET", f"/api/v1/domains/{hostname}/diagnostics").json["checks"]}


@pytest.mark.parametrize(
    "state,changes,hint",
    [
        (DomainState.REMOVED, {}, "Register it again to serve it."),
        (
            DomainState.PAUSED,
            {"unpause_url": "https://ca.test/unpause/1"},
            "The CA paused issuance; lift the pause at https://ca.test/unpause/1, then renew.",
        ),
        (DomainState.PAUSED, {}, "Issuance is paused after repeated failures; fix the cause, then renew."),
        (
            DomainState.FAILING,
            {"next_attempt": T0 + timedelta(hours=1)},
            "The next attempt is at 2030-01-15T13:00:00Z; fix the cause and renew to try at once.",
        ),
        (DomainState.FAILING, {}, None),
    ],
)
def test_diagnostics_state_check_says_what_to_do(state, changes, hint):
    """A removed, paused or failing hostname fails the state check with the hint that fits it."""
    api = ApiClient.create(preflight=None)
    api.store.domains[HOST] = make_domain(HOST, state=state, **changes)
    check = diagnose(api)["state"]
    assert check["passed"] is False
    assert check["hint"] == hint
    assert check["message"] == (f"{HOST} was removed" if state == DomainState.REMOVED else f"{HOST} is {state}")


@pytest.mark.parametrize(
    "state,hint",
    [
        (DomainState.PENDING, "Issuance is in progress; look again in a minute."),
        (DomainState.ISSUING, "Issuance is in progress; look again in a minute."),
        (DomainState.FAILING, "See the state check's last error; renew to try again."),
    ],
)
def test_diagnostics_without_a_certificate_say_whether_one_is_coming(state, hint):
    """No certificate fails the certificate check; the hint says whether issuance is under way."""
    api = ApiClient.create(preflight=None)
    api.store.domains[HOST] = make_domain(HOST, state=state)
    check = diagnose(api)["certificate"]
    assert (check["passed"], check["message"], check["hint"]) == (False, "no certificate has been issued yet", hint)


def test_diagnostics_certificate_expires_at_its_not_after(ca):
    """A certificate is expired from its notAfter on; one second before, it still passes."""
    api = registered(preflight=None)
    add_certificate(api, ca, HOST, lifetime=timedelta(days=1))  # notAfter is now
    check = diagnose(api)["certificate"]
    assert check["passed"] is False
    assert check["message"] == "the certificate expired at 2030-01-15T12:00:00Z"
    assert check["details"]["seconds_left"] == 0
    add_certificate(api, ca, HOST, lifetime=timedelta(days=1, seconds=1))
    check = diagnose(api)["certificate"]
    assert check["passed"] is True and "(0 days left)" in check["message"]


def test_diagnostics_certificate_for_another_name_fails(ca):
    """A stored certificate that does not name the hostname fails the check."""
    api = registered(preflight=None)
    key_pem, chain_pem = ca.issue("other.example.com", not_before=T0 - timedelta(days=1))
    api.store.certificates[HOST] = certificate_record(HOST, key_pem, chain_pem)
    check = diagnose(api)["certificate"]
    assert (check["passed"], check["message"]) == (False, "the certificate does not name this hostname")
    assert check["hint"] == "Renew now to replace it."


@implementer(IPreflight)
@attrs.define
class CannedPreflight:
    """Answers every check with ``result`` (or fails with ``error``)."""

    result: Any = None
    error: Exception | None = None

    def set_account_uri(self, account_uri) -> None:
        pass

    def check(self, hostname: str) -> Deferred:
        return fail(self.error) if self.error is not None else succeed(self.result)

    def recent_or_check(self, hostname: str, max_age: float = 60.0) -> Deferred:
        return self.check(hostname)


def test_diagnostics_preflight_without_separate_checks():
    """A preflight result without per-part checks shows one passing check, or one failing check per reason."""
    from jobhost.preflight import PreflightReason, PreflightResult, ReasonCode

    api = registered(preflight=CannedPreflight(PreflightResult(hostname=HOST, ok=True)))
    assert diagnose(api)["preflight"] == {
        "name": "preflight", "passed": True, "message": "DNS and CAA allow issuance", "hint": None, "details": {}
    }
    reason = PreflightReason(ReasonCode.DNS_TIMEOUT, "the DNS did not answer", retryable=True, fix="Wait.")
    api = registered(preflight=CannedPreflight(PreflightResult(hostname=HOST, ok=False, reasons=(reason,))))
    assert diagnose(api)["preflight"] == {
        "name": "preflight",
        "passed": False,
        "message": "the DNS did not answer",
        "hint": "Wait.",
        "details": {"code": "dns_timeout", "found": [], "expected": [], "retryable": True},
    }


def test_diagnostics_survive_a_crashing_preflight():
    """A preflight that raises is a failed check saying so, and is logged; the other checks still run."""
    api = registered(preflight=CannedPreflight(error=RuntimeError("resolver exploded")))
    with capturedLogs() as events:
        checks = diagnose(api)
    assert checks["preflight"]["passed"] is False
    assert checks["preflight"]["message"] == "preflight could not run; the daemon's log has the details"
    assert checks["state"]["passed"] is True
    assert [str(e["log_failure"].value) for e in events if e.get("log_failure") is not None] == ["resolver exploded"]


@attrs.frozen
class SelfCheckOutcome:
    passed: bool
    message: str
    fix: str
    details: dict


@pytest.mark.parametrize(
    "outcome",
    [
        {"passed": False, "message": "got HTTP 404", "fix": "Send port 80 here.", "status": 404},
        SelfCheckOutcome(False, "got HTTP 404", "Send port 80 here.", {"status": 404}),
    ],
    ids=["mapping", "object"],
)
def test_diagnostics_show_what_the_self_check_found(outcome):
    """A self-check's own outcome (a mapping or an object) becomes the check: fix as the hint, the rest as details."""
    api = registered(preflight=None, self_check=lambda hostname: succeed(outcome))
    assert diagnose(api)["self_check"] == {
        "name": "self_check", "passed": False, "message": "got HTTP 404", "hint": "Send port 80 here.",
        "details": {"status": 404},
    }


def test_diagnostics_with_checks_disabled_reports_them_as_not_run():
    """Without preflight or self-check those checks are present with passed = null."""
    api = registered(preflight=None)
    doc = api.request("GET", f"/api/v1/domains/{HOST}/diagnostics").json
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["preflight"]["passed"] is None
    assert checks["self_check"]["passed"] is None


def test_diagnostics_survive_a_crashing_check():
    """A self-check that raises is reported as failed and logged, not a 500."""
    api = registered(self_check=lambda hostname: fail(RuntimeError("boom")))
    with capturedLogs() as events:
        doc = api.request("GET", f"/api/v1/domains/{HOST}/diagnostics").json
    assert {c["name"]: c["passed"] for c in doc["checks"]}["self_check"] is False
    assert any(e.get("log_failure") is not None for e in events)


# -- health, metrics, failures -----------------------------------------------------------------


def test_healthz_is_open_and_reports_the_store():
    """/healthz answers 200 with the store's status, without a token."""
    answer = ApiClient.create().request("GET", "/healthz", token=None)
    assert answer.status == 200
    assert answer.json["status"] == "ok"
    assert answer.json["components"]["store"] == {"ok": True, "message": "store present and readable", "critical": True}


def test_healthz_is_503_when_the_store_fails():
    """A store that cannot answer makes /healthz 503 unavailable."""
    api = ApiClient.create()
    api.store.broken = True
    answer = api.request("GET", "/healthz", token=None)
    assert answer.status == 503
    assert answer.json["status"] == "unavailable"
    assert answer.json["components"]["store"]["ok"] is False


def test_healthz_with_a_non_critical_failure_is_degraded():
    """A failing non-critical component (the CA) gives 200 degraded; a critical one gives 503."""
    api = ApiClient.create(
        health=lambda: {"ca": {"ok": False, "message": "unreachable", "critical": False}, "listeners": True}
    )
    answer = api.request("GET", "/healthz", token=None)
    assert (answer.status, answer.json["status"]) == (200, "degraded")
    assert answer.json["components"]["listeners"] == {"ok": True, "message": None, "critical": True}
    api = ApiClient.create(health=lambda: succeed({"listeners": {"ok": False, "message": "https not bound"}}))
    assert api.request("GET", "/healthz", token=None).status == 503


def test_healthz_reports_a_crashing_health_callback_as_a_failed_component():
    """A health callback that raises makes /healthz 503 with a failed 'health' component, and is logged."""

    def health():
        raise RuntimeError("listener table missing")

    api = ApiClient.create(health=health)
    with capturedLogs() as events:
        answer = api.request("GET", "/healthz", token=None)
    assert answer.status == 503
    assert answer.json["components"]["health"] == {
        "ok": False, "message": "health check failed; see the log", "critical": True
    }
    assert [str(e["log_failure"].value) for e in events if e.get("log_failure") is not None] == [
        "listener table missing"
    ]


def test_healthz_waits_five_seconds_for_the_store_by_default():
    """Unless told otherwise /healthz gives a silent store five seconds before answering 503."""

    class SilentStore(RecordingStore):
        def check(self):
            return Deferred()

    api = ApiClient.create(store=SilentStore())
    answers: list = []
    d = api.stub.get("http://admin.invalid/healthz")
    d.addCallback(
        lambda response: api.stub.json_content(response).addCallback(lambda doc: answers.append((response.code, doc)))
    )
    api.stub.flush()
    api.clock.advance(4.9)
    api.stub.flush()
    assert answers == []
    api.clock.advance(0.1)
    api.stub.flush()
    [(status, doc)] = answers
    assert status == 503
    assert "did not answer within 5s" in doc["components"]["store"]["message"]


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/api/v1/domains", None),
        ("GET", f"/api/v1/domains/{HOST}", None),
        ("POST", "/api/v1/domains", {"hostname": HOST}),
        ("PUT", f"/api/v1/domains/{HOST}/page", PAGE),
    ],
)
def test_store_failure_is_503_store_unavailable(method, path, body):
    """A StoreError anywhere answers 503 store_unavailable."""
    api = registered()
    api.store.broken = True
    assert_error(api.request(method, path, json_body=body), 503, "store_unavailable")


def test_unexpected_error_is_500_without_details_and_logged():
    """An unexpected exception answers 500 internal, logs the traceback, and sends none of it."""
    api = registered()
    api.issuer.renew_error = RuntimeError("secret internals")
    with capturedLogs() as events:
        answer = api.request("POST", f"/api/v1/domains/{HOST}/renew")
    error = assert_error(answer, 500, "internal")
    assert b"secret internals" not in answer.body and b"Traceback" not in answer.body
    assert error["details"] == {}
    failures = [e for e in events if e.get("log_failure") is not None]
    assert failures and "secret internals" in str(failures[0]["log_failure"].value)


def test_an_api_error_reads_as_status_code_and_message():
    """str() of an API error (as a log line or a traceback shows it) is its status, code and message."""
    assert str(domain_not_found("x.example.com")) == "404 not_found: x.example.com is not registered"


@pytest.mark.parametrize(
    "status,logged", [(400, False), (422, False), (499, False), (500, True), (502, True), (503, True)]
)
def test_server_errors_are_logged_and_client_errors_are_not(status, logged):
    """An error answered with a 5xx leaves an error line naming the request; a 4xx is the client's and leaves none."""
    with capturedLogs() as events:
        answer = error_response(Failure(ApiError(status, "some_code", "what happened")), "GET", "/api/v1/x")
    assert answer == (status, {}, {"error": {"code": "some_code", "message": "what happened", "details": {}}})
    lines = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]
    assert lines == (["Admin API GET /api/v1/x: %d some_code: what happened" % status] if logged else [])


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("PATCH", "/api/v1/domains", "GET, POST"),
        ("PUT", f"/api/v1/domains/{HOST}", "DELETE, GET"),
        ("GET", f"/api/v1/domains/{HOST}/renew", "POST"),
        ("DELETE", f"/api/v1/domains/{HOST}/page", "GET, PUT"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(method, path, allowed):
    """A method a route does not take answers 405 with the Allow header."""
    api = registered()
    before = api.store.snapshot()
    answer = api.request(method, path)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.header("allow") == allowed
    assert api.store.snapshot() == before


def test_unknown_subresource_is_404():
    """A path below a valid hostname that is no route answers 404."""
    api = registered()
    assert_error(api.request("GET", f"/api/v1/domains/{HOST}/nothing"), 404, "not_found")


# -- a real listener ---------------------------------------------------------------------------


class _RawClient(Protocol):
    """Sends raw bytes, collects the whole answer until the server closes."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.done.callback(self.received)


def _admin_site(resource):
    return admin_site(resource, clock=reactor)


def _post(header: bytes, body: bytes) -> bytes:
    """A registration request with ``header`` (its length or chunking) and ``body``, closing the connection."""
    return (
        b"POST /api/v1/domains HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
        + header + b"\r\n\r\n" + body
    )


class AdminSiteTests(TestCase):
    """admin_site() on a real loopback socket."""

    def _listen(self, max_body_bytes: int, site=_admin_site, store=None):
        """Listen on a loopback port; also returns the requests the resource got, each with ``held``:
        how many body bytes Twisted had buffered for it."""
        store = MemoryStore() if store is None else store
        resource = AdminResource(
            store=store, domains=DomainService(store=store, clock=reactor), issuer=FakeIssuer(),
            clock=reactor, token=TOKEN, max_body_bytes=max_body_bytes
        )
        built = site(resource)
        requests: list = []

        class MeasuredRequest(built.requestFactory):
            def process(self):
                self.held = self.content.seek(0, 2)
                self.content.seek(0)
                requests.append(self)
                super().process()

        built.requestFactory = MeasuredRequest
        port = reactor.listenTCP(0, built, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return store, port.getHost().port, requests

    async def _exchange(self, port: int, payload: bytes) -> bytes:
        client = _RawClient(payload)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        return await client.done

    def test_chunked_body_over_the_limit_is_discarded_and_refused(self):
        """A chunked upload past max_body_bytes is not buffered and answers 413."""
        return self._chunked_upload_is_refused(_admin_site, held_at_most=0)

    def test_chunked_body_over_the_limit_is_refused_by_the_resource_on_a_plain_site(self):
        """Without the body limit on the site the resource itself measures a body with no Content-Length."""
        return self._chunked_upload_is_refused(Site, held_at_most=None)

    def _chunked_upload_is_refused(self, site, held_at_most):
        store, port, requests = self._listen(max_body_bytes=64, site=site)
        chunk = b"x" * 1000
        payload = _post(b"Transfer-Encoding: chunked", (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 50 + b"0\r\n\r\n")

        async def run():
            answer = await self._exchange(port, payload)
            head, _, body = answer.partition(b"\r\n\r\n")
            self.assertIn(b" 413 ", head.split(b"\r\n")[0])
            self.assertEqual(json.loads(body)["error"]["code"], "body_too_large")
            self.assertEqual(store.domains, {})
            if held_at_most is not None:
                self.assertLessEqual(requests[0].held, held_at_most)

        return Deferred.fromCoroutine(run())

    def test_declared_length_over_the_limit_is_refused(self):
        """A Content-Length over max_body_bytes answers 413 once the body is in, without keeping it."""
        store, port, requests = self._listen(max_body_bytes=64)
        body = b'{"hostname": "' + b"a" * 200 + b'.example.com"}'

        async def run():
            answer = await self._exchange(port, _post(b"Content-Length: %d" % len(body), body))
            self.assertIn(b" 413 ", answer.split(b"\r\n")[0])
            self.assertEqual(store.domains, {})
            self.assertEqual([r.held for r in requests], [0])

        return Deferred.fromCoroutine(run())

    def test_declared_length_over_the_limit_is_dropped_from_the_first_byte(self):
        """With a Content-Length over the limit not even the bytes that arrive first are kept."""
        store, port, requests = self._listen(max_body_bytes=64)
        body = json.dumps({"hostname": "a.example.com"}).encode().ljust(100)

        async def run():
            client = _RawClient(_post(b"Content-Length: 100", body[:30]))
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
            await deferLater(reactor, 0.05)
            client.transport.write(body[30:])
            answer = await client.done
            self.assertIn(b" 413 ", answer.split(b"\r\n")[0])
            self.assertEqual([r.held for r in requests], [0])

        return Deferred.fromCoroutine(run())

    def test_body_of_exactly_the_limit_passes_the_site(self):
        """A body of exactly max_body_bytes, declared or chunked, reaches the resource whole and is registered."""
        store, port, requests = self._listen(max_body_bytes=64)
        declared = json.dumps({"hostname": "a.example.com"}).encode().ljust(64)
        chunked = json.dumps({"hostname": "b.example.com"}).encode().ljust(64)
        in_two_chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (chunked[:40], chunked[40:]))

        async def run():
            answer = await self._exchange(port, _post(b"Content-Length: 64", declared))
            self.assertIn(b" 201 ", answer.split(b"\r\n")[0])
            answer = await self._exchange(port, _post(b"Transfer-Encoding: chunked", in_two_chunks + b"0\r\n\r\n"))
            self.assertIn(b" 201 ", answer.split(b"\r\n")[0])
            self.assertEqual(sorted(store.domains), ["a.example.com", "b.example.com"])
            self.assertEqual([r.held for r in requests], [64, 64])

        return Deferred.fromCoroutine(run())

    def test_body_one_byte_over_the_limit_is_not_kept(self):
        """A body one byte over max_body_bytes, declared or chunked, is dropped by the site and answers 413."""
        store, port, requests = self._listen(max_body_bytes=64)
        body = json.dumps({"hostname": "a.example.com"}).encode().ljust(65)

        async def run():
            answer = await self._exchange(port, _post(b"Content-Length: 65", body))
            self.assertIn(b" 413 ", answer.split(b"\r\n")[0])
            answer = await self._exchange(port, _post(b"Transfer-Encoding: chunked", b"41\r\n%s\r\n0\r\n\r\n" % body))
            self.assertIn(b" 413 ", answer.split(b"\r\n")[0])
            self.assertEqual(store.domains, {})
            self.assertEqual([r.held for r in requests], [0, 0])

        return Deferred.fromCoroutine(run())

    def test_an_answer_for_a_client_that_left_is_dropped_quietly(self):
        """When the client hangs up before the answer is ready, nothing is written and nothing is logged."""
        asked: Deferred = Deferred()
        check: Deferred = Deferred()

        class SlowStore(MemoryStore):
            def check(self):
                asked.callback(None)
                return check

        _, port, requests = self._listen(max_body_bytes=64, store=SlowStore())

        async def run():
            client = _RawClient(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
            await asked  # the resource has the request and waits for the store
            gone = requests[0].notifyFinish()
            client.transport.loseConnection()
            await client.done
            with self.assertRaises(Exception):
                await gone  # the server has seen the connection go
            with capturedLogs() as events:
                check.callback(None)
                await deferLater(reactor, 0)
            self.assertEqual([formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn], [])

        return Deferred.fromCoroutine(run())


# -- damage stays local: broken records, a vanished store ----------------------------------------

GOOD, BAD_CERT, BAD_DOMAIN, NO_CERT = "a.example.com", "b.example.com", "c.example.com", "d.example.com"


def directory_api(tmp_path, ca) -> ApiClient:
    """The API over a real directory store (opened) holding four hostnames, two of them damaged.

    a: domain + certificate; b: domain + a certificate file whose chain is cut off;
    c: a domain record file that is not JSON; d: a domain without a certificate.
    """
    from twisted.internet.defer import maybeDeferred

    from jobhost.store.directory import DirectoryStore

    root = tmp_path / "store"
    store = DirectoryStore(str(root), lambda f, *args: maybeDeferred(f, *args))
    results: list = []
    store.open().addBoth(results.append)
    for hostname in (GOOD, BAD_CERT, BAD_DOMAIN, NO_CERT):
        store.put_domain(make_domain(hostname)).addBoth(results.append)
    for hostname in (GOOD, BAD_CERT):
        key_pem, chain_pem = ca.issue(hostname, not_before=T0 - timedelta(days=1))
        store.put_certificate(certificate_record(hostname, key_pem, chain_pem)).addBoth(results.append)
    assert all(not hasattr(r, "raiseException") for r in results), results
    certificate_file = root / "certificates" / f"{BAD_CERT}.json"
    doc = json.loads(certificate_file.read_text())
    certificate_file.write_text(json.dumps(dict(doc, chain_pem=doc["chain_pem"][:300])))
    (root / "domains" / f"{BAD_DOMAIN}.json").write_text('{"hostname": "c.example.com", "state": ')
    return ApiClient.create(store=store)


def test_list_marks_broken_records_and_lists_the_rest(ca, tmp_path):
    """A corrupt certificate file and a corrupt domain record are marked in the listing; the rest list normally."""
    api = directory_api(tmp_path, ca)
    with capturedLogs() as events:
        answer = api.request("GET", "/api/v1/domains")
    assert answer.status == 200
    entries = {e["hostname"]: e for e in answer.json["domains"]}
    assert list(entries) == [GOOD, BAD_CERT, BAD_DOMAIN, NO_CERT]
    assert entries[GOOD]["certificate"]["names"] == [GOOD] and "broken" not in entries[GOOD]
    assert entries[BAD_CERT]["certificate"] is None and entries[BAD_CERT]["state"] == DomainState.ACTIVE
    assert entries[BAD_CERT]["broken"]["record"] == "certificate"
    assert f"{BAD_CERT}.json" in entries[BAD_CERT]["broken"]["reason"]
    assert entries[BAD_DOMAIN] == {
        "hostname": BAD_DOMAIN,
        "hostname_unicode": BAD_DOMAIN,
        "broken": {"record": "domain", "reason": entries[BAD_DOMAIN]["broken"]["reason"]},
    }
    assert "not valid JSON" in entries[BAD_DOMAIN]["broken"]["reason"]
    assert entries[NO_CERT]["certificate"] is None and "broken" not in entries[NO_CERT]
    assert [e for e in events if e["log_level"] >= LogLevel.error] == [], "a listing that shows the damage need not log it"


def test_list_pages_through_broken_records(ca, tmp_path):
    """Paging one entry at a time visits every hostname, broken ones included, and a state filter skips an unreadable record."""
    api = directory_api(tmp_path, ca)
    seen, cursor = [], None
    while True:
        answer = api.request("GET", "/api/v1/domains?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert answer.status == 200
        seen += [e["hostname"] for e in answer.json["domains"]]
        cursor = answer.json["next_cursor"]
        if cursor is None:
            break
    assert seen == [GOOD, BAD_CERT, BAD_DOMAIN, NO_CERT]
    answer = api.request("GET", "/api/v1/domains?state=active")
    assert [e["hostname"] for e in answer.json["domains"]] == [GOOD, BAD_CERT, NO_CERT]
    answer = api.request("GET", "/api/v1/domains?expires_before=2100-01-01T00:00:00Z")
    assert [e["hostname"] for e in answer.json["domains"]] == [GOOD]


def test_show_broken_records(ca, tmp_path):
    """GET of a hostname with a broken certificate marks it; one with a broken domain record is 500 broken_record, not 503."""
    api = directory_api(tmp_path, ca)
    answer = api.request("GET", f"/api/v1/domains/{BAD_CERT}")
    assert answer.status == 200
    assert answer.json["certificate"] is None and answer.json["broken"]["record"] == "certificate"
    error = assert_error(api.request("GET", f"/api/v1/domains/{BAD_DOMAIN}"), 500, "broken_record")
    assert error["details"]["key"] == BAD_DOMAIN and "not valid JSON" in error["details"]["reason"]
    assert api.request("GET", f"/api/v1/domains/{GOOD}").json["certificate"]["names"] == [GOOD]
    assert api.request("GET", "/healthz", token=None).status == 200


def test_healthz_fails_when_the_store_directory_is_deleted(ca, tmp_path):
    """Deleting the store directory makes /healthz 503 with one error line for any number of probes, until it is back."""
    import shutil

    api = directory_api(tmp_path, ca)
    root = tmp_path / "store"
    assert api.request("GET", "/healthz", token=None).status == 200
    shutil.copytree(root, tmp_path / "backup")
    shutil.rmtree(root)
    with capturedLogs() as events:
        answers = [api.request("GET", "/healthz", token=None) for _ in range(5)]
    assert {a.status for a in answers} == {503}
    store = answers[0].json["components"]["store"]
    assert store["ok"] is False and str(root) in store["message"] and "missing" in store["message"]
    [line] = [e for e in events if e["log_level"] >= LogLevel.warn]
    assert line["log_level"] == LogLevel.error and "missing" in line["reason"]
    shutil.copytree(tmp_path / "backup", root)
    with capturedLogs() as events:
        assert api.request("GET", "/healthz", token=None).status == 200
        assert api.request("GET", "/healthz", token=None).status == 200
    assert [e["log_level"] for e in events if "reason" in e] == [LogLevel.info]


def test_healthz_fails_when_the_store_is_replaced(ca, tmp_path):
    """A store directory replaced by a new, empty store (another id) makes /healthz 503."""
    import shutil

    from twisted.internet.defer import maybeDeferred

    from jobhost.store.directory import DirectoryStore

    api = directory_api(tmp_path, ca)
    root = tmp_path / "store"
    shutil.rmtree(root)
    other = DirectoryStore(str(root), lambda f, *args: maybeDeferred(f, *args))
    other.open()
    answer = api.request("GET", "/healthz", token=None)
    assert answer.status == 503
    assert "replaced" in answer.json["components"]["store"]["message"]


def test_healthz_is_503_when_the_store_does_not_answer():
    """A store check that does not answer within health_timeout makes /healthz 503, saying so."""
    from admin_helpers import RecordingStore

    class SilentStore(RecordingStore):
        def check(self):
            return Deferred()

    api = ApiClient.create(store=SilentStore(), health_timeout=2.0)
    answers: list = []
    d = api.stub.get("http://admin.invalid/healthz")
    d.addCallback(
        lambda response: api.stub.json_content(response).addCallback(lambda doc: answers.append((response.code, doc)))
    )
    api.stub.flush()
    assert answers == []
    api.clock.advance(2.5)
    api.stub.flush()
    [(status, doc)] = answers
    assert status == 503
    assert "did not answer within 2s" in doc["components"]["store"]["message"]


def _with_real_issuing(ca):
    """The admin API over the real IssuingService (fake CA, same store and clock)."""
    from jobhost.issuing import IssuingService
    from jobhost.testing import FakeAcmeClient

    api = ApiClient.create()
    client = FakeAcmeClient(ca=ca, clock=api.clock)
    api.resource.issuer = IssuingService(
        store=api.store, domains=api.resource.domains, client=client, clock=api.clock,
        directory_url=client.directory_url, holder="node-a", random=lambda: 0.0,
    )
    return api, client


def test_page_put_racing_an_issuing_attempt_keeps_both(ca):
    """PUT .../page while the registration's order waits on the CA: the new page and the issued state are both stored."""
    api, client = _with_real_issuing(ca)
    client.pause()
    created = api.request("POST", "/api/v1/domains", json_body={"hostname": HOST, "page": PAGE, "skip_preflight": True})
    assert created.status == 201
    assert api.store.domains[HOST].state == DomainState.ISSUING, "the order waits on the CA"
    edited = {**PAGE, "company": "Acme Corp (renamed)"}
    assert api.request("PUT", f"/api/v1/domains/{HOST}/page", json_body=edited).status == 200
    client.resume()
    shown = api.request("GET", f"/api/v1/domains/{HOST}").json
    assert shown["state"] == "active" and shown["certificate"] is not None
    assert api.request("GET", f"/api/v1/domains/{HOST}/page").json == {**edited, "version": 2}


def test_renew_of_a_hostname_removed_meanwhile_is_409(ca):
    """A renewal asked for a hostname another request removed answers 409 conflict naming the state, not a 500."""
    api, client = _with_real_issuing(ca)
    api.request("POST", "/api/v1/domains", json_body={"hostname": HOST, "skip_preflight": True})
    api.resource.domains.remove(HOST, "removed elsewhere")
    answer = api.resource.issuer.renew_now(HOST)
    failure = []
    answer.addErrback(failure.append)
    from jobhost.admin.errors import to_api_error

    error = to_api_error(failure[0].value)
    assert (error.status, error.code) == (409, "conflict")
    assert error.details["state"] == "removed"
