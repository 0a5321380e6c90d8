"""
Tests of jobhost.acme.transport: the ACME wire below the order flow.

:class:`WireCA` is a small twisted.web resource served over ``treq.testing.StubTreq``
(the real HTTP/1.1 client and server code, in memory): it hands out nonces, records every
request with its decoded JWS, and answers what each test scripts.  Time is a ``Clock``.
The one fake HTTP client, :class:`CannedClient`, injects an answer no real HTTP stack
delivers (a final status of 199).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import josepy as jose
from acme import jws
from cryptography.hazmat.primitives.asymmetric import ec
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from jobhost.acme.transport import JWSTransport, jws_algorithm, parse_link_header, sign_jws
from jobhost.certs import generate_private_key
from jobhost.errors import AcmeProblem, AcmeTransportError

BASE = "https://ca.test"
PROBLEM = "application/problem+json"


def _b64(data: bytes) -> str:
    return jose.b64encode(data).decode("ascii")


def _problem_body(code: str, detail: str = "", **extra: Any) -> bytes:
    return json.dumps({"type": "urn:ietf:params:acme:error:" + code, "detail": detail, **extra}).encode()


@attrs.define
class Request:
    """What the CA received: method, path, headers, and for a POST the JWS's protected header and payload."""

    method: str
    path: str
    headers: Headers
    protected: Any = None
    payload: bytes | None = None


class WireCA(Resource):
    """Answers scripted responses; ``/nonce`` hands out ``nonces_per_head`` fresh nonces per HEAD.

    ``nonce_on_post`` says whether other answers carry a ``Replay-Nonce`` too (Boulder's do).
    A scripted answer is ``(code, headers, body)``, or a callable taking the twisted.web
    request and returning ``NOT_DONE_YET`` (to stall, or to write and drop the connection).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.issued: list[str] = []
        self.requests: list[Request] = []
        self.scripted: dict[str, list[Any]] = {}
        self.nonces_per_head = 1
        self.nonce_on_post = True

    def nonce(self) -> str:
        self.counter += 1
        value = _b64(b"nonce-%d" % self.counter)
        self.issued.append(value)
        return value

    def script(self, path: str, *answers: Any) -> None:
        self.scripted.setdefault(path, []).extend(answers)

    def posts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    def heads(self) -> list[Request]:
        return [r for r in self.requests if r.method == "HEAD"]

    def render(self, request: Any) -> Any:
        method = request.method.decode("ascii")
        path = request.path.decode("ascii")
        seen = Request(method, path, request.requestHeaders)
        if method == "POST":
            parsed = jws.JWS.json_loads(request.content.read())
            seen.protected = parsed.signature.combined
            seen.payload = parsed.payload
        self.requests.append(seen)
        if self.scripted.get(path):
            answer = self.scripted[path].pop(0)
        elif path == "/nonce":
            answer = (200, {"Replay-Nonce": [self.nonce() for _ in range(self.nonces_per_head)]}, b"")
        else:
            answer = (200, {"Content-Type": "application/json"}, b"{}")
        if callable(answer):
            return answer(request)
        code, headers, body = answer
        request.setResponseCode(code)
        if method == "POST" and self.nonce_on_post:
            headers = {"Replay-Nonce": self.nonce(), **headers}
        for name, value in headers.items():
            request.responseHeaders.setRawHeaders(name, value if isinstance(value, list) else [value])
        return body


@attrs.define
class CannedResponse:
    """An ``IResponse`` with a fixed status and body (for :class:`CannedClient`)."""

    code: int
    body: bytes
    headers: Headers = attrs.field(factory=Headers)

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(None)
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


@attrs.define
class CannedClient:
    """A fault-injecting HTTP client: every request gets ``response``."""

    response: CannedResponse

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred:
        return succeed(self.response)


def _stall(request: Any) -> Any:
    return NOT_DONE_YET


def _account_key() -> jose.JWKEC:
    return jose.JWKEC(key=generate_private_key("ecdsa-p256"))


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.ca = WireCA()
        self.stub = StubTreq(self.ca)
        self.clock = Clock()
        self.clock.advance(1_772_366_400)  # 2026-03-01T12:00:00Z
        self.key = _account_key()

    def transport(self, **options: Any) -> JWSTransport:
        return JWSTransport(self.stub, self.clock, **options)

    def settle(self, d: Deferred) -> Deferred:
        self.stub.flush()
        return d

    def get(self, transport: JWSTransport, path: str) -> Deferred:
        return self.settle(transport.get(BASE + path))

    def post(self, transport: JWSTransport, path: str, payload: Any = None, **options: Any) -> Deferred:
        options.setdefault("kid", BASE + "/acct/1")
        d = transport.post(BASE + path, payload, key=self.key, new_nonce_url=BASE + "/nonce", **options)
        for _ in range(50):  # each re-sign is one more round trip
            self.stub.flush()
        return d

    def error(self, d: Deferred, *types: type) -> Any:
        return self.failureResultOf(d, *types).value


class BodyTests(_Base):
    """Reading answers: size limit, connections dropped or stalled mid-body."""

    def test_body_up_to_one_mebibyte_is_read_and_larger_refused(self) -> None:
        """An answer of exactly 1 MiB is read whole; one byte more is an AcmeTransportError."""
        mebibyte = 1024 * 1024
        transport = self.transport()
        self.ca.script("/big", (200, {"Content-Type": "application/json"}, b"x" * mebibyte))
        self.ca.script("/bigger", (200, {"Content-Type": "application/json"}, b"x" * (mebibyte + 1)))
        response = self.successResultOf(self.get(transport, "/big"))
        self.assertEqual(len(response.body), mebibyte)
        error = self.error(self.get(transport, "/bigger"), AcmeTransportError)
        self.assertIn("longer than 1048576 bytes", error.message)
        self.assertEqual(error.url, BASE + "/bigger")

    def test_endless_body_is_cut_off(self) -> None:
        """A CA that never stops sending is cut off past 1 MiB: the request fails and the connection is closed."""
        lost: list[Failure] = []
        chunks: list[int] = []

        def endless(request: Any) -> Any:
            def more() -> None:
                if not lost:
                    chunks.append(1)
                    request.write(b"x" * 65536)
                    self.clock.callLater(0.1, more)

            request.notifyFinish().addErrback(lost.append)
            more()
            return NOT_DONE_YET

        self.ca.script("/dir", endless)
        d = self.get(self.transport(), "/dir")
        for _ in range(40):
            self.clock.advance(0.1)
            self.stub.flush()
        self.assertIn("longer than 1048576 bytes", self.error(d, AcmeTransportError).message)
        self.assertEqual(len(lost), 1, "the connection is closed")
        self.assertLess(len(chunks), 20)

    def test_connection_dropped_mid_body_fails_at_once(self) -> None:
        """A CA that drops the connection halfway through a body fails the request then, not at the timeout."""

        def drop(request: Any) -> Any:
            request.setHeader(b"content-length", b"100")
            request.write(b'{"status": ')
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        self.ca.script("/dir", drop)
        error = self.error(self.get(self.transport(), "/dir"), AcmeTransportError)
        self.assertNotIn("no complete answer", error.message)
        self.assertEqual(self.clock.getDelayedCalls(), [], "the timeout is cancelled")

    def test_stalled_body_times_out_and_closes_the_connection(self) -> None:
        """A body that stops arriving fails at the timeout, reported as "error", and the connection is closed."""
        lost: list[Failure] = []

        def stall_mid_body(request: Any) -> Any:
            request.setHeader(b"content-length", b"100")
            request.write(b'{"status": ')
            request.notifyFinish().addErrback(lost.append)
            return NOT_DONE_YET

        self.ca.script("/dir", stall_mid_body)
        reported: list[tuple[str, str, str]] = []
        d = self.get(self.transport(timeout=10, on_response=lambda *a: reported.append(a)), "/dir")
        self.assertNoResult(d)
        self.clock.advance(10)
        self.stub.flush()
        error = self.error(d, AcmeTransportError)
        self.assertIn("no complete answer within 10 s", error.message)
        self.assertEqual(len(lost), 1, "the half-read connection is closed")
        self.assertEqual(reported, [("GET", BASE + "/dir", "error")])

    def test_default_timeout_is_thirty_seconds(self) -> None:
        """Without a timeout option a silent CA fails the request after 30 s, not before."""
        self.ca.script("/dir", _stall)
        d = self.get(self.transport(), "/dir")
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIn("30 s", self.error(d, AcmeTransportError).message)

    def test_cancelled_read_is_cancelled_and_not_reported(self) -> None:
        """A request the caller cancels while its body arrives fails with CancelledError, unreported, connection closed."""
        reported: list[tuple[str, str, str]] = []
        lost: list[Failure] = []

        def stall_mid_body(request: Any) -> Any:
            request.setHeader(b"content-length", b"100")
            request.write(b'{"status": ')
            request.notifyFinish().addErrback(lost.append)
            return NOT_DONE_YET

        self.ca.script("/dir", stall_mid_body)
        d = self.get(self.transport(on_response=lambda *a: reported.append(a)), "/dir")
        d.cancel()
        self.stub.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(reported, [])
        self.assertEqual(len(lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [], "the timeout is cancelled")


class StatusTests(_Base):
    """Which answers are successes, problems, or not ACME at all."""

    def test_2xx_is_success_and_nothing_else(self) -> None:
        """200 and 299 are answers; 300 and a final 199 are AcmeTransportErrors naming the status."""
        transport = self.transport()
        for code in (200, 299):
            self.ca.script("/x", (code, {"Content-Type": "application/json"}, b'{"ok": true}'))
            response = self.successResultOf(self.get(transport, "/x"))
            self.assertEqual((response.code, response.json()), (code, {"ok": True}))
        self.ca.script("/x", (300, {"Content-Type": "application/json"}, b"{}"))
        self.assertIn("HTTP 300", self.error(self.get(transport, "/x"), AcmeTransportError).message)
        canned = JWSTransport(CannedClient(CannedResponse(199, b"{}")), self.clock)
        self.assertIn("HTTP 199", self.error(canned.get(BASE + "/x"), AcmeTransportError).message)

    def test_problem_status_comes_from_the_document_else_the_response(self) -> None:
        """A problem's status is the document's when it has one, else the HTTP status."""
        transport = self.transport()
        self.ca.script(
            "/x",
            (429, {"Content-Type": PROBLEM}, _problem_body("rateLimited", "slow down")),
            (400, {"Content-Type": PROBLEM}, _problem_body("malformed", "odd", status=403)),
        )
        self.assertEqual(self.error(self.get(transport, "/x"), AcmeProblem).status, 429)
        self.assertEqual(self.error(self.get(transport, "/x"), AcmeProblem).status, 403)

    def test_problem_media_type_is_matched_loosely(self) -> None:
        """A problem document is recognised whatever the media type's case, parameters and spacing."""
        transport = self.transport()
        for content_type in ("Application/Problem+JSON", "application/problem+json; charset=utf-8",
                             "application/problem+json ;charset=utf-8", "application/json"):
            self.ca.script("/x", (403, {"Content-Type": content_type}, _problem_body("unauthorized", "no")))
            problem = self.error(self.get(transport, "/x"), AcmeProblem)
            self.assertEqual(problem.code, "unauthorized", content_type)

    def test_non_acme_error_quotes_the_start_of_the_body(self) -> None:
        """An error that is no problem document quotes its first 200 bytes and its content type (or its absence)."""
        transport = self.transport()
        self.ca.script("/x", (503, {"Content-Type": "text/html"}, b"<" + b"y" * 198 + b">" + b"z" * 500))
        error = self.error(self.get(transport, "/x"), AcmeTransportError)
        self.assertIn("HTTP 503", error.message)
        self.assertIn("(text/html)", error.message)
        self.assertIn(repr("<" + "y" * 198 + ">"), error.message)
        self.assertNotIn("z", error.message)

        def untyped(request: Any) -> Any:
            request.defaultContentType = None
            request.setResponseCode(500)
            request.write(b"oops")
            request.finish()
            return NOT_DONE_YET

        self.ca.script("/x", untyped)
        self.assertIn("(no content type): 'oops'", self.error(self.get(transport, "/x"), AcmeTransportError).message)

    def test_json_of_an_answer_that_is_no_object(self) -> None:
        """A 2xx answer whose body is not JSON, or JSON but no object, is an AcmeTransportError when read."""
        transport = self.transport()
        self.ca.script("/x", (200, {"Content-Type": "application/json"}, b"<html>"),
                       (200, {"Content-Type": "application/json"}, b"[1, 2]"))
        for expected in ("not JSON", "not an object"):
            response = self.successResultOf(self.get(transport, "/x"))
            error = self.assertRaises(AcmeTransportError, response.json)
            self.assertIn(expected, error.message)
            self.assertEqual(error.url, BASE + "/x")

    def test_get_follows_redirects_post_does_not(self) -> None:
        """A GET (the directory) follows a redirect; a signed POST answered with one is an error."""
        transport = self.transport()
        moved = (302, {"Location": BASE + "/dir2"}, b"")
        self.ca.script("/dir", moved)
        self.ca.script("/dir2", (200, {"Content-Type": "application/json"}, b'{"newNonce": "x"}'))
        self.assertEqual(self.successResultOf(self.get(transport, "/dir")).json(), {"newNonce": "x"})
        self.ca.script("/order", moved)
        error = self.error(self.post(transport, "/order", {}), AcmeTransportError)
        self.assertIn("HTTP 302", error.message)
        self.assertEqual([r.path for r in self.ca.requests if r.path.startswith("/dir")], ["/dir", "/dir2"])
        self.assertEqual([r.path for r in self.ca.posts()], ["/order"])

    def test_fast_successful_answers_are_not_logged(self) -> None:
        """A 2xx answer in under a second is counted (on_response), not logged; a 4xx one is logged."""
        self.ca.script("/x", (204, {}, b""))
        self.ca.script("/y", (404, {"Content-Type": "text/plain"}, b"gone"))
        with capturedLogs() as events:
            self.successResultOf(self.get(self.transport(), "/x"))
            self.error(self.get(self.transport(), "/y"), AcmeTransportError)
        self.assertEqual([(e["url"], e["code"]) for e in events if e.get("method") == "GET"], [(BASE + "/y", 404)])

    def test_slow_answers_are_logged_with_their_time(self) -> None:
        """An answer that took a second or more is logged at debug level with method, URL, status and seconds."""

        def slow(request: Any) -> Any:
            self.clock.callLater(1.0, lambda: (request.setResponseCode(204), request.finish()))
            return NOT_DONE_YET

        self.ca.script("/x", slow)
        with capturedLogs() as events:
            d = self.get(self.transport(), "/x")
            self.clock.advance(1.0)
            self.stub.flush()
            self.successResultOf(d)
        (event,) = [e for e in events if e.get("method") == "GET"]
        self.assertEqual(event["log_level"], LogLevel.debug)
        self.assertEqual((event["url"], event["code"], event["elapsed"]), (BASE + "/x", 204, 1.0))


class ReportingTests(_Base):
    """on_response: one report per request, for metrics."""

    def test_answers_and_failures_are_reported(self) -> None:
        """An answer is reported with its status; a connection dropped before any answer as "error"."""
        reported: list[tuple[str, str, str]] = []

        def hang_up(request: Any) -> Any:
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        self.ca.script("/x", (404, {"Content-Type": PROBLEM}, _problem_body("malformed")), hang_up)
        transport = self.transport(on_response=lambda *a: reported.append(a))
        self.error(self.get(transport, "/x"), AcmeProblem)
        self.error(self.get(transport, "/x"), AcmeTransportError)
        self.assertEqual(reported, [("GET", BASE + "/x", "404"), ("GET", BASE + "/x", "error")])

    def test_failures_without_a_reporter(self) -> None:
        """Without on_response a dropped connection is still an AcmeTransportError naming the URL."""

        def hang_up(request: Any) -> Any:
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        self.ca.script("/x", hang_up)
        error = self.error(self.get(self.transport(), "/x"), AcmeTransportError)
        self.assertEqual(error.url, BASE + "/x")


class NonceTests(_Base):
    """The nonce pool and badNonce retries."""

    def test_pool_keeps_the_newest_thirty_two_nonces(self) -> None:
        """Of 40 nonces in one answer the newest 32 are used, newest first; then newNonce is asked again."""
        self.ca.nonces_per_head = 40
        self.ca.nonce_on_post = False
        transport = self.transport()
        for _ in range(33):
            self.successResultOf(self.post(transport, "/x", {}))
        used = [_b64(r.protected.nonce) for r in self.ca.posts()]
        self.assertEqual(used[:32], self.ca.issued[39:7:-1])
        self.assertEqual(used[32], self.ca.issued[79])
        self.assertEqual(len(self.ca.heads()), 2)

    def test_nonce_from_every_answer_is_used(self) -> None:
        """A nonce from a POST's answer (even an error) signs the next POST; newNonce is asked once."""
        transport = self.transport()
        self.ca.script("/x", (400, {"Content-Type": PROBLEM}, _problem_body("malformed")))
        self.error(self.post(transport, "/x", {}), AcmeProblem)
        self.successResultOf(self.post(transport, "/x", {}))
        first, second = self.ca.posts()
        self.assertEqual(_b64(second.protected.nonce), self.ca.issued[1])
        self.assertEqual(len(self.ca.heads()), 1)

    def test_malformed_nonce_is_ignored_and_logged(self) -> None:
        """A Replay-Nonce that is not base64url is skipped with a warning; good ones beside it are used."""
        self.ca.nonce_on_post = False
        self.ca.script("/nonce", (200, {"Replay-Nonce": ["not base64!", _b64(b"good")]}, b""))
        transport = self.transport()
        with capturedLogs() as events:
            self.successResultOf(self.post(transport, "/x", {}))
        self.assertEqual(self.ca.posts()[0].protected.nonce, b"good")
        self.assertEqual(len(self.ca.heads()), 1)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual([e["nonce"] for e in warnings], ["not base64!"])

    def test_new_nonce_without_a_nonce(self) -> None:
        """A newNonce answer without a usable Replay-Nonce is an AcmeTransportError naming newNonce; nothing is posted."""
        self.ca.script("/nonce", (200, {}, b""), (200, {"Replay-Nonce": "a"}, b""))
        transport = self.transport()
        for _ in range(2):
            error = self.error(self.post(transport, "/x", {}), AcmeTransportError)
            self.assertIn("without a Replay-Nonce", error.message)
            self.assertEqual(error.url, BASE + "/nonce")
        self.assertEqual(self.ca.posts(), [])
        self.flushLoggedErrors()

    def test_bad_nonce_retried_ten_times_by_default(self) -> None:
        """By default a badNonce POST is re-signed 10 times, each retry logged, then the problem is raised."""
        bad = (400, {"Content-Type": PROBLEM}, _problem_body("badNonce", "stale"))
        self.ca.script("/x", *[bad] * 20)
        with capturedLogs() as events:
            problem = self.error(self.post(self.transport(), "/x", {}), AcmeProblem)
        self.assertEqual(problem.code, "badNonce")
        self.assertEqual(len(self.ca.posts()), 11)
        retries = [(e["attempt"], e["max_retries"]) for e in events if "attempt" in e]
        self.assertEqual(retries, [(n, 10) for n in range(1, 11)])

    def test_other_problems_are_not_retried(self) -> None:
        """A problem other than badNonce is raised at once."""
        self.ca.script("/x", (403, {"Content-Type": PROBLEM}, _problem_body("unauthorized")))
        self.error(self.post(self.transport(), "/x", {}), AcmeProblem)
        self.assertEqual(len(self.ca.posts()), 1)


class SigningTests(_Base):
    """What a POST carries."""

    def test_payload_kinds(self) -> None:
        """None is POST-as-GET (empty payload), bytes go as they are, a mapping as JSON; Accept is sent when asked."""
        transport = self.transport()
        self.successResultOf(self.post(transport, "/x", None))
        self.successResultOf(self.post(transport, "/x", b'{"raw":  1}', accept="application/pem-certificate-chain"))
        self.successResultOf(self.post(transport, "/x", {"a": 1}))
        empty, raw, mapping = self.ca.posts()
        self.assertEqual((empty.payload, raw.payload, json.loads(mapping.payload)), (b"", b'{"raw":  1}', {"a": 1}))
        self.assertEqual(raw.headers.getRawHeaders("accept"), ["application/pem-certificate-chain"])
        self.assertEqual(empty.headers.getRawHeaders("content-type"), ["application/jose+json"])
        self.assertEqual(empty.protected.url, BASE + "/x")
        self.assertEqual(empty.protected.kid, BASE + "/acct/1")
        self.assertTrue(empty.headers.getRawHeaders("user-agent")[0].startswith("jobhost-acme/"))

    def test_unsupported_account_keys(self) -> None:
        """An EC key on a curve ACME CAs do not accept, and a symmetric key, are refused before anything is sent."""
        for key, words in ((jose.JWKEC(key=ec.generate_private_key(ec.SECP256K1())), "curve secp256k1"),
                           (jose.JWKOct(key=b"secret"), "key type JWKOct")):
            error = self.assertRaises(ValueError, jws_algorithm, key)
            self.assertIn(words, str(error))
        self.assertIs(jws_algorithm(jose.JWKEC(key=generate_private_key("ecdsa-p384"))), jose.ES384)


class LinkTests(SynchronousTestCase):
    """Link headers (RFC 8288)."""

    def test_relation_and_parameter_names_are_case_insensitive(self) -> None:
        """REL= and rel="Alternate" both name the alternate relation."""
        links = parse_link_header(['<https://ca.test/a>; REL="Alternate"', "<https://ca.test/b>; rel=UP"], BASE)
        self.assertEqual(links, {"alternate": ("https://ca.test/a",), "up": ("https://ca.test/b",)})

    def test_other_parameters_before_rel(self) -> None:
        """Parameters other than rel, before or after it, are skipped."""
        links = parse_link_header(['<https://ca.test/a>; title="chain"; type="x"; rel="alternate"'], BASE)
        self.assertEqual(links, {"alternate": ("https://ca.test/a",)})

    def test_space_inside_the_brackets(self) -> None:
        """Space around the URL inside <> is not part of it."""
        links = parse_link_header([b'< /cert/2 >;rel="alternate"'], BASE + "/cert/1")
        self.assertEqual(links, {"alternate": ("https://ca.test/cert/2",)})


class ResponseTests(_Base):
    """AcmeResponse as callers see it."""

    def test_repr_leaves_out_headers_and_body(self) -> None:
        """A response's repr (in logs and test failures) names URL and status, not the body or the headers."""
        self.ca.script("/cert", (200, {"X-Secret": "hdr"}, b"chain-bytes"))
        text = repr(self.successResultOf(self.get(self.transport(), "/cert")))
        self.assertIn(BASE + "/cert", text)
        self.assertNotIn("chain-bytes", text)
        self.assertNotIn("hdr", text)

    def test_location_is_resolved_against_the_request(self) -> None:
        """A relative Location is resolved against the request URL; no Location is None."""
        self.ca.script("/acct", (201, {"Location": "/acct/7"}, b"{}"), (200, {}, b"{}"))
        transport = self.transport()
        self.assertEqual(self.successResultOf(self.get(transport, "/acct")).location, BASE + "/acct/7")
        self.assertIsNone(self.successResultOf(self.get(transport, "/acct")).location)

    def test_header_is_the_first_value(self) -> None:
        """header() gives a header's first value (Link, Location...), or None when it is absent."""
        self.ca.script("/x", (200, {"Link": ["<a>;rel=up", "<b>;rel=index"]}, b"{}"))
        response = self.successResultOf(self.get(self.transport(), "/x"))
        self.assertEqual(response.header("link"), "<a>;rel=up")
        self.assertIsNone(response.header("location"))


class SignJWSTests(SynchronousTestCase):
    """sign_jws: what certbot's acme.jws reads back and verifies, for each key type ACME uses."""

    def _keys(self):
        from cryptography.hazmat.primitives.asymmetric import rsa

        yield jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        yield jose.JWKEC(key=ec.generate_private_key(ec.SECP384R1()))
        yield jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def test_signature_verifies_with_kid(self) -> None:
        """With a kid the protected header holds alg, nonce, url and kid, no jwk; the signature verifies."""
        nonce = jose.encode_b64jose(b"0123456789abcdef")
        for key in self._keys():
            signed = sign_jws(b'{"status": "deactivated"}', key=key, alg=jws_algorithm(key), nonce=nonce,
                              url="https://ca.test/authz/1", kid="https://ca.test/acct/7")
            parsed = jws.JWS.json_loads(signed)
            self.assertTrue(parsed.verify(key.public_key()), key)
            header = json.loads(jose.b64decode(json.loads(signed)["protected"]))
            self.assertEqual(header, {"alg": jws_algorithm(key).name, "nonce": nonce,
                                      "url": "https://ca.test/authz/1", "kid": "https://ca.test/acct/7"})
            self.assertEqual(parsed.payload, b'{"status": "deactivated"}')
            if isinstance(key, jose.JWKEC):
                other = jose.JWKEC(key=ec.generate_private_key(key.key.curve))
                self.assertFalse(parsed.verify(other.public_key()), "another key of the curve does not verify")

    def test_without_kid_the_public_key_is_sent(self) -> None:
        """Without a kid (newAccount) the header carries the public jwk, and the JWS verifies with it alone."""
        for key in self._keys():
            signed = sign_jws(b"", key=key, alg=jws_algorithm(key), nonce="bm9uY2U", url="https://ca.test/new-acct",
                              kid=None)
            parsed = jws.JWS.json_loads(signed)
            self.assertTrue(parsed.verify())  # with the jwk from the header
            header = json.loads(jose.b64decode(json.loads(signed)["protected"]))
            self.assertNotIn("kid", header)
            self.assertEqual(jose.JWK.from_json(header["jwk"]), key.public_key())
            self.assertEqual(json.loads(signed)["payload"], "", "POST-as-GET: empty payload")
