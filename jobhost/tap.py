"""
``twistd jobhost``: command-line options and the service tree.

The tree, in start order (stopped in reverse, one after another, so
listeners close before the issuing service stops and the store closes last)::

    JobhostService
      store service          (the store's thread pool lives with the reactor)
      ChangePoller           changes by any process reach the SNI and page caches
      (events)               webhooks, when [events] webhook_url is set
      IssuingService         issues and renews, store-driven
      StoreStatsService      refreshes the store-derived metrics
      http listener          ACME challenges, redirects to HTTPS
      https listener         SNI: per-hostname certificates, careers pages
      admin listener         JSON admin API (loopback by default)

Listeners bind in ``privilegedStartService`` (StreamServerEndpointService),
so ports 80 and 443 work with ``twistd --uid``.  Only :func:`makeService`
touches the global reactor.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath

from jobhost import __version__
from jobhost.config import Config, load_config
from jobhost.errors import ConfigError, InvalidCertificate
from jobhost.store.factory import redacted_url

log = Logger()


class Options(usage.Options):
    """``twistd jobhost --config FILE``: the config is read and checked here, once."""

    synopsis = "--config FILE"
    optParameters = [["config", "c", None, "The TOML config file (see etc/jobhost.toml)."]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required (try etc/jobhost.toml)")
        try:
            self.config: Config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"config error: {e}") from None


class JobhostService(MultiService):
    """The root service: starts children in order, stops them in reverse *one at a time*.

    (``MultiService`` stops children concurrently; jobhost needs listeners closed before
    the issuing service stops, and that before the store goes away.)
    """

    config: Config | None = None

    def startService(self) -> None:
        MultiService.startService(self)
        if self.config is not None:
            c = self.config
            log.info(
                "jobhost {version} serving: http {http}, https {https}, admin {admin}; store {store}; "
                "CA {directory}; unknown names get {fallback}",
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


async def _maybe_await(result):
    if isinstance(result, Deferred):
        return await result
    return result


class _Caches:
    """Fans invalidations out to every per-hostname cache (SNI contexts, rendered pages)."""

    def __init__(self, caches) -> None:
        self._caches = tuple(caches)

    def invalidate(self, hostname: str) -> None:
        for cache in self._caches:
            cache.invalidate(hostname)

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


def _health(root: MultiService, issuing) -> dict:
    """``/healthz`` parts beyond the store: the listeners (critical) and the CA as last seen."""
    listeners = [s for s in root if isinstance(s, StreamServerEndpointService)]
    down = [s.name for s in listeners if not _listening(s)]
    return {
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


def _listening(service: StreamServerEndpointService) -> bool:
    """True once the listener's port is bound (its Deferred fired with a listening port)."""
    waiting = getattr(service, "_waitingForPort", None)
    if not service.running or waiting is None or not waiting.called:
        return False
    return hasattr(waiting.result, "getHost")


def _https_port(config: Config) -> int | None:
    """The HTTPS port for redirects: ``[web] https_redirect_port`` or the listener's TCP port."""
    if config.web.https_redirect_port is not None:
        return config.web.https_redirect_port
    parts = config.listen.https.split(":")
    if len(parts) > 1 and parts[0] in ("tcp", "tcp6", "ssl") and parts[1].isdigit():
        return int(parts[1])
    return None


def build_service(reactor, config: Config) -> JobhostService:
    """Build the whole service tree from a parsed config (no I/O but the fallback and token files).

    Raises:
        ConfigError: when something the config names cannot be used (a store URL, a CA bundle,
            a fallback certificate file that is not a key and certificate).
    """
    from jobhost.acme.client import AcmeClient
    from jobhost.admin.api import AdminResource, admin_site
    from jobhost.admin.auth import load_or_create_token
    from jobhost.issuing import IssuingService, default_holder
    from jobhost.metrics import Metrics, StoreStatsService
    from jobhost.preflight import Preflight
    from jobhost.selfcheck import HttpSelfCheck
    from jobhost.store.factory import store_from_url
    from jobhost.tls.fallback import load_or_create_fallback
    from jobhost.tls.listener import SNIServerFactory
    from jobhost.tls.sni import CertificateCache, ChangePoller
    from jobhost.web.site import HttpRootResource, HttpsRootResource, PageCache, make_site

    root = JobhostService()
    store = store_from_url(config.store.url, reactor, str(config.base_dir))

    key_pem = cert_pem = None
    if config.tls.fallback == "self-signed":
        try:
            key_pem, cert_pem = load_or_create_fallback(
                FilePath(config.tls.fallback_cert), datetime.now(timezone.utc)
            )
        except InvalidCertificate as e:
            raise ConfigError(str(e), ("tls", "fallback_cert")) from None
        except OSError as e:
            raise ConfigError(f"cannot write {config.tls.fallback_cert}: {e.strerror}", ("tls", "fallback_cert")) from None
    token = load_or_create_token(config.admin.token_file)

    metrics = Metrics()
    cache = CertificateCache(
        store=store, clock=reactor, max_entries=config.tls.cache_size, negative_ttl=config.tls.negative_ttl
    )
    page_cache = PageCache(max_entries=config.tls.cache_size)
    caches = _Caches((cache, page_cache))
    poller = ChangePoller(cache=caches, store=store, clock=reactor, interval=config.tls.poll_interval)
    poller.setName("changes")
    poller.setServiceParent(root)

    client = AcmeClient.create(
        reactor, config.acme.directory_url, config.acme.ca_bundle, timeout=config.acme.timeout,
        preferred_chain=config.acme.preferred_chain, on_response=metrics.acme_request,
    )
    _CallOnStop("acme-client", client.close).setServiceParent(root)

    events = None
    if config.events.webhook_url:
        from jobhost.events import WebhookNotifier

        secret = load_or_create_token(
            config.events.webhook_secret_file, key=("events", "webhook_secret_file"), what="webhook secret"
        )
        events = WebhookNotifier.create(
            reactor, config.events.webhook_url, secret.encode("ascii"),
            timeout=config.events.timeout, backoff=config.events.backoff,
        )
        # Before the issuing service and the admin listener, so it stops after both.
        _CallOnStop("events", events.close).setServiceParent(root)
        metrics.register_counter_source(
            "jobhost_webhook_deliveries_total",
            "Webhook deliveries by outcome; retried counts retries scheduled.",
            ("outcome",),
            lambda: {("delivered",): events.delivered, ("failed",): events.failed,
                     ("dropped",): events.dropped, ("retried",): events.retries},
        )

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
    self_check = None
    if config.preflight.self_check:
        self_check = HttpSelfCheck.create(
            reactor, config.preflight.resolvers, port=config.preflight.self_check_port,
            timeout=config.preflight.timeout, resolver=preflight.resolver if preflight is not None else None,
        )

    eab = None
    if config.acme.eab_kid and config.acme.eab_hmac_key:
        eab = (config.acme.eab_kid, config.acme.eab_hmac_key)
    issuing = IssuingService(
        store=store,
        client=client,
        clock=reactor,
        directory_url=config.acme.directory_url,
        preflight=preflight,
        self_check=self_check,
        key_type=config.acme.key_type,
        account_key_type=config.acme.account_key_type,
        contact=config.acme.contact,
        terms_agreed=config.acme.terms_agreed,
        eab=eab,
        profile=config.acme.profile,
        backoff=config.renewal.backoff,
        max_in_flight=config.renewal.max_in_flight,
        orders_per_window=config.renewal.orders_per_window,
        order_window=config.renewal.order_window,
        scan_interval=config.renewal.scan_interval,
        lease_duration=config.renewal.lease_duration,
        panic_interval=config.renewal.panic_interval,
        on_certificate=caches.invalidate,
        metrics=metrics,
        holder=config.renewal.node_id or default_holder(),
        events=events,
    )
    issuing.setName("issuing")
    issuing.setServiceParent(root)

    stats = StoreStatsService(metrics=metrics, store=store, clock=reactor, interval=config.admin.stats_interval)
    stats.setName("store-stats")
    stats.setServiceParent(root)

    http_site = make_site(HttpRootResource(store=store, https_port=_https_port(config)), clock=reactor)
    https_site = make_site(HttpsRootResource(store=store, page_cache=page_cache), clock=reactor)
    tls_factory = SNIServerFactory.create(
        https_site, cache, reactor, key_pem, cert_pem,
        reject_unknown=config.tls.fallback == "reject",
        hello_timeout=config.tls.hello_timeout,
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
    metrics.register_counter_source(
        "jobhost_cert_cache_total",
        "SNI certificate cache lookups by result.",
        ("result",),
        lambda: {("hit",): cache.hits, ("miss",): cache.misses},
    )
    metrics.register_counter_source(
        "jobhost_page_cache_total",
        "Rendered careers-page cache lookups by result.",
        ("result",),
        lambda: {("hit",): page_cache.hits, ("miss",): page_cache.misses},
    )
    admin = AdminResource(
        store=store,
        issuer=issuing,
        preflight=preflight,
        self_check=(lambda hostname: self_check.probe(store, hostname)) if self_check else None,
        caches=caches,
        metrics=metrics,
        clock=reactor,
        token=token,
        max_body_bytes=config.admin.max_body_bytes,
        events=events,
        health=lambda: _health(root, issuing),
    )
    admin_factory = admin_site(admin, clock=reactor)

    for name, description, factory in (
        ("http", config.listen.http, http_site),
        ("https", config.listen.https, tls_factory),
        ("admin", config.listen.admin, admin_factory),
    ):
        listener = StreamServerEndpointService(serverFromString(reactor, description), factory)
        # Fail start-up (twistd exits non-zero) when a port cannot be bound, as strports does.
        listener._raiseSynchronously = True
        listener.setName(name)
        listener.setServiceParent(root)
    root.config = config
    root.store = store
    root.cache = cache
    root.issuing = issuing
    root.metrics = metrics
    root.events = events
    return root


def makeService(options: Options) -> JobhostService:
    """twistd's entry point: the service tree for the parsed ``--config``."""
    from twisted.internet import reactor

    try:
        return build_service(reactor, options.config)
    except ConfigError as e:
        if e.file is None:
            e.file = options.config.file
        # twistd prints a traceback for anything makeService raises (even UsageError), so say
        # what is wrong in one line and exit non-zero, as postOptions errors do.
        sys.stderr.write(f"jobhost: config error: {e}\n")
        raise SystemExit(1) from None


__all__ = ["JobhostService", "Options", "build_service", "makeService"]
