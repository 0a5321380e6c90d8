"""
The reactor lag monitor: how late the reactor runs a timer, i.e. how long it stalled.

This module owns :class:`LagMonitor`, a service that sets a timer every
``interval`` seconds and, when it fires, measures how late it fired.  Nothing
else can run on the reactor thread while a callback runs, so a tick that fires
30 ms late means some piece of work held the reactor for about 30 ms: every
TLS handshake and HTTP request waiting meanwhile waited that long too.

Each tick's lag is

- passed to ``observe`` (the ``jobhost_reactor_lag_seconds`` histogram),
- kept as the worst since start (:attr:`LagMonitor.worst`) and as the worst of
  the last ``recent_window`` seconds (:meth:`LagMonitor.recent_worst`),
- split by what the reactor thread did meanwhile: ``busy`` is the part of the
  lag the thread can have spent running (at most the CPU time it used since the
  previous tick, ``time.thread_time``).  On a loaded machine a thread waiting
  for a CPU (or for the GIL) fires its timers late without any piece of jobhost
  running long; the busy part tells the two apart
  (:attr:`LagMonitor.worst_busy`),
- and, when it exceeds ``threshold``, counted as a stall and logged: the first
  stall at once, later ones at most one line per ``report_interval`` seconds
  (the line says how many stalls there were since the last line and the worst).

The one stall the monitor also prevents is the garbage collector's: a full
(generation 2) collection walks every tracked object, about 80,000 of them in a
running daemon (most made at import and start-up and alive for good), which
took 30 ms of CPU on the project's machine and 120 ms on it under load, in one
go on the reactor thread, while a burst of issuance allocates enough to trigger
one.  With ``freeze_heap`` the monitor calls ``gc.freeze()`` when it starts
(when the reactor runs the service tree): what exists then is moved out of the
collector's sight, and later full collections walk only what was made since
(a few thousand objects, about 5 ms under the same load).  Start-up objects
that become cyclic garbage later are then never freed; there are few of them.
:class:`GcPauses` measures every collection for ``/metrics``.

The timer is re-armed from each tick (``callLater(interval)``), not a
``LoopingCall``: a ``LoopingCall`` skips the intervals a stall swallowed and
reports the next tick relative to its own grid, which hides how late the tick
really fired.  The tick does a few arithmetic operations, 10-20 times a second.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Callable

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


@attrs.define(eq=False)
class LagMonitor(Service):
    """Measures how late a periodic timer fires (the reactor's stalls).

    Attributes:
        clock: The reactor (or a ``Clock`` in tests).
        interval: Seconds between ticks (0.05: fine enough to see a 20 ms stall
            as such, cheap enough to cost nothing measurable).
        threshold: A tick later than this many seconds is a stall and is logged.
        report_interval: Seconds between two log lines about stalls.
        recent_window: Seconds :meth:`recent_worst` looks back.
        observe: Called with every tick's lag in seconds (a histogram), or None.
        cpu_clock: The reactor thread's CPU time in seconds (``time.thread_time``).
        freeze_heap: Call ``freeze`` (``gc.freeze``) once when the service starts (see
            the module docstring); the daemon sets it, tests need not.
        freeze: What freezes the heap.
        gc_pauses: A :class:`GcPauses` installed while the service runs, or None.
        worst: The worst lag seen since start, in seconds.
        worst_busy: The worst busy part of a lag since start: ``min(lag, CPU time the
            reactor thread used since the previous tick)``.
        ticks: Ticks measured since start.
        stalls: Ticks later than ``threshold`` since start.
    """

    log = Logger()

    clock: IReactorTime
    interval: float = 0.05
    threshold: float = 0.02
    report_interval: float = 60.0
    recent_window: float = 60.0
    observe: Callable[[float], None] | None = None
    cpu_clock: Callable[[], float] = time.thread_time
    freeze_heap: bool = False
    freeze: Callable[[], None] = gc.freeze
    gc_pauses: GcPauses | None = None
    worst: float = attrs.field(default=0.0, init=False)
    worst_busy: float = attrs.field(default=0.0, init=False)
    ticks: int = attrs.field(default=0, init=False)
    stalls: int = attrs.field(default=0, init=False)
    _due: float = attrs.field(default=0.0, init=False, repr=False)
    _cpu_at: float = attrs.field(default=0.0, init=False, repr=False)
    _call: IDelayedCall | None = attrs.field(default=None, init=False, repr=False)
    # (second the slot starts, worst lag in it), oldest first: one slot per second that saw
    # a tick; ticks come every interval, so recent_window + 1 slots cover the window.
    _recent: deque = attrs.field(init=False, repr=False)
    _reported_at: float | None = attrs.field(default=None, init=False, repr=False)
    _unreported: int = attrs.field(default=0, init=False, repr=False)
    _unreported_worst: float = attrs.field(default=0.0, init=False, repr=False)
    _unreported_busy: float = attrs.field(default=0.0, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be positive, not {self.interval!r}")
        self._recent = deque(maxlen=int(self.recent_window) + 1)

    def startService(self) -> None:
        """Freeze the start-up heap (with ``freeze_heap``) and arm the first tick."""
        super().startService()
        if self.freeze_heap:
            self.freeze()
        if self.gc_pauses is not None:
            self.gc_pauses.install()
        self._arm()

    def stopService(self) -> None:
        """Cancel the pending tick; stop timing collections."""
        super().stopService()
        if self.gc_pauses is not None:
            self.gc_pauses.uninstall()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._cpu_at = self.cpu_clock()
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        lag = max(0.0, now - self._due)
        cpu = self.cpu_clock() - self._cpu_at
        self._arm()
        self.record(lag, now, busy=min(lag, max(0.0, cpu)))

    def record(self, lag: float, now: float, busy: float | None = None) -> None:
        """Account for one tick that fired ``lag`` seconds late at ``now``.

        Args:
            lag: Seconds the tick fired after it was due.
            now: When it fired (the clock's seconds).
            busy: The part of ``lag`` the reactor thread can have spent running;
                None for all of it.
        """
        self.ticks += 1
        busy = lag if busy is None else busy
        if busy > self.worst_busy:
            self.worst_busy = busy
        if lag > self.worst:
            self.worst = lag
        slot = float(int(now))
        if self._recent and self._recent[-1][0] == slot:
            if lag > self._recent[-1][1]:
                self._recent[-1] = (slot, lag)
        else:
            self._recent.append((slot, lag))
        if self.observe is not None:
            self.observe(lag)
        if lag > self.threshold:
            self._stalled(lag, busy, now)

    def recent_worst(self) -> float:
        """The worst lag of the last ``recent_window`` seconds (to the second), 0.0 if none."""
        horizon = self.clock.seconds() - self.recent_window
        return max((lag for slot, lag in self._recent if slot + 1.0 > horizon), default=0.0)

    def _stalled(self, lag: float, busy: float, now: float) -> None:
        self.stalls += 1
        self._unreported += 1
        if lag > self._unreported_worst:
            self._unreported_worst, self._unreported_busy = lag, busy
        if self._reported_at is not None and now - self._reported_at < self.report_interval:
            return
        count, worst, busy = self._unreported, self._unreported_worst, self._unreported_busy
        self._unreported, self._unreported_worst, self._unreported_busy = 0, 0.0, 0.0
        self._reported_at = now
        self.log.warn(
            "The reactor stalled {count} time(s) for more than {threshold_ms:.0f} ms since the last "
            "report; the worst stall was {lag_ms:.0f} ms, of which the reactor thread ran at most "
            "{busy_ms:.0f} ms (the rest it waited for a CPU)",
            count=count,
            threshold_ms=self.threshold * 1000,
            lag_ms=worst * 1000,
            busy_ms=busy * 1000,
            lag=worst,
            busy=busy,
        )


@attrs.define(eq=False)
class GcPauses:
    """Times every garbage collection (``gc.callbacks``): how long the collector held the thread.

    Attributes:
        clock: A high-resolution timer (``time.perf_counter``): collections are real work, not
            reactor time.
        observe: Called with ``(generation, seconds)`` after each collection, or None.
        worst: The longest pause per generation since :meth:`install`, in seconds.
        counts: Collections per generation since :meth:`install`.
    """

    clock: Callable[[], float] = time.perf_counter
    observe: Callable[[int, float], None] | None = None
    worst: list = attrs.field(factory=lambda: [0.0, 0.0, 0.0], init=False)
    counts: list = attrs.field(factory=lambda: [0, 0, 0], init=False)
    _started: float | None = attrs.field(default=None, init=False, repr=False)

    def install(self) -> None:
        """Start timing collections (every thread's: the collector runs in whichever allocates)."""
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)

    def uninstall(self) -> None:
        """Stop timing collections."""
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        """The ``gc.callbacks`` entry: ``phase`` is ``"start"`` or ``"stop"``."""
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:
            return  # installed during a collection
        pause = self.clock() - self._started
        self._started = None
        generation = info["generation"]
        self.counts[generation] += 1
        if pause > self.worst[generation]:
            self.worst[generation] = pause
        if self.observe is not None:
            self.observe(generation, pause)


__all__ = ["GcPauses", "LagMonitor"]
