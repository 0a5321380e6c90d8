"""
The dashboard's pages, sessions and CSRF checks, over the real AdminResource with StubTreq.

The browser tests (tests/integration/test_dashboard_browser.py) drive the same pages in
headless Chromium against the live daemon; these check each rule on its own, fast.
"""

from __future__ import annotations

import re
from datetime import timedelta
from http.cookies import SimpleCookie

import attrs
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from admin_helpers import T0, TOKEN, ApiClient, FakePreflight, make_domain
from store_contract import make_certificate

from jobhost.admin.dashboard import COOKIE, PAGE_ROWS, Dashboard, fix_hint
from jobhost.store.records import DomainState

BASE = "http://admin.test"


class Browser:
    """One client of the dashboard: keeps its session cookie, reads pages as text."""

    def __init__(self, case: SynchronousTestCase, resource) -> None:
        self.case = case
        self.stub = StubTreq(resource)
        # As the admin listener's site (jobhost.web.site.make_site): bodies are not parsed into args.
        self.stub._agent._serverFactory.parsePOSTFormSubmission = False
        self.cookie: str | None = None

    def request(self, method: str, path: str, data: dict | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.cookie is not None:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        d = self.stub.request(method, BASE + path, data=data, headers=headers, allow_redirects=False)
        self.stub.flush()
        response = self.case.successResultOf(d)
        body = self.case.successResultOf(response.text("utf-8"))
        return response, body

    def login(self, token: str = TOKEN):
        response, body = self.request("POST", "/login", {"token": token})
        for header in response.headers.getRawHeaders("set-cookie", []):
            cookie = SimpleCookie(header)
            if COOKIE in cookie:
                self.cookie = cookie[COOKIE].value
        return response, body

    def csrf(self, path: str = "/domains") -> str:
        _, body = self.request("GET", path)
        match = re.search(r'name="csrf" value="([^"]+)"', body) or re.search(r'value="([^"]+)" name="csrf"', body)
        assert match, body
        return match.group(1)


class DashboardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.api = ApiClient.create()
        self.dashboard = Dashboard(api=self.api.resource, session_lifetime=600)
        self.api.resource.dashboard = self.dashboard
        self.store = self.api.store
        self.browser = Browser(self, self.api.resource)

    def put(self, hostname: str, state: str = DomainState.ACTIVE, **changes) -> None:
        self.successResultOf(self.store.put_domain(make_domain(hostname, state, **changes)))

    # -- login and sessions -------------------------------------------------------------------

    def test_wrong_token_is_refused_without_a_session(self) -> None:
        """A wrong token answers 401 with the form again and sets no cookie."""
        response, body = self.browser.login("not-the-token-at-all")
        self.assertEqual(response.code, 401)
        self.assertIn("not the admin token", body)
        self.assertIsNone(response.headers.getRawHeaders("set-cookie"))
        self.assertEqual(self.dashboard._sessions, {})

    def test_login_sets_a_strict_httponly_expiring_cookie(self) -> None:
        """The right token gives a session cookie: HttpOnly, SameSite=Strict, Max-Age, not Secure over HTTP."""
        response, _ = self.browser.login()
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/"])
        [header] = response.headers.getRawHeaders("set-cookie")
        parts = [p.strip() for p in header.split(";")]
        self.assertIn("HttpOnly", parts)
        self.assertIn("SameSite=Strict", parts)
        self.assertIn("Max-Age=600", parts)
        self.assertIn("Path=/", parts)
        self.assertNotIn("Secure", parts)
        self.assertNotIn(TOKEN, header)
        response, body = self.browser.request("GET", "/")
        self.assertEqual(response.code, 200)
        self.assertIn("Domains by state", body)

    def test_pages_need_a_session(self) -> None:
        """Without a session every page redirects to the login form, and state.json answers 401."""
        for path in ("/", "/domains", "/domains/a.example.com", "/check"):
            response, _ = self.browser.request("GET", path)
            self.assertEqual((path, response.code, response.headers.getRawHeaders("location")), (path, 303, ["/login"]))
        response, _ = self.browser.request("GET", "/state.json?h=a.example.com")
        self.assertEqual(response.code, 401)
        self.browser.cookie = "made-up-session"
        response, _ = self.browser.request("GET", "/domains")
        self.assertEqual(response.code, 303)

    def test_session_expires(self) -> None:
        """A session past its lifetime is no session."""
        self.browser.login()
        self.api.clock.advance(599)
        self.assertEqual(self.browser.request("GET", "/domains")[0].code, 200)
        self.api.clock.advance(2)
        self.assertEqual(self.browser.request("GET", "/domains")[0].code, 303)

    def test_logout_ends_the_session(self) -> None:
        """Logging out forgets the session on the server: the old cookie no longer works."""
        self.browser.login()
        old = self.browser.cookie
        response, _ = self.browser.request("POST", "/logout", {"csrf": self.browser.csrf()})
        self.assertEqual(response.code, 303)
        self.browser.cookie = old
        self.assertEqual(self.browser.request("GET", "/domains")[0].code, 303)

    def test_login_from_another_origin_is_refused(self) -> None:
        """A login form posted from another site's page is refused even with the right token."""
        response, _ = self.browser.request(
            "POST", "/login", {"token": TOKEN}, headers={"Origin": "http://evil.test"}
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(self.dashboard._sessions, {})
        response, _ = self.browser.request("POST", "/login", {"token": TOKEN}, headers={"Origin": BASE})
        self.assertEqual(response.code, 303)

    def test_form_must_be_url_encoded_and_within_the_body_limit(self) -> None:
        """A form body of another type (415) or past max_body_bytes (413) is refused before the token is read."""
        response, _ = self.browser.request(
            "POST", "/login", headers={"Content-Type": "application/json"}, data=b'{"token": "%s"}' % TOKEN.encode()
        )
        self.assertEqual(response.code, 415)
        response, _ = self.browser.request("POST", "/login", {"token": TOKEN, "pad": "x" * 5000})
        self.assertEqual(response.code, 413)
        self.assertEqual(self.dashboard._sessions, {})

    # -- CSRF and headers -----------------------------------------------------------------------

    def test_form_without_csrf_token_is_refused(self) -> None:
        """A state-changing form without (or with a wrong) CSRF token is refused and changes nothing."""
        self.put("a.example.com")
        self.browser.login()
        for data in ({}, {"csrf": "wrong"}):
            response, body = self.browser.request("POST", "/domains/a.example.com/renew", data)
            self.assertEqual(response.code, 403)
            self.assertIn("CSRF", body)
        self.assertEqual(self.api.issuer.calls, [])
        response, _ = self.browser.request("POST", "/domains/a.example.com/renew", {"csrf": self.browser.csrf()})
        self.assertEqual(response.code, 303)
        self.assertEqual(self.api.issuer.calls, [("renew_now", "a.example.com")])
        [location] = response.headers.getRawHeaders("location")
        self.assertIn("Renewal requested.", self.browser.request("GET", location)[1])
        self.assertNotIn("Renewal requested.", self.browser.request("GET", "/domains/a.example.com")[1])

    def test_every_page_has_a_strict_csp_and_no_inline_script(self) -> None:
        """Pages send a CSP without unsafe-inline and hold no inline script or style."""
        self.put("a.example.com")
        self.browser.login()
        for path in ("/", "/domains", "/domains/a.example.com", "/domains/a.example.com/remove",
                     "/domains/a.example.com/page", "/check", "/login"):
            response, body = self.browser.request("GET", path)
            self.assertEqual(response.code, 200, path)
            [csp] = response.headers.getRawHeaders("content-security-policy")
            self.assertIn("default-src 'none'", csp)
            self.assertIn("script-src 'self'", csp)
            self.assertNotIn("unsafe", csp)
            self.assertEqual(re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", body), [], path)
            self.assertNotIn(" style=", body)
            self.assertNotIn("http://", body.replace('xmlns="http://www.w3.org/2000/svg"', ""))

    def test_static_files_are_served_without_a_session(self) -> None:
        """The script and style sheet are served to anyone, with their types."""
        response, body = self.browser.request("GET", "/static/dashboard.js")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/javascript; charset=utf-8"])
        self.assertIn("/state.json", body)
        self.assertEqual(self.browser.request("GET", "/static/nothing.js")[0].code, 303)

    def test_the_json_api_keeps_its_paths(self) -> None:
        """With the dashboard attached, /api/v1 still wants the bearer token and answers JSON."""
        response, _ = self.browser.request("GET", "/api/v1/domains")
        self.assertEqual(response.code, 401)
        self.browser.login()
        response, _ = self.browser.request("GET", "/api/v1/domains")
        self.assertEqual(response.code, 401)  # a session cookie is not the bearer token
        response, body = self.browser.request("GET", "/healthz")
        self.assertEqual(response.code, 200)
        self.assertIn('"status"', body)

    # -- domains ------------------------------------------------------------------------------

    def test_domains_page_pages_with_a_cursor(self) -> None:
        """The table shows PAGE_ROWS rows, one list_domains call a page, and a next link that continues."""
        names = [f"h{i:03d}.example.com" for i in range(PAGE_ROWS * 2 + 5)]
        for name in names:
            self.put(name)
        self.browser.login()
        self.store.calls.clear()
        _, body = self.browser.request("GET", "/domains")
        self.assertEqual(self.store.calls.count("list_domains"), 1)
        shown = re.findall(r'data-hostname="([^"]+)"', body)
        self.assertEqual(shown, names[:PAGE_ROWS])
        link = re.search(r'href="(/domains\?cursor=[^"]+)" rel="next"', body).group(1)
        _, body = self.browser.request("GET", link.replace("&amp;", "&"))
        self.assertEqual(re.findall(r'data-hostname="([^"]+)"', body), names[PAGE_ROWS: 2 * PAGE_ROWS])

    def test_domains_page_filters_by_prefix_and_state(self) -> None:
        """q keeps hostnames starting with it (through the store's prefix), state keeps one state."""
        self.put("jobs.acme.com")
        self.put("jobs.beta.com", DomainState.FAILING)
        self.put("careers.acme.com")
        self.browser.login()
        _, body = self.browser.request("GET", "/domains?q=JOBS.")
        self.assertEqual(re.findall(r'data-hostname="([^"]+)"', body), ["jobs.acme.com", "jobs.beta.com"])
        _, body = self.browser.request("GET", "/domains?q=jobs&state=failing")
        self.assertEqual(re.findall(r'data-hostname="([^"]+)"', body), ["jobs.beta.com"])
        response, _ = self.browser.request("GET", "/domains?state=bogus")
        self.assertEqual(response.code, 400)

    def test_state_json_reports_states_and_expiry(self) -> None:
        """The polling endpoint answers each asked hostname's state and certificate expiry."""
        self.put("a.example.com", DomainState.PENDING)
        self.put("b.example.com")
        certificate = make_certificate("b.example.com")
        self.successResultOf(self.store.put_certificate(certificate))
        self.browser.login()
        response, body = self.browser.request("GET", "/state.json?h=zz.example.com&h=a.example.com&h=b.example.com")
        self.assertEqual(response.code, 200)
        import json

        doc = json.loads(body)
        self.assertEqual(doc["a.example.com"]["state"], "pending")
        self.assertIsNone(doc["a.example.com"]["not_after"])
        self.assertEqual(doc["b.example.com"]["state"], "active")
        self.assertTrue(doc["b.example.com"]["not_after"].startswith(str(certificate.not_after.year)))
        self.assertNotIn("zz.example.com", doc)

    def test_register_from_the_dashboard(self) -> None:
        """The register form runs preflight, stores a pending record, starts issuance and shows it."""
        self.browser.login()
        response, _ = self.browser.request("POST", "/domains", {"csrf": self.browser.csrf(), "hostname": "Jobs.Example.COM"})
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/domains/jobs.example.com"])
        record = self.successResultOf(self.store.get_domain("jobs.example.com"))
        self.assertEqual(record.state, DomainState.PENDING)
        self.assertIn(("kick", "jobs.example.com"), self.api.issuer.calls)

    def test_register_refused_by_preflight_stores_nothing(self) -> None:
        """A hostname that points elsewhere is not registered; the page says why."""
        self.api.resource.preflight = FakePreflight(passes=False)
        self.browser.login()
        response, body = self.browser.request("POST", "/domains", {"csrf": self.browser.csrf(), "hostname": "x.example.com"})
        self.assertEqual(response.code, 422)
        self.assertIn("preflight_failed", body)
        self.failureResultOf(self.store.get_domain("x.example.com"), KeyError)

    # -- one domain ---------------------------------------------------------------------------

    def test_domain_page_shows_certificate_facts_error_history_and_preview(self) -> None:
        """One domain's page has its state, certificate facts, last error with a hint, history and page."""
        page = {"company": "ACME Corp", "intro": "We build rockets.", "jobs": [{"id": "e1", "title": "Rocket Engineer"}]}
        self.put("a.example.com", DomainState.FAILING, page=page,
                 last_error={"code": "points_elsewhere", "message": "A 198.51.100.7", "problem": {"type": "urn:x"}})
        certificate = make_certificate("a.example.com")
        self.successResultOf(self.store.put_certificate(certificate))
        self.browser.login()
        _, body = self.browser.request("GET", "/domains/a.example.com")
        self.assertIn('data-state="failing"', body)
        self.assertIn(certificate.serial if isinstance(certificate.serial, str) else str(certificate.serial), body)
        self.assertIn("next renewal", body)
        self.assertIn("A 198.51.100.7", body)
        self.assertIn("urn:x", body)
        self.assertIn(fix_hint({"code": "points_elsewhere"}), body)
        self.assertIn("Rocket Engineer", body)
        self.assertIn("ACME Corp", body)
        self.assertNotIn("Diagnostics", body)
        self.assertIn("<td>failing</td><td>test</td>", body)  # the history row
        self.assertNotIn("No certificate yet.", body)
        self.put("b.example.com")
        _, body = self.browser.request("GET", "/domains/b.example.com")
        self.assertIn("No certificate yet.", body)
        self.assertIn("<h2>Last error</h2><p>None.</p>", body)
        self.assertIn('action="/domains/b.example.com/renew"', body)

    def test_diagnostics_run_on_demand(self) -> None:
        """?diagnostics=1 runs preflight for the hostname and shows each check with its fix."""
        self.put("a.example.com")
        self.api.resource.preflight = FakePreflight(passes=False)
        self.browser.login()
        _, body = self.browser.request("GET", "/domains/a.example.com?diagnostics=1")
        self.assertEqual(self.api.resource.preflight.asked, ["a.example.com"])
        self.assertIn("Diagnostics", body)
        self.assertIn("FAIL", body)
        self.assertIn("set its A/AAAA records to 203.0.113.10", body)

    def test_remove_needs_the_hostname_typed_again(self) -> None:
        """Remove with a wrong confirmation changes nothing; with the hostname it removes."""
        self.put("a.example.com")
        self.browser.login()
        csrf = self.browser.csrf("/domains/a.example.com/remove")
        response, _ = self.browser.request("POST", "/domains/a.example.com/remove", {"csrf": csrf, "confirm": "yes"})
        self.assertEqual(response.code, 422)
        self.assertEqual(self.successResultOf(self.store.get_domain("a.example.com")).state, DomainState.ACTIVE)
        self.assertEqual(self.browser.request("GET", "/domains/zz.example.com/remove")[0].code, 404)
        response, _ = self.browser.request(
            "POST", "/domains/a.example.com/remove", {"csrf": csrf, "confirm": " A.Example.com "}
        )
        self.assertEqual(response.code, 303)
        self.assertEqual(self.successResultOf(self.store.get_domain("a.example.com")).state, DomainState.REMOVED)

    def test_edit_page_validates_and_saves(self) -> None:
        """The page editor refuses what is not a careers page and saves what is."""
        self.put("a.example.com")
        self.browser.login()
        csrf = self.browser.csrf("/domains/a.example.com/page")
        response, body = self.browser.request("POST", "/domains/a.example.com/page", {"csrf": csrf, "page": "{nope"})
        self.assertEqual(response.code, 422)
        self.assertIn("Not JSON", body)
        response, body = self.browser.request("POST", "/domains/a.example.com/page", {"csrf": csrf, "page": '{"jobs": []}'})
        self.assertEqual(response.code, 422)
        self.assertIn("company", body)
        response, _ = self.browser.request(
            "POST", "/domains/a.example.com/page", {"csrf": csrf, "page": '{"company": "Beta Inc", "jobs": []}'}
        )
        self.assertEqual(response.code, 303)
        self.assertEqual(self.successResultOf(self.store.get_domain("a.example.com")).page["company"], "Beta Inc")
        self.assertIn("a.example.com", self.api.cache.invalidated)

    def test_check_an_unregistered_hostname(self) -> None:
        """The check page runs preflight for a name that is not registered and says what to change."""
        self.api.resource.preflight = FakePreflight(passes=False)
        self.browser.login()
        _, body = self.browser.request("GET", "/check?hostname=new.example.com")
        self.assertEqual(self.api.resource.preflight.asked, ["new.example.com"])
        self.assertIn("cannot get a certificate yet", body)
        self.assertIn("set its A/AAAA records", body)
        self.api.resource.preflight = FakePreflight(passes=True)
        _, body = self.browser.request("GET", "/check?hostname=new.example.com")
        self.assertIn("new.example.com can be registered", body)

    # -- overview -----------------------------------------------------------------------------

    def test_overview_counts_chart_failing_and_events(self) -> None:
        """The overview counts states, draws expiries per day, lists failing domains and recent events."""
        self.put("a.example.com")
        self.put("b.example.com")
        self.put("c.example.com", DomainState.FAILING, last_error={"code": "caa_forbids", "message": "CAA says no"})
        for hostname, days in (("a.example.com", 3), ("b.example.com", 3), ("c.example.com", 200)):
            certificate = attrs.evolve(make_certificate(hostname), not_after=T0 + timedelta(days=days, hours=1))
            self.successResultOf(self.store.put_certificate(certificate))
        self.browser.login()
        _, body = self.browser.request("GET", "/")
        self.assertIn('data-count-state="active"><a href="/domains?state=active">2</a>', body)
        self.assertIn('data-count-state="failing"><a href="/domains?state=failing">1</a>', body)
        bars = dict(re.findall(r'data-day="([^"]+)" data-count="(\d+)"', body)) or {
            d: c for c, d in re.findall(r'data-count="(\d+)" data-day="([^"]+)"', body)
        }
        self.assertEqual(len(bars), 90)
        day3 = (T0 + timedelta(days=3)).strftime("%Y-%m-%d")
        self.assertEqual(bars[day3], "2")
        self.assertEqual(sum(int(c) for c in bars.values()), 2)
        self.assertIn("CAA says no", body)
        self.assertIn(fix_hint({"code": "caa_forbids"}), body)
        self.assertIn("c.example.com</a> → failing", body)

    def test_overview_summary_is_reused_within_its_ttl(self) -> None:
        """The store is counted once per summary_ttl, however many times the overview is shown."""
        self.put("a.example.com")
        self.browser.login()
        self.store.calls.clear()
        self.browser.request("GET", "/")
        self.browser.request("GET", "/")
        self.assertEqual(self.store.calls.count("list_domains"), 1)
        self.api.clock.advance(self.dashboard.summary_ttl)
        self.browser.request("GET", "/")
        self.assertEqual(self.store.calls.count("list_domains"), 2)

    def test_a_slow_count_is_reused_ten_times_as_long(self) -> None:
        """A count that took 1 s is reused for 10 s: a large store is not recounted on every view."""
        self.put("a.example.com")
        self.browser.login()
        listed = self.store.list_domains

        def slow_list_domains(*args, **kwargs):
            self.api.clock.advance(1.0)  # the store took a second to answer
            return listed(*args, **kwargs)

        self.store.list_domains = slow_list_domains
        self.browser.request("GET", "/")
        self.store.calls.clear()
        self.api.clock.advance(9.0)
        _, body = self.browser.request("GET", "/")
        self.assertEqual(self.store.calls.count("list_certificates"), 0)
        self.assertIn("recounted when older than 10 s", body)
        self.api.clock.advance(1.0)
        self.browser.request("GET", "/")
        self.assertEqual(self.store.calls.count("list_certificates"), 1)

    def test_domains_sorted_by_expiry_page_soonest_first(self) -> None:
        """sort=expiry lists hostnames with a certificate soonest expiry first, filtered, with a working cursor."""
        names = [f"h{i:03d}.example.com" for i in range(PAGE_ROWS + 10)]
        for i, name in enumerate(names):
            self.put(name, DomainState.FAILING if i == 3 else DomainState.ACTIVE)
            certificate = make_certificate(name)
            # Expiry runs opposite to hostname order: the last hostname expires first.
            self.successResultOf(self.store.put_certificate(
                attrs.evolve(certificate, not_after=T0 + timedelta(days=200 - i))
            ))
        self.put("nocert.example.com")
        self.browser.login()
        _, body = self.browser.request("GET", "/domains?sort=expiry")
        expected = list(reversed(names))
        self.assertEqual(re.findall(r'data-hostname="([^"]+)"', body), expected[:PAGE_ROWS])
        link = re.search(r'href="(/domains\?[^"]*cursor=[^"]+)" rel="next"', body).group(1).replace("&amp;", "&")
        self.assertIn("sort=expiry", link)
        _, body = self.browser.request("GET", link)
        self.assertEqual(re.findall(r'data-hostname="([^"]+)"', body), expected[PAGE_ROWS:])
        _, body = self.browser.request("GET", "/domains?sort=expiry&state=failing&q=h00")
        self.assertEqual(re.findall(r'data-hostname="([^"]+)"', body), ["h003.example.com"])
        self.assertEqual(self.browser.request("GET", "/domains?sort=nonsense")[0].code, 400)
        self.assertEqual(self.browser.request("GET", "/domains?sort=expiry&cursor=!!")[0].code, 400)

    def test_cookie_is_secure_over_tls(self) -> None:
        """Over HTTPS the session cookie also says Secure, and the login's same-origin check uses https."""
        browser = Browser(self, self.api.resource)
        d = browser.stub.request("POST", "https://admin.test/login", data={"token": TOKEN},
                                 headers={"Origin": "https://admin.test"}, allow_redirects=False)
        browser.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 303)
        [header] = response.headers.getRawHeaders("set-cookie")
        self.assertIn("Secure", [p.strip() for p in header.split(";")])
