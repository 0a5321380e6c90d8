"""
Careers pages: the HTML, JSON-LD and JSON forms of a page document.

The document's schema, :func:`~jobhost.pagedoc.validate_page` and
:func:`~jobhost.pagedoc.find_job` live in :mod:`jobhost.pagedoc`, so the store
tool and the admin API need no web import.

The ``render_*`` functions turn a validated document into bytes.  HTML is
built as :mod:`twisted.web.template` tag trees, so every customer-supplied
string is escaped by the flattener; JSON-LD inside ``<script>`` is escaped by
:func:`json_for_script`.  No I/O: the HTML renderers return Deferreds only
because flattening does.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.web.template import Tag, flattenString, tags

from jobhost.hostnames import to_unicode
from jobhost.pagedoc import EMPLOYMENT_TYPES

#: The page language; the document has no field for it yet.
PAGE_LANGUAGE = "en"

# No '<', '>' or '&' here: <style> is raw text, so the flattener's entity escaping
# of those characters would corrupt the CSS (a test checks this).
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;
margin:0 auto;max-width:46rem;padding:1rem 1.25rem;color:#1a1a1a;background:#fff}
header{display:flex;align-items:center;gap:1rem;margin-bottom:1.5rem}
header img{max-height:3rem;max-width:10rem}
h1{font-size:1.8rem;margin:.25rem 0}
h2{font-size:1.3rem;margin-top:2rem}
ul.jobs{list-style:none;padding:0}
ul.jobs li{border-top:1px solid #ddd;padding:.75rem 0}
ul.jobs a{font-size:1.1rem;font-weight:600}
a{color:#0645ad}
a:focus{outline:2px solid #0645ad;outline-offset:2px}
.meta{color:#555;margin:.25rem 0}
.apply{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:#0645ad;color:#fff;
border-radius:.3rem;text-decoration:none;font-weight:600}
footer{margin-top:3rem;color:#555;font-size:.9rem}
"""


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


def job_url(hostname: str, job_id: str) -> str:
    """The canonical URL of one opening's page."""
    return f"https://{hostname}/jobs/{job_id}"


def _organization(page: Mapping[str, Any]) -> dict[str, Any]:
    org: dict[str, Any] = {"@type": "Organization", "name": page["company"]}
    if page.get("logo_url"):
        org["logo"] = page["logo_url"]
    return org


def job_posting(hostname: str, page: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """The schema.org ``JobPosting`` for one opening of a validated page.

    ``description`` falls back to the title when the job has none (search engines
    require one); ``directApply`` is false because applying happens at
    ``apply_url``, not on the job page.
    """
    posting: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "JobPosting",
        "title": job["title"],
        "description": job.get("description") or f"{job['title']} at {page['company']}",
        "identifier": {"@type": "PropertyValue", "name": page["company"], "value": job["id"]},
        "hiringOrganization": _organization(page),
        "url": job_url(hostname, job["id"]),
        "directApply": False,
    }
    if job.get("posted"):
        posting["datePosted"] = job["posted"]
    if job.get("employment_type"):
        posting["employmentType"] = job["employment_type"]
    if job.get("location"):
        posting["jobLocation"] = {"@type": "Place", "address": job["location"]}
    return posting


def item_list(hostname: str, page: Mapping[str, Any]) -> dict[str, Any]:
    """The schema.org ``ItemList`` of a validated page's openings."""
    return {
        "@context": "https://schema.org",
        "@type": "ItemList",
        "name": f"Open positions at {page['company']}",
        "numberOfItems": len(page["jobs"]),
        "itemListElement": [
            {
                "@type": "ListItem",
                "position": position,
                "url": job_url(hostname, job["id"]),
                "name": job["title"],
            }
            for position, job in enumerate(page["jobs"], start=1)
        ],
    }


def render_jobs_json(hostname: str, page: Mapping[str, Any] | None) -> bytes:
    """The ``/jobs.json`` body (UTF-8): the company and its openings, each with its URL.

    Args:
        hostname: The normalised hostname the page is served on.
        page: A validated page document, or None when the hostname has none.
    """
    jobs = [] if page is None else [dict(job, url=job_url(hostname, job["id"])) for job in page["jobs"]]
    doc = {
        "hostname": hostname,
        "company": None if page is None else page["company"],
        "jobs": jobs,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"


# -- HTML ------------------------------------------------------------------------

def _main(*children: Any) -> Tag:
    # <main> is not among twisted.web.template.tags' names.  A fresh Tag each time:
    # calling a Tag adds children to that very instance.
    return Tag("main")(*children)


def _paragraphs(text: str | None) -> list[Tag]:
    """One ``<p>`` per non-blank line of plain text."""
    if not text:
        return []
    return [tags.p(line.strip()) for line in text.split("\n") if line.strip()]


def _document(title: str, body: list[Any], json_ld: Any = None) -> Tag:
    head: list[Any] = [
        tags.meta(charset="utf-8"),
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.title(title),
        tags.style(_CSS),
    ]
    if json_ld is not None:
        head.append(tags.script(json_for_script(json_ld), type="application/ld+json"))
    return tags.html(tags.head(*head), tags.body(*body), lang=PAGE_LANGUAGE)


def _render(document: Tag) -> Deferred:
    return flattenString(None, document).addCallback(lambda html: b"<!DOCTYPE html>\n" + html)


def _header(page: Mapping[str, Any], heading: Any) -> Tag:
    parts: list[Any] = []
    if page.get("logo_url"):
        parts.append(tags.img(src=page["logo_url"], alt=f"{page['company']} logo"))
    parts.append(heading)
    return tags.header(*parts)


def _job_meta(job: Mapping[str, Any], company: str | None = None) -> list[Any]:
    facts: list[Any] = []
    if company:
        facts.append(company)
    if job.get("location"):
        facts.append(job["location"])
    if job.get("employment_type"):
        facts.append(EMPLOYMENT_TYPES[job["employment_type"]])
    if job.get("posted"):
        facts.append(["Posted ", tags.time(job["posted"], datetime=job["posted"])])
    out: list[Any] = []
    for i, fact in enumerate(facts):
        if i:
            out.append(" \u00b7 ")
        out.append(fact)
    return out


def render_list_page(hostname: str, page: Mapping[str, Any]) -> Deferred:
    """Render a validated page's home: intro and the list of openings.

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    company = page["company"]
    jobs = page["jobs"]
    if jobs:
        openings: Any = tags.ul(
            [
                tags.li(
                    tags.a(job["title"], href=f"/jobs/{job['id']}"),
                    tags.p(_job_meta(job), **{"class": "meta"}) if _job_meta(job) else "",
                )
                for job in jobs
            ],
            **{"class": "jobs"},
        )
    else:
        openings = tags.p("No open positions right now.")
    body = [
        _header(page, tags.h1(f"Careers at {company}")),
        _main(
            _paragraphs(page.get("intro")),
            tags.section(
                tags.h2(f"Open positions ({len(jobs)})", id="openings"),
                openings,
                **{"aria-labelledby": "openings"},
            ),
        ),
        tags.footer(tags.p("These openings are also available as ", tags.a("JSON", href="/jobs.json"), ".")),
    ]
    return _render(_document(f"Careers at {company}", body, item_list(hostname, page)))


def render_job_page(hostname: str, page: Mapping[str, Any], job: Mapping[str, Any]) -> Deferred:
    """Render one opening with its ``JobPosting`` JSON-LD.

    Returns:
        A Deferred firing with the HTML document as bytes (UTF-8).
    """
    company = page["company"]
    article: list[Any] = [tags.h1(job["title"])]
    meta = _job_meta(job, company)
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
    return _render(
        _document(f"{job['title']} \u2013 {company}", body, job_posting(hostname, page, job))
    )


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
    return _render(_document(f"Page not found \u2013 {name}", body))


__all__ = [
    "PAGE_LANGUAGE",
    "item_list",
    "job_posting",
    "job_url",
    "json_for_script",
    "render_empty_page",
    "render_job_page",
    "render_jobs_json",
    "render_list_page",
    "render_not_found_page",
]
