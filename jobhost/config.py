"""
The config file: TOML parsed once into frozen attrs sections.

Every error is a :class:`jobhost.errors.ConfigError` naming the file and the
key path (``[tls] cache_size: expected a positive integer, got "ten"``).
Unknown sections and keys are errors too, so a typo never passes silently.
Relative paths are resolved against ``base_dir`` (the directory twistd runs
in) when the config is loaded, so nothing later depends on the process's
working directory.  No I/O beyond reading the one file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import attrs

from jobhost.errors import ConfigError, InvalidHostname
from jobhost.hostnames import normalise_hostname, parse_resolver
from jobhost.store.factory import check_store_url

#: Well-known ACME directories by name; anything else must be an https:// URL.
ACME_DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-4096")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


@attrs.frozen
class ListenConfig:
    """``[listen]``: Twisted server endpoint strings for each listener."""

    http: str = "tcp:8080"
    https: str = "tcp:8443"
    admin: str = "tcp:8081:interface=127.0.0.1"


@attrs.frozen
class StoreConfig:
    """``[store]``: where records live (see :mod:`jobhost.store.factory` for the URL forms).

    ``password_file``: a file (mode 0600) holding the PostgreSQL password, so it
    need not be in the URL; libpq's own ways (``PGPASSFILE``, the environment, a
    service file) work too.
    """

    url: str = "sqlite:var/jobhost.db"
    password_file: str | None = None


@attrs.frozen
class IssuerConfig:
    """One ``[[acme.issuers]]`` entry: a CA to order from, with its own account settings.

    Keys left out of an entry take the ``[acme]`` section's values.
    """

    name: str
    directory: str
    ca_bundle: str | None = None
    key_type: str = "ecdsa-p256"
    account_key_type: str = "ecdsa-p256"
    eab_kid: str | None = None
    eab_hmac_key: str | None = None
    preferred_chain: str | None = None
    profile: str | None = None

    @property
    def directory_url(self) -> str:
        return ACME_DIRECTORIES.get(self.directory, self.directory)

    @property
    def eab(self) -> tuple[str, str] | None:
        """``(kid, hmac_key)`` when both are set, else None."""
        if self.eab_kid and self.eab_hmac_key:
            return (self.eab_kid, self.eab_hmac_key)
        return None


#: The keys an ``[[acme.issuers]]`` entry may set besides ``name`` (each defaults to ``[acme]``'s).
ISSUER_KEYS = (
    "directory", "ca_bundle", "key_type", "account_key_type", "eab_kid", "eab_hmac_key", "preferred_chain", "profile",
)


@attrs.frozen
class AcmeConfig:
    """``[acme]``: the CA and how jobhost talks to it.

    ``issuers`` is the list of CAs in order of preference (``[[acme.issuers]]``); without
    that list it is one issuer made of the section's own keys, so a config with a single
    ``[acme]`` section is a list of one.
    """

    directory: str = "letsencrypt-staging"
    ca_bundle: str | None = None
    contact: tuple[str, ...] = ()
    key_type: str = "ecdsa-p256"
    account_key_type: str = "ecdsa-p256"
    terms_agreed: bool = True
    eab_kid: str | None = None
    eab_hmac_key: str | None = None
    preferred_chain: str | None = None
    profile: str | None = None
    timeout: float = 30.0
    #: The challenge types to answer, in order of preference; after one fails validation
    #: the next attempt tries the next ("tls-alpn-01": on the HTTPS listener, port 443).
    challenges: tuple[str, ...] = ("http-01",)
    issuers: tuple[IssuerConfig, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.issuers:
            own = {key: getattr(self, key) for key in ISSUER_KEYS}
            object.__setattr__(self, "issuers", (IssuerConfig(name=self.directory, **own),))

    @property
    def directory_url(self) -> str:
        """The first (preferred) issuer's directory URL."""
        return self.issuers[0].directory_url


@attrs.frozen
class PreflightConfig:
    """``[preflight]``: what a customer's DNS must point at, and which CA CAA must allow."""

    enabled: bool = True
    addresses: tuple[str, ...] = ()
    cname_targets: tuple[str, ...] = ()
    resolvers: tuple[str, ...] = ()
    ca_identifiers: tuple[str, ...] = ("letsencrypt.org",)
    timeout: float = 5.0
    self_check: bool = True
    #: The port the CA connects to for HTTP-01 (always 80 for real CAs; Pebble can be told another).
    self_check_port: int = 80
    #: The port the CA connects to for TLS-ALPN-01 (always 443 for real CAs; Pebble's ``tlsPort``).
    tls_self_check_port: int = 443


DEFAULT_FALLBACK_CERT = "var/fallback.pem"
DEFAULT_TOKEN_FILE = "var/admin.token"
DEFAULT_WEBHOOK_SECRET_FILE = "var/webhook.secret"


@attrs.frozen
class TlsConfig:
    """``[tls]``: the SNI certificate cache and what unknown names get."""

    fallback: str = "self-signed"
    fallback_cert: str = DEFAULT_FALLBACK_CERT
    cache_size: int = 10000
    #: Certificates whose built ``SSL.Context`` (~27 KB each) is kept; the others are rebuilt from
    #: the cached PEM (~0.3 ms) on their next lookup.  Also bounds the per-hostname session contexts.
    context_cache_size: int = 1000
    #: "No usable certificate for this name" answers kept (each for ``negative_ttl``).
    negative_cache_size: int = 10000
    negative_ttl: float = 10.0
    poll_interval: float = 2.0
    hello_timeout: float = 10.0
    #: Mozilla's "intermediate" (TLS 1.2 and 1.3, AEAD suites only) or "modern" (TLS 1.3 only).
    profile: str = "intermediate"
    #: Offer HTTP/2 (ALPN "h2") besides HTTP/1.1.
    http2: bool = True
    session_tickets: bool = True
    #: How long a session ticket is valid (its lifetime hint).
    session_lifetime: float = 7200.0
    #: How often each hostname's ticket key is replaced.
    ticket_rotation: float = 86400.0


@attrs.frozen
class AdminConfig:
    """``[admin]``: the admin API's bearer token file."""

    token_file: str = DEFAULT_TOKEN_FILE
    max_body_bytes: int = 1048576
    #: How often the store-derived metrics (domains by state, expiring certificates) refresh.
    stats_interval: float = 60.0
    #: Serve the admin API over plain HTTP on a public or wildcard address (see
    #: :func:`admin_exposure`); off, such a ``[listen] admin`` is a config error.
    allow_public: bool = False


@attrs.frozen
class RenewalConfig:
    """``[renewal]``: the issuing scheduler's policy."""

    scan_interval: float = 600.0
    #: This node's name for issuance leases; stable across restarts (default: the host name).
    node_id: str | None = None
    backoff: tuple[float, ...] = (60.0, 600.0, 6000.0, 86400.0)
    max_in_flight: int = 10
    orders_per_window: int = 300
    order_window: float = 10800.0
    panic_interval: float = 7 * 86400.0
    lease_duration: float = 600.0


@attrs.frozen
class WebConfig:
    """``[web]``: how the HTTP listener redirects to HTTPS, and the access log."""

    https_redirect_port: int | None = None
    #: A file for one combined-log line per request on the public listeners; None: no access log.
    access_log: str | None = None


@attrs.frozen
class LimitsConfig:
    """``[limits]``: what keeps one client from starving the others (see :mod:`jobhost.web.limits`)."""

    #: The listen queue of the HTTP and HTTPS listeners (the kernel caps it at net.core.somaxconn).
    backlog: int = 1024
    #: Open connections on the HTTP and HTTPS listeners together; 0: the file-descriptor limit
    #: minus a reserve for the store, the admin listener and outgoing connections.
    max_connections: int = 0
    #: Open connections from one IP address.
    max_per_peer: int = 256
    #: HTTPS connections still sending their ClientHello; over it the oldest is dropped.
    max_held: int = 1000
    #: Seconds for a whole request (head and body) to arrive, however it trickles in.
    request_timeout: float = 10.0
    #: Seconds a kept-alive connection may wait for its next request.
    keepalive_timeout: float = 60.0


@attrs.frozen
class ServerConfig:
    """``[server]``: processes (see :mod:`jobhost.workers`)."""

    #: Processes serving the HTTP and HTTPS listeners; 0 (the default): one per CPU core.
    #: With 1, one process does everything; with more, a main process runs issuing,
    #: renewal and the admin API and supervises that many workers sharing the listening sockets.
    workers: int = 0
    #: Seconds a stopping worker waits for open connections to finish before it closes them.
    drain_timeout: float = 30.0
    #: Which worker takes a new connection: ``address`` (the default): always the same one for
    #: the same client address (each worker has its own listening socket, SO_REUSEPORT, and the
    #: kernel picks by source address), so a returning visitor's session ticket, which only the
    #: worker that issued it can read, resumes; ``none``: whichever worker accepts first (one
    #: shared socket: better when most clients come from a few addresses, e.g. behind a proxy).
    affinity: str = "address"

    def worker_count(self, store_url: str) -> int:
        """How many serving processes: ``workers``, or one per core (1 for a ``memory:`` store)."""
        if self.workers:
            return self.workers
        if store_url.strip().lower().startswith("memory:"):
            return 1
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@attrs.frozen
class EventsConfig:
    """``[events]``: webhooks on certificate state changes (see :mod:`jobhost.events`)."""

    #: Where deliveries are POSTed; None (the default, or ``""``) sends none.
    webhook_url: str | None = None
    #: The HMAC secret, created 0600 on first start if missing (read only when webhook_url is set).
    webhook_secret_file: str = DEFAULT_WEBHOOK_SECRET_FILE
    timeout: float = 10.0
    backoff: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 3600.0)


#: ``[log] level`` values, least to most severe (Twisted's level names).
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


@attrs.frozen
class LogConfig:
    """``[log]``: what twistd's log shows (see :mod:`jobhost.logs`).

    ``level``: the least severe event jobhost writes; other libraries' events (Twisted's
    factories, ports, DNS) are written only from ``warn`` up, unless ``level`` is ``debug``.
    ``format``: ``text`` (twistd's lines) or ``json`` (one JSON object a line, for log shippers).
    ``twistd --log-level`` overrides ``level``.
    """

    level: str = "info"
    format: str = "text"


@attrs.frozen
class Config:
    """The whole parsed config file."""

    base_dir: Path
    file: str | None = None
    listen: ListenConfig = ListenConfig()
    store: StoreConfig = StoreConfig()
    acme: AcmeConfig = AcmeConfig()
    preflight: PreflightConfig = PreflightConfig()
    tls: TlsConfig = TlsConfig()
    admin: AdminConfig = AdminConfig()
    renewal: RenewalConfig = RenewalConfig()
    web: WebConfig = WebConfig()
    events: EventsConfig = EventsConfig()
    limits: LimitsConfig = LimitsConfig()
    server: ServerConfig = ServerConfig()
    log: LogConfig = LogConfig()

    def path(self, relative: str) -> Path:
        """Resolve a path from the config against :attr:`base_dir`."""
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p


# -- value parsers: each takes (value, fail) and returns the parsed value --------------------


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"10m"``, ``"1h"``, ``"7d"``.

    Raises:
        ValueError: with the reason, when it is not a non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like \"10s\" or \"5m\", got {_quote(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like \"10s\" or \"5m\", got {_quote(value)}")
    if seconds < 0:
        raise ValueError(f"expected a non-negative duration, got {_quote(value)}")
    return seconds


def _string(value):
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_quote(value)}")
    return value


def _nonempty_string(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {_quote(value)}")
    return value.strip()


def _optional_string(value):
    value = _string(value)
    return value or None


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_quote(value)}")
    return value


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive integer, got {_quote(value)}")
    return value


def _non_negative_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number 0 or more, got {_quote(value)}")
    return value


def _port(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"expected a port number 1-65535, got {_quote(value)}")
    return value


def _positive_duration(value):
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {_quote(value)}")
    return seconds


def _list_of(item: Callable[[Any], Any]):
    def parse(value):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_quote(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from None
        return tuple(out)

    return parse


def _challenges(value):
    types = _list_of(_one_of("http-01", "tls-alpn-01"))(value)
    if not types:
        raise ValueError("expected at least one challenge type")
    if len(set(types)) != len(types):
        raise ValueError(f"a challenge type is listed twice in {_quote(value)}")
    return types


def _one_of(*choices: str):
    def parse(value):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(_quote(c) for c in choices)}, got {_quote(value)}")
        return value

    return parse


def _endpoint(value):
    value = _nonempty_string(value)
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    try:
        serverFromString(MemoryReactor(), value)
    except Exception as e:  # the parser raises ValueError, KeyError, TypeError...
        raise ValueError(f"not a Twisted endpoint description ({e.__class__.__name__}: {e}): {_quote(value)}") from None
    return value


def _ip_address(value):
    try:
        return str(ipaddress.ip_address(_string(value)))
    except ValueError:
        raise ValueError(f"expected an IP address, got {_quote(value)}") from None


def _hostname(value):
    try:
        return normalise_hostname(_string(value))
    except InvalidHostname as e:
        raise ValueError(e.reason + f": {_quote(value)}") from None


def _resolver(value):
    # The same parser as preflight and self-check use, so whatever passes here works there.
    parse_resolver(_string(value))
    return value


def _directory(value):
    value = _nonempty_string(value)
    if value in ACME_DIRECTORIES or value.startswith(("https://", "http://")):
        return value
    raise ValueError(
        f"expected {', '.join(_quote(k) for k in ACME_DIRECTORIES)} or a directory URL, got {_quote(value)}"
    )


def _store_url(value):
    # The store factory is the one list of the store URLs that exist: refuse here what it
    # would refuse at start-up, so a config that parses also builds its store.
    value = _nonempty_string(value)
    try:
        check_store_url(value)
    except ConfigError as e:
        raise ValueError(e.message) from None
    return value


def _webhook_url(value):
    value = _string(value).strip()
    if not value:
        return None
    problem = f"expected an http:// or https:// URL, or \"\" for no webhooks, got {_quote(value)}"
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    return value


def _issuers(value):
    # Checked item by item in _parse_issuers (so errors name the entry); here only the shape.
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"expected [[acme.issuers]] tables, got {_quote(value)}")
    if not value:
        raise ValueError("expected at least one issuer")
    return value


_SECTIONS: dict[str, tuple[type, dict[str, Callable[[Any], Any]]]] = {
    "listen": (ListenConfig, {"http": _endpoint, "https": _endpoint, "admin": _endpoint}),
    "store": (StoreConfig, {"url": _store_url, "password_file": _optional_string}),
    "acme": (
        AcmeConfig,
        {
            "directory": _directory,
            "ca_bundle": _optional_string,
            "contact": _list_of(_nonempty_string),
            "key_type": _one_of(*KEY_TYPES),
            "account_key_type": _one_of(*KEY_TYPES),
            "terms_agreed": _bool,
            "eab_kid": _optional_string,
            "eab_hmac_key": _optional_string,
            "preferred_chain": _optional_string,
            "profile": _optional_string,
            "timeout": _positive_duration,
            "issuers": _issuers,
            "challenges": _challenges,
        },
    ),
    "preflight": (
        PreflightConfig,
        {
            "enabled": _bool,
            "addresses": _list_of(_ip_address),
            "cname_targets": _list_of(_hostname),
            "resolvers": _list_of(_resolver),
            "ca_identifiers": _list_of(_nonempty_string),
            "timeout": _positive_duration,
            "self_check": _bool,
            "self_check_port": _port,
            "tls_self_check_port": _port,
        },
    ),
    "tls": (
        TlsConfig,
        {
            "fallback": _one_of("self-signed", "reject"),
            "fallback_cert": _nonempty_string,
            "cache_size": _positive_int,
            "context_cache_size": _positive_int,
            "negative_cache_size": _positive_int,
            "negative_ttl": parse_duration,
            "poll_interval": _positive_duration,
            "hello_timeout": _positive_duration,
            "profile": _one_of("intermediate", "modern"),
            "http2": _bool,
            "session_tickets": _bool,
            "session_lifetime": _positive_duration,
            "ticket_rotation": _positive_duration,
        },
    ),
    "admin": (
        AdminConfig,
        {"token_file": _nonempty_string, "max_body_bytes": _positive_int, "stats_interval": _positive_duration,
         "allow_public": _bool},
    ),
    "renewal": (
        RenewalConfig,
        {
            "scan_interval": _positive_duration,
            "node_id": _nonempty_string,
            "backoff": _list_of(_positive_duration),
            "max_in_flight": _positive_int,
            "orders_per_window": _positive_int,
            "order_window": _positive_duration,
            "panic_interval": _positive_duration,
            "lease_duration": _positive_duration,
        },
    ),
    "web": (WebConfig, {"https_redirect_port": _port, "access_log": _optional_string}),
    "limits": (
        LimitsConfig,
        {
            "backlog": _positive_int,
            "max_connections": _non_negative_int,
            "max_per_peer": _positive_int,
            "max_held": _positive_int,
            "request_timeout": _positive_duration,
            "keepalive_timeout": _positive_duration,
        },
    ),
    "server": (
        ServerConfig,
        {"workers": _non_negative_int, "drain_timeout": _positive_duration, "affinity": _one_of("address", "none")},
    ),
    "log": (LogConfig, {"level": _one_of(*LOG_LEVELS), "format": _one_of("text", "json")}),
    "events": (
        EventsConfig,
        {
            "webhook_url": _webhook_url,
            "webhook_secret_file": _nonempty_string,
            "timeout": _positive_duration,
            "backoff": _list_of(_positive_duration),
        },
    ),
}

#: Keys holding paths, resolved against base_dir at load time.
_PATH_KEYS = {
    ("tls", "fallback_cert"),
    ("admin", "token_file"),
    ("acme", "ca_bundle"),
    ("events", "webhook_secret_file"),
    ("store", "password_file"),
    ("web", "access_log"),
}


def _parse_issuers(acme: dict[str, Any], base_dir: Path, file: str | None) -> tuple[IssuerConfig, ...]:
    """The ``[[acme.issuers]]`` entries, each key checked as in ``[acme]`` and defaulted from it.

    Errors name the entry by its index, counting from 0: ``[acme.issuers][1] directory: ...``.
    """
    if "directory" in acme:
        raise ConfigError(
            "set directory in each [[acme.issuers]] entry instead (the first is the preferred CA)",
            ("acme", "directory"), file,
        )
    fields = _SECTIONS["acme"][1]
    issuers: list[IssuerConfig] = []
    for index, body in enumerate(acme["issuers"]):
        values: dict[str, Any] = {}
        for key, raw in body.items():
            if key != "name" and key not in ISSUER_KEYS:
                raise ConfigError(
                    f"unknown key; expected one of {', '.join(sorted(('name', *ISSUER_KEYS)))}",
                    ("acme", "issuers", index, key), file,
                )
            try:
                value = _nonempty_string(raw) if key == "name" else fields[key](raw)
            except ValueError as e:
                raise ConfigError(str(e), ("acme", "issuers", index, key), file) from None
            if key == "ca_bundle" and value and not Path(value).is_absolute():
                value = str(base_dir / value)
            values[key] = value
        if "directory" not in values:
            raise ConfigError("missing; every issuer needs its directory", ("acme", "issuers", index, "directory"), file)
        for key in ISSUER_KEYS:
            if key not in values and key in acme:
                values[key] = acme[key]
        values.setdefault("name", values["directory"])
        issuer = IssuerConfig(**values)
        for i, other in enumerate(issuers):
            if other.directory_url == issuer.directory_url:
                raise ConfigError(f"issuer {i} already uses {_quote(issuer.directory_url)} (accounts are per directory)",
                                  ("acme", "issuers", index, "directory"), file)
            if other.name == issuer.name:
                raise ConfigError(f"{_quote(issuer.name)} is already the name of issuer {i}",
                                  ("acme", "issuers", index, "name"), file)
        issuers.append(issuer)
    return tuple(issuers)


def parse_config(document: Mapping[str, Any], base_dir: Path, file: str | None = None) -> Config:
    """Turn a parsed TOML document into a :class:`Config`.

    Raises:
        ConfigError: for the first wrong section, key or value, naming its path.
    """
    sections: dict[str, Any] = {}
    for name, body in document.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"unknown section; expected one of {', '.join(sorted(_SECTIONS))}", (name,), file
            )
        if not isinstance(body, dict):
            raise ConfigError(f"expected a table, got {_quote(body)}", (name,), file)
        cls, fields = _SECTIONS[name]
        values: dict[str, Any] = {}
        for key, raw in body.items():
            if key not in fields:
                raise ConfigError(f"unknown key; expected one of {', '.join(sorted(fields))}", (name, key), file)
            try:
                value = fields[key](raw)
            except ValueError as e:
                raise ConfigError(str(e), (name, key), file) from None
            if (name, key) in _PATH_KEYS and value:
                value = str(base_dir / value) if not Path(value).is_absolute() else value
            values[key] = value
        if name == "acme" and "issuers" in values:
            values["issuers"] = _parse_issuers(values, base_dir, file)
        if name == "tls" and "fallback_cert" not in values:
            values["fallback_cert"] = str(base_dir / DEFAULT_FALLBACK_CERT)
        if name == "admin" and "token_file" not in values:
            values["token_file"] = str(base_dir / DEFAULT_TOKEN_FILE)
        if name == "events" and "webhook_secret_file" not in values:
            values["webhook_secret_file"] = str(base_dir / DEFAULT_WEBHOOK_SECRET_FILE)
        sections[name] = cls(**values)
    sections.setdefault("tls", TlsConfig(fallback_cert=str(base_dir / DEFAULT_FALLBACK_CERT)))
    sections.setdefault("admin", AdminConfig(token_file=str(base_dir / DEFAULT_TOKEN_FILE)))
    sections.setdefault("events", EventsConfig(webhook_secret_file=str(base_dir / DEFAULT_WEBHOOK_SECRET_FILE)))
    if "renewal" in sections and not sections["renewal"].backoff:
        raise ConfigError("expected at least one delay", ("renewal", "backoff"), file)
    if not sections["events"].backoff:
        raise ConfigError("expected at least one delay", ("events", "backoff"), file)
    preflight = sections.get("preflight", PreflightConfig())
    if preflight.enabled and not preflight.addresses and not preflight.cname_targets:
        raise ConfigError(
            "set addresses or cname_targets (where customers' DNS must point), or enabled = false",
            ("preflight",), file,
        )
    server = sections.get("server", ServerConfig())
    store = sections.get("store", StoreConfig())
    if server.workers > 1 and store.url.strip().lower().startswith("memory:"):
        raise ConfigError(
            "a memory: store cannot be shared between worker processes: set workers = 1 or use a"
            " sqlite:, directory: or postgresql: store", ("server", "workers"), file,
        )
    listen = sections.get("listen", ListenConfig())
    admin = sections["admin"]
    if admin_exposure(listen.admin) == "public" and not admin.allow_public:
        raise ConfigError(
            f"the admin API would be plain HTTP on a public address ({listen.admin}): bind it to"
            " 127.0.0.1 (tcp:8081:interface=127.0.0.1), serve it over TLS (ssl:...), or set"
            " [admin] allow_public = true", ("listen", "admin"), file,
        )
    return Config(base_dir=base_dir, file=file, **sections)


def admin_exposure(description: str) -> str:
    """Who can reach a listener described by a Twisted endpoint string, as far as the string says.

    Returns:
        ``"local"`` (loopback TCP, a UNIX socket), ``"private"`` (a private or link-local
        address, plain HTTP), ``"public"`` (plain HTTP on every interface or on a globally
        routable address), ``"tls"`` (``ssl:`` on a non-loopback address), or ``"unknown"``
        (``systemd:`` and other endpoints: the address is known only once bound).
    """
    # Endpoint strings escape colons inside values ("interface=\\:\\:1"): keep those.
    parts = [p.replace("\0", ":") for p in description.replace("\\:", "\0").split(":")]
    kind = parts[0].strip().lower()
    if kind == "unix":
        return "local"
    if kind not in ("tcp", "tcp6", "ssl"):
        return "unknown"
    interface = ""
    for part in parts[2:]:
        name, eq, value = part.partition("=")
        if eq and name.strip() == "interface":
            interface = value.strip().strip("[]")
    if not interface:
        # Twisted's default: every interface (0.0.0.0, or :: for tcp6).
        return "tls" if kind == "ssl" else "public"
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        return "tls" if kind == "ssl" else "public"  # a hostname: assume it is reachable
    if address.is_loopback:
        return "local"
    if kind == "ssl":
        return "tls"
    if address.is_unspecified or address.is_global:
        return "public"
    return "private"


def load_config(path: str | Path, base_dir: Path | None = None) -> Config:
    """Read and parse a TOML config file.

    Args:
        path: The file.
        base_dir: What relative paths resolve against; the current directory by default.

    Raises:
        ConfigError: if the file cannot be read, is not TOML, or has a wrong value.
    """
    path = Path(path)
    base = (base_dir or Path.cwd()).resolve()
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror}", (), str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8 text", (), str(path)) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", (), str(path)) from None
    return parse_config(document, base, str(path))


__all__ = [
    "ACME_DIRECTORIES",
    "AcmeConfig",
    "AdminConfig",
    "Config",
    "EventsConfig",
    "ISSUER_KEYS",
    "IssuerConfig",
    "KEY_TYPES",
    "LOG_LEVELS",
    "ListenConfig",
    "LogConfig",
    "admin_exposure",
    "PreflightConfig",
    "RenewalConfig",
    "StoreConfig",
    "LimitsConfig",
    "ServerConfig",
    "TlsConfig",
    "WebConfig",
    "load_config",
    "parse_config",
    "parse_duration",
]
