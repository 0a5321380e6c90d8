"""Tests for jobhost.web.accesslog: secrets never reach the access log."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from jobhost.web.accesslog import redact_uri, secret_parameter
from jobhost.web.site import make_site


@pytest.mark.parametrize("uri, logged", [
    (b"/", b"/"),
    (b"/jobs?keyword=python&page=2", b"/jobs?keyword=python&page=2"),
    (b"/?token=abc&q=1", b"/?token=REDACTED&q=1"),
    (b"/apply?Access_Token=abc", b"/apply?Access_Token=REDACTED"),
    (b"/apply?api%5Fkey=abc", b"/apply?api%5Fkey=REDACTED"),
    (b"/f?X-Amz-Signature=abc&X-Amz-Date=1", b"/f?X-Amz-Signature=REDACTED&X-Amz-Date=1"),
    (b"/api/v1/domains?limit=5&cursor=abc", b"/api/v1/domains?limit=REDACTED&cursor=REDACTED"),
    (b"/api/v1/domains?s3cr3t-token-value", b"/api/v1/domains?REDACTED"),
    (b"/metrics?token=abc", b"/metrics?token=REDACTED"),
    (b"/healthz?x=1", b"/healthz?x=REDACTED"),
    (b"https://jobs.example.com/api/v1/x?c=1", b"https://jobs.example.com/api/v1/x?c=REDACTED"),
    (b"https://jobs.example.com?password=1&a=b", b"https://jobs.example.com?password=REDACTED&a=b"),
])
def test_redact_uri(uri, logged):
    """Every query value on admin paths, and secret-named ones anywhere, are replaced; names stay."""
    assert redact_uri(uri) == logged


@pytest.mark.parametrize("name, secret", [
    (b"token", True), (b"refresh_token", True), (b"apiKey", True), (b"client-secret", True),
    (b"sessionid", True), (b"sig", True), (b"keyword", False), (b"q", False), (b"page", False),
])
def test_secret_parameter(name, secret):
    """Words of a parameter's name decide; "keyword" is not a key."""
    assert secret_parameter(name) is secret


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


def test_site_access_log_redacts_query_and_referer(tmp_path):
    """A request with ?token= in its URI and Referer is logged with the values redacted."""
    clock = Clock()
    path = tmp_path / "access.log"
    site = make_site(Hello(), clock, access_log=str(path))
    site.doStart()
    address = IPv4Address("TCP", "192.0.2.1", 40000)
    protocol = site.buildProtocol(address)
    protocol.makeConnection(StringTransport(peerAddress=address))
    protocol.dataReceived(
        b"GET /api/v1/domains?token=s3cr3t-value HTTP/1.1\r\nHost: a.example\r\n"
        b"Referer: https://a.example/login?next=/&secret=hush\r\nConnection: close\r\n\r\n"
    )
    protocol.connectionLost(None)
    clock.advance(1)
    site.doStop()
    [line] = path.read_text().splitlines()
    assert '"GET /api/v1/domains?token=REDACTED HTTP/1.1" 200 5' in line
    assert '"https://a.example/login?next=/&secret=REDACTED"' in line
    assert "s3cr3t" not in line and "hush" not in line
