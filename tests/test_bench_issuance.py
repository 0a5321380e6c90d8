"""Tests for bench/issuance.py's reading of the reactor lag monitor (the arithmetic, not a run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import issuance  # noqa: E402

from jobhost.metrics import Metrics  # noqa: E402


class _Exposition:
    """Stands in for the Stack: serves a Metrics registry's /metrics text."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def api_raw(self, method, path):
        assert (method, path) == ("GET", "/metrics")
        return 200, self.metrics.exposition()


_LAG_STATE: dict[int, dict[str, float]] = {}


def _metrics(worst: float, busy: float) -> Metrics:
    """A registry with the lag monitor's gauges, as tap wires them; change them with :func:`_set_lag`."""
    metrics = Metrics()
    state = _LAG_STATE[id(metrics)] = {"worst": worst, "busy": busy}
    metrics.register_gauge_source("jobhost_reactor_lag_max_seconds", "worst", (), lambda: state["worst"])
    metrics.register_gauge_source("jobhost_reactor_lag_busy_max_seconds", "busy", (), lambda: state["busy"])
    return metrics


def _set_lag(metrics: Metrics, worst: float, busy: float) -> None:
    _LAG_STATE[id(metrics)].update(worst=worst, busy=busy)


def test_reading_the_real_exposition():
    """read_lag finds the histogram buckets, the worst lags and the ACME requests in /metrics."""
    metrics = _metrics(0.04, 0.03)
    for lag in (0.001, 0.012, 0.04):
        metrics.reactor_lag(lag)
    metrics.acme_request("newOrder", 201)
    metrics.acme_request("resource", 200)
    metrics.acme_request("resource", "error")
    reading = issuance.read_lag(_Exposition(metrics))
    assert (reading["max_s"], reading["busy_max_s"]) == (0.04, 0.03)
    assert reading["buckets"][0.001] == 1 and reading["buckets"][0.015] == 2 and reading["buckets"][0.05] == 3
    assert reading["acme_requests"] == {"newOrder": 1.0, "resource": 2.0}


def test_a_worst_that_grew_during_the_run_is_exact():
    """The worst since start grew between the readings: it happened during the run and is reported as is."""
    metrics = _metrics(0.01, 0.01)
    metrics.reactor_lag(0.01)
    before = issuance.read_lag(_Exposition(metrics))
    for lag in (0.005, 0.025, 0.002):
        metrics.reactor_lag(lag)
    _set_lag(metrics, 0.025, 0.02)
    after = issuance.read_lag(_Exposition(metrics))
    lag = issuance.reactor_lag(before, after)
    assert lag["worst_s"] == 0.025 and lag["worst_busy_s"] == 0.02
    assert lag["ticks"] == 3 and lag["ticks_over_threshold"] == 1
    assert lag["worst_at_most_s"] == 0.025


def test_a_worst_from_before_the_run_only_bounds_it():
    """An older, larger worst says nothing exact about the run: the histogram's difference bounds it."""
    metrics = _metrics(0.3, 0.3)
    metrics.reactor_lag(0.3)
    before = issuance.read_lag(_Exposition(metrics))
    for lag in (0.004, 0.012):
        metrics.reactor_lag(lag)
    lag = issuance.reactor_lag(before, issuance.read_lag(_Exposition(metrics)))
    assert lag["worst_s"] is None and lag["worst_busy_s"] is None
    assert lag["worst_at_most_s"] == 0.015, "both ticks of the run are in the 15 ms bucket"
    assert (lag["ticks"], lag["ticks_over_threshold"]) == (2, 0)


def test_an_error_from_metrics_is_raised():
    """A /metrics that does not answer 200 stops the benchmark instead of reporting nothing."""

    class Refusing:
        def api_raw(self, method, path):
            return 401, b"no"

    with pytest.raises(RuntimeError, match="401"):
        issuance.read_lag(Refusing())



def test_a_daemon_without_the_lag_monitor_reports_nothing_measured():
    """An older daemon's /metrics has no lag monitor: no stall figure is made up."""
    empty = {"max_s": float("nan"), "busy_max_s": float("nan"), "buckets": {}, "acme_requests": {}}
    lag = issuance.reactor_lag(empty, empty)
    assert lag["worst_s"] is None and lag["ticks"] == 0
    assert lag["worst_at_most_s"] != lag["worst_at_most_s"], "NaN: not measured"
