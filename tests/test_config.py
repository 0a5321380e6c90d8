"""Tests for jobhost.config: defaults, and errors that name the file and key path."""

import importlib.util
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock

from jobhost.config import IssuerConfig, load_config, parse_config, parse_duration
from jobhost.errors import ConfigError
from jobhost.hostnames import parse_resolver
from jobhost.preflight import Preflight
from jobhost.selfcheck import HttpSelfCheck
from jobhost.store.factory import store_from_url, supported_store_urls

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_default_file_parses(tmp_path):
    """etc/jobhost.toml loads, and its relative paths resolve against the base directory."""
    config = load_config(ROOT / "etc" / "jobhost.toml", base_dir=tmp_path)
    assert config.listen.https == "tcp:8443"
    assert config.store.url == "sqlite:var/jobhost.db"
    assert config.tls.fallback_cert == str(tmp_path / "var" / "fallback.pem")
    assert config.admin.token_file == str(tmp_path / "var" / "admin.token")
    assert "127.0.0.1" in config.listen.admin


def test_production_example_parses(tmp_path):
    """The commented production example is a valid config."""
    config = load_config(ROOT / "etc" / "jobhost.production.toml", base_dir=tmp_path)
    assert config.listen.http == "tcp:80"
    assert config.acme.directory_url.startswith("https://acme-v02.api.letsencrypt.org/")
    assert config.renewal.backoff == (60.0, 600.0, 6000.0, 86400.0)


def test_defaults(tmp_path):
    """With only the one key jobhost cannot guess (where customers point), the defaults apply."""
    config = parse_config({"preflight": {"addresses": ["203.0.113.10"]}}, tmp_path)
    assert config.tls.cache_size == 10000
    assert (config.tls.context_cache_size, config.tls.negative_cache_size) == (1000, 10000)
    assert config.tls.fallback == "self-signed"
    assert config.acme.key_type == "ecdsa-p256"
    assert config.preflight.self_check_port == 80


def test_empty_file_names_preflight(tmp_path):
    """An empty config is refused: preflight needs addresses or CNAME targets (or to be disabled)."""
    with pytest.raises(ConfigError, match=r"\[preflight\]: set addresses or cname_targets"):
        parse_config({}, tmp_path)
    assert parse_config({"preflight": {"enabled": False}}, tmp_path).preflight.enabled is False


@pytest.mark.parametrize(
    "document, message",
    [
        ({"tls": {"cache_size": "ten"}}, '[tls] cache_size: expected a positive integer, got "ten"'),
        ({"tls": {"cache_size": 0}}, "[tls] cache_size: expected a positive integer, got 0"),
        ({"tls": {"context_cache_size": 0}}, "[tls] context_cache_size: expected a positive integer, got 0"),
        ({"tls": {"negative_cache_size": "many"}},
         '[tls] negative_cache_size: expected a positive integer, got "many"'),
        ({"tls": {"fallback": "none"}}, '[tls] fallback: expected one of "self-signed", "reject"'),
        ({"tls": {"poll_interval": "soon"}}, "[tls] poll_interval: expected a duration"),
        ({"tls": {"colour": 1}}, "[tls] colour: unknown key"),
        ({"listen": {"https": "carrier-pigeon:443"}}, "[listen] https: not a Twisted endpoint"),
        ({"listen": {"http": 80}}, "[listen] http: expected a non-empty string"),
        ({"store": {"url": "mongodb://x"}}, "[store] url: unsupported store URL 'mongodb://x'"),
        ({"acme": {"directory": "my-ca"}}, "[acme] directory: expected"),
        ({"acme": {"key_type": "dsa"}}, "[acme] key_type: expected one of"),
        ({"acme": {"contact": "ops@example.com"}}, "[acme] contact: expected a list"),
        ({"preflight": {"addresses": ["1.2.3.999"]}}, "[preflight] addresses: item 0: expected an IP address"),
        ({"preflight": {"cname_targets": ["*.x.com"]}}, "[preflight] cname_targets: item 0: wildcards"),
        ({"preflight": {"resolvers": ["dns.google"]}}, '[preflight] resolvers: item 0: expected "IP:port"'),
        ({"renewal": {"backoff": []}}, "[renewal] backoff: expected at least one delay"),
        ({"nonsense": {}}, "[nonsense]: unknown section"),
        ({"tls": "big"}, "[tls]: expected a table"),
        ({"acme": {"issuers": [{"directory": "https://a.test/dir"}, {"directory": "my-ca"}]}},
         '[acme.issuers][1] directory: expected "letsencrypt", "letsencrypt-staging" or a directory URL, got "my-ca"'),
        ({"acme": {"issuers": [{"name": "a"}]}}, "[acme.issuers][0] directory: missing; every issuer needs its directory"),
        ({"acme": {"issuers": [{"directory": "letsencrypt", "key_type": "dsa"}]}},
         "[acme.issuers][0] key_type: expected one of"),
        ({"acme": {"issuers": [{"directory": "letsencrypt", "contact": ["mailto:a@b.c"]}]}},
         "[acme.issuers][0] contact: unknown key; expected one of account_key_type, ca_bundle, directory,"),
        ({"acme": {"issuers": [{"directory": "letsencrypt", "name": " "}]}},
         "[acme.issuers][0] name: expected a non-empty string"),
        ({"acme": {"issuers": [{"directory": "letsencrypt", "name": "x"}, {"directory": "https://b.test/dir", "name": "x"}]}},
         '[acme.issuers][1] name: "x" is already the name of issuer 0'),
        ({"acme": {"issuers": [{"directory": "letsencrypt", "name": "x"}, {"directory": "letsencrypt", "name": "y"}]}},
         '[acme.issuers][1] directory: issuer 0 already uses "https://acme-v02.api.letsencrypt.org/directory"'),
        ({"acme": {"issuers": []}}, "[acme] issuers: expected at least one issuer"),
        ({"acme": {"issuers": {"directory": "letsencrypt"}}}, "[acme] issuers: expected [[acme.issuers]] tables"),
        ({"acme": {"issuers": [{"directory": "letsencrypt"}, "zerossl"]}}, "[acme] issuers: expected [[acme.issuers]] tables"),
        ({"acme": {"directory": "letsencrypt", "issuers": [{"directory": "letsencrypt"}]}},
         "[acme] directory: set directory in each [[acme.issuers]] entry instead"),
    ],
)
def test_errors_name_the_key_path(document, message):
    """Each wrong value raises ConfigError whose text names the file, key path and cause."""
    with pytest.raises(ConfigError) as info:
        parse_config(document, Path("/srv"), file="jobhost.toml")
    assert str(info.value).startswith("jobhost.toml: ")
    assert message in str(info.value)


def test_unreadable_and_malformed_files(tmp_path):
    """A missing file, non-UTF-8 bytes and broken TOML each name the file and the cause."""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    bad.write_text("[tls\ncache_size = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    "text, seconds",
    [(5, 5.0), (2.5, 2.5), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0), ("7d", 604800.0), ("250ms", 0.25)],
)
def test_durations(text, seconds):
    """Durations accept numbers of seconds and unit suffixes."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "-1", -1, True, "5 years"])
def test_bad_durations(text):
    """Anything else is refused with the value quoted."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_events_defaults_send_no_webhooks(tmp_path):
    """Without an [events] section no webhook URL is set, and the secret file resolves under base_dir."""
    config = parse_config({"preflight": {"addresses": ["203.0.113.10"]}}, tmp_path)
    assert config.events.webhook_url is None
    assert config.events.webhook_secret_file == str(tmp_path / "var" / "webhook.secret")
    assert config.events.backoff == (5.0, 30.0, 120.0, 600.0, 3600.0)
    empty = parse_config({"preflight": {"enabled": False}, "events": {"webhook_url": ""}}, tmp_path)
    assert empty.events.webhook_url is None


def test_events_section_parses(tmp_path):
    """[events] keys parse: the URL is kept, the secret path resolves, durations become seconds."""
    config = parse_config(
        {
            "preflight": {"enabled": False},
            "events": {
                "webhook_url": "https://hooks.example.com/jobhost",
                "webhook_secret_file": "secrets/hook",
                "timeout": "3s",
                "backoff": ["1s", "1m"],
            },
        },
        tmp_path,
    )
    assert config.events.webhook_url == "https://hooks.example.com/jobhost"
    assert config.events.webhook_secret_file == str(tmp_path / "secrets" / "hook")
    assert config.events.timeout == 3.0
    assert config.events.backoff == (1.0, 60.0)
    absolute = parse_config(
        {"preflight": {"enabled": False}, "events": {"webhook_secret_file": "/etc/jobhost/hook"}}, tmp_path
    )
    assert absolute.events.webhook_secret_file == "/etc/jobhost/hook"


def test_production_example_documents_events(tmp_path):
    """The production example has every [events] key, with webhooks off."""
    import tomllib

    document = tomllib.loads((ROOT / "etc" / "jobhost.production.toml").read_text())
    assert set(document["events"]) == {"webhook_url", "webhook_secret_file", "timeout", "backoff"}
    config = load_config(ROOT / "etc" / "jobhost.production.toml", base_dir=tmp_path)
    assert config.events.webhook_url is None
    assert config.events.webhook_secret_file == str(tmp_path / "webhook.secret")


@pytest.mark.parametrize(
    "events, message",
    [
        ({"webhook_url": "ftp://hooks.example.com/"}, "[events] webhook_url: expected an http:// or https:// URL"),
        ({"webhook_url": "hooks.example.com/x"}, "[events] webhook_url: expected an http:// or https:// URL"),
        ({"webhook_url": "https://"}, "[events] webhook_url: expected an http:// or https:// URL"),
        ({"webhook_url": "https://hooks.example.com:99999/"}, "[events] webhook_url: expected an http://"),
        ({"webhook_url": "https://hooks.example.com/a b"}, "[events] webhook_url: expected an http://"),
        ({"webhook_url": 443}, "[events] webhook_url: expected a string, got 443"),
        ({"webhook_secret_file": ""}, '[events] webhook_secret_file: expected a non-empty string, got ""'),
        ({"timeout": 0}, "[events] timeout: expected a positive duration, got 0"),
        ({"timeout": "soon"}, "[events] timeout: expected a duration"),
        ({"backoff": "5s"}, '[events] backoff: expected a list, got "5s"'),
        ({"backoff": ["5s", "never"]}, "[events] backoff: item 1: expected a duration"),
        ({"backoff": []}, "[events] backoff: expected at least one delay"),
        ({"secret": "x"}, "[events] secret: unknown key; expected one of backoff, timeout, webhook_secret_file"),
    ],
)
def test_events_errors_name_the_key_path(events, message):
    """Each wrong [events] value raises ConfigError naming the file, the key and the cause."""
    with pytest.raises(ConfigError) as info:
        parse_config({"preflight": {"enabled": False}, "events": events}, Path("/srv"), file="jobhost.toml")
    assert str(info.value).startswith("jobhost.toml: ")
    assert message in str(info.value)


# ---------------------------------------------------------------- [store] url


@pytest.mark.parametrize(
    "url", ["mysql://jobhost:s3cret@db/jobhost", "redis://db/0", "var/store"]
)
def test_store_url_no_store_implements_is_refused(url):
    """A store URL no store implements is refused at parse time, listing (from the factory) those that exist."""
    with pytest.raises(ConfigError) as info:
        parse_config({"store": {"url": url}, "preflight": {"enabled": False}}, Path("/srv"), file="jobhost.toml")
    message = str(info.value)
    assert message.startswith("jobhost.toml: [store] url: unsupported store URL")
    assert message.endswith("supported: " + ", ".join(supported_store_urls()))
    assert "directory:PATH" in message and "s3cret" not in message
    assert info.value.path == ("store", "url")


@pytest.mark.parametrize(
    "url, problem",
    [
        ("directory:", "names no directory"),
        ("memory:x", "takes nothing"),
        ("sqlite:", "names no file"),
        ("postgresql:db/jobhost", "expected postgresql://"),
        ("postgresql://db:port/jobhost", "not a PostgreSQL URL"),
    ],
)
def test_store_url_its_store_cannot_use_is_refused(url, problem):
    """A supported scheme with a malformed rest is refused at parse time, as the factory would at start-up."""
    with pytest.raises(ConfigError, match=problem):
        parse_config({"store": {"url": url}, "preflight": {"enabled": False}}, Path("/srv"))


@pytest.mark.parametrize("url", ["directory:var/store", "directory:/srv/jobhost", "memory:"])
def test_every_store_url_the_config_accepts_builds(url, tmp_path):
    """Whatever store URL the config accepts, the factory builds a store from."""
    config = parse_config({"store": {"url": url}, "preflight": {"enabled": False}}, tmp_path)
    assert store_from_url(config.store.url, MemoryReactorClock(), str(tmp_path)) is not None


# ---------------------------------------------------------------- [preflight] resolvers

RESOLVERS = [
    "127.0.0.1", "127.0.0.1:5353", " 192.0.2.53:53 ", "[::1]:53", "[::1]", "::1", "2001:db8::53",
    "::1:53", "[2001:db8::1]:65535", "1.1.1.1:1",
    # refused by all three:
    "dns.google", "dns.google:53", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "127.0.0.1:", "127.0.0.1: 53",
    "127.0.0.1:+53", "[::1", "[::1]x", "[::1]:", "[127.0.0.1]:53", "", "1.2.3.4:53:53",
]


def _servers_from_each(resolver: str):
    """The (ip, port) the config, the preflight checker and the self-check make of ``resolver``."""
    config = parse_config({"preflight": {"addresses": ["203.0.113.10"], "resolvers": [resolver]}}, Path("/srv"))
    (text,) = config.preflight.resolvers
    preflight = Preflight.create(MemoryReactorClock(), config.preflight.resolvers, ["203.0.113.10"], [])
    self_check = HttpSelfCheck.create(MemoryReactorClock(), config.preflight.resolvers)
    return parse_resolver(text), preflight.resolver.servers, self_check.resolver.servers


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_every_resolver_the_config_accepts_preflight_and_self_check_accept(resolver):
    """A resolver the config accepts is one server, the same one, in preflight and self-check alike."""
    try:
        parse_config({"preflight": {"addresses": ["203.0.113.10"], "resolvers": [resolver]}}, Path("/srv"))
    except ConfigError as e:
        assert e.path == ("preflight", "resolvers")
        with pytest.raises(ConfigError):
            Preflight.create(MemoryReactorClock(), [resolver], ["203.0.113.10"], [])
        with pytest.raises(ConfigError):
            HttpSelfCheck.create(MemoryReactorClock(), [resolver])
        return
    server, preflight_servers, self_check_servers = _servers_from_each(resolver)
    assert preflight_servers == self_check_servers == [server]


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.tuples(st.ip_addresses(v=4), st.integers(0, 70000)).map(lambda t: f"{t[0]}:{t[1]}"),
        st.tuples(st.ip_addresses(v=6), st.integers(0, 70000)).map(lambda t: f"[{t[0]}]:{t[1]}"),
        st.text(alphabet="0123456789abcdef.:[] ", max_size=24),
    )
)
def test_resolver_agreement_property(resolver):
    """For any resolver text, config, preflight and self-check all refuse it or all make the same server of it."""
    try:
        parse_config({"preflight": {"addresses": ["203.0.113.10"], "resolvers": [resolver]}}, Path("/srv"))
    except ConfigError:
        with pytest.raises(ConfigError):
            Preflight.create(MemoryReactorClock(), [resolver], ["203.0.113.10"], [])
        with pytest.raises(ConfigError):
            HttpSelfCheck.create(MemoryReactorClock(), [resolver])
        return
    server, preflight_servers, self_check_servers = _servers_from_each(resolver)
    assert preflight_servers == self_check_servers == [server]


@pytest.mark.parametrize("url", ["sqlite:var/jobhost.db", "postgresql://jobhost@127.0.0.1:5432/jobhost", "postgres://db/jobhost"])
def test_sql_store_urls_are_accepted(url):
    """sqlite:PATH and postgresql:// URLs parse (nothing is opened while parsing)."""
    config = parse_config({"store": {"url": url}, "preflight": {"enabled": False}}, Path("/srv"))
    assert config.store.url == url


# ---------------------------------------------------------------- defaults and small values


def test_left_out_keys_take_the_values_the_production_example_documents(tmp_path):
    """Leaving a key out gives the default that etc/jobhost.production.toml writes out for it."""
    documented = load_config(ROOT / "etc" / "jobhost.production.toml", base_dir=tmp_path)
    config = parse_config({"preflight": {"addresses": ["203.0.113.10"]}}, tmp_path)
    paths = {"fallback_cert", "token_file", "webhook_secret_file"}
    for section in ("tls", "admin", "renewal", "events"):
        for key, value in attrs.asdict(getattr(documented, section)).items():
            if key not in paths and key != "node_id":
                assert getattr(getattr(config, section), key) == value, (section, key)
    for key in ("key_type", "account_key_type", "terms_agreed", "timeout"):
        assert getattr(config.acme, key) == getattr(documented.acme, key), key
    for key in ("enabled", "ca_identifiers", "timeout", "self_check", "self_check_port"):
        assert getattr(config.preflight, key) == getattr(documented.preflight, key), key


def test_default_paths_resolve_against_base_dir(tmp_path):
    """Without the path keys, the fallback certificate, token and webhook secret live under base_dir/var."""
    for document in (
        {"preflight": {"enabled": False}},
        {"preflight": {"enabled": False}, "tls": {"cache_size": 5}, "admin": {"max_body_bytes": 10}, "events": {}},
    ):
        config = parse_config(document, tmp_path)
        assert config.tls.fallback_cert == str(tmp_path / "var" / "fallback.pem")
        assert config.admin.token_file == str(tmp_path / "var" / "admin.token")
        assert config.events.webhook_secret_file == str(tmp_path / "var" / "webhook.secret")
    given_paths = parse_config(
        {"preflight": {"enabled": False}, "tls": {"fallback_cert": "certs/fb.pem"}, "admin": {"token_file": "/etc/t"}},
        tmp_path,
    )
    assert given_paths.tls.fallback_cert == str(tmp_path / "certs" / "fb.pem")
    assert given_paths.admin.token_file == "/etc/t"


def test_config_path_resolves_relative_paths_against_base_dir(tmp_path):
    """Config.path keeps absolute paths and puts relative ones under base_dir."""
    config = parse_config({"preflight": {"enabled": False}}, tmp_path)
    assert config.path("var/x.pem") == tmp_path / "var" / "x.pem"
    assert config.path("/etc/jobhost/x.pem") == Path("/etc/jobhost/x.pem")


@pytest.mark.parametrize("text, seconds", [("2w", 1209600.0), ("30", 30.0), (" 1.5 m ", 90.0), ("0", 0.0)])
def test_more_durations(text, seconds):
    """Weeks, bare numbers in a string (seconds), decimals with spaces, and zero."""
    assert parse_duration(text) == seconds


def test_values_are_kept_as_given(tmp_path):
    """Strings are stored stripped, choices and integers as given, empty optional strings as unset."""
    config = parse_config(
        {
            "preflight": {"addresses": ["203.0.113.10"], "self_check_port": 5002},
            "acme": {
                "contact": ["  mailto:ops@example.com "],
                "key_type": "rsa-2048",
                "eab_kid": "kid-1",
                "ca_bundle": "",
                "terms_agreed": False,
            },
            "renewal": {"node_id": " node-a ", "max_in_flight": 1},
            "events": {"webhook_url": "  https://hooks.example.com/x  "},
        },
        tmp_path,
    )
    assert config.acme.contact == ("mailto:ops@example.com",)
    assert config.acme.key_type == "rsa-2048"
    assert config.acme.eab_kid == "kid-1"
    assert config.acme.ca_bundle is None
    assert config.acme.terms_agreed is False
    assert config.renewal.node_id == "node-a"
    assert config.renewal.max_in_flight == 1
    assert config.preflight.self_check_port == 5002
    assert config.events.webhook_url == "https://hooks.example.com/x"
    blank = parse_config({"preflight": {"enabled": False}, "events": {"webhook_url": "   "}}, tmp_path)
    assert blank.events.webhook_url is None


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_are_accepted(port, tmp_path):
    """1 and 65535 are ports."""
    config = parse_config({"preflight": {"enabled": False}, "web": {"https_redirect_port": port}}, tmp_path)
    assert config.web.https_redirect_port == port


@pytest.mark.parametrize(
    "document, message",
    [
        ({"web": {"https_redirect_port": 0}}, "[web] https_redirect_port: expected a port number 1-65535, got 0"),
        ({"web": {"https_redirect_port": 65536}}, "[web] https_redirect_port: expected a port number 1-65535, got 65536"),
        ({"web": {"https_redirect_port": -1}}, "[web] https_redirect_port: expected a port number 1-65535, got -1"),
        ({"web": {"https_redirect_port": True}}, "[web] https_redirect_port: expected a port number 1-65535, got True"),
        ({"web": {"https_redirect_port": "443"}}, '[web] https_redirect_port: expected a port number 1-65535, got "443"'),
        ({"preflight": {"enabled": False, "self_check_port": 80.0}}, "[preflight] self_check_port: expected a port"),
        ({"acme": {"terms_agreed": "yes"}}, '[acme] terms_agreed: expected true or false, got "yes"'),
        ({"admin": {"token_file": "   "}}, '[admin] token_file: expected a non-empty string, got "   "'),
        ({"renewal": {"max_in_flight": True}}, "[renewal] max_in_flight: expected a positive integer, got True"),
        ({"renewal": {"max_in_flight": -3}}, "[renewal] max_in_flight: expected a positive integer, got -3"),
        ({"acme": {"ca_bundle": 5}}, "[acme] ca_bundle: expected a string, got 5"),
    ],
)
def test_more_errors_name_the_key_path(document, message):
    """Out-of-range ports, non-booleans, blank paths and non-positive counts are refused, naming the key."""
    document.setdefault("preflight", {"enabled": False})
    with pytest.raises(ConfigError) as info:
        parse_config(document, Path("/srv"), file="jobhost.toml")
    assert str(info.value).startswith("jobhost.toml: ")
    assert message in str(info.value)


def test_a_fresh_import_builds_working_parsers(tmp_path):
    """The key parsers are built when the module is imported: a fresh copy of it parses lists and choices too.

    (Those lines run only at import, before any test; executing the module again here puts them under test.)
    """
    spec = importlib.util.find_spec("jobhost.config")
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    config = fresh.parse_config(
        {"preflight": {"addresses": ["203.0.113.10"]}, "acme": {"contact": ["mailto:a@example.com"], "key_type": "rsa-4096"}},
        tmp_path,
    )
    assert config.acme.contact == ("mailto:a@example.com",)
    assert config.acme.key_type == "rsa-4096"


def test_limits_and_tls_policy_keys(tmp_path):
    config = parse_config(
        {
            "tls": {"profile": "modern", "http2": False, "session_tickets": False,
                    "session_lifetime": "30m", "ticket_rotation": "6h"},
            "limits": {"backlog": 4096, "max_connections": 0, "max_per_peer": 8, "max_held": 50,
                       "request_timeout": "5s", "keepalive_timeout": "2m"},
            "web": {"access_log": "logs/access.log"},
            "preflight": {"enabled": False},
        },
        tmp_path,
    )
    assert (config.tls.profile, config.tls.http2, config.tls.session_tickets) == ("modern", False, False)
    assert (config.tls.session_lifetime, config.tls.ticket_rotation) == (1800.0, 21600.0)
    limits = config.limits
    assert (limits.backlog, limits.max_connections, limits.max_per_peer, limits.max_held) == (4096, 0, 8, 50)
    assert (limits.request_timeout, limits.keepalive_timeout) == (5.0, 120.0)
    assert config.web.access_log == str(tmp_path / "logs" / "access.log")


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("tls", "profile", "old", "expected one of"),
        ("limits", "max_connections", -1, "expected a whole number 0 or more, got -1"),
        ("limits", "max_per_peer", 0, "expected a positive integer"),
        ("limits", "backlog", True, "expected a positive integer"),
        ("limits", "request_timeout", "0s", "positive"),
        ("limits", "burst", 3, "unknown key"),
    ],
)
def test_bad_limits_and_tls_values_name_the_key(tmp_path, section, key, value, message):
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key: value}, "preflight": {"enabled": False}}, tmp_path)
    assert f"[{section}] {key}" in str(info.value)
    assert message in str(info.value)


def test_log_section_defaults_and_values(tmp_path):
    """[log] defaults to quiet text lines; level and format are read when set."""
    default = parse_config({"preflight": {"enabled": False}}, tmp_path)
    assert (default.log.level, default.log.format) == ("info", "text")
    config = parse_config({"log": {"level": "debug", "format": "json"}, "preflight": {"enabled": False}}, tmp_path)
    assert (config.log.level, config.log.format) == ("debug", "json")


@pytest.mark.parametrize(
    "key, value, message",
    [("level", "verbose", "expected one of"), ("format", "xml", "expected one of"), ("colour", True, "unknown key")],
)
def test_bad_log_values_name_the_key(tmp_path, key, value, message):
    """A wrong [log] value is a config error naming [log] and the key."""
    with pytest.raises(ConfigError) as info:
        parse_config({"log": {key: value}, "preflight": {"enabled": False}}, tmp_path)
    assert f"[log] {key}" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "endpoint, exposure",
    [
        ("tcp:8081:interface=127.0.0.1", "local"),
        ("tcp6:8081:interface=\\:\\:1", "local"),
        ("unix:/run/jobhost/admin.sock", "local"),
        ("tcp:8081:interface=10.1.2.3", "private"),
        ("tcp:8081", "public"),
        ("tcp6:8081", "public"),
        ("tcp:8081:interface=0.0.0.0", "public"),
        ("tcp:8081:interface=8.8.8.8", "public"),
        ("tcp:8081:interface=admin.example.net", "public"),
        ("ssl:8081:privateKey=admin.pem", "tls"),
        ("ssl:8081:interface=127.0.0.1:privateKey=admin.pem", "local"),
        ("systemd:domain=INET:index=2", "unknown"),
    ],
)
def test_admin_exposure(endpoint, exposure):
    """Each endpoint string is classified by who can reach it."""
    from jobhost.config import admin_exposure

    assert admin_exposure(endpoint) == exposure


@pytest.mark.parametrize("endpoint", ["tcp:8081", "tcp:8081:interface=0.0.0.0", "tcp6:8081:interface=2606\\:4700\\:\\:1111"])
def test_public_plain_http_admin_is_refused(tmp_path, endpoint):
    """Plain HTTP admin on a public address is a config error naming [listen] admin and [admin] allow_public."""
    with pytest.raises(ConfigError) as info:
        parse_config({"listen": {"admin": endpoint}, "preflight": {"enabled": False}}, tmp_path)
    assert "[listen] admin" in str(info.value)
    assert "allow_public" in str(info.value)


def test_public_admin_allowed_when_the_config_says_so(tmp_path):
    """[admin] allow_public = true lets a public plain-HTTP admin listener through."""
    config = parse_config(
        {"listen": {"admin": "tcp:8081"}, "admin": {"allow_public": True}, "preflight": {"enabled": False}}, tmp_path
    )
    assert config.admin.allow_public is True
    assert config.listen.admin == "tcp:8081"


def test_a_single_acme_section_is_a_list_of_one_issuer(tmp_path):
    """Without [[acme.issuers]], [acme]'s own keys make the one issuer, named after its directory."""
    config = parse_config(
        {"preflight": {"addresses": ["127.0.0.1"]},
         "acme": {"directory": "https://ca.test/dir", "ca_bundle": "ca.pem", "key_type": "rsa-2048",
                  "eab_kid": "k", "eab_hmac_key": "h", "preferred_chain": "Root X", "profile": "classic"}},
        tmp_path,
    )
    (issuer,) = config.acme.issuers
    assert issuer == IssuerConfig(
        name="https://ca.test/dir", directory="https://ca.test/dir", ca_bundle=str(tmp_path / "ca.pem"),
        key_type="rsa-2048", eab_kid="k", eab_hmac_key="h", preferred_chain="Root X", profile="classic",
    )
    assert issuer.eab == ("k", "h") and config.acme.directory_url == "https://ca.test/dir"
    assert parse_config({"preflight": {"addresses": ["127.0.0.1"]}}, tmp_path).acme.issuers[0].directory_url == (
        "https://acme-staging-v02.api.letsencrypt.org/directory")


def test_issuers_in_order_each_with_its_own_keys_and_the_rest_from_acme(tmp_path):
    """[[acme.issuers]] entries keep their order; a key an entry leaves out takes [acme]'s value; paths resolve."""
    text = """
[preflight]
addresses = ["127.0.0.1"]
[acme]
ca_bundle = "shared-ca.pem"
key_type = "rsa-2048"
contact = ["mailto:ops@example.com"]
[[acme.issuers]]
name = "le"
directory = "letsencrypt"
preferred_chain = "ISRG Root X1"
[[acme.issuers]]
directory = "https://acme.zerossl.test/v2/DV90"
ca_bundle = "zerossl-ca.pem"
eab_kid = "kid-2"
eab_hmac_key = "aG1hYw"
key_type = "ecdsa-p384"
"""
    path = tmp_path / "jobhost.toml"
    path.write_text(text)
    config = load_config(path, base_dir=tmp_path)
    first, second = config.acme.issuers
    assert (first.name, first.directory_url, first.ca_bundle, first.key_type, first.preferred_chain, first.eab) == (
        "le", "https://acme-v02.api.letsencrypt.org/directory", str(tmp_path / "shared-ca.pem"), "rsa-2048",
        "ISRG Root X1", None)
    assert (second.name, second.ca_bundle, second.key_type, second.preferred_chain, second.eab) == (
        "https://acme.zerossl.test/v2/DV90", str(tmp_path / "zerossl-ca.pem"), "ecdsa-p384", None, ("kid-2", "aG1hYw"))
    assert config.acme.directory_url == first.directory_url
    assert config.acme.contact == ("mailto:ops@example.com",)


def test_challenges_default_to_http01_and_keep_their_order(tmp_path):
    """[acme] challenges is HTTP-01 alone by default; a list is kept in its order; the TLS-ALPN-01 self-check port is 443."""
    config = parse_config({"preflight": {"enabled": False}}, tmp_path)
    assert config.acme.challenges == ("http-01",)
    assert config.preflight.tls_self_check_port == 443
    config = parse_config(
        {"preflight": {"enabled": False, "tls_self_check_port": 5443}, "acme": {"challenges": ["tls-alpn-01", "http-01"]}},
        tmp_path,
    )
    assert config.acme.challenges == ("tls-alpn-01", "http-01")
    assert config.preflight.tls_self_check_port == 5443


@pytest.mark.parametrize(
    "document, message",
    [
        ({"acme": {"challenges": []}}, "[acme] challenges: expected at least one challenge type"),
        ({"acme": {"challenges": ["dns-01"]}}, '[acme] challenges: item 0: expected one of "http-01", "tls-alpn-01", got "dns-01"'),
        ({"acme": {"challenges": ["http-01", "http-01"]}}, "[acme] challenges: a challenge type is listed twice"),
        ({"acme": {"challenges": "http-01"}}, '[acme] challenges: expected a list, got "http-01"'),
        ({"preflight": {"enabled": False, "tls_self_check_port": 0}}, "[preflight] tls_self_check_port: expected a port"),
    ],
)
def test_challenge_errors_are_one_line_naming_the_key(document, message):
    """A bad [acme] challenges or [preflight] tls_self_check_port is one line naming the key."""
    document.setdefault("preflight", {"enabled": False})
    with pytest.raises(ConfigError) as info:
        parse_config(document, Path("/srv"), file="jobhost.toml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
