"""
The whole stack for end-to-end tests: Pebble + pebble-challtestsrv + ``twistd -n jobhost``.

Pebble's HTTP-01 port is jobhost's HTTP listener; challtestsrv is the DNS of both
Pebble and jobhost (preflight, self-check) and resolves every name to 127.0.0.1.
Everything is checked from the outside: the admin API over HTTP, TLS handshakes
with SNI verified against Pebble's root.  ``Stack.stop`` kills everything.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509

from acme_servers import PebbleServer
from daemon import Daemon, free_port, https_request, listen_section, status_of


def stack_config(http: int, https: int, admin: int, pebble: PebbleServer, extra: str = "") -> str:
    """A jobhost config pointed at ``pebble`` with short intervals for tests."""
    return listen_section(http, https, admin) + f"""
[store]
url = "directory:var/store"

[acme]
directory = "{pebble.directory_url}"
ca_bundle = "{pebble.ca_bundle_path}"
contact = ["mailto:ops@acme-corp.test"]
timeout = "10s"

[preflight]
addresses = ["127.0.0.1"]
resolvers = ["{pebble.dns.dns_address}"]
self_check_port = {http}
timeout = "2s"

[tls]
poll_interval = "0.2s"

[renewal]
backoff = ["1s", "2s", "4s"]
scan_interval = "2s"
node_id = "test-node"
{extra}
"""


class Stack:
    """Pebble and one jobhost daemon sharing a work directory."""

    def __init__(self, workdir: Path, pebble: PebbleServer, daemon: Daemon, ports: tuple[int, int, int]):
        self.workdir = workdir
        self.pebble = pebble
        self.daemon = daemon
        self.http, self.https, self.admin_port = ports
        self.refresh_root()

    def refresh_root(self) -> None:
        """Fetch Pebble's root (a restarted Pebble has a new one); handshakes verify against it."""
        self.root_pem = self.pebble.root_pem().decode()

    @classmethod
    def start(cls, workdir: Path, nonce_reject: int = 5, extra_config: str = "", pebble_env=None) -> Stack:
        """Pebble and jobhost with :func:`stack_config` (plus ``extra_config``)."""
        return cls.start_with(
            workdir,
            lambda http, https, admin, pebble: stack_config(http, https, admin, pebble, extra_config),
            nonce_reject=nonce_reject, pebble_env=pebble_env,
        )

    @classmethod
    def start_with(cls, workdir: Path, make_config, nonce_reject: int = 5, pebble_env=None, tls_alpn: bool = False) -> Stack:
        """Pebble and jobhost with the config ``make_config(http, https, admin, pebble)`` returns.

        With ``tls_alpn``, Pebble validates TLS-ALPN-01 against jobhost's HTTPS listener and
        HTTP-01 against a port nothing listens on (jobhost's HTTP listener is out of its reach).
        Whatever was started is stopped again if start-up fails.
        """
        http, https, admin = free_port(), free_port(), free_port()
        pebble = PebbleServer.start(
            http_port=free_port() if tls_alpn else http, tls_port=https if tls_alpn else None,
            nonce_reject=nonce_reject, env_extra=pebble_env,
        )
        daemon = None
        try:
            daemon = Daemon(workdir, make_config(http, https, admin, pebble))
            daemon.start()
            stack = cls(workdir, pebble, daemon, (http, https, admin))
            daemon.wait_listening(http, https, admin)
        except BaseException:
            if daemon is not None:
                daemon.stop()
            pebble.stop()
            raise
        return stack

    def restart_daemon(self) -> None:
        self.daemon.stop()
        self.daemon.start()
        self.daemon.wait_listening(self.http, self.https, self.admin_port)

    def stop(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.pebble.stop()

    # -- admin API -----------------------------------------------------------------------

    @property
    def token(self) -> str:
        return (self.workdir / "var" / "admin.token").read_text().strip()

    def api_raw(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, bytes]:
        """Call the admin API; return (status, raw body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """Call the admin API; return (status, parsed JSON body or None)."""
        status, raw = self.api_raw(method, path, body, token)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw

    def register(self, hostname: str, page: dict | None = None, skip_preflight: bool = False) -> dict:
        body: dict[str, Any] = {"hostname": hostname}
        if page is not None:
            body["page"] = page
        if skip_preflight:
            body["skip_preflight"] = True
        status, doc = self.api("POST", "/api/v1/domains", body)
        assert status in (200, 201), (status, doc)
        return doc

    def domain(self, hostname: str) -> dict:
        status, doc = self.api("GET", f"/api/v1/domains/{hostname}")
        assert status == 200, (status, doc)
        return doc

    def wait_state(self, hostname: str, states: tuple[str, ...], timeout: float = 30.0,
                   check=lambda doc: True) -> dict:
        """Poll the domain until its state is one of ``states`` (and ``check`` holds)."""
        deadline = time.monotonic() + timeout
        doc: dict = {}
        while time.monotonic() < deadline:
            doc = self.domain(hostname)
            if doc["state"] in states and check(doc):
                return doc
            time.sleep(0.1)
        raise AssertionError(f"{hostname} never reached {states}: {doc}\n--- log ---\n{self.daemon.log()[-4000:]}")

    # -- TLS from outside ----------------------------------------------------------------

    def verified_leaf(self, hostname: str) -> x509.Certificate:
        """Handshake with SNI ``hostname``, verifying the chain against Pebble's root only."""
        context = ssl.create_default_context(cadata=self.root_pem)
        with socket.create_connection(("127.0.0.1", self.https), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=hostname) as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    def wait_served(self, hostname: str, timeout: float = 30.0) -> x509.Certificate:
        """Retry a verified handshake until it succeeds (the certificate is served)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self.verified_leaf(hostname)
            except (ssl.SSLError, OSError) as e:
                last = e
                time.sleep(0.05)
        raise AssertionError(f"{hostname} not served with a Pebble certificate: {last}\n{self.daemon.log()[-4000:]}")

    def https_get(self, hostname: str, path: str = "/") -> tuple[int, bytes]:
        """GET over HTTPS, verified against Pebble's root; return (status, body)."""
        head, body = https_request(self.https, hostname, path, ssl.create_default_context(cadata=self.root_pem))
        return status_of(head), body


__all__ = ["Stack", "stack_config"]
