"""Tests for jobhost.lag: the reactor lag monitor, on a Clock."""

import pytest
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from jobhost.lag import GcPauses, LagMonitor


class FakeThreadTime:
    """Stands in for time.thread_time: the reactor thread's CPU seconds, advanced by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


def _monitor(**kwargs):
    clock = Clock()
    observed = []
    kwargs.setdefault("cpu_clock", FakeThreadTime())
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
    assert "ran at most 0 ms" in lines[0], "the fake thread used no CPU"
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


def test_a_lag_equal_to_the_threshold_is_not_a_stall():
    """Only a tick later than the threshold is a stall."""
    monitor = LagMonitor(clock=Clock(), threshold=0.02)
    with capturedLogs() as events:
        monitor.record(0.02, now=1.0)
        assert events == [] and monitor.stalls == 0
        monitor.record(0.021, now=2.0)
    assert len(events) == 1 and monitor.stalls == 1


def test_the_next_report_comes_exactly_one_report_interval_later():
    """A stall report_interval seconds after the last line is logged; one a moment sooner is not."""
    monitor = LagMonitor(clock=Clock(), threshold=0.02, report_interval=60.0)
    with capturedLogs() as events:
        monitor.record(0.5, now=100.0)
        monitor.record(0.25, now=159.5)
        assert len(events) == 1
        monitor.record(0.03, now=160.0)
    assert len(events) == 2
    assert "stalled 2 time(s)" in formatEvent(events[1]) and "worst stall was 250 ms" in formatEvent(events[1])
    assert events[1]["lag"] == 0.25


def test_recent_worst_covers_the_whole_window_to_the_second():
    """A lag 9.5 s ago is inside a 10 s window; one 11 s ago is not."""
    clock = Clock()
    monitor = LagMonitor(clock=clock, recent_window=10.0)
    monitor.record(0.3, now=0.5)
    for second in range(1, 10):
        monitor.record(0.01, now=second + 0.5)  # one tick per second, as the timer gives
    clock.advance(10.0)
    assert monitor.recent_worst() == pytest.approx(0.3)
    monitor.record(0.01, now=10.5)
    clock.advance(1.5)
    assert monitor.recent_worst() == pytest.approx(0.01)


def test_a_slot_keeps_the_worst_of_its_second():
    """Several ticks within one second keep that second's worst lag, whatever their order."""
    clock = Clock()
    monitor = LagMonitor(clock=clock, recent_window=2.0)
    for lag in (0.01, 0.2, 0.05):
        monitor.record(lag, now=0.1 + lag)
    clock.advance(1.0)
    assert monitor.recent_worst() == pytest.approx(0.2)


def test_start_and_stop_track_running():
    """The service says whether it runs; stopping one that never started is harmless."""
    LagMonitor(clock=Clock()).stopService()
    clock, monitor, _ = _monitor()
    assert monitor.running
    monitor.stopService()
    assert not monitor.running


def test_busy_is_the_part_of_a_lag_the_reactor_thread_ran():
    """A 100 ms late tick after 30 ms of thread CPU was busy 30 ms; after 500 ms of CPU, busy all 100 ms."""
    cpu = FakeThreadTime()
    cpu.seconds = 7.0  # a thread that has run before: only the difference counts
    clock, monitor, observed = _monitor(interval=0.05, cpu_clock=cpu)
    cpu.seconds += 0.03
    clock.advance(0.05 + 0.1)
    assert monitor.worst_busy == pytest.approx(0.03) and monitor.worst == pytest.approx(0.1)
    cpu.seconds += 0.5
    clock.advance(0.05 + 0.1)
    assert monitor.worst_busy == pytest.approx(0.1)
    assert observed == [pytest.approx(0.1), pytest.approx(0.1)], "the histogram gets the whole lag"


def test_the_log_line_says_how_much_of_the_worst_stall_the_thread_ran():
    """The stall line carries the worst stall and its busy part, as text and as fields."""
    monitor = LagMonitor(clock=Clock(), threshold=0.02)
    with capturedLogs() as events:
        monitor.record(0.2, now=1.0, busy=0.15)
    assert "worst stall was 200 ms, of which the reactor thread ran at most 150 ms" in formatEvent(events[0])
    assert (events[0]["lag"], events[0]["busy"]) == (0.2, 0.15)


def test_defaults():
    """50 ms ticks, 20 ms stalls, a log line a minute at most, a one-minute recent window, real thread time."""
    import time

    monitor = LagMonitor(clock=Clock())
    assert (monitor.interval, monitor.threshold, monitor.report_interval, monitor.recent_window) == (
        0.05, 0.02, 60.0, 60.0)
    assert monitor.cpu_clock is time.thread_time
    assert monitor.recent_worst() == 0.0


def test_freeze_heap_freezes_once_at_start():
    """With freeze_heap the start-up heap is frozen when the service starts, once; without it, never."""
    frozen = []
    clock, monitor, _ = _monitor(freeze_heap=True, freeze=lambda: frozen.append(True))
    clock.advance(1.0)
    assert frozen == [True]
    _monitor(freeze=lambda: frozen.append(True))
    assert frozen == [True]


class FakePerfCounter:
    """Stands in for time.perf_counter."""

    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        return self.seconds


def test_gc_pauses_time_each_collection_by_generation():
    """A collection's pause is stop minus start; the worst and the count are kept per generation."""
    timer = FakePerfCounter()
    observed = []
    pauses = GcPauses(clock=timer, observe=lambda g, s: observed.append((g, s)))
    for generation, pause in ((0, 0.001), (2, 0.03), (2, 0.01), (1, 0.004)):
        pauses.callback("start", {"generation": generation})
        timer.seconds += pause
        pauses.callback("stop", {"generation": generation, "collected": 0})
    assert pauses.counts == [1, 1, 2]
    assert pauses.worst == [pytest.approx(0.001), pytest.approx(0.004), pytest.approx(0.03)]
    assert [g for g, _ in observed] == [0, 2, 2, 1]


def test_a_stop_without_a_start_is_ignored():
    """Installed in the middle of a collection, the first stop has no start to measure from."""
    pauses = GcPauses(clock=FakePerfCounter())
    pauses.callback("stop", {"generation": 2})
    assert pauses.counts == [0, 0, 0]


def test_gc_pauses_see_real_collections_while_the_monitor_runs():
    """The monitor installs the timer on start and removes it on stop; real collections are counted between."""
    import gc

    pauses = GcPauses()
    clock, monitor, _ = _monitor(gc_pauses=pauses)
    gc.collect()
    assert pauses.counts[2] >= 1 and pauses.worst[2] > 0
    monitor.stopService()
    assert pauses.callback not in gc.callbacks
    counted = list(pauses.counts)
    gc.collect()
    assert pauses.counts == counted
    pauses.install()
    pauses.install()
    assert gc.callbacks.count(pauses.callback) == 1, "installing twice registers once"
    pauses.uninstall()
