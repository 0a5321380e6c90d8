"""
The admin API's errors, and the one place exceptions become HTTP responses.

Every error response of the admin API has the same shape::

    {"error": {"code": "not_found", "message": "...", "details": {...}}}

with ``Content-Type: application/json``.  :func:`error_response` maps an
exception to ``(status, headers, body)``; routes never choose a status for
an error themselves, they raise.  The HTTP-only errors (:class:`ApiError`
and its subclasses) carry their status; jobhost's own exceptions are mapped
by type to a status here, and to a code by :func:`jobhost.errors.error_code`
(the vocabulary the domain record's ``last_error`` uses too):

=====================================  ======  ===============================
exception                              status  code
=====================================  ======  ===============================
:class:`ApiError` subclasses           own     own (see each class)
``InvalidHostname``                    422     ``invalid_hostname``
``PageInvalid``                        422     ``invalid_page``
``PreflightFailed``                    422     ``preflight_failed``
``TransitionForbidden``                409     ``conflict`` (the domain's state does not allow it)
``BrokenRecord``                       500     ``broken_record`` (one stored record is unusable)
``StoreError``                         503     ``store_unavailable``
``AcmeProblem``                        502     ``ca_error`` (the CA refused)
``AcmeTransportError``                 502     ``ca_unreachable``
``AcmeTimeout``                        502     ``ca_timeout``
anything else                          500     ``internal`` (logged; no traceback sent)
=====================================  ======  ===============================
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs
from twisted.logger import Logger
from twisted.python.failure import Failure

from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    BrokenRecord,
    InvalidHostname,
    PageInvalid,
    PreflightFailed,
    StoreError,
    TransitionForbidden,
    error_code,
)

log = Logger()


@attrs.define(str=False)
class ApiError(Exception):
    """An error that is only meaningful over HTTP; carries its own status and code.

    Attributes:
        status: The HTTP status.
        code: The stable machine-readable code (``error.code``).
        message: A sentence for a person (``error.message``).
        details: JSON-able facts (``error.details``).
        headers: Extra response headers, e.g. ``Allow`` or ``WWW-Authenticate``.
    """

    status: int
    code: str
    message: str
    details: Mapping[str, Any] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def bad_json(message: str) -> ApiError:
    """400 ``bad_json``: the body is not JSON (or not UTF-8, or has duplicate keys)."""
    return ApiError(400, "bad_json", message)


def bad_request(message: str, **details: Any) -> ApiError:
    """400 ``bad_request``: the JSON or the query is well formed but not what the route takes."""
    return ApiError(400, "bad_request", message, details)


def unauthorized() -> ApiError:
    """401 ``unauthorized``: no or a wrong ``Authorization: Bearer`` token."""
    return ApiError(
        401,
        "unauthorized",
        "a valid admin token is required: send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": 'Bearer realm="jobhost"'},
    )


def duplicate_header(name: str, message: str) -> ApiError:
    """400 ``duplicate_header``: a header that must be sent once came several times."""
    return ApiError(400, "duplicate_header", message, {"header": name})


def route_not_found(path: str) -> ApiError:
    """404 ``not_found``: no such route."""
    return ApiError(404, "not_found", f"no such resource: {path}", {"path": path})


def domain_not_found(hostname: str) -> ApiError:
    """404 ``not_found``: the hostname is not registered."""
    return ApiError(404, "not_found", f"{hostname} is not registered", {"hostname": hostname})


def no_page(hostname: str) -> ApiError:
    """404 ``no_page``: the hostname is registered but has no careers page."""
    return ApiError(404, "no_page", f"{hostname} has no careers page", {"hostname": hostname})


def method_not_allowed(method: str, allowed: list[str]) -> ApiError:
    """405 ``method_not_allowed`` with an ``Allow`` header."""
    return ApiError(
        405,
        "method_not_allowed",
        f"{method} is not allowed here; allowed: {', '.join(allowed)}",
        {"allowed": list(allowed)},
        {"Allow": ", ".join(allowed)},
    )


def conflict(message: str, **details: Any) -> ApiError:
    """409 ``conflict``: the request contradicts what is stored."""
    return ApiError(409, "conflict", message, details)


def body_too_large(limit: int) -> ApiError:
    """413 ``body_too_large``: the body is over the configured limit."""
    return ApiError(
        413, "body_too_large", f"the request body is larger than {limit} bytes", {"max_body_bytes": limit}
    )


def unsupported_media_type(content_type: str | None) -> ApiError:
    """415 ``unsupported_media_type``: a body that is not ``application/json``."""
    return ApiError(
        415,
        "unsupported_media_type",
        "the request body must be sent as 'Content-Type: application/json'",
        {"content_type": content_type},
    )


def _invalid_hostname(e: InvalidHostname) -> ApiError:
    return ApiError(422, error_code(e), e.describe(), {"value": e.value, "reason": e.reason})


def _page_invalid(e: PageInvalid) -> ApiError:
    return ApiError(422, error_code(e), e.describe(), {"errors": dict(e.errors)})


def _preflight_failed(e: PreflightFailed) -> ApiError:
    return ApiError(
        422,
        error_code(e),
        e.describe(),
        {"hostname": e.hostname, "retryable": e.retryable, "reasons": [r.to_json() for r in e.reasons]},
    )


def _broken_record(e: BrokenRecord) -> ApiError:
    """500 ``broken_record``: the record asked for is stored but cannot be used (the store is fine)."""
    return ApiError(
        500,
        error_code(e),
        f"the record stored for {e.key} cannot be used; fix or rewrite it: {e.message}",
        {"key": e.key, "reason": e.reason},
    )


def _transition_forbidden(e: TransitionForbidden) -> ApiError:
    """409 ``conflict``: the domain changed state meanwhile (e.g. removed by another request)."""
    return ApiError(409, error_code(e), e.describe(), {"hostname": e.hostname, "state": e.state, "event": e.event})


def _store_error(e: StoreError) -> ApiError:
    return ApiError(503, error_code(e), f"the store is unavailable: {e.message}", {})


def _ca_error(e: Exception) -> ApiError:
    """502 ``ca_error`` (the CA refused; ``details.problem``), ``ca_unreachable`` or ``ca_timeout``."""
    details: dict[str, Any] = {}
    if isinstance(e, AcmeProblem):
        details["problem"] = e.as_document()
    return ApiError(502, error_code(e), str(e), details)


#: The mapping, most specific class first; :func:`error_response` walks the exception's MRO.
_MAPPING: dict[type, Callable[[Any], ApiError]] = {
    ApiError: lambda e: e,
    InvalidHostname: _invalid_hostname,
    PageInvalid: _page_invalid,
    PreflightFailed: _preflight_failed,
    TransitionForbidden: _transition_forbidden,
    BrokenRecord: _broken_record,
    StoreError: _store_error,
    AcmeProblem: _ca_error,
    AcmeTransportError: _ca_error,
    AcmeTimeout: _ca_error,
}


def to_api_error(exception: BaseException) -> ApiError | None:
    """The :class:`ApiError` for ``exception``, or None when it is unexpected (a 500)."""
    for klass in type(exception).__mro__:
        convert = _MAPPING.get(klass)
        if convert is not None:
            return convert(exception)
    return None


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message", "details"}}``."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def error_response(failure: Failure, method: str = "", path: str = "") -> tuple[int, dict[str, str], dict]:
    """Map a failed request to ``(status, headers, JSON body)``.

    Unexpected exceptions are logged with their traceback (``log.failure``)
    and answered with a 500 ``internal`` that says nothing about the cause.

    Args:
        failure: What the route raised.
        method, path: The request, for the log line only.
    """
    error = to_api_error(failure.value)
    if error is None:
        log.failure("Admin API {method} {path} failed", failure, method=method, path=path)
        error = ApiError(500, "internal", "internal error; the daemon's log has the details")
    elif error.status >= 500:
        log.error(
            "Admin API {method} {path}: {status} {code}: {message}",
            method=method,
            path=path,
            status=error.status,
            code=error.code,
            message=error.message,
        )
    return error.status, dict(error.headers), error_body(error.code, error.message, error.details)


__all__ = [
    "ApiError",
    "bad_json",
    "bad_request",
    "body_too_large",
    "conflict",
    "domain_not_found",
    "error_body",
    "error_response",
    "method_not_allowed",
    "no_page",
    "duplicate_header",
    "route_not_found",
    "to_api_error",
    "unauthorized",
    "unsupported_media_type",
]
