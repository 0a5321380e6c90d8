"""
Schemathesis against the live daemon: the admin API keeps the promises of the OpenAPI document it serves.

``twistd jobhost`` runs with a real Pebble and challtestsrv; the schema is loaded from the
daemon's own ``/api/v1/openapi.json`` and every request carries the bearer token.  Each
operation is fuzzed (schemathesis' examples, coverage and fuzzing phases, valid and invalid
data), then sequences of calls follow the links between operations (stateful phase).  The
checks: no 5xx, every status code documented for its operation, the documented content
type, bodies and headers that match the document's schemas.

Generated hostnames point nowhere (challtestsrv's default A answer is switched off), so
preflight refuses them with the documented 422 and no order is spent on them; a few
hostnames are registered first so that responses include an active domain with a
certificate, a failing one with its last error, and a removed one.  Runs are bounded by
``max_examples`` and derandomised, so the file takes well under a minute and a failure
reproduces.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from stack import Stack

#: What "contradicts the document" means here.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

PAGE = {
    "company": "ACME Corp",
    "intro": "We build rockets.",
    "jobs": [{"id": "eng-1", "title": "Rocket Engineer", "location": "Mojave", "employment_type": "FULL_TIME",
              "apply_url": "https://acme-corp.example/apply/eng-1", "posted": "2026-11-01"}],
}

FUZZ_SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
STATEFUL_SETTINGS = settings(
    max_examples=15, stateful_step_count=6, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The daemon with Pebble, and one active, one failing and one removed hostname."""
    stack = Stack.start(tmp_path_factory.mktemp("schemathesis"))
    try:
        dns = stack.pebble.dns
        dns.set_default_ipv4("")  # generated names resolve to nothing: preflight refuses them
        dns.add_a("jobs.acme-corp.test", ["127.0.0.1"])
        dns.add_a("gone.acme-corp.test", ["127.0.0.1"])
        stack.register("jobs.acme-corp.test", page=PAGE)
        stack.register("gone.acme-corp.test")
        # Registered without preflight, but its DNS leads nowhere: the self-check fails, no order is placed.
        stack.register("stuck.acme-corp.test", skip_preflight=True)
        stack.wait_state("jobs.acme-corp.test", ("active",), timeout=20)
        stack.wait_state("gone.acme-corp.test", ("active",), timeout=20)
        stack.wait_state("stuck.acme-corp.test", ("failing",), timeout=20)
        status, _ = stack.api("DELETE", "/api/v1/domains/gone.acme-corp.test")
        assert status == 200
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{live.admin_port}/api/v1/openapi.json")


@pytest.fixture(scope="module")
def auth(live):
    return {"Authorization": f"Bearer {live.token}"}


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(case, auth):
    """Generated requests to each operation get no 5xx and responses that match the served document."""
    case.call_and_validate(headers=auth, checks=CHECKS)


def test_call_sequences_conform(api_schema, auth, live):
    """Sequences of calls linked by the document (register, show, renew, remove...) conform too."""
    machine = api_schema.as_state_machine()

    class Authorised(machine):
        def get_call_kwargs(self, case):
            return {"headers": auth}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS, headers=auth, transport_kwargs=kwargs or None)

    Authorised.run(settings=STATEFUL_SETTINGS)
    # The daemon is still healthy afterwards and logged no unexpected exception.
    status, doc = live.api("GET", "/healthz")
    assert status == 200 and doc["components"]["store"]["ok"] is True
    assert "Admin API" not in live.daemon.log(), live.daemon.log()[-4000:]
