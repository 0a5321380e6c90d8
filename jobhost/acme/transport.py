"""
The ACME wire (RFC 8555 section 6): signed requests, nonces, timeouts, problems.

This module owns everything below the order flow of :mod:`jobhost.acme.client`:

- **JWS**: every POST is a flattened JWS (:func:`sign_jws`, josepy's signing
  algorithms; certbot's :mod:`acme.jws` objects cost four times as much),
  with ``jwk`` in the protected header for ``newAccount`` (and revocation by
  certificate key) and ``kid`` (the account URL) for everything else.  A POST
  with an empty payload is a POST-as-GET.
- **Nonces**: a small pool fed by the ``Replay-Nonce`` header of *every*
  response (errors included); when it is empty a ``HEAD newNonce`` refills it.
  A ``badNonce`` problem is retried with a fresh nonce, a bounded number of
  times (Pebble rejects a share of good nonces on purpose).
- **Timeouts**: each request, body included, must finish within ``timeout``
  seconds of the injected clock, or fails with :class:`AcmeTransportError`.
- **Errors**: an RFC 7807 problem document becomes :class:`AcmeProblem`
  (with ``Retry-After`` and ``Link`` relations); a refused connection, a TLS
  failure, a timeout or a response that is not ACME becomes
  :class:`AcmeTransportError`.

Nothing here blocks a thread: requests go through the injected treq
``HTTPClient`` (or anything with its ``request`` method, such as
``treq.testing.StubTreq``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping
from urllib.parse import urljoin

import attrs
import josepy as jose
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from jobhost.errors import AcmeProblem, AcmeTransportError
from jobhost.errors import describe_exception
from jobhost.retry import retry_after_seconds
from jobhost.timeutil import now

#: The prefix of every ACME problem type (RFC 8555 section 6.7).
ERROR_PREFIX = "urn:ietf:params:acme:error:"

JOSE_CONTENT_TYPE = "application/jose+json"
PROBLEM_CONTENT_TYPE = "application/problem+json"
PEM_CHAIN_CONTENT_TYPE = "application/pem-certificate-chain"

#: Largest response body jobhost reads from a CA (a chain is a few KiB).
MAX_BODY_BYTES = 1024 * 1024

_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_LINK_PARAM = re.compile(r";\s*([A-Za-z0-9!#$&+.^_`|~-]+)\s*=\s*(\"[^\"]*\"|[^;,\s]*)")


def parse_link_header(values: Iterable[str | bytes], base_url: str) -> dict[str, tuple[str, ...]]:
    """Parse ``Link`` header values (RFC 8288) into ``rel -> (url, ...)``.

    Relative references are resolved against ``base_url``; a link with several
    space-separated relations is listed under each.  Order is kept.

    Args:
        values: Every ``Link`` header value of a response (each may hold several links).
        base_url: The request URL.
    """
    links: dict[str, list[str]] = {}
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        for match in _LINK.finditer(value):
            target = urljoin(base_url, match.group(1).strip())
            for name, raw in _LINK_PARAM.findall(match.group(2)):
                if name.lower() != "rel":
                    continue
                for rel in raw.strip('"').split():
                    links.setdefault(rel.lower(), []).append(target)
    return {rel: tuple(urls) for rel, urls in links.items()}


def problem_from_document(
    doc: Mapping[str, Any],
    *,
    status: int = 0,
    retry_after: float | None = None,
    url: str | None = None,
    links: Mapping[str, tuple[str, ...]] | None = None,
) -> AcmeProblem:
    """Build an :class:`AcmeProblem` from an RFC 7807 problem document.

    Args:
        doc: The decoded JSON document (or an ``error`` member of an order,
            authorization or challenge).
        status: The HTTP status, used when the document has none.
        retry_after: Seconds from the response's ``Retry-After``.
        url: The request URL.
        links: The response's ``Link`` relations.
    """
    subproblems = doc.get("subproblems") or ()
    doc_status = doc.get("status")
    return AcmeProblem(
        type=str(doc.get("type") or "about:blank"),
        detail=str(doc.get("detail") or doc.get("title") or ""),
        status=doc_status if isinstance(doc_status, int) else status,
        subproblems=tuple(dict(p) for p in subproblems if isinstance(p, Mapping)),
        retry_after=retry_after,
        url=url,
        links=dict(links or {}),
    )


def sign_jws(payload: bytes, *, key: jose.JWK, alg: jose.JWASignature, nonce: str, url: str,
             kid: str | None) -> bytes:
    """A flattened JWS (RFC 7515 section 7.2.2) as RFC 8555 section 6.2 wants it, serialised.

    The protected header holds ``alg``, ``nonce``, ``url`` and either ``kid``
    (the account URL) or, when ``kid`` is None, the public ``jwk``.  The
    signature comes from josepy's algorithm (which turns an ECDSA DER signature
    into the raw ``r || s`` JWS wants); the rest is two base64url strings and
    ``json.dumps``, which costs a quarter of what building josepy's ``JWS``
    objects for the same message does (about 25 instead of 90 us with a P-256
    key; ten messages a certificate).  The nonce is sent as the CA gave it.

    Args:
        payload: The payload bytes; ``b""`` for POST-as-GET.
        key: The signing key.
        alg: Its JWS algorithm (:func:`jws_algorithm`).
        nonce: A ``Replay-Nonce`` value (base64url text).
        url: The request URL.
        kid: The account URL, or None to send the public key.
    """
    protected: dict[str, Any] = {"alg": alg.name, "nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = key.public_key().to_partial_json()
    else:
        protected["kid"] = kid
    protected_b64 = jose.b64encode(json.dumps(protected, separators=(",", ":")).encode("utf-8"))
    payload_b64 = jose.b64encode(payload)
    signature = alg.sign(key.key, protected_b64 + b"." + payload_b64)
    return json.dumps(
        {"protected": protected_b64.decode("ascii"), "payload": payload_b64.decode("ascii"),
         "signature": jose.b64encode(signature).decode("ascii")},
        separators=(",", ":"),
    ).encode("ascii")


def jws_algorithm(key: jose.JWK) -> jose.JWASignature:
    """The JWS algorithm for an account key: ES256/384/512 by curve, RS256 for RSA.

    Raises:
        ValueError: for a key type ACME CAs do not accept.
    """
    if isinstance(key, jose.JWKEC):
        curve = key.key.curve.name
        algorithms = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}
        if curve in algorithms:
            return algorithms[curve]
        raise ValueError(f"unsupported account key curve {curve}")
    if isinstance(key, jose.JWKRSA):
        return jose.RS256
    raise ValueError(f"unsupported account key type {type(key).__name__}")


class _BodyReader(Protocol):
    """Collect a response body up to a size limit; abort the connection beyond it."""

    def __init__(self, finished: Deferred, limit: int) -> None:
        self.finished = finished
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished is None:
            return
        self.size += len(data)
        if self.size > self.limit:
            finished, self.finished = self.finished, None
            self.transport.stopProducing()
            finished.errback(ValueError(f"response body longer than {self.limit} bytes"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.finished is None:
            return
        finished, self.finished = self.finished, None
        if reason.check(ResponseDone, PotentialDataLoss):
            finished.callback(b"".join(self.chunks))
        else:
            finished.errback(reason)


def _read_body(response: Any, limit: int = MAX_BODY_BYTES) -> Deferred:
    """Read a response body; cancelling the Deferred aborts the connection."""
    reader: _BodyReader

    def cancel(d: Deferred) -> None:
        # Only ever called while the body is arriving: deliverBody has connected the reader,
        # and a Deferred that has fired (reader.finished is None) is not cancelled.
        reader.finished = None
        reader.transport.stopProducing()

    finished: Deferred = Deferred(cancel)
    reader = _BodyReader(finished, limit)
    response.deliverBody(reader)
    return finished


@attrs.frozen
class AcmeResponse:
    """A successful (2xx) answer from the CA, body read.

    Attributes:
        url: The request URL.
        code: The HTTP status.
        headers: The response headers.
        body: The response body.
        retry_after: Seconds from ``Retry-After``, when given.
        links: ``Link`` relations, ``rel -> (url, ...)``, resolved against ``url``.
    """

    url: str
    code: int
    headers: Headers = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    retry_after: float | None = None
    links: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    @property
    def location(self) -> str | None:
        """The ``Location`` header resolved against the request URL, or None."""
        value = self.header("location")
        return urljoin(self.url, value) if value else None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object.

        Raises:
            AcmeTransportError: when the body is not a JSON object.
        """
        try:
            doc = json.loads(self.body)
        except ValueError:
            raise AcmeTransportError("the CA answered something that is not JSON", url=self.url) from None
        if not isinstance(doc, dict):
            raise AcmeTransportError("the CA answered JSON that is not an object", url=self.url)
        return doc


def _encode_payload(payload: Any) -> bytes:
    if payload is None:
        return b""  # POST-as-GET (RFC 8555 section 6.3)
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, jose.JSONDeSerializable):
        return payload.json_dumps().encode("utf-8")
    return json.dumps(payload).encode("utf-8")


@attrs.define
class JWSTransport:
    """Sends requests to one CA: unauthenticated GET/HEAD and JWS-signed POST.

    Attributes:
        http_client: A ``treq.HTTPClient`` (or ``StubTreq``): only ``request`` is used.
        clock: Schedules the per-request timeouts.
        timeout: Seconds each request (headers and body) may take.
        max_bad_nonce_retries: How often one POST is re-signed after ``badNonce``.
        user_agent: Sent on every request (RFC 8555 section 6.1 requires one).
        nonce_pool_size: How many unused nonces to keep (newest are used first).
        on_response: Called with ``(method, url, status)`` for every answer, status
            ``"error"`` when none came (for metrics); None for no reporting.
        log_slower_than: Answers that took at least this many seconds, or that are not
            2xx, are logged at debug level (method, URL, status, seconds).
    """

    log = Logger()

    http_client: Any
    clock: IReactorTime
    timeout: float = 30.0
    max_bad_nonce_retries: int = 10
    user_agent: str = "jobhost-acme/0.1 (treq)"
    nonce_pool_size: int = 32
    on_response: Any = None
    log_slower_than: float = 1.0
    _nonces: list[str] = attrs.field(factory=list, init=False, repr=False)

    def get(self, url: str, accept: str = "application/json") -> Deferred:
        """Unauthenticated GET (the directory, ``renewalInfo``).

        Returns:
            Deferred firing with an :class:`AcmeResponse`; failing with
            :class:`AcmeProblem` or :class:`AcmeTransportError`.
        """
        return self._send("GET", url, headers={"Accept": accept})

    @inlineCallbacks
    def new_nonce(self, new_nonce_url: str) -> Any:
        """Take a nonce from the pool, or ``HEAD newNonce`` for one.

        Returns:
            Deferred firing with the nonce (base64url text); failing with
            :class:`AcmeTransportError` when the CA gives none.
        """
        if self._nonces:
            return self._nonces.pop()
        yield self._send("HEAD", new_nonce_url)
        if not self._nonces:
            raise AcmeTransportError("newNonce answered without a Replay-Nonce header", url=new_nonce_url)
        return self._nonces.pop()

    @inlineCallbacks
    def post(
        self,
        url: str,
        payload: Any,
        *,
        key: jose.JWK,
        kid: str | None,
        new_nonce_url: str,
        accept: str | None = None,
    ) -> Any:
        """POST a JWS-signed ``payload`` to ``url``, retrying ``badNonce``.

        Args:
            url: The request URL (also the JWS ``url`` header).
            payload: None for POST-as-GET, else bytes, a mapping, or a josepy object.
            key: The account key (or the certificate key for revocation).
            kid: The account URL; None puts the public ``jwk`` in the header instead.
            new_nonce_url: The directory's ``newNonce``.
            accept: The ``Accept`` header, e.g. ``application/pem-certificate-chain``.

        Returns:
            Deferred firing with an :class:`AcmeResponse`; failing with
            :class:`AcmeProblem` (``badNonce`` only once the retries are spent)
            or :class:`AcmeTransportError`.
        """
        body = _encode_payload(payload)
        alg = jws_algorithm(key)
        headers = {"Content-Type": JOSE_CONTENT_TYPE}
        if accept:
            headers["Accept"] = accept
        attempt = 0
        while True:
            nonce = yield self.new_nonce(new_nonce_url)
            signed = sign_jws(body, key=key, alg=alg, nonce=nonce, url=url, kid=kid)
            try:
                response = yield self._send("POST", url, data=signed, headers=headers)
            except AcmeProblem as problem:
                if problem.code != "badNonce" or attempt >= self.max_bad_nonce_retries:
                    raise
                attempt += 1
                self.log.debug(
                    "CA rejected a nonce for {url}; retrying ({attempt}/{max_retries})",
                    url=url,
                    attempt=attempt,
                    max_retries=self.max_bad_nonce_retries,
                )
                continue
            return response

    def _remember_nonce(self, headers: Headers) -> None:
        for value in headers.getRawHeaders("replay-nonce") or ():
            try:
                jose.decode_b64jose(value)
            except jose.DeserializationError:
                self.log.warn("Ignoring a malformed Replay-Nonce {nonce!r}", nonce=value[:64])
                continue
            self._nonces.append(value)
        del self._nonces[: -self.nonce_pool_size]

    def _send(self, method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None) -> Deferred:
        all_headers = {"User-Agent": self.user_agent}
        all_headers.update(headers or {})
        request_headers = Headers({k: [v] for k, v in all_headers.items()})
        started = self.clock.seconds()

        def read(response: Any) -> Deferred:
            d = _read_body(response)
            d.addCallback(lambda body: (response, body))
            return d

        d = self.http_client.request(
            method, url, data=data, headers=request_headers, allow_redirects=method != "POST"
        )
        d.addCallback(read)
        # Not Deferred.addTimeout: the Agent turns a cancellation into
        # ResponseNeverReceived([CancelledError]), which addTimeout would not
        # recognise as its own timeout.
        timed_out: list[bool] = []

        def time_out() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self.clock.callLater(self.timeout, time_out)

        def settled(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(settled)

        def failed(failure: Failure) -> Failure:
            # A cancellation is the caller's unless it is our timeout (which, mid-body, is a
            # bare CancelledError too): only the caller's goes unreported.
            if self.on_response is not None and (timed_out or not failure.check(CancelledError)):
                self.on_response(method, url, "error")
            if timed_out:
                raise AcmeTransportError(f"no complete answer within {self.timeout:g} s", url=url)
            if failure.check(AcmeProblem, AcmeTransportError, CancelledError):
                return failure
            raise AcmeTransportError(describe_exception(failure.value), url=url)

        d.addCallbacks(lambda result: self._classify(method, url, started, *result), failed)
        return d

    def _classify(self, method: str, url: str, started: float, response: Any, body: bytes) -> AcmeResponse:
        headers = response.headers
        self._remember_nonce(headers)
        retry_after = retry_after_seconds(headers.getRawHeaders("retry-after"), now(self.clock))
        links = parse_link_header(headers.getRawHeaders("link") or (), url)
        code = response.code
        if self.on_response is not None:
            self.on_response(method, url, str(code))
        elapsed = self.clock.seconds() - started
        if elapsed >= self.log_slower_than or not 200 <= code < 300:
            # Not every answer: ten a certificate, each a formatted line in twistd's log
            # (it writes debug too) on the reactor thread; on_response counts them all.
            self.log.debug(
                "ACME {method} {url} -> {code} in {elapsed:.3f} s",
                method=method,
                url=url,
                code=code,
                elapsed=elapsed,
            )
        if 200 <= code < 300:
            return AcmeResponse(url=url, code=code, headers=headers, body=body, retry_after=retry_after, links=links)
        content_type = (headers.getRawHeaders("content-type") or [""])[0].split(";")[0].strip().lower()
        doc: Any = None
        if content_type in (PROBLEM_CONTENT_TYPE, "application/json"):
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
        if isinstance(doc, dict) and isinstance(doc.get("type"), str):
            raise problem_from_document(doc, status=code, retry_after=retry_after, url=url, links=links)
        snippet = body[:200].decode("utf-8", "replace")
        raise AcmeTransportError(
            f"HTTP {code} that is not an ACME problem document ({content_type or 'no content type'}): {snippet!r}",
            url=url,
        )


__all__ = [
    "ERROR_PREFIX",
    "JOSE_CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "PEM_CHAIN_CONTENT_TYPE",
    "PROBLEM_CONTENT_TYPE",
    "AcmeResponse",
    "JWSTransport",
    "jws_algorithm",
    "parse_link_header",
    "problem_from_document",
    "sign_jws",
]
