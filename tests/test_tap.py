"""Tests for jobhost.tap: options and the service tree, built without running a reactor."""

from pathlib import Path

import pytest
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.usage import UsageError
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from jobhost.config import parse_config
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
    """The tree holds, in start order, the change poller, ACME client, issuing, stats and three listeners."""
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
    assert [s.name for s in root] == ["changes", "acme-client", "issuing", "store-stats", "http", "https", "admin"]
    assert [s for s in root if isinstance(s, ListenerService)] == list(parts.listeners)
    assert [s.name for s in parts.listeners] == ["http", "https", "admin"]
    assert root.getServiceNamed("issuing") is parts.issuing
    assert parts.issuing.domains is parts.domains and parts.admin.resource.domains is parts.domains
    assert parts.domains.store is parts.store
    assert set(vars(root)) == set(vars(MultiService())) | {"config"}, "nothing is stuck onto the root service"
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
        {"listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0"}, "preflight": {"addresses": ["127.0.0.1"]}},
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


@implementer(IStreamServerEndpoint)
class FailingEndpoint:
    """An endpoint whose listen fails with CannotListenError, at once or when ``later`` fires."""

    def __init__(self, later: Deferred | None = None) -> None:
        self.later = later

    def listen(self, factory):
        if self.later is not None:
            return self.later
        return fail(CannotListenError("127.0.0.1", 80, OSError("Address already in use")))


def test_listener_that_cannot_bind_fails_start_up():
    """A port that cannot be bound raises from privilegedStartService (twistd exits non-zero)."""
    listener = ListenerService("http", FailingEndpoint(), Factory())
    with pytest.raises(CannotListenError):
        listener.privilegedStartService()
    assert not listener.listening


def test_listener_failing_later_is_logged():
    """A listen that fails after start-up is logged, not raised; stopping still works."""
    later: Deferred = Deferred()
    listener = ListenerService("http", FailingEndpoint(later), Factory())
    listener.startService()
    with capturedLogs() as events:
        later.errback(CannotListenError("127.0.0.1", 80, OSError("Address already in use")))
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
