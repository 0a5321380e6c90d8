"""
Host routing for jobhost's public listeners, and the :class:`Site` that serves them.

* :class:`HttpRootResource` (plain HTTP): ACME HTTP-01 challenges first, for
  any ``Host``; otherwise a 301 to HTTPS for hostnames that have a
  certificate, and a plain 404 for everything else.
* :class:`HttpsRootResource` (HTTPS): each registered hostname's careers page
  (see :mod:`jobhost.web.pages`), its ``sitemap.xml`` and ``robots.txt``; a
  generic 404 for any other ``Host``.  Pages carry ``ETag`` and
  ``Last-Modified`` and answer conditional GETs with 304; their gzip form is
  made once per render and cached with it.

Every store read is asynchronous: resources return ``NOT_DONE_YET``, and a
request that is closed before the store answers cancels the read and is never
written to.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import time
from collections import OrderedDict
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Callable, ClassVar
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from jobhost.acme.http01 import ACME_CHALLENGE_PATH, ChallengeResource
from jobhost.errors import InvalidHostname, PageInvalid
from jobhost.hostnames import normalise_hostname
from jobhost.pagedoc import find_job, is_expired, job_expires_at, live_jobs, next_expiry, validate_page
from jobhost.store.interfaces import IStore
from jobhost.store.records import ChangeKind, DomainRecord, DomainState
from jobhost.web.limits import ConnectionBudget, LimitReporter, channel_protocol_factory, guarded_channel_class
from jobhost.web.pages import (
    Filters,
    filter_options,
    page_css,
    render_empty_page,
    render_gone_page,
    render_job_page,
    render_jobs_json,
    render_list_page,
    render_not_found_page,
    render_robots,
    render_sitemap,
    style_source,
)

#: The ``Server`` header of every response (no software version banner).
SERVER_HEADER = b"jobhost"

#: Pages run no scripts (JSON-LD is data, never executed), load nothing from
#: elsewhere but images over HTTPS, and may not be framed or post forms.  An HTML
#: page adds ``style-src`` with the hash of its one ``<style>`` element
#: (:func:`content_security_policy`): no other inline style applies.
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; img-src https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def content_security_policy(css: str | None = None) -> bytes:
    """The CSP of a response whose only stylesheet is the inline ``css`` (None: no style at all)."""
    if css is None:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY + b"; style-src " + style_source(css).encode("ascii")

REFERRER_POLICY = b"strict-origin-when-cross-origin"

#: ``Strict-Transport-Security`` max-age, in seconds.  Deliberately short: the
#: hostname belongs to the customer, not to us.  When a customer points it
#: elsewhere (leaves jobhost, or serves it over plain HTTP), a long max-age
#: would keep their visitors' browsers refusing plain HTTP for that long.  Five
#: minutes still upgrades links within a visit.  No ``includeSubDomains``:
#: we do not control the customer's other names.
HSTS_MAX_AGE = 300

_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json; charset=utf-8"
_PLAIN = b"text/plain; charset=utf-8"
_XML = b"application/xml; charset=utf-8"

#: Bodies shorter than this are sent as they are (gzip would save nothing worth the header).
GZIP_MIN_BYTES = 512
#: Query parameters of the list page that filter it; any other parameter is ignored.
_FILTER_PARAMS = (b"department", b"location")
_MAX_FILTER_CHARS = 200

_JOB_PATH = re.compile(rb"/jobs/([A-Za-z0-9_-]{1,64})")
_PORT = re.compile(r"[0-9]*")


@attrs.frozen
class _Response:
    code: int
    body: bytes
    content_type: bytes = _PLAIN
    headers: tuple[tuple[bytes, bytes], ...] = ()
    #: The strong validator of ``body`` (quoted), or None: no conditional GET.
    etag: bytes | None = None
    last_modified: datetime | None = None
    #: ``body`` gzipped, made once when the response is built; None when not worth it.
    gzipped: bytes | None = None
    #: When (POSIX seconds) the response goes stale (an opening on it expires); None: never.
    stale_at: float | None = None


def _representation(
    code: int,
    body: bytes,
    content_type: bytes,
    *,
    last_modified: datetime,
    stale_at: float | None,
    css: str | None = None,
) -> _Response:
    """A page response with its validators and its gzip form, computed once (then cached)."""
    etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode("ascii") + b'"'
    gzipped = gzip.compress(body, 6, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    headers: tuple[tuple[bytes, bytes], ...] = ((b"Cache-Control", b"no-cache"),)
    if css is not None:
        headers += ((b"Content-Security-Policy", content_security_policy(css)),)
    return _Response(
        code, body, content_type, headers, etag=etag, last_modified=last_modified, gzipped=gzipped,
        stale_at=stale_at,
    )


# Identical for every unknown hostname, so it reveals nothing about customers.
_NOT_FOUND = _Response(404, b"Not found\n")
_NOT_ALLOWED = _Response(405, b"Method not allowed\n", headers=((b"Allow", b"GET, HEAD"),))
_UNAVAILABLE = _Response(503, b"Service temporarily unavailable\n", headers=((b"Retry-After", b"30"),))
_INTERNAL_ERROR = _Response(500, b"Internal server error\n")


def request_hostname(request) -> str | None:
    """The normalised hostname of the request's ``Host`` header, or None.

    None when there is no ``Host`` header or more than one, when it is an IP
    address (literal or bracketed), or when it is not a hostname
    :func:`~jobhost.hostnames.normalise_hostname` accepts.  A ``:port`` suffix
    is ignored.
    """
    values = request.requestHeaders.getRawHeaders(b"host")
    if not values or len(values) != 1:
        return None
    try:
        text = values[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        return None
    name, colon, port = text.rpartition(":")
    if colon and _PORT.fullmatch(port):
        text = name
    return _normalised(text)


#: Host header -> normalised hostname (or None), for the names seen recently: normalising
#: (IDNA, label checks) costs tens of microseconds, and every request of a visitor repeats it.
_NORMALISED: dict[str, str | None] = {}
_NORMALISED_MAX = 4096


def _normalised(text: str) -> str | None:
    try:
        return _NORMALISED[text]
    except KeyError:
        pass
    try:
        result: str | None = normalise_hostname(text)
    except InvalidHostname:
        result = None
    if len(_NORMALISED) >= _NORMALISED_MAX:
        _NORMALISED.clear()  # bounded; a flood of new names only costs the normalising it costs anyway
    _NORMALISED[text] = result
    return result


def _accepts_gzip(request) -> bool:
    """True when the request's Accept-Encoding allows gzip (q above 0)."""
    for value in request.requestHeaders.getRawHeaders(b"accept-encoding", ()):
        for item in value.split(b","):
            coding, _, params = item.strip().partition(b";")
            if coding.strip().lower() not in (b"gzip", b"x-gzip"):
                continue
            q = params.strip().lower()
            if q.startswith(b"q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def _not_modified(request, response: _Response, etag: bytes) -> bool:
    """RFC 9110 section 13.1: If-None-Match (weak comparison) first, else If-Modified-Since."""
    if request.method not in (b"GET", b"HEAD") or response.code != 200:
        return False
    tags_sent = request.requestHeaders.getRawHeaders(b"if-none-match")
    if tags_sent:
        wanted = {etag, response.etag}
        for value in tags_sent:
            for tag in value.split(b","):
                tag = tag.strip()
                if tag == b"*" or tag.removeprefix(b"W/") in wanted:
                    return True
        return False
    since = request.requestHeaders.getRawHeaders(b"if-modified-since")
    if since and response.last_modified is not None:
        try:
            when = parsedate_to_datetime(since[0].decode("latin-1"))
        except (TypeError, ValueError, IndexError):
            return False
        if when.tzinfo is None:
            return False
        return response.last_modified.replace(microsecond=0) <= when
    return False


def _send(request, response: _Response, *, hsts: bool) -> None:
    """Write ``response`` with the security headers, and finish the request.

    A response with an ETag is sent gzipped when the client accepts it and a
    gzip form was made, and as a bodiless 304 when the request's validators
    match.
    """
    body = response.body
    request.setHeader(b"Content-Type", response.content_type)
    request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", REFERRER_POLICY)
    if hsts:
        request.setHeader(b"Strict-Transport-Security", b"max-age=%d" % (HSTS_MAX_AGE,))
    for name, value in response.headers:
        request.setHeader(name, value)
    code = response.code
    if response.etag is not None:
        etag = response.etag
        if response.gzipped is not None:
            request.setHeader(b"Vary", b"Accept-Encoding")
            if _accepts_gzip(request):
                body = response.gzipped
                etag = etag[:-1] + b'-gzip"'
                request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"ETag", etag)
        if response.last_modified is not None:
            request.setHeader(b"Last-Modified", format_datetime(response.last_modified, usegmt=True).encode("ascii"))
        if _not_modified(request, response, etag):
            code = 304
            body = b""
    request.setResponseCode(code)
    if code != 304:
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.write(body)
    request.finish()


def _respond_later(
    request,
    read: Deferred,
    respond: Callable[[Any], Any],
    store_failed: Callable[[Failure], _Response],
    log: Logger,
    *,
    hsts: bool,
) -> Any:
    """Answer ``request`` from the store read ``read``; return NOT_DONE_YET.

    ``respond`` maps the read's result to a :class:`_Response` (or a Deferred of
    one); ``store_failed`` maps the read's failure to one.  If the client goes
    away first the read is cancelled and nothing is written.
    """
    closed: list[Failure] = []

    def on_closed(reason: Failure) -> None:
        closed.append(reason)
        read.cancel()

    request.notifyFinish().addErrback(on_closed)

    def read_failed(failure: Failure) -> _Response | None:
        if closed and failure.check(CancelledError):
            return None
        return store_failed(failure)

    def write(response: _Response | None) -> None:
        if response is not None and not closed:
            _send(request, response, hsts=hsts)

    def bug(failure: Failure) -> None:
        log.failure("Rendering {uri} failed", failure=failure, uri=request.uri)
        if not closed and not request.finished:
            _send(request, _INTERNAL_ERROR, hsts=hsts)

    read.addCallbacks(lambda result: maybeDeferred(respond, result), read_failed)
    read.addCallback(write)
    read.addErrback(bug)
    return NOT_DONE_YET


@attrs.define(eq=False)
class PageCache:
    """Rendered careers-page responses (200s only), bounded, least recently used first out.

    Rendering and validating a page costs milliseconds; the answer only changes
    when the domain record does.  Entries are dropped per hostname by
    :meth:`invalidate`, which the store's change feed (``ChangePoller``) and the
    admin API call.  A response rendered from a record read before an
    invalidation is not kept (see :meth:`token`).

    Attributes:
        max_entries: At most this many (hostname, path) responses are kept.
        hits, misses: :meth:`get` outcomes.
    """

    max_entries: int = 10000
    hits: int = attrs.field(default=0, init=False)
    misses: int = attrs.field(default=0, init=False)
    _entries: OrderedDict = attrs.field(factory=OrderedDict, init=False, repr=False)
    _paths: dict[str, set[bytes]] = attrs.field(factory=dict, init=False, repr=False)
    _epochs: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _epoch: int = attrs.field(default=0, init=False, repr=False)

    def get(self, hostname: str, path: bytes, now: float | None = None) -> _Response | None:
        """The cached response for ``hostname`` and ``path``, or None.

        Args:
            now: The time (POSIX seconds); a response whose ``stale_at`` has come (an
                opening on it expired) is dropped and counts as a miss.  None: no check.
        """
        response = self._entries.get((hostname, path))
        stale_at = getattr(response, "stale_at", None)
        if response is not None and now is not None and stale_at is not None and now >= stale_at:
            del self._entries[(hostname, path)]
            paths = self._paths.get(hostname)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del self._paths[hostname]
            response = None
        if response is None:
            self.misses += 1
            return None
        self._entries.move_to_end((hostname, path))
        self.hits += 1
        return response

    def token(self, hostname: str) -> tuple[int, int]:
        """A token to take before reading the record a response will be rendered from."""
        return (self._epoch, self._epochs.get(hostname, 0))

    def put(self, hostname: str, path: bytes, response: _Response, token: tuple[int, int] | None) -> None:
        """Keep ``response`` unless ``hostname`` was invalidated since ``token`` was taken."""
        if token != self.token(hostname):
            return
        self._entries[(hostname, path)] = response
        self._entries.move_to_end((hostname, path))
        self._paths.setdefault(hostname, set()).add(path)
        while len(self._entries) > self.max_entries:
            (old_host, old_path), _ = self._entries.popitem(last=False)
            paths = self._paths.get(old_host)
            if paths is not None:
                paths.discard(old_path)
                if not paths:
                    del self._paths[old_host]

    def invalidate(self, hostname: str, kinds: frozenset[str] | None = None) -> None:
        """Forget every response of ``hostname`` (its page changed).

        Args:
            kinds: What changed (:class:`jobhost.store.records.ChangeKind`); nothing is
                forgotten unless it includes ``page``.  None: assume it does.
        """
        if kinds is not None and ChangeKind.PAGE not in kinds:
            return
        self._epochs[hostname] = self._epochs.get(hostname, 0) + 1
        for path in self._paths.pop(hostname, ()):
            self._entries.pop((hostname, path), None)

    def invalidate_all(self) -> None:
        """Forget everything (the change feed could not tell what changed)."""
        self._epoch += 1
        self._epochs.clear()
        self._entries.clear()
        self._paths.clear()


@attrs.define(eq=False, slots=False)
class _ByHostResource(Resource):
    """GET/HEAD only: look the request's ``Host`` up in the store, then answer from what was found.

    Subclasses say what to read (:meth:`_lookup`) and how to answer (:meth:`_answer`);
    an absent record is a 404, a store failure a logged 503.
    """

    store: IStore

    isLeaf = True
    log = Logger()
    #: Send Strict-Transport-Security (only meaningful over TLS).
    hsts: ClassVar[bool] = False
    #: What :meth:`_lookup` reads, for the log line when the store fails.
    record_kind: ClassVar[str] = "record"

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def _lookup(self, hostname: str) -> Deferred:
        raise NotImplementedError

    def _answer(self, found: Any, hostname: str, request) -> _Response | Deferred:
        raise NotImplementedError

    def _cached(self, hostname: str, request) -> _Response | None:
        """A response ready in memory for this request, or None (the default: always read)."""
        return None

    def render(self, request):
        """Answer the request asynchronously (NOT_DONE_YET)."""
        if request.method not in (b"GET", b"HEAD"):
            _send(request, _NOT_ALLOWED, hsts=self.hsts)
            return NOT_DONE_YET
        hostname = request_hostname(request)
        if hostname is None:
            _send(request, _NOT_FOUND, hsts=self.hsts)
            return NOT_DONE_YET
        cached = self._cached(hostname, request)
        if cached is not None:
            _send(request, cached, hsts=self.hsts)
            return NOT_DONE_YET
        return _respond_later(
            request,
            self._lookup(hostname),
            lambda found: self._answer(found, hostname, request),
            lambda failure: self._store_failed(failure, hostname),
            self.log,
            hsts=self.hsts,
        )

    def _store_failed(self, failure: Failure, hostname: str) -> _Response:
        if failure.check(KeyError):
            return _NOT_FOUND
        self.log.failure(
            "Could not read the {kind} of {hostname}", failure=failure, hostname=hostname, kind=self.record_kind
        )
        return _UNAVAILABLE


def _filters(request) -> Filters | None:
    """The list page's filter from the query (``department``, ``location``), or None when unusable.

    Other parameters are ignored; a parameter given twice, empty, over-long or
    not UTF-8 makes the filter unusable (the page answers 404).
    """
    values: dict[str, str | None] = {"department": None, "location": None}
    args = request.args or {}
    for name in _FILTER_PARAMS:
        given = args.get(name)
        if not given:
            continue
        if len(given) != 1 or not given[0] or len(given[0]) > _MAX_FILTER_CHARS:
            return None
        try:
            values[name.decode("ascii")] = given[0].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return Filters(**values)


def _cache_key(request) -> bytes:
    """The page cache key of a request: its path, plus the canonical filter query on ``/``.

    Parameters that do not filter are left out, so they cannot multiply cache entries;
    filters name only values the page offers (others are 404s, never cached), so the
    variants of one hostname are bounded by its departments and locations.
    """
    path = request.path
    if path != b"/" or not request.args:
        return path
    filters = _filters(request)
    if filters is None:
        return b"/?invalid"  # a 404, never stored
    return b"/" if not filters else filters.query().encode("utf-8")


@attrs.define(eq=False, slots=False)
class HttpsRootResource(_ByHostResource):
    """The HTTPS root: routes by ``Host`` to that hostname's careers page.

    Paths: ``/`` (the open openings by department, or "No open positions" when
    the hostname has no page document; ``?department=`` and ``?location=``
    filter it, values as the page's filter links give them, 404 for others),
    ``/jobs/{id}`` (one opening; 410 Gone once its ``valid_through`` has
    passed), ``/jobs.json`` (the open openings as JSON), ``/sitemap.xml`` and
    ``/robots.txt`` (this hostname's URLs only).  Any other path of a known
    hostname gets that hostname's "page not found" (404).  Only GET and HEAD
    (405 otherwise).  A hostname with no domain record, or one in state
    ``removed``, gets a plain 404 whose body is the same for every such name.
    A store failure gives 503.  Every response carries
    ``Strict-Transport-Security`` (see :data:`HSTS_MAX_AGE`): this resource is
    only ever served over TLS, and browsers ignore the header otherwise.
    Responses of a known hostname carry ``ETag``, ``Last-Modified`` (the
    record's last change, or the last expiry of an opening after it) and
    ``Cache-Control: no-cache``, and are sent gzipped to clients that accept it.

    Attributes:
        store: The :class:`~jobhost.store.interfaces.IStore` to read domain records from.
        page_cache: Rendered responses, or None to render every request.
        clock: Tells the time, for expired openings; None: the system clock.
    """

    page_cache: PageCache | None = None
    clock: IReactorTime | None = None

    hsts = True
    record_kind = "domain record"

    def _seconds(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    def _cached(self, hostname: str, request) -> _Response | None:
        if self.page_cache is None:
            return None
        return self.page_cache.get(hostname, _cache_key(request), self._seconds())

    def _lookup(self, hostname: str) -> Deferred:
        # Taken before the read: a change that lands while the page renders voids the result.
        token = self.page_cache.token(hostname) if self.page_cache is not None else None
        return self.store.get_domain(hostname).addCallback(lambda record: (record, token))

    def _answer(self, found: tuple[DomainRecord, Any], hostname: str, request) -> _Response | Deferred:
        record, token = found
        key = _cache_key(request)
        response = maybeDeferred(self._page, record, request.path, _filters(request) if key != request.path else Filters())
        if self.page_cache is not None:

            def remember(response: _Response) -> _Response:
                if response.code == 200:
                    self.page_cache.put(hostname, key, response, token)
                return response

            response.addCallback(remember)
        return response

    def _page(self, record: DomainRecord, path: bytes, filters: Filters | None) -> _Response | Deferred:
        if record.state == DomainState.REMOVED:
            return _NOT_FOUND
        hostname = record.hostname
        page = None
        if record.page is not None:
            try:
                page = validate_page(record.page)
            except PageInvalid as e:
                # The admin API validates before storing, so this is a bug or a
                # hand-edited store; say so rather than show a misleading page.
                self.log.error(
                    "The stored careers page of {hostname} is invalid: {problems}",
                    hostname=hostname,
                    problems=e.describe(),
                )
                return _INTERNAL_ERROR
        now = datetime.fromtimestamp(self._seconds(), timezone.utc)
        jobs = page["jobs"] if page is not None else []
        expiry = next_expiry(jobs, now)
        stale_at = expiry.timestamp() if expiry is not None else None
        # The page changed when the record did, or when an opening on it expired since.
        passed = [t for t in (job_expires_at(job) for job in jobs) if t is not None and t <= now]
        last_modified = max([record.updated_at, *passed])
        css = page_css(page)

        def made(code: int, content_type: bytes = _HTML, style: str | None = css) -> Callable[[bytes], _Response]:
            return lambda body: _representation(
                code, body, content_type, last_modified=last_modified, stale_at=stale_at, css=style
            )

        if path == b"/":
            if page is None:
                return render_empty_page(hostname).addCallback(made(200))
            if filters is None or not _offered(filters, live_jobs(page, now)):
                return render_not_found_page(hostname, page).addCallback(made(404))
            return render_list_page(hostname, page, now=now, filters=filters).addCallback(made(200))
        if path == b"/jobs.json":
            return made(200, _JSON, None)(render_jobs_json(hostname, page, now))
        if path == b"/sitemap.xml":
            lastmod = last_modified.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            return made(200, _XML, None)(render_sitemap(hostname, page, now, lastmod))
        if path == b"/robots.txt":
            return made(200, _PLAIN, None)(render_robots(hostname))
        match = _JOB_PATH.fullmatch(path)
        if match is not None and page is not None:
            job = find_job(page, match.group(1).decode("ascii"))
            if job is not None:
                if is_expired(job, now):
                    return render_gone_page(hostname, page, job).addCallback(made(410))
                posted = record.created_at.date().isoformat()
                return render_job_page(hostname, page, job, default_posted=posted).addCallback(made(200))
        return render_not_found_page(hostname, page).addCallback(made(404))


def _offered(filters: Filters, jobs: list) -> bool:
    """True when every value of ``filters`` is one the page's open openings offer."""
    departments, places = filter_options(jobs)
    return (filters.department is None or filters.department in departments) and (
        filters.location is None or filters.location in places
    )


@attrs.define(eq=False, slots=False)
class _HttpsRedirectResource(_ByHostResource):
    """Plain-HTTP fallback: 301 to HTTPS for hostnames with a certificate, else 404."""

    https_port: int | None = None

    record_kind = "certificate"

    def _lookup(self, hostname: str) -> Deferred:
        return self.store.get_certificate(hostname)

    def _answer(self, certificate: Any, hostname: str, request) -> _Response:
        return self._redirect(hostname, request.uri)

    def _redirect(self, hostname: str, uri: bytes) -> _Response:
        target = uri
        if not target.startswith(b"/"):
            # absolute-form request target (RFC 9112 section 3.2.2): keep its path and query.
            # Anything else ("@evil.example/", ".evil.example") is no path: appended to the
            # authority it would name another host, so redirect to the root instead.
            parts = urlsplit(target)
            path = parts.path if parts.path.startswith(b"/") else b"/"
            target = path + (b"?" + parts.query if parts.query else b"")
        authority = hostname.encode("ascii")
        if self.https_port not in (None, 443):
            authority += b":%d" % (self.https_port,)
        location = b"https://" + authority + target
        return _Response(301, b"Moved to " + location + b"\n", headers=((b"Location", location),))


@attrs.define(eq=False, slots=False)
class HttpRootResource(Resource):
    """The plain-HTTP root: ACME challenges, then redirects to HTTPS.

    Requests under :data:`~jobhost.acme.http01.ACME_CHALLENGE_PATH` go to a
    :class:`~jobhost.acme.http01.ChallengeResource` whatever their ``Host``.
    Any other request whose ``Host`` (port stripped, normalised) has a
    certificate in the store gets a 301 to
    ``https://{hostname}[:{https_port}]{path}?{query}``, path and query kept
    exactly as sent (the port is left out when it is None or 443).  Hostnames
    without a certificate, and invalid ``Host`` headers, get a plain 404.

    Attributes:
        store: The :class:`~jobhost.store.interfaces.IStore` holding challenges and certificates.
        https_port: The port the HTTPS listener is reachable on, for redirects.
    """

    store: IStore
    https_port: int | None = None

    log = Logger()

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)
        self._challenges = ChallengeResource(self.store)
        self._redirect = _HttpsRedirectResource(self.store, self.https_port)

    def getChildWithDefault(self, path, request):
        """Route ``/.well-known/acme-challenge/...`` to the challenges, the rest to the redirect."""
        if (
            request.path.startswith(ACME_CHALLENGE_PATH)
            and path == b".well-known"
            and request.postpath[:1] == [b"acme-challenge"]
        ):
            # Consume "acme-challenge" too, so the challenge resource sees [token].
            request.prepath.append(request.postpath.pop(0))
            return self._challenges
        return self._redirect

    def render(self, request):
        """Only reached with an empty path; redirect like any other path."""
        return self._redirect.render(request)


class _JobhostRequest(Request):
    """A request that names no software version and refuses to make sessions."""

    def setHeader(self, name, value):
        lowered = name.lower() if isinstance(name, bytes) else name.lower().encode("ascii")
        if lowered == b"server":
            # Twisted sets "TwistedWeb/<version>" in process(); we name no version.
            value = SERVER_HEADER
        return super().setHeader(name, value)

    def getSession(self, sessionInterface=None, forceNotSecure=False):
        raise RuntimeError("jobhost does not use sessions")


class _JobhostSite(Site):
    requestFactory = _JobhostRequest
    displayTracebacks = False
    budget: ConnectionBudget | None = None
    _flusher: LoopingCall | None = None

    def makeSession(self):
        raise RuntimeError("jobhost does not use sessions")

    def buildProtocol(self, addr):
        if self.budget is not None and not self.budget.admit(addr):
            return None  # over a cap: the port closes the socket at once
        return super().buildProtocol(addr)

    def startFactory(self):
        if not self.logPath:
            # No access log: nothing to write, and no once-a-second timestamp timer either.
            self._logFile = None
            return
        super().startFactory()
        self._flusher = LoopingCall(self._flush_log)
        self._flusher.clock = self.reactor
        self._flusher.start(1.0, now=False)

    def stopFactory(self):
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        self._flusher = None
        channel = getattr(self, "channel_class", None)
        if channel is not None:
            # The deadline sweeps stop themselves only once they find nothing left; a listener
            # that stops must not leave them running.
            channel.request_deadlines.stop()
            channel.idle_deadlines.stop()
        super().stopFactory()

    def _openLogFile(self, path):
        # Block-buffered (Twisted's is line-buffered: a write(2) per request); flushed each second.
        return open(path, "a", buffering=1 << 16, newline="\n", encoding="utf-8")

    def _flush_log(self) -> None:
        if self._logFile is not None:
            self._logFile.flush()


def make_site(
    resource: Resource,
    clock: IReactorTime | None = None,
    *,
    request_timeout: float = 10.0,
    keepalive_timeout: float = 60.0,
    reporter: LimitReporter | None = None,
    budget: ConnectionBudget | None = None,
    access_log: str | None = None,
) -> Site:
    """Wrap a root resource in the :class:`Site` a jobhost listener serves.

    The site sends ``Server: jobhost`` (no version), never shows tracebacks,
    makes no sessions (asking for one is an error), and does not parse request
    bodies into ``request.args``.  Its connections are
    :class:`~jobhost.web.limits.GuardedHTTPChannel`: each request must arrive
    whole within ``request_timeout`` seconds of its first byte (or of the
    connection), however it trickles in; a kept-alive connection is closed after
    ``keepalive_timeout`` seconds without a new request; 414 and 431 for
    over-long request lines and heads.

    Args:
        resource: The root, e.g. :class:`HttpRootResource` or :class:`HttpsRootResource`.
        clock: Used for the deadlines and log timestamps; None means the global reactor
            (Twisted's default, chosen inside Twisted, not here).
        reporter: Counts and logs the limits hit.
        budget: Counts the site's connections against the public caps (only for a site
            that accepts its own connections: the HTTPS listener's hold counts its own).
        access_log: A file to append a combined-log line per request to (block-buffered,
            flushed every second; secret query values redacted by
            :mod:`jobhost.web.accesslog`), or None for no access log (the default, as Caddy).
    """
    from jobhost.web.accesslog import access_log_line

    site = _JobhostSite(
        resource, reactor=clock, timeout=None, parsePOSTFormSubmission=False, logPath=access_log,
        logFormatter=access_log_line,  # query values that may be secrets are redacted
    )
    site.noisy = False
    site.budget = budget
    channel = guarded_channel_class(site.reactor, request_timeout, reporter, budget, keepalive_timeout)
    site.protocol = channel_protocol_factory(channel)
    site.channel_class = channel  # what jobhost.web.limits.drain closes idle connections through
    return site


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "GZIP_MIN_BYTES",
    "content_security_policy",
    "HSTS_MAX_AGE",
    "REFERRER_POLICY",
    "SERVER_HEADER",
    "HttpRootResource",
    "HttpsRootResource",
    "PageCache",
    "make_site",
    "request_hostname",
]
