"""
Server CPU per HTTPS connection: jobhost's listener vs nginx, measured in the same run.

Each connection is a full TLS handshake (TLS 1.3 by default, X25519, ECDSA P-256
certificate, SNI drawn uniformly from ``--hostnames`` names, chain and name
verified by the client, no session resumption) followed by one ``GET /`` with
``Host`` = that name and ``Connection: close``, reading the whole response.
With ``--mode handshake`` the client closes right after the handshake instead
(no request), which splits the cost into TLS and HTTP.  With ``--resume`` the
client keeps the sessions it is given and resumes them (nginx then has session
tickets and a session cache on); the resumed and full handshakes are counted, and
every round with resumption is paired with a round of full handshakes to the
same server (full, then resumed, for each server in turn), so that the cost of a
resumed connection is compared with a full one *in the same run*.  Each
resumed round starts with a fresh client session cache, so its first connection
to each hostname per client connection slot is full: the cost per resumed
connection is estimated as (CPU of the resumed round - its full connections x
the per-connection CPU of the paired full rounds) / resumed connections.

The servers, both started by this script on 127.0.0.1 high ports:

- jobhost: the real daemon (``twistd -n jobhost``, via
  ``tests/integration/daemon.py``) on a directory store into which this script
  put, in-process through jobhost's store API (``DirectoryStore``, the same
  calls ``jobhost-store put-certificate`` and ``add-domain`` make), a
  certificate for each hostname (issued by :class:`jobhost.testing.TestCA`,
  ECDSA P-256) and its careers page (``etc/example-page.json``).  So every
  measured connection takes the real path: ClientHello held and parsed,
  certificate cache hit, servername callback switching context, careers page
  rendered from the domain record read from the store.  The ACME directory is
  a closed loopback port and preflight is off: nothing is ever issued.
- nginx (Debian's package): its own minimal config in a temp dir
  (``daemon off``, ``worker_processes 1``, never the system's config), one
  ``server`` block per hostname with the same certificate chain and key,
  TLS 1.2-1.3, no session tickets or cache (jobhost has neither; both on with
  ``--resume``), an access log like jobhost's, and per hostname a static
  ``index.html`` holding the exact bytes jobhost renders for ``GET /`` there
  (checked on a sample of hostnames), served with the same security headers.

The load generator is a separate process, ``--concurrency`` connections at a
time: by default ``bench/loadgen`` (Go, built by this script into a temp dir;
it costs less CPU per connection than the servers, and its own CPU per
connection is reported from ``/proc/<pid>/stat`` of its process), or with
``--client python`` (or when ``go`` is missing) this script re-run as a
Python client.  Either counts resumed handshakes, so a run without
``--resume`` proves every handshake was full.  Server CPU is user + system
time from ``/proc/<pid>/stat`` (all threads; nginx: master + worker) read
right before and right after each round, divided by the connections
completed in the round.  Rounds alternate jobhost, nginx, jobhost, nginx, ...
so that a noisy neighbour on this shared machine hits both alike; the figure
is the total over all rounds.  Before the rounds every hostname is connected
to once (so jobhost's certificate and page caches are warm) plus
``--warmup`` random ones.  Idle CPU of each server is measured for a few
seconds first and reported (not subtracted).

Usage (from the repository root; nginx from ``apt-get install -y nginx``,
Go from ``apt-get install -y golang-go``)::

    python bench/handshake.py --connections 2000 --concurrency 2 --rounds 4
    python bench/handshake.py --mode handshake --json
    python bench/handshake.py --resume --hostnames 100

Exits 0 when every connection of every round succeeded (and, without
``--resume``, none was resumed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
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
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, children, cpu_times, exit_on_sigterm, free_port, machine, wait_for_port  # noqa: E402

#: The benchmark's hostnames: h0001.bench.test, h0002.bench.test, ... (see :func:`hostnames`).
HOSTNAME_PATTERN = "h{:0{width}d}.bench.test"
#: The first hostname of every run.
HOSTNAME = "h0001.bench.test"
LOADGEN_SOURCE = Path(__file__).resolve().parent / "loadgen"
#: Go's build cache for the load generator (kept between runs; ``GOCACHE`` overrides it).
LOADGEN_GOCACHE = Path(tempfile.gettempdir()) / "jobhost-loadgen-gocache"
PAGE = REPO / "etc" / "example-page.json"
#: The security headers jobhost sends on every HTTPS response (jobhost/web/site.py).
JOBHOST_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Strict-Transport-Security": "max-age=300",
}


def hostnames(count: int) -> list[str]:
    """``count`` hostnames of equal length: h0001.bench.test, h0002.bench.test, ..."""
    width = max(4, len(str(count)))
    return [HOSTNAME_PATTERN.format(i, width=width) for i in range(1, count + 1)]


# -- load generators (each run as its own process) ----------------------------------------------


def client_main(args: argparse.Namespace) -> int:
    """``--run-client``: the Python load generator; ``--connections`` connections, print JSON."""
    names = Path(args.hostnames_file).read_text().split()
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": 0, "reused": 0, "bytes": 0, "samples": []}
    deadline = time.monotonic() + args.time_limit

    def take() -> int | None:
        with lock:
            if state["next"] >= args.connections or time.monotonic() > deadline:
                return None
            state["next"] += 1
            return state["next"] - 1

    def worker(k: int) -> None:
        rng = random.Random(args.seed + k)
        context = ssl.create_default_context(cafile=args.cafile)
        version = ssl.TLSVersion.TLSv1_3 if args.tls == "1.3" else ssl.TLSVersion.TLSv1_2
        context.minimum_version = context.maximum_version = version
        if args.alpn:
            context.set_alpn_protocols(args.alpn.split(","))
        sessions: dict[str, ssl.SSLSession] = {}
        while (index := take()) is not None:
            name = names[index % len(names)] if args.order == "sequential" else rng.choice(names)
            try:
                with socket.create_connection(("127.0.0.1", args.port), timeout=10) as raw:
                    with context.wrap_socket(raw, server_hostname=name, session=sessions.get(name)) as tls:
                        reused = tls.session_reused
                        received = 0
                        if args.mode == "get":
                            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                            head = b""
                            while chunk := tls.recv(65536):
                                if not head:
                                    head = chunk[:16]
                                received += len(chunk)
                            if not head.startswith(b"HTTP/1.1 200"):
                                raise RuntimeError(f"unexpected response {head!r}")
                        if args.resume and tls.session is not None and tls.session.has_ticket:
                            sessions[name] = tls.session
                with lock:
                    state["ok"] += 1
                    state["reused"] += int(bool(reused))
                    state["bytes"] += received
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    state["errors"] += 1
                    if len(state["samples"]) < 5:
                        state["samples"].append(f"{name}: {type(e).__name__}: {e}")

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state["elapsed_s"] = time.monotonic() - started
    del state["next"]
    print(json.dumps(state))
    return 0


def go_available() -> bool:
    return shutil.which("go") is not None


def build_loadgen(directory: Path) -> Path:
    """``go build`` bench/loadgen into ``directory`` (offline: standard library only); return the binary."""
    env = dict(os.environ)
    env.setdefault("GOCACHE", str(LOADGEN_GOCACHE))
    env.update({"GOPROXY": "off", "GOFLAGS": "", "GO111MODULE": "on", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"})
    binary = directory / "loadgen"
    done = subprocess.run(["go", "build", "-o", str(binary), "."], cwd=LOADGEN_SOURCE, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"go build of {LOADGEN_SOURCE} failed:\n{done.stderr[-3000:]}")
    return binary


def run_process(command: list[str], time_limit: float) -> tuple[str, float]:
    """Run ``command`` to its end; return (stdout, CPU seconds of the process from /proc/<pid>/stat).

    The CPU time is read from ``/proc/<pid>/stat`` once the process has exited but before it is
    reaped (``waitid(WNOWAIT)``), so it is the whole process, all threads, start to end.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)

        def kill() -> None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        watchdog = threading.Timer(time_limit, kill)
        watchdog.start()
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            cpu = sum(cpu_times(process.pid))
        finally:
            watchdog.cancel()
            if process.poll() is None:
                kill()
            process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {stderr[-2000:]}")
    return stdout, cpu


class LoadGenerator:
    """Runs rounds of connections with the Go or the Python client; normalises their results."""

    def __init__(self, kind: str, binary: Path | None, names_file: Path, cafile: Path, args: argparse.Namespace):
        self.kind, self.binary, self.names_file, self.cafile, self.args = kind, binary, names_file, cafile, args
        self.seed = args.seed if args.seed else random.SystemRandom().randrange(1, 2**31)

    def run(self, port: int, connections: int, order: str = "random", resume: bool | None = None) -> dict:
        a = self.args
        resume = a.resume if resume is None else resume
        self.seed += 1000  # every run its own draw of hostnames, reproducible from --seed
        if self.kind == "go":
            command = [str(self.binary), "-addr", f"127.0.0.1:{port}", "-ca", str(self.cafile),
                       "-hostnames", str(self.names_file), "-order", order, "-seed", str(self.seed),
                       "-tls", a.tls, "-mode", a.mode, "-concurrency", str(a.concurrency),
                       "-connections", str(connections), "-duration", f"{a.time_limit}s", "-timeout", "10s"]
            if resume:
                command.append("-resume")
            if a.alpn:
                command += ["-alpn", a.alpn]
            if a.sources:
                command += ["-sources", str(a.sources)]
            stdout, cpu = run_process(command, a.time_limit + 30)
            raw = json.loads(stdout)
            c = raw["counts"]
            return {
                "ok": c["ok"], "errors": c["failed"], "attempted": c["attempted"], "reused": c["resumed"],
                "full": c["full_handshakes"], "verify_failures": c["verify_failures"],
                "name_mismatches": c["name_mismatches"], "non_200": c["non_200"],
                "handshake_errors": c["handshake_errors"], "connect_errors": c["connect_errors"],
                "http_errors": c["http_errors"], "bytes": c["response_bytes"],
                "tls_versions": c["tls_versions"], "alpn": c["alpn_negotiated"],
                "samples": raw["error_samples"], "elapsed_s": raw["elapsed_s"],
                "latency_ms": raw["latency_ms"], "loadgen_cpu_s": cpu,
                "loadgen_self_cpu_s": raw["cpu"]["total_s"], "go_version": raw["go_version"],
                "loadgen": raw,
            }
        command = [sys.executable, str(Path(__file__).resolve()), "--run-client", "--port", str(port),
                   "--hostnames-file", str(self.names_file), "--cafile", str(self.cafile),
                   "--connections", str(connections), "--concurrency", str(a.concurrency), "--mode", a.mode,
                   "--time-limit", str(a.time_limit), "--order", order, "--seed", str(self.seed), "--tls", a.tls]
        if resume:
            command.append("--resume")
        if a.alpn:
            command += ["--alpn", a.alpn]
        stdout, cpu = run_process(command, a.time_limit + 30)
        result = json.loads(stdout)
        result.update({"attempted": result["ok"] + result["errors"], "full": result["ok"] - result["reused"],
                       "loadgen_cpu_s": cpu})
        return result


# -- servers ------------------------------------------------------------------------------------


def make_certificates(directory: Path, names: Sequence[str]) -> dict:
    """A TestCA root (``root.pem``), and per hostname a leaf + intermediate and its key (0600) as files.

    Returns ``{"root": Path, "names_file": Path, "certs": {name: (key Path, chain Path, key_pem, chain_pem)}}``.
    """
    from jobhost.testing import TestCA

    ca = TestCA.create("jobhost bench")
    (directory / "certs").mkdir()
    result: dict = {"root": directory / "root.pem", "names_file": directory / "hostnames.txt", "certs": {}}
    result["root"].write_bytes(ca.root_pem)
    result["names_file"].write_text("".join(name + "\n" for name in names))
    for name in names:
        key_pem, chain_pem = ca.issue(name)  # ECDSA P-256
        chain, key = directory / "certs" / f"{name}.pem", directory / "certs" / f"{name}.key"
        chain.write_bytes(chain_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        result["certs"][name] = (key, chain, key_pem, chain_pem)
    return result


def jobhost_config(http: int, https: int, admin: int, workers: int = 1) -> str:
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

[web]
access_log = "access.log"   # as nginx's below: combined format, buffered, flushed every second

[server]
workers = {workers}         # as nginx's worker_processes below
"""


def fill_store(path: Path, certs: dict, page_file: Path) -> float:
    """Put every certificate and a careers page per hostname into the directory store at ``path``.

    In-process through jobhost's store API: the same ``put_certificate`` and ``add_domain`` calls
    ``jobhost-store put-certificate`` / ``add-domain`` make, on a :class:`DirectoryStore` whose
    ``run_in_thread`` runs each call at once (no reactor needed).  Returns the seconds it took.
    """
    import datetime as dt

    from twisted.internet.defer import maybeDeferred
    from twisted.python.failure import Failure

    from jobhost.pagedoc import validate_page
    from jobhost.store.directory import DirectoryStore
    from jobhost.store.records import DomainRecord, DomainState, certificate_record

    def wait(d):
        results: list = []
        d.addBoth(results.append)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    started = time.monotonic()
    page = validate_page(json.loads(page_file.read_text()))
    store = DirectoryStore(path, maybeDeferred)
    wait(store.open())
    at = dt.datetime.now(dt.timezone.utc)
    for name, (_, _, key_pem, chain_pem) in certs.items():
        wait(store.put_certificate(certificate_record(name, key_pem, chain_pem)))
        _, created = wait(store.add_domain(DomainRecord(hostname=name, state=DomainState.PENDING,
                                                        created_at=at, updated_at=at, page=page)))
        if not created:
            raise RuntimeError(f"{name} was already in the store at {path}")
    return time.monotonic() - started


def start_jobhost(workdir: Path, certs: dict, workers: int = 1):
    """Store the certificates and pages, start ``twistd -n jobhost``; return (Daemon, https port, fill seconds)."""
    from daemon import Daemon  # tests/integration, see _harness

    workdir.mkdir()
    fill_s = fill_store(workdir / "var" / "store", certs, PAGE)
    http, https, admin = free_port(), free_port(), free_port()
    daemon = Daemon(workdir, jobhost_config(http, https, admin, workers))
    daemon.http_port = http
    daemon.start()
    try:
        daemon.wait_listening(http, https, admin)
        deadline = time.monotonic() + 30
        while workers > 1 and len(children(daemon.process.pid)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobhost did not start {workers} workers\n{daemon.log()[-3000:]}")
            time.sleep(0.1)
    except BaseException:
        daemon.stop()
        raise
    return daemon, https, fill_s


def https_get(port: int, cafile: Path, hostname: str = HOSTNAME) -> tuple[bytes, bytes]:
    """One verified ``GET /`` for ``hostname``; return (head, body)."""
    from daemon import https_request  # tests/integration, see _harness

    return https_request(port, hostname, "/", ssl.create_default_context(cafile=str(cafile)), timeout=10)


class Nginx:
    """nginx with its own config and prefix in ``directory``; one worker, one server block per hostname."""

    def __init__(self, directory: Path, certs: dict, bodies: dict[str, bytes], resume: bool = False,
                 workers: int = 1) -> None:
        self.directory = directory
        self.port = free_port()
        #: A plain-HTTP listener (a server block that answers 404), as jobhost's HTTP listener.
        self.http_port = free_port()
        directory.mkdir()
        (directory / "html").mkdir()
        for name, body in bodies.items():
            (directory / "html" / name).mkdir()
            (directory / "html" / name / "index.html").write_bytes(body)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (directory / sub).mkdir()
        user = pwd.getpwuid(os.getuid()).pw_name
        headers = "\n".join(f'            add_header {k} "{v}" always;' for k, v in JOBHOST_HEADERS.items())
        d = directory
        sessions = ("ssl_session_tickets on;\n    ssl_session_cache shared:SSL:16m;\n    ssl_session_timeout 10m;"
                    if resume else "ssl_session_tickets off;\n    ssl_session_cache off;")
        servers = "".join(f"""
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {name};
        ssl_certificate {certs[name][1]};
        ssl_certificate_key {certs[name][0]};
        root {d}/html/{name};
        location = / {{
            default_type "text/html; charset=utf-8";
            try_files /index.html =404;
{headers}
        }}
    }}""" for name in bodies)
        self.config = d / "nginx.conf"
        self.config.write_text(f"""
{"user " + user + ";" if os.getuid() == 0 else ""}
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    access_log {d}/access.log combined buffer=64k flush=1s;
    server_tokens off;
    server_names_hash_max_size 16384;
    server_names_hash_bucket_size 128;
    ssl_protocols TLSv1.2 TLSv1.3;
    {sessions}
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{self.http_port} default_server;
        return 404;
    }}
{servers}
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
        wait_for_port(self.port, 30, self.process)

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


def describe_tls(port: int, cafile: Path, hostname: str = HOSTNAME) -> list[str]:
    """What ``openssl s_client`` sees: protocol, cipher, key exchange group, tickets sent, verification."""
    try:
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", hostname,
             "-CAfile", str(cafile), "-brief", "-msg", "-ign_eof"],
            input=f"GET / HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n".encode(),
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


def measure(pids: list[int], port: int, loadgen: LoadGenerator, connections: int, resume: bool | None = None) -> dict:
    """One round: server CPU before/after a load-generator run (``resume``: override ``--resume``)."""
    before, system_before = cpu_of(pids), system_cpu_of(pids)
    wall = time.monotonic()
    client = loadgen.run(port, connections, resume=resume)
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


def check_bodies(names: Sequence[str], port: int, cafile: Path, bodies: dict[str, bytes], what: str) -> None:
    """``GET /`` of the first, the last and a few random hostnames must give exactly ``bodies[name]``."""
    sample = {names[0], names[-1], *random.sample(list(names), min(3, len(names)))}
    for name in sorted(sample):
        head, body = https_get(port, cafile, name)
        if not head.startswith(b"HTTP/1.1 200") or body != bodies[name]:
            raise RuntimeError(f"{what} did not serve the expected page for {name}: {head!r}")


# -- main ---------------------------------------------------------------------------------------


def resumed_cost(full_runs: list[dict], resumed_runs: list[dict]) -> dict:
    """Per-connection server CPU of the full rounds, of the resumed rounds, and per resumed connection.

    A resumed round's first connection to each hostname per client slot is full (a fresh
    session cache): those are charged at the full rounds' rate and the rest is divided
    among the resumed connections.
    """
    full_cpu = sum(r["server_cpu_s"] for r in full_runs)
    full_n = sum(r["attempted"] for r in full_runs)
    full_us = full_cpu / full_n * 1e6 if full_n else None
    cpu = sum(r["server_cpu_s"] for r in resumed_runs)
    attempted = sum(r["attempted"] for r in resumed_runs)
    resumed = sum(r["reused"] for r in resumed_runs)
    fulls = sum(r["full"] for r in resumed_runs)
    per_resumed = (cpu * 1e6 - fulls * full_us) / resumed if resumed and full_us is not None else None
    return {
        "full_us_per_connection": full_us,
        "full_per_round_us": [round(r["server_cpu_s"] / r["attempted"] * 1e6) if r["attempted"] else None
                              for r in full_runs],
        "full_errors": sum(r["errors"] for r in full_runs),
        "full_resumed": sum(r["reused"] for r in full_runs),
        "resumed_rounds_us_per_connection": cpu / attempted * 1e6 if attempted else None,
        "resumed": resumed,
        "full_in_resumed_rounds": fulls,
        "resumed_us_per_connection": per_resumed,
        "resumed_to_full": per_resumed / full_us if per_resumed is not None and full_us else None,
    }


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None else format(value, spec)


def choose_client(requested: str | None) -> tuple[str, str | None]:
    """(client kind, message to print) for ``--client``; Go unless asked otherwise or missing."""
    if requested == "python":
        return "python", None
    if go_available():
        return "go", None
    if requested == "go":
        raise SystemExit("handshake.py: --client go, but `go` is not installed (Debian: apt-get install -y golang-go)")
    return "python", ("handshake.py: `go` is not installed (Debian: apt-get install -y golang-go): falling back to "
                      "the Python load generator, which costs more CPU per connection than the servers it measures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000,
                        help="measured connections per server, split over the rounds (2000)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per server (4)")
    parser.add_argument("--concurrency", type=int, default=2, help="client connections at a time (2)")
    parser.add_argument("--mode", choices=("get", "handshake"), default="get",
                        help="get: handshake + GET / (default); handshake: handshake only")
    parser.add_argument("--hostnames", type=int, default=1000,
                        help="hostnames (certificates, jobhost domains, nginx server blocks); SNI drawn uniformly (1000)")
    parser.add_argument("--client", choices=("go", "python"), default=None,
                        help="load generator: go (bench/loadgen, the default when `go` is installed) or python")
    parser.add_argument("--resume", action="store_true",
                        help="resume TLS sessions (nginx gets tickets + cache on); default: every handshake full")
    parser.add_argument("--tls", choices=("1.3", "1.2"), default="1.3", help="TLS version the client offers (1.3)")
    parser.add_argument("--alpn", default="", help="ALPN protocols the client offers, e.g. h2,http/1.1 (none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hostname draws (0: random, reported)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="unmeasured random connections per server, after one to every hostname (100)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds allowed per round (120)")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="also profile jobhost with py-spy during its rounds (raw output to FILE; "
                             "py-spy slows it: the CPU figures of such a run are not for comparison)")
    parser.add_argument("--workers", type=int, default=1,
                        help="jobhost [server] workers and nginx worker_processes (1); CPU counts every process")
    parser.add_argument("--sources", type=int, default=0,
                        help="go client: client k connects from 127.0.0.(2 + k mod N) (0: 127.0.0.1); with"
                             " --workers > 1 jobhost picks the worker by client address ([server] affinity)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    # Python load-generator mode (used by this script itself).
    parser.add_argument("--run-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hostnames-file", help=argparse.SUPPRESS)
    parser.add_argument("--order", choices=("random", "sequential"), default="random", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if args.run_client:
        return client_main(args)

    if shutil.which("nginx") is None:
        print("handshake.py: nginx is not installed (Debian: apt-get install -y nginx)", file=sys.stderr)
        return 2
    if args.hostnames < 1:
        parser.error("--hostnames must be at least 1")
    client, message = choose_client(args.client)
    if message:
        print(message, file=sys.stderr)
    names = hostnames(args.hostnames)
    per_round = max(1, args.connections // args.rounds)
    result: dict = {
        "benchmark": "handshake",
        "command": "python bench/handshake.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "config": {"connections_per_server": per_round * args.rounds, "rounds": args.rounds,
                   "concurrency": args.concurrency, "mode": args.mode, "warmup": args.warmup,
                   "hostnames": len(names), "hostname_first": names[0], "hostname_last": names[-1],
                   "client": client, "resume": args.resume, "tls": args.tls, "alpn": args.alpn,
                   "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()},
    }
    rounds: dict[str, list[dict]] = {"jobhost": [], "nginx": []}
    full_rounds: dict[str, list[dict]] = {"jobhost": [], "nginx": []}  # with --resume: the paired full rounds
    with tempfile.TemporaryDirectory(prefix="jobhost-bench-handshake-") as tmp:
        tmp_path = Path(tmp)
        binary = None
        if client == "go":
            started = time.monotonic()
            binary = build_loadgen(tmp_path)
            result["config"]["loadgen_build_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        certs = make_certificates(tmp_path, names)
        result["config"]["certificates_s"] = round(time.monotonic() - started, 2)
        loadgen = LoadGenerator(client, binary, certs["names_file"], certs["root"], args)
        result["config"]["seed"] = loadgen.seed
        daemon, jobhost_port, fill_s = start_jobhost(tmp_path / "jobhost", certs["certs"], args.workers)
        result["config"]["store_fill_s"] = round(fill_s, 2)
        nginx = None
        profiler = None
        try:
            head, body = https_get(jobhost_port, certs["root"], names[0])
            if not head.startswith(b"HTTP/1.1 200") or b"Rocket Propulsion Engineer" not in body:
                raise RuntimeError(f"jobhost did not serve the careers page: {head!r}\n{daemon.log()[-3000:]}")
            # jobhost's page names its hostname (job URLs): the same bytes with the name replaced.
            bodies = {name: body.replace(names[0].encode(), name.encode()) for name in names}
            check_bodies(names, jobhost_port, certs["root"], bodies, "jobhost")
            nginx = Nginx(tmp_path / "nginx", certs["certs"], bodies, resume=args.resume, workers=args.workers)
            nginx.start()
            check_bodies(names, nginx.port, certs["root"], bodies, "nginx")
            nginx_head, _ = https_get(nginx.port, certs["root"], names[0])
            result["config"]["response_bytes"] = {"jobhost": len(head) + 4 + len(body),
                                                  "nginx": len(nginx_head) + 4 + len(body)}
            servers = {
                "jobhost": ([daemon.process.pid, *children(daemon.process.pid)], jobhost_port),
                "nginx": (nginx.pids(), nginx.port),
            }
            result["tls"] = {name: describe_tls(port, certs["root"], names[0]) for name, (_, port) in servers.items()}
            warmups = {}
            for name, (pids, port) in servers.items():
                warm = loadgen.run(port, len(names), order="sequential")  # every hostname once: caches warm
                if args.warmup:
                    extra = loadgen.run(port, args.warmup)
                    warm = {k: warm[k] + extra[k] for k in ("ok", "errors")} | {"samples": warm["samples"] + extra["samples"]}
                warmups[name] = {"ok": warm["ok"], "errors": warm["errors"], "samples": warm["samples"][:5]}
            result["warmup"] = warmups
            result["idle_cpu_s_per_s"] = {name: idle_cpu(pids, 3.0) for name, (pids, _) in servers.items()}
            if args.py_spy:
                profiler = subprocess.Popen(
                    ["py-spy", "record", "-p", str(daemon.process.pid), "-r", "250", "-f", "raw",
                     "-o", args.py_spy, "-d", str(int(args.time_limit * args.rounds))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
                time.sleep(1.0)
            for _ in range(args.rounds):
                for name, (pids, port) in servers.items():
                    if profiler is not None and name == "nginx":
                        profiler.send_signal(signal.SIGSTOP)  # profile jobhost's rounds only
                    if args.resume:
                        full_rounds[name].append(measure(pids, port, loadgen, per_round, resume=False))
                    rounds[name].append(measure(pids, port, loadgen, per_round))
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
        attempted = sum(r["attempted"] for r in runs)
        cpu = sum(r["server_cpu_s"] for r in runs)
        loadgen_cpu = sum(r["loadgen_cpu_s"] for r in runs)
        wall = sum(r["wall_s"] for r in runs)

        def total(key: str) -> int | None:
            values = [r.get(key) for r in runs]
            return None if any(v is None for v in values) else sum(values)

        summary[name] = {
            "connections": ok,
            "attempted": attempted,
            "errors": sum(r["errors"] for r in runs),
            "resumed": sum(r["reused"] for r in runs),
            "full_handshakes": sum(r["full"] for r in runs),
            "verify_failures": total("verify_failures"),
            "name_mismatches": total("name_mismatches"),
            "non_200": total("non_200"),
            "server_cpu_s": cpu,
            "cpu_us_per_connection": cpu / attempted * 1e6 if attempted else None,
            "system_cpu_us_per_connection": sum(r["server_system_cpu_s"] for r in runs) / attempted * 1e6
            if attempted else None,
            "per_round_us": [round(r["server_cpu_s"] / r["attempted"] * 1e6) if r["attempted"] else None
                             for r in runs],
            "loadgen_cpu_s": loadgen_cpu,
            "loadgen_cpu_us_per_connection": loadgen_cpu / attempted * 1e6 if attempted else None,
            "connections_per_s": ok / wall if wall else None,
            "latency_ms_last_round": runs[-1].get("latency_ms") if runs else None,
            "error_samples": [s for r in runs for s in r["samples"]][:5],
        }
    j, n = summary["jobhost"]["cpu_us_per_connection"], summary["nginx"]["cpu_us_per_connection"]
    result.update({"rounds": rounds, "summary": summary, "ratio_jobhost_to_nginx": j / n if j and n else None})
    ok = all(s["errors"] == 0 and s["connections"] == per_round * args.rounds
             and (args.resume or s["resumed"] == 0) for s in summary.values())
    if args.resume:
        result["full_rounds"] = full_rounds
        result["resumption"] = resumption = {name: resumed_cost(full_rounds[name], runs) for name, runs in rounds.items()}
        ok = ok and all(r["full_errors"] == 0 and r["full_resumed"] == 0 for r in resumption.values())
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        what = f"TLS {args.tls} handshake" + (" + GET /" if args.mode == "get" else " only")
        resumption = "sessions resumed when offered" if args.resume else "no resumption"
        print(f"server CPU per connection ({what}, {resumption}, {len(names)} hostnames, {client} client, "
              f"{args.concurrency} at a time, {per_round * args.rounds} connections per server in {args.rounds} "
              f"alternating rounds)")
        for name, s in summary.items():
            cpu_text = "n/a" if s["cpu_us_per_connection"] is None else f"{s['cpu_us_per_connection']:8.0f}"
            kernel = "n/a" if s["system_cpu_us_per_connection"] is None else f"{s['system_cpu_us_per_connection']:.0f}"
            loadgen_text = ("n/a" if s["loadgen_cpu_us_per_connection"] is None
                            else f"{s['loadgen_cpu_us_per_connection']:.0f}")
            print(f"  {name:8} {cpu_text} us/connection, of which kernel {kernel}  (rounds: {s['per_round_us']}; "
                  f"{s['connections']} ok, {s['errors']} errors, {s['resumed']} resumed / "
                  f"{s['full_handshakes']} full, {s['connections_per_s'] or 0:.0f} conn/s, "
                  f"idle {result['idle_cpu_s_per_s'][name] * 1e3:.1f} ms/s); load generator {loadgen_text} "
                  f"us/connection")
            if s["verify_failures"] or s["name_mismatches"] or s["non_200"]:
                print(f"           verify failures {s['verify_failures']}, name mismatches {s['name_mismatches']}, "
                      f"non-200 {s['non_200']}")
            for sample in s["error_samples"]:
                print(f"           error: {sample}")
        for name, lines in result["tls"].items():
            print(f"  {name} TLS: " + "; ".join(lines))
        if result["ratio_jobhost_to_nginx"]:
            print(f"  ratio jobhost / nginx: {result['ratio_jobhost_to_nginx']:.1f}x")
        for name, r in result.get("resumption", {}).items():
            print(f"  {name:8} full rounds {fmt(r['full_us_per_connection'])} us/connection "
                  f"(rounds {r['full_per_round_us']}); resumed rounds {fmt(r['resumed_rounds_us_per_connection'])} "
                  f"us/connection ({r['resumed']} resumed, {r['full_in_resumed_rounds']} full); per resumed "
                  f"connection ~{fmt(r['resumed_us_per_connection'])} us = {fmt(r['resumed_to_full'], '.2f')}x a full one")
    return 0 if ok else 1


__all__ = ["HOSTNAME", "LoadGenerator", "Nginx", "build_loadgen", "choose_client", "hostnames", "main",
           "make_certificates", "start_jobhost"]

if __name__ == "__main__":
    sys.exit(main())
