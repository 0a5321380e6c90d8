"""
The exception types jobhost raises on purpose.

Each carries fields, not a pre-formatted string, so the admin API, the domain
record and the logs can all show the same facts.  ``str()`` of each gives a
sentence naming the cause.

Two families: :class:`RemoteError` means the other side (the CA, DNS, a
customer's input) refused or failed and may be retried or reported;
:class:`LocalError` means jobhost or its operator misused something (bad
config, a programming error) and is never retried.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs


class JobhostError(Exception):
    """Base class of every exception jobhost raises on purpose."""

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:  # pragma: no cover - overridden
        return self.__class__.__name__


class LocalError(JobhostError):
    """We, or our operator, misused something; retrying will not help."""


class RemoteError(JobhostError):
    """A remote party (CA, DNS, network) failed or refused; may be transient."""


@attrs.define(eq=False, str=False)
class ConfigError(LocalError):
    """A config file is unreadable or a value in it is wrong.

    Attributes:
        message: What is wrong with the value, e.g. ``expected a positive integer, got "ten"``.
        path: The key path, e.g. ``("tls", "cache_size")``; empty for the file as a whole.
        file: The config file's path, when known.
    """

    message: str
    path: tuple[str, ...] = ()
    file: str | None = None

    def describe(self) -> str:
        where = ""
        if self.path:
            section, *rest = self.path
            where = f"[{section}]" + (" " + ".".join(rest) if rest else "") + ": "
        prefix = f"{self.file}: " if self.file else ""
        return f"{prefix}{where}{self.message}"


@attrs.define(eq=False, str=False)
class InvalidHostname(LocalError):
    """User input is not a hostname jobhost will serve.

    Attributes:
        value: The input as given (repr-safe).
        reason: Why it is refused, e.g. ``"IP addresses are not hostnames"``.
    """

    value: str
    reason: str

    def describe(self) -> str:
        return f"invalid hostname {self.value!r}: {self.reason}"


@attrs.define(eq=False, str=False)
class StoreError(LocalError):
    """The store could not read or write; nothing was changed by the failed call."""

    message: str

    def describe(self) -> str:
        return f"store error: {self.message}"


@attrs.define(eq=False, str=False)
class InvalidCertificate(LocalError):
    """Key or certificate material is malformed or does not match."""

    message: str

    def describe(self) -> str:
        return f"invalid certificate material: {self.message}"


@attrs.define(eq=False, str=False)
class AcmeProblem(RemoteError):
    """The ACME server answered with an RFC 7807 problem document.

    Attributes:
        type: The problem type URN, e.g. ``urn:ietf:params:acme:error:rateLimited``.
        detail: The CA's human-readable detail.
        status: The HTTP status of the response.
        subproblems: Per-identifier problem documents, as given.
        retry_after: Seconds the CA asked us to wait, when it said (``Retry-After``).
        url: The request URL that failed.
        links: ``Link`` header relations (e.g. an unpause URL), ``rel -> [urls]``.
    """

    type: str
    detail: str = ""
    status: int = 0
    subproblems: tuple[Mapping[str, Any], ...] = ()
    retry_after: float | None = None
    url: str | None = None
    links: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    @property
    def code(self) -> str:
        """The short problem name, e.g. ``rateLimited``."""
        return self.type.rsplit(":", 1)[-1]

    def as_document(self) -> dict[str, Any]:
        """The problem as a JSON-able mapping for the domain record and API."""
        doc: dict[str, Any] = {"type": self.type, "detail": self.detail, "status": self.status}
        if self.subproblems:
            doc["subproblems"] = [dict(p) for p in self.subproblems]
        return doc

    def describe(self) -> str:
        return f"CA problem {self.code} (HTTP {self.status}): {self.detail}"


@attrs.define(eq=False, str=False)
class AcmeTransportError(RemoteError):
    """The CA could not be reached or answered something that is not ACME."""

    message: str
    url: str | None = None

    def describe(self) -> str:
        return f"cannot talk to the CA{f' at {self.url}' if self.url else ''}: {self.message}"


@attrs.define(eq=False, str=False)
class AuthorizationFailed(RemoteError):
    """The CA could not validate our control of a hostname."""

    hostname: str
    status: str
    problem: AcmeProblem | None = None

    def describe(self) -> str:
        why = f": {self.problem.describe()}" if self.problem else ""
        return f"authorization for {self.hostname} is {self.status}{why}"


__all__ = [
    "AcmeProblem",
    "AcmeTransportError",
    "AuthorizationFailed",
    "ConfigError",
    "InvalidCertificate",
    "InvalidHostname",
    "JobhostError",
    "LocalError",
    "RemoteError",
    "StoreError",
]
