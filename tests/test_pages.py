"""Tests for jobhost.web.pages: the page schema, and HTML/JSON-LD/JSON that escape everything."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import string
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobhost.errors import PageInvalid
from jobhost.web import pages
from jobhost.pagedoc import EMPLOYMENT_TYPES, MAX_JOBS, validate_page
from jobhost.web.pages import json_for_script


def _page() -> dict[str, Any]:
    return {
        "company": "Acme Corp",
        "intro": "We make anvils.\nCome work with us.",
        "logo_url": "https://cdn.acme.example/logo.png",
        "jobs": [
            {
                "id": "eng-1",
                "title": "Anvil Engineer",
                "location": "Berlin",
                "employment_type": "FULL_TIME",
                "description": "Design anvils.\nTest them on coyotes.",
                "apply_url": "https://apply.acme.example/eng-1?src=careers&x=1",
                "posted": "2024-02-29",
            },
            {"id": "ops_2", "title": "Rocket Operator"},
        ],
    }


def _errors(doc: object) -> dict[str, str]:
    with pytest.raises(PageInvalid) as info:
        validate_page(doc)
    return dict(info.value.errors)


def _render(d) -> str:
    """The result of a rendering Deferred (flattening plain tags completes at once)."""
    results: list = []
    d.addBoth(results.append)
    assert len(results) == 1 and isinstance(results[0], bytes), results
    return results[0].decode("utf-8")


def _json_ld(html: str) -> list[Any]:
    scripts = re.findall(r'<script type="application/ld\+json">(.*?)</script>', html, re.S)
    return [json.loads(s) for s in scripts]


# -- validation ------------------------------------------------------------------


def test_valid_page_is_returned_normalised():
    """A valid page comes back with text stripped, CRLF as LF, employment type upper-cased and empty optionals dropped."""
    doc = _page()
    doc["company"] = "  Acme Corp \n"
    doc["intro"] = "Line one\r\nLine two  "
    doc["jobs"][0]["employment_type"] = " part_time "
    doc["jobs"][1]["location"] = "   "
    doc["jobs"][1]["description"] = None
    page = validate_page(doc)
    assert page["company"] == "Acme Corp"
    assert page["intro"] == "Line one\nLine two"
    assert page["jobs"][0]["employment_type"] == "PART_TIME"
    assert page["jobs"][1] == {"id": "ops_2", "title": "Rocket Operator"}
    assert validate_page(page) == page


def test_jobs_default_to_empty_list():
    """A page without jobs validates with an empty job list."""
    assert validate_page({"company": "Acme"}) == {"version": 2, "company": "Acme", "jobs": []}


def test_input_is_not_modified():
    """Validation builds a new document and leaves its input unchanged."""
    doc = _page()
    doc["company"] = " Acme "
    before = copy.deepcopy(doc)
    validate_page(doc)
    assert doc == before


@pytest.mark.parametrize(
    "change, path, message_part",
    [
        (lambda d: d.pop("company"), "company", "required"),
        (lambda d: d.update(company=""), "company", "empty"),
        (lambda d: d.update(company="   "), "company", "empty"),
        (lambda d: d.update(company="x" * 201), "company", "at most 200"),
        (lambda d: d.update(company=7), "company", "string"),
        (lambda d: d.update(company="Acme\x00"), "company", "control"),
        (lambda d: d.update(company="Acme\nCorp"), "company", "single line"),
        (lambda d: d.update(company="bad \ud800 surrogate"), "company", "Unicode"),
        (lambda d: d.update(intro="x" * 5001), "intro", "at most 5000"),
        (lambda d: d.update(intro=["x"]), "intro", "string"),
        (lambda d: d.update(intro="bell\x07"), "intro", "control"),
        (lambda d: d.update(logo_url="http://cdn.acme.example/logo.png"), "logo_url", "https"),
        (lambda d: d.update(logo_url="javascript:alert(1)"), "logo_url", "https"),
        (lambda d: d.update(logo_url="https://"), "logo_url", "https"),
        (lambda d: d.update(logo_url="https://a b.example/x"), "logo_url", "spaces"),
        (lambda d: d.update(logo_url="https://x.example:99999/"), "logo_url", "https"),
        (lambda d: d.update(jobs={"id": "x"}), "jobs", "list"),
        (lambda d: d.update(jobs=["nope"]), "jobs[0]", "object"),
        (lambda d: d.update(surprise=1), "surprise", "unknown"),
        (lambda d: d["jobs"][0].pop("id"), "jobs[0].id", "required"),
        (lambda d: d["jobs"][0].update(id=""), "jobs[0].id", "1-64"),
        (lambda d: d["jobs"][0].update(id="a" * 65), "jobs[0].id", "1-64"),
        (lambda d: d["jobs"][0].update(id="../etc"), "jobs[0].id", "1-64"),
        (lambda d: d["jobs"][0].update(id="a b"), "jobs[0].id", "1-64"),
        (lambda d: d["jobs"][0].update(id=12), "jobs[0].id", "1-64"),
        (lambda d: d["jobs"][1].update(id="eng-1"), "jobs[1].id", "duplicate"),
        (lambda d: d["jobs"][1].pop("title"), "jobs[1].title", "required"),
        (lambda d: d["jobs"][1].update(title=""), "jobs[1].title", "empty"),
        (lambda d: d["jobs"][1].update(title="t" * 201), "jobs[1].title", "at most 200"),
        (lambda d: d["jobs"][1].update(title={"en": "x"}), "jobs[1].title", "string"),
        (lambda d: d["jobs"][0].update(location="l" * 201), "jobs[0].location", "at most 200"),
        (lambda d: d["jobs"][0].update(location=False), "jobs[0].location", "string"),
        (lambda d: d["jobs"][0].update(employment_type="FULLTIME"), "jobs[0].employment_type", "one of"),
        (lambda d: d["jobs"][0].update(employment_type=1), "jobs[0].employment_type", "one of"),
        (lambda d: d["jobs"][0].update(description="d" * 20001), "jobs[0].description", "at most 20000"),
        (lambda d: d["jobs"][0].update(description="nul\x00"), "jobs[0].description", "control"),
        (lambda d: d["jobs"][0].update(apply_url="ftp://x.example/"), "jobs[0].apply_url", "http"),
        (lambda d: d["jobs"][0].update(apply_url="javascript:alert(1)"), "jobs[0].apply_url", "http"),
        (lambda d: d["jobs"][0].update(apply_url="/relative"), "jobs[0].apply_url", "http"),
        (lambda d: d["jobs"][0].update(apply_url="https://x.example\\@evil/"), "jobs[0].apply_url", "backslash"),
        (lambda d: d["jobs"][0].update(apply_url="https://" + "a" * 2100 + ".example/"), "jobs[0].apply_url", "2048"),
        (lambda d: d["jobs"][0].update(posted="2023-02-30"), "jobs[0].posted", "YYYY-MM-DD"),
        (lambda d: d["jobs"][0].update(posted="29.02.2024"), "jobs[0].posted", "YYYY-MM-DD"),
        (lambda d: d["jobs"][0].update(posted="2024-02-29T10:00:00"), "jobs[0].posted", "YYYY-MM-DD"),
        (lambda d: d["jobs"][0].update(posted=20240229), "jobs[0].posted", "YYYY-MM-DD"),
        (lambda d: d["jobs"][0].update(salary="lots"), "jobs[0].salary", "unknown"),
    ],
)
def test_each_field_error_is_reported_at_its_path(change, path, message_part):
    """Each kind of bad field raises PageInvalid naming exactly that field's path."""
    doc = _page()
    change(doc)
    errors = _errors(doc)
    assert list(errors) == [path]
    assert message_part in errors[path]


def test_every_error_is_reported_at_once():
    """PageInvalid carries every problem in the document, in document order."""
    doc = {
        "company": "",
        "extra": True,
        "jobs": [{"id": "a", "title": "x"}, {"id": "a"}, {"title": "y", "posted": "soon"}],
    }
    errors = _errors(doc)
    assert list(errors) == [
        "extra",
        "company",
        "jobs[1].title",
        "jobs[1].id",
        "jobs[2].id",
        "jobs[2].posted",
    ]
    described = str(PageInvalid(errors=errors))
    for path, message in errors.items():
        assert f"{path}: {message}" in described


def test_document_that_is_not_an_object():
    """A document that is not a JSON object is one error at the root path."""
    for doc in (None, [], "page", 3):
        assert list(_errors(doc)) == [""]


def test_job_limit():
    """Exactly MAX_JOBS jobs are accepted; one more is a single error on ``jobs``."""
    jobs = [{"id": f"j{i}", "title": "T"} for i in range(MAX_JOBS)]
    assert len(validate_page({"company": "A", "jobs": jobs})["jobs"]) == MAX_JOBS
    errors = _errors({"company": "A", "jobs": jobs + [{"id": "extra", "title": "T"}]})
    assert list(errors) == ["jobs"]
    assert str(MAX_JOBS) in errors["jobs"]


def test_limits_are_inclusive():
    """Text and ids at exactly their maximum length are accepted."""
    doc = {
        "company": "c" * 200,
        "intro": "i" * 5000,
        "jobs": [
            {
                "id": "x" * 64,
                "title": "t" * 200,
                "location": "l" * 200,
                "description": "d" * 20000,
                "employment_type": "PER_DIEM",
            }
        ],
    }
    assert validate_page(doc)["jobs"][0]["id"] == "x" * 64


def test_null_optionals_are_absent():
    """Optional fields given as null are treated as absent."""
    doc = {"company": "A", "intro": None, "logo_url": None, "jobs": None}
    assert validate_page(doc) == {"version": 2, "company": "A", "jobs": []}


json_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(exclude_categories=()), max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=25,
)
field_names = st.sampled_from(
    ["company", "intro", "logo_url", "jobs", "id", "title", "location", "employment_type",
     "description", "apply_url", "posted", "other"]
)
job_junk = st.dictionaries(field_names, json_junk, max_size=8)
page_junk = st.fixed_dictionaries(
    {},
    optional={
        "company": json_junk,
        "intro": json_junk,
        "logo_url": json_junk,
        "jobs": st.lists(job_junk | json_junk, max_size=5) | json_junk,
    },
)


@given(json_junk | page_junk)
def test_junk_raises_only_page_invalid(doc):
    """Whatever JSON-shaped junk it is given, validate_page returns a page or raises PageInvalid."""
    try:
        page = validate_page(doc)
    except PageInvalid as e:
        assert e.errors
        assert all(isinstance(path, str) and isinstance(msg, str) for path, msg in e.errors.items())
        str(e)
    else:
        assert validate_page(page) == page


job_ids = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
plain_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=60).filter(
    lambda s: s.strip()
)
valid_jobs = st.lists(
    st.fixed_dictionaries(
        {"id": job_ids, "title": plain_text},
        optional={
            "location": plain_text,
            "employment_type": st.sampled_from(sorted(EMPLOYMENT_TYPES)),
            "description": plain_text,
            "posted": st.dates().map(lambda d: d.isoformat()),
        },
    ),
    max_size=5,
    unique_by=lambda j: j["id"],
)


@given(plain_text, valid_jobs)
def test_generated_valid_pages_validate_and_render(company, jobs):
    """Any page built from the schema validates, is stable under revalidation, and renders every title escaped."""
    page = validate_page({"company": company, "jobs": jobs})
    assert validate_page(page) == page
    html = _render(pages.render_list_page("jobs.acme.example", page))
    (item_list,) = _json_ld(html)
    assert [e["name"] for e in item_list["itemListElement"]] == [j["title"] for j in page["jobs"]]
    for job in page["jobs"]:
        job_html = _render(pages.render_job_page("jobs.acme.example", page, job))
        (posting,) = _json_ld(job_html)
        assert posting["title"] == job["title"]


# -- JSON-LD and rendering --------------------------------------------------------------


@given(json_junk)
def test_json_for_script_cannot_close_the_script(value):
    """Script JSON never contains < > & (or the JS line separators) and decodes to the same value."""
    text = json_for_script(value)
    assert not set(text) & set("<>&\u2028\u2029")
    # Compared re-serialised, since NaN != NaN.
    assert json.dumps(json.loads(text)) == json.dumps(value)


def test_css_survives_the_flattener():
    """The inline CSS holds no character the flattener would turn into an entity."""
    assert not set(pages._CSS) & set("<>&")
    html = _render(pages.render_empty_page("jobs.acme.example"))
    assert pages._CSS in html


def test_job_posting_fields():
    """The JobPosting names title, description, date, type, organisation, place and canonical URL."""
    page = validate_page(_page())
    posting = pages.job_posting("jobs.acme.example", page, page["jobs"][0])
    assert posting["@context"] == "https://schema.org"
    assert posting["@type"] == "JobPosting"
    assert posting["title"] == "Anvil Engineer"
    assert posting["description"] == "<p>Design anvils.</p><p>Test them on coyotes.</p>"
    assert posting["datePosted"] == "2024-02-29"
    assert posting["employmentType"] == "FULL_TIME"
    assert posting["hiringOrganization"] == {
        "@type": "Organization",
        "name": "Acme Corp",
        "logo": "https://cdn.acme.example/logo.png",
    }
    assert posting["jobLocation"] == [
        {"@type": "Place", "address": {"@type": "PostalAddress", "addressLocality": "Berlin"}}
    ]
    assert posting["url"] == "https://jobs.acme.example/jobs/eng-1"
    assert posting["directApply"] is False


def test_job_posting_without_optional_fields():
    """A bare job's JobPosting leaves out what is unknown and still has a description."""
    page = validate_page(_page())
    posting = pages.job_posting("jobs.acme.example", page, page["jobs"][1])
    assert "datePosted" not in posting and "jobLocation" not in posting
    assert "employmentType" not in posting
    assert posting["description"] == "<p>Rocket Operator at Acme Corp</p>"


def test_job_page_description_lines_become_paragraphs():
    """Each line of a job's description is its own paragraph, and the apply link is escaped."""
    page = validate_page(_page())
    html = _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][0]))
    assert "<p>Design anvils.</p><p>Test them on coyotes.</p>" in html
    assert 'href="https://apply.acme.example/eng-1?src=careers&amp;x=1"' in html
    assert '<time datetime="2024-02-29">' in html
    assert "Full-time" in html
    assert html.startswith("<!DOCTYPE html>\n<html lang=\"en\">")


def test_empty_page_shows_unicode_hostname():
    """The no-page page names the hostname in its display (U-label) form."""
    html = _render(pages.render_empty_page("xn--bcher-kva.example"))
    assert "<h1>bücher.example</h1>" in html
    assert "No open positions" in html


def test_jobs_json_lists_openings_with_urls():
    """/jobs.json's body has the company and each job with its canonical URL."""
    page = validate_page(_page())
    doc = json.loads(pages.render_jobs_json("jobs.acme.example", page))
    assert doc["company"] == "Acme Corp"
    assert [j["id"] for j in doc["jobs"]] == ["eng-1", "ops_2"]
    assert doc["jobs"][1]["url"] == "https://jobs.acme.example/jobs/ops_2"
    assert json.loads(pages.render_jobs_json("jobs.acme.example", None))["jobs"] == []


def test_script_json_keeps_non_ascii_text_as_is():
    """Non-ASCII text stays literal in script JSON (UTF-8 page), not \\u-escaped; only the unsafe five are."""
    assert json_for_script({"name": "Bücher & Co\u2028"}) == '{"name":"Bücher \\u0026 Co\\u2028"}'


def test_jobs_json_body_is_indented_utf8_ending_in_newline():
    """/jobs.json is one-space-indented UTF-8 JSON (non-ASCII literal) ending in a newline."""
    body = pages.render_jobs_json("jobs.acme.example", {"company": "Bü", "jobs": [{"id": "a", "title": "T"}]})
    assert body == (
        '{\n "hostname": "jobs.acme.example",\n "company": "Bü",\n "jobs": [\n  {\n   "id": "a",\n'
        '   "title": "T",\n   "url": "https://jobs.acme.example/jobs/a"\n  }\n ]\n}\n'
    ).encode("utf-8")
    assert json.loads(pages.render_jobs_json("jobs.acme.example", None)) == {
        "hostname": "jobs.acme.example",
        "company": None,
        "jobs": [],
    }


def test_item_list_positions_count_from_one():
    """The ItemList numbers the openings 1, 2, ... in page order and counts them."""
    page = validate_page(_page())
    listing = pages.item_list("jobs.acme.example", page)
    assert listing["numberOfItems"] == 2
    assert [(e["position"], e["name"]) for e in listing["itemListElement"]] == [
        (1, "Anvil Engineer"),
        (2, "Rocket Operator"),
    ]
    assert listing["name"] == "Open positions at Acme Corp"


def test_organization_without_logo_has_no_logo():
    """A page without logo_url gives an Organization without ``logo`` and a header without an image."""
    doc = _page()
    del doc["logo_url"]
    page = validate_page(doc)
    posting = pages.job_posting("jobs.acme.example", page, page["jobs"][0])
    assert posting["hiringOrganization"] == {"@type": "Organization", "name": "Acme Corp"}
    for html in (
        _render(pages.render_list_page("jobs.acme.example", page)),
        _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][0])),
    ):
        assert "<img" not in html


def test_logo_is_shown_with_company_alt_text():
    """With a logo_url the header shows the logo, described as the company's, beside the heading."""
    page = validate_page(_page())
    html = _render(pages.render_list_page("jobs.acme.example", page))
    assert (
        '<header><img src="https://cdn.acme.example/logo.png" alt="Acme Corp logo" />'
        "<h1>Careers at Acme Corp</h1></header>"
    ) in html
    html = _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][1]))
    assert (
        '<header><img src="https://cdn.acme.example/logo.png" alt="Acme Corp logo" />'
        '<p><a href="/">All openings at Acme Corp</a></p></header>'
    ) in html


def test_list_page_shows_each_jobs_facts_and_the_count():
    """Each opening lists location, type and date separated by dots; a bare opening has no facts line."""
    page = validate_page(_page())
    html = _render(pages.render_list_page("jobs.acme.example", page))
    assert '<h2 id="openings">Open positions (2)</h2>' in html
    assert (
        '<li><a href="/jobs/eng-1">Anvil Engineer</a><p class="meta">Berlin \u00b7 Full-time \u00b7 '
        'Posted <time datetime="2024-02-29">2024-02-29</time></p></li>'
        '<li><a href="/jobs/ops_2">Rocket Operator</a></li>'
    ) in html
    assert "<p>We make anvils.</p><p>Come work with us.</p>" in html
    assert '<a href="/jobs.json">JSON</a>' in html


def test_list_page_without_jobs_says_so():
    """A page with no openings says "No open positions right now." and lists nothing."""
    page = validate_page({"company": "Acme Corp"})
    html = _render(pages.render_list_page("jobs.acme.example", page))
    assert "<p>No open positions right now.</p>" in html
    assert "Open positions (0)" in html
    assert "<ul" not in html
    (listing,) = _json_ld(html)
    assert listing["itemListElement"] == []


def test_job_page_facts_name_the_company_first():
    """A job page's facts line starts with the company; a bare job shows only the company and no apply link."""
    page = validate_page(_page())
    html = _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][0]))
    assert (
        '<p class="meta">Acme Corp \u00b7 Berlin \u00b7 Full-time \u00b7 '
        'Posted <time datetime="2024-02-29">2024-02-29</time></p>'
    ) in html
    assert (
        '<a href="https://apply.acme.example/eng-1?src=careers&amp;x=1" rel="noopener noreferrer" '
        'class="apply">Apply for this position</a>'
    ) in html
    assert "<title>Anvil Engineer \u2013 Acme Corp</title>" in html
    html = _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][1]))
    assert '<article><h1>Rocket Operator</h1><p class="meta">Acme Corp</p></article>' in html
    assert "Apply for this position" not in html


def test_paragraphs_are_stripped_and_blank_lines_dropped():
    """Multi-line text becomes one paragraph per non-blank line, each without surrounding spaces."""
    page = validate_page(
        {
            "company": "Acme Corp",
            "intro": "First line   \n\n   \t\n   Second line",
            "jobs": [{"id": "a", "title": "T", "description": "Do things.  \n \n  Do more."}],
        }
    )
    html = _render(pages.render_list_page("jobs.acme.example", page))
    assert '<main id="main"><p>First line</p><p>Second line</p><section' in html
    html = _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][0]))
    assert '<p class="meta">Acme Corp</p><p>Do things.</p><p>Do more.</p></article>' in html


def test_pages_without_structured_data_have_no_script():
    """The no-page and not-found pages carry no JSON-LD script element at all."""
    for html in (
        _render(pages.render_empty_page("jobs.acme.example")),
        _render(pages.render_not_found_page("jobs.acme.example", None)),
        _render(pages.render_not_found_page("jobs.acme.example", validate_page(_page()))),
    ):
        assert "<script" not in html


def test_not_found_page_names_the_company_or_the_hostname():
    """The 404 page links home naming the company, or the hostname's display form without a page."""
    html = _render(pages.render_not_found_page("jobs.acme.example", validate_page(_page())))
    assert '<a href="/">See all open positions at Acme Corp</a>' in html
    assert "<title>Page not found \u2013 Acme Corp</title>" in html
    html = _render(pages.render_not_found_page("xn--bcher-kva.example", None))
    assert '<a href="/">See all open positions at bücher.example</a>' in html
    assert "<h1>Page not found</h1>" in html


# -- version 2: structured data against Google's list -----------------------------------

_GOOGLE = json.loads((Path(__file__).parent / "data" / "google_jobposting.json").read_text())
_ISO_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_DATETIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})")


def _v2_page() -> dict[str, Any]:
    """A version 2 page with an on-site, a hybrid and a remote opening, all details given."""
    common = {
        "employment_type": "FULL_TIME",
        "description": "Build anvils.\nTest them.",
        "apply_url": "https://apply.acme.example/x",
        "posted": "2026-11-01",
        "valid_through": "2027-01-31",
        "salary": {"currency": "eur", "min": 60000, "max": 80000, "unit": "year"},
    }
    return {
        "version": 2,
        "company": "Acme Corp",
        "website": "https://acme.example",
        "logo_url": "https://cdn.acme.example/logo.png",
        "accent_color": "#0B5CAD",
        "lang": "en-GB",
        "jobs": [
            {**common, "id": "onsite", "title": "Anvil Engineer", "department": "Engineering",
             "locations": [{"street_address": "1 Anvil Way", "locality": "Berlin", "region": "BE",
                            "postal_code": "10115", "country": "de"}]},
            {**common, "id": "hybrid", "title": "Rocket Planner", "department": "Engineering",
             "locations": [{"locality": "Austin", "region": "TX", "country": "US"}],
             "remote": {"countries": ["us", "CA"]}},
            {**common, "id": "remote", "title": "Support Lead", "department": "Support",
             "remote": {"countries": ["GB"]}, "valid_through": "2027-01-31T17:00:00+01:00",
             "salary": {"currency": "GBP", "min": 40, "unit": "HOUR"}},
        ],
    }


def _check_against_google(posting: dict[str, Any]) -> list[str]:
    """Every way ``posting`` falls short of the checked-in list of Google's required/recommended properties."""
    problems = []
    remote = posting.get("jobLocationType") == "TELECOMMUTE"
    for name, rule in _GOOGLE["required"].items():
        if name == "jobLocation" and remote and name not in posting:
            continue
        if name not in posting:
            problems.append(f"required {name} missing")
    for name, rule in _GOOGLE["recommended"].items():
        if "only_for" in rule and not remote:
            continue
        target = posting
        for part in name.split(".")[:-1]:
            target = target.get(part, {})
        if name.split(".")[-1] not in target:
            problems.append(f"recommended {name} missing")
    for name in _GOOGLE["not_expressed"]:
        if name in posting:
            problems.append(f"{name} is emitted but listed as not expressed")
    if not _ISO_DATE_RE.fullmatch(posting.get("datePosted", "")):
        problems.append("datePosted is not an ISO 8601 date")
    if not _ISO_DATETIME_RE.fullmatch(posting.get("validThrough", "")):
        problems.append("validThrough is not an ISO 8601 date-time")
    if posting.get("description") == posting.get("title") or not str(posting.get("description")).startswith("<p>"):
        problems.append("description is not HTML distinct from the title")
    org = posting.get("hiringOrganization", {})
    if org.get("@type") != "Organization" or not org.get("name"):
        problems.append("hiringOrganization is not an Organization with a name")
    places = posting.get("jobLocation", [])
    for place in places if isinstance(places, list) else [places]:
        address = place.get("address", {})
        if place.get("@type") != "Place" or address.get("@type") != "PostalAddress":
            problems.append("jobLocation is not a Place with a PostalAddress")
        for key in _GOOGLE["required"]["jobLocation"]["address_required"]:
            if key not in address:
                problems.append(f"jobLocation.address.{key} missing")
        if set(address) - {"@type", *_GOOGLE["required"]["jobLocation"]["address_properties"]}:
            problems.append("jobLocation.address has properties Google does not list")
    if remote:
        requirements = posting.get("applicantLocationRequirements") or []
        if not requirements or any(r.get("@type") not in ("Country", "State") for r in requirements):
            problems.append("remote job without Country applicantLocationRequirements")
    if posting.get("employmentType") not in _GOOGLE["recommended"]["employmentType"]["values"]:
        problems.append("employmentType not one of Google's values")
    salary = posting.get("baseSalary", {})
    value = salary.get("value", {})
    if (
        salary.get("@type") != "MonetaryAmount"
        or not re.fullmatch(r"[A-Z]{3}", salary.get("currency", ""))
        or value.get("@type") != "QuantitativeValue"
        or value.get("unitText") not in ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")
        or not ("value" in value or {"minValue", "maxValue"} <= set(value))
    ):
        problems.append("baseSalary is not a MonetaryAmount with a QuantitativeValue")
    if posting.get("identifier", {}).get("@type") != "PropertyValue":
        problems.append("identifier is not a PropertyValue")
    if posting.get("directApply") not in (True, False):
        problems.append("directApply is not a boolean")
    return problems


def test_google_list_names_its_source():
    """The checked-in list of Google's JobPosting properties says where it comes from and what it leaves out."""
    assert _GOOGLE["source"].startswith("https://developers.google.com/search/docs/")
    assert set(_GOOGLE["required"]) == {"datePosted", "description", "hiringOrganization", "jobLocation", "title"}


@pytest.mark.parametrize("job_id", ["onsite", "hybrid", "remote"])
def test_job_posting_json_ld_passes_googles_list(job_id):
    """The JSON-LD of on-site, hybrid and remote job pages has every required and recommended property, well typed."""
    page = validate_page(_v2_page())
    job = next(j for j in page["jobs"] if j["id"] == job_id)
    html = _render(pages.render_job_page("jobs.acme.example", page, job))
    (posting,) = _json_ld(html)
    assert _check_against_google(posting) == []
    assert ("jobLocation" in posting) == (job_id != "remote")
    assert (posting.get("jobLocationType") == "TELECOMMUTE") == (job_id != "onsite")


def test_google_check_catches_what_google_would_refuse():
    """The checker itself flags a posting without address country, remote countries or a salary unit."""
    page = validate_page(_v2_page())
    posting = pages.job_posting("jobs.acme.example", page, page["jobs"][1])
    assert _check_against_google(posting) == []
    broken = copy.deepcopy(posting)
    del broken["jobLocation"][0]["address"]["addressCountry"]
    broken["applicantLocationRequirements"] = []
    del broken["baseSalary"]["value"]["unitText"]
    del broken["datePosted"]
    assert _check_against_google(broken) == [
        "required datePosted missing",
        "datePosted is not an ISO 8601 date",
        "jobLocation.address.addressCountry missing",
        "remote job without Country applicantLocationRequirements",
        "baseSalary is not a MonetaryAmount with a QuantitativeValue",
    ]


def test_job_posting_version_2_fields():
    """Places become PostalAddresses, remote countries applicantLocationRequirements, salary a MonetaryAmount."""
    page = validate_page(_v2_page())
    onsite, hybrid, remote = (pages.job_posting("jobs.acme.example", page, j) for j in page["jobs"])
    assert onsite["jobLocation"] == [{"@type": "Place", "address": {
        "@type": "PostalAddress", "streetAddress": "1 Anvil Way", "addressLocality": "Berlin",
        "addressRegion": "BE", "postalCode": "10115", "addressCountry": "DE"}}]
    assert hybrid["applicantLocationRequirements"] == [{"@type": "Country", "name": "US"},
                                                      {"@type": "Country", "name": "CA"}]
    assert onsite["baseSalary"] == {"@type": "MonetaryAmount", "currency": "EUR", "value": {
        "@type": "QuantitativeValue", "unitText": "YEAR", "minValue": 60000, "maxValue": 80000}}
    assert remote["baseSalary"]["value"] == {"@type": "QuantitativeValue", "unitText": "HOUR", "value": 40}
    assert onsite["validThrough"] == "2027-01-31T23:59:59Z"
    assert remote["validThrough"] == "2027-01-31T17:00:00+01:00"
    assert onsite["hiringOrganization"] == {"@type": "Organization", "name": "Acme Corp",
                                            "sameAs": "https://acme.example", "logo": "https://cdn.acme.example/logo.png"}
    assert "jobLocationType" not in onsite


def test_job_posting_date_falls_back_to_the_given_default():
    """A job without a posted date takes default_posted as datePosted (the registration day)."""
    page = validate_page({"company": "A", "jobs": [{"id": "a", "title": "T"}]})
    assert pages.job_posting("h.example", page, page["jobs"][0], "2026-10-01")["datePosted"] == "2026-10-01"
    html = _render(pages.render_job_page("h.example", page, page["jobs"][0], default_posted="2026-10-02"))
    assert _json_ld(html)[0]["datePosted"] == "2026-10-02"


# -- version 2: expiry, grouping, filters, branding, head ---------------------------------

_BEFORE = datetime(2027, 1, 31, 12, tzinfo=timezone.utc)
_AFTER = datetime(2027, 2, 1, 0, 0, tzinfo=timezone.utc)


def test_expired_openings_leave_the_list_json_and_sitemap():
    """Once valid_through has passed, an opening is gone from the list, its ItemList, /jobs.json and the sitemap."""
    doc = _v2_page()
    doc["jobs"][0]["valid_through"] = "2027-01-31"
    doc["jobs"][1]["valid_through"] = "2027-06-30"
    page = validate_page(doc)
    before = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE))
    after = _render(pages.render_list_page("jobs.acme.example", page, now=_AFTER))
    assert "/jobs/onsite" in before and "/jobs/onsite" not in after
    assert [e["url"] for e in _json_ld(after)[0]["itemListElement"]] == ["https://jobs.acme.example/jobs/hybrid"]
    assert [j["id"] for j in json.loads(pages.render_jobs_json("jobs.acme.example", page, _AFTER))["jobs"]] == ["hybrid"]
    assert b"/jobs/onsite" in pages.render_sitemap("jobs.acme.example", page, _BEFORE)
    assert b"/jobs/onsite" not in pages.render_sitemap("jobs.acme.example", page, _AFTER)


def test_gone_page_has_no_structured_data():
    """The page of an expired opening says it is closed, asks not to be indexed and has no JobPosting."""
    page = validate_page(_v2_page())
    html = _render(pages.render_gone_page("jobs.acme.example", page, page["jobs"][0]))
    assert "this position is closed" in html
    assert '<meta name="robots" content="noindex, follow" />' in html
    assert "<script" not in html


def test_list_is_grouped_by_department_in_order_of_appearance():
    """Openings are grouped under one heading per department, first-seen first; those without one come last."""
    doc = _v2_page()
    doc["jobs"].insert(0, {"id": "plain", "title": "Generalist"})
    page = validate_page(doc)
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE))
    headings = re.findall(r'<h2 id="department-[0-9]+">(.*?)</h2>', html)
    assert headings == ["Engineering (2)", "Support (1)", "Other openings (1)"]
    body = html[html.index("<body>"):]
    assert body.index("/jobs/plain") > body.index("/jobs/remote")


def test_filters_show_only_matching_openings_and_are_links():
    """A location or department filter shows only its openings; the filter is a set of links (no script, no form)."""
    page = validate_page(_v2_page())
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE,
                                          filters=pages.Filters(location="Remote")))
    assert "/jobs/hybrid" in html and "/jobs/remote" in html and "/jobs/onsite" not in html
    assert "Open positions (2 of 3)" in html
    assert '<a href="/?location=Remote" aria-current="true">Remote</a>' in html
    assert '<a href="/?department=Engineering&amp;location=Remote">Engineering</a>' in html
    assert '<meta name="robots" content="noindex, follow" />' in html
    assert "<form" not in html and "<script>" not in html
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE,
                                          filters=pages.Filters(department="Support", location="Berlin, BE, DE")))
    assert "No open positions match this filter." in html


def test_filter_options_follow_the_openings():
    """The filter offers each department and location label once, Remote for remote openings."""
    page = validate_page(_v2_page())
    assert pages.filter_options(page["jobs"]) == (
        ["Engineering", "Support"], ["Berlin, BE, DE", "Austin, TX, US", "Remote"]
    )


def test_accent_colour_reaches_only_the_stylesheet():
    """The accent colour is the CSS custom property; a colour that is not #rrggbb never reaches the CSS."""
    page = validate_page(_v2_page())
    assert pages.page_css(page).endswith(":root{--accent:#0b5cad}\n")
    hostile = dict(page, accent_color="red;}body{display:none")
    assert pages.page_css(hostile).endswith(":root{--accent:%s}\n" % pages.DEFAULT_ACCENT)
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE))
    assert html.count("#0b5cad") == 1
    assert ' style="' not in html


def test_style_source_is_the_hash_of_the_style_element():
    """style_source is the CSP hash of exactly the CSS placed in the page's <style> element."""
    page = validate_page(_v2_page())
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE))
    (css,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert pages.style_source(css) == f"'sha256-{digest}'"
    assert css == pages.page_css(page)


def test_head_has_canonical_opengraph_and_twitter_meta():
    """List and job pages name their canonical URL and describe themselves to link previews."""
    page = validate_page(_v2_page())
    html = _render(pages.render_job_page("jobs.acme.example", page, page["jobs"][0]))
    for fragment in (
        '<link rel="canonical" href="https://jobs.acme.example/jobs/onsite" />',
        '<meta property="og:type" content="article" />',
        '<meta property="og:title" content="Anvil Engineer \u2013 Acme Corp" />',
        '<meta property="og:url" content="https://jobs.acme.example/jobs/onsite" />',
        '<meta property="og:image" content="https://cdn.acme.example/logo.png" />',
        '<meta property="og:description" content="Build anvils. Test them." />',
        '<meta name="twitter:card" content="summary" />',
        '<html lang="en-GB">',
        "EUR 60,000\u201380,000 per year",
        'Apply by <time datetime="2027-01-31">2027-01-31</time>',
    ):
        assert fragment in html, fragment
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE))
    assert '<link rel="canonical" href="https://jobs.acme.example/" />' in html
    assert 'name="robots"' not in html


def test_landmarks_and_skip_link():
    """Pages have a skip link to main, and header, nav (when filtering is possible), main and footer landmarks."""
    page = validate_page(_v2_page())
    html = _render(pages.render_list_page("jobs.acme.example", page, now=_BEFORE))
    assert '<body><a href="#main" class="skip">Skip to content</a><header>' in html
    assert '<nav class="filters" aria-label="Filter openings">' in html
    assert '<main id="main">' in html and "<footer>" in html


def test_print_stylesheet_hides_navigation_and_shows_the_apply_address():
    """The print rules hide navigation and filters and print the apply link's address."""
    css = pages.page_css(None)
    print_rules = css[css.index("@media print{"):]
    assert ".skip,nav.filters,footer,header a{display:none}" in print_rules
    assert '.apply::after{content:" " attr(href)}' in print_rules


def test_sitemap_is_xml_of_this_hostnames_urls():
    """The sitemap parses as XML in the sitemaps namespace and lists the list page and each open opening."""
    page = validate_page(_v2_page())
    root = ElementTree.fromstring(pages.render_sitemap("jobs.acme.example", page, _BEFORE, "2026-12-01T00:00:00Z"))
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    assert [e.text for e in root.findall("s:url/s:loc", ns)] == [
        "https://jobs.acme.example/",
        "https://jobs.acme.example/jobs/onsite",
        "https://jobs.acme.example/jobs/hybrid",
        "https://jobs.acme.example/jobs/remote",
    ]
    assert root.find("s:url/s:lastmod", ns).text == "2026-12-01T00:00:00Z"
    assert pages.render_robots("jobs.acme.example") == (
        b"User-agent: *\nAllow: /\n\nSitemap: https://jobs.acme.example/sitemap.xml\n"
    )
