"""
Server CPU per HTTPS connection: jobhost's listener vs nginx, measured in the same run.

Each connection is a full TLS handshake (TLS 1.3, X25519, ECDSA P-256
certificate, SNI = the benchmark hostname, chain verified by the client, no
session resumption) followed by one ``GET /`` with ``Connection: close`` and
reading the whole response.  With ``--mode handshake`` the client closes right
after the handshake instead (no request), which splits the cost into TLS and
HTTP.

The servers, both started by this script on 127.0.0.1 high ports:

- jobhost: the real daemon (``twistd -n jobhost``, via
  ``tests/integration/daemon.py``) on a directory store into which
  ``jobhost-store put-certificate`` put a certificate for the hostname
  (issued by :class:`jobhost.testing.TestCA`) and ``jobhost-store add-domain``
  put its careers page (``etc/example-page.json``).  So every measured
  connection takes the real path: ClientHello held and parsed, certificate
  cache hit, servername callback switching context, careers page rendered from
  the domain record read from the store.  The ACME directory is a closed
  loopback port and preflight is off: nothing is ever issued.
- nginx (Debian's package): its own minimal config in a temp dir
  (``daemon off``, ``worker_processes 1``, never the system's config), the
  same certificate chain and key, TLS 1.2-1.3, no session tickets or cache
  (jobhost has neither), an access log like jobhost's, and a static
  ``index.html`` holding the exact bytes jobhost rendered for ``GET /``,
  served with the same security headers.

The load generator is a separate process (this script with ``--client``):
``--concurrency`` threads, each doing sequential connections with one
``ssl.SSLContext`` and never passing a session, so every handshake is full
(the client counts ``session_reused`` to prove it).  Server CPU is
user + system time from ``/proc/<pid>/stat`` (all threads; nginx: master +
worker) read right before and right after each round, divided by the
connections completed in the round.  Rounds alternate jobhost, nginx,
jobhost, nginx, ... so that a noisy neighbour on this shared machine hits
both alike; the figure is the total over all rounds.  Idle CPU of each server
is measured for a few seconds first and reported (not subtracted).

Usage (from the repository root; nginx from ``apt-get install -y nginx``)::

    python bench/handshake.py --connections 2000 --concurrency 2 --rounds 4
    python bench/handshake.py --mode handshake --json

Exits 0 when every connection of every round succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, children, cpu_times, exit_on_sigterm, free_port, machine, wait_for_port  # noqa: E402

HOSTNAME = "jobs.bench.test"
PAGE = REPO / "etc" / "example-page.json"
#: The security headers jobhost sends on every HTTPS response (jobhost/web/site.py).
JOBHOST_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Strict-Transport-Security": "max-age=300",
}


# -- load generator (runs in its own process) ---------------------------------------------------


def client_main(args: argparse.Namespace) -> int:
    """``--client``: make ``--connections`` connections with ``--concurrency`` threads; print JSON."""
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": 0, "reused": 0, "bytes": 0, "samples": []}
    request = f"GET / HTTP/1.1\r\nHost: {args.hostname}\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + args.time_limit

    def take() -> bool:
        with lock:
            if state["next"] >= args.connections or time.monotonic() > deadline:
                return False
            state["next"] += 1
            return True

    def worker() -> None:
        context = ssl.create_default_context(cafile=args.cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        while take():
            try:
                with socket.create_connection(("127.0.0.1", args.port), timeout=10) as raw:
                    with context.wrap_socket(raw, server_hostname=args.hostname) as tls:
                        reused = tls.session_reused
                        received = 0
                        if args.mode == "get":
                            tls.sendall(request)
                            head = b""
                            while chunk := tls.recv(65536):
                                if not head:
                                    head = chunk[:16]
                                received += len(chunk)
                            if not head.startswith(b"HTTP/1.1 200"):
                                raise RuntimeError(f"unexpected response {head!r}")
                with lock:
                    state["ok"] += 1
                    state["reused"] += int(bool(reused))
                    state["bytes"] += received
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    state["errors"] += 1
                    if len(state["samples"]) < 5:
                        state["samples"].append(f"{type(e).__name__}: {e}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state["elapsed_s"] = time.monotonic() - started
    del state["next"]
    print(json.dumps(state))
    return 0


def run_client(port: int, cafile: Path, connections: int, concurrency: int, mode: str, time_limit: float) -> dict:
    """Run the load generator as a subprocess; return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--client", "--port", str(port),
               "--hostname", HOSTNAME, "--cafile", str(cafile), "--connections", str(connections),
               "--concurrency", str(concurrency), "--mode", mode, "--time-limit", str(time_limit)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=time_limit + 30)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


# -- servers ------------------------------------------------------------------------------------


def make_certificate(directory: Path) -> dict[str, Path]:
    """A TestCA root and a leaf + intermediate for :data:`HOSTNAME`, as files (key 0600)."""
    from jobhost.testing import TestCA

    ca = TestCA.create("jobhost bench")
    key_pem, chain_pem = ca.issue(HOSTNAME)
    paths = {"root": directory / "root.pem", "chain": directory / "chain.pem", "key": directory / "key.pem"}
    paths["root"].write_bytes(ca.root_pem)
    paths["chain"].write_bytes(chain_pem)
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return paths


def jobhost_config(http: int, https: int, admin: int) -> str:
    """Production defaults, but loopback ports, no preflight and a CA nobody answers for."""
    from daemon import listen_section  # tests/integration, see _harness

    return listen_section(http, https, admin) + f"""
[store]
url = "directory:var/store"

[acme]
directory = "https://127.0.0.1:{free_port()}/dir"
contact = []

[preflight]
enabled = false
self_check = false
"""


def store_tool(workdir: Path, *args: str) -> None:
    """Run ``jobhost-store --store directory:var/store ARGS`` in ``workdir``; raise if it fails."""
    from daemon import store_tool as run_store_tool  # tests/integration, see _harness

    done = run_store_tool(workdir, *args)
    if done.returncode != 0:
        raise RuntimeError(f"jobhost-store {args[0]} failed: {done.stderr}")


def start_jobhost(workdir: Path, cert: dict[str, Path]):
    """Store the certificate and page, start ``twistd -n jobhost``; return (Daemon, https port)."""
    from daemon import Daemon  # tests/integration, see _harness

    workdir.mkdir()
    store_tool(workdir, "put-certificate", HOSTNAME, "--key", str(cert["key"]), "--chain", str(cert["chain"]))
    store_tool(workdir, "add-domain", HOSTNAME, "--page", str(PAGE))
    http, https, admin = free_port(), free_port(), free_port()
    daemon = Daemon(workdir, jobhost_config(http, https, admin))
    daemon.start()
    try:
        daemon.wait_listening(http, https, admin)
    except BaseException:
        daemon.stop()
        raise
    return daemon, https


def https_get(port: int, cafile: Path) -> tuple[bytes, bytes]:
    """One verified ``GET /`` for :data:`HOSTNAME`; return (head, body)."""
    from daemon import https_request  # tests/integration, see _harness

    return https_request(port, HOSTNAME, "/", ssl.create_default_context(cafile=str(cafile)), timeout=10)


class Nginx:
    """nginx with its own config and prefix in ``directory``; one worker."""

    def __init__(self, directory: Path, cert: dict[str, Path], body: bytes) -> None:
        self.directory = directory
        self.port = free_port()
        directory.mkdir()
        (directory / "html").mkdir()
        (directory / "html" / "index.html").write_bytes(body)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / sub).mkdir()
        user = pwd.getpwuid(os.getuid()).pw_name
        headers = "\n".join(f'            add_header {k} "{v}" always;' for k, v in JOBHOST_HEADERS.items())
        d = directory
        self.config = d / "nginx.conf"
        self.config.write_text(f"""
{"user " + user + ";" if os.getuid() == 0 else ""}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    access_log {d}/access.log combined;
    server_tokens off;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {HOSTNAME};
        ssl_certificate {cert["chain"]};
        ssl_certificate_key {cert["key"]};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        keepalive_timeout 60s;
        root {d}/html;
        location = / {{
            default_type "text/html; charset=utf-8";
            try_files /index.html =404;
{headers}
        }}
    }}
}}
""")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        log = open(self.directory / "stderr.log", "ab")
        self.process = subprocess.Popen(
            [nginx, "-p", str(self.directory), "-c", str(self.config), "-e", str(self.directory / "error.log")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, 10, self.process)

    def pids(self) -> list[int]:
        """Master and workers."""
        assert self.process is not None
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def describe_tls(port: int, cafile: Path) -> list[str]:
    """What ``openssl s_client`` sees: protocol, cipher, key exchange group, tickets sent, verification."""
    try:
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOSTNAME,
             "-CAfile", str(cafile), "-brief", "-msg", "-ign_eof"],
            input=f"GET / HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n".encode(),
            capture_output=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"openssl s_client failed: {e}"]
    lines = (done.stdout + done.stderr).decode(errors="replace").splitlines()
    keep = ("Protocol version", "Ciphersuite", "Peer signature type", "Server Temp Key", "Negotiated TLS1.3 group",
            "Verification")
    found = [line.strip() for line in lines if line.startswith(keep)]
    found.append(f"NewSessionTicket messages: {sum('NewSessionTicket' in line for line in lines)}")
    return found


def cpu_of(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` together."""
    return sum(sum(cpu_times(pid)) for pid in pids)


def system_cpu_of(pids: list[int]) -> float:
    """System (kernel) CPU seconds of ``pids`` together."""
    return sum(cpu_times(pid)[1] for pid in pids)


def measure(pids: list[int], port: int, cafile: Path, connections: int, concurrency: int, mode: str,
            time_limit: float) -> dict:
    """One round: server CPU before/after a load-generator run."""
    before, system_before = cpu_of(pids), system_cpu_of(pids)
    wall = time.monotonic()
    client = run_client(port, cafile, connections, concurrency, mode, time_limit)
    wall = time.monotonic() - wall
    after, system_after = cpu_of(pids), system_cpu_of(pids)
    client["server_cpu_s"] = after - before
    client["server_system_cpu_s"] = system_after - system_before
    client["wall_s"] = wall
    return client


def idle_cpu(pids: list[int], seconds: float) -> float:
    """Server CPU seconds per second while nothing connects."""
    before = cpu_of(pids)
    time.sleep(seconds)
    return (cpu_of(pids) - before) / seconds


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000,
                        help="measured connections per server, split over the rounds (2000)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per server (4)")
    parser.add_argument("--concurrency", type=int, default=2, help="client connections at a time (2)")
    parser.add_argument("--mode", choices=("get", "handshake"), default="get",
                        help="get: handshake + GET / (default); handshake: handshake only")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured connections per server first (100)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds allowed per round (120)")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="also profile jobhost with py-spy during its rounds (raw output to FILE; "
                             "py-spy slows it: the CPU figures of such a run are not for comparison)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    # Load-generator mode (used by this script itself).
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hostname", default=HOSTNAME, help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if args.client:
        return client_main(args)

    if shutil.which("nginx") is None:
        print("handshake.py: nginx is not installed (Debian: apt-get install -y nginx)", file=sys.stderr)
        return 2
    per_round = max(1, args.connections // args.rounds)
    result: dict = {
        "benchmark": "handshake",
        "command": "python bench/handshake.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "config": {"connections_per_server": per_round * args.rounds, "rounds": args.rounds,
                   "concurrency": args.concurrency, "mode": args.mode, "warmup": args.warmup,
                   "hostname": HOSTNAME, "nginx": subprocess.run(["nginx", "-v"], capture_output=True,
                                                                  text=True).stderr.strip()},
    }
    with tempfile.TemporaryDirectory(prefix="jobhost-bench-handshake-") as tmp:
        tmp_path = Path(tmp)
        cert = make_certificate(tmp_path)
        daemon, jobhost_port = start_jobhost(tmp_path / "jobhost", cert)
        nginx = None
        profiler = None
        try:
            head, body = https_get(jobhost_port, cert["root"])
            if not head.startswith(b"HTTP/1.1 200") or b"Rocket Propulsion Engineer" not in body:
                raise RuntimeError(f"jobhost did not serve the careers page: {head!r}\n{daemon.log()[-3000:]}")
            nginx = Nginx(tmp_path / "nginx", cert, body)
            nginx.start()
            nginx_head, nginx_body = https_get(nginx.port, cert["root"])
            if not nginx_head.startswith(b"HTTP/1.1 200") or nginx_body != body:
                raise RuntimeError(f"nginx did not serve the page: {nginx_head!r}")
            result["config"]["response_bytes"] = {"jobhost": len(head) + 4 + len(body),
                                                  "nginx": len(nginx_head) + 4 + len(nginx_body)}
            servers = {
                "jobhost": ([daemon.process.pid], jobhost_port),
                "nginx": (nginx.pids(), nginx.port),
            }
            result["tls"] = {name: describe_tls(port, cert["root"]) for name, (_, port) in servers.items()}
            for name, (pids, port) in servers.items():
                run_client(port, cert["root"], args.warmup, args.concurrency, args.mode, args.time_limit)
            result["idle_cpu_s_per_s"] = {name: idle_cpu(pids, 3.0) for name, (pids, _) in servers.items()}
            if args.py_spy:
                profiler = subprocess.Popen(
                    ["py-spy", "record", "-p", str(daemon.process.pid), "-r", "250", "-f", "raw",
                     "-o", args.py_spy, "-d", str(int(args.time_limit * args.rounds))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
                time.sleep(1.0)
            rounds: dict[str, list[dict]] = {"jobhost": [], "nginx": []}
            for _ in range(args.rounds):
                for name, (pids, port) in servers.items():
                    if profiler is not None and name == "nginx":
                        profiler.send_signal(signal.SIGSTOP)  # profile jobhost's rounds only
                    rounds[name].append(measure(pids, port, cert["root"], per_round, args.concurrency,
                                                args.mode, args.time_limit))
                    if profiler is not None and name == "nginx":
                        profiler.send_signal(signal.SIGCONT)
        finally:
            if profiler is not None and profiler.poll() is None:
                profiler.send_signal(signal.SIGCONT)
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
            if nginx is not None:
                nginx.stop()
            daemon.stop()

    summary: dict = {}
    for name, runs in rounds.items():
        ok = sum(r["ok"] for r in runs)
        cpu = sum(r["server_cpu_s"] for r in runs)
        wall = sum(r["wall_s"] for r in runs)
        summary[name] = {
            "connections": ok,
            "errors": sum(r["errors"] for r in runs),
            "resumed": sum(r["reused"] for r in runs),
            "server_cpu_s": cpu,
            "cpu_us_per_connection": cpu / ok * 1e6 if ok else None,
            "system_cpu_us_per_connection": sum(r["server_system_cpu_s"] for r in runs) / ok * 1e6 if ok else None,
            "per_round_us": [round(r["server_cpu_s"] / r["ok"] * 1e6) if r["ok"] else None for r in runs],
            "connections_per_s": ok / wall if wall else None,
            "error_samples": [s for r in runs for s in r["samples"]][:5],
        }
    j, n = summary["jobhost"]["cpu_us_per_connection"], summary["nginx"]["cpu_us_per_connection"]
    result.update({"rounds": rounds, "summary": summary, "ratio_jobhost_to_nginx": j / n if j and n else None})
    ok = all(s["errors"] == 0 and s["connections"] == per_round * args.rounds for s in summary.values())
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        what = "TLS 1.3 handshake + GET /" if args.mode == "get" else "TLS 1.3 handshake only"
        print(f"server CPU per connection ({what}, no resumption, {args.concurrency} at a time, "
              f"{per_round * args.rounds} connections per server in {args.rounds} alternating rounds)")
        for name, s in summary.items():
            print(f"  {name:8} {s['cpu_us_per_connection']:8.0f} us/connection, of which kernel "
                  f"{s['system_cpu_us_per_connection']:.0f}  (rounds: {s['per_round_us']}; "
                  f"{s['connections']} ok, {s['errors']} errors, {s['resumed']} resumed, "
                  f"{s['connections_per_s']:.0f} conn/s, idle {result['idle_cpu_s_per_s'][name] * 1e3:.1f} ms/s)")
            for sample in s["error_samples"]:
                print(f"           error: {sample}")
        for name, lines in result["tls"].items():
            print(f"  {name} TLS: " + "; ".join(lines))
        if result["ratio_jobhost_to_nginx"]:
            print(f"  ratio jobhost / nginx: {result['ratio_jobhost_to_nginx']:.1f}x")
    return 0 if ok else 1


__all__ = ["HOSTNAME", "Nginx", "main", "make_certificate", "start_jobhost"]

if __name__ == "__main__":
    sys.exit(main())
