"""
When to try again: backoff delays, the ``Retry-After`` header, and errors retrying cannot fix.

This module owns three small rules that the issuing service (ACME orders), the
ACME transport (the CA's ``Retry-After``) and the webhook sender (deliveries)
share, so that they cannot drift apart:

- :func:`backoff_delay`: seconds to wait after the n-th consecutive failure, a
  pure function of the attempt number with the jitter passed in (Twisted's
  ``backoffPolicy`` shape);
- :func:`parse_retry_after` / :func:`retry_after_seconds`: a ``Retry-After``
  header (RFC 9110 section 10.2.3) as seconds from a given time;
- :func:`is_permanent` and :class:`Permanent`: an error that can never succeed by
  retrying.

Pure: no I/O, and it never reads the clock (callers pass ``at`` and ``jitter``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Iterable

from twisted.python.failure import Failure

from jobhost.errors import (
    AcmeProblem,
    AcmeUnsupported,
    AuthorizationFailed,
    ConfigError,
    InvalidHostname,
    PageInvalid,
)


def backoff_delay(attempts: int, schedule: tuple[float, ...], jitter: float = 0.0) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure (1-based).

    The schedule is used in order and its last entry repeats; ``jitter`` in
    [0, 1) stretches the delay by up to 10% so a batch of failures spreads out.

    Args:
        attempts: How many attempts in a row have failed (values below 1 count as 1).
        schedule: The delays in seconds, e.g. ``(60, 600, 6000, 86400)``; not empty.
        jitter: A number in [0, 1) from an injected random source.
    """
    base = schedule[min(max(attempts, 1), len(schedule)) - 1]
    return base * (1.0 + 0.1 * jitter)


def parse_retry_after(value: str | bytes | None, at: datetime) -> float | None:
    """Parse a ``Retry-After`` header (RFC 9110 section 10.2.3) into seconds from ``at``.

    Args:
        value: Delay-seconds (``"120"``) or an HTTP date, or None.
        at: The current time (aware), for HTTP dates.

    Returns:
        Seconds to wait (0 for a date in the past), or None when absent or unparsable.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, (when - at).total_seconds())


def retry_after_seconds(values: Iterable[str | bytes] | None, at: datetime) -> float | None:
    """:func:`parse_retry_after` of the first ``Retry-After`` header value, if any.

    Args:
        values: The header's raw values as an HTTP library returns them
            (``Headers.getRawHeaders(b"retry-after")``), or None when absent.
        at: The current time (aware).
    """
    for value in values or ():
        return parse_retry_after(value, at)
    return None


# ---------------------------------------------------------------- permanent errors


class Permanent(Exception):
    """Base (or mixin) for an error that can never succeed by retrying.

    That is a local misuse, or a CSR or identifier the CA rejects as malformed:
    the issuing service parks the domain as ``failing`` with ``retryable: false``
    until an operator acts (``renew``, or a fix and a restart), instead of
    backing off for days.  Raise a subclass (or mix it into a jobhost error) for
    such a cause; :func:`is_permanent` recognises it, and also the existing
    error types listed there.
    """


#: ACME problem types (RFC 8555 section 6.7) after which the same request can never succeed:
#: the CSR, the identifier or our key is refused for what it is, not for the moment.
PERMANENT_PROBLEM_TYPES = frozenset(
    "urn:ietf:params:acme:error:" + name
    for name in ("badCSR", "rejectedIdentifier", "unsupportedIdentifier", "badSignatureAlgorithm", "badPublicKey")
)

_MALFORMED = "urn:ietf:params:acme:error:malformed"
_COMPOUND = "urn:ietf:params:acme:error:compound"

#: Words in a ``malformed`` problem's detail that point at a transient cause: the account
#: (issuing re-registers it), the nonce or JWS (signed afresh next time), or the state of an
#: order or authorization (a race that a new order does not meet).
_TRANSIENT_MALFORMED_WORDS = ("account", "nonce", "jws", "status")

#: jobhost's own errors for a local misuse: the same input fails the same way every time.
_PERMANENT_ERRORS = (ConfigError, InvalidHostname, AcmeUnsupported, PageInvalid)

#: Python errors that are programming errors when jobhost's own code raised them.
_PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, NotImplementedError)

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _permanent_problem(type_: str, detail: str, subproblems: Iterable[object] = ()) -> bool:
    if type_ in PERMANENT_PROBLEM_TYPES:
        return True
    if type_ == _MALFORMED:
        text = detail.lower()
        return not any(word in text for word in _TRANSIENT_MALFORMED_WORDS)
    if type_ == _COMPOUND:
        docs = [p for p in subproblems if isinstance(p, Mapping)]
        return bool(docs) and all(
            _permanent_problem(str(p.get("type", "")), str(p.get("detail", ""))) for p in docs
        )
    return False


def _raised_in_jobhost(exc: BaseException) -> bool:
    """True when the innermost Python frame of ``exc``'s traceback is jobhost's own code.

    A ``TypeError`` raised by C code that jobhost called counts (the innermost
    Python frame is jobhost's); one raised inside Twisted or a library does not.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR)


def is_permanent(error: BaseException | Failure) -> bool:
    """Whether ``error`` can never succeed by retrying (see :class:`Permanent`).

    Deliberately conservative: a wrong "permanent" stops a hostname's renewals
    until an operator acts, a wrong "transient" only costs a retry on the
    backoff schedule.  True for:

    - a :class:`Permanent` (subclass or mixin);
    - jobhost's own local-misuse errors: ``ConfigError``, ``InvalidHostname``,
      ``AcmeUnsupported`` (a profile the CA does not offer) and ``PageInvalid``;
    - an ``AcmeProblem`` (or an ``AuthorizationFailed`` carrying one) of a type in
      :data:`PERMANENT_PROBLEM_TYPES`; a ``malformed`` one unless its detail is
      about the account, the nonce, the JWS or an order's status (see
      ``issuing._account_unknown``); a ``compound`` one whose subproblems are all
      permanent;
    - a ``TypeError``, ``AttributeError``, ``NameError`` or
      ``NotImplementedError`` raised by jobhost's own code (a bug: the same
      input fails the same way until a fix is deployed).

    Not permanent, on purpose: ``caa`` (the customer can fix their DNS),
    ``rateLimited`` (it has its own pause), ``StoreError`` (a disk or database
    hiccup), ``InvalidCertificate`` (a corrupt stored record or a bad chain from
    the CA: a new order with a fresh key is the cure), ``ValueError`` and
    ``KeyError`` (mostly remote data that did not parse), and anything raised
    inside Twisted or a library.

    Args:
        error: The exception, or a Failure wrapping it.
    """
    exc = error.value if isinstance(error, Failure) else error
    if isinstance(exc, (Permanent, *_PERMANENT_ERRORS)):
        return True
    if isinstance(exc, AcmeProblem):
        return _permanent_problem(exc.type, exc.detail, exc.subproblems)
    if isinstance(exc, AuthorizationFailed):
        return exc.problem is not None and _permanent_problem(
            exc.problem.type, exc.problem.detail, exc.problem.subproblems
        )
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return _raised_in_jobhost(exc)
    return False


__all__ = [
    "PERMANENT_PROBLEM_TYPES",
    "Permanent",
    "backoff_delay",
    "is_permanent",
    "parse_retry_after",
    "retry_after_seconds",
]
