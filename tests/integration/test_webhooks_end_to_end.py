"""
Webhooks end to end: ``twistd jobhost`` + Pebble, with a receiver on 127.0.0.1 (http.server
in a thread) configured as ``[events] webhook_url``.

Registering a hostname produces one signed ``active`` delivery carrying the certificate
Pebble issued; deleting it produces ``removed``.  The signature is checked here with the
secret the daemon created, independently of jobhost.events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stack import Stack

HOST = "jobs.hooked.test"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
             "at": time.time()}
        )
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def stack(tmp_path, receiver):
    extra = f"""
[events]
webhook_url = "http://127.0.0.1:{receiver.server_address[1]}/hooks/jobhost?k=1"
webhook_secret_file = "var/webhook.secret"
timeout = "5s"
backoff = ["0.2s", "0.5s"]
"""
    s = Stack.start(tmp_path, extra_config=extra)
    yield s
    s.stop()


def wait_event(stack: Stack, receiver, event: str, timeout: float = 30.0) -> dict:
    """The first delivery of ``event`` the receiver got (waiting for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for delivery in list(receiver.received):
            if delivery["headers"].get("x-jobhost-event") == event:
                return delivery
        time.sleep(0.05)
    raise AssertionError(f"no {event} webhook: {receiver.received}\n--- log ---\n{stack.daemon.log()[-4000:]}")


def test_registration_and_removal_send_signed_webhooks(stack, receiver, tmp_path):
    """Registering a hostname sends a signed active webhook with its certificate; DELETE sends removed."""
    secret_file = tmp_path / "var" / "webhook.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip().encode()

    stack.register(HOST)
    active = wait_event(stack, receiver, "active")
    served = stack.wait_served(HOST)
    headers, body = active["headers"], active["body"]
    assert active["path"] == "/hooks/jobhost?k=1"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("jobhost/")
    timestamp = headers["x-jobhost-timestamp"]
    assert abs(int(timestamp) - active["at"]) < 5
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-jobhost-signature"], expected)
    wrong = "sha256=" + hmac.new(b"not-the-secret", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-jobhost-signature"] != wrong
    doc = json.loads(body)
    assert doc["event"] == "active" and doc["hostname"] == HOST
    assert doc["id"] == headers["x-jobhost-delivery"]
    assert doc["domain"]["state"] == "active"
    assert doc["certificate"]["names"] == [HOST]
    assert int(doc["certificate"]["serial"], 16) == served.serial_number

    status, _ = stack.api("DELETE", f"/api/v1/domains/{HOST}")
    assert status == 200
    removed = wait_event(stack, receiver, "removed")
    doc = json.loads(removed["body"])
    assert doc["hostname"] == HOST and doc["domain"]["state"] == "removed" and doc["certificate"] is None
    assert doc["id"] != json.loads(active["body"])["id"]

    events = [d["headers"]["x-jobhost-event"] for d in receiver.received]
    assert events == ["active", "removed"], events
    assert not any(b"PRIVATE KEY" in d["body"] for d in receiver.received)
    log = stack.daemon.log()
    assert secret.decode() not in log
    assert active["headers"]["x-jobhost-signature"] not in log
    assert "k=1" not in log, "the URL's query is not logged"
