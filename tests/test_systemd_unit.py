"""
``etc/jobhost.service``: systemd accepts it, it keeps its hardening, and it agrees with twistd
and with ``etc/jobhost.production.toml``.

``systemd-analyze verify`` wants ExecStart's program to exist, so it checks a copy of the unit
in which only the install path of twistd (``/opt/jobhost/venv/bin/twistd``) is replaced by the
twistd of the Python running the tests; every other line is the file as shipped.  It prints
problems on stderr and may still exit 0, so its output is read.  The tests that need it skip
when ``systemd-analyze`` is not installed; ``.ci/run`` installs it, so they never skip in CI.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "etc" / "jobhost.service"
PRODUCTION = REPO / "etc" / "jobhost.production.toml"
INSTALLED_TWISTD = "/opt/jobhost/venv/bin/twistd"
CONFIG_PATH = "/etc/jobhost/jobhost.toml"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed here (apt-get install systemd; .ci/run installs it)",
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}}, following systemd.syntax(7).

    Comments (``#``, ``;``) and blank lines are skipped, a trailing backslash continues a
    line, and an empty assignment (``Key=``) resets the key's list, as systemd does.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        key, value = key.strip(), value.strip()
        if value:
            current.setdefault(key, []).append(value)
        else:
            current[key] = []
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def the_twistd() -> str:
    """The twistd of the Python running the tests."""
    candidate = Path(sys.executable).with_name("twistd")
    found = str(candidate) if candidate.exists() else shutil.which("twistd")
    assert found, "no twistd next to the test's Python or on PATH"
    return found


def verifiable_copy(directory: Path, text: str | None = None) -> Path:
    """``directory/jobhost.service``: the unit with only twistd's install path made real."""
    text = UNIT.read_text() if text is None else text
    assert text.count(INSTALLED_TWISTD) == 1, f"{INSTALLED_TWISTD} should appear once, in ExecStart"
    path = directory / "jobhost.service"
    path.write_text(text.replace(INSTALLED_TWISTD, the_twistd()))
    return path


def verify_complaints(path: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about the unit at ``path`` (nothing: it is fine)."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    lines = (result.stdout + result.stderr).splitlines()
    about_unit = [line for line in lines if str(path) in line or "jobhost.service" in line]
    if result.returncode != 0:
        about_unit.append(f"exit status {result.returncode}: {result.stderr.strip()}")
    return about_unit


@needs_systemd_analyze
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path):
    """``systemd-analyze verify`` passes the unit without a single warning about it."""
    assert verify_complaints(verifiable_copy(tmp_path)) == []


@needs_systemd_analyze
@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("ProtectHome=yes", "ProtectHomes=yes", "Unknown key"),
        ("KillMode=mixed", "KillMode=softly", "kill mode"),
    ],
)
def test_verify_complaints_are_caught(tmp_path, old, new, expected):
    """A misspelt option or a bad value is a warning on stderr (exit status 0) that the check catches."""
    text = UNIT.read_text()
    assert old in text
    complaints = verify_complaints(verifiable_copy(tmp_path, text.replace(old, new)))
    assert any(expected in line for line in complaints), complaints


# Each line the unit must keep, as (section, key, value); removing one fails its case.
REQUIRED = [
    ("Unit", "After", "network-online.target"),
    ("Unit", "Wants", "network-online.target"),
    ("Service", "Type", "exec"),
    ("Service", "User", "jobhost"),
    ("Service", "Group", "jobhost"),
    ("Service", "WorkingDirectory", "/var/lib/jobhost"),
    ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service", "KillMode", "mixed"),
    ("Service", "KillSignal", "SIGTERM"),
    ("Service", "Restart", "on-failure"),
    ("Service", "AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
    ("Service", "CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
    ("Service", "NoNewPrivileges", "yes"),
    ("Service", "UMask", "0077"),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "StateDirectory", "jobhost"),
    ("Service", "StateDirectoryMode", "0700"),
    ("Service", "LogsDirectory", "jobhost"),
    ("Service", "ProtectHome", "yes"),
    ("Service", "PrivateTmp", "yes"),
    ("Service", "PrivateDevices", "yes"),
    ("Service", "PrivateMounts", "yes"),
    ("Service", "ProtectKernelTunables", "yes"),
    ("Service", "ProtectKernelModules", "yes"),
    ("Service", "ProtectKernelLogs", "yes"),
    ("Service", "ProtectControlGroups", "yes"),
    ("Service", "ProtectClock", "yes"),
    ("Service", "ProtectHostname", "yes"),
    ("Service", "ProtectProc", "invisible"),
    ("Service", "ProcSubset", "pid"),
    ("Service", "RemoveIPC", "yes"),
    ("Service", "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("Service", "RestrictNamespaces", "yes"),
    ("Service", "RestrictRealtime", "yes"),
    ("Service", "RestrictSUIDSGID", "yes"),
    ("Service", "LockPersonality", "yes"),
    ("Service", "SystemCallArchitectures", "native"),
    ("Service", "SystemCallFilter", "@system-service"),
    ("Service", "SystemCallFilter", "~@privileged @resources"),
    ("Service", "SystemCallErrorNumber", "EPERM"),
    ("Install", "WantedBy", "multi-user.target"),
]


@pytest.mark.parametrize("section, key, value", REQUIRED, ids=[f"{k}={v}" for _, k, v in REQUIRED])
def test_unit_keeps_its_settings(unit, section, key, value):
    """The unit sets each of its privilege, restart and hardening options."""
    assert value in unit.get(section, {}).get(key, []), f"[{section}] {key}={value} is missing"


def seconds(value: str) -> float:
    """A systemd time span in the forms the unit uses ("30s", "2min", "1min 30s", "45")."""
    units = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for part in value.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        total += float(number) * units.get(part[len(number):] or "s")
    return total


def test_stop_timeout_leaves_room_to_drain(unit):
    """TimeoutStopSec outlasts a whole request ([limits] request_timeout) with room to spare, and ends."""
    limits = tomllib.loads(PRODUCTION.read_text())["limits"]
    request_timeout = seconds(limits["request_timeout"])
    [stop] = unit["Service"]["TimeoutStopSec"]
    assert 2 * request_timeout <= seconds(stop) <= 120, (stop, request_timeout)


def test_fd_limit_is_raised(unit):
    """LimitNOFILE lifts the 1024 default: the daemon's connection cap is this limit minus a reserve."""
    [limit] = unit["Service"]["LimitNOFILE"]
    assert int(limit) >= 65536


def test_memory_deny_write_execute_stays_off(unit):
    """MemoryDenyWriteExecute is not set: pyOpenSSL's cffi callbacks need writable executable memory."""
    assert unit["Service"].get("MemoryDenyWriteExecute", []) in ([], ["no"])


def exec_start(unit) -> list[str]:
    [line] = unit["Service"]["ExecStart"]
    return shlex.split(line)


def test_exec_start_runs_twistd_in_the_foreground_logging_to_the_journal(unit):
    """ExecStart: the venv's twistd, foreground, no pidfile, log on stdout, the config in /etc/jobhost."""
    argv = exec_start(unit)
    assert argv[0] == INSTALLED_TWISTD
    assert "--nodaemon" in argv[1:argv.index("jobhost")]
    assert "--pidfile=" in argv and "--logfile=-" in argv
    assert argv[argv.index("jobhost"):] == ["jobhost", "--config", CONFIG_PATH]


def test_twistd_accepts_exec_start(unit):
    """twistd's own option parser reads ExecStart's arguments as intended (the config path swapped for a real one)."""
    from twisted.scripts.twistd import ServerOptions

    argv = exec_start(unit)[1:]
    argv[argv.index(CONFIG_PATH)] = str(REPO / "etc" / "jobhost.toml")
    options = ServerOptions()
    options.parseOptions(argv)
    assert options["nodaemon"]
    assert options["pidfile"] == ""
    assert options["logfile"] == "-"
    assert options.subCommand == "jobhost"
    assert options.subOptions.config.listen.https


def writable_dirs(unit) -> list[str]:
    """Where the service may write under ProtectSystem=strict (StateDirectory=, LogsDirectory=, ReadWritePaths=)."""
    service = unit["Service"]
    dirs = [f"/var/lib/{d}" for v in service.get("StateDirectory", []) for d in v.split()]
    dirs += [f"/var/log/{d}" for v in service.get("LogsDirectory", []) for d in v.split()]
    dirs += [d.lstrip("-") for v in service.get("ReadWritePaths", []) for d in v.split()]
    return dirs


def test_production_config_writes_only_where_the_unit_allows(unit):
    """Every file the production config makes the daemon write resolves (from WorkingDirectory) into a writable directory."""
    config = tomllib.loads(PRODUCTION.read_text())
    [workdir] = unit["Service"]["WorkingDirectory"]
    store_url = config["store"]["url"]
    scheme, _, store_path = store_url.partition(":")
    assert scheme in ("sqlite", "directory"), store_url
    written = [
        store_path,
        config["tls"]["fallback_cert"],
        config["admin"]["token_file"],
        config["events"]["webhook_secret_file"],
    ]
    allowed = writable_dirs(unit)
    assert workdir in allowed
    for path in written:
        resolved = str(Path(workdir, path))
        assert any(resolved.startswith(d + "/") for d in allowed), (path, resolved, allowed)


@needs_systemd_analyze
def test_security_exposure_stays_low(tmp_path):
    """``systemd-analyze security --offline`` rates the unit's exposure at most 2.0 of 10."""
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=20", str(verifiable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 252)")
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert result.returncode == 0 and overall, result.stdout[-2000:] + result.stderr
