"""Tests for jobhost.acme.http01: answering the CA's HTTP-01 requests from the store."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource, Resource
from zope.interface.verify import verifyObject

from jobhost.acme.http01 import ACME_CHALLENGE_PATH, ChallengeResource
from jobhost.errors import StoreError
from jobhost.store.memory import MemoryStore
from jobhost.store.records import Challenge
from jobhost.web.site import HttpRootResource, make_site

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class FaultyStore(MemoryStore):
    """A MemoryStore that records challenge reads and can fail or stall them (injected faults)."""

    def __init__(self) -> None:
        super().__init__()
        self.challenge_reads: list[str] = []
        self.fault: Exception | None = None
        self.stall = False
        self.pending: list[Deferred] = []
        self.cancelled: list[Deferred] = []

    def get_challenge(self, token):
        self.challenge_reads.append(token)
        if self.fault is not None:
            return fail(self.fault)
        if self.stall:
            d: Deferred = Deferred(canceller=self.cancelled.append)
            self.pending.append(d)
            return d
        return super().get_challenge(token)


def _store_with_challenge(token: str = TOKEN, key_authorization: str = KEY_AUTHORIZATION) -> FaultyStore:
    store = FaultyStore()
    store.challenges[token] = Challenge(
        token=token,
        key_authorization=key_authorization,
        hostname="jobs.acme-corp.example",
        created_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
    )
    return store


def _mounted(store) -> Resource:
    """A tree with a ChallengeResource at /.well-known/acme-challenge/."""
    root = Resource()
    well_known = Resource()
    root.putChild(b".well-known", well_known)
    well_known.putChild(b"acme-challenge", ChallengeResource(store))
    return root


class ChallengeResourceTests(SynchronousTestCase):
    """ChallengeResource over StubTreq, mounted directly and under HttpRootResource."""

    def fetch(self, resource, url, method="GET"):
        stub = StubTreq(resource)
        d = stub.request(method, url, allow_redirects=False)
        stub.flush()
        response = self.successResultOf(d)
        body = response.content()
        stub.flush()
        return response, self.successResultOf(body)

    def roots(self, store):
        return [_mounted(store), HttpRootResource(store, https_port=8443)]

    def test_provides_iresource(self):
        """ChallengeResource is a twisted.web resource."""
        verifyObject(IResource, ChallengeResource(MemoryStore()))

    def test_path_constant(self):
        """The mount path is RFC 8555's well-known challenge path."""
        self.assertEqual(ACME_CHALLENGE_PATH, b"/.well-known/acme-challenge/")

    def test_serves_key_authorization_for_any_host(self):
        """Any Host header, registered or not or an IP address, gets exactly the key authorization as text/plain."""
        store = _store_with_challenge()
        for root in self.roots(store):
            for host in ("jobs.acme-corp.example", "other.example", "127.0.0.1", "localhost:8080"):
                response, body = self.fetch(root, f"http://{host}/.well-known/acme-challenge/{TOKEN}")
                self.assertEqual(response.code, 200, host)
                self.assertEqual(body, KEY_AUTHORIZATION.encode("ascii"))
                self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain"])
                self.assertEqual(response.length, len(KEY_AUTHORIZATION))

    def test_unknown_token_is_404(self):
        """A well-formed token the store does not know gets 404."""
        store = _store_with_challenge()
        for root in self.roots(store):
            response, _ = self.fetch(root, "http://jobs.acme-corp.example/.well-known/acme-challenge/nope")
            self.assertEqual(response.code, 404)
        self.assertEqual(store.challenge_reads, ["nope", "nope"])

    def test_malformed_tokens_are_400_without_reading_the_store(self):
        """Tokens that are not 1-256 base64url characters get 400 and the store is never asked."""
        store = _store_with_challenge()
        bad = ["../x", "a b", "%2e%2e", "", "a/b", "tok%2Fen", "t.k", "x" * 257, "%00", "t%C3%A9"]
        for root in self.roots(store):
            for token in bad:
                response, _ = self.fetch(root, "http://a.example/.well-known/acme-challenge/" + token)
                self.assertEqual(response.code, 400, token)
        self.assertEqual(store.challenge_reads, [])

    def test_longest_token_is_accepted(self):
        """A 256-character token is looked up and served."""
        token = "A-_z" * 64
        store = _store_with_challenge(token=token, key_authorization=token + ".thumb")
        response, body = self.fetch(_mounted(store), "http://a.example/.well-known/acme-challenge/" + token)
        self.assertEqual((response.code, body), (200, (token + ".thumb").encode("ascii")))

    def test_store_error_is_503_and_logged(self):
        """A failing store gives 503 with Retry-After, and the failure is logged."""
        store = _store_with_challenge()
        store.fault = StoreError("disk on fire")
        response, _ = self.fetch(_mounted(store), f"http://a.example/.well-known/acme-challenge/{TOKEN}")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"5"])
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)

    def test_store_cancelling_its_read_is_503(self):
        """A store read cancelled underneath us (say, by the database pool's own timeout) is a 503, not a hang."""
        store = _store_with_challenge()
        store.fault = CancelledError()
        response, _ = self.fetch(_mounted(store), f"http://a.example/.well-known/acme-challenge/{TOKEN}")
        self.assertEqual(response.code, 503)
        self.assertEqual(len(self.flushLoggedErrors(CancelledError)), 1)

    def test_unservable_record_is_500_and_logged(self):
        """A stored key authorization that cannot be sent (a lone surrogate from a corrupt store) is a logged 500."""
        store = _store_with_challenge(key_authorization=TOKEN + ".\ud800")
        response, body = self.fetch(_mounted(store), f"http://a.example/.well-known/acme-challenge/{TOKEN}")
        self.assertEqual((response.code, body), (500, b"Internal error\n"))
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 1)

    def test_every_answer_forbids_caching_and_sniffing(self):
        """Every answer (200, 400, 404, 405, 503) says Cache-Control: no-store and X-Content-Type-Options: nosniff."""
        store = _store_with_challenge()
        base = "http://a.example/.well-known/acme-challenge/"
        answers = [self.fetch(_mounted(store), base + TOKEN), self.fetch(_mounted(store), base + "a.b"),
                   self.fetch(_mounted(store), base + "nope"), self.fetch(_mounted(store), base + TOKEN, method="PUT")]
        store.fault = StoreError("down")
        answers.append(self.fetch(_mounted(store), base + TOKEN))
        self.flushLoggedErrors(StoreError)
        self.assertEqual([response.code for response, _ in answers], [200, 400, 404, 405, 503])
        for response, _ in answers:
            self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"], response.code)
            self.assertEqual(response.headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"], response.code)

    def test_answer_is_logged_with_token_and_hostname(self):
        """Each answered challenge is logged with its token and the hostname it is for."""
        store = _store_with_challenge()
        with capturedLogs() as events:
            self.fetch(_mounted(store), f"http://other.example/.well-known/acme-challenge/{TOKEN}")
        answered = [(e["token"], e["hostname"]) for e in events if "hostname" in e]
        self.assertEqual(answered, [(TOKEN, "jobs.acme-corp.example")])

    def test_head_has_no_body(self):
        """HEAD gets the GET status with an empty body."""
        store = _store_with_challenge()
        response, body = self.fetch(
            _mounted(store), f"http://a.example/.well-known/acme-challenge/{TOKEN}", method="HEAD"
        )
        self.assertEqual((response.code, body), (200, b""))

    def test_other_methods_are_405(self):
        """POST and DELETE get 405 naming GET and HEAD, without reading the store."""
        store = _store_with_challenge()
        for method in ("POST", "DELETE"):
            response, _ = self.fetch(
                _mounted(store), f"http://a.example/.well-known/acme-challenge/{TOKEN}", method=method
            )
            self.assertEqual(response.code, 405)
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])
        self.assertEqual(store.challenge_reads, [])

    def test_slow_store_answers_when_it_fires(self):
        """The response waits for the store's Deferred and is sent once it fires."""
        store = _store_with_challenge()
        store.stall = True
        stub = StubTreq(_mounted(store))
        d = stub.get(f"http://a.example/.well-known/acme-challenge/{TOKEN}")
        stub.flush()
        self.assertNoResult(d)
        store.pending[0].callback(store.challenges[TOKEN])
        stub.flush()
        response = self.successResultOf(d)
        body = response.content()
        stub.flush()
        self.assertEqual(self.successResultOf(body), KEY_AUTHORIZATION.encode("ascii"))


def _connect(resource):
    """A real Site channel for ``resource`` over an in-memory transport."""
    site = make_site(resource, clock=Clock())
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class WireTests(SynchronousTestCase):
    """ChallengeResource behind a real Site and HTTP channel, checked on the wire."""

    def test_head_reports_the_get_length(self):
        """HEAD's Content-Length is the key authorization's length, and no body follows."""
        protocol, transport = _connect(_mounted(_store_with_challenge()))
        protocol.dataReceived(
            b"HEAD /.well-known/acme-challenge/" + TOKEN.encode() + b" HTTP/1.1\r\nHost: a.example\r\n\r\n"
        )
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % len(KEY_AUTHORIZATION), head.split(b"\r\n"))
        self.assertEqual(body, b"")

    def test_kept_alive_connection_answers_the_next_request(self):
        """After an answer the connection serves the CA's next request (keep-alive): each answer is finished."""
        protocol, transport = _connect(_mounted(_store_with_challenge()))
        request = b"GET /.well-known/acme-challenge/" + TOKEN.encode() + b" HTTP/1.1\r\nHost: a.example\r\n\r\n"
        protocol.dataReceived(request)
        protocol.dataReceived(request.replace(TOKEN.encode(), b"nope"))
        self.assertEqual(re.findall(rb"HTTP/1.1 \d+", transport.value()), [b"HTTP/1.1 200", b"HTTP/1.1 404"])
        self.assertEqual(transport.value().count(KEY_AUTHORIZATION.encode()), 1)

    def test_closed_request_cancels_read_and_writes_nothing(self):
        """Losing the connection while the store read is pending cancels it and nothing is written or logged."""
        store = _store_with_challenge()
        store.stall = True
        protocol, transport = _connect(_mounted(store))
        protocol.dataReceived(
            b"GET /.well-known/acme-challenge/" + TOKEN.encode() + b" HTTP/1.1\r\nHost: a.example\r\n\r\n"
        )
        self.assertEqual(len(store.pending), 1)
        self.assertEqual(transport.value(), b"")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(store.cancelled, store.pending)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])
