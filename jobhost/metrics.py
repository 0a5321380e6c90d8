"""
Prometheus metrics: one registry per daemon, and the names every module shares.

This module owns :class:`Metrics`, which holds a private
``prometheus_client.CollectorRegistry`` (never the process-global one, so
tests and several daemons in one process do not collide) and the metric
families jobhost exports:

=================================================  =========  ====================================
name                                               type       labels / meaning
=================================================  =========  ====================================
``jobhost_domains``                                gauge      ``state``: domain records per state
``jobhost_certificates_expiring``                  gauge      ``window`` (``7d``, ``14d``):
                                                              certificates whose ``not_after``
                                                              is inside the window
``jobhost_certificates``                           gauge      certificates in the store
``jobhost_certificates_earliest_not_after_``       gauge      the soonest ``not_after`` of any stored
``timestamp_seconds``                                         certificate, Unix time (0: none)
``jobhost_domains_failing_over``                   gauge      ``window`` (``1h``, ``1d``, ``7d``):
                                                              domains failing (attempts > 0, not
                                                              active) since longer than the window
``jobhost_ca_reachable``                           gauge      1 unless the last order found the CA
                                                              unreachable (0): via a gauge source
``jobhost_store_broken_records``                   gauge      ``record`` (domain, certificate):
                                                              stored records that do not parse
                                                              or do not verify (cached; not
                                                              counted by the SQL store)
``jobhost_store_stats_refreshed_timestamp_seconds`` gauge     when the three above were counted
                                                              (0: never)
``jobhost_issuance_attempts_total``                counter    issuance/renewal attempts started
``jobhost_issuance_success_total``                 counter    attempts that stored a certificate
``jobhost_issuance_failures_total``                counter    ``reason``: failed attempts
``jobhost_issuance_seconds``                       histogram  duration of successful attempts
``jobhost_acme_requests_total``                    counter    ``endpoint``, ``status``: requests
                                                              to the CA
``jobhost_rate_limited_total``                     counter    rate-limit refusals (CA or budget)
``jobhost_acme_orders_total``                      counter    ``issuer``, ``outcome`` (issued,
                                                              rate_limited, unreachable, refused,
                                                              failed, not_ordered): attempts per CA
``jobhost_tls_handshakes_total``                   counter    ``outcome`` (served, fallback,
                                                              rejected, not_tls, timeout): via a
                                                              counter source
``jobhost_cert_cache_total``                       counter    ``result`` (hit, miss): via a
                                                              counter source
``jobhost_cert_cache_broken_total``                counter    unusable certificates the SNI cache
                                                              met and logged, once per change:
                                                              :meth:`Metrics.watch_certificate_cache`
``jobhost_cert_cache_broken_hostnames``            gauge      hostnames the SNI cache serves the
                                                              fallback because their certificate
                                                              is unusable: same
``jobhost_reactor_lag_seconds``                    histogram  how late each tick of the reactor
                                                              lag monitor fired
                                                              (:mod:`jobhost.lag`)
``jobhost_reactor_lag_max_seconds``                gauge      the worst such lag since start;
                                                              ``..._recent_max_seconds``: of the
                                                              last minute (via gauge sources)
=================================================  =========  ====================================

The store-derived gauges (``jobhost_domains`` ... ``jobhost_store_broken_records``)
are never computed at scrape time: a scrape only
reads numbers cached by :meth:`Metrics.refresh_from_store`, which
:class:`StoreStatsService` calls periodically.  A scrape therefore never
waits on the store.

Modules that already keep plain integer counters (the TLS listener, the SNI
cache) do not import prometheus_client: whoever wires the service tree
registers a callable with :meth:`Metrics.register_counter_source` and the
numbers are read at scrape time::

    metrics.register_counter_source(
        "jobhost_tls_handshakes_total",
        "TLS connections on the HTTPS listener by outcome.",
        ("outcome",),
        lambda: {(name,): count for name, count in listener.counts.items()},
    )
"""

from __future__ import annotations

import json

from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping, Sequence

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from jobhost.errors import BrokenRecord
from jobhost.store.records import DomainState
from jobhost.timeutil import from_iso
from jobhost.timeutil import now as clock_now

log = Logger()

#: Windows reported by ``jobhost_certificates_expiring``, label -> width.
EXPIRY_WINDOWS: Mapping[str, timedelta] = {"7d": timedelta(days=7), "14d": timedelta(days=14)}

#: Windows reported by ``jobhost_domains_failing_over``: failing since longer than this.
FAILING_WINDOWS: Mapping[str, timedelta] = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7)}

#: Outcome label values of ``jobhost_tls_handshakes_total`` (for the TLS listener's source).
TLS_HANDSHAKE_OUTCOMES = ("served", "fallback", "rejected", "not_tls", "timeout")

#: Result label values of ``jobhost_cert_cache_total`` (for the SNI cache's source).
CERT_CACHE_RESULTS = ("hit", "miss")

#: Buckets of ``jobhost_issuance_seconds``: an order takes seconds to minutes.
ISSUANCE_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))

#: Reactor lag buckets (seconds): fine around the 20 ms a stall may take at most.
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))

#: Label values of ``jobhost_store_broken_records``: which kind of record is unusable.
BROKEN_RECORD_KINDS = ("domain", "certificate")

#: How many records :meth:`Metrics.refresh_from_store` reads per store call.
_PAGE = 500

#: What a counter/gauge source returns: a number (no labels) or ``{label values: number}``.
SourceValue = float | int | Mapping[tuple[str, ...], float | int]


@attrs.frozen
class _Source:
    name: str
    help: str
    labels: tuple[str, ...]
    read: Callable[[], SourceValue]
    kind: str  # "counter" or "gauge"


@attrs.define(eq=False)
class _CallbackCollector:
    """Yields one family per registered source, read at scrape time."""

    sources: dict[str, _Source] = attrs.field(factory=dict)
    #: Callables returning other processes' values ``{name: {label values: number}}`` (the
    #: worker processes'), added to the sources of the same name.
    remote: list[Callable[[], Mapping[str, Mapping[tuple[str, ...], float]]]] = attrs.field(factory=list)

    def collect(self) -> Iterable[Metric]:
        remote = self._remote()
        for source in list(self.sources.values()):
            try:
                value = source.read()
            except Exception:
                # A broken source must not break the whole scrape: log and skip it.
                log.failure("Metric source {metric} failed", metric=source.name)
                continue
            extra = remote.get(source.name)
            if extra:
                value = _add_values(value, extra)
            family_type = CounterMetricFamily if source.kind == "counter" else GaugeMetricFamily
            family = family_type(source.name, source.help, labels=source.labels)
            if isinstance(value, Mapping):
                for label_values, number in sorted(value.items()):
                    family.add_metric([str(v) for v in label_values], float(number))
            elif source.labels:
                log.error(
                    "Metric source {metric} has labels but returned a bare number", metric=source.name
                )
                continue
            else:
                family.add_metric([], float(value))
            yield family

    def describe(self) -> Iterable[Metric]:
        # An empty description lets sources be added after registration.
        return ()

    def _remote(self) -> dict[str, Mapping[tuple[str, ...], float]]:
        merged: dict[str, dict[tuple[str, ...], float]] = {}
        for read in self.remote:
            try:
                values = read()
            except Exception:
                log.failure("Remote metric source {source} failed", source=read)
                continue
            for name, numbers in values.items():
                into = merged.setdefault(name, {})
                for labels, number in numbers.items():
                    into[labels] = into.get(labels, 0.0) + number
        return merged

    def snapshot(self) -> dict[str, dict]:
        """Every source's value now, as JSON: ``{name: {"kind": ..., "values": {"[labels]": number}}}``."""
        out: dict[str, dict] = {}
        for source in list(self.sources.values()):
            try:
                value = source.read()
            except Exception:
                continue
            if not isinstance(value, Mapping):
                value = {(): value}
            out[source.name] = {
                "kind": source.kind,
                "values": {json.dumps([str(v) for v in labels]): float(n) for labels, n in value.items()},
            }
        return out


def _add_values(value: SourceValue, extra: Mapping[tuple[str, ...], float]) -> SourceValue:
    """A source's own value plus another process's (label values compared as strings)."""
    if not isinstance(value, Mapping):
        return value + extra.get((), 0.0)
    total = {tuple(str(v) for v in labels): number for labels, number in value.items()}
    for labels, number in extra.items():
        total[labels] = total.get(labels, 0.0) + number
    return total


@attrs.define(eq=False)
class _StoreStatsCollector:
    """Yields the store-derived gauges from the numbers cached in :class:`Metrics`."""

    metrics: Metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        domains = GaugeMetricFamily(
            "jobhost_domains", "Domain records by state (cached; see jobhost_store_stats_refreshed_timestamp_seconds).",
            labels=["state"],
        )
        for state in DomainState.ALL:
            domains.add_metric([state], float(m.domain_counts.get(state, 0)))
        yield domains
        expiring = GaugeMetricFamily(
            "jobhost_certificates_expiring",
            "Certificates whose not_after falls inside the window (cached).",
            labels=["window"],
        )
        for window in EXPIRY_WINDOWS:
            expiring.add_metric([window], float(m.expiring_counts.get(window, 0)))
        yield expiring
        yield GaugeMetricFamily(
            "jobhost_certificates", "Certificate records in the store (cached).", value=float(m.certificate_count)
        )
        yield GaugeMetricFamily(
            "jobhost_certificates_earliest_not_after_timestamp_seconds",
            "Unix time the soonest-expiring stored certificate expires (0: none; cached).",
            value=float(m.earliest_not_after or 0.0),
        )
        failing = GaugeMetricFamily(
            "jobhost_domains_failing_over",
            "Domains whose attempts have failed since longer than the window (cached).",
            labels=["window"],
        )
        for window in FAILING_WINDOWS:
            failing.add_metric([window], float(m.failing_counts.get(window, 0)))
        yield failing
        broken = GaugeMetricFamily(
            "jobhost_store_broken_records",
            "Stored records that do not parse or do not verify, by kind (cached).",
            labels=["record"],
        )
        if m.broken_counts is not None:  # None: the store does not count them (SQL)
            for kind in BROKEN_RECORD_KINDS:
                broken.add_metric([kind], float(m.broken_counts.get(kind, 0)))
        yield broken
        # A timestamp rather than an age, so a scrape needs no clock: alert on
        # time() - jobhost_store_stats_refreshed_timestamp_seconds.
        yield GaugeMetricFamily(
            "jobhost_store_stats_refreshed_timestamp_seconds",
            "Unix time the store-derived gauges were last counted (0: never).",
            value=m.refreshed_at or 0.0,
        )

    def describe(self) -> Iterable[Metric]:
        return ()


@attrs.define(eq=False)
class Metrics:
    """jobhost's Prometheus metrics, on a registry of their own.

    Build one with ``Metrics()``.  The issuing service calls :meth:`issuance_started`,
    :meth:`issuance_succeeded`, :meth:`issuance_failed`,
    :meth:`acme_request` and :meth:`rate_limited`; the admin API serves
    :meth:`exposition`.

    Attributes:
        registry: The registry every jobhost metric lives in.
        domain_counts: Cached ``state -> count`` (set by :meth:`refresh_from_store`).
        expiring_counts: Cached ``window -> count``.
        certificate_count: Cached number of certificate records (readable ones).
        broken_counts: Cached ``record kind -> count`` of stored records that cannot be used, or
            None when the store does not count them (the SQL store: see :meth:`refresh_from_store`).
        refreshed_at: Unix time of the last successful refresh, or None.
        earliest_not_after: Cached Unix time of the soonest certificate expiry, or None.
        failing_counts: Cached ``window -> count`` of domains failing since longer than it.
    """

    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    domain_counts: dict[str, int] = attrs.field(factory=dict)
    expiring_counts: dict[str, int] = attrs.field(factory=dict)
    certificate_count: int = 0
    broken_counts: dict[str, int] | None = attrs.field(factory=dict)
    refreshed_at: float | None = None
    earliest_not_after: float | None = None
    failing_counts: dict[str, int] = attrs.field(factory=dict)
    _sources: _CallbackCollector = attrs.field(init=False, factory=_CallbackCollector)
    _refreshers: list = attrs.field(init=False, factory=list)
    issuance_attempts: Counter = attrs.field(init=False)
    issuance_success: Counter = attrs.field(init=False)
    issuance_failures: Counter = attrs.field(init=False)
    issuance_seconds: Histogram = attrs.field(init=False)
    acme_requests: Counter = attrs.field(init=False)
    rate_limited_total: Counter = attrs.field(init=False)
    acme_orders: Counter = attrs.field(init=False)
    reactor_lag_seconds: Histogram = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.issuance_attempts = Counter(
            "jobhost_issuance_attempts", "Issuance and renewal attempts started.", registry=r
        )
        self.issuance_success = Counter(
            "jobhost_issuance_success", "Attempts that stored a new certificate.", registry=r
        )
        self.issuance_failures = Counter(
            "jobhost_issuance_failures", "Failed attempts by reason code.", ["reason"], registry=r
        )
        self.issuance_seconds = Histogram(
            "jobhost_issuance_seconds",
            "Duration of successful attempts, from new order to stored certificate.",
            buckets=ISSUANCE_BUCKETS,
            registry=r,
        )
        self.acme_requests = Counter(
            "jobhost_acme_requests", "Requests sent to the ACME server.", ["endpoint", "status"], registry=r
        )
        self.acme_orders = Counter(
            "jobhost_acme_orders", "Issuance attempts by ACME issuer and outcome.", ["issuer", "outcome"], registry=r
        )
        self.rate_limited_total = Counter(
            "jobhost_rate_limited", "Attempts refused by a CA rate limit or the local order budget.", registry=r
        )
        self.reactor_lag_seconds = Histogram(
            "jobhost_reactor_lag_seconds",
            "How late each tick of the reactor lag monitor fired (how long the reactor stalled).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        r.register(_StoreStatsCollector(self))
        r.register(self._sources)

    # -- called by the issuing service ------------------------------------------------------

    def issuance_started(self, hostname: str) -> None:
        """Count one issuance or renewal attempt for ``hostname`` starting."""
        self.issuance_attempts.inc()

    def issuance_succeeded(self, hostname: str, seconds: float) -> None:
        """Count one attempt that stored a certificate, which took ``seconds``."""
        self.issuance_success.inc()
        self.issuance_seconds.observe(max(0.0, seconds))

    def issuance_failed(self, hostname: str, reason_code: str) -> None:
        """Count one failed attempt; ``reason_code`` is a short stable code (e.g. ``rateLimited``)."""
        self.issuance_failures.labels(reason=reason_code or "unknown").inc()

    def acme_request(self, endpoint: str, status: int | str) -> None:
        """Count one request to the CA's ``endpoint`` (e.g. ``newOrder``) answered with ``status``.

        Use a status of ``"error"`` when no HTTP answer came back.
        """
        self.acme_requests.labels(endpoint=endpoint, status=str(status)).inc()

    def acme_order(self, issuer: str, outcome: str) -> None:
        """Count one attempt at the issuer named ``issuer`` ending with ``outcome``
        (``issued``, ``rate_limited``, ``unreachable``, ``refused``, ``failed`` or ``not_ordered``)."""
        self.acme_orders.labels(issuer=issuer, outcome=outcome).inc()

    def reactor_lag(self, seconds: float) -> None:
        """Record one reactor lag monitor tick that fired ``seconds`` late."""
        self.reactor_lag_seconds.observe(seconds)

    def rate_limited(self) -> None:
        """Count one attempt refused by a rate limit."""
        self.rate_limited_total.inc()

    # -- sources owned by other modules -------------------------------------------------------

    def register_counter_source(
        self, name: str, help: str, labels: Sequence[str], read: Callable[[], SourceValue]
    ) -> None:
        """Export a counter that another module keeps as plain numbers.

        Args:
            name: The metric name, e.g. ``"jobhost_tls_handshakes_total"``.
            help: One sentence for the ``# HELP`` line.
            labels: The label names, e.g. ``("outcome",)``; empty for a bare number.
            read: Called at every scrape on the reactor thread; must be cheap and
                must not block.  Returns a number when ``labels`` is empty, else a
                mapping from a tuple of label values to a number.

        Raises:
            ValueError: if a source of that name is already registered.
        """
        self._add_source(name, help, labels, read, "counter")

    def register_gauge_source(
        self, name: str, help: str, labels: Sequence[str], read: Callable[[], SourceValue]
    ) -> None:
        """Export a gauge read at scrape time; arguments as :meth:`register_counter_source`."""
        self._add_source(name, help, labels, read, "gauge")

    def _add_source(self, name, help, labels, read, kind) -> None:
        base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
        if base in self._sources.sources:
            raise ValueError(f"metric source {name!r} is already registered")
        self._sources.sources[base] = _Source(base, help, tuple(labels), read, kind)

    def add_remote_source(
        self,
        read: Callable[[], Mapping[str, Mapping[tuple[str, ...], float]]],
        refresh: Callable[[], Deferred] | None = None,
    ) -> None:
        """Add other processes' values to the sources of the same name at every scrape.

        Args:
            read: Returns ``{source name (counters without _total): {label values: number}}``,
                e.g. :meth:`jobhost.workers.WorkerSupervisor.remote_metrics`.
            refresh: Asks the other processes for their values now; :meth:`refresh_remote`
                waits for it (e.g. :meth:`jobhost.workers.WorkerSupervisor.refresh`).
        """
        self._sources.remote.append(read)
        if refresh is not None:
            self._refreshers.append(refresh)

    def refresh_remote(self) -> Deferred:
        """Fires once every remote source answered (or gave up): ``/metrics`` then shows this moment."""
        from twisted.internet.defer import DeferredList, maybeDeferred

        return DeferredList([maybeDeferred(r) for r in self._refreshers], consumeErrors=True)

    def snapshot(self) -> dict[str, dict]:
        """This process's counter and gauge sources now, as JSON-ready values (see :meth:`add_remote_source`)."""
        return self._sources.snapshot()

    def watch_certificate_cache(self, cache) -> None:
        """Export the SNI certificate cache's size, memory, evictions and unusable certificates.

        Registers ``jobhost_cert_cache_broken_total`` (reports, once per change of a
        hostname's certificate), ``jobhost_cert_cache_broken_hostnames`` (hostnames
        currently served the fallback for that reason), ``jobhost_cert_cache_entries``
        (by tier: ``hostname``, ``context``, ``negative``), ``jobhost_cert_cache_bytes``
        (the cache's estimate of the memory it holds), ``jobhost_cert_cache_evictions_total``
        (by tier) and ``jobhost_cert_cache_context_builds_total``.  Hits and misses are
        ``jobhost_cert_cache_total``.

        Args:
            cache: A :class:`jobhost.tls.sni.CertificateCache` (its counters and sizes
                are read at scrape time).
        """
        self.register_gauge_source(
            "jobhost_cert_cache_entries",
            "SNI certificate cache entries by tier (hostnames with material, built contexts, negative).",
            ("tier",),
            lambda: {("hostname",): cache.size, ("context",): cache.context_count,
                     ("negative",): cache.negative_count},
        )
        self.register_gauge_source(
            "jobhost_cert_cache_bytes",
            "Estimated memory held by the SNI certificate cache (PEM held plus measured per-item costs).",
            (),
            lambda: cache.bytes,
        )
        self.register_counter_source(
            "jobhost_cert_cache_evictions_total",
            "SNI certificate cache entries dropped to honour a size cap, by tier.",
            ("tier",),
            lambda: {("hostname",): cache.evictions, ("context",): cache.context_evictions,
                     ("negative",): cache.negative_evictions},
        )
        self.register_counter_source(
            "jobhost_cert_cache_context_builds_total",
            "SSL contexts built by the SNI certificate cache (after a store read, or again after being dropped).",
            (),
            lambda: cache.context_builds,
        )
        self.register_counter_source(
            "jobhost_cert_cache_broken_total",
            "Unusable stored certificates the SNI cache met and logged (once per change of each).",
            (),
            lambda: cache.broken_reports,
        )
        self.register_gauge_source(
            "jobhost_cert_cache_broken_hostnames",
            "Hostnames served the fallback because their stored certificate is unusable.",
            (),
            lambda: cache.broken_count,
        )

    # -- store-derived gauges --------------------------------------------------------------

    @inlineCallbacks
    def refresh_from_store(self, store, clock: IReactorTime) -> Deferred:
        """Recount domain records by state, certificates by expiry window, and unusable records.

        Args:
            store: The IStore to count.
            clock: Gives "now" for the expiry windows and :attr:`refreshed_at`.

        A store that counts through its indexes (``IStore.record_counts``: the SQL
        store) is asked for the counts, and reads no record; it does not count
        unusable records, so ``jobhost_store_broken_records`` then has no samples.
        Otherwise the store is read page by page.  The cached numbers change only
        when the whole count succeeded, so a scrape sees the old or the new
        numbers, never a half count.

        Returns:
            A Deferred firing with None, or failing with the store's error
            (the cached numbers are then left as they were).
        """
        counts = dict.fromkeys(DomainState.ALL, 0)
        counted = yield store.record_counts(clock_now(clock), EXPIRY_WINDOWS)
        if counted is not None:
            counts.update(counted.domains)
            self.domain_counts = counts
            self.expiring_counts = dict(counted.expiring)
            self.certificate_count = counted.certificates
            self.broken_counts = None if counted.broken is None else dict(counted.broken)
            self.refreshed_at = clock.seconds()
            return
        broken = dict.fromkeys(BROKEN_RECORD_KINDS, 0)
        failing = dict.fromkeys(FAILING_WINDOWS, 0)
        now = clock_now(clock)
        after = None
        while True:
            page = yield store.list_domains(after=after, limit=_PAGE, include_broken=True)
            for record in page:
                if isinstance(record, BrokenRecord):
                    broken["domain"] += 1
                    continue
                counts[record.state] = counts.get(record.state, 0) + 1
                since = failing_since(record)
                if since is not None:
                    for window, width in FAILING_WINDOWS.items():
                        if now - since > width:
                            failing[window] += 1
            if len(page) < _PAGE:
                break
            after = _listed_hostname(page[-1])
        expiring = dict.fromkeys(EXPIRY_WINDOWS, 0)
        certificates = 0
        earliest = None
        after = None
        while True:
            page = yield store.list_certificates(after=after, limit=_PAGE, include_broken=True)
            for record in page:
                if isinstance(record, BrokenRecord):
                    broken["certificate"] += 1
                    continue
                certificates += 1
                if earliest is None or record.not_after < earliest:
                    earliest = record.not_after
                for window, width in EXPIRY_WINDOWS.items():
                    if record.not_after <= now + width:
                        expiring[window] += 1
            if len(page) < _PAGE:
                break
            after = _listed_hostname(page[-1])
        self.domain_counts = counts
        self.expiring_counts = expiring
        self.certificate_count = certificates
        self.broken_counts = broken
        self.failing_counts = failing
        self.earliest_not_after = earliest.timestamp() if earliest is not None else None
        self.refreshed_at = clock.seconds()

    # -- exposition -----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (never touches the store)."""
        return generate_latest(self.registry)


def failing_since(record) -> datetime | None:
    """When a domain's current run of failed attempts began, or None when it is not failing.

    A record is failing when it has failed attempts since its last success and is not
    ``active`` or ``removed`` (a retry shows as ``issuing``/``renewing`` for a moment).  The
    run began at the oldest ``failing``/``paused`` history entry after the last ``active``
    one (a lower bound when the history was trimmed), else at ``last_error["at"]``.
    """
    if record.attempts <= 0 or record.state in (DomainState.ACTIVE, DomainState.REMOVED):
        return None
    since = None
    for change in reversed(record.history):
        if change.state in (DomainState.ACTIVE, DomainState.REMOVED):
            break
        if change.state in (DomainState.FAILING, DomainState.PAUSED):
            since = change.at
    if since is None and record.last_error and record.last_error.get("at"):
        since = from_iso(record.last_error["at"])
    return since


def _listed_hostname(item) -> str:
    """The hostname of an item of a store listing: a record, or a BrokenRecord in its place."""
    return item.key if isinstance(item, BrokenRecord) else item.hostname


@attrs.define(eq=False)
class StoreStatsService(Service):
    """Refreshes :class:`Metrics`' store-derived gauges every ``interval`` seconds.

    A failed refresh is logged and retried at the next tick; the service keeps running.
    """

    metrics: Metrics
    store: object
    clock: IReactorTime
    interval: float = 60.0
    _loop: LoopingCall | None = attrs.field(init=False, default=None)

    def startService(self) -> None:
        Service.startService(self)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> Deferred:
        d = self.metrics.refresh_from_store(self.store, self.clock)
        d.addErrback(lambda f: log.failure("Refreshing store metrics failed; retrying later", f))
        return d


__all__ = [
    "BROKEN_RECORD_KINDS",
    "CERT_CACHE_RESULTS",
    "CONTENT_TYPE_LATEST",
    "EXPIRY_WINDOWS",
    "FAILING_WINDOWS",
    "ISSUANCE_BUCKETS",
    "LAG_BUCKETS",
    "Metrics",
    "SourceValue",
    "StoreStatsService",
    "failing_since",
    "TLS_HANDSHAKE_OUTCOMES",
]
