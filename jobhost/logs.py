"""
What the daemon's log shows: one line per meaningful event by default.

This module owns the log observer the ``jobhost`` twistd plugin hands to twistd
(:func:`twistd_observer`) and the rule that keeps it quiet (:class:`QuietFilter`):

- jobhost's own events (namespace ``jobhost...``) are written from ``[log] level`` up
  (``info`` by default: listening, issued, renewed, failing with the reason, removed,
  the CA or the store lost and back);
- every other library's events (Twisted's "Starting factory", "(TCP Port N Closed)",
  twisted.names's "Query of unknown type", legacy ``log.msg`` lines) are written from
  ``warn`` up, unless the level is ``debug``, which writes everything.

Worker processes (:mod:`jobhost.workers`) send every event to the main process, which
re-emits it under ``worker-N/<namespace>``; the filter strips that prefix, so a worker's
events follow the same rule as the main process's.

How it reaches twistd: twistd builds its log observer after ``makeService`` and uses an
``ILogObserver`` component of the application when there is one (the hook ``.tac`` files
use; an explicit ``twistd --logger`` still wins).  :class:`jobhost.tap.JobhostService`
sets that component when twistd attaches it to the application, with the observer built
here from twistd's own ``--logfile``/``--syslog``/``--nodaemon`` options, so those keep
working.  A log file jobhost opens is created 0640 (twistd's would follow the umask,
usually 0644), and SIGUSR1 rotates it, as with twistd's own.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import attrs
from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    PredicateResult,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

#: ``[log] level`` / ``--log-level`` names, least to most severe.
LEVELS: Mapping[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

_RANK = {level: rank for rank, level in enumerate(LEVELS.values())}

#: Mode of a log file jobhost creates: the service's group may read it, nobody else.
LOG_FILE_MODE = 0o640

#: Namespaces always shown from ``info``: another library's code writing to stdout (print).
_ALWAYS_INFO = ("stdout",)


def own_namespace(namespace: str) -> str:
    """A namespace without the ``worker-N/`` prefix the main process adds to a worker's events."""
    head, slash, rest = namespace.partition("/")
    if slash and head.startswith("worker-"):
        return rest
    return namespace


@implementer(ILogFilterPredicate)
@attrs.frozen
class QuietFilter:
    """Lets through jobhost's events from ``level`` up and other libraries' from ``warn`` up.

    With ``level`` debug everything passes.

    Attributes:
        level: The least severe jobhost event written.
    """

    level: LogLevel = LogLevel.info

    def __call__(self, event: Mapping[str, Any]) -> PredicateResult:
        level = event.get("log_level", LogLevel.info)
        namespace = own_namespace(event.get("log_namespace") or "")
        threshold = self.level
        if namespace != "jobhost" and not namespace.startswith("jobhost.") and namespace not in _ALWAYS_INFO:
            threshold = max(self.level, LogLevel.warn, key=_RANK.__getitem__)
        if self.level == LogLevel.debug or _RANK.get(level, 1) >= _RANK[threshold]:
            return PredicateResult.maybe
        return PredicateResult.no


def quiet(observer: ILogObserver, level: str = "info") -> ILogObserver:
    """``observer`` behind a :class:`QuietFilter` at ``level`` (a :data:`LEVELS` name)."""
    return FilteringLogObserver(observer, [QuietFilter(LEVELS[level])])


def formatted(out, fmt: str) -> ILogObserver:
    """An observer writing to the text file ``out``: twistd's text lines, or JSON lines (``json``)."""
    if fmt == "json":
        # No record separator: one JSON object a line, what log shippers read.
        return jsonFileLogObserver(out, recordSeparator="")
    return textFileLogObserver(out)


def open_log_file(path: str):
    """Open (creating 0640) a twistd log file that rotates on SIGUSR1, like twistd's own."""
    import signal

    from twisted.python.logfile import LogFile

    log_file = LogFile.fromFullPath(path, defaultMode=LOG_FILE_MODE)
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum, frame) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return log_file


def twistd_observer(twistd_options: Mapping[str, Any], level: str = "info", fmt: str = "text") -> ILogObserver | None:
    """The observer twistd would build from its options, made quiet and formatted per ``[log]``.

    Follows twistd's choice of destination (``twisted.scripts._twistd_unix.UnixAppLogger``):
    ``--syslog``; ``--logfile=-`` or ``--nodaemon`` without ``--logfile``: standard output;
    otherwise ``--logfile`` (``twistd.log`` by default), created 0640.

    Args:
        twistd_options: twistd's parsed ``ServerOptions``.
        level: ``[log] level`` or ``--log-level``.
        fmt: ``[log] format``: ``text`` or ``json`` (syslog always gets text).

    Returns:
        The observer, or None where twistd must decide alone (``--logger`` given, or a
        daemon asked to log to stdout, which twistd refuses with its own message).
    """
    if twistd_options.get("logger"):
        return None
    if twistd_options.get("syslog"):
        from twisted.python import syslog

        return quiet(LegacyLogObserverWrapper(syslog.SyslogObserver(twistd_options.get("prefix", "")).emit), level)
    logfile = twistd_options.get("logfile") or ""
    nodaemon = twistd_options.get("nodaemon", False)
    if logfile == "-" or (nodaemon and not logfile):
        if not nodaemon:
            return None
        return quiet(formatted(sys.stdout, fmt), level)
    return quiet(formatted(open_log_file(logfile or "twistd.log"), fmt), level)


__all__ = [
    "LEVELS",
    "LOG_FILE_MODE",
    "QuietFilter",
    "formatted",
    "open_log_file",
    "own_namespace",
    "quiet",
    "twistd_observer",
]
