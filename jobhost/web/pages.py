"""
Careers pages: the HTML, JSON-LD, JSON, sitemap and robots.txt forms of a page document.

The document's schema, :func:`~jobhost.pagedoc.validate_page` and
:func:`~jobhost.pagedoc.find_job` live in :mod:`jobhost.pagedoc`, so the store
tool and the admin API need no web import.

The ``render_*`` functions turn a validated (version 2) document into bytes.
HTML is built as :mod:`twisted.web.template` tag trees, so every
customer-supplied string is escaped by the flattener; JSON-LD inside
``<script>`` is escaped by :func:`json_for_script`.  The only customer value
that reaches CSS is the accent colour, re-checked here against ``#rrggbb``
(:func:`page_css`); the page's one ``<style>`` element is allowed by its hash
in the Content-Security-Policy (:func:`style_source`), never by
``'unsafe-inline'``.  No I/O: the HTML renderers return Deferreds only because
flattening does.

Every renderer that shows openings takes ``now`` (an aware datetime, default:
the current time) and leaves out openings whose ``valid_through`` has passed.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_module
import json
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlencode
from xml.sax.saxutils import escape as xml_escape

import attrs
from twisted.internet.defer import Deferred
from twisted.web.template import Tag, flattenString, tags

from jobhost.hostnames import to_unicode
from jobhost.pagedoc import EMPLOYMENT_TYPES, job_expires_at, live_jobs

#: The page language when the document names none.
PAGE_LANGUAGE = "en"

#: The accent colour when the document names none (contrast 7.6:1 against white).
DEFAULT_ACCENT = "#0645ad"

_HEX_COLOUR = re.compile(r"#[0-9a-f]{6}")

# No '<', '>' or '&' here: <style> is raw text, so the flattener's entity escaping
# of those characters would corrupt the CSS (a test checks this).  Every colour of
# text on white has at least 4.5:1 contrast (WCAG 2.2 1.4.3); the accent comes in
# as the custom property --accent, set by page_css from a validated colour.
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;
margin:0 auto;max-width:46rem;padding:1rem 1.25rem;color:#1a1a1a;background:#fff}
.skip{position:absolute;left:-999rem}
.skip:focus{position:static;display:inline-block;padding:.5rem;background:#fff}
header{display:flex;align-items:center;gap:1rem;margin-bottom:1.5rem;
border-bottom:4px solid var(--accent);padding-bottom:.75rem}
header img{max-height:3rem;max-width:10rem}
h1{font-size:1.8rem;margin:.25rem 0}
h2{font-size:1.3rem;margin-top:2rem}
ul.jobs{list-style:none;padding:0}
ul.jobs li{border-top:1px solid #ddd;padding:.75rem 0}
ul.jobs a{font-size:1.1rem;font-weight:600}
a{color:var(--accent)}
a:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.meta{color:#555;margin:.25rem 0}
nav.filters{border:1px solid #ddd;border-radius:.3rem;padding:.5rem 1rem;margin:1rem 0}
nav.filters h2{font-size:1rem;margin:.5rem 0 .25rem}
nav.filters ul{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.5rem}
nav.filters a{display:inline-block;min-height:24px;min-width:24px;padding:.2rem .6rem;
border:1px solid var(--accent);border-radius:1rem;text-decoration:none}
nav.filters a[aria-current]{background:var(--accent);color:#fff;font-weight:600}
.apply{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:var(--accent);color:#fff;
border-radius:.3rem;text-decoration:none;font-weight:600}
.apply:focus-visible{outline-color:#1a1a1a}
footer{margin-top:3rem;color:#555;font-size:.9rem}
@media print{
body{max-width:none;padding:0;color:#000;font-size:11pt}
header{border-bottom:1px solid #000}
.skip,nav.filters,footer,header a{display:none}
a{color:#000}
.apply{background:none;color:#000;padding:0;border:0}
.apply::after{content:" " attr(href)}
article{break-inside:auto}
h1,h2{break-after:avoid}
}
"""


def _accent(page: Mapping[str, Any] | None) -> str:
    colour = (page or {}).get("accent_color")
    # Validated on the way in; checked again because this string becomes CSS.
    return colour if isinstance(colour, str) and _HEX_COLOUR.fullmatch(colour) else DEFAULT_ACCENT


def page_css(page: Mapping[str, Any] | None) -> str:
    """The stylesheet of a page: the fixed rules and the page's accent colour as ``--accent``."""
    return _CSS + ":root{--accent:%s}\n" % (_accent(page),)


def style_source(css: str) -> str:
    """The CSP source (``'sha256-...'``) that allows exactly the ``<style>`` element holding ``css``."""
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return "'sha256-%s'" % (base64.b64encode(digest).decode("ascii"),)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


# -- JSON-LD and JSON ---------------------------------------------------------

_SCRIPT_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE_RE = re.compile("[<>&\u2028\u2029]")


def json_for_script(value: Any) -> str:
    """Serialise ``value`` as JSON safe to place inside an HTML ``<script>`` element.

    ``<``, ``>`` and ``&`` can only occur inside JSON strings, where ``\\u003c``
    etc. mean the same character; escaping them means no ``</script>`` or
    ``<!--`` can end the element early, and the flattener's entity escaping
    finds nothing to change.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _SCRIPT_UNSAFE_RE.sub(lambda m: _SCRIPT_UNSAFE[m.group(0)], text)


def site_url(hostname: str) -> str:
    """The canonical URL of a hostname's list of openings."""
    return f"https://{hostname}/"


def job_url(hostname: str, job_id: str) -> str:
    """The canonical URL of one opening's page."""
    return f"https://{hostname}/jobs/{job_id}"


def _organization(page: Mapping[str, Any]) -> dict[str, Any]:
    org: dict[str, Any] = {"@type": "Organization", "name": page["company"]}
    if page.get("website"):
        org["sameAs"] = page["website"]
    if page.get("logo_url"):
        org["logo"] = page["logo_url"]
    return org


def place_label(place: Mapping[str, str]) -> str:
    """How a location is shown: its label, else "locality, region, country"."""
    if place.get("label"):
        return place["label"]
    return ", ".join(place[k] for k in ("locality", "region", "country") if place.get(k))


#: The location filter value of remote openings.
REMOTE = "Remote"


def job_places(job: Mapping[str, Any]) -> list[str]:
    """The location labels of a job, "Remote" last when it may be done remotely."""
    labels = [place_label(place) for place in job.get("locations", ())]
    if job.get("remote"):
        labels.append(REMOTE)
    return labels


def _postal_address(place: Mapping[str, str]) -> dict[str, Any]:
    address: dict[str, Any] = {"@type": "PostalAddress"}
    for key, prop in (
        ("street_address", "streetAddress"),
        ("locality", "addressLocality"),
        ("region", "addressRegion"),
        ("postal_code", "postalCode"),
        ("country", "addressCountry"),
    ):
        if place.get(key):
            address[prop] = place[key]
    if "addressLocality" not in address and place.get("label"):
        # A version 1 free-text location: the best we know of the town.
        address["addressLocality"] = place["label"]
    return address


def _description_html(job: Mapping[str, Any], page: Mapping[str, Any]) -> str:
    text = job.get("description") or f"{job['title']} at {page['company']}"
    return "".join(f"<p>{html_module.escape(line.strip(), quote=False)}</p>" for line in text.split("\n") if line.strip())


def job_posting(
    hostname: str, page: Mapping[str, Any], job: Mapping[str, Any], default_posted: str | None = None
) -> dict[str, Any]:
    """The schema.org ``JobPosting`` for one opening of a validated page.

    Follows Google's job-posting structured data (see
    ``tests/data/google_jobposting.json``): ``description`` is HTML, one
    ``<p>`` per line (the title and company when the job has none);
    ``directApply`` is false because applying happens at ``apply_url``; an
    opening that may be done remotely is ``jobLocationType: TELECOMMUTE`` with
    its countries as ``applicantLocationRequirements`` (and its places, if any,
    as ``jobLocation``: hybrid).

    Args:
        default_posted: ``datePosted`` (YYYY-MM-DD) when the job names no ``posted``
            date, e.g. the day the hostname was registered.
    """
    posting: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "JobPosting",
        "title": job["title"],
        "description": _description_html(job, page),
        "identifier": {"@type": "PropertyValue", "name": page["company"], "value": job["id"]},
        "hiringOrganization": _organization(page),
        "url": job_url(hostname, job["id"]),
        "directApply": False,
    }
    posted = job.get("posted") or default_posted
    if posted:
        posting["datePosted"] = posted
    expires = job.get("valid_through")
    if expires:
        posting["validThrough"] = expires if "T" in expires else f"{expires}T23:59:59Z"
    if job.get("employment_type"):
        posting["employmentType"] = job["employment_type"]
    places = job.get("locations", ())
    if places:
        posting["jobLocation"] = [{"@type": "Place", "address": _postal_address(p)} for p in places]
    if job.get("remote"):
        posting["jobLocationType"] = "TELECOMMUTE"
        posting["applicantLocationRequirements"] = [
            {"@type": "Country", "name": code} for code in job["remote"]["countries"]
        ]
    salary = job.get("salary")
    if salary:
        value: dict[str, Any] = {"@type": "QuantitativeValue", "unitText": salary["unit"]}
        if "max" in salary and salary["max"] != salary["min"]:
            value["minValue"], value["maxValue"] = salary["min"], salary["max"]
        else:
            value["value"] = salary["min"]
        posting["baseSalary"] = {"@type": "MonetaryAmount", "currency": salary["currency"], "value": value}
    return posting


def item_list(hostname: str, page: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The schema.org ``ItemList`` of a validated page's openings (``jobs``, default all of them)."""
    jobs = page["jobs"] if jobs is None else jobs
    return {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "name": f"Open positions at {page['company']}",
        "numberOfItems": len(jobs),
        "itemListElement": [
            {
                "@type": "ListItem",
                "position": position,
                "url": job_url(hostname, job["id"]),
                "name": job["title"],
            }
            for position, job in enumerate(jobs, start=1)
        ],
    }


def render_jobs_json(hostname: str, page: Mapping[str, Any] | None, now: datetime | None = None) -> bytes:
    """The ``/jobs.json`` body (UTF-8): the company and its open (unexpired) openings, each with its URL.

    Args:
        hostname: The normalised hostname the page is served on.
        page: A validated page document, or None when the hostname has none.
    """
    jobs = [] if page is None else [
        dict(job, url=job_url(hostname, job["id"])) for job in live_jobs(page, _now(now))
    ]
    doc = {
        "hostname": hostname,
        "company": None if page is None else page["company"],
        "jobs": jobs,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


def render_sitemap(
    hostname: str, page: Mapping[str, Any] | None, now: datetime | None = None, lastmod: str | None = None
) -> bytes:
    """The ``/sitemap.xml`` body: the list page and each open opening of this hostname only.

    Args:
        lastmod: ``<lastmod>`` of the list page (W3C date), e.g. when the record changed.
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">']

    def url(loc: str, modified: str | None) -> None:
        entry = f"<url><loc>{xml_escape(loc)}</loc>"
        if modified:
            entry += f"<lastmod>{xml_escape(modified)}</lastmod>"
        lines.append(entry + "</url>")

    url(site_url(hostname), lastmod)
    if page is not None:
        for job in live_jobs(page, _now(now)):
            url(job_url(hostname, job["id"]), job.get("posted"))
    lines.append("</urlset>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_robots(hostname: str) -> bytes:
    """The ``/robots.txt`` body: everything may be crawled; the sitemap is named."""
    return f"User-agent: *\nAllow: /\n\nSitemap: https://{hostname}/sitemap.xml\n".encode("ascii")


# -- filters ---------------------------------------------------------------------


@attrs.frozen
class Filters:
    """A list page's filter: openings in one department and/or at one location (None: any).

    ``location`` is a location's label (:func:`place_label`) or :data:`REMOTE`.
    """

    department: str | None = None
    location: str | None = None

    def __bool__(self) -> bool:
        return self.department is not None or self.location is not None

    def matches(self, job: Mapping[str, Any]) -> bool:
        """True when ``job`` is in the department and at the location asked for."""
        if self.department is not None and job.get("department") != self.department:
            return False
        return self.location is None or self.location in job_places(job)

    def query(self, **change: str | None) -> str:
        """The URL (path and query) of the list with this filter, changed by ``change``."""
        values = attrs.evolve(self, **change)
        params = [(k, v) for k, v in (("department", values.department), ("location", values.location)) if v]
        return "/?" + urlencode(params) if params else "/"


def filter_options(jobs: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The departments and the locations of ``jobs``, each in order of first appearance."""
    departments: dict[str, None] = {}
    places: dict[str, None] = {}
    for job in jobs:
        if job.get("department"):
            departments.setdefault(job["department"])
        for label in job_places(job):
            places.setdefault(label)
    return list(departments), list(places)


# -- HTML ------------------------------------------------------------------------

def _main(*children: Any) -> Tag:
    # <main> is not among twisted.web.template.tags' names.  A fresh Tag each time:
    # calling a Tag adds children to that very instance.
    return Tag("main")(*children, id="main")


def _paragraphs(text: str | None) -> list[Tag]:
    """One ``<p>`` per non-blank line of plain text."""
    if not text:
        return []
    return [tags.p(line.strip()) for line in text.split("\n") if line.strip()]


def _summary(text: str | None, limit: int = 200) -> str | None:
    """The first ``limit`` characters of plain text on one line, for meta descriptions."""
    if not text:
        return None
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "\u2026"


@attrs.frozen
class _Meta:
    """What a document's head says about it to search engines and link previews."""

    canonical: str | None = None
    description: str | None = None
    image: str | None = None
    site_name: str | None = None
    og_type: str = "website"
    noindex: bool = False


def _document(
    title: str,
    body: list[Any],
    json_ld: Any = None,
    page: Mapping[str, Any] | None = None,
    meta: _Meta = _Meta(),
) -> Tag:
    head: list[Any] = [
        tags.meta(charset="utf-8"),
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.title(title),
    ]
    if meta.description:
        head.append(tags.meta(name="description", content=meta.description))
    if meta.noindex:
        head.append(tags.meta(name="robots", content="noindex, follow"))
    if meta.canonical:
        head.append(tags.link(rel="canonical", href=meta.canonical))
        head.append(tags.meta(property="og:type", content=meta.og_type))
        head.append(tags.meta(property="og:title", content=title))
        head.append(tags.meta(property="og:url", content=meta.canonical))
        if meta.site_name:
            head.append(tags.meta(property="og:site_name", content=meta.site_name))
        if meta.description:
            head.append(tags.meta(property="og:description", content=meta.description))
        if meta.image:
            head.append(tags.meta(property="og:image", content=meta.image))
        head.append(tags.meta(name="twitter:card", content="summary"))
        head.append(tags.meta(name="twitter:title", content=title))
        if meta.description:
            head.append(tags.meta(name="twitter:description", content=meta.description))
    head.append(tags.style(page_css(page)))
    if json_ld is not None:
        head.append(tags.script(json_for_script(json_ld), type="application/ld+json"))
    skip = tags.a("Skip to content", href="#main", **{"class": "skip"})
    lang = (page or {}).get("lang") or PAGE_LANGUAGE
    return tags.html(tags.head(*head), tags.body(skip, *body), lang=lang)


def _render(document: Tag) -> Deferred:
    return flattenString(None, document).addCallback(lambda html: b"<!DOCTYPE html>\n" + html)


def _header(page: Mapping[str, Any], heading: Any) -> Tag:
    parts: list[Any] = []
    if page.get("logo_url"):
        parts.append(tags.img(src=page["logo_url"], alt=f"{page['company']} logo"))
    parts.append(heading)
    return tags.header(*parts)


def _salary_text(salary: Mapping[str, Any]) -> str:
    def amount(n: float) -> str:
        return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"

    value = amount(salary["min"])
    if "max" in salary and salary["max"] != salary["min"]:
        value += "\u2013" + amount(salary["max"])
    return f"{salary['currency']} {value} per {salary['unit'].lower()}"


def _job_meta(job: Mapping[str, Any], company: str | None = None, *, detail: bool = False) -> list[Any]:
    facts: list[Any] = []
    if company:
        facts.append(company)
    places = [place_label(p) for p in job.get("locations", ())]
    if job.get("remote"):
        places.append("Remote (" + ", ".join(job["remote"]["countries"]) + ")")
    if places:
        facts.append("; ".join(places))
    if job.get("employment_type"):
        facts.append(EMPLOYMENT_TYPES[job["employment_type"]])
    if detail and job.get("department"):
        facts.append(job["department"])
    if detail and job.get("salary"):
        facts.append(_salary_text(job["salary"]))
    if job.get("posted"):
        facts.append(["Posted ", tags.time(job["posted"], datetime=job["posted"])])
    if detail and job.get("valid_through"):
        closes = job["valid_through"][:10]
        facts.append(["Apply by ", tags.time(closes, datetime=job["valid_through"])])
    out: list[Any] = []
    for i, fact in enumerate(facts):
        if i:
            out.append(" \u00b7 ")
        out.append(fact)
    return out


def _job_list(jobs: Sequence[Mapping[str, Any]]) -> Tag:
    items = []
    for job in jobs:
        meta = _job_meta(job)
        items.append(
            tags.li(
                tags.a(job["title"], href=f"/jobs/{job['id']}"),
                tags.p(meta, **{"class": "meta"}) if meta else "",
            )
        )
    return tags.ul(items, **{"class": "jobs"})


def _filter_nav(filters: Filters, departments: list[str], places: list[str]) -> Tag | str:
    groups: list[Any] = []
    for heading, key, values in (("Department", "department", departments), ("Location", "location", places)):
        if len(values) < 2 and getattr(filters, key) is None:
            continue  # nothing to choose between
        current = getattr(filters, key)
        links = [("All", None)] + [(v, v) for v in values]
        items = []
        for text, value in links:
            attributes = {"href": filters.query(**{key: value})}
            if value == current:
                attributes["aria-current"] = "true"
            items.append(tags.li(tags.a(text, **attributes)))
        label_id = f"filter-{key}"
        groups.append(tags.h2(heading, id=label_id))
        groups.append(tags.ul(items, **{"aria-labelledby": label_id}))
    if not groups:
        return ""
    return tags.nav(groups, **{"class": "filters", "aria-label": "Filter openings"})


def _grouped(jobs: Sequence[Mapping[str, Any]], heading_prefix: str) -> list[Tag]:
    """One section per department (first-appearance order), openings without one last."""
    groups: dict[str | None, list[Mapping[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(job.get("department"), []).append(job)
    if None in groups:
        groups[None] = groups.pop(None)  # last
    sections = []
    for index, (department, members) in enumerate(groups.items(), start=1):
        name = department if department is not None else "Other openings"
        heading_id = f"{heading_prefix}-{index}"
        sections.append(
            tags.section(
                tags.h2(f"{name} ({len(members)})", id=heading_id),
                _job_list(members),
                **{"aria-labelledby": heading_id},
            )
        )
    return sections


def render_list_page(
    hostname: str,
    page: Mapping[str, Any],
    *,
    now: datetime | None = None,
    filters: Filters = Filters(),
) -> Deferred:
    """Render a validated page's home: intro, filters and the open openings, by department.

    Openings whose ``valid_through`` has passed at ``now`` are left out.  With a
    non-empty ``filters`` only matching openings are shown, the page asks not to
    be indexed and its canonical link names the unfiltered list.

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    company = page["company"]
    open_jobs = live_jobs(page, _now(now))
    departments, places = filter_options(open_jobs)
    jobs = [job for job in open_jobs if filters.matches(job)]
    shown: list[Any]
    if not jobs:
        shown = [tags.p("No open positions right now." if not filters else "No open positions match this filter.")]
    elif departments:
        shown = _grouped(jobs, "department")
    else:
        shown = [_job_list(jobs)]
    count = f"Open positions ({len(jobs)})" if not filters else f"Open positions ({len(jobs)} of {len(open_jobs)})"
    body = [
        _header(page, tags.h1(f"Careers at {company}")),
        _filter_nav(filters, departments, places),
        _main(
            _paragraphs(page.get("intro")),
            tags.section(
                tags.h2(count, id="openings"),
                tags.p(tags.a("Show all openings", href="/")) if filters else "",
                shown,
                **{"aria-labelledby": "openings"},
            ),
        ),
        tags.footer(
            tags.p(
                "These openings are also available as ",
                tags.a("JSON", href="/jobs.json"),
                " and listed in the ",
                tags.a("sitemap", href="/sitemap.xml"),
                ".",
            )
        ),
    ]
    meta = _Meta(
        canonical=site_url(hostname),
        description=_summary(page.get("intro")) or f"Open positions at {company}",
        image=page.get("logo_url"),
        site_name=company,
        noindex=bool(filters),
    )
    return _render(_document(f"Careers at {company}", body, item_list(hostname, page, jobs), page, meta))


def render_job_page(
    hostname: str, page: Mapping[str, Any], job: Mapping[str, Any], *, default_posted: str | None = None
) -> Deferred:
    """Render one opening with its ``JobPosting`` JSON-LD (the caller checks it has not expired).

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    company = page["company"]
    article: list[Any] = [tags.h1(job["title"])]
    meta = _job_meta(job, company, detail=True)
    article.append(tags.p(meta, **{"class": "meta"}))
    article.extend(_paragraphs(job.get("description")))
    if job.get("apply_url"):
        article.append(
            tags.p(
                tags.a(
                    "Apply for this position",
                    href=job["apply_url"],
                    rel="noopener noreferrer",
                    **{"class": "apply"},
                )
            )
        )
    body = [
        _header(page, tags.p(tags.a(f"All openings at {company}", href="/"))),
        _main(tags.article(article)),
    ]
    head = _Meta(
        canonical=job_url(hostname, job["id"]),
        description=_summary(job.get("description")) or f"{job['title']} at {company}",
        image=page.get("logo_url"),
        site_name=company,
        og_type="article",
    )
    return _render(
        _document(
            f"{job['title']} \u2013 {company}",
            body,
            job_posting(hostname, page, job, default_posted),
            page,
            head,
        )
    )


def render_gone_page(hostname: str, page: Mapping[str, Any], job: Mapping[str, Any]) -> Deferred:
    """Render the page of an opening whose ``valid_through`` has passed (served as 410 Gone).

    No ``JobPosting``: search engines drop the opening.

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    company = page["company"]
    closed = job_expires_at(job)
    body = [
        _header(page, tags.p(tags.a(f"All openings at {company}", href="/"))),
        _main(
            tags.h1(f"{job['title']}: this position is closed"),
            tags.p(
                "Applications closed on ",
                tags.time(job["valid_through"][:10], datetime=job["valid_through"]),
                "." if closed is not None else "",
            ),
            tags.p(tags.a(f"See all open positions at {company}", href="/")),
        ),
    ]
    return _render(_document(f"Position closed \u2013 {company}", body, None, page, _Meta(noindex=True)))


def render_empty_page(hostname: str) -> Deferred:
    """Render the page of a hostname that has no page document: "No open positions".

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    shown = to_unicode(hostname)
    body = [
        tags.header(tags.h1(shown)),
        _main(tags.p("No open positions.")),
    ]
    return _render(_document(f"No open positions \u2013 {shown}", body))


def render_not_found_page(hostname: str, page: Mapping[str, Any] | None) -> Deferred:
    """Render a known hostname's "page not found" (e.g. an opening that has closed).

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    name = page["company"] if page is not None else to_unicode(hostname)
    body = [
        tags.header(tags.h1("Page not found")),
        _main(
            tags.p("This page does not exist, or the position has been filled."),
            tags.p(tags.a(f"See all open positions at {name}", href="/")),
        ),
    ]
    return _render(_document(f"Page not found \u2013 {name}", body, None, page))


__all__ = [
    "DEFAULT_ACCENT",
    "PAGE_LANGUAGE",
    "REMOTE",
    "Filters",
    "filter_options",
    "item_list",
    "job_places",
    "job_posting",
    "job_url",
    "json_for_script",
    "page_css",
    "place_label",
    "render_empty_page",
    "render_gone_page",
    "render_job_page",
    "render_jobs_json",
    "render_list_page",
    "render_not_found_page",
    "render_robots",
    "render_sitemap",
    "site_url",
    "style_source",
]
