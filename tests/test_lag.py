"""Tests for jobhost.lag: the reactor lag monitor, on a Clock."""

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from jobhost.lag import LagMonitor


def _monitor(**kwargs):
    clock = Clock()
    observed = []
    monitor = LagMonitor(clock=clock, observe=observed.append, **kwargs)
    monitor.startService()
    return clock, monitor, observed


def test_an_on_time_tick_has_no_lag():
    """A tick that fires exactly one interval after the previous one is 0 s late."""
    clock, monitor, observed = _monitor(interval=0.1)
    clock.advance(0.1)
    clock.advance(0.1)
    assert observed == [0.0, 0.0]
    assert monitor.ticks == 2 and monitor.worst == 0.0 and monitor.stalls == 0


def test_a_late_tick_measures_how_late_it_fired():
    """A tick the reactor reaches 30 ms after it was due reports 30 ms, and the next is timed from it."""
    clock, monitor, observed = _monitor(interval=0.1)
    clock.advance(0.13)  # due at 0.1, runs at 0.13
    assert observed == [pytest.approx(0.03)]
    clock.advance(0.1)  # re-armed at 0.13: due at 0.23, on time
    assert observed == [pytest.approx(0.03), 0.0]
    assert monitor.worst == pytest.approx(0.03)


def test_a_stall_longer_than_several_intervals_is_one_long_lag():
    """A 1 s stall with 50 ms ticks is one tick 0.95 s late, not many small ones."""
    clock, monitor, observed = _monitor(interval=0.05)
    clock.advance(1.0)
    assert observed == [pytest.approx(0.95)]
    assert monitor.worst == pytest.approx(0.95) and monitor.stalls == 1


def test_worst_keeps_the_maximum():
    """The worst lag since start is the largest one, not the latest."""
    clock, monitor, _ = _monitor(interval=0.1)
    for late in (0.01, 0.04, 0.02):
        clock.advance(0.1 + late)
    assert monitor.worst == pytest.approx(0.04)
    assert monitor.ticks == 3


def test_recent_worst_forgets_lags_older_than_its_window():
    """The recent worst is the worst of the last window; an older, worse lag ages out."""
    clock, monitor, _ = _monitor(interval=0.1, recent_window=10.0)
    clock.advance(0.1 + 0.5)  # a 0.5 s stall at t = 0.6
    for _ in range(30):
        clock.advance(0.1 + 0.01)  # ticks 10 ms late until t = 3.9
    assert monitor.recent_worst() == pytest.approx(0.5)
    for _ in range(100):
        clock.advance(0.1 + 0.02)  # ticks 20 ms late until t = 15.9
    assert monitor.recent_worst() == pytest.approx(0.02)
    assert monitor.worst == pytest.approx(0.5)


def test_stalls_are_logged_at_most_once_per_report_interval():
    """The first stall is logged at once; later ones are counted into the next line a report interval on."""
    clock, monitor, _ = _monitor(interval=0.05, threshold=0.02, report_interval=60.0)
    with capturedLogs() as events:
        clock.advance(0.05 + 0.1)  # a 100 ms stall: logged
        clock.advance(0.05 + 0.01)  # 10 ms: under the threshold
        for late in (0.03, 0.25, 0.04):
            clock.advance(0.05 + late)  # three stalls within the minute: not logged yet
        assert len(events) == 1
        clock.advance(60.0)  # one tick 59.95 s late: a stall, a minute after the first line
    assert monitor.stalls == 5
    lines = [formatEvent(e) for e in events]
    assert len(lines) == 2
    assert "stalled 1 time(s) for more than 20 ms" in lines[0] and "worst stall was 100 ms" in lines[0]
    assert "stalled 4 time(s)" in lines[1] and "worst stall was 59950 ms" in lines[1]
    assert events[0]["log_level"].name == "warn"


def test_lags_under_the_threshold_are_not_logged():
    """Ticks late by less than the threshold are measured but not logged."""
    clock, monitor, observed = _monitor(interval=0.05, threshold=0.02)
    with capturedLogs() as events:
        clock.advance(0.05 + 0.019)
    assert events == [] and monitor.stalls == 0 and observed == [pytest.approx(0.019)]


def test_stop_cancels_the_timer():
    """After stopService no timer is left on the clock."""
    clock, monitor, observed = _monitor(interval=0.05)
    clock.advance(0.05)
    monitor.stopService()
    assert clock.getDelayedCalls() == []
    clock.advance(1.0)
    assert len(observed) == 1


def test_interval_must_be_positive():
    """A zero interval (a busy loop) is refused with a clear error."""
    with pytest.raises(ValueError, match="interval must be positive"):
        LagMonitor(clock=Clock(), interval=0)
