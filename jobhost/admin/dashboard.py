"""
The operator's dashboard: server-rendered HTML pages on the admin listener.

This module owns the dashboard's pages, its login sessions and their CSRF
tokens, and the overview's summary of the store (recomputed at most every
:attr:`Dashboard.summary_ttl` seconds).  It changes nothing itself: every
action goes through the same service calls as the JSON API
(:class:`jobhost.admin.api.AdminResource` holds them: the
:class:`jobhost.domains.DomainService`, the issuer, preflight, the self-check),
never through HTTP calls to itself.  Errors are mapped to a status and a
message by :func:`jobhost.admin.errors.error_response`, as for the API, and
shown as a page.

Routes (every page but the login form and the static files needs a session)::

    GET  /                          overview: counts by state, expiry chart, failing, recent events
    GET  /login  POST /login        the login form: the admin token for a session cookie
    POST /logout                    end the session
    GET  /domains                   table: q (prefix), state, cursor; 50 rows a page
    POST /domains                   register a hostname (preflight first)
    GET  /domains/{hostname}        one domain; ?diagnostics=1 runs the live checks
    POST /domains/{hostname}/renew  force an attempt
    GET  /domains/{hostname}/remove POST: remove, once the hostname is typed again
    GET  /domains/{hostname}/page   POST: replace the careers page (JSON)
    GET  /check                     preflight + self-check for a name not registered
    GET  /state.json                states of ?h=... for the page's polling script
    GET  /static/{name}             dashboard.js, dashboard.css

Sessions are kept in this process's memory (the admin listener runs only in
the main process), keyed by 32 random bytes in an ``HttpOnly; SameSite=Strict``
cookie (``Secure`` when the request came over TLS) that expires after
``session_lifetime``.  Server-side rather than an HMAC-signed cookie: logging
out really ends a session, a restart or a new token ends them all, and the
cookie carries nothing derived from the token.  Each session has its own CSRF
token, required in every POST form; the login form, which has no session yet,
requires a same-origin ``Origin`` header when the browser sends one.  Pages
carry a strict Content-Security-Policy: scripts and styles only from
``/static/``, nothing inline, nothing from elsewhere.
"""

from __future__ import annotations

import hmac
import heapq
import json
import secrets
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.template import Tag, flattenString, tags

from jobhost.admin import errors as api_errors
from jobhost.admin.api import decode_cursor, encode_cursor
from jobhost.certs import renewal_time
from jobhost.errors import BrokenRecord, InvalidHostname, PageInvalid, PreflightFailed, TransitionForbidden
from jobhost.hostnames import normalise_hostname, to_unicode
from jobhost.store.records import ChangeKind, DomainRecord, DomainState
from jobhost.timeutil import now as clock_now
from jobhost.timeutil import from_iso, to_iso

#: The session cookie's name.
COOKIE = "jobhost_session"

#: Rows on one page of the domains table.
PAGE_ROWS = 50

#: Days the overview's expiry chart covers.
CHART_DAYS = 90

#: The Content-Security-Policy of every dashboard response.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

#: First segments of the paths the dashboard serves (everything else is the JSON API's).
TOP_SEGMENTS = frozenset({"", "login", "logout", "domains", "check", "state.json", "static"})

_STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}

#: last_error.code -> what an operator can do about it.
FIX_HINTS: Mapping[str, str] = {
    "points_elsewhere": "Point the hostname's A/AAAA (or CNAME) records at this service, then renew.",
    "no_records": "The hostname has no A/AAAA records: add them (or a CNAME to us), then renew.",
    "nxdomain": "The hostname does not exist in DNS: ask the customer to create it.",
    "dns_timeout": "DNS did not answer in time; it is retried. Check the customer's DNS servers.",
    "caa_forbids": "A CAA record forbids our CA: add one that names it, then renew.",
    "preflight_failed": "Run the diagnostics: DNS or CAA does not allow issuance.",
    "self_check_failed": "http://HOST/.well-known/acme-challenge/ must reach this daemon's HTTP listener.",
    "rateLimited": "The CA's rate limit: the attempt waits for it; nothing to change.",
    "ca_unreachable": "The CA could not be reached; it is retried with backoff. Check outbound HTTPS.",
    "ca_timeout": "The CA did not finish in time; it is retried with backoff.",
    "authorization_failed": "The CA could not validate the challenge: run the diagnostics (self-check).",
    "unauthorized": "The CA could not validate the challenge: run the diagnostics (self-check).",
    "connection": "The CA could not connect to the hostname on port 80: check DNS and firewalls.",
    "dns": "The CA could not resolve the hostname: check its DNS records.",
    "caa": "A CAA record forbids our CA: add one that names it, then renew.",
}

_GENERIC_HINT = "Open the domain and run the diagnostics; renew once the cause is fixed."


def fix_hint(last_error: Mapping[str, Any] | None) -> str:
    """What to do about a domain's ``last_error`` (a hint by its code, or a generic one)."""
    code = str((last_error or {}).get("code") or "")
    return FIX_HINTS.get(code, _GENERIC_HINT)


@attrs.define
class Session:
    """One logged-in browser: its CSRF token and when it expires (reactor seconds)."""

    csrf: str
    expires: float


@attrs.frozen
class Summary:
    """What the overview shows of the whole store, counted in one pass.

    Attributes:
        counts: state -> number of domain records (and ``broken``).
        expiring: one count per day from today, :data:`CHART_DAYS` of them.
        failing: ``(hostname, state, last_error)`` of failing and paused domains (the first 50).
        events: the latest history entries across domains, newest first:
            ``(at, hostname, state, reason)``.
        computed_at: reactor seconds when counted.
        duration: seconds the count took.
    """

    counts: Mapping[str, int]
    expiring: tuple[int, ...]
    failing: tuple[tuple[str, str, Mapping[str, Any] | None], ...]
    events: tuple[tuple[datetime, str, str, str | None], ...]
    computed_at: float
    duration: float = 0.0


#: Batches of certificates read for one page sorted by expiry before it is shown as it is.
_EXPIRY_BATCHES = 10


def _encode_expiry_cursor(not_after: datetime, hostname: str) -> str:
    return encode_cursor(f"{to_iso(not_after)}|{hostname}")


def _decode_expiry_cursor(cursor: str) -> tuple[datetime, str]:
    import base64

    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        when, hostname = text.split("|", 1)
        return from_iso(when), normalise_hostname(hostname)
    except (ValueError, UnicodeError, InvalidHostname):
        raise _Refused(400, "cursor is not one this page gave") from None


class _Redirect(Exception):
    def __init__(self, location: str, cookie: str | None = None) -> None:
        super().__init__(location)
        self.location = location
        self.cookie = cookie


class _Refused(Exception):
    """A request refused before doing anything (no session, bad CSRF token, wrong token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _arg(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(400, f"{name} is not UTF-8 text") from None


def _day_label(day: datetime) -> str:
    return day.strftime("%Y-%m-%d")


def expiry_chart(expiring: tuple[int, ...], start: datetime) -> Tag:
    """An SVG bar chart: certificates expiring per day over the next len(expiring) days.

    Args:
        expiring: one count per day, the first being ``start``'s day.
        start: the first day (its date is shown).
    """
    width, height, pad = 720, 160, 24
    bar = (width - 2 * pad) / max(len(expiring), 1)
    top = max(max(expiring, default=0), 1)
    children: list[Tag] = [
        Tag("line", attributes={"x1": str(pad), "y1": str(height - pad), "x2": str(width - pad),
                                "y2": str(height - pad), "class": "axis"}),
        Tag("text", attributes={"x": str(pad), "y": str(height - 6), "class": "label"})(_day_label(start)),
        Tag("text", attributes={"x": str(width - pad), "y": str(height - 6), "class": "label end"})(
            _day_label(start + timedelta(days=len(expiring) - 1))
        ),
        Tag("text", attributes={"x": str(pad), "y": "14", "class": "label"})(f"max {top} a day"),
    ]
    for i, count in enumerate(expiring):
        h = (height - 2 * pad) * count / top
        day = _day_label(start + timedelta(days=i))
        children.append(
            Tag("rect", attributes={
                "x": f"{pad + i * bar:.1f}", "y": f"{height - pad - h:.1f}", "width": f"{max(bar - 1, 1):.1f}",
                "height": f"{h:.1f}", "class": "bar", "data-day": day, "data-count": str(count),
            })(Tag("title")(f"{day}: {count} expiring"))
        )
    return Tag("svg", attributes={
        "xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {width} {height}", "class": "chart",
        "role": "img", "aria-label": f"certificates expiring per day over the next {len(expiring)} days",
    })(*children)


@attrs.define(eq=False)
class Dashboard:
    """Renders the dashboard for :class:`jobhost.admin.api.AdminResource` (see the module docstring).

    Attributes:
        api: The admin API's resource: its store, services, token and clock are used.
        session_lifetime: Seconds a session lasts after login.
        summary_ttl: Seconds the overview's summary is at least reused before the store is
            counted again; a count that took longer is reused ten times as long as it took, so
            a small store is always current and a large one is not recounted on every view.
        max_sessions: Sessions kept at once (the oldest go first).
    """

    log = Logger()

    api: Any
    session_lifetime: float = 8 * 3600.0
    summary_ttl: float = 2.0
    max_sessions: int = 1000
    _sessions: dict[str, Session] = attrs.field(factory=dict, init=False, repr=False)
    _summary: Summary | None = attrs.field(default=None, init=False, repr=False)
    _summary_waiters: list[Deferred] | None = attrs.field(default=None, init=False, repr=False)

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def handles(postpath: list[bytes]) -> bool:
        """True when the path is one of the dashboard's (the JSON API keeps the rest)."""
        first = postpath[0].decode("utf-8", "replace") if postpath else ""
        return first in TOP_SEGMENTS

    def render(self, request: Request) -> Any:
        """Answer asynchronously with a page, a redirect, or an error page."""
        d = Deferred.fromCoroutine(self._respond(request))
        d.addErrback(lambda f: self.log.failure("Writing a dashboard page failed", f))
        return NOT_DONE_YET

    def _now(self) -> float:
        return self.api.clock.seconds()

    async def _respond(self, request: Request) -> None:
        finished = {"lost": False}
        request.notifyFinish().addErrback(lambda _: finished.update(lost=True))
        request.setHeader(b"Content-Security-Policy", CSP.encode("ascii"))
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"X-Frame-Options", b"DENY")
        # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on a form post,
        # and the login form checks Origin.
        request.setHeader(b"Referrer-Policy", b"same-origin")
        request.setHeader(b"Cache-Control", b"no-store")
        method = request.method.decode("ascii", "replace")
        try:
            status, content_type, body = await self._route(request, method)
        except _Redirect as r:
            if r.cookie is not None:
                request.setHeader(b"Set-Cookie", r.cookie.encode("ascii"))
            status, content_type, body = 303, "text/plain; charset=utf-8", b"See " + r.location.encode("ascii")
            request.setHeader(b"Location", r.location.encode("ascii"))
        except _Refused as e:
            status, content_type = e.status, "text/html; charset=utf-8"
            body = await self._html(self._page("Refused", None, tags.p(class_="error")(e.message)))
        except Exception:
            status, _, doc = api_errors.error_response(Failure(), method, request.path.decode("ascii", "replace"))
            error = doc.get("error", {}) if isinstance(doc, dict) else {}
            content_type = "text/html; charset=utf-8"
            body = await self._html(
                self._page(
                    "Error", self._session(request),
                    tags.p(class_="error")(f"{status} {error.get('code', '')}: {error.get('message', '')}"),
                    tags.p(tags.a(href="/domains")("Back to the domains")),
                )
            )
        if finished["lost"]:
            return
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        request.write(body)
        request.finish()

    async def _route(self, request: Request, method: str) -> tuple[int, str, bytes]:
        segments = [s.decode("utf-8", "replace") for s in request.postpath]
        while segments and segments[-1] == "" and len(segments) > 1:
            segments.pop()
        first = segments[0] if segments else ""
        if first == "static" and method in ("GET", "HEAD") and len(segments) == 2 and segments[1] in _STATIC:
            data = resources.files("jobhost.admin").joinpath("static", segments[1]).read_bytes()
            return 200, _STATIC[segments[1]], data
        if method == "POST":
            self._read_form(request)
        if first == "login":
            if method == "POST":
                return await self._login(request)
            return 200, "text/html; charset=utf-8", await self._html(self._login_page(None))
        session = self._session(request)
        if session is None:
            if first == "state.json":
                raise _Refused(401, "not logged in")
            raise _Redirect("/login")
        if method == "POST":
            self._check_csrf(request, session)
        if first == "" and method == "GET":
            return await self._overview(session)
        if first == "logout" and method == "POST":
            return self._logout(request)
        if first == "state.json" and method == "GET":
            return await self._states(request)
        if first == "check" and method == "GET":
            return await self._check_page(request, session)
        if first == "domains" and len(segments) == 1:
            if method == "POST":
                return await self._register(request)
            if method == "GET":
                return await self._domains(request, session)
        if first == "domains" and len(segments) in (2, 3):
            hostname = normalise_hostname(segments[1])
            action = segments[2] if len(segments) == 3 else None
            if action is None and method == "GET":
                return await self._domain(request, session, hostname)
            if action == "renew" and method == "POST":
                await self.api._renew(request, hostname)
                raise _Redirect(f"/domains/{hostname}?done=renew")
            if action == "remove" and method == "GET":
                return await self._remove_page(session, hostname)
            if action == "remove" and method == "POST":
                return await self._remove(request, session, hostname)
            if action == "page" and method == "GET":
                return await self._page_editor(session, hostname, None, None)
            if action == "page" and method == "POST":
                return await self._save_page(request, session, hostname)
        raise _Refused(404, f"no dashboard page {method} {request.path.decode('ascii', 'replace')}")

    def _read_form(self, request: Request) -> None:
        """Parse a posted form into ``request.args`` (jobhost's sites leave bodies unparsed).

        Raises:
            _Refused: 413 past the admin listener's body limit, 415 for anything but
                ``application/x-www-form-urlencoded``, 400 for a body that is not UTF-8.
        """
        limit = self.api.max_body_bytes
        content = request.content
        content.seek(0)
        raw = content.read(limit + 1)
        if getattr(request, "body_too_large", False) or len(raw) > limit:
            raise _Refused(413, f"The form is larger than {limit} bytes.")
        media = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if media != b"application/x-www-form-urlencoded":
            raise _Refused(415, "Forms must be sent as application/x-www-form-urlencoded.")
        try:
            fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise _Refused(400, "The form is not UTF-8 text.") from None
        for name, value in fields:
            request.args.setdefault(name.encode("utf-8"), []).append(value.encode("utf-8"))

    async def _html(self, tag: Tag) -> bytes:
        return b"<!DOCTYPE html>\n" + await flattenString(None, tag)

    def _page(self, title: str, session: Session | None, *body: Any) -> Tag:
        nav: list[Any] = []
        if session is not None:
            nav = [
                tags.a(href="/")("Overview"), " ",
                tags.a(href="/domains")("Domains"), " ",
                tags.a(href="/check")("Check a hostname"), " ",
                tags.form(method="post", action="/logout", class_="inline")(
                    self._csrf_field(session), tags.button(type="submit")("Log out")
                ),
            ]
        return tags.html(lang="en")(
            tags.head(
                tags.meta(charset="utf-8"),
                tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                tags.title(f"{title} · jobhost"),
                tags.link(rel="stylesheet", href="/static/dashboard.css"),
                tags.script(src="/static/dashboard.js", defer="defer"),
            ),
            tags.body(
                Tag("header")(tags.strong("jobhost"), " ", Tag("nav")(*nav)),
                Tag("main")(tags.h1(title), *body),
            ),
        )

    # -- sessions ---------------------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        key = request.getCookie(COOKIE.encode("ascii"))
        if not key:
            return None
        session = self._sessions.get(key.decode("ascii", "replace"))
        if session is None:
            return None
        if session.expires <= self._now():
            self._sessions.pop(key.decode("ascii", "replace"), None)
            return None
        return session

    @staticmethod
    def _csrf_field(session: Session) -> Tag:
        return tags.input(type="hidden", name="csrf", value=session.csrf)

    @staticmethod
    def _check_csrf(request: Request, session: Session) -> None:
        presented = (request.args.get(b"csrf") or [b""])[0]
        if not presented or not hmac.compare_digest(presented, session.csrf.encode("ascii")):
            raise _Refused(403, "The form came without its CSRF token (or an old one): reload the page and send it again.")

    @staticmethod
    def _same_origin(request: Request) -> bool:
        origin = request.getHeader(b"origin")
        if origin is None:
            return True  # not sent by this client: the token itself is the proof
        scheme = b"https" if request.isSecure() else b"http"
        host = request.getHeader(b"host") or b""
        return origin == scheme + b"://" + host

    def _cookie(self, request: Request, value: str, max_age: int) -> str:
        cookie = f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        if request.isSecure():
            cookie += "; Secure"
        return cookie

    def _login_page(self, error: str | None) -> Tag:
        return self._page(
            "Log in", None,
            tags.p(class_="error")(error) if error else "",
            tags.form(method="post", action="/login", class_="login")(
                tags.label(for_="token")("Admin token"),
                tags.input(type="password", id="token", name="token", autocomplete="current-password",
                           required="required"),
                tags.button(type="submit")("Log in"),
            ),
            tags.p(class_="hint")("The token is in the file named by [admin] token_file (var/admin.token by default)."),
        )

    async def _login(self, request: Request) -> tuple[int, str, bytes]:
        if not self._same_origin(request):
            raise _Refused(403, "The login form was posted from another site.")
        token = (request.args.get(b"token") or [b""])[0].strip()
        expected = self.api.token.encode("ascii")
        if not token or not hmac.compare_digest(token, expected):
            self.log.warn("Dashboard login refused: wrong token")
            return 401, "text/html; charset=utf-8", await self._html(self._login_page("That is not the admin token."))
        now = self._now()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
        while len(self._sessions) >= self.max_sessions:
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].expires)]
        key = secrets.token_urlsafe(32)
        self._sessions[key] = Session(csrf=secrets.token_urlsafe(32), expires=now + self.session_lifetime)
        self.log.info("Dashboard login")
        raise _Redirect("/", self._cookie(request, key, int(self.session_lifetime)))

    def _logout(self, request: Request) -> tuple[int, str, bytes]:
        key = request.getCookie(COOKIE.encode("ascii"))
        if key:
            self._sessions.pop(key.decode("ascii", "replace"), None)
        raise _Redirect("/login", self._cookie(request, "", 0))

    # -- overview ---------------------------------------------------------------------------

    async def summary(self) -> Summary:
        """The overview's summary: reused for ``summary_ttl`` seconds, one count at a time.

        Counting reads every domain and certificate record page by page (each page
        off the reactor thread, as every store call is).
        """
        now = self._now()
        if self._summary is not None:
            ttl = max(self.summary_ttl, 10 * self._summary.duration)
            if now - self._summary.computed_at < ttl:
                return self._summary
        waiter: Deferred = Deferred()
        if self._summary_waiters is not None:
            # One count at a time: every page view that arrives meanwhile waits for it.
            self._summary_waiters.append(waiter)
        else:
            self._summary_waiters = [waiter]
            Deferred.fromCoroutine(self._count()).addBoth(self._counted)
        return await waiter

    def _counted(self, result: Any) -> None:
        waiters, self._summary_waiters = self._summary_waiters or [], None
        if isinstance(result, Summary):
            self._summary = result
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _count(self) -> Summary:
        store = self.api.store
        started = self._now()
        counts = dict.fromkeys((*DomainState.ALL, "broken"), 0)
        failing: list[tuple[str, str, Mapping[str, Any] | None]] = []
        events: list[tuple[datetime, str, str, str | None]] = []
        after = None
        while True:
            page = await store.list_domains(after=after, limit=1000, include_broken=True)
            for record in page:
                if isinstance(record, BrokenRecord):
                    counts["broken"] += 1
                    after = record.key
                    continue
                after = record.hostname
                counts[record.state] = counts.get(record.state, 0) + 1
                if record.state in (DomainState.FAILING, DomainState.PAUSED) and len(failing) < 50:
                    failing.append((record.hostname, record.state, record.last_error))
                for change in record.history[-5:]:
                    item = (change.at, record.hostname, change.state, change.reason)
                    if len(events) < 20:
                        heapq.heappush(events, item)
                    elif item > events[0]:
                        heapq.heapreplace(events, item)
            if len(page) < 1000:
                break
        today = clock_now(self.api.clock).replace(hour=0, minute=0, second=0, microsecond=0)
        expiring = [0] * CHART_DAYS
        after = None
        while True:
            page = await store.list_certificates(after=after, limit=1000, include_broken=True)
            for record in page:
                if isinstance(record, BrokenRecord):
                    after = record.key
                    continue
                after = record.hostname
                day = (record.not_after - today).days
                if 0 <= day < CHART_DAYS:
                    expiring[day] += 1
            if len(page) < 1000:
                break
        return Summary(
            counts=counts, expiring=tuple(expiring), failing=tuple(failing),
            events=tuple(sorted(events, reverse=True)), computed_at=self._now(), duration=self._now() - started,
        )

    async def _overview(self, session: Session) -> tuple[int, str, bytes]:
        summary = await self.summary()
        today = clock_now(self.api.clock).replace(hour=0, minute=0, second=0, microsecond=0)
        counts = tags.table(class_="counts")(
            tags.tr(*[tags.th(state) for state in summary.counts]),
            tags.tr(*[
                tags.td(tags.a(href="/domains?" + urlencode({"state": state}))(str(n)) if state != "broken" else str(n),
                        **{"data-count-state": state})
                for state, n in summary.counts.items()
            ]),
        )
        failing = (
            tags.table(class_="failing")(
                tags.tr(tags.th("hostname"), tags.th("state"), tags.th("reason"), tags.th("fix")),
                *[
                    tags.tr(
                        tags.td(tags.a(href=f"/domains/{h}")(to_unicode(h))),
                        tags.td(state),
                        tags.td(str((err or {}).get("message") or "")),
                        tags.td(fix_hint(err)),
                    )
                    for h, state, err in summary.failing
                ],
            )
            if summary.failing
            else tags.p("No domain is failing.")
        )
        events = (
            tags.ul(class_="events")(*[
                tags.li(Tag("time")(to_iso(at)), " ", tags.a(href=f"/domains/{h}")(to_unicode(h)), f" → {state}",
                        f" ({reason})" if reason else "")
                for at, h, state, reason in summary.events
            ])
            if summary.events
            else tags.p("Nothing has happened yet.")
        )
        page = self._page(
            "Overview", session,
            tags.h2("Domains by state"), counts,
            tags.h2(f"Certificates expiring per day, next {CHART_DAYS} days"),
            expiry_chart(summary.expiring, today),
            tags.h2("Failing now"), failing,
            tags.h2("Recent events"), events,
            tags.p(class_="hint")(f"Counted at {to_iso(datetime.fromtimestamp(summary.computed_at).astimezone())}; "
                                  f"recounted when older than {max(self.summary_ttl, 10 * summary.duration):g} s."),
        )
        return 200, "text/html; charset=utf-8", await self._html(page)

    # -- domains ----------------------------------------------------------------------------

    async def _certificates(self, hostnames: list[str]) -> list[Any]:
        async def one(hostname: str) -> Any:
            try:
                return await self.api.store.get_certificate(hostname)
            except (KeyError, BrokenRecord):
                return None

        if not hostnames:
            return []
        return await gatherResults([Deferred.fromCoroutine(one(h)) for h in hostnames], consumeErrors=True)

    async def domains_page(
        self, q: str | None, state: str | None, cursor: str | None
    ) -> tuple[list[tuple[Any, Any]], str | None]:
        """One page of the domains table: ``([(record or BrokenRecord, certificate or None)], next cursor)``.

        Reads :data:`PAGE_ROWS` + 1 records from the store (its prefix and state filters
        and cursor do the work), and the certificates of those rows only.
        """
        after = decode_cursor(cursor) if cursor else None
        prefix = None
        if q:
            from jobhost.admin.api import _prefix

            prefix = _prefix(q)
        rows = await self.api.store.list_domains(
            state=state, after=after, limit=PAGE_ROWS + 1, include_broken=state is None, prefix=prefix
        )
        next_cursor = None
        if len(rows) > PAGE_ROWS:
            rows = rows[:PAGE_ROWS]
            last = rows[-1]
            next_cursor = encode_cursor(last.key if isinstance(last, BrokenRecord) else last.hostname)
        readable = [r.hostname for r in rows if not isinstance(r, BrokenRecord)]
        certificates = dict(zip(readable, await self._certificates(readable), strict=True))
        return [(r, None if isinstance(r, BrokenRecord) else certificates[r.hostname]) for r in rows], next_cursor

    async def domains_by_expiry(
        self, q: str | None, state: str | None, cursor: str | None
    ) -> tuple[list[tuple[Any, Any]], str | None]:
        """One page of the table sorted by certificate expiry, soonest first (hostnames with a certificate).

        Reads certificates in expiry order from the store (``list_certificates_by_expiry``,
        an index seek in the SQL stores) and keeps those whose hostname matches ``q`` and
        whose domain record is in ``state``; at most :data:`_EXPIRY_BATCHES` batches a page,
        so a rare filter shows a shorter page with a next link rather than scanning everything.
        """
        after = _decode_expiry_cursor(cursor) if cursor else None
        prefix = None
        if q:
            from jobhost.admin.api import _prefix

            prefix = _prefix(q)
        rows: list[tuple[Any, Any]] = []
        last = None
        for _ in range(_EXPIRY_BATCHES):
            batch = await self.api.store.list_certificates_by_expiry(after=after, limit=PAGE_ROWS * 4)
            wanted = [c for c in batch if prefix is None or c.hostname.startswith(prefix)]
            records = await gatherResults(
                [Deferred.fromCoroutine(self._domain_or_none(c.hostname)) for c in wanted], consumeErrors=True
            ) if wanted else []
            for certificate, record in zip(wanted, records, strict=True):
                if record is None or (state is not None and record.state != state):
                    continue
                rows.append((record, certificate))
                if len(rows) == PAGE_ROWS:
                    break
            if len(rows) == PAGE_ROWS:
                last = rows[-1][1]
                break
            if len(batch) < PAGE_ROWS * 4:
                return rows, None  # the end of the table
            last = batch[-1]
            after = (last.not_after, last.hostname)
        return rows, _encode_expiry_cursor(last.not_after, last.hostname) if last is not None else None

    async def _domain_or_none(self, hostname: str) -> DomainRecord | None:
        try:
            return await self.api.store.get_domain(hostname)
        except (KeyError, BrokenRecord):
            return None

    async def _domains(self, request: Request, session: Session) -> tuple[int, str, bytes]:
        q = _arg(request, "q") or None
        state = _arg(request, "state") or None
        if state is not None and state not in DomainState.ALL:
            raise _Refused(400, f"state must be one of {', '.join(DomainState.ALL)}")
        sort = _arg(request, "sort") or "hostname"
        if sort not in ("hostname", "expiry"):
            raise _Refused(400, "sort must be hostname or expiry")
        if sort == "expiry":
            rows, next_cursor = await self.domains_by_expiry(q, state, _arg(request, "cursor"))
        else:
            rows, next_cursor = await self.domains_page(q, state, _arg(request, "cursor"))
        done = _arg(request, "done")
        search = tags.form(method="get", action="/domains", class_="search")(
            tags.input(type="search", name="q", value=q or "", placeholder="hostname starts with…"),
            tags.select(name="state")(
                tags.option(value="")("every state"),
                *[tags.option(value=s, **({"selected": "selected"} if s == state else {}))(s) for s in DomainState.ALL],
            ),
            tags.select(name="sort")(
                tags.option(value="hostname")("by hostname"),
                tags.option(value="expiry", **({"selected": "selected"} if sort == "expiry" else {}))(
                    "by expiry (with a certificate)"
                ),
            ),
            tags.button(type="submit")("Search"),
        )
        table_rows = []
        for record, certificate in rows:
            if isinstance(record, BrokenRecord):
                table_rows.append(tags.tr(tags.td(record.key), tags.td("broken"), tags.td(""), tags.td(record.message)))
                continue
            h = record.hostname
            table_rows.append(
                tags.tr(**{"data-hostname": h})(
                    tags.td(tags.a(href=f"/domains/{h}")(to_unicode(h))),
                    tags.td(class_="state", **{"data-state": record.state})(record.state),
                    tags.td(class_="not-after")(to_iso(certificate.not_after) if certificate else "—"),
                    tags.td(str((record.last_error or {}).get("message") or "")),
                )
            )
        paging = ""
        if next_cursor is not None:
            query = {k: v for k, v in (("q", q), ("state", state), ("sort", sort if sort != "hostname" else None),
                                        ("cursor", next_cursor)) if v}
            paging = tags.p(tags.a(href="/domains?" + urlencode(query), rel="next")("Next page →"))
        register = tags.form(method="post", action="/domains", class_="register")(
            self._csrf_field(session),
            tags.input(type="text", name="hostname", placeholder="jobs.example.com", required="required"),
            tags.button(type="submit")("Register"),
        )
        page = self._page(
            "Domains", session,
            tags.p(class_="done")(f"{done} removed." if done else "") if done else "",
            search,
            tags.table(class_="domains", **{"data-poll": "states"})(
                tags.tr(tags.th("hostname"), tags.th("state"), tags.th("certificate expires"), tags.th("last error")),
                *table_rows,
            ) if table_rows else tags.p("No domain matches."),
            paging,
            tags.h2("Register a hostname"), register,
        )
        return 200, "text/html; charset=utf-8", await self._html(page)

    async def _states(self, request: Request) -> tuple[int, str, bytes]:
        hostnames = [v.decode("utf-8", "replace") for v in request.args.get(b"h", [])][:PAGE_ROWS]
        out: dict[str, Any] = {}
        for hostname in hostnames:
            try:
                hostname = normalise_hostname(hostname)
                record = await self.api.store.get_domain(hostname)
            except (KeyError, InvalidHostname, BrokenRecord):
                continue
            out[hostname] = {"state": record.state, "version": record.version}
        certificates = await self._certificates(list(out))
        for hostname, certificate in zip(list(out), certificates, strict=True):
            out[hostname]["not_after"] = to_iso(certificate.not_after) if certificate else None
        return 200, "application/json", json.dumps(out).encode("ascii")

    async def _register(self, request: Request) -> tuple[int, str, bytes]:
        hostname = normalise_hostname(_arg(request, "hostname") or "")
        if self.api.preflight is not None:
            result = await self.api.preflight.check(hostname)
            if not result.ok:
                raise PreflightFailed(hostname=hostname, reasons=tuple(result.reasons), retryable=result.retryable)
        record, created = await self.api.domains.register(hostname, None, "registered from the dashboard")
        if created:
            self.log.info("Registered {hostname}", hostname=hostname)
            self.api._kick(hostname)
        raise _Redirect(f"/domains/{hostname}")

    # -- one domain -------------------------------------------------------------------------

    async def _domain(self, request: Request, session: Session, hostname: str) -> tuple[int, str, bytes]:
        record: DomainRecord = await self.api._get_domain(hostname)
        certificate = (await self._certificates([hostname]))[0]
        done = _arg(request, "done")
        sections: list[Any] = []
        if done:
            sections.append(tags.p(class_="done")({"renew": "Renewal requested.", "page": "Page saved."}.get(done, "")))
        sections.append(
            tags.dl(class_="facts", **{"data-hostname": hostname})(
                tags.dt("state"), tags.dd(class_="state", **{"data-state": record.state})(record.state),
                tags.dt("hostname"), tags.dd(f"{to_unicode(hostname)} ({hostname})"),
                tags.dt("registered"), tags.dd(to_iso(record.created_at)),
                tags.dt("attempts"), tags.dd(str(record.attempts)),
                tags.dt("next attempt"), tags.dd(to_iso(record.next_attempt) or "—"),
            )
        )
        sections.append(
            tags.div(class_="actions")(
                tags.form(method="post", action=f"/domains/{hostname}/renew", class_="inline")(
                    self._csrf_field(session), tags.button(type="submit", id="renew")("Renew now")
                ),
                tags.a(href=f"/domains/{hostname}/page", class_="button", id="edit-page")("Edit page"),
                tags.a(href=f"/domains/{hostname}?diagnostics=1", class_="button", id="diagnose")("Run diagnostics"),
                tags.a(href=f"/domains/{hostname}/remove", class_="button danger", id="remove")("Remove…"),
            )
        )
        sections.append(tags.h2("Certificate"))
        if certificate is None:
            sections.append(tags.p("No certificate yet."))
        else:
            ari = certificate.ari
            sections.append(
                tags.dl(class_="facts certificate")(
                    tags.dt("issuer"), tags.dd(certificate.issuer or ""),
                    tags.dt("names"), tags.dd(", ".join(certificate.names)),
                    tags.dt("serial"), tags.dd(str(certificate.serial)),
                    tags.dt("not before"), tags.dd(to_iso(certificate.not_before)),
                    tags.dt("not after"), tags.dd(class_="not-after")(to_iso(certificate.not_after)),
                    tags.dt("ARI window"), tags.dd(f"{to_iso(ari.start)} – {to_iso(ari.end)}" if ari else "none given"),
                    tags.dt("next renewal"), tags.dd(to_iso(renewal_time(certificate))),
                )
            )
        sections.append(tags.h2("Last error"))
        if record.last_error:
            error = dict(record.last_error)
            problem = error.get("problem")
            sections.append(
                tags.div(class_="last-error")(
                    tags.p(class_="error")(f"{error.get('code', '')}: {error.get('message', '')}"),
                    tags.pre(json.dumps(problem, indent=2)) if problem else "",
                    tags.p(class_="hint")(fix_hint(error)),
                )
            )
        else:
            sections.append(tags.p("None."))
        if _arg(request, "diagnostics"):
            response = await self.api._diagnostics(request, hostname)
            sections.extend([tags.h2("Diagnostics"), self._checks(response.body["checks"])])
        sections.append(tags.h2("History"))
        sections.append(
            tags.table(class_="history")(
                tags.tr(tags.th("at"), tags.th("state"), tags.th("reason")),
                *[tags.tr(tags.td(to_iso(c.at)), tags.td(c.state), tags.td(c.reason or "")) for c in reversed(record.history)],
            )
        )
        sections.append(tags.h2("Careers page"))
        sections.append(self._preview(record.page))
        page = self._page(to_unicode(hostname), session, *sections)
        return 200, "text/html; charset=utf-8", await self._html(page)

    @staticmethod
    def _checks(checks: list[Mapping[str, Any]]) -> Tag:
        rows = []
        for check in checks:
            passed = check.get("passed")
            verdict = "n/a" if passed is None else ("pass" if passed else "FAIL")
            rows.append(
                tags.tr(class_=f"check {verdict.lower().replace('/', '')}")(
                    tags.td(str(check.get("name"))), tags.td(verdict), tags.td(str(check.get("message") or "")),
                    tags.td(str(check.get("hint") or "")),
                )
            )
        return tags.table(class_="diagnostics")(
            tags.tr(tags.th("check"), tags.th("result"), tags.th("what we saw"), tags.th("what to do")), *rows
        )

    @staticmethod
    def _preview(page: Mapping[str, Any] | None) -> Tag:
        if not page:
            return tags.p("No careers page: visitors see the default page.")
        jobs = page.get("jobs") or []
        return tags.div(class_="preview")(
            tags.h3(str(page.get("company", ""))),
            *[tags.p(part) for part in str(page.get("intro") or "").split("\n") if part],
            tags.ul(*[
                tags.li(str(job.get("title", "")), f" — {job['location']}" if job.get("location") else "")
                for job in jobs
            ]) if jobs else tags.p("No openings."),
        )

    async def _remove_page(self, session: Session, hostname: str) -> tuple[int, str, bytes]:
        await self.api._get_domain(hostname)
        page = self._page(
            f"Remove {to_unicode(hostname)}?", session,
            tags.p("Removing stops serving and renewing this hostname, and deletes its certificate."),
            tags.form(method="post", action=f"/domains/{hostname}/remove")(
                self._csrf_field(session),
                tags.label(for_="confirm")(f"Type {hostname} to confirm"),
                tags.input(type="text", id="confirm", name="confirm", required="required", autocomplete="off"),
                tags.label(tags.input(type="checkbox", name="revoke", value="true"), " also revoke the certificate"),
                tags.button(type="submit", class_="danger", id="confirm-remove")("Remove"),
            ),
        )
        return 200, "text/html; charset=utf-8", await self._html(page)

    async def _remove(self, request: Request, session: Session, hostname: str) -> tuple[int, str, bytes]:
        if (_arg(request, "confirm") or "").strip().lower() != hostname:
            raise _Refused(422, f"Type {hostname} exactly to confirm the removal; nothing was removed.")
        await self.api._remove_domain(request, hostname)  # reads ?revoke= from the form
        raise _Redirect("/domains?" + urlencode({"done": hostname}))

    async def _page_editor(
        self, session: Session, hostname: str, text: str | None, error: str | None
    ) -> tuple[int, str, bytes]:
        record = await self.api._get_domain(hostname)
        if text is None:
            text = json.dumps(record.page or {"company": "", "jobs": []}, indent=2, ensure_ascii=False)
        page = self._page(
            f"Careers page of {to_unicode(hostname)}", session,
            tags.p(class_="error")(error) if error else "",
            tags.form(method="post", action=f"/domains/{hostname}/page")(
                self._csrf_field(session),
                tags.textarea(name="page", rows="20", cols="80", id="page-json")(text),
                tags.button(type="submit", id="save-page")("Save"),
            ),
        )
        return (422 if error else 200), "text/html; charset=utf-8", await self._html(page)

    async def _save_page(self, request: Request, session: Session, hostname: str) -> tuple[int, str, bytes]:
        text = _arg(request, "page") or ""
        try:
            page = self.api._validate_page(json.loads(text))
        except ValueError as e:
            return await self._page_editor(session, hostname, text, f"Not JSON: {e}")
        except PageInvalid as e:
            return await self._page_editor(session, hostname, text, f"Not a careers page: {e}")
        try:
            await self.api.domains.set_page(hostname, page)
        except TransitionForbidden:
            raise _Refused(409, f"{hostname} was removed; register it again first") from None
        self.api._invalidate(hostname, frozenset((ChangeKind.PAGE,)))
        raise _Redirect(f"/domains/{hostname}?done=page")

    # -- check a hostname -------------------------------------------------------------------

    async def _check_page(self, request: Request, session: Session) -> tuple[int, str, bytes]:
        raw = (_arg(request, "hostname") or "").strip()
        body: list[Any] = [
            tags.form(method="get", action="/check", class_="search")(
                tags.input(type="text", name="hostname", value=raw, placeholder="jobs.example.com", required="required"),
                tags.button(type="submit")("Check"),
            ),
        ]
        if raw:
            hostname = normalise_hostname(raw)
            checks = await self.api.hostname_checks(hostname)
            ok = all(c["passed"] is not False for c in checks)
            body.append(tags.p(class_="done" if ok else "error", id="verdict")(
                f"{hostname} can be registered." if ok else f"{hostname} cannot get a certificate yet: see what to do below."
            ))
            body.append(self._checks(checks))
        return 200, "text/html; charset=utf-8", await self._html(self._page("Check a hostname", session, *body))


__all__ = ["CSP", "COOKIE", "Dashboard", "FIX_HINTS", "PAGE_ROWS", "Session", "Summary", "expiry_chart", "fix_hint"]
