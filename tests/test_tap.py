"""Tests for jobhost.tap: options and the service tree, built without running a reactor."""

from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError

from jobhost.config import parse_config
from jobhost.tap import JobhostService, Options, build_service

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
    root = build_service(MemoryReactorClock(), config)
    assert isinstance(root, JobhostService)
    assert [s.name for s in root] == ["changes", "acme-client", "issuing", "store-stats", "http", "https", "admin"]
    listeners = [s for s in root if isinstance(s, StreamServerEndpointService)]
    assert len(listeners) == 3
    assert all(s._raiseSynchronously for s in listeners), "a port that cannot be bound fails start-up"
    assert (tmp_path / "var" / "fallback.pem").exists()
    assert (tmp_path / "var" / "admin.token").stat().st_mode & 0o777 == 0o600


def test_reject_fallback_needs_no_certificate(tmp_path):
    """With [tls] fallback = "reject" no fallback certificate is made."""
    config = parse_config(
        {"tls": {"fallback": "reject"}, "preflight": {"addresses": ["127.0.0.1"]}}, tmp_path
    )
    build_service(MemoryReactorClock(), config)
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
    path.write_text('[store]\nurl = "sqlite:var/jobhost.db"\n[preflight]\naddresses = ["127.0.0.1"]\n')
    with pytest.raises(UsageError, match=r"\[store\] url: unsupported store URL"):
        Options().parseOptions(["--config", str(path)])


def test_health_reports_listeners(tmp_path):
    """/healthz's listener part is critical and names listeners that are not bound yet."""
    from jobhost.tap import _health

    config = parse_config(
        {"listen": {"http": "tcp:0", "https": "tcp:0", "admin": "tcp:0"}, "preflight": {"addresses": ["127.0.0.1"]}},
        tmp_path,
    )
    root = build_service(MemoryReactorClock(), config)
    health = _health(root, root.issuing)
    assert health["listeners"] == {"ok": False, "message": "not listening: http, https, admin", "critical": True}
    assert health["ca"]["ok"] is True and health["ca"]["critical"] is False
    root.startService()
    try:
        assert _health(root, root.issuing)["listeners"]["ok"] is True
    finally:
        root.stopService()
