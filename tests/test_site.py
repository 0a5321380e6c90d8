"""Tests for jobhost.web.site: host routing on HTTPS and HTTP, and the Site settings."""

from __future__ import annotations

import functools
import gc
import gzip
import json
import re
from datetime import datetime, timezone
from typing import Any
from xml.etree import ElementTree

import treq
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from zope.interface.verify import verifyObject

from jobhost.errors import StoreError
from jobhost.store.memory import MemoryStore
from jobhost.store.records import Challenge, DomainRecord, DomainState, certificate_record
from jobhost.testing import TestCA
from jobhost.web.site import (
    CONTENT_SECURITY_POLICY,
    content_security_policy,
    HttpRootResource,
    HttpsRootResource,
    PageCache,
    make_site,
)

HOST = "jobs.acme-corp.example"
NOW = datetime(2025, 3, 1, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script>"


@functools.cache
def _ca() -> TestCA:
    """One test CA for this module, made on first use (never at import)."""
    return TestCA.create()


def _page() -> dict[str, Any]:
    return {
        "company": "Acme Corp",
        "intro": "We make anvils.",
        "jobs": [
            {
                "id": "eng-1",
                "title": "Anvil Engineer",
                "location": "Berlin",
                "employment_type": "FULL_TIME",
                "description": "Design anvils.\nTest them.",
                "apply_url": "https://apply.acme-corp.example/eng-1",
                "posted": "2025-02-01",
            },
            {"id": "ops-2", "title": "Rocket Operator"},
        ],
    }


class FaultyStore(MemoryStore):
    """A MemoryStore whose reads can be made to fail or stall (injected faults)."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: Exception | None = None
        self.stall = False
        #: A stalled read answers anyway when cancelled (a store that cannot cancel).
        self.ignore_cancel = False
        #: Reads answer with something that is not a record (a store bug).
        self.garbage = False
        self.pending: list[Deferred] = []
        self.cancelled: list[Deferred] = []

    def _read(self, read, key):
        if self.fault is not None:
            return fail(self.fault)

        def answer() -> Deferred:
            return succeed("not a record") if self.garbage else read(key)

        if self.stall:

            def cancel(d: Deferred) -> None:
                self.cancelled.append(d)
                if self.ignore_cancel:
                    answer().chainDeferred(d)

            d: Deferred = Deferred(canceller=cancel)
            self.pending.append(d)
            return d
        return answer()

    def get_domain(self, hostname):
        return self._read(super().get_domain, hostname)

    def get_certificate(self, hostname):
        return self._read(super().get_certificate, hostname)


def _add_domain(store, hostname=HOST, page=None, state=DomainState.ACTIVE) -> None:
    store.domains[hostname] = DomainRecord(
        hostname=hostname, state=state, created_at=NOW, updated_at=NOW, page=page
    )


def _add_certificate(store, hostname=HOST) -> None:
    key_pem, chain_pem = _ca().issue(hostname)
    store.certificates[hostname] = certificate_record(hostname, key_pem, chain_pem)


def _json_ld(html: str) -> list[Any]:
    scripts = re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    return [json.loads(s) for s in scripts]


class WebTestCase(SynchronousTestCase):
    """Requests over StubTreq with every response read synchronously."""

    def fetch(self, resource, url, method="GET", headers=None):
        stub = StubTreq(resource)
        d = stub.request(method, url, headers=headers, allow_redirects=False)
        stub.flush()
        response = self.successResultOf(d)
        body = response.content()
        stub.flush()
        return response, self.successResultOf(body)

    def header(self, response, name: str) -> str | None:
        values = response.headers.getRawHeaders(name)
        return None if values is None else values[-1]


class HttpsRootResourceTests(WebTestCase):
    """The careers pages served by HttpsRootResource."""

    def setUp(self) -> None:
        self.store = FaultyStore()
        _add_domain(self.store, page=_page())
        self.root = HttpsRootResource(self.store)

    def get(self, path, host=HOST, **kw):
        return self.fetch(self.root, f"https://{host}{path}", **kw)

    def test_provides_iresource(self):
        """HttpsRootResource is a twisted.web resource."""
        verifyObject(IResource, self.root)

    def test_list_page_for_registered_host(self):
        """/ shows the company and every opening linked to /jobs/{id}, as an accessible HTML document."""
        response, body = self.get("/")
        html = body.decode("utf-8")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "text/html; charset=utf-8")
        self.assertTrue(html.startswith('<!DOCTYPE html>\n<html lang="en">'))
        self.assertIn('<main id="main">', html)
        self.assertIn("<h1>Careers at Acme Corp</h1>", html)
        self.assertIn('<a href="/jobs/eng-1">Anvil Engineer</a>', html)
        self.assertIn('<a href="/jobs/ops-2">Rocket Operator</a>', html)
        (item_list,) = _json_ld(html)
        self.assertEqual(item_list["@type"], "ItemList")
        self.assertEqual(
            [e["url"] for e in item_list["itemListElement"]],
            [f"https://{HOST}/jobs/eng-1", f"https://{HOST}/jobs/ops-2"],
        )

    def test_job_page_has_job_posting_json_ld(self):
        """/jobs/{id} shows the opening and carries parseable JobPosting JSON-LD."""
        response, body = self.get("/jobs/eng-1")
        html = body.decode("utf-8")
        self.assertEqual(response.code, 200)
        self.assertIn("<h1>Anvil Engineer</h1>", html)
        (posting,) = _json_ld(html)
        self.assertEqual(posting["@type"], "JobPosting")
        self.assertEqual(posting["title"], "Anvil Engineer")
        self.assertEqual(posting["hiringOrganization"]["name"], "Acme Corp")
        self.assertEqual(posting["datePosted"], "2025-02-01")
        self.assertEqual(posting["employmentType"], "FULL_TIME")
        self.assertEqual(
            posting["jobLocation"], [{"@type": "Place", "address": {"@type": "PostalAddress", "addressLocality": "Berlin"}}]
        )
        self.assertEqual(posting["url"], f"https://{HOST}/jobs/eng-1")

    def test_jobs_json(self):
        """/jobs.json is UTF-8 JSON listing the openings."""
        response, body = self.get("/jobs.json")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "application/json; charset=utf-8")
        doc = json.loads(body.decode("utf-8"))
        self.assertEqual(doc["company"], "Acme Corp")
        self.assertEqual([j["title"] for j in doc["jobs"]], ["Anvil Engineer", "Rocket Operator"])

    def test_hostile_titles_are_escaped(self):
        """Titles holding <script> or </script> appear escaped in HTML and cannot end the JSON-LD script."""
        page = _page()
        page["company"] = "Evil & Co </script>"
        page["jobs"][0]["title"] = HOSTILE
        page["jobs"][1]["title"] = "</script><img src=x onerror=alert(2)>"
        _add_domain(self.store, page=page)
        for path in ("/", "/jobs/eng-1", "/jobs/ops-2"):
            _, body = self.get(path)
            html = body.decode("utf-8")
            self.assertNotIn(HOSTILE, html)
            self.assertNotIn("<img src=x", html)
            # One <script> element (the JSON-LD), so exactly one closing tag.
            self.assertEqual(html.count("</script>"), 1, path)
            self.assertEqual(html.count("<script"), 1, path)
        _, body = self.get("/")
        html = body.decode("utf-8")
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", html)
        (item_list,) = _json_ld(html)
        self.assertEqual(
            [e["name"] for e in item_list["itemListElement"]],
            [HOSTILE, "</script><img src=x onerror=alert(2)>"],
        )
        _, body = self.get("/jobs/eng-1")
        html = body.decode("utf-8")
        self.assertIn("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>", html)
        self.assertIn("\\u003cscript\\u003ealert(1)\\u003c/script\\u003e", html)
        (posting,) = _json_ld(html)
        self.assertEqual(posting["title"], HOSTILE)
        self.assertEqual(posting["hiringOrganization"]["name"], "Evil & Co </script>")
        _, body = self.get("/jobs.json")
        self.assertEqual(json.loads(body)["jobs"][0]["title"], HOSTILE)

    def test_unknown_hosts_get_identical_generic_404(self):
        """Unregistered, removed and malformed hosts all get the same plain 404 naming nobody."""
        _add_domain(self.store, hostname="gone.example", page=_page(), state=DomainState.REMOVED)
        answers = []
        for host, path in [
            ("unknown-one.example", "/"),
            ("other-unknown.example", "/jobs/eng-1"),
            ("gone.example", "/"),
            ("gone.example", "/jobs.json"),
            ("127.0.0.1", "/"),
        ]:
            response, body = self.get(path, host=host)
            answers.append((response.code, self.header(response, "content-type"), body))
            self.assertNotIn(host.encode(), body)
            self.assertNotIn(b"Acme", body)
        answers.append(
            (lambda r, b: (r.code, self.header(r, "content-type"), b))(
                *self.get("/", headers={"Host": ["<b>.example"]})
            )
        )
        self.assertEqual(answers[0][0], 404)
        self.assertEqual(answers[0][1], "text/plain; charset=utf-8")
        self.assertEqual(len(set(answers)), 1, answers)

    def test_host_with_port_and_case_is_normalised(self):
        """A Host header with upper case, a trailing dot or a port reaches the same page."""
        for host in ("JOBS.Acme-Corp.example:8443", "jobs.acme-corp.example.:443"):
            response, body = self.get("/", headers={"Host": [host]})
            self.assertEqual(response.code, 200, host)
            self.assertIn(b"Acme Corp", body)

    def test_unknown_job_is_404(self):
        """An id not on the page, or not an id at all, gets the host's 404 page."""
        for path in ("/jobs/nope", "/jobs/", "/jobs/eng-1/extra", "/jobs/%65ng-1", "/elsewhere", "/jobs"):
            response, body = self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertIn(b"Page not found", body)
            self.assertIn(b'href="/"', body)

    def test_host_without_page_shows_no_open_positions(self):
        """A registered hostname without a page document shows "No open positions" with its name."""
        _add_domain(self.store, hostname="xn--bcher-kva.example", page=None, state=DomainState.PENDING)
        response, body = self.get("/", host="xn--bcher-kva.example")
        html = body.decode("utf-8")
        self.assertEqual(response.code, 200)
        self.assertIn("No open positions", html)
        self.assertIn("<h1>bücher.example</h1>", html)
        response, body = self.get("/jobs.json", host="xn--bcher-kva.example")
        self.assertEqual(json.loads(body)["jobs"], [])
        response, _ = self.get("/jobs/eng-1", host="xn--bcher-kva.example")
        self.assertEqual(response.code, 404)

    def test_security_headers_on_every_response(self):
        """Every response, pages and errors alike, carries CSP, nosniff, Referrer-Policy and HSTS."""
        for host, path, method in [
            (HOST, "/", "GET"),
            (HOST, "/jobs/eng-1", "GET"),
            (HOST, "/jobs.json", "GET"),
            (HOST, "/jobs/missing", "GET"),
            ("nobody.example", "/", "GET"),
            (HOST, "/", "POST"),
        ]:
            response, body = self.get(path, host=host, method=method)
            csp = self.header(response, "content-security-policy")
            self.assertTrue(csp.startswith(CONTENT_SECURITY_POLICY.decode()), csp)
            self.assertIn("default-src 'none'", csp)
            self.assertNotIn("unsafe-inline", csp)
            styles = re.findall(rb"<style>(.*?)</style>", body, re.S)
            if styles:
                (css,) = styles
                self.assertEqual(csp, content_security_policy(css.decode("utf-8")).decode())
            self.assertEqual(self.header(response, "x-content-type-options"), "nosniff")
            self.assertIsNotNone(self.header(response, "referrer-policy"))
            self.assertEqual(self.header(response, "strict-transport-security"), "max-age=300")

    def test_only_get_and_head(self):
        """POST, PUT and DELETE get 405 naming GET and HEAD."""
        for method in ("POST", "PUT", "DELETE"):
            response, _ = self.get("/", method=method)
            self.assertEqual(response.code, 405)
            self.assertEqual(self.header(response, "allow"), "GET, HEAD")

    def test_head_has_no_body(self):
        """HEAD answers like GET without a body."""
        response, body = self.get("/", method="HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(self.header(response, "content-type"), "text/html; charset=utf-8")

    def test_store_failure_is_503(self):
        """A store that fails gives 503 and the failure is logged."""
        self.store.fault = StoreError("database gone")
        response, body = self.get("/")
        self.assertEqual(response.code, 503)
        self.assertNotIn(b"database", body)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)

    def test_invalid_stored_page_is_500(self):
        """A stored page that fails validation is not rendered: 500, with nothing of it shown."""
        _add_domain(self.store, page={"company": "Acme Corp", "jobs": [{"id": "x y", "title": HOSTILE}]})
        response, body = self.get("/")
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"Acme", body)
        self.assertNotIn(b"alert", body)

    def test_slow_store_answers_when_it_fires(self):
        """The page waits for the store's Deferred and is sent once it fires."""
        self.store.stall = True
        stub = StubTreq(self.root)
        d = stub.get(f"https://{HOST}/")
        stub.flush()
        self.assertNoResult(d)
        self.store.pending[0].callback(self.store.domains[HOST])
        stub.flush()
        response = self.successResultOf(d)
        body = response.content()
        stub.flush()
        self.assertIn(b"Anvil Engineer", self.successResultOf(body))


    def test_store_cancelling_its_own_read_is_503(self):
        """A read the store gives up on (cancelled while the client still waits) answers 503, logged."""
        self.store.stall = True
        stub = StubTreq(self.root)
        d = stub.get(f"https://{HOST}/")
        stub.flush()
        self.store.pending[0].cancel()
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 503)
        self.assertEqual(len(self.flushLoggedErrors(CancelledError)), 1)

    def test_rendering_bug_is_500_and_logged(self):
        """A store answering with something that is not a record gives 500, logged with the URI."""
        self.store.garbage = True
        with capturedLogs() as events:
            response, body = self.get("/jobs/eng-1?x=1")
        self.assertEqual((response.code, body), (500, b"Internal server error\n"))
        self.assertEqual(self.header(response, "strict-transport-security"), "max-age=300")
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        (event,) = [e for e in events if "log_failure" in e]
        self.assertIn("/jobs/eng-1?x=1", formatEvent(event))
        self.assertTrue(formatEvent(event).startswith("Rendering "))

    def test_invalid_stored_page_is_logged_with_its_problems(self):
        """The 500 for an invalid stored page is logged naming the hostname and what is wrong."""
        _add_domain(self.store, page={"company": "Acme Corp", "jobs": [{"id": "x y", "title": "T"}]})
        with capturedLogs() as events:
            response, _ = self.get("/")
        self.assertEqual(response.code, 500)
        (line,) = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertIn(f"The stored careers page of {HOST} is invalid", line)
        self.assertIn("jobs[0].id", line)

    def test_missing_or_repeated_host_header_is_404(self):
        """A request without a Host header, or with two, gets the generic 404 (no page is guessed)."""
        for request in (
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nHost: " + HOST.encode() + b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nHost: other.example\r\n\r\n",
        ):
            _, protocol, transport = _connect(self.root)
            protocol.dataReceived(request)
            head, _, body = transport.value().partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.") and b" 404 " in head.split(b"\r\n")[0], head)
            self.assertEqual(body, b"Not found\n")

    def test_responses_carry_content_length_also_for_head(self):
        """Every answer states its length (no chunking); HEAD states the length GET would send."""
        _, protocol, transport = _connect(self.root)
        protocol.dataReceived(b"GET /jobs.json HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % len(body), head.split(b"\r\n"))
        self.assertNotIn(b"Transfer-Encoding", head)
        _, protocol, transport = _connect(self.root)
        protocol.dataReceived(b"HEAD /jobs.json HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % len(body), head.split(b"\r\n"))
        self.assertEqual(rest, b"")

    def test_pipelined_requests_are_each_answered(self):
        """Each response completes its request, so the next request on a kept-alive connection is answered."""
        _, protocol, transport = _connect(self.root)
        request = b"GET /jobs/nope HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
        protocol.dataReceived(request + request.replace(b"/jobs/nope", b"/jobs.json"))
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.value())
        self.assertEqual(statuses, [b"404", b"200"])
        self.assertFalse(transport.disconnecting)

    def test_resources_are_compared_by_identity(self):
        """Roots are hashable and equal only to themselves, even when built from the same store."""
        for make in (lambda: HttpsRootResource(self.store), lambda: HttpRootResource(self.store, 8443)):
            one, two = make(), make()
            self.assertNotEqual(one, two)
            self.assertEqual(len({one, two, one}), 2)


class HttpRootResourceTests(WebTestCase):
    """Challenges, redirects and 404s served by HttpRootResource."""

    def setUp(self) -> None:
        self.store = FaultyStore()
        _add_domain(self.store, page=_page())
        _add_certificate(self.store)
        _add_domain(self.store, hostname="pending.example", state=DomainState.PENDING)

    def test_provides_iresource(self):
        """HttpRootResource is a twisted.web resource."""
        verifyObject(IResource, HttpRootResource(self.store, 8443))

    def test_redirects_hosts_with_certificate_keeping_path_and_query(self):
        """A host with a certificate gets 301 to HTTPS with path and query exactly as sent."""
        cases = [
            (8443, "/", f"https://{HOST}:8443/"),
            (8443, "/jobs/eng-1?utm_source=x&b=%20c", f"https://{HOST}:8443/jobs/eng-1?utm_source=x&b=%20c"),
            (443, "/a%2Fb/../c", f"https://{HOST}/a%2Fb/../c"),
            (None, "//evil.example/x?q=1", f"https://{HOST}//evil.example/x?q=1"),
        ]
        for port, path, location in cases:
            root = HttpRootResource(self.store, port)
            response, _ = self.fetch(root, f"http://{HOST}{path}")
            self.assertEqual(response.code, 301, path)
            self.assertEqual(self.header(response, "location"), location)
            self.assertIsNone(self.header(response, "strict-transport-security"))

    def test_redirect_keeps_raw_request_target(self):
        """On the wire, the request target is copied byte for byte, and absolute-form keeps its path and query."""
        for target, location in [
            (b"/a?", b"https://%s:8443/a?" % HOST.encode()),
            (b"/%7Ex;p=1?b=%ZZ&c&&", b"https://%s:8443/%%7Ex;p=1?b=%%ZZ&c&&" % HOST.encode()),
            (b"http://elsewhere.example/p?q=1", b"https://%s:8443/p?q=1" % HOST.encode()),
        ]:
            _, protocol, transport = _connect(HttpRootResource(self.store, 8443))
            protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
            head = transport.value().partition(b"\r\n\r\n")[0].split(b"\r\n")
            self.assertEqual(head[0], b"HTTP/1.1 301 Moved Permanently", target)
            self.assertIn(b"Location: " + location, head)

    def test_redirect_never_leaves_the_hostname(self):
        """A request target that is not a path (``@evil.example/``, ``.evil.example``, ``x``) redirects to the host's root."""
        for target, location in [
            (b"@evil.example/x?q=1", b"https://%s/?q=1" % HOST.encode()),
            (b".evil.example/x", b"https://%s/" % HOST.encode()),
            (b"x", b"https://%s/" % HOST.encode()),
            (b"http://elsewhere.example", b"https://%s/" % HOST.encode()),
            (b"http://elsewhere.example?a=b", b"https://%s/?a=b" % HOST.encode()),
        ]:
            _, protocol, transport = _connect(HttpRootResource(self.store, None))
            protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
            head = transport.value().partition(b"\r\n\r\n")[0].split(b"\r\n")
            self.assertEqual(head[0], b"HTTP/1.1 301 Moved Permanently", target)
            self.assertIn(b"Location: " + location, head, target)

    def test_root_mounted_under_another_resource_redirects_too(self):
        """Reached with no path left (mounted as a child), the root still redirects rather than 404 or 405."""
        parent = Resource()
        parent.putChild(b"plain", HttpRootResource(self.store, 8443))
        response, _ = self.fetch(parent, f"http://{HOST}/plain?x=1")
        self.assertEqual(response.code, 301)
        self.assertEqual(self.header(response, "location"), f"https://{HOST}:8443/plain?x=1")

    def test_redirect_uses_normalised_host(self):
        """The redirect names the normalised hostname, whatever case and port the Host header had."""
        root = HttpRootResource(self.store, 8443)
        response, _ = self.fetch(root, f"http://{HOST}/x", headers={"Host": ["JOBS.ACME-CORP.EXAMPLE.:8080"]})
        self.assertEqual(self.header(response, "location"), f"https://{HOST}:8443/x")

    def test_hosts_without_certificate_get_404(self):
        """Unknown hosts, registered hosts still without a certificate, and bad Host headers get the same 404."""
        root = HttpRootResource(self.store, 8443)
        answers = set()
        for host in ("pending.example", "unknown.example", "127.0.0.1", "localhost"):
            response, body = self.fetch(root, f"http://{host}/jobs/eng-1?x=1")
            self.assertEqual(response.code, 404, host)
            self.assertIsNone(self.header(response, "location"))
            answers.add(body)
        response, body = self.fetch(root, f"http://{HOST}/", headers={"Host": ["a b.example"]})
        self.assertEqual(response.code, 404)
        answers.add(body)
        self.assertEqual(answers, {b"Not found\n"})

    def test_challenge_path_comes_first_for_any_host(self):
        """A challenge is answered even on a host that would otherwise be redirected or 404."""
        self.store.challenges["tok"] = Challenge(
            token="tok", key_authorization="tok.thumb", hostname="new.example", created_at=NOW
        )
        root = HttpRootResource(self.store, 8443)
        for host in (HOST, "new.example", "127.0.0.1"):
            response, body = self.fetch(root, f"http://{host}/.well-known/acme-challenge/tok")
            self.assertEqual((response.code, body), (200, b"tok.thumb"), host)
        response, _ = self.fetch(root, f"http://{HOST}/.well-known/acme-challenge/../x")
        self.assertEqual(response.code, 400)

    def test_near_miss_challenge_paths_are_not_challenges(self):
        """Paths that only resemble the challenge path are treated as ordinary paths."""
        root = HttpRootResource(self.store, 8443)
        for path in ("/.well-known/acme-challenge", "/.well-known/other/tok", "/.well-known/"):
            response, _ = self.fetch(root, f"http://{HOST}{path}")
            self.assertEqual(response.code, 301, path)
            self.assertEqual(self.header(response, "location"), f"https://{HOST}:8443{path}")

    def test_store_failure_is_503(self):
        """A failing certificate read gives 503 and is logged."""
        self.store.fault = StoreError("gone")
        response, _ = self.fetch(HttpRootResource(self.store, 8443), f"http://{HOST}/")
        self.assertEqual(response.code, 503)
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)

    def test_other_methods_are_405(self):
        """Outside the challenge path only GET and HEAD are served."""
        response, _ = self.fetch(HttpRootResource(self.store, 8443), f"http://{HOST}/", method="POST")
        self.assertEqual(response.code, 405)


def _connect(resource, clock=None):
    site = make_site(resource, clock=clock or Clock())
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return site, protocol, transport


class _SessionResource(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.getSession()
        return b"unreachable"


class _BannerResource(Resource):
    isLeaf = True

    def __init__(self, name) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request):
        request.setHeader(self.name, b"Apache/2.4.1")
        return b"ok"


class _ArgsResource(Resource):
    isLeaf = True

    def render_POST(self, request):
        return repr(sorted(request.args)).encode()


class MakeSiteTests(SynchronousTestCase):
    """The Site wrapper: banner, tracebacks, sessions, and early closes, on the wire."""

    def test_server_header_names_no_version(self):
        """Responses say Server: jobhost and never TwistedWeb."""
        store = MemoryStore()
        _add_domain(store, page=_page())
        _, protocol, transport = _connect(HttpsRootResource(store))
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        head = transport.value().partition(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(head[0], b"HTTP/1.1 200 OK")
        self.assertIn(b"Server: jobhost", head)
        self.assertNotIn(b"Twisted", transport.value())

    def test_sessions_are_refused_without_traceback(self):
        """Asking for a session fails the request with a 500 that shows no traceback."""
        site, protocol, transport = _connect(_SessionResource())
        self.assertFalse(site.displayTracebacks)
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 500 "), response)
        self.assertNotIn(b"Traceback", response)
        self.assertNotIn(b"sessions", response)
        self.assertNotIn(b"TWISTED_SESSION", response)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertRaises(RuntimeError, site.makeSession)

    def test_closed_request_cancels_store_read(self):
        """A client gone before the domain record arrives cancels the read; nothing is written."""
        store = FaultyStore()
        store.stall = True
        _, protocol, transport = _connect(HttpsRootResource(store))
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        self.assertEqual(len(store.pending), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(store.cancelled, store.pending)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_silent_connections_time_out_on_the_given_clock(self):
        """A connection that sends no request is closed at the request deadline (10 s) of the injected clock."""
        clock = Clock()
        _, protocol, transport = _connect(HttpsRootResource(MemoryStore()), clock)
        clock.advance(9.5)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.5)
        self.assertTrue(transport.disconnecting)

    def test_answer_after_the_client_left_is_dropped_quietly(self):
        """A store that answers although the read was cancelled: nothing is written and nothing logged."""
        store = FaultyStore()
        _add_domain(store, page=_page())
        store.stall = store.ignore_cancel = True
        _, protocol, transport = _connect(HttpsRootResource(store))
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(store.cancelled, store.pending)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_rendering_bug_after_the_client_left_is_logged_not_written(self):
        """A rendering failure for a client that has gone is logged once; nothing is written."""
        store = FaultyStore()
        store.stall = store.ignore_cancel = store.garbage = True
        _, protocol, transport = _connect(HttpsRootResource(store))
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(transport.value(), b"")
        self.assertEqual([f.type for f in self.flushLoggedErrors()], [AttributeError])
        # Handled: no "Unhandled error in Deferred" is left to be logged later.
        self.assertIsNone(self.successResultOf(store.pending[0]))

    def test_server_header_set_by_a_resource_is_replaced(self):
        """Whatever a resource sets as Server (bytes or str, any case), the response says jobhost."""
        for name in (b"Server", "Server", "SERVER"):
            _, protocol, transport = _connect(_BannerResource(name))
            protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
            head = transport.value().partition(b"\r\n\r\n")[0].split(b"\r\n")
            self.assertEqual([h for h in head if h.lower().startswith(b"server:")], [b"Server: jobhost"], name)

    def test_post_bodies_are_not_parsed_into_args(self):
        """A form POST's body does not show up in request.args (only the query string does)."""
        _, protocol, transport = _connect(_ArgsResource())
        body = b"secret=1&other=2"
        protocol.dataReceived(
            b"POST /?q=1 HTTP/1.1\r\nHost: a.example\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertEqual(transport.value().partition(b"\r\n\r\n")[2], b"[b'q']")

    def test_starting_and_stopping_the_site_logs_nothing(self):
        """The site is quiet: no "Starting factory" lines in the log."""
        site = make_site(HttpsRootResource(MemoryStore()), clock=Clock())
        with capturedLogs() as events:
            site.doStart()
            site.doStop()
        self.assertEqual(events, [])


class PageCacheTests(WebTestCase):
    """Rendered careers pages are kept until the domain record changes."""

    def setUp(self) -> None:
        self.store = FaultyStore()
        _add_domain(self.store, page=_page())
        self.cache = PageCache(max_entries=3)
        self.root = HttpsRootResource(self.store, page_cache=self.cache)

    def get(self, path="/", host=HOST):
        return self.fetch(self.root, f"https://{host}{path}")

    def test_second_request_is_served_without_the_store(self):
        """Once rendered, a page is served from memory: the store is not read again."""
        first = self.get()[1]
        self.store.fault = StoreError("the disk is gone")
        response, body = self.get()
        self.assertEqual((response.code, body), (200, first))
        self.assertEqual((self.cache.hits, self.cache.misses), (1, 1))

    def test_invalidation_shows_the_new_page(self):
        """After invalidate(hostname) the next request renders the changed record."""
        self.get()
        page = _page()
        page["company"] = "Wile E. Industries"
        _add_domain(self.store, page=page)
        self.assertNotIn(b"Wile E. Industries", self.get()[1], "cached until invalidated")
        self.cache.invalidate(HOST)
        self.assertIn(b"Wile E. Industries", self.get()[1])

    def test_change_during_render_is_not_cached(self):
        """A response rendered from a record read before an invalidation is not kept."""
        self.store.stall = True
        stub = StubTreq(self.root)
        d = stub.request("GET", f"https://{HOST}/", allow_redirects=False)
        stub.flush()
        self.cache.invalidate(HOST)
        self.store.stall = False
        self.store.pending.pop().callback(self.store.domains[HOST])
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertIsNone(self.cache.get(HOST, b"/"))

    def test_only_successes_are_cached_and_size_is_bounded(self):
        """404s are not kept, and no more than max_entries responses are."""
        self.get("/jobs/nope")
        self.assertIsNone(self.cache.get(HOST, b"/jobs/nope"))
        for path in ("/", "/jobs.json", "/jobs/eng-1", "/jobs/ops-2"):
            self.get(path)
        self.assertIsNone(self.cache.get(HOST, b"/"), "the least recently used entry went first")
        self.assertIsNotNone(self.cache.get(HOST, b"/jobs/ops-2"))

    def test_invalidate_all(self):
        """invalidate_all forgets every response."""
        self.get()
        self.cache.invalidate_all()
        self.assertIsNone(self.cache.get(HOST, b"/"))

    def test_render_in_flight_during_invalidate_all_is_not_cached(self):
        """A response rendered from a record read before invalidate_all is not kept."""
        self.store.stall = True
        stub = StubTreq(self.root)
        d = stub.request("GET", f"https://{HOST}/", allow_redirects=False)
        stub.flush()
        self.cache.invalidate_all()
        self.store.pending.pop().callback(self.store.domains[HOST])
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertIsNone(self.cache.get(HOST, b"/"))

    def test_holds_exactly_max_entries(self):
        """A cache of 3 keeps the 3 most recently rendered pages."""
        for path in ("/", "/jobs.json", "/jobs/eng-1", "/jobs/ops-2"):
            self.get(path)
        for path in (b"/jobs.json", b"/jobs/eng-1", b"/jobs/ops-2"):
            self.assertIsNotNone(self.cache.get(HOST, path), path)

    def test_reading_a_page_keeps_it_longest(self):
        """Serving a page from the cache makes it the most recently used: others are dropped first."""
        self.get("/")
        self.get("/jobs.json")
        self.get("/jobs/eng-1")
        self.get("/")  # a hit
        self.get("/jobs/ops-2")
        self.assertIsNotNone(self.cache.get(HOST, b"/"))
        self.assertIsNone(self.cache.get(HOST, b"/jobs.json"))

    def test_storing_again_counts_as_recent(self):
        """A response stored again for the same page (two requests raced) becomes the most recent."""
        cache = PageCache(max_entries=2)
        cache.put(HOST, b"/a", "a1", cache.token(HOST))
        cache.put(HOST, b"/b", "b", cache.token(HOST))
        cache.put(HOST, b"/a", "a2", cache.token(HOST))
        cache.put(HOST, b"/c", "c", cache.token(HOST))
        self.assertEqual(cache.get(HOST, b"/a"), "a2")
        self.assertIsNone(cache.get(HOST, b"/b"))

    def test_invalidation_after_eviction_still_drops_the_rest(self):
        """After some of a hostname's pages were evicted, invalidating it still drops all it has left."""
        cache = PageCache(max_entries=2)
        for path in (b"/a", b"/b", b"/c"):
            cache.put(HOST, path, path, cache.token(HOST))
        cache.put("other.example", b"/", "other", cache.token("other.example"))
        cache.invalidate(HOST)
        self.assertEqual(
            [cache.get(HOST, p) for p in (b"/a", b"/b", b"/c")] + [cache.get("other.example", b"/")],
            [None, None, None, "other"],
        )

    def test_invalidation_only_for_page_changes(self):
        """invalidate with change kinds drops the hostname's pages only when the page changed."""
        cache = PageCache()
        cache.put(HOST, b"/", "page", cache.token(HOST))
        cache.invalidate(HOST, frozenset({"state"}))
        self.assertEqual(cache.get(HOST, b"/"), "page")
        cache.invalidate(HOST, frozenset({"state", "page"}))
        self.assertIsNone(cache.get(HOST, b"/"))

    def test_forgotten_hostnames_are_not_retained(self):
        """Evicted and invalidated hostnames leave nothing behind: the cache's memory stays bounded."""
        cache = PageCache(max_entries=2)
        for i in range(50):
            host = f"host-{i}.example"
            cache.put(host, b"/", "page", cache.token(host))
        held = _strings_held_by(cache)
        self.assertEqual({s for s in held if s.startswith("host-")}, {"host-48.example", "host-49.example"})
        cache.invalidate("host-48.example")
        cache.invalidate("gone.example")
        cache.invalidate_all()
        self.assertEqual({s for s in _strings_held_by(cache) if s.endswith(".example")}, set())

    def test_constructor_takes_only_the_size(self):
        """PageCache() holds 10000 entries by default; counters and contents cannot be passed in or shown."""
        cache = PageCache()
        self.assertEqual(cache.max_entries, 10000)
        self.assertEqual(repr(cache), "PageCache(max_entries=10000, hits=0, misses=0)")
        for name in ("hits", "misses", "entries", "paths", "epochs", "epoch"):
            with self.assertRaises(TypeError, msg=name):
                PageCache(**{name: 1})
        self.assertNotEqual(PageCache(), PageCache())
        self.assertEqual(len({cache, PageCache(), cache}), 2)


def _strings_held_by(obj) -> set[str]:
    """Every str reachable from ``obj`` through containers (the object's own attributes included)."""
    found: set[str] = set()
    seen: set[int] = set()
    todo = list(gc.get_referents(obj))
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
    return found


class _FanOut:
    """Passes each invalidation to every cache, as the daemon's wiring does."""

    def __init__(self, *caches) -> None:
        self.caches = caches

    def invalidate(self, hostname, kinds=None) -> None:
        for cache in self.caches:
            cache.invalidate(hostname, kinds)

    def invalidate_all(self) -> None:
        for cache in self.caches:
            cache.invalidate_all()


class ChangeKindsTests(WebTestCase):
    """The change feed says what changed, so a page edit keeps the TLS context and a new certificate keeps the page."""

    def setUp(self) -> None:
        from jobhost.domains import DomainService
        from jobhost.tls.sni import CertificateCache, ChangePoller

        self.clock = Clock()
        self.clock.advance(NOW.timestamp())
        self.store = MemoryStore()
        _add_domain(self.store, page=_page())
        _add_certificate(self.store)
        self.domains = DomainService(store=self.store, clock=self.clock)
        self.contexts = CertificateCache(store=self.store, clock=self.clock, max_entries=10)
        self.pages = PageCache(max_entries=10)
        self.poller = ChangePoller(
            cache=_FanOut(self.contexts, self.pages), store=self.store, clock=self.clock, interval=1.0
        )
        self.poller.startService()
        self.addCleanup(self.poller.stopService)
        self.root = HttpsRootResource(self.store, page_cache=self.pages)
        self.successResultOf(self.contexts.load(HOST))

    def page(self) -> bytes:
        return self.fetch(self.root, f"https://{HOST}/")[1]

    def test_page_edit_keeps_the_context_and_shows_the_new_page(self):
        """After a page edit reaches the caches, the hostname's SSL.Context is the same object and the page is new."""
        context = self.contexts.lookup(HOST)
        self.assertIsNotNone(context)
        self.assertIn(b"Acme Corp", self.page())
        page = _page()
        page["company"] = "Wile E. Industries"
        self.successResultOf(self.domains.set_page(HOST, page))
        self.clock.advance(1.0)
        self.assertIs(self.contexts.lookup(HOST), context)
        self.assertIn(b"Wile E. Industries", self.page())

    def test_state_change_keeps_both(self):
        """An issuing step (state only) drops neither the context nor the rendered page."""
        context = self.contexts.lookup(HOST)
        self.page()
        misses = self.pages.misses
        self.successResultOf(self.domains.start_attempt(HOST, renewing=True))
        self.clock.advance(1.0)
        self.assertIs(self.contexts.lookup(HOST), context)
        self.page()
        self.assertEqual(self.pages.misses, misses, "served from the page cache")

    def test_new_certificate_drops_the_context_but_not_the_page(self):
        """A new certificate drops the context (the next load builds another) and keeps the rendered page."""
        context = self.contexts.lookup(HOST)
        self.page()
        misses = self.pages.misses
        key_pem, chain_pem = _ca().issue(HOST)
        self.successResultOf(self.store.put_certificate(certificate_record(HOST, key_pem, chain_pem)))
        self.clock.advance(1.0)
        self.assertIsNone(self.contexts.lookup(HOST))
        self.successResultOf(self.contexts.load(HOST))
        self.assertIsNot(self.contexts.lookup(HOST), context)
        self.page()
        self.assertEqual(self.pages.misses, misses, "served from the page cache")


def _v2_page() -> dict[str, Any]:
    return {
        "version": 2,
        "company": "Acme Corp",
        "accent_color": "#0b5cad",
        "intro": "We make anvils. " * 40,
        "jobs": [
            {"id": "eng-1", "title": "Anvil Engineer", "department": "Engineering",
             "locations": [{"locality": "Berlin", "country": "DE"}], "posted": "2025-02-01",
             "valid_through": "2025-03-10"},
            {"id": "ops-2", "title": "Rocket Operator", "department": "Operations",
             "remote": {"countries": ["DE"]}, "posted": "2025-02-01"},
        ],
    }


class SearchEngineTests(WebTestCase):
    """Sitemaps, robots.txt, validators and 304s, gzip, expiry and filters of HttpsRootResource."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW.timestamp())
        self.store = FaultyStore()
        _add_domain(self.store, page=_v2_page())
        other = _v2_page()
        other["company"] = "Other Co"
        other["jobs"] = [{"id": "secret-9", "title": "Other Job"}]
        _add_domain(self.store, hostname="jobs.other.example", page=other)
        self.cache = PageCache(max_entries=100)
        self.root = HttpsRootResource(self.store, page_cache=self.cache, clock=self.clock)

    def get(self, path="/", host=HOST, headers=None):
        """GET without treq's own gzip handling (it asks for gzip and decodes): the raw response."""
        agent = RequestTraversalAgent(self.root)
        raw = Headers({k: [v.encode() for v in vs] for k, vs in (headers or {}).items()})
        d = agent.request(b"GET", f"https://{host}{path}".encode(), raw)
        agent.flush()
        response = self.successResultOf(d)
        body = treq.content(response)
        agent.flush()
        return response, self.successResultOf(body)

    def test_sitemap_lists_exactly_this_hostnames_open_openings(self):
        """sitemap.xml parses as XML and lists the list page and each open opening of this hostname only."""
        response, body = self.get("/sitemap.xml")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.header(response, "content-type"), "application/xml; charset=utf-8")
        root = ElementTree.fromstring(body)
        locs = [e.text for e in root.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
        self.assertEqual(locs, [f"https://{HOST}/", f"https://{HOST}/jobs/eng-1", f"https://{HOST}/jobs/ops-2"])
        other = ElementTree.fromstring(self.get("/sitemap.xml", host="jobs.other.example")[1])
        other_locs = [e.text for e in other.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
        self.assertEqual(other_locs, ["https://jobs.other.example/", "https://jobs.other.example/jobs/secret-9"])
        for path in ("/", "/sitemap.xml", "/robots.txt", "/jobs.json", "/jobs/eng-1"):
            self.assertNotIn(b"other.example", self.get(path)[1], path)
            self.assertNotIn(b"secret-9", self.get(path)[1], path)

    def test_robots_txt_points_at_the_sitemap(self):
        """robots.txt allows crawling and names this hostname's sitemap."""
        response, body = self.get("/robots.txt")
        self.assertEqual((response.code, body), (200, f"User-agent: *\nAllow: /\n\nSitemap: https://{HOST}/sitemap.xml\n".encode()))
        self.assertEqual(self.get("/robots.txt", host="nobody.example")[0].code, 404)

    def test_conditional_get_is_304_until_the_page_changes(self):
        """If-None-Match with the ETag gets 304 (same ETag, no body) until a page edit changes the ETag."""
        response, body = self.get("/")
        etag = self.header(response, "etag")
        self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
        self.assertEqual(self.header(response, "last-modified"), "Sat, 01 Mar 2025 00:00:00 GMT")
        self.assertEqual(self.header(response, "cache-control"), "no-cache")
        for _ in range(2):
            again, again_body = self.get("/", headers={"If-None-Match": [etag]})
            self.assertEqual((again.code, again_body), (304, b""))
            self.assertEqual(self.header(again, "etag"), etag)
        self.assertEqual(self.get("/", headers={"If-None-Match": ['"other"']})[0].code, 200)
        self.assertEqual(self.get("/", headers={"If-None-Match": [f'"x", W/{etag}']})[0].code, 304)
        page = _v2_page()
        page["company"] = "Wile E. Industries"
        _add_domain(self.store, page=page)
        self.cache.invalidate(HOST)
        changed, changed_body = self.get("/", headers={"If-None-Match": [etag]})
        self.assertEqual(changed.code, 200)
        self.assertIn(b"Wile E. Industries", changed_body)
        self.assertNotEqual(self.header(changed, "etag"), etag)

    def test_if_modified_since(self):
        """If-Modified-Since at or after Last-Modified gets 304; before it, the page; If-None-Match wins."""
        at = "Sat, 01 Mar 2025 00:00:00 GMT"
        self.assertEqual(self.get("/jobs/ops-2", headers={"If-Modified-Since": [at]})[0].code, 304)
        self.assertEqual(
            self.get("/jobs/ops-2", headers={"If-Modified-Since": ["Fri, 28 Feb 2025 23:59:59 GMT"]})[0].code, 200
        )
        self.assertEqual(self.get("/jobs/ops-2", headers={"If-Modified-Since": ["garbage"]})[0].code, 200)
        self.assertEqual(
            self.get("/jobs/ops-2", headers={"If-Modified-Since": [at], "If-None-Match": ['"nope"']})[0].code, 200
        )

    def test_gzip_is_made_once_per_render(self):
        """A client accepting gzip gets the cached gzip body (its own ETag); others the plain one; both decode alike."""
        plain, plain_body = self.get("/")
        zipped, zipped_body = self.get("/", headers={"Accept-Encoding": ["br, gzip;q=0.8"]})
        self.assertEqual(self.header(zipped, "content-encoding"), "gzip")
        self.assertEqual(self.header(zipped, "vary"), "Accept-Encoding")
        self.assertIsNone(self.header(plain, "content-encoding"))
        self.assertEqual(gzip.decompress(zipped_body), plain_body)
        self.assertEqual(self.header(zipped, "etag"), self.header(plain, "etag")[:-1] + '-gzip"')
        self.assertEqual(zipped.length, len(zipped_body))
        cached = self.cache.get(HOST, b"/")
        self.assertIs(zipped_body.__class__, bytes)
        self.assertEqual(cached.gzipped, zipped_body, "the cached gzip form is what was sent")
        self.assertEqual(self.get("/", headers={"Accept-Encoding": ["gzip;q=0"]})[1], plain_body)
        self.assertEqual(
            self.get("/", headers={"If-None-Match": [self.header(zipped, "etag")], "Accept-Encoding": ["gzip"]})[0].code,
            304,
        )

    def test_expired_opening_is_gone_everywhere_and_410(self):
        """After valid_through the opening's page answers 410 and it leaves the list, sitemap and jobs.json."""
        self.assertEqual(self.get("/jobs/eng-1")[0].code, 200)
        self.assertIn(b"/jobs/eng-1", self.get("/")[1])
        self.assertIn(b"/jobs/eng-1", self.get("/sitemap.xml")[1])
        self.clock.advance(10 * 86400)  # 2025-03-11: past 2025-03-10
        response, body = self.get("/jobs/eng-1")
        self.assertEqual(response.code, 410)
        self.assertNotIn(b"application/ld+json", body)
        for path in ("/", "/sitemap.xml", "/jobs.json"):
            self.assertNotIn(b"/jobs/eng-1", self.get(path)[1], f"{path} served stale from the cache")
        self.assertEqual(self.header(self.get("/")[0], "last-modified"), "Tue, 11 Mar 2025 00:00:00 GMT")

    def test_filters_are_served_and_cached_within_bounds(self):
        """Known filter values render; unknown ones are 404 and never cached; other parameters share one entry."""
        response, body = self.get("/?location=Remote")
        self.assertEqual(response.code, 200)
        self.assertIn(b"/jobs/ops-2", body)
        self.assertNotIn(b'href="/jobs/eng-1"', body)
        self.assertEqual(self.get("/?department=Nope")[0].code, 404)
        self.assertEqual(self.get("/?location=Remote&location=Berlin")[0].code, 404)
        for i in range(20):
            self.assertEqual(self.get(f"/?utm_source={i}")[0].code, 200)
        self.assertEqual(
            sorted(k for (h, k) in self.cache._entries if h == HOST), [b"/", b"/?location=Remote"]
        )

    def test_hostile_branding_in_the_store_never_reaches_the_html(self):
        """A stored page with a hostile colour and logo (a hand-edited store) is refused, never rendered."""
        page = _v2_page()
        page["accent_color"] = "red;}body{display:none"
        page["logo_url"] = "javascript:alert(1)"
        _add_domain(self.store, page=page)
        self.cache.invalidate(HOST)
        response, body = self.get("/")
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"display:none", body)
        self.assertNotIn(b"javascript:", body)

    def test_csp_allows_only_the_pages_own_style(self):
        """The CSP of a branded page allows exactly its <style> by hash, and no inline style otherwise."""
        response, body = self.get("/jobs/ops-2")
        (css,) = re.findall(rb"<style>(.*?)</style>", body, re.S)
        self.assertIn(b"--accent:#0b5cad", css)
        self.assertEqual(self.header(response, "content-security-policy"), content_security_policy(css.decode()).decode())
        self.assertNotIn("unsafe-inline", self.header(response, "content-security-policy"))
