"""
The access log's line: Twisted's combined format with secrets taken out of URLs.

Query strings are logged verbatim by Twisted, so ``/api/v1/domains?token=...`` or a
visitor's ``/?access_token=...`` would put a secret in a file many people read. This
module owns the redaction: every query value on an admin path (``/api/``, ``/metrics``,
``/healthz``), and anywhere the value of a parameter whose name says it is secret
(``token``, ``key``, ``secret``, ``password``, ``signature``, ``session``, ``auth``...),
becomes ``REDACTED``; the parameter names stay, so the line still says what was asked.
The ``Referer`` header gets the same treatment. Pure functions, no I/O.
"""

from __future__ import annotations

import re

from twisted.web.http import combinedLogFormatter

#: What a redacted value is replaced with.
REDACTED = b"REDACTED"

#: Path prefixes of the admin API: every query value there is redacted.
ADMIN_PATHS = (b"/api/", b"/metrics", b"/healthz")

#: A parameter is secret when a word of its name is, or ends with, one of these.
_SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "pwd", "auth", "authorization",
                 "session", "sessionid", "signature", "sig", "credential", "credentials", "jwt")

_WORD = re.compile(rb"[a-z0-9]+")


def secret_parameter(name: bytes) -> bool:
    """True when a query parameter's name says its value is a secret (``api_key``, ``X-Amz-Signature``)."""
    from urllib.parse import unquote_to_bytes

    words = _WORD.findall(unquote_to_bytes(name).lower())
    return any(word.endswith(secret.encode()) for word in words for secret in _SECRET_WORDS)


def redact_uri(uri: bytes) -> bytes:
    """``uri`` (a request target or a URL) with secret query values replaced by :data:`REDACTED`."""
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    if b"://" in path:  # an absolute URL (a Referer, an absolute-form request target): its path
        rest = path.split(b"://", 1)[1]
        local = rest[rest.find(b"/"):] if b"/" in rest else b"/"
    else:
        local = path
    everything = local.startswith(ADMIN_PATHS)
    parts = []
    for item in query.split(b"&"):
        name, equals, _ = item.partition(b"=")
        if equals and (everything or secret_parameter(name)):
            item = name + b"=" + REDACTED
        elif everything and item:
            item = REDACTED  # a bare value on an admin path may be the token itself
        parts.append(item)
    return path + b"?" + b"&".join(parts)


class _Redacted:
    """A request as the formatter sees it: the URI and Referer redacted, the rest as it is."""

    def __init__(self, request) -> None:
        self._request = request
        self.uri = redact_uri(request.uri)

    def getHeader(self, name: bytes):
        value = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redact_uri(value if isinstance(value, bytes) else value.encode("latin-1"))
        return value

    def __getattr__(self, name: str):
        return getattr(self._request, name)


def access_log_line(timestamp: str, request) -> str:
    """An ``IAccessLogFormatter``: the combined log line of ``request`` with secrets redacted."""
    return combinedLogFormatter(timestamp, _Redacted(request))


__all__ = ["ADMIN_PATHS", "REDACTED", "access_log_line", "redact_uri", "secret_parameter"]
