"""
``twistd jobhost``: command-line options and the service tree.

:func:`build_parts` builds every part with one small builder per config section
(``_build_store``, ``_build_caches``, ``_build_acme_client``, ``_build_events``,
``_build_preflight``, ``_build_issuing``, ``_build_web``, ``_build_admin``,
``_build_listeners``) and returns them in a :class:`Parts`, whose ``root`` is the
service tree.  Tests and ``/healthz`` read the parts, never attributes of the root
service.  The tree, in start order (stopped in reverse, one after another, so
listeners close before the issuing service stops and the store closes last)::

    JobhostService
      changes                ChangePoller: changes by any process reach the SNI and page caches
      acme-client            closes the ACME client's connection pool on stop
      (events)               webhooks, when [events] webhook_url is set
      issuing                IssuingService: issues and renews, store-driven
      store-stats            StoreStatsService: refreshes the store-derived metrics
      reactor-lag            LagMonitor: how late the reactor runs a timer (its stalls), /metrics;
                             freezes the start-up heap (gc.freeze) and times collections
      http                   listener: ACME challenges, redirects to HTTPS
      https                  listener: SNI, per-hostname certificates, careers pages
      admin                  listener: JSON admin API (loopback by default)

Listeners (:class:`ListenerService`) bind in ``privilegedStartService``, so ports
80 and 443 work with ``twistd --uid``.  Only :func:`makeService` touches the
global reactor.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Sequence

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from jobhost import __version__
from jobhost.config import Config, load_config
from jobhost.errors import ConfigError, InvalidCertificate
from jobhost.store.factory import redacted_url
from jobhost.store.records import ChangeKind

log = Logger()


class Options(usage.Options):
    """``twistd jobhost --config FILE``: the config is read and checked here, once."""

    synopsis = "--config FILE [--log-level LEVEL]"
    optParameters = [
        ["config", "c", None, "The TOML config file (see etc/jobhost.toml)."],
        ["log-level", None, None, "debug, info, warn, error or critical: overrides [log] level."],
    ]

    def postOptions(self) -> None:
        from jobhost.config import LOG_LEVELS

        if not self["config"]:
            raise usage.UsageError("--config FILE is required (try etc/jobhost.toml)")
        if self["log-level"] is not None and self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError(
                f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {self['log-level']!r}"
            )
        try:
            self.config: Config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"config error: {e}") from None


class JobhostService(MultiService):
    """The root service: starts children in order, stops them in reverse *one at a time*.

    (``MultiService`` stops children concurrently; jobhost needs listeners closed before
    the issuing service stops, and that before the store goes away.)

    Attributes:
        config: The config the tree was built from (named in the start-up log line), or None.
    """

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        self.config = config
        #: The observer twistd should log through (see :mod:`jobhost.logs`), or None.
        self.log_observer = None
        #: Processes serving the public listeners (named in the start-up line).
        self.processes = 1

    def setServiceParent(self, parent) -> None:
        """Attach to twistd's application, handing it :attr:`log_observer` as its ``ILogObserver``."""
        from twisted.logger import ILogObserver

        if self.log_observer is not None and hasattr(parent, "setComponent"):
            if parent.getComponent(ILogObserver, None) is None:
                parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Bind the listeners; one that cannot bind ends twistd with one line naming its key."""
        try:
            MultiService.privilegedStartService(self)
        except ConfigError as e:
            if e.file is None and self.config is not None:
                e.file = self.config.file
            # twistd would print a 30-line traceback: say what is wrong in one line (the log has
            # begun, so it goes there), and exit non-zero as a config error found earlier does.
            log.error("jobhost: config error: {error}", error=str(e))
            raise SystemExit(1) from None

    def startService(self) -> None:
        MultiService.startService(self)
        if self.config is not None:
            c = self.config
            log.info(
                "jobhost {version} serving: http {http}, https {https}, admin {admin}; store {store}; "
                "CA {directory}; unknown names get {fallback}; {processes}",
                processes="one process" if self.processes < 2 else f"{self.processes} worker processes",
                version=__version__, http=c.listen.http, https=c.listen.https, admin=c.listen.admin,
                store=redacted_url(c.store.url), directory=c.acme.directory_url, fallback=c.tls.fallback,
            )

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_in_order())

    async def _stop_in_order(self) -> None:
        for child in reversed(list(self)):
            try:
                await Deferred.fromCoroutine(_maybe_await(child.stopService()))
            except Exception:
                log.failure("Stopping {service} failed", service=child)
        if self.config is not None:
            log.info("jobhost stopped")


async def _maybe_await(result):
    if isinstance(result, Deferred):
        return await result
    return result


class ListenerService(Service):
    """Listens on a server endpoint while running; knows whether its port is bound.

    Like Twisted's ``StreamServerEndpointService`` with ``_raiseSynchronously`` set, but
    with public state: it binds in :meth:`privilegedStartService` (so ports 80 and 443
    work with ``twistd --uid``), a port that cannot be bound while starting raises
    ConfigError there, naming its ``[listen]`` key (the service's name), which
    :class:`JobhostService` turns into one line and exit status 1; a later listening
    failure is logged.

    Attributes:
        endpoint: The ``IStreamServerEndpoint`` to listen on.
        factory: The protocol factory to listen with.
        port: The ``IListeningPort`` once bound, else None.
    """

    def __init__(
        self, name: str, endpoint: IStreamServerEndpoint, factory: IProtocolFactory, accept: bool = True
    ) -> None:
        self.setName(name)
        self.endpoint = endpoint
        self.factory = factory
        #: False: bind and listen, but never accept (worker processes adopt the socket and accept).
        self.accept = accept
        self.port: IListeningPort | None = None
        self._listening: Deferred | None = None

    @property
    def listening(self) -> bool:
        """True while running with the port bound."""
        return self.running and self.port is not None

    def privilegedStartService(self) -> None:
        """Start listening; raise at once when the endpoint fails right away."""
        Service.privilegedStartService(self)
        starting = True
        failed_now: list[Failure] = []

        def bound(port: IListeningPort) -> None:
            self.port = port
            if not self.accept:
                port.stopReading()  # the kernel queues connections for the workers to accept

        def failed(failure: Failure) -> None:
            if starting:
                failed_now.append(failure)
            elif not failure.check(CancelledError):
                log.failure("Cannot listen for {name} on {endpoint}", failure, name=self.name, endpoint=self.endpoint)

        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallbacks(bound, failed)
        starting = False
        if failed_now:
            # The service's name is its [listen] key (http, https, admin).
            raise ConfigError(cannot_listen_reason(failed_now[0].value), ("listen", self.name))

    def startService(self) -> None:
        """Start listening, unless :meth:`privilegedStartService` already did."""
        Service.startService(self)
        if self._listening is None:
            self.privilegedStartService()

    def stopService(self) -> Deferred:
        """Stop listening (or give up trying); fires when the port is closed."""
        listening, self._listening = self._listening, None
        if listening is None:
            Service.stopService(self)
            return succeed(None)
        listening.cancel()

        def stop(_: object) -> object:
            port, self.port = self.port, None
            return port.stopListening() if port is not None else None

        def stopped(result: object) -> object:
            Service.stopService(self)
            return result

        return listening.addCallback(stop).addBoth(stopped)


def cannot_listen_reason(error: BaseException) -> str:
    """Why a listener could not bind, in one line, with what to do about it.

    ``error`` is what the endpoint's ``listen`` failed with: CannotListenError for a port
    that is taken, refused or on an address this host lacks; OverflowError for a port
    outside 0-65535.
    """
    import errno

    from twisted.internet.error import CannotListenError

    if isinstance(error, OverflowError):
        return "the port is out of range (0-65535)"
    if not isinstance(error, CannotListenError):
        return f"cannot listen: {error}"
    where = f"port {error.port} of {error.interface or 'every interface'}"
    cause = error.socketError
    code = getattr(cause, "errno", None)
    reason = getattr(cause, "strerror", None) or str(cause)
    hint = {
        errno.EADDRINUSE: "another process listens there: stop it or choose another port",
        errno.EACCES: "ports below 1024 need root (twistd --uid) or CAP_NET_BIND_SERVICE",
        errno.EADDRNOTAVAIL: "no interface of this host has that address",
    }.get(code)
    return f"cannot listen on {where}: {reason}" + (f" ({hint})" if hint else "")


class AdoptedListenerService(Service):
    """Accepts on a listening socket another process bound (a worker's share of a listener).

    Attributes:
        reactor: Adopts the socket (``IReactorSocket.adoptStreamPort``).
        fd: The inherited listening socket; closed once adopted (the port keeps a duplicate).
        family: Its address family (``socket.AF_INET`` or ``AF_INET6``).
        factory: The protocol factory to accept with.
        port: The ``IListeningPort`` while running, else None.
    """

    def __init__(self, name: str, reactor, fd: int, family: int, factory: IProtocolFactory) -> None:
        self.setName(name)
        self.reactor = reactor
        self.fd = fd
        self.family = family
        self.factory = factory
        self.port: IListeningPort | None = None

    @property
    def listening(self) -> bool:
        """True while accepting."""
        return self.running and self.port is not None

    def startService(self) -> None:
        import os

        Service.startService(self)
        self.port = self.reactor.adoptStreamPort(self.fd, self.family, self.factory)
        os.close(self.fd)

    def stopService(self) -> Deferred:
        """Stop accepting; the socket stays open in the main process, so nothing is refused."""
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else succeed(None)


class _Caches:
    """Fans invalidations out to every per-hostname cache (SNI contexts, rendered pages, workers)."""

    def __init__(self, caches) -> None:
        self._caches = tuple(caches)

    def attach(self, cache) -> None:
        """Fan out to ``cache`` too (the worker supervisor, which tells every worker)."""
        self._caches += (cache,)

    def invalidate(self, hostname: str, kinds: frozenset[str] | None = None) -> None:
        for cache in self._caches:
            cache.invalidate(hostname, kinds)

    def invalidate_all(self) -> None:
        for cache in self._caches:
            cache.invalidate_all()


class _CallOnStop(Service):
    """Runs a callable (returning a Deferred or None) when stopped."""

    def __init__(self, name: str, on_stop) -> None:
        self.setName(name)
        self._on_stop = on_stop

    def stopService(self):
        Service.stopService(self)
        return self._on_stop()


def _health(listeners: Sequence[ListenerService], issuing, workers=None) -> dict:
    """``/healthz`` parts beyond the store: the listeners (critical), the CA as last seen, the workers."""
    down = [s.name for s in listeners if not s.listening]
    parts = {
        "listeners": {
            "ok": not down,
            "message": f"not listening: {', '.join(down)}" if down else "http, https and admin are listening",
            "critical": True,
        },
        "ca": {
            "ok": issuing.ca_reachable is not False,
            "message": {None: "no order placed yet", True: "reachable at the last order",
                        False: "unreachable at the last order"}[issuing.ca_reachable],
            "critical": False,
        },
    }
    if workers is not None:
        parts["workers"] = workers.status()
    return parts


def _https_port(config: Config) -> int | None:
    """The HTTPS port for redirects: ``[web] https_redirect_port`` or the listener's TCP port."""
    if config.web.https_redirect_port is not None:
        return config.web.https_redirect_port
    parts = config.listen.https.split(":")
    if len(parts) > 1 and parts[0] in ("tcp", "tcp6", "ssl") and parts[1].isdigit():
        return int(parts[1])
    return None


# -- the parts, one builder per config section ----------------------------------------------------


@attrs.frozen
class CacheParts:
    """The per-hostname caches and what keeps them fresh ([tls] sizes and polling).

    Attributes:
        certificates: SNI contexts by hostname.
        pages: Rendered careers pages by hostname.
        fanout: Invalidates both (what the issuing service and the admin API are given).
        poller: Reads the store's change feed into ``fanout``.
    """

    certificates: Any
    pages: Any
    fanout: _Caches
    poller: Any


@attrs.frozen
class PreflightParts:
    """The checks run before an order ([preflight]); each None when disabled.

    Attributes:
        preflight: DNS and CAA (an ``IPreflight``).
        self_check: Fetches our own challenge URL before the CA is told.
        tls_alpn_self_check: Makes the CA's TLS-ALPN-01 handshake to us before the CA is
            told (only when ``[acme] challenges`` lists tls-alpn-01).
    """

    preflight: Any
    self_check: Any
    tls_alpn_self_check: Any = None


@attrs.frozen
class WebParts:
    """What the HTTP and HTTPS listeners serve ([web], [tls]).

    Attributes:
        http: The HTTP site (ACME challenges, redirects).
        https: The TLS factory choosing a certificate per connection by SNI.
    """

    http: Any
    https: Any


@attrs.frozen
class AdminParts:
    """The admin API ([admin]) and the store statistics its metrics read.

    Attributes:
        resource: The :class:`jobhost.admin.api.AdminResource`.
        site: The factory the admin listener serves.
        stats: Refreshes the store-derived metrics every ``stats_interval``.
    """

    resource: Any
    site: Any
    stats: Any


@attrs.frozen
class Parts:
    """Everything :func:`build_parts` made, by role; :attr:`root` is what twistd runs.

    Attributes:
        config: The config it was built from.
        root: The service tree (see the module docstring).
        store: The ``IStore``.
        domains: The one owner of domain records' state, built from the store and
            handed to the issuing service and the admin API.
        metrics: The Prometheus registry ``/metrics`` renders.
        caches: The SNI and page caches and their change poller.
        client: The first issuer's ACME client (an ``IAcmeClient``); ``issuing.issuers`` has them all.
        events: The webhook notifier (an ``IEventSink``), or None without
            ``[events] webhook_url``.
        checks: Preflight and self-check.
        issuing: The issuing service.
        web: What the HTTP and HTTPS listeners serve.
        admin: The admin API.
        listeners: The http, https and admin listeners, in that order.
        workers: The :class:`jobhost.workers.WorkerSupervisor` with ``[server] workers`` > 1, else None.
        lag: The reactor lag monitor (:class:`jobhost.lag.LagMonitor`).
    """

    config: Config
    root: JobhostService
    store: Any
    domains: Any
    metrics: Any
    caches: CacheParts
    client: Any
    events: Any
    checks: PreflightParts
    issuing: Any
    web: WebParts
    admin: AdminParts
    listeners: tuple[ListenerService, ...]
    workers: Any = None
    lag: Any = None

    def health(self) -> dict:
        """``/healthz``'s listener and CA parts (what the admin API reports beside the store)."""
        return _health(self.listeners, self.issuing, self.workers)


def _build_store(reactor, config: Config):
    """[store]: the store the URL names; an SQL store's schema is created or migrated here.

    That happens before the reactor runs, so no listener serves on a schema this code
    does not know; a database that cannot be used stops start-up with one line.
    """
    from jobhost.errors import StoreError
    from jobhost.store.factory import store_from_url
    from jobhost.store.sql import SqlStore

    store = store_from_url(config.store.url, reactor, str(config.base_dir), config.store.password_file)
    if isinstance(store, SqlStore):
        try:
            store.migrate_now()
        except StoreError as e:
            store.close()
            raise ConfigError(f"cannot use the store: {e.message}", ("store", "url")) from None
    return store


def _build_domains(reactor, store):
    """The domain service over the store (no config of its own)."""
    from jobhost.domains import DomainService

    return DomainService(store=store, clock=reactor)


def _build_fallback(config: Config) -> tuple[bytes | None, bytes | None]:
    """[tls] fallback: ``(key_pem, cert_pem)`` of the self-signed fallback, made once; Nones for reject."""
    from jobhost.tls.fallback import load_or_create_fallback

    if config.tls.fallback != "self-signed":
        return None, None
    try:
        return load_or_create_fallback(FilePath(config.tls.fallback_cert), datetime.now(timezone.utc))
    except InvalidCertificate as e:
        raise ConfigError(str(e), ("tls", "fallback_cert")) from None
    except OSError as e:
        raise ConfigError(f"cannot write {config.tls.fallback_cert}: {e.strerror}", ("tls", "fallback_cert")) from None


def tls_policy(config: Config):
    """[tls] profile, http2, session_tickets, session_lifetime: every TLS context's configuration."""
    from jobhost.tls.policy import TlsPolicy

    return TlsPolicy(
        profile=config.tls.profile,
        alpn=(b"h2", b"http/1.1") if config.tls.http2 else (b"http/1.1",),
        session_tickets=config.tls.session_tickets,
        session_lifetime=config.tls.session_lifetime,
    )


#: File descriptors kept out of the public connection cap: the store, the admin listener,
#: outgoing connections to the CA and DNS, log files.
FD_RESERVE = 256


def connection_cap(config: Config) -> int:
    """[limits] max_connections, or (0) the file-descriptor limit minus :data:`FD_RESERVE`.

    Raises the soft ``RLIMIT_NOFILE`` to the hard one first (the default soft limit of 1024
    would cap a server at a few hundred connections).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1048576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    available = max(soft - FD_RESERVE, 64)
    if config.limits.max_connections:
        return min(config.limits.max_connections, available)
    return available


def _build_limits(reactor, config: Config, metrics):
    """[limits]: the reporter counting limit hits and the public listeners' connection budget."""
    from jobhost.web.limits import LIMITS, ConnectionBudget, LimitReporter

    reporter = LimitReporter(reactor)
    budget = ConnectionBudget(
        max_connections=connection_cap(config), max_per_peer=config.limits.max_per_peer, reporter=reporter
    )
    metrics.register_counter_source(
        "jobhost_connection_limit_total",
        "Connections closed or refused by a limit ([limits], [tls] hello_timeout).",
        ("limit",),
        lambda: {(limit,): reporter.counts[limit] for limit in LIMITS},
    )
    metrics.register_gauge_source(
        "jobhost_connections_open",
        "Connections open on the HTTP and HTTPS listeners.",
        (),
        lambda: budget.open,
    )
    metrics.register_gauge_source(
        "jobhost_connections_max",
        "The cap on connections open on the HTTP and HTTPS listeners.",
        (),
        lambda: budget.max_connections,
    )
    return reporter, budget


def _build_caches(reactor, config: Config, store, metrics) -> CacheParts:
    """[tls] cache_size, context_cache_size, negative_cache_size, negative_ttl, poll_interval: the caches and their poller."""
    from jobhost.tls.sni import CertificateCache, ChangePoller
    from jobhost.web.site import PageCache

    certificates = CertificateCache(
        store=store, clock=reactor, max_entries=config.tls.cache_size, negative_ttl=config.tls.negative_ttl,
        max_contexts=config.tls.context_cache_size, max_negative=config.tls.negative_cache_size,
        policy=tls_policy(config),
    )
    pages = PageCache(max_entries=config.tls.cache_size)
    fanout = _Caches((certificates, pages))
    poller = ChangePoller(
        cache=fanout, store=store, clock=reactor, interval=config.tls.poll_interval, watch=store.watch_changes
    )
    poller.setName("changes")
    metrics.register_counter_source(
        "jobhost_cert_cache_total",
        "SNI certificate cache lookups by result.",
        ("result",),
        lambda: {("hit",): certificates.hits, ("miss",): certificates.misses},
    )
    metrics.watch_certificate_cache(certificates)
    metrics.register_counter_source(
        "jobhost_page_cache_total",
        "Rendered careers-page cache lookups by result.",
        ("result",),
        lambda: {("hit",): pages.hits, ("miss",): pages.misses},
    )
    return CacheParts(certificates=certificates, pages=pages, fanout=fanout, poller=poller)


def _build_acme_client(reactor, config: Config, metrics):
    """[acme] and [[acme.issuers]]: one ACME client per issuer, in order (each has its own pool)."""
    from jobhost.acme.client import AcmeClient

    return tuple(
        AcmeClient.create(
            reactor, issuer.directory_url, issuer.ca_bundle, timeout=config.acme.timeout,
            preferred_chain=issuer.preferred_chain, on_response=metrics.acme_request,
        )
        for issuer in config.acme.issuers
    )


def _close_all(clients) -> Deferred:
    from twisted.internet.defer import DeferredList

    return DeferredList([c.close() for c in clients], consumeErrors=True)


def _build_events(reactor, config: Config, metrics):
    """[events]: the webhook notifier, or a sink that drops events without a ``webhook_url``."""
    from jobhost.admin.auth import load_or_create_token
    from jobhost.events import NullEventSink, WebhookNotifier

    if not config.events.webhook_url:
        return NullEventSink()

    secret = load_or_create_token(
        config.events.webhook_secret_file, key=("events", "webhook_secret_file"), what="webhook secret"
    )
    events = WebhookNotifier.create(
        reactor, config.events.webhook_url, secret.encode("ascii"),
        timeout=config.events.timeout, backoff=config.events.backoff,
    )
    metrics.register_counter_source(
        "jobhost_webhook_deliveries_total",
        "Webhook deliveries by outcome; retried counts retries scheduled.",
        ("outcome",),
        lambda: {("delivered",): events.delivered, ("failed",): events.failed,
                 ("dropped",): events.dropped, ("retried",): events.retries},
    )
    return events


def _build_preflight(reactor, config: Config) -> PreflightParts:
    """[preflight]: the DNS/CAA checker and the self-check, each when enabled."""
    from jobhost.preflight import Preflight
    from jobhost.selfcheck import HttpSelfCheck, TlsAlpnSelfCheck

    preflight = None
    if config.preflight.enabled:
        preflight = Preflight.create(
            reactor,
            resolvers=list(config.preflight.resolvers),
            addresses=list(config.preflight.addresses),
            cname_targets=list(config.preflight.cname_targets),
            ca_identifiers=list(config.preflight.ca_identifiers),
            timeout=config.preflight.timeout,
        )
    self_check = tls_alpn_self_check = None
    if config.preflight.self_check:
        self_check = HttpSelfCheck.create(
            reactor, config.preflight.resolvers, port=config.preflight.self_check_port,
            timeout=config.preflight.timeout, resolver=preflight.resolver if preflight is not None else None,
        )
        if "tls-alpn-01" in config.acme.challenges:
            tls_alpn_self_check = TlsAlpnSelfCheck(
                resolver=self_check.resolver, reactor=reactor, port=config.preflight.tls_self_check_port,
                timeout=config.preflight.timeout,
            )
    return PreflightParts(preflight=preflight, self_check=self_check, tls_alpn_self_check=tls_alpn_self_check)


def _build_issuing(reactor, config: Config, *, store, domains, client, checks: PreflightParts,
                   caches: CacheParts, metrics, events):
    """[acme] (issuers: account, keys, profile) and [renewal]: the issuing service.

    ``client`` is the tuple of ACME clients, one per ``config.acme.issuers`` entry.
    """
    from jobhost.issuing import Issuer, IssuingService, RegistrationWatcher, default_holder
    from jobhost.keys import threaded_keys

    issuers = tuple(
        Issuer(name=i.name, client=c, directory_url=i.directory_url, key_type=i.key_type,
               account_key_type=i.account_key_type, eab=i.eab, profile=i.profile)
        for i, c in zip(config.acme.issuers, client)
    )
    issuing = IssuingService(
        store=store,
        domains=domains,
        key_generator=threaded_keys(reactor),
        client=client[0],
        clock=reactor,
        directory_url=config.acme.directory_url,
        issuers=issuers,
        preflight=checks.preflight,
        self_check=checks.self_check,
        tls_alpn_self_check=checks.tls_alpn_self_check,
        challenges=config.acme.challenges,
        contact=config.acme.contact,
        terms_agreed=config.acme.terms_agreed,
        backoff=config.renewal.backoff,
        max_in_flight=config.renewal.max_in_flight,
        orders_per_window=config.renewal.orders_per_window,
        order_window=config.renewal.order_window,
        scan_interval=config.renewal.scan_interval,
        lease_duration=config.renewal.lease_duration,
        panic_interval=config.renewal.panic_interval,
        # A new certificate changes what the TLS cache holds, not the rendered pages.
        on_certificate=lambda hostname: caches.fanout.invalidate(hostname, frozenset((ChangeKind.CERTIFICATE,))),
        metrics=metrics,
        holder=config.renewal.node_id or default_holder(),
        events=events,
    )
    issuing.setName("issuing")
    metrics.register_gauge_source(
        "jobhost_ca_reachable",
        "1 unless the last order found the CA unreachable (then 0).",
        (),
        lambda: 0 if issuing.ca_reachable is False else 1,
    )
    # Hostnames another process registers (jobhost-store add-domain) are worked on at once.
    caches.fanout.attach(RegistrationWatcher(issuing))
    return issuing


def _build_web(reactor, config: Config, *, store, caches: CacheParts, fallback, metrics) -> WebParts:
    """[web] and [tls] (fallback, hello timeout): the HTTP site and the SNI TLS factory."""
    from jobhost.tls.listener import SNIServerFactory
    from jobhost.web.site import HttpRootResource, HttpsRootResource, make_site

    key_pem, cert_pem = fallback
    if config.web.access_log:
        # Opened for real when the listeners start; found unwritable here, it is a config error.
        try:
            with open(config.web.access_log, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise ConfigError(f"cannot write {config.web.access_log}: {e.strerror}", ("web", "access_log")) from None
    reporter, budget = _build_limits(reactor, config, metrics)
    limits = config.limits
    common = dict(
        request_timeout=limits.request_timeout, keepalive_timeout=limits.keepalive_timeout,
        reporter=reporter, access_log=config.web.access_log,
    )
    http_site = make_site(
        HttpRootResource(store=store, https_port=_https_port(config)), clock=reactor, budget=budget, **common
    )
    # The HTTPS site's connections are counted by the listener's hold, which sees them first.
    https_site = make_site(HttpsRootResource(store=store, page_cache=caches.pages, clock=reactor), clock=reactor, **common)
    tls_factory = SNIServerFactory.create(
        https_site, caches.certificates, reactor, key_pem, cert_pem,
        reject_unknown=config.tls.fallback == "reject",
        hello_timeout=config.tls.hello_timeout,
        ticket_rotation=config.tls.ticket_rotation,
        max_held=limits.max_held,
        budget=budget,
        reporter=reporter,
    )
    metrics.register_counter_source(
        "jobhost_tls_handshakes_total",
        "TLS connections on the HTTPS listener by outcome.",
        ("outcome",),
        lambda: {
            (outcome,): getattr(tls_factory, outcome)
            for outcome in ("served", "fallback", "rejected", "not_tls", "timeout")
        },
    )
    return WebParts(http=http_site, https=tls_factory)


def _build_admin(reactor, config: Config, *, store, domains, issuing, checks: PreflightParts,
                 caches: CacheParts, metrics, events, health) -> AdminParts:
    """[admin]: the token, the admin API and the store statistics."""
    from jobhost.admin.api import AdminResource, admin_site
    from jobhost.admin.auth import load_or_create_token
    from jobhost.admin.dashboard import Dashboard
    from jobhost.metrics import StoreStatsService

    token = load_or_create_token(config.admin.token_file)
    _warn_if_exposed(config)
    self_check = checks.self_check
    resource = AdminResource(
        store=store,
        domains=domains,
        issuer=issuing,
        preflight=checks.preflight,
        self_check=(lambda hostname: self_check.probe(store, hostname)) if self_check else None,
        caches=caches.fanout,
        metrics=metrics,
        clock=reactor,
        token=token,
        max_body_bytes=config.admin.max_body_bytes,
        events=events,
        health=health,
    )
    resource.dashboard = Dashboard(api=resource)
    stats = StoreStatsService(metrics=metrics, store=store, clock=reactor, interval=config.admin.stats_interval)
    stats.setName("store-stats")
    return AdminParts(resource=resource, site=admin_site(resource, clock=reactor), stats=stats)


def _build_lag(reactor, metrics):
    """The reactor lag monitor, exported in /metrics."""
    from jobhost.lag import GcPauses, LagMonitor

    pauses = GcPauses()
    lag = LagMonitor(clock=reactor, observe=metrics.reactor_lag, freeze_heap=True, gc_pauses=pauses)
    lag.setName("reactor-lag")
    metrics.register_gauge_source(
        "jobhost_reactor_lag_max_seconds", "The worst reactor lag since start (seconds).", (),
        lambda: lag.worst,
    )
    metrics.register_gauge_source(
        "jobhost_reactor_lag_busy_max_seconds",
        "The worst part of a reactor lag the reactor thread spent running, since start (seconds).", (),
        lambda: lag.worst_busy,
    )
    metrics.register_gauge_source(
        "jobhost_reactor_lag_recent_max_seconds", "The worst reactor lag of the last minute (seconds).", (),
        lag.recent_worst,
    )
    metrics.register_gauge_source(
        "jobhost_gc_pause_max_seconds", "The longest garbage collection since start, by generation (seconds).",
        ("generation",), lambda: {(str(g),): pause for g, pause in enumerate(pauses.worst)},
    )
    metrics.register_counter_source(
        "jobhost_gc_collections_total", "Garbage collections since start, by generation.",
        ("generation",), lambda: {(str(g),): count for g, count in enumerate(pauses.counts)},
    )
    return lag


def _warn_if_exposed(config: Config) -> None:
    """Warn when the admin listener is reachable from other machines (public plain HTTP needs
    ``[admin] allow_public``; the config refuses it otherwise)."""
    from jobhost.config import admin_exposure

    exposure = admin_exposure(config.listen.admin)
    if exposure in ("private", "public", "tls"):
        log.warn(
            "The admin API listens on {endpoint}, reachable from other machines ({exposure}"
            "{plain}): keep it on loopback or behind a firewall",
            endpoint=config.listen.admin, exposure=exposure,
            plain="" if exposure == "tls" else ", plain HTTP: the token crosses the network unencrypted",
        )


def _build_listeners(reactor, config: Config, *, web: WebParts, admin_site, workers: int = 1) -> tuple:
    """[listen]: one listener per endpoint string; [limits] backlog for the public ones.

    With worker processes (``workers`` > 1) the main process binds the HTTP and HTTPS
    listeners but never accepts: with ``[server] affinity = "address"`` as one socket per
    worker (:class:`jobhost.workers.ReusePortListenerService`), else as one shared socket.
    """
    listeners = []
    for name, description, factory in (
        ("http", with_backlog(config.listen.http, config.limits.backlog), web.http),
        ("https", with_backlog(config.listen.https, config.limits.backlog), web.https),
    ):
        endpoint = serverFromString(reactor, description)
        if workers > 1 and config.server.affinity == "address" and _is_tcp(endpoint):
            from jobhost.workers import ReusePortListenerService

            listeners.append(ReusePortListenerService(name, endpoint, workers))
        else:
            listeners.append(ListenerService(name, endpoint, factory, accept=workers < 2))
    listeners.append(ListenerService("admin", serverFromString(reactor, config.listen.admin), admin_site))
    return tuple(listeners)


def _is_tcp(endpoint) -> bool:
    return type(endpoint).__name__ in ("TCP4ServerEndpoint", "TCP6ServerEndpoint")


def with_backlog(description: str, backlog: int) -> str:
    """A TCP endpoint description with ``backlog=`` added, unless it sets one (or is not TCP)."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind not in ("tcp", "tcp6") or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def build_parts(reactor, config: Config) -> Parts:
    """Build every part and the service tree from a parsed config (no I/O but the fallback and token files).

    Raises:
        ConfigError: when something the config names cannot be used (a store URL, a CA bundle,
            a fallback certificate file that is not a key and certificate).
    """
    from jobhost.metrics import Metrics

    # What reads files and checks values comes first: a config error then leaves nothing
    # scheduled on the reactor (the store and the resolver add start-up triggers and timers).
    metrics = Metrics()
    fallback = _build_fallback(config)
    client = _build_acme_client(reactor, config, metrics)
    events = _build_events(reactor, config, metrics)
    checks = _build_preflight(reactor, config)
    store = _build_store(reactor, config)
    domains = _build_domains(reactor, store)
    caches = _build_caches(reactor, config, store, metrics)
    issuing = _build_issuing(
        reactor, config, store=store, domains=domains, client=client, checks=checks, caches=caches,
        metrics=metrics, events=events,
    )
    web = _build_web(reactor, config, store=store, caches=caches, fallback=fallback, metrics=metrics)
    # The admin API's /healthz reports the listeners, which serve the admin API: it reads
    # this list when asked, by which time it is filled.
    listeners: list[ListenerService] = []
    supervisor: list = []
    admin = _build_admin(
        reactor, config, store=store, domains=domains, issuing=issuing, checks=checks, caches=caches,
        metrics=metrics, events=events, health=lambda: _health(listeners, issuing, *supervisor),
    )
    workers = config.server.worker_count(config.store.url)
    if config.file is None and not config.server.workers:
        workers = 1  # one per core needs a config file the workers can read: a parsed dict has none
    listeners.extend(_build_listeners(reactor, config, web=web, admin_site=admin.site, workers=workers))

    root = JobhostService(config)
    root.processes = workers
    children: list[Service] = [caches.poller, _CallOnStop("acme-client", lambda: _close_all(client))]
    from jobhost.events import WebhookNotifier

    if isinstance(events, WebhookNotifier):  # it delivers in the background
        # Before the issuing service and the admin listener, so it stops after both.
        children.append(_CallOnStop("events", events.close))
    lag = _build_lag(reactor, metrics)
    children += [issuing, admin.stats, lag, *listeners]
    if workers > 1:
        supervisor.append(_build_workers(reactor, config, workers, listeners, metrics))
        caches.fanout.attach(supervisor[0])
        # Last: started once the sockets are bound, stopped first (the workers drain, then the sockets close).
        children.append(supervisor[0])
    for child in children:
        child.setServiceParent(root)
    return Parts(
        config=config, root=root, store=store, domains=domains, metrics=metrics, caches=caches, client=client[0],
        events=events, checks=checks, issuing=issuing, web=web, admin=admin, listeners=tuple(listeners),
        workers=supervisor[0] if supervisor else None,
        lag=lag,
    )


def _build_workers(reactor, config: Config, count: int, listeners: Sequence[ListenerService], metrics):
    """[server] workers > 1: the supervisor of the processes that accept on the public listeners."""
    from jobhost.workers import WorkerSupervisor

    if config.file is None:
        raise ConfigError("worker processes read the config file: build from a file or set workers = 1",
                          ("server", "workers"))
    for listener in listeners[:2]:
        kind = listener.endpoint.__class__.__name__
        if not _is_tcp(listener.endpoint) and kind != "AdoptedStreamServerEndpoint":
            raise ConfigError(
                f"worker processes share TCP listeners only, not {kind}: set [server] workers = 1",
                ("listen", listener.name),
            )
    supervisor = WorkerSupervisor(
        reactor=reactor, config_file=config.file, count=count, listeners=tuple(listeners[:2]),
        drain_timeout=config.server.drain_timeout, metrics=metrics,
    )
    supervisor.setName("workers")
    return supervisor


@attrs.frozen
class WorkerParts:
    """What one worker process runs: the public listeners over its own caches and the shared store.

    Attributes:
        root: Its service tree (change poller, drain, the adopted HTTP and HTTPS listeners).
        store, metrics, caches, web: As in :class:`Parts`.
        listeners: The adopted http and https listeners.
    """

    root: JobhostService
    store: Any
    metrics: Any
    caches: CacheParts
    web: WebParts
    listeners: tuple[AdoptedListenerService, ...]


def build_worker_parts(reactor, config: Config, sockets: dict[str, tuple[int, int]]) -> WorkerParts:
    """A worker's parts: serve ``sockets`` (``{"http": (fd, family), "https": ...}``) from the store.

    The main process made the store's schema and the fallback certificate before it
    started the worker; the worker runs no issuing, renewal or admin API.
    """
    from jobhost.metrics import Metrics
    from jobhost.workers import DrainService

    metrics = Metrics()
    fallback = _build_fallback(config)
    store = _build_store(reactor, config)
    caches = _build_caches(reactor, config, store, metrics)
    web = _build_web(reactor, config, store=store, caches=caches, fallback=fallback, metrics=metrics)
    listeners = tuple(
        AdoptedListenerService(name, reactor, fd, family, factory)
        for name, factory in (("http", web.http), ("https", web.https))
        for fd, family in [sockets[name]]
    )
    drain = DrainService(
        clock=reactor, budget=web.https.budget, sites=(web.http, web.https.tls_factory.wrappedFactory),
        timeout=config.server.drain_timeout,
    )
    drain.setName("drain")
    root = JobhostService(None)
    for child in (caches.poller, drain, *listeners):
        child.setServiceParent(root)
    return WorkerParts(root=root, store=store, metrics=metrics, caches=caches, web=web, listeners=listeners)


def makeService(options: Options) -> JobhostService:
    """twistd's entry point: the service tree for the parsed ``--config``."""
    from twisted.internet import reactor

    try:
        parts = build_parts(reactor, options.config)
    except ConfigError as e:
        if e.file is None:
            e.file = options.config.file
        # twistd prints a traceback for anything makeService raises (even UsageError), so say
        # what is wrong in one line and exit non-zero, as postOptions errors do.
        sys.stderr.write(f"jobhost: config error: {e}\n")
        raise SystemExit(1) from None
    if parts.workers is None:
        _HangupService(parts.caches.fanout).setServiceParent(parts.root)
    if getattr(options, "parent", None) is not None:  # run by twistd, not built by a test
        from jobhost.logs import twistd_observer

        config = options.config
        parts.root.log_observer = twistd_observer(
            options.parent, options["log-level"] or config.log.level, config.log.format
        )
    return parts.root


class _HangupService(Service):
    """One process serves: SIGHUP drops the caches (each name is read from the store again).

    (With worker processes the supervisor handles SIGHUP: it rolls the workers.)
    Without a handler, SIGHUP would end the daemon, and ``systemctl reload`` sends it.
    """

    name = "hangup"

    def __init__(self, caches) -> None:
        self.caches = caches
        self._old = None

    def startService(self) -> None:
        import signal

        from twisted.internet import reactor

        Service.startService(self)

        def hangup(signum, frame) -> None:
            reactor.callFromThread(self.reload)

        self._old = signal.signal(signal.SIGHUP, hangup)

    def stopService(self) -> None:
        import signal

        Service.stopService(self)
        if self._old is not None:
            signal.signal(signal.SIGHUP, self._old)
            self._old = None

    def reload(self) -> None:
        log.info("SIGHUP: dropping the certificate and page caches (each hostname is read from the store again)")
        self.caches.invalidate_all()


__all__ = [
    "AdminParts",
    "CacheParts",
    "JobhostService",
    "ListenerService",
    "Options",
    "Parts",
    "PreflightParts",
    "WebParts",
    "build_parts",
    "makeService",
]
