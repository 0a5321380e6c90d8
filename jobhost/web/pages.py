"""
Careers pages: the page document's schema, and its HTML, JSON-LD and JSON forms.

This module owns the document stored in :attr:`DomainRecord.page
<jobhost.store.records.DomainRecord.page>`::

    {
      "company": str,                 # required, 1-200 characters
      "intro": str,                   # optional, at most 5000 characters (newlines: paragraphs)
      "logo_url": "https://...",      # optional
      "jobs": [                       # optional, at most 500
        {
          "id": str,                  # required, 1-64 of [A-Za-z0-9_-], unique
          "title": str,               # required, 1-200 characters
          "location": str,            # optional, at most 200 characters
          "employment_type": str,     # optional, a schema.org employmentType (FULL_TIME, ...)
          "description": str,         # optional, at most 20000 characters, plain text
          "apply_url": "http(s)://",  # optional
          "posted": "YYYY-MM-DD"      # optional
        }
      ]
    }

:func:`validate_page` checks and normalises it; the ``render_*`` functions turn a
validated document into bytes.  HTML is built as :mod:`twisted.web.template`
tag trees, so every customer-supplied string is escaped by the flattener;
JSON-LD inside ``<script>`` is escaped by :func:`json_for_script`.  No I/O: the
HTML renderers return Deferreds only because flattening does.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any, Mapping
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.web.template import Tag, flattenString, tags

from jobhost.errors import PageInvalid
from jobhost.hostnames import to_unicode

#: schema.org ``employmentType`` values a job may name, with their display labels.
EMPLOYMENT_TYPES: Mapping[str, str] = {
    "FULL_TIME": "Full-time",
    "PART_TIME": "Part-time",
    "CONTRACTOR": "Contractor",
    "TEMPORARY": "Temporary",
    "INTERN": "Internship",
    "VOLUNTEER": "Volunteer",
    "PER_DIEM": "Per diem",
    "OTHER": "Other",
}

MAX_COMPANY_CHARS = 200
MAX_INTRO_CHARS = 5000
MAX_TITLE_CHARS = 200
MAX_LOCATION_CHARS = 200
MAX_DESCRIPTION_CHARS = 20000
MAX_URL_CHARS = 2048
MAX_JOBS = 500

#: The page language; the document has no field for it yet.
PAGE_LANGUAGE = "en"

_PAGE_FIELDS = ("company", "intro", "logo_url", "jobs")
_JOB_FIELDS = ("id", "title", "location", "employment_type", "description", "apply_url", "posted")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

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


# -- validation ----------------------------------------------------------------


def _is_unicode_text(value: str) -> bool:
    """False when ``value`` holds lone surrogates (possible from JSON's ``\\ud800``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Unicode category Cc (C0, DEL, C1); the multi-line form allows tab and newline.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_URL_FORBIDDEN = re.compile(r"[\s\\]")


def _text(
    errors: dict[str, str],
    path: str,
    value: object,
    *,
    max_chars: int,
    required: bool = False,
    multiline: bool = False,
) -> str | None:
    """Check one text field; return its normalised value, or None when absent or wrong."""
    if value is None:
        if required:
            errors[path] = "required"
        return None
    if not isinstance(value, str):
        errors[path] = "must be a string"
        return None
    if not _is_unicode_text(value):
        errors[path] = "must be valid Unicode text"
        return None
    if multiline:
        text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
        if _CONTROL_MULTILINE.search(text):
            errors[path] = "must not contain control characters"
            return None
    else:
        text = value.strip()
        if _CONTROL.search(text):
            errors[path] = "must be a single line without control characters"
            return None
    if not text:
        if required:
            errors[path] = "must not be empty"
        return None
    if len(text) > max_chars:
        errors[path] = f"must be at most {max_chars} characters (got {len(text)})"
        return None
    return text


def _url(errors: dict[str, str], path: str, value: object, schemes: tuple[str, ...]) -> str | None:
    """Check an absolute URL whose scheme is one of ``schemes``; return it stripped."""
    if value is None:
        return None
    want = " or ".join(schemes)
    if not isinstance(value, str) or not _is_unicode_text(value):
        errors[path] = f"must be an absolute {want} URL"
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_URL_CHARS:
        errors[path] = f"must be at most {MAX_URL_CHARS} characters"
        return None
    if _URL_FORBIDDEN.search(text) or _CONTROL.search(text):
        errors[path] = "must not contain spaces, backslashes or control characters"
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        errors[path] = f"must be an absolute {want} URL"
        return None
    if parts.scheme.lower() not in schemes or not host:
        errors[path] = f"must be an absolute {want} URL"
        return None
    return text


def _posted(errors: dict[str, str], path: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    errors[path] = "must be a date written YYYY-MM-DD"
    return None


def _unknown_fields(errors: dict[str, str], prefix: str, doc: Mapping, known: tuple[str, ...]) -> None:
    for key in doc:
        if key not in known or not isinstance(key, str):
            name = key if isinstance(key, str) and _is_unicode_text(key) else repr(key)
            errors[f"{prefix}{name[:100]}"] = "unknown field"


def _job(errors: dict[str, str], path: str, doc: object) -> dict[str, Any] | None:
    if not isinstance(doc, Mapping):
        errors[path] = "must be an object"
        return None
    before = len(errors)
    _unknown_fields(errors, f"{path}.", doc, _JOB_FIELDS)
    job: dict[str, Any] = {}
    job_id = doc.get("id")
    if job_id is None:
        errors[f"{path}.id"] = "required"
    elif not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        errors[f"{path}.id"] = "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"
    else:
        job["id"] = job_id
    title = _text(errors, f"{path}.title", doc.get("title"), max_chars=MAX_TITLE_CHARS, required=True)
    if title is not None:
        job["title"] = title
    location = _text(errors, f"{path}.location", doc.get("location"), max_chars=MAX_LOCATION_CHARS)
    if location is not None:
        job["location"] = location
    employment_type = doc.get("employment_type")
    if employment_type is not None:
        normalised = employment_type.strip().upper() if isinstance(employment_type, str) else None
        if normalised in EMPLOYMENT_TYPES:
            job["employment_type"] = normalised
        else:
            errors[f"{path}.employment_type"] = "must be one of " + ", ".join(EMPLOYMENT_TYPES)
    description = _text(
        errors,
        f"{path}.description",
        doc.get("description"),
        max_chars=MAX_DESCRIPTION_CHARS,
        multiline=True,
    )
    if description is not None:
        job["description"] = description
    apply_url = _url(errors, f"{path}.apply_url", doc.get("apply_url"), ("http", "https"))
    if apply_url is not None:
        job["apply_url"] = apply_url
    posted = _posted(errors, f"{path}.posted", doc.get("posted"))
    if posted is not None:
        job["posted"] = posted
    return job if len(errors) == before else None


def validate_page(doc: object) -> dict[str, Any]:
    """Check a careers page document and return its normalised form.

    Normalising strips surrounding white space from text, turns ``\\r\\n`` into
    ``\\n`` in multi-line text, upper-cases ``employment_type``, drops optional
    fields that are null or empty, and always includes ``jobs`` (possibly empty).

    Args:
        doc: The document as decoded from JSON (or read from the store).

    Returns:
        A new dict with only the fields of the schema in the module docstring.

    Raises:
        PageInvalid: with every problem found, keyed by field path such as
            ``company`` or ``jobs[2].title`` (``""`` when ``doc`` is not an
            object).  Unknown fields are problems too.  Nothing else is raised,
            whatever ``doc`` is.
    """
    errors: dict[str, str] = {}
    if not isinstance(doc, Mapping):
        raise PageInvalid(errors={"": "a careers page must be a JSON object"})
    _unknown_fields(errors, "", doc, _PAGE_FIELDS)
    page: dict[str, Any] = {}
    company = _text(errors, "company", doc.get("company"), max_chars=MAX_COMPANY_CHARS, required=True)
    if company is not None:
        page["company"] = company
    intro = _text(errors, "intro", doc.get("intro"), max_chars=MAX_INTRO_CHARS, multiline=True)
    if intro is not None:
        page["intro"] = intro
    logo_url = _url(errors, "logo_url", doc.get("logo_url"), ("https",))
    if logo_url is not None:
        page["logo_url"] = logo_url
    jobs_doc = doc.get("jobs")
    jobs: list[dict[str, Any]] = []
    if jobs_doc is None:
        pass
    elif not isinstance(jobs_doc, (list, tuple)):
        errors["jobs"] = "must be a list"
    elif len(jobs_doc) > MAX_JOBS:
        # Stop here rather than report thousands of per-job problems.
        errors["jobs"] = f"must have at most {MAX_JOBS} jobs (got {len(jobs_doc)})"
    else:
        first_index: dict[str, int] = {}
        for index, job_doc in enumerate(jobs_doc):
            path = f"jobs[{index}]"
            job = _job(errors, path, job_doc)
            job_id = job_doc.get("id") if isinstance(job_doc, Mapping) else None
            if isinstance(job_id, str) and _JOB_ID.fullmatch(job_id):
                if job_id in first_index:
                    errors[f"{path}.id"] = f"duplicate id {job_id!r} (also jobs[{first_index[job_id]}])"
                    job = None
                else:
                    first_index[job_id] = index
            if job is not None:
                jobs.append(job)
    page["jobs"] = jobs
    if errors:
        raise PageInvalid(errors=errors)
    return page


def find_job(page: Mapping[str, Any], job_id: str) -> Mapping[str, Any] | None:
    """Return the job with ``job_id`` from a validated page, or None."""
    for job in page.get("jobs", ()):
        if job["id"] == job_id:
            return job
    return None


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
    "EMPLOYMENT_TYPES",
    "MAX_COMPANY_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_INTRO_CHARS",
    "MAX_JOBS",
    "MAX_LOCATION_CHARS",
    "MAX_TITLE_CHARS",
    "MAX_URL_CHARS",
    "PAGE_LANGUAGE",
    "find_job",
    "item_list",
    "job_posting",
    "job_url",
    "json_for_script",
    "render_empty_page",
    "render_job_page",
    "render_jobs_json",
    "render_list_page",
    "render_not_found_page",
    "validate_page",
]
