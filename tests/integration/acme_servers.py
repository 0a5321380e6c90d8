"""
Real Pebble and pebble-challtestsrv processes for integration tests.

Usable from trial TestCases and pytest fixtures alike (nothing here imports
pytest or needs a running reactor): start a server, use its URLs, stop it.
Every ``start`` either returns a running server or stops whatever it had
already started and raises; ``stop`` kills the whole process group and is
safe to call twice; an ``atexit`` hook kills anything a crashed test left.

Typical use from a trial test (``http_port`` is the port of the HTTP-01
responder under test, which Pebble's validation connects to)::

    pebble = PebbleServer.start(http_port=port)
    self.addCleanup(pebble.stop)
    client = AcmeClient.create(reactor, pebble.directory_url, pebble.ca_bundle_path)

Facts measured on Debian's pebble 2.4 package: it ships no certificate for
Pebble's own HTTPS listener (we make one with :class:`HarnessTLS`); it
generates fresh roots on each start (fetch them with
:meth:`PebbleServer.root_pem`); it builds every URL from the request's
``Host`` header and checks the JWS ``url`` against ``https://{Host}{path}``.
pebble-challtestsrv answers ``A`` queries for every name with
``127.0.0.1`` by default, so any test hostname reaches the responder.

The management helpers use blocking ``urllib`` on loopback: a few
milliseconds, test-only.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from jobhost.certs import generate_private_key, private_key_pem
from jobhost.testing import TestCA

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"

#: Seconds a server may take to answer after being started.
STARTUP_TIMEOUT = 10.0

_LIVE: dict[int, subprocess.Popen] = {}


def _kill_leftovers() -> None:
    for process in list(_LIVE.values()):
        _stop_process(process)


atexit.register(_kill_leftovers)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _stop_process(process: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a process started in its own session: SIGTERM its group, then SIGKILL."""
    _LIVE.pop(process.pid, None)
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(grace)


def _spawn(args: list[str], env: Mapping[str, str], log_path: str, cwd: str) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
    _LIVE[process.pid] = process
    return process


def _log_tail(log_path: str, lines: int = 20) -> str:
    try:
        with open(log_path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries the end of its log."""


def _port_clash(error: ServerStartError) -> bool:
    """True when the server died because a port chosen by :func:`free_port` was taken meanwhile."""
    return "address already in use" in str(error).lower()


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, log_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerStartError(f"{what} exited with {process.returncode}:\n{_log_tail(log_path)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServerStartError(f"{what} did not answer within {timeout:g} s:\n{_log_tail(log_path)}")
        time.sleep(0.02)


@attrs.define
class HarnessTLS:
    """A throwaway CA and a ``localhost``/``127.0.0.1`` server certificate, as files.

    Pebble's HTTPS listener (and :mod:`tests.integration.acme_proxy`) serve
    the certificate; clients trust :attr:`ca_bundle_path`.

    Attributes:
        ca: The :class:`jobhost.testing.TestCA` that signed the certificate.
        ca_bundle_path: PEM of the CA's root: give it to ``AcmeClient.create``.
        cert_path / key_path: The server certificate (leaf + intermediate) and its key (0600).
    """

    ca: TestCA = attrs.field(repr=False)
    ca_bundle_path: str
    cert_path: str
    key_path: str

    @classmethod
    def create(cls, directory: str) -> HarnessTLS:
        """Make the CA and certificate and write them under ``directory``."""
        ca = TestCA.create("jobhost ACME harness")
        key = generate_private_key("ecdsa-p256")
        start = datetime.now(timezone.utc) - timedelta(hours=1)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=7))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca.intermediate_key, hashes.SHA256())
        )
        paths = {name: os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem")}
        with open(paths["ca.pem"], "wb") as f:
            f.write(ca.root_pem)
        with open(paths["cert.pem"], "wb") as f:
            f.write(leaf.public_bytes(serialization.Encoding.PEM) + ca.intermediate_pem)
        fd = os.open(paths["key.pem"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_key_pem(key))
        return cls(ca=ca, ca_bundle_path=paths["ca.pem"], cert_path=paths["cert.pem"], key_path=paths["key.pem"])

    def client_ssl_context(self) -> ssl.SSLContext:
        """A stdlib client context trusting only this CA (for blocking helpers)."""
        return ssl.create_default_context(cafile=self.ca_bundle_path)

    def server_options(self) -> Any:
        """A TLS server context factory serving the certificate (for ``reactor.listenSSL``)."""
        from OpenSSL import SSL

        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate_chain_file(self.cert_path)
        context.use_privatekey_file(self.key_path)
        return _StaticContextFactory(context)


@implementer(IOpenSSLContextFactory)
@attrs.define
class _StaticContextFactory:
    """The ``getContext()`` object ``listenSSL`` wants, around a ready ``SSL.Context``."""

    context: Any

    def getContext(self) -> Any:
        return self.context


def _answers(url: str, timeout: float = 0.5) -> bool:
    """True when an HTTP server answers at ``url`` at all (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            response.read()
            return 200 <= response.status < 300
    except (OSError, urllib.error.URLError):
        return False


@attrs.define
class ChallTestServer:
    """A running ``pebble-challtestsrv``: a mock DNS server Pebble resolves through.

    Only its DNS and management listeners run (HTTP-01/HTTPS-01/TLS-ALPN-01
    are disabled: the responder under test answers those).  Every name
    resolves to ``127.0.0.1`` (A) and nothing (AAAA) until told otherwise.

    Attributes:
        dns_port: UDP and TCP port of the DNS server on 127.0.0.1.
        management_port: HTTP port of the management API on 127.0.0.1.
    """

    dns_port: int
    management_port: int
    process: subprocess.Popen = attrs.field(repr=False)
    workdir: str = attrs.field(repr=False)
    owns_workdir: bool = attrs.field(default=True, repr=False)

    @classmethod
    def start(
        cls,
        default_ipv4: str = "127.0.0.1",
        default_ipv6: str = "",
        workdir: str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        attempts: int = 3,
    ) -> ChallTestServer:
        """Start it on free loopback ports and wait until its management API answers.

        Raises:
            ServerStartError: with the end of its log (a port taken between
                choosing and binding is retried, up to ``attempts`` times).
        """
        owns = workdir is None
        workdir = workdir or tempfile.mkdtemp(prefix="challtestsrv-")
        log_path = os.path.join(workdir, "challtestsrv.log")
        error: ServerStartError | None = None
        for _ in range(attempts):
            dns_port, management_port = free_port(), free_port()
            args = [
                CHALLTESTSRV,
                "-defaultIPv4", default_ipv4,
                "-defaultIPv6", default_ipv6,
                "-http01", "",
                "-https01", "",
                "-tlsalpn01", "",
                "-dns01", f"127.0.0.1:{dns_port}",
                "-management", f"127.0.0.1:{management_port}",
            ]
            process = _spawn(args, os.environ, log_path, workdir)
            server = cls(dns_port, management_port, process, workdir, owns)
            try:
                _wait_until(server._ready, process, "pebble-challtestsrv", log_path, startup_timeout)
            except ServerStartError as e:
                _stop_process(process)
                if not _port_clash(e):
                    if owns:
                        shutil.rmtree(workdir, ignore_errors=True)
                    raise
                error = e
                continue
            except BaseException:
                server.stop()
                raise
            return server
        if owns:
            shutil.rmtree(workdir, ignore_errors=True)
        assert error is not None
        raise error

    def _ready(self) -> bool:
        return _answers(self.management_url + "/")

    @property
    def management_url(self) -> str:
        """``http://127.0.0.1:{management_port}``."""
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def dns_address(self) -> str:
        """``127.0.0.1:{dns_port}``, the form Pebble's ``-dnsserver`` takes."""
        return f"127.0.0.1:{self.dns_port}"

    def _post(self, path: str, payload: Mapping[str, Any]) -> bytes:
        request = urllib.request.Request(
            self.management_url + path,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read()

    @staticmethod
    def _fqdn(host: str) -> str:
        return host if host.endswith(".") else host + "."

    def set_default_ipv4(self, address: str) -> None:
        """Answer A queries for names without their own records with ``address`` ("" for none)."""
        self._post("/set-default-ipv4", {"ip": address})

    def set_default_ipv6(self, address: str) -> None:
        """Answer AAAA queries for names without their own records with ``address`` ("" for none)."""
        self._post("/set-default-ipv6", {"ip": address})

    def add_a(self, host: str, addresses: Iterable[str]) -> None:
        """Give ``host`` these A records."""
        self._post("/add-a", {"host": self._fqdn(host), "addresses": list(addresses)})

    def clear_a(self, host: str) -> None:
        """Remove ``host``'s own A records (it falls back to the default)."""
        self._post("/clear-a", {"host": self._fqdn(host)})

    def add_aaaa(self, host: str, addresses: Iterable[str]) -> None:
        """Give ``host`` these AAAA records."""
        self._post("/add-aaaa", {"host": self._fqdn(host), "addresses": list(addresses)})

    def clear_aaaa(self, host: str) -> None:
        """Remove ``host``'s own AAAA records."""
        self._post("/clear-aaaa", {"host": self._fqdn(host)})

    def add_caa(self, host: str, policies: Iterable[tuple[str, str]]) -> None:
        """Give ``host`` CAA records, e.g. ``[("issue", "letsencrypt.org")]``."""
        self._post(
            "/add-caa",
            {"host": self._fqdn(host), "policies": [{"tag": tag, "value": value} for tag, value in policies]},
        )

    def clear_caa(self, host: str) -> None:
        """Remove ``host``'s CAA records."""
        self._post("/clear-caa", {"host": self._fqdn(host)})

    def add_cname(self, host: str, target: str) -> None:
        """Make ``host`` a CNAME for ``target``."""
        self._post("/set-cname", {"host": self._fqdn(host), "target": self._fqdn(target)})

    def clear_cname(self, host: str) -> None:
        """Remove ``host``'s CNAME."""
        self._post("/clear-cname", {"host": self._fqdn(host)})

    def set_servfail(self, host: str) -> None:
        """Answer every query for ``host`` with SERVFAIL."""
        self._post("/set-servfail", {"host": self._fqdn(host)})

    def clear_servfail(self, host: str) -> None:
        """Stop answering SERVFAIL for ``host``."""
        self._post("/clear-servfail", {"host": self._fqdn(host)})

    def stop(self) -> None:
        """Kill the process (idempotent) and remove its working directory if it made one."""
        _stop_process(self.process)
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


@attrs.define
class PebbleServer:
    """A running Pebble (and, unless one was given, its own :class:`ChallTestServer`).

    Attributes:
        http_port: Where Pebble's VA connects for HTTP-01 (the responder under test).
        nonce_reject: ``PEBBLE_WFE_NONCEREJECT``: percent of good nonces refused.
        env_extra: Extra environment (e.g. ``{"PEBBLE_ALTERNATE_ROOTS": "1"}``).
        tls: The CA and certificate Pebble's HTTPS listeners serve.
        dns: The challtestsrv Pebble resolves through.
        listen_port / management_port: Pebble's ACME and management ports on 127.0.0.1.
    """

    http_port: int
    nonce_reject: int
    env_extra: Mapping[str, str]
    tls: HarnessTLS
    dns: ChallTestServer
    owns_dns: bool
    workdir: str = attrs.field(repr=False)
    tls_port: int = 0
    listen_port: int = 0
    management_port: int = 0
    eab_keys: Mapping[str, str] | None = None
    startup_timeout: float = STARTUP_TIMEOUT
    process: subprocess.Popen | None = attrs.field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        http_port: int,
        nonce_reject: int = 5,
        env_extra: Mapping[str, str] | None = None,
        *,
        dns: ChallTestServer | None = None,
        tls_port: int | None = None,
        eab_keys: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> PebbleServer:
        """Start Pebble on free loopback ports and wait until its directory answers.

        Args:
            http_port: The HTTP-01 port Pebble validates against.
            nonce_reject: Percent of valid nonces Pebble refuses (``badNonce``).
            env_extra: More environment for Pebble.
            dns: A challtestsrv to resolve through; None starts (and later stops) one.
            tls_port: TLS-ALPN-01 port (unused by jobhost); a free one by default.
            eab_keys: ``kid -> base64url HMAC key``: makes external account binding required.
            startup_timeout: Seconds to wait for each process.

        Raises:
            ServerStartError: when a process does not come up, with the end of
                its log (everything started so far is stopped first; a port
                clash is retried with new ports).
        """
        workdir = tempfile.mkdtemp(prefix="pebble-")
        owns_dns = dns is None
        server: PebbleServer | None = None
        try:
            tls = HarnessTLS.create(workdir)
            if dns is None:
                dns = ChallTestServer.start(workdir=workdir, startup_timeout=startup_timeout)
            server = cls(
                http_port=http_port,
                nonce_reject=nonce_reject,
                env_extra=dict(env_extra or {}),
                tls=tls,
                dns=dns,
                owns_dns=owns_dns,
                workdir=workdir,
                tls_port=tls_port or free_port(),
                eab_keys=dict(eab_keys) if eab_keys else None,
                startup_timeout=startup_timeout,
            )
            server._launch()
            return server
        except BaseException:
            if server is not None:
                server.stop()
            else:
                if owns_dns and dns is not None:
                    dns.stop()
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _write_config(self) -> str:
        config: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.listen_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": self.tls.cert_path,
            "privateKey": self.tls.key_path,
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
        }
        if self.eab_keys:
            config["externalAccountMACKeys"] = dict(self.eab_keys)
        path = os.path.join(self.workdir, "pebble-config.json")
        with open(path, "w") as f:
            json.dump({"pebble": config}, f, indent=2)
        return path

    def _launch(self, attempts: int = 3, same_ports: bool = False) -> None:
        log_path = os.path.join(self.workdir, "pebble.log")
        env = dict(os.environ)
        env.update({"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject)})
        env.update(self.env_extra)
        error: ServerStartError | None = None
        for _ in range(attempts):
            if not same_ports:
                self.listen_port, self.management_port = free_port(), free_port()
            config = self._write_config()
            args = [PEBBLE, "-config", config, "-dnsserver", self.dns.dns_address, "-strict=false"]
            self.process = _spawn(args, env, log_path, self.workdir)
            context = self.tls.client_ssl_context()
            try:
                _wait_until(
                    lambda: _http_ok(self.directory_url, context) and _http_ok(self.management_url + "/roots/0", context),
                    self.process,
                    "pebble",
                    log_path,
                    self.startup_timeout,
                )
            except ServerStartError as e:
                _stop_process(self.process)
                if not _port_clash(e):
                    raise
                error = e
                continue
            return
        assert error is not None
        raise error

    @property
    def directory_url(self) -> str:
        """The ACME directory, ``https://127.0.0.1:{listen_port}/dir``."""
        return f"https://127.0.0.1:{self.listen_port}/dir"

    @property
    def ca_bundle_path(self) -> str:
        """PEM file of the CA that signed Pebble's HTTPS certificate (for ``AcmeClient.create``)."""
        return self.tls.ca_bundle_path

    @property
    def management_url(self) -> str:
        """Pebble's management API, ``https://127.0.0.1:{management_port}``."""
        return f"https://127.0.0.1:{self.management_port}"

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(
            self.management_url + path, timeout=5, context=self.tls.client_ssl_context()
        ) as response:
            return response.read()

    def root_pem(self, index: int = 0) -> bytes:
        """Pebble's issuing root ``index`` (0 = default chain; more with ``PEBBLE_ALTERNATE_ROOTS``)."""
        return self._get(f"/roots/{index}")

    def intermediate_pem(self, index: int = 0) -> bytes:
        """Pebble's intermediate ``index``."""
        return self._get(f"/intermediates/{index}")

    def cert_status(self, serial_hex: str) -> dict[str, Any]:
        """Pebble's view of a certificate: ``{"Status": "Valid"|"Revoked", "Reason", ...}``."""
        return json.loads(self._get(f"/cert-status-by-serial/{serial_hex}"))

    def stop(self) -> None:
        """Stop Pebble (and its own challtestsrv) and remove the temp files; idempotent."""
        try:
            if self.process is not None:
                _stop_process(self.process)
        finally:
            if self.owns_dns:
                self.dns.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, env_extra: Mapping[str, str] | None = None) -> None:
        """Restart the Pebble process on the same ports (its state and roots are new).

        The TLS files, the ports and the challtestsrv are kept, so clients
        keep working with the same directory URL (but their accounts are gone).

        Args:
            env_extra: Replaces :attr:`env_extra` when given.
        """
        if self.process is not None:
            _stop_process(self.process)
        if env_extra is not None:
            self.env_extra = dict(env_extra)
        self._launch(same_ports=True)


__all__ = [
    "CHALLTESTSRV",
    "PEBBLE",
    "STARTUP_TIMEOUT",
    "ChallTestServer",
    "HarnessTLS",
    "PebbleServer",
    "ServerStartError",
    "free_port",
]
