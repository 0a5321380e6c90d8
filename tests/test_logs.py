"""Tests for jobhost.logs: the quiet filter, the observer twistd gets, and how it reaches twistd."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
from twisted.application.service import Application
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogLevel, LogPublisher, eventAsJSON, globalLogPublisher
from twisted.python.usage import UsageError

from jobhost.logs import LEVELS, QuietFilter, own_namespace, quiet, twistd_observer
from jobhost.tap import JobhostService, Options, makeService
from jobhost.workers import WorkerSupervisor, _Worker


def event(namespace: str, level: LogLevel, text: str = "something happened") -> dict:
    return {"log_namespace": namespace, "log_level": level, "log_format": text, "log_time": 0.0,
            "hostname": "jobs.example.com"}


def shown(events, level: str = "info") -> list[str]:
    """The formats of ``events`` a quiet observer at ``level`` writes."""
    seen: list[dict] = []
    observer = quiet(seen.append, level)
    for e in events:
        observer(e)
    return [e["log_format"] for e in seen]


NOISE = [
    event("twisted.web.client._HTTP11ClientFactory", LogLevel.info, "Starting factory _HTTP11ClientFactory"),
    event("log_legacy", LogLevel.info, "_JobhostSite starting on 8080"),
    event("log_legacy", LogLevel.info, "(TCP Port 8080 Closed)"),
    event("log_legacy", LogLevel.info, "/etc/resolv.conf changed, reparsing"),
    event("twisted.names.client.Resolver", LogLevel.debug, "Query of unknown type 257"),
    event("twisted.scripts._twistd_unix.UnixAppLogger", LogLevel.info, "twistd starting up."),
    event("jobhost.acme.client.AcmeClient", LogLevel.debug, "Created order"),
]
MEANINGFUL = [
    event("jobhost.issuing", LogLevel.info, "Issued certificate for {hostname}"),
    event("jobhost.issuing", LogLevel.warn, "Certificate for {hostname} failed: timeout"),
    event("twisted.internet.defer", LogLevel.critical, "Unhandled error in Deferred:"),
    event("log_legacy", LogLevel.error, "Unhandled Error"),
    event("stdout", LogLevel.info, "printed by a library"),
]


def test_default_level_hides_library_chatter_and_debug():
    """At info, jobhost's info lines and anyone's warnings pass; Twisted's info and debug lines do not."""
    assert shown(NOISE + MEANINGFUL) == [e["log_format"] for e in MEANINGFUL]


def test_debug_level_shows_everything():
    """At debug every event is written, Twisted's included."""
    assert shown(NOISE + MEANINGFUL, "debug") == [e["log_format"] for e in NOISE + MEANINGFUL]


def test_warn_level_hides_jobhost_info():
    """At warn, jobhost's info lines are hidden too; warnings and worse pass."""
    assert shown(MEANINGFUL, "warn") == [
        "Certificate for {hostname} failed: timeout", "Unhandled error in Deferred:", "Unhandled Error",
    ]


@pytest.mark.parametrize("namespace, own", [
    ("worker-3/jobhost.tls.sni", "jobhost.tls.sni"),
    ("worker-0/log_legacy", "log_legacy"),
    ("jobhost.issuing", "jobhost.issuing"),
    ("jobhostile.module", "jobhostile.module"),
    ("other/jobhost.x", "other/jobhost.x"),
])
def test_own_namespace_strips_the_worker_prefix(namespace, own):
    """Only a ``worker-N/`` prefix is removed."""
    assert own_namespace(namespace) == own


def test_look_alike_namespace_is_not_jobhost():
    """A namespace that merely starts with the letters "jobhost" is another library's."""
    assert QuietFilter()(event("jobhostile.module", LogLevel.info)).name == "no"
    assert QuietFilter()(event("jobhost", LogLevel.info)).name == "maybe"


def test_worker_events_are_filtered_like_the_main_process():
    """Events a worker sends as JSON are re-emitted under worker-N/ and filtered by the same rule."""
    sup = WorkerSupervisor(reactor=Clock(), config_file="jobhost.toml", count=1, listeners=(),
                           drain_timeout=30.0)
    worker = _Worker(sup, 1)
    written: list[dict] = []
    observer = quiet(written.append, "info")
    globalLogPublisher.addObserver(observer)
    try:
        for e in NOISE + MEANINGFUL:
            worker.childDataReceived(1, b"\x1e" + eventAsJSON(e).encode() + b"\n")
    finally:
        globalLogPublisher.removeObserver(observer)
    relayed = [e for e in written if e.get("worker") == 1]
    assert [e["log_format"] for e in relayed] == [e["log_format"] for e in MEANINGFUL]
    assert relayed[0]["log_namespace"] == "worker-1/jobhost.issuing"


def test_log_file_is_created_0640_with_text_lines(tmp_path):
    """--logfile: the file is created 0640 (not per the umask) and gets only the meaningful lines."""
    import signal

    old_umask = os.umask(0o022)
    old_usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        path = tmp_path / "twistd.log"
        observer = twistd_observer({"logfile": str(path), "nodaemon": False})
        for e in NOISE + MEANINGFUL[:1]:
            observer(e)
        assert signal.getsignal(signal.SIGUSR1) not in (None, signal.SIG_DFL), "SIGUSR1 rotates the log"
    finally:
        os.umask(old_umask)
        signal.signal(signal.SIGUSR1, old_usr1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("[jobhost.issuing#info] Issued certificate for jobs.example.com"), lines


def test_existing_world_readable_log_file_is_tightened(tmp_path):
    """A log file left 0644 by an earlier twistd becomes 0640 when opened."""
    import signal

    path = tmp_path / "twistd.log"
    path.write_text("old line\n")
    path.chmod(0o644)
    old_usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        twistd_observer({"logfile": str(path)})
    finally:
        signal.signal(signal.SIGUSR1, old_usr1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text() == "old line\n"


def test_json_format_writes_one_object_a_line(monkeypatch):
    """[log] format = "json": each written event is one JSON object on its own line, no separator."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    observer = twistd_observer({"nodaemon": True, "logfile": "-"}, level="info", fmt="json")
    for e in NOISE + MEANINGFUL[:2]:
        observer(e)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert records[0]["hostname"] == "jobs.example.com"
    assert records[0]["log_namespace"] == "jobhost.issuing"
    assert records[1]["log_level"]["name"] == "warn"


def test_twistd_decides_alone_with_its_own_logger_or_a_daemon_on_stdout():
    """--logger wins over jobhost's observer; a daemon logging to stdout is left to twistd to refuse."""
    assert twistd_observer({"logger": lambda: None, "nodaemon": True}) is None
    assert twistd_observer({"logfile": "-", "nodaemon": False}) is None


def test_log_level_option_is_checked():
    """--log-level accepts Twisted's level names only, with a message naming the option."""
    with pytest.raises(UsageError, match="--log-level: expected one of debug, info, warn, error, critical"):
        Options().parseOptions(["--config", "etc/jobhost.toml", "--log-level", "loud"])


def _config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "jobhost.toml"
    path.write_text(
        '[listen]\nhttp = "tcp:0:interface=127.0.0.1"\nhttps = "tcp:0:interface=127.0.0.1"\n'
        'admin = "tcp:0:interface=127.0.0.1"\n[store]\nurl = "memory:"\n[preflight]\naddresses = ["127.0.0.1"]\n'
        f'[tls]\nfallback = "reject"\n[admin]\ntoken_file = "{tmp_path}/admin.token"\n{extra}'
    )
    return str(path)


@pytest.fixture
def global_reactor_timers():
    """makeService builds on the global reactor (the system resolver re-reads resolv.conf on a
    timer): cancel what it scheduled, so no later trial test finds the reactor dirty."""
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    yield
    for call in reactor.getDelayedCalls():
        if call not in before and call.active():
            call.cancel()


class _TwistdOptions(dict):
    """What twistd's ServerOptions looks like to a plugin's options (its ``parent``)."""


@pytest.mark.parametrize("extra, argv, level", [
    ("", [], LogLevel.info),
    ('[log]\nlevel = "warn"\n', [], LogLevel.warn),
    ('[log]\nlevel = "warn"\n', ["--log-level", "debug"], LogLevel.debug),
])
def test_make_service_hands_twistd_a_quiet_observer(tmp_path, monkeypatch, extra, argv, level, global_reactor_timers):
    """Run by twistd, the root carries the observer at [log] level, which --log-level overrides."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    options = Options()
    options.parent = _TwistdOptions(nodaemon=True, logfile=None)
    options.parseOptions(["--config", _config(tmp_path, extra)] + argv)
    root = makeService(options)
    observer = root.log_observer
    assert observer is not None
    for probe in LEVELS.values():
        observer(event("jobhost.issuing", probe, f"probe at {probe.name}"))
    written = [line.rsplit("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert written == [f"probe at {name}" for name, each in LEVELS.items() if QuietFilter(level)(
        event("jobhost.issuing", each)).name == "maybe"]
    assert written[0] == f"probe at {level.name}"
    application = Application("jobhost")
    root.setServiceParent(application)
    assert application.getComponent(ILogObserver) is observer, "twistd's AppLogger uses this component"


def test_an_application_observer_set_by_someone_else_is_kept():
    """A component already on the application (a .tac file's) is not replaced."""
    mine, theirs = LogPublisher(), LogPublisher()
    application = Application("jobhost")
    application.setComponent(ILogObserver, theirs)
    root = JobhostService()
    root.log_observer = mine
    root.setServiceParent(application)
    assert application.getComponent(ILogObserver) is theirs


def test_levels_are_twisted_levels():
    """The config's level names are Twisted's."""
    assert [LEVELS[name].name for name in LEVELS] == list(LEVELS)
