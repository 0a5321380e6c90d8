"""
The IAcmeClient contract run against the real AcmeClient and a real Pebble.

The fake runs the same suite in ``tests/test_acme_client_contract_fake.py``.  One
Pebble (with its pebble-challtestsrv) serves the whole class; Pebble's HTTP-01
validation connects to a small threaded HTTP server (not on the reactor, so it can
outlive one test without leaving trial's reactor dirty) that answers from a dict.
Renewal information, which Pebble 2.4 lacks, comes from
:class:`acme_proxy.AcmeDirectoryProxy` in front of the same Pebble.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from acme_client_contract import AcmeClientContractTests
from acme_proxy import AcmeDirectoryProxy
from acme_servers import PebbleServer
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from jobhost.acme.client import AcmeClient
from jobhost.acme.urls import HTTP01_PATH_PREFIX
from jobhost.testing import MemoryResponder


class ThreadedChallengeServer(MemoryResponder):
    """Answers ``GET /.well-known/acme-challenge/{token}`` for the ``Host`` it was published for.

    Runs a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread; the reactor
    thread only writes the dict (single assignments, safe across threads).
    """

    def __init__(self) -> None:
        super().__init__()
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                token = self.path[len(HTTP01_PATH_PREFIX):] if self.path.startswith(HTTP01_PATH_PREFIX) else ""
                answer = answers.get((host, token))
                body = (answer or "unknown token\n").encode("ascii")
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-01 responder", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="class")
def pebble(request: Any) -> Any:
    """One challenge server and one Pebble validating against it, for the whole class."""
    responder = ThreadedChallengeServer()
    try:
        server = PebbleServer.start(http_port=responder.port)
    except BaseException:
        responder.close()
        raise
    request.cls.responder_server, request.cls.pebble = responder, server
    yield server
    server.stop()
    responder.close()


@pytest.mark.usefixtures("pebble")
class PebbleAcmeClientContractTests(AcmeClientContractTests, TestCase):
    """The real AcmeClient keeps the IAcmeClient contract against Pebble."""

    pebble: PebbleServer
    responder_server: ThreadedChallengeServer

    def make_client(self, ari: bool = False) -> AcmeClient:
        directory_url = self.pebble.directory_url
        if ari:
            proxy = AcmeDirectoryProxy.start(reactor, self.pebble)
            self.addCleanup(proxy.stop)
            directory_url = proxy.directory_url
        client = AcmeClient.create(reactor, directory_url, self.pebble.ca_bundle_path, timeout=10)
        self.addCleanup(client.close)
        return client

    def make_responder(self) -> ThreadedChallengeServer:
        return self.responder_server

    def trusted_roots(self) -> list[bytes]:
        return [self.pebble.root_pem(0)]

    def now(self) -> datetime:
        return datetime.now(timezone.utc)
