"""
The daemon from the outside: ``twistd -n jobhost --config FILE`` as a subprocess.

Checks the embedded defaults answer on all three listeners, bad configs exit
non-zero naming the key path, and a certificate put into the store by another
process is served by SNI with no restart.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request

import pytest
from cryptography import x509

from daemon import REPO, Daemon, free_port, https_request, run_twistd, status_of, store_tool
from jobhost.testing import TestCA


def config_text(http: int, https: int, admin: int, extra: str = "", store: str | None = None) -> str:
    """The embedded default config with the three ports (and, when given, the store URL) replaced."""
    text = (REPO / "etc" / "jobhost.toml").read_text()
    if store is not None:
        assert 'url = "sqlite:var/jobhost.db"' in text
        text = text.replace('url = "sqlite:var/jobhost.db"', f'url = "{store}"')
    text = text.replace('"tcp:8080"', f'"tcp:{http}:interface=127.0.0.1"')
    text = text.replace('"tcp:8443"', f'"tcp:{https}:interface=127.0.0.1"')
    text = text.replace('"tcp:8081:interface=127.0.0.1"', f'"tcp:{admin}:interface=127.0.0.1"')
    return text + extra


def peer_certificate(port: int, server_name: str | None, cafile: str | None = None) -> x509.Certificate:
    """Handshake with 127.0.0.1:port (SNI ``server_name``) and return the leaf the server sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.fixture
def ports():
    return free_port(), free_port(), free_port()


@pytest.fixture
def daemon(tmp_path, ports):
    """The daemon on the embedded defaults (the SQLite store)."""
    http, https, admin = ports
    d = Daemon(tmp_path, config_text(http, https, admin, '\n[renewal]\nscan_interval = "1s"\n'))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def directory_daemon(tmp_path, ports):
    """The daemon on the directory store."""
    http, https, admin = ports
    config = config_text(http, https, admin, "\n[renewal]\nscan_interval = \"1s\"\n", "directory:var/store")
    d = Daemon(tmp_path, config)
    d.start()
    yield d
    d.stop()


def test_embedded_defaults_answer_on_every_port(daemon, ports, tmp_path):
    """With etc/jobhost.toml the daemon answers HTTP, HTTPS (fallback certificate) and admin."""
    http, https, admin = ports
    daemon.wait_listening(http, https, admin)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=5)
    assert info.value.code == 404
    leaf = peer_certificate(https, "unknown.example.test")
    assert leaf.subject.rfc4514_string() == "CN=fallback.jobhost.invalid"
    assert peer_certificate(https, None).subject == leaf.subject, "no SNI gets the fallback too"
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as response:
        assert response.status == 200
        health = json.loads(response.read())
    assert "listening" in json.dumps(health), health
    token_file = tmp_path / "var" / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "var" / "fallback.pem").stat().st_mode & 0o777 == 0o600
    # twistd re-raises the signal it stopped on, so a clean SIGTERM shutdown exits by SIGTERM.
    assert daemon.stop() in (0, -15), daemon.log()
    assert "jobhost stopped" in daemon.log(), "jobhost's own last line (twistd's are hidden by default)"
    assert "Server Shut Down." not in daemon.log()
    assert "Traceback" not in daemon.log()


def test_certificate_put_by_another_process_is_served_without_restart(directory_daemon, ports, tmp_path):
    """A certificate added with jobhost-store is served by SNI within the poll interval; removal falls back."""
    served_without_restart(directory_daemon, ports, tmp_path, "directory:var/store")


def test_sqlite_store_serves_what_another_process_put(daemon, ports, tmp_path):
    """On the default store (SQLite), a certificate and page put by jobhost-store are served; removal falls back."""
    served_without_restart(daemon, ports, tmp_path, "sqlite:var/jobhost.db")
    daemon.stop()
    database = tmp_path / "var" / "jobhost.db"
    assert database.stat().st_mode & 0o777 == 0o600, "the database holds private keys"
    assert not (tmp_path / "var" / "store").exists(), "nothing went to the directory store"


def served_without_restart(daemon, ports, tmp_path, store: str) -> None:
    """Put a certificate and page with jobhost-store into ``store``; the daemon serves them, then the fallback."""
    http, https, admin = ports
    daemon.wait_listening(https, admin)
    ca = TestCA.create("walkthrough CA")
    key, chain = ca.issue("jobs.acme-corp.test")
    (tmp_path / "jobs.key").write_bytes(key)
    (tmp_path / "jobs.pem").write_bytes(chain)
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    page = {"company": "ACME Corp", "jobs": [{"id": "eng-1", "title": "Rocket Engineer"}]}
    (tmp_path / "page.json").write_text(json.dumps(page))
    added = store_tool(
        tmp_path, "put-certificate", "jobs.acme-corp.test", "--key", "jobs.key", "--chain", "jobs.pem", store=store
    )
    assert added.returncode == 0, added.stderr
    added = store_tool(tmp_path, "add-domain", "jobs.acme-corp.test", "--page", "page.json", store=store)
    assert added.returncode == 0, added.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leaf = peer_certificate(https, "jobs.acme-corp.test")
        if "jobs.acme-corp.test" in leaf.subject.rfc4514_string():
            break
        time.sleep(0.2)
    head, body = https_request(
        https, "jobs.acme-corp.test", "/", ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    )
    status = status_of(head)
    assert status == 200
    assert b"Rocket Engineer" in body and b"ACME Corp" in body
    removed = store_tool(tmp_path, "delete-certificate", "jobs.acme-corp.test", store=store)
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leaf = peer_certificate(https, "jobs.acme-corp.test")
        if leaf.subject.rfc4514_string() == "CN=fallback.jobhost.invalid":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the removed certificate is still served")


def test_hostname_added_with_its_certificate_by_another_process_becomes_active_without_restart(ports, tmp_path):
    """jobhost-store put-certificate + add-domain while the daemon runs (default scan interval, 10 minutes): the
    hostname is active within seconds, and its history starts with the registration."""
    http, https, admin = ports
    d = Daemon(tmp_path, config_text(http, https, admin, "\n[server]\nworkers = 1\n"))
    d.start()
    try:
        d.wait_listening(https, admin)
        ca = TestCA.create("walkthrough CA")
        key, chain = ca.issue("jobs.acme-corp.test")
        (tmp_path / "jobs.key").write_bytes(key)
        (tmp_path / "jobs.pem").write_bytes(chain)
        store = "sqlite:var/jobhost.db"
        put = store_tool(tmp_path, "put-certificate", "jobs.acme-corp.test", "--key", "jobs.key", "--chain", "jobs.pem",
                         store=store)
        assert put.returncode == 0, put.stderr
        added = store_tool(tmp_path, "add-domain", "jobs.acme-corp.test", store=store)
        assert added.returncode == 0, added.stderr
        deadline = time.monotonic() + 15
        while True:
            shown = store_tool(tmp_path, "show", "jobs.acme-corp.test", store=store)
            domain = json.loads(shown.stdout)["domain"]
            if domain["state"] == "active" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert domain["state"] == "active", d.log()[-3000:]
        assert [(h["state"], h.get("reason")) for h in domain["history"]] == [
            ("pending", "registered with jobhost-store"), ("active", None)
        ]
    finally:
        d.stop()


@pytest.mark.parametrize(
    "bad, expected",
    [
        ('[tls]\ncache_size = "ten"\n', '[tls] cache_size: expected a positive integer, got "ten"'),
        ("[listen]\nhttps = 443\n", "[listen] https: expected a non-empty string"),
        ("[tls\n", "not valid TOML"),
        ("[nonsense]\n", "[nonsense]: unknown section"),
        ('[store]\nurl = "mysql://db/x"\n[preflight]\naddresses = ["127.0.0.1"]\n', "[store] url"),
        ('[acme]\nca_bundle = "missing.pem"\n[preflight]\naddresses = ["127.0.0.1"]\n', "[acme] ca_bundle"),
    ],
)
def test_bad_config_exits_nonzero_naming_the_key(tmp_path, bad, expected):
    """A bad config file makes twistd exit non-zero with the key path in the message, no traceback."""
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    result = run_twistd(tmp_path, path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert expected in output
    assert str(path) in output
    assert "Traceback" not in output


def test_missing_config_file(tmp_path):
    """A config path that does not exist is named in the error."""
    result = run_twistd(tmp_path, tmp_path / "nope.toml")
    assert result.returncode != 0
    assert "nope.toml" in result.stdout + result.stderr
    assert "cannot read config file" in result.stdout + result.stderr


def test_port_in_use_exits_1_in_one_line_naming_the_key(tmp_path):
    """A listener port that is taken stops start-up with exit 1 and one line naming its [listen] key, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "jobhost.toml"
        path.write_text(config_text(free_port(), port, free_port()))
        result = run_twistd(tmp_path, path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in output.splitlines() if "#error]" in line or "#critical]" in line]
    assert len(errors) == 1, output
    assert errors[0].endswith(
        f"jobhost: config error: {path}: [listen] https: cannot listen on port {port} of 127.0.0.1: "
        "Address already in use (another process listens there: stop it or choose another port)"
    ), output
    assert "Traceback" not in output


def test_port_out_of_range_exits_1_in_one_line_naming_the_key(tmp_path):
    """A port above 65535 stops start-up with exit 1 and one line naming its [listen] key, no traceback."""
    path = tmp_path / "jobhost.toml"
    path.write_text(config_text(free_port(), free_port(), free_port()).replace(
        'admin = "tcp:', 'admin = "tcp:7', 1))  # tcp:7NNNNN
    result = run_twistd(tmp_path, path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"jobhost: config error: {path}: [listen] admin: the port is out of range (0-65535)" in output
    assert "Traceback" not in output and len(output.splitlines()) < 10, output


def test_plugin_is_discovered():
    """twistd finds the jobhost plugin through getPlugins(IServiceMaker), and it verifies."""
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    from zope.interface.verify import verifyObject

    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "jobhost" in makers
    verifyObject(IServiceMaker, makers["jobhost"])
    assert makers["jobhost"].options is not None


def test_deleted_store_makes_healthz_fail(directory_daemon, ports, tmp_path):
    """With the store directory deleted under the running daemon, /healthz answers 503 naming it, logged once."""
    import shutil

    daemon = directory_daemon

    http, https, admin = ports
    daemon.wait_listening(admin)

    def healthz() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    marker = tmp_path / "var" / "store" / "jobhost-store.json"
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(marker.read_text())["format"] == "jobhost-directory-store", daemon.log()
    status, doc = healthz()
    while status != 200 and time.monotonic() < deadline:  # the worker processes are starting
        time.sleep(0.1)
        status, doc = healthz()
    assert status == 200 and doc["components"]["store"]["ok"] is True, doc
    shutil.rmtree(tmp_path / "var" / "store")
    answers = [healthz() for _ in range(3)]
    assert [status for status, _ in answers] == [503, 503, 503], answers
    store = answers[0][1]["components"]["store"]
    assert store["ok"] is False and "var/store" in store["message"] and "missing" in store["message"], store
    # One error line however often it is probed (read once the daemon has written it).
    deadline = time.monotonic() + 5
    while "Store health check failed" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon.log().count("Store health check failed") == 1, daemon.log()[-3000:]


def test_sqlite_schema_newer_than_the_code_stops_start_up(tmp_path):
    """twistd exits 1 naming both schema versions when the SQLite store's schema is newer than the code."""
    import sqlite3

    from jobhost.store.sql import SCHEMA_VERSION

    (tmp_path / "var").mkdir()
    database = tmp_path / "var" / "jobhost.db"
    migrated = store_tool(tmp_path, "migrate", store="sqlite:var/jobhost.db")
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema at version {SCHEMA_VERSION}" in migrated.stdout
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE jobhost_schema SET version = 99")
    path = tmp_path / "jobhost.toml"
    path.write_text('[store]\nurl = "sqlite:var/jobhost.db"\n[preflight]\naddresses = ["127.0.0.1"]\n')
    result = run_twistd(tmp_path, path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "[store] url: cannot use the store" in output
    assert f"version 99, newer than this jobhost understands ({SCHEMA_VERSION})" in output
    assert "Traceback" not in output


def test_unreachable_postgresql_stops_start_up_in_one_line(tmp_path):
    """An unreachable PostgreSQL URL makes twistd exit 1 with one line naming it, password redacted."""
    path = tmp_path / "jobhost.toml"
    path.write_text(
        '[store]\nurl = "postgresql://jobhost:s3cret@127.0.0.1:1/jobhost?connect_timeout=2"\n'
        '[preflight]\naddresses = ["127.0.0.1"]\n'
    )
    result = run_twistd(tmp_path, path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "[store] url: cannot use the store: cannot connect to postgresql://jobhost:***@127.0.0.1:1/jobhost" in output
    assert "s3cret" not in output and "Traceback" not in output


def test_certbot_import_is_served(ports, tmp_path):
    """jobhost-store import-certbot stores a certbot lineage under its names; the daemon serves it, and a second
    import registers nothing twice."""
    http, https, admin = ports
    ca = TestCA.create("certbot CA")
    key, chain = ca.issue("jobs.acme-corp.test", extra_names=("careers.acme-corp.test",))
    letsencrypt = tmp_path / "letsencrypt"
    archive = letsencrypt / "archive" / "jobs.acme-corp.test"
    live = letsencrypt / "live" / "jobs.acme-corp.test"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (archive / "privkey1.pem").write_bytes(key)
    (archive / "fullchain1.pem").write_bytes(chain)
    (live / "privkey.pem").symlink_to("../../archive/jobs.acme-corp.test/privkey1.pem")
    (live / "fullchain.pem").symlink_to("../../archive/jobs.acme-corp.test/fullchain1.pem")
    (letsencrypt / "live" / "broken").mkdir()
    (tmp_path / "ca.pem").write_bytes(ca.root_pem)
    store = "sqlite:var/jobhost.db"
    config = config_text(http, https, admin, store=store)
    d = Daemon(tmp_path, config)
    d.start()
    try:
        d.wait_listening(https, admin)
        imported = store_tool(tmp_path, "import-certbot", str(letsencrypt), store=store)
        assert imported.returncode == 2, imported.stderr  # the broken lineage is named
        assert "stored 2 certificates, registered 2 new hostnames; skipped 1 lineages" in imported.stdout
        assert "live/broken: cannot read" in imported.stderr
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", https), timeout=5) as raw:
                    with verify.wrap_socket(raw, server_hostname="careers.acme-corp.test"):
                        break
            except (ssl.SSLError, OSError):
                assert time.monotonic() < deadline, d.log()[-3000:]
                time.sleep(0.2)
        again = store_tool(tmp_path, "import-certbot", str(letsencrypt), store=store)
        assert "stored 2 certificates, registered 0 new hostnames" in again.stdout
    finally:
        d.stop()
