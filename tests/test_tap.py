"""Tests for jobhost.tap: options and the service tree, built without running a reactor."""

import errno
from pathlib import Path

import pytest
from twisted.application.service import MultiService, Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.usage import UsageError
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from jobhost.config import parse_config
from jobhost.errors import ConfigError
from jobhost.keys import inline_keys
from jobhost.tap import JobhostService, ListenerService, Options, build_parts

ROOT = Path(__file__).resolve().parent.parent


def test_options_require_config():
    """--config is required, and the message says so."""
    with pytest.raises(UsageError, match="--config FILE is required"):
        Options().parseOptions([])


def test_options_parse_the_config_once(tmp_path):
    """postOptions loads the file; errors become a UsageError naming the key path."""
    options = Options()
    options.parseOptions(["--config", str(ROOT / "etc" / "jobhost.toml")])
    assert options.config.listen.https == "tcp:8443"
    bad = tmp_path / "bad.toml"
    bad.write_text('[tls]\ncache_size = "ten"\n')
    with pytest.raises(UsageError) as info:
        Options().parseOptions(["--config", str(bad)])
    assert '[tls] cache_size: expected a positive integer, got "ten"' in str(info.value)


def test_service_tree(tmp_path):
    """The tree holds, in start order, the change poller, ACME client, issuing, stats, lag monitor and three listeners."""
    config = parse_config(
        {
            "listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0:interface=127.0.0.1"},
            "preflight": {"addresses": ["127.0.0.1"]},
        },
        tmp_path,
    )
    parts = build_parts(MemoryReactorClock(), config)
    root = parts.root
    assert isinstance(root, JobhostService)
    assert [s.name for s in root] == ["changes", "acme-client", "issuing", "store-stats", "reactor-lag",
                                     "http", "https", "admin"]
    assert [s for s in root if isinstance(s, ListenerService)] == list(parts.listeners)
    assert [s.name for s in parts.listeners] == ["http", "https", "admin"]
    assert root.getServiceNamed("issuing") is parts.issuing
    assert parts.issuing.domains is parts.domains and parts.admin.resource.domains is parts.domains
    assert parts.domains.store is parts.store
    assert set(vars(root)) == set(vars(MultiService())) | {"config", "log_observer", "processes"}, (
        "nothing is stuck onto the root service")
    assert parts.issuing.key_generator is not inline_keys, "RSA keys are made off the reactor thread"
    assert b"jobhost_cert_cache_broken_total" in parts.metrics.exposition(), "broken records are exported"
    assert (tmp_path / "var" / "fallback.pem").exists()
    assert (tmp_path / "var" / "admin.token").stat().st_mode & 0o777 == 0o600


def test_reject_fallback_needs_no_certificate(tmp_path):
    """With [tls] fallback = "reject" no fallback certificate is made."""
    config = parse_config(
        {"tls": {"fallback": "reject"}, "preflight": {"addresses": ["127.0.0.1"]}}, tmp_path
    )
    build_parts(MemoryReactorClock(), config)
    assert not (tmp_path / "var" / "fallback.pem").exists()


def test_build_errors_exit_without_traceback(tmp_path, capsys):
    """A config that parses but cannot be built (a CA bundle that is not there) exits 1 with one line."""
    from jobhost.tap import makeService

    options = Options()
    path = tmp_path / "jobhost.toml"
    path.write_text('[acme]\nca_bundle = "missing.pem"\n[preflight]\naddresses = ["127.0.0.1"]\n')
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as info:
        makeService(options)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"jobhost: config error: {path}: [acme] ca_bundle" in err


def test_unsupported_store_is_a_usage_error(tmp_path):
    """A store URL no store implements is refused while parsing options, naming the key."""
    path = tmp_path / "jobhost.toml"
    path.write_text('[store]\nurl = "mysql://db/jobhost"\n[preflight]\naddresses = ["127.0.0.1"]\n')
    with pytest.raises(UsageError, match=r"\[store\] url: unsupported store URL"):
        Options().parseOptions(["--config", str(path)])


def test_health_reports_listeners(tmp_path):
    """/healthz's listener part is critical and names listeners that are not bound yet."""
    config = parse_config(
        {"listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0:interface=127.0.0.1"}, "preflight": {"addresses": ["127.0.0.1"]}},
        tmp_path,
    )
    parts = build_parts(MemoryReactorClock(), config)
    health = parts.health()
    assert health["listeners"] == {"ok": False, "message": "not listening: http, https, admin", "critical": True}
    assert health["ca"]["ok"] is True and health["ca"]["critical"] is False
    assert parts.admin.resource.health() == health, "the admin API reports the same"
    parts.root.startService()
    try:
        assert parts.health()["listeners"]["ok"] is True
        assert parts.admin.resource.health()["listeners"]["ok"] is True
    finally:
        parts.root.stopService()
    assert parts.health()["listeners"]["ok"] is False


def _in_use() -> CannotListenError:
    return CannotListenError("127.0.0.1", 80, OSError(errno.EADDRINUSE, "Address already in use"))


@implementer(IStreamServerEndpoint)
class FailingEndpoint:
    """An endpoint whose listen fails (CannotListenError unless ``error`` is given), at once or when ``later`` fires."""

    def __init__(self, later: Deferred | None = None, error: BaseException | None = None) -> None:
        self.later = later
        self.error = error

    def listen(self, factory):
        if self.later is not None:
            return self.later
        return fail(self.error if self.error is not None else _in_use())


def test_listener_that_cannot_bind_fails_start_up():
    """A port that cannot be bound raises a ConfigError at its [listen] key from privilegedStartService."""
    listener = ListenerService("https", FailingEndpoint(), Factory())
    with pytest.raises(ConfigError) as info:
        listener.privilegedStartService()
    assert info.value.path == ("listen", "https")
    assert info.value.message == (
        "cannot listen on port 80 of 127.0.0.1: Address already in use "
        "(another process listens there: stop it or choose another port)"
    )
    assert not listener.listening


@pytest.mark.parametrize(
    "error, reason",
    [
        (OverflowError("bind(): port must be 0-65535."), "the port is out of range (0-65535)"),
        (CannotListenError("", 80, OSError(errno.EACCES, "Permission denied")),
         "cannot listen on port 80 of every interface: Permission denied "
         "(ports below 1024 need root (twistd --uid) or CAP_NET_BIND_SERVICE)"),
        (CannotListenError("10.9.9.9", 8080, OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")),
         "cannot listen on port 8080 of 10.9.9.9: Cannot assign requested address "
         "(no interface of this host has that address)"),
        (CannotListenError("::1", 8080, OSError(errno.EINVAL, "Invalid argument")),
         "cannot listen on port 8080 of ::1: Invalid argument"),
        (RuntimeError("no such socket"), "cannot listen: no such socket"),
    ],
)
def test_listener_says_why_it_cannot_bind(error, reason):
    """Each reason a port cannot be bound gets its own one-line message (with what to do, when known)."""
    listener = ListenerService("admin", FailingEndpoint(error=error), Factory())
    with pytest.raises(ConfigError) as info:
        listener.privilegedStartService()
    assert (info.value.path, info.value.message) == (("listen", "admin"), reason)


def test_root_turns_a_port_that_cannot_bind_into_one_line_and_exit_1(tmp_path):
    """The root service logs one error line naming the config file and [listen] key, and exits 1 (no traceback)."""
    path = tmp_path / "jobhost.toml"
    path.write_text('[preflight]\naddresses = ["127.0.0.1"]\n')
    from jobhost.config import load_config

    root = JobhostService(load_config(str(path)))
    ListenerService("http", serverFromString(MemoryReactorClock(), "tcp:0"), Factory()).setServiceParent(root)
    ListenerService("https", FailingEndpoint(), Factory()).setServiceParent(root)
    with capturedLogs() as events, pytest.raises(SystemExit) as info:
        root.privilegedStartService()
    assert info.value.code == 1
    lines = [formatEvent(e) for e in events]
    assert lines == [
        f"jobhost: config error: {path}: [listen] https: cannot listen on port 80 of 127.0.0.1: "
        "Address already in use (another process listens there: stop it or choose another port)"
    ]
    assert [e["log_level"].name for e in events] == ["error"]


def test_a_root_without_a_config_names_no_file_when_a_port_cannot_bind():
    """A root built without a config (a worker's) still turns a port that cannot bind into one line and exit 1."""
    root = JobhostService(None)
    ListenerService("http", FailingEndpoint(), Factory()).setServiceParent(root)
    with capturedLogs() as events, pytest.raises(SystemExit) as info:
        root.privilegedStartService()
    assert info.value.code == 1
    assert [formatEvent(e) for e in events] == [
        "jobhost: config error: [listen] http: cannot listen on port 80 of 127.0.0.1: "
        "Address already in use (another process listens there: stop it or choose another port)"
    ]


def test_listener_failing_later_is_logged():
    """A listen that fails after start-up is logged, not raised; stopping still works."""
    later: Deferred = Deferred()
    listener = ListenerService("http", FailingEndpoint(later), Factory())
    listener.startService()
    with capturedLogs() as events:
        later.errback(_in_use())
    assert [e["name"] for e in events if e.get("log_failure")] == ["http"]
    assert not listener.listening
    stopped = listener.stopService()
    assert stopped.called and not listener.running


class ListenerOnLoopbackTests(TestCase):
    """ListenerService on a real loopback port."""

    async def test_binds_and_unbinds(self):
        """The port is bound after start (listening), and closed by stop: a connection is then refused."""
        from twisted.internet import reactor

        listener = ListenerService("admin", serverFromString(reactor, "tcp:0:interface=127.0.0.1"), Factory())
        self.assertFalse(listener.listening)
        listener.privilegedStartService()
        listener.startService()
        self.assertTrue(listener.listening)
        port = listener.port.getHost().port
        await listener.stopService()
        self.assertFalse(listener.listening)
        self.assertIsNone(listener.port)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await self.assertFailure(endpoint.connect(Factory.forProtocol(Protocol)), ConnectionRefusedError)


def test_a_new_certificate_keeps_rendered_pages(tmp_path):
    """The issuing service's "certificate stored" hook drops the TLS context, not the rendered careers page."""
    config = parse_config({"preflight": {"addresses": ["127.0.0.1"]}}, tmp_path)
    parts = build_parts(MemoryReactorClock(), config)
    pages = parts.caches.pages
    host = "jobs.acme-corp.test"
    pages.put(host, b"/", object(), pages.token(host))
    parts.issuing.on_certificate(host)
    assert pages.get(host, b"/") is not None
    parts.caches.fanout.invalidate(host)
    assert pages.get(host, b"/") is None, "an invalidation without kinds still drops it"


# -- the parts each config section builds -------------------------------------------------------


def _parts(tmp_path, **sections):
    """build_parts for ``sections`` (preflight needs somewhere customers point), on a MemoryReactorClock."""
    sections.setdefault("preflight", {})
    sections["preflight"].setdefault("addresses", ["127.0.0.1"])
    return build_parts(MemoryReactorClock(), parse_config(sections, tmp_path))


def test_store_schema_is_made_at_build_time(tmp_path):
    """The SQL store's tables exist once the parts are built, before the reactor runs."""
    import sqlite3

    _parts(tmp_path)
    with sqlite3.connect(tmp_path / "var" / "jobhost.db") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"domains", "certificates", "challenges"} <= tables


def test_unusable_store_is_a_config_error(tmp_path):
    """A database file that is not a database stops start-up with one line naming [store] url and the cause."""
    from jobhost.errors import ConfigError

    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "jobhost.db").write_bytes(b"this is not an SQLite database, " * 64)
    with pytest.raises(ConfigError) as info:
        _parts(tmp_path)
    assert info.value.path == ("store", "url")
    assert "cannot use the store:" in str(info.value) and "file is not a database" in str(info.value)


def test_fallback_file_that_is_not_a_certificate_is_a_config_error(tmp_path):
    """A [tls] fallback_cert file that holds no key and certificate is refused (never overwritten)."""
    from jobhost.errors import ConfigError

    path = tmp_path / "own-default.pem"
    path.write_text("not a PEM file\n")
    with pytest.raises(ConfigError) as info:
        _parts(tmp_path, tls={"fallback_cert": str(path)})
    assert info.value.path == ("tls", "fallback_cert")
    assert path.read_text() == "not a PEM file\n"


def test_fallback_that_cannot_be_written_is_a_config_error(tmp_path):
    """A fallback certificate that cannot be saved stops start-up, naming the file and the OS's reason."""
    from jobhost.errors import ConfigError

    (tmp_path / "plain-file").write_text("")
    target = tmp_path / "plain-file" / "fallback.pem"
    with pytest.raises(ConfigError) as info:
        _parts(tmp_path, tls={"fallback_cert": str(target)})
    assert info.value.path == ("tls", "fallback_cert")
    assert f"cannot write {target}: " in str(info.value), "names the file, then the OS's reason"


def test_metrics_cover_caches_and_handshakes(tmp_path):
    """/metrics exports the certificate and page cache lookups and the TLS handshake outcomes."""
    exposition = _parts(tmp_path).metrics.exposition()
    for name in (b"jobhost_cert_cache_total", b"jobhost_page_cache_total", b"jobhost_tls_handshakes_total"):
        assert b"# TYPE " + name in exposition or b"# HELP " + name in exposition, name
    assert b"jobhost_webhook_deliveries_total" not in exposition, "no webhooks configured"


def test_tls_cache_sizes_reach_the_cache_and_the_session_contexts(tmp_path):
    """[tls] cache_size, context_cache_size and negative_cache_size size the SNI cache's tiers (and the session contexts)."""
    parts = _parts(tmp_path, tls={"cache_size": 300, "context_cache_size": 20, "negative_cache_size": 7})
    cache = parts.caches.certificates
    assert (cache.max_entries, cache.max_contexts, cache.max_negative) == (300, 20, 7)
    assert parts.web.https.sessions.max_entries == 20
    exposition = parts.metrics.exposition()
    for name in (b"jobhost_cert_cache_entries", b"jobhost_cert_cache_bytes", b"jobhost_cert_cache_evictions_total"):
        assert name in exposition, name


def test_without_webhook_events_are_dropped_quietly(tmp_path):
    """Without [events] webhook_url the issuing service and admin API get a sink that drops events."""
    from jobhost.events import NullEventSink

    parts = _parts(tmp_path)
    assert isinstance(parts.events, NullEventSink)
    assert parts.issuing.events is parts.events and parts.admin.resource.events is parts.events
    assert "events" not in [s.name for s in parts.root]
    assert not (tmp_path / "var" / "webhook.secret").exists()


def test_webhook_notifier_in_the_tree(tmp_path):
    """With a webhook_url the notifier is built, exported in /metrics and stopped after issuing and the listeners."""
    from jobhost.events import WebhookNotifier

    parts = _parts(tmp_path, events={"webhook_url": "https://hooks.example.test/jobhost"})
    assert isinstance(parts.events, WebhookNotifier)
    assert parts.issuing.events is parts.events and parts.admin.resource.events is parts.events
    names = [s.name for s in parts.root]
    assert names == ["changes", "acme-client", "events", "issuing", "store-stats", "reactor-lag", "http", "https", "admin"]
    assert b"jobhost_webhook_deliveries_total" in parts.metrics.exposition()
    assert (tmp_path / "var" / "webhook.secret").stat().st_mode & 0o777 == 0o600


def test_preflight_and_self_check_share_a_resolver(tmp_path):
    """Both checks enabled: the self-check resolves through the preflight's resolver; the admin API can run it."""
    parts = _parts(tmp_path)
    assert parts.checks.preflight is not None and parts.checks.self_check is not None
    assert parts.checks.self_check.resolver is parts.checks.preflight.resolver
    assert parts.issuing.preflight is parts.checks.preflight
    assert parts.issuing.self_check is parts.checks.self_check
    assert parts.admin.resource.self_check is not None


def test_preflight_disabled(tmp_path):
    """[preflight] enabled = false: no DNS/CAA checker, the self-check still runs on its own resolver."""
    parts = _parts(tmp_path, preflight={"enabled": False})
    assert parts.checks.preflight is None and parts.issuing.preflight is None
    assert parts.checks.self_check is not None and parts.checks.self_check.resolver is not None


def test_self_check_disabled(tmp_path):
    """[preflight] self_check = false: neither the issuing service nor the admin API self-checks."""
    parts = _parts(tmp_path, preflight={"self_check": False})
    assert parts.checks.preflight is not None
    assert parts.checks.self_check is None and parts.issuing.self_check is None
    assert parts.admin.resource.self_check is None


def test_external_account_binding_needs_both_values(tmp_path):
    """[acme] eab_kid and eab_hmac_key reach the issuing service together; one of them alone is not EAB."""
    both = _parts(tmp_path / "both", acme={"eab_kid": "kid-1", "eab_hmac_key": "aG1hYy1rZXk"})
    assert both.issuing.issuers[0].eab == ("kid-1", "aG1hYy1rZXk")
    kid_only = _parts(tmp_path / "kid", acme={"eab_kid": "kid-1"})
    assert kid_only.issuing.issuers[0].eab is None
    assert _parts(tmp_path / "none").issuing.issuers[0].eab is None


def test_each_issuer_gets_its_own_client_account_settings_and_chain(tmp_path):
    """[[acme.issuers]]: one issuer per entry, in order, each with its own client, directory, EAB,
    key types, profile and preferred chain; keys an entry leaves out come from [acme]."""
    parts = _parts(tmp_path, acme={
        "key_type": "rsa-2048", "profile": "classic",
        "issuers": [
            {"name": "le", "directory": "letsencrypt", "preferred_chain": "ISRG Root X1"},
            {"name": "zerossl", "directory": "https://acme.zerossl.test/v2/DV90", "eab_kid": "kid-2",
             "eab_hmac_key": "aG1hYw", "key_type": "ecdsa-p384", "account_key_type": "rsa-2048",
             "profile": "tlsserver"},
        ],
    })
    first, second = parts.issuing.issuers
    assert (first.name, first.directory_url) == ("le", "https://acme-v02.api.letsencrypt.org/directory")
    assert (first.key_type, first.account_key_type, first.eab, first.profile) == (
        "rsa-2048", "ecdsa-p256", None, "classic")
    assert (second.name, second.directory_url) == ("zerossl", "https://acme.zerossl.test/v2/DV90")
    assert (second.key_type, second.account_key_type, second.eab, second.profile) == (
        "ecdsa-p384", "rsa-2048", ("kid-2", "aG1hYw"), "tlsserver")
    assert first.client.directory_url == first.directory_url and second.client.directory_url == second.directory_url
    assert first.client is not second.client and first.client.pool is not second.client.pool
    assert (first.client.preferred_chain, second.client.preferred_chain) == ("ISRG Root X1", None)
    assert parts.issuing.client is first.client and parts.issuing.directory_url == first.directory_url


def test_lease_holder_is_the_node_id_or_the_host_name(tmp_path):
    """[renewal] node_id names this node in issuance leases; without it the host name does."""
    import socket

    assert _parts(tmp_path / "a", renewal={"node_id": "node-a"}).issuing.holder == "node-a"
    assert _parts(tmp_path / "b").issuing.holder == socket.gethostname()


@pytest.mark.parametrize(
    ("https", "web", "port"),
    [
        ("tcp:8443", {}, 8443),
        ("tcp6:443:interface=\\:\\:", {}, 443),
        ("tcp:8443", {"https_redirect_port": 443}, 443),
        ("unix:/run/jobhost-https.sock", {}, None),
        ("unix:/run/jobhost-https.sock", {"https_redirect_port": 8443}, 8443),
    ],
)
def test_redirect_port(tmp_path, https, web, port):
    """HTTP redirects go to [web] https_redirect_port, else the HTTPS listener's TCP port, else no port."""
    parts = _parts(tmp_path, listen={"https": https}, web=web)
    assert parts.web.http.resource.https_port == port


@pytest.mark.parametrize(
    ("reachable", "ok", "message"),
    [
        (None, True, "no order placed yet"),
        (True, True, "reachable at the last order"),
        (False, False, "unreachable at the last order"),
    ],
)
def test_health_reports_the_ca(tmp_path, reachable, ok, message):
    """/healthz's CA part follows the last order: not critical, failing only when the CA was unreachable."""
    parts = _parts(tmp_path)
    parts.issuing.ca_reachable = reachable
    assert parts.health()["ca"] == {"ok": ok, "message": message, "critical": False}


def test_invalidate_all_drops_every_rendered_page(tmp_path):
    """The fan-out's invalidate_all (a store-wide change) empties the page cache too."""
    parts = _parts(tmp_path)
    pages = parts.caches.pages
    for host in ("jobs.acme-corp.test", "careers.example.test"):
        pages.put(host, b"/", object(), pages.token(host))
    parts.caches.fanout.invalidate_all()
    assert pages.get("jobs.acme-corp.test", b"/") is None and pages.get("careers.example.test", b"/") is None


# -- the root service -----------------------------------------------------------------------------


class Recorder(Service):
    """A child that records when it is stopped; its stop waits for ``gate`` (or raises ``error``)."""

    def __init__(self, name: str, stops: list, gate: Deferred | None = None, error: Exception | None = None) -> None:
        self.setName(name)
        self.stops, self.gate, self.error = stops, gate, error

    def stopService(self):
        Service.stopService(self)
        self.stops.append(self.name)
        if self.error is not None:
            raise self.error
        return self.gate


def test_start_up_line_names_what_is_served(tmp_path):
    """Starting the root logs the endpoints, the store (password redacted) and the CA."""
    config = parse_config(
        {
            "listen": {"http": "tcp:80", "https": "tcp:443", "admin": "tcp:8081:interface=127.0.0.1"},
            "store": {"url": "postgresql://jobhost:s3cret@db.internal/jobhost"},
            "acme": {"directory": "https://ca.example.test/directory"},
            "preflight": {"addresses": ["127.0.0.1"]},
        },
        tmp_path,
    )
    root = JobhostService(config)
    with capturedLogs() as events:
        root.startService()
    messages = [formatEvent(e) for e in events]
    assert len(messages) == 1
    line = messages[0]
    assert line.endswith("; one process")
    root.processes = 4
    with capturedLogs() as events:
        root.stopService()
    assert [formatEvent(e) for e in events] == ["jobhost stopped"]
    with capturedLogs() as events:
        root.startService()
    assert formatEvent(events[0]).endswith("; 4 worker processes")
    for part in ("http tcp:80", "https tcp:443", "admin tcp:8081:interface=127.0.0.1",
                 "db.internal", "CA https://ca.example.test/directory", "unknown names get self-signed"):
        assert part in line, part
    assert "s3cret" not in line
    assert root.running


def test_root_without_config_starts_silently():
    """A root built without a config (tests) starts its children and logs nothing about a config."""
    root = JobhostService()
    child = Recorder("child", [])
    child.setServiceParent(root)
    with capturedLogs() as events:
        root.startService()
    assert root.running and child.running
    assert events == []


def test_root_stops_children_in_reverse_one_at_a_time():
    """Each child's stop starts only when the one after it has finished; the root stops running at once."""
    stops: list[str] = []
    gates = {name: Deferred() for name in ("store", "issuing", "listener")}
    root = JobhostService()
    for name in ("store", "issuing", "listener"):
        Recorder(name, stops, gates[name]).setServiceParent(root)
    root.startService()
    with capturedLogs() as events:
        stopped = root.stopService()
        assert not root.running
        assert stops == ["listener"]
        gates["listener"].callback(None)
        assert stops == ["listener", "issuing"]
        gates["issuing"].callback(None)
        assert stops == ["listener", "issuing", "store"] and not stopped.called
        gates["store"].callback(None)
    assert stopped.called
    assert [e for e in events if e.get("log_failure")] == [], "nothing failed"


def test_a_failing_stop_is_logged_and_the_rest_still_stop():
    """A child whose stop raises or fails is logged by name; the children before it still stop."""
    stops: list[str] = []
    root = JobhostService()
    Recorder("store", stops).setServiceParent(root)
    Recorder("issuing", stops, error=RuntimeError("stuck")).setServiceParent(root)
    Recorder("listener", stops, gate=fail(OSError("close failed"))).setServiceParent(root)
    root.startService()
    with capturedLogs() as events:
        stopped = root.stopService()
    assert stopped.called and stops == ["listener", "issuing", "store"]
    failures = [(e["service"].name, e["log_failure"].value) for e in events if e.get("log_failure")]
    assert [(name, type(error)) for name, error in failures] == [("listener", OSError), ("issuing", RuntimeError)]


@implementer(IListeningPort)
class PortClosingBadly:
    """A bound port whose close fails (fault injection)."""

    def stopListening(self):
        return fail(OSError("close failed"))

    def getHost(self):
        return None

    def startListening(self):
        pass


@implementer(IStreamServerEndpoint)
class BoundEndpoint:
    """An endpoint that binds at once, to ``port``."""

    def __init__(self, port) -> None:
        self.port = port

    def listen(self, factory):
        return succeed(self.port)


def test_listener_stop_reports_a_port_that_fails_to_close():
    """A port that fails to close fails the listener's stop (so the root logs it); it is no longer running."""
    listener = ListenerService("https", BoundEndpoint(PortClosingBadly()), Factory())
    listener.startService()
    assert listener.listening
    stopped = listener.stopService()
    failures: list = []
    stopped.addErrback(failures.append)
    assert [f.type for f in failures] == [OSError]
    assert not listener.running and listener.port is None


def test_listener_stopped_while_still_binding():
    """Stopping a listener whose endpoint has not bound yet gives up binding and finishes at once, quietly."""
    pending: Deferred = Deferred()
    listener = ListenerService("http", FailingEndpoint(pending), Factory())
    listener.startService()
    with capturedLogs() as events:
        stopped = listener.stopService()
    assert stopped.called and not listener.running and not listener.listening
    assert [e for e in events if e.get("log_failure")] == [], "giving up is not an error"


def test_listener_stopped_before_it_started():
    """A listener marked running that never listened (no endpoint asked) stops at once and is no longer running."""
    listener = ListenerService("admin", FailingEndpoint(Deferred()), Factory())
    listener.running = True  # as a parent's start marks it, before its own start ran
    stopped = listener.stopService()
    assert stopped.called and not listener.running


def test_root_waits_for_a_close_on_stop():
    """A part closed on stop (the ACME client, the webhook notifier) holds up the stops before it until closed."""
    from jobhost.tap import _CallOnStop

    stops: list[str] = []
    closing: Deferred = Deferred()
    root = JobhostService()
    Recorder("store", stops).setServiceParent(root)
    _CallOnStop("acme-client", lambda: closing).setServiceParent(root)
    root.startService()
    stopped = root.stopService()
    assert stops == [] and not root.getServiceNamed("acme-client").running
    closing.callback(None)
    assert stops == ["store"] and stopped.called


def test_public_listeners_get_the_backlog_unless_they_set_one():
    from jobhost.tap import with_backlog

    assert with_backlog("tcp:8443", 1024) == "tcp:8443:backlog=1024"
    assert with_backlog("tcp6:443:interface=\\:\\:", 2048) == "tcp6:443:interface=\\:\\::backlog=2048"
    assert with_backlog("tcp:8443:backlog=50", 1024) == "tcp:8443:backlog=50"
    assert with_backlog("systemd:domain=INET:index=0", 1024) == "systemd:domain=INET:index=0"
    assert with_backlog("unix:/run/jobhost.sock", 1024) == "unix:/run/jobhost.sock"


def test_connection_cap_raises_the_fd_limit_and_keeps_a_reserve(tmp_path):
    import resource

    from jobhost.config import parse_config
    from jobhost.tap import FD_RESERVE, connection_cap

    auto = parse_config({"preflight": {"enabled": False}}, tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        cap = connection_cap(auto)
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert raised == hard or hard == resource.RLIM_INFINITY
        assert cap == max(raised - FD_RESERVE, 64)
        fixed = parse_config({"limits": {"max_connections": 100}, "preflight": {"enabled": False}}, tmp_path)
        assert connection_cap(fixed) == 100
        huge = parse_config({"limits": {"max_connections": 10**9}, "preflight": {"enabled": False}}, tmp_path)
        assert connection_cap(huge) == cap  # never above what the fd limit allows
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_tls_policy_follows_the_config(tmp_path):
    from jobhost.config import parse_config
    from jobhost.tap import tls_policy

    default = tls_policy(parse_config({"preflight": {"enabled": False}}, tmp_path))
    assert (default.profile, default.alpn, default.session_tickets, default.session_lifetime) == (
        "intermediate", (b"h2", b"http/1.1"), True, 7200.0)
    chosen = tls_policy(parse_config(
        {"tls": {"profile": "modern", "http2": False, "session_tickets": False, "session_lifetime": "5m"},
         "preflight": {"enabled": False}}, tmp_path))
    assert (chosen.profile, chosen.alpn, chosen.session_tickets, chosen.session_lifetime) == (
        "modern", (b"http/1.1",), False, 300.0)


def test_limits_are_wired_and_exported(tmp_path):
    """[limits] reaches the listeners' factories, and /metrics exports the limit counters and gauges."""
    config = parse_config(
        {
            "listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0:interface=127.0.0.1"},
            "preflight": {"addresses": ["127.0.0.1"]},
            "limits": {"max_connections": 500, "max_per_peer": 7, "max_held": 9, "backlog": 77},
        },
        tmp_path,
    )
    parts = build_parts(MemoryReactorClock(), config)
    https = parts.web.https
    assert (https.max_held, https.budget.max_per_peer, https.budget.max_connections) == (9, 7, 500)
    assert parts.web.http.budget is https.budget  # one budget for both public listeners
    assert [str(s.endpoint._backlog) for s in parts.listeners[:2]] == ["77", "77"]
    https.budget.admit(IPv4Address("TCP", "192.0.2.1", 1))
    https.reporter.hit("max_per_peer")
    text = parts.metrics.exposition().decode()
    assert 'jobhost_connection_limit_total{limit="max_per_peer"} 1.0' in text
    assert 'jobhost_connection_limit_total{limit="request_deadline"} 0.0' in text
    assert "jobhost_connections_open 1.0" in text
    assert "jobhost_connections_max 500.0" in text


def test_an_unwritable_access_log_is_a_config_error_naming_the_key(tmp_path):
    config = parse_config(
        {
            "listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0:interface=127.0.0.1"},
            "preflight": {"addresses": ["127.0.0.1"]},
            "web": {"access_log": "missing-dir/access.log"},
        },
        tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        build_parts(MemoryReactorClock(), config)
    assert "[web] access_log" in str(info.value)
    assert "cannot write" in str(info.value) and "No such file or directory" in str(info.value)
    (tmp_path / "missing-dir").mkdir()
    build_parts(MemoryReactorClock(), config)
    assert (tmp_path / "missing-dir" / "access.log").exists()


def test_reactor_lag_reaches_metrics(tmp_path):
    """The lag monitor runs on the daemon's reactor and its ticks, worst and recent worst reach /metrics."""
    reactor = MemoryReactorClock()
    parts = build_parts(reactor, parse_config(
        {"listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0:interface=127.0.0.1"},
         "preflight": {"addresses": ["127.0.0.1"]}}, tmp_path))
    assert parts.root.getServiceNamed("reactor-lag") is parts.lag
    assert parts.lag.freeze_heap, "the daemon freezes its start-up heap"
    frozen = []
    parts.lag.freeze = lambda: frozen.append(True)  # not the test process's heap
    parts.lag.startService()
    assert frozen == [True]
    parts.lag.gc_pauses.callback("start", {"generation": 2})
    parts.lag.gc_pauses.callback("stop", {"generation": 2})
    reactor.advance(parts.lag.interval + 0.03)  # one tick, 30 ms late
    parts.lag.stopService()
    text = parts.metrics.exposition().decode()
    assert 'jobhost_reactor_lag_seconds_bucket{le="0.02"} 0.0' in text
    assert 'jobhost_reactor_lag_seconds_bucket{le="0.03"} 1.0' in text
    assert "jobhost_reactor_lag_seconds_count 1.0" in text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(values["jobhost_reactor_lag_max_seconds"]) == pytest.approx(0.03)
    assert float(values["jobhost_reactor_lag_recent_max_seconds"]) == pytest.approx(0.03)
    assert "jobhost_reactor_lag_busy_max_seconds" in values
    assert float(values['jobhost_gc_collections_total{generation="2"}']) >= 1
    assert 'jobhost_gc_pause_max_seconds{generation="0"}' in values


@pytest.mark.parametrize("admin, extra, warned, plain", [
    ("tcp:0:interface=127.0.0.1", {}, False, False),
    ("tcp:0:interface=10.20.30.40", {}, True, True),
    ("tcp:0", {"allow_public": True}, True, True),
])
def test_an_admin_listener_reachable_from_other_machines_is_a_warning(tmp_path, admin, extra, warned, plain):
    """Building the tree warns when the admin API is not on loopback, saying when the token travels in clear."""
    config = parse_config(
        {"listen": {"http": "tcp:0", "https": "tcp:0", "admin": admin}, "admin": extra,
         "preflight": {"addresses": ["127.0.0.1"]}},
        tmp_path,
    )
    with capturedLogs() as events:
        build_parts(MemoryReactorClock(), config)
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn and "admin API" in e["log_format"]]
    assert len(warnings) == (1 if warned else 0), warnings
    if warned:
        assert admin in warnings[0]
        assert ("unencrypted" in warnings[0]) is plain


def test_tls_alpn01_gets_its_self_check_on_the_shared_resolver(tmp_path):
    """[acme] challenges with tls-alpn-01: the issuing service gets the list and a TLS-ALPN-01 self-check on
    [preflight] tls_self_check_port and the same resolver; without it, no such self-check."""
    from jobhost.selfcheck import TlsAlpnSelfCheck

    parts = _parts(tmp_path, acme={"challenges": ["http-01", "tls-alpn-01"]}, preflight={"tls_self_check_port": 5443})
    check = parts.issuing.tls_alpn_self_check
    assert isinstance(check, TlsAlpnSelfCheck) and check is parts.checks.tls_alpn_self_check
    assert check.port == 5443 and check.resolver is parts.checks.preflight.resolver
    assert parts.issuing.challenges == ("http-01", "tls-alpn-01")
    plain = _parts(tmp_path / "plain")
    assert plain.issuing.tls_alpn_self_check is None and plain.issuing.challenges == ("http-01",)
