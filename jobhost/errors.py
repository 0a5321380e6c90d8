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
    """Base class of every exception jobhost raises on purpose.

    Subclasses are ``@attrs.define(str=False)``: attrs keeps an exception class comparing and
    hashing by identity (its ``auto_exc``), and ``str=False`` keeps ``str()`` the sentence
    from :meth:`describe` rather than a field dump.
    """

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:  # pragma: no cover - overridden
        return self.__class__.__name__


class LocalError(JobhostError):
    """We, or our operator, misused something; retrying will not help."""


class RemoteError(JobhostError):
    """A remote party (CA, DNS, network) failed or refused; may be transient."""


@attrs.define(str=False)
class ConfigError(LocalError):
    """A config file is unreadable or a value in it is wrong.

    Attributes:
        message: What is wrong with the value, e.g. ``expected a positive integer, got "ten"``.
        path: The key path, e.g. ``("tls", "cache_size")``; empty for the file as a whole.
        file: The config file's path, when known.
    """

    message: str
    path: tuple[str | int, ...] = ()
    file: str | None = None

    def describe(self) -> str:
        where = ""
        if self.path:
            # An index names an entry of an array of tables: ("acme", "issuers", 1, "directory")
            # reads "[acme.issuers][1] directory", as TOML spells the table "[[acme.issuers]]".
            index = next((i for i, part in enumerate(self.path) if isinstance(part, int)), None)
            if index is None:
                section, *rest = self.path
                where = f"[{section}]" + (" " + ".".join(rest) if rest else "") + ": "
            else:
                table, rest = ".".join(self.path[:index]), [str(p) for p in self.path[index + 1:]]
                where = f"[{table}][{self.path[index]}]" + (" " + ".".join(rest) if rest else "") + ": "
        prefix = f"{self.file}: " if self.file else ""
        return f"{prefix}{where}{self.message}"


@attrs.define(str=False)
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


@attrs.define(str=False)
class StoreError(LocalError):
    """The store could not read or write; nothing was changed by the failed call."""

    message: str

    def describe(self) -> str:
        return f"store error: {self.message}"


@attrs.define(str=False)
class StoreConflict(StoreError):
    """Other writers kept changing a record while ``update_domain`` tried to change it."""

    def describe(self) -> str:
        return f"store conflict: {self.message}"


@attrs.define(str=False)
class BrokenRecord(StoreError):
    """A stored record exists but cannot be used: it does not parse or does not verify.

    Unlike other store errors this concerns one record only, and reading it again
    gives the same answer until the record is rewritten; callers serve, list or
    report everything else and remember this one as broken.

    Attributes:
        message: A sentence naming where the record is kept and why it is unusable.
        key: What the record is stored under (a hostname for domain and certificate records).
        reason: Why it is unusable, e.g. ``the private key does not match the leaf certificate``.
    """

    key: str = ""
    reason: str = ""


@attrs.define(str=False)
class TransitionForbidden(LocalError):
    """A domain event that the transition table does not allow in the record's state.

    Attributes:
        hostname: The domain.
        state: Its state when the event arrived (None: not registered).
        event: The event's name, e.g. ``"issued"``.
    """

    hostname: str
    state: str | None
    event: str

    def describe(self) -> str:
        where = f"in state {self.state}" if self.state is not None else "when it is not registered"
        return f"{self.hostname}: {self.event!r} is not allowed {where}"


@attrs.define(str=False)
class LeaseLost(LocalError):
    """Another holder took a lease this process was working under; its work is abandoned."""

    name: str
    holder: str

    def describe(self) -> str:
        return f"lease {self.name!r} was lost by {self.holder}; the attempt was abandoned"


@attrs.define(str=False)
class InvalidCertificate(LocalError):
    """Key or certificate material is malformed or does not match."""

    message: str

    def describe(self) -> str:
        return f"invalid certificate material: {self.message}"


@attrs.define(str=False)
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
        return self.type.rpartition(":")[2]

    def as_document(self) -> dict[str, Any]:
        """The problem as a JSON-able mapping for the domain record and API."""
        doc: dict[str, Any] = {"type": self.type, "detail": self.detail, "status": self.status}
        if self.subproblems:
            doc["subproblems"] = [dict(p) for p in self.subproblems]
        return doc

    def describe(self) -> str:
        return f"CA problem {self.code} (HTTP {self.status}): {self.detail}"


@attrs.define(str=False)
class AcmeTransportError(RemoteError):
    """The CA could not be reached or answered something that is not ACME."""

    message: str
    url: str | None = None

    def describe(self) -> str:
        return f"cannot talk to the CA{f' at {self.url}' if self.url else ''}: {self.message}"


@attrs.define(str=False)
class AuthorizationFailed(RemoteError):
    """The CA could not validate our control of a hostname."""

    hostname: str
    status: str
    problem: AcmeProblem | None = None
    #: Without a problem document, what is known: each challenge as ``"<type> <status>"``.
    challenges: tuple[str, ...] = ()

    def reason(self) -> str:
        """The CA's problem, or, when it gave none, that it gave none and the challenges' states."""
        if self.problem is not None:
            return self.problem.describe()
        seen = f" (challenges: {', '.join(self.challenges)})" if self.challenges else ""
        return f"the CA gave no reason{seen}"

    def describe(self) -> str:
        return f"authorization for {self.hostname} is {self.status}: {self.reason()}"


@attrs.define(str=False)
class AcmeTimeout(RemoteError):
    """The CA did not finish an authorization or order before our polling deadline.

    Attributes:
        url: The authorization or order URL that was polled.
        status: Its last status seen, e.g. ``pending`` or ``processing``.
        seconds: How long jobhost polled before giving up.
        retry_after: Seconds the CA last asked us to wait, when it said.
    """

    url: str
    status: str
    seconds: float
    retry_after: float | None = None

    def describe(self) -> str:
        return f"{self.url} still {self.status} after {self.seconds:g} s"


@attrs.define(str=False)
class AcmeUnsupported(LocalError):
    """jobhost asked the CA for something its directory does not offer (e.g. a profile).

    Attributes:
        feature: What was asked for, e.g. ``"profile"``.
        requested: The value asked for, e.g. ``"shortlived"``.
        offered: What the directory offers instead (empty when nothing).
        directory_url: The CA's directory URL.
    """

    feature: str
    requested: str
    offered: tuple[str, ...] = ()
    directory_url: str | None = None

    def describe(self) -> str:
        offered = ", ".join(self.offered) if self.offered else "none"
        where = f" at {self.directory_url}" if self.directory_url else ""
        return f"the CA{where} does not offer {self.feature} {self.requested!r} (offered: {offered})"


@attrs.define(str=False)
class PreflightFailed(RemoteError):
    """DNS or CAA says the CA could not (or may not) validate this hostname for us.

    Attributes:
        hostname: The hostname checked.
        reasons: The preflight reasons (``jobhost.preflight.PreflightReason``), first the main one.
        retryable: True when the cause may be transient (DNS timeout, SERVFAIL).
    """

    hostname: str
    reasons: tuple = ()
    retryable: bool = False

    @property
    def code(self) -> str:
        return self.reasons[0].code if self.reasons else "preflight_failed"

    def describe(self) -> str:
        if self.reasons:
            return self.reasons[0].message
        return f"preflight failed for {self.hostname}"


@attrs.define(str=False)
class SelfCheckFailed(RemoteError):
    """Our own challenge URL did not answer with the key authorization.

    Raised before the CA is told to validate, so no failed validation is spent.
    """

    hostname: str
    url: str
    reason: str

    def describe(self) -> str:
        return f"self-check of {self.url} failed: {self.reason}"


@attrs.define(str=False)
class PageInvalid(LocalError):
    """A careers page document does not follow the page schema.

    Carries every problem found, not just the first, so the caller can fix
    them all at once (see :func:`jobhost.pagedoc.validate_page`).

    Attributes:
        errors: Field path -> message, e.g. ``{"jobs[2].title": "required"}``.
            The path ``""`` stands for the document as a whole.
    """

    errors: Mapping[str, str]

    def describe(self) -> str:
        # In the order found, which is document order (jobs[2] before jobs[10]).
        problems = "; ".join(f"{path or '(page)'}: {message}" for path, message in self.errors.items())
        return f"invalid careers page: {problems}"


#: The one vocabulary of error codes: the admin API's ``error.code`` and the domain record's
#: ``last_error.code`` both come from :func:`error_code`, which walks an exception's MRO here
#: (so a subclass has its base's code unless it is listed itself).
ERROR_CODES: Mapping[type, str] = {
    ConfigError: "config_error",
    InvalidHostname: "invalid_hostname",
    PageInvalid: "invalid_page",
    StoreError: "store_unavailable",
    BrokenRecord: "broken_record",  # one stored record does not parse or verify
    InvalidCertificate: "invalid_certificate",
    AcmeProblem: "ca_error",  # the CA answered and refused
    AcmeTransportError: "ca_unreachable",  # no answer, or not an ACME one
    AcmeTimeout: "ca_timeout",  # it answered, but did not finish in time
    AcmeUnsupported: "ca_unsupported",
    AuthorizationFailed: "authorization_failed",
    PreflightFailed: "preflight_failed",
    SelfCheckFailed: "self_check_failed",
    TransitionForbidden: "conflict",  # the domain's state does not allow what was asked
}


def _snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def error_code(exc: BaseException, *, detailed: bool = False) -> str:
    """The stable machine-readable code for ``exc`` (see :data:`ERROR_CODES`).

    Args:
        exc: The exception.
        detailed: Give the cause's own code where it has one: a CA problem's short type
            (``rateLimited``, ``badCSR``) instead of ``ca_error``, a preflight failure's
            first reason (``points_elsewhere``, ``dns_timeout``) instead of
            ``preflight_failed``.  The domain record's ``last_error.code`` is detailed; the
            admin API answers the general code and puts the cause in ``details``.

    Returns:
        The code: a jobhost error not in the table gets its class name in snake case
        (``LeaseLost`` -> ``lease_lost``); anything else is ``internal``.
    """
    if detailed and isinstance(exc, (AcmeProblem, PreflightFailed)):
        return exc.code
    for klass in type(exc).__mro__:
        code = ERROR_CODES.get(klass)
        if code is not None:
            return code
    if isinstance(exc, JobhostError):
        return _snake_case(type(exc).__name__)
    return "internal"


def describe_exception(exc: BaseException) -> str:
    """One line naming an exception and its cause, unwrapping Twisted's nested ``reasons``.

    Twisted's HTTP client wraps the real cause (``ResponseNeverReceived([Failure(...)])``);
    this shows it: ``ResponseNeverReceived(ConnectionLost: ...)``.
    """
    from twisted.python.failure import Failure

    reasons = getattr(exc, "reasons", None)
    if reasons:
        inner = "; ".join(describe_exception(r.value if isinstance(r, Failure) else r) for r in reasons)
        return f"{type(exc).__name__}({inner})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "AcmeProblem",
    "AcmeTimeout",
    "AcmeTransportError",
    "AcmeUnsupported",
    "AuthorizationFailed",
    "BrokenRecord",
    "ConfigError",
    "ERROR_CODES",
    "describe_exception",
    "error_code",
    "InvalidCertificate",
    "InvalidHostname",
    "JobhostError",
    "LeaseLost",
    "LocalError",
    "PageInvalid",
    "PreflightFailed",
    "RemoteError",
    "SelfCheckFailed",
    "StoreConflict",
    "StoreError",
    "TransitionForbidden",
]
