"""
The careers page document: its schema, and checking, normalising and upgrading it.

This module owns the document stored in :attr:`DomainRecord.page
<jobhost.store.records.DomainRecord.page>`.  Version 2 (what :func:`validate_page`
returns, whatever version it is given)::

    {
      "version": 2,                   # required to send a v2 document; absent or 1: version 1
      "company": str,                 # required, 1-200 characters
      "intro": str,                   # optional, at most 5000 characters (newlines: paragraphs)
      "lang": "en",                   # optional, a BCP 47 language tag (html lang); default "en"
      "website": "https://...",       # optional http(s): the company's site (JSON-LD sameAs)
      "logo_url": "https://...",      # optional, https only
      "accent_color": "#0b5cad",      # optional, #RGB or #RRGGBB (kept as lower-case #rrggbb);
                                      #   needs a contrast of at least 4.5:1 against white
      "jobs": [                       # optional, at most 500
        {
          "id": str,                  # required, 1-64 of [A-Za-z0-9_-], unique
          "title": str,               # required, 1-200 characters
          "department": str,          # optional, at most 100 characters (groups the list)
          "locations": [              # optional, at most 20 places to work at (on-site/hybrid)
            {"label": str,            #   each: at least one of label, locality, country;
             "street_address": str,   #   text at most 200 characters; label is display text
             "locality": str,         #   (version 1's free-text location becomes a label)
             "region": str,
             "postal_code": str,
             "country": "US"}         #   ISO 3166-1 alpha-2, upper-cased
          ],
          "remote": {"countries": ["US", "CA"]},   # optional: may work remotely from these
                                      #   countries (1-50); with locations: hybrid
          "employment_type": str,     # optional, a schema.org employmentType (FULL_TIME, ...)
          "description": str,         # optional, at most 20000 characters, plain text
          "apply_url": "http(s)://",  # optional
          "posted": "YYYY-MM-DD",     # optional
          "valid_through": str,       # optional, "YYYY-MM-DD" (open through that day, UTC) or
                                      #   "YYYY-MM-DDTHH:MM[:SS]+HH:MM"/"...Z"; after it: expired
          "salary": {                 # optional
            "currency": "EUR",        #   ISO 4217, upper-cased
            "min": number,            #   0 <= min <= max <= 1e9
            "max": number,            #   optional
            "unit": "YEAR"            #   HOUR, DAY, WEEK, MONTH or YEAR
          }
        }
      ]
    }

Version 1 (what every store holds today) has no ``version``, ``lang``,
``website``, ``accent_color``, and per job a free-text ``location`` instead of
``locations``/``remote``, and none of ``department``, ``valid_through``,
``salary``.  :func:`validate_page` checks a v1 document by v1's rules and
returns it upgraded: ``location`` becomes ``locations: [{"label": location}]``,
``version`` becomes 2, nothing else changes, so no field is lost.  Stored
documents are upgraded on read (:func:`upgrade_page`), never rewritten behind
the owner's back.

:func:`validate_page` checks and normalises; :func:`find_job` looks a job up
in a validated page; :func:`job_expires_at`/:func:`live_jobs` say which openings
are still open at a given time.  It lives outside :mod:`jobhost.web` so that the
store tool and the admin API can check a page without importing the web layer
(:mod:`jobhost.web.pages` renders validated documents).  Pure: no I/O, no
Twisted.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping
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
MAX_DEPARTMENT_CHARS = 100
MAX_LOCATIONS = 20
MAX_REMOTE_COUNTRIES = 50
MAX_SALARY = 1e9

#: The page version :func:`validate_page` returns.
PAGE_VERSION = 2

#: The least contrast ratio against white an accent colour must have: WCAG 2.2 AA for
#: normal text (1.4.3), since the accent colours links and the white text of buttons.
MIN_ACCENT_CONTRAST = 4.5

#: ``salary.unit`` values: schema.org ``QuantitativeValue.unitText`` as Google documents it.
SALARY_UNITS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")

_V1_PAGE_FIELDS = ("company", "intro", "logo_url", "jobs")
_V1_JOB_FIELDS = ("id", "title", "location", "employment_type", "description", "apply_url", "posted")
_PAGE_FIELDS = ("version", "company", "intro", "lang", "website", "logo_url", "accent_color", "jobs")
_JOB_FIELDS = (
    "id", "title", "department", "locations", "remote", "employment_type", "description",
    "apply_url", "posted", "valid_through", "salary",
)
_LOCATION_TEXT_FIELDS = ("label", "street_address", "locality", "region", "postal_code")
_LOCATION_FIELDS = _LOCATION_TEXT_FIELDS + ("country",)
_SALARY_FIELDS = ("currency", "min", "max", "unit")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_LANG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}")
_HEX_COLOUR = re.compile(r"#([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
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


def _valid_through(errors: dict[str, str], path: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if _ISO_DATE.fullmatch(text):
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                pass
        elif _DATETIME.fullmatch(text):
            try:
                datetime.fromisoformat(text.replace("Z", "+00:00"))
                return text
            except ValueError:
                pass
    errors[path] = "must be a date YYYY-MM-DD or a date and time with offset, YYYY-MM-DDTHH:MM:SS+HH:MM (or Z)"
    return None


def _unknown_fields(
    errors: dict[str, str], prefix: str, doc: Mapping, known: tuple[str, ...], v2_names: tuple[str, ...] = ()
) -> None:
    """Report each key of ``doc`` not in ``known``; one of ``v2_names`` (in a v1 document) says so."""
    for key in doc:
        if key not in known or not isinstance(key, str):
            name = key if isinstance(key, str) and _is_unicode_text(key) else repr(key)
            hint = _V2_HINT if key in v2_names else ""
            errors[f"{prefix}{name[:100]}"] = "unknown field" + hint


def _country(errors: dict[str, str], path: str, value: object) -> str | None:
    if isinstance(value, str) and _COUNTRY.fullmatch(value.strip()):
        return value.strip().upper()
    errors[path] = "must be an ISO 3166-1 alpha-2 country code such as US or DE"
    return None


def _location(errors: dict[str, str], path: str, doc: object) -> dict[str, str] | None:
    if not isinstance(doc, Mapping):
        errors[path] = "must be an object"
        return None
    before = len(errors)
    _unknown_fields(errors, f"{path}.", doc, _LOCATION_FIELDS)
    place: dict[str, str] = {}
    for name in _LOCATION_TEXT_FIELDS:
        text = _text(errors, f"{path}.{name}", doc.get(name), max_chars=MAX_LOCATION_CHARS)
        if text is not None:
            place[name] = text
    if doc.get("country") is not None:
        country = _country(errors, f"{path}.country", doc.get("country"))
        if country is not None:
            place["country"] = country
    if len(errors) == before and not (place.keys() & {"label", "locality", "country"}):
        errors[path] = "must have at least one of label, locality and country"
    return place if len(errors) == before else None


def _locations(errors: dict[str, str], path: str, value: object) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        errors[path] = "must be a list"
        return None
    if len(value) > MAX_LOCATIONS:
        errors[path] = f"must have at most {MAX_LOCATIONS} locations (got {len(value)})"
        return None
    places = [_location(errors, f"{path}[{index}]", doc) for index, doc in enumerate(value)]
    kept = [place for place in places if place is not None]
    return kept if len(kept) == len(places) and kept else None


def _remote(errors: dict[str, str], path: str, value: object) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors[path] = 'must be an object such as {"countries": ["US"]}'
        return None
    before = len(errors)
    _unknown_fields(errors, f"{path}.", value, ("countries",))
    countries = value.get("countries")
    if not isinstance(countries, (list, tuple)) or not countries:
        errors[f"{path}.countries"] = (
            "required: a list of 1 to %d ISO 3166-1 alpha-2 country codes applicants may work from"
            % (MAX_REMOTE_COUNTRIES,)
        )
        return None
    if len(countries) > MAX_REMOTE_COUNTRIES:
        errors[f"{path}.countries"] = f"must have at most {MAX_REMOTE_COUNTRIES} countries (got {len(countries)})"
        return None
    codes: list[str] = []
    for index, item in enumerate(countries):
        code = _country(errors, f"{path}.countries[{index}]", item)
        if code is not None and code not in codes:
            codes.append(code)
    return {"countries": codes} if len(errors) == before else None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _salary(errors: dict[str, str], path: str, value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors[path] = 'must be an object such as {"currency": "EUR", "min": 50000, "unit": "YEAR"}'
        return None
    before = len(errors)
    _unknown_fields(errors, f"{path}.", value, _SALARY_FIELDS)
    salary: dict[str, Any] = {}
    currency = value.get("currency")
    if isinstance(currency, str) and _CURRENCY.fullmatch(currency.strip()):
        salary["currency"] = currency.strip().upper()
    else:
        errors[f"{path}.currency"] = "required: an ISO 4217 currency code such as EUR or USD"
    low, high = value.get("min"), value.get("max")
    if not _number(low) or not 0 <= low <= MAX_SALARY:
        errors[f"{path}.min"] = f"required: a number from 0 to {MAX_SALARY:.0f}"
    else:
        salary["min"] = low
    if high is not None:
        if not _number(high) or not 0 <= high <= MAX_SALARY:
            errors[f"{path}.max"] = f"must be a number from 0 to {MAX_SALARY:.0f}"
        elif "min" in salary and high < low:
            errors[f"{path}.max"] = "must not be less than min"
        else:
            salary["max"] = high
    unit = value.get("unit")
    normalised = unit.strip().upper() if isinstance(unit, str) else None
    if normalised in SALARY_UNITS:
        salary["unit"] = normalised
    else:
        errors[f"{path}.unit"] = "required: one of " + ", ".join(SALARY_UNITS)
    return salary if len(errors) == before else None


def contrast_with_white(colour: str) -> float:
    """The WCAG 2.2 contrast ratio of a ``#rrggbb`` colour against white (1 to 21)."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    return 1.05 / (luminance + 0.05)


def _accent(errors: dict[str, str], path: str, value: object) -> str | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _HEX_COLOUR.fullmatch(text):
        errors[path] = "must be a hex colour, #RGB or #RRGGBB"
        return None
    digits = text[1:].lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    colour = "#" + digits
    ratio = contrast_with_white(colour)
    if ratio < MIN_ACCENT_CONTRAST:
        errors[path] = (
            f"contrast against white is {ratio:.2f}:1; it must be at least {MIN_ACCENT_CONTRAST}:1 "
            "(WCAG AA) so links and white button text stay readable: choose a darker colour"
        )
        return None
    return colour


def _job(errors: dict[str, str], path: str, doc: object, v1: bool) -> dict[str, Any] | None:
    if not isinstance(doc, Mapping):
        errors[path] = "must be an object"
        return None
    before = len(errors)
    if v1:
        _unknown_fields(errors, f"{path}.", doc, _V1_JOB_FIELDS, _JOB_FIELDS)
    else:
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
    if v1:
        location = _text(errors, f"{path}.location", doc.get("location"), max_chars=MAX_LOCATION_CHARS)
        if location is not None:
            job["locations"] = [{"label": location}]
    else:
        department = _text(errors, f"{path}.department", doc.get("department"), max_chars=MAX_DEPARTMENT_CHARS)
        if department is not None:
            job["department"] = department
        locations = _locations(errors, f"{path}.locations", doc.get("locations"))
        if locations is not None:
            job["locations"] = locations
        remote = _remote(errors, f"{path}.remote", doc.get("remote"))
        if remote is not None:
            job["remote"] = remote
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
    if not v1:
        valid_through = _valid_through(errors, f"{path}.valid_through", doc.get("valid_through"))
        if valid_through is not None:
            job["valid_through"] = valid_through
        salary = _salary(errors, f"{path}.salary", doc.get("salary"))
        if salary is not None:
            job["salary"] = salary
    return job if len(errors) == before else None


_V2_HINT = ' (a version 2 field: send "version": 2)'


def validate_page(doc: object) -> dict[str, Any]:
    """Check a careers page document (version 1 or 2) and return its normalised version 2 form.

    Normalising strips surrounding white space from text, turns ``\\r\\n`` into
    ``\\n`` in multi-line text, upper-cases ``employment_type``, country and
    currency codes and ``salary.unit``, writes the accent colour as lower-case
    ``#rrggbb``, drops optional fields that are null or empty, always includes
    ``jobs`` (possibly empty) and ``"version": 2``, and upgrades a version 1
    document (see the module docstring).  ``validate_page(validate_page(d))``
    equals ``validate_page(d)``.

    Args:
        doc: The document as decoded from JSON (or read from the store).

    Returns:
        A new dict with only the fields of the version 2 schema.

    Raises:
        PageInvalid: with every problem found, keyed by field path such as
            ``company`` or ``jobs[2].title`` (``""`` when ``doc`` is not an
            object).  Unknown fields are problems too.  Nothing else is raised,
            whatever ``doc`` is.
    """
    errors: dict[str, str] = {}
    if not isinstance(doc, Mapping):
        raise PageInvalid(errors={"": "a careers page must be a JSON object"})
    version = doc.get("version", 1)
    if version not in (1, PAGE_VERSION) or isinstance(version, bool):
        errors["version"] = f"must be 1 or {PAGE_VERSION}"
        version = PAGE_VERSION
    v1 = version == 1
    if v1:
        _unknown_fields(errors, "", doc, _V1_PAGE_FIELDS + ("version",), _PAGE_FIELDS)
    else:
        _unknown_fields(errors, "", doc, _PAGE_FIELDS)
    page: dict[str, Any] = {"version": PAGE_VERSION}
    company = _text(errors, "company", doc.get("company"), max_chars=MAX_COMPANY_CHARS, required=True)
    if company is not None:
        page["company"] = company
    intro = _text(errors, "intro", doc.get("intro"), max_chars=MAX_INTRO_CHARS, multiline=True)
    if intro is not None:
        page["intro"] = intro
    if not v1:
        lang = doc.get("lang")
        if lang is not None:
            if isinstance(lang, str) and len(lang) <= 35 and _LANG.fullmatch(lang.strip()):
                page["lang"] = lang.strip()
            else:
                errors["lang"] = "must be a BCP 47 language tag such as en, de or pt-BR"
        website = _url(errors, "website", doc.get("website"), ("http", "https"))
        if website is not None:
            page["website"] = website
    logo_url = _url(errors, "logo_url", doc.get("logo_url"), ("https",))
    if logo_url is not None:
        page["logo_url"] = logo_url
    if not v1:
        accent = _accent(errors, "accent_color", doc.get("accent_color"))
        if accent is not None:
            page["accent_color"] = accent
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
            job = _job(errors, path, job_doc, v1)
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


def upgrade_page(stored: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A stored page document as version 2, for showing it (the admin API).

    Stored documents were validated before they were stored; one that no longer
    validates (a hand-edited store) is returned as it is, for an operator to see.
    """
    if stored is None:
        return None
    try:
        return validate_page(stored)
    except PageInvalid:
        return stored


def job_expires_at(job: Mapping[str, Any]) -> datetime | None:
    """When a validated job's ``valid_through`` has passed (UTC), or None if it never expires.

    A date alone means the opening is valid through that whole day, UTC: it
    expires at the next midnight UTC.
    """
    value = job.get("valid_through")
    if value is None:
        return None
    if "T" not in value:
        return datetime.combine(date.fromisoformat(value) + timedelta(days=1), time(), timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def is_expired(job: Mapping[str, Any], now: datetime) -> bool:
    """True when a validated job's ``valid_through`` has passed at ``now`` (aware)."""
    expires = job_expires_at(job)
    return expires is not None and now >= expires


def live_jobs(page: Mapping[str, Any], now: datetime) -> list[Mapping[str, Any]]:
    """The jobs of a validated page that have not expired at ``now``, in page order."""
    return [job for job in page.get("jobs", ()) if not is_expired(job, now)]


def next_expiry(jobs: Iterable[Mapping[str, Any]], now: datetime) -> datetime | None:
    """The earliest expiry after ``now`` among ``jobs``: when their rendering goes stale."""
    times = [t for t in (job_expires_at(job) for job in jobs) if t is not None and t > now]
    return min(times) if times else None


def find_job(page: Mapping[str, Any], job_id: str) -> Mapping[str, Any] | None:
    """Return the job with ``job_id`` from a validated page, or None."""
    for job in page.get("jobs", ()):
        if job["id"] == job_id:
            return job
    return None


__all__ = [
    "EMPLOYMENT_TYPES",
    "MAX_COMPANY_CHARS",
    "MAX_DEPARTMENT_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_INTRO_CHARS",
    "MAX_JOBS",
    "MAX_LOCATIONS",
    "MAX_LOCATION_CHARS",
    "MAX_TITLE_CHARS",
    "MAX_URL_CHARS",
    "MIN_ACCENT_CONTRAST",
    "PAGE_VERSION",
    "SALARY_UNITS",
    "contrast_with_white",
    "find_job",
    "is_expired",
    "job_expires_at",
    "live_jobs",
    "next_expiry",
    "upgrade_page",
    "validate_page",
]
