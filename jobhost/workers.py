"""
Worker processes: every core accepts connections, one process runs everything else.

With ``[server] workers`` above 1, the process twistd starts (the *main* process)
binds the HTTP and HTTPS listening sockets but never accepts on them.  It starts
that many workers (``python -m jobhost.workers``, with the two sockets as
inherited file descriptors); each adopts both sockets, so the kernel hands every
new connection to one of them, and serves it from its own certificate and page
caches over the shared store.  The main process runs issuing, renewal, the admin
API and this supervisor.  Because the main process keeps the sockets open, a
worker that stops or dies never makes a connection be refused: the kernel queues
it (up to ``[limits] backlog``) for the other workers or the replacement.

Main to worker, JSON lines on the worker's stdin: ``{"invalidate": hostname,
"kinds": [...] or null}`` and ``{"invalidate_all": true}`` (the main process's
cache fan-out: a certificate issued by the main process is served by every
worker at once, without waiting for the store's change feed, which the workers
also poll as the safety net).  End of file (the main process is gone): the
worker stops.

Worker to main, JSON lines on its fd 3: ``{"ready": true}`` once it accepts, and
``{"metrics": {...}}`` every second (its counters and gauges, which the main
process's ``/metrics`` adds to its own).  Its log events go to its stdout as
Twisted JSON log records, which the main process re-emits through its own log
(same levels, ``worker`` field); anything on its stderr (a crash) is logged as
an error.

Signals, to the main process: SIGTERM stops every worker (each stops accepting,
closes its idle keep-alive connections, finishes the responses it is sending,
waits at most ``[server] drain_timeout`` for the rest) and then the main
process; SIGHUP replaces the workers one at a time (a new one is ready before
the old one drains), which also re-reads the config file's serving settings.
A worker that exits on its own is restarted (after 0.5 s, doubling up to 60 s
while it keeps exiting within 10 s of its start).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.protocols.basic import LineOnlyReceiver

log = Logger(namespace="jobhost.workers")

#: The fd a worker writes its control messages to (0-2 are stdio, 4.. the sockets).
CONTROL_FD = 3
#: Restart delays for a worker that keeps exiting soon after its start.
RESTART_FIRST, RESTART_MAX, STABLE_AFTER = 0.5, 60.0, 10.0
#: How long a new worker may take to say it is ready before a roll gives up on it.
READY_TIMEOUT = 60.0


# -- client-address affinity: one listening socket per worker, the kernel picks by source address --

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
_SKF_NET_OFF = -0x100000  # classic BPF: offsets from the network (IP) header


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def address_affinity_program(count: int) -> bytes:
    """A classic BPF program for ``SO_ATTACH_REUSEPORT_CBPF``: socket = source address mod ``count``.

    IPv4: the whole source address; IPv6: its last 32 bits (IPv4 clients of a dual-stack
    socket arrive as IPv4 packets, so the version nibble is checked first).
    """
    ld_b, ld_w, alu_rsh, alu_mod, jeq, ja, ret_a = 0x30, 0x20, 0x74, 0x94, 0x15, 0x05, 0x16
    return b"".join([
        _insn(ld_b, 0, 0, _SKF_NET_OFF + 0),  # A = first byte of the IP header
        _insn(alu_rsh, 0, 0, 4),  # A = IP version
        _insn(jeq, 0, 2, 6),  # IPv6? go on : skip two
        _insn(ld_w, 0, 0, _SKF_NET_OFF + 20),  # IPv6: last 32 bits of the source address
        _insn(ja, 0, 0, 1),
        _insn(ld_w, 0, 0, _SKF_NET_OFF + 12),  # IPv4: the source address
        _insn(alu_mod, 0, 0, count),
        _insn(ret_a, 0, 0, 0),  # the index of the socket in the group
    ])


def attach_affinity(sock: socket.socket, count: int) -> None:
    """Attach :func:`address_affinity_program` to ``sock``'s SO_REUSEPORT group."""
    import ctypes

    program = address_affinity_program(count)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


class ReusePortListenerService(Service):
    """A public listener as ``count`` listening sockets on one address, one per worker (affinity).

    The main process binds them (SO_REUSEPORT, in this order, so socket *i* is index *i* of
    the kernel's group) and attaches :func:`address_affinity_program`; it never accepts.
    Worker *i* accepts on socket *i*, so a client address always reaches the same worker.
    While a worker is replaced, its socket stays open here and the kernel queues its
    connections (up to ``backlog``) for the replacement: nothing is refused.

    Attributes:
        endpoint: The ``TCP4ServerEndpoint`` / ``TCP6ServerEndpoint`` the config names
            (its port, interface and backlog are used).
        count: Sockets to bind (the number of workers).
        sockets: The bound sockets while running.
    """

    def __init__(self, name: str, endpoint, count: int) -> None:
        self.setName(name)
        self.endpoint = endpoint
        self.count = count
        self.sockets: list[socket.socket] = []
        self.family = socket.AF_INET6 if type(endpoint).__name__ == "TCP6ServerEndpoint" else socket.AF_INET

    @property
    def listening(self) -> bool:
        return self.running and bool(self.sockets)

    def fd_for(self, slot: int) -> int:
        return self.sockets[slot].fileno()

    def privilegedStartService(self) -> None:
        from twisted.internet.error import CannotListenError

        Service.privilegedStartService(self)
        # The endpoint's own settings (Twisted keeps them private; TCP4/TCP6ServerEndpoint).
        port, interface, backlog = self.endpoint._port, self.endpoint._interface, self.endpoint._backlog
        host = interface or ("::" if self.family == socket.AF_INET6 else "0.0.0.0")
        try:
            if port:
                # SO_REUSEPORT would let these sockets join another process's listening
                # sockets on the port (a second daemon started by mistake): it must be free.
                with socket.socket(self.family, socket.SOCK_STREAM) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((host, port))
            for _ in range(self.count):
                sock = socket.socket(self.family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind((host, port))
                port = sock.getsockname()[1]  # port 0: the rest join the port the first got
                sock.listen(backlog)
                sock.setblocking(False)  # as Twisted's own ports: the workers' accept loops must not block
                self.sockets.append(sock)
            attach_affinity(self.sockets[0], self.count)
        except OSError as e:
            from jobhost.errors import ConfigError
            from jobhost.tap import cannot_listen_reason

            self._close()
            # As ListenerService: one line naming the [listen] key, not a traceback.
            raise ConfigError(cannot_listen_reason(CannotListenError(interface, port, e)),
                              ("listen", self.name)) from None

    def startService(self) -> None:
        Service.startService(self)
        if not self.sockets:
            self.privilegedStartService()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self._close()
        return succeed(None)

    def _close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


class _Worker(ProcessProtocol):
    """One worker process as the main process sees it."""

    def __init__(self, supervisor: WorkerSupervisor, slot: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.started_at = supervisor.reactor.seconds()
        self.ready: Deferred = Deferred()
        self.exited: Deferred = Deferred()
        self.alive = True
        self.metrics: dict[str, Any] = {}
        #: Deferreds of :meth:`WorkerSupervisor.refresh`, fired by the next metrics message.
        self.waiting: list[Deferred] = []
        self._buffers: dict[int, bytes] = {}

    pid: int | None = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def send(self, message: dict) -> None:
        if self.alive and self.transport is not None:
            self.transport.writeToChild(0, json.dumps(message).encode() + b"\n")

    def signal(self, name: str) -> None:
        if self.alive and self.transport is not None and self.transport.pid is not None:
            try:
                self.transport.signalProcess(name)
            except Exception:  # it exited meanwhile
                pass

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buffered = self._buffers.get(fd, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > 1_000_000:  # a runaway line: log what there is
            lines.append(rest)
            rest = b""
        self._buffers[fd] = rest
        for line in lines:
            if line.strip():
                self._line(fd, line)

    def _line(self, fd: int, line: bytes) -> None:
        if fd == CONTROL_FD:
            try:
                message = json.loads(line)
            except ValueError:
                log.error("Worker {worker} sent a control line that is not JSON: {line!r}", worker=self.slot,
                          line=line[:200])
                return
            if message.get("ready") and not self.ready.called:
                self.ready.callback(self)
            if isinstance(message.get("metrics"), dict):
                self.metrics = message["metrics"]
                waiting, self.waiting = self.waiting, []
                for d in waiting:
                    d.callback(None)
            return
        if fd == 1:
            try:
                event = eventFromJSON(line.lstrip(b"\x1e").decode("utf-8", "replace"))
            except ValueError:
                event = None
            if isinstance(event, dict):
                event["worker"] = self.slot
                event["log_namespace"] = f"worker-{self.slot}/{event.get('log_namespace', '?')}"
                globalLogPublisher(event)
                return
        log.error("worker-{worker}: {line}", worker=self.slot, line=line.decode("utf-8", "replace"))

    def processEnded(self, reason) -> None:
        self.alive = False
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)
        if not self.ready.called:
            self.ready.errback(reason)
            self.ready.addErrback(lambda _: None)
        self.supervisor._ended(self, reason)
        self.exited.callback(reason.value)


class WorkerSupervisor(Service):
    """Starts, restarts, rolls and stops the worker processes (module docstring).

    It is a cache in the main process's fan-out (:meth:`invalidate`, :meth:`invalidate_all`).

    Attributes:
        reactor: Spawns the processes and schedules restarts.
        config_file: The config file the workers read.
        count: How many workers.
        listeners: The main process's http and https :class:`~jobhost.tap.ListenerService`
            (bound, not accepting), whose sockets the workers inherit.
        drain_timeout: Seconds a worker may take to drain (the stop waits that and 10 s more,
            then kills it).
        metrics: The main process's :class:`~jobhost.metrics.Metrics`: the workers' counters
            and gauges are added to its sources.
        workers: The current worker of each slot.
        restarts: Workers restarted after exiting on their own.
    """

    def __init__(self, *, reactor, config_file: str, count: int, listeners: Sequence[Any],
                 drain_timeout: float, metrics=None, executable: str | None = None) -> None:
        self.reactor = reactor
        self.config_file = os.path.abspath(config_file)
        self.count = count
        self.listeners = tuple(listeners)
        self.drain_timeout = drain_timeout
        self.metrics = metrics
        self.executable = executable or sys.executable
        self.workers: list[_Worker | None] = [None] * count
        self.restarts = 0
        self._retired: dict[str, dict[str, float]] = {}
        self._delays: list[float] = [RESTART_FIRST] * count
        self._stopping = False
        self._rolling: Deferred | None = None
        self._roll_again = False
        self._old_hup = None
        if metrics is not None:
            metrics.add_remote_source(self.remote_metrics, self.refresh)

    # -- the service ------------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        for slot in range(self.count):
            self._spawn(slot)
        self._old_hup = signal.signal(signal.SIGHUP, self._hangup)
        log.debug("Started {count} worker processes (pids {pids})", count=self.count,
                 pids=", ".join(str(w.pid) for w in self.workers if w is not None))

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self._stopping = True
        if self._old_hup is not None:
            signal.signal(signal.SIGHUP, self._old_hup)
            self._old_hup = None
        live = [w for w in self.workers if w is not None and w.alive]
        return self._stop_workers(live)

    def _stop_workers(self, workers: Sequence[_Worker]) -> Deferred:
        if not workers:
            return succeed(None)
        for worker in workers:
            worker.signal("TERM")
        kill = self.reactor.callLater(self.drain_timeout + 10.0, self._kill, workers)

        def done(result):
            if kill.active():
                kill.cancel()
            return None

        return DeferredList([w.exited for w in workers], consumeErrors=True).addCallback(done)

    def _kill(self, workers: Sequence[_Worker]) -> None:
        for worker in workers:
            if worker.alive:
                log.warn("Worker {worker} (pid {pid}) did not stop in time: killing it", worker=worker.slot,
                         pid=worker.pid)
                worker.signal("KILL")

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        worker = _Worker(self, slot)
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", CONTROL_FD: "r"}
        argv = [self.executable, "-m", "jobhost.workers", "--config", self.config_file, "--slot", str(slot)]
        for offset, listener in enumerate(self.listeners):
            child_fd = CONTROL_FD + 1 + offset
            if isinstance(listener, ReusePortListenerService):
                child_fds[child_fd], family = listener.fd_for(slot), listener.family
            else:  # one socket all workers share
                child_fds[child_fd], family = listener.port.fileno(), listener.port.socket.family
            argv += ["--socket", f"{listener.name}={child_fd}:{int(family)}"]
        self.reactor.spawnProcess(worker, self.executable, argv, env=dict(os.environ), path=os.getcwd(),
                                  childFDs=child_fds)
        self.workers[slot] = worker
        return worker

    def _ended(self, worker: _Worker, reason) -> None:
        self._retire(worker)
        if self.workers[worker.slot] is not worker:
            return  # replaced by a roll
        if self._stopping or not self.running:
            return
        lived = self.reactor.seconds() - worker.started_at
        delay = self._delays[worker.slot] if lived < STABLE_AFTER else RESTART_FIRST
        self._delays[worker.slot] = min(delay * 2, RESTART_MAX)
        log.error("Worker {worker} (pid {pid}) exited ({reason}); restarting it in {delay:.1f} s",
                  worker=worker.slot, pid=worker.pid, reason=reason.getErrorMessage(), delay=delay)
        self.workers[worker.slot] = None
        self.reactor.callLater(delay, self._restart, worker.slot)

    def _restart(self, slot: int) -> None:
        if self._stopping or not self.running or self.workers[slot] is not None:
            return
        self.restarts += 1
        self._spawn(slot)

    # -- SIGHUP: a rolling restart --------------------------------------------------------------

    def _hangup(self, signum, frame) -> None:
        self.reactor.callFromThread(self.roll)

    def roll(self) -> Deferred:
        """Replace every worker, one at a time; fires when done (a roll asked for meanwhile follows)."""
        if self._rolling is not None:
            self._roll_again = True
            return self._rolling
        self._rolling = Deferred.fromCoroutine(self._roll())

        def finished(result):
            self._rolling = None
            if self._roll_again and self.running:
                self._roll_again = False
                return self.roll()
            return result

        return self._rolling.addBoth(finished)

    async def _roll(self) -> None:
        log.info("Rolling the {count} worker processes one at a time (SIGHUP)", count=self.count)
        for slot in range(self.count):
            if self._stopping or not self.running:
                return
            old = self.workers[slot]
            new = self._spawn(slot)  # now the slot's worker: if the old one exits, nothing restarts it
            timeout = self.reactor.callLater(READY_TIMEOUT, lambda: new.ready.called or new.signal("KILL"))
            try:
                await new.ready
            except Exception:
                log.error("Worker {worker}'s replacement did not start; the roll stops here "
                          "(fix the config and send SIGHUP again)", worker=slot)
                self.workers[slot] = old
                if old is None or not old.alive:
                    self.workers[slot] = None
                    self.reactor.callLater(RESTART_FIRST, self._restart, slot)
                return
            finally:
                if timeout.active():
                    timeout.cancel()
            if old is not None and old.alive:
                await self._stop_workers([old])
        log.info("Rolled the worker processes: pids {pids}",
                 pids=", ".join(str(w.pid) for w in self.workers if w is not None))

    # -- the main process's cache fan-out -----------------------------------------------------

    def invalidate(self, hostname: str, kinds: frozenset[str] | None = None) -> None:
        message = {"invalidate": hostname, "kinds": sorted(kinds) if kinds is not None else None}
        for worker in self.workers:
            if worker is not None:
                worker.send(message)

    def invalidate_all(self) -> None:
        for worker in self.workers:
            if worker is not None:
                worker.send({"invalidate_all": True})

    # -- metrics ------------------------------------------------------------------------------

    def _retire(self, worker: _Worker) -> None:
        """Keep an exited worker's counters (not its gauges), so totals never go down."""
        for name, family in worker.metrics.items():
            if family.get("kind") != "counter":
                continue
            kept = self._retired.setdefault(name, {})
            for labels, value in family.get("values", {}).items():
                kept[labels] = kept.get(labels, 0.0) + float(value)
        worker.metrics = {}

    def refresh(self, timeout: float = 0.5) -> Deferred:
        """Ask every serving worker for its metrics now; fires when all answered or after ``timeout``."""
        asked = []
        for worker in self.workers:
            if worker is not None and worker.alive and worker.ready.called:
                d: Deferred = Deferred()
                worker.waiting.append(d)
                worker.send({"report": True})
                asked.append(d)
        if not asked:
            return succeed(None)
        done = DeferredList(asked, consumeErrors=True)
        timer = self.reactor.callLater(timeout, lambda: [d.callback(None) for d in asked if not d.called])
        return done.addBoth(lambda _: timer.cancel() if timer.active() else None)

    def remote_metrics(self) -> dict[str, dict[tuple[str, ...], float]]:
        """The workers' counters and gauges, summed: ``{name: {label values: number}}``."""
        total: dict[str, dict[tuple[str, ...], float]] = {}
        for name, values in self._retired.items():
            into = total.setdefault(name, {})
            for labels, value in values.items():
                key = tuple(json.loads(labels))
                into[key] = into.get(key, 0.0) + value
        for worker in self.workers:
            if worker is None:
                continue
            for name, family in worker.metrics.items():
                into = total.setdefault(name, {})
                for labels, value in family.get("values", {}).items():
                    key = tuple(json.loads(labels))
                    into[key] = into.get(key, 0.0) + float(value)
        return total

    def status(self) -> dict:
        """``/healthz``: how many workers are serving."""
        serving = sum(1 for w in self.workers if w is not None and w.alive and w.ready.called)
        return {
            "ok": serving > 0,
            "message": f"{serving} of {self.count} worker processes serving"
            + (f"; {self.restarts} restarted since start" if self.restarts else ""),
            "critical": serving == 0,
        }


class DrainService(Service):
    """In a worker: when stopping, close idle keep-alive connections and wait for the rest.

    Stopped after the listeners stopped accepting (it is started before them).

    Attributes:
        clock: Schedules the checks.
        budget: The public listeners' :class:`~jobhost.web.limits.ConnectionBudget` (``open``
            counts every connection still open).
        sites: The HTTP and HTTPS sites (their ``channel_class``).
        timeout: Seconds to wait before closing what is still open.
    """

    def __init__(self, *, clock, budget, sites, timeout: float) -> None:
        self.clock = clock
        self.budget = budget
        self.sites = tuple(sites)
        self.timeout = timeout

    def stopService(self) -> Deferred:
        from jobhost.web.limits import drain

        Service.stopService(self)
        closed = sum(drain(site.channel_class) for site in self.sites)
        if self.budget is None or self.budget.open == 0:
            return succeed(None)
        log.info("Draining: {open} connections open ({closed} idle ones closed); waiting up to {timeout:.0f} s",
                 open=self.budget.open, closed=closed, timeout=self.timeout)
        done: Deferred = Deferred()
        deadline = self.clock.seconds() + self.timeout

        def check() -> None:
            if self.budget.open == 0 or self.clock.seconds() >= deadline:
                loop.stop()
                if self.budget.open:
                    log.warn("Drain timeout: closing {open} connections still open", open=self.budget.open)
                done.callback(None)

        loop = LoopingCall(check)
        loop.clock = self.clock
        loop.start(0.05, now=False)
        return done


# -- the worker process ---------------------------------------------------------------------------


class _Control(LineOnlyReceiver):
    """A worker's end of the control channel: invalidations in (stdin), messages out (fd 3).

    Connected by ``StandardIO(control, stdin=0, stdout=CONTROL_FD)``: writes are Twisted's,
    buffered and non-blocking, so a main process slow to read never stalls the worker.
    End of file on stdin (the main process is gone) stops the worker.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, reactor, caches, metrics) -> None:
        self.reactor = reactor
        self.caches = caches
        self.metrics = metrics

    def send(self, message: dict) -> None:
        self.transport.write(json.dumps(message).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.error("Bad control line from the main process: {line!r}", line=line[:200])
            return
        if "invalidate" in message:
            kinds = message.get("kinds")
            self.caches.invalidate(message["invalidate"], frozenset(kinds) if kinds is not None else None)
        elif message.get("invalidate_all"):
            self.caches.invalidate_all()
        elif message.get("report"):
            self.report()

    def report(self) -> None:
        self.send({"metrics": self.metrics.snapshot()})

    def connectionLost(self, reason) -> None:
        if self.reactor.running:
            log.info("The main process is gone: stopping")
            self.reactor.stop()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m jobhost.workers --config FILE --slot N --socket name=fd:family ...``"""
    import argparse

    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    from jobhost.config import load_config
    from jobhost.errors import ConfigError
    from jobhost.tap import build_worker_parts

    parser = argparse.ArgumentParser(prog="python -m jobhost.workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--socket", action="append", default=[])
    args = parser.parse_args(argv)
    sockets = {}
    for spec in args.socket:
        name, _, rest = spec.partition("=")
        fd, _, family = rest.partition(":")
        sockets[name] = (int(fd), int(family))

    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the main process rolls workers; a terminal hangup is not ours
    try:
        config = load_config(args.config)
        parts = build_worker_parts(reactor, config, sockets)
    except ConfigError as e:
        sys.stderr.write(f"jobhost worker: config error: {e}\n")
        return 1
    control = _Control(reactor, parts.caches.fanout, parts.metrics)
    StandardIO(control, stdin=0, stdout=CONTROL_FD, reactor=reactor)
    reporter = LoopingCall(control.report)
    reporter.clock = reactor

    def started() -> None:
        import gc

        parts.root.startService()
        # As the main process's lag monitor does: the start-up heap (modules, config, TLS
        # contexts) is never garbage, so full collections need not walk it again and again.
        gc.freeze()
        control.send({"ready": True, "pid": os.getpid()})
        reporter.start(1.0, now=True)

    def stopping() -> Deferred:
        if reporter.running:
            reporter.stop()
        return parts.root.stopService()

    def stop_once(signum, frame) -> None:
        # systemd signals every process of the unit, the main process signals its workers:
        # the first SIGTERM starts the drain, the others change nothing.
        signal.signal(signum, signal.SIG_IGN)
        log.debug("Received {signal}: draining and stopping", signal=signal.Signals(signum).name)
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop_once)
    signal.signal(signal.SIGINT, stop_once)
    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
