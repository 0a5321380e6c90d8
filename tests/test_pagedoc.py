"""Tests for jobhost.pagedoc: the limits, URL rules, field names and job lookup of the page schema.

The bulk of the schema's field-by-field checks live in tests/test_pages.py; these pin the
documented numbers (500 jobs, 2048-character URLs) and the edges of URL and field-name handling.
"""

from __future__ import annotations

import pytest

from jobhost.errors import PageInvalid
from jobhost.pagedoc import find_job, validate_page


def _errors(doc: object) -> dict[str, str]:
    with pytest.raises(PageInvalid) as info:
        validate_page(doc)
    return dict(info.value.errors)


def _jobs(n: int) -> list[dict[str, str]]:
    return [{"id": f"j{i}", "title": "T"} for i in range(n)]


def test_a_page_holds_500_jobs_and_no_more():
    """The documented limit is 500 jobs: 500 validate, 501 are one error naming 500 and the count."""
    assert len(validate_page({"company": "A", "jobs": _jobs(500)})["jobs"]) == 500
    assert _errors({"company": "A", "jobs": _jobs(501)}) == {"jobs": "must have at most 500 jobs (got 501)"}


def test_url_of_exactly_2048_characters_is_accepted():
    """A URL at the 2048-character limit is kept; one character more is refused naming the limit."""
    base = "https://cdn.acme.example/"
    url = base + "a" * (2048 - len(base))
    assert validate_page({"company": "A", "logo_url": url})["logo_url"] == url
    assert _errors({"company": "A", "logo_url": url + "a"}) == {"logo_url": "must be at most 2048 characters"}


def test_url_surrounding_white_space_is_stripped():
    """White space around a URL is dropped; a URL of only white space counts as absent."""
    page = validate_page(
        {
            "company": "A",
            "logo_url": "  https://cdn.acme.example/logo.png\n",
            "jobs": [{"id": "a", "title": "T", "apply_url": "\thttp://apply.acme.example/a "}],
        }
    )
    assert page["logo_url"] == "https://cdn.acme.example/logo.png"
    assert page["jobs"][0]["apply_url"] == "http://apply.acme.example/a"
    assert validate_page({"company": "A", "logo_url": "   "}) == {"version": 2, "company": "A", "jobs": []}


def test_url_scheme_is_case_insensitive():
    """An upper-case scheme (HTTPS://, Http://) is accepted and kept as written."""
    page = validate_page(
        {
            "company": "A",
            "logo_url": "HTTPS://cdn.acme.example/logo.png",
            "jobs": [{"id": "a", "title": "T", "apply_url": "Http://apply.acme.example/a"}],
        }
    )
    assert page["logo_url"] == "HTTPS://cdn.acme.example/logo.png"
    assert page["jobs"][0]["apply_url"] == "Http://apply.acme.example/a"


def test_long_unknown_field_name_is_reported_by_its_first_100_characters():
    """An unknown field's name is cut to 100 characters in the error path."""
    name = "x" * 99 + "yz" + "w" * 200
    assert _errors({"company": "A", name: 1}) == {"x" * 99 + "y": "unknown field"}
    assert _errors({"company": "A", "jobs": [{"id": "a", "title": "T", name: 1}]}) == {
        "jobs[0]." + "x" * 99 + "y": "unknown field"
    }


def test_unknown_field_names_that_are_not_text_are_shown_as_repr():
    """A non-string key or one with a lone surrogate is reported by its repr, so every path is valid Unicode."""
    errors = _errors({"company": "A", 7: 1, "bad\ud800": 2, None: 3})
    assert errors == {"7": "unknown field", "'bad\\ud800'": "unknown field", "None": "unknown field"}
    for path in errors:
        path.encode("utf-8")
    assert _errors({"company": "A", "jobs": [{"id": "a", "title": "T", 1.5: "x"}]}) == {
        "jobs[0].1.5": "unknown field"
    }


def test_find_job_returns_the_job_with_that_id():
    """find_job returns the job whose id matches exactly, and None for any other id."""
    page = validate_page(
        {"company": "A", "jobs": [{"id": "eng-1", "title": "Engineer"}, {"id": "ops-2", "title": "Operator"}]}
    )
    assert find_job(page, "ops-2") == {"id": "ops-2", "title": "Operator"}
    assert find_job(page, "eng-1") == {"id": "eng-1", "title": "Engineer"}
    assert find_job(page, "ENG-1") is None
    assert find_job(page, "eng") is None
    assert find_job({"company": "A"}, "eng-1") is None


# -- version 2 ----------------------------------------------------------------------------

from datetime import datetime, timezone  # noqa: E402

from jobhost.pagedoc import (  # noqa: E402
    contrast_with_white,
    is_expired,
    job_expires_at,
    live_jobs,
    next_expiry,
    upgrade_page,
)


def _v2(**page) -> dict:
    return {"version": 2, "company": "A", **page}


def _v2_job(**job) -> dict:
    return _v2(jobs=[{"id": "a", "title": "T", **job}])


def test_version_1_is_upgraded_without_losing_a_field():
    """Every field of a full version 1 document survives the upgrade; location becomes a location label."""
    v1 = {
        "company": "Acme", "intro": "Hello", "logo_url": "https://cdn.acme.example/l.png",
        "jobs": [{"id": "a", "title": "T", "location": "Mojave, CA", "employment_type": "FULL_TIME",
                  "description": "D", "apply_url": "https://x.example/a", "posted": "2026-11-01"}],
    }
    page = validate_page(v1)
    assert page == {
        "version": 2, "company": "Acme", "intro": "Hello", "logo_url": "https://cdn.acme.example/l.png",
        "jobs": [{"id": "a", "title": "T", "locations": [{"label": "Mojave, CA"}], "employment_type": "FULL_TIME",
                  "description": "D", "apply_url": "https://x.example/a", "posted": "2026-11-01"}],
    }
    assert validate_page(page) == page
    assert validate_page({**v1, "version": 1}) == page
    assert upgrade_page(v1) == page
    assert upgrade_page(None) is None
    hand_edited = {"company": "", "jobs": "x"}
    assert upgrade_page(hand_edited) is hand_edited


def test_version_2_fields_in_a_version_1_document_say_to_send_version_2():
    """A v2 field without "version": 2 is an unknown field whose message says how to use it."""
    assert _errors({"company": "A", "accent_color": "#000000", "other": 1}) == {
        "accent_color": 'unknown field (a version 2 field: send "version": 2)',
        "other": "unknown field",
    }
    assert _errors({"company": "A", "jobs": [{"id": "a", "title": "T", "department": "X"}]}) == {
        "jobs[0].department": 'unknown field (a version 2 field: send "version": 2)'
    }
    assert _errors(_v2_job(location="Berlin")) == {"jobs[0].location": "unknown field"}
    assert _errors({"company": "A", "version": 3}) == {"version": "must be 1 or 2"}
    assert _errors({"company": "A", "version": True}) == {"version": "must be 1 or 2"}


def test_full_version_2_document_is_normalised():
    """Codes are upper-cased, the colour written #rrggbb, duplicate remote countries dropped."""
    page = validate_page(_v2(
        lang=" de-CH ", website="https://acme.example", accent_color="#05A",
        jobs=[{"id": "a", "title": "T", "department": " Eng ", "locations": [{"locality": "Zürich", "country": "ch"}],
               "remote": {"countries": ["de", "DE", "at"]}, "valid_through": "2027-01-31",
               "salary": {"currency": "chf", "min": 1, "max": 2.5, "unit": "month"}}],
    ))
    assert page["lang"] == "de-CH" and page["accent_color"] == "#0055aa"
    assert page["jobs"][0] == {
        "id": "a", "title": "T", "department": "Eng", "locations": [{"locality": "Zürich", "country": "CH"}],
        "remote": {"countries": ["DE", "AT"]}, "valid_through": "2027-01-31",
        "salary": {"currency": "CHF", "min": 1, "max": 2.5, "unit": "MONTH"},
    }
    assert validate_page(page) == page


@pytest.mark.parametrize(
    "doc, path, message_part",
    [
        (_v2(logo_url="javascript:alert(1)"), "logo_url", "https"),
        (_v2(logo_url="http://cdn.example/l.png"), "logo_url", "https"),
        (_v2(logo_url="https://cdn.example/" + "l" * 10_000_000), "logo_url", "at most 2048"),
        (_v2(accent_color="red;}body{display:none"), "accent_color", "hex colour"),
        (_v2(accent_color="#0645ad; x"), "accent_color", "hex colour"),
        (_v2(accent_color="rgb(0,0,0)"), "accent_color", "hex colour"),
        (_v2(accent_color=7), "accent_color", "hex colour"),
        (_v2(accent_color="#ffff00"), "accent_color", "contrast against white is 1.07:1"),
        (_v2(accent_color="#777777"), "accent_color", "at least 4.5:1"),
        (_v2(website="javascript:alert(1)"), "website", "http"),
        (_v2(lang="en\"><script>"), "lang", "BCP 47"),
        (_v2_job(locations=[{}]), "jobs[0].locations[0]", "at least one of"),
        (_v2_job(locations=[{"country": "Germany"}]), "jobs[0].locations[0].country", "alpha-2"),
        (_v2_job(locations=[{"locality": "x" * 201}]), "jobs[0].locations[0].locality", "at most 200"),
        (_v2_job(locations=[{"label": "x", "planet": "Mars"}]), "jobs[0].locations[0].planet", "unknown"),
        (_v2_job(locations=[{"label": "x"}] * 21), "jobs[0].locations", "at most 20"),
        (_v2_job(locations="Berlin"), "jobs[0].locations", "list"),
        (_v2_job(remote=True), "jobs[0].remote", "object"),
        (_v2_job(remote={"countries": []}), "jobs[0].remote.countries", "required"),
        (_v2_job(remote={"countries": ["USA"]}), "jobs[0].remote.countries[0]", "alpha-2"),
        (_v2_job(department="d" * 101), "jobs[0].department", "at most 100"),
        (_v2_job(valid_through="2027-02-30"), "jobs[0].valid_through", "YYYY-MM-DD"),
        (_v2_job(valid_through="2027-01-31T10:00:00"), "jobs[0].valid_through", "offset"),
        (_v2_job(valid_through="tomorrow"), "jobs[0].valid_through", "YYYY-MM-DD"),
        (_v2_job(salary={"currency": "EURO", "min": 1, "unit": "YEAR"}), "jobs[0].salary.currency", "ISO 4217"),
        (_v2_job(salary={"currency": "EUR", "min": -1, "unit": "YEAR"}), "jobs[0].salary.min", "number"),
        (_v2_job(salary={"currency": "EUR", "min": True, "unit": "YEAR"}), "jobs[0].salary.min", "number"),
        (_v2_job(salary={"currency": "EUR", "min": float("nan"), "unit": "YEAR"}), "jobs[0].salary.min", "number"),
        (_v2_job(salary={"currency": "EUR", "min": 5, "max": 4, "unit": "YEAR"}), "jobs[0].salary.max", "less than min"),
        (_v2_job(salary={"currency": "EUR", "min": 5, "unit": "fortnight"}), "jobs[0].salary.unit", "HOUR"),
        (_v2_job(salary=50000), "jobs[0].salary", "object"),
    ],
)
def test_version_2_field_errors(doc, path, message_part):
    """Each bad version 2 field, hostile branding included, is refused naming exactly its path."""
    errors = _errors(doc)
    assert list(errors) == [path], errors
    assert message_part in errors[path]


def test_contrast_is_computed_as_wcag_defines_it():
    """Black on white is 21:1, white on white 1:1, and #767676 (the usual AA grey) just passes 4.5:1."""
    assert round(contrast_with_white("#000000"), 2) == 21.0
    assert contrast_with_white("#ffffff") == 1.0
    assert 4.5 <= contrast_with_white("#767676") < 4.6
    assert contrast_with_white("#777777") < 4.5
    assert validate_page(_v2(accent_color="#767676"))["accent_color"] == "#767676"


def test_expiry_of_dates_and_date_times():
    """A date is open through that day UTC; a date-time expires at that instant; no valid_through never expires."""
    assert job_expires_at({"valid_through": "2027-01-31"}) == datetime(2027, 2, 1, tzinfo=timezone.utc)
    assert job_expires_at({"valid_through": "2027-01-31T17:00:00+01:00"}) == datetime(
        2027, 1, 31, 16, tzinfo=timezone.utc
    )
    assert job_expires_at({}) is None
    last_second = datetime(2027, 1, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert not is_expired({"valid_through": "2027-01-31"}, last_second)
    assert is_expired({"valid_through": "2027-01-31"}, datetime(2027, 2, 1, tzinfo=timezone.utc))
    page = validate_page(_v2(jobs=[
        {"id": "a", "title": "T", "valid_through": "2027-01-31"},
        {"id": "b", "title": "T"},
        {"id": "c", "title": "T", "valid_through": "2027-03-01"},
    ]))
    feb = datetime(2027, 2, 15, tzinfo=timezone.utc)
    assert [j["id"] for j in live_jobs(page, feb)] == ["b", "c"]
    assert next_expiry(page["jobs"], feb) == datetime(2027, 3, 2, tzinfo=timezone.utc)
    assert next_expiry(page["jobs"], datetime(2027, 4, 1, tzinfo=timezone.utc)) is None
