"""
The admin API end to end: ``twistd jobhost`` + a real Pebble + pebble-challtestsrv, driven from outside.

Acceptance of the admin API against the running daemon (the StubTreq unit tests in
tests/test_admin_api.py cover the routes one by one; these check what an operator sees):

* preflight refusals through ``POST /api/v1/domains`` with what challtestsrv's DNS really
  holds (A elsewhere, CNAME elsewhere, no records, a CAA naming another CA): 422
  ``preflight_failed`` with the reason and the records, nothing stored, and, from Pebble's
  own log, no order placed;
* no private key bytes in any response body or log line during a full issuance;
* ``/metrics`` parses and moves with issuances and handshakes;
* ``jobhost-admin --config`` against the daemon.

challtestsrv never answers NXDOMAIN (every answer is NOERROR with its fake SOA; measured on
pebble 2.4): with no default address and no records of its own a name has no A/AAAA, which
preflight reports as ``no_records``.  ``nxdomain`` itself is covered over real DNS packets in
tests/integration/test_preflight_dns.py.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client.parser import text_string_to_metric_families

from daemon import REPO
from stack import Stack

PAGE = {
    "company": "ACME Corp",
    "intro": "We build rockets.",
    "jobs": [{"id": "eng-1", "title": "Rocket Engineer", "location": "Mojave", "employment_type": "FULL_TIME"}],
}


@pytest.fixture
def stack(tmp_path):
    s = Stack.start(tmp_path)
    yield s
    s.stop()


# -- helpers ------------------------------------------------------------------------------------


class Recorder:
    """Calls the admin API like ``Stack.api`` but keeps every raw response body it received."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.bodies: list[tuple[str, bytes]] = []

    def raw(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        status, raw = self.stack.api_raw(method, path, body)
        self.bodies.append((f"{method} {path} -> {status}", raw))
        return status, raw

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, raw = self.raw(method, path, body)
        assert status == expect, (method, path, status, raw[:2000])
        return json.loads(raw)


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` with the token, parsed by prometheus_client: (sample name, labels) -> value."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.admin_port}/metrics", headers={"Authorization": f"Bearer {stack.token}"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported; have {sorted({n for n, _ in samples})}"
    return samples[key]


def pebble_log(stack: Stack) -> str:
    """Pebble's own log (stdout and stderr of the process), written in its work directory."""
    return (Path(stack.pebble.workdir) / "pebble.log").read_text(errors="replace")


def pebble_orders(stack: Stack) -> int:
    """How many orders Pebble says it has created (one ``Added order`` line each)."""
    return pebble_log(stack).count("Added order ")


def handshake(stack: Stack, hostname: str) -> None:
    """One TLS handshake with SNI ``hostname``, not verified (the fallback certificate is fine)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", stack.https), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname):
            pass


def served_names(stack: Stack, hostname: str) -> list[str]:
    leaf = stack.verified_leaf(hostname)
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )


def wait_not_served(stack: Stack, hostname: str, timeout: float = 10.0) -> None:
    """Wait until a handshake verified against Pebble's root fails for ``hostname``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stack.verified_leaf(hostname)
        except ssl.SSLError:
            return
        time.sleep(0.05)
    raise AssertionError(f"{hostname} is still served a Pebble certificate")


def key_fingerprints(pem: bytes) -> dict[str, str]:
    """Every text form of a private key that a leak could take, label -> text.

    The PEM itself, each base64 line of its body, the DER (PKCS#8 and traditional) in
    standard and URL-safe base64, and the private numbers as JWK base64url and hex.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    forms: dict[str, str] = {"pem": pem.decode().strip()}
    body = [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
    for i, line in enumerate(body):
        if len(line) >= 20:
            forms[f"pem line {i}"] = line
    for label, fmt in (("pkcs8", serialization.PrivateFormat.PKCS8),
                       ("traditional", serialization.PrivateFormat.TraditionalOpenSSL)):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        forms[f"{label} der base64"] = base64.b64encode(der).decode()
        forms[f"{label} der base64url"] = base64.urlsafe_b64encode(der).decode().rstrip("=")
    secrets: dict[str, int] = {}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        secrets["d"] = key.private_numbers().private_value
        size = (key.curve.key_size + 7) // 8
    elif isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        secrets.update(d=numbers.d, p=numbers.p, q=numbers.q, dp=numbers.dmp1, dq=numbers.dmq1, qi=numbers.iqmp)
        size = 0
    else:  # pragma: no cover - jobhost makes EC and RSA keys only
        raise AssertionError(f"unexpected key type {type(key)}")
    for name, value in secrets.items():
        raw = value.to_bytes(max(size, (value.bit_length() + 7) // 8), "big")
        forms[f"jwk {name}"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        forms[f"hex {name}"] = raw.hex()
    return forms


def stored_keys(workdir: Path) -> dict[str, bytes]:
    """Every private key jobhost stored: certificates, the ACME account, the fallback certificate."""
    keys: dict[str, bytes] = {}
    store = workdir / "var" / "store"
    for kind in ("certificates", "accounts"):
        for path in sorted((store / kind).glob("*.json")):
            keys[f"{kind}/{path.name}"] = json.loads(path.read_text())["key_pem"].encode()
    fallback = (workdir / "var" / "fallback.pem").read_bytes()
    match = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", fallback, re.S)
    assert match, "var/fallback.pem holds no private key"
    keys["fallback.pem"] = match.group(0) + b"\n"
    return keys


def admin_command() -> list[str]:
    """The installed ``jobhost-admin`` console script, else the module."""
    script = Path(sys.executable).with_name("jobhost-admin")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobhost.admin.cli"]


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """Run ``jobhost-admin --config <the daemon's config> ARGS`` in the daemon's run directory."""
    return subprocess.run(
        [*admin_command(), "--config", str(stack.daemon.config_path), *args],
        cwd=stack.workdir, capture_output=True, text=True, timeout=60,
    )


def cli_json(stack: Stack, *args: str, expect_rc: int = 0) -> Any:
    result = cli(stack, "--json", *args)
    assert result.returncode == expect_rc, (args, result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


# -- 1. preflight through the API ----------------------------------------------------------------


def test_preflight_refusals_store_nothing_and_order_nothing(stack):
    """A, CNAME, missing records and CAA that are not ours are refused 422 with the records; Pebble sees no order."""
    dns = stack.pebble.dns
    dns.add_a("old.acme-corp.test", ["198.51.100.7"])
    dns.add_cname("shop.acme-corp.test", "edge.cdn-provider.test")
    dns.add_a("edge.cdn-provider.test", ["198.51.100.8"])
    dns.add_caa("strict.acme-corp.test", [("issue", "other-ca.example")])
    orders_before = pebble_orders(stack)

    refusals: dict[str, dict] = {}
    for hostname in ("old.acme-corp.test", "shop.acme-corp.test", "strict.acme-corp.test"):
        refusals[hostname] = stack.api("POST", "/api/v1/domains", {"hostname": hostname, "page": PAGE})
    # No A at all: challtestsrv's default answer off, and the name has no records of its own.
    dns.set_default_ipv4("")
    try:
        refusals["gone.acme-corp.test"] = stack.api("POST", "/api/v1/domains", {"hostname": "gone.acme-corp.test"})
    finally:
        dns.set_default_ipv4("127.0.0.1")

    expected = {
        "old.acme-corp.test": ("points_elsewhere", ["old.acme-corp.test A 198.51.100.7"]),
        "shop.acme-corp.test": (
            "cname_elsewhere",
            ["shop.acme-corp.test CNAME edge.cdn-provider.test", "edge.cdn-provider.test A 198.51.100.8"],
        ),
        "strict.acme-corp.test": ("caa_forbids", ['strict.acme-corp.test CAA 0 issue "other-ca.example"']),
        "gone.acme-corp.test": ("no_records", []),
    }
    for hostname, (code, found) in expected.items():
        status, doc = refusals[hostname]
        assert status == 422, (hostname, status, doc)
        error = doc["error"]
        assert error["code"] == "preflight_failed", doc
        assert error["details"]["hostname"] == hostname
        assert error["details"]["retryable"] is False
        [reason] = error["details"]["reasons"]
        assert reason["code"] == code, (hostname, reason)
        assert reason["found"] == found, (hostname, reason)
        assert reason["fix"] and reason["message"] == error["message"]
        if code != "caa_forbids":
            assert f"{hostname} A 127.0.0.1" in reason["expected"], reason
        # Nothing is stored: not shown, not listed.
        status, doc = stack.api("GET", f"/api/v1/domains/{hostname}")
        assert status == 404 and doc["error"]["code"] == "not_found", (hostname, status, doc)
    status, listing = stack.api("GET", "/api/v1/domains")
    assert status == 200 and listing["domains"] == []
    assert not list((stack.workdir / "var" / "store" / "domains").glob("*.json"))

    # Nothing is ordered, by Pebble's own account: wait past one renewal scan (2 s) first.
    time.sleep(2.5)
    assert pebble_orders(stack) == orders_before, pebble_log(stack)[-3000:]
    log = pebble_log(stack)
    for hostname in expected:
        assert hostname not in log, f"Pebble heard of {hostname}"

    # The same signal sees an accepted hostname's order: the A record is ours (challtestsrv's default).
    status, doc = stack.api("POST", "/api/v1/domains", {"hostname": "jobs.acme-corp.test", "page": PAGE})
    assert status == 201, doc
    assert doc["state"] == "pending" and doc["certificate"] is None
    doc = stack.wait_state("jobs.acme-corp.test", ("active",), timeout=20)
    assert doc["certificate"]["names"] == ["jobs.acme-corp.test"]
    assert served_names(stack, "jobs.acme-corp.test") == ["jobs.acme-corp.test"]
    assert pebble_orders(stack) > orders_before
    assert '"jobs.acme-corp.test"' in pebble_log(stack)


# -- 2. no key bytes in responses or logs --------------------------------------------------------


def test_no_private_key_bytes_in_responses_or_logs(stack):
    """After issuing, renewing, revoking and every read route, no stored private key appears in a body or log line."""
    api = Recorder(stack)
    hostnames = ("jobs.acme-corp.test", "careers.beta.test")
    api.json("POST", "/api/v1/domains", {"hostname": hostnames[0], "page": PAGE}, expect=201)
    api.json("POST", "/api/v1/domains", {"hostname": hostnames[1]}, expect=201)
    for hostname in hostnames:
        stack.wait_state(hostname, ("active",), timeout=20)
        assert served_names(stack, hostname) == [hostname]
    api.json("PUT", f"/api/v1/domains/{hostnames[1]}/page", PAGE)
    api.json("GET", f"/api/v1/domains/{hostnames[1]}/page")
    listing = api.json("GET", "/api/v1/domains")
    assert [d["hostname"] for d in listing["domains"]] == sorted(hostnames)
    for hostname in hostnames:
        api.json("GET", f"/api/v1/domains/{hostname}")
        assert api.json("GET", f"/api/v1/domains/{hostname}/diagnostics")["ok"] is True
    status, body = stack.https_get(hostnames[0], "/")
    assert status == 200 and b"Rocket Engineer" in body

    # A forced renewal: a second key and certificate for the first hostname.
    first_serial = api.json("GET", f"/api/v1/domains/{hostnames[0]}")["certificate"]["serial"]
    api.json("POST", f"/api/v1/domains/{hostnames[0]}/renew", expect=202)
    stack.wait_state(hostnames[0], ("active",), timeout=20,
                     check=lambda d: d["certificate"]["serial"] != first_serial)
    keys = stored_keys(stack.workdir)  # before the removal deletes a certificate's key
    sources = {name: (stack.workdir / "var" / ("fallback.pem" if name == "fallback.pem" else f"store/{name}")).read_text()
               for name in keys}
    assert len(keys) == 4, sorted(keys)  # two certificates, one account, the fallback

    api.raw("GET", "/metrics")
    api.raw("GET", "/healthz")
    api.raw("GET", "/api/v1/openapi.json")
    api.raw("GET", "/api/v1/domains/unknown.acme-corp.test")
    api.raw("POST", "/api/v1/domains", {"hostname": "not a hostname"})
    serial = api.json("GET", f"/api/v1/domains/{hostnames[1]}")["certificate"]["serial"]
    removed = api.json("DELETE", f"/api/v1/domains/{hostnames[1]}?revoke=true")
    assert removed["state"] == "removed" and removed["certificate"] is None
    assert stack.pebble.cert_status(serial)["Status"] == "Revoked"
    api.json("GET", f"/api/v1/domains/{hostnames[1]}")
    time.sleep(0.5)  # let the daemon finish logging what these requests did

    log = stack.daemon.log()
    assert "Registered jobs.acme-corp.test" in log  # the log is the daemon's, and it is written
    leaks = []
    for name, pem in keys.items():
        for form, text in key_fingerprints(pem).items():
            if text in log:
                leaks.append(f"{name} ({form}) in twistd.log")
            for request, body in api.bodies:
                if text.encode() in body:
                    leaks.append(f"{name} ({form}) in the response to {request}")
    assert not leaks, leaks
    # The search is for the right strings: it finds every key's PEM lines in the file it came from.
    for name, source in sources.items():
        forms = key_fingerprints(keys[name])
        assert all(text in source for form, text in forms.items() if form.startswith("pem line")), name


# -- 3. /metrics ---------------------------------------------------------------------------------


@pytest.fixture
def fast_stats_stack(tmp_path):
    s = Stack.start(tmp_path, extra_config='\n[admin]\nstats_interval = "0.5s"\n')
    yield s
    s.stop()


def test_metrics_move_with_issuance_and_handshakes(fast_stats_stack):
    """/metrics needs the token, parses, and its issuance, handshake and domain numbers move as those happen."""
    stack = fast_stats_stack
    status, doc = stack.api("GET", "/metrics", token="not-the-token-at-all")
    assert status == 401 and doc["error"]["code"] == "unauthorized"
    before = scrape(stack)
    deadline = time.monotonic() + 10
    while metric(before, "jobhost_store_stats_refreshed_timestamp_seconds") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # the start-up count runs in the background: on a busy machine it may not be done yet
        before = scrape(stack)
    assert metric(before, "jobhost_issuance_attempts_total") == 0
    assert metric(before, "jobhost_issuance_success_total") == 0
    assert metric(before, "jobhost_domains", state="active") == 0
    assert metric(before, "jobhost_store_stats_refreshed_timestamp_seconds") > 0  # counted at start-up
    served0 = metric(before, "jobhost_tls_handshakes_total", outcome="served")
    fallback0 = metric(before, "jobhost_tls_handshakes_total", outcome="fallback")

    hostnames = ("jobs.acme-corp.test", "careers.beta.test")
    for hostname in hostnames:
        stack.register(hostname)
    for hostname in hostnames:
        stack.wait_state(hostname, ("active",), timeout=20)
        stack.wait_served(hostname)
    after = scrape(stack)
    assert metric(after, "jobhost_issuance_success_total") == 2
    assert metric(after, "jobhost_issuance_attempts_total") >= 2
    assert metric(after, "jobhost_issuance_seconds_count") == 2

    # Handshakes, counted exactly: three served a certificate, one (unknown name) the fallback.
    served1 = metric(after, "jobhost_tls_handshakes_total", outcome="served")
    fallback1 = metric(after, "jobhost_tls_handshakes_total", outcome="fallback")
    assert served1 > served0
    for hostname in (*hostnames, hostnames[0]):
        stack.verified_leaf(hostname)
    handshake(stack, "unknown.acme-corp.test")
    now = scrape(stack)
    assert metric(now, "jobhost_tls_handshakes_total", outcome="served") == served1 + 3
    assert metric(now, "jobhost_tls_handshakes_total", outcome="fallback") == fallback1 + 1
    assert fallback1 >= fallback0

    # A forced renewal is one more attempt and one more success.
    serial = stack.domain(hostnames[0])["certificate"]["serial"]
    status, _ = stack.api("POST", f"/api/v1/domains/{hostnames[0]}/renew")
    assert status == 202
    stack.wait_state(hostnames[0], ("active",), check=lambda d: d["certificate"]["serial"] != serial)
    renewed = scrape(stack)
    assert metric(renewed, "jobhost_issuance_success_total") == 3
    assert metric(renewed, "jobhost_issuance_attempts_total") >= metric(after, "jobhost_issuance_attempts_total") + 1

    # The store-derived gauges are recounted every [admin] stats_interval (0.5 s here).
    deadline = time.monotonic() + 10
    while metric(scrape(stack), "jobhost_domains", state="active") != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    counted = scrape(stack)
    assert metric(counted, "jobhost_domains", state="active") == 2
    assert metric(counted, "jobhost_domains", state="pending") == 0
    assert metric(counted, "jobhost_certificates") == 2
    assert metric(counted, "jobhost_certificates_expiring", window="7d") == 0
    refreshed = metric(counted, "jobhost_store_stats_refreshed_timestamp_seconds")
    assert abs(refreshed - time.time()) < 60


# -- 4. jobhost-admin against the daemon ---------------------------------------------------------


def test_cli_add_list_show_diagnose_remove(stack):
    """jobhost-admin --config drives the running daemon: add with a page, list, show, diagnose, remove."""
    page_file = str(REPO / "etc" / "example-page.json")
    doc = cli_json(stack, "domains", "add", "jobs.acme-corp.test", "--page", page_file)
    assert doc["hostname"] == "jobs.acme-corp.test" and doc["state"] == "pending"
    assert doc["page"]["company"] == "ACME Corp"
    stack.wait_state("jobs.acme-corp.test", ("active",), timeout=20)

    shown = cli_json(stack, "domains", "show", "jobs.acme-corp.test")
    assert shown["state"] == "active"
    assert shown["certificate"]["names"] == ["jobs.acme-corp.test"]
    leaf = stack.wait_served("jobs.acme-corp.test")
    assert shown["certificate"]["serial"] == format(leaf.serial_number, "x")
    text = cli(stack, "domains", "show", "jobs.acme-corp.test")
    assert text.returncode == 0, text.stderr
    assert re.search(r"^State:\s+active$", text.stdout, re.M), text.stdout
    assert shown["certificate"]["fingerprint_sha256"] in text.stdout

    listing = cli_json(stack, "domains", "list")
    assert [d["hostname"] for d in listing["domains"]] == ["jobs.acme-corp.test"]
    assert cli_json(stack, "domains", "list", "--state", "failing")["domains"] == []

    report = cli_json(stack, "diagnose", "jobs.acme-corp.test")
    assert report["ok"] is True
    assert {c["name"]: c["passed"] for c in report["checks"]} == {
        "state": True, "dns": True, "caa": True, "self_check": True, "certificate": True,
    }
    text = cli(stack, "diagnose", "jobs.acme-corp.test")
    assert text.returncode == 0 and "All checks passed." in text.stdout, (text.stdout, text.stderr)

    # A refusal: exit 1, the API's message and the fix on standard error, nothing stored.
    stack.pebble.dns.add_a("old.acme-corp.test", ["198.51.100.7"])
    refused = cli(stack, "domains", "add", "old.acme-corp.test")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "198.51.100.7" in refused.stderr and "fix:" in refused.stderr
    assert stack.api("GET", "/api/v1/domains/old.acme-corp.test")[0] == 404

    removed = cli_json(stack, "domains", "remove", "jobs.acme-corp.test")
    assert removed["state"] == "removed" and removed["certificate"] is None
    wait_not_served(stack, "jobs.acme-corp.test")
    assert cli_json(stack, "domains", "show", "jobs.acme-corp.test")["state"] == "removed"
    failing = cli(stack, "diagnose", "jobs.acme-corp.test")
    assert failing.returncode == 3 and "Some checks failed." in failing.stdout, failing.stdout

    # A wrong token is refused with a hint.
    wrong = stack.workdir / "wrong.token"
    wrong.write_text("x" * 43 + "\n")
    refused = cli(stack, "--token-file", str(wrong), "domains", "list")
    assert refused.returncode == 1 and "token" in refused.stderr, refused.stderr
