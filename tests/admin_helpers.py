"""
Fakes and checks shared by the admin API, CLI and metrics tests.

The fakes stand in for what jobhost owns (the issuing service, preflight, the
SNI cache); the store is the real :class:`MemoryStore`, wrapped to record
which methods were called.  :class:`ApiClient` drives the real
:class:`AdminResource` through ``treq.testing.StubTreq`` and checks every
response it sees against ``openapi.json``.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timezone
from typing import Any

import attrs
from jsonschema import Draft202012Validator, FormatChecker
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from jobhost.domains import DomainService
from jobhost.admin.api import AdminResource, openapi_document
from jobhost.errors import StoreError
from jobhost.events import IEventSink
from jobhost.issuing import IIssuer
from jobhost.metrics import Metrics
from jobhost.preflight import Check, IPreflight, PreflightReason, PreflightResult, ReasonCode
from jobhost.store.memory import MemoryStore
from jobhost.store.records import DomainRecord, DomainState, StateChange

TOKEN = "test-token-0123456789abcdef"
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)

#: Inputs that are not hostnames, as they appear in a URL path.
INVALID_PATH_HOSTNAMES = {
    "ip": "192.0.2.1",
    "wildcard": "*.example.com",
    "dotdot": "../etc",
    "dotdot-encoded": "%2e%2e%2fetc",
    "too-long": "a" * 300,
    "empty": "",
}

_STORE_METHODS = (
    "get_domain add_domain put_domain delete_domain list_domains get_certificate put_certificate "
    "delete_certificate list_certificates changes put_challenge get_challenge delete_challenge "
    "get_account put_account acquire_lease release_lease check"
).split()


class RecordingStore(MemoryStore):
    """A MemoryStore that records each call, and can be told to fail every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.broken = False

    def snapshot(self) -> tuple:
        """Copies of every dictionary the store holds, to compare before and after a request."""
        return (
            dict(self.domains),
            dict(self.certificates),
            dict(self.challenges),
            dict(self.accounts),
            dict(self.leases),
        )


def _recording(name):
    original = getattr(MemoryStore, name)

    def method(self, *args, **kwargs):
        self.calls.append(name)
        if self.broken:
            return fail(StoreError("disk on fire"))
        return original(self, *args, **kwargs)

    method.__name__ = name
    return method


for _name in _STORE_METHODS:
    setattr(RecordingStore, _name, _recording(_name))


@implementer(IIssuer)
@attrs.define
class FakeIssuer:
    """Records what the admin API asks of the issuing service."""

    store: Any = None
    calls: list[tuple[str, str]] = attrs.field(factory=list)
    revoke_error: Exception | None = None
    renew_error: Exception | None = None
    kick_error: Exception | None = None
    forget_error: Exception | None = None
    certificate_at_revoke: list[bool] = attrs.field(factory=list)

    def kick(self, hostname: str) -> None:
        self.calls.append(("kick", hostname))
        if self.kick_error is not None:
            raise self.kick_error

    def renew_now(self, hostname: str) -> Deferred:
        self.calls.append(("renew_now", hostname))
        if self.renew_error is not None:
            return fail(self.renew_error)
        return succeed(None)

    def forget(self, hostname: str) -> Deferred:
        self.calls.append(("forget", hostname))
        if self.forget_error is not None:
            return fail(self.forget_error)
        return succeed(None)

    def revoke(self, hostname: str) -> Deferred:
        self.calls.append(("revoke", hostname))
        if self.store is not None:
            self.certificate_at_revoke.append(hostname in self.store.certificates)
        if self.revoke_error is not None:
            return fail(self.revoke_error)
        return succeed(None)


def passing_result(hostname: str) -> PreflightResult:
    """What preflight says about a hostname that points at us."""
    return PreflightResult(
        hostname=hostname,
        ok=True,
        checks=(
            Check("dns", True, f"{hostname} has A 203.0.113.10, all ours."),
            Check("caa", True, f"No CAA records apply to {hostname}, so any CA may issue for it."),
        ),
    )


def failing_result(hostname: str) -> PreflightResult:
    """What preflight says about a hostname that points elsewhere."""
    reason = PreflightReason(
        ReasonCode.POINTS_ELSEWHERE,
        f"{hostname} has A 198.51.100.7, but must point at 203.0.113.10 (A).",
        found=(f"{hostname} A 198.51.100.7",),
        expected=(f"{hostname} A 203.0.113.10",),
        fix=f"In the DNS for {hostname}, set its A/AAAA records to 203.0.113.10.",
    )
    return PreflightResult(
        hostname=hostname,
        ok=False,
        reasons=(reason,),
        checks=(
            Check("dns", False, reason.message, reason.fix, reason.found, reason.expected),
            Check("caa", True, "No CAA records apply."),
        ),
    )


@implementer(IPreflight)
@attrs.define
class FakePreflight:
    """Answers every check with a canned passing or failing result, and records the names asked.

    It remembers nothing, so ``recent_or_check`` always checks afresh (the contract allows it).
    """

    passes: bool = True
    asked: list[str] = attrs.field(factory=list)

    def set_account_uri(self, account_uri) -> None:
        """Nothing to learn: the canned answers do not look at CAA."""

    def check(self, hostname: str) -> Deferred:
        self.asked.append(hostname)
        return succeed(passing_result(hostname) if self.passes else failing_result(hostname))

    def recent_or_check(self, hostname: str, max_age: float = 60.0) -> Deferred:
        return self.check(hostname)


@attrs.define
class FakeCertificateCache:
    """Records which hostnames were invalidated, and for what kinds of change; can be told to raise."""

    invalidated: list[str] = attrs.field(factory=list)
    kinds: list = attrs.field(factory=list)
    error: Exception | None = None

    def invalidate(self, hostname: str, kinds=None) -> None:
        self.invalidated.append(hostname)
        self.kinds.append(kinds)
        if self.error is not None:
            raise self.error


@implementer(IEventSink)
@attrs.define
class RecordingEvents:
    """Records every notify call as (event, hostname, state); with ``raises`` it breaks the contract."""

    calls: list = attrs.field(factory=list)
    raises: bool = False

    def notify(self, event, record, certificate=None):
        self.calls.append((event, record.hostname, record.state))
        if self.raises:
            raise RuntimeError("the event sink is broken")


def make_domain(hostname: str, state: str = DomainState.ACTIVE, page: dict | None = None, **changes) -> DomainRecord:
    """A domain record created at T0."""
    return DomainRecord(
        hostname=hostname,
        state=state,
        created_at=T0,
        updated_at=T0,
        page=page,
        history=(StateChange(at=T0, state=state, reason="test"),),
        **changes,
    )


# -- the OpenAPI document as an oracle --------------------------------------------------------


@functools.cache
def spec() -> dict:
    """The parsed openapi.json (parsed once; do not modify it)."""
    return json.loads(openapi_document())


def template_for(path: str) -> str | None:
    """The documented path template a request path falls under, or None."""
    raw = path.split("?", 1)[0]
    parts = raw[1:].split("/")  # as twisted.web splits: a trailing slash is an empty segment
    if parts[:3] == ["api", "v1", "domains"] and len(parts) >= 4:
        parts = ["api", "v1", "domains", "{hostname}", *parts[4:]]
    template = "/" + "/".join(parts)
    return template if template in spec()["paths"] else None


def _resolve(document: dict, node: dict) -> dict:
    while "$ref" in node and len(node) == 1:
        pointer = node["$ref"].removeprefix("#/").split("/")
        node = document
        for key in pointer:
            node = node[key]
    return node


def documented_response(method: str, path: str, status: int) -> dict | None:
    """The response object openapi.json gives for ``method path -> status``; None if undocumented."""
    document = spec()
    template = template_for(path)
    if template is None:
        return None
    operation = document["paths"][template].get(method.lower())
    if operation is None:
        return None
    response = operation["responses"].get(str(status))
    return None if response is None else _resolve(document, response)


def check_against_spec(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Assert the response is documented and its JSON body matches the documented schema.

    Requests to unknown paths or with undocumented methods must answer with the
    error shape (404/405).
    """
    document = spec()
    response = documented_response(method, path, status)
    template = template_for(path)
    if response is None:
        operation = document["paths"].get(template or "", {}).get(method.lower())
        assert operation is None, f"{method} {path} -> {status} is not documented"
        # Unknown paths: 401 under /api/v1 without a token, 422 for a bad hostname segment,
        # else 404; known paths with another method: 405.
        assert status in (401, 404, 405, 422), f"undocumented {method} {path} answered {status}"
        schema: dict = {"$ref": "#/components/schemas/Error"}
        media = "application/json"
    else:
        (media, content), = response["content"].items()
        schema = content["schema"]
    assert content_type.split(";")[0].strip() == media, (content_type, media)
    if media != "application/json":
        return
    validator = Draft202012Validator(
        {**schema, "components": document["components"]}, format_checker=FormatChecker()
    )
    instance = json.loads(body)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{method} {path} -> {status}: {errors[0].message} at {list(errors[0].path)}"


# -- driving the resource -------------------------------------------------------------------


@attrs.frozen
class Answer:
    """One response, read completely."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


@attrs.define
class ApiClient:
    """The real AdminResource over StubTreq, with recording fakes around it."""

    store: RecordingStore
    issuer: Any
    preflight: FakePreflight | None
    cache: FakeCertificateCache
    clock: Clock
    metrics: Metrics | None
    resource: AdminResource
    stub: StubTreq
    answers: list[Answer] = attrs.field(factory=list)

    @classmethod
    def create(cls, issuer: Any = None, preflight: Any = "default", store: Any = None, **options: Any) -> ApiClient:
        """The resource over ``store`` (by default a new :class:`RecordingStore`) and fakes.

        ``options`` go to :class:`AdminResource`; ``max_body_bytes`` is 4096 unless given
        (None: the resource's own default), ``metrics`` a new :class:`Metrics` unless given.
        """
        store = RecordingStore() if store is None else store
        clock = Clock()
        clock.advance(T0.timestamp())
        if issuer is None:
            issuer = FakeIssuer(store=store)
        if preflight == "default":
            preflight = FakePreflight()
        cache = FakeCertificateCache()
        metrics = options.setdefault("metrics", Metrics())
        if options.setdefault("max_body_bytes", 4096) is None:
            del options["max_body_bytes"]
        resource = AdminResource(
            store=store,
            domains=DomainService(store=store, clock=clock),
            issuer=issuer,
            clock=clock,
            token=TOKEN,
            preflight=preflight,
            caches=cache,
            **options,
        )
        return cls(store, issuer, preflight, cache, clock, metrics, resource, StubTreq(resource))

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = TOKEN,
    ) -> Answer:
        """Send one request and return the answer, checked against openapi.json."""
        all_headers = {}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        results: list = []
        d = self.stub.request(method, "http://admin.invalid" + path, headers=all_headers, data=data)
        d.addCallback(
            lambda response: self.stub.content(response).addCallback(
                lambda body: results.append(
                    Answer(
                        response.code,
                        {k.decode().lower(): [v.decode() for v in vs] for k, vs in response.headers.getAllRawHeaders()},
                        body,
                    )
                )
            )
        )
        d.addErrback(results.append)
        self.stub.flush()
        assert results, f"{method} {path} got no answer"
        answer = results[0]
        if not isinstance(answer, Answer):
            answer.raiseException()
        assert b"PRIVATE KEY" not in answer.body
        assert all("PRIVATE KEY" not in v for vs in answer.headers.values() for v in vs)
        check_against_spec(method, path, answer.status, answer.header("content-type") or "", answer.body)
        self.answers.append(answer)
        return answer


def assert_error(answer: Answer, status: int, code: str) -> dict:
    """Assert ``answer`` is the one error shape with ``status`` and ``code``; return its error object."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.header("content-type") == "application/json"
    doc = answer.json
    assert set(doc) == {"error"}
    assert set(doc["error"]) == {"code", "message", "details"}
    assert doc["error"]["code"] == code, doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]
    return doc["error"]


__all__ = [
    "Answer",
    "ApiClient",
    "FakeCertificateCache",
    "FakeIssuer",
    "FakePreflight",
    "INVALID_PATH_HOSTNAMES",
    "RecordingEvents",
    "RecordingStore",
    "T0",
    "TOKEN",
    "assert_error",
    "check_against_spec",
    "documented_response",
    "failing_result",
    "make_domain",
    "passing_result",
    "spec",
    "template_for",
]
