"""Tests for jobhost.metrics and the admin API's /metrics route."""

from __future__ import annotations

import inspect
from datetime import timedelta

import attrs
import pytest
from admin_helpers import T0, ApiClient, RecordingStore, make_domain
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
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


def test_certificate_cache_size_bytes_and_evictions_are_exported():
    """watch_certificate_cache exports entries by tier, the estimated bytes, evictions by tier and context builds."""
    from jobhost.store.memory import MemoryStore
    from jobhost.tls.sni import CertificateCache

    ca = TestCA.create()
    store = MemoryStore()
    for name in ("a.example.com", "b.example.com"):
        store.put_certificate(certificate_record(name, *ca.issue(name)))
    cache = CertificateCache(store=store, clock=clock_at_t0(), max_entries=1, max_contexts=1, max_negative=1)
    metrics = Metrics()
    metrics.watch_certificate_cache(cache)
    for name in ("a.example.com", "b.example.com", "x.example.com", "y.example.com"):
        cache.load(name)
    got = samples(metrics.exposition().decode())
    assert [got[("jobhost_cert_cache_entries", (("tier", t),))] for t in ("hostname", "context", "negative")] == [1, 1, 1]
    assert [got[("jobhost_cert_cache_evictions_total", (("tier", t),))] for t in ("hostname", "context", "negative")] \
        == [1, 1, 1]
    assert got[("jobhost_cert_cache_context_builds_total", ())] == 2
    assert got[("jobhost_cert_cache_bytes", ())] == cache.bytes > 0


def test_a_store_that_counts_through_indexes_is_asked_and_not_walked():
    """When the store answers record_counts, the refresh takes its numbers and lists no record; broken is not exported."""
    from jobhost.store.records import RecordCounts

    class CountingStore(RecordingStore):
        def record_counts(self, now, windows):
            self.asked = (now, dict(windows))
            return succeed(RecordCounts(domains={"active": 7, "failing": 2}, certificates=8,
                                        expiring={"7d": 1, "14d": 3}))

        def list_domains(self, *args, **kwargs):
            raise AssertionError("walked the domain records")

        def list_certificates(self, *args, **kwargs):
            raise AssertionError("walked the certificate records")

    clock = clock_at_t0()
    store = CountingStore()
    metrics = Metrics()
    metrics.refresh_from_store(store, clock)
    assert store.asked == (T0, {"7d": timedelta(days=7), "14d": timedelta(days=14)})
    scraped = samples(metrics.exposition().decode())
    assert scraped[("jobhost_domains", (("state", "active"),))] == 7
    assert scraped[("jobhost_domains", (("state", "pending"),))] == 0
    assert scraped[("jobhost_certificates", ())] == 8
    assert scraped[("jobhost_certificates_expiring", (("window", "14d"),))] == 3
    assert scraped[("jobhost_store_stats_refreshed_timestamp_seconds", ())] == T0.timestamp()
    assert not [key for key in scraped if key[0] == "jobhost_store_broken_records"]


def test_expiry_windows_include_their_last_second_and_nothing_after():
    """A certificate expiring exactly 7 (14) days from now is inside the 7d (14d) window; one second later is not."""
    clock = clock_at_t0()
    ca = TestCA.create()
    store = RecordingStore()
    start = T0 - timedelta(days=1)
    for name, lifetime in [
        ("edge7.example.com", timedelta(days=8)),
        ("past7.example.com", timedelta(days=8, seconds=1)),
        ("edge14.example.com", timedelta(days=15)),
        ("past14.example.com", timedelta(days=15, seconds=1)),
    ]:
        store.certificates[name] = certificate_record(name, *ca.issue(name, not_before=start, lifetime=lifetime))
    metrics = Metrics()
    metrics.refresh_from_store(store, clock)
    scraped = samples(metrics.exposition().decode())
    assert scraped[("jobhost_certificates_expiring", (("window", "7d"),))] == 1
    assert scraped[("jobhost_certificates_expiring", (("window", "14d"),))] == 3
    assert scraped[("jobhost_certificates", ())] == 4


def test_issuance_duration_buckets_are_the_documented_ones():
    """jobhost_issuance_seconds has the buckets dashboards are built on: 1 s to 10 min, then +Inf."""
    metrics = Metrics()
    scraped = samples(metrics.exposition().decode())
    buckets = [dict(labels)["le"] for (name, labels) in scraped if name == "jobhost_issuance_seconds_bucket"]
    assert sorted(buckets, key=float) == [
        "1.0", "2.5", "5.0", "10.0", "20.0", "30.0", "60.0", "120.0", "300.0", "600.0", "+Inf",
    ]


def test_a_negative_duration_is_recorded_as_zero():
    """When the clock stepped back during an attempt, its duration counts as 0 s (not negative, not more)."""
    metrics = Metrics()
    metrics.issuance_succeeded("a.example.com", -3.0)
    metrics.issuance_succeeded("b.example.com", 0.25)
    scraped = samples(metrics.exposition().decode())
    assert scraped[("jobhost_issuance_seconds_sum", ())] == 0.25
    assert scraped[("jobhost_issuance_seconds_bucket", (("le", "1.0"),))] == 2


def test_an_empty_failure_reason_is_counted_as_unknown():
    """A failure without a reason code is still counted, under reason="unknown"."""
    metrics = Metrics()
    metrics.issuance_failed("a.example.com", "")
    assert samples(metrics.exposition().decode())[("jobhost_issuance_failures_total", (("reason", "unknown"),))] == 1


def test_store_gauges_are_zero_before_the_first_refresh():
    """Before any refresh every store-derived gauge is served as 0 (never missing, never a made-up number)."""
    scraped = samples(Metrics().exposition().decode())
    for state in DomainState.ALL:
        assert scraped[("jobhost_domains", (("state", state),))] == 0
    assert scraped[("jobhost_certificates_expiring", (("window", "7d"),))] == 0
    assert scraped[("jobhost_certificates_expiring", (("window", "14d"),))] == 0
    assert scraped[("jobhost_certificates", ())] == 0
    assert scraped[("jobhost_store_broken_records", (("record", "domain"),))] == 0
    assert scraped[("jobhost_store_broken_records", (("record", "certificate"),))] == 0
    assert scraped[("jobhost_store_stats_refreshed_timestamp_seconds", ())] == 0


def test_refresh_counts_certificates_past_one_page_and_reads_pages_of_500():
    """More certificates than one store page are all counted; the store is read 500 records per call."""
    clock = clock_at_t0()
    ca = TestCA.create()
    one = certificate_record("c.example.com", *ca.issue("c.example.com", not_before=T0 - timedelta(days=1)))
    store = RecordingStore()
    for i in range(1000):
        store.domains[f"h{i:04}.example.com"] = make_domain(f"h{i:04}.example.com")
    for i in range(1203):
        name = f"c{i:04}.example.com"
        store.certificates[name] = attrs.evolve(one, hostname=name)
    limits = []
    for name in ("list_domains", "list_certificates"):
        listing = getattr(store, name)

        def recording(*, after, limit, include_broken, listing=listing, name=name):
            limits.append((name, limit))
            return listing(after=after, limit=limit, include_broken=include_broken)

        setattr(store, name, recording)
    metrics = Metrics()
    metrics.refresh_from_store(store, clock)
    assert metrics.certificate_count == 1203
    assert metrics.domain_counts[DomainState.ACTIVE] == 1000
    assert limits == [("list_domains", 500)] * 3 + [("list_certificates", 500)] * 3


def test_a_domain_in_a_state_this_version_does_not_know_is_counted_once():
    """A record in an unknown state (e.g. written by a newer jobhost) does not break the refresh and counts once."""
    store = RecordingStore()
    store.domains["a.example.com"] = make_domain("a.example.com", state="hibernating")
    store.domains["b.example.com"] = make_domain("b.example.com")
    metrics = Metrics()
    failures = []
    metrics.refresh_from_store(store, clock_at_t0()).addErrback(failures.append)
    assert failures == []
    assert metrics.domain_counts["hibernating"] == 1
    assert metrics.domain_counts[DomainState.ACTIVE] == 1


def test_a_source_failing_or_mislabelled_does_not_hide_the_sources_after_it():
    """A source that raises, or returns a bare number for labelled metric, is skipped and logged by name; later sources are served."""
    metrics = Metrics()
    metrics.register_counter_source("jobhost_broken_total", "Broken.", (), lambda: 1 / 0)
    metrics.register_gauge_source("jobhost_mislabelled", "Labels but a bare number.", ("outcome",), lambda: 3)
    metrics.register_gauge_source("jobhost_fine", "Fine.", (), lambda: 5)
    with capturedLogs() as events:
        scraped = samples(metrics.exposition().decode())
    assert scraped[("jobhost_fine", ())] == 5
    assert not any(name in ("jobhost_broken_total", "jobhost_mislabelled") for name, _ in scraped)
    errors = [e for e in events if e.get("metric") == "jobhost_mislabelled"]
    assert errors and "bare number" in errors[0]["log_format"]
    assert any(e.get("metric") == "jobhost_broken" and e.get("log_failure") is not None for e in events)


class SlowStore(RecordingStore):
    """A store whose listings answer only when the test says so (a refresh slower than the interval)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred] = []

    def list_domains(self, after=None, limit=None, include_broken=False):
        self.calls.append("list_domains")
        d = Deferred()
        self.pending.append(d)
        return d


def test_store_stats_service_never_runs_two_refreshes_at_once():
    """A refresh still running when the interval comes round is not overlapped by another one."""
    clock = clock_at_t0()
    store = SlowStore()
    service = StoreStatsService(Metrics(), store, clock, interval=60)
    service.startService()
    clock.advance(60 * 5)
    assert store.calls == ["list_domains"]
    store.pending.pop().callback([])
    assert store.calls == ["list_domains", "list_certificates"]
    clock.advance(60)
    assert store.calls == ["list_domains", "list_certificates", "list_domains"]
    service.stopService()


def test_store_stats_service_defaults_to_once_a_minute_and_reports_running():
    """Without an interval the service recounts every 60 s; ``running`` follows start and stop; stopping an unstarted one is harmless."""
    clock = clock_at_t0()
    store = RecordingStore()
    idle = StoreStatsService(Metrics(), store, clock)
    idle.stopService()
    assert not idle.running
    service = StoreStatsService(Metrics(), store, clock)
    service.startService()
    assert service.running
    assert store.calls.count("list_domains") == 1
    clock.advance(59.9)
    assert store.calls.count("list_domains") == 1
    clock.advance(0.1)
    assert store.calls.count("list_domains") == 2
    service.stopService()
    assert not service.running


def test_metrics_and_service_compare_by_identity_and_take_only_their_public_arguments():
    """Metrics and StoreStatsService are hashable, equal only to themselves (as twisted's service
    collections expect), and are built from their documented arguments only."""
    metrics, store, clock = Metrics(), RecordingStore(), Clock()
    one, two = StoreStatsService(metrics, store, clock), StoreStatsService(metrics, store, clock)
    parent = MultiService()
    one.setServiceParent(parent)
    two.setServiceParent(parent)
    two.disownServiceParent()
    assert list(parent) == [one]
    assert len({one, two, metrics, Metrics()}) == 4
    assert list(inspect.signature(StoreStatsService).parameters) == ["metrics", "store", "clock", "interval"]
    assert list(inspect.signature(Metrics).parameters) == [
        "registry", "domain_counts", "expiring_counts", "certificate_count", "broken_counts", "refreshed_at",
        "earliest_not_after", "failing_counts",
    ]


def test_earliest_expiry_is_the_soonest_not_after():
    """jobhost_certificates_earliest_not_after_timestamp_seconds is the soonest not_after (0 with none)."""
    clock = clock_at_t0()
    metrics = Metrics()
    store = RecordingStore()
    metrics.refresh_from_store(store, clock)
    assert samples(metrics.exposition().decode())[
        ("jobhost_certificates_earliest_not_after_timestamp_seconds", ())] == 0
    ca = TestCA.create()
    records = {}
    for name, days in [("a.example.com", 30), ("b.example.com", 6), ("c.example.com", 90)]:
        records[name] = certificate_record(
            name, *ca.issue(name, not_before=T0 - timedelta(days=1), lifetime=timedelta(days=days)))
        store.certificates[name] = records[name]
    metrics.refresh_from_store(store, clock)
    scraped = samples(metrics.exposition().decode())
    assert scraped[("jobhost_certificates_earliest_not_after_timestamp_seconds", ())] == (
        records["b.example.com"].not_after.timestamp())


def test_domains_failing_over_counts_how_long_each_has_failed():
    """jobhost_domains_failing_over counts domains by how long their run of failures has lasted."""
    from jobhost.store.records import StateChange

    clock = clock_at_t0()
    store = RecordingStore()

    def failing(name, hours, state="failing", attempts=3, history=None):
        began = T0 - timedelta(hours=hours)
        store.domains[name] = attrs.evolve(make_domain(name, state=state), attempts=attempts,
            last_error={"code": "connection", "message": "x", "at": (T0 - timedelta(minutes=1)).isoformat()},
            history=history if history is not None else (
                StateChange(T0 - timedelta(days=30), "active"), StateChange(began, "failing"),
                StateChange(began + timedelta(minutes=1), "renewing"),
                StateChange(T0 - timedelta(minutes=1), "failing")),
        )

    failing("half-hour.example.com", 0.5)
    failing("two-hours.example.com", 2)
    failing("two-days.example.com", 48)
    failing("retrying-now.example.com", 30, state="renewing")  # a retry in flight is still failing
    failing("paused.example.com", 200, state="paused")
    failing("recovered.example.com", 48, state="active", attempts=0)
    # No failing entry in its (trimmed) history: the last error's time is the best bound.
    failing("no-history.example.com", 0, history=())
    metrics = Metrics()
    metrics.refresh_from_store(store, clock)
    scraped = samples(metrics.exposition().decode())
    assert {w: scraped[("jobhost_domains_failing_over", (("window", w),))] for w in ("1h", "1d", "7d")} == {
        "1h": 4, "1d": 3, "7d": 1}


def test_ca_reachable_gauge_follows_the_issuing_service(tmp_path):
    """jobhost_ca_reachable is 1 until an order finds the CA unreachable, then 0."""
    from twisted.internet.testing import MemoryReactorClock

    from jobhost.config import parse_config
    from jobhost.tap import build_parts

    config = parse_config({"preflight": {"addresses": ["127.0.0.1"]}, "store": {"url": "memory:"},
                           "tls": {"fallback": "reject"}}, tmp_path)
    parts = build_parts(MemoryReactorClock(), config)
    assert samples(parts.metrics.exposition().decode())[("jobhost_ca_reachable", ())] == 1
    parts.issuing.ca_reachable = False
    assert samples(parts.metrics.exposition().decode())[("jobhost_ca_reachable", ())] == 0
    parts.issuing.ca_reachable = True
    assert samples(parts.metrics.exposition().decode())[("jobhost_ca_reachable", ())] == 1
