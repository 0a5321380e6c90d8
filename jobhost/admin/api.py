"""
The admin API: JSON over HTTP on the admin listener, protected by a bearer token.

This module owns the routes of :class:`AdminResource` (the root resource of
the admin listener), how request bodies are read and limited, and the JSON
form of what they return.  Errors are raised, never rendered here: the one
exception -> status mapping lives in :mod:`jobhost.admin.errors`.  The
document ``openapi.json`` beside this file describes every route; a test
keeps the two in step.

Routes (``{hostname}`` is a hostname in unicode or punycode form, URL-encoded)::

    GET    /healthz                                  no token
    GET    /metrics                                  token unless metrics_public
    GET    /api/v1/openapi.json                      no token
    POST   /api/v1/domains                           register (preflight first)
    GET    /api/v1/domains                           list: state, q, expires_before, limit, cursor
    GET    /api/v1/domains/{hostname}                record + certificate (never the key)
    DELETE /api/v1/domains/{hostname}[?revoke=true]  stop serving and renewing; 200 + record
    POST   /api/v1/domains/{hostname}/renew          force an attempt; 202
    GET    /api/v1/domains/{hostname}/page           the careers page; 404 no_page
    PUT    /api/v1/domains/{hostname}/page           replace the careers page
    GET    /api/v1/domains/{hostname}/diagnostics    fresh DNS/CAA/self-check + certificate
    GET    /api/v1/check?hostname=                   DNS/CAA/self-check for a name, registered or not

The order of checks for one request, so that the cheapest refusal wins and
nothing is read or written for a refused request: token (401), hostname in
the path (422; the store is never touched for an invalid one), route (404),
method (405), body size (413), content type (415), JSON (400), then the
route itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Awaitable, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, TimeoutError, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from jobhost.admin import errors as api_errors
from jobhost.admin.auth import single_authorization, token_matches
from jobhost.certs import renewal_time
from jobhost.domains import DomainService
from jobhost.events import IEventSink, NullEventSink
from jobhost.issuing import IIssuer
from jobhost.preflight import IPreflight
from jobhost.errors import (
    BrokenRecord,
    InvalidHostname,
    PreflightFailed,
    SelfCheckFailed,
    StoreError,
    TransitionForbidden,
    describe_exception,
)
from jobhost.hostnames import normalise_hostname, to_unicode
from jobhost.metrics import CONTENT_TYPE_LATEST
from jobhost.pagedoc import upgrade_page, validate_page
from jobhost.store.records import CertificateRecord, ChangeKind, DomainRecord, DomainState
from jobhost.timeutil import from_iso, to_iso
from jobhost.timeutil import now as clock_now

#: Default cap on request bodies (the config's ``[admin] max_body_bytes``).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

#: Default and largest ``limit`` of ``GET /api/v1/domains``.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 500

#: Seconds ``/healthz`` waits for the store before calling it unavailable.
HEALTH_TIMEOUT = 5.0

_JSON = "application/json"

#: States in which a domain is on its way to, or holds, a working certificate.
_HEALTHY_STATES = (DomainState.PENDING, DomainState.ISSUING, DomainState.ACTIVE, DomainState.RENEWING)


@attrs.frozen
class Route:
    """One path template and the handler method name for each HTTP method.

    Attributes:
        template: The documented path, e.g. ``/api/v1/domains/{hostname}/page``.
        methods: HTTP method -> name of an :class:`AdminResource` coroutine method.
    """

    template: str
    methods: Mapping[str, str]


#: Every route the resource serves.  Which need the token is decided by the path, before the
#: route is looked up (see ``AdminResource._dispatch``): everything under ``/api/v1`` except
#: ``openapi.json``, and ``/metrics`` unless ``metrics_public``.
ROUTES: tuple[Route, ...] = (
    Route("/healthz", {"GET": "_healthz"}),
    Route("/metrics", {"GET": "_metrics"}),
    Route("/api/v1/openapi.json", {"GET": "_openapi"}),
    Route("/api/v1/domains", {"GET": "_list_domains", "POST": "_add_domain"}),
    Route("/api/v1/domains/{hostname}", {"GET": "_show_domain", "DELETE": "_remove_domain"}),
    Route("/api/v1/domains/{hostname}/renew", {"POST": "_renew"}),
    Route("/api/v1/domains/{hostname}/page", {"GET": "_show_page", "PUT": "_put_page"}),
    Route("/api/v1/domains/{hostname}/diagnostics", {"GET": "_diagnostics"}),
    Route("/api/v1/check", {"GET": "_check_hostname"}),
)

_ROUTES_BY_SHAPE = {tuple(r.template.strip("/").split("/")): r for r in ROUTES}


@cache
def openapi_document() -> bytes:
    """The bytes of ``openapi.json`` (read once from the package, then cached)."""
    return resources.files("jobhost.admin").joinpath("openapi.json").read_bytes()


@attrs.frozen
class _Response:
    status: int
    body: Any
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content_type: str = _JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def parse_json(raw: bytes) -> Any:
    """Decode a request body strictly: UTF-8, no NaN/Infinity, no duplicate keys.

    Raises:
        ApiError: 400 ``bad_json`` saying what is wrong.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise api_errors.bad_json("the body is not UTF-8 text") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except RecursionError:
        raise api_errors.bad_json("the JSON is nested too deeply") from None
    except ValueError as e:
        raise api_errors.bad_json(f"the body is not valid JSON: {e}") from None


def encode_cursor(hostname: str) -> str:
    """The opaque paging cursor that resumes a listing after ``hostname``."""
    return base64.urlsafe_b64encode(hostname.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The hostname inside a cursor from :func:`encode_cursor`.

    Raises:
        ApiError: 400 ``bad_request`` for anything else.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        hostname = raw.decode("ascii")
        if normalise_hostname(hostname) != hostname:
            raise ValueError(hostname)
    except (binascii.Error, ValueError, UnicodeError, InvalidHostname):
        raise api_errors.bad_request("cursor is not one this API returned", parameter="cursor") from None
    return hostname


def broken_json(record_kind: str, error: BrokenRecord) -> dict[str, Any]:
    """The ``broken`` marker of an entry: which stored record cannot be used (``domain`` or
    ``certificate``), and why."""
    return {"record": record_kind, "reason": error.message}


def domain_json(
    record: DomainRecord, certificate: CertificateRecord | None, broken: BrokenRecord | None = None
) -> dict[str, Any]:
    """A domain record as the API shows it, with its certificate's public facts (never the key).

    Args:
        record: The domain record.
        certificate: Its certificate record, or None when there is none (or it is broken).
        broken: The certificate record's read failure, when it is stored but cannot be
            used; shown as ``"broken": {"record": "certificate", "reason": ...}``.
    """
    doc = record.to_json()
    doc["page"] = upgrade_page(record.page)  # stored as version 1 or 2, shown as version 2
    doc["hostname_unicode"] = to_unicode(record.hostname)
    doc["certificate"] = certificate.public_json() if certificate is not None else None
    if broken is not None:
        doc["broken"] = broken_json("certificate", broken)
    return doc


def broken_domain_json(error: BrokenRecord) -> dict[str, Any]:
    """The listing entry of a hostname whose domain record is stored but cannot be read."""
    return {
        "hostname": error.key,
        "hostname_unicode": to_unicode(error.key),
        "broken": broken_json("domain", error),
    }


def _listed_hostname(item: DomainRecord | BrokenRecord) -> str:
    return item.key if isinstance(item, BrokenRecord) else item.hostname


def _check(
    name: str,
    passed: bool | None,
    message: str,
    hint: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One diagnostics entry; ``passed`` is None when the check was not run."""
    return {"name": name, "passed": passed, "message": message, "hint": hint or None, "details": dict(details or {})}


def _check_from(name: str, outcome: Any) -> dict[str, Any]:
    """Turn a check object from preflight or the self-check into a diagnostics entry.

    Accepts anything with ``to_json()``, a mapping, or an object with
    ``passed``/``message`` attributes; ``fix`` is shown as the hint, and every
    other field goes into ``details``.
    """
    if hasattr(outcome, "to_json"):
        doc = dict(outcome.to_json())
    elif isinstance(outcome, Mapping):
        doc = dict(outcome)
    else:
        fields = ("name", "passed", "message", "hint", "fix", "details")
        doc = {k: getattr(outcome, k) for k in fields if hasattr(outcome, k)}
    passed = doc.pop("passed", doc.pop("ok", None))
    message = str(doc.pop("message", "") or "")
    hint = doc.pop("hint", None) or doc.pop("fix", None)
    details = doc.pop("details", None) or {}
    doc.pop("fix", None)
    name = str(doc.pop("name", name) or name)
    details = {**{k: v for k, v in doc.items() if v is not None}, **dict(details)}
    return _check(name, None if passed is None else bool(passed), message, hint, details)


def _query(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise api_errors.bad_request(f"query parameter {name} is not UTF-8", parameter=name) from None


def _query_bool(request: Request, name: str) -> bool:
    value = _query(request, name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise api_errors.bad_request(f"query parameter {name} must be true or false", parameter=name)


def _prefix(value: str) -> str:
    """A hostname prefix for ``q``: ASCII lower case, or the A-label form of whole unicode labels."""
    text = value.strip().lower()
    if not text.isascii():
        try:
            import idna

            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise api_errors.bad_request("q must be the start of a hostname", parameter="q") from None
    if any(not (c.isalnum() or c in ".-") for c in text) or len(text) > 253:
        raise api_errors.bad_request("q must be the start of a hostname", parameter="q")
    return text


@attrs.define(eq=False)
class AdminResource(Resource):
    """The admin listener's root resource (see the module docstring for the routes).

    Attributes:
        store: The IStore (read only: domain records change through ``domains``).
        domains: The :class:`jobhost.domains.DomainService` every domain change goes through.
        issuer: The :class:`jobhost.issuing.IIssuer` (its ``revoke`` reads the certificate
            from the store: it is called before the certificate is deleted).
        clock: Time for records and timeouts.
        token: The bearer token every ``/api/v1`` route except ``openapi.json`` requires.
        metrics: A :class:`jobhost.metrics.Metrics` for ``/metrics``, or None (then 404).
        preflight: The :class:`jobhost.preflight.IPreflight`, or None when disabled.
        self_check: ``hostname -> Deferred`` firing with a check (``passed``, ``message``,
            ...) or None for "passed", failing with ``SelfCheckFailed``; or None.
        caches: Has ``invalidate(hostname, kinds=None)``: the per-hostname caches (SNI contexts, rendered pages), or None.
        health: ``() -> dict or Deferred[dict]`` of component name -> ``{"ok": bool,
            "message": str, "critical": bool}`` (or a bare bool) for ``/healthz``, e.g.
            listeners and CA; the store is always probed here.  Or None.
        page_validator: ``doc -> dict`` raising ``PageInvalid``; by default
            :func:`jobhost.pagedoc.validate_page`.
        max_body_bytes: Largest request body accepted (413 above it).
        metrics_public: Serve ``/metrics`` without a token (for Prometheus scrapers
            on a trusted network).  Default False: scrapers send the token with
            ``authorization: {credentials_file: ...}``.
        health_timeout: Seconds ``/healthz`` waits for each probe.
        events: The :class:`jobhost.events.IEventSink` told ``removed`` when a DELETE
            removes a hostname (by default one that drops events).
    """

    log = Logger()
    isLeaf = True

    store: Any
    domains: DomainService
    issuer: IIssuer
    clock: IReactorTime
    token: str = attrs.field(repr=False)
    metrics: Any = None
    preflight: IPreflight | None = None
    self_check: Callable[[str], Deferred] | None = None
    caches: Any = None
    health: Callable[[], Any] | None = None
    page_validator: Callable[[Any], dict] = validate_page
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    metrics_public: bool = False
    health_timeout: float = HEALTH_TIMEOUT
    events: IEventSink = attrs.field(factory=NullEventSink)
    #: The browser dashboard (:class:`jobhost.admin.dashboard.Dashboard`), or None: it serves
    #: ``/`` and the paths it claims (``Dashboard.handles``); the JSON API keeps the rest.
    dashboard: Any = None
    #: Why the last /healthz store probe failed, or None: its failure is logged once per transition.
    _store_failing: str | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    # -- plumbing ---------------------------------------------------------------------------

    def render(self, request: Request) -> Any:
        """Answer asynchronously: every route's result (or error) is written when ready."""
        if self.dashboard is not None and self.dashboard.handles(request.postpath):
            return self.dashboard.render(request)
        finished = {"lost": False}
        request.notifyFinish().addErrback(lambda _: finished.update(lost=True))
        d = Deferred.fromCoroutine(self._respond(request))
        d.addCallback(lambda response: self._write(request, response, finished["lost"]))
        d.addErrback(lambda f: self.log.failure("Writing an admin API response failed", f))
        return NOT_DONE_YET

    async def _respond(self, request: Request) -> _Response:
        method = request.method.decode("ascii", "replace")
        try:
            response = await self._dispatch(request, method)
            return attrs.evolve(response, body=self._serialise(response))
        except Exception:
            status, headers, body = api_errors.error_response(
                Failure(), method, request.path.decode("ascii", "replace")
            )
            return _Response(status, self._serialise(_Response(status, body)), headers)

    @staticmethod
    def _serialise(response: _Response) -> bytes:
        if isinstance(response.body, bytes):
            return response.body
        # ASCII-only JSON: hostnames and page text appear as \u escapes, which every client reads.
        return json.dumps(response.body, separators=(",", ":")).encode("ascii") + b"\n"

    def _write(self, request: Request, response: _Response, lost: bool) -> None:
        if lost:
            return
        payload = response.body
        request.setResponseCode(response.status)
        request.setHeader(b"Content-Type", response.content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        for name, value in response.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("utf-8"))
        request.setHeader(b"Content-Length", str(len(payload)).encode("ascii"))
        request.write(payload)
        request.finish()

    async def _dispatch(self, request: Request, method: str) -> _Response:
        segments = [s.decode("utf-8", "replace") for s in request.postpath]
        needs_token = segments[:2] == ["api", "v1"] and segments != ["api", "v1", "openapi.json"]
        if segments == ["metrics"]:
            needs_token = not self.metrics_public
        if needs_token and not token_matches(self.token, _authorization(request)):
            raise api_errors.unauthorized()
        hostname = None
        shape = tuple(segments)
        if segments[:3] == ["api", "v1", "domains"] and len(segments) >= 4:
            # Validate the name before anything else: an invalid one never reaches the store.
            hostname = self._path_hostname(request.postpath[3])
            shape = ("api", "v1", "domains", "{hostname}", *segments[4:])
        route = _ROUTES_BY_SHAPE.get(shape)
        if route is None:
            raise api_errors.route_not_found(request.path.decode("ascii", "replace"))
        handler_name = route.methods.get(method)
        if handler_name is None:
            raise api_errors.method_not_allowed(method, sorted(route.methods))
        handler: Callable[..., Awaitable[_Response]] = getattr(self, handler_name)
        if hostname is None:
            return await handler(request)
        return await handler(request, hostname)

    @staticmethod
    def _path_hostname(raw: bytes) -> str:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidHostname(value=repr(raw)[:300], reason="not UTF-8 text") from None
        return normalise_hostname(text)

    def _json_body(self, request: Request) -> Any:
        """Read, limit and parse the request body (413, 415, 400 in that order)."""
        limit = self.max_body_bytes
        if getattr(request, "body_too_large", False):
            raise api_errors.body_too_large(limit)
        # Twisted reads the whole body (exactly Content-Length bytes, or every chunk) before
        # rendering, so measuring what it holds covers a declared length too.
        content = request.content
        content.seek(0)
        raw = content.read(limit + 1)
        if len(raw) > limit:
            raise api_errors.body_too_large(limit)
        content_type = request.getHeader(b"content-type")
        media, _, params = (content_type or b"").decode("latin-1").partition(";")
        charset = params.strip().lower().replace('"', "")
        if media.strip().lower() != _JSON or (charset and charset not in ("charset=utf-8", "charset=utf8")):
            raise api_errors.unsupported_media_type(content_type.decode("latin-1") if content_type else None)
        if not raw.strip():
            raise api_errors.bad_json("the body is empty; send a JSON document")
        return parse_json(raw)

    def _now(self) -> datetime:
        return clock_now(self.clock)

    async def _get_domain(self, hostname: str) -> DomainRecord:
        try:
            return await self.store.get_domain(hostname)
        except KeyError:
            raise api_errors.domain_not_found(hostname) from None

    async def _certificate(self, hostname: str) -> CertificateRecord | None:
        try:
            return await self.store.get_certificate(hostname)
        except KeyError:
            return None

    async def _certificate_or_broken(self, hostname: str) -> tuple[CertificateRecord | None, BrokenRecord | None]:
        """``(certificate, None)``, ``(None, None)`` when there is none, or ``(None, why)`` when it is broken."""
        try:
            return await self.store.get_certificate(hostname), None
        except KeyError:
            return None, None
        except BrokenRecord as e:
            return None, e

    async def _certificates_or_broken(
        self, hostnames: list[str]
    ) -> list[tuple[CertificateRecord | None, BrokenRecord | None]]:
        if not hostnames:
            return []
        return await gatherResults(
            [Deferred.fromCoroutine(self._certificate_or_broken(h)) for h in hostnames], consumeErrors=True
        ).addErrback(lambda f: f.value.subFailure)

    def _validate_page(self, doc: Any) -> dict[str, Any]:
        return self.page_validator(doc)

    def _kick(self, hostname: str) -> None:
        try:
            self.issuer.kick(hostname)
        except Exception:
            # Registration is stored; the issuing service's periodic scan will find it.
            self.log.failure("Could not start issuance for {hostname}", hostname=hostname)

    # -- /healthz, /metrics, openapi.json -------------------------------------------------------

    async def _probe_store(self) -> dict[str, Any]:
        """Run ``store.check()`` (bounded by ``health_timeout``); log its failure once per transition."""
        probe = maybeDeferred(self.store.check)
        probe.addTimeout(self.health_timeout, self.clock)
        try:
            await probe
        except Exception as e:
            if isinstance(e, StoreError):
                reason = e.message
            elif isinstance(e, TimeoutError):
                reason = f"the store did not answer within {self.health_timeout:g}s"
            else:
                reason = describe_exception(e)
            if self._store_failing is None:
                self.log.error(
                    "Store health check failed; /healthz answers 503 until it passes: {reason}", reason=reason
                )
            self._store_failing = reason
            return {"ok": False, "message": f"store not usable: {reason}", "critical": True}
        if self._store_failing is not None:
            self.log.info("Store health check passes again (it failed: {reason})", reason=self._store_failing)
            self._store_failing = None
        return {"ok": True, "message": "store present and readable", "critical": True}

    async def _healthz(self, request: Request) -> _Response:
        components: dict[str, dict[str, Any]] = {"store": await self._probe_store()}
        if self.health is not None:
            try:
                extra = await maybeDeferred(self.health)
            except Exception:
                self.log.failure("Health callback failed")
                extra = {"health": {"ok": False, "message": "health check failed; see the log"}}
            for name, value in dict(extra).items():
                if isinstance(value, bool):
                    value = {"ok": value}
                components[str(name)] = {
                    "ok": bool(value.get("ok")),
                    "message": value.get("message"),
                    "critical": bool(value.get("critical", True)),
                }
        if all(c["ok"] for c in components.values()):
            status = "ok"
        elif all(c["ok"] for c in components.values() if c["critical"]):
            status = "degraded"
        else:
            status = "unavailable"
        body = {"status": status, "components": components}
        return _Response(503 if status == "unavailable" else 200, body)

    async def _metrics(self, request: Request) -> _Response:
        if self.metrics is None:
            raise api_errors.route_not_found("/metrics")
        await self.metrics.refresh_remote()  # worker processes' counters as of now
        return _Response(200, self.metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    async def _openapi(self, request: Request) -> _Response:
        return _Response(200, openapi_document(), content_type=_JSON)

    # -- /api/v1/domains ----------------------------------------------------------------------

    async def _add_domain(self, request: Request) -> _Response:
        body = self._json_body(request)
        if not isinstance(body, dict):
            raise api_errors.bad_request("the body must be a JSON object")
        unknown = sorted(set(body) - {"hostname", "page", "skip_preflight"})
        if unknown:
            raise api_errors.bad_request(f"unknown field {unknown[0]!r}", field=unknown[0])
        if not isinstance(body.get("hostname"), str):
            raise api_errors.bad_request("hostname is required and must be a string", field="hostname")
        skip_preflight = body.get("skip_preflight", False)
        if not isinstance(skip_preflight, bool):
            raise api_errors.bad_request("skip_preflight must be true or false", field="skip_preflight")
        hostname = normalise_hostname(body["hostname"])
        page = body.get("page")
        if page is not None:
            # Checked before preflight: no DNS query is spent on a request that would fail anyway.
            page = self._validate_page(page)
        existing = await self._existing(hostname)
        if existing is not None:
            return await self._already_registered(existing, page)
        if not skip_preflight and self.preflight is not None:
            result = await self.preflight.check(hostname)
            if not result.ok:
                raise PreflightFailed(hostname=hostname, reasons=tuple(result.reasons), retryable=result.retryable)
        reason = "registered" + (" (preflight skipped)" if skip_preflight else "")
        # Registered by someone else while preflight ran: answer as for any repeat.
        record, created = await self.domains.register(hostname, page, reason)
        if not created:
            return await self._already_registered(record, page)
        self.log.info("Registered {hostname}", hostname=hostname)
        self._kick(hostname)
        return _Response(
            201, domain_json(record, None), {"Location": f"/api/v1/domains/{hostname}"}
        )

    async def _existing(self, hostname: str) -> DomainRecord | None:
        try:
            record = await self.store.get_domain(hostname)
        except KeyError:
            return None
        if record.state == DomainState.REMOVED:
            return None
        return record

    async def _already_registered(self, existing: DomainRecord, page: Mapping[str, Any] | None) -> _Response:
        if existing.state == DomainState.REMOVED:
            raise api_errors.conflict(
                f"{existing.hostname} was removed while this request ran; send it again",
                hostname=existing.hostname,
            )
        if page is not None and page != upgrade_page(existing.page):
            raise api_errors.conflict(
                f"{existing.hostname} is already registered with a different page; "
                "use PUT /api/v1/domains/{hostname}/page to change it",
                hostname=existing.hostname,
            )
        certificate = await self._certificate(existing.hostname)
        return _Response(200, domain_json(existing, certificate))

    async def _list_domains(self, request: Request) -> _Response:
        state = _query(request, "state")
        if state is not None and state not in DomainState.ALL:
            raise api_errors.bad_request(
                f"state must be one of {', '.join(DomainState.ALL)}", parameter="state"
            )
        expires_text = _query(request, "expires_before")
        expires_before = None
        if expires_text is not None:
            try:
                # RFC 3339 allows a lower-case "t" and "z"; Python's parser wants upper case.
                expires_before = from_iso(expires_text.strip().upper())
            except ValueError:
                raise api_errors.bad_request(
                    "expires_before must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z",
                    parameter="expires_before",
                ) from None
        q = _query(request, "q")
        prefix = _prefix(q) if q else None
        limit_text = _query(request, "limit")
        limit = DEFAULT_LIST_LIMIT
        if limit_text is not None:
            try:
                limit = int(limit_text)
                if not 1 <= limit <= MAX_LIST_LIMIT:
                    raise ValueError(limit_text)
            except ValueError:
                raise api_errors.bad_request(
                    f"limit must be an integer from 1 to {MAX_LIST_LIMIT}", parameter="limit"
                ) from None
        cursor_text = _query(request, "cursor")
        after = decode_cursor(cursor_text) if cursor_text else None
        if prefix and prefix[:-1] and (after is None or after < prefix[:-1]):
            # Every hostname starting with the prefix sorts after the prefix minus its last character.
            after = prefix[:-1]

        want = limit + 1  # one more than asked tells whether there is a next page
        batch = want if (prefix is None and expires_before is None) else max(want, 100)
        # A record that is stored but cannot be used is listed in its place with a "broken"
        # marker (a domain record: only without a state filter, its state being unknown; a
        # certificate: beside its readable domain record, but never under expires_before).
        found: list[tuple[DomainRecord | BrokenRecord, CertificateRecord | None, BrokenRecord | None]] = []
        exhausted = False
        while len(found) < want and not exhausted:
            page = await self.store.list_domains(state=state, after=after, limit=batch, include_broken=True)
            exhausted = len(page) < batch
            candidates = []
            for record in page:
                hostname = after = _listed_hostname(record)
                if prefix is not None and not hostname.startswith(prefix):
                    if hostname > prefix:
                        exhausted = True
                        break
                    continue
                candidates.append(record)
            if expires_before is not None:
                readable = [r for r in candidates if not isinstance(r, BrokenRecord)]
                certificates = await self._certificates_or_broken([r.hostname for r in readable])
                for record, (certificate, _) in zip(readable, certificates, strict=True):
                    if certificate is not None and certificate.not_after < expires_before:
                        found.append((record, certificate, None))
            else:
                found.extend((record, None, None) for record in candidates)
        next_cursor = encode_cursor(_listed_hostname(found[limit - 1][0])) if len(found) > limit else None
        found = found[:limit]
        if expires_before is None:
            readable = [r for r, _, _ in found if not isinstance(r, BrokenRecord)]
            certificates = dict(
                zip(
                    (r.hostname for r in readable),
                    await self._certificates_or_broken([r.hostname for r in readable]),
                    strict=True,
                )
            )
            found = [
                (r, *certificates[r.hostname]) if not isinstance(r, BrokenRecord) else (r, None, None)
                for r, _, _ in found
            ]
        entries = [
            broken_domain_json(r) if isinstance(r, BrokenRecord) else domain_json(r, c, b) for r, c, b in found
        ]
        return _Response(200, {"domains": entries, "next_cursor": next_cursor})

    # -- /api/v1/domains/{hostname} ------------------------------------------------------------

    async def _show_domain(self, request: Request, hostname: str) -> _Response:
        # A broken domain record fails here: 500 broken_record (jobhost.admin.errors).
        record = await self._get_domain(hostname)
        certificate, broken = await self._certificate_or_broken(hostname)
        return _Response(200, domain_json(record, certificate, broken))

    async def _remove_domain(self, request: Request, hostname: str) -> _Response:
        revoke = _query_bool(request, "revoke")
        record = await self._get_domain(hostname)
        revoked = False
        removing = record.state != DomainState.REMOVED
        if revoke and await self._certificate(hostname) is not None:
            # Before anything changes: the issuer reads the certificate from the store, and a
            # CA refusal (502) leaves the hostname as it was, so the call can be repeated.
            try:
                await self.issuer.revoke(hostname)
                revoked = True
            except KeyError:
                pass  # removed by someone else meanwhile: nothing left to revoke
        if removing:
            reason = "removed by the operator" + ("; certificate revoked" if revoked else "")
            # The state goes first so that the issuing service, which re-reads the record
            # under its lease, stops; then the attempt in flight is cancelled; then serving stops.
            try:
                record = await self.domains.remove(hostname, reason)
            except TransitionForbidden:
                record = await self._get_domain(hostname)  # removed by someone else meanwhile
            except KeyError:
                raise api_errors.domain_not_found(hostname) from None
        try:
            await self.issuer.forget(hostname)
        except Exception:
            self.log.failure("Could not stop issuance for {hostname}", hostname=hostname)
        await self.store.delete_certificate(hostname)
        self._invalidate(hostname)
        self.log.info("Removed {hostname} (revoked: {revoked})", hostname=hostname, revoked=revoked)
        if removing:
            try:
                self.events.notify("removed", record)
            except Exception:
                self.log.failure("Event removed for {hostname} could not be sent", hostname=hostname)
        return _Response(200, domain_json(record, None))

    def _invalidate(self, hostname: str, kinds: frozenset[str] | None = None) -> None:
        """Drop ``hostname`` from this process's caches now (other processes follow the change feed).

        ``kinds`` says what changed (:class:`ChangeKind`), so each cache keeps what is still valid.
        """
        if self.caches is not None:
            try:
                self.caches.invalidate(hostname, kinds)
            except Exception:
                self.log.failure("Could not drop {hostname} from the caches", hostname=hostname)

    async def _renew(self, request: Request, hostname: str) -> _Response:
        record = await self._get_domain(hostname)
        if record.state == DomainState.REMOVED:
            raise api_errors.conflict(f"{hostname} was removed; register it again first", hostname=hostname)
        try:
            await self.issuer.renew_now(hostname)
        except KeyError:
            raise api_errors.domain_not_found(hostname) from None
        record = await self._get_domain(hostname)
        certificate = await self._certificate(hostname)
        return _Response(202, domain_json(record, certificate))

    async def _show_page(self, request: Request, hostname: str) -> _Response:
        record = await self._get_domain(hostname)
        if record.page is None:
            raise api_errors.no_page(hostname)
        return _Response(200, dict(upgrade_page(record.page)))

    async def _put_page(self, request: Request, hostname: str) -> _Response:
        body = self._json_body(request)
        await self._get_domain(hostname)  # 404 before any complaint about the page
        page = self._validate_page(body)
        try:
            await self.domains.set_page(hostname, page)
        except TransitionForbidden:  # removed (the transition table allows no page edit then)
            raise api_errors.conflict(f"{hostname} was removed; register it again first", hostname=hostname) from None
        except KeyError:
            raise api_errors.domain_not_found(hostname) from None
        self._invalidate(hostname, frozenset((ChangeKind.PAGE,)))
        self.log.info("Careers page of {hostname} replaced", hostname=hostname)
        return _Response(200, page)

    # -- diagnostics --------------------------------------------------------------------------

    async def _diagnostics(self, request: Request, hostname: str) -> _Response:
        record = await self._get_domain(hostname)
        certificate = await self._certificate(hostname)
        preflight_checks, self_check = await gatherResults(
            [
                Deferred.fromCoroutine(self._preflight_checks(hostname)),
                Deferred.fromCoroutine(self._self_check(hostname)),
            ],
            consumeErrors=True,
        )
        checks = [
            self._state_check(record),
            *preflight_checks,
            self_check,
            self._certificate_check(record, certificate),
        ]
        return _Response(
            200,
            {
                "hostname": hostname,
                "state": record.state,
                "ok": all(c["passed"] is not False for c in checks),
                "checks": checks,
            },
        )

    async def hostname_checks(self, hostname: str) -> list[dict[str, Any]]:
        """Preflight (DNS, CAA) and the self-check for ``hostname``, registered or not.

        Fires with the diagnostics entries; never fails for a check that did not pass.
        """
        preflight_checks, self_check = await gatherResults(
            [
                Deferred.fromCoroutine(self._preflight_checks(hostname)),
                Deferred.fromCoroutine(self._self_check(hostname)),
            ],
            consumeErrors=True,
        )
        return [*preflight_checks, self_check]

    async def _check_hostname(self, request: Request) -> _Response:
        raw = _query(request, "hostname")
        if not raw:
            raise api_errors.bad_request("hostname is required", parameter="hostname")
        hostname = normalise_hostname(raw)
        registered = await self._existing(hostname) is not None
        checks = await self.hostname_checks(hostname)
        return _Response(
            200,
            {
                "hostname": hostname,
                "registered": registered,
                "ok": all(c["passed"] is not False for c in checks),
                "checks": checks,
            },
        )

    def _state_check(self, record: DomainRecord) -> dict[str, Any]:
        error = record.last_error or {}
        details = {
            "state": record.state,
            "attempts": record.attempts,
            "next_attempt": to_iso(record.next_attempt),
            "last_error": dict(error) if error else None,
        }
        if record.state in _HEALTHY_STATES:
            return _check("state", True, f"{record.hostname} is {record.state}", None, details)
        if record.state == DomainState.REMOVED:
            return _check("state", False, f"{record.hostname} was removed", "Register it again to serve it.", details)
        message = f"{record.hostname} is {record.state}"
        if error.get("message"):
            message += f": {error['message']}"
        if record.state == DomainState.PAUSED:
            hint = (
                f"The CA paused issuance; lift the pause at {record.unpause_url}, then renew."
                if record.unpause_url
                else "Issuance is paused after repeated failures; fix the cause, then renew."
            )
        else:
            when = to_iso(record.next_attempt)
            hint = f"The next attempt is at {when}; fix the cause and renew to try at once." if when else None
        return _check("state", False, message, hint, details)

    async def _preflight_checks(self, hostname: str) -> list[dict[str, Any]]:
        if self.preflight is None:
            return [_check("preflight", None, "preflight is disabled in this daemon's config")]
        try:
            result = await self.preflight.check(hostname)
        except Exception:
            self.log.failure("Preflight for {hostname} crashed", hostname=hostname)
            return [_check("preflight", False, "preflight could not run; the daemon's log has the details")]
        checks = [_check_from("preflight", c) for c in result.checks]
        if not checks:
            if result.ok:
                checks = [_check("preflight", True, "DNS and CAA allow issuance")]
            else:
                checks = [_check_from("preflight", {**r.to_json(), "passed": False}) for r in result.reasons]
        return checks

    async def _self_check(self, hostname: str) -> dict[str, Any]:
        if self.self_check is None:
            return _check("self_check", None, "the self-check is disabled in this daemon's config")
        try:
            outcome = await maybeDeferred(self.self_check, hostname)
        except SelfCheckFailed as e:
            return _check(
                "self_check",
                False,
                e.describe(),
                f"Make sure http://{hostname}/.well-known/acme-challenge/ reaches this daemon's "
                "HTTP listener (port 80).",
                {"url": e.url, "reason": e.reason},
            )
        except Exception:
            self.log.failure("Self-check for {hostname} crashed", hostname=hostname)
            return _check("self_check", False, "the self-check could not run; the daemon's log has the details")
        if outcome is None:
            return _check("self_check", True, "our challenge URL for this hostname answers")
        return _check_from("self_check", outcome)

    def _certificate_check(self, record: DomainRecord, certificate: CertificateRecord | None) -> dict[str, Any]:
        now = self._now()
        if certificate is None:
            if record.state in (DomainState.PENDING, DomainState.ISSUING):
                hint = "Issuance is in progress; look again in a minute."
            else:
                hint = "See the state check's last error; renew to try again."
            return _check("certificate", False, "no certificate has been issued yet", hint)
        due = renewal_time(certificate)
        left = certificate.not_after - now
        details = {
            "serial": certificate.serial,
            "not_after": to_iso(certificate.not_after),
            "renewal_due": to_iso(due),
            "seconds_left": int(left.total_seconds()),
        }
        if left.total_seconds() <= 0:
            return _check("certificate", False, f"the certificate expired at {to_iso(certificate.not_after)}",
                          "Renew now and check the state for the last error.", details)
        if record.hostname not in certificate.names:
            return _check("certificate", False, "the certificate does not name this hostname",
                          "Renew now to replace it.", details)
        message = (
            f"valid until {to_iso(certificate.not_after)} ({left.days} days left); "
            f"renewal due at {to_iso(due)}"
        )
        return _check("certificate", True, message, None, details)


class BodyLimitMixin:
    """Mixed into a site's request class: stop buffering a body past ``max_body_bytes``.

    Twisted reads the whole body before rendering; without this an oversized
    upload would be spooled to a temporary file before the resource could
    refuse it.  Bytes past the limit (declared by ``Content-Length`` or
    counted as they arrive) are dropped, and the resource answers 413 on
    seeing :attr:`body_too_large`.  The limit is the site's root resource's
    ``max_body_bytes``.
    """

    body_too_large = False
    _received = 0

    def _body_limit(self) -> int | None:
        site = getattr(self.channel, "site", None)  # type: ignore[attr-defined]
        return getattr(getattr(site, "resource", None), "max_body_bytes", None)

    def gotLength(self, length: int | None) -> None:
        limit = self._body_limit()
        if length is not None and limit is not None and length > limit:
            self.body_too_large = True
            length = 0
        super().gotLength(length)  # type: ignore[misc]

    def handleContentChunk(self, data: bytes) -> None:
        limit = self._body_limit()
        self._received += len(data)
        if limit is not None and self._received > limit:
            self.body_too_large = True
        if not self.body_too_large:
            super().handleContentChunk(data)  # type: ignore[misc]


def limit_request_bodies(site: Site) -> Site:
    """Make ``site``'s requests drop body bytes past its root resource's ``max_body_bytes``.

    Returns:
        The same site, whose ``requestFactory`` now mixes in :class:`BodyLimitMixin`.
    """
    base = site.requestFactory
    site.requestFactory = type(f"BodyLimited{base.__name__}", (BodyLimitMixin, base), {})
    return site


def _authorization(request: Request) -> bytes | None:
    """The one Authorization header; 400 ``duplicate_header`` when it was sent more than once."""
    try:
        return single_authorization(request.requestHeaders)
    except ValueError as e:
        raise api_errors.duplicate_header("Authorization", str(e)) from None


def admin_site(resource: AdminResource, clock: IReactorTime | None = None) -> Site:
    """The admin listener's site: jobhost's usual site (see :func:`jobhost.web.site.make_site`)
    with request bodies limited to ``resource.max_body_bytes``."""
    from jobhost.web.site import make_site

    return limit_request_bodies(make_site(resource, clock=clock))


__all__ = [
    "AdminResource",
    "BodyLimitMixin",
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_LIST_LIMIT",
    "ROUTES",
    "Route",
    "admin_site",
    "broken_domain_json",
    "broken_json",
    "decode_cursor",
    "domain_json",
    "encode_cursor",
    "limit_request_bodies",
    "openapi_document",
    "parse_json",
]
