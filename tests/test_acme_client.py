"""
Wire-level tests of jobhost's ACME client over ``treq.testing.StubTreq``.

:class:`FakeAcmeServer` is a small in-memory RFC 8555 server (a twisted.web
resource): it verifies every JWS (signature, ``url``, single-use nonce,
``jwk``/``kid``), keeps accounts, orders and authorizations, validates HTTP-01
against what the test responder published, and signs CSRs with a throwaway
CA.  Tests script one-off answers (problems, ``Retry-After``) on top of it.
Time is a ``Clock``; no sockets except the one connection-refused test.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import josepy as jose
from acme import jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.x509.oid import NameOID
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobhost.acme.client import AcmeClient
from jobhost.acme.interfaces import IAcmeClient, IHTTP01Responder
from jobhost.acme.resources import ari_cert_id, select_chain
from jobhost.acme.transport import parse_link_header
from jobhost.acme.urls import DIRECTORIES, resolve_directory_url
from jobhost.certs import generate_private_key, make_csr, split_pem_chain
from jobhost.errors import (
    AcmeProblem,
    AcmeTimeout,
    AcmeTransportError,
    AcmeUnsupported,
    AuthorizationFailed,
    ConfigError,
    InvalidCertificate,
)
from jobhost.testing import TestCA

BASE = "https://ca.test"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _b64(data: bytes) -> str:
    return jose.b64encode(data).decode("ascii")


def _problem(code: str, detail: str, status: int = 400, **extra: Any) -> tuple[int, dict[str, str], bytes]:
    doc = {"type": "urn:ietf:params:acme:error:" + code, "detail": detail, "status": status, **extra}
    return status, {"Content-Type": "application/problem+json"}, json.dumps(doc).encode()


@attrs.define
class Seen:
    """One request the fake received: method, path, protected header, decoded payload."""

    method: str
    path: str
    protected: dict[str, Any] = attrs.field(factory=dict)
    payload: Any = None
    nonce: str | None = None


class FakeAcmeServer(Resource):
    """An in-memory ACME server, strict about JWS, for StubTreq."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.nonces: set[str] = set()
        self.accounts: dict[str, str] = {}  # thumbprint -> account URL
        self.account_keys: dict[str, jose.JWK] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.authzs: dict[str, dict[str, Any]] = {}
        self.seen: list[Seen] = []
        self.scripted: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.hang: set[str] = set()
        self.held: list[Any] = []
        self.bad_nonces = 0
        self.meta: dict[str, Any] = {"termsOfService": BASE + "/tos"}
        self.directory_extra: dict[str, Any] = {}
        self.published: dict[str, str] = {}  # token -> key authorization (what the responder serves)
        self.pending_polls = 0
        self.authz_retry_after: str | None = None
        self.processing_polls = 0
        self.order_retry_after: str | None = None
        self.alternate_ca: TestCA | None = None
        self._ca: TestCA | None = None

    # -- helpers ---------------------------------------------------------------------------

    @property
    def ca(self) -> TestCA:
        if self._ca is None:
            self._ca = TestCA.create("fake ACME")
        return self._ca

    def _next(self) -> str:
        self.counter += 1
        return str(self.counter)

    def new_nonce(self) -> str:
        nonce = _b64(b"nonce-%d" % self._new_counter())
        self.nonces.add(nonce)
        return nonce

    def _new_counter(self) -> int:
        self.counter += 1
        return self.counter

    def script(self, path: str, response: tuple[int, dict[str, str], bytes]) -> None:
        """Answer the next request to ``path`` with ``response`` (after JWS checks for POSTs)."""
        self.scripted.setdefault(path, []).append(response)

    def posts(self, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path.startswith(path_prefix)]

    def directory(self) -> dict[str, Any]:
        doc = {
            "newNonce": BASE + "/nonce",
            "newAccount": BASE + "/acct",
            "newOrder": BASE + "/order",
            "revokeCert": BASE + "/revoke",
            "keyChange": BASE + "/key-change",
            "meta": self.meta,
        }
        doc.update(self.directory_extra)
        return doc

    # -- twisted.web -------------------------------------------------------------------------

    def render(self, request: Any) -> Any:
        if request.path.decode("ascii") in self.hang:
            self.held.append(request)
            return NOT_DONE_YET
        return self._respond(request)

    def release(self) -> None:
        """Answer the requests held by ``hang`` (which stops holding)."""
        self.hang.clear()
        held, self.held = self.held, []
        for request in held:
            request.write(self._respond(request))
            request.finish()

    def _respond(self, request: Any) -> bytes:
        path = request.path.decode("ascii")
        method = request.method.decode("ascii")
        code, headers, body = self._dispatch(request, method, path)
        request.setResponseCode(code)
        if method != "GET":  # like Boulder: nonces come from POST answers and newNonce only
            headers.setdefault("Replay-Nonce", self.new_nonce())
        headers.setdefault("Cache-Control", "no-store")
        for name, value in headers.items():
            values = value if isinstance(value, list) else [value]
            request.responseHeaders.setRawHeaders(name, values)
        return body

    def _dispatch(self, request: Any, method: str, path: str) -> tuple[int, dict[str, Any], bytes]:
        if method in ("GET", "HEAD"):
            self.seen.append(Seen(method, path))
            if self.scripted.get(path):
                return self.scripted[path].pop(0)
            if path == "/dir":
                return 200, {"Content-Type": "application/json"}, json.dumps(self.directory()).encode()
            if path == "/nonce":
                return 200, {}, b""
            if path.startswith("/ari/"):
                return _problem("malformed", "no ARI scripted", 404)
            return 404, {"Content-Type": "text/html"}, b"<html>not found</html>"
        if request.getHeader("content-type") != "application/jose+json":
            return _problem("malformed", "wrong content type")
        try:
            parsed = jws.JWS.json_loads(request.content.read())
        except Exception as e:
            return _problem("malformed", f"not a JWS: {e}")
        header = parsed.signature.combined
        nonce = _b64(header.nonce) if header.nonce else None
        protected = {"url": header.url, "kid": header.kid, "jwk": header.jwk, "alg": header.alg}
        payload = json.loads(parsed.payload) if parsed.payload else None
        self.seen.append(Seen(method, path, protected, payload, nonce))
        if header.url != BASE + path:
            return _problem("unauthorized", f"JWS url {header.url} is not {BASE + path}", 401)
        if nonce not in self.nonces:
            return _problem("badNonce", "unknown nonce")
        self.nonces.discard(nonce)
        if self.bad_nonces:
            self.bad_nonces -= 1
            return _problem("badNonce", "nonce rejected on purpose")
        if header.jwk is not None and header.kid is not None:
            return _problem("malformed", "jwk and kid are exclusive")
        if header.jwk is not None:
            if path not in ("/acct", "/revoke"):
                return _problem("malformed", "jwk is only for newAccount and revokeCert")
            key = header.jwk
        else:
            key = self.account_keys.get(header.kid)
            if key is None:
                return _problem("accountDoesNotExist", "unknown kid", 403)
        if not parsed.verify(key):
            return _problem("malformed", "bad signature")
        if self.scripted.get(path):
            return self.scripted[path].pop(0)
        return self._post(path, header, key, payload)

    def _post(self, path: str, header: Any, key: jose.JWK, payload: Any) -> tuple[int, dict[str, Any], bytes]:
        json_headers = {"Content-Type": "application/json"}
        if path == "/acct":
            thumbprint = _b64(key.thumbprint())
            if thumbprint in self.accounts:
                return 200, {**json_headers, "Location": self.accounts[thumbprint]}, b'{"status": "valid"}'
            if payload.get("onlyReturnExisting"):
                return _problem("accountDoesNotExist", "no account for this key")
            url = BASE + "/acct/" + self._next()
            self.accounts[thumbprint] = url
            self.account_keys[url] = key
            return 201, {**json_headers, "Location": url}, b'{"status": "valid"}'
        account_url = header.kid
        if path == "/order":
            order_id = self._next()
            authz_urls = []
            for identifier in payload["identifiers"]:
                authz_id = self._next()
                token = _b64(b"token-" + authz_id.encode().rjust(16, b"0"))  # RFC 8555: >= 128 bits
                self.authzs[authz_id] = {
                    "hostname": identifier["value"],
                    "status": "pending",
                    "token": token,
                    "answered": False,
                    "polls_left": self.pending_polls,
                    "account": account_url,
                    "error": None,
                }
                authz_urls.append(BASE + "/authz/" + authz_id)
            self.orders[order_id] = {
                "identifiers": payload["identifiers"],
                "authorizations": authz_urls,
                "finalized": False,
                "polls_left": self.processing_polls,
                "chain": None,
            }
            url = BASE + "/order/" + order_id
            return 201, {**json_headers, "Location": url}, json.dumps(self._order_doc(order_id)).encode()
        if path.startswith("/order/"):
            order_id = path.rsplit("/", 1)[1]
            headers = dict(json_headers)
            doc = self._order_doc(order_id, poll=True)
            if doc["status"] == "processing" and self.order_retry_after:
                headers["Retry-After"] = self.order_retry_after
            return 200, headers, json.dumps(doc).encode()
        if path.startswith("/authz/"):
            authz_id = path.rsplit("/", 1)[1]
            authz = self.authzs[authz_id]
            if payload == {"status": "deactivated"}:
                if authz["status"] not in ("pending", "valid"):
                    return _problem("malformed", f"cannot deactivate a {authz['status']} authorization")
                authz["status"] = "deactivated"
            elif authz["answered"] and authz["status"] == "pending":
                if authz["polls_left"] > 0:
                    authz["polls_left"] -= 1
                    headers = dict(json_headers)
                    if self.authz_retry_after:
                        headers["Retry-After"] = self.authz_retry_after
                    return 200, headers, json.dumps(self._authz_doc(authz_id)).encode()
                self._validate(authz, self.account_keys[authz["account"]])
            return 200, json_headers, json.dumps(self._authz_doc(authz_id)).encode()
        if path.startswith("/chall/"):
            authz_id = path.rsplit("/", 1)[1]
            self.authzs[authz_id]["answered"] = True
            doc = self._authz_doc(authz_id)["challenges"][0]
            doc["status"] = "processing"
            return 200, json_headers, json.dumps(doc).encode()
        if path.startswith("/finalize/"):
            order_id = path.rsplit("/", 1)[1]
            if self._order_doc(order_id)["status"] != "ready":
                return _problem("orderNotReady", "order is not ready", 403)
            csr = x509.load_der_x509_csr(jose.b64decode(payload["csr"]))
            order = self.orders[order_id]
            order["finalized"] = True
            order["chain"] = self._sign(self.ca, csr)
            if self.alternate_ca is not None:
                order["alternate"] = self._sign(self.alternate_ca, csr)
            return 200, json_headers, json.dumps(self._order_doc(order_id)).encode()
        if path.startswith("/cert/"):
            order_id = path.split("/")[2]
            order = self.orders[order_id]
            headers: dict[str, Any] = {"Content-Type": "application/pem-certificate-chain"}
            if path.endswith("/alt"):
                return 200, headers, order["alternate"]
            if "alternate" in order:
                headers["Link"] = [f'<{BASE}/cert/{order_id}/alt>;rel="alternate"', f'<{BASE}/dir>;rel="index"']
            return 200, headers, order["chain"]
        if path == "/revoke":
            return 200, {}, b""
        return _problem("malformed", f"no such resource {path}", 404)

    def _validate(self, authz: dict[str, Any], account_key: jose.JWK) -> None:
        expected = authz["token"] + "." + _b64(account_key.thumbprint())
        published = self.published.get(authz["token"])
        if published == expected:
            authz["status"] = "valid"
        else:
            authz["status"] = "invalid"
            authz["error"] = {
                "type": "urn:ietf:params:acme:error:unauthorized",
                "detail": f"key authorization was {published!r}",
                "status": 403,
            }

    def _authz_doc(self, authz_id: str) -> dict[str, Any]:
        authz = self.authzs[authz_id]
        challenge: dict[str, Any] = {
            "type": "http-01",
            "url": BASE + "/chall/" + authz_id,
            "token": authz["token"],
            "status": {"valid": "valid", "invalid": "invalid"}.get(authz["status"], "pending"),
        }
        if authz["error"]:
            challenge["error"] = authz["error"]
        return {
            "identifier": {"type": "dns", "value": authz["hostname"]},
            "status": authz["status"],
            "expires": "2026-03-08T12:00:00Z",
            "challenges": [challenge, {"type": "dns-01", "url": BASE + "/chall-dns/" + authz_id, "token": authz["token"], "status": "pending"}],
        }

    def _order_doc(self, order_id: str, poll: bool = False) -> dict[str, Any]:
        order = self.orders[order_id]
        statuses = [self.authzs[u.rsplit("/", 1)[1]]["status"] for u in order["authorizations"]]
        if order["finalized"]:
            status = "processing"
            if order["polls_left"] <= 0:
                status = "valid"
            elif poll:
                order["polls_left"] -= 1
        elif all(s == "valid" for s in statuses):
            status = "ready"
        elif any(s in ("invalid", "deactivated") for s in statuses):
            status = "invalid"
        else:
            status = "pending"
        doc = {
            "status": status,
            "identifiers": order["identifiers"],
            "authorizations": order["authorizations"],
            "finalize": BASE + "/finalize/" + order_id,
            "expires": "2026-03-08T12:00:00Z",
        }
        if status == "valid":
            doc["certificate"] = BASE + "/cert/" + order_id
        if status == "invalid":
            doc["error"] = {"type": "urn:ietf:params:acme:error:unauthorized", "detail": "an authorization failed"}
        return doc

    def _sign(self, ca: TestCA, csr: x509.CertificateSigningRequest) -> bytes:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        leaf = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca.intermediate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(hours=1))
            .not_valid_after(NOW + timedelta(days=90))
            .add_extension(san, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.intermediate_key.public_key()), critical=False
            )
            .sign(ca.intermediate_key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + ca.intermediate_pem


@implementer(IHTTP01Responder)
@attrs.define
class DictResponder:
    """Publishes key authorizations into the fake server's ``published`` dict."""

    server: FakeAcmeServer
    corrupt: bool = False
    calls: list[tuple[str, ...]] = attrs.field(factory=list)

    def start_responding(self, hostname: str, token: str, key_authorization: str) -> Deferred:
        self.calls.append(("start", hostname, token))
        self.server.published[token] = key_authorization + ("x" if self.corrupt else "")
        return succeed(None)

    def stop_responding(self, hostname: str, token: str) -> Deferred:
        self.calls.append(("stop", hostname, token))
        self.server.published.pop(token, None)
        return succeed(None)


def _account_key() -> jose.JWKEC:
    return jose.JWKEC(key=generate_private_key("ecdsa-p256"))


def _client_log(events: list[dict[str, Any]]) -> list[str]:
    """The client's own log lines (not the transport's), as text."""
    return [formatEvent(e) for e in events if e.get("log_namespace", "").startswith("jobhost.acme.client")]


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = FakeAcmeServer()
        self.stub = StubTreq(self.server)
        self.clock = Clock()
        self.clock.advance(NOW.timestamp())
        self.client = self.make_client()

    def make_client(self, **options: Any) -> AcmeClient:
        return AcmeClient(http_client=self.stub, clock=self.clock, directory_url=BASE + "/dir", **options)

    def run_until_done(self, d: Deferred, tick: float = 0.1, limit: int = 10_000) -> Any:
        """Flush the stub and step the clock until ``d`` has a result; return the Deferred."""
        for _ in range(limit):
            self.stub.flush()
            if d.called:
                return d
            self.clock.advance(tick)
        self.fail("the Deferred never fired")

    def result(self, d: Deferred) -> Any:
        return self.successResultOf(self.run_until_done(d))

    def failure(self, d: Deferred, *types: type) -> Any:
        return self.failureResultOf(self.run_until_done(d), *types).value

    def registered(self, **options: Any) -> AcmeClient:
        client = self.make_client(**options) if options else self.client
        self.key = _account_key()
        self.result(client.register(self.key))
        return client


class LinkHeaderTests(SynchronousTestCase):
    """Pure header parsing (Retry-After is tested in test_retry.py)."""

    def test_link_header(self) -> None:
        """Link values with several links, several rels, quoted or not, resolve against the request URL."""
        links = parse_link_header(
            [
                '<https://ca.test/cert/1/1>;rel="alternate", </cert/1/2>; rel=alternate',
                '<../dir>;rel="index up";title="x, y"',
            ],
            "https://ca.test/cert/1",
        )
        self.assertEqual(links["alternate"], ("https://ca.test/cert/1/1", "https://ca.test/cert/1/2"))
        self.assertEqual(links["index"], ("https://ca.test/dir",))
        self.assertEqual(links["up"], ("https://ca.test/dir",))


class AlgorithmTests(SynchronousTestCase):
    """Account key types map to JWS algorithms."""

    def test_algorithms(self) -> None:
        """P-256, P-384 and RSA keys sign with ES256, ES384 and RS256; other keys are refused."""
        from jobhost.acme.transport import jws_algorithm

        self.assertIs(jws_algorithm(jose.JWKEC(key=generate_private_key("ecdsa-p256"))), jose.ES256)
        self.assertIs(jws_algorithm(jose.JWKEC(key=generate_private_key("ecdsa-p384"))), jose.ES384)
        self.assertIs(jws_algorithm(jose.JWKRSA(key=generate_private_key("rsa-2048"))), jose.RS256)
        self.assertRaises(ValueError, jws_algorithm, jose.JWKOct(key=b"secret"))


class UrlTests(SynchronousTestCase):
    """Directory names and URLs."""

    def test_names_resolve(self) -> None:
        """The well-known names resolve to Let's Encrypt's directory URLs."""
        self.assertEqual(resolve_directory_url("letsencrypt"), DIRECTORIES["letsencrypt"])
        self.assertEqual(
            resolve_directory_url("letsencrypt-staging"), "https://acme-staging-v02.api.letsencrypt.org/directory"
        )
        self.assertEqual(resolve_directory_url("https://127.0.0.1:14000/dir"), "https://127.0.0.1:14000/dir")

    def test_bad_directory_is_config_error(self) -> None:
        """An unknown name, or plain HTTP to a non-loopback host, names [acme] directory."""
        for value in ("lets-encrypt", "http://ca.example/dir", "ftp://x/dir"):
            error = self.assertRaises(ConfigError, resolve_directory_url, value)
            self.assertEqual(error.path, ("acme", "directory"))
        self.assertEqual(resolve_directory_url("http://127.0.0.1:1/dir"), "http://127.0.0.1:1/dir")


class TransportTests(_Base):
    """Nonces, retries, timeouts and error documents."""

    def test_problem_document_is_parsed(self) -> None:
        """A problem document becomes AcmeProblem with subproblems, Retry-After and Link relations."""
        code, headers, body = _problem(
            "rejectedIdentifier",
            "some names are forbidden",
            status=400,
            subproblems=[
                {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "no", "identifier": {"type": "dns", "value": "a.test"}}
            ],
        )
        headers.update({"Retry-After": "30", "Link": '<https://ca.test/unpause?x=1>;rel="help"'})
        self.server.script("/dir", (code, headers, body))
        problem = self.failure(self.client.directory(), AcmeProblem)
        self.assertEqual(problem.type, "urn:ietf:params:acme:error:rejectedIdentifier")
        self.assertEqual(problem.code, "rejectedIdentifier")
        self.assertEqual(problem.detail, "some names are forbidden")
        self.assertEqual(problem.status, 400)
        self.assertEqual(problem.subproblems[0]["identifier"], {"type": "dns", "value": "a.test"})
        self.assertEqual(problem.retry_after, 30.0)
        self.assertEqual(problem.links, {"help": ("https://ca.test/unpause?x=1",)})
        self.assertEqual(problem.url, BASE + "/dir")

    def test_non_acme_error_is_transport_error(self) -> None:
        """An HTML error page is an AcmeTransportError naming the status, not a problem."""
        self.server.script("/dir", (502, {"Content-Type": "text/html"}, b"<h1>Bad gateway</h1>"))
        error = self.failure(self.client.directory(), AcmeTransportError)
        self.assertIn("HTTP 502", error.message)
        self.assertEqual(error.url, BASE + "/dir")

    def test_directory_without_endpoints_is_transport_error(self) -> None:
        """A JSON document lacking newNonce/newAccount/newOrder is not an ACME directory."""
        self.server.script("/dir", (200, {"Content-Type": "application/json"}, b'{"hello": "world"}'))
        error = self.failure(self.client.directory(), AcmeTransportError)
        self.assertIn("not an ACME directory", error.message)

    def test_directory_cached_and_shared(self) -> None:
        """Concurrent and later directory() calls share one GET."""
        d1, d2 = self.client.directory(), self.client.directory()
        self.assertEqual(self.result(d1), self.result(d2))
        self.result(self.client.directory())
        self.assertEqual(len([s for s in self.server.seen if s.path == "/dir"]), 1)

    def test_directory_fetch_shared_while_in_flight(self) -> None:
        """Callers asking while the directory is being fetched wait for that one GET, and get its answer."""
        self.server.hang.add("/dir")
        d1, d2 = self.client.directory(), self.client.directory()
        self.stub.flush()
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        self.server.release()
        self.stub.flush()
        first, second = self.successResultOf(d1), self.successResultOf(d2)
        self.assertEqual(first["newOrder"], BASE + "/order")
        self.assertEqual(first, second)
        self.assertEqual(len([s for s in self.server.seen if s.path == "/dir"]), 1)

    def test_directory_failure_shared_and_not_cached(self) -> None:
        """A failed directory fetch fails every waiting caller; the next call asks again."""
        self.server.hang.add("/dir")
        self.server.script("/dir", (503, {"Content-Type": "text/html"}, b"down"))
        d1, d2 = self.client.directory(), self.client.directory()
        self.stub.flush()
        self.server.release()
        self.stub.flush()
        self.assertIn("HTTP 503", self.failureResultOf(d1, AcmeTransportError).value.message)
        self.assertIn("HTTP 503", self.failureResultOf(d2, AcmeTransportError).value.message)
        self.assertIn("newNonce", self.result(self.client.directory()))
        self.assertEqual(len([s for s in self.server.seen if s.path == "/dir"]), 2)

    def test_directory_that_is_not_json(self) -> None:
        """A directory answer that is not a JSON object is an AcmeTransportError."""
        self.server.script("/dir", (200, {"Content-Type": "application/json"}, b"<html>"))
        self.assertIn("not JSON", self.failure(self.client.directory(), AcmeTransportError).message)

    def test_timeout_uses_the_clock(self) -> None:
        """By default a request with no answer fails with AcmeTransportError exactly when 30 s pass."""
        self.server.hang.add("/dir")
        client = self.client
        d = client.directory()
        self.stub.flush()
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        error = self.failureResultOf(d, AcmeTransportError).value
        self.assertIn("30 s", error.message)

    def test_bad_nonce_retried_with_fresh_nonce(self) -> None:
        """badNonce is retried, each time with a nonce the server has not seen used."""
        self.server.bad_nonces = 3
        self.registered()
        lookups = self.server.posts("/acct")
        # 3 rejected + 1 lookup answered accountDoesNotExist + 1 creation.
        self.assertEqual(len(lookups), 5)
        nonces = [s.nonce for s in lookups]
        self.assertEqual(len(set(nonces)), len(nonces))
        # Nonces after the first came from Replay-Nonce headers: only one HEAD newNonce.
        self.assertEqual(len([s for s in self.server.seen if s.method == "HEAD"]), 1)

    def test_bad_nonce_retried_ten_times_by_default(self) -> None:
        """A default client re-signs a POST 10 times after badNonce before raising it."""
        self.server.bad_nonces = 1000
        problem = self.failure(self.client.register(_account_key()), AcmeProblem)
        self.assertEqual(problem.code, "badNonce")
        self.assertEqual(len(self.server.posts("/acct")), 11)

    def test_bad_nonce_retries_are_bounded(self) -> None:
        """After max_bad_nonce_retries re-signs the badNonce problem is raised."""
        self.server.bad_nonces = 1000
        client = self.make_client(max_bad_nonce_retries=3)
        problem = self.failure(client.register(_account_key()), AcmeProblem)
        self.assertEqual(problem.code, "badNonce")
        self.assertEqual(len(self.server.posts("/acct")), 4)


class ConnectionTests(TestCase):
    """A real socket: nothing listens on the port."""

    def test_connection_refused_is_transport_error(self) -> None:
        """A refused connection fails with AcmeTransportError naming the URL."""
        from twisted.internet import reactor

        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = AcmeClient.create(reactor, f"https://127.0.0.1:{port}/dir", None, timeout=5)
        self.addCleanup(client.close)
        d = client.directory()
        d = self.assertFailure(d, AcmeTransportError)
        d.addCallback(lambda e: self.assertEqual(e.url, f"https://127.0.0.1:{port}/dir"))
        return d

    def test_the_pool_keeps_a_connection_per_request_in_flight(self) -> None:
        """create() keeps 32 idle connections to the CA (Twisted's default, 2, means a TLS handshake per request)."""
        from twisted.internet import reactor

        client = AcmeClient.create(reactor, "https://127.0.0.1:14000/dir")
        self.addCleanup(client.close)
        self.assertEqual(client.pool.maxPersistentPerHost, 32)
        from jobhost.httpclient import AgentRequester

        self.assertIsInstance(client.http_client, AgentRequester)  # not treq: less CPU per request
        self.assertIs(client.http_client.agent._pool, client.pool)
        small = AcmeClient.create(reactor, "https://127.0.0.1:14000/dir", max_connections=3)
        self.addCleanup(small.close)
        self.assertEqual(small.pool.maxPersistentPerHost, 3)

    def test_unreadable_ca_bundle_is_config_error(self) -> None:
        """A CA bundle that cannot be read names [acme] ca_bundle."""
        from twisted.internet import reactor

        error = self.assertRaises(ConfigError, AcmeClient.create, reactor, "letsencrypt", "/nonexistent/jobhost-test/ca.pem")
        self.assertEqual(error.path, ("acme", "ca_bundle"))


class LifecycleTests(SynchronousTestCase):
    """create() and close() on a real Agent and connection pool, over an in-memory reactor."""

    def connect(self, reactor: MemoryReactorClock) -> tuple[Any, StringTransport]:
        """Complete the client's pending TCP connection to the CA with an in-memory transport."""
        _host, _port, factory, _timeout, _bind = reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 14000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_create_defaults_to_thirty_second_timeouts(self) -> None:
        """A client made by create() without a timeout connects with 30 s and gives up on a silent CA after 30 s."""
        reactor = MemoryReactorClock()
        client = AcmeClient.create(reactor, "https://127.0.0.1:14000/dir")
        d = client.directory()
        ((host, port, _factory, connect_timeout, _bind),) = reactor.tcpClients
        self.assertEqual((host, port, connect_timeout), ("127.0.0.1", 14000, 30))
        reactor.advance(29.9)
        self.assertNoResult(d)
        reactor.advance(0.1)
        self.assertIn("within 30 s", self.failureResultOf(d, AcmeTransportError).value.message)

    def test_close_closes_the_kept_alive_connection(self) -> None:
        """close() closes the connection kept open to the CA and fires once it is closed."""
        reactor = MemoryReactorClock()
        client = AcmeClient.create(reactor, "http://127.0.0.1:14000/dir")
        d = client.directory()
        protocol, transport = self.connect(reactor)
        self.assertTrue(transport.value().startswith(b"GET /dir HTTP/1.1"))
        body = json.dumps({"newNonce": "n", "newAccount": "a", "newOrder": "o"}).encode()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        self.assertEqual(self.successResultOf(d)["newOrder"], "o")
        self.assertFalse(transport.disconnecting, "kept alive for the next request")
        closed = client.close()
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(closed)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)

    def test_close_without_a_pool(self) -> None:
        """A client built on someone else's HTTP client has nothing to close: close() fires at once."""
        client = AcmeClient(http_client=StubTreq(Resource()), clock=Clock(), directory_url=BASE + "/dir")
        self.assertIsNone(self.successResultOf(client.close()))


class AccountTests(_Base):
    """newAccount: find-or-create and external account binding."""

    def test_provides_interfaces(self) -> None:
        """The client provides IAcmeClient; the test responder, IHTTP01Responder."""
        self.assertTrue(verifyObject(IAcmeClient, self.client))
        self.assertTrue(verifyObject(IHTTP01Responder, DictResponder(self.server)))

    def test_register_creates_then_finds(self) -> None:
        """The first register creates the account; a second (new client, same key) finds the same URL."""
        key = _account_key()
        url = self.result(self.client.register(key, contact=["mailto:ops@example.com"]))
        self.assertEqual(url, self.client.account_url)
        other = self.make_client()
        self.assertEqual(self.result(other.register(key)), url)
        self.assertEqual(len(self.server.accounts), 1)
        lookup, create, second = self.server.posts("/acct")
        self.assertEqual(lookup.payload, {"onlyReturnExisting": True})
        self.assertEqual(create.payload, {"termsOfServiceAgreed": True, "contact": ["mailto:ops@example.com"]})
        self.assertEqual(second.payload, {"onlyReturnExisting": True})
        for seen in (lookup, create, second):
            self.assertIsNone(seen.protected["kid"])
            self.assertEqual(seen.protected["jwk"], key.public_key())

    def test_requests_after_register_use_kid(self) -> None:
        """After register, requests carry the account URL as kid and no jwk."""
        client = self.registered()
        self.result(client.new_order(["a.test"]))
        (order,) = self.server.posts("/order")
        self.assertEqual(order.protected["kid"], client.account_url)
        self.assertIsNone(order.protected["jwk"])

    def test_register_logs(self) -> None:
        """Creation and lookup are logged with the account URL and never the key."""
        key = _account_key()
        with capturedLogs() as events:
            self.result(self.client.register(key))
            self.result(self.client.register(key))
        created = [e["created"] for e in events if "created" in e]
        self.assertEqual(created, [True, False])
        secret = key.to_partial_json()["d"]
        for event in events:
            self.assertNotIn(secret, repr(event))

    def test_external_account_binding(self) -> None:
        """With eab, newAccount carries an HS256 JWS over the account's public key, keyed by the HMAC key."""
        hmac_key = b"0123456789abcdef0123456789abcdef"
        key = _account_key()
        self.result(self.client.register(key, eab=("kid-1", _b64(hmac_key))))
        create = self.server.posts("/acct")[1]
        binding = create.payload["externalAccountBinding"]
        protected = json.loads(jose.b64decode(binding["protected"]))
        self.assertEqual(protected, {"alg": "HS256", "kid": "kid-1", "url": BASE + "/acct"})
        self.assertEqual(json.loads(jose.b64decode(binding["payload"])), key.public_key().to_partial_json())
        mac = hmac.HMAC(hmac_key, hashes.SHA256())
        mac.update((binding["protected"] + "." + binding["payload"]).encode())
        mac.verify(jose.b64decode(binding["signature"]))

    def test_other_problem_is_not_create(self) -> None:
        """A lookup refused for another reason raises it and creates nothing."""
        self.server.script("/acct", _problem("unauthorized", "go away", 403))
        problem = self.failure(self.client.register(_account_key()), AcmeProblem)
        self.assertEqual(problem.code, "unauthorized")
        self.assertEqual(self.server.accounts, {})

    def test_account_without_location(self) -> None:
        """A newAccount answer without Location is an AcmeTransportError; the client stays without an account."""
        self.server.script("/acct", (200, {"Content-Type": "application/json"}, b'{"status": "valid"}'))
        error = self.failure(self.client.register(_account_key()), AcmeTransportError)
        self.assertIn("without a Location", error.message)
        self.assertEqual(error.url, BASE + "/acct")
        self.assertIsNone(self.client.account_url)

    def test_requests_before_register_are_refused(self) -> None:
        """Obtaining, ordering or fetching before register()/use_account() is a RuntimeError, with nothing posted."""
        self.failure(self.client.obtain_certificate(["a.test"], b"", DictResponder(self.server)), RuntimeError)
        self.assertEqual(self.server.seen, [], "obtain_certificate refuses before even reading the directory")
        order = "https://ca.test/order/1"
        for call in (lambda: self.client.new_order(["a.test"]), lambda: self.client.fetch_order(order)):
            self.failure(call(), RuntimeError)
        self.assertEqual(self.server.posts(""), [])

    def test_repr_hides_the_account_key(self) -> None:
        """A client's repr (logs, test failures) shows its account URL but not its private key."""
        client = self.registered()
        text = repr(client)
        self.assertIn(client.account_url, text)
        self.assertNotIn(self.key.to_partial_json()["d"], text)
        self.assertNotIn("JWKEC", text)


class OrderTests(_Base):
    """newOrder options: profiles and ARI replaces."""

    def test_unknown_profile_names_what_is_offered(self) -> None:
        """A profile the directory does not offer raises AcmeUnsupported listing the offer; nothing is ordered."""
        self.server.meta["profiles"] = {"classic": "c", "shortlived": "s"}
        client = self.registered()
        error = self.failure(client.new_order(["a.test"], profile="tlsserver"), AcmeUnsupported)
        self.assertEqual((error.feature, error.requested, error.offered), ("profile", "tlsserver", ("classic", "shortlived")))
        self.assertIn("tlsserver", str(error))
        self.assertEqual(self.server.posts("/order"), [])

    def test_profile_without_any_profiles(self) -> None:
        """A directory without meta.profiles offers nothing, and says so."""
        client = self.registered()
        error = self.failure(client.new_order(["a.test"], profile="classic"), AcmeUnsupported)
        self.assertEqual(error.offered, ())

    def test_profile_and_replaces_sent(self) -> None:
        """An offered profile and, with renewalInfo in the directory, replaces are in the payload."""
        self.server.meta["profiles"] = {"shortlived": "s"}
        self.server.directory_extra["renewalInfo"] = BASE + "/ari/"
        client = self.registered()
        order = self.result(client.new_order(["B.test", "a.test", "b.test"], replaces="abc.def", profile="shortlived"))
        (seen,) = self.server.posts("/order")
        self.assertEqual(
            seen.payload,
            {
                "identifiers": [{"type": "dns", "value": "b.test"}, {"type": "dns", "value": "a.test"}],
                "replaces": "abc.def",
                "profile": "shortlived",
            },
        )
        self.assertEqual(order.status, "pending")
        self.assertEqual(order.hostnames, ("b.test", "a.test"))
        self.assertEqual(len(order.authorizations), 2)

    def test_replaces_dropped_without_ari(self) -> None:
        """Without renewalInfo in the directory, replaces is not sent, and the log says why."""
        client = self.registered()
        with capturedLogs() as events:
            order = self.result(client.new_order(["a.test"], replaces="abc.def"))
        (seen,) = self.server.posts("/order")
        self.assertNotIn("replaces", seen.payload)
        self.assertEqual(
            _client_log(events),
            [
                "The CA offers no renewal information; not sending replaces=abc.def",
                f"Created order {order.url} for ['a.test'] (pending)",
            ],
        )

    def test_order_without_location(self) -> None:
        """A newOrder answer without Location is an AcmeTransportError (the order could not be followed)."""
        client = self.registered()
        self.server.script("/order", (201, {"Content-Type": "application/json"}, b'{"status": "pending"}'))
        error = self.failure(client.new_order(["a.test"]), AcmeTransportError)
        self.assertIn("without a Location", error.message)

    def test_malformed_order(self) -> None:
        """An order document the acme library cannot read is an AcmeTransportError naming the order URL."""
        client = self.registered()
        self.server.script("/order", (201, {"Content-Type": "application/json", "Location": BASE + "/order/9"},
                                      b'{"status": "pending", "identifiers": "a.test"}'))
        error = self.failure(client.new_order(["a.test"]), AcmeTransportError)
        self.assertIn("malformed order", error.message)
        self.assertEqual(error.url, BASE + "/order")

    def test_order_needs_a_hostname(self) -> None:
        """An order for no hostname is a ValueError, and nothing is sent."""
        client = self.registered()
        self.assertIn("at least one hostname", str(self.failure(client.new_order([]), ValueError)))
        self.assertEqual(self.server.posts("/order"), [])

    def test_rate_limited_carries_retry_after(self) -> None:
        """A rateLimited newOrder raises AcmeProblem with the CA's Retry-After."""
        client = self.registered()
        code, headers, body = _problem("rateLimited", "slow down", 429)
        headers["Retry-After"] = "3600"
        self.server.script("/order", (code, headers, body))
        problem = self.failure(client.new_order(["a.test"]), AcmeProblem)
        self.assertEqual((problem.code, problem.retry_after, problem.status), ("rateLimited", 3600.0, 429))


class PollingTests(_Base):
    """Polling authorizations and orders with Retry-After and a deadline."""

    def _answered_authz(self, client: AcmeClient) -> str:
        order = self.result(client.new_order(["a.test"]))
        authz = self.result(client.authorization(order.authorizations[0]))
        challb = authz.http01()
        self.server.published[challb.chall.encode("token")] = challb.chall.key_authorization(self.key)
        self.result(client.answer_challenge(challb.uri))
        return authz.url

    def test_poll_honours_retry_after(self) -> None:
        """A pending authorization with Retry-After: 7 is asked again after 7 s, not before."""
        self.server.pending_polls = 1
        self.server.authz_retry_after = "7"
        client = self.registered()
        url = self._answered_authz(client)
        before = len(self.server.posts("/authz/"))
        d = client.poll_authorization(url)
        self.assertEqual(len(self.server.posts("/authz/")), before + 1)
        self.clock.advance(6.9)
        self.assertNoResult(d)
        self.assertEqual(len(self.server.posts("/authz/")), before + 1)
        self.clock.advance(0.2)
        authz = self.successResultOf(d)
        self.assertEqual(authz.status, "valid")
        self.assertEqual(len(self.server.posts("/authz/")), before + 2)

    def test_poll_interval_grows_to_cap(self) -> None:
        """Without Retry-After, polls start at poll_interval and grow to max_poll_interval."""
        self.server.pending_polls = 6
        client = self.registered(poll_interval=0.2, max_poll_interval=0.5)
        url = self._answered_authz(client)
        d = client.poll_authorization(url)
        gaps = []
        while not d.called:
            (call,) = self.clock.getDelayedCalls()  # only the poll delay: requests are answered at once
            gaps.append(round(call.getTime() - self.clock.seconds(), 3))
            self.clock.advance(call.getTime() - self.clock.seconds())
        self.successResultOf(d)
        self.assertEqual(gaps, [0.2, 0.3, 0.45, 0.5, 0.5, 0.5])

    def _gaps(self, d: Deferred, limit: int = 100) -> list[float]:
        """Step the clock from one poll delay to the next until ``d`` fires; the delays."""
        gaps = []
        for _ in range(limit):
            if d.called:
                break
            (call,) = self.clock.getDelayedCalls()
            gaps.append(round(call.getTime() - self.clock.seconds(), 6))
            self.clock.advance(call.getTime() - self.clock.seconds())
        return gaps

    def test_default_polling(self) -> None:
        """A default client polls 50 ms apart, 1.5x longer each time up to 5 s, and gives up after 300 s."""
        self.server.pending_polls = 10**6
        client = self.registered()
        url = self._answered_authz(client)
        d = client.poll_authorization(url)
        gaps = self._gaps(d)
        expected = [0.05, 0.075, 0.1125, 0.16875, 0.253125, 0.3796875, 0.56953125, 0.854296875,
                    1.2814453125, 1.92216796875, 2.883251953125, 4.3248779296875, 5.0, 5.0]
        self.assertEqual([round(g, 4) for g in gaps[:14]], [round(e, 4) for e in expected])
        self.assertEqual(max(gaps), 5.0)
        error = self.failureResultOf(d, AcmeTimeout).value
        self.assertAlmostEqual(error.seconds, 300.0, places=6)
        self.assertAlmostEqual(sum(gaps), 300.0, places=6)

    def test_last_poll_is_at_the_deadline(self) -> None:
        """Polls 1 s apart with a 3 s deadline: asked at 0, 1, 2 and 3 s, then AcmeTimeout reporting 3 s."""
        self.server.pending_polls = 10**6
        client = self.registered(poll_interval=1, max_poll_interval=1, poll_timeout=3)
        url = self._answered_authz(client)
        before = len(self.server.posts("/authz/"))
        d = client.poll_authorization(url)
        self.assertEqual(self._gaps(d, limit=10), [1, 1, 1])
        error = self.failureResultOf(d, AcmeTimeout).value
        self.assertEqual((error.url, error.status, error.seconds), (url, "pending", 3))
        self.assertEqual(len(self.server.posts("/authz/")) - before, 4)

    def test_retry_after_ending_at_the_deadline_is_waited_for(self) -> None:
        """A Retry-After that ends exactly at the deadline is honoured, and the poll then may succeed."""
        self.server.pending_polls = 1
        self.server.authz_retry_after = "10"
        client = self.registered(poll_timeout=10)
        url = self._answered_authz(client)
        d = client.poll_authorization(url)
        self.assertEqual(self._gaps(d), [10])
        self.assertEqual(self.successResultOf(d).status, "valid")

    def test_poll_deadline(self) -> None:
        """An authorization pending past poll_timeout fails with AcmeTimeout."""
        self.server.pending_polls = 10**6
        client = self.registered(poll_timeout=5)
        url = self._answered_authz(client)
        error = self.failure(client.poll_authorization(url), AcmeTimeout)
        self.assertEqual((error.url, error.status), (url, "pending"))
        self.assertGreaterEqual(error.seconds, 5)

    def test_retry_after_beyond_deadline_fails_at_once(self) -> None:
        """A Retry-After longer than the time left fails now, carrying the CA's Retry-After."""
        self.server.pending_polls = 1
        self.server.authz_retry_after = "600"
        client = self.registered(poll_timeout=60)
        url = self._answered_authz(client)
        error = self.failureResultOf(client.poll_authorization(url), AcmeTimeout).value
        self.assertEqual(error.retry_after, 600.0)

    def _issued_order(self, client: AcmeClient) -> Any:
        chain = self.result(client.obtain_certificate(["a.test"], make_csr(generate_private_key(), ["a.test"]),
                                                      DictResponder(self.server)))
        return self.result(client.fetch_order(chain.order_url))

    def test_order_already_there_is_not_polled(self) -> None:
        """A valid order satisfies until="valid" and until="ready" as it is, without asking the CA."""
        client = self.registered()
        order = self._issued_order(client)
        posts = len(self.server.posts(""))
        self.assertIs(self.result(client.poll_order(order, until="valid")), order)
        self.assertIs(self.result(client.poll_order(order, until="ready")), order)
        self.assertEqual(len(self.server.posts("")), posts)

    def test_invalid_order_raises_its_error(self) -> None:
        """An order that turns invalid while awaited fails with the CA's error (status 0 when the error has none)."""
        client = self.registered()
        order = self.result(client.new_order(["a.test"]))
        self.result(client.deactivate_authorization(order.authorizations[0]))
        problem = self.failure(client.poll_order(order, until="ready"), AcmeProblem)
        self.assertEqual((problem.code, problem.detail, problem.status), ("unauthorized", "an authorization failed", 0))
        self.assertEqual(problem.url, order.url)

    def test_invalid_order_without_error(self) -> None:
        """An invalid order without an error document still fails, with jobhost's orderInvalid problem."""
        client = self.registered()
        order = self.result(client.new_order(["a.test"]))
        doc = {"status": "invalid", "identifiers": [{"type": "dns", "value": "a.test"}],
               "authorizations": list(order.authorizations), "finalize": order.finalize}
        self.server.script(order.url[len(BASE):], (200, {"Content-Type": "application/json"}, json.dumps(doc).encode()))
        problem = self.failure(client.poll_order(order, until="ready"), AcmeProblem)
        self.assertEqual(problem.type, "urn:jobhost:error:orderInvalid")
        self.assertIn("order is invalid (wanted ready)", problem.detail)

    def test_order_shown_ready_after_finalize_is_polled_to_valid(self) -> None:
        """A CA that still shows the order ready in its finalize answer is asked again until it is valid."""
        original = self.server._post

        def post(path, header, key, payload):
            code, headers, body = original(path, header, key, payload)
            if path.startswith("/finalize/"):
                body = json.dumps({**json.loads(body), "status": "ready"}).encode()
            return code, headers, body

        self.server._post = post
        client = self.registered()
        chain = self.result(client.obtain_certificate(["a.test"], make_csr(generate_private_key(), ["a.test"]),
                                                      DictResponder(self.server)))
        self.assertTrue(chain.cert_url.startswith(BASE + "/cert/"))

    def test_order_processing_honours_retry_after(self) -> None:
        """A processing order with Retry-After: 3 is polled after 3 s, then valid."""
        self.server.processing_polls = 1
        self.server.order_retry_after = "3"
        client = self.registered()
        responder = DictResponder(self.server)
        d = client.obtain_certificate(["a.test"], make_csr(generate_private_key(), ["a.test"]), responder)
        for _ in range(100):
            if len(self.server.posts("/finalize/")):
                break
            self.clock.advance(0.1)
        polls = len(self.server.posts("/order/"))
        self.clock.advance(2.9)
        self.assertEqual(len(self.server.posts("/order/")), polls)
        self.clock.advance(0.2)
        self.successResultOf(d)


class ObtainTests(_Base):
    """The whole flow."""

    def test_obtain_certificate(self) -> None:
        """obtain_certificate validates, finalizes and returns the chain for the CSR's key; tokens are withdrawn."""
        client = self.registered()
        key = generate_private_key()
        responder = DictResponder(self.server)
        chain = self.result(client.obtain_certificate(["jobs.acme-corp.test"], make_csr(key, ["jobs.acme-corp.test"]), responder))
        leaf = split_pem_chain(chain.chain_pem)[0]
        self.assertEqual(
            leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        )
        self.assertEqual(len(split_pem_chain(chain.chain_pem)), 2)
        self.assertEqual(chain.alternates, ())
        self.assertTrue(chain.order_url.startswith(BASE + "/order/"))
        self.assertTrue(chain.cert_url.startswith(BASE + "/cert/"))
        self.assertEqual([c[0] for c in responder.calls], ["start", "stop"])
        self.assertEqual(self.server.published, {})

    def test_obtain_logs_each_step(self) -> None:
        """An operator can follow an issue in the log: order, validation asked, valid, downloaded, obtained."""
        client = self.registered()
        with capturedLogs() as events:
            chain = self.result(client.obtain_certificate(["a.test"], make_csr(generate_private_key(), ["a.test"]),
                                                          DictResponder(self.server)))
        order_url = chain.order_url
        (authz_url,) = [BASE + "/authz/" + i for i in self.server.authzs]
        self.assertEqual(
            _client_log(events),
            [
                f"Created order {order_url} for ['a.test'] (pending)",
                f"Asking the CA to validate a.test over HTTP-01 ({authz_url})",
                "Authorization for a.test is valid",
                f"Downloaded certificate {chain.cert_url} for order {order_url} (1 chains offered)",
                f"Obtained certificate for ['a.test'] (order {order_url})",
            ],
        )

    def test_requests_are_reported_by_endpoint(self) -> None:
        """on_response sees every request with a bounded endpoint name and the status."""
        seen: list[tuple[str, str]] = []
        client = self.registered(on_response=lambda endpoint, status: seen.append((endpoint, status)))
        key = generate_private_key()
        self.result(client.obtain_certificate(["jobs.acme-corp.test"], make_csr(key, ["jobs.acme-corp.test"]),
                                              DictResponder(self.server)))
        endpoints = {endpoint for endpoint, _ in seen}
        self.assertTrue({"directory", "newNonce", "newAccount", "newOrder", "resource"} <= endpoints, endpoints)
        self.assertTrue(endpoints <= {"directory", "newNonce", "newAccount", "newOrder", "resource", "renewalInfo",
                                      "revokeCert", "keyChange"}, endpoints)
        self.assertIn(("newOrder", "201"), seen)

    def test_self_check_failure_aborts_before_the_ca(self) -> None:
        """A failing self-check raises its error, sends no challenge POST, deactivates the authorizations and withdraws tokens."""
        client = self.registered()
        responder = DictResponder(self.server)

        class Unreachable(Exception):
            pass

        checked = []

        def self_check(hostname: str, token: str, key_authorization: str) -> Deferred:
            checked.append(hostname)
            if hostname == "b.test":
                raise Unreachable(hostname)
            return succeed(None)

        csr = make_csr(generate_private_key(), ["a.test", "b.test"])
        self.failure(client.obtain_certificate(["a.test", "b.test"], csr, responder, self_check), Unreachable)
        self.assertEqual(sorted(checked), ["a.test", "b.test"])
        self.assertEqual(self.server.posts("/chall/"), [])
        self.assertEqual(sorted(a["status"] for a in self.server.authzs.values()), ["deactivated", "deactivated"])
        self.assertEqual(sorted(c[0] for c in responder.calls), ["start", "start", "stop", "stop"])
        self.assertEqual(self.server.published, {})

    def test_only_pending_authorizations_are_deactivated(self) -> None:
        """On failure a still-pending authorization is deactivated (and logged); one already valid is left alone."""
        client = self.registered()
        original = self.server._post

        def post(path, header, key, payload):
            code, headers, body = original(path, header, key, payload)
            if path == "/order":
                for authz in self.server.authzs.values():
                    if authz["hostname"] == "a.test":
                        authz["status"] = "valid"
            return code, headers, body

        self.server._post = post

        def self_check(hostname: str, token: str, key_authorization: str) -> None:
            raise RuntimeError("unreachable")

        csr = make_csr(generate_private_key(), ["a.test", "b.test"])
        with capturedLogs() as events:
            self.failure(client.obtain_certificate(["a.test", "b.test"], csr, DictResponder(self.server), self_check),
                         RuntimeError)
        statuses = {a["hostname"]: a["status"] for a in self.server.authzs.values()}
        self.assertEqual(statuses, {"a.test": "valid", "b.test": "deactivated"})
        (b_url,) = [BASE + "/authz/" + i for i, a in self.server.authzs.items() if a["hostname"] == "b.test"]
        self.assertIn(f"Deactivated authorization {b_url} for b.test", _client_log(events))

    def test_failed_deactivation_is_logged_and_the_error_kept(self) -> None:
        """A deactivation the CA refuses is logged as a warning; the caller still gets the original error."""
        client = self.registered()

        def self_check(hostname: str, token: str, key_authorization: str) -> None:
            for authz_id in self.server.authzs:
                self.server.script("/authz/" + authz_id, _problem("serverInternal", "database down", 500))
            raise KeyError("unreachable")

        csr = make_csr(generate_private_key(), ["a.test"])
        with capturedLogs() as events:
            self.failure(client.obtain_certificate(["a.test"], csr, DictResponder(self.server), self_check), KeyError)
        (authz_id,) = self.server.authzs
        self.assertIn(
            f"Could not deactivate authorization {BASE}/authz/{authz_id}: CA problem serverInternal (HTTP 500): database down",
            _client_log(events),
        )

    def test_authorization_timeout_deactivates_it(self) -> None:
        """An authorization still pending at the poll deadline fails with AcmeTimeout for it, and is deactivated."""
        self.server.pending_polls = 10**6
        client = self.registered(poll_timeout=5)
        csr = make_csr(generate_private_key(), ["a.test"])
        error = self.failure(client.obtain_certificate(["a.test"], csr, DictResponder(self.server)), AcmeTimeout)
        (authz_id,) = self.server.authzs
        self.assertEqual((error.url, error.status), (BASE + "/authz/" + authz_id, "pending"))
        self.assertEqual(self.server.authzs[authz_id]["status"], "deactivated")

    def test_authorization_already_failed(self) -> None:
        """An authorization the CA already holds as invalid fails the order at once, with nothing published or answered."""
        client = self.registered()
        original = self.server._post

        def post(path, header, key, payload):
            code, headers, body = original(path, header, key, payload)
            if path == "/order":
                for authz in self.server.authzs.values():
                    authz["status"] = "invalid"
            return code, headers, body

        self.server._post = post
        responder = DictResponder(self.server)
        csr = make_csr(generate_private_key(), ["a.test"])
        error = self.failure(client.obtain_certificate(["a.test"], csr, responder), AuthorizationFailed)
        self.assertEqual((error.hostname, error.status), ("a.test", "invalid"))
        self.assertEqual((responder.calls, self.server.posts("/chall/")), ([], []))

    def test_no_http01_offered(self) -> None:
        """A CA offering no HTTP-01 challenge fails with AcmeUnsupported naming what it offers; nothing is published."""
        client = self.registered()
        original = self.server._authz_doc

        def authz_doc(authz_id):
            doc = original(authz_id)
            doc["challenges"] = [c for c in doc["challenges"] if c["type"] != "http-01"]
            return doc

        self.server._authz_doc = authz_doc
        responder = DictResponder(self.server)
        csr = make_csr(generate_private_key(), ["a.test"])
        error = self.failure(client.obtain_certificate(["a.test"], csr, responder), AcmeUnsupported)
        self.assertEqual((error.feature, error.requested, error.offered), ("challenge", "http-01", ("dns-01",)))
        self.assertEqual(responder.calls, [])

    def offer_tls_alpn01_instead_of_http01(self, token: str | None = None) -> None:
        """Make the fake CA offer tls-alpn-01 (validated like its HTTP-01) and dns-01, not http-01."""
        original = self.server._authz_doc

        def authz_doc(authz_id):
            doc = original(authz_id)
            for challenge in doc["challenges"]:
                if challenge["type"] == "http-01":
                    challenge["type"] = "tls-alpn-01"
                    if token is not None:
                        challenge["token"] = token
            return doc

        self.server._authz_doc = authz_doc

    def test_tls_alpn01_is_answered_when_asked_for(self) -> None:
        """With challenge_type tls-alpn-01 the client publishes that challenge's key authorization
        (token "." thumbprint), answers its URL, and gets the certificate."""
        client = self.registered()
        self.offer_tls_alpn01_instead_of_http01()
        published = []

        class Recording(DictResponder):
            def start_responding(self, hostname, token, key_authorization):
                published.append((hostname, token, key_authorization))
                return super().start_responding(hostname, token, key_authorization)

        responder = Recording(self.server)
        csr = make_csr(generate_private_key(), ["a.test"])
        chain = self.result(client.obtain_certificate(["a.test"], csr, responder, challenge_type="tls-alpn-01"))
        self.assertEqual(split_pem_chain(chain.chain_pem)[0].subject.rfc4514_string(), "CN=a.test")
        [(hostname, token, key_authorization)] = published
        thumbprint = jose.b64encode(client.account_key.thumbprint()).decode("ascii")
        self.assertEqual((hostname, key_authorization), ("a.test", f"{token}.{thumbprint}"))
        self.assertEqual(len(self.server.posts("/chall/")), 1)
        # The same CA, asked for HTTP-01, says it offers none.
        error = self.failure(client.obtain_certificate(["a.test"], csr, DictResponder(self.server)), AcmeUnsupported)
        self.assertEqual((error.requested, error.offered), ("http-01", ("tls-alpn-01", "dns-01")))

    def test_tls_alpn01_with_a_token_that_is_not_base64url_is_refused(self) -> None:
        """A tls-alpn-01 challenge whose token is not base64url fails the order before anything is published."""
        client = self.registered()
        self.offer_tls_alpn01_instead_of_http01(token="../etc/passwd")
        responder = DictResponder(self.server)
        csr = make_csr(generate_private_key(), ["a.test"])
        self.failure(client.obtain_certificate(["a.test"], csr, responder, challenge_type="tls-alpn-01"), AcmeTransportError)
        self.assertEqual(responder.calls, [])

    def test_stop_failure_is_logged_and_the_certificate_kept(self) -> None:
        """A responder that cannot withdraw a token is logged; the certificate is still returned."""

        class Sticky(DictResponder):
            def stop_responding(self, hostname: str, token: str) -> Deferred:
                raise OSError("store unavailable")

        client = self.registered()
        csr = make_csr(generate_private_key(), ["a.test"])
        chain = self.result(client.obtain_certificate(["a.test"], csr, Sticky(self.server)))
        self.assertTrue(chain.chain_pem.startswith(b"-----BEGIN CERTIFICATE-----"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_failed_authorization_carries_problem(self) -> None:
        """A wrong key authorization fails with AuthorizationFailed carrying the CA's problem; the other name's pending authorization is deactivated."""
        client = self.registered()
        responder = DictResponder(self.server, corrupt=True)
        csr = make_csr(generate_private_key(), ["a.test"])
        with capturedLogs() as events:
            error = self.failure(client.obtain_certificate(["a.test"], csr, responder), AuthorizationFailed)
        self.assertIn(f"Authorization for a.test is invalid: {error.problem.describe()}", _client_log(events))
        self.assertEqual((error.hostname, error.status), ("a.test", "invalid"))
        self.assertEqual((error.problem.code, error.problem.status), ("unauthorized", 403))
        self.assertIn("key authorization", error.problem.detail)
        self.assertEqual([c[0] for c in responder.calls], ["start", "stop"])
        self.assertEqual([s.payload for s in self.server.posts("/authz/") if s.payload], [])

    def test_valid_authorizations_are_reused(self) -> None:
        """A second order for the same name, whose authorization the CA reports valid, skips validation."""
        client = self.registered()
        responder = DictResponder(self.server)
        csr = make_csr(generate_private_key(), ["a.test"])
        self.result(client.obtain_certificate(["a.test"], csr, responder))
        # Make the next order's authorization come back valid already.
        original = self.server._post

        def post(path, header, key, payload):
            code, headers, body = original(path, header, key, payload)
            if path == "/order":
                for authz in self.server.authzs.values():
                    authz["status"] = "valid"
            return code, headers, body

        self.server._post = post
        responder.calls.clear()
        self.result(client.obtain_certificate(["a.test"], csr, responder))
        self.assertEqual(responder.calls, [])

    def test_preferred_chain(self) -> None:
        """With preferred_chain naming the alternate's root, the alternate chain is chosen and the default kept."""
        self.server.alternate_ca = TestCA.create("other")
        client = self.registered(preferred_chain="other root")
        csr = make_csr(generate_private_key(), ["a.test"])
        chain = self.result(client.obtain_certificate(["a.test"], csr, DictResponder(self.server)))
        issuers = [c.issuer.rfc4514_string() for c in split_pem_chain(chain.chain_pem)]
        self.assertEqual(issuers, ["CN=other intermediate", "CN=other root"])
        (default,) = chain.alternates
        self.assertEqual(split_pem_chain(default)[1].issuer.rfc4514_string(), "CN=fake ACME root")

    def test_default_chain_without_preference(self) -> None:
        """Without a preference (or with an unknown issuer) the CA's default chain is chosen."""
        self.server.alternate_ca = TestCA.create("other")
        client = self.registered(preferred_chain="nobody")
        csr = make_csr(generate_private_key(), ["a.test"])
        chain = self.result(client.obtain_certificate(["a.test"], csr, DictResponder(self.server)))
        self.assertEqual(split_pem_chain(chain.chain_pem)[1].issuer.rfc4514_string(), "CN=fake ACME root")
        self.assertEqual(len(chain.alternates), 1)
        self.assertEqual(select_chain([chain.chain_pem, chain.alternates[0]], None), 0)

    def test_revoke_reason_defaults_to_unspecified(self) -> None:
        """Without a reason, revocation sends CRLReason 0 (unspecified), and is logged with the serial."""
        client = self.registered()
        chain = self.result(client.obtain_certificate(["a.test"], make_csr(generate_private_key(), ["a.test"]),
                                                      DictResponder(self.server)))
        with capturedLogs() as events:
            self.assertIsNone(self.result(client.revoke(chain.chain_pem)))
        (seen,) = self.server.posts("/revoke")
        self.assertEqual(seen.payload["reason"], 0)
        serial = format(split_pem_chain(chain.chain_pem)[0].serial_number, "x")
        self.assertEqual(_client_log(events), [f"Revoked certificate {serial} (reason 0)"])

    def test_finalize_refuses_a_bad_csr(self) -> None:
        """A CSR that does not parse is an InvalidCertificate, and nothing is sent to finalize."""
        client = self.registered()
        order = self.result(client.new_order(["a.test"]))
        self.failure(client.finalize(order, b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n"), InvalidCertificate)
        self.assertEqual(self.server.posts("/finalize/"), [])

    def test_download_needs_a_certificate_url(self) -> None:
        """Downloading from an order without a certificate URL is an AcmeProblem, and nothing is asked."""
        client = self.registered()
        order = self.result(client.new_order(["a.test"]))
        posts = len(self.server.posts(""))
        problem = self.failure(client.download_certificate(order), AcmeProblem)
        self.assertEqual((problem.type, problem.url), ("urn:jobhost:error:orderInvalid", order.url))
        self.assertEqual(len(self.server.posts("")), posts)

    def test_download_that_is_not_pem(self) -> None:
        """A certificate URL answering something other than PEM certificates is an AcmeTransportError."""
        client = self.registered()
        order = self._issued_order_without_download(client)
        self.server.script(order.certificate[len(BASE):], (200, {"Content-Type": "text/html"}, b"<html>hello</html>"))
        error = self.failure(client.download_certificate(order), AcmeTransportError)
        self.assertIn("not a PEM chain", error.message)
        self.assertEqual(error.url, order.certificate)

    def test_broken_alternate_is_skipped(self) -> None:
        """An alternate chain that is not PEM is skipped with a warning; the alternates after it are kept."""
        self.server.alternate_ca = TestCA.create("other")
        client = self.registered()
        order = self._issued_order_without_download(client)
        order_id = order.url.rsplit("/", 1)[1]
        default = self.server.orders[order_id]["chain"]
        links = [f"<{BASE}/cert/{order_id}/broken>;rel=alternate", f"<{BASE}/cert/{order_id}/alt>;rel=alternate"]
        self.server.script(f"/cert/{order_id}", (200, {"Content-Type": "application/pem-certificate-chain", "Link": links}, default))
        self.server.script(f"/cert/{order_id}/broken", (200, {"Content-Type": "text/plain"}, b"not a chain"))
        with capturedLogs() as events:
            chain = self.result(client.download_certificate(order))
        self.assertEqual(chain.chain_pem, default)
        self.assertEqual(chain.alternates, (self.server.orders[order_id]["alternate"],))
        warnings = [line for line in _client_log(events) if line.startswith("Skipping alternate chain")]
        self.assertEqual(len(warnings), 1)
        self.assertIn(f"{BASE}/cert/{order_id}/broken", warnings[0])
        self.assertIn(f"Downloaded certificate {order.certificate} for order {order.url} (2 chains offered)",
                      _client_log(events))

    def _issued_order_without_download(self, client: AcmeClient) -> Any:
        """A valid order, finalized but not downloaded."""
        order = self.result(client.new_order(["a.test"]))
        self.server.published.update(
            {a["token"]: a["token"] + "." + _b64(self.key.thumbprint()) for a in self.server.authzs.values()}
        )
        for url in order.authorizations:
            authz = self.result(client.authorization(url))
            self.result(client.answer_challenge(authz.http01().uri))
            self.result(client.poll_authorization(url))
        order = self.result(client.poll_order(order, until="ready"))
        order = self.result(client.finalize(order, make_csr(generate_private_key(), ["a.test"])))
        return self.result(client.poll_order(order, until="valid"))

    def test_revoke_and_deactivate(self) -> None:
        """revoke sends the leaf's DER and reason (kid, or jwk with the certificate key); deactivate posts status."""
        client = self.registered()
        cert_key = generate_private_key()
        csr = make_csr(cert_key, ["a.test"])
        chain = self.result(client.obtain_certificate(["a.test"], csr, DictResponder(self.server)))
        self.result(client.revoke(chain.chain_pem, reason=4))
        self.result(client.revoke(chain.chain_pem, cert_key=jose.JWKEC(key=cert_key)))
        by_account, by_key = self.server.posts("/revoke")
        der = split_pem_chain(chain.chain_pem)[0].public_bytes(serialization.Encoding.DER)
        self.assertEqual(by_account.payload, {"certificate": _b64(der), "reason": 4})
        self.assertEqual(by_account.protected["kid"], client.account_url)
        self.assertIsNone(by_key.protected["kid"])
        self.assertEqual(by_key.protected["jwk"], jose.JWKEC(key=cert_key).public_key())
        order = self.result(client.new_order(["c.test"]))
        authz = self.result(client.deactivate_authorization(order.authorizations[0]))
        self.assertEqual((authz.status, authz.hostname), ("deactivated", "c.test"))


def _cert_with(aki: bytes | None, serial: int) -> bytes:
    key = generate_private_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.test")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    if aki is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(key_identifier=aki, authority_cert_issuer=None, authority_cert_serial_number=None),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class AriTests(_Base):
    """ACME Renewal Information (RFC 9773)."""

    def test_cert_id_matches_rfc_example(self) -> None:
        """The certificate ID of RFC 9773's example (AKI 69:88:5B..., serial 0x87654321) is its documented value."""
        aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
        self.assertEqual(ari_cert_id(_cert_with(aki, 0x87654321)), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")

    def test_cert_id_serial_without_high_bit(self) -> None:
        """A serial whose top bit is clear gets no leading zero byte."""
        self.assertEqual(ari_cert_id(_cert_with(b"\x01\x02", 0x7F01)).split(".")[1], _b64(b"\x7f\x01"))

    def test_cert_id_needs_aki(self) -> None:
        """A certificate without an authority key identifier has no ARI ID."""
        self.assertRaises(InvalidCertificate, ari_cert_id, _cert_with(None, 5))

    def test_cert_id_needs_a_key_identifier(self) -> None:
        """An authority key identifier naming only issuer and serial (no keyIdentifier) gives no ARI ID."""
        key = generate_private_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(9).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(name)], 1), critical=False)
            .sign(key, hashes.SHA256())
        )
        error = self.assertRaises(InvalidCertificate, ari_cert_id, cert.public_bytes(serialization.Encoding.PEM))
        self.assertIn("no keyIdentifier", str(error))

    def test_cert_id_of_a_chain_is_the_leafs(self) -> None:
        """Given a whole chain (as stored), the ID is the leaf's, not the intermediate's."""
        leaf = _cert_with(b"\x01\x02", 0x1234)
        self.assertEqual(ari_cert_id(leaf + _cert_with(b"\x03\x04", 0x5678)), ari_cert_id(leaf))

    def test_renewal_info(self) -> None:
        """The window, explanation and clamped Retry-After come back; the GET names the certificate ID."""
        self.server.directory_extra["renewalInfo"] = BASE + "/ari"
        leaf = _cert_with(b"\xaa\xbb", 0x1234)
        cert_id = ari_cert_id(leaf)
        doc = {
            "suggestedWindow": {"start": "2026-04-01T00:00:00Z", "end": "2026-04-02T00:00:00Z"},
            "explanationURL": "https://ca.test/why",
        }
        self.server.script("/ari/" + cert_id, (200, {"Content-Type": "application/json", "Retry-After": "21600"}, json.dumps(doc).encode()))
        window, retry_after = self.result(self.client.renewal_info(leaf))
        self.assertEqual(window.start, datetime(2026, 4, 1, tzinfo=timezone.utc))
        self.assertEqual(window.end, datetime(2026, 4, 2, tzinfo=timezone.utc))
        self.assertEqual(window.explanation_url, "https://ca.test/why")
        self.assertEqual(retry_after, 21600.0)
        self.assertEqual(window.retry_after, NOW + timedelta(seconds=21600))
        self.assertEqual(self.server.seen[-1].path, "/ari/" + cert_id)

    def test_renewal_info_retry_after_clamped(self) -> None:
        """A Retry-After of 1 s is raised to a minute; none at all means six hours."""
        self.server.directory_extra["renewalInfo"] = BASE + "/ari/"
        leaf = _cert_with(b"\xaa", 7)
        doc = json.dumps({"suggestedWindow": {"start": "2026-04-01T00:00:00Z", "end": "2026-04-02T00:00:00Z"}}).encode()
        path = "/ari/" + ari_cert_id(leaf)
        self.server.script(path, (200, {"Content-Type": "application/json", "Retry-After": "1"}, doc))
        self.server.script(path, (200, {"Content-Type": "application/json"}, doc))
        self.assertEqual(self.result(self.client.renewal_info(leaf))[1], 60.0)
        self.assertEqual(self.result(self.client.renewal_info(leaf))[1], 21600.0)

    def test_renewal_info_retry_after_capped_at_a_day(self) -> None:
        """A Retry-After longer than a day is cut to a day."""
        self.server.directory_extra["renewalInfo"] = BASE + "/ari/"
        leaf = _cert_with(b"\xaa", 7)
        doc = json.dumps({"suggestedWindow": {"start": "2026-04-01T00:00:00Z", "end": "2026-04-02T00:00:00Z"}}).encode()
        self.server.script("/ari/" + ari_cert_id(leaf), (200, {"Content-Type": "application/json", "Retry-After": "100000"}, doc))
        window, retry_after = self.result(self.client.renewal_info(leaf))
        self.assertEqual(retry_after, 86400.0)
        self.assertEqual(window.retry_after, NOW + timedelta(days=1))
        self.assertIsNone(window.explanation_url)

    def test_renewal_info_window_of_one_instant(self) -> None:
        """A window that starts and ends at the same instant (renew right then) is accepted."""
        self.server.directory_extra["renewalInfo"] = BASE + "/ari/"
        leaf = _cert_with(b"\xaa", 7)
        doc = json.dumps({"suggestedWindow": {"start": "2026-04-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"}}).encode()
        self.server.script("/ari/" + ari_cert_id(leaf), (200, {"Content-Type": "application/json"}, doc))
        window, _ = self.result(self.client.renewal_info(leaf))
        self.assertEqual(window.start, window.end)

    def test_renewal_info_without_a_window(self) -> None:
        """An answer without a usable suggestedWindow is an AcmeTransportError naming the renewalInfo URL."""
        self.server.directory_extra["renewalInfo"] = BASE + "/ari/"
        leaf = _cert_with(b"\xaa", 7)
        path = "/ari/" + ari_cert_id(leaf)
        for doc in ({}, {"suggestedWindow": "soon"}, {"suggestedWindow": {"start": "2026-04-01T00:00:00Z"}},
                    {"suggestedWindow": {"start": "yesterday", "end": "2026-04-01T00:00:00Z"}}):
            self.server.script(path, (200, {"Content-Type": "application/json"}, json.dumps(doc).encode()))
            error = self.failure(self.client.renewal_info(leaf), AcmeTransportError)
            self.assertIn("no valid suggestedWindow", error.message)
            self.assertEqual(error.url, BASE + path)

    def test_renewal_info_malformed_window(self) -> None:
        """A window that ends before it starts is an AcmeTransportError."""
        self.server.directory_extra["renewalInfo"] = BASE + "/ari/"
        leaf = _cert_with(b"\xaa", 7)
        doc = json.dumps({"suggestedWindow": {"start": "2026-04-02T00:00:00Z", "end": "2026-04-01T00:00:00Z"}}).encode()
        self.server.script("/ari/" + ari_cert_id(leaf), (200, {"Content-Type": "application/json"}, doc))
        self.failure(self.client.renewal_info(leaf), AcmeTransportError)

    def test_no_renewal_info_without_ari(self) -> None:
        """A directory without renewalInfo gives None and asks nothing."""
        self.assertIsNone(self.result(self.client.renewal_info(_cert_with(b"\xaa", 7))))
        self.assertEqual([s.path for s in self.server.seen], ["/dir"])
