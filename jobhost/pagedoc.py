"""
The careers page document: its schema, and checking and normalising it.

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

:func:`validate_page` checks and normalises it; :func:`find_job` looks a job up
in a validated page.  It lives outside :mod:`jobhost.web` so that the store
tool and the admin API can check a page without importing the web layer
(:mod:`jobhost.web.pages` renders validated documents).  Pure: no I/O, no
Twisted.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Mapping
from urllib.parse import urlsplit

from jobhost.errors import PageInvalid

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

_PAGE_FIELDS = ("company", "intro", "logo_url", "jobs")
_JOB_FIELDS = ("id", "title", "location", "employment_type", "description", "apply_url", "posted")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


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
    if parts.scheme not in schemes or not host:  # urlsplit lower-cases the scheme
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


__all__ = [
    "EMPLOYMENT_TYPES",
    "MAX_COMPANY_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_INTRO_CHARS",
    "MAX_JOBS",
    "MAX_LOCATION_CHARS",
    "MAX_TITLE_CHARS",
    "MAX_URL_CHARS",
    "find_job",
    "validate_page",
]
