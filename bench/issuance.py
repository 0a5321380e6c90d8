"""
Issuance latency: ``POST /api/v1/domains`` returning -> first verified TLS handshake serving the new certificate.

What runs (all on 127.0.0.1): Pebble + pebble-challtestsrv from
``tests/integration/acme_servers.py`` (``PEBBLE_VA_NOSLEEP=1``, so Pebble's
validation does not sleep a random 0-15 s first), and the real daemon,
``twistd -n jobhost --config ...``, via ``tests/integration/daemon.py``, with
``[preflight]`` and the self-check enabled (the production path) and
``[renewal] max_in_flight`` from ``--max-in-flight``.

One run registers ``--hostnames N`` fresh hostnames at once (concurrent POSTs),
then probes every not-yet-served hostname with TLS handshakes (SNI = the
hostname, chain and name verified against Pebble's root only) until each one
completes a verified handshake.  It does that ``--repeat K`` times, each time
with fresh hostnames, on the same daemon.  Before the measured repeats one
warm-up hostname is registered and waited for (it creates the ACME account, as
a long-running deployment already has); its latency is reported separately.

Probe outcomes:

- served: the handshake verified (Pebble chain, hostname matches).  The
  latency is the time from that hostname's POST returning to this handshake
  completing.
- not yet: verification failed with X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18),
  i.e. the server sent a self-signed leaf: jobhost's fallback certificate.
- error: anything else (refused, reset, timeout, any other verification
  error).  Errors are counted and reported, never hidden.

Probing happens in rounds: every pending hostname is probed once per round by
``--probe-workers`` threads, and a round lasts at least ``--probe-interval``
seconds; the measured round times are reported because they bound the
resolution of each latency (a hostname served just after its probe is seen one
round later).

Reactor stalls: the daemon's lag monitor (:mod:`jobhost.lag`, a timer every
50 ms that measures how late it fires) is read from ``/metrics`` on the admin
listener before and after the measured repeats (:func:`reactor_lag`).  The
worst stall during the repeats is exact when the worst-since-start grew during
them (the new maximum happened then); otherwise it is at most the old maximum
and the histogram's difference bounds it.  The histogram's difference also
gives the number of ticks later than 20 ms during the repeats.

The reference measured in the same run (``--lego``): Debian's ``lego`` ACME
client obtaining one certificate per run from its own Pebble, ``--repeat``
times (see :func:`lego_reference`).

Usage (from the repository root)::

    python bench/issuance.py --hostnames 1 --repeat 10 --max-in-flight 10 --lego
    python bench/issuance.py --hostnames 100 --repeat 1 --max-in-flight 10 --json

Exits 0 when every hostname was served with no probe errors, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import cpu_seconds, exit_on_sigterm, fmt_ms, free_port, machine, summary  # noqa: E402

from acme_servers import PebbleServer  # noqa: E402  (tests/integration, see _harness)
from daemon import listen_section  # noqa: E402
from stack import Stack  # noqa: E402

#: X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: the leaf is self-signed (only the fallback is).
SELF_SIGNED_LEAF = 18

SERVED, NOT_YET, ERROR = "served", "not yet", "error"


def bench_config(http: int, https: int, admin: int, pebble: PebbleServer, max_in_flight: int,
                 orders_per_window: int, store: str = "directory:var/store") -> str:
    """jobhost's config for the benchmark: production defaults but for loopback ports and Pebble.

    Preflight (DNS A/AAAA/CNAME + CAA through challtestsrv) and the HTTP
    self-check stay enabled.  Everything not named here keeps its default
    (``[tls] poll_interval = 2s``, ``negative_ttl = 10s``, ``[renewal]`` backoff
    1 min, 10 min, ...).
    """
    return listen_section(http, https, admin) + f"""
[store]
url = "{store}"

[acme]
directory = "{pebble.directory_url}"
ca_bundle = "{pebble.ca_bundle_path}"
contact = ["mailto:ops@bench.test"]
timeout = "10s"

[preflight]
enabled = true
addresses = ["127.0.0.1"]
resolvers = ["{pebble.dns.dns_address}"]
self_check = true
self_check_port = {http}
timeout = "5s"

[renewal]
max_in_flight = {max_in_flight}
orders_per_window = {orders_per_window}
node_id = "bench-node"

[server]
workers = 1   # one process: its CPU (issuing and the probes' handshakes) is the figure, as before workers
"""


def start_stack(workdir: Path, max_in_flight: int, orders_per_window: int, nonce_reject: int,
                store: str = "directory:var/store") -> Stack:
    """Pebble + challtestsrv + ``twistd -n jobhost`` with :func:`bench_config`; stop it with ``Stack.stop``."""
    return Stack.start_with(
        workdir,
        lambda http, https, admin, pebble: bench_config(http, https, admin, pebble, max_in_flight, orders_per_window,
                                                        store),
        nonce_reject=nonce_reject,
    )


class Prober:
    """Verified TLS handshakes against jobhost's HTTPS port, classified as served / not yet / error."""

    def __init__(self, port: int, root_pem: str) -> None:
        self.port = port
        # One context for every probe: Python never resumes a session unless asked (session=...).
        self.context = ssl.create_default_context(cadata=root_pem)

    def probe(self, hostname: str) -> tuple[str, str, float]:
        """One handshake with SNI ``hostname``; return (outcome, detail, monotonic time it ended)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
                with self.context.wrap_socket(raw, server_hostname=hostname) as tls:
                    der = tls.getpeercert(binary_form=True)
            return SERVED, f"{len(der)} byte leaf", time.monotonic()
        except ssl.SSLCertVerificationError as e:
            if e.verify_code == SELF_SIGNED_LEAF:
                return NOT_YET, "fallback (self-signed leaf)", time.monotonic()
            return ERROR, f"verification failed: {e.verify_code} {e.verify_message}", time.monotonic()
        except OSError as e:  # ssl.SSLError, refused, reset, timeout
            return ERROR, f"{type(e).__name__}: {e}", time.monotonic()


def run_round(stack: Stack, prober: Prober, hostnames: list[str], timeout: float, workers: int,
              interval: float, register_concurrency: int) -> dict:
    """Register ``hostnames`` at once and probe until each is served or ``timeout`` passes."""
    lock = threading.Lock()
    posted: dict[str, float] = {}  # hostname -> monotonic time its POST returned
    post_durations: dict[str, float] = {}
    registration_errors: dict[str, str] = {}
    served: dict[str, float] = {}  # hostname -> latency
    not_yet = 0
    errors: list[dict] = []
    round_times: list[float] = []
    probes = 0

    def register(hostname: str) -> None:
        started = time.monotonic()
        try:
            status, doc = stack.api("POST", "/api/v1/domains", {"hostname": hostname})
        except Exception as e:  # noqa: BLE001 - reported, not raised
            status, doc = None, repr(e)
        ended = time.monotonic()
        with lock:
            if status == 201:
                posted[hostname] = ended
                post_durations[hostname] = ended - started
            else:
                registration_errors[hostname] = f"{status}: {doc}"

    started = time.monotonic()
    deadline = started + timeout
    registrar = ThreadPoolExecutor(max_workers=max(1, min(register_concurrency, len(hostnames))))
    registrations = [registrar.submit(register, h) for h in hostnames]
    registrar.shutdown(wait=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while time.monotonic() < deadline:
            with lock:
                pending = [(h, t) for h, t in posted.items() if h not in served]
                finished = all(r.done() for r in registrations)
            if finished and not pending:
                break
            round_start = time.monotonic()
            if pending:
                for (hostname, posted_at), (outcome, detail, ended) in zip(
                    pending, pool.map(lambda item: prober.probe(item[0]), pending)
                ):
                    probes += 1
                    if outcome == SERVED:
                        served[hostname] = ended - posted_at
                    elif outcome == NOT_YET:
                        not_yet += 1
                    else:
                        errors.append({"hostname": hostname, "after_s": round(ended - posted_at, 3),
                                       "error": detail})
                round_times.append(time.monotonic() - round_start)
            rest = interval - (time.monotonic() - round_start)
            if rest > 0:
                time.sleep(rest)
    for r in registrations:
        r.result(timeout=max(0.0, deadline - time.monotonic()) + 20)
    all_served_at = max((posted[h] + served[h] for h in served), default=math.nan)
    return {
        "hostnames": len(hostnames),
        "registered": len(posted),
        "served": len(served),
        "unserved": sorted(set(posted) - set(served)),
        "registration_errors": registration_errors,
        "latencies_s": [served[h] for h in hostnames if h in served],
        "post_durations_s": [post_durations[h] for h in hostnames if h in post_durations],
        "wall_s": (all_served_at - started) if len(served) == len(hostnames) else None,
        "probes": probes,
        "not_yet_probes": not_yet,
        "probe_errors": errors,
        "probe_round_s": summary(round_times) if round_times else None,
    }


def probe_cost(stack: Stack, prober: Prober, run_id: str, workers: int, names: int = 20, rounds: int = 15) -> dict:
    """jobhost's CPU per "not yet" probe: ``names`` unregistered hostnames probed ``rounds`` times.

    The measured run's probes of hostnames still waiting for their certificate
    get the fallback the same way (a held ClientHello, a store look-up on the
    first probe, the negative cache after it), so probes x this figure
    estimates the part of the run's CPU that served probes, not issuance.
    """
    hostnames = [f"calibrate-{i}.{run_id}.bench.test" for i in range(names)]
    pid = stack.daemon.process.pid
    outcomes = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        before = cpu_seconds(pid)
        for _ in range(rounds):
            outcomes += [outcome for outcome, _, _ in pool.map(prober.probe, hostnames)]
        spent = cpu_seconds(pid) - before
    count = len(outcomes)
    return {"probes": count, "not_yet": outcomes.count(NOT_YET), "cpu_s": spent,
            "cpu_per_probe_s": spent / count if count else math.nan}


def read_lag(stack: Stack) -> dict:
    """The reactor lag monitor's figures from ``/metrics``: worst since start, ticks per bucket."""
    status, raw = stack.api_raw("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    buckets: dict[float, float] = {}
    requests: dict[str, float] = {}
    gc_worst: dict[str, float] = {}
    gc_counts: dict[str, float] = {}
    worst = busy = math.nan
    for line in raw.decode().splitlines():
        if line.startswith("jobhost_reactor_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("jobhost_reactor_lag_max_seconds "):
            worst = float(line.rsplit(" ", 1)[1])
        elif line.startswith("jobhost_reactor_lag_busy_max_seconds "):
            busy = float(line.rsplit(" ", 1)[1])
        elif line.startswith("jobhost_gc_pause_max_seconds{"):
            gc_worst[line.split('generation="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("jobhost_gc_collections_total{"):
            gc_counts[line.split('generation="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("jobhost_acme_requests_total{"):
            endpoint = line.split('endpoint="', 1)[1].split('"', 1)[0]
            requests[endpoint] = requests.get(endpoint, 0.0) + float(line.rsplit(" ", 1)[1])
    return {"max_s": worst, "busy_max_s": busy, "buckets": buckets, "acme_requests": requests,
            "gc_pause_max_s": gc_worst, "gc_collections": gc_counts}


def reactor_lag(before: dict, after: dict, threshold: float = 0.02) -> dict:
    """The reactor's stalls between two :func:`read_lag` readings.

    Returns ``worst_s`` (exact when the maximum grew, else None), ``worst_at_most_s``
    (the smallest histogram bound holding every tick of the interval), ``ticks`` and
    ``ticks_over_threshold``.
    """
    if not after["buckets"]:  # a daemon without the lag monitor (an older commit)
        return {"acme_requests": {}, "worst_s": None, "worst_busy_s": None, "worst_at_most_s": math.nan,
                "worst_busy_at_most_s": math.nan, "ticks": 0, "ticks_over_threshold": 0, "threshold_s": threshold}
    bounds = sorted(after["buckets"])
    delta = {b: after["buckets"][b] - before["buckets"].get(b, 0.0) for b in bounds}
    ticks = delta[bounds[-1]] if bounds else 0.0
    at_most = next((b for b in bounds if delta[b] >= ticks), math.inf) if ticks else 0.0
    under = max((delta[b] for b in bounds if b <= threshold), default=0.0)
    grew = after["max_s"] > before["max_s"]
    requests = {k: int(v - before["acme_requests"].get(k, 0.0)) for k, v in sorted(after["acme_requests"].items())}
    return {
        "acme_requests": {k: v for k, v in requests.items() if v},
        # Collections during the interval by generation; the longest since start (not per interval).
        "gc_collections": {g: int(n - before.get("gc_collections", {}).get(g, 0.0))
                           for g, n in sorted(after.get("gc_collections", {}).items())},
        "gc_pause_max_since_start_s": after.get("gc_pause_max_s", {}),
        "worst_s": after["max_s"] if grew else None,
        # The part of a stall the reactor thread can have spent running (at most its CPU time
        # between the two ticks); the rest it waited for a CPU (or the GIL): machine load.
        "worst_busy_s": after["busy_max_s"] if after["busy_max_s"] > before["busy_max_s"] else None,
        "worst_busy_at_most_s": after["busy_max_s"],
        "worst_at_most_s": min(at_most, after["max_s"]),
        "ticks": int(ticks),
        "ticks_over_threshold": int(ticks - under),
        "threshold_s": threshold,
    }


def lego_reference(workdir: Path, repeat: int, timeout: float, nonce_reject: int) -> dict:
    """The same measurement's reference: ``lego run`` for one fresh hostname, ``repeat`` times.

    lego (Debian's ``lego`` package, a Go ACME client) gets its own Pebble +
    challtestsrv (its built-in HTTP-01 server must own the port Pebble
    validates against), the same ``PEBBLE_VA_NOSLEEP=1`` and nonce setting,
    an ECDSA P-256 key like jobhost's, and one account reused across runs (a
    first, unmeasured run creates it).  The figure is the wall time of the
    ``lego run`` process: new order -> HTTP-01 -> certificate on disk.  It has
    no preflight, no self-check and serves nothing, so it does less than
    jobhost's figure.
    """
    lego = shutil.which("lego")
    if lego is None:
        return {"error": "lego is not installed (apt-get install -y lego)"}
    port = free_port()
    pebble = PebbleServer.start(http_port=port, nonce_reject=nonce_reject)
    try:
        env = dict(os.environ, LEGO_CA_CERTIFICATES=pebble.ca_bundle_path)
        base = [lego, "--server", pebble.directory_url, "--accept-tos", "--email", "ops@bench.test",
                "--path", str(workdir), "--http", "--http.port", f"127.0.0.1:{port}", "--key-type", "ec256"]
        run_id = secrets.token_hex(3)
        times: list[float] = []
        failures: list[str] = []
        for i in range(repeat + 1):
            started = time.monotonic()
            done = subprocess.run(base + ["--domains", f"l{i}.{run_id}.lego.test", "run"], env=env,
                                  capture_output=True, text=True, timeout=timeout)
            elapsed = time.monotonic() - started
            if done.returncode != 0:
                failures.append(done.stderr[-500:])
            elif i > 0:  # run 0 creates the account
                times.append(elapsed)
        version = subprocess.run([lego, "--version"], capture_output=True, text=True).stdout.strip()
    finally:
        pebble.stop()
    return {"version": version, "seconds": summary(times), "samples_s": times, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hostnames", type=int, default=1, help="hostnames registered at once per repeat (1)")
    parser.add_argument("--repeat", type=int, default=10, help="repeats, fresh hostnames each time (10)")
    parser.add_argument("--max-in-flight", type=int, default=10, help="[renewal] max_in_flight (10)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per repeat (120)")
    parser.add_argument("--probe-workers", type=int, default=4, help="concurrent probe handshakes (4)")
    parser.add_argument("--probe-interval", type=float, default=0.02,
                        help="minimum seconds per probe round (0.02)")
    parser.add_argument("--register-concurrency", type=int, default=10, help="concurrent POSTs (10)")
    parser.add_argument("--nonce-reject", type=int, default=0,
                        help="PEBBLE_WFE_NONCEREJECT percent (0; the tests use 5)")
    parser.add_argument("--no-warmup", action="store_true", help="measure the account creation too")
    parser.add_argument("--store", default="directory:var/store",
                        help="[store] url (directory:var/store, the figures so far; sqlite:var/jobhost.db is "
                             "the daemon's default)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument("--lego", action="store_true",
                        help="also measure lego (a Go ACME client) against its own Pebble, --repeat times, "
                             "as the reference")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="profile the daemon with py-spy during the measured repeats (raw output to FILE; "
                             "py-spy slows it: the figures of such a run are not for comparison)")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR (must not exist) and keep it: twistd.log, store")
    args = parser.parse_args(argv)
    exit_on_sigterm()

    orders = args.hostnames * args.repeat + 1
    orders_per_window = max(300, orders)
    result: dict = {
        "benchmark": "issuance",
        "command": "python bench/issuance.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "config": {
            "hostnames": args.hostnames, "repeat": args.repeat, "max_in_flight": args.max_in_flight,
            "timeout_s": args.timeout, "probe_workers": args.probe_workers,
            "probe_interval_s": args.probe_interval, "register_concurrency": args.register_concurrency,
            "pebble_nonce_reject_percent": args.nonce_reject, "orders_per_window": orders_per_window,
            "preflight": True, "self_check": True, "store": args.store,
        },
    }
    run_id = secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="jobhost-bench-issuance-") as tmp:
        workdir = Path(tmp)
        if args.keep:
            workdir = Path(args.keep)
            workdir.mkdir(parents=True)
        stack = start_stack(workdir, args.max_in_flight, orders_per_window, args.nonce_reject, args.store)
        try:
            pebble_env = Path(f"/proc/{stack.pebble.process.pid}/environ").read_bytes().split(b"\0")
            result["config"]["pebble_va_nosleep"] = b"PEBBLE_VA_NOSLEEP=1" in pebble_env
            prober = Prober(stack.https, stack.root_pem)
            if not args.no_warmup:
                warm = run_round(stack, prober, [f"warmup.{run_id}.bench.test"], args.timeout,
                                 args.probe_workers, args.probe_interval, args.register_concurrency)
                result["warmup"] = {"latency_s": warm["latencies_s"][0] if warm["latencies_s"] else None,
                                    "probe_errors": warm["probe_errors"]}
            result["probe_cost"] = probe_cost(stack, prober, run_id, args.probe_workers)
            daemon_pid, pebble_pid = stack.daemon.process.pid, stack.pebble.process.pid
            profiler = None
            if args.py_spy:
                profiler = subprocess.Popen(
                    ["py-spy", "record", "--nonblocking", "-p", str(daemon_pid), "-r", "250", "-f", "raw", "-o", args.py_spy,
                     "-d", str(int(args.timeout * args.repeat) + 10)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
                time.sleep(1.0)
            try:
                lag_before = read_lag(stack)
                cpu_before = cpu_seconds(daemon_pid), cpu_seconds(pebble_pid)
                measured_start = time.monotonic()
                repeats = []
                for rep in range(args.repeat):
                    names = [f"r{rep}-h{i}.{run_id}.bench.test" for i in range(args.hostnames)]
                    repeats.append(run_round(stack, prober, names, args.timeout, args.probe_workers,
                                             args.probe_interval, args.register_concurrency))
                measured = time.monotonic() - measured_start
                cpu_after = cpu_seconds(daemon_pid), cpu_seconds(pebble_pid)
                lag = reactor_lag(lag_before, read_lag(stack))
            finally:
                if profiler is not None and profiler.poll() is None:
                    profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                    try:
                        profiler.wait(30)
                    except subprocess.TimeoutExpired:
                        profiler.kill()
            log_tail = stack.daemon.log()[-3000:]
        finally:
            stack.stop()
        if args.lego:
            result["reference_lego"] = lego_reference(Path(tmp) / "lego", args.repeat, args.timeout,
                                                      args.nonce_reject)

    latencies = [x for r in repeats for x in r["latencies_s"]]
    walls = [r["wall_s"] for r in repeats if r["wall_s"] is not None]
    total = args.hostnames * args.repeat
    errors = [e for r in repeats for e in r["probe_errors"]]
    rounds = [r["probe_round_s"] for r in repeats if r["probe_round_s"]]
    result.update({
        "repeats": repeats,
        "latency_s": summary(latencies),
        "wall_s": summary(walls),
        "served": len(latencies),
        "expected": total,
        "probe_errors": len(errors),
        "not_yet_probes": sum(r["not_yet_probes"] for r in repeats),
        "probes": sum(r["probes"] for r in repeats),
        "probe_round_s": {"median_of_medians": summary([r["median"] for r in rounds])["median"],
                          "max": max((r["max"] for r in rounds), default=math.nan)},
        "measured_s": measured,
        "cpu_s": {"jobhost": cpu_after[0] - cpu_before[0], "pebble": cpu_after[1] - cpu_before[1]},
        "cpu_per_certificate_s": (cpu_after[0] - cpu_before[0]) / total,
        "cpu_per_certificate_without_probes_s": (
            cpu_after[0] - cpu_before[0]
            - sum(r["probes"] for r in repeats) * result["probe_cost"]["cpu_per_probe_s"]
        ) / total,
        "reactor_lag": lag,
        "post_duration_s": summary([x for r in repeats for x in r["post_durations_s"]]),
    })
    ok = len(latencies) == total and not errors
    if not ok:
        result["daemon_log_tail"] = log_tail
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        lat = result["latency_s"]
        print(f"issuance: {args.hostnames} hostname(s) x {args.repeat}, max_in_flight={args.max_in_flight}, "
              f"preflight+self-check on, PEBBLE_VA_NOSLEEP={result['config']['pebble_va_nosleep']}")
        if "warmup" in result:
            print(f"  warm-up (account creation): {fmt_ms(result['warmup']['latency_s'] or math.nan)} ms")
        print(f"  served {len(latencies)}/{total}; probe errors {len(errors)}; "
              f"'not yet' (fallback) probes {result['not_yet_probes']} of {result['probes']}")
        print(f"  POST -> verified handshake: median {fmt_ms(lat['median'])} ms, p90 {fmt_ms(lat['p90'])} ms, "
              f"max {fmt_ms(lat['max'])} ms, min {fmt_ms(lat['min'])} ms")
        if args.hostnames > 1:
            w = result["wall_s"]
            print(f"  wall time, first POST -> all {args.hostnames} served: median {w['median']:.2f} s "
                  f"(max {w['max']:.2f} s over {w['count']} repeat(s))")
        pr = result["probe_round_s"]
        print(f"  probe round time (latency resolution): median {fmt_ms(pr['median_of_medians'])} ms, "
              f"max {fmt_ms(pr['max'])} ms")
        print(f"  POST /api/v1/domains itself (preflight included): median "
              f"{fmt_ms(result['post_duration_s']['median'])} ms, p90 {fmt_ms(result['post_duration_s']['p90'])} ms")
        print(f"  CPU during the measured repeats ({measured:.1f} s, probing included): "
              f"jobhost {result['cpu_s']['jobhost']:.2f} s, pebble {result['cpu_s']['pebble']:.2f} s")
        cost = result["probe_cost"]
        print(f"  jobhost CPU per certificate (probing included): {fmt_ms(result['cpu_per_certificate_s'])} ms; "
              f"without the probes (estimate: {result['probes']} probes x "
              f"{fmt_ms(cost['cpu_per_probe_s'])} ms, the CPU per probe of {cost['probes']} fallback probes "
              f"measured before): {fmt_ms(result['cpu_per_certificate_without_probes_s'])} ms")
        print(f"  ACME requests during the repeats: {sum(lag['acme_requests'].values())} ({lag['acme_requests']})")
        worst = lag["worst_s"]
        print(f"  reactor lag during the repeats ({lag['ticks']} ticks of the 50 ms monitor): worst "
              + (f"{fmt_ms(worst)} ms" if worst is not None else f"<= {fmt_ms(lag['worst_at_most_s'])} ms")
              + f"; {lag['ticks_over_threshold']} tick(s) later than {fmt_ms(lag['threshold_s'])} ms; worst part "
            + "the reactor thread ran: "
            + (f"{fmt_ms(lag['worst_busy_s'])} ms" if lag["worst_busy_s"] is not None
               else f"<= {fmt_ms(lag['worst_busy_at_most_s'])} ms"))
        if lag.get("gc_collections"):
            print(f"  garbage collections during the repeats by generation: {lag['gc_collections']}; longest "
                  f"since start: " + ", ".join(f"gen {g} {fmt_ms(v)} ms"
                                              for g, v in sorted(lag["gc_pause_max_since_start_s"].items())))
        if "reference_lego" in result:
            ref = result["reference_lego"]
            if "error" in ref:
                print(f"  reference lego: not measured: {ref['error']}")
            else:
                print(f"  reference, same run: `lego run` for one hostname ({ref['version']}): median "
                      f"{fmt_ms(ref['seconds']['median'])} ms, p90 {fmt_ms(ref['seconds']['p90'])} ms "
                      f"over {ref['seconds']['count']} runs; failures {len(ref['failures'])}")
        for e in errors[:10]:
            print(f"  probe error: {e}")
        if not ok:
            print("--- daemon log tail ---\n" + log_tail)
    return 0 if ok else 1


__all__ = ["Prober", "bench_config", "lego_reference", "main", "reactor_lag", "read_lag", "run_round",
           "start_stack"]

if __name__ == "__main__":
    sys.exit(main())
