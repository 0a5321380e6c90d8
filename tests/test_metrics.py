"""Tests for jobhost.metrics and the admin API's /metrics route."""

from __future__ import annotations

from datetime import timedelta

import pytest
from admin_helpers import T0, ApiClient, RecordingStore, make_domain
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from jobhost.metrics import Metrics, StoreStatsService
from jobhost.store.records import DomainState, certificate_record
from jobhost.testing import TestCA


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Parse exposition text into ``{(sample name, sorted labels): value}``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(api: ApiClient) -> dict[tuple[str, tuple], float]:
    """GET /metrics through the admin API and parse it."""
    answer = api.request("GET", "/metrics")
    assert answer.status == 200
    assert answer.header("content-type").startswith("text/plain")
    return samples(answer.body.decode("utf-8"))


def clock_at_t0() -> Clock:
    clock = Clock()
    clock.advance(T0.timestamp())
    return clock


def test_metrics_endpoint_parses_and_counters_move():
    """Issuance, ACME and rate-limit counters served at /metrics go up as the issuer reports."""
    api = ApiClient.create()
    before = scrape(api)
    assert before[("jobhost_issuance_attempts_total", ())] == 0
    m = api.metrics
    m.issuance_started("a.example.com")
    m.issuance_started("b.example.com")
    m.issuance_succeeded("a.example.com", 12.5)
    m.issuance_failed("b.example.com", "rateLimited")
    m.acme_request("newOrder", 201)
    m.acme_request("newOrder", 201)
    m.acme_request("finalize", "error")
    m.rate_limited()
    after = scrape(api)
    assert after[("jobhost_issuance_attempts_total", ())] == 2
    assert after[("jobhost_issuance_success_total", ())] == 1
    assert after[("jobhost_issuance_failures_total", (("reason", "rateLimited"),))] == 1
    assert after[("jobhost_issuance_seconds_count", ())] == 1
    assert after[("jobhost_issuance_seconds_sum", ())] == 12.5
    assert after[("jobhost_issuance_seconds_bucket", (("le", "20.0"),))] == 1
    assert after[("jobhost_issuance_seconds_bucket", (("le", "10.0"),))] == 0
    assert after[("jobhost_acme_requests_total", (("endpoint", "newOrder"), ("status", "201")))] == 2
    assert after[("jobhost_acme_requests_total", (("endpoint", "finalize"), ("status", "error")))] == 1
    assert after[("jobhost_rate_limited_total", ())] == 1


def test_each_metrics_has_its_own_registry():
    """Two Metrics objects do not collide and nothing lands in the global registry."""
    one, two = Metrics(), Metrics()
    one.rate_limited()
    assert samples(two.exposition().decode())[("jobhost_rate_limited_total", ())] == 0
    assert REGISTRY.get_sample_value("jobhost_rate_limited_total") is None


def test_domain_and_expiry_gauges_come_from_the_last_refresh():
    """jobhost_domains and jobhost_certificates_expiring show the numbers the last refresh counted."""
    clock = clock_at_t0()
    metrics = Metrics()
    store = RecordingStore()
    for i, state in enumerate(["active", "active", "failing", "pending", "removed"]):
        store.domains[f"h{i}.example.com"] = make_domain(f"h{i}.example.com", state=state)
    ca = TestCA.create()
    for name, days in [("h0.example.com", 5), ("h1.example.com", 10), ("h2.example.com", 60)]:
        start = T0 - timedelta(days=1)
        key_pem, chain_pem = ca.issue(name, not_before=start, lifetime=timedelta(days=days + 1))
        store.certificates[name] = certificate_record(name, key_pem, chain_pem)
    before = samples(metrics.exposition().decode())
    assert before[("jobhost_domains", (("state", "active"),))] == 0
    assert before[("jobhost_store_stats_refreshed_timestamp_seconds", ())] == 0
    metrics.refresh_from_store(store, clock)
    clock.advance(30)
    after = samples(metrics.exposition().decode())
    assert {s: after[("jobhost_domains", (("state", s),))] for s in DomainState.ALL} == {
        "pending": 1, "issuing": 0, "active": 2, "renewing": 0, "failing": 1, "paused": 0, "removed": 1,
    }
    assert after[("jobhost_certificates_expiring", (("window", "7d"),))] == 1
    assert after[("jobhost_certificates_expiring", (("window", "14d"),))] == 2
    assert after[("jobhost_certificates", ())] == 3
    assert after[("jobhost_store_stats_refreshed_timestamp_seconds", ())] == T0.timestamp()


def test_scrape_never_reads_the_store():
    """Serving /metrics reads cached numbers only: the store sees no call."""
    api = ApiClient.create()
    api.store.domains["a.example.com"] = make_domain("a.example.com")
    scrape(api)
    assert api.store.calls == []


def test_refresh_counts_past_one_page():
    """More records than one store page are all counted."""
    metrics, clock = Metrics(), clock_at_t0()
    store = RecordingStore()
    for i in range(1203):
        store.domains[f"h{i:04}.example.com"] = make_domain(f"h{i:04}.example.com")
    metrics.refresh_from_store(store, clock)
    assert metrics.domain_counts[DomainState.ACTIVE] == 1203


def test_failed_refresh_keeps_the_old_numbers():
    """A refresh that fails leaves the cached counts as they were and fails its Deferred."""
    metrics, clock = Metrics(), clock_at_t0()
    store = RecordingStore()
    store.domains["a.example.com"] = make_domain("a.example.com")
    metrics.refresh_from_store(store, clock)
    store.domains["b.example.com"] = make_domain("b.example.com")
    store.broken = True
    failures = []
    metrics.refresh_from_store(store, clock).addErrback(failures.append)
    assert failures
    assert metrics.domain_counts[DomainState.ACTIVE] == 1


def test_store_stats_service_refreshes_on_start_and_every_interval_and_survives_failure():
    """The service counts at start, again each interval, logs a failed refresh and keeps going."""
    clock = clock_at_t0()
    metrics = Metrics()
    store = RecordingStore()
    service = StoreStatsService(metrics, store, clock, interval=60)
    service.startService()
    assert metrics.domain_counts[DomainState.ACTIVE] == 0
    store.domains["a.example.com"] = make_domain("a.example.com")
    store.broken = True
    with capturedLogs() as events:
        clock.advance(60)
    assert any(e.get("log_failure") is not None for e in events)
    assert metrics.domain_counts[DomainState.ACTIVE] == 0
    store.broken = False
    clock.advance(60)
    assert metrics.domain_counts[DomainState.ACTIVE] == 1
    service.stopService()
    store.domains["b.example.com"] = make_domain("b.example.com")
    clock.advance(600)
    assert metrics.domain_counts[DomainState.ACTIVE] == 1


def test_counter_sources_are_read_at_scrape_time():
    """A registered source's current numbers appear at each scrape, as a counter with its labels."""
    api = ApiClient.create()
    counts = {"served": 3, "fallback": 1}
    api.metrics.register_counter_source(
        "jobhost_tls_handshakes_total",
        "TLS connections by outcome.",
        ("outcome",),
        lambda: {(k,): v for k, v in counts.items()},
    )
    api.metrics.register_counter_source("jobhost_things_total", "Things.", (), lambda: 7)
    first = scrape(api)
    assert first[("jobhost_tls_handshakes_total", (("outcome", "served"),))] == 3
    assert first[("jobhost_things_total", ())] == 7
    counts["served"] = 10
    assert scrape(api)[("jobhost_tls_handshakes_total", (("outcome", "served"),))] == 10
    families = {f.name: f.type for f in text_string_to_metric_families(api.request("GET", "/metrics").body.decode())}
    assert families["jobhost_tls_handshakes"] == "counter"


def test_gauge_source_and_duplicate_names():
    """Gauge sources export gauges; registering a name twice is refused."""
    metrics = Metrics()
    metrics.register_gauge_source("jobhost_cert_cache_entries", "Entries.", (), lambda: 42)
    assert samples(metrics.exposition().decode())[("jobhost_cert_cache_entries", ())] == 42
    with pytest.raises(ValueError):
        metrics.register_gauge_source("jobhost_cert_cache_entries", "Again.", (), lambda: 1)
    metrics.register_counter_source("jobhost_cert_cache_total", "Lookups.", ("result",), lambda: {})
    with pytest.raises(ValueError):
        metrics.register_counter_source("jobhost_cert_cache", "Same family.", ("result",), lambda: {})


def test_a_broken_source_is_logged_and_skipped():
    """A source that raises is left out of the scrape (and logged); everything else is still served."""
    metrics = Metrics()
    metrics.register_counter_source("jobhost_broken_total", "Broken.", (), lambda: 1 / 0)
    with capturedLogs() as events:
        text = metrics.exposition().decode()
    parsed = samples(text)
    assert ("jobhost_broken_total", ()) not in parsed
    assert ("jobhost_rate_limited_total", ()) in parsed
    assert any(e.get("log_failure") is not None for e in events)


def test_broken_records_in_the_store_are_counted(tmp_path):
    """jobhost_store_broken_records counts, by kind, stored records that do not parse or verify; the rest count as usual."""
    import json

    from twisted.internet.defer import maybeDeferred

    from jobhost.store.directory import DirectoryStore

    ca = TestCA.create()
    store = DirectoryStore(str(tmp_path / "store"), lambda f, *args: maybeDeferred(f, *args))
    for hostname in ("a.example.com", "b.example.com"):
        store.put_domain(make_domain(hostname))
        store.put_certificate(certificate_record(hostname, *ca.issue(hostname, not_before=T0 - timedelta(days=1))))
    (tmp_path / "store" / "domains" / "b.example.com.json").write_text("{not json")
    certificate_file = tmp_path / "store" / "certificates" / "a.example.com.json"
    doc = json.loads(certificate_file.read_text())
    certificate_file.write_text(json.dumps(dict(doc, chain_pem="-----BEGIN CERTIFICATE-----\ngarbage\n")))
    metrics = Metrics()
    with capturedLogs() as events:
        metrics.refresh_from_store(store, clock_at_t0())
    assert events == [], "the count reports them; the refresh does not log them every interval"
    scraped = samples(metrics.exposition().decode())
    assert scraped[("jobhost_store_broken_records", (("record", "domain"),))] == 1
    assert scraped[("jobhost_store_broken_records", (("record", "certificate"),))] == 1
    assert scraped[("jobhost_domains", (("state", DomainState.ACTIVE),))] == 1
    assert scraped[("jobhost_certificates", ())] == 1


def test_certificate_cache_broken_counts_are_exported():
    """watch_certificate_cache exports the SNI cache's broken reports (counter) and broken hostnames (gauge)."""
    import attrs

    from jobhost.store.memory import MemoryStore
    from jobhost.tls.sni import CertificateCache

    ca = TestCA.create()
    good = certificate_record("a.example.com", *ca.issue("a.example.com"))
    other = certificate_record("b.example.com", *ca.issue("b.example.com"))
    store = MemoryStore()
    store.put_certificate(attrs.evolve(good, key_pem=other.key_pem))
    cache = CertificateCache(store=store, clock=clock_at_t0())
    metrics = Metrics()
    metrics.watch_certificate_cache(cache)
    before = samples(metrics.exposition().decode())
    assert before[("jobhost_cert_cache_broken_total", ())] == 0
    with capturedLogs():
        cache.load("a.example.com")
    after = samples(metrics.exposition().decode())
    assert after[("jobhost_cert_cache_broken_total", ())] == 1
    assert after[("jobhost_cert_cache_broken_hostnames", ())] == 1
