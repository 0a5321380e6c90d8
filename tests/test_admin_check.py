"""
``GET /api/v1/check?hostname=``: preflight and the self-check for a name, registered or not.
"""

from __future__ import annotations

from admin_helpers import ApiClient, FakePreflight, make_domain

from jobhost.store.records import DomainState


def test_check_an_unregistered_name_reports_what_to_fix():
    """A name that points elsewhere: ok false, the DNS check failing with its fix; nothing stored."""
    api = ApiClient.create(preflight=FakePreflight(passes=False))
    answer = api.request("GET", "/api/v1/check?hostname=New.Example.COM")
    assert answer.status == 200
    doc = answer.json
    assert (doc["hostname"], doc["registered"], doc["ok"]) == ("new.example.com", False, False)
    dns = next(c for c in doc["checks"] if c["name"] == "dns")
    assert dns["passed"] is False and "set its A/AAAA records" in dns["hint"]
    assert [c["name"] for c in doc["checks"]][-1] == "self_check"
    assert api.preflight.asked == ["new.example.com"]
    assert "new.example.com" not in api.store.domains


def test_check_a_registered_name_says_so():
    """registered is true for a live record and false once it is removed."""
    api = ApiClient.create()
    api.store.domains["a.example.com"] = make_domain("a.example.com")
    doc = api.request("GET", "/api/v1/check?hostname=a.example.com").json
    assert (doc["registered"], doc["ok"]) == (True, True)
    api.store.domains["a.example.com"] = make_domain("a.example.com", DomainState.REMOVED)
    assert api.request("GET", "/api/v1/check?hostname=a.example.com").json["registered"] is False


def test_check_needs_a_valid_hostname():
    """No hostname is 400; one that is not a hostname is 422; neither reaches preflight."""
    api = ApiClient.create()
    assert api.request("GET", "/api/v1/check").status == 400
    assert api.request("GET", "/api/v1/check?hostname=").status == 400
    answer = api.request("GET", "/api/v1/check?hostname=*.example.com")
    assert answer.status == 422 and answer.json["error"]["code"] == "invalid_hostname"
    assert api.preflight.asked == []
