"""
The daemon serves under ``etc/jobhost.service``'s restrictions, reproduced without systemd.

There is no systemd (PID 1) on test machines, so this runs ExecStart's command line (twistd's
install path swapped for the test Python's) the way the unit would, with the same kernel
mechanisms systemd uses: a mount namespace in which ``/`` is read-only except the state
directory (``ProtectSystem=strict`` + ``StateDirectory=``); only ``CAP_NET_BIND_SERVICE`` in
every capability set and no-new-privileges (``AmbientCapabilities=``,
``CapabilityBoundingSet=``, ``NoNewPrivileges=``); a seccomp filter built from the unit's own
``SystemCallFilter=`` lines (the groups expanded by ``systemd-analyze syscall-filter``) and
``RestrictAddressFamilies=``, denied calls failing with EPERM (``SystemCallErrorNumber=``); and
``UMask=``.  Listeners are on privileged ports of 127.0.0.1.  Not reproduced: the ``jobhost``
user (the test Python lives where only root may read), ``PrivateDevices``/``PrivateTmp`` and the
``/proc`` options.

It needs root (for the mount namespace), ``unshare``, ``setpriv``, libseccomp and
``systemd-analyze``, and skips naming what is missing.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from daemon import REPO, Daemon, free_port, https_request, status_of, twistd_command
from test_systemd_unit import INSTALLED_TWISTD, parse_unit

UNIT = REPO / "etc" / "jobhost.service"

MISSING = [
    what
    for what, present in [
        ("root (for a mount namespace)", os.geteuid() == 0),
        ("unshare", shutil.which("unshare")),
        ("a mount namespace", shutil.which("unshare") and subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True, timeout=30).returncode == 0),
        ("setpriv", shutil.which("setpriv")),
        ("libseccomp", ctypes.util.find_library("seccomp")),
        ("systemd-analyze", shutil.which("systemd-analyze")),
    ]
    if not present
]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")

# Loads a seccomp filter (argv[1]: JSON {"allow": [...], "families": [...], "mdwe": bool},
# "errno") and execs argv[2:], as systemd does between fork and exec.
SECCOMP_EXEC = r"""
import ctypes, ctypes.util, json, os, sys
spec = json.loads(sys.argv[1])
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
lib.seccomp_init.restype = ctypes.c_void_p
class Arg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
ALLOW, EQ, MASKED_EQ = 0x7FFF0000, 4, 7
deny = 0x00050000 | spec["errno"]
ctx = ctypes.c_void_p(lib.seccomp_init(deny))
def rule(action, name, *args):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return
    array = (Arg * len(args))(*[Arg(*a) for a in args]) if args else None
    assert lib.seccomp_rule_add_array(ctx, action, nr, len(args), array) == 0, name
# MemoryDenyWriteExecute: mmap never writable and executable at once, mprotect never
# adding PROT_EXEC, shmat never SHM_EXEC (the other cases are allowed, the rest denied)
mdwe = {"mmap": (6, [0, 2, 4]), "mprotect": (4, [0]), "pkey_mprotect": (4, [0]), "shmat": (0o100000, [0])}
for name in spec["allow"]:
    if spec["mdwe"] and name in mdwe:
        mask, values = mdwe[name]
        for value in values:
            rule(ALLOW, name, (2, MASKED_EQ, mask, value))
    elif name != "socket":
        rule(ALLOW, name)
for family in spec["families"]:
    rule(ALLOW, "socket", (0, EQ, family, 0))
os.umask(spec["umask"])
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[2], sys.argv[2:])
"""

FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


def syscall_groups() -> dict[str, list[str]]:
    """``systemd-analyze syscall-filter``: each @group and its members (calls and @groups)."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        entry = line.strip()
        if line.startswith("@"):
            current = groups.setdefault(entry, [])
        elif entry and not entry.startswith("#") and current is not None:
            current.append(entry)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    for name in names:
        result |= expand(groups[name], groups) if name.startswith("@") else {name}
    return result


def seccomp_spec(service: dict[str, list[str]], mdwe: bool = False) -> dict:
    """The unit's SystemCallFilter=, RestrictAddressFamilies=, SystemCallErrorNumber= and UMask=."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for line in service["SystemCallFilter"]:
        if line.startswith("~"):
            allowed -= expand(line[1:].split(), groups)
        else:
            allowed |= expand(line.split(), groups)
    assert {"epoll_wait", "accept4", "sendmsg"} <= allowed and "setuid" not in allowed
    [families] = service["RestrictAddressFamilies"]
    [errno_name] = service["SystemCallErrorNumber"]
    [umask] = service["UMask"]
    import errno

    return {
        "allow": sorted(allowed),
        "families": [FAMILIES[f] for f in families.split()],
        "errno": getattr(errno, errno_name),
        "umask": int(umask, 8),
        "mdwe": mdwe,
    }


def privileged_port() -> int:
    """A port below 1024 that nothing listens on at 127.0.0.1 (the test runs as root)."""
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024 on 127.0.0.1")


class SandboxedDaemon(Daemon):
    """The unit's ExecStart, run in ``workdir`` under the unit's restrictions (see the module docstring)."""

    def __init__(self, workdir: Path, config_text: str, mdwe: bool = False) -> None:
        super().__init__(workdir, config_text, env={"PYTHONPATH": str(REPO)})
        service = parse_unit(UNIT.read_text())["Service"]
        [exec_start] = service["ExecStart"]
        argv = exec_start.split()
        assert argv[0] == INSTALLED_TWISTD
        argv[argv.index("/etc/jobhost/jobhost.toml")] = str(self.config_path)
        twistd = twistd_command()
        assert len(twistd) == 1, "needs a twistd script next to the test's Python"
        [bound] = service["CapabilityBoundingSet"]
        [ambient] = service["AmbientCapabilities"]
        assert bound == ambient == "CAP_NET_BIND_SERVICE"
        cap = "+" + bound.lower().removeprefix("cap_")
        privileges = ["setpriv", f"--inh-caps=-all,{cap}", f"--ambient-caps=-all,{cap}", f"--bounding-set=-all,{cap}"]
        if service["NoNewPrivileges"] == ["yes"]:
            privileges.append("--no-new-privs")
        workdir_q = str(self.workdir)
        protect = f"mount --bind {workdir_q} {workdir_q} && mount -o remount,bind,ro / && exec \"$@\""
        self.command = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", protect, "sh",
            *privileges,
            sys.executable, "-c", SECCOMP_EXEC, json.dumps(seccomp_spec(service, mdwe)),
            twistd[0], *argv[1:],
        ]

    def start(self) -> SandboxedDaemon:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
        )
        log.close()
        return self


def config(http: int, https: int, admin: int) -> str:
    return (
        f'[listen]\nhttp = "tcp:{http}:interface=127.0.0.1"\nhttps = "tcp:{https}:interface=127.0.0.1"\n'
        f'admin = "tcp:{admin}:interface=127.0.0.1"\n'
        '[store]\nurl = "sqlite:jobhost.db"\n[preflight]\nenabled = false\n'
        '[acme]\ndirectory = "https://127.0.0.1:1/dir"\n'
        '[tls]\nfallback_cert = "fallback.pem"\n[admin]\ntoken_file = "admin.token"\n'
    )


@pytest.fixture
def ports():
    http = privileged_port()
    with socket.socket() as held:  # keep http's port from being picked again for https
        held.bind(("127.0.0.1", http))
        https = privileged_port()
    return http, https, free_port()


def test_daemon_serves_under_the_units_restrictions(tmp_path, ports):
    """Under the unit's sandbox the daemon binds ports below 1024, serves HTTPS by SNI with h2, and writes only 0600 files."""
    http, https, admin = ports
    daemon = SandboxedDaemon(tmp_path / "state", config(http, https, admin)).start()
    try:
        daemon.wait_listening(http, https, admin, timeout=30)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", https), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="jobs.example.test") as tls:
                assert tls.selected_alpn_protocol() == "h2"
        context.set_alpn_protocols(["http/1.1"])
        head, _ = https_request(https, "jobs.example.test", "/", context)
        assert status_of(head) == 404, head
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as response:
            assert json.load(response)["status"] == "ok"
        # unshare, sh, setpriv and the seccomp loader each exec the next: the pid is twistd's
        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
        assert "CapEff:\t0000000000000400" in status and "NoNewPrivs:\t1" in status, status
        assert "Seccomp:\t2" in status, status
        for name in ("jobhost.db", "fallback.pem", "admin.token"):
            assert (daemon.workdir / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        code = daemon.stop()
    # twistd ends by the signal it got; systemd counts death by SIGTERM as a clean stop
    assert code in (0, -signal.SIGTERM), daemon.log()
    log = daemon.log()
    assert "Traceback" not in log and "Operation not permitted" not in log, log


def test_memory_deny_write_execute_would_stop_https(tmp_path, ports):
    """With MemoryDenyWriteExecute added the daemon cannot set pyOpenSSL's callbacks: why the unit leaves it off."""
    http, https, admin = ports
    daemon = SandboxedDaemon(tmp_path / "state", config(http, https, admin), mdwe=True).start()
    try:
        daemon.process.wait(timeout=60)
    finally:
        daemon.kill()
    assert daemon.process.returncode != 0
    assert "write+execute memory for ffi.callback" in daemon.log(), daemon.log()
