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
